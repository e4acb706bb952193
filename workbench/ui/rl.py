"""The RL panel: launch a GRPO run in its own process and watch it live.

    app = wb.workbench()
    app.add_tab(wb.ui.RLPanel())

Each Start launches ``python -m workbench rl --config FILE --out DIR`` as a child process
(a `RunJob`), so training never shares the kernel's threads, torch RNG or thread count, and
the notebook stays usable. The panel reads the run's ``metrics.jsonl`` as it grows: in
JupyterLab every half second on the kernel's own event loop (widgets are only touched there),
elsewhere when `RLPanel.poll` or `RLPanel.wait` is called.

Stop sends the run's process SIGINT, at any moment: the trainer finishes the optimiser step
it is in, checkpoints, and marks the run ``"interrupted"``; `wb.rl.resume(run_dir)`
continues it. A kernel interrupt reaches the child the same way (same process group).
Stop acts on the run that is going, never on a finished one.

``last_error`` follows the run: a Start that is refused sets it (a refusal while a run is
going stays under that run's progress in the status line); a Start that launches a run, a
Stop that stops one and the end of a run clear it; a run whose process fails sets it to a
`WorkbenchError` quoting the end of the run's log.

Reading the metrics never stops the polling: a line of ``metrics.jsonl`` that is not a
metrics row (a corrupt line in the middle of the file) is skipped and named in the status
line (``metrics_error``, also ``last_error`` while nothing else is), and the run's later
rows are still read and drawn; any other error while polling is shown in the status line,
and the polling goes on while the run's process runs. When it has ended, Start is enabled
again, whatever happened while reading (it stayed disabled once an error had stopped the
polling in JupyterLab).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, no_type_check

import ipywidgets as widgets

from .. import _validate
from .._io import as_path
from ..attention.credit import STRATEGIES
from ..attention.params import CreditParams
from ..errors import WorkbenchError
from ..rl.config import GRPOConfig
from ..tasks import TASKS
from ..viz.training import progress_chart
from . import layout
from .panel import Panel, chart_widget, check_text, error_text

__all__ = ["RLPanel", "RunJob"]

#: Seconds between two reads of a running job's metrics in JupyterLab.
POLL_SECONDS = 0.5


def _sigint_default() -> None:
    # A kernel started without job control (nohup, CI, some launchers) ignores SIGINT, and
    # children inherit that: Stop would then be ignored. The child gets the default
    # disposition, so Python turns SIGINT into KeyboardInterrupt (the trainer's clean stop).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class RunJob:
    """One GRPO run in a child process, and what has been read of its metrics so far.

    Args:
        config: the run's settings.
        run_dir: the run directory (must not hold a run yet).
        log: file for the child's stdout and stderr.
    """

    def __init__(self, config: GRPOConfig, run_dir: Path, log: Path):
        self.config, self.run_dir, self.log = config, Path(run_dir), Path(log)
        self.settings = self.log.with_suffix(".config.json")
        self.settings.write_text(json.dumps(config.to_dict(), indent=1))
        self._offset = 0
        self._lines = 0  # lines of metrics.jsonl read so far
        #: ``"line N: 'text'"`` for each line read that was not a metrics row (skipped).
        self.skipped: list[str] = []
        self.stop_requested = False
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workbench", "rl", "--config", str(self.settings),
                 "--out", str(self.run_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_sigint_default,
                env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")},
            )  # fmt: skip

    @property
    def running(self) -> bool:
        """The child process has not exited."""
        return self.process.poll() is None

    @property
    def metrics(self) -> Path:
        """The run's ``metrics.jsonl``."""
        return self.run_dir / "metrics.jsonl"

    def new_rows(self) -> list[dict[str, Any]]:
        """Metric rows logged since the last call (complete lines only).

        A line that is not a metrics row (not JSON, not an object with an integer step,
        a value that is not a number, as `wb.rl.read_metrics` checks) is skipped and
        named in `skipped`: it raised here, which stopped the panel's polling."""
        from ..rl.checkpoint import metrics_row

        path = self.metrics
        if not path.is_file():
            return []
        with path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._offset += end
        rows: list[dict[str, Any]] = []
        for raw in data[:end].split(b"\n")[:-1]:
            self._lines += 1
            line = raw.decode(errors="replace")
            if not line.strip():
                continue
            try:
                rows.append(metrics_row(line))
            except ValueError:
                self.skipped.append(f"line {self._lines}: {line[:80]!r}")
        return rows

    def stop(self) -> None:
        """Ask the child to stop (SIGINT): it checkpoints after the current step."""
        if self.running:
            self.stop_requested = True
            self.process.send_signal(signal.SIGINT)

    def status(self) -> str:
        """``"running"``, the run's final status (``"finished"``, ``"interrupted"``...), or
        ``"not started"`` / ``"failed"`` when the child ended before writing one."""
        if self.running:
            return "running"
        path = self.run_dir / "status.json"
        if path.is_file():
            status = json.loads(path.read_text()).get("status", "failed")
            if status != "running":
                return status
        return "not started" if self.stop_requested else "failed"

    def tail(self, n: int = 2000) -> str:
        """The last `n` characters of the child's output."""
        return self.log.read_text(errors="replace")[-n:] if self.log.is_file() else ""


