"""`RhythmPanel`: a prompt (generate) or a pasted response, then the four charts of
`workbench.viz.charts`, redrawn when the heads, the window, the FAI horizon, the head
quantiles or top-q change.

Forward passes: a new trace costs two passes over it, one `wb.analyze` over every head
(the per-head reductions) and one `attention_maps` pass (pooled per-head maps). Changing
heads, layers, window, horizon, quantiles or top-q afterwards costs none: the analysis is
re-derived from the kept per-head statistics (`Analysis.with_params`,
`Analysis.select_heads`) and the group maps are means of the pooled maps. Memory: about
``4 x 270 x T x 60`` bytes of statistics plus ``270 x 5000`` floats of maps for SmolLM2
(tens of MB at T = 512).

The ``sink`` choice ("keep", the paper's attention, or "exclude": the first token's
column zeroed and each row renormalised, `wb.analyze(..., sink=)`) changes the attention
every statistic is computed from (and the attention map shows it too), so changing it
analyses the current trace again (two forward passes).

Charts never stand for settings they were not drawn with (the policy of
`workbench.ui.panel`, shared with the ablation panel): heads or parameters that are
refused (no heads selected) hide the charts, the summary says why, and `analysis` is None
until the settings are valid again (the kept charts then come back, redrawn for them); a
Run that fails keeps the previous trace's charts on screen, and the summary above them says
that they are the previous trace's until a Run succeeds (changing heads, parameters or the
view redraws that trace, still marked). Input edited since the trace was analysed (the
prompt, the pasted response, the trace file, or a generated trace's max tokens,
temperature or seed) marks the charts as that trace's until a Run. See
`RhythmPanel.stale`.

The max-tokens slider reaches only as far as the loaded model can generate after the
prompt (its context less the prompt's tokens, at most 1024): it is set when a model is
loaded and follows the prompt as it is typed. A prompt that leaves no room is still
refused at Run, with the error that names the context.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, no_type_check

import altair as alt
import ipywidgets as widgets

from .. import _validate
from ..attention.params import RhythmParams
from ..errors import WorkbenchError
from ..viz.charts import METRICS, attention_map, head_map, rhythm_curves, text_view
from ..viz.maps import MAX_CELLS, attention_maps
from . import layout
from .heads import HeadPicker
from .model import describe
from .panel import Panel, chart_widget, check_model, check_text, initial

__all__ = ["FAI_HI_CHOICES", "RhythmPanel"]

#: H_hi choices of the rhythm panel (None = to the end of the response).
FAI_HI_CHOICES: tuple[int | None, ...] = (None, 25, 50, 100, 200, 400, 1000)

#: The max-tokens slider's top for a model that states no context (or a larger one).
MAX_NEW_TOKENS = 1024


class RhythmPanel(Panel):
    """Prompt (or pasted response) in, preplan-and-anchor rhythm out.

    Args:
        model: the bridge to analyse with (or set later with `set_model`).
        prompt / response: initial text; a non-empty response is analysed as given
            (`wb.Trace.from_text`) instead of generating.
        max_new_tokens / temperature / seed: generation settings. `max_new_tokens` is
            at most what the model's context leaves after the prompt, and 1024; None (the
            default) is 96, or that room if it is smaller.

    Attributes:
        trace: the current `wb.Trace`.
        shown: the response-index range the curves and the text view show (at most
            5,000 tokens, a chart's row limit; the map and head map cover everything).
        base: the `Analysis` of every head (from the one forward pass).
        analysis: the `Analysis` shown (the chosen heads and parameters).
        maps: the pooled `AttentionMaps` of every head.
        charts: ``{"curves", "text", "map", "heads"}`` -> ``alt.JupyterChart`` widgets.
        forward_passes: forward passes this panel has run.
        stale: ``""`` while the charts on screen match the widgets; otherwise why they do
            not: ``"settings refused"`` (the charts are hidden; `analysis` is None when
            the heads or parameters were refused) or
            ``"run failed"`` (the charts, still shown, are of the previous trace, until a
            Run succeeds) or ``"input changed"`` (the input that makes a trace was edited
            since the trace shown was analysed, until a Run).
    """

    title = "Rhythm"

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def __init__(
        self,
        model: Any = None,
        *,
        prompt: str = "",
        response: str = "",
        max_new_tokens: int | None = None,
        temperature: float = 0.7,
        seed: int = 0,
    ):
        check_model(model)
        prompt, response = check_text("prompt", prompt), check_text("response", response)
        seed = _validate.seed("seed", seed)  # a negative or huge seed failed at generation
        super().__init__()
        self.model = None
        self.trace = None
        self.base = None
        self.analysis = None
        self.maps = None
        self.forward_passes = 0
        self.charts: dict[str, alt.JupyterChart] = {}
        self._keys: dict[str, Any] = {}

        wide = widgets.Layout(width="98%")
        self.prompt = widgets.Textarea(
            value=prompt, description="prompt", style=layout.DESCRIPTION, rows=2, layout=wide
        )
        self.response = widgets.Textarea(
            value=response,
            description="response",
            style=layout.DESCRIPTION,
            placeholder="optional: paste a response to analyse it instead of generating",
            rows=2,
            layout=wide,
        )
        self.trace_file = widgets.Text(
            description="trace file",
            style=layout.DESCRIPTION,
            placeholder="optional: a JSON file written by Trace.save (analysed as saved)",
            layout=wide,
        )
        self.max_new_tokens = widgets.IntSlider(
            value=96,
            min=8,
            max=MAX_NEW_TOKENS,
            step=8,
            description="max tokens",
            style=layout.DESCRIPTION,
        )
        self.temperature = widgets.FloatSlider(
            value=0.7,
            min=0.0,
            max=1.5,
            step=0.05,
            description="temperature",
            style=layout.DESCRIPTION,
        )
        self.seed = widgets.IntText(
            value=0,
            description="seed",
            style=layout.DESCRIPTION,
            layout=widgets.Layout(width="160px"),
        )
        top = self._fit_max_tokens(model)
        if max_new_tokens is None:  # the default: never refused for a long prompt
            max_new_tokens = min(96, top)
        elif type(max_new_tokens) is int and top < max_new_tokens <= MAX_NEW_TOKENS:
            # `initial` would name the range only: say why it is this short.
            raise WorkbenchError(
                f"max_new_tokens={max_new_tokens} does not fit: {self._room_text(model)}",
                f"pass max_new_tokens from {self.max_new_tokens.min} to {top}",
            )
        initial(self.max_new_tokens, "max_new_tokens", max_new_tokens)
        # The value the user chose, which a long prompt lowers and a shorter one restores
        # (it stayed at the lowered value: a prompt pasted and cut again lost the choice).
        self._asked_tokens, self._fitting = int(self.max_new_tokens.value), False
        self.max_new_tokens.observe(self._note_asked_tokens, names="value")
        self.prompt.observe(lambda _: self._fit_max_tokens(self.model), names="value")
        initial(self.temperature, "temperature", temperature)
        initial(self.seed, "seed", seed)
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.run())

        self.picker = HeadPicker()
        self.window = widgets.IntSlider(
            value=10,
            min=1,
            max=32,
            description="window W",
            style=layout.DESCRIPTION,
            continuous_update=False,
        )
        self.h_lo = widgets.IntSlider(
            value=0,
            min=0,
            max=20,
            description="FAI H_lo",
            style=layout.DESCRIPTION,
            continuous_update=False,
        )
        # ipywidgets 8 shows a blank box for an option whose value is None: "end" stands
        # for H_hi = None (to the end of the response), see `params`.
        self.h_hi = widgets.Dropdown(
            options=[("end", "end"), *[(str(h), h) for h in FAI_HI_CHOICES if h is not None]],
            value="end",
            description="FAI H_hi",
            style=layout.DESCRIPTION,
            layout=widgets.Layout(width="200px"),
        )
        self.q_local = widgets.FloatSlider(
            value=0.3,
            min=0.05,
            max=0.5,
            step=0.05,
            description="local q",
            style=layout.DESCRIPTION,
            continuous_update=False,
        )
        self.q_global = widgets.FloatSlider(
            value=0.3,
            min=0.05,
            max=0.5,
            step=0.05,
            description="global q",
            style=layout.DESCRIPTION,
            continuous_update=False,
        )
        self.top_q = widgets.FloatSlider(
            value=0.4,
            min=0.05,
            max=1.0,
            step=0.05,
            description="top q",
            style=layout.DESCRIPTION,
            continuous_update=False,
        )
        # The FaiRowsWarning of a short response names fai_min_rows: this is where it is.
        self.fai_min_rows = widgets.IntSlider(
            value=RhythmParams().fai_min_rows,
            min=1,
            max=50,
            description="FAI min rows",
            style=layout.DESCRIPTION,
            continuous_update=False,
            tooltip="the fewest horizon rows an FAI value needs (1: the paper's definition)",
        )
        self.sink = widgets.Dropdown(
            options=[("keep (paper)", "keep"), ("exclude key 0", "exclude")],
            value="keep",
            description="sink",
            style=layout.DESCRIPTION,
            layout=widgets.Layout(width="220px"),
            tooltip=(
                "keep: the paper's attention; exclude: the first token's column zeroed and "
                "each row renormalised (a new forward pass)"
            ),
        )
        self.metric = widgets.Dropdown(
            options=list(METRICS),
            value="fai",
            description="colour by",
            style=layout.DESCRIPTION,
            layout=widgets.Layout(width="220px"),
        )
        self.entropy = widgets.Checkbox(value=False, description="entropy curve", indent=False)
        self.map_heads = widgets.Dropdown(
            options=[("local heads (mean)", "local"), ("global heads (mean)", "global")],
            value="local",
            description="map",
            style=layout.DESCRIPTION,
            layout=widgets.Layout(width="260px"),
        )
        self.shown = widgets.IntRangeSlider(
            value=(0, 1),
            min=0,
            max=1,
            description="tokens shown",
            style=layout.DESCRIPTION,
            continuous_update=False,
            layout=widgets.Layout(width="420px"),
        )
        self.summary = widgets.HTML()
        for w in (
            self.prompt, self.response, self.trace_file,
            self.max_new_tokens, self.temperature, self.seed,
        ):  # fmt: skip
            w.observe(lambda _: self._show_state(), names="value")

        for w in (
            self.window, self.h_lo, self.h_hi, self.q_local, self.q_global, self.top_q,
            self.fai_min_rows, self.picker.mode, self.picker.custom_layers, self.picker.head_index,
        ):  # fmt: skip
            w.observe(lambda _: self._guard(self.update), names="value")
        for w in (self.metric, self.entropy, self.map_heads, self.shown):
            w.observe(lambda _: self._guard(self.render), names="value")
        self._sink_restoring = False  # set while `_reanalyse` puts the dropdown back
        self.sink.observe(
            lambda _: None if self._sink_restoring else self._guard(self._reanalyse),
            names="value",
        )

        self.charts_box = widgets.VBox([])
        self.results_box = self.charts_box  # hidden while the settings are refused
        self.children = [
            layout.card(
                "Input",
                self.prompt,
                self.response,
                self.trace_file,
                layout.row(self.max_new_tokens, self.temperature, self.seed),
                layout.row(self.run_button, self.status),
            ),
            layout.card(
                "Heads and parameters",
                self.picker,
                layout.row(self.window, self.h_lo, self.h_hi, self.sink),
                layout.row(self.q_local, self.q_global, self.top_q, self.fai_min_rows),
            ),
            layout.card(
                "Rhythm",
                layout.row(self.metric, self.entropy, self.map_heads, self.shown),
                self.summary,
                self.charts_box,
            ),
        ]
        if model is not None:
            self.set_model(model)

    # -- state --------------------------------------------------------------------------

    def set_model(self, model: Any) -> None:
        """Use `model` from now on (clears the current trace and charts; the max-tokens
        slider then goes as far as `model` can generate after the prompt)."""
        self.model = check_model(model)
        self.trace = self.base = self.analysis = self.maps = None
        self.charts_box.children = []
        self.charts = {}
        self.summary.value = ""
        self._reset_results()
        self._fit_max_tokens(self.model)
        self.picker.set_model(model)
        # Only the heads of attention layers have a map (`attention_maps` records no other
        # in a hybrid model): a state-space or linear-attention layer is not offered.
        self.map_heads.options = [
            ("local heads (mean)", "local"),
            ("global heads (mean)", "global"),
            *[
                (f"layer {layer} head {h}", (layer, h))
                for layer in self.picker.attention
                for h in range(model.cfg.n_heads)
            ],
        ]
        self.map_heads.value = "local"
        self._say(f"model: {describe(model)}", "info")

    def _room(self, model: Any) -> tuple[int | None, int]:
        """The model's context (None when it states none) and the prompt's tokens as
        `generate` encodes it (0 for an empty prompt or one that cannot be encoded: Run
        refuses it with its own error)."""
        from ..trace.tokens import context_length, encode_prompt

        n_ctx = None if model is None else context_length(model)
        if n_ctx is None or not self.prompt.value.strip():
            return n_ctx, 0
        try:
            with warnings.catch_warnings():  # unknown characters: Run warns of them
                warnings.simplefilter("ignore")
                return n_ctx, len(encode_prompt(model, self.prompt.value))
        except Exception:  # typing must never fail; Run names the problem
            return n_ctx, 0

    def _room_text(self, model: Any) -> str:
        n_ctx, n = self._room(model)
        return f"the model's context holds {n_ctx} tokens and the prompt takes {n}"

    def _fit_max_tokens(self, model: Any) -> int:
        """Set the max-tokens slider's top to what `model` can generate after the prompt
        (on the slider's steps, at least its minimum, at most `MAX_NEW_TOKENS`): it went to
        1024 whatever the model's context (the tiny models hold 256 tokens). A value
        above the new top comes down to it, and goes back up to the value the user chose
        (`_asked_tokens`) as far as a later top allows. Returns the top."""
        n_ctx, n = self._room(model)
        slider = self.max_new_tokens
        top = MAX_NEW_TOKENS if n_ctx is None else min(MAX_NEW_TOKENS, n_ctx - n)
        top = max(slider.min, slider.min + (top - slider.min) // slider.step * slider.step)
        asked = getattr(self, "_asked_tokens", None)  # None while __init__ sets the slider
        self._fitting = True
        try:
            if top != slider.max:
                slider.max = top  # the slider clamps its value to the new top
            if asked is not None and slider.value != min(asked, top):
                slider.value = min(asked, top)
        finally:
            self._fitting = False
        return top

    def _note_asked_tokens(self, change: Any) -> None:
        if not self._fitting:
            self._asked_tokens = int(change["new"])

    @property
    def params(self) -> RhythmParams:
        """The `RhythmParams` the widgets hold (the rest at their defaults)."""
        return RhythmParams(
            window=int(self.window.value),
            fai_horizon=(
                int(self.h_lo.value),
                None if self.h_hi.value == "end" else int(self.h_hi.value),
            ),
            head_quantiles=(round(self.q_local.value, 4), round(self.q_global.value, 4)),
            top_q=round(self.top_q.value, 4),
            fai_min_rows=int(self.fai_min_rows.value),
        )

    def _current_input(self) -> tuple[Any, ...]:
        """What the next Run makes its trace from: only the widgets that source reads."""
        if self.trace_file.value.strip():
            return ("file", self.trace_file.value.strip())
        if self.response.value.strip():
            return ("pasted", self.prompt.value, self.response.value)
        return (
            "generated", self.prompt.value, int(self.max_new_tokens.value),
            float(self.temperature.value), int(self.seed.value),
        )  # fmt: skip

    def run(self) -> Any:
        """Analyse one new trace and draw it: the saved trace in `trace_file` if given,
        else the pasted `response` (with `prompt`), else a response generated from
        `prompt`. Two forward passes (see the module docstring).

        If it fails, the previous trace's charts stay, marked as such (`stale`)."""
        return self._guard(lambda: self._new_results(self._run, lambda: self.trace))

    def _run(self) -> Any:
        if self.model is None:
            raise WorkbenchError("no model is loaded", "load one in the Model panel first")
        from ..trace import Trace, generate

        self.run_button.disabled = True
        asked = self._current_input()
        try:
            if self.trace_file.value.strip():
                self._say("reading the saved trace …", "busy")
                source = f"the trace file {self.trace_file.value.strip()}"
                trace = Trace.load(self.trace_file.value.strip())  # "~/..." expands
            elif self.response.value.strip():
                if not self.prompt.value.strip():  # its fix named an argument, not the box
                    raise WorkbenchError(
                        "the prompt is empty, and a pasted response is analysed with the "
                        "prompt it answers",
                        "type that prompt in the prompt box (or clear the response to "
                        "generate one from a prompt)",
                    )
                self._say("tokenising the pasted response …", "busy")
                source = "the pasted response"
                # Characters the tokenizer cannot encode are named in the status line (a
                # workbench warning, trace.tokens.UnknownTokensWarning).
                trace = Trace.from_text(self.model, self.prompt.value, self.response.value)
            else:
                source = "a generated response"
                if not self.prompt.value.strip():
                    raise WorkbenchError(
                        "the prompt is empty", "type a prompt, or paste a response"
                    )
                self._say(f"generating up to {self.max_new_tokens.value} tokens …", "busy")
                trace = generate(
                    self.model,
                    self.prompt.value,
                    max_new_tokens=int(self.max_new_tokens.value),
                    temperature=float(self.temperature.value),
                    seed=int(self.seed.value),
                    progress=False,  # the status line says it is generating
                )
            out = self._set_trace(trace)
            self._made(asked)
            # The trace file wins over a pasted response (the docstring's order): say which.
            self._say(f"{self._message} (from {source})", "ok")
            return out
        finally:
            self.run_button.disabled = False

    def set_trace(self, trace: Any) -> Any:
        """Analyse an existing `wb.Trace` (two forward passes) and draw it (if it fails,
        the previous trace's charts stay, marked as such)."""
        return self._guard(
            lambda: self._new_results(lambda: self._given(trace), lambda: self.trace)
        )

    def _given(self, trace: Any) -> Any:
        out = self._set_trace(trace)
        # made in code, not from the input boxes: edits to them after it are still marked
        self._made(self._current_input())
        return out

    def _set_trace(self, trace: Any, *, keep_shown: bool = False) -> Any:
        from ..attention import analyze
        from ..attention.analysis import Analysis
        from ..trace import Trace

        if isinstance(trace, Analysis):
            raise WorkbenchError(
                "set_trace takes a wb.Trace, got a wb.Analysis",
                "pass the trace the analysis came from: panel.set_trace(trace)",
            )
        if not isinstance(trace, Trace):
            raise WorkbenchError(
                f"set_trace takes a wb.Trace, got {type(trace).__name__}",
                "pass a trace from wb.generate or wb.Trace.from_text (or Trace.load)",
            )
        if self.model is None:
            raise WorkbenchError("no model is loaded", "load one in the Model panel first")
        if not self.picker.heads:
            # Refused before the two forward passes: `update` would refuse their result and
            # leave the previous trace's charts on screen under the new trace.
            raise WorkbenchError("no heads are selected", "pick at least one layer and one head")
        t0 = time.perf_counter()
        self._say(f"analysing {len(trace)} tokens (every head, one forward pass) …", "busy")
        base = analyze(
            self.model,
            trace,
            layers="all",
            max_window=int(self.window.max),
            fai_cuts=[h + 1 for h in FAI_HI_CHOICES if h is not None],
            params=self.params,
            sink=self.sink.value,
        )
        self.forward_passes += 1
        self._say("recording attention maps (one forward pass) …", "busy")
        maps = attention_maps(self.model, trace, sink=self.sink.value)
        self.forward_passes += 1
        self.trace, self.base, self.maps = trace, base, maps
        self.analysis = None  # the range reset below must not redraw the previous trace
        hi, last = trace.response_len - 1, min(trace.response_len, MAX_CELLS) - 1
        if keep_shown:  # the same trace again (a sink change): the user's crop still fits
            pass
        elif hi >= self.shown.max:
            self.shown.max = hi
            self.shown.value = (0, last)
        else:
            self.shown.value = (0, last)
            self.shown.max = hi
        self.update()
        self._say(
            f"{trace.response_len} response tokens analysed in {time.perf_counter() - t0:.1f} s "
            f"(2 forward passes; changing heads or parameters needs none)",
            "ok",
        )
        return self.analysis

    def _reanalyse(self) -> Any:
        """The `sink` choice changed: analyse the current trace again (it changes the
        attention every statistic is computed from, so it needs new forward passes).

        If that fails, the dropdown is put back to the sink of the analysis still shown
        (without analysing again) and the error is raised."""
        if self.trace is None or self.model is None:
            return None
        try:
            return self._set_trace(self.trace, keep_shown=True)
        except Exception:
            shown = self.base.meta.get("sink", "keep") if self.base is not None else None
            if shown is not None and self.sink.value != shown:
                self._sink_restoring = True
                try:
                    self.sink.value = shown
                finally:
                    self._sink_restoring = False
            raise

    def update(self) -> Any:
        """Re-derive the analysis for the chosen heads and parameters (no forward pass).

        Settings it refuses (no heads selected) hide the charts and set `analysis` to
        None (see `stale`) before the error is raised: they were drawn for other heads."""
        if self.base is None:
            return None
        try:
            heads = self.picker.heads
            if not heads:
                raise WorkbenchError(
                    "no heads are selected", "pick at least one layer and one head"
                )
            analysis = self.base.with_params(self.params)
            if heads != list(self.base.heads):
                analysis = analysis.select_heads(heads)
        except Exception:
            self._hide_charts()
            raise
        self.analysis = analysis
        self.picker.show_classes(analysis)
        self.render()
        return analysis

    def _hide_charts(self, *, forget: bool = True) -> None:
        """The settings were refused: no chart on screen matches them. Hide the charts
        (kept, to be redrawn once the settings are valid) and say why; `forget` drops the
        analysis too (it was of other heads or parameters)."""
        if forget:
            self.analysis = None
        self.picker.classes.value = ""
        self._refuse_results()

    def _show_state(self) -> None:
        """The summary above the charts: what they show, that they are hidden (refused
        settings), or that they are the previous trace's (a failed Run)."""
        a = self.analysis
        if self._refused:
            self.summary.value = layout.status_html(
                "No charts: the settings above were refused (the status line says why and "
                "how to fix them); the charts come back once they are valid.",
                "error",
            )
        elif a is None:
            self.summary.value = ""
        elif self._previous and self.trace is not None:
            self.summary.value = layout.status_html(
                f"The charts below are still those of the previous trace "
                f"({self.trace.response_len} response tokens): the new one was refused "
                f"(the status line says why).\n{self._summary_text(a)}",
                "warning",
            )
        elif self.stale == self.changed_label:
            # they stood under the edited prompt or response, unmarked, as if of it
            self.summary.value = layout.status_html(
                f"The charts below are of the trace analysed last ({self.trace.response_len} "
                "response tokens): the input above has changed since; press Run to analyse "
                f"it.\n{self._summary_text(a)}",
                "warning",
            )
        else:
            self.summary.value = layout.status_html(self._summary_text(a))

    def render(self) -> None:
        """Redraw the charts from the current analysis (no forward pass); if that fails,
        the charts are hidden (some may have been redrawn, some not)."""
        a = self.analysis
        if a is None:
            return
        try:
            self._render(a)
        except Exception:
            self._hide_charts(forget=False)  # a view change: the analysis still holds
            raise
        self._results_drawn()

    @staticmethod
    def _summary_text(a: Any) -> str:
        return (
            f"preplan {len(a.preplan)}, anchors {len(a.anchors)}, "
            f"locally dominated {len(a.dominated)} of {len(a.response)} response tokens; "
            f"{len(a.local_heads)} local / {len(a.global_heads)} global of {len(a.heads)} heads"
        )

    def _render(self, a: Any) -> None:
        lo, hi = self.shown.value
        positions = range(a.prompt_len + lo, a.prompt_len + hi + 1)
        group = self.map_heads.value
        heads_key = (tuple(a.heads), tuple(a.local_heads), tuple(a.global_heads))
        # Each chart is rebuilt only when what it shows changed (building and validating a
        # spec is most of an update's time).
        builders = {
            "curves": (
                (a, bool(self.entropy.value), positions),
                lambda: rhythm_curves(a, entropy=bool(self.entropy.value), positions=positions),
            ),
            "text": (
                (a, self.metric.value, positions),
                lambda: text_view(a, self.metric.value, positions=positions),
            ),
            "map": (
                (self.forward_passes, group, heads_key if isinstance(group, str) else None),
                lambda: attention_map(self.maps, group, analysis=a),
            ),
            "heads": (
                # the quantiles are in its subtitle even when the head classes stay the same
                (self.forward_passes, *heads_key, tuple(a.receiver_heads), a.params.head_quantiles),
                lambda: head_map(a),
            ),
        }
        if not self.charts:
            self.charts = {k: chart_widget(build()) for k, (_, build) in builders.items()}
            self._keys = {k: key for k, (key, _) in builders.items()}
            self.charts_box.children = [
                self.charts["curves"],
                self.charts["text"],
                layout.row(self.charts["map"], self.charts["heads"], align_items="flex-start"),
            ]
        else:
            for k, (key, build) in builders.items():
                if self._keys.get(k) != key:
                    self._keys.pop(k, None)  # a failed build leaves it to be rebuilt
                    self.charts[k].chart = build()
                    self._keys[k] = key
