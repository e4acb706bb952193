"""The attention function's band path (`interface.Banded`) against eager attention by hand.

A reducer that needs only row distances and the diagonal band (the RL credit) gets them
from one flash attention call plus a band of dot products, never from tiles of
probabilities. Whatever the mask (plain causal, sliding window, a KV cache, left padding
with rows that see no key) and with grouped key/value heads, the output, the row distances
``sum_s A[t,s] (t-s)`` and the band ``A[t, t-d]`` must equal their float64 definitions,
with either flash kernel: the CPU's, or FlexAttention (CUDA's; run here uncompiled).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from workbench.attention import flex, interface

B, H, KV, D = 2, 6, 2, 8
WIDTH = 12


def inputs(tq: int, tk: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, tq, D, generator=g) * 2
    k = torch.randn(B, KV, tk, D, generator=g) * 2
    v = torch.randn(B, KV, tk, D, generator=g)
    return q, k, v


def eager(q, k, v, keep: torch.Tensor, scale: float):
    """float64 ``(output [b, tq, h, d], probabilities [b, h, tq, tk])``; rows with no key
    get zeros."""
    rep = H // KV
    kk = k.double().repeat_interleave(rep, 1)
    vv = v.double().repeat_interleave(rep, 1)
    s = (q.double() @ kk.transpose(-1, -2)) * scale
    s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return (p @ vv).transpose(1, 2), p


def causal(tq: int, tk: int) -> torch.Tensor:
    return torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq)[None, None]


class Spy:
    """A `Banded` reducer that records what it is handed."""

    def __init__(self):
        self.tiles, self.bands = [], []

    def reducer(self) -> interface.Banded:
        return interface.Banded(
            lambda rows, p, key0, sums: self.tiles.append((rows, p.clone())),
            WIDTH,
            lambda rows, dist, band: self.bands.append((rows, dist.clone(), band.clone())),
        )


@pytest.fixture(params=["cpu-flash", "flex"])
def kernel(request, monkeypatch):
    """The band path's flash call: the CPU kernel, or FlexAttention (as on CUDA)."""
    if request.param == "flex":
        monkeypatch.setattr(flex, "DEVICES", ("cuda", "cpu"))
    return request.param


def check_band(q, k, v, mask, keep, scale=0.3):
    spy = Spy()
    out = interface._banded(q, k, v, mask, scale, spy.reducer())
    want_out, p = eager(q, k, v, keep.expand(B, 1, -1, -1), scale)
    ((rows, dist, band),) = spy.bands
    tq, tk = q.shape[2], k.shape[2]
    assert rows == slice(tk - tq, tk)
    t = torch.arange(tk - tq, tk, dtype=torch.float64)
    seen = keep.expand(B, 1, -1, -1).any(-1).expand(B, H, tq)  # rows with a key
    torch.testing.assert_close(out.double(), want_out, atol=1e-5, rtol=1e-5)
    want_dist = (p * (t[:, None] - torch.arange(tk, dtype=torch.float64))).sum(-1)
    torch.testing.assert_close(dist.double()[seen], want_dist[seen], atol=1e-4, rtol=1e-5)
    want_band = torch.zeros(B, H, tq, WIDTH, dtype=torch.float64)
    for i in range(tq):
        for d in range(WIDTH):
            s = tk - tq + i - d
            if s >= 0:
                want_band[:, :, i, d] = p[:, :, i, s]
    torch.testing.assert_close(band.double(), want_band, atol=1e-6, rtol=1e-5)


def test_plain_causal_attention(kernel):
    q, k, v = inputs(40, 40)
    check_band(q, k, v, None, causal(40, 40))


@pytest.mark.parametrize("chunk", [512, 4])
def test_a_kv_cache_offsets_the_causal_mask(kernel, monkeypatch, chunk):
    """Only the last 15 rows are queries (the prompt a KV cache): the kernel's own causal
    flag would align them to the first keys, so the band path builds the mask (in one
    chunk of rows, or in chunks of 4 that each stop at their last row's key)."""
    monkeypatch.setattr(interface, "_FLASH_CHUNK", chunk)
    q, k, v = inputs(15, 40)
    check_band(q, k, v, None, causal(15, 40))


@pytest.mark.parametrize("chunk", [512, 8])
def test_a_sliding_window_mask_is_honoured(kernel, monkeypatch, chunk):
    """In chunks of 8 rows, each chunk runs over only the keys from its first row's window
    to its last row."""
    monkeypatch.setattr(interface, "_FLASH_CHUNK", chunk)
    keep = causal(50, 50) & ~torch.ones(50, 50, dtype=torch.bool).tril(-5)[None, None]
    q, k, v = inputs(50, 50)
    check_band(q, k, v, keep.expand(B, 1, -1, -1), keep)


