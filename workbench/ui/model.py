"""`ModelPanel`: pick an embedded model or a local checkpoint folder and load it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, no_type_check

import ipywidgets as widgets

from ..errors import WorkbenchError
from . import layout
from .panel import Panel, check_model

__all__ = ["ModelPanel", "describe"]

_FOLDER = "__folder__"


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

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def __init__(self, model: Any = None, *, loader: Callable[[str], Any] | None = None):
        check_model(model)
        if loader is not None and not callable(loader):
            raise WorkbenchError(
                f"loader must be a function name -> model, got {type(loader).__name__}",
                "pass e.g. loader=wb.load_model, or None (the default)",
            )
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
            options=options, description="model", style=layout.DESCRIPTION
        )
        self.folder = widgets.Text(
            placeholder="/path/to/checkpoint (config.json + *.safetensors)",
            description="folder",
            style=layout.DESCRIPTION,
            layout=widgets.Layout(width="480px", display="none"),
        )
        self.load_button = widgets.Button(
            description="Load", button_style="primary", icon="download"
        )
        self.progress = widgets.IntProgress(value=0, min=0, max=3, bar_style="")
        self.load_button.on_click(lambda _: self.load())
        self.source.observe(self._on_source, names="value")
        self.children = [
            layout.card(
                "Model",
                layout.row(self.source, self.folder, self.load_button, self.progress),
                self.status,
            )
        ]
        if model is not None:
            # The dropdown shows what is loaded, so that Load reloads it, not another.
            from ..models import model_name

            name = model_name(model)
            if name in [value for _, value in options]:
                self.source.value = name
            elif name is not None:
                self.source.value = _FOLDER
                self.folder.value = name
            self.progress.value = 3
            self.progress.bar_style = "success"
            self._say(f"ready: {describe(model)}", "ok")

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
            self._say(f"ready: {describe(model)} ({time.perf_counter() - t0:.1f} s)", "ok")
            return model

        return self._guard(go)


def describe(model: Any) -> str:
    from ..models import model_name

    cfg = model.cfg
    name = model_name(model) or type(model).__name__
    return f"{name}: {cfg.n_layers} layers x {cfg.n_heads} heads"
