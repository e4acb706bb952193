"""An analysis is used only with the model that computed it.

The tiny reasoner and the tiny searcher share a tokenizer and a shape (4 layers of 8
heads), so an analysis of one fits the other in every dimension: before the check, each
call below returned numbers built from the other model's anchors or head classes.
"""

from __future__ import annotations

import pytest

import workbench as wb
from workbench.models.bridge import check_same_model, model_name
from workbench.report import write_report
from workbench.viz import attention_map, attention_maps


@pytest.fixture(scope="module")
def searcher():
    return wb.load_model("tiny-searcher", device="cpu")


@pytest.fixture(scope="module")
def trace(tiny):
    return wb.Trace.from_text(tiny, "What is 3 + 4?", " 3 + 4 = 7. Answer: 7")


@pytest.fixture(scope="module")
def analysis(tiny, trace):
    return wb.analyze(tiny, trace)


def test_an_analysis_records_the_model_that_computed_it(tiny, searcher, trace, analysis):
    assert analysis.meta["model"] == model_name(tiny) == "tiny-reasoner"
    assert wb.analyze(searcher, trace).meta["model"] == "tiny-searcher"
    # the two fit each other: only the name tells them apart
    assert (searcher.cfg.n_layers, searcher.cfg.n_heads) == (analysis.n_layers, analysis.n_heads)
    assert analysis.select_heads([(1, 0), (2, 3)]).meta["model"] == "tiny-reasoner"


def _refused(call, what):
    with pytest.raises(
        wb.WorkbenchError, match=f"{what} was computed by 'tiny-reasoner', not by 'tiny-searcher'"
    ) as e:
        call()
    return e.value.fix


def test_ablations_refuse_another_models_analysis(searcher, trace, analysis):
    fix = _refused(
        lambda: wb.run_ablations(searcher, [trace], analyses=[analysis], progress=False),
        r"analyses\[0\]",
    )
    assert "analyze_many(model, traces)" in fix and "Knockout(positions)" in fix
    _refused(lambda: wb.perturbation_test(searcher, [trace], [analysis]), r"analyses\[0\]")


def test_charts_and_reports_refuse_another_models_analysis(searcher, trace, analysis, tmp_path):
    maps = attention_maps(searcher, trace)
    assert maps.model == "tiny-searcher"
    fix = _refused(lambda: attention_map(maps, "global", analysis=analysis), "the analysis")
    assert "'tiny-searcher'" in fix
    out = tmp_path / "report"
    _refused(lambda: write_report(searcher, trace, analysis, out), "the analysis")
    assert not out.exists()  # refused before anything was written


def test_the_same_model_and_unnamed_ones_pass(tiny, trace, analysis):
    attention_map(attention_maps(tiny, trace), "global", analysis=analysis)
    for recorded, current in [(None, "a"), ("a", None), ("a", "a"), (None, None)]:
        check_same_model(recorded, current, "x", "fix")
