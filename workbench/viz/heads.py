"""Charts of heads: `attention_map` (a head group's attention over the response rows, the
sawtooth of local heads and the stripes of global heads, Eq. 9-10) and `head_map`
(every (layer, head) coloured by span, local and global heads outlined)."""

from __future__ import annotations

import json
import numbers
from collections.abc import Sequence
from typing import Any, no_type_check

import altair as alt
import numpy as np
import pandas as pd

from .. import _validate
from ..errors import WorkbenchError
from ..intervals import level_label
from ..models.bridge import check_same_model
from . import style
from .frame import check_analysis, display_token
from .maps import MAX_CELLS, AttentionMaps, head_list, head_pair, pool_bin

__all__ = ["attention_map", "head_map"]

Head = tuple[int, int]


def _check_same_trace(maps: AttentionMaps, analysis: Any) -> None:
    """Refuse an analysis of another trace than `maps` (its head classes would be drawn
    over attention they were not computed from, without a word)."""
    same = analysis.n_pos == maps.n_pos and analysis.prompt_len == maps.row_start
    if same and maps.ids is not None:
        same = [int(i) for i in analysis.ids] == list(maps.ids)
    elif same:
        same = list(analysis.tokens) == list(maps.tokens)
    if not same:
        raise WorkbenchError(
            f"the maps ({maps.n_pos} positions, response from {maps.row_start}) and the "
            f"analysis ({analysis.n_pos} positions, response from {analysis.prompt_len}) "
            "are of different traces",
            "record the maps of the same trace: "
            "attention_map(wb.viz.attention_maps(model, trace), ..., analysis=wb.analyze(model, trace))",
        )
    check_same_model(
        analysis.meta.get("model"),
        maps.model,
        "the analysis",
        f"the maps are of {maps.model!r}: draw them with its analysis, "
        "attention_map(maps, ..., analysis=wb.analyze(model, trace))",
    )


def _resolve_group(heads: Any, analysis: Any | None, maps: AttentionMaps) -> tuple[list[Head], str]:
    if isinstance(heads, str):
        if heads not in ("local", "global"):
            raise WorkbenchError(
                f"heads={heads!r} is not a head group", 'pass "local", "global" or (layer, head)'
            )
        if analysis is None:
            raise WorkbenchError(
                f'heads="{heads}" needs the analysis that classified the heads',
                "pass analysis=..., or an explicit list: attention_map(maps, [(l, h), ...])",
            )
        analysis = check_analysis(analysis)
        _check_same_trace(maps, analysis)
        group = list(analysis.local_heads if heads == "local" else analysis.global_heads)
        return group, f"mean of {len(group)} {heads} heads"
    # One head: a pair of indices, or of numbers (a float is refused with its pair, not as "0").
    if (
        isinstance(heads, tuple)
        and len(heads) == 2
        and all(_validate.is_index(v) or isinstance(v, numbers.Number) for v in heads)
    ):
        layer, head = head_pair(heads)
        return [(layer, head)], f"layer {layer} head {head}"
    group = list(dict.fromkeys(head_list(heads)))  # a repeated head is one head of the mean
    if len(group) == 1:
        return group, f"layer {group[0][0]} head {group[0][1]}"
    return group, f"mean of {len(group)} heads"


#: Colour of the outline that marks the attention sink (key position 0) on the maps.
SINK_COLOR = "#d62728"
#: The colour scale of a map ends at this quantile of the non-sink cells (higher saturate).
CLIP_QUANTILE = 0.99
#: Maps showing at most this many positions on an axis label its ticks with the tokens.
TOKEN_TICKS_MAX = 60
#: Colour scale types an attention map accepts: the continuous ones that map a number to a
#: colour (Vega-Lite's other types are for time, bins or categories).
SCALES = ("linear", "sqrt", "pow", "log", "symlog")


def _token_axis(tokens: list[str], start: int, stop: int, title: str, **kw: Any) -> alt.Axis:
    """An axis with one tick per position in ``start..stop-1``, labelled with its token."""
    labels = json.dumps([display_token(tokens[p]) for p in range(start, stop)], ensure_ascii=False)
    # A JSON string may hold U+2028 / U+2029 raw, a Vega expression's string may not (they
    # end its line: the whole chart fails to parse).
    labels = labels.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return alt.Axis(
        title=title,
        values=[p + 0.5 for p in range(start, stop)],
        labelExpr=f"{labels}[floor(datum.value) - {start}]",
        labelOverlap=False,
        labelFontSize=9,
        labelLimit=90,
        **kw,
    )


