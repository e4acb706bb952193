"""Ablation charts and panel on a toy model (random 2-layer Llama): they draw the numbers
they are given (the summary's estimates and intervals, each row's KL curve, the ablated
positions) and redraw from the last run when a view setting changes."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import pytest

import workbench as wb
from workbench.ablation import (
    effect_chart,
    kl_curve_chart,
    run_ablations,
    summarize,
)
from workbench.tasks import get_task
from workbench.ui import AblationPanel
from workbench.viz import style

FAMILY_COLOR = {"anchors": style.ANCHOR, "preplan": style.PREPLAN}


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


def _data(spec: dict, node: dict) -> list[dict]:
    """The rows of the named dataset `node` (a chart or layer of `spec`) draws."""
    return spec["datasets"][node["data"]["name"]]


def _effect_rows(chart: alt.FacetChart) -> list[dict]:
    spec = chart.to_dict()
    return _data(spec, spec)


def _check_effect_rows(rows: list[dict], summary: pd.DataFrame) -> None:
    """`rows` are `summary`'s rows, in order, with the family colour on the set and on
    the set's differences, grey on the controls."""
    assert [(r["family"], r["comparison"]) for r in rows] == list(
        zip(summary["family"], summary["comparison"], strict=True)
    )
    for r, (_, want) in zip(rows, summary.iterrows(), strict=True):
        for col in ("estimate", "lo", "hi"):
            assert r[col] == pytest.approx(want[col], rel=1e-12, abs=0), (col, r)
        assert r["n_traces"] == want["n_traces"] and r["metric"] == want["metric"]
        own = r["comparison"] == "set" or r["comparison"].startswith("set - ")
        assert r["color"] == (FAMILY_COLOR[r["family"]] if own else style.MUTED), r
        assert r["is_difference"] == (" - " in r["comparison"])


def test_effect_chart(frame):
    s = summarize(frame, n_boot=100)
    chart = effect_chart(s)
    spec = chart.to_dict()
    assert isinstance(chart, alt.FacetChart)
    assert spec["facet"]["column"]["field"] == "family"
    assert set(s["comparison"]) >= {"set", "random", "nearby", "low_fai", "set - random"}
    _check_effect_rows(_data(spec, spec), s)
    zero, bars, points = spec["spec"]["layer"]
    assert zero["encoding"]["x"] == {"datum": 0}
    assert (bars["encoding"]["x"]["field"], bars["encoding"]["x2"]["field"]) == ("lo", "hi")
    assert bars["encoding"]["x"]["title"] == "mean KL from the first ablated position on (nats)"
    assert points["encoding"]["x"]["field"] == "estimate"
    assert all(layer["encoding"]["y"]["field"] == "comparison" for layer in (bars, points))
    assert spec["title"] == "knockout: effect by target set (2 traces, 95% intervals)"

    # another metric: its numbers and its axis title
    d = summarize(frame, "delta_logp", n_boot=100)
    dspec = effect_chart(d).to_dict()
    _check_effect_rows(_data(dspec, dspec), d)
    assert dspec["spec"]["layer"][1]["encoding"]["x"]["title"].startswith("change in answer")

    # with two interventions, only the chosen one's rows (default: the first in the table)
    other = s.assign(
        intervention="resid-zero", estimate=s["estimate"] + 1, lo=s["lo"] + 1, hi=s["hi"] + 1
    )
    both = pd.concat([s, other], ignore_index=True)
    _check_effect_rows(_effect_rows(effect_chart(both)), s)
    _check_effect_rows(_effect_rows(effect_chart(both, intervention="resid-zero")), other)
    assert (
        effect_chart(both, intervention="resid-zero").to_dict()["title"].startswith("resid-zero:")
    )
    with pytest.raises(wb.WorkbenchError, match="no rows"):
        effect_chart(s, intervention="resid-zero")

    # one trace: estimates without intervals (NaN bounds), and the title says so
    one = summarize(frame[frame["trace"] == frame["trace"].min()], n_boot=100)
    assert one["estimate"].notna().all() and one[["lo", "hi"]].isna().all().all()
    title = effect_chart(one).to_dict()["title"]
    assert title.endswith("(1 trace, 95% intervals); no interval where a comparison has one trace")


