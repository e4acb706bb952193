"""Rhythm statistics over a set of traces: the paper's Table 2 analysis.

Three questions, each compared against a shuffled control:

1. Is next-token entropy higher at WAAD peaks? (`entropy_at_waad_peaks`; the paper: about
   +52% over the average token.)
2. Do FAI peaks coincide with or immediately follow a WAAD peak? (`fai_follows_waad`; the
   paper: 52.5% against 36.9% for shuffled peaks.)
3. Do receiver-head and global-head FAI peaks overlap? (`receiver_global_overlap`; the
   paper: 60.8% against 22.4% at random.)

The paper does not say how it finds peaks. This project's default detector (`PeakDetector`)
calls response position ``t`` a peak of ``x`` when ``x[t]`` is defined and

- it is strictly larger than every defined value in ``t-radius..t-1`` and at least as large
  as every defined value in ``t+1..t+radius`` (so a plateau yields its first position), and
- it is at least ``mean + min_z * std`` of ``x`` over the response.

Defaults ``radius=1, min_z=0.0``: local maxima above the response mean. Every function takes
``detector=``, any callable ``[pos] tensor -> list[int]``.

Shuffled controls draw, for each trace, the same number of positions uniformly without
replacement from the positions where the metric is defined, ``n_shuffles`` times (seeded:
the same inputs and seed give the same numbers), and report the mean of the pooled share.
That mean estimates the share's exact expectation under random positions; its Monte Carlo
standard error is at most ``0.5 / sqrt(n_shuffles * n_peaks)`` (0.0008 at the default 200
shuffles and 2,000 peaks, 0.016 for one trace with 5 peaks). Random positions may be
adjacent where two peaks may not; that leaves the expected share unchanged. No interval
or p-value is given here: `benchmarks/table2.py` bootstraps over traces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, no_type_check

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .. import _validate
from ..errors import WorkbenchError
from .analysis import Analysis
from .rhythm import check_entropy

__all__ = [
    "Curves",
    "PeakDetector",
    "entropy_at_waad_peaks",
    "fai_follows_waad",
    "receiver_global_overlap",
    "rhythm_statistics",
]

Detector = Callable[[Tensor], list[int]]


# The detector checks its own fields with messages that name the fix (see `params`).
@no_type_check
@dataclass(frozen=True)
class PeakDetector:
    """Local maxima above a z-score threshold (see the module docstring).

    Attributes:
        radius: neighbourhood on each side (>= 1).
        min_z: minimum z-score over the response (``mean + min_z * std``).
    """

    radius: int = 1
    min_z: float = 0.0

    def __post_init__(self) -> None:
        radius = _validate.integer("PeakDetector.radius", self.radius, minimum=1, example=1)
        object.__setattr__(self, "radius", radius)
        # A NaN threshold would pass every local maximum (no comparison with NaN is true).
        object.__setattr__(self, "min_z", _validate.number("min_z", self.min_z, example=0.0))

    def __call__(self, x: Float[Tensor, " pos"]) -> list[int]:
        v = _curve("the curve", x).numpy()
        ok = ~np.isnan(v)
        if not ok.any():
            return []
        vals = v[ok]
        thr = vals.mean() + self.min_z * vals.std()
        out = []
        n = len(v)
        for t in np.flatnonzero(ok):
            if v[t] < thr:
                continue
            left = [v[u] for u in range(max(0, t - self.radius), t) if ok[u]]
            right = [v[u] for u in range(t + 1, min(n, t + self.radius + 1)) if ok[u]]
            if all(v[t] > y for y in left) and all(v[t] >= y for y in right):
                out.append(int(t))
        return out


def _curve(name: str, x: Any) -> Tensor:
    """`x` as a ``[pos]`` float64 CPU tensor, NaN where undefined; refuses anything else and
    infinite values (a threshold of ``mean + min_z * std`` over them is NaN or infinite, so
    every local maximum, or none, would pass without a word)."""
    v = _validate.curve(name, x, "pass one curve, e.g. analysis.waad (NaN outside the response)")
    if bool(torch.isinf(v).any()):
        raise WorkbenchError(
            f"{name} holds infinite values", "pass finite values (NaN where undefined)"
        )
    return v


# Checks its own fields with messages that name the fix (see `params`).
@no_type_check
@dataclass(frozen=True)
class Curves:
    """The per-token curves of one trace that the statistics read (``[pos]`` each, NaN
    outside the response). `Curves.of` takes them from an `Analysis`; building one by hand
    states a case directly (the tests do). The curves must have one value per position
    each, NaN before ``prompt_len``, and ``0 <= prompt_len < pos``; they are stored as
    float64 CPU tensors.
    """

    prompt_len: int
    waad: Float[Tensor, " pos"]
    fai: Float[Tensor, " pos"]
    receiver_fai: Float[Tensor, " pos"]
    entropy: Float[Tensor, " pos"]

    def __post_init__(self) -> None:
        n = None
        for name in ("waad", "fai", "receiver_fai", "entropy"):
            v = _curve(f"Curves.{name}", getattr(self, name))
            if n is not None and len(v) != n:
                raise WorkbenchError(
                    f"Curves.{name} has {len(v)} positions, Curves.waad {n}: the curves "
                    "must be of one trace",
                    "pass the curves of one analysis (Curves.of(analysis))",
                )
            n = len(v)
            object.__setattr__(self, name, v)
        pl = _validate.integer("Curves.prompt_len", self.prompt_len, minimum=0)
        if pl >= n:
            raise WorkbenchError(
                f"Curves.prompt_len={pl} leaves no response in {n} positions",
                "pass the first response position (analysis.prompt_len)",
            )
        for name in ("waad", "fai", "receiver_fai", "entropy"):
            if not bool(torch.isnan(getattr(self, name)[:pl]).all()):
                # a prompt value would enter the peak thresholds (mean + z * std) unseen
                raise WorkbenchError(
                    f"Curves.{name} has values before prompt_len={pl}, but the statistics "
                    "read response tokens only",
                    "set the prompt positions to NaN (as an Analysis's curves are), or pass "
                    "Curves.of(analysis)",
                )
        object.__setattr__(self, "prompt_len", pl)

    @classmethod
    def of(cls, analysis: Analysis) -> Curves:
        """The curves of an `Analysis`."""
        a = analysis
        return cls(a.prompt_len, a.waad, a.fai, a.receiver_fai, a.entropy)


def _check(analyses: Any) -> list[Curves]:
    if isinstance(analyses, Analysis | Curves):
        raise WorkbenchError(
            f"the rhythm statistics pool a list of traces, got one {type(analyses).__name__}",
            "pass a list: [analysis], or wb.analyze_many(model, traces)",
        )
    try:
        items = list(analyses)
    except TypeError:
        items = []
    if not items:
        raise WorkbenchError(
            "the rhythm statistics need a non-empty list of Analysis objects",
            "pass wb.analyze_many(model, traces)",
        )
    wrong = [i for i, a in enumerate(items) if not isinstance(a, Analysis | Curves)]
    if wrong:
        raise WorkbenchError(
            f"the rhythm statistics need a non-empty list of Analysis objects, but item "
            f"{wrong[0]} is a {type(items[wrong[0]]).__name__}"
            + (f" ({len(wrong)} items are not analyses)" if len(wrong) > 1 else ""),
            "pass wb.analyze_many(model, traces), or [wb.analyze(model, t) for t in traces]",
        )
    return [Curves.of(a) if isinstance(a, Analysis) else a for a in items]


def _peaks(det: Any, x: Tensor, what: str, prompt_len: int) -> list[int]:
    """``det(x)``, checked: distinct response positions where `x` is defined (a custom
    detector's ``-1`` would silently pick the last token, a prompt position or one in
    FAI's undefined tail count a NaN, a repeated position count twice, a float or bool
    index fail deep in numpy). The detector gets a copy: one that fills NaN in place
    changed the trace's curves, and with them every later statistic and the controls'
    pool of defined positions."""
    got = det(x.clone())
    n = len(x)
    try:
        peaks = [_validate.as_index(p) for p in got]
    except TypeError:
        peaks = None
    if peaks is None or not all(prompt_len <= p < n for p in peaks):
        raise WorkbenchError(
            f"the detector returned {got!r} for the {what} curve, not a list of response "
            f"positions ({prompt_len}..{n - 1})"[:300],
            "pass a detector that maps a [pos] tensor to a list of int positions, e.g. "
            "wb.PeakDetector()",
        )
    undefined = [p for p in peaks if bool(torch.isnan(x[p]))]
    if undefined:
        raise WorkbenchError(
            f"the detector returned positions where the {what} curve is undefined (NaN): "
            f"{undefined[:10]}",
            "pass a detector that skips NaN positions (e.g. wb.PeakDetector()); NaN marks "
            "tokens without a value, such as FAI's last tokens",
        )
    if len(set(peaks)) != len(peaks):
        raise WorkbenchError(
            f"the detector returned a position twice for the {what} curve: {got!r}"[:300],
            "pass a detector that returns each peak once (e.g. wb.PeakDetector())",
        )
    return peaks


def _detector(detector: Any) -> Detector:
    """`detector`, or the default `PeakDetector`, checked to be callable."""
    if detector is None:
        return PeakDetector()
    if isinstance(detector, type):
        # the class is callable: it was called with the curve as its radius
        raise WorkbenchError(
            f"detector is the class {detector.__name__}, not a detector",
            f"pass an instance, e.g. detector=wb.{detector.__name__}()"
            if detector is PeakDetector
            else "pass an instance of it, or e.g. detector=wb.PeakDetector()",
        )
    if not callable(detector):
        raise WorkbenchError(
            f"detector must be a callable [pos] tensor -> list of positions, got "
            f"{type(detector).__name__}",
            "pass e.g. detector=wb.PeakDetector(radius=2), or None for the default",
        )
    return detector


def _defined(x: Tensor) -> np.ndarray:
    return np.flatnonzero(~np.isnan(torch.as_tensor(x).cpu().double().numpy()))


@no_type_check  # validates its arguments itself, with messages that name the fix
def entropy_at_waad_peaks(
    analyses: Sequence[Analysis | Curves], *, detector: Detector | None = None
) -> dict[str, float]:
    """Mean next-token entropy at WAAD peaks against the mean over all response tokens.

    ``peak_entropy = mean of H[t] over the WAAD peaks t of every trace`` and
    ``mean_entropy = mean of H[t] over the response tokens t of every trace``: pooled over
    all traces (every token counts once, so long responses weigh more). ``H[t]`` is
    `Analysis.entropy`: the entropy of the distribution token ``t`` was drawn from (logits
    at row ``t - 1``), while ``WAAD[t]`` reads attention row ``t``; the paper does not say
    which of the two it pairs. The control is the mean over all tokens, which is the
    expected mean over as many random positions (no shuffles are needed).

    Returns:
        ``{"peak_entropy", "mean_entropy", "relative_increase", "n_peaks", "n_tokens"}``;
        ``relative_increase = peak_entropy / mean_entropy - 1`` (paper: about 0.52).
    """
    det = _detector(detector)
    peak, allv = [], []
    for i, a in enumerate(_check(analyses)):
        check_entropy(a, f"trace {i}", ", so the entropy at WAAD peaks is undefined")
        e = a.entropy.cpu().double().numpy()
        gaps = np.flatnonzero(np.isnan(e[a.prompt_len :])) + a.prompt_len
        if len(gaps):
            # one NaN made both means NaN without a word
            raise WorkbenchError(
                f"trace {i} has no entropy at response positions {gaps[:10].tolist()}, so "
                "the mean entropies are undefined",
                "pass an entropy for every response token (Curves.of(analysis) has one)",
            )
        allv.extend(e[a.prompt_len :].tolist())
        peak.extend(e[_peaks(det, a.waad, "WAAD", a.prompt_len)].tolist())
    pe = float(np.mean(peak)) if peak else float("nan")
    me = float(np.mean(allv))
    return {
        "peak_entropy": pe,
        "mean_entropy": me,
        "relative_increase": pe / me - 1 if me > 0 else float("nan"),
        "n_peaks": len(peak),
        "n_tokens": len(allv),
    }


def _share_following(fai_peaks: list[int], waad_peaks: set[int], lags: Sequence[int]) -> int:
    return sum(any((p - lag) in waad_peaks for lag in lags) for p in fai_peaks)


def _control_options(n_shuffles: Any, seed: Any, lags: Any = (0,)) -> tuple[int, Any, tuple]:
    """Validate the shuffled control's settings; returns ``(n_shuffles, rng, lags)``."""
    n = _validate.integer("n_shuffles", n_shuffles, minimum=1, example=200)
    if isinstance(lags, str) or not hasattr(lags, "__iter__"):
        raise WorkbenchError(f"lags must be a list of lags, got {lags!r}", "pass e.g. lags=(0, 1)")
    lags = tuple(_validate.integer("lag", lag, example=1) for lag in lags)
    if not lags:
        raise WorkbenchError(
            "lags is empty: no FAI peak could follow a WAAD peak", "pass e.g. lags=(0, 1)"
        )
    return n, np.random.default_rng(_validate.seed("seed", seed)), lags


