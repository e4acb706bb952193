"""Panels driven headlessly: set widget values, check the new state, the charts and the
number of forward passes (counted with hooks on the models' embeddings, independent of
the panel's own bookkeeping)."""

from __future__ import annotations

import altair as alt
import ipywidgets as widgets
import pytest
import torch

import workbench as wb
from workbench import ui as panels
from workbench.errors import WorkbenchError
from workbench.models import sampler

PROMPT = "What is 17 * 23?"
RESPONSE = "17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.\nSo the answer is 391."


class _Counter:
    """Forward passes of the bridge and of the plain model behind it (the tiled metric path
    runs the plain model), counted at their embeddings."""

    def __init__(self, model):
        self.n = 0
        embeddings = [model.embed, sampler(model).get_input_embeddings()]
        self._handles = [m.register_forward_pre_hook(self._hit) for m in embeddings]

    def _hit(self, module, args):
        self.n += 1

    def close(self):
        for handle in self._handles:
            handle.remove()


@pytest.fixture
def passes(smol):
    c = _Counter(smol)
    yield c
    c.close()


def _data(jchart, layer_path, d=None):
    d = d or jchart.chart.to_dict()
    spec = d
    for k in layer_path:
        spec = spec[k]
    return d["datasets"][spec["data"]["name"]]


# -- fast: no model --------------------------------------------------------------------------


def test_head_picker_resolves_all_middle_and_custom_layers():
    p = panels.HeadPicker(30, 9)
    assert p.layers == list(range(30)) and len(p.heads) == 270
    assert p.custom_layers.disabled
    p.mode.value = "middle"
    assert p.layers == [10, 12, 15, 18, 20]
    assert p.heads[:2] == [(10, 0), (10, 1)] and len(p.heads) == 45
    p.mode.value = "custom"
    assert not p.custom_layers.disabled
    p.custom_layers.value = (3, 7)
    p.head_index.value = (0, 8)
    assert p.heads == [(3, 0), (3, 8), (7, 0), (7, 8)]
    assert "4 heads" in p.summary.value and "3, 7" in p.summary.value


def test_model_panel_loads_with_progress_and_notifies(tmp_path):
    loaded, seen = [], []

    class Fake:
        class cfg:
            n_layers, n_heads = 2, 3

    def loader(name):
        loaded.append(name)
        return Fake()

    mp = panels.ModelPanel(loader=loader)
    mp.on_load(seen.append)
    assert mp.progress.value == 0 and mp.model is None
    names = [v for _, v in mp.source.options]
    assert "smollm2-135m" in names and names[-1] == "__folder__"
    assert mp.folder.layout.display == "none"
    mp.source.value = "__folder__"
    assert mp.folder.layout.display == ""
    mp.folder.value = str(tmp_path)
    model = mp.load()
    assert loaded == [str(tmp_path)] and seen == [model] and mp.model is model
    assert mp.progress.value == 3 and mp.progress.bar_style == "success"
    assert "Fake: 2 layers x 3 heads" in mp.status.value  # unnamed: its type
    assert mp.last_error is None


def test_model_panel_shows_load_errors_instead_of_raising(tmp_path):
    mp = panels.ModelPanel()
    mp.source.value = "__folder__"
    mp.folder.value = str(tmp_path / "missing")
    assert mp.load() is None
    assert isinstance(mp.last_error, WorkbenchError)
    assert "wb-status-error" in mp.status.value and "Fix:" in mp.status.value
    assert mp.progress.bar_style == "danger" and not mp.load_button.disabled
    mp.folder.value = ""
    mp.load()
    assert "no folder given" in mp.status.value


def test_rhythm_panel_without_model_says_so():
    r = panels.RhythmPanel(prompt=PROMPT)
    assert r.run() is None
    assert "no model is loaded" in r.status.value
    assert isinstance(r.last_error, WorkbenchError)


# -- slow: the real model --------------------------------------------------------------------


