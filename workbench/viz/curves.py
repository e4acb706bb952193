"""`rhythm_curves`: WAAD (local heads) and FAI (global heads) over the response, preplan
tokens marked on WAAD and anchors on FAI, token text on hover; entropy optionally."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, no_type_check

import altair as alt
import pandas as pd

from .. import _validate
from ..attention.rhythm import check_entropy
from . import style
from .frame import METRICS, response_frame, token_tooltip, value_text

__all__ = ["rhythm_curves"]

#: Numbers the charts' pointer selections, so that charts shown together keep their own.
_HOVERS = itertools.count()


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
    data["value_text"] = value_text(data["value"])
    data["tip_token"] = data["label"].str.replace(" ", "␣")
    # Each token owns the band [t - 0.5, t + 0.5] over the whole height: hovering it
    # selects the token and shows its tooltip.
    data["t0"], data["t1"] = data["t"] - 0.5, data["t"] + 0.5
    lo, hi = int(df["t"].min()), int(df["t"].max())
    # One token: the domain [t, t] drew its hover band zero pixels wide (no tooltip, no
    # hover), so the lone token gets its band's half-width on either side.
    domain = [lo, hi] if lo < hi else [lo - 0.5, hi + 0.5]
    scale = alt.Scale(domain=domain, nice=False)
    x = alt.X(
        "t:Q",
        title="response position" if show_x else None,
        # Positions are whole: a short response had ticks at 0.1, 0.2, ... (no token there).
        axis=alt.Axis(labels=show_x, ticks=show_x, tickMinStep=1, format="d"),
        scale=scale,
    )
    base = alt.Chart(data)
    line = base.mark_line(color=color, strokeWidth=1.5).encode(x=x, y=alt.Y("value:Q", title=title))
    points = base.mark_point(color=color, size=18, filled=True, opacity=0.7).encode(
        x=x, y="value:Q"
    )
    # The pointer picks the token under it: a rule and the token's text follow it.
    # Not a `nearest` selection: Vega-Lite's voronoi layer for `nearest` reads nominal
    # tooltip fields from the scene item instead of its datum, so token, preplan and
    # anchor showed as "undefined".
    # A name of its own: two charts side by side (`a | b`) shared one "hover_waad", which
    # altair merged, so the pointer over one chart moved the rule of the other.
    hover = alt.selection_point(
        name=f"hover_{metric}_{next(_HOVERS)}",
        on="pointerover",
        fields=["t"],
        empty=False,
        clear="pointerout",
    )
    hit = (
        base.mark_rect(fill="transparent", stroke=None, clip=True)
        .encode(
            x=alt.X("t0:Q", scale=scale),
            x2="t1:Q",
            tooltip=token_tooltip(metric, "value_text:N", "tip_token:N"),
        )
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
        layers.append(
            alt.Chart(marked)
            .mark_point(shape="triangle-up", size=90, filled=True, color=mcolor)
            .encode(x=x, y="value:Q")
        )
    return alt.layer(*layers, rule, label, hit).properties(width=width, height=height)


@no_type_check  # validates its arguments itself, with messages that name the fix
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
    curve, anchors (top-q FAI) with blue triangles on the FAI curve. Hovering a token's
    column shows its text, response position (the x axis), absolute position, value and
    whether it is preplan / anchor. FAI is NaN (left out) where it is undefined.

    Args:
        analysis: a `wb.Analysis`.
        entropy: add token entropy as a third curve.
        positions: crop to these absolute positions (default: the whole response).
        width / height: size of each curve in pixels.

    Returns:
        An ``alt.VConcatChart`` of two (or three) layered charts: a line, hover points,
        (on WAAD and FAI) the marked tokens, then a rule and the token text that follow
        the pointer, and last a transparent band per token that carries the hover
        selection and the tooltip; each curve has its own data (field ``value``).
    """
    width = _validate.integer("width", width, minimum=1, example=style.WIDTH)
    height = _validate.integer("height", height, minimum=1, example=140)
    entropy = _validate.flag("entropy", entropy)
    df = response_frame(analysis, positions)
    if entropy:
        check_entropy(analysis, consequence=", so it has no entropy curve")
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
    if len(df) and df["fai"].isna().all():
        # the FAI panel was drawn empty without a word
        subtitle = [
            subtitle,
            f"FAI is undefined at every position shown: no token has "
            f"{analysis.params.fai_min_rows} later row(s) at least {lo} tokens on (a longer "
            "response, or a smaller fai_horizon, gives it one)",
        ]
    return alt.vconcat(
        *parts, title=alt.Title("Preplan-and-anchor rhythm", subtitle=subtitle), spacing=6
    ).resolve_scale(x="shared")
