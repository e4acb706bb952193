"""The panels' common parts: chart widgets draw offline in the workbench look, and
building panels changes no altair global."""

from __future__ import annotations

import altair as alt
import pandas as pd

from workbench import ui as panels
from workbench.errors import WorkbenchError
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


def test_an_old_error_does_not_stay_beside_a_later_success():
    """A callback that fails shows its error; the next one that succeeds clears it, even
    when it says nothing itself (a view change redrawing the last good results)."""
    p = panels.Panel()

    def fail():
        raise WorkbenchError("size=32 is too large", "pass a smaller size")

    p._guard(fail)
    assert "size=32" in p.status.value and p.last_error is not None
    assert p._guard(lambda: 7) == 7
    assert "size=32" not in p.status.value and p.last_error is None


def test_the_model_panel_shows_the_model_it_was_given(toy_llama):
    """`ModelPanel(model)` selects the given model's folder (it showed the first embedded
    name, so pressing Load reloaded another model); a model loaded by name selects it."""
    from workbench.models import model_name

    folder = model_name(toy_llama)
    assert folder is not None
    m = panels.ModelPanel(toy_llama, loader=lambda name: toy_llama)
    assert (m.target, m.folder.layout.display) == (folder, "")
    assert "ready" in m.status.value
