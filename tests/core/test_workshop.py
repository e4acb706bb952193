"""The workshop's exercise checks (`workbench.workshop`, notebooks/06_workshop*.ipynb):
a right answer passes, a wrong answer fails with a message that says why."""

from __future__ import annotations

import math
import re
import statistics

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.workshop import (
    check_anchors,
    check_dominated,
    check_fai,
    check_gamma,
    check_waad,
    random_pattern,
)


def anchors(count):
    """A learner's `my_anchors` that chooses ``count(q, n)`` of the n defined values."""

    def my_anchors(fai, q):
        pos = [i for i in range(len(fai)) if not math.isnan(fai[i])]
        m = count(q, len(pos))
        return sorted(sorted(pos, key=lambda i: (-fai[i].item(), i))[:m])

    return my_anchors


def test_the_solution_passes(capsys):
    # the solution notebook's counting: max(1, round(q * n))
    check_anchors(anchors(lambda q, n: max(1, round(q * n))))
    assert "all" in capsys.readouterr().out


def test_truncating_the_count_fails():
    # README, "The method": max(1, round(q * n)); int(q * n) takes one too few whenever q * n ends in .5+
    with pytest.raises(AssertionError, match="round, not truncate"):
        check_anchors(anchors(lambda q, n: max(1, int(q * n))))


@pytest.mark.parametrize("returned", [None, 3.0, [float("nan")]])
def test_an_answer_that_is_not_a_list_of_positions_fails_with_a_message(returned):
    # e.g. a function that forgets `return`: an AssertionError that says so, not a TypeError
    with pytest.raises(AssertionError, match="must return a list of positions"):
        check_anchors(lambda fai, q: returned)


def test_a_tensor_of_positions_is_a_list_of_positions(capsys):
    check_anchors(lambda fai, q: torch.tensor(anchors(lambda q, n: max(1, round(q * n)))(fai, q)))
    assert "all" in capsys.readouterr().out


def test_a_mask_or_unsorted_positions_fail_with_what_to_change():
    """A True/False mask was read as positions 0 and 1 ("you chose [0, 0, 1, ...]"), and
    unsorted positions passed although the exercise asks for them sorted."""
    right = anchors(lambda q, n: max(1, round(q * n)))

    def mask(fai, q):
        chosen = set(right(fai, q))
        return torch.tensor([i in chosen for i in range(len(fai))])

    with pytest.raises(AssertionError, match="not a mask"):
        check_anchors(mask)

    def unsorted(fai, q):
        got = right(fai, q)
        return got[::-1] if len(got) > 1 else got

    with pytest.raises(AssertionError, match="return them sorted"):
        check_anchors(unsorted)


# The solutions notebook's answers, and the mistakes learners make with each exercise: every
# mistake must fail its check, with a message that points at what to change.


def waad(dist=lambda t, s, w: min(t - s, w), first=lambda pl: pl, fill=float("nan")):
    def my_waad(A, prompt_len, window):
        n = A.shape[0]
        out = torch.full((n,), fill, dtype=torch.float64)
        for t in range(first(prompt_len), n):
            out[t] = sum(A[t, s].item() * dist(t, s, window) for s in range(t + 1))
        return out

    return my_waad


def fai(
    lo_ok=lambda t, s, lo: t >= s + lo,
    hi_end=lambda s, hi, n: n if hi is None else s + hi + 1,
    first=lambda pl: pl,
    empty=float("nan"),
):
    def my_fai(A, prompt_len, h_lo, h_hi):
        n = A.shape[0]
        out = torch.full((n,), float("nan"), dtype=torch.float64)
        for s in range(first(prompt_len), n):
            ts = [
                t
                for t in range(max(prompt_len, s), min(n, hi_end(s, h_hi, n)))
                if lo_ok(t, s, h_lo)
            ]
            out[s] = sum(A[t, s].item() for t in ts) / len(ts) if ts else empty
        return out

    return my_fai


def gamma(overlap=lambda old, bonus: old + bonus, skip_intro_in_dom=False, alpha_of=lambda a: a):
    def my_gamma(n_pos, anchors, dominated, intro, gamma_amp, alpha):
        a, g1 = alpha_of(alpha), gamma_amp - 1
        out = torch.ones(n_pos, dtype=torch.float64)
        for t in anchors:
            out[t] = overlap(out[t], (1 - a) * g1 if t in dominated else g1)
        for t in intro:
            if not (skip_intro_in_dom and t in dominated):
                out[t] = overlap(out[t], a * g1)
        return out

    return my_gamma


