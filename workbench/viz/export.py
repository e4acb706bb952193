"""Save charts offline: PNG and SVG through ``vl-convert-python`` (no browser, no network),
self-contained HTML with Vega, Vega-Lite and vega-embed inlined (no CDN), and the
Vega-Lite JSON spec.

    wb.viz.save(chart, "rhythm.png", scale=2)
    wb.viz.save(chart, "rhythm.html")          # opens offline in any browser
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, no_type_check

import altair as alt

from .._io import as_path, atomic_write_bytes, atomic_write_text, make_folder
from ..errors import WorkbenchError
from .frame import CONTROL_PICTURES

__all__ = ["FORMATS", "save", "to_html"]

FORMATS = ("png", "svg", "html", "json")


class _ScriptSafe(json.JSONEncoder):
    """JSON that can stand inside a ``<script>`` element: every ``<`` (found only inside
    strings in JSON) becomes ``\\u003c``, the same string to a JSON or JavaScript reader,
    so a token such as ``</script>`` or ``<!--`` in the data cannot end the element or
    change how the HTML parser reads it."""

    def encode(self, o: Any) -> str:
        return super().encode(o).replace("<", "\\u003c")


#: C0 control characters but tab, newline and carriage return: vl-convert aborts the whole
#: process (a Rust panic that cannot unwind, the kernel dies) on text holding one.
_CONTROLS = {c: p for c, p in CONTROL_PICTURES.items() if c < 0x20 and chr(c) not in "\t\n\r"}


def _drawable(spec: Any) -> Any:
    """`spec` with every control character in its strings replaced by its control picture
    (``\\x0c`` -> ``␌``), so that text from a model can be drawn to PNG or SVG."""
    if isinstance(spec, str):
        return spec.translate(_CONTROLS)
    if isinstance(spec, dict):
        return {k: _drawable(v) for k, v in spec.items()}
    if isinstance(spec, list):
        return [_drawable(v) for v in spec]
    return spec


@no_type_check  # validates its arguments itself, with messages that name the fix
def to_html(chart: alt.TopLevelMixin) -> str:
    """The chart as one self-contained HTML page (the JavaScript libraries are inlined).

    The spec, data included, is written script-safe: text from a model (tokens, a
    response) is never read by the browser as markup."""
    if not isinstance(chart, alt.TopLevelMixin):
        raise WorkbenchError(
            f"expected an altair chart, got {type(chart).__name__}",
            "pass a chart from wb.viz (e.g. wb.viz.rhythm_curves(analysis))",
        )
    return chart.to_html(inline=True, json_kwds={"cls": _ScriptSafe})


@no_type_check  # validates its arguments itself, with messages that name the fix
def save(
    chart: Any,
    path: str | os.PathLike,
    *,
    format: str | None = None,
    scale: float = 1.0,
) -> Path:
    """Save `chart` to `path`, offline.

    Args:
        chart: any altair chart (``Chart``, ``LayerChart``, ``VConcatChart``...).
        path: the file to write; its suffix picks the format unless `format` is given.
            A folder (an existing one, or a path ending in ``/``) is refused.
        format: ``"png"``, ``"svg"``, ``"html"`` (self-contained) or ``"json"`` (the spec).
            PNG and SVG are drawn by vl-convert, which cannot draw control characters
            (``\\x00``..``\\x1f`` but tab, newline and carriage return): any in the chart's
            text is drawn as its control picture (``\\x0c`` as ``␌``).
        scale: pixel scale factor for PNG (2 = sharp on high-DPI screens). The other
            formats have no pixel size, so for them it must stay 1.

    Returns:
        The path written.
    """
    folder = isinstance(path, str) and path.endswith(("/", os.sep))
    path = as_path(path, "viz.save's path", "file", "rhythm.png")
    if folder or path.is_dir():  # "charts/" was saved as the file "charts", or refused
        raise WorkbenchError(  # for its suffix; an existing folder failed at the write
            f"viz.save's path {str(path)!r} is a folder, not a file",
            f"name the file to write in it, e.g. {str(path / 'rhythm.png')!r}",
        )
    if format is not None and not isinstance(format, str):
        raise WorkbenchError(
            f"format must be a string, got {type(format).__name__}",
            f"pass one of {list(FORMATS)}, or None to read it off the path",
        )
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise WorkbenchError(
            f"cannot save a chart as {fmt or 'a file without a suffix'!r}",
            f"use a path ending in one of {['.' + f for f in FORMATS]}, or pass format=",
        )
    if not isinstance(chart, alt.TopLevelMixin):
        raise WorkbenchError(
            f"expected an altair chart, got {type(chart).__name__}",
            "pass a chart from wb.viz (e.g. wb.viz.rhythm_curves(analysis))",
        )
    from .. import _validate

    _validate.number("scale", scale, low=0, high=16, low_open=True, example=2)
    if fmt != "png" and scale != 1:
        raise WorkbenchError(
            f"scale={scale} applies to PNG only; a {fmt.upper()} chart has no pixel size",
            "drop scale=, or save to a path ending in .png",
        )
    make_folder(path.parent, "the chart's folder", "save into a folder you can write to")
    if fmt == "html":
        data: str | bytes = to_html(chart)
    elif fmt == "json":
        data = chart.to_json()
    else:
        import vl_convert as vlc

        spec = _drawable(chart.to_dict(format="vega-lite"))
        data = vlc.vegalite_to_png(spec, scale=scale) if fmt == "png" else vlc.vegalite_to_svg(spec)
    try:
        if isinstance(data, bytes):
            atomic_write_bytes(path, data)
        else:
            atomic_write_text(path, data)
    except OSError as e:
        raise WorkbenchError(
            f"cannot write the chart to {path}: {e.strerror or e}",
            "save into a folder you can write to",
        ) from None
    return path
