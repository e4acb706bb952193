"""The panels' common parts: chart widgets draw offline in the workbench look, and
building panels changes no altair global."""

from __future__ import annotations

import altair as alt
import pandas as pd
import pytest
import torch

import workbench as wb
from workbench import ui as panels
from workbench.errors import WorkbenchError
from workbench.viz import style


def _tiny_chart() -> alt.Chart:
    df = pd.DataFrame({"x": [0, 1, 2], "y": [1.0, 3.0, 2.0]})
    return alt.Chart(df).mark_line().encode(x="x:Q", y="y:Q")


def test_building_panels_leaves_altair_globals_alone(altair_globals):
    panels.RhythmPanel(prompt="2 + 2 =")
    panels.HeadPicker(4, 2)
    panels.ModelPanel(loader=lambda name: None)
    assert (alt.theme.active, alt.renderers.active) == altair_globals


def test_chart_widgets_leave_altair_globals_alone(altair_globals):
    panels.chart_widget(_tiny_chart())
    assert (alt.theme.active, alt.renderers.active) == altair_globals


def test_chart_widgets_are_offline_svg_jupytercharts(altair_globals):
    w = panels.chart_widget(_tiny_chart())
    assert isinstance(w, alt.JupyterChart)
    assert w.embed_options["renderer"] == "svg"
    assert w.spec["mark"]["type"] == "line"
    assert w.spec["config"]["font"] == style.FONT  # in the workbench look
    # offline: the Vega bundle is inlined into the widget's module, no CDN import
    assert "cdn.jsdelivr" not in alt.JupyterChart._esm
    assert len(alt.JupyterChart._esm) > 100_000
    w.chart = _tiny_chart().mark_point()
    assert w.spec["mark"]["type"] == "point"
    assert w.spec["config"]["font"] == style.FONT


def test_an_old_error_does_not_stay_beside_a_later_success():
    """A callback that fails shows its error; the next one that succeeds clears it, even
    when it says nothing itself (a view change redrawing the last good results)."""
    p = panels.Panel()

    def fail():
        raise WorkbenchError("size=32 is too large", "pass a smaller size")

    p._guard(fail)
    assert "size=32" in p.status.value and p.last_error is not None
    assert p._guard(lambda: 7) == 7
    assert "size=32" not in p.status.value and p.last_error is None


def test_the_model_panel_shows_the_model_it_was_given(toy_llama):
    """`ModelPanel(model)` selects the given model's folder (it showed the first embedded
    name, so pressing Load reloaded another model); a model loaded by name selects it."""
    from workbench.models import model_name

    folder = model_name(toy_llama)
    assert folder is not None
    m = panels.ModelPanel(toy_llama, loader=lambda name: toy_llama)
    assert (m.target, m.folder.layout.display) == (folder, "")
    assert "ready" in m.status.value


def test_the_model_panel_given_a_model_built_in_code_offers_no_other_to_reload(toy_llama):
    """A bridge built in code has no name: the dropdown showed the first embedded model,
    and Load loaded that one in place of the model shown as ready."""
    from transformers import LlamaForCausalLM

    from workbench.models import bridge_model, model_name, sampler

    hf = LlamaForCausalLM(sampler(toy_llama).config)
    hf.config._name_or_path = ""  # made here, not read from a folder
    built = bridge_model(hf, toy_llama.tokenizer)
    assert model_name(built) is None
    loaded = []
    m = panels.ModelPanel(built, loader=loaded.append)
    assert (m.target, m.folder.layout.display) == ("", "")
    assert "ready" in m.status.value and "built in code" in m.status.value
    m.load()
    assert loaded == [] and "no folder given" in m.status.value and m.model is built


