"""Bad input to `measure` and `run_ablations` on the shipped tiny reasoner: a
`WorkbenchError` that names the problem and the fix, never a raw error from inside torch
or Python, nor metrics that silently read NaN or a frame that is silently empty."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.ablation import (
    Knockout,
    ResidAblation,
    logits_of,
    measure,
    resid_cache,
    resid_mean,
    run_ablations,
    summarize,
    target_sets,
)
from workbench.tasks import get_task


@pytest.fixture(scope="module")
def trace(tiny):
    return wb.Trace.from_text(tiny, "Countdown: 3 7 25 -> 72", "25*3=75\n75-3=72", chat=False)


@pytest.fixture(scope="module")
def clean(tiny, trace):
    return logits_of(tiny, trace.ids)


def test_clean_logits_as_an_array_measure_what_the_tensor_measures(tiny, trace, clean):
    """A NumPy array passed the shape check, then was a raw AttributeError ('numpy.ndarray'
    object has no attribute 'double') inside answer_logprob."""
    iv = Knockout([trace.prompt_len + 2])
    want = measure(tiny, trace, iv, clean_logits=clean)
    for given in (clean.numpy(), clean.double().tolist()):
        got = measure(tiny, trace, iv, clean_logits=given)
        for key in ("kl_mean", "kl_max", "logp_clean", "delta_logp"):
            assert got[key] == pytest.approx(want[key]), key


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_clean_logits_are_refused_not_measured_as_nan(tiny, trace, clean, value):
    """NaN clean logits returned kl_mean = nan and logp_clean = nan without a word."""
    bad = clean.clone()
    bad[trace.prompt_len + 5, 7] = value
    with pytest.raises(wb.WorkbenchError, match="clean_logits hold 1 NaN or infinite") as e:
        measure(tiny, trace, Knockout([trace.prompt_len + 2]), clean_logits=bad)
    assert "logits_of(model, trace.ids)" in e.value.fix


@pytest.mark.parametrize("given", ["logits", [[1.0, 2.0], [3.0]]])
def test_clean_logits_that_are_not_an_array_of_numbers_are_refused(tiny, trace, given):
    """A string or a ragged list was a raw TypeError or ValueError from torch.as_tensor."""
    with pytest.raises(wb.WorkbenchError, match="clean_logits must be an array of float logits"):
        measure(tiny, trace, Knockout([trace.prompt_len + 2]), clean_logits=given)


def test_a_trace_with_an_empty_response_is_refused_as_analyze_refuses_it(tiny, trace):
    """measure returned every metric as NaN (no response row to measure) without a word."""
    empty = wb.Trace(ids=trace.ids, tokens=trace.tokens, prompt_len=len(trace), text="")
    with pytest.raises(wb.WorkbenchError, match="empty response") as e:
        measure(tiny, empty, Knockout([5]))
    assert "at least one token" in e.value.fix


def test_no_target_families_is_refused_not_an_empty_frame(tiny, trace):
    """families=[] returned an empty (0, 23) frame, while interventions=[] is refused."""
    with pytest.raises(wb.WorkbenchError, match="families=\\[\\] names no target family") as e:
        run_ablations(tiny, [trace], families=[], progress=False)
    assert "families=['anchors']" in e.value.fix


@pytest.mark.parametrize(
    ("analyze_kwargs", "match"),
    [
        ([("window", 5)], "analyze_kwargs must be a dict"),
        ("window=5", "analyze_kwargs must be a dict"),
        ({5: 1}, "analyze_kwargs holds \\[5\\]"),
        ({"trace": None}, "analyze_kwargs holds \\['trace'\\]"),
    ],
)
def test_analyze_kwargs_that_are_no_settings_are_refused_before_any_work(
    tiny, trace, monkeypatch, analyze_kwargs, match
):
    """A list of pairs was a raw TypeError "argument after ** must be a mapping" (a key
    that is no name, or the trace again, one like it) at the first trace's analysis."""

    def no_work(*args, **kwargs):
        raise AssertionError("a forward pass ran before the settings were checked")

    monkeypatch.setattr("workbench.ablation.runner.analyze", no_work)
    monkeypatch.setattr("workbench.ablation.runner.logits_of", no_work)
    with pytest.raises(wb.WorkbenchError, match=match) as e:
        run_ablations(tiny, [trace], analyze_kwargs=analyze_kwargs, progress=False)
    assert "analyze_kwargs={'window': 5}" in e.value.fix


# -- nothing downstream to measure ----------------------------------------------------------


@pytest.fixture(scope="module")
def ends_at_marker(tiny):
    """A response that ends at its "Answer:" marker: an empty answer span, and (as the
    span excludes nothing) a preplan pool that reaches the second-to-last position."""
    return wb.Trace.from_text(tiny, "Countdown: 4 4 8 -> 8", "4+4=8\nAnswer:", chat=False)


