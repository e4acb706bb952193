"""`StatsAccumulator` against the definitions of `HeadStats`, computed by plain loops.

The accumulator never sees a whole pattern at once on the tiled path: it gets tiles of
query rows, splits them into sub-tiles, reads the short FAI cuts off the diagonal band and
builds the long ones from running column sums plus a staircase per sub-tile. Whatever the
tiling, every statistic must equal its definition (reductions.py, module docstring).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.attention.reductions import StatsAccumulator, normalise_cuts


def random_pattern(h: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(h, n, n, generator=g, dtype=torch.float64) * 3
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    p = torch.softmax(scores, -1)
    p[0, 3] = 0.0
    p[0, 3, 0] = 1.0  # a row that gives everything to the first token
    return p


def by_definition(p: torch.Tensor, pl: int, w: int, cuts: tuple[int, ...], sink: str):
    """The `HeadStats` fields, one entry at a time (float64)."""
    a = p.clone()
    if sink == "exclude":
        for h in range(a.shape[0]):
            for t in range(a.shape[1]):
                rest = p[h, t, 1:].sum()  # = 1 - A[t, 0] for a row that sums to one
                a[h, t] = p[h, t] / rest if rest > 0 else 0.0
                a[h, t, 0] = 0.0
    h, n, _ = a.shape
    rowsum = a.sum(-1)
    dist = torch.stack(
        [(a[:, t, : t + 1] * (t - torch.arange(t + 1))).sum(-1) for t in range(n)], 1
    )
    band = torch.zeros(h, n, w, dtype=torch.float64)
    for t in range(n):
        for d in range(min(w, t + 1)):
            band[:, t, d] = a[:, t, t - d]
    cut_sums = torch.zeros(h, len(cuts), n - pl, dtype=torch.float64)
    for i, c in enumerate(cuts):
        for s in range(pl, n):
            rows = [t for t in range(pl, n) if s <= t < s + c]
            cut_sums[:, i, s - pl] = a[:, rows, s].sum(-1) if rows else 0.0
    return rowsum, dist, band, cut_sums


def assert_definitions(got, want, n: int) -> None:
    """Each `HeadStats` field equals its definition (``dist`` to ``1e-5 n``: float32
    position products)."""
    for name, value, ref in zip(
        ("rowsum", "dist", "band", "cut_sums"),
        (got.rowsum, got.dist, got.band, got.cut_sums),
        want,
        strict=True,
    ):
        tol = 1e-5 * (n if name == "dist" else 1)
        np.testing.assert_allclose(value.double().numpy(), ref.numpy(), atol=tol, err_msg=name)


@pytest.mark.parametrize("sink", ["keep", "exclude"])
@pytest.mark.parametrize(
    "n, pl, w, tile",
    [
        (70, 9, 4, 7),  # tiles smaller than a sub-tile
        (70, 9, 4, 70),  # the whole pattern at once (the hook path)
        (90, 0, 6, 33),  # no prompt; tiles that are not a multiple of the sub-tile
        (150, 40, 8, 64),  # long cuts whose horizons start before the tile
        (40, 39, 4, 5),  # a one-token response
    ],
)
def test_every_statistic_equals_its_definition(n, pl, w, tile, sink):
    p = random_pattern(3, n, seed=n + pl + tile)
    # Short cuts (<= w, from the band), long ones, one past the end and the unlimited one.
    cuts = normalise_cuts((0, 1, 2, w, w + 1, 17, 33, 50, n + 5), n)
    acc = StatsAccumulator([(0, 0), (0, 1), (0, 2)], n, pl, w, cuts, sink=sink)
    acc.ROWS = 8  # several sub-tiles per tile, so the staircases meet their edges
    for a in range(0, n, tile):
        e = min(n, a + tile)
        acc.add(slice(a, e), p[:, a:e, :e].float())
    got = acc.finish()
    want = by_definition(p, pl, w, got.cuts, sink)
    assert_definitions(got, want, n)


@pytest.mark.parametrize("sink", ["keep", "exclude"])
@pytest.mark.parametrize(
    "n, pl, window, tile",
    [
        (90, 9, 12, 16),  # long cuts (17, 33, 50) reach past the window
        (90, 0, 5, 7),  # no prompt: the first token leaves the window early
        (60, 40, 30, 9),  # a window wider than some tiles
    ],
)
def test_tiles_from_their_first_key_equal_the_definitions(n, pl, window, tile, sink):
    """A sliding window's tiles come from the first key any of their rows sees (`key0`,
    what the tiled path skips to); every statistic still equals its definition."""
    p = random_pattern(3, n, seed=n + window + tile)
    t = torch.arange(n)
    p = p.masked_fill((t[None, :] <= t[:, None] - window)[None], 0.0)
    # The definitions read the float32 pattern the accumulator gets (its rows sum to one
    # only to float32 rounding).
    p = (p / p.sum(-1, keepdim=True)).float().double()
    cuts = normalise_cuts((0, 1, 2, 8, 9, 17, 33, 50, n + 5), n)
    # A band of 8 diagonals: wider than the window of 5, so it reaches keys before key0.
    acc = StatsAccumulator([(0, 0), (0, 1), (0, 2)], n, pl, 8, cuts, sink=sink)
    acc.ROWS = 8
    offsets = []
    for a in range(0, n, tile):
        e = min(n, a + tile)
        key0 = max(0, a - window + 1)
        offsets.append(key0)
        acc.add(slice(a, e), p[:, a:e, key0:e].float(), key0=key0)
    assert max(offsets) > 0
    got = acc.finish()
    want = by_definition(p, pl, 8, got.cuts, sink)
    assert_definitions(got, want, n)


def test_tiles_must_come_in_order():
    p = random_pattern(1, 20, seed=0).float()
    acc = StatsAccumulator([(0, 0)], 20, 5, 4, (3, 9))
    acc.add(slice(0, 10), p[:, :10, :10])
    with pytest.raises(AssertionError, match="ascending"):
        acc.add(slice(0, 10), p[:, :10, :10])


@pytest.mark.parametrize("n", [60, 30])
@pytest.mark.parametrize("feed", ["band", "tiles"])
def test_an_accumulator_without_columns_reads_every_cut_off_its_band(n, feed):
    """``columns=False`` (the RL credit): the band widens to the longest cut, each cut is
    read off it, and the whole column is kept only when the band spans the sequence (n = 30
    against a band of 33 diagonals). Rows may come as a band (`add_band`, the band path of
    the attention function) or as tiles (the fallback), with the same result."""
    pl = 8
    p = random_pattern(3, n, seed=n)
    acc = StatsAccumulator([(0, 0), (0, 1), (0, 2)], n, pl, 4, (0, 3, 17, 33), columns=False)
    assert acc.max_window == min(33, n)
    want = by_definition(p, pl, acc.max_window, normalise_cuts((3, 17, 33, n), n), "keep")
    if feed == "band":
        acc.add_band(slice(0, 20), want[1][:, :20].float(), want[2][:, :20].float())
        acc.add_band(slice(20, n), want[1][:, 20:].float(), want[2][:, 20:].float())
    else:
        acc.add(slice(0, n), p.float())
    got = acc.finish()
    whole = n <= 33
    assert got.cuts == ((3, 17, 30) if whole else (3, 17, 33))
    cut_sums = want[3] if whole else want[3][:, :-1]
    np.testing.assert_allclose(got.cut_sums.double().numpy(), cut_sums.numpy(), atol=1e-5)
    np.testing.assert_allclose(got.band.double().numpy(), want[2].numpy(), atol=1e-6)
    np.testing.assert_allclose(got.dist.double().numpy(), want[1].numpy(), atol=1e-5 * n)
    np.testing.assert_allclose(got.rowsum.double().numpy(), want[0].numpy(), atol=1e-5)


def test_only_an_accumulator_without_columns_takes_bands():
    acc = StatsAccumulator([(0, 0)], 20, 5, 4, (3, 9))
    with pytest.raises(ValueError, match="columns=False"):
        acc.add_band(slice(0, 20), torch.zeros(1, 20), torch.zeros(1, 20, 9))


@pytest.mark.parametrize("columns", [True, False])
def test_a_band_wider_than_the_sequence_is_capped_at_its_length(columns):
    """``max_window=10**5`` allocated ``heads x (T + 10**5) x 10**5`` floats (120 GB for
    three heads; a raw allocation error) for diagonals that are all zero beyond T: the band
    keeps T of them, and equals the band of ``max_window=T``."""
    n, pl = 20, 5
    p = random_pattern(3, n, seed=5).float()
    heads = [(0, 0), (0, 1), (0, 2)]
    got = []
    for mw in (10**5, n):
        acc = StatsAccumulator(heads, n, pl, mw, (0, 3, 8), columns=columns)
        assert acc.max_window == n
        acc.add(slice(0, n), p)
        got.append(acc.finish())
    huge, exact = got
    assert huge.max_window == n and huge.cuts == exact.cuts
    for f in ("rowsum", "dist", "band", "cut_sums"):
        assert torch.equal(getattr(huge, f), getattr(exact, f)), f
    # a window past the sequence reads the band as W = T (no distance reaches T)
    assert huge.window_for(10**5) == n and huge.window_for(7) == 7
    short = StatsAccumulator(heads, n, pl, 8, (0,)).finish()
    assert short.window_for(10**5) == 10**5  # a band short of T bounds the window


def test_analyze_with_a_window_past_the_trace_equals_the_window_of_its_length(toy_llama):
    """``wb.analyze(..., max_window=10**5)`` and ``window=10**5`` failed with a raw
    allocation error; they now give the numbers of ``max_window=T`` / ``window=T``."""
    import workbench as wb

    trace = wb.Trace.from_text(toy_llama, "What is 3 + 4?", " 3 plus 4 is 7.")
    n = len(trace.tokens)
    base = wb.analyze(toy_llama, trace, max_window=n)
    wide = wb.analyze(toy_llama, trace, max_window=10**5)
    assert wide.stats.max_window == n
    for f in ("waad", "fai", "delta", "head_span"):
        torch.testing.assert_close(getattr(wide, f), getattr(base, f), equal_nan=True)
    at_t = base.with_params(window=n)
    for a in (wb.analyze(toy_llama, trace, window=10**5), wide.with_params(window=10**5)):
        assert a.params.window == 10**5
        torch.testing.assert_close(a.waad, at_t.waad, equal_nan=True)
        assert a.preplan == at_t.preplan and a.anchors == at_t.anchors


def test_excluding_the_sink_of_a_head_that_gives_it_almost_everything_stays_exact():
    """A head that gives the first token 1 - 1e-6 of each row (SmolLM2's layer 18 head 8
    gives it 0.9999987): ``1 - A[t, 0]`` in float32 is off by up to an ulp of 1, 6e-8, that
    is 6% of what the other keys get, and every renormalised statistic was off with it.
    The rest is now summed from the other keys, each exact to float32's relative
    precision."""
    n, pl, w = 60, 10, 4
    p = random_pattern(2, n, seed=5)
    p[1, 1:] *= 1e-6  # head 1: nearly all of each row on the first token
    p[1, 1:, 0] += 1.0 - p[1, 1:].sum(-1)
    cuts = normalise_cuts((0, 2, w, 17, n + 5), n)
    acc = StatsAccumulator([(0, 0), (0, 1)], n, pl, w, cuts, sink="exclude")
    acc.add(slice(0, n), p.float())
    got = acc.finish()
    assert_definitions(got, by_definition(p, pl, w, got.cuts, "exclude"), n)


def local_pattern(n: int, seed: int = 0) -> torch.Tensor:
    """``[1, n, n]`` float64: a local head, each row's mass within a few keys of it (row
    distances about 0.05-0.5, as the local heads of real models)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n)
    back = (t[:, None] - t[None, :]).double()
    scores = (-2.0 * back + torch.randn(n, n, generator=g, dtype=torch.float64)).masked_fill(
        back < 0, float("-inf")
    )
    return torch.softmax(scores, -1)[None]


