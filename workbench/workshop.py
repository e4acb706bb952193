"""Check functions for the workshop notebook: compare a learner's code with the workbench.

Each ``check_*`` calls the learner's function on hand-made and random causal patterns,
compares the result with the workbench's own implementation, and either prints what passed
or raises `AssertionError` with a message that says which case failed, what was expected,
and a hint. An exercise left as ``raise NotImplementedError`` fails with a reminder.

    from workbench.workshop import check_waad
    check_waad(my_waad)        # my_waad(A_loc, prompt_len, window) -> [pos] tensor
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from .attention import fai as _fai
from .attention import waad as _waad
from .attention.credit import coupled_gamma
from .attention.rhythm import top_q as _top_q

__all__ = ["check_anchors", "check_fai", "check_gamma", "check_waad", "random_pattern"]


def random_pattern(n: int, seed: int = 0, *, sharp: float = 2.0) -> torch.Tensor:
    """A random causal attention map ``[query_pos key_pos]`` whose rows sum to 1."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, n, generator=g, dtype=torch.float64) * sharp
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1)


def _call(fn: Callable, name: str, *args: Any) -> Any:
    try:
        return fn(*args)
    except NotImplementedError:
        raise AssertionError(
            f"{name} is not implemented yet: replace `raise NotImplementedError` with your code"
        ) from None


def _as_vector(x: Any, n: int, name: str) -> torch.Tensor:
    try:
        v = torch.as_tensor(x, dtype=torch.float64).flatten()
    except (TypeError, ValueError) as e:
        raise AssertionError(f"{name} must return a [pos] tensor, got {type(x).__name__}") from e
    if v.numel() != n:
        raise AssertionError(f"{name} must return one value per position ({n}), got {v.numel()}")
    return v


def _compare(
    got: torch.Tensor,
    want: torch.Tensor,
    name: str,
    case: str,
    hint: str,
    *,
    prompt_len: int = 0,
    nan_hint: Callable[[int, bool], str] | None = None,
) -> None:
    """Raise with the first position where `got` and `want` differ. `nan_hint(t, undefined)`
    says why response position ``t`` is (``undefined``) or is not NaN."""
    nan_got, nan_want = torch.isnan(got), torch.isnan(want)
    if not torch.equal(nan_got, nan_want):
        t = int((nan_got != nan_want).nonzero()[0])
        if t < prompt_len:
            why = f"position {t} is in the prompt (prompt_len = {prompt_len}): return NaN there"
        elif nan_hint is not None:
            why = nan_hint(t, bool(nan_want[t]))
        else:
            why = "every position needs a number"
        raise AssertionError(
            f"{name}, {case}: position {t} should be "
            f"{'NaN (undefined)' if nan_want[t] else 'a number'}, got {got[t].item()}. "
            f"Hint: {why}"
        )
    ok = torch.allclose(got[~nan_want], want[~nan_want], atol=1e-6)
    if not ok:
        diff = (got - want).abs().nan_to_num(0.0)
        t = int(diff.argmax())
        raise AssertionError(
            f"{name}, {case}: at position {t} you computed {got[t].item():.6f}, expected "
            f"{want[t].item():.6f}. Hint: {hint}"
        )


def check_waad(my_waad: Callable[[torch.Tensor, int, int], Any]) -> None:
    """Check ``my_waad(A_loc, prompt_len, window) -> [pos]`` against Eq. 9."""
    cases = [
        (
            "uniform 4-token map, window 10",
            torch.tril(torch.ones(4, 4)).div(torch.arange(1, 5)[:, None]).double(),
            1,
            10,
        ),
        ("identity map (attend to self)", torch.eye(6, dtype=torch.float64), 2, 3),
        ("random map, window 3", random_pattern(12, 1), 4, 3),
        ("random map, window 10", random_pattern(30, 2), 5, 10),
    ]
    for case, A, pl, w in cases:
        got = _as_vector(_call(my_waad, "my_waad", A.clone(), pl, w), A.shape[0], "my_waad")
        want = _waad(A, pl, window=w)
        _compare(
            got,
            want,
            "my_waad",
            case,
            "WAAD[t] = sum over s <= t of A[t, s] * min(t - s, W)",
            prompt_len=pl,
            nan_hint=partial(_waad_nan_hint, n=A.shape[0], pl=pl),
        )
    print(f"check_waad: all {len(cases)} cases pass")


def _waad_nan_hint(t: int, undefined: bool, *, n: int, pl: int) -> str:
    return f"positions {pl}..{n - 1} are the response, and each response row has a WAAD"


def _fai_nan_hint(s: int, undefined: bool, *, lo: int, hi: int | None, n: int, pl: int) -> str:
    if undefined:
        return (
            f"T({s}) is empty: it would start at t = {s} + {lo}, past the last position "
            f"{n - 1}, so FAI[{s}] is undefined: NaN, not 0"
        )
    first, last = max(pl, s + lo), n - 1 if hi is None else min(n - 1, s + hi)
    return f"T({s}) holds the queries {first}..{last} (both ends of the horizon count)"