def test_the_solutions_pass(capsys):
    check_waad(waad())
    check_fai(fai())
    check_gamma(gamma())
    assert capsys.readouterr().out.count("cases pass") == 3


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        (waad(dist=lambda t, s, w: t - s), "min\\(t - s, W\\)"),  # no clip
        (waad(dist=lambda t, s, w: t - s if t - s < w else 0), "min\\(t - s, W\\)"),  # cut off
        (waad(dist=lambda t, s, w: min(t - s, w - 1)), "min\\(t - s, W\\)"),
        (waad(first=lambda pl: 0), "position 0 is in the prompt \\(prompt_len = 1\\)"),
        (waad(fill=0.0), "position 0 is in the prompt"),
        (waad(first=lambda pl: pl + 1), "positions 1..3 are the response"),
    ],
)
def test_waad_mistakes_fail_with_a_hint(mistake, message):
    with pytest.raises(AssertionError, match=message):
        check_waad(mistake)


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        # horizon off by one at the lower end: T(4) = {4} in a 5-token map, horizon (0, end)
        (fai(lo_ok=lambda t, s, lo: t > s + lo), "T\\(4\\) holds the queries 4..4 \\(both ends"),
        (
            fai(lo_ok=lambda t, s, lo: t >= s + lo - 1),
            "T\\(18\\) is empty: it would start at t = 18 \\+ 2",
        ),
        # ... and at the upper end
        (fai(hi_end=lambda s, hi, n: n if hi is None else s + hi), "s \\+ H_lo <= t <= s \\+ H_hi"),
        (
            fai(hi_end=lambda s, hi, n: n if hi is None else s + hi + 2),
            "s \\+ H_lo <= t <= s \\+ H_hi",
        ),
        (fai(hi_end=lambda s, hi, n: n - 1 if hi is None else s + hi + 1), "T\\(4\\) holds"),
        # an empty T(s) is NaN, not 0
        (fai(empty=0.0), "T\\(18\\) is empty: .* NaN, not 0"),
        (fai(first=lambda pl: 0), "position 0 is in the prompt"),
    ],
)
def test_fai_mistakes_fail_with_a_hint(mistake, message):
    with pytest.raises(AssertionError, match=message):
        check_fai(mistake)


RIGHT = anchors(lambda q, n: max(1, round(q * n)))


def bottom_q(fai, q):
    return RIGHT(-fai, q)


def all_counted(fai, q):  # q of every position, NaN ones included: 0.34 * 7 -> 2
    return RIGHT(fai, q * len(fai) / int((~torch.isnan(fai)).sum()))


def fai_values(fai, q):  # the FAI values of the anchors instead of their positions
    return [fai[i].item() for i in RIGHT(fai, q)]


def filtered(fai, q):  # positions in fai[~isnan(fai)], not in fai
    v = fai[~torch.isnan(fai)]
    return sorted(torch.topk(v, max(1, round(q * len(v)))).indices.tolist())


def nan_kept(fai, q):  # torch.topk ranks NaN above every number
    m = max(1, round(q * int((~torch.isnan(fai)).sum())))
    return sorted(torch.topk(fai, m).indices.tolist())


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        (bottom_q, "largest first"),
        (all_counted, r"expected 1 \(q = 0\.34 of the n = 3 defined"),
        (fai_values, "the FAI values instead of their positions"),
        (filtered, r"indices into the defined \(non-NaN\) values"),
        (nan_kept, "you chose position 0, where FAI is NaN"),
    ],
)
def test_anchor_mistakes_fail_with_a_hint(mistake, message):
    with pytest.raises(AssertionError, match=message):
        check_anchors(mistake)


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        (gamma(overlap=lambda old, bonus: 1 + bonus), "bonuses add where sets overlap"),
        (gamma(overlap=lambda old, bonus: max(old, 1 + bonus)), "bonuses add"),
        (gamma(overlap=lambda old, bonus: old * (1 + bonus)), "intro that is also an anchor"),
        (gamma(alpha_of=lambda a: 1 - a), "at position 4 you computed 2.750000"),
        # an introduction token that is itself a dominated anchor takes both bonuses
        (gamma(skip_intro_in_dom=True), "intro that is itself in D: at position 5"),
    ],
)
def test_gamma_mistakes_fail_with_a_hint(mistake, message):
    with pytest.raises(AssertionError, match=message):
        check_gamma(mistake)


