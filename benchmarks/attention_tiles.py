"""One attention layer of SmolLM2's shape: sdpa against the engine's tiled attention with the
analysis reductions, for several tile shapes, side by side.

    python benchmarks/attention_tiles.py                 # T = 4096 and 8192
    python benchmarks/attention_tiles.py --lengths 8192 --rows 32 96 160

Random queries, keys and values (9 query heads, 3 key/value heads, d_head 64, batch 1),
causal. ``sdpa`` is PyTorch's fused attention (the floor). Each tiled configuration runs
`workbench.attention.interface._tiled` with the engine's reducer for one sequence (a
`Collector`, the analysis defaults: window 32, the default FAI cuts). Where the compiled
kernel (`workbench.attention.kernels`) is available, the tiles use it:

| config | tiles |
|---|---|
| `all heads, R rows` | every head of the layer in one tile of ``R`` query rows (the engine) |
| `all heads, R rows, no kernel` | the same with ``WORKBENCH_KERNELS=0``: PyTorch's softmax and reductions |
| `per kv group, R rows` | the ``3`` query heads of one key/value head per tile |
| `credit, sdpa + tiles` | one RL credit layer as before the band path: sdpa's output, and the probabilities in tiles, reduced for window 10 and the cuts of FAI (10, 100) |
| `credit, band` | the same layer on the band path (`interface.Banded`): one flash call with a position channel, then a band of 101 diagonals |
| `sdpa, window W` | sdpa with a sliding-window mask of ``W`` keys (``--window``, default 512; sdpa computes every key and masks) |
| `all heads, window W` | the engine's tiles under that mask: each tile runs from the first key its rows see, and so do its reductions |
| `analysis, band + 3 heads' columns` | the analysis design #14 proposed (column sums only for the global heads, 30%), as a lower bound on its cost: the band path for every head, then the whole-column sums of 3 heads from tiles of ``exp(q k^T scale - LSE)`` |

A second line splits one tiled run by operation (cProfile): the two products (q k^T in
`baddbmm`; the output and the reductions' products in `matmul`), the softmax, and the
rest of the reductions. One thread; each configuration is timed once after a warm-up.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

import _args

HEADS, KV, D = 9, 3, 64


def sdpa(q, k, v) -> None:
    import torch

    rep = HEADS // KV
    torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=True
    )


def window_mask(T: int, window: int):
    """``[1, 1, T, T]`` boolean sliding-window causal mask (as transformers builds it)."""
    import torch

    t = torch.arange(T)
    return ((t[None, :] <= t[:, None]) & (t[None, :] > t[:, None] - window))[None, None]


def sdpa_window(q, k, v, mask) -> None:
    import torch

    rep = HEADS // KV
    torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=mask
    )


def tiled_torch(q, k, v, rows: int) -> None:
    """`tiled` with the compiled kernel off (``WORKBENCH_KERNELS=0``): PyTorch's softmax,
    masked fill and reductions, as before the kernel."""
    import os

    before = os.environ.get("WORKBENCH_KERNELS")
    os.environ["WORKBENCH_KERNELS"] = "0"
    try:
        tiled(q, k, v, rows, False)
    finally:
        if before is None:
            del os.environ["WORKBENCH_KERNELS"]
        else:
            os.environ["WORKBENCH_KERNELS"] = before


def analysis_collector(T: int, heads: int):
    """The engine's reducers for one sequence of `T` tokens with the analysis defaults
    (window 32, the default FAI cuts), for `heads` query heads of layer 0."""
    from workbench.attention.engine import Collector
    from workbench.attention.reductions import DEFAULT_FAI_CUTS

    hs = [(0, h) for h in range(heads)]
    return Collector([(0, T, T // 8)], hs, heads, max_window=32, cuts=DEFAULT_FAI_CUTS)


def tiled_window(q, k, v, mask) -> None:
    """The engine's tiled attention with the analysis reductions under a sliding-window
    `mask`: each tile runs from the first key its rows see."""
    from workbench.attention import interface

    acc = analysis_collector(q.shape[2], HEADS)
    interface._tiled(
        q, k, v, mask, None, None, None, acc.reducers()[0], interface._Pass({}, None, None, False)
    )  # fmt: skip
    acc.finish()


def tiled(q, k, v, rows: int, per_group: bool) -> None:
    """The engine's tiled attention with the analysis reductions, over all heads at once or
    one key/value group at a time."""
    from workbench.attention import interface

    T, group = q.shape[2], HEADS // KV
    step = group if per_group else HEADS
    for h0 in range(0, HEADS, step):
        kv = slice(h0 // group, (h0 + step - 1) // group + 1)
        acc = analysis_collector(T, step)
        interface._tiled(
            q[:, h0 : h0 + step], k[:, kv], v[:, kv], None, None, None, None,
            acc.reducers()[0], interface._Pass({}, None, rows, False),
        )  # fmt: skip
        acc.finish()


def _credit_accumulator(T: int, columns: bool):
    from workbench.attention.reductions import StatsAccumulator

    heads = [(0, h) for h in range(HEADS)]
    return StatsAccumulator(heads, T, T // 8, 10, (10, 101), columns=columns)


def credit_tiles(q, k, v) -> None:
    """An RL credit layer before the band path: sdpa's output, tiles reduced apart."""
    from workbench.attention import interface

    acc = _credit_accumulator(q.shape[2], True)
    run = interface._Pass({}, None, None, True, True)
    interface._tiled(
        q,
        k,
        v,
        None,
        None,
        None,
        None,
        lambda r, p, k0, sums: acc.add(r, p[0], key0=k0),
        run,
        output=False,
    )
    sdpa(q, k, v)
    acc.finish()


