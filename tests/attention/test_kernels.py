"""The compiled tile kernel (`workbench.attention.kernels`) against its definitions.

`softmax_stats` turns each row of a tile of scores into its softmax over the row's causal
limit, in place, and returns the row sums, the row distances ``sum_j P[i, j] (diag0 + i -
j)`` and the column sums. It must
equal the float64 definitions for every causal offset; leave rows that see nothing uniform,
as PyTorch's softmax does; give the same numbers on any number of threads; and leave the
process's floating-point mode alone. The tiled attention hands the sums to the reducers,
and the statistics they build must not depend on whether the kernel ran.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.attention import engine, interface, kernels
from workbench.attention.reductions import DEFAULT_FAI_CUTS

pytestmark = pytest.mark.skipif(
    not kernels.available(), reason="no C compiler here: the tiled path uses PyTorch"
)

LOW = torch.finfo(torch.float32).min


def definitions(scores: torch.Tensor, lim0: int, diag0: int, band: int, offsets):
    """float64 ``(P, rowsum, dist, colsum, band, tri)`` of `softmax_stats`, by its
    docstring."""
    _, n, width = scores.shape
    j = torch.arange(width)
    keep = j[None, :] <= lim0 + torch.arange(n)[:, None]  # [n, width]
    keep[:, 0] = True  # a row keeps at least its first entry
    p = torch.softmax(scores.double().masked_fill(~keep, float("-inf")), -1)
    diagonals = torch.zeros(*p.shape[:2], band, dtype=p.dtype)
    tri = torch.zeros(p.shape[0], len(offsets), n, dtype=p.dtype)
    for i in range(n):
        for d in range(band):
            if diag0 + i - d >= 0:
                diagonals[:, i, d] = p[:, i, diag0 + i - d]
        for c, o in enumerate(offsets):
            for k in range(n):
                if o + k >= 0:
                    tri[:, c, k] = p[:, : k + 1, o + k].sum(-1)
    dist = (p * (diag0 + torch.arange(n)[:, None] - j).double()).sum(-1)
    return p, p.sum(-1), dist, p.sum(1), diagonals, tri


@pytest.mark.parametrize("rows", [24, 70])  # one work item per group; three, the last short
@pytest.mark.parametrize("lim0, diag0", [(0, 0), (5, 5), (37, 37), (64, 13), (1000, 40)])
def test_softmax_and_sums_equal_their_definitions(lim0, diag0, rows):
    """Row ``i`` is the softmax of its first ``lim0 + i + 1`` scores, 0 after them; the
    band and the triangles are read off it where query row 0 sits at key `diag0`."""
    assert kernels.PART_ROWS < 70 < 3 * kernels.PART_ROWS
    g = torch.Generator().manual_seed(lim0)
    width = rows + 40
    scores = torch.randn(6, rows, width, generator=g) * 4
    offsets = [diag0 - c + 1 for c in (3, 9, 30) if diag0 - c + 1 + rows <= width]
    want = definitions(scores, lim0, diag0, 7, offsets)
    tile = scores.clone()
    got = kernels.softmax_stats(tile, lim0, diag0, 7, offsets)
    names = ("P", "rowsum", "dist", "colsum", "band", "tri")
    values = (tile, got.rowsum, got.dist, got.colsum, got.band, got.tri)
    for name, a, b in zip(names, values, want, strict=True):
        if b.numel() == 0:
            assert a is None, name
            continue
        if name == "dist":  # float precision of the sum of |distance| (signs mix past lim0)
            back = diag0 + torch.arange(rows)[:, None] - torch.arange(width)
            spread = (want[0] * back.abs()).sum(-1)
            assert ((a.double() - b).abs() <= 2e-6 + 1e-6 * spread).all(), name
            continue
        torch.testing.assert_close(a.double(), b, atol=2e-6, rtol=1e-6, msg=name)
    assert (tile == 0).sum() == (want[0] == 0).sum()  # past each row's limit: exactly 0


def test_probabilities_are_as_accurate_as_pytorchs():
    """The kernel's own ``exp`` (a polynomial gcc vectorises) keeps every probability within
    1.5e-6 of its float64 value, relative: PyTorch's float32 softmax is within 7.4e-7 here,
    and an ``exp`` off by 1e-5 would fail."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 64, 512, generator=g) * 2
    want = torch.softmax(scores.double(), -1)
    tile = scores.clone()
    kernels.softmax_stats(tile, 512)
    assert ((tile.double() - want).abs() / want).max() < 1.5e-6


def test_a_row_that_sees_nothing_is_uniform_as_in_pytorch():
    """Masked with the float minimum everywhere (left padding), a row is uniform: what
    PyTorch's softmax gives, so the output of such rows does not change."""
    scores = torch.randn(2, 4, 16)
    scores[1, 2] = LOW
    tile = scores.clone()
    kernels.softmax_stats(tile, 16)
    torch.testing.assert_close(tile, torch.softmax(scores, -1), atol=1e-6, rtol=1e-6)
    assert torch.equal(tile[1, 2], torch.full((16,), 1 / 16))