def dominated(
    window=lambda t, k: range(max(0, t - k), t),
    waad_ok=lambda w, tau: w <= tau,
    delta_ok=lambda d, tau: d >= tau,
    pick=lambda back, delta, tau: max(back, key=lambda u: (delta[u], -u)),
    forward=lambda w, t: abs(w[t] - w[t + 1]),
    waad_for_median=lambda w, pl: w[pl:],
    delta_for_median=lambda delta, pl: [x for x in delta[pl:] if not math.isnan(x)],
    median=statistics.median,
    skip_nan=True,
    candidates=lambda anchors, pl, n: anchors,
    intro_of_every_anchor=False,
    as_set=True,
    fixed_k=None,
):
    """A learner's `my_dominated`; the defaults are the solutions notebook's answer."""

    def my_dominated(waad, prompt_len, anchors, k):
        k = fixed_k or k
        w = [float(x) for x in waad]
        n = len(w)
        delta = [forward(w, t) if prompt_len <= t < n - 1 else math.nan for t in range(n)]
        tau_waad = median(waad_for_median(w, prompt_len))
        tau_delta = median(delta_for_median(delta, prompt_len))
        dom, intro = [], []
        for t in candidates(anchors, prompt_len, n):
            back = [u for u in window(t, k) if not (skip_nan and math.isnan(delta[u]))]
            if not back:
                continue
            # torch's max, like the builtin max over a list that starts with NaN, gives NaN
            ok = waad_ok(w[t], tau_waad) and delta_ok(
                torch.tensor([delta[u] for u in back]).max().item(), tau_delta
            )
            if ok:
                dom.append(t)
            if ok or intro_of_every_anchor:
                intro.append(pick(back, delta, tau_delta))
        return sorted(dom), sorted(set(intro)) if as_set else intro

    return my_dominated


def test_the_dominated_solution_passes(capsys):
    check_dominated(dominated())
    assert "check_dominated: all" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        # D is computed over the anchors, and I(D) over D
        (dominated(candidates=lambda a, pl, n: range(pl, n)), "D is a subset of the anchors"),
        (dominated(intro_of_every_anchor=True), "anchors in D only"),
        # the window t-k..t-1 holds neither t nor more than k positions
        (dominated(window=lambda t, k: range(max(0, t - k + 1), t + 1)), "not t itself"),
        (dominated(window=lambda t, k: range(max(0, t - k), t + 1)), "not t itself"),
        (dominated(window=lambda t, k: range(max(0, t - k - 1), t)), "k = 2 .*t-k..t-1"),
        (dominated(fixed_k=3), "k = 2 .*t-k..t-1"),
        # Delta[t] = |WAAD[t] - WAAD[t+1]|
        (
            dominated(forward=lambda w, t: abs(w[t] - w[t - 1]) if t else math.nan),
            "Delta looks forward",
        ),
        (dominated(forward=lambda w, t: w[t] - w[t + 1]), "never negative"),
        # intro(t): the largest Delta, ties to the lower position
        (dominated(pick=lambda back, d, tau: max(back, key=lambda u: (d[u], u))), "on a tie"),
        (dominated(pick=lambda back, d, tau: back[-1]), "nor the nearest"),
        (
            dominated(pick=lambda back, d, tau: next(u for u in back if d[u] >= tau)),
            "not the first one over tau_delta",
        ),
        # equality counts on both sides
        (dominated(waad_ok=lambda w, tau: w < tau), "equal to a threshold.*equality counts"),
        (dominated(delta_ok=lambda d, tau: d > tau), "equal to a threshold.*equality counts"),
        # the medians are over the response only
        (
            dominated(waad_for_median=lambda w, pl: [0.0] * pl + w[pl:]),
            "tau_waad, a median over the response.*prompt_len..T-1",
        ),
        (
            dominated(delta_for_median=lambda d, pl: [0.0 if math.isnan(x) else x for x in d[pl:]]),
            "tau_delta, a median over the defined Delta.*not at the last token",
        ),
        # torch.median (and nanmedian) takes the lower middle value of an even count
        (
            dominated(median=lambda xs: torch.tensor(xs).median().item()),
            "tau_delta, a median .*the mean of the two middle values",
        ),
        # windows that reach into the prompt, or past position 0
        (dominated(skip_nan=False), "reach into the prompt.*defined Delta in the window only"),
        (dominated(window=lambda t, k: range(t - k, t)), "negative index wraps around"),
        # I(D) is a set
        (dominated(as_set=False), "repeats a position: I\\(D\\) is a set"),
    ],
)
def test_dominated_mistakes_fail_with_a_hint(mistake, message):
    with pytest.raises(AssertionError, match=message):
        check_dominated(mistake)


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (None, "must return two lists of positions"),
        (([2], [1], [0]), "must return two lists of positions"),
        (([0.5], []), "not positions"),
        ((torch.tensor([True, False]), []), "mask"),
        # a list of True/False per anchor was read as positions 0 and 1
        (([False, True, False, True], []), "dominated is a True/False mask"),
    ],
)
def test_a_dominated_answer_of_the_wrong_shape_fails_with_a_message(returned, message):
    with pytest.raises(AssertionError, match=message):
        check_dominated(lambda waad, prompt_len, anchors, k: returned)


