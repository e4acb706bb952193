"""Charts at the scale and with the text a researcher meets: maps recorded finer than a
chart embeds, tokens that hold control characters or line separators, and a
real-length (600-token) trace on SmolLM2-135M."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.viz import charts
from workbench.viz.maps import MAX_CELLS, AttentionMaps, pool


def _causal(n: int, seed: int = 0) -> torch.Tensor:
    """A random causal attention pattern ``[n, n]`` whose rows sum to 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n, generator=g).tril()
    return x / x.sum(-1, keepdim=True)


def _cells(spec: dict) -> list[dict]:
    """The cells of an attention map's spec (the top-level data)."""
    return spec["datasets"][spec["data"]["name"]]


def _maps(pattern: torch.Tensor, p: int, b: int, tokens: list[str]) -> AttentionMaps:
    """The maps `attention_maps` records for one head with block size `b` (all keys)."""
    n = pattern.shape[-1]
    return AttentionMaps(
        heads=[(0, 0)],
        maps=pool(pattern[None, p:n, :], b),
        bin=b,
        row_start=p,
        col_start=0,
        n_pos=n,
        tokens=tokens,
    )


@pytest.mark.parametrize(("n", "p", "b", "expected_bin"), [(130, 10, 1, 2), (200, 7, 2, 4)])
def test_a_map_recorded_finer_than_a_chart_embeds_is_pooled_further_exactly(n, p, b, expected_bin):
    pattern = _causal(n)
    maps = _maps(pattern, p, b, [f"t{i}" for i in range(n)])
    assert maps.maps[0].numel() > MAX_CELLS  # e.g. attention_maps(..., max_cells=20000)
    chart = charts.attention_map(maps, (0, 0))
    spec = chart.to_dict()  # altair's MaxRowsError before
    data = _cells(spec)
    assert len(data) <= MAX_CELLS
    # Exactly the map recorded with the coarser block: edge blocks weighted by their size.
    coarse = pool(pattern[None, p:n, :], expected_bin)[0].numpy()
    for cell in data:
        i, j = (cell["q0"] - p) // expected_bin, cell["k0"] // expected_bin
        assert cell["q1"] - cell["q0"] == min(expected_bin, n - cell["q0"])
        assert cell["attention"] == pytest.approx(float(coarse[i, j]), rel=1e-5, abs=1e-9)
        # the tooltip names the block's whole range (its start alone read as one position)
        assert cell["queries"] == f"{cell['q0']}-{cell['q1'] - 1}"
        assert cell["keys"] == f"{cell['k0']}-{cell['k1'] - 1}"
    subtitle = " ".join(spec["title"]["subtitle"])
    assert f"{expected_bin}x{expected_bin} blocks averaged" in subtitle
    assert f"recorded {b}x{b}, pooled to fit a chart" in subtitle


def test_a_map_that_fits_is_drawn_as_recorded():
    n, p = 60, 5
    maps = _maps(_causal(n), p, 1, [f"t{i}" for i in range(n)])
    spec = charts.attention_map(maps, (0, 0)).to_dict()
    data = _cells(spec)
    assert all(c["q1"] - c["q0"] == 1 for c in data)
    assert "pooled to fit" not in " ".join(spec["title"]["subtitle"])


def test_display_token_shows_control_characters_as_their_pictures():
    assert charts.display_token("\x0c") == "␌"
    assert charts.display_token("\x1b[31m") == "␛[31m"
    assert charts.display_token("a\x00b\x7f") == "a␀b␡"
    assert charts.display_token("\x0b") == "␋"
    # the characters with their own symbols keep them
    assert charts.display_token("\r\n\t\r") == "↵→␍"


def test_a_token_axis_with_line_separators_still_parses():
    """U+2028 / U+2029 may stand raw in JSON but end a Vega expression's string: the
    token labels of an exact map (`labelExpr`) failed to parse and nothing was drawn."""
    import vl_convert as vlc

    tokens = ["<s>", "Q", "a", "\u2028", "b", "\u2029", '"', "\\", "c"]
    maps = _maps(_causal(len(tokens)), 2, 1, tokens)
    spec = charts.attention_map(maps, (0, 0)).to_dict()
    svg = vlc.vegalite_to_svg(spec)  # "Expression parse error" before
    assert ">c</text>" in svg and ">a</text>" in svg


