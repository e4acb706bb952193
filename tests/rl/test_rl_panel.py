"""The RL panel trains in a background thread and draws the run live."""

from __future__ import annotations

import pytest

from workbench.rl import RLPanel, read_metrics

pytestmark = pytest.mark.slow


def _small(panel):
    panel.steps.value = 2
    panel.batch.value = 8
    panel.generations.value = 4
    panel.eval_every.value = 1


def test_start_runs_in_the_background_and_updates_the_chart(tmp_path):
    panel = RLPanel(out=tmp_path)
    _small(panel)
    panel.strategy.value = "global"
    panel.learning_rate.value, panel.warmup.value = 1e-4, 2
    cfg = panel.config()
    assert (cfg.learning_rate, cfg.warmup_steps, cfg.strategy) == (1e-4, 2, "global")
    thread = panel.start()
    assert panel.start_button.disabled and not panel.stop_button.disabled
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert panel.last_error is None, panel.last_error
    assert panel.run.status == "finished" and panel.run.step == 2
    assert [r["step"] for r in panel.rows] == [0, 1, 2]
    data = panel.chart.chart.data
    greedy, sampled = "held-out accuracy (greedy)", "held-out accuracy (sampled)"
    assert set(data.series) == {"train reward", greedy, sampled}
    assert len(data[data.series == greedy]) == 3 and len(data[data.series == sampled]) == 3
    assert panel.progress.value == 2 and not panel.start_button.disabled
    assert [r["step"] for r in read_metrics(panel.run.run_dir)] == [0, 1, 2]


def test_stop_ends_after_the_current_step_with_a_checkpoint(tmp_path):
    panel = RLPanel(out=tmp_path)
    _small(panel)
    panel.steps.value = 50
    original = panel._on_row

    def stop_at_first_step(run, row):
        original(run, row)
        if row["step"] == 1:
            panel.stop()

    panel._on_row = stop_at_first_step
    panel.start().join(timeout=300)
    assert panel.run.status == "stopped" and panel.run.step == 1
    assert (panel.run.run_dir / "checkpoints" / "step-000001").is_dir()


def test_bad_settings_show_in_the_status_line(tmp_path):
    panel = RLPanel(out=tmp_path)
    panel.batch.value = 6
    panel.generations.value = 4
    panel.start_button.click()
    assert "multiple of num_generations" in panel.status.value
    assert panel.thread is None
