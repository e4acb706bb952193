"""Chart builders on a real analysis of a short trace (SmolLM2): data and encodings.

Each chart's embedded data is checked against the `Analysis` it was built from: the marked
tokens are exactly the preplan/anchor sets, the coloured values are the metric, the map
cells are the mean attention of the head group read straight from ``hook_pattern``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.viz import charts
from workbench.viz.maps import attention_maps

pytestmark = pytest.mark.slow

PROMPT = "What is 17 * 23?"
RESPONSE = "17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.\nSo the answer is 391."


@pytest.fixture(scope="module")
def trace(smol):
    return wb.Trace.from_text(smol, PROMPT, RESPONSE)


@pytest.fixture(scope="module")
def analysis(smol, trace):
    return wb.analyze(smol, trace)


@pytest.fixture(scope="module")
def maps(smol, trace):
    return attention_maps(smol, trace)


def _layers(chart) -> list[dict]:
    return chart.to_dict()["layer"]


def _rows(spec: dict, chart_dict: dict) -> list[dict]:
    """The inline rows of a (sub)spec, resolved through the top-level datasets."""
    return chart_dict["datasets"][spec["data"]["name"]]


def json_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _nan_equal(a, b) -> bool:
    a = np.array([np.nan if v is None else v for v in a], dtype=float)
    return np.allclose(a, np.asarray(b, dtype=float), equal_nan=True)


# -- attention map ---------------------------------------------------------------------------


def test_local_map_is_the_mean_local_pattern_over_response_rows(smol, trace, analysis, maps):
    chart = charts.attention_map(maps, "local", analysis=analysis)
    d = chart.to_dict()
    cells = d["layer"][0]
    assert cells["mark"]["type"] == "rect"
    enc = cells["encoding"]
    assert (enc["x"]["field"], enc["x2"]["field"], enc["y"]["field"], enc["y2"]["field"]) == (
        "k0",
        "k1",
        "q0",
        "q1",
    )
    assert enc["color"]["field"] == "attention"
    assert enc["y"]["scale"]["reverse"] is True
    rows = _rows(d, d)
    assert maps.bin == 1 and len(rows) <= 5000
    n, p = len(trace), trace.prompt_len
    # exact map: one cell per (query in the response, key <= query)
    assert len(rows) == sum(t + 1 for t in range(p, n))
    assert {r["q0"] for r in rows} == set(range(p, n))
    assert all(r["k0"] <= r["q0"] for r in rows)
    # reference: the local heads' patterns from a plain run_with_cache
    layers = sorted({layer for layer, _ in analysis.local_heads})
    _, cache = smol.run_with_cache(
        trace.ids[None], names_filter=lambda name: name.endswith("attn.hook_pattern")
    )
    ref = np.mean(
        [cache[f"blocks.{lay}.attn.hook_pattern"][0, h].numpy() for lay, h in analysis.local_heads],
        axis=0,
    )
    del cache, layers
    got = np.array([r["attention"] for r in rows])
    want = np.array([ref[r["q0"], r["k0"]] for r in rows])
    assert np.allclose(got, want, atol=1e-5)
    # hover shows the tokens of exact cells
    assert {"query", "key"} <= set(rows[0])
    assert rows[0]["query"] == charts.display_token(trace.tokens[p])


def test_one_head_and_global_group_maps(analysis, maps):
    head = analysis.global_heads[0]
    one = charts.attention_map(maps, head).to_dict()
    assert "layer" in one["title"]["text"] and str(head[0]) in one["title"]["text"]
    glob = charts.attention_map(maps, "global", analysis=analysis).to_dict()
    assert f"mean of {len(analysis.global_heads)} global heads" in glob["title"]["text"]
    vals_one = [r["attention"] for r in _rows(one, one)]
    vals_glob = [r["attention"] for r in _rows(glob, glob)]
    assert len(vals_one) == len(vals_glob) and not np.allclose(vals_one, vals_glob)


def test_maps_pool_to_the_cell_budget_and_keep_the_mass(smol, trace, analysis):
    small = attention_maps(smol, trace, heads=analysis.local_heads, max_cells=300)
    assert small.bin > 1
    d = charts.attention_map(small, "local", analysis=analysis).to_dict()
    rows = _rows(d, d)
    assert 0 < len(rows) <= 300
    assert "blocks averaged" in " ".join(d["title"]["subtitle"])
    assert "query" not in rows[0]  # no single token to show for a block
    # every response row sums to 1 => block means weighted by block sizes sum to R
    total = sum(r["attention"] * (r["q1"] - r["q0"]) * (r["k1"] - r["k0"]) for r in rows)
    assert math.isclose(total, len(trace) - trace.prompt_len, rel_tol=1e-4)


def test_map_errors_name_the_fix(analysis, maps):
    with pytest.raises(WorkbenchError, match="needs the analysis"):
        charts.attention_map(maps, "local")
    with pytest.raises(WorkbenchError, match="not a head group"):
        charts.attention_map(maps, "sideways", analysis=analysis)


def test_maps_that_cannot_fit_in_memory_are_refused_before_the_pass(make_toy):
    # Each hooked layer's [head, T, T] pattern exists whole in the bridge's forward: at
    # 131,072 tokens 275 GB, where the process was killed (a dead notebook kernel).
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    toy = make_toy(LlamaConfig, LlamaForCausalLM, max_position_embeddings=1 << 18)
    ids = torch.full((1 << 17,), 5)
    trace = wb.Trace(ids=ids, tokens=["a"] * len(ids), prompt_len=8, text="")
    with pytest.raises(WorkbenchError) as err:
        attention_maps(toy, trace, [(0, 0)])
    text = str(err.value)
    assert "attention maps of a 131,072-token trace" in text and "GB is free" in text
    assert "use a shorter trace (about" in text


def test_map_colour_scale_is_not_eaten_by_the_sink_column(analysis, maps):
    d = charts.attention_map(maps, "global", analysis=analysis).to_dict()
    cells, sink = d["layer"]
    rows = _rows(d, d)
    scale = cells["encoding"]["color"]["scale"]
    assert scale["type"] == "sqrt" and scale["clamp"] is True
    rest = [r["attention"] for r in rows if r["k0"] > 0]
    sink_vals = [r["attention"] for r in rows if r["k0"] == 0]
    assert [r["sink"] for r in rows] == [r["k0"] == 0 for r in rows]
    lo, hi = scale["domain"]
    assert lo == 0 and hi == pytest.approx(float(np.quantile(rest, 0.99)))
    # the global heads' sink takes far more than the clip of the other cells (about 74%
    # of a row here): without the clip it would own the whole colour range
    assert np.mean(sink_vals) > 5 * hi and max(rest) < max(sink_vals)
    # the sink column is outlined (its own layer over key 0, every response row)
    assert sink["mark"]["type"] == "rect" and sink["mark"]["filled"] is False
    (outline,) = _rows(sink, d)
    assert (outline["k0"], outline["k1"]) == (0, 1)
    assert (outline["q0"], outline["q1"]) == (analysis.prompt_len, len(analysis.tokens))
    assert outline["share"] == pytest.approx(np.mean(sink_vals))
    assert "sink" in " ".join(d["title"]["subtitle"]) and "clipped" in " ".join(
        d["title"]["subtitle"]
    )
    # clip_quantile=1 ends the scale at the largest non-sink cell
    full = charts.attention_map(maps, "global", analysis=analysis, clip_quantile=1.0).to_dict()
    assert full["layer"][0]["encoding"]["color"]["scale"]["domain"][1] == pytest.approx(max(rest))


def test_short_maps_label_their_ticks_with_tokens(smol, trace, analysis, maps):
    n, p = len(analysis.tokens), analysis.prompt_len
    assert n - p <= 60 < n  # rows are short, the key axis (the prompt too) is not
    d = charts.attention_map(maps, "local", analysis=analysis).to_dict()
    enc = d["layer"][0]["encoding"]
    y_axis, x_axis = enc["y"]["axis"], enc["x"].get("axis", {})
    assert y_axis["values"] == [q + 0.5 for q in range(p, n)]
    assert "labelExpr" in y_axis and "labelExpr" not in x_axis
    words = [charts.display_token(t) for t in analysis.tokens[p:n]]
    assert all(json_str(w) in y_axis["labelExpr"] for w in words)
    # response-only keys: both axes are short, and both show tokens
    short = attention_maps(smol, trace, keys="response")
    s = charts.attention_map(short, "local", analysis=analysis).to_dict()
    enc = s["layer"][0]["encoding"]
    assert "labelExpr" in enc["x"]["axis"] and "labelExpr" in enc["y"]["axis"]
    assert len(s["layer"]) == 1  # key 0 is not shown: no sink outline
    assert "outline" not in " ".join(s["title"]["subtitle"])
    # pooled maps (blocks of positions) have numeric ticks
    pooled = attention_maps(smol, trace, max_cells=300)
    b = charts.attention_map(pooled, "local", analysis=analysis).to_dict()
    assert "labelExpr" not in b["layer"][0]["encoding"]["y"].get("axis", {})


# -- WAAD / FAI curves -----------------------------------------------------------------------


def test_two_curve_charts_side_by_side_keep_their_own_pointer(analysis):
    """Both charts named their selection "hover_waad"; altair merged the two (with a
    warning), so the pointer over one chart moved the rule of the other."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the merge warned
        d = (charts.rhythm_curves(analysis) | charts.rhythm_curves(analysis)).to_dict()
    names = [p["name"] for p in d["params"] if p.get("select", {}).get("on") == "pointerover"]
    assert len(names) == 4 == len(set(names))  # WAAD and FAI, in each chart


