"""The RL panel: launch a GRPO run in the background of the kernel and watch it live.

    app = wb.workbench()
    app.add_tab(wb.rl.RLPanel())

The run trains in a background thread, so the notebook stays usable; every logged step
updates the chart (reward per step, held-out accuracy at evaluations) and the status line.
Stop ends the run after the current step, with a checkpoint (`GRPORun.request_stop`);
`wb.rl.resume(run_dir)` continues it later.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import altair as alt
import ipywidgets as widgets
import pandas as pd

from ..attention.credit import STRATEGIES
from ..attention.params import CreditParams
from ..tasks import TASKS
from ..viz import style
from ..viz.panels import Panel, chart_widget
from .config import GRPOConfig
from .trainer import GRPORun, train

__all__ = ["RLPanel", "progress_chart"]


def progress_chart(rows: list[dict[str, Any]]) -> alt.LayerChart:
    """Reward per step and held-out accuracy (greedy and sampled) at evaluations, one run."""
    series = {
        "reward": "train reward",
        "eval_accuracy": "held-out accuracy (greedy)",
        "eval_sampled_accuracy": "held-out accuracy (sampled)",
    }
    data = pd.DataFrame(
        [
            {"step": r["step"], "value": r[key], "series": name}
            for key, name in series.items()
            for r in rows
            if key in r
        ],
        columns=["step", "value", "series"],
    )
    base = alt.Chart(data).encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("value:Q", title="reward / accuracy", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("series:N", title=None),
        tooltip=["series:N", "step:Q", alt.Tooltip("value:Q", format=".3f")],
    )
    return (base.mark_line() + base.mark_point(filled=True)).properties(width=420, height=220)


class RLPanel(Panel):
    """Configure a short GRPO run, start it in the background, watch it, stop it.

    Attributes:
        run: the current `GRPORun` (None before the first start).
        rows: the metric rows logged so far.
        chart: the live ``alt.JupyterChart``.
        thread: the background thread (None when idle).
    """

    title = "RL"

    def __init__(self, *, out: str | Path = "runs/panel", model: str = "tiny-reasoner"):
        super().__init__()
        d = getattr(style, "DESCRIPTION", {})
        self.out = Path(out)
        self.model_name = widgets.Text(value=model, description="model", style=d)
        self.task = widgets.Dropdown(
            options=list(TASKS), value="countdown", description="task", style=d
        )
        self.strategy = widgets.Dropdown(
            options=list(STRATEGIES), value="coupled", description="strategy", style=d
        )
        self.steps = widgets.IntSlider(value=20, min=1, max=500, description="steps", style=d)
        self.seed = widgets.IntText(value=0, description="seed", style=d)
        self.batch = widgets.IntSlider(
            value=16, min=4, max=128, step=4, description="completions/step", style=d
        )
        self.generations = widgets.IntSlider(
            value=4, min=2, max=16, description="group size G", style=d
        )
        self.eval_every = widgets.IntSlider(
            value=5, min=0, max=100, description="eval every", style=d
        )
        # The tiny reasoner needs a larger rate than TRL's 1e-6 to move in minutes, and a
        # warm-up (benchmarks/README.md, the RL experiment).
        self.learning_rate = widgets.FloatLogSlider(
            value=2e-4, base=10, min=-6, max=-2, readout_format=".0e", description="lr", style=d
        )
        self.warmup = widgets.IntSlider(value=5, min=0, max=100, description="warm-up", style=d)
        self.start_button = widgets.Button(description="Start", button_style="primary", icon="play")
        self.stop_button = widgets.Button(description="Stop", icon="stop", disabled=True)
        self.start_button.on_click(lambda _: self._guard(self.start))
        self.stop_button.on_click(lambda _: self.stop())
        self.progress = widgets.IntProgress(value=0, min=0, max=1)
        self.run: GRPORun | None = None
        self.rows: list[dict[str, Any]] = []
        self.thread: threading.Thread | None = None
        self.chart = chart_widget(progress_chart([]))
        self.children = [
            style.card(
                "GRPO run",
                style.row(self.model_name, self.task, self.strategy),
                style.row(self.steps, self.batch, self.generations),
                style.row(self.learning_rate, self.warmup, self.eval_every, self.seed),
                style.row(self.start_button, self.stop_button, self.progress, self.status),
            ),
            style.card("Live", self.chart),
        ]

    def config(self) -> GRPOConfig:
        """The settings the widgets describe (validated)."""
        return GRPOConfig(
            model=self.model_name.value,
            task=self.task.value,
            credit=CreditParams(strategy=self.strategy.value),
            max_steps=self.steps.value,
            seed=self.seed.value,
            per_device_train_batch_size=self.batch.value,
            num_generations=self.generations.value,
            learning_rate=self.learning_rate.value,
            warmup_steps=self.warmup.value,
            eval_every=self.eval_every.value,
            eval_size=32,
            save_every=max(1, self.eval_every.value or self.steps.value),
        )

    def _on_row(self, run: GRPORun, row: dict[str, Any]) -> None:
        self.run = run
        self.rows.append(row)
        self.progress.value = row["step"]
        self.chart.chart = progress_chart(self.rows)
        acc = [r["eval_accuracy"] for r in self.rows if "eval_accuracy" in r]
        self._say(
            f"step {row['step']}/{self.progress.max}"
            + (f", reward {row['reward']:.2f}" if "reward" in row else "")
            + (f", held-out accuracy {acc[-1]:.2f}" if acc else "")
        )

    def _train(self, cfg: GRPOConfig, run_dir: Path) -> None:
        try:
            run = train(cfg, out=run_dir, callbacks=[self._on_row], progress=False)
            self.run = run
            self._say(f"{run.status} at step {run.step}; run directory {run_dir}", "ok")
        except Exception as e:  # shown in the panel; a thread's exception would be lost
            self.last_error = e
            self._say(f"{type(e).__name__}: {e}", "error")
        finally:
            self.start_button.disabled = False
            self.stop_button.disabled = True

    def start(self) -> threading.Thread:
        """Start a new run in a background thread (returns the thread)."""
        if self.thread is not None and self.thread.is_alive():
            raise RuntimeError("a run is already going: stop it first")
        cfg = self.config()
        run_dir = self.out / f"{cfg.strategy}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.rows = []
        self.progress.max = cfg.max_steps
        self.progress.value = 0
        self.start_button.disabled = True
        self.stop_button.disabled = False
        self._say(f"starting {cfg.strategy} in {run_dir} ...")
        self.thread = threading.Thread(target=self._train, args=(cfg, run_dir), daemon=True)
        self.thread.start()
        return self.thread

    def stop(self) -> None:
        """Ask the run to stop after its current step (it checkpoints)."""
        if self.run is not None:
            self.run.request_stop()
            self._say("stopping after this step ...")