@pytest.mark.parametrize(
    ("build", "back"),
    [
        (lambda p, d: Knockout(p), 1),
        (lambda p, d: Knockout(p), 2),
        (lambda p, d: Knockout([*p, p[0] + 1]), 2),
        (lambda p, d: ResidAblation(p), 1),
        (lambda p, d: ResidAblation(p, mode="mean", reference=torch.zeros(d)), 1),
    ],
)
def test_an_intervention_that_reaches_no_measured_row_is_refused(tiny, trace, build, back):
    """A knockout of the last (or second-to-last) position, or a residual ablation of the
    last, returned kl_mean, kl_after_last and kl_max as NaN and delta_logp as 0 without a
    word: row N - 2 is the last measured row, and none of them reaches it."""
    n = len(trace)
    iv = build([n - back], tiny.cfg.d_model)
    with pytest.raises(wb.WorkbenchError, match="can change no measured prediction") as e:
        measure(tiny, trace, iv)
    assert f"row {n - 2} is the last row" in e.value.problem
    assert f"up to {n - 2 if isinstance(iv, ResidAblation) else n - 3}" in e.value.fix


@pytest.mark.parametrize("kind", ["knockout", "resid"])
def test_a_set_ending_at_the_last_rows_reads_kl_after_last_as_nan_with_a_warning(
    tiny, trace, clean, kind
):
    """A set whose last position is one of the last two had kl_after_last = NaN silently
    (kl_mean and kl_max are still measured from its earlier positions)."""
    n, p = len(trace), trace.prompt_len + 2
    iv = Knockout([p, n - 1]) if kind == "knockout" else ResidAblation([p, n - 2])
    with pytest.warns(UserWarning, match="kl_after_last is NaN: the last ablated position"):
        got = measure(tiny, trace, iv, clean_logits=clean)
    assert np.isnan(got["kl_after_last"])
    assert np.isfinite(got["kl_mean"]) and np.isfinite(got["kl_max"])


@pytest.mark.filterwarnings("ignore:kl_after_last is NaN")
def test_a_continuation_with_nothing_after_the_cut_is_nan_not_zero(tiny, trace, clean):
    """With the last position in the set there is nothing to regenerate, and the ablated
    answer was scored as the clean one: delta_correct read 0 by construction."""
    task = get_task("countdown")
    problem = task.generate(1, split="test", seed=0)[0]
    iv = Knockout([trace.prompt_len + 2, len(trace) - 1])
    with pytest.warns(UserWarning, match="correct_ablated and delta_correct are NaN"):
        got = measure(
            tiny, trace, iv, clean_logits=clean, task=task, problem=problem, max_new_tokens=2
        )
    assert np.isnan(got["correct_ablated"]) and np.isnan(got["delta_correct"])
    assert got["correct_clean"] in (0.0, 1.0)


def test_an_empty_answer_span_warns_that_the_log_probs_are_nan(tiny, ends_at_marker):
    """An empty span (the response ends at "Answer:") gave NaN logp_* and delta_logp
    without a word."""
    iv = Knockout([ends_at_marker.prompt_len + 2])
    with pytest.warns(UserWarning, match="the answer span is empty"):
        got = measure(tiny, ends_at_marker, iv)
    assert got["answer_len"] == 0 and np.isnan(got["delta_logp"])


def test_run_ablations_keeps_the_last_two_positions_out_of_every_set(tiny, ends_at_marker):
    """The second-to-last position was in the preplan pool of a response that ends at its
    marker, and every random control drew it: kl_after_last was NaN in those rows, and
    summarize averaged the set against the seeds (and traces) left."""
    n = len(ends_at_marker)
    with pytest.warns(UserWarning, match=r"NaN in every row of traces \[0\]"):
        df = run_ablations(
            tiny, [ends_at_marker], families=["preplan"], controls=["random"], progress=False
        )
    assert len(df) == 4
    assert not any({n - 2, n - 1} & set(p) for p in df["positions"])
    assert df[["kl_mean", "kl_after_last", "kl_max"]].notna().all().all()


def test_summarize_says_which_nan_rows_it_leaves_out(tiny, trace, ends_at_marker):
    """summarize dropped NaN rows without a word, so "set - random" of delta_logp rested on
    fewer traces than asked for (only its n_traces showed it)."""
    with pytest.warns(UserWarning, match="answer span is empty"):
        df = run_ablations(
            tiny,
            [trace, ends_at_marker],
            families=["anchors"],
            controls=["random"],
            n_random=1,
            progress=False,
        )
    with pytest.warns(UserWarning, match=r"2 of 4 rows have no delta_logp \(NaN, in traces 1\)"):
        table = summarize(df, "delta_logp")
    assert set(table["n_traces"]) == {1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summarize(df, "kl_mean")  # every row has it: no warning


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"families": ["anchors", "anchors"]}, r"target families .* name \['anchors'\]"),
        ({"controls": ["random", "random"]}, r"controls .* name \['random'\]"),
        ({"interventions": ["knockout", "knockout"]}, r"interventions .* name \['knockout'\]"),
    ],
)
def test_a_name_given_twice_is_refused_not_ablated_twice(tiny, trace, kwargs, match):
    """families=['anchors', 'anchors'] (or a repeated intervention) gave every row twice,
    each counted in the summary's means."""
    with pytest.raises(wb.WorkbenchError, match=match) as e:
        run_ablations(tiny, [trace], progress=False, **kwargs)
    assert "name each once" in e.value.fix