def test_panels_refuse_bad_settings_by_name():
    bad = [
        # a bare TraitError from ipywidgets, or None kept to fail at the first Run
        (lambda: panels.RhythmPanel(prompt=5), "prompt must be a str"),
        (lambda: panels.RhythmPanel(response=None), "response must be a str"),
        # a negative or huge seed was taken, to fail only when generating
        (lambda: panels.RhythmPanel(seed=-1), "seed must be at least 0"),
        (lambda: panels.RhythmPanel(seed=10**20), "too large for a seed"),
        # a model name: a raw AttributeError ('str' object has no attribute 'cfg')
        (lambda: panels.RhythmPanel("tiny-reasoner"), "model must be a loaded model"),
        (lambda: panels.ModelPanel("tiny-reasoner"), "model must be a loaded model"),
        (lambda: panels.AblationPanel("tiny-reasoner"), "model must be a loaded model"),
        (lambda: panels.RhythmPanel().set_model(5), "model must be a loaded model"),
        (lambda: panels.ModelPanel(loader="tiny-reasoner"), "loader must be a function"),
        # int() truncated 2.7 and took "4", True or -1 heads; None: a raw TypeError
        (lambda: panels.HeadPicker(2.7, 4), "n_layers must be an integer"),
        (lambda: panels.HeadPicker("4", 4), "n_layers must be an integer"),
        (lambda: panels.HeadPicker(True, 4), "n_layers must be an integer"),
        (lambda: panels.HeadPicker(None, 4), "n_layers must be an integer"),
        (lambda: panels.HeadPicker(4, -1), "n_heads must be at least 1"),
        (lambda: panels.HeadPicker(4, 2).configure(4, 2, [7]), "layer 7 is out of range"),
        (lambda: panels.HeadPicker(4, 2).configure(4, 2, "ab"), "not a layer selection"),
        # a raw TypeError from pathlib / a TraitError from ipywidgets
        (lambda: panels.RLPanel(out=None), "out must be a folder path"),
        (lambda: panels.RLPanel(model=5), "model must be a str"),
        (lambda: panels.RLPanel().wait("x"), "timeout must be a finite number"),
        # a TypeError naming RhythmPanel.__init__
        (lambda: wb.workbench(foo=1), r"the workbench has no setting\(s\) \['foo'\]"),
    ]
    for make, match in bad:
        with pytest.raises(WorkbenchError, match=match) as e:
            make()
        assert e.value.fix
    picker = panels.HeadPicker(4, 2)
    picker.configure(4, 2, [])  # a model without attention layers: nothing to pick
    assert picker.heads == []
    assert panels.RLPanel().wait(float("inf")) == "none"  # no job: nothing to wait for


def test_a_panel_is_added_once():
    app = wb.workbench()
    rl = panels.RLPanel()
    app.add_tab(rl)
    # a second tab of the same widget: every loaded model was handed to it twice
    with pytest.raises(WorkbenchError, match="already a tab"):
        app.add_tab("RL again", rl)
    assert app.tabs.titles == ("Rhythm", "RL")


def test_a_tab_title_without_a_panel_and_classes_of_a_non_analysis_are_named():
    """``add_tab("panel")`` said only "got NoneType" (the title was taken, the panel was
    missing); ``show_classes("x")`` failed with a raw AttributeError."""
    app = wb.workbench()
    with pytest.raises(WorkbenchError, match="got the title 'panel' but no panel") as e:
        app.add_tab("panel")
    assert "app.add_tab(AblationPanel(model), 'panel')" in e.value.fix
    assert app.tabs.titles == ("Rhythm",) and len(app.panels) == 1
    picker = panels.HeadPicker(4, 8)
    for bad in (
        "x",
        None,
        wb.Trace(ids=torch.tensor([1, 2]), tokens=["a", "b"], prompt_len=1, text="b"),
    ):
        with pytest.raises(WorkbenchError, match="show_classes needs an analysis") as e:
            picker.show_classes(bad)
        assert "wb.analyze(model, trace)" in e.value.fix
    assert picker.classes.value == ""


