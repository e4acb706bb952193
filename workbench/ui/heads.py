"""`HeadPicker`: layers (all / middle / custom) and heads; marks which came out local or
global."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, no_type_check

import ipywidgets as widgets

from .. import _validate
from ..attention.engine import attention_layers
from ..attention.layers import resolve_layers
from ..errors import WorkbenchError
from ..viz import style
from . import layout
from .panel import Panel

__all__ = ["HeadPicker"]

Head = tuple[int, int]


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

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def __init__(self, n_layers: int = 1, n_heads: int = 1):
        super().__init__()
        self.mode = widgets.ToggleButtons(
            options=["all", "middle", "custom"],
            value="all",
            description="layers",
            style=layout.DESCRIPTION,
        )
        self.mode.style.button_width = "70px"
        self.custom_layers = widgets.SelectMultiple(
            options=[], rows=5, description="custom", style=layout.DESCRIPTION, disabled=True
        )
        self.head_index = widgets.SelectMultiple(
            options=[], rows=5, description="heads", style=layout.DESCRIPTION
        )
        self.summary = widgets.HTML()
        self.classes = widgets.HTML()
        self.mode.observe(self._on_mode, names="value")
        for w in (self.mode, self.custom_layers, self.head_index):
            w.observe(lambda _: self._refresh_summary(), names="value")
        self.children = [
            layout.row(self.mode, self.custom_layers, self.head_index),
            self.summary,
            self.classes,
        ]
        self.configure(n_layers, n_heads)

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def configure(
        self, n_layers: int, n_heads: int, attention: Sequence[int] | None = None
    ) -> None:
        """Reset the choices for a model with `n_layers` x `n_heads` (all selected), of
        which only the layers `attention` have attention (a hybrid model; None: all)."""
        # int() truncated 2.7 and took "4" or True; 0 or -1 heads gave an empty picker
        self.n_layers = _validate.integer("n_layers", n_layers, minimum=1, example=30)
        self.n_heads = _validate.integer("n_heads", n_heads, minimum=1, example=9)
        if attention is None:
            self.attention = list(range(self.n_layers))
        else:  # indices of this model's layers, as `engine.attention_layers` gives them
            empty = isinstance(attention, list | tuple | range) and not attention
            self.attention = [] if empty else resolve_layers(attention, self.n_layers)
        with self.hold_trait_notifications():
            self.custom_layers.options = self.attention
            self.custom_layers.value = tuple(self.attention)
            self.head_index.options = list(range(self.n_heads))
            self.head_index.value = tuple(range(self.n_heads))
        self.classes.value = ""
        self._refresh_summary()

    def set_model(self, model: Any) -> None:
        """Adopt the model's shape."""
        self.configure(model.cfg.n_layers, model.cfg.n_heads, attention_layers(model))

    def _on_mode(self, change: dict) -> None:
        self.custom_layers.disabled = change["new"] != "custom"

    @property
    def layers(self) -> list[int]:
        """The chosen layers (the same selection rules as ``wb.analyze(layers=...)``)."""
        if self.mode.value == "custom":
            if not self.custom_layers.value:
                return []
            return resolve_layers(list(self.custom_layers.value), self.n_layers)
        return resolve_layers(self.mode.value, self.n_layers, self.attention)

    @property
    def heads(self) -> list[Head]:
        """The chosen ``(layer, head)`` pairs."""
        idx = sorted(self.head_index.value)
        return [(layer, h) for layer in self.layers for h in idx]

    def _refresh_summary(self) -> None:
        layers, heads = self.layers, self.heads
        shown = ", ".join(map(str, layers)) if len(layers) <= 12 else f"{len(layers)} layers"
        self.summary.value = layout.status_html(
            f"{len(heads)} heads: layers {shown or '(none)'} x heads "
            f"{sorted(self.head_index.value) if len(self.head_index.value) < self.n_heads else 'all'}"
        )

    def show_classes(self, analysis: Any) -> None:
        """List the local and global heads of `analysis` (compactly).

        Args:
            analysis: a `wb.Analysis` (or anything with ``local_heads`` and
                ``global_heads``, such as its head classes).
        """
        if not all(hasattr(analysis, a) for a in ("local_heads", "global_heads")):
            # a trace or a name failed with a raw AttributeError from the formatting below
            raise WorkbenchError(
                f"show_classes needs an analysis, which lists the local and global heads; "
                f"got {type(analysis).__name__} {analysis!r}"[:200],
                "pass the result of wb.analyze(model, trace)",
            )

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