def _shuffled_control(rows, score, n_shuffles: int, rng, total: int) -> float:
    """The chance level of a pooled peak statistic.

    Each shuffle draws, for every trace ``(m, pool, ref)``, ``m`` random positions from
    ``pool`` and adds ``score(draw, ref)``; the result is the mean over shuffles of that sum
    divided by `total` (NaN when there is nothing to count).
    """
    values = []
    for _ in range(n_shuffles):
        h = 0
        for m, pool, ref in rows:
            if m:
                draw = rng.choice(pool, size=min(m, len(pool)), replace=False)
                h += score([int(x) for x in draw], ref)
        values.append(h / total if total else float("nan"))
    return float(np.mean(values)) if values else float("nan")


@no_type_check  # validates its arguments itself, with messages that name the fix
def fai_follows_waad(
    analyses: Sequence[Analysis | Curves],
    *,
    detector: Detector | None = None,
    lags: Sequence[int] = (0, 1),
    n_shuffles: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Share of FAI peaks ``p`` with a WAAD peak at ``p - lag`` for some lag in `lags`.

    ``lags=(0, 1)``: the FAI peak coincides with or immediately follows a WAAD peak.
    ``share = (FAI peaks with such a WAAD peak) / (FAI peaks)``, both summed over all
    traces (pooled: every FAI peak counts once). The control replaces each trace's FAI
    peaks by as many positions drawn at random from the positions where FAI is defined
    (its last tokens are not; see the module docstring on the control's precision).

    Returns:
        ``{"share", "shuffled_share", "n_fai_peaks"}`` (paper: 0.525 against 0.369).
    """
    det = _detector(detector)
    n_shuffles, rng, lags = _control_options(n_shuffles, seed, lags)
    hits, total, rows = 0, 0, []
    for a in _check(analyses):
        fp = _peaks(det, a.fai, "FAI", a.prompt_len)
        wp = set(_peaks(det, a.waad, "WAAD", a.prompt_len))
        hits += _share_following(fp, wp, lags)
        total += len(fp)
        rows.append((len(fp), _defined(a.fai), wp))
    shuffled = _shuffled_control(
        rows, lambda draw, wp: _share_following(draw, wp, lags), n_shuffles, rng, total
    )
    return {
        "share": hits / total if total else float("nan"),
        "shuffled_share": shuffled,
        "n_fai_peaks": total,
    }


@no_type_check  # validates its arguments itself, with messages that name the fix
def receiver_global_overlap(
    analyses: Sequence[Analysis | Curves],
    *,
    detector: Detector | None = None,
    n_shuffles: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Overlap of FAI peaks on receiver heads with FAI peaks on global heads.

    ``overlap = sum_i |P_receiver,i ∩ P_global,i| / sum_i |P_global,i|``, pooled over the
    traces ``i`` (every global-head FAI peak counts once, so long responses weigh more);
    the control draws ``|P_receiver,i|`` random positions per trace from those where the
    receiver FAI is defined instead.

    A trace without receiver heads (its receiver FAI NaN everywhere: every head's FAI is
    constant or defined at fewer than four tokens, as in a response of 10-12 tokens under
    the default ``fai_min_rows=10``) has nothing to overlap, so it is left out of the
    pool and counted in ``n_traces_without_receivers`` (its global peaks in the
    denominator would pull both the overlap and the chance level down).

    Returns:
        ``{"overlap", "chance", "n_global_peaks", "n_traces_without_receivers"}`` (paper:
        0.608 against 0.224); NaN when no trace has a global-head FAI peak and receivers.
    """
    det = _detector(detector)
    n_shuffles, rng, _ = _control_options(n_shuffles, seed)
    inter, total, rows, skipped = 0, 0, [], 0
    for a in _check(analyses):
        if not len(_defined(a.receiver_fai)):
            skipped += 1
            continue
        pg = set(_peaks(det, a.fai, "FAI", a.prompt_len))
        pr = _peaks(det, a.receiver_fai, "receiver FAI", a.prompt_len)
        inter += len(pg.intersection(pr))
        total += len(pg)
        rows.append((len(pr), _defined(a.receiver_fai), pg))
    chance = _shuffled_control(
        rows, lambda draw, pg: len(pg.intersection(draw)), n_shuffles, rng, total
    )
    return {
        "overlap": inter / total if total else float("nan"),
        "chance": chance,
        "n_global_peaks": total,
        "n_traces_without_receivers": skipped,
    }


@no_type_check  # validates its arguments itself, with messages that name the fix
def rhythm_statistics(
    analyses: Sequence[Analysis | Curves],
    *,
    detector: Detector | None = None,
    n_shuffles: int = 200,
    seed: int = 0,
):
    """All three statistics as a pandas frame next to the paper's values (Table 2).

    Args:
        analyses: the traces to pool: a non-empty list of `Analysis` (e.g.
            ``wb.analyze_many(model, traces)``) or `Curves`; one `Analysis` on its own is
            refused (pass ``[analysis]``).
        detector: the peak detector, any callable ``[pos] tensor -> list[int]`` of
            response positions; None is the default `PeakDetector` (``radius=1,
            min_z=0.0``).
        n_shuffles: shuffles of the random-position controls of `fai_follows_waad` and
            `receiver_global_overlap` (at least 1; see the module docstring on their
            precision). The entropy statistic needs none.
        seed: seed of those shuffles: the same inputs and seed give the same frame.

    Returns:
        A DataFrame with columns ``statistic``, ``value``, ``control``, ``n`` (what the
        value counts over: WAAD peaks, FAI peaks, global-head FAI peaks of the traces with
        receiver heads), ``paper_value``, ``paper_control``. The paper's values come from
        70 traces (about 2,000 peaks); a handful of short traces gives a few dozen.
    """
    import pandas as pd

    analyses = _check(analyses)  # once: an iterator would be spent by the first statistic
    e = entropy_at_waad_peaks(analyses, detector=detector)
    f = fai_follows_waad(analyses, detector=detector, n_shuffles=n_shuffles, seed=seed)
    r = receiver_global_overlap(analyses, detector=detector, n_shuffles=n_shuffles, seed=seed)
    return pd.DataFrame(
        [
            {
                "statistic": "entropy at WAAD peaks / mean entropy",
                "value": e["relative_increase"] + 1.0,  # NaN, not a ZeroDivisionError
                "control": 1.0,
                "n": e["n_peaks"],
                "paper_value": 1.52,
                "paper_control": 1.0,
            },
            {
                "statistic": "FAI peaks at or right after a WAAD peak",
                "value": f["share"],
                "control": f["shuffled_share"],
                "n": f["n_fai_peaks"],
                "paper_value": 0.525,
                "paper_control": 0.369,
            },
            {
                "statistic": "receiver-head FAI peaks among global-head FAI peaks",
                "value": r["overlap"],
                "control": r["chance"],
                "n": r["n_global_peaks"],
                "paper_value": 0.608,
                "paper_control": 0.224,
            },
        ]
    )
