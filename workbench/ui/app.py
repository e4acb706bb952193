"""`Workbench` (`workbench()`): the panels composed into one app.

`Workbench.add_tab` adds panels from elsewhere (ablation, RL): a panel with a
``set_model(model)`` method is handed every model the model panel loads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, no_type_check

import ipywidgets as widgets

from ..errors import WorkbenchError
from ..viz import style
from .model import ModelPanel
from .rhythm import RhythmPanel

__all__ = ["Workbench", "workbench"]


class Workbench(widgets.VBox):
    """The panels in one app: the model panel on top, a tab per analysis panel below.

    Args:
        model: an already loaded bridge (optional; otherwise load one in the model panel).
        loader: the model loader (default `wb.load_model`).
        **rhythm: keyword arguments of `RhythmPanel` (``prompt``, ``response``...).

    Attributes:
        model_panel / rhythm / tabs: the parts.
    """

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def __init__(
        self, model: Any = None, *, loader: Callable[[str], Any] | None = None, **rhythm: Any
    ):
        known = ("prompt", "response", "max_new_tokens", "temperature", "seed")
        unknown = sorted(set(rhythm) - set(known))
        if unknown:  # a raw TypeError from RhythmPanel named neither this call nor the choices
            raise WorkbenchError(
                f"the workbench has no setting(s) {unknown}",
                f"use only loader and the rhythm panel's {list(known)}",
            )
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
            if panel is None:  # add_tab("Title") alone was refused as "got NoneType"
                raise WorkbenchError(
                    f"add_tab got the title {title!r} but no panel to show in the tab",
                    f"pass the panel too, e.g. app.add_tab(AblationPanel(model), {title!r})",
                )
        if not isinstance(panel, widgets.Widget):
            raise WorkbenchError(
                f"a tab must be an ipywidgets widget, got {type(panel).__name__}",
                "pass a panel, e.g. app.add_tab(AblationPanel(model))",
            )
        if any(panel is p for p in self.panels):  # a second tab of it got every model twice
            raise WorkbenchError(
                f"this {type(panel).__name__} is already a tab of the workbench",
                "add each panel once (make another panel for a second tab)",
            )
        title = str(title or getattr(panel, "title", None) or type(panel).__name__)
        model = self.model_panel.model
        if _pass_model and model is not None and hasattr(panel, "set_model"):
            # before the tab is added: a panel that refuses the model is not added (it was,
            # without the model, and adding it again was refused as "already a tab")
            panel.set_model(model)
        self.panels.append(panel)
        titles = (*self.tabs.titles, title)  # setting children resets the titles
        self.tabs.children = [*self.tabs.children, panel]
        self.tabs.titles = titles
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
