"""Draw altair charts in a notebook with no network: an explicit, session-wide switch.

A chart shown in a notebook cell is a ``text/html`` output that carries Vega, Vega-Lite
and vega-embed inlined (vl-convert's bundle) and its spec: it draws, with its tooltips and
selections, in JupyterLab and in the page ``jupyter nbconvert --to html`` writes from the
saved notebook, with no network either way. altair's ``JupyterChart`` widget did not
survive the saved notebook: nbconvert drew it with the widget manager from unpkg, so the
exported page showed no chart offline. The panels (`workbench.ui`) keep their widgets:
their selections talk to Python.
"""

from __future__ import annotations

import functools
import html
import json
import uuid
from typing import Any

import altair as alt

from . import style

__all__ = ["RENDERER", "chart_html", "enable_offline"]

#: The altair renderer `enable_offline` turns on.
RENDERER = "workbench"

#: What a notebook shows where it runs no script: nbconvert's text output, or JupyterLab's
#: view of a saved notebook it does not trust (scripts stripped until the cells run again).
PLACEHOLDER = "altair chart: run the cell (or trust the notebook) to draw it"

#: vega-embed's menu without the entries that open a web page (the Vega editor).
_EMBED_OPTIONS = {"mode": "vega-lite", "actions": {"export": True, "source": False,
                  "compiled": False, "editor": False}}  # fmt: skip


@functools.lru_cache(maxsize=1)
def _bundle() -> str:
    """vl-convert's vega-embed bundle (Vega, Vega-Lite, vega-embed) for altair's Vega-Lite
    version, wrapped to run once per page: a second copy in a later output neither runs
    again nor redeclares the bundle's top-level ``const``s (a SyntaxError in a page that
    holds two of them as plain scripts)."""
    from altair.utils._importers import import_vl_convert, vl_version_for_vl_convert

    code = import_vl_convert().javascript_bundle(vl_version=vl_version_for_vl_convert())
    if "</script" in code.lower():  # would end the <script> element early
        raise RuntimeError("vl-convert's JavaScript bundle holds '</script'")
    return (
        "if (!window.__workbenchVegaEmbed) {\n(function () {\n"
        + code
        + ("\nwindow.__workbenchVegaEmbed = window.vegaEmbed;\n})();\n}")
    )


def chart_html(spec: dict[str, Any], embed_options: dict[str, Any] | None = None) -> str:
    """An HTML fragment that draws the Vega-Lite `spec` with no network: a ``<div>`` and
    a ``<script>`` holding the libraries inlined and the spec, written script-safe (text
    from a model, such as ``</script>``, cannot end the element)."""
    from .export import _ScriptSafe

    div = f"wb-chart-{uuid.uuid4().hex}"
    options = {**_EMBED_OPTIONS, **(embed_options or {})}
    spec_js = json.dumps(spec, cls=_ScriptSafe)
    options_js = json.dumps(options, cls=_ScriptSafe)
    return (
        f'<div id="{div}" class="workbench-chart">{html.escape(PLACEHOLDER)}</div>\n'
        f'<script type="text/javascript">\n{_bundle()}\n'
        f"(function () {{\n"
        f'  var el = document.getElementById("{div}");\n'
        f'  el.textContent = "";\n'
        f"  window.__workbenchVegaEmbed(el, {spec_js}, {options_js}).catch(function (err) {{\n"
        f'    el.textContent = "Chart error: " + err;\n'
        f"    throw err;\n"
        f"  }});\n"
        f"}})();\n</script>"
    )


def _html_renderer(spec: dict, **metadata: Any) -> dict[str, str]:
    """The chart as a self-contained ``text/html`` output (`chart_html`) and a line of text.

    altair validated `spec` (once) before calling here; nothing here validates it again
    (altair's ``jupyter`` renderer rebuilt and re-validated the chart, 6-10 s for a
    2,000-token `rhythm_curves`)."""
    return {
        "text/html": chart_html(spec, metadata.get("embed_options")),
        "text/plain": f"<{PLACEHOLDER}>",
    }


def enable_offline() -> None:
    """Draw this notebook's altair charts without a network, in the workbench look.

    Enables the ``"workbench"`` renderer: each chart is shown as HTML with Vega inlined
    (`chart_html`), so it draws in JupyterLab and in ``jupyter nbconvert --to html`` of the
    executed notebook, offline (altair 6's default renderer loads Vega from a CDN, and its
    ``JupyterChart`` widget, saved, needs unpkg in nbconvert's page). Also inlines Vega into
    any ``alt.JupyterChart`` widget and turns on the workbench theme, for the whole session:
    call it once at the top of a notebook. The panels do not need it (they theme their own
    charts). Idempotent.
    """
    alt.JupyterChart.enable_offline()
    alt.renderers.register(RENDERER, _html_renderer)
    alt.renderers.enable(RENDERER)
    style.enable_theme()
