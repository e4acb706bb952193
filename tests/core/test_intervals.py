"""Intervals and tests of `workbench.intervals`: tabulated values, hand-worked cases, and
the coverage that makes t-intervals (not percentile bootstraps) the right choice at n = 5."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.intervals import (
    bootstrap_ci,
    holm,
    paired_p,
    paired_t,
    t_cdf,
    t_ci,
    t_quantile,
    wilson_ci,
)


@pytest.mark.parametrize(
    "p, df, table",
    [
        (0.975, 1, 12.706204736),  # standard t tables (and scipy.stats.t.ppf)
        (0.975, 4, 2.776445105),
        (0.975, 9, 2.262157163),
        (0.95, 19, 1.729132812),
        (0.995, 30, 2.749995654),
        (0.975, 1000, 1.962339),
    ],
)
def test_t_quantiles_match_the_tables(p, df, table):
    assert t_quantile(p, df) == pytest.approx(table, abs=1e-6)
    assert t_quantile(1 - p, df) == pytest.approx(-table, abs=1e-6)
    assert t_cdf(table, df) == pytest.approx(p, abs=1e-8)


def test_t_cdf_closed_forms():
    # df = 1 is Cauchy: F(t) = 1/2 + atan(t) / pi; df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def test_t_interval_by_hand():
    values = [0.1, 0.3, 0.2, 0.4, 0.5]  # mean 0.3, s = sqrt(0.025)
    m, lo, hi = t_ci(values)
    half = 2.776445105 * math.sqrt(0.025) / math.sqrt(5)
    assert (m, lo, hi) == pytest.approx((0.3, 0.3 - half, 0.3 + half), abs=1e-9)
    # One run: the mean, and no interval (never a zero-width one).
    m, lo, hi = t_ci([0.4])
    assert m == 0.4 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(x) for x in t_ci([]))


def test_paired_t_by_hand():
    d = [1.0, 2.0, 3.0]  # mean 2, s = 1, t = 2 sqrt(3) with 2 df
    t = 2 * math.sqrt(3)
    assert paired_t(d) == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-12)
    assert paired_t([0.0, 0.0]) == 1.0
    assert math.isnan(paired_t([1.0]))


def test_holm_by_hand():
    # Sorted 0.01, 0.03, 0.04, 0.2 -> 4 x 0.01, 3 x 0.03, max(0.09, 2 x 0.04), max(., 0.2).
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, float("nan"), 0.01]) == pytest.approx([0.5, float("nan"), 0.02], nan_ok=True)
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_at_five_seeds_t_intervals_cover_and_percentile_bootstraps_do_not():
    rng = np.random.default_rng(0)
    n_trials, hits_t, hits_boot = 400, 0, 0
    for i in range(n_trials):
        x = rng.normal(0.0, 1.0, size=5)
        _, lo, hi = t_ci(x)
        hits_t += lo <= 0.0 <= hi
        _, lo, hi = bootstrap_ci(x, n_boot=400, seed=i)
        hits_boot += lo <= 0.0 <= hi
    # 400 trials: the binomial standard error of a 95% coverage is about 1.1 points.
    assert 0.92 <= hits_t / n_trials <= 0.98
    assert hits_boot / n_trials < 0.90


def test_paired_t_on_differences_that_do_not_vary_is_the_exact_sign_flip_test():
    # Two seeds that both lose 0.04: the t statistic is -0.04/0, and its limit p = 0 would
    # call two runs certain. The sign-flip test: 2 of the 4 sign patterns are as extreme.
    assert paired_t([-0.04, -0.04]) == 0.5
    assert paired_t([0.01] * 10) == pytest.approx(2 / 2**10)
    assert paired_t([0.0, 0.0, 0.0]) == 1.0


def _sign_flip_by_brute_force(d):
    import itertools

    observed = abs(sum(d)) / len(d)
    flips = list(itertools.product((1, -1), repeat=len(d)))
    extreme = sum(abs(sum(s * x for s, x in zip(signs, d, strict=True))) / len(d) >= observed - 1e-12
                  for signs in flips)  # fmt: skip
    return extreme / len(flips)


@pytest.mark.parametrize(
    "d", [[1.0, -1.0, 2.0, 3.0, 4.0], [0.1, 0.3], [0.2, -0.1, 0.05], [0.04] * 6, [0.0, 0.0]]
)
def test_the_paired_p_value_at_few_seeds_is_the_exact_sign_flip_test(d):
    p, test = paired_p(d)
    assert test == "sign-flip" and p == pytest.approx(_sign_flip_by_brute_force(d))


def test_rounding_of_differences_equal_on_paper_never_decides_the_p_value():
    """0.7 - 0.5 and 0.5 - 0.3 differ in the last bit: the t statistic then had a spread of
    1e-17 and p = 0 from two seeds."""
    d = [0.7 - 0.5, 0.5 - 0.3]
    assert d[0] != d[1]
    assert paired_t(d) == 0.5 and paired_p(d) == (0.5, "sign-flip")
    assert paired_p([0.1] * 20)[1] == "t"  # above SIGN_FLIP_MAX pairs, the t-test


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: holm(None), "list of p-values"),
        (lambda: holm("abc"), "list of p-values"),
        (lambda: holm([1.5, -0.2]), "no p-values"),
        (lambda: paired_t("abc"), "1-D list of numbers"),
        (lambda: paired_p(None), "1-D list of numbers"),
    ],
)
def test_the_tests_refuse_what_is_no_list_of_numbers(call, match):
    """paired_t(None) was NaN without a word; holm([1.5, -0.2]) gave [1.0, 0.0]."""
    with pytest.raises(WorkbenchError, match=match):
        call()


@pytest.mark.parametrize(
    "values", [[0.5, 0.5, 0.5], [0.0625, 0.0625], [0.7 - 0.5, 0.5 - 0.3], [0.0, 0.0, 0.0]]
)
def test_values_that_do_not_vary_have_no_interval(values):
    """A zero-width interval from equal runs claimed certainty: under no difference 10.6%
    of 2-seed paired intervals excluded 0 that way (5% nominal)."""
    for est, lo, hi in (t_ci(values), bootstrap_ci(values, n_boot=50)):
        assert est == pytest.approx(float(np.mean(values)))
        assert math.isnan(lo) and math.isnan(hi)


def test_wilson_interval_by_hand():
    # 4 of 4: centre (1 + z^2/8) / (1 + z^2/4), half z sqrt(z^2/64) / (1 + z^2/4), z = 1.95996
    z = 1.959963984540054
    p, lo, hi = wilson_ci([1, 1, 1, 1])
    assert p == 1.0 and hi == 1.0
    assert lo == pytest.approx((1 + z * z / 8 - z * z / 8) / (1 + z * z / 4), abs=1e-9)
    assert lo == pytest.approx(0.5101, abs=1e-4)  # tabulated
    p, lo, hi = wilson_ci([1, 0, 1, 1, 0, float("nan")])  # NaN dropped: 3 of 5
    assert p == 0.6 and (lo, hi) == pytest.approx((0.2307, 0.8824), abs=1e-4)
    assert all(math.isnan(x) for x in wilson_ci([float("nan")]))
    with pytest.raises(WorkbenchError, match="needs 0/1 outcomes"):
        wilson_ci([0.5, 1.0])


def test_wilson_covers_proportions_where_the_t_interval_did_not():
    """At 4 traces whose continuations stay correct with probability 0.95, the t-interval
    covered 18% (mostly [1, 1]); Wilson's holds at least 90%."""
    rng = np.random.default_rng(0)
    draws = (rng.random((4000, 4)) < 0.95).astype(float)
    wilson = np.array([wilson_ci(d)[1:] for d in draws])
    t = np.array([t_ci(d)[1:] for d in draws])
    assert np.mean((wilson[:, 0] <= 0.95) & (wilson[:, 1] >= 0.95)) > 0.9
    assert np.mean((t[:, 0] <= 0.95) & (t[:, 1] >= 0.95)) < 0.3  # NaN bounds never cover


