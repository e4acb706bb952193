"""ipywidgets panels: pick and load a model, pick heads, and watch the rhythm update.

- `ModelPanel`: an embedded model or a local checkpoint folder, loaded with a progress bar.
- `HeadPicker`: layers (all / middle / custom) and head indices; shows which of the
  chosen heads came out local or global.
- `RhythmPanel`: a prompt (generate) or a pasted response, then the four charts of
  `workbench.viz.charts`, redrawn when the heads, the window, the FAI horizon, the head
  quantiles or top-q change.
- `Workbench` (`workbench()`): the panels composed into one app; `Workbench.add_tab` adds
  panels from elsewhere (ablation, RL): a panel with a ``set_model(model)`` method is
  handed every model the model panel loads.

Forward passes: a new trace costs two passes over it, one `wb.analyze` over every head
(the per-head reductions) and one `attention_maps` pass (pooled per-head maps). Changing
heads, layers, window, horizon, quantiles or top-q afterwards costs none: the analysis is
re-derived from the kept per-head statistics (`Analysis.with_params`, and
`HeadStats.select` for a head subset) and the group maps are means of the pooled maps.
Memory: about ``4 x 270 x T x 60`` bytes of statistics plus ``270 x 5000`` floats of maps
for SmolLM2 (tens of MB at T = 512).

Widget callbacks never raise: a `WorkbenchError` (or any other error) is shown in the
panel's status line and kept in ``panel.last_error``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import altair as alt
import ipywidgets as widgets

from ..attention.params import RhythmParams
from ..errors import WorkbenchError
from . import style
from .charts import METRICS, attention_map, head_map, rhythm_curves, text_view
from .maps import MAX_CELLS, attention_maps

__all__ = [
    "FAI_HI_CHOICES",
    "HeadPicker",
    "ModelPanel",
    "Panel",
    "RhythmPanel",
    "Workbench",
    "enable_offline",
    "workbench",
]

Head = tuple[int, int]
#: H_hi choices of the rhythm panel (None = to the end of the response).
FAI_HI_CHOICES: tuple[int | None, ...] = (None, 25, 50, 100, 200, 400, 1000)
_FOLDER = "__folder__"
_offline = False


def enable_offline() -> None:
    """Draw altair charts without a network: inline Vega into ``alt.JupyterChart`` widgets
    and the ``jupyter`` renderer (altair 6's default renderer loads Vega from a CDN), and
    turn on the workbench theme. Idempotent."""
    global _offline
    if not _offline:
        alt.JupyterChart.enable_offline()
        alt.renderers.enable("jupyter", offline=True)
        _offline = True
    style.enable_theme()


def chart_widget(chart: alt.TopLevelMixin) -> alt.JupyterChart:
    """An offline ``alt.JupyterChart`` widget (SVG renderer) showing `chart`."""
    enable_offline()
    return alt.JupyterChart(chart, embed_options={"renderer": "svg", "actions": False})


class Panel(widgets.VBox):
    """Base of the workbench's panels: a titled VBox that reports errors in a status line.

    Subclasses set `title`, build their widgets, and may override `set_model` to receive
    every model the app loads.
    """

    title = "Panel"

    def __init__(self, children: Sequence[widgets.Widget] = (), **kwargs: Any):
        super().__init__(list(children), **kwargs)
        self.add_class("wb-panel")
        self.status = widgets.HTML(style.status_html("", "info"))
        self.last_error: BaseException | None = None

    def set_model(self, model: Any) -> None:
        """Receive a newly loaded model (the default ignores it)."""

    def _say(self, message: str, kind: str = "info") -> None:
        self.status.value = style.status_html(message, kind)

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run `fn`; show an error in the status line instead of raising from a callback."""
        try:
            out = fn()
        except WorkbenchError as e:
            self.last_error = e
            self._say(f"{e.problem}" + (f"\nFix: {e.fix}" if e.fix else ""), "error")
            return None
        except Exception as e:  # a callback must not die silently in the log console
            self.last_error = e
            self._say(f"{type(e).__name__}: {e}", "error")
            return None
        self.last_error = None
        return out


# -- model panel -----------------------------------------------------------------------------


class ModelPanel(Panel):
    """Pick an embedded model or a local checkpoint folder and load it with progress.

    Args:
        model: an already loaded bridge to start with (optional).
        loader: the function that loads a name or folder (default `wb.load_model`).

    Attributes:
        source: the model dropdown (embedded names, then ``"local folder..."``).
        folder: the folder path box (shown for ``"local folder..."``).
        load_button / progress / status: the controls.
        model: the loaded bridge (or None).
    """

    title = "Model"

    def __init__(self, model: Any = None, *, loader: Callable[[str], Any] | None = None):
        super().__init__()
        from ..models import list_models

        self._loader = loader
        self._listeners: list[Callable[[Any], None]] = []
        self.model = model
        options = []
        for info in list_models():
            label = info.name + ("" if info.available else " (not available)")
            options.append((label, info.name))
        options.append(("local folder…", _FOLDER))
        self.source = widgets.Dropdown(
            options=options, description="model", style=style.DESCRIPTION
        )
        self.folder = widgets.Text(
            placeholder="/path/to/checkpoint (config.json + *.safetensors)",
            description="folder",
            style=style.DESCRIPTION,
            layout=widgets.Layout(width="480px", display="none"),
        )
        self.load_button = widgets.Button(
            description="Load", button_style="primary", icon="download"
        )
        self.progress = widgets.IntProgress(value=0, min=0, max=3, bar_style="")
        self.load_button.on_click(lambda _: self.load())
        self.source.observe(self._on_source, names="value")
        self.children = [
            style.card(
                "Model",
                style.row(self.source, self.folder, self.load_button, self.progress),
                self.status,
            )
        ]
        if model is not None:
            self.progress.value = 3
            self.progress.bar_style = "success"
            self._say(f"ready: {_describe(model)}", "ok")

    def _on_source(self, change: dict) -> None:
        self.folder.layout.display = "" if change["new"] == _FOLDER else "none"

    def on_load(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(model)`` after every successful load."""
        self._listeners.append(callback)

    @property
    def target(self) -> str:
        """The name or folder that `load` will load."""
        return self.folder.value.strip() if self.source.value == _FOLDER else self.source.value

    def load(self) -> Any:
        """Load the selected model (progress 0 -> 3), then notify the listeners."""

        def go() -> Any:
            target = self.target
            if not target:
                raise WorkbenchError("no folder given", "type the checkpoint folder's path")
            self.progress.bar_style = ""
            self.progress.value = 1
            self._say(f"loading {target} …", "busy")
            self.load_button.disabled = True
            t0 = time.perf_counter()
            try:
                if self._loader is not None:
                    model = self._loader(target)
                else:
                    from ..models import load_model

                    model = load_model(target)
                self.progress.value = 2
                self.model = model
                for cb in self._listeners:
                    cb(model)
            except BaseException:
                self.progress.bar_style = "danger"
                raise
            finally:
                self.load_button.disabled = False
            self.progress.value = 3
            self.progress.bar_style = "success"
            self._say(f"ready: {_describe(model)} ({time.perf_counter() - t0:.1f} s)", "ok")
            return model

        return self._guard(go)


def _describe(model: Any) -> str:
    from ..models import model_name

    cfg = model.cfg
    name = model_name(model) or type(model).__name__
    return f"{name}: {cfg.n_layers} layers x {cfg.n_heads} heads"


# -- head picker -----------------------------------------------------------------------------


class HeadPicker(Panel):
    """Choose the analysed heads: layers (all / middle / custom) x head indices.

    Args:
        n_layers / n_heads: the model's shape (updated by `set_model`).

    Attributes:
        mode: ``"all"``, ``"middle"`` (the paper's five middle-third layers) or ``"custom"``.
        custom_layers: the layers used in ``"custom"`` mode.
        head_index: the head indices used in every chosen layer.
        classes: HTML listing which chosen heads are local / global in the last analysis.
    """

    title = "Heads"

    def __init__(self, n_layers: int = 1, n_heads: int = 1):
        super().__init__()
        self.mode = widgets.ToggleButtons(
            options=["all", "middle", "custom"],
            value="all",
            description="layers",
            style=style.DESCRIPTION,
        )
        self.mode.style.button_width = "70px"
        self.custom_layers = widgets.SelectMultiple(
            options=[], rows=5, description="custom", style=style.DESCRIPTION, disabled=True
        )
        self.head_index = widgets.SelectMultiple(
            options=[], rows=5, description="heads", style=style.DESCRIPTION
        )
        self.summary = widgets.HTML()
        self.classes = widgets.HTML()
        self.mode.observe(self._on_mode, names="value")
        for w in (self.mode, self.custom_layers, self.head_index):
            w.observe(lambda _: self._refresh_summary(), names="value")
        self.children = [
            style.row(self.mode, self.custom_layers, self.head_index),
            self.summary,
            self.classes,
        ]
        self.configure(n_layers, n_heads)

    def configure(self, n_layers: int, n_heads: int) -> None:
        """Reset the choices for a model with `n_layers` x `n_heads` (all selected)."""
        self.n_layers, self.n_heads = int(n_layers), int(n_heads)
        with self.hold_trait_notifications():
            self.custom_layers.options = list(range(self.n_layers))
            self.custom_layers.value = tuple(range(self.n_layers))
            self.head_index.options = list(range(self.n_heads))
            self.head_index.value = tuple(range(self.n_heads))
        self.classes.value = ""
        self._refresh_summary()

    def set_model(self, model: Any) -> None:
        """Adopt the model's shape."""
        self.configure(model.cfg.n_layers, model.cfg.n_heads)

    def _on_mode(self, change: dict) -> None:
        self.custom_layers.disabled = change["new"] != "custom"

    @property
    def layers(self) -> list[int]:
        """The chosen layers."""
        from ..attention import middle_layers

        if self.mode.value == "all":
            return list(range(self.n_layers))
        if self.mode.value == "middle":
            return middle_layers(self.n_layers)
        return sorted(self.custom_layers.value)

    @property
    def heads(self) -> list[Head]:
        """The chosen ``(layer, head)`` pairs."""
        idx = sorted(self.head_index.value)
        return [(layer, h) for layer in self.layers for h in idx]

    def _refresh_summary(self) -> None:
        layers, heads = self.layers, self.heads
        shown = ", ".join(map(str, layers)) if len(layers) <= 12 else f"{len(layers)} layers"
        self.summary.value = style.status_html(
            f"{len(heads)} heads: layers {shown or '(none)'} x heads "
            f"{sorted(self.head_index.value) if len(self.head_index.value) < self.n_heads else 'all'}"
        )

    def show_classes(self, analysis: Any) -> None:
        """List the local and global heads of `analysis` (compactly)."""

        def fmt(heads: list[Head]) -> str:
            s = " ".join(f"L{a}H{b}" for a, b in heads[:24])
            return s + (f" … (+{len(heads) - 24})" if len(heads) > 24 else "")

        self.classes.value = (
            f"<div style='font-family:{style.FONT};font-size:12px'>"
            f"<span style='color:{style.LOCAL}'><b>local ({len(analysis.local_heads)})</b>: "
            f"{fmt(analysis.local_heads)}</span><br>"
            f"<span style='color:{style.GLOBAL}'><b>global ({len(analysis.global_heads)})</b>: "
            f"{fmt(analysis.global_heads)}</span></div>"
        )


# -- rhythm panel ----------------------------------------------------------------------------


class RhythmPanel(Panel):
    """Prompt (or pasted response) in, preplan-and-anchor rhythm out.

    Args:
        model: the bridge to analyse with (or set later with `set_model`).
        prompt / response: initial text; a non-empty response is analysed as given
            (`wb.Trace.from_text`) instead of generating.
        max_new_tokens / temperature / seed: generation settings.

    Attributes:
        trace: the current `wb.Trace`.
        shown: the response-index range the curves and the text view show (at most
            5,000 tokens, a chart's row limit; the map and head map cover everything).
        base: the `Analysis` of every head (from the one forward pass).
        analysis: the `Analysis` shown (the chosen heads and parameters).
        maps: the pooled `AttentionMaps` of every head.
        charts: ``{"curves", "text", "map", "heads"}`` -> ``alt.JupyterChart`` widgets.
        forward_passes: forward passes this panel has run.
    """

    title = "Rhythm"

    def __init__(
        self,
        model: Any = None,
        *,
        prompt: str = "",
        response: str = "",
        max_new_tokens: int = 96,
        temperature: float = 0.7,
        seed: int = 0,
    ):
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
            value=prompt, description="prompt", style=style.DESCRIPTION, rows=2, layout=wide
        )
        self.response = widgets.Textarea(
            value=response,
            description="response",
            style=style.DESCRIPTION,
            placeholder="optional: paste a response to analyse it instead of generating",
            rows=2,
            layout=wide,
        )
        self.trace_file = widgets.Text(
            description="trace file",
            style=style.DESCRIPTION,
            placeholder="optional: a JSON file written by Trace.save (analysed as saved)",
            layout=wide,
        )
        self.max_new_tokens = widgets.IntSlider(
            value=max_new_tokens,
            min=8,
            max=1024,
            step=8,
            description="max tokens",
            style=style.DESCRIPTION,
        )
        self.temperature = widgets.FloatSlider(
            value=temperature,
            min=0.0,
            max=1.5,
            step=0.05,
            description="temperature",
            style=style.DESCRIPTION,
        )
        self.seed = widgets.IntText(
            value=seed,
            description="seed",
            style=style.DESCRIPTION,
            layout=widgets.Layout(width="160px"),
        )
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.run_button.on_click(lambda _: self.run())

        self.picker = HeadPicker()
        self.window = widgets.IntSlider(
            value=10,
            min=1,
            max=32,
            description="window W",
            style=style.DESCRIPTION,
            continuous_update=False,
        )
        self.h_lo = widgets.IntSlider(
            value=0,
            min=0,
            max=20,
            description="FAI H_lo",
            style=style.DESCRIPTION,
            continuous_update=False,
        )
        self.h_hi = widgets.Dropdown(
            options=[("end", None), *[(str(h), h) for h in FAI_HI_CHOICES if h is not None]],
            value=None,
            description="FAI H_hi",
            style=style.DESCRIPTION,
            layout=widgets.Layout(width="200px"),
        )
        self.q_local = widgets.FloatSlider(
            value=0.3,
            min=0.05,
            max=0.5,
            step=0.05,
            description="local q",
            style=style.DESCRIPTION,
            continuous_update=False,
        )
        self.q_global = widgets.FloatSlider(
            value=0.3,
            min=0.05,
            max=0.5,
            step=0.05,
            description="global q",
            style=style.DESCRIPTION,
            continuous_update=False,
        )
        self.top_q = widgets.FloatSlider(
            value=0.4,
            min=0.05,
            max=1.0,
            step=0.05,
            description="top q",
            style=style.DESCRIPTION,
            continuous_update=False,
        )
        self.metric = widgets.Dropdown(
            options=list(METRICS),
            value="fai",
            description="colour by",
            style=style.DESCRIPTION,
            layout=widgets.Layout(width="220px"),
        )
        self.entropy = widgets.Checkbox(value=False, description="entropy curve", indent=False)
        self.map_heads = widgets.Dropdown(
            options=[("local heads (mean)", "local"), ("global heads (mean)", "global")],
            value="local",
            description="map",
            style=style.DESCRIPTION,
            layout=widgets.Layout(width="260px"),
        )
        self.shown = widgets.IntRangeSlider(
            value=(0, 1),
            min=0,
            max=1,
            description="tokens shown",
            style=style.DESCRIPTION,
            continuous_update=False,
            layout=widgets.Layout(width="420px"),
        )
        self.summary = widgets.HTML()

        for w in (
            self.window, self.h_lo, self.h_hi, self.q_local, self.q_global, self.top_q,
            self.picker.mode, self.picker.custom_layers, self.picker.head_index,
        ):  # fmt: skip
            w.observe(lambda _: self._guard(self.update), names="value")
        for w in (self.metric, self.entropy, self.map_heads, self.shown):
            w.observe(lambda _: self._guard(self.render), names="value")

        self.charts_box = widgets.VBox([])
        self.children = [
            style.card(
                "Input",
                self.prompt,
                self.response,
                self.trace_file,
                style.row(self.max_new_tokens, self.temperature, self.seed),
                style.row(self.run_button, self.status),
            ),
            style.card(
                "Heads and parameters",
                self.picker,
                style.row(self.window, self.h_lo, self.h_hi),
                style.row(self.q_local, self.q_global, self.top_q),
            ),
            style.card(
                "Rhythm",
                style.row(self.metric, self.entropy, self.map_heads, self.shown),
                self.summary,
                self.charts_box,
            ),
        ]
        if model is not None:
            self.set_model(model)

    # -- state --------------------------------------------------------------------------

    def set_model(self, model: Any) -> None:
        """Use `model` from now on (clears the current trace and charts)."""
        self.model = model
        self.trace = self.base = self.analysis = self.maps = None
        self.charts_box.children = []
        self.charts = {}
        self.summary.value = ""
        self.picker.set_model(model)
        self.map_heads.options = [
            ("local heads (mean)", "local"),
            ("global heads (mean)", "global"),
            *[
                (f"layer {layer} head {h}", (layer, h))
                for layer in range(model.cfg.n_layers)
                for h in range(model.cfg.n_heads)
            ],
        ]
        self.map_heads.value = "local"
        self._say(f"model: {_describe(model)}", "info")

    @property
    def params(self) -> RhythmParams:
        """The `RhythmParams` the widgets hold (the rest at their defaults)."""
        return RhythmParams(
            window=int(self.window.value),
            fai_horizon=(int(self.h_lo.value), self.h_hi.value),
            head_quantiles=(round(self.q_local.value, 4), round(self.q_global.value, 4)),
            top_q=round(self.top_q.value, 4),
        )

    def run(self) -> Any:
        """Analyse one new trace and draw it: the saved trace in `trace_file` if given,
        else the pasted `response` (with `prompt`), else a response generated from
        `prompt`. Two forward passes (see the module docstring)."""
        return self._guard(self._run)

    def _run(self) -> Any:
        if self.model is None:
            raise WorkbenchError("no model is loaded", "load one in the Model panel first")
        from ..trace import Trace, generate

        self.run_button.disabled = True
        try:
            if self.trace_file.value.strip():
                self._say("reading the saved trace …", "busy")
                trace = Trace.load(self.trace_file.value.strip())
            elif self.response.value.strip():
                self._say("tokenising the pasted response …", "busy")
                trace = Trace.from_text(self.model, self.prompt.value, self.response.value)
            else:
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
                )
            return self._set_trace(trace)
        finally:
            self.run_button.disabled = False

    def set_trace(self, trace: Any) -> Any:
        """Analyse an existing `wb.Trace` (two forward passes) and draw it."""
        return self._guard(lambda: self._set_trace(trace))

    def _set_trace(self, trace: Any) -> Any:
        from ..attention import analyze

        if self.model is None:
            raise WorkbenchError("no model is loaded", "load one in the Model panel first")
        t0 = time.perf_counter()
        self._say(f"analysing {len(trace)} tokens (every head, one forward pass) …", "busy")
        base = analyze(
            self.model,
            trace,
            layers="all",
            max_window=int(self.window.max),
            fai_cuts=[h + 1 for h in FAI_HI_CHOICES if h is not None],
            params=self.params,
        )
        self.forward_passes += 1
        self._say("recording attention maps (one forward pass) …", "busy")
        maps = attention_maps(self.model, trace)
        self.forward_passes += 1
        self.trace, self.base, self.maps = trace, base, maps
        self.analysis = None  # the range reset below must not redraw the previous trace
        hi, last = trace.response_len - 1, min(trace.response_len, MAX_CELLS) - 1
        if hi >= self.shown.max:
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

    def update(self) -> Any:
        """Re-derive the analysis for the chosen heads and parameters (no forward pass)."""
        if self.base is None:
            return None
        heads = self.picker.heads
        if not heads:
            raise WorkbenchError("no heads are selected", "pick at least one layer and one head")
        analysis = self.base.with_params(self.params)
        if heads != list(self.base.heads):
            analysis = analysis.select_heads(heads)
        self.analysis = analysis
        self.picker.show_classes(analysis)
        self.render()
        return analysis

    def render(self) -> None:
        """Redraw the charts from the current analysis (no forward pass)."""
        a = self.analysis
        if a is None:
            return
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
                (self.forward_passes, *heads_key, tuple(a.receiver_heads)),
                lambda: head_map(a),
            ),
        }
        if not self.charts:
            self.charts = {k: chart_widget(build()) for k, (_, build) in builders.items()}
            self._keys = {k: key for k, (key, _) in builders.items()}
            self.charts_box.children = [
                self.charts["curves"],
                self.charts["text"],
                style.row(self.charts["map"], self.charts["heads"], align_items="flex-start"),
            ]
        else:
            for k, (key, build) in builders.items():
                if self._keys.get(k) != key:
                    self.charts[k].chart = build()
                    self._keys[k] = key
        self.summary.value = style.status_html(
            f"preplan {len(a.preplan)}, anchors {len(a.anchors)}, "
            f"locally dominated {len(a.dominated)} of {len(a.response)} response tokens; "
            f"{len(a.local_heads)} local / {len(a.global_heads)} global of {len(a.heads)} heads"
        )


