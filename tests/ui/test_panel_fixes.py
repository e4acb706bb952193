"""Panels on the shipped tiny models: `set_trace` of something that is not a trace, a failed
sink change, a model that the loader or a panel refuses, and the map of an excluded sink."""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench import ui as panels
from workbench.errors import WorkbenchError
from workbench.models import model_name
from workbench.viz.charts import text_view
from workbench.viz.maps import attention_maps

pytestmark = pytest.mark.slow

PROMPT = "Use 3 5 7 to make 22"
RESPONSE = "3*5=15\n15+7=22\nanswer: 3*5+7"


@pytest.fixture
def panel(tiny):
    r = panels.RhythmPanel(tiny, prompt=PROMPT, response=RESPONSE)
    r.run()
    assert r.last_error is None and r.analysis is not None
    return r


@pytest.mark.parametrize("what", ["analysis", None])
def test_set_trace_of_something_else_names_the_fix(panel, what):
    trace, shown = panel.trace, panel.analysis
    arg = panel.analysis if what == "analysis" else None
    panel.set_trace(arg)
    err = panel.last_error
    assert isinstance(err, WorkbenchError), repr(err)
    assert "wb.Trace" in err.problem
    if what == "analysis":
        assert "the trace the analysis came from" in err.fix
    assert panel.trace is trace and panel.analysis is shown


def test_a_failed_sink_change_puts_the_dropdown_back(panel):
    passes = panel.forward_passes
    panel.picker.mode.value = "custom"
    panel.picker.custom_layers.value = ()
    assert isinstance(panel.last_error, WorkbenchError)
    panel.sink.value = "exclude"
    assert isinstance(panel.last_error, WorkbenchError)
    assert "no heads" in panel.last_error.problem  # the sink change's error, still shown
    assert panel.sink.value == "keep" == panel.base.meta["sink"]
    assert panel.forward_passes == passes  # putting it back did not analyse again
    panel.picker.custom_layers.value = (0, 1, 2, 3)
    assert panel.last_error is None
    assert panel.sink.value == panel.analysis.meta["sink"] == "keep"


def test_the_panel_map_of_an_excluded_sink_is_recorded_without_it(tiny, panel):
    panel.sink.value = "exclude"
    assert panel.last_error is None and panel.analysis.meta["sink"] == "exclude"
    want = attention_maps(tiny, panel.trace, sink="exclude")
    assert panel.maps.sink == "exclude"
    torch.testing.assert_close(panel.maps.maps, want.maps)
    d = panel.charts["map"].chart.to_dict()
    assert "of a row" not in d["title"]["subtitle"][-1]
    assert "excluded" in d["title"]["subtitle"][-1]


def test_a_sink_change_keeps_the_tokens_shown(panel):
    """Changing the sink analyses the same trace again; it reset the user's crop to the
    whole response."""
    panel.shown.value = (2, 5)
    panel.sink.value = "exclude"
    assert panel.last_error is None and panel.analysis.meta["sink"] == "exclude"
    assert panel.shown.value == (2, 5)
    p = panel.trace.prompt_len
    want = text_view(panel.analysis, panel.metric.value, positions=range(p + 2, p + 6))
    shown = {k: v for k, v in panel.charts["text"].chart.to_dict().items() if k != "config"}
    assert shown == {k: v for k, v in want.to_dict().items() if k != "config"}  # (the theme)


def test_a_loader_result_that_is_no_model_changes_nothing(tiny):
    app = wb.workbench(tiny, loader=lambda name: {"name": name}, prompt=PROMPT, response=RESPONSE)
    app.rhythm.run()
    trace = app.rhythm.trace
    app.model_panel.load()
    err = app.model_panel.last_error
    assert isinstance(err, WorkbenchError) and "not a loaded model" in err.problem
    assert app.model is tiny and app.rhythm.model is tiny and app.rhythm.trace is trace


class _Refuses(panels.Panel):
    title = "Refuses"
    armed = False

    def set_model(self, model):
        if self.armed and model_name(model) == "tiny-searcher":
            raise RuntimeError("this panel takes no searcher")
        self.model = model


class _Takes(panels.Panel):
    title = "Takes"
    model = None

    def set_model(self, model):
        self.model = model


def test_a_model_a_panel_refuses_leaves_the_previous_one_everywhere(tiny):
    app = wb.workbench(tiny, loader=wb.load_model)
    refuses, takes = _Refuses(), _Takes()
    app.add_tab(refuses)
    app.add_tab(takes)
    refuses.armed = True
    app.model_panel.source.value = "tiny-searcher"
    app.model_panel.load()
    err = app.model_panel.last_error
    assert isinstance(err, WorkbenchError) and "takes no searcher" in err.problem
    assert "tiny-reasoner" in err.fix
    assert "takes no searcher" in app.model_panel.status.value
    assert app.model is tiny
    assert app.rhythm.model is tiny and refuses.model is tiny and takes.model is tiny


def test_a_run_without_answers_shows_its_results_under_kl(tiny):
    """With the metric on correct_ablated, a Run with 'answer test' 0 worked but was
    reported as failed, under the previous run's table."""
    abl = panels.AblationPanel(tiny, n_problems=2)
    abl.max_new_tokens.value = 8
    abl.run()
    abl.metric.value = "correct_ablated"
    abl.intervention.value, abl.max_new_tokens.value = "resid-zero", 0
    abl.run()
    assert abl.last_error is None and abl.metric.value == "kl_mean"
    assert set(abl.summary["intervention"]) == {"resid-zero"}
    assert "showing kl_mean" in abl.status.value


def test_the_status_names_the_source_and_comes_back_after_an_error(tiny, tmp_path):
    r = panels.RhythmPanel(tiny, prompt=PROMPT, response=RESPONSE)
    r.run()
    assert "(from the pasted response)" in r.status.value
    # A saved trace wins over the pasted response: the status says it was the file.
    wb.Trace.from_text(tiny, PROMPT, "3*5=15").save(tmp_path / "t.json")
    r.trace_file.value = str(tmp_path / "t.json")
    r.run()
    assert f"(from the trace file {tmp_path / 't.json'})" in r.status.value
    shown = r.status.value
    r.picker.mode.value = "custom"
    r.picker.custom_layers.value = ()
    assert "no heads" in r.status.value
    r.picker.custom_layers.value = (0, 1)
    assert r.last_error is None and r.status.value == shown  # it went blank


def test_the_rl_tab_trains_the_model_the_model_panel_loaded(tiny, tmp_path):
    app = wb.workbench(tiny)
    rl = app.add_tab(panels.RLPanel(out=tmp_path))
    app.model_panel.source.value = "tiny-searcher"
    app.model_panel.load()
    assert rl.config().model == "tiny-searcher" == model_name(app.model)


def test_an_empty_live_chart_has_its_series_and_a_drawable_size():
    """Before the first row the legend's empty domain sized the SVG 1.8e308 (console
    errors in the browser, no axis)."""
    import vl_convert as vlc

    from workbench.viz.style import themed
    from workbench.viz.training import SERIES, progress_chart

    spec = themed(progress_chart([])).to_dict()
    assert spec["layer"][0]["encoding"]["color"]["scale"]["domain"] == list(SERIES.values())
    assert "e+308" not in vlc.vegalite_to_svg(spec)
