"""Altair chart builders for the preplan-and-anchor rhythm (each returns an altair chart).

- `attention_map`: a head group's (or one head's) attention over the response rows, the
  sawtooth of local heads and the vertical stripes of global heads (method.md, Eq. 9-10).
- `rhythm_curves`: WAAD (local heads) and FAI (global heads) over the response, preplan
  tokens marked on WAAD and anchors on FAI, token text on hover; entropy optionally.
- `text_view`: the response as text, each token coloured by a metric (the paper's
  Figure 9), preplan tokens outlined in orange and anchors in blue.
- `head_map`: every (layer, head) coloured by span, local and global heads outlined.

Every chart embeds its data (altair's 5,000-row limit holds: maps are pooled, curves and
text views raise a `WorkbenchError` naming the ``positions=`` crop above 5,000 tokens).
Render them offline in JupyterLab with `workbench.viz.enable_offline` (altair 6's default
renderer needs a CDN), or put them in panels as ``alt.JupyterChart`` widgets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from ..errors import WorkbenchError
from . import style
from .maps import MAX_CELLS, AttentionMaps

__all__ = [
    "METRICS",
    "attention_map",
    "display_token",
    "head_map",
    "response_frame",
    "rhythm_curves",
    "text_view",
    "wrap_tokens",
]

Head = tuple[int, int]

#: Per-token metrics a chart can show: name -> (column of `Analysis.to_frame`, title).
METRICS = {
    "waad": ("waad", "WAAD (local heads)"),
    "fai": ("fai", "FAI (global heads)"),
    "delta": ("delta", "Δ = |WAAD[t] − WAAD[t+1]|"),
    "entropy": ("entropy", "token entropy (nats)"),
    "receiver_fai": ("receiver_fai", "FAI (receiver heads)"),
    "gamma": ("gamma_coupled", "coupled credit γ"),
}


def display_token(token: str) -> str:
    """A token as shown in charts: newlines as ``↵``, tabs as ``→``, never empty."""
    s = token.replace("\r", "").replace("\n", "↵").replace("\t", "→")
    return s if s else "∅"


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise WorkbenchError(
            f"metric={metric!r} is not a per-token metric", f"pick one of {list(METRICS)}"
        )
    return metric


def _positions(analysis: Any, positions: Sequence[int] | range | None) -> range:
    resp = analysis.response
    if positions is None:
        sel = resp
    else:
        try:
            lo, hi = (int(positions[0]), int(positions[-1]) + 1) if len(positions) else (0, 0)
        except (TypeError, ValueError, IndexError):
            raise WorkbenchError(
                f"positions={positions!r} is not a range of positions",
                "pass e.g. positions=range(100, 300) (absolute positions)",
            ) from None
        sel = range(max(lo, resp.start), min(hi, resp.stop))
    if len(sel) == 0:
        raise WorkbenchError(
            f"positions={positions!r} selects no response token (the response is "
            f"{resp.start}..{resp.stop - 1})",
            "pass absolute positions inside the response",
        )
    if len(sel) > MAX_CELLS:
        raise WorkbenchError(
            f"{len(sel)} response tokens is more than a chart embeds ({MAX_CELLS})",
            f"crop with positions=range({sel.start}, {sel.start + MAX_CELLS})",
        )
    return sel


def response_frame(analysis: Any, positions: Sequence[int] | range | None = None) -> pd.DataFrame:
    """One row per response token: ``t`` (index in the response), ``pos``, ``token``,
    ``label`` (display text), the metrics of `METRICS` and the flags ``preplan``,
    ``anchor``, ``dominated``, ``intro``. NaN metrics stay NaN (null in the chart)."""
    sel = _positions(analysis, positions)
    df = analysis.to_frame().iloc[sel.start : sel.stop].reset_index(drop=True)
    df.insert(0, "t", df["pos"] - analysis.prompt_len)
    df.insert(3, "label", [display_token(s) for s in df["token"]])
    return df


# -- attention map ---------------------------------------------------------------------------


def _token_tooltip(metric: str) -> list[alt.Tooltip]:
    """Tooltip of one response token in the per-token charts (`response_frame` columns)."""
    return [
        alt.Tooltip("pos:Q", title="position"),
        alt.Tooltip("label:N", title="token"),
        alt.Tooltip("value:Q", title=metric, format=".4f"),
        alt.Tooltip("preplan:N"),
        alt.Tooltip("anchor:N"),
    ]


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


# -- WAAD / FAI curves -----------------------------------------------------------------------


def _curve(
    df: pd.DataFrame,
    metric: str,
    marks: str | None,
    *,
    width: int,
    height: int,
    show_x: bool,
) -> alt.LayerChart:
    col, title = METRICS[metric]
    color = style.COLORS.get(metric, style.MUTED)
    data = df[["t", "pos", "label", col, "preplan", "anchor"]].rename(columns={col: "value"})
    data["metric"] = metric
    x = alt.X(
        "t:Q",
        title="response position" if show_x else None,
        axis=alt.Axis(labels=show_x, ticks=show_x),
        scale=alt.Scale(domain=[int(df["t"].min()), int(df["t"].max())], nice=False),
    )
    tooltip = _token_tooltip(metric)
    base = alt.Chart(data)
    line = base.mark_line(color=color, strokeWidth=1.5).encode(x=x, y=alt.Y("value:Q", title=title))
    # The pointer picks the nearest token: a rule and the token's text follow it.
    hover = alt.selection_point(
        name=f"hover_{metric}",
        on="pointerover",
        nearest=True,
        fields=["t"],
        empty=False,
        clear="pointerout",
    )
    points = (
        base.mark_point(color=color, size=18, filled=True, opacity=0.7)
        .encode(x=x, y="value:Q", tooltip=tooltip)
        .add_params(hover)
    )
    rule = base.mark_rule(color=style.MUTED).encode(x=x).transform_filter(hover)
    label = (
        base.mark_text(align="left", dx=6, dy=-10, fontSize=12, font=style.MONO)
        .encode(x=x, y="value:Q", text="label:N")
        .transform_filter(hover)
    )
    layers = [line, points]
    if marks is not None:
        mcolor = style.PREPLAN if marks == "preplan" else style.ANCHOR
        marked = data[data[marks]].reset_index(drop=True)
        marked["mark"] = marks
        layers.append(
            alt.Chart(marked)
            .mark_point(shape="triangle-up", size=90, filled=True, color=mcolor)
            .encode(
                x=x,
                y="value:Q",
                tooltip=[
                    alt.Tooltip("mark:N", title="marked"),
                    alt.Tooltip("pos:Q", title="position"),
                    alt.Tooltip("label:N", title="token"),
                    alt.Tooltip("value:Q", title=metric, format=".4f"),
                ],
            )
        )
    return alt.layer(*layers, rule, label).properties(width=width, height=height)


def rhythm_curves(
    analysis: Any,
    *,
    entropy: bool = False,
    positions: Sequence[int] | range | None = None,
    width: int = style.WIDTH,
    height: int = 140,
) -> alt.VConcatChart:
    """WAAD and FAI over the response, stacked with a shared x axis.

    Preplan tokens (top-q Delta, Sec. 5.2) are marked with orange triangles on the WAAD
    curve, anchors (top-q FAI) with blue triangles on the FAI curve. Hovering a point
    shows its position, token and value. FAI is NaN (left out) where it is undefined.

    Args:
        analysis: a `wb.Analysis`.
        entropy: add token entropy as a third curve.
        positions: crop to these absolute positions (default: the whole response).
        width / height: size of each curve in pixels.

    Returns:
        An ``alt.VConcatChart`` of two (or three) layered charts: a line, hover points,
        (on WAAD and FAI) the marked tokens, then a rule and the token text that follow
        the pointer; each curve has its own data (field ``value``).
    """
    df = response_frame(analysis, positions)
    parts = [
        _curve(df, "waad", "preplan", width=width, height=height, show_x=False),
        _curve(df, "fai", "anchor", width=width, height=height, show_x=not entropy),
    ]
    if entropy:
        parts.append(_curve(df, "entropy", None, width=width, height=height, show_x=True))
    w = analysis.params.window
    lo, hi = analysis.params.fai_horizon
    subtitle = (
        f"W = {w}, FAI horizon ({lo}, {'end' if hi is None else hi}), "
        f"top q = {analysis.params.top_q}; ▲ orange = preplan, ▲ blue = anchor"
    )
    return alt.vconcat(
        *parts, title=alt.Title("Preplan-and-anchor rhythm", subtitle=subtitle), spacing=6
    ).resolve_scale(x="shared")


# -- text view ------------------------------------------------------------------------------


def wrap_tokens(labels: Sequence[str], tokens: Sequence[str], line_chars: int) -> list[tuple]:
    """Lay tokens out in lines of at most `line_chars` characters (a token that holds a
    newline ends its line). Returns ``(line, x0, x1)`` per token, in characters."""
    if line_chars < 1:
        raise WorkbenchError(f"line_chars must be >= 1, got {line_chars}", "pass e.g. 80")
    out, line, x = [], 0, 0
    for label, tok in zip(labels, tokens, strict=True):
        w = max(1, len(label))
        if x > 0 and x + w > line_chars:
            line, x = line + 1, 0
        out.append((line, x, x + w))
        x += w
        if "\n" in tok:
            line, x = line + 1, 0
    return out


def text_view(
    analysis: Any,
    metric: str = "fai",
    *,
    positions: Sequence[int] | range | None = None,
    line_chars: int = 80,
    outline: bool = True,
    char_px: float = 7.4,
    line_px: int = 20,
) -> alt.LayerChart:
    """The response as text, each token's background coloured by `metric` (Figure 9).

    Preplan tokens are outlined in orange, anchor tokens in blue (an anchor's outline is
    drawn slightly outside a preplan outline, so a token in both shows both). Tokens with
    an undefined metric (e.g. FAI of the last ``H_lo`` tokens) are grey.

    Args:
        analysis: a `wb.Analysis`.
        metric: one of `METRICS` (``"fai"``, ``"waad"``, ``"delta"``, ``"entropy"``,
            ``"receiver_fai"``, ``"gamma"``).
        positions: crop to these absolute positions (default: the whole response).
        line_chars: wrap lines at this many characters.
        outline: draw the preplan/anchor outlines.
        char_px / line_px: character width and line height in pixels.

    Returns:
        An ``alt.LayerChart``: background ``rect`` (field ``value``), ``text`` (field
        ``label``) and, with `outline`, two outline ``rect`` layers whose data are the
        preplan and the anchor tokens.
    """
    col, mtitle = METRICS[_check_metric(metric)]
    df = response_frame(analysis, positions)
    lay = wrap_tokens(list(df["label"]), list(df["token"]), line_chars)
    df["line"] = [a for a, _, _ in lay]
    df["x0"] = [b for _, b, _ in lay]
    df["x1"] = [c for _, _, c in lay]
    df["y0"] = df["line"] + 0.06
    df["y1"] = df["line"] + 0.94
    df["value"] = df[col]
    n_lines = int(df["line"].max()) + 1
    width = math.ceil(line_chars * char_px)
    height = n_lines * line_px
    x_scale = alt.Scale(domain=[0, line_chars], range=[0, width], nice=False, zero=True)
    y_scale = alt.Scale(domain=[0, n_lines], range=[0, height], nice=False, zero=True)
    x = alt.X("x0:Q", scale=x_scale, axis=None)
    y = alt.Y("y0:Q", scale=y_scale, axis=None)
    keep = ["t", "pos", "label", "value", "line", "x0", "x1", "y0", "y1", "preplan", "anchor"]
    data = df[keep]
    tooltip = _token_tooltip(metric)
    base = alt.Chart(data)
    background = base.mark_rect().encode(
        x=x,
        x2="x1:Q",
        y=y,
        y2="y1:Q",
        color=alt.condition(
            "isValid(datum.value) && isFinite(datum.value)",
            alt.Color(
                "value:Q",
                scale=alt.Scale(scheme=style.METRIC_SCHEME),
                legend=alt.Legend(title=metric, orient="bottom", gradientLength=160),
            ),
            alt.value(style.MISSING),
        ),
        tooltip=tooltip,
    )
    # Leading spaces would collapse in SVG text: draw the stripped text, shifted right.
    stripped = [s.lstrip(" ") for s in data["label"]]
    shift = [len(s) - len(t) for s, t in zip(data["label"], stripped, strict=True)]
    text_data = data.assign(ym=data["line"] + 0.5, tx=data["x0"] + shift, text=stripped)
    text = (
        alt.Chart(text_data)
        .mark_text(align="left", baseline="middle", font=style.MONO, fontSize=12, dx=0.5)
        .encode(
            x=alt.X("tx:Q", scale=x_scale, axis=None),
            y=alt.Y("ym:Q", scale=y_scale, axis=None),
            text="text:N",
            tooltip=tooltip,
        )
    )
    layers = [background, text]
    if outline:
        for flag, color, pad, dash in (
            ("preplan", style.PREPLAN, 0.0, []),
            ("anchor", style.ANCHOR, 0.04, [3, 2]),
        ):
            sel = data[data[flag]].copy()
            sel["ox0"], sel["ox1"] = sel["x0"] - pad * 2, sel["x1"] + pad * 2
            sel["oy0"], sel["oy1"] = sel["y0"] - pad, sel["y1"] + pad
            sel["set"] = flag
            layers.append(
                alt.Chart(sel.reset_index(drop=True))
                .mark_rect(filled=False, stroke=color, strokeWidth=2, strokeDash=dash)
                .encode(
                    x=alt.X("ox0:Q", scale=x_scale, axis=None),
                    x2="ox1:Q",
                    y=alt.Y("oy0:Q", scale=y_scale, axis=None),
                    y2="oy1:Q",
                    tooltip=[alt.Tooltip("set:N"), alt.Tooltip("pos:Q"), alt.Tooltip("label:N")],
                )
            )
    subtitle = f"colour: {mtitle}" + (
        "; outline: orange = preplan, dashed blue = anchor" if outline else ""
    )
    return alt.layer(*layers, title=alt.Title("Response", subtitle=subtitle)).properties(
        width=width, height=height
    )


# -- head map -------------------------------------------------------------------------------


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