def test_curves_mark_preplan_on_waad_and_anchors_on_fai(analysis):
    chart = charts.rhythm_curves(analysis)
    d = chart.to_dict()
    assert len(d["vconcat"]) == 2
    waad, fai = d["vconcat"]
    for panel, field in ((waad, "preplan"), (fai, "anchor")):
        line, points, marks, rule, label, hit = panel["layer"]
        assert rule["mark"]["type"] == "rule" and label["encoding"]["text"]["field"] == "label"
        # the token under the pointer (a band per token) drives a rule and its text
        # (params are lifted to the top level, naming their view)
        hover = next(p for p in d["params"] if p["views"] == [hit["name"]])
        assert hover["select"]["on"] == "pointerover" and hover["select"]["fields"] == ["t"]
        # not `nearest`: Vega-Lite's voronoi drops nominal tooltip fields ("undefined")
        assert not hover["select"].get("nearest")
        assert label["transform"] == [{"filter": {"param": hover["name"], "empty": False}}]
        assert line["mark"]["type"] == "line" and points["mark"]["type"] == "point"
        assert marks["mark"]["shape"] == "triangle-up"
        assert points["encoding"]["x"]["field"] == "t"
        assert points["encoding"]["y"]["field"] == "value"
        assert hit["mark"]["type"] == "rect" and hit["mark"]["fill"] == "transparent"
        assert (hit["encoding"]["x"]["field"], hit["encoding"]["x2"]["field"]) == ("t0", "t1")
        tips = {t["title"]: t["field"] for t in hit["encoding"]["tooltip"]}
        assert tips["token"] == "tip_token" and tips["response position"] == "t"
        rows = _rows(points, d)
        assert [r["pos"] for r in rows] == list(analysis.response)
        assert [r["t"] for r in rows] == [p - analysis.prompt_len for p in analysis.response]
        marked = [r["pos"] for r in _rows(marks, d)]
        assert marked == (analysis.preplan if field == "preplan" else analysis.anchors)
    waad_rows = _rows(waad["layer"][1], d)
    assert _nan_equal([r["value"] for r in waad_rows], analysis.waad[analysis.response].numpy())
    fai_rows = _rows(fai["layer"][1], d)
    assert _nan_equal([r["value"] for r in fai_rows], analysis.fai[analysis.response].numpy())
    assert d["resolve"]["scale"]["x"] == "shared"


