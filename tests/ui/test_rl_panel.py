"""The RL panel trains in its own process, draws the run live, and stops the right run."""

from __future__ import annotations

import json

import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.rl import read_metrics
from workbench.ui import RLPanel

pytestmark = pytest.mark.slow


def _small(panel, steps=2):
    panel.steps.value = steps
    panel.batch.value = 8
    panel.generations.value = 4
    panel.eval_every.value = 1


def _status(run_dir):
    return json.loads((run_dir / "status.json").read_text())["status"]


def test_a_run_trains_in_a_child_process_and_the_chart_follows_its_metrics(tmp_path):
    panel = RLPanel(out=tmp_path)
    _small(panel)
    panel.strategy.value = "global"
    panel.learning_rate.value, panel.warmup.value = 1e-4, 2
    cfg = panel.config()
    assert (cfg.learning_rate, cfg.warmup_steps, cfg.strategy) == (1e-4, 2, "global")
    rng_before, threads_before = torch.random.get_rng_state(), torch.get_num_threads()
    job = panel.start()
    assert job.running and job.process.pid != 0
    assert panel.start_button.disabled and not panel.stop_button.disabled
    assert panel.wait(timeout=400) == "finished", job.tail()
    # Nothing of the kernel's torch state was used or changed by the training.
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before
    assert [r["step"] for r in panel.rows] == [0, 1, 2]
    assert panel.rows == read_metrics(job.run_dir)
    data = panel.chart.chart.data
    greedy, sampled = "held-out accuracy (greedy)", "held-out accuracy (sampled)"
    assert set(data.series) == {"train reward", greedy, sampled}
    assert len(data[data.series == greedy]) == 3 and len(data[data.series == sampled]) == 3
    assert panel.progress.value == 2 and not panel.start_button.disabled
    assert panel.stop_button.disabled
    assert "finished at step 2" in panel.status.value
    saved = json.loads((job.run_dir / "config.json").read_text())
    assert saved["credit"]["strategy"] == "global" and saved["learning_rate"] == 1e-4


def test_stop_before_the_first_row_and_after_a_previous_run(tmp_path):
    panel = RLPanel(out=tmp_path)
    _small(panel, steps=1)
    first = panel.start()
    assert panel.wait(timeout=400) == "finished", first.tail()
    first_rows = read_metrics(first.run_dir)
    panel.stop()  # nothing is going: the finished run is left alone
    assert _status(first.run_dir) == "finished"

    _small(panel, steps=50)
    second = panel.start()
    panel.stop()  # at once: before the child has logged anything
    status = panel.wait(timeout=400)
    assert second.stop_requested and not second.running
    assert status in ("interrupted", "not started"), second.tail()
    if status == "interrupted":  # it got as far as a checkpoint: resumable
        assert (second.run_dir / "checkpoints" / "LATEST").is_file()
    else:  # stopped while starting: no run folder is left claiming to run
        assert not (second.run_dir / "status.json").exists()
    assert len(panel.rows) <= 1
    # The previous run is untouched.
    assert _status(first.run_dir) == "finished"
    assert read_metrics(first.run_dir) == first_rows


def test_stop_during_training_checkpoints_the_last_completed_step(tmp_path):
    panel = RLPanel(out=tmp_path)
    _small(panel, steps=50)
    job = panel.start()
    # Another model loaded meanwhile (the app's model panel): the field went on to name it
    # beside the old model's run. It names the running model until the run ends.
    panel.set_model(wb.load_model("tiny-searcher"))
    assert panel.model_name.value == job.config.model == "tiny-reasoner"
    assert "the next run trains it" in panel.status.value
    while panel.poll() and not any(r["step"] >= 1 for r in panel.rows):
        pass
    panel.stop()
    assert panel.wait(timeout=400) == "interrupted", job.tail()
    step = int((job.run_dir / "checkpoints" / "LATEST").read_text().strip().split("-")[1])
    assert step == read_metrics(job.run_dir)[-1]["step"] >= 1
    assert "interrupted at step" in panel.status.value
    assert panel.model_name.value == "tiny-searcher"


def test_bad_settings_show_in_the_status_line(tmp_path):
    panel = RLPanel(out=tmp_path)
    panel.batch.value = 6
    panel.generations.value = 4
    panel.start_button.click()
    assert "multiple of num_generations" in panel.status.value
    assert panel.job is None


def test_start_while_a_run_is_going_is_refused_with_the_fix(tmp_path):
    class Going:  # a job whose child is still running
        running = True
        run_dir = tmp_path / "going"

    panel = RLPanel(out=tmp_path)
    panel.job = going = Going()
    with pytest.raises(WorkbenchError, match="a run is already going") as e:
        panel.start()
    assert "Stop" in e.value.fix and panel.job is going
    panel.start_button.click()  # the button: shown in the status line, not raised
    assert "a run is already going" in panel.status.value and "Fix:" in panel.status.value
