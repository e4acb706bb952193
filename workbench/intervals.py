"""Confidence intervals: the one home of the workbench's interval estimates.

`bootstrap_ci` is the percentile bootstrap of a mean. It is meant for many units (traces,
positions); at a handful of units (for example five RL seeds) percentile intervals are
too narrow, so use an interval built for small samples there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["bootstrap_ci"]


def bootstrap_ci(
    values: Any, *, n_boot: int = 2000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean and its percentile bootstrap interval (NaNs dropped).

    With one value the interval is that value; with none, all three are NaN.
    """
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    est = float(v.mean())
    if len(v) == 1:
        return est, est, est
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    means = v[idx].mean(1)
    a = (1 - ci) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return est, float(lo), float(hi)
