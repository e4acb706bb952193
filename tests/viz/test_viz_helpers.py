"""Fast tests of the chart helpers that need no model: pooling, wrapping, export checks."""

from __future__ import annotations

import json
import math
import re

import altair as alt
import pandas as pd
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.viz import charts, export, style
from workbench.viz.maps import MAX_CELLS, pool, pool_bin


@pytest.mark.parametrize(
    ("rows", "cols", "max_cells", "expected"),
    [
        pytest.param(10, 20, 5000, 1, id="small-map-is-exact"),
        pytest.param(50, 100, 5000, 1, id="exactly-at-the-limit"),
        pytest.param(51, 100, 5000, 2, id="one-row-over-pools-by-2"),
        pytest.param(512, 600, 5000, 8, id="long-trace"),
        pytest.param(3, 4000, 100, 40, id="very-wide"),
    ],
)
def test_pool_bin_is_the_smallest_block_that_fits(rows, cols, max_cells, expected):
    b = pool_bin(rows, cols, max_cells)
    assert b == expected
    assert math.ceil(rows / b) * math.ceil(cols / b) <= max_cells
    if b > 1:
        assert math.ceil(rows / (b - 1)) * math.ceil(cols / (b - 1)) > max_cells


def test_pool_is_the_block_mean_and_handles_partial_blocks():
    torch.manual_seed(0)
    x = torch.rand(2, 7, 5)
    out = pool(x, 3)
    assert out.shape == (2, 3, 2)
    assert torch.allclose(out[:, 0, 0], x[:, 0:3, 0:3].mean((1, 2)))
    assert torch.allclose(out[:, 2, 1], x[:, 6:7, 3:5].mean((1, 2)))  # partial corner block
    assert torch.allclose(out[:, 1, 1], x[:, 3:6, 3:5].mean((1, 2)))
    assert torch.equal(pool(x, 1), x)


def test_pool_is_linear_so_group_maps_can_be_pooled_per_head():
    torch.manual_seed(1)
    x = torch.rand(4, 30, 45)
    assert torch.allclose(pool(x, 4).mean(0), pool(x.mean(0, keepdim=True), 4)[0], atol=1e-6)


def test_pool_bin_rejects_empty_maps():
    with pytest.raises(WorkbenchError, match="empty"):
        pool_bin(0, 10)


def test_display_token_shows_whitespace_and_never_empty():
    assert charts.display_token("a\nb") == "a↵b"
    assert charts.display_token("\t") == "→"
    assert charts.display_token("") == "∅"
    assert charts.display_token(" the") == " the"
    # A Windows line end is one newline; a lone carriage return is shown, not hidden.
    assert charts.display_token("\r\n") == "↵" and charts.display_token("\r") == "␍"


def test_wrap_tokens_breaks_at_width_and_after_newlines():
    tokens = ["Hello", " world", "!\n", "Next", " line", " is", " here"]
    labels = [charts.display_token(t) for t in tokens]
    lay = charts.wrap_tokens(labels, tokens, line_chars=12)
    assert [line for line, _, _ in lay] == [0, 0, 1, 2, 2, 2, 3]
    assert lay[0] == (0, 0, 5) and lay[1] == (0, 5, 11)
    for (_line, x0, x1), label in zip(lay, labels, strict=True):
        assert x1 - x0 == charts.cells(label) == len(label)
        assert x1 <= 12 or x0 == 0  # only a token longer than a line may overflow
    assert lay[3][1] == 0  # the token after a newline starts its line


def test_wrap_tokens_keeps_paragraph_breaks_and_gives_wide_characters_two_cells():
    tokens = ["First", ".\n\n", "Then", "\n\n\n\n", "答案", "是", "四十二", "\u0301"]
    labels = [charts.display_token(t) for t in tokens]
    lay = charts.wrap_tokens(labels, tokens, line_chars=10)
    # A blank line after a paragraph break (one, however many newlines).
    assert [line for line, _, _ in lay] == [0, 0, 2, 2, 4, 4, 5, 5]
    # Chinese characters take two monospace cells: 四十二 (6 cells) no longer fits after
    # 答案是 (6 cells), though its 3 characters would.
    assert lay[4] == (4, 0, 4) and lay[5] == (4, 4, 6) and lay[6] == (5, 0, 6)
    assert lay[7] == (5, 6, 7)  # a lone combining mark still gets a cell
    assert charts.cells("é") == 1 and charts.cells("ＡＢ") == 4