@pytest.mark.parametrize("sink", ["keep", "exclude"])
@pytest.mark.parametrize("tile", [3000, 200], ids=["whole-pattern", "tiles"])
def test_a_short_response_after_a_long_prompt_keeps_its_distances_exact(tile, sink):
    """A 3-token response at t ~ 3000 (a few-shot prompt, a short answer): each row
    distance ``sum_s A[t,s] (t-s)`` was the float32 difference of two numbers about t (key
    positions counted from key 0), so a local head's distances (about 0.3) were off by up
    to 6e-4, its span by 2e-4 (1e-3 relative), against the reference's 1e-7. Positions are
    now counted back from the rows themselves."""
    n, pl = 3000, 2997
    p = local_pattern(n)
    acc = StatsAccumulator([(0, 0)], n, pl, 4, (n,), sink=sink)
    for a in range(0, n, tile):
        e = min(n, a + tile)
        acc.add(slice(a, e), p[:, a:e, :e].float())
    got = acc.finish()
    t = torch.arange(pl, n)  # the response rows' distances, by definition
    a = p[0, pl:] if sink == "keep" else p[0, pl:, 1:] / p[0, pl:, 1:].sum(-1, keepdim=True)
    s = torch.arange(n) if sink == "keep" else torch.arange(1, n)
    want = (a * (t[:, None] - s[None, :])).sum(-1)
    np.testing.assert_allclose(got.dist[0, pl:].double().numpy(), want.numpy(), rtol=1e-5)
    span = float(got.dist[0, pl:].double().mean())
    assert abs(span - float(want.mean())) <= 1e-5 * float(want.mean())
