"""Attention maps on the shipped tiny reasoner: the log colour scale, the scale types
accepted, maps and analyses of different traces, ``sink="exclude"`` maps checked against
the full ``hook_pattern``, and a metric that is not a string."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.viz import charts, style
from workbench.viz.maps import attention_maps, pool

pytestmark = pytest.mark.slow

PROMPT = "Use 3 5 7 to make 22"
RESPONSE = "3*5=15\n15+7=22\nanswer: 3*5+7"


@pytest.fixture(scope="module")
def trace(tiny):
    return wb.Trace.from_text(tiny, PROMPT, RESPONSE)


@pytest.fixture(scope="module")
def analysis(tiny, trace):
    return wb.analyze(tiny, trace)


def _cells(chart) -> tuple[dict, list[dict]]:
    d = chart.to_dict()
    return d, d["datasets"][d["data"]["name"]]


def _color(d: dict) -> dict:
    enc = d["layer"][0]["encoding"]["color"]
    return enc.get("condition", enc)


def test_log_scale_starts_at_the_smallest_positive_cell(tiny, trace, analysis):
    maps = attention_maps(tiny, trace)
    d, rows = _cells(charts.attention_map(maps, "local", analysis=analysis, color_scale="log"))
    lo, hi = _color(d)["scale"]["domain"]
    values = np.array([r["attention"] for r in rows])
    assert lo == pytest.approx(values[values > 0].min()) and 0 < lo < hi
    assert "log scale from" in d["title"]["subtitle"][-1]
    # the other scales still start at 0
    d, _ = _cells(charts.attention_map(maps, "local", analysis=analysis, color_scale="sqrt"))
    assert _color(d)["scale"]["domain"][0] == 0


def test_log_scale_draws_zero_cells_grey(tiny, trace, analysis):
    maps = attention_maps(tiny, trace, sink="exclude")  # key 0 is all zeros
    assert maps.bin == 1
    d, rows = _cells(charts.attention_map(maps, "global", analysis=analysis, color_scale="log"))
    enc = d["layer"][0]["encoding"]["color"]
    assert enc["condition"]["test"] == "datum.attention > 0"
    assert enc["value"] == style.MISSING
    lo = enc["condition"]["scale"]["domain"][0]
    assert lo > 0 and lo == pytest.approx(min(r["attention"] for r in rows if r["attention"] > 0))
    assert "grey: 0" in d["title"]["subtitle"][-1]


@pytest.mark.parametrize("bad", ["ordinal", "band", "time", "quantize", "threshold", 3])
def test_only_number_scales_are_accepted(tiny, trace, analysis, bad):
    maps = attention_maps(tiny, trace)
    with pytest.raises(WorkbenchError) as e:
        charts.attention_map(maps, "local", analysis=analysis, color_scale=bad)
    assert "symlog" in e.value.fix and "pow" in e.value.fix


def test_maps_and_an_analysis_of_another_trace_are_refused(tiny, trace, analysis):
    other = wb.Trace.from_text(tiny, PROMPT, "3+5=8\n8*7=56")
    maps = attention_maps(tiny, other)
    with pytest.raises(WorkbenchError, match="different traces") as e:
        charts.attention_map(maps, "local", analysis=analysis)
    assert "same trace" in e.value.fix
    # same length and prompt split, other tokens: refused too
    swapped = RESPONSE.replace("3*5=15", "5*3=15")
    same_len = wb.Trace.from_text(tiny, PROMPT, swapped)
    assert len(same_len) == len(trace)
    with pytest.raises(WorkbenchError, match="different traces"):
        charts.attention_map(attention_maps(tiny, same_len), "global", analysis=analysis)
    # the maps of the analysis's own trace are fine
    assert attention_maps(tiny, trace).ids == [int(i) for i in trace.ids]
    charts.attention_map(attention_maps(tiny, trace), "local", analysis=analysis)


@pytest.mark.parametrize("keys", ["all", "response"])
def test_exclude_maps_are_the_renormalised_pattern_pooled(tiny, trace, keys):
    heads = [(1, 0), (2, 3), (3, 7)]
    got = attention_maps(tiny, trace, heads, keys=keys, sink="exclude", max_cells=200)
    assert got.sink == "exclude" and got.bin > 1
    _, cache = tiny.run_with_cache(torch.as_tensor(trace.ids)[None].long())
    p, n = trace.prompt_len, len(trace)
    c0 = 0 if keys == "all" else p
    for i, (layer, h) in enumerate(heads):
        a = cache[f"blocks.{layer}.attn.hook_pattern"][0, h].double()[p:n, :n]
        rest = a[:, 1:].sum(-1, keepdim=True)
        ex = torch.cat([torch.zeros_like(rest), a[:, 1:] / rest], dim=-1)
        want = pool(ex[:, c0:].float(), got.bin)
        torch.testing.assert_close(got.maps[i], want, atol=1e-6, rtol=1e-5)
    keep = attention_maps(tiny, trace, heads, keys=keys, max_cells=200)
    assert keep.sink == "keep" and not torch.allclose(keep.maps, got.maps)


def test_an_excluded_sink_map_reports_no_sink_share(tiny, trace, analysis):
    maps = attention_maps(tiny, trace, sink="exclude")
    d, rows = _cells(charts.attention_map(maps, "global", analysis=analysis))
    assert all(r["attention"] == 0 for r in rows if r["k0"] == 0)
    assert len(d["layer"]) == 1  # no sink outline
    sub = d["title"]["subtitle"][-1]
    assert "of a row" not in sub and "excluded" in sub and "non-sink" not in sub


def test_attention_maps_refuse_an_unknown_sink(tiny, trace):
    with pytest.raises(WorkbenchError, match="sink"):
        attention_maps(tiny, trace, sink="drop")


def test_text_view_refuses_a_metric_that_is_not_a_string(analysis):
    with pytest.raises(WorkbenchError, match="not a per-token metric"):
        charts.text_view(analysis, ["fai"])


def test_maps_and_reports_refuse_another_models_trace(tiny, smol, trace, analysis, tmp_path):
    """Another model's trace failed inside torch's embedding (ids beyond the vocabulary), or
    was drawn without a word: SmolLM2's attention over the tiny reasoner's ids, and a
    report that put those maps beside the tiny reasoner's analysis."""
    from workbench.report import write_report

    smol_trace = wb.Trace.from_text(smol, "What is 2+2?", "2+2 is 4.")
    with pytest.raises(
        WorkbenchError, match="vocabulary has 81 tokens: it was tokenized for another"
    ):
        attention_maps(tiny, smol_trace)
    for of in (trace, analysis):
        with pytest.raises(WorkbenchError, match="tokenized for 'tiny-reasoner'"):
            attention_maps(smol, of)
    with pytest.raises(WorkbenchError, match="tokenized for 'tiny-reasoner'"):
        write_report(smol, trace, analysis, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()  # refused before the folder was made


def test_entropy_charts_of_an_analysis_without_entropies_are_refused(tiny, trace):
    """An analysis made with entropy=False drew an empty entropy panel and an uncoloured
    text view without a word; a flag given as a string ("no", truthy) switched it on."""
    from workbench import viz

    bare = wb.analyze(tiny, trace, entropy=False)
    with pytest.raises(WorkbenchError, match=r"no entropies .* no entropy curve") as e:
        viz.rhythm_curves(bare, entropy=True)
    assert "entropy=True" in e.value.fix
    with pytest.raises(WorkbenchError, match="no entropies"):
        viz.text_view(bare, "entropy")
    viz.rhythm_curves(bare)  # WAAD and FAI need no entropies
    viz.text_view(bare, "fai")
    with pytest.raises(WorkbenchError, match="entropy must be True or False, got 'no'"):
        viz.rhythm_curves(bare, entropy="no")
    with pytest.raises(WorkbenchError, match="outline must be True or False"):
        viz.text_view(bare, outline="no")
