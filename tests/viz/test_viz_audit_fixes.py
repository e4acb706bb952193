"""Charts and the report on the shipped tiny reasoner: what they drew wrong or refused
without need (the report page's merged colour scales, a report of an analysis without
entropies, a head listed twice, a legend labelled NaN, tooltips that rounded small values
to 0, fractional positions on the curves' axis, a folder given as a chart's path, a
right-to-left override in the text turning the report's lines around)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.viz import charts, export
from workbench.viz.frame import value_text
from workbench.viz.maps import attention_maps

pytestmark = pytest.mark.slow

PROMPT = "Use 3 5 7 to make 22"
RESPONSE = "3*5=15\n15+7=22\nanswer: 3*5+7"


@pytest.fixture(scope="module")
def trace(tiny):
    return wb.Trace.from_text(tiny, PROMPT, RESPONSE)


@pytest.fixture(scope="module")
def analysis(tiny, trace):
    return wb.analyze(tiny, trace)


def _page_spec(page: str) -> dict:
    """The Vega-Lite spec that altair's HTML page embeds (``const spec = {...};``)."""
    start = page.index("const spec = ") + len("const spec = ")
    return json.JSONDecoder().raw_decode(page, start)[0]


def test_report_page_gives_each_chart_its_own_colour_scale(tiny, trace, analysis, tmp_path):
    """The page concatenated the charts with altair's default, shared colour scales: the
    text's FAI, both attention maps and the heads' span were drawn on one merged
    yellow-red scale (the maps not grey, the span not viridis) with one legend titled
    "fai, attention, ..."; the two maps shared one domain, unlike their own legends."""
    import vl_convert as vlc

    from workbench.report import write_report

    page = write_report(tiny, trace, analysis, tmp_path / "report").read_text()
    vega = vlc.vegalite_to_vega(_page_spec(page))
    schemes = sorted(
        s["range"]["scheme"]
        for s in vega["scales"]
        if isinstance(s.get("range"), dict) and "scheme" in s["range"]
    )
    assert schemes == ["greys", "greys", "viridis", "yelloworangered"]


def test_report_of_an_analysis_without_entropies_is_written(tiny, trace, tmp_path):
    """``write_report`` always drew the entropy curve, so an analysis made with
    ``entropy=False`` failed the whole report; it now leaves that curve out."""
    from workbench.report import write_report

    bare = wb.analyze(tiny, trace, entropy=False)
    page = write_report(tiny, trace, bare, tmp_path / "report")
    assert page.exists() and (page.parent / "rhythm.png").exists()
    assert "token entropy" not in _page_spec(page.read_text()).__repr__()


def test_a_head_listed_twice_counts_once_in_a_map(tiny, trace):
    """``[(0, 1), (0, 1), (0, 2)]`` weighed head (0, 1) twice in the mean and was titled
    "mean of 3 heads"; it is the mean of two heads."""
    maps = attention_maps(tiny, trace, heads=[(0, 1), (0, 2)])
    np.testing.assert_allclose(maps.group([(0, 1), (0, 1), (0, 2)]), maps.group([(0, 1), (0, 2)]))
    d = charts.attention_map(maps, [(0, 1), (0, 1), (0, 2)]).to_dict()
    assert d["title"]["text"] == "Attention map: mean of 2 heads"
    ref = charts.attention_map(maps, [(0, 1), (0, 2)]).to_dict()
    assert d["datasets"] == ref["datasets"]
    d = charts.attention_map(maps, [(0, 1), (0, 1)]).to_dict()
    assert d["title"]["text"] == "Attention map: layer 0 head 1"


def test_a_head_pair_holding_a_float_is_named_whole(tiny, trace):
    """``heads=(0, 1.5)`` was read as a list of two heads and refused as "0 is not a
    (layer, head) pair", naming neither the pair nor the float."""
    maps = attention_maps(tiny, trace, heads=[(0, 1)])
    with pytest.raises(WorkbenchError, match=r"\(0, 1.5\) is not a \(layer, head\) pair"):
        charts.attention_map(maps, (0, 1.5))
    assert (
        charts.attention_map(maps, (np.int64(0), 1))
        .to_dict()["title"]["text"]
        .endswith("layer 0 head 1")
    )