# -- the app ---------------------------------------------------------------------------------


class Workbench(widgets.VBox):
    """The panels in one app: the model panel on top, a tab per analysis panel below.

    Args:
        model: an already loaded bridge (optional; otherwise load one in the model panel).
        loader: the model loader (default `wb.load_model`).
        **rhythm: keyword arguments of `RhythmPanel` (``prompt``, ``response``...).

    Attributes:
        model_panel / rhythm / tabs: the parts.
    """

    def __init__(
        self, model: Any = None, *, loader: Callable[[str], Any] | None = None, **rhythm: Any
    ):
        enable_offline()
        self.model_panel = ModelPanel(model, loader=loader)
        self.rhythm = RhythmPanel(model, **rhythm)
        self.tabs = widgets.Tab(children=[], titles=())
        self.panels: list[widgets.Widget] = []
        self.add_tab(self.rhythm, _pass_model=False)
        self.model_panel.on_load(self._set_model)
        title = widgets.HTML(
            f"<div style='font-family:{style.FONT};font-size:18px;font-weight:bold'>"
            "Attention workbench <span style='font-weight:normal;font-size:13px;color:#666'>"
            "preplan-and-anchor rhythm (arXiv 2510.13554)</span></div>"
        )
        super().__init__([title, self.model_panel, self.tabs])
        self.add_class("wb-app")

    @property
    def model(self) -> Any:
        """The model in use (the model panel's)."""
        return self.model_panel.model

    def add_tab(self, panel: Any, title: Any = None, *, _pass_model: bool = True) -> widgets.Widget:
        """Add a panel as a tab: ``add_tab(panel)`` (titled by ``panel.title``),
        ``add_tab(panel, "Title")`` or ``add_tab("Title", panel)``. If the panel has
        ``set_model``, it gets the current model now and every model loaded later.

        Returns:
            The panel.
        """
        if isinstance(panel, str):
            panel, title = title, panel
        if not isinstance(panel, widgets.Widget):
            raise WorkbenchError(
                f"a tab must be an ipywidgets widget, got {type(panel).__name__}",
                "pass a panel, e.g. app.add_tab(AblationPanel(model))",
            )
        title = str(title or getattr(panel, "title", None) or type(panel).__name__)
        self.panels.append(panel)
        titles = (*self.tabs.titles, title)  # setting children resets the titles
        self.tabs.children = [*self.tabs.children, panel]
        self.tabs.titles = titles
        model = self.model_panel.model
        if _pass_model and model is not None and hasattr(panel, "set_model"):
            panel.set_model(model)
        return panel

    def _set_model(self, model: Any) -> None:
        for panel in self.panels:
            if hasattr(panel, "set_model"):
                panel.set_model(model)


def workbench(model: Any = None, **kwargs: Any) -> Workbench:
    """The workbench app for a notebook cell: ``wb.workbench()`` (or ``wb.workbench(model)``).

    Args:
        model: an already loaded bridge (optional).
        **kwargs: ``loader`` and the keyword arguments of `RhythmPanel` (``prompt``,
            ``response``, ``max_new_tokens``, ``temperature``, ``seed``).

    Returns:
        A `Workbench` widget; display it as a cell's last expression.
    """
    return Workbench(model, **kwargs)