def test_exclude_beyond_the_trace_is_refused_not_ignored(tiny, trace):
    """exclude=[1000] excluded nothing without a word (a negative position is refused)."""
    a = wb.analyze(tiny, trace)
    with pytest.raises(wb.WorkbenchError, match=r"exclude holds position\(s\) \[1000\]") as e:
        target_sets(a, exclude=[5, 1000])
    assert "positions of this trace" in e.value.fix


@pytest.mark.parametrize("mode", ["mean", "resample"])
def test_a_reference_of_another_model_is_refused(tiny, trace, mode):
    """The tiny searcher's activations fit the tiny reasoner's shapes, and were patched in
    without a word."""
    searcher = wb.load_model("tiny-searcher", device="cpu")
    other = wb.Trace.from_text(searcher, "Countdown: 2 9 10 -> 28", "10*2=20\n20+9=29", chat=False)
    ref = resid_mean(searcher, [other]) if mode == "mean" else resid_cache(searcher, other)
    iv = ResidAblation([trace.prompt_len + 2], mode=mode, reference=ref)
    with pytest.raises(wb.WorkbenchError, match="computed by 'tiny-searcher'") as e:
        measure(tiny, trace, iv)
    assert "this model" in e.value.fix
    # this model's own reference is fine
    mine = resid_mean(tiny, [trace]) if mode == "mean" else resid_cache(tiny, trace)
    measure(tiny, trace, ResidAblation([trace.prompt_len + 2], mode=mode, reference=mine))


@pytest.mark.filterwarnings("ignore:FAI is undefined")
def test_a_set_that_is_its_whole_pool_gets_no_random_control_and_a_warning(tiny):
    """A one-token preplan set of a six-token response (the answer fallback leaves one
    eligible position) drew the set itself as every "random" control, so "set - random"
    read 0 by construction."""
    tr = wb.Trace.from_text(tiny, "Countdown: 7 14 3 -> 4\n", "7-3=4\n", chat=False)
    a = wb.analyze(tiny, tr)
    assert a.preplan == [24, 28]  # the delta pool is 24..28
    sets = target_sets(a, families=["preplan"], controls=["random"], exclude=[25, 26, 27])
    assert [ts.kind for ts in sets] == ["target"]
    with pytest.warns(UserWarning, match=r"got no random control \(traces\[0\] preplan\)"):
        df = run_ablations(tiny, [tr], families=["preplan"], progress=False)
    assert "random" not in set(df["kind"])


def test_measure_refuses_a_task_it_would_not_score(tiny, trace, clean):
    """A task and problem with max_new_tokens=0 (the default) skipped the continuation test
    without a word: the result had no correct_* keys (run_ablations refuses the same)."""
    task = get_task("countdown")
    problem = task.generate(1, split="test", seed=0)[0]
    iv = Knockout([trace.prompt_len + 2])
    for kwargs in ({"task": task, "problem": problem}, {"task": task}, {"problem": problem}):
        with pytest.raises(wb.WorkbenchError, match="max_new_tokens=0 runs none") as e:
            measure(tiny, trace, iv, clean_logits=clean, **kwargs)
        assert "max_new_tokens > 0" in e.value.fix


def test_measure_checks_its_collectors_and_reads_a_span_once(tiny, trace, clean):
    """notes=[] was a raw AttributeError after the work; a span's positions given as a
    generator were consumed by the clean log-prob and then a raw TypeError (len())."""
    iv = Knockout([trace.prompt_len + 2])
    for name in ("notes", "clean_correct"):
        with pytest.raises(wb.WorkbenchError, match=f"{name} must be a dict") as e:
            measure(tiny, trace, iv, clean_logits=clean, **{name: []})
        assert f"{name}={{}}" in e.value.fix
    span = ([len(trace) - 3, len(trace) - 2], "answer")
    want = measure(tiny, trace, iv, clean_logits=clean, span=span)
    got = measure(tiny, trace, iv, clean_logits=clean, span=(iter(span[0]), "answer"))
    assert got["delta_logp"] == pytest.approx(want["delta_logp"])
    assert got["answer_len"] == 2


@pytest.mark.filterwarnings("ignore:FAI is undefined")
def test_traces_with_no_target_set_are_named_and_none_at_all_is_refused(tiny, trace):
    """A trace whose response is too short for any set gave no row without a word (its
    analysis, given or computed, was the only hint); with no other trace run_ablations
    returned an empty frame, and summarize an empty table."""
    short = wb.Trace.from_text(tiny, "Countdown: 3 7 25 -> 72", "25*3", chat=False)
    with pytest.raises(wb.WorkbenchError, match="no target set to ablate in any of the 1") as e:
        run_ablations(tiny, [short], progress=False)
    assert "longer traces" in e.value.fix
    with pytest.warns(UserWarning, match=r"1 of 2 trace\(s\) gave no row \(traces 0, by index\)"):
        df = run_ablations(tiny, [short, trace], families=["anchors"], n_random=1, progress=False)
    assert set(df["trace"]) == {1}