def test_threads_give_the_same_numbers():
    """Work items (groups x parts of `PART_ROWS` rows) do not depend on the number of
    threads, and their column sums are added in a fixed order: bitwise the same."""
    scores = torch.randn(9, 100, 300)
    threads = torch.get_num_threads()
    tiles, sums = [], []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            tiles.append(scores.clone())
            sums.append(kernels.softmax_stats(tiles[-1], 150, 150, 5, [0, 100]))
    finally:
        torch.set_num_threads(threads)
    for tile, got in zip(tiles[1:], sums[1:], strict=True):
        assert torch.equal(tile, tiles[0])
        assert all(torch.equal(x, y) for x, y in zip(got._fields(), sums[0]._fields(), strict=True))


def test_the_kernel_runs_on_pytorchs_openmp_threads():
    """Where PyTorch's threads are GNU OpenMP's (the Linux wheels), the kernel is built with
    OpenMP and binds to that same runtime: no second ``libgomp.so.1`` (the compiler's) is
    loaded, so the kernel's threads are PyTorch's pool and never compete with it. (Other
    wheels bundle renamed copies, such as sentencepiece's ``libgomp-<hash>.so.1.0.0``,
    which nothing of the kernel's binds to.)"""
    runtime = kernels._openmp_runtime()
    if runtime is None:
        pytest.skip("PyTorch's threads are not GNU OpenMP's here: the kernel runs on one")
    assert kernels.threaded()
    maps = Path("/proc/self/maps").read_text().splitlines()
    assert {ln.split()[-1] for ln in maps if ln.endswith("/libgomp.so.1")} == {runtime}


def test_loading_the_kernel_keeps_denormals():
    """Linked without -ffast-math's startup code, it does not flush denormals to zero for
    the whole process (which would change every other computation's rounding)."""
    assert kernels.available()
    tiny = 1e-40  # below float32's smallest normal number
    assert (torch.tensor(tiny) * 1.0).item() != 0.0
    assert np.float32(tiny) * np.float32(1.0) != 0.0


def test_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("WORKBENCH_KERNELS", "0")
    assert not kernels.available()


def test_a_missing_compiler_warns_and_falls_back(monkeypatch, tmp_path):
    """No compiler: one warning that names the fix, then PyTorch's path."""
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    kernels._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="kernel is off.*WORKBENCH_KERNELS=0"):
            assert not kernels.available()
    finally:
        kernels._library.cache_clear()