def test_left_padding_rows_without_keys_give_zeros(kernel, monkeypatch):
    """Sequence 1 starts at position 6: its first rows see no key (no overflow, no NaN),
    and the mask is converted in several chunks of rows."""
    monkeypatch.setattr(interface, "_FLASH_ROWS", 7 * B * 30)  # 7 rows a chunk
    keep = causal(30, 30).expand(B, 1, -1, -1).clone()
    keep[1, :, :, :6] = False
    q, k, v = inputs(30, 30)
    spy = Spy()
    interface._banded(q, k, v, keep, 0.3, spy.reducer())
    ((_, dist, band),) = spy.bands
    assert torch.isfinite(band).all() and torch.isfinite(dist).all()
    assert (band[1, :, :6] == 0).all()
    check_band(q, k, v, keep, keep)


def test_the_attention_function_routes_by_what_it_can_compute():
    """Plain attention without gradients takes the band path; soft-capping, or gradients
    through the inputs, take the tiles (the same reducer's `tiles`)."""

    class Layer(torch.nn.Module):
        layer_idx = 0

    module = Layer()
    q, k, v = inputs(20, 20)
    spy = Spy()
    run = interface._Pass({0: spy.reducer()}, None, None, False)
    module._workbench_pass = run
    with torch.no_grad():
        out, _ = interface.attention(module, q, k, v, None, scaling=0.3)
    assert len(spy.bands) == 1 and not spy.tiles
    torch.testing.assert_close(
        out.double(), eager(q, k, v, causal(20, 20), 0.3)[0], atol=1e-5, rtol=0
    )
    with torch.no_grad():
        interface.attention(module, q, k, v, None, scaling=0.3, softcap=5.0)
    assert len(spy.bands) == 1 and spy.tiles
    spy.tiles.clear()
    interface.attention(module, q.requires_grad_(), k, v, None, scaling=0.3)
    assert len(spy.bands) == 1 and spy.tiles


@pytest.mark.parametrize("tq", [1, 33])
def test_single_and_odd_query_rows(kernel, tq):
    q, k, v = inputs(tq, 33, seed=tq)
    check_band(q, k, v, None, causal(tq, 33))


