"""Charts that drew a one-token view without a tooltip, an outline tooltip that showed a
whitespace token as nothing, and `AttentionMaps.group` refusing the one head its docstring
accepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.viz import charts
from workbench.viz.maps import AttentionMaps

PROMPT = "Use 3 5 7 to make 22"
RESPONSE = "3*5=15\n15+7=22\nanswer: 3*5+7"


@pytest.fixture(scope="module")
def analysis(tiny):
    return wb.analyze(tiny, wb.Trace.from_text(tiny, PROMPT, RESPONSE))


def _hit_layer(curve: dict) -> dict:
    (hit,) = [layer for layer in curve["layer"] if "x2" in layer.get("encoding", {})]
    return hit


@pytest.mark.slow
@pytest.mark.parametrize("at", ["start", "end"])
def test_a_one_token_curve_has_a_hover_band(analysis, at):
    """Cropped to one token (or a one-token response), the x domain was ``[t, t]``: Vega
    maps a zero-width domain to one point, so the token's hover band ``[t - 0.5, t + 0.5]``
    was drawn zero pixels wide (``d="M320,0h0v140h0Z"``): no tooltip, no hover rule. The
    domain now spans the token's band."""
    import re

    import vl_convert as vlc

    resp = analysis.response
    pos = resp.start if at == "start" else resp.stop - 1
    d = charts.rhythm_curves(analysis, positions=range(pos, pos + 1)).to_dict()
    t = pos - analysis.prompt_len
    for curve in d["vconcat"]:
        lo, hi = _hit_layer(curve)["encoding"]["x"]["scale"]["domain"]
        assert lo < hi and lo <= t - 0.5 and hi >= t + 0.5
    svg = vlc.vegalite_to_svg(d)
    widths = re.findall(r'aria-roledescription="rect mark" d="M[-\d.]+,[-\d.]+h([-\d.]+)', svg)
    assert widths and all(float(w) > 100 for w in widths)
    # more tokens: the domain is still the first to the last position
    lo = pos if at == "start" else pos - 1
    d = charts.rhythm_curves(analysis, positions=range(lo, lo + 2)).to_dict()
    scale = _hit_layer(d["vconcat"][0])["encoding"]["x"]["scale"]
    assert scale["domain"] == [lo - analysis.prompt_len, lo + 1 - analysis.prompt_len]


@pytest.mark.slow
def test_text_outline_tooltip_shows_spaces(analysis):
    """The preplan/anchor outline's tooltip showed the raw label, so a whitespace token
    (often a preplan token, e.g. the " " after "answer:") read as an empty label; it now
    shows the token as the other tooltips do, spaces as ``␣``."""
    d = charts.text_view(analysis, "fai").to_dict()
    outlines = d["layer"][2:]
    assert len(outlines) == 2
    datasets = d["datasets"]
    spaced = 0
    for layer in outlines:
        (tip,) = [t for t in layer["encoding"]["tooltip"] if t["field"] in ("label", "tip_token")]
        rows = datasets[layer["data"]["name"]]
        for r in rows:
            assert " " not in r[tip["field"]]
            spaced += "␣" in r[tip["field"]]
    assert spaced  # the trace has an outlined space token


def test_group_takes_one_head():
    """``maps.group((0, 1))`` (one head, as its docstring allows) was read as the list
    ``[0, 1]`` and refused with "0 is not a (layer, head) pair"; it is that head's map."""
    maps = AttentionMaps(
        heads=[(0, 0), (0, 1)],
        maps=torch.arange(8, dtype=torch.float32).reshape(2, 2, 2),
        bin=1,
        row_start=2,
        col_start=0,
        n_pos=4,
        tokens=list("abcd"),
    )
    np.testing.assert_array_equal(maps.group((0, 1)), maps.maps[1].numpy())
    np.testing.assert_array_equal(maps.group((np.int64(0), 0)), maps.maps[0].numpy())
    np.testing.assert_array_equal(maps.group([(0, 0), (0, 1)]), maps.maps.mean(0).numpy())
    with pytest.raises(wb.WorkbenchError, match="no map was recorded"):
        maps.group((1, 0))