def test_text_view_of_an_undefined_metric_has_no_nan_legend(tiny):
    """A response too short for FAI (every value NaN) drew a legend whose gradient was
    labelled "NaN", and the subtitle did not say why every token was grey; a NaN value's
    tooltip said "null"."""
    short = wb.Trace.from_text(tiny, PROMPT, "3*5")
    with pytest.warns(UserWarning, match="FAI is undefined for every token"):
        bare = wb.analyze(tiny, short)
    d = charts.text_view(bare, "fai").to_dict()
    color = d["layer"][0]["encoding"]["color"]["condition"]
    assert color["legend"] is None
    assert "undefined for every token (grey)" in d["title"]["subtitle"]
    rows = d["datasets"][d["layer"][0]["data"]["name"]]
    assert {r["value_text"] for r in rows} == {"n/a"}
    tips = {t["title"]: t["field"] for t in d["layer"][0]["encoding"]["tooltip"]}
    assert tips["fai"] == "value_text" and tips["token"] == "tip_token"


def test_text_view_says_how_many_tokens_are_undefined(analysis):
    """Tokens with an undefined value were grey with nothing on the chart saying what
    grey means."""
    n_nan = int(np.isnan(analysis.fai[analysis.prompt_len :].numpy()).sum())
    assert n_nan > 0
    d = charts.text_view(analysis, "fai").to_dict()
    assert f"grey: undefined ({n_nan} tokens)" in d["title"]["subtitle"]
    assert d["layer"][0]["encoding"]["color"]["condition"]["legend"]["title"] == "fai"
    assert "grey" not in charts.text_view(analysis, "waad").to_dict()["title"]["subtitle"]


def test_tooltip_values_keep_small_values():
    """Four decimals showed the FAI of a long trace (about 1e-4 per token) as 0.0001 or
    0.0000: tokens of different values read the same, a defined value read as 0."""
    assert value_text([1.234567e-4, 4.2e-5, 7.48481, float("nan")]) == [
        "0.0001235",
        "4.2e-05",
        "7.485",
        "n/a",
    ]


def test_curve_axis_ticks_only_whole_positions(tiny):
    """A response of three tokens had x ticks at 0.1, 0.2, ..., positions with no token."""
    short = wb.Trace.from_text(tiny, PROMPT, "3*5")
    with pytest.warns(UserWarning):
        bare = wb.analyze(tiny, short)
    d = charts.rhythm_curves(bare).to_dict()
    for panel in d["vconcat"]:
        axis = panel["layer"][0]["encoding"]["x"]["axis"]
        assert axis["tickMinStep"] == 1 and axis["format"] == "d"


def test_save_refuses_a_folder_for_a_path(tmp_path):
    """``save(chart, "charts/")`` was refused for a missing suffix, ``"out.png/"`` wrote
    the file ``out.png``, and an existing folder ``x.png`` failed at the write ("Is a
    directory"); each is now named as a folder, with a file path to pass."""
    import altair as alt
    import pandas as pd

    chart = alt.Chart(pd.DataFrame({"x": [0, 1]})).mark_point().encode(x="x:Q")
    (tmp_path / "x.png").mkdir()
    for path in (f"{tmp_path}/charts/", f"{tmp_path}/out.png/", tmp_path / "x.png", tmp_path):
        with pytest.raises(WorkbenchError, match="is a folder, not a file") as e:
            export.save(chart, path)
        assert "rhythm.png" in e.value.fix
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "charts").exists()


def test_report_shows_bidi_controls_in_the_text_as_codes(tiny, tmp_path):
    """A right-to-left override (U+202E) in the prompt or response turned the rest of its
    line around on the report page ("reversed" showed as "desrever")."""
    from workbench.report import _text_html, write_report

    assert (
        _text_html("a \u202ereversed\u202c <b>")
        == "a &lt;U+202E&gt;reversed&lt;U+202C&gt; &lt;b&gt;"
    )
    with pytest.warns(wb.trace.UnknownTokensWarning):
        trace = wb.Trace.from_text(tiny, "Use 3 5 \u202e7 to make 22", RESPONSE)
    analysis = wb.analyze(tiny, trace)
    page = write_report(tiny, trace, analysis, tmp_path / "report").read_text()
    intro = page[page.index("<h1>") :]
    intro = intro[: intro.index("</div>")]
    assert "\u202e" not in intro and "&lt;U+202E&gt;7 to make 22" in intro