@pytest.mark.slow
def test_rhythm_panel_updates_without_a_new_forward_pass(smol, passes, tmp_path):
    r = panels.RhythmPanel(smol, prompt=PROMPT, response=RESPONSE)
    a = r.run()
    assert r.last_error is None, r.last_error
    assert passes.n == 2 and r.forward_passes == 2  # analysis pass + attention-map pass
    assert a is r.analysis and len(a.heads) == 270
    assert set(r.charts) == {"curves", "text", "map", "heads"}
    assert all(isinstance(c, alt.JupyterChart) for c in r.charts.values())
    assert "analysed" in r.status.value

    # post-processing parameters: new analysis, new charts, no forward pass
    head_chart, map_chart = r.charts["heads"].chart, r.charts["map"].chart
    r.window.value = 5
    # the head classes did not change: the map and head map are not rebuilt
    assert r.charts["heads"].chart is head_chart and r.charts["map"].chart is map_chart
    assert r.analysis.params.window == 5 and r.analysis is not a
    d = r.charts["curves"].chart.to_dict()
    assert "W = 5" in d["title"]["subtitle"]
    marked = [row["pos"] for row in _data(r.charts["curves"], ["vconcat", 0, "layer", 2], d)]
    assert marked == r.analysis.preplan == a.with_params(window=5).preplan
    r.h_lo.value = 10
    r.h_hi.value = 100
    assert r.analysis.params.fai_horizon == (10, 100)
    assert r.analysis.anchors == a.with_params(window=5, fai_horizon=(10, 100)).anchors
    outlined = [row["pos"] for row in _data(r.charts["text"], ["layer", 3])]
    assert outlined == r.analysis.anchors
    r.q_local.value = 0.2
    r.q_global.value = 0.1
    assert len(r.analysis.local_heads) == 54 and len(r.analysis.global_heads) == 27
    heads_rows = _data(r.charts["heads"], ["layer", 1])
    assert len(heads_rows) == 54 + 27
    r.fai_min_rows.value = 1  # the control the short-response warning asks for
    assert r.analysis.params.fai_min_rows == 1
    assert (
        r.analysis.anchors
        == a.with_params(
            window=5, fai_horizon=(10, 100), head_quantiles=(0.2, 0.1), fai_min_rows=1
        ).anchors
    )
    r.fai_min_rows.value = 10
    r.top_q.value = 0.2
    assert r.analysis.params.top_q == 0.2
    defined = int((~torch.isnan(r.analysis.fai[r.analysis.prompt_len :])).sum())
    assert len(r.analysis.anchors) == max(1, round(0.2 * defined))
    assert r.last_error is None
    assert passes.n == 2

    # heads and layers: re-derived from the kept per-head statistics, still no pass
    r.picker.mode.value = "middle"
    assert {layer for layer, _ in r.analysis.heads} == {10, 12, 15, 18, 20}
    assert len(r.analysis.heads) == 45
    ref = wb.analyze(smol, r.trace, r.params, layers="middle")
    passes.n -= 1  # the reference pass above is ours, not the panel's
    assert r.analysis.local_heads == ref.local_heads
    assert r.analysis.anchors == ref.anchors and r.analysis.preplan == ref.preplan
    assert "local (" in r.picker.classes.value
    r.picker.mode.value = "custom"
    r.picker.custom_layers.value = (0, 1)
    r.picker.head_index.value = (0, 1, 2)
    assert r.analysis.heads == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]

    # display-only choices redraw from the same analysis
    before = r.analysis
    r.metric.value = "entropy"
    assert "entropy" in r.charts["text"].chart.to_dict()["title"]["subtitle"]
    r.entropy.value = True
    assert len(r.charts["curves"].chart.to_dict()["vconcat"]) == 3
    p = r.analysis.prompt_len
    r.shown.value = (5, 14)
    assert [row["pos"] for row in _data(r.charts["text"], ["layer", 0])] == list(
        range(p + 5, p + 15)
    )
    curve_rows = _data(r.charts["curves"], ["vconcat", 0, "layer", 1])
    assert [row["pos"] for row in curve_rows] == list(range(p + 5, p + 15))
    r.map_heads.value = (7, 2)
    assert "layer 7 head 2" in r.charts["map"].chart.to_dict()["title"]["text"]
    assert r.analysis is before
    assert r.last_error is None
    assert passes.n == 2 and r.forward_passes == 2

    # a bad choice is reported in the status line; the charts, drawn for other heads, are
    # hidden (not left beside the error as if they were its) until the choice is valid
    r.picker.head_index.value = ()
    assert isinstance(r.last_error, WorkbenchError)
    assert "no heads are selected" in r.status.value
    assert r.analysis is None and r.charts_box.layout.display == "none"
    r.picker.mode.value = "all"
    r.picker.head_index.value = (4,)
    assert r.last_error is None and len(r.analysis.heads) == 30
    assert r.charts_box.layout.display is None

    # a saved trace is analysed as saved (a new trace: two passes), the view range resets
    path = r.trace.save(tmp_path / "trace.json")
    r.trace_file.value = str(path)
    r.response.value = ""
    r.run()
    assert r.last_error is None and r.trace.ids.tolist() == a.ids.tolist()
    assert passes.n == 4 and r.shown.value == (0, len(a.response) - 1)


