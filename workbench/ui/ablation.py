"""`AblationPanel`: run ablations on task problems and see the effect next to chance.

The panel takes problems from a verifiable task, builds one trace per problem (the
reference solution as the response, or the model's own greedy answer), analyses each
trace, ablates the chosen rhythm sets and their matched controls (`run_ablations`) and
shows the summary, with Student-t intervals over traces (`summarize` + `effect_chart`), and
the per-position KL of one trace (`kl_curve_chart`). Changing the metric, the trace or the
family shown costs no forward pass; Run recomputes.

The table and charts never stand for settings they were not made with (the policy of
`workbench.ui.panel`, shared with the rhythm panel): a Run that fails (refused settings, or
an error mid-run) leaves the previous Run's table and charts on screen, and the note above
them says that they are the previous Run's, with the settings it ran with, until a Run
succeeds (they can still be viewed by metric, trace and set meanwhile); a view that cannot
be drawn hides them, and the note says why; Run settings changed since the Run they are of
are noted too, with that Run's settings. See `AblationPanel.stale`.

Cost: per trace, one analysis pass, one clean pass and one pass per (set, intervention);
with a continuation test, two greedy continuations per set as well. It is a panel in the
style of `workbench.ui.panel` (status line, errors shown, never raised): add it to the
app with ``wb.workbench(model).add_tab(AblationPanel(model))``.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from ..ablation.charts import effect_chart, kl_curve_chart
from ..ablation.runner import (
    CONTINUATION_METRICS,
    INTERVENTIONS,
    METRICS,
    run_ablations,
    summarize,
)
from ..ablation.targets import FAMILIES
from ..errors import WorkbenchError
from ..tasks import TASKS
from . import layout
from .panel import Panel, chart_widget, check_model, initial

__all__ = ["AblationPanel"]


class AblationPanel(Panel):
    """Ablations against matched controls, with intervals, in one panel.

    Args:
        model: the bridge (or set later with `set_model`).
        task: ``"countdown"`` or ``"arithmetic"``.
        n_problems: how many test problems (one trace each).

    Attributes:
        frame: the last `run_ablations` DataFrame (or None).
        summary: the last `summarize` DataFrame (or None).
        traces: the traces of the last run.
        charts: ``{"effect", "kl"}`` -> ``alt.JupyterChart`` widgets.
        note: the line above the table: empty while the table and charts match the
            widgets, else why not (see `stale`).
        stale: ``""`` while the table and charts on screen are of the last Run and the
            view chosen; ``"run failed"`` when the last Run failed and they are still the
            previous Run's (until a Run succeeds); ``"settings refused"`` when the view
            chosen could not be drawn (they are hidden); ``"settings changed"`` when the
            Run settings were changed since the Run they are of (until a Run).
    """

    title = "Ablation"

    def __init__(self, model: Any = None, *, task: str = "countdown", n_problems: int = 4):
        super().__init__()
        self.model = check_model(model)
        self.frame = None
        self.summary = None
        self.traces: list[Any] = []
        self.charts: dict[str, Any] = {}
        d = layout.DESCRIPTION
        self._ran_intervention = "knockout"
        self.task = widgets.Dropdown(options=list(TASKS), description="task", style=d)
        self.n_problems = widgets.IntSlider(value=4, min=1, max=64, description="problems", style=d)
        initial(self.task, "task", task)
        initial(self.n_problems, "n_problems", n_problems)
        self.source = widgets.Dropdown(
            options=[("reference solutions", "reference"), ("model's greedy answers", "greedy")],
            value="reference",
            description="responses",
            style=d,
        )
        self.intervention = widgets.Dropdown(
            options=list(INTERVENTIONS), value="knockout", description="intervention", style=d
        )
        self.layers = widgets.Dropdown(
            options=[("all layers", "all"), ("middle layers", "middle")],
            value="all",
            description="layers",
            style=d,
        )
        self.families = widgets.SelectMultiple(
            options=list(FAMILIES), value=("anchors", "preplan"), description="sets", style=d,
            rows=4,
        )  # fmt: skip
        self.size = widgets.IntSlider(
            value=4, min=0, max=32, description="size (0 = top q)", style=d
        )
        self.n_random = widgets.IntSlider(
            value=3, min=1, max=10, description="random seeds", style=d
        )
        self.max_new_tokens = widgets.IntSlider(
            value=0, min=0, max=128, step=8, description="answer test", style=d
        )
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.run())
        self.progress = widgets.IntProgress(value=0, min=0, max=1)
        self.metric = widgets.Dropdown(
            options=list(METRICS), value="kl_mean", description="metric", style=d
        )
        self.trace_index = widgets.Dropdown(options=[0], value=0, description="trace", style=d)
        self.family_shown = widgets.Dropdown(
            options=list(FAMILIES), value="anchors", description="KL of", style=d
        )
        for w in (self.metric, self.trace_index, self.family_shown):
            w.observe(lambda _: self._guard(self.render), names="value")
        self.note = widgets.HTML()
        for w in (
            self.task, self.n_problems, self.source, self.intervention, self.layers,
            self.families, self.size, self.n_random, self.max_new_tokens,
        ):  # fmt: skip
            w.observe(lambda _: self._show_state(), names="value")
        self.table = widgets.HTML()
        self.charts_box = widgets.VBox([])
        self.results_box = widgets.VBox([self.table, self.charts_box])
        self.children = [
            layout.card(
                "Problems",
                layout.row(self.task, self.n_problems, self.source),
            ),
            layout.card(
                "Ablation",
                layout.row(self.intervention, self.layers, self.families),
                layout.row(self.size, self.n_random, self.max_new_tokens),
                layout.row(self.run_button, self.progress, self.status),
            ),
            layout.card(
                "Effect against matched controls",
                layout.row(self.metric, self.trace_index, self.family_shown),
                self.note,
                self.results_box,
            ),
        ]

    def set_model(self, model: Any) -> None:
        """Use `model` from now on (clears the last results)."""
        self.model = check_model(model)
        self.frame = self.summary = None
        self.traces = []
        self.charts_box.children = []
        self.charts = {}
        self.table.value = ""
        self.progress.value, self.progress.bar_style = 0, ""  # the last run's bar went too
        self.last_error = None
        self._reset_results()
        self._say("model set: press Run", "info")

    def _traces(self, task: Any, problems: list[Any]) -> list[Any]:
        from ..trace import Trace, generate

        if self.source.value == "reference":
            return [Trace.from_text(self.model, p.prompt, p.solution, chat=False) for p in problems]
        return [
            generate(
                self.model, p.prompt, max_new_tokens=96, temperature=0.0, chat=False, progress=False
            )
            for p in problems
        ]

    def _settings_text(self) -> str:
        """The Run settings the widgets hold, in words (what a marked table was run with)."""
        n, seeds = int(self.n_problems.value), int(self.n_random.value)
        size = int(self.size.value)
        return (
            f"{self.intervention.value} of {', '.join(self.families.value) or 'no sets'} "
            f"({'top q' if not size else f'size {size}'}, {self.layers.value} layers, "
            f"{seeds} random seed{'s' * (seeds != 1)}), {n} {self.task.value} "
            f"problem{'s' * (n != 1)} with {self.source.value} responses, answer test "
            f"{int(self.max_new_tokens.value)}"
        )

    changed_label = "settings changed"

    def _current_input(self) -> str:
        return self._settings_text()

    def _show_state(self) -> None:
        """The note above the table: nothing while it and the charts match the widgets,
        else that they are hidden (a view that could not be drawn), the previous Run's (a
        failed Run) or of other settings (changed since the Run), with the settings that
        Run had."""
        if self._refused:
            self.note.value = layout.status_html(
                "No table or charts: this view could not be drawn (the status line says "
                "why); they come back once a view that can be drawn is chosen.",
                "error",
            )
        elif self._previous and self.frame is not None:
            self.note.value = layout.status_html(
                "The table and charts below are still those of the previous Run "
                f"({self._made_from}): the last Run failed (the status line says why); "
                "press Run again once it is fixed.",
                "warning",
            )
        elif self.stale == self.changed_label:
            # they stood under the new settings, unmarked, as if made with them
            self.note.value = layout.status_html(
                f"The table and charts below are of the last Run ({self._made_from}): "
                "the settings above have changed since; press Run to see theirs.",
                "warning",
            )
        else:
            self.note.value = ""

    def run(self) -> Any:
        """Build the traces, run the ablations, summarise and draw.

        If it fails, the previous Run's table and charts stay, marked as such (`stale`),
        until a Run succeeds."""

        def go() -> Any:
            from ..attention.run import analyze
            from ..tasks import get_task

            if self.model is None:
                raise WorkbenchError("no model", "load one in the model panel, or set_model")
            if not self.families.value:  # refused before any forward pass, not defaulted
                raise WorkbenchError("no target sets are selected", "pick at least one in 'sets'")
            self.run_button.disabled = True
            try:
                task = get_task(self.task.value)
                problems = task.generate(int(self.n_problems.value), split="test", seed=0)
                self._say("building traces …", "busy")
                traces = self._traces(task, problems)
                self._say("analysing …", "busy")
                analyses = [analyze(self.model, t) for t in traces]
                fams = list(self.families.value)
                self.progress.max, self.progress.value = len(traces), 0
                self.progress.bar_style = ""
                self._say("ablating …", "busy")

                def tick(done: int, total: int) -> None:
                    self.progress.value = done

                intervention = self.intervention.value
                n_new = int(self.max_new_tokens.value)
                settings = self._settings_text()
                frame = run_ablations(
                    self.model,
                    traces,
                    analyses=analyses,
                    interventions=[intervention],
                    families=fams,
                    n_random=int(self.n_random.value),
                    size=int(self.size.value) or None,
                    knockout_layers=self.layers.value,
                    # the continuation test scores against the problems; 0 runs none
                    task=task if n_new else None,
                    problems=problems if n_new else None,
                    max_new_tokens=n_new,
                    progress=False,
                    callback=tick,
                )
                # Only once it ran: after a failed Run the charts still draw the last
                # frame, whose rows are of the intervention that made it.
                self.frame = frame
                self._ran_intervention = intervention
                self._made(settings)
                self.progress.bar_style = "success"
            except BaseException:
                self.progress.bar_style = "danger"  # where it stopped, marked as failed
                raise
            finally:
                self.run_button.disabled = False
            self.traces = traces
            self.trace_index.options = list(range(len(traces)))
            self.trace_index.value = 0
            present = [f for f in FAMILIES if f in set(self.frame["family"])]
            self.family_shown.options = present or list(FAMILIES)
            if present:
                self.family_shown.value = present[0]
            note = ""
            if (
                self.metric.value in CONTINUATION_METRICS
                and self.frame[self.metric.value].isna().all()
            ):
                # This run computed no greedy answers: the table and charts show KL, and
                # say so (the run that worked was reported as failed, under the old table).
                self.metric.value = "kl_mean"
                note = " (no greedy answers with 'answer test' 0: showing kl_mean)"
            self.render()
            n = len(traces)
            self._say(f"{len(self.frame)} ablations over {n} trace{'s' * (n != 1)}{note}", "ok")
            return self.frame

        return self._guard(lambda: self._new_results(go, lambda: self.frame))

    def render(self) -> None:
        """Redraw the summary table and the charts from the last run (no forward pass).

        A metric the run did not compute is refused with the dropdown put back (the table
        and charts stay, and match it); any other failure to draw hides the table and
        charts (some may have been redrawn, some not) until a view is drawn."""
        if self.frame is None or self.frame.empty:
            return
        metric = self.metric.value
        if metric in CONTINUATION_METRICS and self.frame[metric].isna().all():
            # The dropdown goes back to what the table and charts still show (it named a
            # metric they did not draw).
            self.metric.value = (
                "kl_mean" if self.summary is None else self.summary["metric"].iloc[0]
            )
            raise WorkbenchError(
                "no greedy answers were computed", "set 'answer test' above 0 and Run again"
            )
        try:
            self._draw(metric)
        except Exception:
            self._refuse_results()
            raise
        self._results_drawn()

    def _draw(self, metric: str) -> None:
        self.summary = summarize(self.frame, metric)
        self.table.value = self.summary.drop(columns=["metric"]).to_html(
            index=False, float_format=lambda x: f"{x:.4g}", border=0
        )
        effect = chart_widget(effect_chart(self.summary))
        kl = chart_widget(
            kl_curve_chart(
                self.frame,
                trace=int(self.trace_index.value),
                intervention=self._ran_intervention,
                family=self.family_shown.value,
            )
        )
        self.charts = {"effect": effect, "kl": kl}
        self.charts_box.children = [effect, kl]
