"""The charts and the rhythm panel on a second architecture: the shipped tiny reasoner
(4 layers x 8 heads, a character-level tokenizer, so every newline is its own token)."""

from __future__ import annotations

import pytest

import workbench as wb
from workbench import ui as panels
from workbench.attention import middle_layers
from workbench.viz import charts
from workbench.viz.maps import attention_maps

pytestmark = pytest.mark.slow

PROMPT = "Use 3 5 7 to make 22"
RESPONSE = "3*5=15\n15+7=22\nanswer: 3*5+7"


def test_panel_follows_the_model_shape(tiny):
    r = panels.RhythmPanel(tiny, prompt=PROMPT, response=RESPONSE)
    n_layers, n_heads = tiny.cfg.n_layers, tiny.cfg.n_heads
    assert r.picker.custom_layers.options == tuple(range(n_layers))
    assert len(r.map_heads.options) == 2 + n_layers * n_heads
    a = r.run()
    assert r.last_error is None, r.last_error
    assert len(a.heads) == n_layers * n_heads and r.forward_passes == 2
    r.picker.mode.value = "middle"
    assert sorted({layer for layer, _ in r.analysis.heads}) == middle_layers(n_layers)
    heads = r.charts["heads"].chart.to_dict()
    cells = heads["datasets"][heads["layer"][0]["data"]["name"]]
    assert len(cells) == n_layers * n_heads
    analysed = {(c["layer"], c["head"]) for c in cells if c["cls"] != "not analysed"}
    assert analysed == set(r.analysis.heads)


def test_text_view_breaks_lines_at_each_newline_token(tiny):
    trace = wb.Trace.from_text(tiny, PROMPT, RESPONSE)
    a = wb.analyze(tiny, trace)
    d = charts.text_view(a, "waad", line_chars=80).to_dict()
    rows = d["datasets"][d["layer"][0]["data"]["name"]]
    assert [r["line"] for r in rows][-1] == RESPONSE.count("\n")
    starts = [r["label"] for r in rows if r["x0"] == 0]
    assert "".join(starts) == "31a"  # each line starts after a newline


def test_response_only_keys_give_a_square_map(tiny):
    trace = wb.Trace.from_text(tiny, PROMPT, RESPONSE)
    a = wb.analyze(tiny, trace)
    maps = attention_maps(tiny, trace, heads=a.global_heads, keys="response")
    assert maps.col_start == trace.prompt_len and maps.bin == 1
    d = charts.attention_map(maps, "global", analysis=a).to_dict()
    rows = d["datasets"][d["data"]["name"]]
    p, n = trace.prompt_len, len(trace)
    assert all(p <= r["k0"] <= r["q0"] < n for r in rows)
    assert len(rows) == (n - p) * (n - p + 1) // 2
    assert d["width"] == d["height"]


def test_pooled_map_gives_the_sink_blocks_share_of_a_row(tiny):
    """A pooled sink cell is a block mean over ``bin`` keys: the share of a row that keys
    0..bin-1 take is ``bin`` times it, not the block mean itself."""
    import torch

    trace = wb.Trace.from_text(tiny, PROMPT, RESPONSE * 3)
    a = wb.analyze(tiny, trace)
    maps = attention_maps(tiny, trace, heads=a.local_heads, max_cells=100)
    b, p = maps.bin, trace.prompt_len
    assert b > 1
    _, cache = tiny.run_with_cache(
        torch.as_tensor(trace.ids)[None], names_filter=lambda name: name.endswith("hook_pattern")
    )
    pattern = torch.stack([cache["pattern", layer][0, h] for layer, h in a.local_heads]).mean(0)
    share = float(pattern[p:, :b].sum(-1).mean())
    d = charts.attention_map(maps, "local", analysis=a).to_dict()
    (outline,) = d["datasets"][d["layer"][1]["data"]["name"]]
    assert (outline["k0"], outline["k1"]) == (0, b)
    assert outline["share"] == pytest.approx(share, rel=1e-4)
    assert f"key 0..{b - 1} (mean {share:.0%} of a row)" in d["title"]["subtitle"][1]


def test_bad_chart_arguments_are_refused(tiny):
    from workbench import viz

    trace = wb.Trace.from_text(tiny, PROMPT, RESPONSE)
    a = wb.analyze(tiny, trace)
    maps = attention_maps(tiny, trace, heads=[(0, 0), (0, 1)])
    p = a.prompt_len
    cases = [
        # a float or bool head was truncated to another head without a word
        (lambda: attention_maps(tiny, trace, heads=[(0.5, 0)]), "not a \\(layer, head\\) pair"),
        (lambda: attention_maps(tiny, trace, heads=[(True, 0)]), "not a \\(layer, head\\) pair"),
        (lambda: attention_maps(tiny, trace, heads=5), "not a list of \\(layer, head\\)"),
        (lambda: attention_maps(tiny, trace, max_cells=5.5), "max_cells must be an integer"),
        (lambda: attention_maps(tiny, None), "expected a wb.Trace"),  # AttributeError
        (lambda: attention_maps(None, trace), "expected a model"),
        (lambda: viz.attention_map(maps, [(0.5, 0)]), "not a \\(layer, head\\) pair"),
        (lambda: viz.attention_map(maps, (0.0, 1.0)), "not a \\(layer, head\\) pair"),
        (lambda: viz.attention_map(maps, None), "not a list of \\(layer, head\\)"),
        (lambda: viz.attention_map(maps, "local", analysis="a"), "expected a wb.Analysis"),
        (lambda: viz.attention_map(a, (0, 0)), "maps must be an AttentionMaps"),
        (lambda: viz.attention_map(maps, (0, 0), size=0), "size must be at least 1"),  # width 0
        (lambda: viz.attention_map(maps, (0, 0), clip_quantile=1.5), "clip_quantile"),
        (lambda: viz.attention_map(maps, (0, 0), color_scale="bogus"), "not a scale type"),
        (lambda: viz.head_map(a, cell_px=-5), "cell_px must be at least 1"),  # negative size
        (lambda: viz.head_map(trace), "expected a wb.Analysis"),  # AttributeError
        (lambda: viz.rhythm_curves(a, width=0), "width must be at least 1"),
        (lambda: viz.rhythm_curves(trace), "expected a wb.Analysis"),
        # 25.5 cropped to 25 without a word; a huge range overflowed listing it
        (lambda: viz.rhythm_curves(a, positions=[p + 0.5, p + 1.5]), "not a range"),
        (lambda: viz.text_view(a, line_chars=2.5), "line_chars must be an integer"),
        (lambda: viz.text_view(a, char_px=0), "char_px must be in"),  # a 0-wide chart
        (lambda: viz.text_view(a, line_px=-20), "line_px must be at least 1"),
        (lambda: viz.text_view(None), "expected a wb.Analysis"),
    ]
    for build, match in cases:
        with pytest.raises(wb.WorkbenchError, match=match) as e:
            build()
        assert e.value.fix
    assert len(viz.response_frame(a, range(0, 10**20))) == len(a.response)
