"""The rhythm metrics (Eq. 7-10) computed from per-head reductions, and on raw patterns.

The metrics from statistics (`span_heads`, `waad_heads`, `fai_heads`, `kurtosis`) read a
`HeadStats` (`workbench.attention.reductions`, re-exported here), so an analysis can change
its window, FAI horizon, head quantile or top-q without another forward pass.

The public functions at the bottom (`head_span`, `waad`, `fai`, `receiver_kurtosis`,
`delta`) work on raw ``[head_index query_pos key_pos]`` patterns for users who bring their
own attention. Memory: they reduce the whole pattern at once, so they need about three
times its size in temporaries; `workbench.attention.engine` streams a model layer by layer
instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, no_type_check

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .. import _validate
from ..errors import WorkbenchError, warn_user
from .params import check_horizon
from .reductions import (
    DEFAULT_FAI_CUTS,
    DEFAULT_MAX_WINDOW,
    HeadStats,
    StatsAccumulator,
    normalise_cuts,
)

__all__ = [
    "DEFAULT_FAI_CUTS",
    "DEFAULT_MAX_WINDOW",
    "FaiRowsWarning",
    "HeadStats",
    "StatsAccumulator",
    "delta",
    "fai",
    "fai_heads",
    "head_span",
    "kurtosis",
    "normalise_cuts",
    "receiver_kurtosis",
    "span_heads",
    "stats_from_pattern",
    "waad",
    "waad_heads",
]


# ---------------------------------------------------------------------------------------
# Metrics from statistics
# ---------------------------------------------------------------------------------------


def span_heads(stats: HeadStats) -> Float[Tensor, " head"]:
    """Head span (Eq. 7): mean over response rows of ``sum_s A[t,s] (t-s)``, per head."""
    return stats.dist[:, stats.prompt_len :].double().mean(1)


def check_window(window: int, max_window: int | None = None) -> int:
    """Validate a WAAD window ``W`` (a positive integer, at most `max_window`)."""
    window = _validate.integer("window", window, minimum=1, example=10)
    if max_window is not None and window > max_window:
        raise WorkbenchError(
            f"window={window} is larger than the {max_window} diagonals kept by this analysis",
            f"call wb.analyze again with max_window>={window} (or window={window})",
        )
    return window


def waad_heads(stats: HeadStats, window: int = 10) -> Float[Tensor, "head pos"]:
    """Per-head WAAD (Eq. 9): ``sum_s A[t,s] min(t-s, W)``; NaN outside the response.

    Args:
        stats: per-head reductions.
        window: ``W`` (``1 <= W <= stats.max_window``, or any ``W`` where the band covers
            the sequence: see `HeadStats.window_for`).

    Returns:
        ``[head pos]`` float64.
    """
    w = check_window(stats.window_for(check_window(window)), stats.max_window)
    band = stats.band[..., :w].double()
    d = torch.arange(w, dtype=torch.float64)
    near = band.sum(-1)
    out = (band * d).sum(-1) + w * (stats.rowsum.double() - near)
    out[:, : stats.prompt_len] = float("nan")
    return out


def _cut_index(stats: HeadStats, c: int, what: str) -> int | None:
    """Index of cut distance `c` in stats.cuts (None for c <= 0: an all-zero sum)."""
    if c <= 0:
        return None
    need = min(c, stats.n_pos)
    try:
        return stats.cuts.index(need)
    except ValueError:
        raise WorkbenchError(
            f"this analysis did not keep the column sums needed for {what}: the cut "
            f"distance {c} (it kept {list(stats.cuts)})",
            f"call wb.analyze again with this fai_horizon, or add {c} to fai_cuts (a "
            "horizon (lo, hi) needs the cuts lo and hi + 1)",
        ) from None


def fai_counts(
    stats: HeadStats, horizon: tuple[int, int | None], ends: Tensor | None = None
) -> Tensor:
    """``|T(s)|`` for each response position ``s`` (Eq. 10): ``[response_pos]``, or
    ``[head response_pos]`` with `ends` (see `fai_heads`)."""
    lo, hi = horizon
    n, pl = stats.n_pos, stats.prompt_len
    # Bounds past the sequence mean the same as N (no row is that far): clamped, they
    # cannot overflow the int64 arithmetic below (an H_hi near 2**63 wrapped negative).
    lo, hi = min(lo, n), None if hi is None else min(hi, n)
    s = torch.arange(pl, n, dtype=torch.long)
    last = torch.tensor(n - 1) if ends is None else ends[:, None] - 1
    top = last.expand(*last.shape[:-1], len(s)) if hi is None else torch.minimum(s + hi, last)
    bottom = torch.clamp(s + lo, min=pl)
    return (top - bottom + 1).clamp(min=0)


#: How many ulps of a column's cut sum `fai_heads` reads as rounding when it subtracts two of
#: them (a horizon that starts after its token, ``H_lo > 0``): the band's prefix sums are
#: float32 scans whose order of additions differs between cuts.
FAI_ROUNDING = 16


def fai_heads(
    stats: HeadStats,
    horizon: tuple[int, int | None] = (0, None),
    min_rows: int = 1,
    ends: Tensor | None = None,
) -> Float[Tensor, "head pos"]:
    """Per-head FAI (Eq. 10): mean over ``t in T(s)`` of ``A[t, s]``.

    ``T(s) = {t in R : s + H_lo <= t <= min(N-1, s + H_hi)}``. NaN outside the response
    and where ``T(s)`` holds fewer than `min_rows` rows (1: only where it is empty, the
    paper's definition).

    Args:
        stats: per-head reductions.
        horizon: ``(H_lo, H_hi)``; ``H_hi=None`` runs to the end of the response.
        min_rows: the fewest rows a horizon must hold for FAI to be defined.
        ends: ``[head]`` for rows of several sequences in one frame (the batched RL
            credit, `workbench.attention.batch_credit`): each row's sequence ends at
            ``ends - 1`` (default: every row at ``n_pos - 1``), and its positions from
            there on are NaN. Its rows after the end must hold no attention.

    Returns:
        ``[head pos]`` float64.
    """
    lo, hi = check_horizon(horizon)
    name = f"fai_horizon={horizon}"
    i_lo = _cut_index(stats, lo, name)
    i_hi = _cut_index(stats, stats.n_pos if hi is None else hi + 1, name)
    cs = stats.cut_sums
    num = cs[:, i_hi].double()
    if i_lo is not None:
        # Two float32 prefix sums of one column differ by rounding (a few ulps of the sum)
        # even where every row between the cuts gives the column exactly 0 (beyond a sliding
        # window); that noise, of either sign, ranked heads by receiver kurtosis and tokens
        # by FAI. Attention is never negative: within the rounding of the sums it is 0.
        num = num - cs[:, i_lo].double()
        noise = FAI_ROUNDING * torch.finfo(cs.dtype).eps * cs[:, i_hi].double().abs()
        num = torch.where(num > noise, num, torch.zeros_like(num))
    count = fai_counts(stats, (lo, hi), ends).double()
    ok = count >= max(1, min(min_rows, stats.n_pos + 1))  # no horizon holds N + 1 rows
    _warn_no_fai(count, ok, (lo, hi), min_rows)
    vals = torch.where(ok, num / count.clamp(min=1), torch.full_like(num, float("nan")))
    out = torch.full((len(stats.heads), stats.n_pos), float("nan"), dtype=torch.float64)
    out[:, stats.prompt_len :] = vals
    return out


class FaiRowsWarning(UserWarning):
    """FAI is undefined for every response token of a sequence because of ``fai_min_rows``
    (see `fai_heads`)."""


def _warn_no_fai(count: Tensor, ok: Tensor, horizon: tuple[int, int | None], min_rows: int) -> None:
    """Warn when `min_rows` leaves a sequence (a row of `count`) no token with FAI although
    its horizons hold rows: without a word it had no anchor tokens, so the global-anchor and
    coupled credit amplified nothing (a response shorter than `min_rows`, or a horizon
    narrower). The message names no length, so the default filter shows it once per line.

    The warning names the first frame outside the workbench (and outside the runtime type
    checker's wrappers around its functions, where one is installed): the user's line, to
    which the project's filter that makes the workbench's own warnings errors in its tests
    does not apply."""
    if min_rows <= 1 or not bool(((count >= 1).any(-1) & ~ok.any(-1)).any()):
        return
    warn_user(
        f"FAI is undefined for every token of a response: with fai_horizon={horizon}, no "
        f"token's horizon holds fai_min_rows={min_rows} response rows (the response is "
        "shorter, or the horizon narrower), so it has no anchor tokens and the "
        "global-anchor and coupled credit amplify none of it. Pass "
        "RhythmParams(fai_min_rows=1) (the paper's definition: FAI wherever the horizon "
        "holds a row), e.g. analysis.with_params(fai_min_rows=1), to rank its tokens",
        FaiRowsWarning,
    )


def kurtosis(x: Float[Tensor, "head pos"]) -> Float[Tensor, " head"]:
    """Excess (Fisher) kurtosis ``m4 / m2^2 - 3`` of each row over its non-NaN entries.

    Biased moments (as ``scipy.stats.kurtosis`` by default). NaN for rows with fewer than
    four values or zero variance.
    """
    x = x.double()
    ok = ~torch.isnan(x)
    n = ok.sum(-1).double()
    xz = torch.where(ok, x, 0.0)
    mean = xz.sum(-1) / n.clamp(min=1)
    dev = torch.where(ok, x - mean[:, None], 0.0)
    m2 = (dev**2).sum(-1) / n.clamp(min=1)
    m4 = (dev**4).sum(-1) / n.clamp(min=1)
    k = m4 / m2**2 - 3.0
    bad = (n < 4) | (m2 <= 0)
    return torch.where(bad, torch.full_like(k, float("nan")), k)


# ---------------------------------------------------------------------------------------
# Public functions on raw patterns
# ---------------------------------------------------------------------------------------


def _as_heads(pattern: Any) -> Tensor:
    if isinstance(pattern, np.ndarray) and pattern.dtype.kind == "f":
        pattern = torch.from_numpy(pattern)  # a pattern saved or computed with NumPy
    if not isinstance(pattern, Tensor) or pattern.ndim not in (2, 3):
        shape = tuple(getattr(pattern, "shape", ()))
        raise WorkbenchError(
            f"pattern must be a [head_index query_pos key_pos] or [query_pos key_pos] tensor, "
            f"got {type(pattern).__name__} of shape {shape}",
            "pass cache['pattern', layer][0] (drop the batch dimension)"
            if len(shape) == 4
            else "pass the attention of one sequence: cache['pattern', layer][0], or a "
            "[query_pos key_pos] map of one head",
        )
    p = pattern if pattern.ndim == 3 else pattern.unsqueeze(0)
    if p.shape[-1] != p.shape[-2]:
        raise WorkbenchError(
            f"pattern must be square in query_pos and key_pos, got {tuple(p.shape)}",
            "pass the full causal pattern of one sequence",
        )
    if p.shape[0] == 0:
        raise WorkbenchError(
            f"pattern has no heads (shape {tuple(p.shape)})", "pass at least one head's pattern"
        )
    if not p.dtype.is_floating_point:
        raise WorkbenchError(
            f"pattern must hold attention probabilities (a floating-point tensor), got {p.dtype}",
            "pass the attention pattern after the softmax, e.g. cache['pattern', layer][0]",
        )
    p = p.detach()  # the metrics are no part of an autograd graph
    _check_probabilities(p)
    return p


def _check_probabilities(p: Tensor) -> None:
    """Refuse a pattern that is no causal attention: values that are not finite, negative,
    above the diagonal (a key after its query: a transposed or bidirectional map) or rows
    that sum to more than 1 (an unnormalised map). Each would give metrics outside their
    ranges without a word. Rows may sum to less than 1: a model with learned attention
    sinks (gpt-oss) gives the rest of a row to a sink outside the keys, and a sink column
    set to zero by hand leaves the same. Checked a block of rows at a time."""
    n = p.shape[-1]
    tol = max(1e-3, 8 * torch.finfo(p.dtype).eps)
    for r0 in range(0, n, 256):
        block = p[:, r0 : r0 + 256].float()
        rows = torch.arange(r0, r0 + block.shape[1], device=p.device)[:, None]
        after = torch.arange(n, device=p.device)[None, :] > rows
        problem = None
        if not bool(torch.isfinite(block).all()):
            problem = "holds NaN or infinite values"
        elif bool((block < 0).any()):
            problem = "holds negative values"
        elif bool((block * after).ne(0).any()):
            problem = "has attention above the diagonal (a key after its query)"
        elif bool((block.sum(-1) - 1 > tol).any()):
            problem = "has rows that sum to more than 1"
        if problem is not None:
            raise WorkbenchError(
                f"the pattern {problem}: it is not a causal attention pattern "
                "([head_index query_pos key_pos], rows the softmax probabilities over keys)",
                "pass the attention probabilities after the softmax (cache['pattern', layer]"
                "[0], not the scores), indexed [query, key], of a causal model",
            )


def _prompt_len(response: Any, n_pos: int) -> int:
    """Turn a response mask (a suffix of the sequence), a range or a prompt length into prompt_len."""
    if isinstance(response, range):
        if response.step != 1 or response.stop != n_pos or len(response) == 0:
            raise WorkbenchError(
                f"response={response} must be a non-empty range ending at {n_pos}",
                "pass trace.response",
            )
        pl = response.start
    elif getattr(response, "ndim", 0) == 0 and _validate.is_index(response):
        # a prompt length: a Python, NumPy or 0-d torch integer (not a bool)
        if getattr(response, "dtype", None) in (torch.bool, np.bool_):
            raise _bad_response(response)
        pl = _validate.as_index(response)
    else:
        try:
            values = torch.as_tensor(response)
        except (TypeError, ValueError, RuntimeError):
            raise _bad_response(response) from None
        if values.ndim == 0 or values.dtype.is_complex:
            raise _bad_response(response)
        if values.dtype != torch.bool and not bool(((values == 0) | (values == 1)).all()):
            raise WorkbenchError(
                "the response mask holds values other than True/False (or 1/0), e.g. positions",
                "pass a [pos] boolean mask, range(prompt_len, N) or the prompt length",
            )
        mask = values.to(torch.bool).flatten()
        if mask.numel() != n_pos:
            raise WorkbenchError(
                f"the response mask has {mask.numel()} entries for a {n_pos}-token pattern",
                "pass a [pos] boolean mask with one entry per position",
            )
        pl = int(n_pos - mask.sum())
        if not bool(mask[pl:].all()):
            raise WorkbenchError(
                "the response mask is not a suffix of the sequence (the response must be "
                "the last tokens)",
                "mark positions prompt_len..N-1 as True and the prompt as False",
            )
    if not 0 <= pl < n_pos:
        raise WorkbenchError(
            f"the response is empty or invalid (prompt_len={pl}, {n_pos} positions)",
            "mark at least one response position",
        )
    return pl


def _bad_response(response: object) -> WorkbenchError:
    return WorkbenchError(
        f"response must be a [pos] boolean mask, a range or the prompt length (an integer), "
        f"got {type(response).__name__} {response!r}"[:300],
        "pass trace.response, a boolean mask of the response, or the prompt length",
    )


@no_type_check  # validates its arguments itself, with messages that name the fix
def stats_from_pattern(
    pattern: Float[Tensor, "*head_index query_pos key_pos"],
    response: Bool[Tensor, " pos"] | int | range,
    *,
    max_window: int = DEFAULT_MAX_WINDOW,
    cuts: Sequence[int] = DEFAULT_FAI_CUTS,
) -> HeadStats:
    """Reduce a raw pattern to `HeadStats` (heads labelled ``(0, h)``).

    Args:
        pattern: ``[head_index query_pos key_pos]`` (or one ``[query_pos key_pos]`` map).
        response: a ``[pos]`` boolean mask of the response (a suffix), a range, or the
            prompt length.
        max_window: diagonals to keep for WAAD.
        cuts: FAI cut distances to keep.
    """
    return _stats(_as_heads(pattern), response, max_window=max_window, cuts=cuts)


def _stats(p: Tensor, response: Any, *, max_window: int, cuts: Sequence[int]) -> HeadStats:
    """`stats_from_pattern` of a pattern `_as_heads` has checked."""
    n = p.shape[-1]
    pl = _prompt_len(response, n)
    acc = StatsAccumulator(
        [(0, h) for h in range(p.shape[0])], n, pl, max_window, cuts, p.device,
        dtype=torch.float64,
    )  # fmt: skip
    acc.add(slice(0, n), p)
    return acc.finish()


@no_type_check  # validates its arguments itself, with messages that name the fix
def head_span(
    pattern: Float[Tensor, "*head_index query_pos key_pos"],
    response: Bool[Tensor, " pos"] | int | range,
) -> Float[Tensor, " head_index"]:
    """Head span ``d`` (Eq. 7) of each head: mean over response rows ``t`` of
    ``sum_{s<=t} A[t,s] (t-s)`` (not clipped).

    Args:
        pattern: ``[head_index query_pos key_pos]`` (or ``[query_pos key_pos]``).
        response: ``[pos]`` boolean response mask (a suffix), a range, or the prompt length.

    Returns:
        ``[head_index]`` float64.
    """
    return span_heads(stats_from_pattern(pattern, response, max_window=1, cuts=()))


@no_type_check  # validates its arguments itself, with messages that name the fix
def waad(
    pattern: Float[Tensor, "*head_index query_pos key_pos"],
    response: Bool[Tensor, " pos"] | int | range,
    window: int = 10,
) -> Float[Tensor, " pos"]:
    """WAAD (Eq. 9) of the mean map of the given heads (e.g. the local heads).

    ``WAAD[t] = sum_{s<=t} A[t,s] min(t-s, W)`` for response rows ``t``; NaN elsewhere.

    Args:
        pattern: ``[head_index query_pos key_pos]``; the heads are averaged (``A_loc``).
        response: ``[pos]`` boolean response mask (a suffix), a range, or the prompt length.
        window: ``W >= 1``.

    Returns:
        ``[pos]`` float64, values in ``[0, W]``.
    """
    window = check_window(window)
    p = _as_heads(pattern)
    # No distance reaches N, so any W >= N clips nothing: W = N gives the same WAAD, without
    # a band of W diagonals (a huge W would not fit in memory, or would amplify rounding).
    w = min(window, p.shape[-1])
    return waad_heads(_stats(p, response, max_window=w, cuts=()), w).mean(0)


@no_type_check  # validates its arguments itself, with messages that name the fix
def fai(
    pattern: Float[Tensor, "*head_index query_pos key_pos"],
    response: Bool[Tensor, " pos"] | int | range,
    horizon: tuple[int, int | None] = (0, None),
    min_rows: int = 1,
) -> Float[Tensor, " pos"]:
    """FAI (Eq. 10) of the mean map of the given heads (e.g. the global heads).

    ``FAI[s] = mean over t in T(s) of A[t, s]``, with
    ``T(s) = {t in R : s + H_lo <= t <= min(N-1, s + H_hi)}`` (``R`` the response rows,
    ``A`` the heads' mean map ``A_glob``): the attention position ``s`` receives from the
    response rows ``H_lo..H_hi`` tokens later, for each response position ``s``. NaN on
    the prompt positions (FAI ranks response tokens, though ``T(s)`` of a prompt position
    may hold rows), where ``T(s)`` is empty (the last ``H_lo`` tokens), and where it holds
    fewer than `min_rows` rows.

    Args:
        pattern: ``[head_index query_pos key_pos]``; the heads are averaged (``A_glob``).
        response: ``[pos]`` boolean response mask (a suffix), a range, or the prompt length.
        horizon: ``(H_lo, H_hi)``; ``H_hi=None`` runs to the end.
        min_rows: the fewest rows ``T(s)`` must hold for FAI to be defined. 1 is the
            paper's definition; `wb.analyze` defaults to ``RhythmParams().fai_min_rows``
            (10), so pass ``min_rows=a.params.fai_min_rows`` to match an `Analysis`.

    Returns:
        ``[pos]`` float64 in ``[0, 1]``; NaN outside the response and where ``T(s)`` holds
        fewer than `min_rows` rows.
    """
    lo, hi = check_horizon(horizon)
    min_rows = _validate.integer("min_rows", min_rows, minimum=1, example=10)
    p = _as_heads(pattern)
    cuts = [lo, p.shape[-1] if hi is None else hi + 1]
    stats = _stats(p, response, max_window=1, cuts=cuts)
    return fai_heads(stats, (lo, hi), min_rows).mean(0)


@no_type_check  # validates its arguments itself, with messages that name the fix
def receiver_kurtosis(
    pattern: Float[Tensor, "*head_index query_pos key_pos"],
    response: Bool[Tensor, " pos"] | int | range,
    horizon: tuple[int, int | None] = (0, None),
    min_rows: int = 1,
) -> Float[Tensor, " head_index"]:
    """Receiver-head score of each head ("Thought Anchors", Bogdan et al. 2025).

    This project's token-level reading: the excess kurtosis, over response positions
    ``s``, of the attention ``s`` receives from later response positions, i.e. of the
    head's own FAI vector (Eq. 10, same `horizon`). High kurtosis = a few positions
    receive most of the attention (a receiver head).

    Args:
        pattern, response, horizon, min_rows: as in `fai` (``min_rows=a.params.fai_min_rows``
            matches an `Analysis`'s receiver scores).

    Returns:
        ``[head_index]`` float64 (NaN when fewer than four positions are defined).
    """
    lo, hi = check_horizon(horizon)
    min_rows = _validate.integer("min_rows", min_rows, minimum=1, example=10)
    p = _as_heads(pattern)
    cuts = [lo, p.shape[-1] if hi is None else hi + 1]
    stats = _stats(p, response, max_window=1, cuts=cuts)
    return kurtosis(fai_heads(stats, (lo, hi), min_rows))


@no_type_check  # validates its argument itself, with a message that names the fix
def delta(waad: Float[Tensor, " pos"]) -> Float[Tensor, " pos"]:
    """``Delta[t] = |WAAD[t] - WAAD[t+1]|`` (Sec. 5.2); NaN where either is undefined.

    Args:
        waad: ``[pos]`` WAAD with NaN outside the response.

    Returns:
        ``[pos]`` float64; the last response token's Delta is NaN.
    """
    w = _validate.curve(
        "delta's WAAD",
        waad,
        "pass one sequence's WAAD, e.g. wb.waad(pattern, response) or analysis.waad",
    )
    out = torch.full_like(w, float("nan"))
    if w.numel() > 1:
        out[:-1] = (w[:-1] - w[1:]).abs()  # NaN propagates where either side is NaN
    return out