def test_unsorted_dominated_anchors_fail_with_what_to_change():
    right = dominated()

    def unsorted(waad, prompt_len, anchors, k):
        dom, intro = right(waad, prompt_len, anchors, k)
        return dom[::-1], intro

    with pytest.raises(AssertionError, match="return dominated sorted"):
        check_dominated(unsorted)


def test_an_unfinished_dominated_exercise_asks_for_code():
    def my_dominated(waad, prompt_len, anchors, k):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="my_dominated is not implemented yet"):
        check_dominated(my_dominated)


def waad_result():
    """What a learner gets from calling their function instead of passing it."""
    from workbench.attention import waad as waad_of

    return waad_of(random_pattern(6), 2)


@pytest.mark.parametrize(
    ("check", "name"),
    [
        (check_waad, "my_waad"),
        (check_fai, "my_fai"),
        (check_anchors, "my_anchors"),
        (check_gamma, "my_gamma"),
        (check_dominated, "my_dominated"),
    ],
)
def test_passing_a_result_instead_of_the_function_fails_with_a_hint(check, name):
    """``check_waad(wb.waad(A, 2))`` (a result, not the function) was a raw TypeError
    "'Tensor' object is not callable" from inside the check."""
    with pytest.raises(AssertionError, match="must be your function, got a value of type Tensor"):
        check(waad_result())
    with pytest.raises(AssertionError, match=rf"pass your function itself, {name}, not {name}"):
        check(None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n=-1), "n must be at least 1"),
        (dict(n=0), "n must be at least 1"),
        (dict(n=3.5), "n must be an integer"),
        (dict(n=5, seed=-1), "seed must be at least 0"),
        (dict(n=5, seed=1.5), "seed must be an integer"),
        (dict(n=5, sharp=float("nan")), "sharp must be a finite number"),
        (dict(n=5, sharp=float("inf")), "sharp must be a finite number"),
        (dict(n=5, sharp=-1.0), r"sharp must be in \[0.0, inf\)"),
        (dict(n=5, sharp=1e308), "so large that the scores overflow"),
    ],
)
def test_random_pattern_refuses_arguments_that_make_no_attention_map(kwargs, message):
    """A NaN or overflowing sharpness returned a map of NaN without a word, a negative one
    and a negative seed were taken, and a negative or fractional size was a raw torch
    error."""
    with pytest.raises(WorkbenchError, match=message) as e:
        random_pattern(**kwargs)
    assert e.value.fix.startswith("pass e.g.")


def _fai_loop(A, prompt_len, rows):
    """FAI[s] as the mean of A[rows(s, T), s] over response positions (NaN elsewhere)."""
    T = A.shape[0]
    out = torch.full((T,), float("nan"), dtype=torch.float64)
    for s in range(prompt_len, T):
        r = rows(s, T)
        out[s] = A[r, s].mean() if len(r) else float("nan")
    return out


