"""The panels' common parts: chart widgets draw offline in the workbench look, and
building panels changes no altair global."""

from __future__ import annotations

import altair as alt
import pandas as pd

from workbench import ui as panels
from workbench.viz import style


def _tiny_chart() -> alt.Chart:
    df = pd.DataFrame({"x": [0, 1, 2], "y": [1.0, 3.0, 2.0]})
    return alt.Chart(df).mark_line().encode(x="x:Q", y="y:Q")


def test_building_panels_leaves_altair_globals_alone(altair_globals):
    panels.RhythmPanel(prompt="2 + 2 =")
    panels.HeadPicker(4, 2)
    panels.ModelPanel(loader=lambda name: None)
    assert (alt.theme.active, alt.renderers.active) == altair_globals


def test_chart_widgets_leave_altair_globals_alone(altair_globals):
    panels.chart_widget(_tiny_chart())
    assert (alt.theme.active, alt.renderers.active) == altair_globals


def test_chart_widgets_are_offline_svg_jupytercharts(altair_globals):
    w = panels.chart_widget(_tiny_chart())
    assert isinstance(w, alt.JupyterChart)
    assert w.embed_options["renderer"] == "svg"
    assert w.spec["mark"]["type"] == "line"
    assert w.spec["config"]["font"] == style.FONT  # in the workbench look
    # offline: the Vega bundle is inlined into the widget's module, no CDN import
    assert "cdn.jsdelivr" not in alt.JupyterChart._esm
    assert len(alt.JupyterChart._esm) > 100_000
    w.chart = _tiny_chart().mark_point()
    assert w.spec["mark"]["type"] == "point"
    assert w.spec["config"]["font"] == style.FONT