def _tooltip_layers(spec: dict, top: dict, data=None):
    """(layer spec, its rows) for every (sub)spec of `spec` that encodes a tooltip; a
    layer without its own data uses its parent's."""
    data = spec.get("data", data)
    if "tooltip" in spec.get("encoding", {}):
        rows = top["datasets"][data["name"]] if data else []
        yield spec, rows
    for key in ("layer", "vconcat", "hconcat", "concat"):
        for sub in spec.get(key, []):
            yield from _tooltip_layers(sub, top, data)


@pytest.mark.parametrize("entropy", [False, True])
def test_every_tooltip_field_is_a_column_of_its_layers_data(analysis, maps, entropy):
    built = [
        charts.rhythm_curves(analysis, entropy=entropy),
        charts.text_view(analysis),
        charts.attention_map(maps, "local", analysis=analysis),
        charts.head_map(analysis),
    ]
    n_tips = 0
    for chart in built:
        d = chart.to_dict()
        for spec, rows in _tooltip_layers(d, d):
            # a layer's transforms could fold or drop columns: none may touch tooltip data
            assert not [t for t in spec.get("transform", []) if "filter" not in t], spec
            assert rows, spec
            for tip in spec["encoding"]["tooltip"]:
                n_tips += 1
                assert all(tip["field"] in r for r in rows), (tip, spec.get("mark"))
    assert n_tips > 20


