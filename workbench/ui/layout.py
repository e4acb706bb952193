"""The frames every panel is built from (`card`, `row`, `header`) and its status line, in
the workbench's fonts, so the model, rhythm, ablation and RL tabs line up."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from ..viz.style import FONT

__all__ = ["DESCRIPTION", "card", "header", "row", "status_html"]

_CARD_LAYOUT = {
    "border": "1px solid #dddddd",
    "padding": "8px 12px",
    "margin": "4px 0px",
    "width": "100%",
}


#: ipywidgets ``style`` for every described control: labels are never cut off.
DESCRIPTION = {"description_width": "initial"}


def header(text: str, level: int = 3) -> widgets.HTML:
    """A section title in the workbench style."""
    size = {2: "16px", 3: "14px", 4: "13px"}.get(level, "13px")
    return widgets.HTML(
        f"<div style='font-family:{FONT};font-size:{size};font-weight:bold;margin:2px 0'>"
        f"{_escape(text)}</div>"
    )


def card(title: str | None, *children: widgets.Widget, **layout: Any) -> widgets.VBox:
    """A framed vertical box with an optional title: the frame of every panel section."""
    items = ([header(title)] if title else []) + list(children)
    box = widgets.VBox(items, layout=widgets.Layout(**{**_CARD_LAYOUT, **layout}))
    box.add_class("wb-card")
    return box


def row(*children: widgets.Widget, **layout: Any) -> widgets.HBox:
    """A horizontal row of controls that wraps on narrow screens."""
    return widgets.HBox(
        list(children),
        layout=widgets.Layout(**{"flex_flow": "row wrap", "align_items": "center", **layout}),
    )


def status_html(message: str, kind: str = "info") -> str:
    """HTML for a one-line status message (``kind``: info, busy, ok, warning, error)."""
    color = {
        "info": "#555555",
        "busy": "#8a6d00",
        "ok": "#1a7f37",
        "warning": "#b35900",
        "error": "#b00020",
    }[kind]
    return (
        f"<div class='wb-status wb-status-{kind}' style='font-family:{FONT};font-size:12px;"
        f"color:{color};white-space:pre-wrap'>{_escape(message)}</div>"
    )


def _escape(text: str) -> str:
    return html.escape(str(text))