def test_wrap_tokens_rejects_zero_width():
    with pytest.raises(WorkbenchError, match="line_chars"):
        charts.wrap_tokens(["a"], ["a"], 0)


def _tiny_chart() -> alt.Chart:
    df = pd.DataFrame({"x": [0, 1, 2], "y": [1.0, 3.0, 2.0]})
    return alt.Chart(df).mark_line().encode(x="x:Q", y="y:Q")


def test_export_writes_png_svg_json_and_self_contained_html(tmp_path):
    chart = _tiny_chart()
    png = export.save(chart, tmp_path / "c.png", scale=2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = export.save(chart, tmp_path / "c.svg").read_text()
    assert svg.lstrip().startswith("<svg") and "</svg>" in svg
    spec = export.save(chart, tmp_path / "sub" / "c.json").read_text()
    assert '"mark"' in spec and "vega-lite" in spec
    html = export.save(chart, tmp_path / "c.html").read_text()
    assert "<script src=" not in html  # nothing loaded from elsewhere
    assert "cdn.jsdelivr" not in html and "unpkg.com" not in html
    assert "vegaEmbed" in html and len(html) > 500_000  # the libraries are inlined
    assert export.to_html(chart) == html


def test_model_text_in_the_data_cannot_end_the_pages_script():
    """A token is any text: ``</script>`` (or ``<!--``) in a chart's data used to end the
    page's script element there, and the rest of the token ran as the page's code. The
    spec is now written with every ``<`` escaped, and reads back as the same data."""
    evil = "</script><script>alert(1)</script><!--"
    chart = alt.Chart(pd.DataFrame({"token": [evil, "x"], "v": [1, 2]})).mark_text()
    chart = chart.encode(text="token:N", x="v:Q")
    html = export.to_html(chart)
    plain = export.to_html(_tiny_chart())
    assert html.count("</script") == plain.count("</script")  # only the page's own
    assert "<script>alert" not in html and "<!--" not in html.split("const spec = ")[1]
    spec = json.loads(re.search(r"const spec = (\{.*?\});\n", html, re.DOTALL).group(1))
    (rows,) = spec["datasets"].values()
    assert [r["token"] for r in rows] == [evil, "x"]


def test_export_names_the_supported_formats(tmp_path):
    with pytest.raises(WorkbenchError, match="cannot save a chart as 'pdf'"):
        export.save(_tiny_chart(), tmp_path / "c.pdf")
    with pytest.raises(WorkbenchError, match="expected an altair chart"):
        export.save({"mark": "line"}, tmp_path / "c.svg")


@pytest.mark.parametrize("suffix", ["svg", "html", "json"])
def test_export_refuses_a_pixel_scale_for_formats_without_pixels(tmp_path, suffix):
    """``scale=`` sizes PNG pixels only; it used to be ignored for the other formats, and
    ``scale=-1`` passed without a word."""
    with pytest.raises(WorkbenchError, match="applies to PNG only"):
        export.save(_tiny_chart(), tmp_path / f"c.{suffix}", scale=2)
    with pytest.raises(WorkbenchError, match="scale"):
        export.save(_tiny_chart(), tmp_path / f"c.{suffix}", scale=-1)
    assert not (tmp_path / f"c.{suffix}").exists()
    assert export.save(_tiny_chart(), tmp_path / f"c.{suffix}", scale=1.0).exists()


def test_enable_theme_is_the_explicit_global_switch(altair_globals):
    style.enable_theme()
    assert alt.theme.active == style.THEME
    cfg = _tiny_chart().to_dict()["config"]
    assert cfg["font"] == style.FONT
    style.disable_theme()
    assert alt.theme.active == "default"


def _charts() -> list:
    df = pd.DataFrame({"x": [0, 1, 2], "y": [1.0, 3.0, 2.0]})
    base = alt.Chart(df).encode(x="x:Q", y="y:Q")
    return [
        _tiny_chart(),
        _tiny_chart().configure_axis(labelFontSize=20).configure_view(stroke="red"),
        alt.layer(base.mark_line(), base.mark_point()).properties(title="layered"),
        base.mark_line() | base.mark_bar(),
    ]


@pytest.mark.parametrize("i", range(4), ids=["single", "own-config", "layer", "hconcat"])
def test_themed_charts_look_as_under_the_theme_and_change_no_global(altair_globals, i):
    chart = _charts()[i]
    plain = chart.to_dict()
    out = style.themed(chart)
    # nothing global changed, and the input chart is untouched
    assert (alt.theme.active, alt.renderers.active) == altair_globals
    assert chart.to_dict() == plain
    with style.use_theme():
        assert alt.theme.active == style.THEME
        under_theme = chart.to_dict()
    assert (alt.theme.active, alt.renderers.active) == altair_globals
    assert out.to_dict() == under_theme
    cfg = out.to_dict()["config"]
    assert cfg["font"] == style.FONT and cfg["title"]["anchor"] == "start"
    if i == 1:  # the chart's own settings win over the theme's, as with the altair theme
        assert cfg["axis"]["labelFontSize"] == 20 and cfg["view"]["stroke"] == "red"
        assert cfg["axis"]["gridColor"] == style.theme_config()["axis"]["gridColor"]


def test_use_theme_restores_the_previous_theme_on_error(altair_globals):
    alt.theme.enable("dark")
    with pytest.raises(RuntimeError), style.use_theme():
        assert alt.theme.active == style.THEME
        raise RuntimeError
    assert alt.theme.active == "dark"


def test_max_cells_is_altairs_row_limit():
    assert MAX_CELLS == 5000


def test_progress_chart_refuses_rows_it_cannot_chart():
    from workbench.viz import progress_chart

    assert progress_chart([{"step": 0, "reward": 0.5}, {"step": 1, "eval_accuracy": None}])
    for rows, match in [
        (None, "rows must be a list"),  # raw TypeError
        ("abc", "rows must be a list"),  # an empty chart
        ({"step": 0, "reward": 0.5}, "rows must be a list"),  # its keys were read as rows
        ([1, 2], "not a metric row"),
        ([{"reward": 0.5}], "no step"),  # KeyError
        ([{"step": 0, "reward": "x"}], "not a number"),  # charted as nothing
        ([{"step": float("nan"), "reward": 0.5}], "step=nan, not a finite number"),  # dropped
    ]:
        with pytest.raises(WorkbenchError, match=match) as e:
            progress_chart(rows)
        assert e.value.fix


def test_export_refuses_bad_paths_formats_and_charts(tmp_path):
    chart = _tiny_chart()
    for kw, match in [
        (dict(path=None), "path must be a file path"),  # raw TypeError
        (dict(path=tmp_path / "a.png", format=5), "format must be a string"),
        (dict(path="/proc/chart.json"), "cannot write the chart"),  # FileNotFoundError
    ]:
        with pytest.raises(WorkbenchError, match=match) as e:
            export.save(chart, **kw)
        assert e.value.fix
    with pytest.raises(WorkbenchError, match="expected an altair chart"):
        export.to_html(None)  # AttributeError


def test_progress_chart_spans_0_to_1_or_the_rewards_beyond():
    """A verifiable reward and an accuracy lie in 0..1, so the axis does; a task whose
    reward leaves that range (a format penalty) widens it, since points outside a fixed
    0..1 were drawn past the axis, over the title and legend."""
    from workbench.viz import progress_chart

    def domain(rows):
        return progress_chart(rows).to_dict()["layer"][0]["encoding"]["y"]["scale"]["domain"]

    assert domain([]) == [0.0, 1.0]
    assert domain([{"step": 0, "reward": 0.25}, {"step": 1, "eval_accuracy": 0.5}]) == [0.0, 1.0]
    assert domain([{"step": 0, "reward": -0.5}, {"step": 1, "reward": 1.5}]) == [-0.5, 1.5]
