"""What a panel shows after an error matches its widgets: refused settings hide the rhythm
charts (they stood beside the error as if drawn for them), a failed Run marks the previous
trace's charts as such (in the ablation panel too, its table and charts), the RL panel's
``last_error`` follows its run and its JupyterLab poller outlives a corrupt metrics line, the
rhythm panel's max-tokens slider stops at what the model can generate, and a hub name typed
in the model panel names the panel's own way to allow the hub."""

from __future__ import annotations

import asyncio
import re
import time
import warnings

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
    # Redrawn for another view or other heads, they are still the previous trace's (the
    # mark went with the first redraw).
    r.metric.value = "waad"
    r.picker.mode.value = "custom"
    r.picker.custom_layers.value = (0,)
    assert r.last_error is None and r.stale == "run failed"
    assert "still those of the previous trace" in r.summary.value
    r.picker.custom_layers.value = ()  # refused: hidden; valid again: back, still marked
    assert r.stale == "settings refused" and "No charts" in r.summary.value
    r.picker.custom_layers.value = (0, 1)
    assert r.stale == "run failed" and r.charts_box.layout.display is None
    assert "still those of the previous trace" in r.summary.value
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
    with warnings.catch_warnings():  # said once, in the status line, not again in the log
        warnings.simplefilter("error")
        r.run_button.click()
    assert r.last_error is None and r.analysis is not None
    assert "wb-status-warning" in r.status.value
    assert "2 token(s) of the response are the tokenizer&#x27;s unknown token" in r.status.value


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html).replace("&#x27;", "'")


@pytest.mark.slow
def test_a_failed_ablation_run_marks_the_previous_runs_table_and_charts(tiny, monkeypatch):
    """The previous table and charts stood beside the error of a refused or failed Run,
    unmarked, as if they were the new settings' results."""
    from workbench.ui import ablation

    p = panels.AblationPanel(tiny, n_problems=2)
    p.size.value, p.n_random.value, p.families.value = 2, 1, ("anchors",)
    frame = p.run()
    assert p.last_error is None and p.stale == "" and p.note.value == ""
    table, charts = p.table.value, p.charts_box.children
    assert p.results_box.layout.display is None and len(charts) == 2
    # Refused inside run_ablations, after the traces were built and analysed.
    p.intervention.value, p.size.value = "resid-zero", 32
    p.run_button.click()
    assert "size=32" in p.status.value and p.frame is frame
    assert p.stale == "run failed" and "wb-status-warning" in p.note.value
    note = _text(p.note.value)
    assert "still those of the previous Run" in note
    assert "knockout of anchors (size 2, all layers, 1 random seed), 2 countdown" in note
    assert p.table.value == table and p.charts_box.children == charts  # kept, on screen
    assert p.results_box.layout.display is None
    # Viewed by another trace, they are still the previous Run's.
    p.trace_index.value = 1
    assert p.last_error is None and p.stale == "run failed"
    assert "still those of the previous Run" in _text(p.note.value)
    p.families.value = ()  # refused before any forward pass: still marked
    p.run_button.click()
    assert "no target sets are selected" in p.status.value and p.stale == "run failed"

    # A view that cannot be drawn hides them, and they come back (still marked).
    def boom(*args, **kwargs):
        raise ValueError("cannot draw")

    monkeypatch.setattr(ablation, "kl_curve_chart", boom)
    p.trace_index.value = 0
    assert "cannot draw" in p.status.value and p.stale == "settings refused"
    assert p.results_box.layout.display == "none" and "No table or charts" in p.note.value
    monkeypatch.undo()
    p.trace_index.value = 1
    assert p.last_error is None and p.stale == "run failed"
    assert p.results_box.layout.display is None

    p.families.value, p.size.value = ("anchors",), 2
    p.run_button.click()
    assert p.last_error is None and p.stale == "" and p.note.value == ""
    assert p.frame is not frame and set(p.frame["intervention"]) == {"resid-zero"}
    p.set_model(tiny)
    assert p.stale == "" and p.note.value == "" and p.frame is None