@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        # H_lo ignored when there is no H_hi: every case with H_hi = None had H_lo = 0
        (
            lambda A, pl, lo, hi: _fai_loop(
                A, pl, lambda s, T: range(s, T) if hi is None else range(s + lo, min(T, s + hi + 1))
            ),
            r"horizon \(3, end\)",
        ),
        # `if h_hi:` read H_hi = 0 as "to the end"
        (
            lambda A, pl, lo, hi: _fai_loop(
                A, pl, lambda s, T: range(s + lo, min(T, s + hi + 1) if hi else T)
            ),
            r"horizon \(0, 0\)",
        ),
    ],
)
def test_fai_horizons_that_passed_every_case_now_fail(mistake, message):
    with pytest.raises(AssertionError, match=message):
        check_fai(mistake)


def test_anchor_answers_that_passed_or_misled_now_fail_with_what_to_change():
    def nan_as_zero(fai, q):  # a NaN read as 0 tied with a defined 0 and took its place
        m = max(1, round(q * int((~fai.isnan()).sum())))
        v = fai.nan_to_num(0.0)
        return sorted(sorted(range(len(v)), key=lambda i: (-v[i].item(), i))[:m])

    with pytest.raises(AssertionError, match=r"a defined FAI of 0 is a value.*position 0"):
        check_anchors(nan_as_zero)

    def zero_one_mask(fai, q):  # read as positions 0 and 1: "you chose position 0 ..."
        chosen = RIGHT(fai, q)
        return [int(i in chosen) for i in range(len(fai))]

    with pytest.raises(AssertionError, match="not a mask of 0/1 per position"):
        check_anchors(zero_one_mask)


def test_a_dominated_mistake_no_case_was_built_for_is_told_the_rule_it_broke():
    """WAAD[t] >= tau_waad was told "D is a subset of the anchors" (it returned a subset):
    each case had one fixed hint, for the mistake it was built for."""
    with pytest.raises(AssertionError) as e:
        check_dominated(dominated(waad_ok=lambda w, tau: w >= tau))
    text = str(e.value)
    assert re.search(r"Anchor \d+: WAAD\[\d+\] = [\d.]+ <= tau_waad \((holds|fails)\)", text)
    assert "so it is" in text and "This case is about:" in text


@pytest.mark.parametrize(
    ("check", "name", "params"),
    [
        (check_waad, "my_waad", "A, prompt_len, window"),
        (check_fai, "my_fai", "A, prompt_len, h_lo, h_hi"),
        (check_anchors, "my_anchors", "fai, q"),
        (check_gamma, "my_gamma", "n_pos, anchors, dominated, intro, gamma_amp, alpha"),
        (check_dominated, "my_dominated", "waad, prompt_len, anchors, k"),
    ],
)
def test_a_function_of_other_arguments_is_told_the_arguments_to_take(check, name, params):
    """``def my_waad(A, prompt_len)`` (a forgotten argument) was a raw TypeError from
    inside the check."""

    def wrong(x):
        return x

    with pytest.raises(AssertionError) as e:
        check(wrong)
    assert f"{name} must take the arguments ({params})" in str(e.value)
    assert f"def {name}({params}):" in str(e.value)


def test_an_answer_of_complex_numbers_is_refused():
    """A complex answer passed with only torch's warning: its imaginary part was dropped."""
    from workbench.attention import waad as waad_of

    def my_waad(A, prompt_len, window):
        return waad_of(A, prompt_len, window=window) + 1j

    with pytest.raises(AssertionError, match="my_waad must return real numbers"):
        check_waad(my_waad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_an_answer_in_half_precision_is_told_to_keep_float64(dtype):
    """A right equation computed in float16 failed at the third digit, with the hint of a
    wrong equation ("the window counts ..."): the learner hunted a bug that was rounding."""
    from workbench.attention import waad as waad_of

    def my_waad(A, prompt_len, window):
        return waad_of(A, prompt_len, window=window).to(dtype)

    with pytest.raises(AssertionError, match=f"my_waad returned {dtype}") as e:
        check_waad(my_waad)
    assert "compute in the float64 the map is given in" in str(e.value)
    check_waad(lambda A, prompt_len, window: waad_of(A, prompt_len, window=window).float())
