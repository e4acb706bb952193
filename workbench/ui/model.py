"""`ModelPanel`: pick an embedded model, a local checkpoint folder or a hub name and load it.

Hub names (``"org/model"``, typed in the folder box) load only when asked, as in
`wb.load_model`: tick "allow hub downloads" in the panel (the default loader then passes
``allow_hub=True``), or set ``os.environ["WORKBENCH_ALLOW_HUB"] = "1"`` in the kernel; in
code, ``wb.load_model("org/model", allow_hub=True)``. A hub name refused for want of that
says so, naming these ways (`wb.load_model`'s own message names only the code's).
"""

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
    """Pick an embedded model, a local checkpoint folder or a hub name and load it with
    progress.

    Args:
        model: an already loaded bridge to start with (optional).
        loader: the function that loads a name or folder (default `wb.load_model`); it
            decides about hub names itself (the "allow hub downloads" box is not shown).

    Attributes:
        source: the model dropdown (embedded names, then ``"local folder or hub name..."``).
        folder: the folder path (or ``org/model`` hub name) box, shown for the last choice.
        allow_hub: the "allow hub downloads" checkbox (``allow_hub=True`` for
            `wb.load_model`), shown with `folder` when the default loader is used.
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
        options.append(("local folder or hub name…", _FOLDER))
        self.source = widgets.Dropdown(
            options=options, description="model", style=layout.DESCRIPTION
        )
        self.folder = widgets.Text(
            placeholder="/path/to/checkpoint (config.json + *.safetensors), or org/model",
            description="folder",
            style=layout.DESCRIPTION,
            layout=widgets.Layout(width="480px", display="none"),
        )
        self.allow_hub = widgets.Checkbox(
            value=False,
            description="allow hub downloads",
            indent=False,
            tooltip="load an org/model name from the Hugging Face hub (needs a network)",
            layout=widgets.Layout(width="auto", display="none"),
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
                layout.row(
                    self.source, self.folder, self.allow_hub, self.load_button, self.progress
                ),
                self.status,
            )
        ]
        if model is not None:
            # The dropdown shows what is loaded, so that Load reloads it, not another.
            from ..models import model_name

            name = model_name(model)
            if name in [value for _, value in options]:
                self.source.value = name
            else:
                # A model built in code has no name to reload: the folder box stays empty
                # (the dropdown showed the first embedded model, which Load then loaded).
                self.source.value = _FOLDER
                self.folder.value = name or ""
            self.progress.value = 3
            self.progress.bar_style = "success"
            made = "" if name else " (built in code: type a folder or pick a model to load one)"
            self._say(f"ready: {describe(model)}{made}", "ok")

    def _on_source(self, change: dict) -> None:
        shown = "" if change["new"] == _FOLDER else "none"
        self.folder.layout.display = shown
        # A loader of one's own takes only the name: the box would change nothing.
        self.allow_hub.layout.display = shown if self._loader is None else "none"

    def on_load(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(model)`` after every successful load."""
        self._listeners.append(callback)

    @property
    def target(self) -> str:
        """The name or folder that `load` will load."""
        return self.folder.value.strip() if self.source.value == _FOLDER else self.source.value

    def load(self) -> Any:
        """Load the selected model (progress 0 -> 3), then notify the listeners.

        What the loader returns is checked first (`check_model`); if a listener (a panel)
        then refuses the model, the previous model is given back to every listener and
        kept as `model`, and the error is shown. (With no previous model there is nothing
        to give back: the new one stays `model`, with the panels that took it.)"""

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
                    model = self._load_default(target)
                try:
                    # None (a loader without `return`) was handed to every panel as the model
                    if check_model(model) is None:
                        raise WorkbenchError("no model")
                except WorkbenchError:
                    raise WorkbenchError(
                        f"loading {target} gave a {type(model).__name__}, not a loaded model",
                        "make the loader return a model as wb.load_model does",
                    ) from None
                self.progress.value = 2
                self._notify(model, target)
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

    def _load_default(self, target: str) -> Any:
        """`wb.load_model(target)`, with ``allow_hub`` from the checkbox; a hub name it
        refuses is refused with the fix the panel offers (its own message names only
        ``load_model(..., allow_hub=True)``, which the panel never calls)."""
        from ..models import load_model

        hub = bool(self.allow_hub.value)
        try:
            return load_model(target, allow_hub=hub)
        except WorkbenchError as e:
            if hub or "allow_hub" not in (e.fix or ""):
                raise
            if e.problem.startswith("unknown model"):
                fix = (
                    "pick an embedded model in the model list, or choose 'local folder or "
                    "hub name…' and type a checkpoint folder (with config.json), or a hub "
                    "name 'org/model' with 'allow hub downloads' ticked"
                )
            else:
                fix = (
                    "pick an embedded model in the model list or type a local folder; to "
                    f"download {target} instead, tick 'allow hub downloads' and press Load "
                    f"again (in code: wb.load_model({target!r}, allow_hub=True); or run "
                    "os.environ['WORKBENCH_ALLOW_HUB'] = '1' in the notebook before loading)"
                )
            raise WorkbenchError(e.problem, fix) from None

    def _notify(self, model: Any, target: str) -> None:
        """Make `model` the model and hand it to every listener; if one refuses it, hand
        the previous model back to every listener and raise a `WorkbenchError`."""
        previous = self.model
        self.model = model
        try:
            for cb in self._listeners:
                cb(model)
        except Exception as e:
            problem = f"a panel refused {target}: {type(e).__name__}: {e}"
            if previous is None:  # nothing to give back
                raise WorkbenchError(
                    problem,
                    f"{describe(model)} is loaded, but not in that panel; fix the panel "
                    "or load another model",
                ) from e
            self.model = previous
            unrestored = []
            for cb in self._listeners:
                try:
                    cb(previous)
                except Exception as again:
                    unrestored.append(f"{type(again).__name__}: {again}")
            if unrestored:
                problem += f" (and the previous model too: {unrestored[0]})"
            raise WorkbenchError(
                problem, f"{describe(previous)} is still in use; load another model"
            ) from e


def describe(model: Any) -> str:
    from ..models import model_name

    cfg = model.cfg
    name = model_name(model) or type(model).__name__
    return f"{name}: {cfg.n_layers} layers x {cfg.n_heads} heads"