@pytest.mark.slow
def test_the_max_tokens_slider_stops_at_what_the_model_can_generate(tiny):
    """It went to 1024 whatever the model's context (the tiny models hold 256 tokens)."""
    from workbench.trace.tokens import encode_prompt

    n_ctx = tiny.cfg.n_ctx
    r = panels.RhythmPanel(tiny, prompt=PROMPT)
    room = n_ctx - len(encode_prompt(tiny, PROMPT))
    s = r.max_new_tokens
    assert room - s.step < s.max <= room and (s.max - s.min) % s.step == 0
    s.value = s.max  # the top generates
    r.run_button.click()
    assert r.last_error is None and r.trace.response_len <= s.max
    # A longer prompt lowers it (and the value with it); a shorter one raises it again,
    # and the value back to the one chosen (it stayed at the lowered value).
    chosen = s.value = s.max - 2 * s.step
    r.prompt.value = PROMPT * 20
    assert s.max == s.value == s.min
    r.run_button.click()  # no room at all: still the error that names the context
    assert f"the model's context holds {n_ctx}" in r.last_error.problem
    r.prompt.value = PROMPT
    assert s.max == room - (room - s.min) % s.step and s.value == chosen
    s.value = s.min + s.step  # a value chosen under a short top is kept as chosen
    r.prompt.value = PROMPT * 20
    r.prompt.value = PROMPT
    assert s.value == s.min + s.step
    # Set when a model is loaded.
    later = panels.RhythmPanel(prompt=PROMPT)
    assert later.max_new_tokens.max == 1024
    later.set_model(tiny)
    assert later.max_new_tokens.max == s.max
    # An argument beyond it is refused, saying why (it was clamped without a word).
    with pytest.raises(WorkbenchError, match=f"context holds {n_ctx} tokens") as e:
        panels.RhythmPanel(tiny, prompt=PROMPT, max_new_tokens=512)
    assert f"from 8 to {s.max}" in e.value.fix
    # The default (96) is never refused: it comes down to the room a long prompt leaves.
    assert panels.RhythmPanel(tiny, prompt=PROMPT * 20).max_new_tokens.value == 8
    assert panels.RhythmPanel(tiny, prompt=PROMPT).max_new_tokens.value == 96


@pytest.mark.slow
def test_the_rl_poller_outlives_a_corrupt_metrics_line(tmp_path):
    """In JupyterLab (a running event loop) a metrics line that was not JSON raised in the
    poller: the polling stopped for good, and Start stayed disabled after the run ended."""
    panel = panels.RLPanel(out=tmp_path)
    panel.steps.value, panel.batch.value, panel.generations.value = 50, 8, 4
    panel.eval_every.value = 0

    async def drive() -> int:
        job = panel.start()
        end = time.monotonic() + 300
        while not panel.rows and time.monotonic() < end:
            await asyncio.sleep(0.05)
        assert panel.rows, job.tail()
        with (job.run_dir / "metrics.jsonl").open(
            "a"
        ) as f:  # one write: whole lines, as the trainer's
            f.write("{corrupt\n")
        n = len(panel.rows)
        end = time.monotonic() + 120
        while len(panel.rows) == n and time.monotonic() < end:
            await asyncio.sleep(0.05)
        read_on = len(panel.rows) - n
        panel.stop_button.click()
        end = time.monotonic() + 120
        while panel.start_button.disabled and time.monotonic() < end:
            await asyncio.sleep(0.05)
        return read_on

    read_on = asyncio.run(drive())
    job = panel.job
    assert not job.running and not panel.start_button.disabled and panel.stop_button.disabled
    assert read_on > 0  # rows logged after the corrupt line were still read
    lines = (job.run_dir / "metrics.jsonl").read_text().splitlines()
    assert job.skipped == [f"line {lines.index('{corrupt') + 1}: '{{corrupt'"]
    steps = [r["step"] for r in panel.rows]  # every row but the corrupt line, in order
    assert steps == list(range(steps[0], steps[0] + len(lines) - 1))
    status = _text(panel.status.value)
    assert "wb-status-error" in panel.status.value
    assert "are not metrics rows and are left out of the chart (line" in status
    assert job.status() in ("interrupted", "finished") and job.status() in status
    assert panel.last_error is panel.metrics_error and "{corrupt" in panel.last_error.problem