def test_curve_tooltip_shows_the_token_response_position_value_and_flags(analysis):
    d = charts.rhythm_curves(analysis).to_dict()
    for panel, metric in zip(d["vconcat"], ("waad", "fai"), strict=True):
        hit = panel["layer"][-1]
        tips = [(t["title"], t["field"]) for t in hit["encoding"]["tooltip"]]
        assert tips[:2] == [("token", "tip_token"), ("response position", "t")]
        assert (metric, "value_text") in tips
        assert ("preplan", "preplan") in tips and ("anchor", "anchor") in tips
        rows = _rows(hit, d)
        for r in rows:
            assert r["t"] == r["pos"] - analysis.prompt_len and r["t1"] - r["t0"] == 1
            assert r["tip_token"] == r["label"].replace(" ", "␣") and r["tip_token"].strip()
            v = getattr(analysis, metric)[r["pos"]].item()
            assert r["value_text"] == ("n/a" if math.isnan(v) else f"{v:.4g}")
    # FAI is NaN at the end of the response: the tooltip says n/a, not a number
    fai_rows = _rows(d["vconcat"][1]["layer"][-1], d)
    assert any(r["value_text"] == "n/a" for r in fai_rows)


def test_curves_follow_post_processing_and_entropy_is_optional(analysis):
    other = analysis.with_params(window=4, top_q=0.2)
    d = charts.rhythm_curves(other, entropy=True).to_dict()
    assert len(d["vconcat"]) == 3
    ent = d["vconcat"][2]
    assert [lay["mark"]["type"] for lay in ent["layer"]] == [
        "line",
        "point",
        "rule",
        "text",
        "rect",
    ]
    assert "W = 4" in d["title"]["subtitle"]
    marked = [r["pos"] for r in _rows(d["vconcat"][0]["layer"][2], d)]
    assert marked == other.preplan and len(marked) < len(analysis.preplan)
    waad = [r["value"] for r in _rows(d["vconcat"][0]["layer"][1], d)]
    assert max(waad) <= 4 + 1e-9  # WAAD lies in [0, W]


