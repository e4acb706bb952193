"""Bad input to `measure` and `run_ablations` on the shipped tiny reasoner: a
`WorkbenchError` that names the problem and the fix, never a raw error from inside torch
or Python, nor metrics that silently read NaN or a frame that is silently empty."""

from __future__ import annotations

import pytest

import workbench as wb
from workbench.ablation import Knockout, logits_of, measure, run_ablations


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