def test_saving_a_chart_with_control_characters_does_not_kill_the_process(tmp_path):
    """vl-convert aborts the whole process (the kernel dies) on text that holds a C0
    control character; `save` draws them as control pictures."""
    script = textwrap.dedent(
        f"""
        import altair as alt, pandas as pd
        import workbench as wb
        df = pd.DataFrame({{"x": [0, 1, 2], "t": ["form\\x0cfeed", "esc\\x1b[0m", "nul\\x00"]}})
        chart = alt.Chart(df).mark_text().encode(x="x:Q", text="t:N", tooltip="t:N")
        for suffix in ("svg", "png"):
            wb.viz.save(chart, {str(tmp_path)!r} + "/c." + suffix)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    svg = (tmp_path / "c.svg").read_text()
    assert "form␌feed" in svg and "esc␛[0m" in svg and "nul␀" in svg
    assert (tmp_path / "c.png").stat().st_size > 0


@pytest.mark.slow
def test_real_length_trace_charts_fit_and_name_the_real_positions(smol, tmp_path):
    """A 600-token response on SmolLM2-135M (30 layers x 9 heads): every chart serialises
    within altair's row limit, the map's cells and the curves' x name the real positions,
    and odd tokens (newlines, tabs, quotes, ``<``, ``&``, emoji, form feed) export."""
    chunk = 'Step:\n\tsay "hi" <b> & 😀\x0c  then 2+2=4.\n\n'
    response = chunk * 40
    trace = wb.Trace.from_text(smol, "What is 2+2?", response)
    n, p = len(trace.ids), trace.prompt_len
    assert n - p >= 500
    analysis = wb.analyze(smol, trace)
    maps = wb.viz.attention_maps(smol, trace)
    assert len(maps.heads) == 30 * 9
    built = {
        "rhythm": wb.viz.rhythm_curves(analysis, entropy=True),
        "text": wb.viz.text_view(analysis),
        "map": wb.viz.attention_map(maps, "global", analysis=analysis),
        "heads": wb.viz.head_map(analysis),
    }
    for name, chart in built.items():
        spec = chart.to_dict()
        assert all(len(rows) <= MAX_CELLS for rows in spec.get("datasets", {}).values()), name
        assert len(json.dumps(spec)) < 2_000_000, name  # not tens of MB in a notebook
        wb.viz.save(chart, tmp_path / f"{name}.svg")
    cells = _cells(built["map"].to_dict())
    assert min(c["q0"] for c in cells) == p and max(c["q1"] for c in cells) == n
    assert min(c["k0"] for c in cells) == 0 and max(c["k1"] for c in cells) == n
    curve = built["rhythm"].to_dict()
    waad = next(rows for rows in curve["datasets"].values() if rows[0].get("metric") == "waad")
    assert [r["pos"] for r in waad] == list(range(p, n))
    assert [r["label"] for r in waad] == [charts.display_token(t) for t in trace.tokens[p:n]]
    svg = (tmp_path / "text.svg").read_text()
    assert "&amp;" in svg and "&lt;" in svg and "␌" in svg
    np.testing.assert_allclose(
        [r["value"] for r in waad], analysis.waad[p:n], rtol=1e-6, equal_nan=True
    )


def test_offline_charts_are_validated_once(altair_globals, monkeypatch):
    """`enable_offline` shows a chart with the spec altair validated, not validated again
    once per top-level chart kind (Chart, RepeatChart, ConcatChart...) as altair's
    ``jupyter`` renderer did: a 2,000-token `rhythm_curves` took 6-10 s to appear."""
    import altair as alt
    import altair.utils.schemapi as schemapi
    import pandas as pd

    df = pd.DataFrame({"x": range(300), "y": range(300), "t": ["a <b> & \x0c"] * 300})
    line = alt.Chart(df).mark_line().encode(x="x:Q", y="y:Q", tooltip="t:N")
    chart = line & line.mark_point()
    validated: list[str] = []
    validate = schemapi.SchemaBase.validate.__func__

    def counting(cls, instance, schema=None):
        if isinstance(instance, dict) and "datasets" in instance:
            validated.append(cls.__name__)
        return validate(cls, instance, schema)

    monkeypatch.setattr(schemapi.SchemaBase, "validate", classmethod(counting))
    wb.viz.enable_offline()
    assert alt.renderers.active == "workbench"
    bundle = chart._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "text/html" in bundle and len(validated) <= 1


def test_a_long_runs_progress_averages_the_reward_and_says_so():
    """A run of more logged steps than a chart embeds raised altair's MaxRowsError when
    shown (the RL panel's live chart, past step ~5,000); now the train reward is the mean
    of each k consecutive steps, the evaluations are kept, and the title gives k."""
    n = 12_000
    rows = [{"step": i, "reward": (i % 10) / 10} for i in range(n)]
    rows += [{"step": i, "eval_accuracy": 0.25} for i in range(0, n, 100)]
    spec = wb.viz.progress_chart(rows).to_dict()
    (data,) = spec["datasets"].values()
    assert len(data) <= MAX_CELLS
    reward = [r for r in data if r["series"] == "train reward"]
    evals = [r for r in data if r["series"] != "train reward"]
    assert [r["step"] for r in evals] == list(range(0, n, 100))
    k = 3  # ceil(12000 / (5000 - 120))
    assert len(reward) == n // k
    assert reward[0] == {"step": 1.0, "value": pytest.approx(0.1), "series": "train reward"}
    assert np.mean([r["value"] for r in reward]) == pytest.approx(0.45, abs=1e-3)
    assert spec["title"]["text"] == f"train reward: mean of each {k} consecutive steps"
    short = wb.viz.progress_chart(rows[:100]).to_dict()
    assert "title" not in short and len(next(iter(short["datasets"].values()))) == 100
