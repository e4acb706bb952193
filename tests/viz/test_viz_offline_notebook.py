"""Charts shown in a notebook cell draw with no network, in JupyterLab and in the page
``jupyter nbconvert --to html`` writes from the saved notebook.

They were altair ``JupyterChart`` widgets: nbconvert drew a saved widget with the widget
manager from unpkg (and anywidget's module), so the exported page of an executed notebook
showed no chart offline. Now each is a ``text/html`` output with Vega inlined.
"""

from __future__ import annotations

import json
import re

import altair as alt
import pandas as pd
import pytest

import workbench as wb
from workbench.viz import offline

WIDGET = "application/vnd.jupyter.widget-view+json"


def _chart(text: str = "a </script> <b> & \x0c") -> alt.TopLevelMixin:
    df = pd.DataFrame({"x": range(20), "y": range(20), "t": [text] * 20})
    line = alt.Chart(df).mark_line().encode(x="x:Q", y="y:Q", tooltip="t:N")
    return line & line.mark_point()


def _bundle(chart) -> dict:
    out = chart._repr_mimebundle_()
    return out[0] if isinstance(out, tuple) else out


def test_a_notebook_chart_is_html_with_vega_inlined_not_a_widget(altair_globals):
    wb.viz.enable_offline()
    bundle = _bundle(_chart())
    assert WIDGET not in bundle, "a saved widget needs unpkg in nbconvert's page"
    page = bundle["text/html"]
    assert not re.search(r"<script[^>]*\bsrc=", page), "no script is loaded from anywhere"
    assert "window.vegaEmbed=" in page.replace(" ", ""), "vega-embed is inlined"
    # one <script>, which the model's text cannot end early
    assert page.lower().count("<script") == 1 and page.lower().count("</script") == 1
    assert "\\u003c/script>" in page
    assert bundle["text/plain"] == f"<{offline.PLACEHOLDER}>"


def test_the_chart_html_carries_the_validated_spec(altair_globals):
    wb.viz.enable_offline()
    chart = _chart()
    page = _bundle(chart)["text/html"]
    spec = chart.to_dict()
    written = re.search(r"__workbenchVegaEmbed\(el, (\{.*\}), (\{.*\})\)\.catch", page).group(1)
    assert json.loads(written) == spec


@pytest.mark.slow
@pytest.mark.browser
def test_two_chart_outputs_on_one_page_both_draw_offline(altair_globals, tmp_path):
    """nbconvert puts every output on one page: the second copy of the bundle must not
    redeclare the first one's top-level ``const``s (a SyntaxError) nor need a network."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
    from test_lab_widgets_browser import open_offline, require_chromium

    require_chromium()
    wb.viz.enable_offline()
    body = "<p>between</p>".join(_bundle(c)["text/html"] for c in [_chart(), _chart("x")])
    page_path = tmp_path / "page.html"
    page_path.write_text(f"<!DOCTYPE html><html><body>{body}</body></html>", encoding="utf-8")
    _, errors, requests = open_offline(
        page_path,
        "document.querySelectorAll('.workbench-chart svg.marks,"
        " .workbench-chart canvas').length >= 2",
        60_000,
    )
    assert not errors, errors
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requests), requests
