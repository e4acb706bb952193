"""What a panel shows after an error matches its widgets: refused settings hide the rhythm
charts (they stood beside the error as if drawn for them), a failed Run marks the previous
trace's charts as such, the RL panel's ``last_error`` follows its run, and a hub name typed
in the model panel names the panel's own way to allow the hub."""

from __future__ import annotations

import pytest

from workbench import ui as panels
from workbench.errors import WorkbenchError

PROMPT = "Use 3 5 7 to make 22"
RESPONSE = "3*5=15\n15+7=22\nanswer: 3*5+7"


# -- fast: no model --------------------------------------------------------------------------


@pytest.fixture
def no_hub(monkeypatch):
    monkeypatch.delenv("WORKBENCH_ALLOW_HUB", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_a_hub_name_in_the_model_panel_names_the_panels_way_to_allow_it(no_hub):
    """The fix said ``load_model(..., allow_hub=True)``, which the panel never calls, and
    the panel had no way to allow the hub."""
    mp = panels.ModelPanel()
    assert mp.allow_hub.layout.display == "none"
    mp.source.value = "__folder__"
    assert mp.allow_hub.layout.display == "" and not mp.allow_hub.value
    mp.folder.value = "org/model"
    mp.load_button.click()
    err = mp.last_error
    assert isinstance(err, WorkbenchError) and "hub name" in err.problem
    assert "tick 'allow hub downloads' and press Load" in err.fix
    assert "wb.load_model('org/model', allow_hub=True)" in err.fix
    assert "os.environ['WORKBENCH_ALLOW_HUB'] = '1'" in err.fix
    assert "load_model(..., allow_hub=True)" not in err.fix
    assert "allow hub downloads" in mp.status.value
    # Ticked, the name is passed on with allow_hub=True: offline, the hub is unreachable.
    mp.allow_hub.value = True
    mp.load_button.click()
    assert "hub is not reachable" in mp.last_error.problem
    # A name that is neither: the fix names the panel's choices, not a keyword.
    mp.allow_hub.value = False
    mp.folder.value = "no-such-model"
    mp.load_button.click()
    assert "unknown model" in mp.last_error.problem
    assert "'allow hub downloads' ticked" in mp.last_error.fix
    assert "allow_hub=True" not in mp.last_error.fix


def test_a_loader_of_ones_own_shows_no_hub_box():
    mp = panels.ModelPanel(loader=lambda name: None)
    mp.source.value = "__folder__"
    assert mp.folder.layout.display == "" and mp.allow_hub.layout.display == "none"


# -- slow: the tiny model --------------------------------------------------------------------


@pytest.mark.slow
def test_refused_heads_hide_the_charts_until_they_are_valid(tiny):
    r = panels.RhythmPanel(tiny, prompt=PROMPT, response=RESPONSE)
    r.run()
    assert r.last_error is None and r.stale == ""
    assert r.charts_box.layout.display is None and "anchors" in r.summary.value
    r.picker.mode.value = "custom"
    r.picker.custom_layers.value = ()
    assert "no heads are selected" in r.status.value
    # The charts of 32 heads stayed on screen beside "no heads are selected".
    assert r.charts_box.layout.display == "none" and "No charts" in r.summary.value
    assert r.stale == "settings refused"
    assert r.analysis is None and r.picker.classes.value == ""
    assert "No charts" in r.summary.value and "anchors" not in r.summary.value
    r.metric.value = "waad"  # a view change draws nothing while the settings are refused
    assert r.charts_box.layout.display == "none" and r.last_error is None
    r.picker.custom_layers.value = (0, 1)
    assert r.last_error is None and r.stale == ""
    assert r.charts_box.layout.display is None
    assert len(r.analysis.heads) == 2 * tiny.cfg.n_heads
    assert f"of {2 * tiny.cfg.n_heads} heads" in r.summary.value
    assert "local" in r.picker.classes.value


@pytest.mark.slow
def test_a_failed_run_marks_the_previous_traces_charts(tiny):
    r = panels.RhythmPanel(tiny, prompt=PROMPT, response=RESPONSE)
    r.run()
    trace, analysis = r.trace, r.analysis
    r.prompt.value, r.response.value = "  ", ""
    r.run_button.click()
    assert "the prompt is empty" in r.status.value
    assert "still those of the previous trace" in r.summary.value
    assert "wb-status-warning" in r.summary.value
    assert r.stale == "run failed" and r.trace is trace and r.analysis is analysis
    r.prompt.value = PROMPT
    r.response.value = "3*5=15\n15+7=22"
    r.run_button.click()
    assert r.last_error is None and r.stale == "" and r.trace is not trace
    assert "previous trace" not in r.summary.value


@pytest.mark.slow
def test_the_rl_panels_last_error_follows_the_run(tmp_path):
    panel = panels.RLPanel(out=tmp_path)
    panel.steps.value, panel.batch.value, panel.generations.value = 50, 6, 4
    panel.start_button.click()
    assert "multiple of num_generations" in str(panel.last_error)
    panel.batch.value = 8
    job = panel.start()
    assert panel.last_error is None  # it kept the refused batch size's error
    panel.start_button.click()  # a run is going: refused
    assert "a run is already going" in panel.last_error.problem
    panel.stop_button.click()
    assert panel.last_error is None and "stopping" in panel.status.value
    assert panel.wait(timeout=400) in ("interrupted", "not started"), job.tail()
    assert panel.last_error is None and "wb-status-error" not in panel.status.value

    # A run whose process fails is an error, in last_error as in the status line.
    (tmp_path / "empty").mkdir()
    panel.model_name.value, panel.steps.value = str(tmp_path / "empty"), 1
    panel.start_button.click()
    assert panel.last_error is None
    assert panel.wait(timeout=400) == "failed"
    err = panel.last_error
    assert isinstance(err, WorkbenchError) and "the run failed" in err.problem
    assert str(panel.job.log) in err.fix and "wb-status-error" in panel.status.value


@pytest.mark.slow
def test_text_typed_into_the_panels_is_refused_or_flagged_in_the_status_line(tiny, tmp_path):
    """A model name the run could not load failed in the child seconds later (or ran
    with surrounding spaces); a pasted response without its prompt named an argument, not
    the box; typed characters the tokenizer cannot encode became its unknown token with a
    warning only in the log console."""
    rl = panels.RLPanel(out=tmp_path)
    for typed, problem in [
        ("no-such-model", "'no-such-model' is not an embedded model"),
        ("   ", "the model field is empty"),
    ]:
        rl.model_name.value = typed
        rl.start_button.click()
        assert problem in rl.last_error.problem and "wb-status-error" in rl.status.value
        assert "model field" in rl.last_error.fix
        assert rl.job is None
    rl.model_name.value = " tiny-reasoner "
    assert rl.config().model == "tiny-reasoner"

    r = panels.RhythmPanel(tiny, prompt="", response=RESPONSE)
    r.run_button.click()
    assert "type that prompt in the prompt box" in r.last_error.fix and r.trace is None
    r.prompt.value, r.response.value = PROMPT, "3\t5=15 \u00e9"
    with pytest.warns(UserWarning, match="unknown token"):  # the tokenizer's, passed on
        r.run_button.click()
    assert r.last_error is None and r.analysis is not None
    assert "wb-status-warning" in r.status.value
    assert "2 token(s) of the typed text are the unknown token" in r.status.value