class RLPanel(Panel):
    """Configure a short GRPO run, start it in its own process, watch it, stop it.

    Attributes:
        job: the current `RunJob` (None before the first start).
        rows: the metric rows of the current job read so far.
        chart: the live ``alt.JupyterChart``.
        last_error: the error the panel reports now (see the module docstring), or None.
        metrics_error: what went wrong reading the current job's metrics (skipped lines,
            or the last error while reading or drawing them), or None; shown in the status
            line to the run's end.
    """

    title = "RL"

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def __init__(self, *, out: str | Path = "runs/panel", model: str = "tiny-reasoner"):
        out = as_path(out, "RLPanel's out", "folder", "runs/panel")
        check_text("model", model)
        super().__init__()
        d = layout.DESCRIPTION
        self.out = out
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
        self.stop_button.on_click(lambda _: self._guard(self.stop))
        self.progress = widgets.IntProgress(value=0, min=0, max=1)
        self.job: RunJob | None = None
        self.rows: list[dict[str, Any]] = []
        self.metrics_error: WorkbenchError | None = None
        self.chart = chart_widget(progress_chart([]))
        self.children = [
            layout.card(
                "GRPO run",
                layout.row(self.model_name, self.task, self.strategy),
                layout.row(self.steps, self.batch, self.generations),
                layout.row(self.learning_rate, self.warmup, self.eval_every, self.seed),
                layout.row(self.start_button, self.stop_button, self.progress, self.status),
            ),
            layout.card("Live", self.chart),
        ]

    def set_model(self, model: Any) -> None:
        """Train the model the Model panel loaded: its name (or folder) goes into the
        "model" field (the run's child process loads it by that name)."""
        from ..models import model_name

        name = model_name(model)
        if not name:
            return
        if self.job is not None and self.job.running:
            # The field names the model the running job trains (it showed the new model
            # beside the old one's run); the new one takes it when that run ends.
            self._next_model = name
            self._say(
                f"{name} is loaded: the next run trains it; this one goes on with {self.job.config.model}"
            )
            return
        self.model_name.value = name

    def config(self) -> GRPOConfig:
        """The settings the widgets describe (validated).

        The model field is read without surrounding spaces, and a name that is neither an
        embedded model, a folder here nor a hub name ``org/model`` is refused at once (the
        run's process failed with it seconds later)."""
        return GRPOConfig(
            model=self._model_field(),
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

    def _model_field(self) -> str:
        from ..models import is_hub_name, list_models

        name = self.model_name.value.strip()
        embedded = [m.name for m in list_models()]
        if name in embedded or is_hub_name(name) or (name and Path(name).expanduser().is_dir()):
            return name
        raise WorkbenchError(
            "the model field is empty"
            if not name
            else f"model {name!r} is not an embedded model, a folder here, or a hub name "
            "'org/model'",
            f"type one of {embedded} or a checkpoint folder's path in the model field (a "
            "model loaded in the Model panel fills it in)",
        )

    def start(self) -> RunJob:
        """Start a new run in a child process (returns its `RunJob`); an error from an
        earlier Start is cleared once it has started.

        Raises:
            WorkbenchError: a run is already going, or the settings are refused (the Start
                button shows it in the status line instead).
        """
        if self.job is not None and self.job.running:
            raise WorkbenchError(
                f"a run is already going in {self.job.run_dir}",
                "press Stop (it checkpoints) and start again once it has ended",
            )
        cfg = self.config()
        name = f"{cfg.strategy}-seed{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.out.mkdir(parents=True, exist_ok=True)
        stem, k = name, 1
        while (self.out / name).exists() or (self.out / f"{name}.log").exists():
            k += 1  # two starts in one second shared a folder and overwrote the first log
            name = f"{stem}-{k}"
        self.rows, self.metrics_error = [], None
        self.progress.max, self.progress.value = cfg.max_steps, 0
        self.chart.chart = progress_chart([])
        self.job = RunJob(cfg, self.out / name, self.out / f"{name}.log")
        self.start_button.disabled, self.stop_button.disabled = True, False
        self.last_error = None  # an earlier refusal no longer describes the panel
        self._say(f"starting {cfg.strategy} in {self.job.run_dir} ...")
        self._schedule(self.job)
        return self.job

    def stop(self) -> None:
        """Stop the run that is going (it checkpoints) and clear an earlier error; nothing
        when none is going."""
        if self.job is not None and self.job.running:
            self.job.stop()
            self.last_error = None
            self._say("stopping: the run checkpoints after the step it is in ...")

    def poll(self) -> bool:
        """Read the current job's new rows into the chart; True while it runs.

        What goes wrong while reading or drawing the rows is shown in the status line
        (`metrics_error`), not raised: the next poll reads on, and a run that has ended
        is finished as usual (Start enabled again)."""
        job = self.job
        if job is None:
            return False
        running = job.running  # read before the rows, so none logged at the end is missed
        skipped, failure = len(job.skipped), None
        rows: list[dict[str, Any]] = []
        try:
            rows = job.new_rows()
            if rows:
                self.rows.extend(rows)
                self.progress.value = rows[-1]["step"]
                self.chart.chart = progress_chart(self.rows)
        except Exception as e:  # an unreadable file, a chart that cannot be drawn
            failure = e
        wrong = failure is not None or len(job.skipped) > skipped
        if wrong:
            self.metrics_error = self._metrics_error(job, failure)
        if rows or wrong:
            self._report(self._progress_text(job))
        if not running:
            self._finish(job)
        return running

    def _metrics_error(self, job: RunJob, failure: BaseException | None) -> WorkbenchError:
        """What went wrong reading `job`'s metrics: the lines skipped, and `failure`."""
        parts = []
        if job.skipped:
            parts.append(
                f"{len(job.skipped)} line(s) of {job.metrics} are not metrics rows and are "
                f"left out of the chart ({'; '.join(job.skipped[:3])}"
                + (" ..." if len(job.skipped) > 3 else "")
                + ")"
            )
        if failure is not None:
            parts.append(f"reading the run's metrics failed: {error_text(failure)}")
        return WorkbenchError(
            "\n".join(parts),
            "the run goes on and the panel reads on; before reading or resuming the run "
            "(wb.rl.read_metrics and wb.rl.resume refuse such a line), delete those lines "
            "from the file or restore it from a copy",
        )

    def _progress_text(self, job: RunJob) -> str:
        if not self.rows:
            return f"starting {job.config.strategy} in {job.run_dir} ..."
        last = self.rows[-1]
        acc = [r["eval_accuracy"] for r in self.rows if r.get("eval_accuracy") is not None]
        reward = last.get("reward")
        return (
            f"step {last['step']}/{self.progress.max}"
            + (f", reward {reward:.2f}" if isinstance(reward, int | float) else "")
            + (f", held-out accuracy {acc[-1]:.2f}" if acc else "")
        )

    def _report(self, message: str, kind: str = "info") -> None:
        """`message` in the status line, with the metrics' problem and a Start refused
        during the run (still shown) under it; `last_error` is the refusal, else the
        metrics' problem."""
        if self.last_error is None:
            self.last_error = self.metrics_error
        errors = [e for e in (self.metrics_error, self.last_error) if e is not None]
        errors = [e for i, e in enumerate(errors) if e not in errors[:i]]
        if errors:
            message, kind = "\n".join([message, *map(error_text, errors)]), "error"
        self._say(message, kind)

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def wait(self, timeout: float = 600.0) -> str:
        """Poll until the current job ends; returns its status."""
        if not (isinstance(timeout, float) and timeout == float("inf")):  # inf: to the end
            timeout = _validate.number("timeout", timeout, low=0, example=600.0)
        end = time.monotonic() + timeout
        while self.poll():
            if time.monotonic() > end:
                raise TimeoutError(f"the run did not end within {timeout} s")
            time.sleep(0.2)
        return self.job.status() if self.job is not None else "none"

    def _finish(self, job: RunJob) -> None:
        """The run's process has ended: report how, and enable Start again (even if
        reading its status fails)."""
        try:
            status = job.status()
            step = self.rows[-1]["step"] if self.rows else 0
            # What the panel reports now is the run's end: an error of a Start refused
            # while it ran (or of an earlier run) no longer holds; a problem reading its
            # metrics does (the chart lacks those rows).
            self.last_error = None
            if status == "failed":
                self.last_error = WorkbenchError(
                    f"the run failed; its output ends with:\n{job.tail(600)}",
                    f"read the whole output in {job.log}, correct the settings and press Start",
                )
                self._say(error_text(self.last_error), "error")
            elif status == "not started":
                self._report("stopped before the run's first step", "ok")
            else:
                self._report(f"{status} at step {step}; run directory {job.run_dir}", "ok")
        finally:
            self.start_button.disabled, self.stop_button.disabled = False, True
            if getattr(self, "_next_model", None):
                self.model_name.value, self._next_model = self._next_model, None

    def _schedule(self, job: RunJob) -> None:
        # In a kernel the event loop is running: poll on it, so widgets are only ever
        # touched from the kernel's thread. Elsewhere poll()/wait() do it.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return

        def tick() -> None:
            if self.job is not job:
                return
            try:
                going = self.poll()
            except Exception as e:  # the poller must outlive it: Start stayed disabled
                self.last_error = e
                self._say(error_text(e), "error")
                going = job.running
                if not going:
                    self.start_button.disabled, self.stop_button.disabled = False, True
            if going:
                loop.call_later(POLL_SECONDS, tick)

        loop.call_later(POLL_SECONDS, tick)
