"""Charts of heads: `attention_map` (a head group's attention over the response rows, the
sawtooth of local heads and the stripes of global heads, method.md Eq. 9-10) and `head_map`
(every (layer, head) coloured by span, local and global heads outlined)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from ..errors import WorkbenchError
from . import style
from .frame import display_token
from .maps import AttentionMaps

__all__ = ["attention_map", "head_map"]

Head = tuple[int, int]


def _resolve_group(
    heads: str | Head | Sequence[Head], analysis: Any | None
) -> tuple[list[Head], str]:
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
        group = list(analysis.local_heads if heads == "local" else analysis.global_heads)
        return group, f"mean of {len(group)} {heads} heads"
    if (
        isinstance(heads, tuple)
        and len(heads) == 2
        and all(isinstance(v, int | np.integer) for v in heads)
    ):
        return [(int(heads[0]), int(heads[1]))], f"layer {heads[0]} head {heads[1]}"
    group = [(int(a), int(b)) for a, b in heads]
    if len(group) == 1:
        return group, f"layer {group[0][0]} head {group[0][1]}"
    return group, f"mean of {len(group)} heads"


def attention_map(
    maps: AttentionMaps,
    heads: str | Head | Sequence[Head] = "local",
    *,
    analysis: Any | None = None,
    title: str | None = None,
    size: int = 420,
    color_scale: str = "sqrt",
) -> alt.Chart:
    """The attention of a head group (or one head) over the response rows.

    Rows are query positions (response only, top to bottom), columns are key positions
    (all keys, or the response, as recorded in `maps`). Blocks of ``maps.bin`` positions
    are averaged (so the chart has at most 5,000 cells); cells entirely above the diagonal
    (always zero) are left out.

    Args:
        maps: pooled per-head maps from `workbench.viz.attention_maps`.
        heads: ``"local"`` / ``"global"`` (the analysis's head classes; needs
            `analysis`), one ``(layer, head)``, or a list of heads (their mean).
        analysis: the `Analysis` whose head classes ``"local"``/``"global"`` refer to.
        title: chart title (default: which heads).
        size: the larger side in pixels.
        color_scale: altair scale type for attention (``"sqrt"`` shows small weights).

    Returns:
        An ``alt.Chart`` of ``rect`` marks, fields ``q0 q1 k0 k1 attention``.
    """
    group, what = _resolve_group(heads, analysis)
    grid = maps.group(group)
    b, r0, c0 = maps.bin, maps.row_start, maps.col_start
    n = maps.n_pos
    rows = []
    for i in range(grid.shape[0]):
        q0 = r0 + i * b
        q1 = min(q0 + b, n) - 1
        for j in range(grid.shape[1]):
            k0 = c0 + j * b
            if k0 > q1:
                break
            k1 = min(k0 + b, n) - 1
            row = {"q0": q0, "q1": q1 + 1, "k0": k0, "k1": k1 + 1, "attention": float(grid[i, j])}
            if b == 1:
                row["query"] = display_token(maps.tokens[q0])
                row["key"] = display_token(maps.tokens[k0])
            rows.append(row)
    df = pd.DataFrame(rows)
    n_r, n_c = n - r0, n - c0
    w, h = (
        (size, max(60, round(size * n_r / n_c))) if n_c >= n_r else (round(size * n_c / n_r), size)
    )
    tooltip = [
        alt.Tooltip("q0:Q", title="query pos" + ("" if b == 1 else " (from)")),
        alt.Tooltip("k0:Q", title="key pos" + ("" if b == 1 else " (from)")),
        alt.Tooltip("attention:Q", format=".4f"),
    ]
    if b == 1:
        tooltip += [alt.Tooltip("query:N"), alt.Tooltip("key:N")]
    subtitle = f"rows: response positions {r0}..{n - 1}; columns: key positions {c0}..{n - 1}" + (
        "" if b == 1 else f"; {b}x{b} blocks averaged"
    )
    return (
        alt.Chart(df, title=alt.Title(title or f"Attention map: {what}", subtitle=subtitle))
        .mark_rect()
        .encode(
            x=alt.X("k0:Q", title="key position", scale=alt.Scale(domain=[c0, n], nice=False)),
            x2="k1:Q",
            y=alt.Y(
                "q0:Q",
                title="query position (response)",
                scale=alt.Scale(domain=[r0, n], nice=False, reverse=True),
            ),
            y2="q1:Q",
            color=alt.Color(
                "attention:Q",
                scale=alt.Scale(type=color_scale, scheme=style.MAP_SCHEME, domainMin=0),
                legend=alt.Legend(title="attention"),
            ),
            tooltip=tooltip,
        )
        .properties(width=w, height=h)
    )


def head_map(analysis: Any, *, cell_px: int = 18) -> alt.LayerChart:
    """Every (layer, head) of the model coloured by span (Eq. 7), classes outlined.

    Local heads (bottom span quantile) are outlined in orange, global heads (top quantile)
    in blue; heads that were not analysed are grey.

    Args:
        analysis: a `wb.Analysis`.
        cell_px: size of one head's cell in pixels.

    Returns:
        An ``alt.LayerChart``: one ``rect`` per head (fields ``layer head span cls``) and an
        outline ``rect`` layer whose data are the local and global heads.
    """
    hf = analysis.heads_frame()
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
    classes = hf[hf["cls"].isin(["local", "global"])].reset_index(drop=True)
    outline = (
        alt.Chart(classes)
        .mark_rect(filled=False, strokeWidth=2.5)
        .encode(
            x=x,
            y=y,
            stroke=alt.Stroke(
                "cls:N",
                scale=alt.Scale(domain=["local", "global"], range=[style.LOCAL, style.GLOBAL]),
                legend=alt.Legend(title="class"),
            ),
            tooltip=tooltip,
        )
    )
    ql, qg = analysis.params.head_quantiles
    subtitle = (
        f"{len(analysis.local_heads)} local (bottom {ql:.0%} by span), "
        f"{len(analysis.global_heads)} global (top {qg:.0%})"
    )
    return alt.layer(
        cells, outline, title=alt.Title("Heads by span", subtitle=subtitle)
    ).properties(width=n_layers * cell_px, height=n_heads * cell_px)