def _check_kl_chart(chart: alt.LayerChart, frame: pd.DataFrame, trace: int, family: str):
    """The chart's rules are the set's ablated positions, its lines each row's KL curve
    (response rows only), the set in the family colour and its controls in grey."""
    spec = chart.to_dict()
    rules, lines = spec["layer"]
    sel = frame[
        (frame["trace"] == trace)
        & (frame["family"] == family)
        & (frame["intervention"] == "knockout")
    ]
    target = sel[sel["kind"] == "target"].iloc[0]
    assert [r["pos"] for r in _data(spec, rules)] == list(target["positions"])
    assert rules["encoding"]["x"]["field"] == "pos"
    assert rules["mark"]["color"] == FAMILY_COLOR[family]
    assert lines["encoding"]["x"]["field"] == "pos" and lines["encoding"]["y"]["field"] == "kl"
    scale = lines["encoding"]["color"]["scale"]
    assert scale["domain"] == list(sel["target"])
    assert scale["range"] == [FAMILY_COLOR[family]] + [style.MUTED] * (len(sel) - 1)
    drawn = _data(spec, lines)
    assert {(r["trace"], r["family"], r["intervention"]) for r in drawn} == {
        (trace, family, "knockout")
    }
    for _, row in sel.iterrows():
        kl = np.asarray(row["kl_curve"], dtype=float)
        defined = np.flatnonzero(~np.isnan(kl))
        assert len(defined) == len(kl) - row["prompt_len"]  # response rows only
        curve = [(r["pos"], r["kl"]) for r in drawn if r["target"] == row["target"]]
        assert [p for p, _ in curve] == defined.tolist(), row["target"]
        np.testing.assert_allclose([k for _, k in curve], kl[defined], rtol=1e-12, atol=0)
    assert spec["title"] == (
        f"trace {trace}: KL after knockout of {family} (dashed: ablated positions)"
    )


def test_kl_curve_chart(frame):
    chart = kl_curve_chart(frame, trace=1, family="preplan")
    assert len(chart.layer[0].data) == 2  # one rule per ablated position (size=2)
    _check_kl_chart(chart, frame, trace=1, family="preplan")
    _check_kl_chart(kl_curve_chart(frame, trace=0), frame, trace=0, family="anchors")
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
    # the charts draw the run's summary and the first trace's anchors
    pd.testing.assert_frame_equal(panel.summary, summarize(panel.frame, "kl_mean"))
    _check_effect_rows(_effect_rows(panel.charts["effect"].chart), panel.summary)
    _check_kl_chart(panel.charts["kl"].chart, panel.frame, trace=0, family="anchors")
    frame = panel.frame
    panel.trace_index.value = 1  # redrawn from the same run: no new ablations
    assert panel.last_error is None and panel.frame is frame
    _check_kl_chart(panel.charts["kl"].chart, frame, trace=1, family="anchors")
    panel.metric.value = "delta_logp"
    assert panel.last_error is None and panel.summary["metric"].iloc[0] == "delta_logp"
    _check_effect_rows(_effect_rows(panel.charts["effect"].chart), panel.summary)
    assert set(panel.summary["metric"]) == {"delta_logp"}
    panel.metric.value = "correct_ablated"  # no answer test was run: shown, not raised
    assert isinstance(panel.last_error, wb.WorkbenchError)
    # the dropdown names what the table still shows (it stayed on correct_ablated)
    assert panel.metric.value == "delta_logp" == panel.summary["metric"].iloc[0]
    panel.set_model(toy_model)
    assert panel.frame is None and panel.charts_box.children == ()
    # nothing of the last run is left: its full green bar, its error
    assert panel.progress.value == 0 and panel.progress.bar_style == ""
    assert panel.last_error is None
    assert AblationPanel().run() is None  # no model: an error in the status line


def test_a_failed_run_leaves_the_last_results_drawable(toy_model):
    panel = AblationPanel(toy_model, n_problems=2)
    panel.size.value, panel.n_random.value, panel.families.value = 2, 1, ("anchors",)
    frame = panel.run()
    assert panel.last_error is None, panel.last_error
    panel.intervention.value = "resid-zero"
    panel.size.value = 32  # more positions than these traces have: refused
    assert panel.progress.bar_style == "success"
    assert panel.run() is None and "size=32" in panel.status.value
    assert panel.progress.bar_style == "danger"  # not left looking like a run under way
    # the knockout run is still the one shown, and its other trace can be viewed
    panel.trace_index.value = 1
    assert panel.last_error is None, panel.last_error
    assert panel.frame is frame
    _check_kl_chart(panel.charts["kl"].chart, frame, trace=1, family="anchors")
    assert "size=32" not in panel.status.value  # the old error went with the redraw
    panel.families.value = ()  # no sets: refused, not silently "anchors"
    assert panel.run() is None and "no target sets are selected" in panel.status.value
    assert panel.frame is frame


def test_results_of_other_run_settings_are_marked_until_run(toy_model):
    """After a Run, changing a Run setting (the size, the sets, the task ...) left the
    table and charts on screen unmarked, as if made with the new settings."""
    panel = AblationPanel(toy_model, n_problems=2)
    panel.size.value, panel.n_random.value, panel.families.value = 2, 1, ("anchors",)
    panel.run()
    assert panel.last_error is None and panel.stale == "" and panel.note.value == ""
    panel.size.value = 3
    assert panel.stale == "settings changed" and "wb-status-warning" in panel.note.value
    assert "of the last Run (knockout of anchors (size 2" in panel.note.value
    assert "press Run" in panel.note.value
    panel.size.value = 2  # back to the settings of the Run shown
    assert panel.stale == "" and panel.note.value == ""
    panel.intervention.value = "resid-zero"
    assert panel.stale == "settings changed"
    panel.metric.value = "delta_logp"  # a view change redraws the same Run: still marked
    assert panel.last_error is None and panel.stale == "settings changed"
    panel.run_button.click()
    assert panel.last_error is None and panel.stale == "" and panel.note.value == ""
    assert set(panel.frame["intervention"]) == {"resid-zero"}
