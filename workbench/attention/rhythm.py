"""Preplan and anchor tokens, locally dominated anchors and their introductions (Sec. 5.2).

Counting and ties follow the README ("The method"): "top q" / "bottom q" of ``n`` eligible
tokens selects ``max(1, round(q * n))`` of them (Python's ``round``, half to even), ties
broken by the lower position. Eligible tokens are response tokens where the metric is defined (not NaN).

This project's choices where the paper is silent (each a parameter):

- ``tau_waad`` defaults to the median WAAD of the response and ``tau_delta`` to the median
  Delta of the response (``numpy.median``: the mean of the two middle values for an even
  count);
- ``k = 3`` (look-back for the preceding Delta peak);
- ``intro(t)`` is the position ``u`` in ``t-k..t-1`` with the largest Delta (ties: the
  lower position), over positions where Delta is defined.
"""

from __future__ import annotations

from typing import Any, no_type_check

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .. import _validate
from ..errors import WorkbenchError

#: A per-token curve: a tensor, or a float64 numpy array (the batched RL credit's).
Curve = Float[Tensor, " pos"] | Float[np.ndarray, " pos"]


__all__ = [
    "check_entropy",
    "coupled_sets",
    "default_taus",
    "dominated_anchors",
    "introductions",
    "select_count",
    "thresholds",
    "top_q",
]


def check_entropy(curves: Any, what: str = "this analysis", consequence: str = "") -> None:
    """Refuse curves analysed with ``entropy=False`` (every response entropy NaN) where
    entropies are needed: the entropy credit, the entropy at WAAD peaks, an entropy curve
    or colouring (the charts were drawn empty without a word).

    Args:
        curves: a `wb.Analysis` (anything with ``entropy [pos]`` and ``prompt_len``).
        what: how the message names it (``"trace 3"``).
        consequence: appended to the problem (``", so ... is undefined"``).
    """
    if bool(torch.isnan(torch.as_tensor(curves.entropy[curves.prompt_len :])).all()):
        raise WorkbenchError(
            f"{what} has no entropies (it was analysed with entropy=False){consequence}",
            "analyse again with entropy=True (the default)",
        )


def _array(x: Any) -> np.ndarray:
    """`x` as a float64 numpy array (no copy when it is one already)."""
    if isinstance(x, np.ndarray):
        return x.astype(np.float64, copy=False)
    return torch.as_tensor(x).detach().cpu().double().numpy()


def select_count(q: float, n: int) -> int:
    """``max(1, round(q * n))`` items out of `n` (0 when there are none)."""
    return 0 if n == 0 else min(n, max(1, round(q * n)))


@no_type_check  # validates its arguments itself, with messages that name the fix
def top_q(values: Curve, q: float, *, bottom: bool = False) -> list[int]:
    """Positions of the top (or bottom) `q` of the defined (non-NaN) values.

    Args:
        values: ``[pos]``, NaN where the token is not eligible.
        q: fraction in ``(0, 1]``.
        bottom: select the smallest instead of the largest (True or False).

    Returns:
        Sorted positions; ties are broken by the lower position.
    """
    q = _validate.number("q", q, low=0, high=1, low_open=True, example=0.4)
    bottom = _validate.flag("bottom", bottom)  # "no" or "top" is truthy: the bottom silently
    v = _validate.curve(
        "top_q",
        values,
        "pass one sequence's values, e.g. analysis.fai (NaN where a token is not eligible)",
    ).numpy()
    pos = np.flatnonzero(~np.isnan(v))
    m = select_count(q, len(pos))
    if m == 0:
        return []
    key = v[pos] if bottom else -v[pos]
    order = np.lexsort((pos, key))  # primary: key, secondary: position
    return sorted(int(p) for p in pos[order[:m]])


def default_taus(waad: Curve, delta: Curve) -> tuple[float, float]:
    """This project's defaults: the median WAAD and the median Delta of the response."""
    w = _array(waad)
    d = _array(delta)
    return _median(w[~np.isnan(w)]), _median(d[~np.isnan(d)])


def _median(x: np.ndarray) -> float:
    """``np.median`` of a 1-D float64 array without NaNs (NaN when empty), bit for bit, at a
    tenth of its overhead on short arrays (the RL credit computes two per rollout)."""
    if len(x) == 0:
        return float("nan")
    s = np.sort(x)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else float((s[mid - 1] + s[mid]) / 2.0)


def _lookback(delta: np.ndarray, t: int, k: int) -> list[int]:
    return [u for u in range(max(0, t - k), t) if not np.isnan(delta[u])]


def dominated_anchors(
    anchors: list[int],
    waad: Curve,
    delta: Curve,
    *,
    k: int,
    tau_waad: float,
    tau_delta: float,
) -> list[int]:
    """Locally dominated anchors ``D`` (Sec. 5.2).

    Anchors ``t`` with ``WAAD[t] <= tau_waad`` and ``max_{u in t-k..t-1} Delta[u] >=
    tau_delta`` (only ``u`` where Delta is defined; none defined means not dominated).
    """
    w = _array(waad)
    d = _array(delta)
    out = []
    for t in anchors:
        back = _lookback(d, t, k)
        if back and w[t] <= tau_waad and max(d[u] for u in back) >= tau_delta:
            out.append(t)
    return out


def introductions(dominated: list[int], delta: Curve, *, k: int) -> list[int]:
    """``I(D) = {intro(t) : t in D}``: for each dominated anchor the position in
    ``t-k..t-1`` with the largest Delta (ties: the lower position). Sorted, distinct."""
    d = _array(delta)
    out = set()
    for t in dominated:
        back = _lookback(d, t, k)
        if back:
            best = max(back, key=lambda u: (d[u], -u))
            out.add(best)
    return sorted(out)


def thresholds(
    waad: Curve, delta: Curve, tau_waad: float | None, tau_delta: float | None
) -> tuple[float, float]:
    """``(tau_waad, tau_delta)`` in effect: the given ones, else `default_taus`."""
    med_w, med_d = default_taus(waad, delta)
    return (med_w if tau_waad is None else tau_waad, med_d if tau_delta is None else tau_delta)


def coupled_sets(
    anchors: list[int], waad: Curve, delta: Curve, *, k: int, tau_waad: float, tau_delta: float
) -> tuple[list[int], list[int]]:
    """``(D, I(D))`` for `anchors`: `dominated_anchors`, then their `introductions`."""
    dom = dominated_anchors(anchors, waad, delta, k=k, tau_waad=tau_waad, tau_delta=tau_delta)
    return dom, introductions(dom, delta, k=k)