@pytest.mark.slow
def test_rhythm_panel_generates_when_no_response_is_pasted(smol):
    r = panels.RhythmPanel(smol, prompt="2 + 2 =", max_new_tokens=8, temperature=0.0)
    r.max_new_tokens.value = 8
    r.seed.value = 7  # not the default: the trace must record the panel's seed
    a = r.run()
    assert r.last_error is None, r.last_error
    assert 1 <= r.trace.response_len <= 8 and a.prompt_len == r.trace.prompt_len
    assert r.trace.meta["source"] == "generate" and r.trace.meta["seed"] == 7
    # 8 tokens hold no FAI at the default fai_min_rows=10: the status line says so, beside
    # the results (from a callback, a warning would reach only the log console)
    assert a.anchors == [] and "wb-status-warning" in r.status.value
    assert "analysed" in r.status.value and "fai_min_rows=10" in r.status.value


@pytest.mark.slow
def test_workbench_app_composes_panels_and_passes_models_to_new_tabs(smol):
    app = wb.workbench(smol, prompt=PROMPT, response=RESPONSE)
    assert isinstance(app, wb.Workbench) and app.model is smol
    assert app.tabs.titles == ("Rhythm",) and app.tabs.children[0] is app.rhythm
    assert app.model_panel.progress.value == 3

    class Extra(widgets.VBox):
        models: list

        def __init__(self):
            super().__init__()
            self.models = []

        def set_model(self, model):
            self.models.append(model)

    extra = Extra()
    assert app.add_tab("Ablation", extra) is extra
    assert app.tabs.titles == ("Rhythm", "Ablation") and extra.models == [smol]

    class Titled(panels.Panel):
        title = "RL"

    rl = app.add_tab(Titled())  # titled by the panel; Panel.set_model accepts the model
    assert app.tabs.titles == ("Rhythm", "Ablation", "RL") and app.tabs.children[2] is rl
    app.add_tab(widgets.HTML("notes"), "Notes")
    assert app.tabs.titles[-1] == "Notes"
    with pytest.raises(WorkbenchError, match="ipywidgets widget"):
        app.add_tab("Oops", object())
    # a model loaded in the model panel reaches every tab
    app.model_panel._loader = lambda name: smol
    app.model_panel.load()
    assert extra.models == [smol, smol] and app.rhythm.model is smol
    assert app.rhythm.analysis is None  # a new model clears the old charts


def test_fai_hi_dropdown_shows_a_label_for_every_choice():
    r = panels.RhythmPanel()
    assert r.h_hi.label == "end" and r.params.fai_horizon == (0, None)
    for label, value in r.h_hi.options:
        r.h_hi.value = value
        assert r.h_hi.label == label and label.strip()
        want = None if label == "end" else int(label)
        assert r.params.fai_horizon == (0, want)


def test_sink_dropdown_defaults_to_keep_and_offers_exclude():
    r = panels.RhythmPanel()
    assert r.sink.value == "keep" and r.sink.label.strip()
    assert [v for _, v in r.sink.options] == ["keep", "exclude"]
    r.sink.value = "exclude"  # no trace yet: nothing to analyse, no error
    assert r.last_error is None and r.analysis is None


def _analyze_takes_sink() -> bool:
    import inspect

    return "sink" in inspect.signature(wb.analyze).parameters


@pytest.mark.xfail(not _analyze_takes_sink(), reason="needs analyze(sink=)", strict=False)
def test_sink_choice_reanalyses_the_trace_with_it(smol, passes):
    r = panels.RhythmPanel(smol, prompt=PROMPT, response=RESPONSE)
    r.run()
    assert r.last_error is None, r.last_error
    assert r.analysis.meta.get("sink", "keep") == "keep"
    trace, before = r.trace, r.analysis
    r.sink.value = "exclude"  # a new forward pass over the same trace
    assert r.last_error is None, r.last_error
    assert r.trace is trace and r.analysis is not before
    assert r.analysis.meta.get("sink") == "exclude"
    assert passes.n == 4 and r.forward_passes == 4
    r.sink.value = "keep"
    assert r.analysis.meta.get("sink") == "keep" and passes.n == 6


# -- the toy model: bad input and stale state ------------------------------------------------


def test_out_of_range_settings_are_refused_not_clamped():
    # ipywidgets would have clamped these to the sliders' ends without a word
    with pytest.raises(WorkbenchError, match=r"max_new_tokens=2048 is outside .* 8\.\.1024"):
        panels.RhythmPanel(max_new_tokens=2048)
    with pytest.raises(WorkbenchError, match=r"temperature=2\.0 is outside"):
        wb.workbench(temperature=2.0)
    r = panels.RhythmPanel(max_new_tokens=1024, temperature=0.0, seed=3)  # the ends are fine
    assert (r.max_new_tokens.value, r.temperature.value, r.seed.value) == (1024, 0.0, 3)
    with pytest.raises(WorkbenchError, match="n_problems=200 is outside"):
        panels.AblationPanel(n_problems=200)
    with pytest.raises(WorkbenchError, match="task='countdwn' is not a choice") as e:
        panels.AblationPanel(task="countdwn")
    assert "countdown" in e.value.fix


