"""The slow, obviously correct reference: full patterns, explicit loops, float64.

Used by the tests to check the streaming engine. It materialises every chosen layer's full
pattern with ``run_with_cache(names_filter=...)`` (``layers x heads x T^2`` floats: keep
traces short) and computes each quantity exactly as the README ("The method") states it,
one token at a time, without sharing any code with the fast path:

- span (Eq. 7), local/global heads (Eq. 8) with the counting and tie rules,
- WAAD (Eq. 9) of ``A_loc`` (the mean map of the local heads),
- FAI (Eq. 10) of ``A_glob`` with the ``T(s)`` set written out,
- Delta, preplan/anchor sets, ``D`` and ``I(D)`` (Sec. 5.2),
- next-token entropy (``entropy[t]`` from logits at row ``t-1``),
- receiver kurtosis of each head's own FAI vector.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..models import eval_mode

__all__ = ["reference_analyze", "reference_from_patterns"]

NAN = float("nan")


def _top(values: np.ndarray, q: float, bottom: bool = False) -> list[int]:
    items = [(v, t) for t, v in enumerate(values) if not math.isnan(v)]
    n = len(items)
    if n == 0:
        return []
    m = min(n, max(1, round(q * n)))
    items.sort(key=lambda vt: (vt[0] if bottom else -vt[0], vt[1]))
    return sorted(t for _, t in items[:m])


def _kurt(x: list[float]) -> float:
    if len(x) < 4:
        return NAN
    a = np.array(x)
    m = a.mean()
    m2 = ((a - m) ** 2).mean()
    m4 = ((a - m) ** 4).mean()
    return NAN if m2 <= 0 else m4 / m2**2 - 3.0


def _without_sink(a: np.ndarray) -> np.ndarray:
    out = np.zeros_like(a)
    for t in range(a.shape[0]):
        # = 1 - A[t, 0] for a row that sums to one; summed, it keeps its precision where
        # the first token takes nearly everything (1 - A[t, 0] is off by an ulp of 1).
        rest = sum(a[t, s] for s in range(1, a.shape[1]))
        if rest > 0:
            for s in range(1, a.shape[1]):
                out[t, s] = a[t, s] / rest
    return out


def reference_from_patterns(
    patterns: dict[tuple[int, int], np.ndarray],
    prompt_len: int,
    *,
    n_layers: int,
    n_heads: int,
    window: int = 10,
    fai_horizon: tuple[int, int | None] = (0, None),
    head_quantiles: tuple[float, float] = (0.3, 0.3),
    top_q: float = 0.4,
    k: int = 3,
    alpha: float = 0.5,
    tau_waad: float | None = None,
    tau_delta: float | None = None,
    entropy: np.ndarray | None = None,
    gamma_amp: float = 1.5,
    sink: str = "keep",
    fai_min_rows: int = 10,
) -> dict[str, Any]:
    """Every metric from explicit ``[T, T]`` float64 patterns of the analysed heads.

    Args:
        patterns: ``{(layer, head): A}`` with ``A[t, s]`` the attention of query ``t`` to key
            ``s``.
        prompt_len: first response position.
        sink: ``"exclude"`` first replaces each pattern by ``A'`` (first column zeroed,
            rows renormalised; rows with no mass left become zeros), element by element.
        (others): as in `workbench.analyze`.

    Returns:
        A dict of numpy arrays and lists with the same names as `Analysis` attributes,
        plus ``gamma_local``, ``gamma_global``, ``gamma_coupled``.
    """
    heads = sorted(patterns)
    n = next(iter(patterns.values())).shape[0]
    if sink == "exclude":
        patterns = {key: _without_sink(a) for key, a in patterns.items()}
    R = list(range(prompt_len, n))

    # Eq. 7: span.
    span = {}
    for key in heads:
        a = patterns[key]
        per_row = [sum(a[t, s] * (t - s) for s in range(t + 1)) for t in R]
        span[key] = float(np.mean(per_row))
    span_grid = np.full((n_layers, n_heads), NAN)
    for (layer, h), v in span.items():
        span_grid[layer, h] = v

    # Eq. 8: classes (counts max(1, round(q n)); ties by lower (layer, head)).
    nh = len(heads)
    m_loc = min(nh, max(1, round(head_quantiles[0] * nh)))
    m_glob = min(nh, max(1, round(head_quantiles[1] * nh)))
    local = sorted(sorted(heads, key=lambda x: (span[x], x))[:m_loc])
    glob = sorted(sorted(heads, key=lambda x: (-span[x], x))[:m_glob])
    a_loc = sum(patterns[x] for x in local) / len(local)
    a_glob = sum(patterns[x] for x in glob) / len(glob)

    # Eq. 9: WAAD.
    waad = np.full(n, NAN)
    for t in R:
        waad[t] = sum(a_loc[t, s] * min(t - s, window) for s in range(t + 1))

    # Eq. 10: FAI.
    lo, hi = fai_horizon

    def fai_of(a: np.ndarray) -> np.ndarray:
        out = np.full(n, NAN)
        for s in R:
            upper = n - 1 if hi is None else min(n - 1, s + hi)
            ts = [t for t in R if s + lo <= t <= upper]
            if len(ts) >= fai_min_rows:
                out[s] = sum(a[t, s] for t in ts) / len(ts)
        return out

    fai = fai_of(a_glob)

    # Sec. 5.2.
    delta = np.full(n, NAN)
    for t in R[:-1]:
        delta[t] = abs(waad[t] - waad[t + 1])
    preplan = _top(delta, top_q)
    anchors = _top(fai, top_q)
    w_resp = waad[R]
    d_def = delta[~np.isnan(delta)]
    tw = float(np.median(w_resp)) if tau_waad is None else tau_waad
    td = (float(np.median(d_def)) if len(d_def) else NAN) if tau_delta is None else tau_delta

    def coupled_sets(anc: list[int]) -> tuple[list[int], list[int]]:
        dom, intro = [], set()
        for t in anc:
            back = [u for u in range(t - k, t) if u >= 0 and not math.isnan(delta[u])]
            if back and waad[t] <= tw and max(delta[u] for u in back) >= td:
                dom.append(t)
                best = back[0]
                for u in back:
                    if delta[u] > delta[best]:
                        best = u
                intro.add(best)
        return dom, sorted(intro)

    dominated, intro = coupled_sets(anchors)

    def coupled(anc, dom, intr):
        g = np.ones(n)
        for t in range(n):
            if t in anc and t not in dom:
                g[t] += gamma_amp - 1
            if t in dom:
                g[t] += (1 - alpha) * (gamma_amp - 1)
            if t in intr:
                g[t] += alpha * (gamma_amp - 1)
        return g

    gamma_local = np.array([gamma_amp if t in preplan else 1.0 for t in range(n)])
    gamma_global = np.array([gamma_amp if t in anchors else 1.0 for t in range(n)])

    # Receiver kurtosis: kurtosis of each head's own FAI over the response.
    kurt = np.full((n_layers, n_heads), NAN)
    for key in heads:
        f = fai_of(patterns[key])
        kurt[key] = _kurt([v for v in f[R] if not math.isnan(v)])

    out = {
        "head_span": span_grid,
        "local_heads": local,
        "global_heads": glob,
        "waad": waad,
        "fai": fai,
        "delta": delta,
        "preplan": preplan,
        "anchors": anchors,
        "dominated": dominated,
        "intro": intro,
        "tau_waad": tw,
        "tau_delta": td,
        "receiver_kurtosis": kurt,
        "gamma_local": gamma_local,
        "gamma_global": gamma_global,
        "gamma_coupled": coupled(anchors, dominated, intro),
    }
    bottom_anchors = _top(fai, top_q, bottom=True)
    bd, bi = coupled_sets(bottom_anchors)
    out["gamma_bottom_coupled"] = coupled(bottom_anchors, bd, bi)
    if entropy is not None:
        out["entropy"] = entropy
        out["gamma_entropy"] = np.array(
            [gamma_amp if t in _top(entropy, top_q) else 1.0 for t in range(n)]
        )
    return out


@torch.no_grad()
def reference_analyze(
    model: Any,
    trace: Any,
    *,
    layers: list[int],
    heads: list[tuple[int, int]] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """The reference for `workbench.analyze`: full patterns, then `reference_from_patterns`.

    Args:
        model: the bridge.
        trace: a `Trace`.
        layers: layer indices (explicit list).
        heads: optional ``(layer, head)`` restriction.
        **params: post-processing parameters as in `workbench.analyze`.
    """
    names = {f"blocks.{layer}.attn.hook_pattern" for layer in layers}
    ids = trace.ids[None].to(next(model.parameters()).device)
    with eval_mode(model):
        logits, cache = model.run_with_cache(ids, names_filter=lambda x: x in names)
    n_heads = model.cfg.n_heads
    chosen = heads if heads is not None else [(ly, h) for ly in layers for h in range(n_heads)]
    patterns = {
        (ly, h): cache[f"blocks.{ly}.attn.hook_pattern"][0, h].double().cpu().numpy()
        for ly, h in chosen
    }
    n = len(trace)
    ent = np.full(n, NAN)
    lg = logits[0].double()
    for t in range(trace.prompt_len, n):
        p = torch.softmax(lg[t - 1], -1)
        ent[t] = float(-(p * torch.log(p.clamp_min(1e-300))).sum())
    return reference_from_patterns(
        patterns,
        trace.prompt_len,
        n_layers=model.cfg.n_layers,
        n_heads=n_heads,
        entropy=ent,
        **params,
    )