def test_a_loader_that_returns_nothing_is_named_and_no_panel_gets_none():
    """A loader without ``return`` made None the model and handed it to every panel; the
    status showed a raw AttributeError beside a green bar."""
    mp = panels.ModelPanel(loader=lambda name: None)
    handed = []
    mp.on_load(handed.append)
    mp.load_button.click()
    err = mp.last_error
    assert isinstance(err, WorkbenchError) and "gave a NoneType, not a loaded model" in err.problem
    assert "return a model" in err.fix and "not a loaded model" in mp.status.value
    assert handed == [] and mp.model is None and mp.progress.bar_style == "danger"


def test_an_interrupted_call_says_so_in_the_status_line():
    """An interrupt (KeyboardInterrupt) in a callback reached only the kernel's log: the
    status said "loading ..." for good, and a Run's old results stood unmarked."""

    def interrupted(*args):
        raise KeyboardInterrupt

    mp = panels.ModelPanel(loader=interrupted)
    with pytest.raises(KeyboardInterrupt):
        mp.load_button.click()
    assert "interrupted (KeyboardInterrupt)" in mp.status.value and "loading" not in mp.status.value
    assert "wb-status-error" in mp.status.value and isinstance(mp.last_error, KeyboardInterrupt)
    assert not mp.load_button.disabled and mp.progress.bar_style == "danger"

    p, shown = panels.Panel(), object()
    with pytest.raises(KeyboardInterrupt):
        p._guard(lambda: p._new_results(interrupted, lambda: shown))
    assert p.stale == "run failed" and "interrupted" in p.status.value


def test_a_tab_whose_panel_refuses_the_model_is_not_added(toy_llama):
    """It was added without the model, and adding it again was refused as a duplicate."""

    class Refuses(panels.Panel):
        refuse = True

        def set_model(self, model):
            if self.refuse:
                raise WorkbenchError("this panel takes no Llama", "load another model")
            self.model = model

    app = wb.workbench(toy_llama)
    panel = Refuses()
    with pytest.raises(WorkbenchError, match="takes no Llama"):
        app.add_tab(panel, "R")
    assert app.tabs.titles == ("Rhythm",) and len(app.panels) == 1
    panel.refuse = False
    assert app.add_tab(panel, "R") is panel and panel.model is toy_llama
    assert app.tabs.titles == ("Rhythm", "R")


def test_results_made_from_other_input_than_the_widgets_hold_are_marked_until_a_run():
    """One mechanism for every panel: `stale` names the panel's own `changed_label` while
    `_current_input` differs from what the results were made from, and a failed Run or
    refused settings outrank it."""

    class Sums(panels.Panel):
        changed_label = "numbers changed"

        def __init__(self):
            super().__init__()
            self.numbers, self.shown = [1, 2], None

        def _current_input(self):
            return tuple(self.numbers)

        def run(self, fail=False):
            def go():
                if fail:
                    raise ValueError("no")
                self.shown = sum(self.numbers)
                self._made(self._current_input())

            return self._new_results(go, lambda: self.shown)

    p = Sums()
    assert p.stale == "" and p._made_from is None  # nothing on screen: nothing to mark
    p.numbers.append(3)
    assert p.stale == ""
    p.run()
    assert p.shown == 6 and p.stale == ""
    p.numbers.append(4)
    assert p.stale == "numbers changed"
    p.numbers.pop()
    assert p.stale == ""  # back to what the results were made from
    p.numbers.append(5)
    with pytest.raises(ValueError):
        p.run(fail=True)
    assert p.stale == "run failed" and p.shown == 6
    p._refuse_results()
    assert p.stale == "settings refused"
    p._set_refused(False)
    p.run()
    assert p.shown == 11 and p.stale == ""
    p._reset_results()
    p.numbers.append(6)
    assert p.stale == ""  # a new model: no results, so nothing is stale
    assert panels.Panel().stale == "" and panels.Panel.changed_label == "input changed"