def check_fai(my_fai: Callable[[torch.Tensor, int, int, int | None], Any]) -> None:
    """Check ``my_fai(A_glob, prompt_len, h_lo, h_hi) -> [pos]`` against Eq. 10."""
    cases = [
        (
            "uniform 5-token map, horizon (0, end)",
            torch.tril(torch.ones(5, 5)).div(torch.arange(1, 6)[:, None]).double(),
            1,
            0,
            None,
        ),
        ("random map, horizon (0, end)", random_pattern(16, 3), 4, 0, None),
        ("random map, horizon (2, 6)", random_pattern(20, 4), 3, 2, 6),
        ("random map, RL horizon (10, 100)", random_pattern(40, 5), 6, 10, 100),
    ]
    for case, A, pl, lo, hi in cases:
        got = _as_vector(_call(my_fai, "my_fai", A.clone(), pl, lo, hi), A.shape[0], "my_fai")
        want = _fai(A, pl, horizon=(lo, hi))
        _compare(
            got,
            want,
            "my_fai",
            case,
            "FAI[s] = mean over response queries t with s + H_lo <= t <= s + H_hi of A[t, s]",
            prompt_len=pl,
            nan_hint=partial(_fai_nan_hint, lo=lo, hi=hi, n=A.shape[0], pl=pl),
        )
    print(f"check_fai: all {len(cases)} cases pass")


def check_anchors(my_anchors: Callable[[torch.Tensor, float], Any]) -> None:
    """Check ``my_anchors(fai, q) -> sorted positions``: top q of the defined values."""
    nan = float("nan")
    cases = [
        ("five values, q = 0.4", torch.tensor([nan, 0.1, 0.5, 0.3, 0.9, 0.2]), 0.4),
        ("ties go to the lower position", torch.tensor([nan, 0.5, 0.5, 0.5, 0.1]), 0.5),
        ("NaN is never chosen", torch.tensor([nan, nan, 0.3, nan, 0.2, 0.1, nan]), 0.34),
        ("at least one", torch.tensor([nan, 0.2, 0.1]), 0.01),
        # 0.3 * 6 = 1.8 rounds to 2: truncating (int(q * n)) would choose 1.
        ("round, not truncate", torch.tensor([nan, 0.6, 0.1, 0.5, 0.2, 0.3, 0.4]), 0.3),
    ]
    for case, fai, q in cases:
        got = _call(my_anchors, "my_anchors", fai.clone(), q)
        if getattr(got, "dtype", None) in (torch.bool, np.bool_) or (
            isinstance(got, list | tuple) and any(isinstance(x, bool) for x in got)
        ):
            raise AssertionError(
                "my_anchors must return the chosen positions (e.g. [2, 4]), not a mask of "
                "True/False per position"
            )
        try:
            values = [float(x) for x in got]
        except (TypeError, ValueError, RuntimeError):
            raise AssertionError(
                f"my_anchors must return a list of positions, got {type(got).__name__}"
            ) from None
        if not all(math.isfinite(v) for v in values):
            raise AssertionError(f"my_anchors must return a list of positions, got {values}")
        if not all(v.is_integer() for v in values):
            raise AssertionError(
                f"my_anchors must return positions (whole numbers such as 2 or 4), got "
                f"{[round(v, 3) for v in values]}: the FAI values instead of their positions?"
            )
        given = [int(v) for v in values]
        undefined = [p for p in given if 0 <= p < len(fai) and math.isnan(fai[p])]
        if undefined:
            raise AssertionError(
                f"my_anchors, {case}: you chose position {undefined[0]}, where FAI is NaN "
                "(undefined): only the defined values take part"
            )
        want = _top_q(fai, q)
        defined = torch.isnan(fai).logical_not().nonzero().flatten()
        if sorted(given) != want and sorted(given) == _top_q(fai[defined], q):
            raise AssertionError(
                f"my_anchors, {case}: you chose {sorted(given)}, expected {want}: these are "
                "indices into the defined (non-NaN) values; return positions in the whole "
                "fai vector"
            )
        if sorted(given) == want and given != want:
            raise AssertionError(
                f"my_anchors, {case}: you chose the right positions, but return them sorted "
                f"({want}, not {given})"
            )
        chosen = sorted(given)
        if len(chosen) != len(want):
            n = len(defined)
            raise AssertionError(
                f"my_anchors, {case}: you chose {len(chosen)} position(s), expected {len(want)} "
                f"(q = {q} of the n = {n} defined values). Hint: max(1, round(q * n)) positions"
            )
        if chosen != want:
            raise AssertionError(
                f"my_anchors, {case}: you chose {chosen}, expected {want}. "
                "Hint: pick max(1, round(q * n)) of the n defined values, largest first, ties "
                "to the lower position"
            )
    print(f"check_anchors: all {len(cases)} cases pass")


def check_gamma(my_gamma: Callable[..., Any]) -> None:
    """Check ``my_gamma(n_pos, anchors, dominated, intro, gamma_amp, alpha) -> [pos]``
    (coupled credit, Eq. 16-19; bonuses add where sets overlap)."""
    cases = [
        ("no dominated anchors", 8, [2, 5], [], [], 1.5, 0.5),
        ("one dominated anchor and its intro", 8, [3, 6], [6], [4], 1.5, 0.5),
        ("intro that is also an anchor", 10, [2, 4, 7], [7], [4], 2.0, 0.25),
        # intro(6) = 5 is itself dominated: (1 - alpha)(g-1) + alpha(g-1) there
        ("intro that is itself in D", 9, [3, 5, 6], [5, 6], [4, 5], 2.0, 0.25),
    ]
    for case, n, anc, dom, intro, g, alpha in cases:
        got = _as_vector(
            _call(my_gamma, "my_gamma", n, list(anc), list(dom), list(intro), g, alpha),
            n,
            "my_gamma",
        )
        want = coupled_gamma(n, anc, dom, intro, gamma_amp=g, alpha=alpha).double()
        _compare(
            got,
            want,
            "my_gamma",
            case,
            "1 + (g-1) on anchors not in D, 1 + (1-alpha)(g-1) on D, plus alpha(g-1) on "
            "I(D); bonuses add where sets overlap",
        )
    print(f"check_gamma: all {len(cases)} cases pass")