@pytest.mark.parametrize("d", [[math.inf, 1.0], [math.inf, math.inf], [-math.inf, 0.2, 0.3]])
def test_an_infinite_difference_has_no_p_value(d):
    """paired_p gave p = 0 ("significant") for any infinite difference; t_ci already gives
    such values NaN bounds, and bootstrap_ci gave a finite bound beside a NaN one."""
    p, _ = paired_p(d)
    assert math.isnan(p) and math.isnan(paired_t(d))
    assert math.isnan(paired_p(d * 9)[0])  # the t-test's branch too
    for est, lo, hi in (t_ci(d), bootstrap_ci(d, n_boot=50)):
        assert math.isinf(est) and math.isnan(lo) and math.isnan(hi)


def test_tensors_count_as_numbers_whatever_their_dtype_or_grad():
    """A tensor that requires grad failed with NumPy's raw RuntimeError; a bfloat16 one
    was refused as "no 1-D list of numbers"."""
    torch = pytest.importorskip("torch")
    want = t_ci([1.0, 2.0, 4.0])
    assert t_ci(torch.tensor([1.0, 2.0, 4.0], requires_grad=True)) == pytest.approx(want)
    assert t_ci(torch.tensor([1.0, 2.0, 4.0], dtype=torch.bfloat16)) == pytest.approx(want)
    assert wilson_ci(torch.tensor([True, False, True])) == pytest.approx(wilson_ci([1, 0, 1]))
    with pytest.raises(WorkbenchError, match="1-D list of numbers"):  # a list of such tensors
        t_ci(list(torch.tensor([1.0, 2.0], requires_grad=True)))


@pytest.mark.parametrize("df", [0, -1.0, float("nan"), math.inf])
def test_the_t_distribution_refuses_a_degrees_of_freedom_it_has_no_value_for(df):
    """t_quantile(0.975, 0) and t_quantile(0.975, nan) returned 4.5e-13 without a word."""
    with pytest.raises(ValueError, match="df must be a positive finite number"):
        t_quantile(0.975, df)
    with pytest.raises(ValueError, match="df must be a positive finite number"):
        t_cdf(1.0, df)


def test_an_interval_level_may_be_a_numpy_number_but_not_one_float_cannot_split():
    """``ci=np.float32(0.95)`` (a level read from an array) was refused as "not between 0
    and 1", and ``ci=0.9999999999999999`` reached a raw ValueError from `t_quantile`."""
    values = [0.1, 0.3, 0.2]
    assert t_ci(values, ci=np.float32(0.95)) == pytest.approx(t_ci(values, ci=0.95), rel=1e-6)
    assert wilson_ci([1, 0, 0, 1], ci=np.float64(0.9)) == wilson_ci([1, 0, 0, 1], ci=0.9)
    with pytest.raises(WorkbenchError, match="too close to 1 for floating point") as e:
        t_ci(values, ci=0.9999999999999999)
    assert "ci=0.95" in e.value.fix
    for bad in (1.0, 0, np.nan, True, "0.95"):
        with pytest.raises(WorkbenchError, match="ci must be an interval level between 0 and 1"):
            t_ci(values, ci=bad)
