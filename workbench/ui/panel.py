"""The base of every panel, and the chart widget they draw with.

Widget callbacks never raise: a `WorkbenchError` (or any other error) is shown in the
panel's status line and kept in ``panel.last_error``.

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

    def __init__(self, children: Sequence[widgets.Widget] = (), **kwargs: Any):
        super().__init__(list(children), **kwargs)
        self.add_class("wb-panel")
        self.status = widgets.HTML(layout.status_html("", "info"))
        self.last_error: BaseException | None = None

    def set_model(self, model: Any) -> None:
        """Receive a newly loaded model (the default ignores it)."""

    def _say(self, message: str, kind: str = "info") -> None:
        self._message = message
        if kind == "ok":
            self._last_ok = message  # what the shown results are, once an error is cleared
        self.status.value = layout.status_html(message, kind)

    def _guard(self, fn: Callable[[], Any]) -> Any:
        """Run `fn`; show an error in the status line instead of raising from a callback.

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
