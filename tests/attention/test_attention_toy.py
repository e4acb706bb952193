"""The metrics on hand-computed toy patterns and random patterns (no model needed).

Reads as a spec: each toy case is worked out by hand in the comments (Eq. 7-10
and Sec. 5.2); the property tests check ranges, closed forms for uniform attention, the
effect of moving the prompt/response boundary, and agreement with the loop reference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import workbench as wb
from workbench.attention.analysis import Analysis
from workbench.attention.metrics import stats_from_pattern
from workbench.attention.params import RhythmParams
from workbench.attention.reference import reference_from_patterns
from workbench.attention.rhythm import dominated_anchors, introductions, top_q

NAN = float("nan")


# One head, three tokens, prompt = token 0, response R = {1, 2}.
TOY = torch.tensor(
    [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.0],
        [0.2, 0.3, 0.5],
    ]
)


def close(a, b, tol=1e-12):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    ok = ~np.isnan(a)
    np.testing.assert_allclose(a[ok], b[ok], rtol=0, atol=tol)


def test_toy_span():
    # row 1: 0.5*(1-0) + 0.5*(1-1) = 0.5; row 2: 0.2*2 + 0.3*1 + 0.5*0 = 0.7; mean = 0.6
    close(wb.head_span(TOY, 1), [0.6], 1e-6)


def test_toy_waad_window_clips_distance():
    # W = 10 (no clipping): row 1 -> 0.5, row 2 -> 0.7; the prompt row is NaN.
    close(wb.waad(TOY, 1, window=10), [NAN, 0.5, 0.7], 1e-6)
    # W = 1: distances clip to 1: row 1 -> 0.5*1 = 0.5; row 2 -> 0.2*1 + 0.3*1 = 0.5.
    close(wb.waad(TOY, 1, window=1), [NAN, 0.5, 0.5], 1e-6)


def test_toy_fai_horizons():
    # (0, None): T(1) = {1, 2}: (A[1,1] + A[2,1]) / 2 = (0.5 + 0.3) / 2 = 0.4;
    #            T(2) = {2}: A[2,2] = 0.5; position 0 is the prompt: NaN.
    close(wb.fai(TOY, 1), [NAN, 0.4, 0.5], 1e-6)
    # (1, None): T(1) = {2}: 0.3; T(2) is empty: NaN (undefined, left out of rankings).
    close(wb.fai(TOY, 1, horizon=(1, None)), [NAN, 0.3, NAN], 1e-6)
    # (0, 0): only t = s: the diagonal.
    close(wb.fai(TOY, 1, horizon=(0, 0)), [NAN, 0.5, 0.5], 1e-6)


def test_toy_fai_min_rows_matches_an_analysis():
    # T(1) = {1, 2} holds 2 rows, T(2) = {2} one: min_rows=2 leaves only s = 1 defined.
    close(wb.fai(TOY, 1, min_rows=2), [NAN, 0.4, NAN], 1e-6)
    # The raw functions had no min_rows: they disagreed with an Analysis (fai_min_rows=10
    # by default) on the same heads, receiver kurtosis included.
    rng = np.random.default_rng(0)
    p = random_pattern(rng, 2, 30, 1.0)
    a = Analysis(
        stats=stats_from_pattern(p, 3), entropy=torch.full((30,), NAN), tokens=["t"] * 30,
        ids=torch.zeros(30, dtype=torch.long), n_layers=1, n_heads=2,
        params=RhythmParams(head_quantiles=(0.5, 0.5), fai_min_rows=10),
    )  # fmt: skip
    glob = p[[h for _, h in a.global_heads]]
    close(wb.fai(glob, 3, min_rows=10), a.fai, 1e-6)
    assert torch.isnan(wb.fai(glob, 3, min_rows=10)).sum() > torch.isnan(wb.fai(glob, 3)).sum()
    close(wb.receiver_kurtosis(p, 3, min_rows=10), a.receiver_kurtosis[0], 1e-6)


def test_a_numpy_pattern_is_read_as_a_tensor():
    close(wb.waad(TOY.numpy(), 1, window=10), [NAN, 0.5, 0.7], 1e-6)
    close(wb.fai(TOY.numpy().astype(np.float64), 1), [NAN, 0.4, 0.5], 1e-6)


def test_toy_two_heads_are_averaged():
    # Head 2 attends to itself only: WAAD 0 everywhere; the mean map halves head 1's WAAD.
    eye = torch.eye(3)
    both = torch.stack([TOY, eye])
    close(wb.waad(both, 1), [NAN, 0.25, 0.35], 1e-6)
    # FAI of the mean map: s=1: ((0.5+1)/2 + (0.3+0)/2) / 2 = (0.75 + 0.15) / 2 = 0.45
    close(wb.fai(both, 1), [NAN, 0.45, 0.75], 1e-6)
    close(wb.head_span(both, 1), [0.6, 0.0], 1e-6)


def test_toy_delta_and_response_mask_forms():
    w = wb.waad(TOY, torch.tensor([False, True, True]))
    close(wb.delta(w), [NAN, 0.2, NAN], 1e-6)  # |0.5 - 0.7|; the last token has none
    close(wb.waad(TOY, range(1, 3)), w)


def test_top_q_counting_and_ties():
    # 5 eligible values, q = 0.4 -> round(2.0) = 2 items; ties go to the lower position.
    v = torch.tensor([NAN, 3.0, 1.0, 3.0, 3.0, 0.5])
    assert top_q(v, 0.4) == [1, 3]
    assert top_q(v, 0.4, bottom=True) == [2, 5]
    # max(1, round(q n)): a tiny q still selects one token; q = 1 selects all.
    assert top_q(v, 0.01) == [1]
    assert top_q(v, 1.0) == [1, 2, 3, 4, 5]
    assert top_q(torch.tensor([NAN, NAN]), 0.4) == []


def test_dominated_and_intro_by_hand():
    # positions 0..5, all response. WAAD and Delta chosen by hand.
    waad = torch.tensor([5.0, 1.0, 6.0, 2.0, 1.0, 3.0])
    delta = torch.tensor([4.0, 5.0, 4.0, 1.0, 2.0, NAN])
    # anchor 3: WAAD 2 <= 2.5 and max Delta over 0..2 is 5 >= 3 -> dominated; intro = 1.
    # anchor 4: WAAD 1 <= 2.5 and max Delta over 1..3 is 5 -> dominated; intro = 1.
    # anchor 2: WAAD 6 > 2.5 -> not dominated. anchor 0: no look-back -> not dominated.
    dom = dominated_anchors([0, 2, 3, 4], waad, delta, k=3, tau_waad=2.5, tau_delta=3.0)
    assert dom == [3, 4]
    assert introductions(dom, delta, k=3) == [1]
    # k = 1: anchor 3 looks at 2 only (Delta 4 >= 3); anchor 4 at 3 only (Delta 1 < 3).
    dom1 = dominated_anchors([0, 2, 3, 4], waad, delta, k=1, tau_waad=2.5, tau_delta=3.0)
    assert dom1 == [3]
    assert introductions(dom1, delta, k=1) == [2]
    # Ties in Delta pick the lower position.
    assert introductions([3], torch.tensor([4.0, 4.0, 4.0, 0.0]), k=3) == [0]


def test_middle_layers_rule():
    # floor(30/3)=10 .. floor(60/3)=20, five evenly spaced: 10, 12.5, 15, 17.5, 20 ->
    # Python round (half to even): 10, 12, 15, 18, 20.
    assert wb.middle_layers(30) == [10, 12, 15, 18, 20]
    assert wb.middle_layers(4) == [1, 2]  # 1..2: duplicates removed
    assert wb.middle_layers(1) == [0]


def test_a_hybrid_models_all_and_middle_are_its_attention_layers():
    from workbench.attention import resolve_layers

    # Qwen3-Next's layout: 48 layers, attention in every fourth (3, 7, ..., 47). "middle"
    # is middle_layers(12) = [4, 5, 6, 7, 8] of those twelve.
    attention = list(range(3, 48, 4))
    assert resolve_layers("all", 48, attention) == attention
    assert resolve_layers("middle", 48, attention) == [19, 23, 27, 31, 35]
    assert resolve_layers([0, -1], 48, attention) == [0, 47]  # explicit: checked later
    assert resolve_layers("middle", 30, None) == wb.middle_layers(30)


def random_pattern(rng: np.random.Generator, n_heads: int, n: int, temp: float = 2.0):
    scores = rng.normal(size=(n_heads, n, n)) * temp
    mask = np.triu(np.ones((n, n), dtype=bool), 1)
    scores[:, mask] = -np.inf
    p = np.exp(scores - scores.max(-1, keepdims=True))
    return torch.tensor(p / p.sum(-1, keepdims=True), dtype=torch.float32)


patterns = st.tuples(
    st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(2, 12), st.floats(0.1, 4.0)
)


@settings(max_examples=40, deadline=None)
@given(patterns, st.integers(1, 12), st.integers(0, 5), st.sampled_from([None, 0, 3, 20]))
# A column whose attention after H_lo is below float32's rounding of its cut sums (FAI read 0
# against 1.3e-6 when the raw-pattern reductions were float32).
@example(case=(563, 2, 9, 3.5), window=1, lo=3, hi_extra=None)
def test_ranges_and_reference(case, window, lo, hi_extra):
    seed, nh, n, temp = case
    rng = np.random.default_rng(seed)
    p = random_pattern(rng, nh, n, temp)
    pl = int(rng.integers(1, n))
    hi = None if hi_extra is None else lo + hi_extra
    w = wb.waad(p, pl, window=window)
    f = wb.fai(p, pl, horizon=(lo, hi))
    resp = w[pl:]
    assert not torch.isnan(resp).any() and torch.isnan(w[:pl]).all()
    assert (resp >= -1e-6).all() and (resp <= window + 1e-5).all()  # WAAD in [0, W]
    fr = f[~torch.isnan(f)]
    assert (fr >= -1e-7).all() and (fr <= 1 + 1e-6).all()  # FAI in [0, 1]
    # Against the loop reference, one head at a time (each head is its own group).
    for h in range(nh):
        ref = reference_from_patterns(
            {(0, 0): p[h].double().numpy()},
            pl,
            n_layers=1,
            n_heads=1,
            window=window,
            fai_horizon=(lo, hi),
            head_quantiles=(0.5, 0.5),
            fai_min_rows=1,  # wb.fai on raw patterns is the paper's definition
        )
        close(wb.waad(p[h], pl, window=window), ref["waad"], 1e-5)
        close(wb.fai(p[h], pl, horizon=(lo, hi)), ref["fai"], 1e-6)
        close(wb.head_span(p[h], pl), ref["head_span"][0], 1e-5)
        close(wb.receiver_kurtosis(p[h], pl, horizon=(lo, hi)), ref["receiver_kurtosis"][0], 1e-4)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.integers(1, 15))
def test_uniform_attention_closed_forms(n, window):
    # A[t, s] = 1/(t+1): span row t = t/2; WAAD[t] = sum_{d=0..t} min(d, W) / (t+1);
    # FAI(0, None)[s] = mean over t in R, t >= s of 1/(t+1).
    p = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    pl = max(1, n // 3)
    ts = np.arange(pl, n)
    close(wb.head_span(p, pl), [ts.mean() / 2], 1e-5)
    exp_w = [NAN] * pl + [sum(min(d, window) for d in range(t + 1)) / (t + 1) for t in ts]
    close(wb.waad(p, pl, window=window), exp_w, 1e-5)
    exp_f = [NAN] * pl + [np.mean([1 / (t + 1) for t in range(s, n)]) for s in ts]
    close(wb.fai(p, pl), exp_f, 1e-6)


@settings(max_examples=30, deadline=None)
@given(patterns, st.data())
def test_moving_the_boundary_changes_only_what_it_should(case, data):
    # Per-head WAAD of a row does not depend on the boundary; FAI at a response position
    # s only sums rows t >= s, so it is the same for every boundary <= s. Positions that
    # leave the response become NaN. The span (a mean over the response rows) may change.
    seed, nh, n, temp = case
    if n < 3:
        return
    p = random_pattern(np.random.default_rng(seed), nh, n, temp)
    a = data.draw(st.integers(1, n - 2))
    b = data.draw(st.integers(a + 1, n - 1))
    wa, wb_ = wb.waad(p, a), wb.waad(p, b)
    fa, fb = wb.fai(p, a), wb.fai(p, b)
    close(wa[b:], wb_[b:], 1e-6)
    close(fa[b:], fb[b:], 1e-6)
    assert torch.isnan(wb_[:b]).all() and torch.isnan(fb[:b]).all()
    assert not torch.isnan(wa[a:b]).any()


def toy_analysis(seed: int, n: int = 14, pl: int = 3, nh: int = 6, **params) -> Analysis:
    rng = np.random.default_rng(seed)
    p = random_pattern(rng, nh, n)
    stats = stats_from_pattern(p, pl)
    ent = torch.full((n,), NAN, dtype=torch.float64)
    ent[pl:] = torch.tensor(rng.random(n - pl))
    return Analysis(
        stats=stats,
        entropy=ent,
        tokens=[f"t{i}" for i in range(n)],
        ids=torch.arange(n),
        n_layers=1,
        n_heads=nh,
        # The paper's FAI (defined wherever the horizon holds a row) unless a test says.
        params=RhythmParams(**{"fai_min_rows": 1, **params}),
    )


def only(values: np.ndarray, allowed: list[float]) -> bool:
    """Every value is one of `allowed` (up to float32 rounding)."""
    return bool((np.abs(values[:, None] - np.array(allowed)[None]).min(1) < 1e-6).all())


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 1.0), st.floats(1.1, 3.0), st.floats(0.1, 1.0))
def test_gamma_takes_only_allowed_values(seed, alpha, g, q):
    a = toy_analysis(seed, alpha=alpha, top_q=q)
    prompt = slice(0, a.prompt_len)
    for s in ["local", "global", "random", "entropy", "bottom-local", "bottom-global"]:
        gam = a.gamma(s, seed=1, gamma_amp=g).double().numpy()
        assert only(gam, [1.0, g]), s
        assert (gam[prompt] == 1).all()
        n_amp = int((np.abs(gam - g) < 1e-6).sum())
        assert n_amp == max(1, round(q * len(a.response))) or s in ("local", "bottom-local")
    e = g - 1
    base = [0.0, e, (1 - alpha) * e, alpha * e]
    allowed = [1 + x + y for x in base[:3] for y in (0.0, alpha * e)]
    for s in ["coupled", "bottom-coupled"]:
        gam = a.gamma(s, gamma_amp=g).double().numpy()
        assert only(gam, allowed), (s, set(gam), allowed)
        assert (gam[prompt] == 1).all()
    assert (a.gamma("none").numpy() == 1).all()


def test_analysis_matches_reference_on_toy_heads():
    # fai_min_rows=4: the last four tokens, whose horizons hold 0-3 rows, have no FAI.
    kw = dict(window=4, fai_horizon=(1, 6), top_q=0.3, fai_min_rows=4)
    a = toy_analysis(3, n=16, pl=4, nh=8, **kw)
    p = random_pattern(np.random.default_rng(3), 8, 16)  # the same pattern
    ref = reference_from_patterns(
        {(0, h): p[h].double().numpy() for h in range(8)},
        4,
        n_layers=1,
        n_heads=8,
        entropy=a.entropy.numpy(),
        **kw,
    )
    assert np.isnan(ref["fai"][-4:]).all() and not np.isnan(ref["fai"][4:-4]).any()
    for f in ["head_span", "waad", "fai", "delta", "receiver_kurtosis"]:
        close(getattr(a, f).numpy(), ref[f], 1e-5)
    for f in ["local_heads", "global_heads", "preplan", "anchors", "dominated", "intro"]:
        assert getattr(a, f) == ref[f], f
    for s in ["local", "global", "coupled", "entropy", "bottom-coupled"]:
        np.testing.assert_array_equal(a.gamma(s).numpy(), ref["gamma_" + s.replace("-", "_")])


def test_with_params_equals_fresh_analysis():
    a = toy_analysis(5, n=30, pl=5)
    changes = dict(
        window=3, fai_horizon=(2, 9), top_q=0.25, k=2, alpha=0.3, head_quantiles=(0.2, 0.4)
    )
    b = a.with_params(**changes)
    c = toy_analysis(5, n=30, pl=5, **changes)
    for f in ["waad", "fai", "delta", "head_span"]:
        close(getattr(b, f).numpy(), getattr(c, f).numpy())
    for f in ["preplan", "anchors", "dominated", "intro", "local_heads", "global_heads"]:
        assert getattr(b, f) == getattr(c, f)
    assert b.params.window == 3 and a.params.window == 10


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(window=0), "window"),
        (dict(window=64), "max_window"),
        (dict(fai_horizon=(3, 1)), "H_hi"),
        (dict(fai_horizon=(-1, None)), "H_lo"),
        (dict(fai_horizon=(0, 35)), "column sums"),
        (dict(head_quantiles=(0.6, 0.6)), "sum to more than 1"),
        (dict(head_quantiles=(0.0, 0.3)), "head_quantiles"),
        (dict(top_q=0.0), "top_q"),
        (dict(top_q=1.5), "top_q"),
        (dict(k=0), "k must"),
        (dict(alpha=2.0), "alpha"),
        (dict(layers="all"), "no setting"),
    ],
)
def test_bad_post_processing_parameters(change, match):
    a = toy_analysis(0, n=40)
    with pytest.raises(wb.WorkbenchError, match=match):
        a.with_params(**change)


def test_bad_raw_inputs():
    with pytest.raises(wb.WorkbenchError, match="square"):
        wb.waad(torch.ones(2, 3, 4), 1)
    with pytest.raises(wb.WorkbenchError, match="suffix"):
        wb.waad(TOY, torch.tensor([True, False, True]))
    with pytest.raises(wb.WorkbenchError, match="empty"):
        wb.waad(TOY, 3)
    with pytest.raises(wb.WorkbenchError, match="strategy"):
        toy_analysis(0).gamma("bogus")


def test_frames():
    a = toy_analysis(1)
    df = a.to_frame()
    assert len(df) == a.n_pos and df["anchor"].sum() == len(a.anchors)
    hf = a.heads_frame()
    assert len(hf) == 6 and set(hf["cls"]) <= {"local", "global", "middle"}
    assert [tuple(r) for r in hf.loc[hf["cls"] == "local", ["layer", "head"]].values] == (
        a.local_heads
    )
    assert math.isclose(df["waad"].iloc[-1], float(a.waad[-1]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=40))
def test_the_fast_median_is_numpys(values):
    from workbench.attention.rhythm import _median

    x = np.asarray(values, dtype=np.float64)
    want = float(np.median(x)) if len(x) else float("nan")
    got = _median(x)
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_a_response_without_any_fai_because_of_fai_min_rows_is_told():
    """``fai_min_rows`` (default 10) left a short response, or every response under a
    narrow horizon, without FAI: no anchors, and the global-anchor and coupled credit
    amplified nothing, without a word. Now a warning names the setting and the fix."""
    import warnings

    from workbench.attention.metrics import FaiRowsWarning

    short = toy_analysis(2, n=9, pl=3)  # 6 response tokens, fai_min_rows=1: ranked
    assert short.anchors
    with pytest.warns(
        FaiRowsWarning, match=r"fai_min_rows=10 .*RhythmParams\(fai_min_rows=1\)"
    ) as w:
        b = short.with_params(fai_min_rows=10)
    assert w[0].filename == __file__, "the warning names the user's line, not the workbench's"
    assert torch.isnan(b.fai).all() and b.anchors == [] and (b.gamma("global") == 1).all()
    long = toy_analysis(2, n=40, pl=3)
    with pytest.warns(FaiRowsWarning, match=r"fai_horizon=\(3, 7\)"):
        long.with_params(fai_min_rows=10, fai_horizon=(3, 7))  # at most 5 rows per horizon
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        long.with_params(fai_min_rows=10)  # only the last tokens lose their FAI
        short.with_params(fai_horizon=(20, None))  # the paper's empty T(s): NaN by definition


@pytest.mark.parametrize(
    "pattern, match",
    [
        (TOY.long(), "floating-point"),  # an integer map is no attention
        (TOY.to(torch.complex64), "floating-point"),  # its imaginary part was dropped
        (torch.zeros(0, 3, 3), "no heads"),  # an AssertionError from the accumulator
        (torch.full((3, 3), NAN), "NaN or infinite"),  # NaN metrics without a word
        (-TOY, "negative"),
        (TOY * 5, "rows that sum to more than 1"),  # WAAD above W, FAI above 1
        (TOY.T.contiguous(), "above the diagonal"),  # a transposed map: a negative span
    ],
)
def test_raw_patterns_that_are_no_attention_are_refused(pattern, match):
    for f in (wb.head_span, wb.waad, wb.fai, wb.receiver_kurtosis):
        with pytest.raises(wb.WorkbenchError, match=match) as e:
            f(pattern, 1)
        assert e.value.fix


def test_rows_that_give_mass_to_a_learned_sink_are_accepted():
    """gpt-oss gives part of each row to a learned sink outside the keys, so its patterns'
    rows sum to less than 1; the metrics are the same sums over the keys there are."""
    sub = TOY * 0.8
    close(wb.head_span(sub, 1), 0.8 * wb.head_span(TOY, 1), 1e-6)
    close(wb.waad(sub, 1, window=10), 0.8 * wb.waad(TOY, 1, window=10), 1e-6)


@pytest.mark.parametrize(
    "response, match",
    [
        (None, "response must be"),  # raw TypeErrors
        ("1", "response must be"),
        ({}, "response must be"),
        (1.0, "response must be"),  # read as a one-entry mask
        (True, "response must be"),
        (range(-1, 3), "prompt_len=-1"),  # the last query row read as a prompt row
        ([0, 1, 2], "values other than"),  # positions read as a mask
        (torch.tensor([0.0, 0.5, 1.0]), "values other than"),
    ],
)
def test_bad_response_arguments_are_refused(response, match):
    for f in (wb.head_span, wb.waad, wb.fai, wb.receiver_kurtosis):
        with pytest.raises(wb.WorkbenchError, match=match) as e:
            f(TOY, response)
        assert e.value.fix


def test_integer_scalars_and_grad_patterns_are_accepted():
    # A NumPy or torch integer is a prompt length (it was read as a one-entry mask).
    close(wb.waad(TOY, np.int64(1)), wb.waad(TOY, 1))
    close(wb.fai(TOY, torch.tensor(1)), wb.fai(TOY, 1))
    # A pattern that requires grad failed with an in-place autograd error.
    close(wb.head_span(TOY.clone().requires_grad_(), 1), [0.6], 1e-6)


def test_huge_windows_and_horizons_clip_nothing():
    p = random_pattern(np.random.default_rng(0), 2, 30)
    # W >= N clips no distance: the same WAAD as W = N (it allocated W diagonals: a
    # MemoryError, or an overflow, for a huge W).
    for w in (31, 10**6, 10**30):
        close(wb.waad(p, 10, window=w), wb.waad(p, 10, window=30), 1e-9)
    # An H_hi beyond the sequence is the end of the response (2**63 - 1 wrapped around
    # in int64 and gave NaN everywhere; 10**20 overflowed).
    for hi in (2**63 - 1, 10**20):
        close(wb.fai(p, 10, horizon=(0, hi)), wb.fai(p, 10))
        close(wb.receiver_kurtosis(p, 10, horizon=(0, hi)), wb.receiver_kurtosis(p, 10))
    assert torch.isnan(wb.fai(p, 10, horizon=(10**20, None))).all()
    a = toy_analysis(0, n=20)
    close(a.with_params(fai_horizon=(0, 2**63 - 1)).fai, a.fai)
    with pytest.warns(wb.attention.metrics.FaiRowsWarning):
        assert torch.isnan(a.with_params(fai_min_rows=10**20).fai).all()


@pytest.mark.parametrize("waad", [None, "abc", torch.zeros(2, 3), torch.tensor(1.0), 5])
def test_delta_needs_one_curve(waad):
    # A [2, 3] input gave a [2, 3] result (differences across rows); others raw errors.
    with pytest.raises(wb.WorkbenchError, match=r"WAAD needs a \[pos\] curve") as e:
        wb.delta(waad)
    assert e.value.fix


@pytest.mark.parametrize(
    "values, q, match",
    [
        (torch.tensor([1.0, 2.0, 3.0]), 0, r"q must be in \(0, 1\]"),  # chose one anyway
        (torch.tensor([1.0, 2.0, 3.0]), 1.5, r"q must be in \(0, 1\]"),  # chose all
        (torch.tensor([1.0, 2.0, 3.0]), -0.5, r"q must be in \(0, 1\]"),
        (torch.tensor([1.0, 2.0, 3.0]), NAN, "q must be a finite number"),
        (torch.tensor([1.0, 2.0, 3.0]), True, "q must be a finite number"),
        (torch.zeros(2, 3), 0.5, r"\[pos\] curve"),  # IndexError
        (torch.tensor(3.0), 0.5, r"\[pos\] curve"),
        (None, 0.5, r"\[pos\] curve"),
    ],
)
def test_top_q_refuses_bad_arguments(values, q, match):
    with pytest.raises(wb.WorkbenchError, match=match) as e:
        top_q(values, q)
    assert e.value.fix


@pytest.mark.parametrize(
    "heads, span, quantiles, match",
    [
        ([(0, 0), (0, 1)], [1.0], (0.3, 0.3), "one number per head"),  # IndexError
        ([(0, 0), (0, 1)], [1.0, 2.0, 3.0], (0.3, 0.3), "one number per head"),  # ignored
        ([(0, 0), (0, 1), (0, 2)], [1.0, NAN, 0.5], (0.3, 0.3), "NaN or infinite"),
        ([(0, 0), (0, 1)], [1.0, 2.0], (0.9, 0.9), "sum to more than 1"),  # overlapped
        ([(0, 0), (0, 1)], [1.0, 2.0], (-0.5, 2.0), "head_quantiles must be in"),
        ([(0, 0), (0, 1)], [1.0, 2.0], 0.3, "must be a pair"),
        ("ab", [1.0, 2.0], (0.3, 0.3), "not a list of \\(layer, head\\) pairs"),
        ([(0, 0), (0, 0)], [1.0, 2.0], (0.3, 0.3), "twice"),
    ],
)
def test_classify_heads_refuses_bad_arguments(heads, span, quantiles, match):
    from workbench.attention import classify_heads

    with pytest.raises(wb.WorkbenchError, match=match) as e:
        classify_heads(heads, span, quantiles)
    assert e.value.fix


# One head, four tokens, prompt = token 0, response R = {1, 2, 3}.
TOY4 = np.array(
    [
        [1.0, 0.0, 0.0, 0.0],
        [0.6, 0.4, 0.0, 0.0],
        [0.2, 0.3, 0.5, 0.0],
        [0.1, 0.2, 0.3, 0.4],
    ]
)


def test_the_reference_itself_on_a_4x4_pattern_by_hand():
    """`reference_from_patterns` (the tests' oracle) against numbers worked out by hand
    from README "The method", then the engine against both."""

    def ref(**kw):
        kw = {"fai_min_rows": 1, "head_quantiles": (0.5, 0.5), **kw}
        return reference_from_patterns({(0, 0): TOY4}, 1, n_layers=1, n_heads=1, **kw)

    # Eq. 7: rows 1..3: 0.6*1 = 0.6; 0.2*2 + 0.3*1 = 0.7; 0.1*3 + 0.2*2 + 0.3*1 = 1.0.
    r = ref()
    close(r["head_span"], [[2.3 / 3]])
    # Eq. 9: W = 10 clips nothing; W = 1: 0.6, 0.2 + 0.3, 0.1 + 0.2 + 0.3; W = 2: 0.6, 0.7,
    # 0.1*2 + 0.2*2 + 0.3.
    close(r["waad"], [NAN, 0.6, 0.7, 1.0])
    close(ref(window=1)["waad"], [NAN, 0.6, 0.5, 0.6])
    close(ref(window=2)["waad"], [NAN, 0.6, 0.7, 0.9])
    # Eq. 10 (0, None): s=1: (0.4 + 0.3 + 0.2) / 3; s=2: (0.5 + 0.3) / 2; s=3: 0.4.
    close(r["fai"], [NAN, 0.3, 0.4, 0.4])
    close(ref(fai_horizon=(0, 100))["fai"], [NAN, 0.3, 0.4, 0.4])  # H_hi past the end
    close(ref(fai_horizon=(1, 1))["fai"], [NAN, 0.3, 0.3, NAN])  # T(3) is empty
    close(ref(fai_horizon=(1, None))["fai"], [NAN, 0.25, 0.3, NAN])
    close(ref(fai_horizon=(2, 5))["fai"], [NAN, 0.2, NAN, NAN])
    close(ref(fai_min_rows=2)["fai"], [NAN, 0.3, 0.4, NAN])  # T(3) holds one row
    # Sec. 5.2: Delta = |0.6 - 0.7|, |0.7 - 1.0|; top 40% of 2 -> 1: position 2. FAI ties
    # (0.4 at 2 and 3) go to the lower position. tau_waad = 0.7, tau_delta = 0.2: anchor 2
    # has WAAD 0.7 <= 0.7 but its look-back holds Delta 0.1 < 0.2: not dominated.
    close(r["delta"], [NAN, 0.1, 0.3, NAN])
    assert (r["preplan"], r["anchors"], r["dominated"], r["intro"]) == ([2], [2], [], [])
    assert (r["tau_waad"], r["tau_delta"]) == pytest.approx((0.7, 0.2))
    np.testing.assert_array_equal(r["gamma_coupled"], [1.0, 1.0, 1.5, 1.0])
    # sink="exclude": A' rows 1..3 = [0, 1], [0, 3/8, 5/8], [0, 2/9, 3/9, 4/9].
    x = ref(sink="exclude")
    close(x["head_span"], [[(0 + 3 / 8 + 7 / 9) / 3]])
    close(x["waad"], [NAN, 0.0, 3 / 8, 7 / 9])
    close(x["fai"], [NAN, (1 + 3 / 8 + 2 / 9) / 3, (5 / 8 + 3 / 9) / 2, 4 / 9])
    # Two heads, quantiles (0.5, 0.5): the identity (span 0) is local, TOY4 global.
    two = reference_from_patterns(
        {(0, 0): TOY4, (0, 1): np.eye(4)}, 1, n_layers=1, n_heads=2,
        head_quantiles=(0.5, 0.5), fai_min_rows=1,
    )  # fmt: skip
    assert (two["local_heads"], two["global_heads"]) == ([(0, 1)], [(0, 0)])
    close(two["waad"], [NAN, 0.0, 0.0, 0.0])
    close(two["fai"], [NAN, 0.3, 0.4, 0.4])
    # The engine on the same pattern.
    p = torch.tensor(TOY4)
    close(wb.head_span(p, 1), [2.3 / 3], 1e-6)
    close(wb.waad(p, 1, window=2), [NAN, 0.6, 0.7, 0.9], 1e-6)
    close(wb.fai(p, 1, horizon=(1, None)), [NAN, 0.25, 0.3, NAN], 1e-6)
    close(wb.fai(p, 1, min_rows=2), [NAN, 0.3, 0.4, NAN], 1e-6)
