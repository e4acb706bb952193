"""Ablation charts and panel on a toy model (random 2-layer Llama): they build and redraw."""

from __future__ import annotations

import altair as alt
import pytest

import workbench as wb
from workbench.ablation import (
    AblationPanel,
    effect_chart,
    kl_curve_chart,
    run_ablations,
    summarize,
)
from workbench.tasks import get_task


@pytest.fixture(scope="module")
def toy_model(toy_llama):
    return toy_llama


@pytest.fixture(scope="module")
def frame(toy_model):
    problems = get_task("countdown").generate(2, split="test", seed=0)
    traces = [wb.Trace.from_text(toy_model, p.prompt, p.solution) for p in problems]
    return run_ablations(
        toy_model, traces, families=["anchors", "preplan"], n_random=1, size=2, progress=False
    )


def test_effect_chart(frame):
    chart = effect_chart(summarize(frame, n_boot=100))
    spec = chart.to_dict()
    assert isinstance(chart, alt.FacetChart)
    assert spec["facet"]["column"]["field"] == "family"
    with pytest.raises(wb.WorkbenchError, match="no rows"):
        effect_chart(summarize(frame, n_boot=100), intervention="resid-zero")


def test_kl_curve_chart(frame):
    chart = kl_curve_chart(frame, trace=1, family="preplan")
    spec = chart.to_dict()
    assert len(spec["layer"]) == 2
    assert len(chart.layer[0].data) == 2  # one rule per ablated position (size=2)
    with pytest.raises(wb.WorkbenchError, match="no ablations"):
        kl_curve_chart(frame, trace=9)


def test_panel_runs_and_redraws(toy_model):
    panel = AblationPanel(toy_model, n_problems=2)
    panel.size.value = 2
    panel.n_random.value = 1
    panel.families.value = ("anchors",)
    out = panel.run()
    assert panel.last_error is None, panel.last_error
    assert (
        out is panel.frame and len(panel.frame) == 2 * 4
    )  # traces x (set, random, nearby, low-FAI)
    assert set(panel.charts) == {"effect", "kl"}
    assert panel.progress.value == 2
    assert "set - random" in panel.table.value
    panel.metric.value = "delta_logp"
    assert panel.last_error is None and panel.summary["metric"].iloc[0] == "delta_logp"
    panel.metric.value = "correct_ablated"  # no answer test was run: shown, not raised
    assert isinstance(panel.last_error, wb.WorkbenchError)
    panel.set_model(toy_model)
    assert panel.frame is None and panel.charts_box.children == ()
    assert AblationPanel().run() is None  # no model: an error in the status line