def credit_band(q, k, v) -> None:
    """An RL credit layer on the band path (`interface.Banded`)."""
    from workbench.attention import interface

    acc = _credit_accumulator(q.shape[2], False)
    reduce = interface.Banded(
        lambda r, p, k0, sums: acc.add(r, p[0], key0=k0),
        acc.max_window,
        lambda r, dist, band: acc.add_band(r, dist[0], band[0]),
    )
    interface._banded(q, k, v, None, None, reduce)
    acc.finish()


def global_columns(q, k, v, heads: int):
    """The design #14 proposed for the analysis, as a lower bound on its cost: every head
    on the band path (one flash call with a position channel, then a band of 33 diagonals
    for WAAD and the short cuts), then the column sums of only `heads` heads (the global
    heads once classified) from tiles ``exp(q k^T scale - LSE)``. Only the whole-column
    sum is reduced (no long cuts), so the real design would cost more than this."""
    import torch

    from workbench.attention import interface

    T, scale, rows = q.shape[2], D**-0.5, 96
    _, lse = interface._flash(q, k, v, None, scale)
    interface._band(q, k, lse, None, scale, 33)
    qh, keys = q[0, :heads], k[0, : -(-heads // (HEADS // KV))]
    qh = qh.view(keys.shape[0], -1, T, D)  # [kv, group, T, d]: heads of one key/value head
    colsum = torch.zeros(heads, T)
    buffer = torch.empty(heads * rows * T)
    for a in range(0, T, rows):
        e = min(T, a + rows)
        n = e - a
        s = buffer[: heads * n * e].view(keys.shape[0], -1, e)
        torch.baddbmm(
            s, qh[:, :, a:e].flatten(1, 2), keys[:, :e].transpose(-1, -2), beta=0.0,
            alpha=scale, out=s,
        )  # fmt: skip
        s = s.view(heads, n, e)
        s.sub_(lse[0, :heads, a:e, None])
        s[..., a:e].masked_fill_(torch.ones(n, n, dtype=torch.bool).triu_(1), -torch.inf)
        s.exp_()
        colsum[:, :e] += torch.matmul(torch.ones(heads, 1, n), s)[:, 0]
    return colsum  # [heads, key_pos]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=_args.positive_int, nargs="+", default=[4096, 8192])
    ap.add_argument("--rows", type=_args.positive_int, nargs="+", default=[96, 160])
    ap.add_argument("--threads", type=_args.positive_int, default=1)
    ap.add_argument(
        "--window",
        type=_args.positive_int,
        default=512,
        help="sliding window of the window rows",
    )
    args = ap.parse_args(argv)

    import torch

    from workbench.provenance import provenance

    torch.set_num_threads(args.threads)
    print("provenance " + json.dumps(provenance()), flush=True)
    for T in args.lengths:
        g = torch.Generator().manual_seed(0)
        qkv = (
            torch.randn(1, HEADS, T, D, generator=g),
            torch.randn(1, KV, T, D, generator=g),
            torch.randn(1, KV, T, D, generator=g),
        )
        configs = {"sdpa": (sdpa, ())}
        for r in args.rows:
            configs[f"all heads, {r} rows"] = (tiled, (r, False))
            configs[f"all heads, {r} rows, no kernel"] = (tiled_torch, (r,))
            configs[f"per kv group, {r} rows"] = (tiled, (r, True))
        configs["credit, sdpa + tiles"] = (credit_tiles, ())
        configs["credit, band"] = (credit_band, ())
        configs["analysis, band + 3 heads' columns"] = (global_columns, (3,))
        # Built once, as transformers builds it once per forward for every layer.
        mask = window_mask(T, args.window)
        configs[f"sdpa, window {args.window}"] = (sdpa_window, (mask,))
        configs[f"all heads, window {args.window}"] = (tiled_window, (mask,))
        times = {}
        for name, (fn, extra) in configs.items():
            fn(*qkv, *extra)  # warm-up
            t0 = time.perf_counter()
            fn(*qkv, *extra)
            times[name] = time.perf_counter() - t0
        print(f"\n| T = {T} | seconds | x sdpa |\n|---|---|---|")
        for name, t in times.items():
            print(f"| {name} | {t:.3f} | {t / times['sdpa']:.2f} |")
        prof = cProfile.Profile()
        prof.enable()
        tiled(*qkv, args.rows[0], False)
        prof.disable()
        own = {f[2]: v[2] for f, v in pstats.Stats(prof).stats.items()}  # tottime by name
        parts = {
            n: sum(own.get(k, 0.0) for k in keys)
            for n, keys in [
                ("q k^T", ["<built-in method torch.baddbmm>"]),
                ("output and reduction products", ["<built-in method torch.matmul>"]),
                # In place on the CPU, the softmax is `torch.ops.aten._softmax.out`, the
                # tile loop's only call through torch.ops (cProfile names it so).
                (
                    "softmax",
                    ["<built-in method torch.softmax>", "<built-in method torch._ops.aten.>"],
                ),
                ("the kernel (softmax and sums)", ["_kernel"]),
            ]
        }
        rest = sum(own.values()) - sum(parts.values())
        split = ", ".join(f"{n} {s:.3f} s" for n, s in parts.items())
        print(f"\nall heads, {args.rows[0]} rows, by operation: {split}, the rest {rest:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(_args.entry(main))
