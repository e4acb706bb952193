"""The batched credit of a shared-prompt update against each rollout's own analysis.

In the native update (`workbench.rl.forward`) every rollout's prompt is left-padded to
``P`` columns of a KV cache and its completion fills rows ``P, P+1, ...`` of one frame.
`SharedFrameCollector` reduces all rollouts at once in that frame and `frame_gammas`
computes their weights batched. Both must give what each rollout's own statistics and
`Analysis.gamma` give, whatever the prompt and completion lengths, and the query rows past
a rollout's end (padding, which the forward still computes) must change nothing.
"""

from __future__ import annotations

import pytest
import torch

from workbench.attention.analysis import Analysis
from workbench.attention.batch_credit import frame_gammas
from workbench.attention.credit import STRATEGIES
from workbench.attention.engine import Collector, SharedFrameCollector
from workbench.attention.metrics import fai_heads
from workbench.attention.params import RhythmParams
from workbench.attention.reductions import StatsAccumulator

N_LAYERS, N_HEADS = 3, 4
HEADS = [(layer, h) for layer in (0, 2) for h in range(N_HEADS)]  # layer 1 not analysed


def own_pattern(n: int, seed: int) -> torch.Tensor:
    """``[head_index, n, n]`` causal attention of one rollout: peaked, so that heads
    differ in span and the rhythm sets are not empty."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(N_HEADS, n, n, generator=g) * 4
    scores -= torch.arange(N_HEADS)[:, None, None] * (torch.arange(n)[:, None] - torch.arange(n))
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, -1)


def layout(prompts: list[int], completions: list[int], seed: int, first: int):
    """Each rollout's own patterns per analysed layer, and the frame's batched tiles of
    query rows ``first..`` (``first = P``: the response rows only, as the shared-prompt
    update computes them; 0: every row, as TRL's forward does)."""
    P, W = max(prompts), max(max(completions), 1)
    g = torch.Generator().manual_seed(seed + 99)
    own, frame = [], {}
    for layer in (0, 2):
        # junk in the rows past each rollout's end, and in the prompt rows
        tile = torch.rand(len(prompts), N_HEADS, P + W - first, P + W, generator=g)
        tile = (tile * (torch.arange(P + W) <= torch.arange(first, P + W)[:, None])).float()
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            a = own_pattern(p + c, seed=1000 * layer + i + seed)
            own.append((i, layer, a))
            r = slice(P - first, P - first + c)
            tile[i, :, r] = 0.0
            tile[i, :, r, P - p : P + c] = a[:, p:]
        frame[layer] = tile
    return P, W, own, frame


def collect(prompts, completions, params, tile_rows: int, seed: int = 0, first: int | None = None):
    P = max(prompts)
    first = P if first is None else first
    _, W, own, frame = layout(prompts, completions, seed, first)
    lo, hi = params.fai_horizon
    spans = [(P - p, p + c, p) for p, c in zip(prompts, completions, strict=True)]
    coll = SharedFrameCollector(spans, HEADS, N_HEADS, max_window=params.window, cuts=[lo, hi + 1])
    for layer, tile in frame.items():
        rows, idx = coll.by_layer[layer]
        for a in range(first, P + W, tile_rows):  # query tiles, as the attention feeds them
            e = min(P + W, a + tile_rows)
            coll.feed(slice(a, e), tile[:, :, a - first : e - first, :e], rows, idx)
    refs = []
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        acc = StatsAccumulator(HEADS, p + c, p, params.window, [lo, hi + 1])
        for j, layer in enumerate((0, 2)):
            a = next(x for k, lay, x in own if k == i and lay == layer)
            acc.add(slice(0, p + c), a, slice(j * N_HEADS, (j + 1) * N_HEADS))
        refs.append(acc.finish())
    return coll, refs


def assert_own_statistics(coll: SharedFrameCollector, refs: list) -> None:
    """Each rollout's statistics cut out of the frame equal its own pass's."""
    for i, (got, ref) in enumerate(zip(coll.finish(), refs, strict=True)):
        assert (got.n_pos, got.prompt_len, got.cuts) == (ref.n_pos, ref.prompt_len, ref.cuts)
        for f in ["rowsum", "dist", "band", "cut_sums"]:
            r, g = getattr(ref, f), getattr(got, f)
            rows = slice(ref.prompt_len, None) if f != "cut_sums" else slice(None)
            # dist = t * rowsum - sum_s A[t,s] s loses about t * 1e-7 in float32 (t ~ 100)
            atol = 5e-5 if f == "dist" else 1e-6
            torch.testing.assert_close(
                g[:, rows], r[:, rows], rtol=1e-5, atol=atol, msg=f"{f} of rollout {i}"
            )


PROMPTS, COMPLETIONS = [30, 30, 30, 22, 22, 22, 40, 40, 40], [45, 12, 0, 60, 1, 33, 60, 59, 7]


@pytest.mark.parametrize("rows", ["response rows", "every row"])
@pytest.mark.parametrize("tile_rows", [7, 32, 200])
def test_the_frame_statistics_are_each_rollouts_own(tile_rows, rows):
    params = RhythmParams(fai_horizon=(10, 40))
    first = 0 if rows == "every row" else None
    coll, refs = collect(PROMPTS, COMPLETIONS, params, tile_rows, first=first)
    assert_own_statistics(coll, refs)


@pytest.mark.parametrize("tile_rows", [7, 200])
def test_tiles_that_skip_keys_no_row_sees_give_the_same_statistics(tile_rows):
    """Every rollout padded by 5 more columns on the left: the attention's tiles then start
    at key 5 (`key0`, as the tiled path skips keys its mask hides from every row)."""
    params = RhythmParams(fai_horizon=(10, 40))
    pad, P = 5, max(PROMPTS)
    _, W, _, frame = layout(PROMPTS, COMPLETIONS, 0, P)
    _, refs = collect(PROMPTS, COMPLETIONS, params, tile_rows)
    spans = [(pad + P - p, p + c, p) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    lo, hi = params.fai_horizon
    coll = SharedFrameCollector(spans, HEADS, N_HEADS, max_window=params.window, cuts=[lo, hi + 1])
    for layer, tile in frame.items():
        rows, idx = coll.by_layer[layer]
        for a in range(P, P + W, tile_rows):
            e = min(P + W, a + tile_rows)
            part = tile[:, :, a - P : e - P, :e]  # keys 0.. of the unshifted frame
            coll.feed(slice(pad + a, pad + e), part, rows, idx, key0=pad)
    assert_own_statistics(coll, refs)


@pytest.mark.parametrize("tile_rows", [5, 16])
def test_a_left_padded_batch_under_a_window_gives_each_sequences_own_statistics(tile_rows):
    """`Collector` (one accumulator per sequence) fed a left-padded batch in tiles that
    start at their first key (a sliding window of 8): each sequence's statistics equal its
    own pass's, in its own positions."""
    window, spans = 8, [(0, 40, 9), (6, 34, 5)]  # (start, n, prompt_len)
    t = torch.arange(40)
    hidden = t[None, :] <= t[:, None] - window
    frame = torch.zeros(2, N_HEADS, 40, 40)
    refs = []
    for i, (start, n, pl) in enumerate(spans):
        own = own_pattern(n, seed=i).masked_fill(hidden[:n, :n], 0.0)
        own = own / own.sum(-1, keepdim=True)
        frame[i, :, start:, start:] = own
        frame[i, :, :start] = 1.0 / 40  # padding rows: junk the collector must skip
        acc = StatsAccumulator([(0, h) for h in range(N_HEADS)], n, pl, 4, [10, 21])
        acc.add(slice(0, n), own)
        refs.append(acc.finish())
    coll = Collector(spans, [(0, h) for h in range(N_HEADS)], N_HEADS, max_window=4, cuts=[10, 21])
    for a in range(0, 40, tile_rows):
        e = min(40, a + tile_rows)
        key0 = max(0, a - window + 1)  # the first key a row of the tile sees
        coll.feed(
            slice(a, e), frame[:, :, a:e, key0:e], slice(0, N_HEADS), list(range(N_HEADS)), key0
        )
    for i, (got, ref) in enumerate(zip(coll.finish(), refs, strict=True)):
        for f in ["rowsum", "dist", "band", "cut_sums"]:
            torch.testing.assert_close(
                getattr(got, f), getattr(ref, f), rtol=1e-5, atol=5e-5, msg=f"{f} of {i}"
            )


def test_fai_with_ends_is_each_rows_own_fai():
    params = RhythmParams(fai_horizon=(10, 40))
    coll, refs = collect(PROMPTS, COMPLETIONS, params, 32)
    stats, rows, ends = coll.finish_frame()
    head_ends = torch.empty(len(stats.heads), dtype=torch.long)
    head_ends[rows] = ends[:, None].expand_as(rows)
    fai = fai_heads(stats, (10, 40), ends=head_ends)
    for i, ref in enumerate(refs):
        want = fai_heads(ref, (10, 40))[:, ref.prompt_len :]
        got = fai[rows[i], coll.first : coll.first + ref.n_response]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, equal_nan=True)
        assert torch.isnan(fai[rows[i], coll.first + ref.n_response :]).all()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("horizon", [(10, 100), (0, 20)])
def test_frame_gammas_equal_each_rollouts_analysis(strategy, horizon):
    params = RhythmParams(fai_horizon=horizon)
    coll, refs = collect(PROMPTS, COMPLETIONS, params, 32, seed=5)
    stats, rows, ends = coll.finish_frame()
    width = stats.n_pos - stats.prompt_len
    entropy = torch.rand(len(refs), width, generator=torch.Generator().manual_seed(3))
    seeds = [11 + i for i in range(len(refs))]
    got = frame_gammas(
        stats, rows, ends, params, strategy, gamma_amp=1.7, seeds=seeds, entropy=entropy
    )
    assert got.shape == (len(refs), width)
    amplified = 0
    for i, ref in enumerate(refs):
        c, pl = ref.n_response, ref.prompt_len
        ent = torch.full((ref.n_pos,), float("nan"), dtype=torch.float64)
        ent[pl:] = entropy[i, :c].double()
        if c == 0:
            assert (got[i] == 1.0).all()
            continue
        a = Analysis(
            stats=ref, entropy=ent, tokens=[""] * ref.n_pos, ids=torch.zeros(ref.n_pos),
            n_layers=N_LAYERS, n_heads=N_HEADS, params=params,
        )  # fmt: skip
        want = a.gamma(strategy, seed=seeds[i], gamma_amp=1.7)[pl:]
        assert torch.equal(got[i, :c], want), (strategy, i)
        assert (got[i, c:] == 1.0).all(), "1.0 past the rollout's end"
        amplified += int((want > 1.0).sum())
    assert strategy == "none" or amplified > 0, "the case must amplify some tokens"


def test_responses_must_start_at_one_column():
    with pytest.raises(ValueError, match="start at different columns"):
        SharedFrameCollector(
            [(0, 10, 4), (1, 10, 4)], HEADS, N_HEADS, max_window=10, cuts=[10, 101]
        )


def test_a_batch_of_empty_completions_has_no_weights_to_change():
    params = RhythmParams(fai_horizon=(10, 100))
    coll, _ = collect([5, 5, 7], [0, 0, 0], params, 32)
    stats, rows, ends = coll.finish_frame()
    got = frame_gammas(stats, rows, ends, params, "coupled", seeds=[0, 1, 2])
    assert got.shape == (3, 0)
    assert [s.n_response for s in coll.finish()] == [0, 0, 0]