def test_curves_crop_to_positions(analysis):
    start = analysis.prompt_len + 5
    d = charts.rhythm_curves(analysis, positions=range(start, start + 10)).to_dict()
    rows = _rows(d["vconcat"][0]["layer"][1], d)
    assert [r["pos"] for r in rows] == list(range(start, start + 10))
    with pytest.raises(WorkbenchError, match="selects no response token"):
        charts.rhythm_curves(analysis, positions=range(0, 3))
    assert charts.rhythm_curves(analysis, positions=[start, start + 1, start + 2]).to_dict()
    # Not contiguous: it was drawn as the span from its first to its last element.
    for scattered in ([start + 9, start, start + 4], [start, start + 9, start + 4]):
        with pytest.raises(WorkbenchError, match="is not a range of positions"):
            charts.rhythm_curves(analysis, positions=scattered)


def test_curves_say_when_fai_is_undefined_at_every_position_shown(analysis):
    """The FAI panel of a response's last few tokens (no later rows within the horizon)
    was drawn empty, without a word."""
    end = analysis.prompt_len + len(analysis.response)
    d = charts.rhythm_curves(analysis, positions=range(end - 3, end)).to_dict()
    assert all(r["value"] is None for r in _rows(d["vconcat"][1]["layer"][1], d))
    assert "FAI is undefined at every position shown" in d["title"]["subtitle"][1]
    assert isinstance(charts.rhythm_curves(analysis).to_dict()["title"]["subtitle"], str)


# -- text view -------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["fai", "waad", "entropy", "gamma"])
def test_text_view_colours_tokens_by_the_metric(analysis, metric):
    d = charts.text_view(analysis, metric, line_chars=30).to_dict()
    background, text, _pre, _anc = d["layer"]
    assert background["mark"]["type"] == "rect" and text["mark"]["type"] == "text"
    rows = _rows(background, d)
    assert [r["pos"] for r in rows] == list(analysis.response)
    col = charts.METRICS[metric][0]
    want = analysis.to_frame()[col].to_numpy()[analysis.prompt_len :]
    assert _nan_equal([r["value"] for r in rows], want)
    assert background["encoding"]["color"]["condition"]["field"] == "value"
    assert text["encoding"]["text"]["field"] == "text"


def test_text_view_outlines_preplan_and_anchor_tokens(analysis):
    d = charts.text_view(analysis, "fai", line_chars=30).to_dict()
    _, _, pre, anc = d["layer"]
    assert pre["mark"]["filled"] is False and anc["mark"]["filled"] is False
    assert pre["mark"]["stroke"] != anc["mark"]["stroke"]
    assert [r["pos"] for r in _rows(pre, d)] == analysis.preplan
    assert [r["pos"] for r in _rows(anc, d)] == analysis.anchors


def test_text_view_wraps_lines_and_breaks_after_newlines(analysis):
    d = charts.text_view(analysis, "fai", line_chars=30).to_dict()
    rows = _rows(d["layer"][0], d)
    assert all(r["x1"] <= 30 or r["x0"] == 0 for r in rows)
    lines = [r["line"] for r in rows]
    assert lines == sorted(lines) and lines[-1] >= 2
    nl = [i for i, r in enumerate(rows) if "↵" in r["label"]]
    assert nl, "the response has a newline token"
    assert rows[nl[0] + 1]["x0"] == 0 and rows[nl[0] + 1]["line"] == rows[nl[0]]["line"] + 1
    assert d["height"] == (lines[-1] + 1) * 20
    no_outline = charts.text_view(analysis, "delta", outline=False).to_dict()
    assert len(no_outline["layer"]) == 2


def test_text_view_rejects_unknown_metrics(analysis):
    with pytest.raises(WorkbenchError, match="not a per-token metric"):
        charts.text_view(analysis, "vibes")


# -- head map --------------------------------------------------------------------------------


def test_head_map_has_every_head_and_outlines_the_classes(smol, analysis):
    d = charts.head_map(analysis).to_dict()
    cells, outline = d["layer"]
    rows = _rows(cells, d)
    assert len(rows) == smol.cfg.n_layers * smol.cfg.n_heads
    assert cells["encoding"]["color"]["condition"]["field"] == "span"
    span = {(r["layer"], r["head"]): r["span"] for r in rows}
    assert span[(3, 4)] == pytest.approx(float(analysis.head_span[3, 4]))
    outlined = {(r["layer"], r["head"]): r["cls"] for r in _rows(outline, d)}
    assert outlined == {
        **{h: "local" for h in analysis.local_heads},
        **{h: "global" for h in analysis.global_heads},
    }
    assert outline["encoding"]["stroke"]["field"] == "cls"
    assert outline["encoding"]["stroke"]["scale"]["domain"] == [
        "local", "global", "local and global"]  # fmt: skip