@pytest.mark.parametrize("gpu_sizes", [False, True])
def test_the_band_is_the_same_in_blocks_of_any_size(kernel, monkeypatch, gpu_sizes):
    """`_band` computes its diagonals in blocks of query rows (`tiling.band_rows`: 128 on
    the CPU, more on a GPU); a block of 1, 7 or all rows, against the keys its band
    reaches, gives the same band."""
    from workbench.attention import tiling

    if gpu_sizes:
        monkeypatch.setattr(tiling, "CACHE_SIZED", ())
    keep = causal(45, 60) & ~torch.ones(45, 60, dtype=torch.bool).tril(15 - 9)[None, None]
    q, k, v = inputs(45, 60)
    check_band(q, k, v, keep.expand(B, 1, -1, -1), keep)
    _, lse = interface._flash(q, k, v, None, 0.3)
    bands = [interface._band(q, k, lse, None, 0.3, WIDTH, rows) for rows in (1, 7, 45)]
    for band in bands[1:]:
        torch.testing.assert_close(band, bands[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("tile", [8, 64])
def test_tiles_skip_the_keys_a_window_hides_from_every_row(tile):
    """The tiled path runs each tile over the keys from the first its mask allows; every
    row that sees a key gets eager attention's probabilities and output. Rows that see no
    key (left padding, sequence 1's first 6) stay finite rows of probabilities."""
    keep = causal(40, 40) & ~torch.ones(40, 40, dtype=torch.bool).tril(-5)[None, None]
    keep = keep.expand(B, 1, -1, -1).clone()
    keep[1, :, :, :6] = False
    keep[1, :, :6] = False
    q, k, v = inputs(40, 40)
    tiles = []
    run = interface._Pass({}, None, tile, False)
    with torch.no_grad():
        out, _ = interface._tiled(
            q,
            k,
            v,
            keep,
            0.3,
            None,
            None,
            lambda r, p, k0, sums: tiles.append((r, p.clone(), k0)),
            run,
        )
    rep = H // KV
    s = (q.double() @ k.double().repeat_interleave(rep, 1).transpose(-1, -2)) * 0.3
    p = torch.softmax(s.masked_fill(~keep, torch.finfo(torch.float32).min), -1)
    got = torch.zeros_like(p)
    # Tiles of 8 rows skip the keys before the window; one tile of 64 starts at key 0.
    assert any(k0 > 0 for *_, k0 in tiles) == (tile == 8)
    for r, probs, k0 in tiles:
        got[:, :, r, k0 : k0 + probs.shape[-1]] = probs.double()
    seen = keep.any(-1).expand(B, H, 40)  # [batch, head, query_pos]: rows with a key
    torch.testing.assert_close(got[seen], p[seen], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got[~seen].sum(-1), torch.ones(int((~seen).sum()), dtype=got.dtype))
    want = (p @ v.double().repeat_interleave(rep, 1)).transpose(1, 2)
    rows = seen.transpose(1, 2)
    torch.testing.assert_close(out.double()[rows], want[rows], atol=1e-5, rtol=1e-5)


def test_flexattention_is_checked_before_its_first_use(monkeypatch):
    """FlexAttention's compiled kernel never runs in CI, so `flex.ready` compares it with a
    dense float64 computation first. A kernel that returned its log-sum-exp in base 2 (a
    wiring error of the kind the check exists for) fails it: one warning names the
    reason, and the attention function gives the band reducer exact tiles instead."""
    monkeypatch.setattr(flex, "DEVICES", ("cuda", "cpu"))
    real = flex.attention_with_moment

    def base_two(*args):
        out, lse = real(*args)
        return out, lse / math.log(2)

    flex.ready.cache_clear()
    try:
        assert flex.ready(torch.device("cpu"), torch.float32, D)
        flex.ready.cache_clear()
        monkeypatch.setattr(flex, "attention_with_moment", base_two)
        with pytest.warns(RuntimeWarning, match="log-sum-exp differs .* portable tiles"):
            assert not flex.ready(torch.device("cpu"), torch.float32, D)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once only
            assert not flex.ready(torch.device("cpu"), torch.float32, D)

        class Layer(torch.nn.Module):
            layer_idx = 0

        module, spy = Layer(), Spy()
        module._workbench_pass = interface._Pass({0: spy.reducer()}, None, None, False)
        q, k, v = inputs(20, 20)
        with torch.no_grad():
            out, _ = interface.attention(module, q, k, v, None, scaling=0.3)
        assert spy.tiles and not spy.bands
        torch.testing.assert_close(
            out.double(), eager(q, k, v, causal(20, 20), 0.3)[0], atol=1e-5, rtol=0
        )
    finally:
        flex.ready.cache_clear()


def test_a_short_response_after_a_long_prompt_keeps_its_distances_exact(kernel):
    """The last rows of a 3000-token pass through a local head (a sliding window of 3
    keys: distances up to 2): ``sum_s A[t, s] s`` from the flash call's position channel
    is about t, and ``t`` minus it lost float32's rounding of t (up to 2e-4, 1e-4
    relative). The channel now counts positions back from the last key, so the rows near
    the end (a response) keep their distances' own precision."""
    n, w = 3000, 3
    keep = causal(n, n) & ~torch.ones(n, n, dtype=torch.bool).tril(-w)[None, None]
    q, k, v = inputs(n, n)
    spy = Spy()
    interface._banded(q, k, v, keep.expand(B, 1, -1, -1), 0.3, spy.reducer())
    ((_, dist, _),) = spy.bands
    _, p = eager(q[:, :, -3:], k, v, keep[:, :, -3:].expand(B, 1, -1, -1), 0.3)
    want = (p * (torch.arange(n - 3, n)[:, None] - torch.arange(n)).double()).sum(-1)
    torch.testing.assert_close(dist[:, :, -3:].double(), want, atol=1e-6, rtol=1e-5)


def test_a_kernel_that_raises_in_a_pass_gives_way_to_tiles(toy_llama, monkeypatch):
    """A FlexAttention call can raise in a real pass although the check passed (a shape it
    did not compile, Triton's shared memory, GPU memory). The credit pass then warns once,
    naming the error, and takes exact tiles for that layer and every later one: the same
    numbers as the CPU's path, no traceback from inside the compiler."""
    import workbench as wb

    monkeypatch.setattr(flex, "DEVICES", ("cuda", "cpu"))
    d_head = toy_llama.cfg.d_head
    assert flex.ready(torch.device("cpu"), torch.float32, d_head)  # checked, then:
    raised = []

    def out_of_resources(*args, **kwargs):
        raised.append(1)
        raise RuntimeError("out of resource: shared memory, Required: 262144\nmore")

    monkeypatch.setattr(flex, "_compiled", lambda device_type: out_of_resources)
    ids = torch.arange(3, 60) % 50 + 3
    trace = wb.Trace(ids=ids, tokens=["x"] * len(ids), prompt_len=20, text="")

    def credit():
        (a,) = wb.analyze_many(
            toy_llama, [trace], window=10, fai_horizon=(10, 100), layers="all",
            max_window=10, default_cuts=False, columns=False, fast_other_layers=True,
            sdpa_outputs=True, progress=False,
        )  # fmt: skip
        return a

    with pytest.warns(
        RuntimeWarning,
        match=r"raised RuntimeError: out of resource: shared memory, Required: 262144 in a pass.* tiles",
    ):
        got = credit()
    assert raised == [1]  # once: the later layers never tried
    assert not flex.usable(torch.device("cpu"), torch.float32, d_head)
    monkeypatch.setattr(flex, "DEVICES", ("cuda",))
    want = credit()
    for field in ("head_span", "waad", "fai"):
        torch.testing.assert_close(
            getattr(got, field), getattr(want, field), atol=1e-5, rtol=1e-5, equal_nan=True
        )