def test_a_run_with_no_heads_selected_is_refused_before_any_forward_pass(toy_llama):
    r = panels.RhythmPanel(toy_llama, prompt=PROMPT, response=RESPONSE)
    first = r.run()
    assert r.last_error is None, r.last_error
    r.picker.head_index.value = ()
    r.response.value = "2 + 3 = 5."
    assert r.run() is None and "no heads are selected" in r.status.value
    # nothing was analysed; the first trace's charts, drawn for other heads, are hidden
    assert r.forward_passes == 2 and r.trace.text != "2 + 3 = 5." and first is not None
    assert r.analysis is None and r.charts_box.layout.display == "none"


def test_the_head_map_subtitle_follows_the_quantiles_when_the_classes_stay(toy_llama):
    r = panels.RhythmPanel(toy_llama, prompt=PROMPT, response=RESPONSE)
    r.run()
    classes = r.analysis.local_heads
    r.q_local.value = 0.25  # 8 heads: round(0.25 * 8) == round(0.3 * 8), the same local heads
    assert r.analysis.local_heads == classes
    subtitle = r.charts["heads"].chart.to_dict()["title"]["subtitle"]
    assert "bottom 25% by span" in subtitle


def test_a_saved_trace_path_may_start_with_a_tilde(toy_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    trace = wb.Trace.from_text(toy_llama, PROMPT, RESPONSE)
    trace.save(tmp_path / "trace.json")
    r = panels.RhythmPanel(toy_llama)
    r.trace_file.value = "~/trace.json"
    r.run()
    assert r.last_error is None, r.last_error
    assert r.trace.ids.tolist() == trace.ids.tolist()


def test_the_map_offers_only_heads_of_attention_layers_in_a_hybrid_model(hybrid_toy):
    model = hybrid_toy("jamba")  # Mamba layers 0 and 2, attention in layers 1 and 3
    r = panels.RhythmPanel(model, prompt=PROMPT, response=RESPONSE)
    single = [v for _, v in r.map_heads.options if isinstance(v, tuple)]
    assert sorted({layer for layer, _ in single}) == [1, 3]
    assert len(single) == 2 * model.cfg.n_heads
    r.run()
    r.map_heads.value = single[0]
    assert r.last_error is None, r.last_error
    assert "layer 1 head 0" in r.charts["map"].chart.to_dict()["title"]["text"]


def test_a_warning_goes_when_the_settings_that_caused_it_are_undone(toy_llama):
    """The FAI warning of a narrow horizon stayed in the status line after the horizon was
    set back (beside charts with anchors), and each new warning was added under the old."""
    r = panels.RhythmPanel(toy_llama, prompt=PROMPT, response=RESPONSE)
    r.run()
    assert r.last_error is None and "wb-status-warning" not in r.status.value
    r.h_lo.value, r.h_hi.value = 20, 25
    assert "undefined for every token" in r.status.value
    r.fai_min_rows.value = 15  # another warning: shown alone, not under the first
    assert r.status.value.count("undefined for every token") == 1
    r.h_lo.value, r.h_hi.value, r.fai_min_rows.value = 0, "end", 1
    assert r.analysis.anchors and "undefined" not in r.status.value
    assert "wb-status-warning" not in r.status.value


def test_charts_are_marked_once_the_input_that_made_their_trace_is_edited(toy_llama):
    """Editing the prompt or the response after a Run left the old trace's charts on
    screen, unmarked, as if they were of the new text."""
    r = panels.RhythmPanel(toy_llama, prompt=PROMPT, response=RESPONSE)
    r.run()
    assert r.stale == "" and "wb-status-warning" not in r.summary.value
    r.temperature.value = 0.2  # a pasted response: sampling settings make no trace
    assert r.stale == ""
    r.response.value = "2 + 3 = 5."
    assert r.stale == "input changed" and "the input above has changed" in r.summary.value
    assert r.charts_box.layout.display is None  # still shown, marked
    r.response.value = RESPONSE  # undone: the charts are of it again
    assert r.stale == "" and "has changed" not in r.summary.value
    r.prompt.value = "What is 2 + 3?"
    assert r.stale == "input changed"
    r.run()
    assert r.last_error is None and r.stale == "" and "has changed" not in r.summary.value
    r.set_trace(wb.Trace.from_text(toy_llama, PROMPT, RESPONSE))  # from code: same rule
    r.trace_file.value = "elsewhere.json"
    assert r.stale == "input changed"
