"""The base of every panel, and the chart widget they draw with.

Widget callbacks never raise: a `WorkbenchError` (or any other error) is shown in the
panel's status line and kept in ``panel.last_error``.

Results on screen never stand for settings they were not made with (``panel.stale``): a
panel whose view settings are refused hides its results (`Panel._refuse_results`) until
they are valid again, and a Run that fails (`Panel._new_results`) leaves the previous
results on screen marked as the previous run's until a Run succeeds, and results made
from other input than the widgets now hold are marked until the next Run
(`Panel._current_input`, `Panel._made_from`). Each panel says so in its own words
(`Panel._show_state`); the rhythm and ablation panels use this.

Charts are shown in ``alt.JupyterChart`` widgets with the Vega bundle inlined (no network)
and the workbench look applied to each chart (`workbench.viz.style.themed`); building a
panel changes neither altair's active theme nor its renderer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import altair as alt
import ipywidgets as widgets
import traitlets

from .. import _validate
from ..errors import WorkbenchError
from ..viz import style
from . import layout

__all__ = ["Panel", "chart_widget", "check_model", "check_text", "error_text", "initial"]


def check_model(model: Any) -> Any:
    """`model` if it is None or has a ``cfg`` with ``n_layers`` (a loaded bridge), else a
    `WorkbenchError`: a name or a plain Hugging Face model failed later, with a raw
    AttributeError, or only when the panel first used it."""
    if model is not None and not hasattr(getattr(model, "cfg", None), "n_layers"):
        raise WorkbenchError(
            f"model must be a loaded model, got {type(model).__name__}",
            'load it first: model = wb.load_model("tiny-reasoner") (or None, then load one '
            "in the Model panel)",
        )
    return model


def check_text(name: str, value: Any) -> str:
    """`value` if it is a ``str``, else a `WorkbenchError` (a text box takes only text:
    ipywidgets raised a bare TraitError for a number, and kept None to fail later)."""
    if not isinstance(value, str):
        raise WorkbenchError(f"{name} must be a str, got {value!r}", f'pass {name}="..." (text)')
    return value


class _ThemedChart(alt.JupyterChart):
    """A JupyterChart that draws every chart it is given in the workbench look."""

    @traitlets.validate("chart")
    def _themed(self, proposal: Any) -> Any:
        chart = proposal["value"]
        return None if chart is None else style.themed(chart)


def chart_widget(chart: alt.TopLevelMixin) -> alt.JupyterChart:
    """An offline ``alt.JupyterChart`` widget (SVG renderer) showing `chart` themed.

    Assigning ``widget.chart = other`` later draws `other` in the same look.
    """
    # Inlines Vega into the widget's JavaScript module (JupyterChart widgets only; the
    # notebook's renderer is untouched). Idempotent.
    alt.JupyterChart.enable_offline()
    return _ThemedChart(chart, embed_options={"renderer": "svg", "actions": False})


def initial(widget: widgets.ValueWidget, name: str, value: Any) -> Any:
    """Set `widget` (a slider, a dropdown or a number box) to `value`, a panel's argument
    called `name`, or refuse it with a `WorkbenchError` naming the range or the choices.

    ipywidgets would clamp a number outside a slider's range to its nearer end without a
    word (``RhythmPanel(max_new_tokens=2048)`` generated 1024 tokens) and refuse a choice a
    dropdown does not offer with a bare ``TraitError``.

    Returns:
        The value set.
    """
    if hasattr(widget, "options"):
        choices = [o[1] if isinstance(o, tuple) else o for o in widget.options]
        if value not in choices:
            raise WorkbenchError(f"{name}={value!r} is not a choice", f"pass one of {choices}")
    else:
        example = widget.value
        if isinstance(example, int):
            value = _validate.integer(name, value, example=example)
        else:
            value = _validate.number(name, value, example=example)
        lo, hi = getattr(widget, "min", None), getattr(widget, "max", None)
        if lo is not None and hi is not None and not lo <= value <= hi:
            raise WorkbenchError(
                f"{name}={value!r} is outside the panel's range {lo}..{hi}",
                f"pass {name} from {lo} to {hi}",
            )
    widget.value = value
    return value


class Panel(widgets.VBox):
    """Base of the workbench's panels: a titled VBox that reports errors in a status line.

    Subclasses set `title`, build their widgets, and may override `set_model` to receive
    every model the app loads.
    """

    title = "Panel"
    #: What `stale` says while the input the widgets hold is not what the results on screen
    #: were made from (see `_current_input`).
    changed_label = "input changed"

    def __init__(self, children: Sequence[widgets.Widget] = (), **kwargs: Any):
        super().__init__(list(children), **kwargs)
        self.add_class("wb-panel")
        self.status = widgets.HTML(layout.status_html("", "info"))
        self.last_error: BaseException | None = None
        #: The widget holding the results, hidden while the settings are refused (a panel
        #: with results sets it).
        self.results_box: widgets.Box | None = None
        self._refused = False  # the view settings were refused: the results are hidden
        self._previous = False  # a Run failed: the results shown are of the run before it
        #: The input (`_current_input`) the results on screen were made from; None while
        #: there are none.
        self._made_from: Any = None

    @property
    def stale(self) -> str:
        """``""`` while the results on screen match the widgets; otherwise why they do not:
        ``"settings refused"`` (the results are hidden until the settings are valid) or
        ``"run failed"`` (the results, still shown, are those of the Run before the one
        that failed, until a Run succeeds) or `changed_label` (the input the widgets hold
        is not what the results were made from, until a Run)."""
        if self._refused:
            return "settings refused"
        if self._previous:
            return "run failed"
        if self._made_from is not None and self._current_input() != self._made_from:
            return self.changed_label
        return ""

    def _current_input(self) -> Any:
        """What the next Run would make its results from, as a comparable value (the
        settings a Run reads, not the view's). The default, None, never differs."""
        return None

    def _made(self, made_from: Any) -> None:
        """The results on screen were just made from `made_from` (what `_current_input`
        returned when the Run began): they are marked once the widgets hold other input."""
        self._made_from = made_from
        self._show_state()

    def _show_state(self) -> None:
        """Say (in the panel's own place for it) what the results on screen are, after
        `stale` changed or the results were redrawn. The default says nothing."""

    def _reset_results(self) -> None:
        """No results any more (a new model): nothing is stale or hidden."""
        self._previous = False
        self._made_from = None
        self._set_refused(False)

    def _refuse_results(self) -> None:
        """The view settings were refused: no result on screen matches them. Hide the
        results (kept, to be shown again by `_results_drawn` once the settings are
        valid)."""
        self._set_refused(True)

    def _results_drawn(self) -> None:
        """The results were drawn for the settings the widgets hold: show them (marked
        as the previous run's while `stale` is ``"run failed"``)."""
        self._set_refused(False)

    def _set_refused(self, refused: bool) -> None:
        """Hide `results_box` while the settings are refused, show it otherwise, and say
        the state (`_show_state`)."""
        self._refused = refused
        if self.results_box is not None:
            self.results_box.layout.display = "none" if refused else None
        self._show_state()

    def _new_results(self, fn: Callable[[], Any], current: Callable[[], Any]) -> Any:
        """Run `fn`, a Run that replaces the results on screen; `current` returns what
        the results are of (a trace, a table), None when there are none.

        If `fn` fails while `current` is unchanged and not None, the results stay on
        screen (or hidden, if the settings are refused), marked as the previous run's
        (`stale` is ``"run failed"``): they stood beside the error as if they were the
        new settings' results. A Run that succeeds clears the mark."""
        before = current()
        try:
            out = fn()
        except BaseException:  # an interrupted Run (KeyboardInterrupt) failed too
            after = current()
            self._previous = after is not None and after is before
            self._show_state()
            raise
        self._previous = False
        self._show_state()
        return out

    def set_model(self, model: Any) -> None:
        """Receive a newly loaded model (the default ignores it)."""

    def _say(self, message: str, kind: str = "info") -> None:
        self._message = message
        if kind == "ok":
            self._last_ok = message  # what the shown results are, once an error is cleared
        self.status.value = layout.status_html(message, kind)

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run `fn`; show an error in the status line instead of raising from a callback
        (an interruption, ``KeyboardInterrupt``, is shown there too, and raised on).

        An error still shown from an earlier call is cleared first, so that it never
        stands beside the results of a call that succeeded. Warnings of the workbench's
        own kinds (`FaiRowsWarning`: a response too short for FAI, so no anchors) are added
        to the status line of a call that succeeded: from a callback they would reach only
        the log console, until the next call. Other warnings are passed on as usual."""
        # The results on screen are still the last success's: an error, or the warnings of
        # an earlier call (they outlived the settings that caused them, and piled up), give
        # way to its message.
        if self.last_error is not None or getattr(self, "_warned", False):
            last = getattr(self, "_last_ok", "")
            self._say(last, "ok" if last else "info")
        self._warned = False
        failed: BaseException | None = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = fn()
            except Exception as e:  # a callback must not die silently in the log console
                out, failed = None, e
            except BaseException as e:
                # KeyboardInterrupt (the kernel's interrupt button) goes on, but from a
                # callback the kernel only logs it: the status said "loading …" for good.
                self.last_error = e
                self._say(f"interrupted ({type(e).__name__}) before it finished", "error")
                raise
        notes = _pass_on(caught)
        self.last_error = failed
        if failed is not None:
            self._say(error_text(failed), "error")
        elif notes:
            self._say(
                "\n".join([m for m in [getattr(self, "_message", "")] if m] + notes), "warning"
            )
            self._warned = True
        return out


def error_text(error: BaseException) -> str:
    """How a panel's status line shows `error`: a `WorkbenchError`'s problem and
    ``Fix: ...``, any other error as ``Type: message``."""
    if isinstance(error, WorkbenchError):
        return f"{error.problem}" + (f"\nFix: {error.fix}" if error.fix else "")
    return f"{type(error).__name__}: {error}"


def _pass_on(caught: list[warnings.WarningMessage]) -> list[str]:
    """The distinct messages of the workbench's own warning kinds in `caught`; every other
    warning is issued again, to the filters in force outside the panel's callback."""
    notes: list[str] = []
    for w in caught:
        if w.category.__module__.startswith("workbench."):
            if str(w.message) not in notes:
                notes.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return notes