def test_a_head_in_both_classes_is_outlined_as_both_not_as_local(analysis):
    """One head analysed is local and global at once (the counting rule); `heads_frame`
    called it "local" and the head map outlined it in the local colour only."""
    head = analysis.heads[0]
    one = analysis.select_heads([head])
    assert one.local_heads == one.global_heads == [head]
    hf = one.heads_frame()
    assert hf.loc[hf["analysed"], "cls"].tolist() == ["local and global"]
    d = charts.head_map(one).to_dict()
    outlined = {(r["layer"], r["head"]): r["cls"] for r in _rows(d["layer"][1], d)}
    assert outlined == {head: "local and global"}
    scale = d["layer"][1]["encoding"]["stroke"]["scale"]
    assert scale["range"][scale["domain"].index("local and global")] == wb.viz.style.BOTH


def test_head_map_greys_heads_that_were_not_analysed(smol, trace):
    a = wb.analyze(smol, trace, layers="middle")
    d = charts.head_map(a).to_dict()
    rows = _rows(d["layer"][0], d)
    missing = [r for r in rows if r["cls"] == "not analysed"]
    assert len(missing) == (smol.cfg.n_layers - 5) * smol.cfg.n_heads
    assert all(r["span"] is None for r in missing)


def test_every_chart_exports_offline(tmp_path, analysis, maps):
    built = {
        "map": charts.attention_map(maps, "global", analysis=analysis),
        "curves": charts.rhythm_curves(analysis, entropy=True),
        "text": charts.text_view(analysis),
        "heads": charts.head_map(analysis),
    }
    for name, chart in built.items():
        svg = wb.viz.save(chart, tmp_path / f"{name}.svg").read_text()
        assert "<svg" in svg and "</svg>" in svg
        html = wb.viz.save(chart, tmp_path / f"{name}.html").read_text()
        assert "<script src=" not in html
    png = wb.viz.save(built["text"], tmp_path / "text.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_a_head_that_gives_the_sink_everything_names_its_tiny_clip_value():
    """Such a head's other cells are about 1e-7: the subtitle said "(0.000)", as if the
    map were empty, while the colour scale ran to 1e-7."""
    import torch

    from workbench.viz.maps import AttentionMaps

    n = 8
    rows = torch.full((n, n), 1e-7).tril()
    rows[:, 0] = 1.0 - 1e-7 * torch.arange(n)
    maps = AttentionMaps([(0, 0)], rows[None], 1, 0, 0, n, [f"t{i}" for i in range(n)])
    spec = charts.attention_map(maps, (0, 0)).to_dict()
    subtitle = (
        " ".join(spec["title"]["subtitle"])
        if isinstance(spec["title"]["subtitle"], list)
        else spec["title"]["subtitle"]
    )
    assert "(1e-07)" in subtitle and "(0.000)" not in subtitle


def test_a_head_the_maps_lack_is_named_with_the_heads_they_hold():
    """`attention_map(maps, (7, 0))` for a 2-layer model told the user to record maps for
    a head the model does not have."""
    import torch

    from workbench.viz.maps import AttentionMaps

    n = 4
    maps = AttentionMaps([(0, 0), (1, 2)], torch.ones(2, n, n).tril(), 1, 0, 0, n, list("abcd"))
    with pytest.raises(WorkbenchError, match=r"(?s)\[\(7, 0\)\] \(these maps hold 2 heads of layers "
                       r"\[0, 1\], head indices below 3\).*pick a recorded head"):  # fmt: skip
        charts.attention_map(maps, (7, 0))