def test_the_library_is_built_once_into_the_cache(monkeypatch, tmp_path):
    """Built into ``kernels/<key>/tiles.so`` under the cache, then loaded from there."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    kernels._library.cache_clear()
    try:
        assert kernels.available()
        (lib,) = (tmp_path / "kernels").glob("*/tiles.so")
        built = lib.stat().st_mtime_ns
        assert [p.name for p in lib.parent.iterdir()] == ["tiles.so"]  # no partial files
        kernels._library.cache_clear()
        assert kernels.available() and lib.stat().st_mtime_ns == built
    finally:
        kernels._library.cache_clear()


B, H, KV, D = 2, 6, 2, 8


def tiles_with_sums(mask, softcap=None, tq=40, rows=16):
    """What the tiled path hands its reducer: ``[(rows, probs, key0, sums)]``."""
    g = torch.Generator().manual_seed(1)
    q = torch.randn(B, H, tq, D, generator=g) * 2
    k = torch.randn(B, KV, tq, D, generator=g) * 2
    v = torch.randn(B, KV, tq, D, generator=g)
    seen = []
    with torch.no_grad():
        interface._tiled(
            q, k, v, mask, 0.3, softcap, None,
            lambda r, p, k0, sums: seen.append((r, p.clone(), k0, sums)),
            interface._Pass({}, None, rows, False),
        )  # fmt: skip
    return seen


def window(tq: int, w: int) -> torch.Tensor:
    t = torch.arange(tq)
    return ((t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - w))[None, None]


@pytest.mark.parametrize(
    "mask, softcap",
    [(None, None), (window(40, 7), None), (None, 5.0)],
    ids=["causal", "sliding-window", "softcap"],
)
def test_the_tiled_path_hands_each_tile_its_own_sums(mask, softcap):
    """The sums handed with each tile are that tile's: its row sums, its rows' distances
    ``sum_j P[t, key0 + j] (t - key0 - j)`` and its column sums."""
    seen = tiles_with_sums(mask, softcap)
    assert len(seen) == 3 and any(k0 > 0 for *_, k0, _ in seen) == (mask is not None)
    for rows, p, k0, sums in seen:
        back = torch.arange(rows.start, rows.stop)[:, None] - k0 - torch.arange(p.shape[-1])
        torch.testing.assert_close(sums.rowsum, p.sum(-1))
        torch.testing.assert_close(sums.dist, (p * back).sum(-1), atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(sums.colsum, p.sum(-2))


def test_a_float_mask_goes_through_the_kernel_too(monkeypatch):
    """An additive float mask is added to the scores, then the kernel normalises whole
    rows: the probabilities PyTorch's softmax gives."""
    additive = torch.zeros(1, 1, 40, 40).masked_fill(~window(40, 7), LOW)
    got = tiles_with_sums(additive)
    monkeypatch.setenv("WORKBENCH_KERNELS", "0")
    want = tiles_with_sums(additive)
    for (_, p, _, sums), (_, p_torch, _, none) in zip(got, want, strict=True):
        assert sums is not None and none is None
        torch.testing.assert_close(p, p_torch, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(sums.colsum, p.sum(-2))


def test_attention_sinks_take_pytorchs_path():
    """With sinks (an extra logit per head) the tiles are PyTorch's, without sums."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, x, 20, D, generator=g) for x in (H, KV, KV))
    seen = []
    with torch.no_grad():
        interface._tiled(
            q, k, v, None, 0.3, None, torch.zeros(H),
            lambda r, p, k0, sums: seen.append(sums), interface._Pass({}, None, 8, False),
        )  # fmt: skip
    assert seen == [None, None, None]


def stats(monkeypatch, kernel: bool, spans, mask=None):
    """A `Collector`'s statistics of one tiled layer, with or without the kernel."""
    monkeypatch.setenv("WORKBENCH_KERNELS", "1" if kernel else "0")
    g = torch.Generator().manual_seed(2)
    tq = max(s + n for s, n, _ in spans)
    q = torch.randn(len(spans), H, tq, D, generator=g) * 2
    k = torch.randn(len(spans), KV, tq, D, generator=g) * 2
    v = torch.randn(len(spans), KV, tq, D, generator=g)
    heads = [(0, h) for h in (0, 2, 3, 5)]  # a subset: the collector selects them
    collector = engine.Collector(spans, heads, H, max_window=8, cuts=(*DEFAULT_FAI_CUTS[:9], 21))
    with torch.no_grad():
        interface._tiled(
            q, k, v, mask, 0.3, None, None, collector.reducers()[0],
            interface._Pass({}, None, 16, False),
        )  # fmt: skip
    return collector.finish()


@pytest.mark.parametrize("padded", [False, True], ids=["one-sequence", "left-padded-batch"])
def test_statistics_do_not_depend_on_the_kernel(monkeypatch, padded):
    """A `Collector` builds the same statistics from the kernel's sums as from the tiles
    (a left-padded sequence's tiles hold rows that are not its own, so its sums are
    recomputed from its rows)."""
    spans = [(0, 70, 10), (9, 61, 7)] if padded else [(0, 70, 10)]
    mask = None
    if padded:
        keep = window(70, 70).expand(2, 1, -1, -1).clone()
        keep[1, :, :, :9] = False
        mask = keep
    with_kernel = stats(monkeypatch, True, spans, mask)
    without = stats(monkeypatch, False, spans, mask)
    for a, b in zip(with_kernel, without, strict=True):
        for name in ("rowsum", "dist", "band", "cut_sums"):
            torch.testing.assert_close(
                getattr(a, name), getattr(b, name), atol=2e-6, rtol=1e-5, msg=name
            )


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "pytorch"])
def test_a_short_response_after_a_long_prompt_keeps_its_distances_exact(monkeypatch, kernel):
    """A local head's rows at t ~ 3000 (a 3-token response after a long prompt): the
    kernel returned ``sum_j P[i, j] j`` (about t) in float32, and the reducer subtracted
    it from ``t * rowsum``, so each row distance (about 0.3) was off by up to 3e-4 and the
    span by 1e-4 relative. The kernel now sums each row's distance from its own key (and
    PyTorch's reductions count positions from the tile's last row)."""
    monkeypatch.setenv("WORKBENCH_KERNELS", "1" if kernel else "0")
    n, pl = 3000, 2997
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n)
    back = (t[:, None] - t[None, :]).float()
    scores = -2.0 * back + torch.randn(n, n, generator=g)  # a local head, through the mask
    mask = scores.masked_fill(back < 0, LOW)[None, None]
    q = k = v = torch.zeros(1, 1, n, D)
    collector = engine.Collector([(0, n, pl)], [(0, 0)], 1, max_window=4, cuts=(n,))
    with torch.no_grad():
        interface._tiled(
            q, k, v, mask, 1.0, None, None, collector.reducers()[0],
            interface._Pass({}, None, None, False),
        )  # fmt: skip
    (got,) = collector.finish()
    p = torch.softmax(mask[0, 0, pl:].double().masked_fill(back[pl:] < 0, float("-inf")), -1)
    want = (p * back[pl:].double().clamp(min=0)).sum(-1)
    np.testing.assert_allclose(got.dist[0, pl:].double().numpy(), want.numpy(), rtol=1e-5)