def _fit(grid: np.ndarray, b: int, r0: int, c0: int, n: int) -> tuple[np.ndarray, int]:
    """`grid` (blocks of ``b`` positions, rows from `r0`, columns from `c0`, to ``n - 1``)
    pooled further, if it has more than `MAX_CELLS` cells, into blocks of ``b * f``
    positions: exactly the map that `attention_maps` would record with that block size
    (each block the mean of its real cells; the edge blocks, which hold fewer positions,
    are weighted by how many they hold). Returns the grid and its block size."""
    n_r, n_c = grid.shape
    f = pool_bin(n_r, n_c, MAX_CELLS)
    if f == 1:
        return grid, b
    rows = np.minimum(b, n - r0 - b * np.arange(n_r)).astype(np.float64)
    cols = np.minimum(b, n - c0 - b * np.arange(n_c)).astype(np.float64)
    weight = rows[:, None] * cols[None, :]
    rb, cb = -(-n_r // f), -(-n_c // f)
    sums = np.zeros((rb * f, cb * f))
    counts = np.zeros((rb * f, cb * f))
    sums[:n_r, :n_c] = grid * weight
    counts[:n_r, :n_c] = weight
    sums = sums.reshape(rb, f, cb, f).sum((1, 3))
    counts = counts.reshape(rb, f, cb, f).sum((1, 3))
    return sums / counts, b * f


@no_type_check  # validates its arguments itself, with messages that name the fix
def attention_map(
    maps: AttentionMaps,
    heads: str | Head | Sequence[Head] = "local",
    *,
    analysis: Any | None = None,
    title: str | None = None,
    size: int = 420,
    color_scale: str = "sqrt",
    clip_quantile: float = CLIP_QUANTILE,
) -> alt.LayerChart:
    """The attention of a head group (or one head) over the response rows.

    Rows are query positions (response only, top to bottom), columns are key positions
    (all keys, or the response, as recorded in `maps`). Blocks of ``maps.bin`` positions
    are averaged (so the chart has at most 5,000 cells); cells entirely above the diagonal
    (always zero) are left out. Maps recorded with ``max_cells`` above 5,000 (more cells
    than a chart embeds: altair refuses more) are pooled further into blocks of a multiple
    of ``maps.bin`` positions, the map a recording with that block size gives, and the
    subtitle says so.

    The first token is an attention sink (it takes a large share of every row), so the
    colour scale ends at the `clip_quantile` of the cells *outside* the sink column
    (higher cells saturate) and the sink column (key position 0) is outlined in red; the
    subtitle gives the clip value and the mean share of a row that the sink column
    (key 0, or the first block of keys in a pooled map) takes. A map that shows at most
    `TOKEN_TICKS_MAX` positions on an axis labels that axis's ticks with the tokens.
    Maps recorded with ``sink="exclude"`` have a zero key-0 column: it is neither outlined
    nor left out of the clip, and the subtitle says the sink was excluded.

    Args:
        maps: pooled per-head maps from `workbench.viz.attention_maps`.
        heads: ``"local"`` / ``"global"`` (the analysis's head classes; needs
            `analysis`), one ``(layer, head)``, or a list of heads (their mean; a head
            listed twice counts once).
        analysis: the `Analysis` whose head classes ``"local"``/``"global"`` refer to;
            it must be of the trace the maps were recorded from.
        title: chart title (default: which heads).
        size: the larger side in pixels.
        color_scale: scale type for attention, one of `SCALES` (``"sqrt"`` shows small
            weights). ``"log"`` starts at the smallest positive cell shown and draws
            cells of exactly 0 grey.
        clip_quantile: quantile of the non-sink cells (all cells with the sink excluded)
            where the colour scale ends (``1.0``: their maximum).

    Returns:
        An ``alt.LayerChart`` whose data (top level) are the cells, fields ``q0 q1 k0 k1
        attention sink`` (plus ``query key`` for exact maps): a ``rect`` layer of the
        cells, then, when key 0 is shown and the sink kept, an outline ``rect`` over the
        sink column (its own data, field ``share``).
    """
    if not isinstance(maps, AttentionMaps):
        raise WorkbenchError(
            f"maps must be an AttentionMaps, got {type(maps).__name__}",
            "pass maps = wb.viz.attention_maps(model, trace)",
        )
    size = _validate.integer("size", size, minimum=1, example=420)
    clip_quantile = _validate.number("clip_quantile", clip_quantile, low=0, high=1, example=0.99)
    if not isinstance(color_scale, str) or color_scale not in SCALES:
        raise WorkbenchError(
            f"color_scale={color_scale!r} is not a scale type for a colour of a number",
            f'pass one of {list(SCALES)} ("sqrt" is the default)',
        )
    if title is not None and not isinstance(title, str):
        raise WorkbenchError(
            f"title must be a string, got {type(title).__name__}", 'pass title="..."'
        )
    group, what = _resolve_group(heads, analysis, maps)
    b, r0, c0 = maps.bin, maps.row_start, maps.col_start
    n = maps.n_pos
    grid, b = _fit(maps.group(group), b, r0, c0, n)
    rows = []
    for i in range(grid.shape[0]):
        q0 = r0 + i * b
        q1 = min(q0 + b, n) - 1
        for j in range(grid.shape[1]):
            k0 = c0 + j * b
            if k0 > q1:
                break
            k1 = min(k0 + b, n) - 1
            row = {
                "q0": q0,
                "q1": q1 + 1,
                "k0": k0,
                "k1": k1 + 1,
                "attention": float(grid[i, j]),
                "sink": k0 == 0,
            }
            if b == 1:
                row["query"] = display_token(maps.tokens[q0])
                row["key"] = display_token(maps.tokens[k0])
            else:  # the block's whole range: its start alone read as one position
                row["queries"] = f"{q0}-{q1}"
                row["keys"] = f"{k0}-{k1}"
            rows.append(row)
    df = pd.DataFrame(rows)
    n_r, n_c = n - r0, n - c0
    w, h = (
        (size, max(60, round(size * n_r / n_c))) if n_c >= n_r else (round(size * n_c / n_r), size)
    )
    # With the sink excluded, key 0 holds zeros: its column is no sink to clip around.
    has_sink = bool(df["sink"].any()) and maps.sink == "keep"
    rest = (df.loc[~df["sink"], "attention"] if has_sink else df["attention"]).to_numpy()
    vmax = float(np.quantile(rest, clip_quantile)) if len(rest) else 0.0
    if not vmax > 0:
        vmax = float(df["attention"].max()) or 1.0
    # A log scale has no 0: its domain starts at the smallest positive cell (below the
    # clip value), and cells of exactly 0 are drawn grey (`style.MISSING`).
    vmin = 0.0
    n_zero = 0
    if color_scale == "log":
        positive = df.loc[df["attention"] > 0, "attention"]
        vmin = float(positive.min()) if len(positive) else vmax / 10
        if not vmin < vmax:
            vmin = vmax / 10
        n_zero = int((df["attention"] <= 0).sum())
    tooltip = (
        [alt.Tooltip("q0:Q", title="query pos"), alt.Tooltip("k0:Q", title="key pos")]
        if b == 1
        else [alt.Tooltip("queries:N", title="query pos"), alt.Tooltip("keys:N", title="key pos")]
    ) + [
        alt.Tooltip(
            "attention:Q",
            format=".4~g",  # significant digits: a long trace's mean attention is ~1e-4
            title="attention" if b == 1 else "mean attention",
        )
    ]
    if b == 1:
        tooltip += [alt.Tooltip("query:N"), alt.Tooltip("key:N")]
    cells_of = "the non-sink cells" if has_sink else "the cells"
    clip = f"colour clipped at q{clip_quantile * 100:g} of {cells_of} ({vmax:.3g})"
    if color_scale == "log":
        clip += f"; log scale from {vmin:.3g}" + ("; grey: 0" if n_zero else "")
    subtitle = [
        f"rows: response positions {r0}..{n - 1}; columns: key positions {c0}..{n - 1}"
        + ("" if b == 1 else f"; {b}x{b} blocks averaged")
        + ("" if b == maps.bin else f" (recorded {maps.bin}x{maps.bin}, pooled to fit a chart)"),
        clip,
    ]
    if has_sink:
        # A sink cell is the mean over its block; the share of a row that keys k0..k1-1
        # take is that mean times the block's width, averaged over rows (by block height).
        sk = df.loc[df["sink"]]
        heights = sk["q1"] - sk["q0"]
        row_share = sk["attention"] * (sk["k1"] - sk["k0"])
        share = float((row_share * heights).sum() / heights.sum())
        subtitle[-1] += (
            f"; red outline: the attention sink, key 0"
            f"{'' if b == 1 else f'..{b - 1}'} (mean {share:.0%} of a row)"
        )
    elif maps.sink == "exclude":
        subtitle[-1] += "; the attention sink (key 0) excluded, each row renormalised"
    short_x, short_y = b == 1 and n_c <= TOKEN_TICKS_MAX, b == 1 and n_r <= TOKEN_TICKS_MAX
    x_axis = (
        _token_axis(maps.tokens, c0, n, "key (token)", labelAngle=-90)
        if short_x
        else alt.Axis(title="key position")
    )
    y_axis = (
        _token_axis(maps.tokens, r0, n, "query (response token)")
        if short_y
        else alt.Axis(title="query position (response)")
    )
    x_scale = alt.Scale(domain=[c0, n], nice=False)
    y_scale = alt.Scale(domain=[r0, n], nice=False, reverse=True)
    color = alt.Color(
        "attention:Q",
        scale=alt.Scale(
            type=color_scale,
            scheme=style.MAP_SCHEME,
            domain=[vmin, vmax],
            clamp=True,
            nice=False,
        ),
        legend=alt.Legend(title=["attention", f"(clipped at {vmax:.3g})"]),
    )
    if n_zero:
        color = alt.condition("datum.attention > 0", color, alt.value(style.MISSING))
    cells = (
        alt.Chart()
        .mark_rect()
        .encode(
            x=alt.X("k0:Q", scale=x_scale, axis=x_axis),
            x2="k1:Q",
            y=alt.Y("q0:Q", scale=y_scale, axis=y_axis),
            y2="q1:Q",
            color=color,
            tooltip=tooltip,
        )
    )
    layers = [cells]
    if has_sink:
        k1 = int(df.loc[df["sink"], "k1"].iloc[0])
        sink = pd.DataFrame(
            [{"k0": 0, "k1": k1, "q0": r0, "q1": n, "share": share, "what": "attention sink"}]
        )
        layers.append(
            alt.Chart(sink)
            .mark_rect(filled=False, stroke=SINK_COLOR, strokeWidth=2)
            .encode(
                x=alt.X("k0:Q", scale=x_scale, axis=x_axis),
                x2="k1:Q",
                y=alt.Y("q0:Q", scale=y_scale, axis=y_axis),
                y2="q1:Q",
                tooltip=[
                    alt.Tooltip("what:N", title="key 0"),
                    alt.Tooltip("share:Q", title="mean share of a row", format=".3f"),
                ],
            )
        )
    return alt.layer(
        *layers,
        data=df,
        title=alt.Title(title or f"Attention map: {what}", subtitle=subtitle),
    ).properties(width=w, height=h)


@no_type_check  # validates its arguments itself, with messages that name the fix
def head_map(analysis: Any, *, cell_px: int = 18) -> alt.LayerChart:
    """Every (layer, head) of the model coloured by span (Eq. 7), classes outlined.

    Local heads (bottom span quantile) are outlined in orange, global heads (top quantile)
    in blue, a head in both classes (one head analysed) in purple; heads that were not
    analysed are grey.

    Args:
        analysis: a `wb.Analysis`.
        cell_px: size of one head's cell in pixels.

    Returns:
        An ``alt.LayerChart``: one ``rect`` per head (fields ``layer head span cls``) and an
        outline ``rect`` layer whose data are the local and global heads.
    """
    cell_px = _validate.integer("cell_px", cell_px, minimum=1, example=18)
    hf = check_analysis(analysis).heads_frame()
    hf["cls"] = hf["cls"].fillna("not analysed")
    n_layers, n_heads = analysis.n_layers, analysis.n_heads
    x = alt.X("layer:O", title="layer", axis=alt.Axis(labelAngle=0))
    y = alt.Y("head:O", title="head")
    tooltip = [
        alt.Tooltip("layer:O"),
        alt.Tooltip("head:O"),
        alt.Tooltip("span:Q", format=".2f"),
        alt.Tooltip("cls:N", title="class"),
        alt.Tooltip("receiver:N"),
    ]
    cells = (
        alt.Chart(hf)
        .mark_rect()
        .encode(
            x=x,
            y=y,
            color=alt.condition(
                "isValid(datum.span) && isFinite(datum.span)",
                alt.Color(
                    "span:Q",
                    scale=alt.Scale(scheme=style.SPAN_SCHEME),
                    legend=alt.Legend(title="span"),
                ),
                alt.value(style.MISSING),
            ),
            tooltip=tooltip,
        )
    )
    named = ["local", "global", "local and global"]
    classes = hf[hf["cls"].isin(named)].reset_index(drop=True)
    outline = (
        alt.Chart(classes)
        .mark_rect(filled=False, strokeWidth=2.5)
        .encode(
            x=x,
            y=y,
            stroke=alt.Stroke(
                "cls:N",
                scale=alt.Scale(domain=named, range=[style.COLORS[c] for c in named]),
                legend=alt.Legend(title="class"),
            ),
            tooltip=tooltip,
        )
    )
    ql, qg = map(level_label, analysis.params.head_quantiles)  # 0.125 is 12.5%, not 12%
    subtitle = (
        f"{len(analysis.local_heads)} local (bottom {ql} by span), "
        f"{len(analysis.global_heads)} global (top {qg})"
    )
    return alt.layer(
        cells, outline, title=alt.Title("Heads by span", subtitle=subtitle)
    ).properties(width=n_layers * cell_px, height=n_heads * cell_px)
