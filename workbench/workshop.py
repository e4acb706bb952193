"""Check functions for the workshop notebook: compare a learner's code with the workbench.

Each ``check_*`` calls the learner's function on hand-made and random causal patterns,
compares the result with the workbench's own implementation, and either prints what passed
or raises `AssertionError` with a message that says which case failed, what was expected,
and a hint. An exercise left as ``raise NotImplementedError`` fails with a reminder.

    from workbench.workshop import check_waad
    check_waad(my_waad)        # my_waad(A_loc, prompt_len, window) -> [pos] tensor
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from functools import partial
from typing import Any, no_type_check

import numpy as np
import torch

from . import _validate
from .attention import delta as _delta
from .attention import fai as _fai
from .attention import waad as _waad
from .attention.credit import coupled_gamma
from .attention.rhythm import _lookback
from .attention.rhythm import coupled_sets as _coupled_sets
from .attention.rhythm import default_taus as _default_taus
from .attention.rhythm import top_q as _top_q
from .errors import WorkbenchError

__all__ = [
    "check_anchors",
    "check_dominated",
    "check_fai",
    "check_gamma",
    "check_waad",
    "random_pattern",
]


@no_type_check  # validates its arguments itself, with messages that name the fix
def random_pattern(n: int, seed: int = 0, *, sharp: float = 2.0) -> torch.Tensor:
    """A random causal attention map ``[query_pos key_pos]`` whose rows sum to 1.

    Args:
        n: the number of positions (at least 1).
        seed: the random seed (0 to 2**63 - 1).
        sharp: how peaked the rows are (the scores' standard deviation; 0: uniform rows).

    Raises:
        WorkbenchError: `n` or `seed` is not such an integer, or `sharp` is negative, NaN,
            infinite or so large that the scores overflow.
    """
    n = _validate.integer("n", n, minimum=1, example=12)
    seed = _validate.seed("seed", seed)
    sharp = _validate.number("sharp", sharp, low=0.0, example=2.0)
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, n, generator=g, dtype=torch.float64) * sharp
    if not bool(torch.isfinite(scores).all()):  # softmax of an infinite score is NaN
        raise WorkbenchError(
            f"sharp={sharp!r} is so large that the scores overflow", "pass e.g. sharp=2.0"
        )
    scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, dim=-1)


#: The arguments each exercise's function takes, as the notebook defines it.
_PARAMS = {
    "my_waad": "A, prompt_len, window",
    "my_fai": "A, prompt_len, h_lo, h_hi",
    "my_anchors": "fai, q",
    "my_gamma": "n_pos, anchors, dominated, intro, gamma_amp, alpha",
    "my_dominated": "waad, prompt_len, anchors, k",
}


@no_type_check  # a learner's mistake (not a function) is its AssertionError, not beartype's
def _call(fn: Callable, name: str, *args: Any) -> Any:
    if not callable(fn):
        raise AssertionError(
            f"{name} must be your function, got a value of type {type(fn).__name__}. Hint: "
            f"pass your function itself, {name}, not {name}(...)"
        )
    try:  # a function of other arguments failed with a raw TypeError from inside the check
        inspect.signature(fn).bind(*args)
    except TypeError as e:
        raise AssertionError(
            f"{name} must take the arguments ({_PARAMS[name]}): {e}. Hint: define it as "
            f"def {name}({_PARAMS[name]}):"
        ) from None
    except ValueError:  # no signature to read: call it as it is
        pass
    try:
        return fn(*args)
    except NotImplementedError:
        raise AssertionError(
            f"{name} is not implemented yet: replace `raise NotImplementedError` with your code"
        ) from None


def _as_vector(x: Any, n: int, name: str) -> torch.Tensor:
    try:
        v = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise AssertionError(f"{name} must return a [pos] tensor, got {type(x).__name__}") from e
    if v.is_complex():  # as float64, its imaginary part was dropped with only a warning
        raise AssertionError(f"{name} must return real numbers, got a {v.dtype} {type(x).__name__}")
    if v.dtype in (torch.float16, torch.bfloat16):
        # its rounding (about 3 digits) failed the comparison with a hint about the equation
        raise AssertionError(
            f"{name} returned {v.dtype}, which keeps about three significant digits: the "
            "check compares to 1e-6. Hint: compute in the float64 the map is given in "
            "(no .half() or .to(torch.bfloat16))"
        )
    v = v.double().flatten()
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


@no_type_check  # a learner's value that is no function gets a hint (`_call`)
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


@no_type_check  # a learner's value that is no function gets a hint (`_call`)
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
        # H_lo also counts with no H_hi: a solution that ignored it passed every case
        ("random map, horizon (3, end)", random_pattern(16, 6), 4, 3, None),
        # H_hi = 0 is a horizon, not "no H_hi" (`if h_hi:` read it as to the end)
        ("random map, horizon (0, 0): each token's own row", random_pattern(12, 7), 3, 0, 0),
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


@no_type_check  # a learner's value that is no function gets a hint (`_call`)
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
        # 0.5 * 5 = 2.5 rounds to 2 (Python's round, half to even); half up would choose 3.
        ("halves round to even", torch.tensor([nan, 0.9, 0.1, 0.5, 0.3, 0.7]), 0.5),
        # a defined 0 is a value: NaN read as 0 tied with it, and took its place
        ("a defined FAI of 0 is a value", torch.tensor([nan, 0.0, 0.3]), 1.0),
    ]
    for case, fai, q in cases:
        got = _call(my_anchors, "my_anchors", fai.clone(), q)
        if _is_mask(got):
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
        if len(values) == len(fai) and set(values) <= {0.0, 1.0}:
            # a 0/1 mask read as positions 0 and 1 ("you chose position 0, where FAI is NaN")
            raise AssertionError(
                "my_anchors must return the chosen positions (e.g. [2, 4]), not a mask of "
                "0/1 per position"
            )
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


@no_type_check  # a learner's value that is no function gets a hint (`_call`)
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


def _is_mask(got: Any) -> bool:
    """Whether `got` is True/False values (a tensor or array of bools, or a list of them),
    which would be read as positions 0 and 1."""
    bools = (torch.bool, np.bool_)
    return getattr(got, "dtype", None) in bools or (
        isinstance(got, list | tuple)
        and any(isinstance(x, bool | np.bool_) or getattr(x, "dtype", None) in bools for x in got)
    )


def _pair_of_positions(got: Any) -> tuple[list[int], list[int]]:
    """`got` as ``(D, intro)``: two lists of whole-number positions, or an AssertionError."""
    what = "my_dominated must return two lists of positions, (dominated, intro)"
    if not isinstance(got, list | tuple) or len(got) != 2:
        raise AssertionError(f"{what}, got {type(got).__name__}")
    out = []
    for part, name in zip(got, ("dominated", "intro"), strict=True):
        if _is_mask(part):  # a list of them was read as positions 0 and 1
            raise AssertionError(f"{what}: {name} is a True/False mask, not positions")
        try:
            values = [float(x) for x in part]
        except (TypeError, ValueError, RuntimeError):
            raise AssertionError(f"{what}: {name} is a {type(part).__name__}") from None
        if not all(math.isfinite(v) and v.is_integer() for v in values):
            raise AssertionError(
                f"{what}: {name} holds {[round(v, 3) for v in values]}, not positions "
                "(whole numbers such as 2 or 4)"
            )
        out.append([int(v) for v in values])
    return out[0], out[1]


# (case, response WAAD, prompt_len, anchors, k, hint). Each case was chosen so that one kind of
# mistake fails it while the mistakes the later cases catch still pass it, so the hint names the
# rule that was missed (a random case closes). The hand-made values are multiples of 1/4, exact
# in binary, so ties and equalities with the medians are exact.
_MEDIANS = (
    "tau_waad and tau_delta are medians over the response only: WAAD at positions "
    "prompt_len..T-1, Delta where it is defined (not at the last token); of an even count, "
    "the mean of the two middle values (torch.median takes the lower one)"
)
_WINDOW = "the look-back window holds the k positions before t, t-k..t-1: not t itself"
_DOMINATED_CASES = [
    (
        "only anchors can be dominated",
        [0.75, 2.0, 0.5, 1.25, 1.75, 0.25, 0.0, 1.75, 1.0, 2.0],
        2,
        [5, 6, 9, 11],
        3,
        "D is a subset of the anchors, and I(D) holds the introductions of the anchors in D only",
    ),
    (
        "the look-back window",
        [0.25, 1.75, 1.25, 1.5, 1.75, 0.25, 1.0, 1.75, 1.5, 0.75],
        2,
        [2, 3, 5, 10],
        3,
        _WINDOW,
    ),
    (
        "Delta looks forward",
        [0.75, 0.75, 1.0, 0.0, 1.25, 0.25, 1.75, 1.25, 0.75, 1.25],
        2,
        [3, 4, 5, 6],
        3,
        "Delta[t] = |WAAD[t] - WAAD[t+1]|: the change to the next token, never negative",
    ),
    (
        "which position introduces an anchor",
        [0.0, 0.25, 0.75, 1.5, 0.25, 1.25, 1.0, 0.25, 1.75, 0.25],
        2,
        [2, 3, 5, 11],
        3,
        "intro(t) is the u in t-k..t-1 with the largest Delta (not the first one over "
        "tau_delta, nor the nearest); on a tie, the lower position",
    ),
    (
        "equal to a threshold",
        [0.5, 0.25, 0.0, 0.25, 0.0, 0.25, 0.75, 1.0, 0.25, 0.25],
        2,
        [5, 8, 9, 10],
        3,
        "equality counts on both sides: WAAD[t] <= tau_waad and max Delta >= tau_delta",
    ),
    (
        "tau_waad, a median over the response",
        [2.0, 1.75, 1.5, 0.5, 0.75, 0.5, 2.0, 1.5, 0.0, 0.25],
        3,
        [3, 5, 7, 9],
        3,
        _MEDIANS,
    ),
    (
        "tau_delta, a median over the defined Delta",
        [0.5, 1.0, 2.0, 0.75, 1.0, 0.75, 1.25, 0.5, 1.5],
        2,
        [3, 4, 6, 10],
        3,
        _MEDIANS,
    ),
    (
        "windows that reach into the prompt",
        [1.0, 2.0, 1.0, 2.0, 1.25, 0.0, 1.5, 1.25, 0.0],
        1,
        [1, 3, 6, 7],
        3,
        "Delta is undefined (NaN) before the response, at prompt_len - 1 and at the last "
        "token: the max and intro(t) look at the defined Delta in the window only, and the "
        "window stops at position 0 (a negative index wraps around to the end)",
    ),
    (
        "two anchors with the same introduction",
        [1.75, 2.0, 2.0, 1.75, 1.5, 0.5, 0.75, 0.5, 2.0],
        2,
        [2, 7, 8, 9],
        3,
        "I(D) is a set: a position that introduces two anchors appears once",
    ),
    (
        "k = 2",
        [1.0, 1.5, 1.0, 1.5, 2.0, 1.5, 1.25, 2.0, 1.5, 0.75],
        2,
        [2, 6, 7, 9],
        2,
        _WINDOW,
    ),
    (
        "random WAAD",
        (torch.rand(30, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 10)
        .round(decimals=3)
        .tolist(),
        4,
        [4, 6, 9, 12, 13, 17, 18, 21, 22, 25, 27, 30, 33],
        3,
        "D: the anchors t with WAAD[t] <= tau_waad and max Delta over t-k..t-1 >= tau_delta; "
        "I(D): the intro of each",
    ),
]


@no_type_check  # a learner's value that is no function gets a hint (`_call`)
def check_dominated(my_dominated: Callable[..., Any]) -> None:
    """Check ``my_dominated(waad, prompt_len, anchors, k) -> (dominated, intro)``: the
    locally dominated anchors D and their introductions I(D) (Sec. 5.2, with this project's
    medians and tie rule; `workbench.attention.rhythm`)."""
    for case, values, pl, anc, k, hint in _DOMINATED_CASES:
        waad = torch.tensor([math.nan] * pl + values, dtype=torch.float64)
        d = _delta(waad)
        tw, td = _default_taus(waad, d)
        want_d, want_i = _coupled_sets(anc, waad, d, k=k, tau_waad=tw, tau_delta=td)
        got = _call(my_dominated, "my_dominated", waad.clone(), pl, list(anc), k)
        got_d, got_i = _pair_of_positions(got)
        where = (
            f"my_dominated, {case} (prompt_len = {pl}, anchors = {anc}, k = {k}; "
            f"tau_waad = {tw:g}, tau_delta = {td:g})"
        )
        for name, g, w in (("dominated", got_d, want_d), ("intro", got_i, want_i)):
            if g == w:
                continue
            if sorted(g) == w:
                raise AssertionError(f"{where}: return {name} sorted ({w}, not {g})")
            if len(set(g)) < len(g):
                each = "I(D) is a set" if name == "intro" else "D holds anchors"
                raise AssertionError(
                    f"{where}: {name} = {g} repeats a position: {each}, each position once"
                )
            # the intros are judged against D's anchors, the dominated set against all
            why = _dominated_diagnosis(
                name, g, w, want_d if name == "intro" else anc, waad, d, k, tw, td
            )
            raise AssertionError(
                f"{where}: {name} should be {w}, you returned {g}. {why} This case is about: {hint}"
            )
    print(f"check_dominated: all {len(_DOMINATED_CASES)} cases pass")


def _dominated_diagnosis(
    name: str,
    got: list[int],
    want: list[int],
    anchors: list[int],
    waad: torch.Tensor,
    delta: torch.Tensor,
    k: int,
    tau_waad: float,
    tau_delta: float,
) -> str:
    """`anchors`: all of them for ``name="dominated"``, D for ``"intro"``.

    The rule at the first position the learner's set gets wrong, with its values: one
    fixed hint per case named the mistake that case was built for, and misled a learner
    who made another (``WAAD >= tau_waad`` was told "D is a subset of the anchors")."""
    t = min(set(got) ^ set(want))
    if name == "intro":
        owners = [a for a in anchors if a - k <= t < a]
        return (
            f"Position {t} {'is' if t in want else 'is not'} the introduction of an anchor in "
            f"D; the Delta values near it: "
            + ", ".join(
                f"Delta[{u}] = {_fmt(delta[u])}"
                for u in range(max(0, t - k), min(len(delta), t + k))
            )
            + (f" (the anchors of D whose window holds it: {owners})." if owners else ".")
        )
    if t not in anchors:
        return f"Position {t} is not an anchor."
    window = _lookback(delta.numpy(), t, k)
    top = max((float(delta[u]) for u in window), default=math.nan)
    w_ok = float(waad[t]) <= tau_waad
    d_ok = bool(window) and top >= tau_delta
    return (
        f"Anchor {t}: WAAD[{t}] = {_fmt(waad[t])} <= tau_waad ({'holds' if w_ok else 'fails'}); "
        f"the defined Delta in its window t-k..t-1 are at {window} with max {_fmt(top)} "
        f">= tau_delta ({'holds' if d_ok else 'fails'}), so it "
        f"{'is' if t in want else 'is not'} dominated."
    )


def _fmt(x: Any) -> str:
    return f"{float(x):.6g}"
