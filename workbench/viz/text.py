"""`text_view`: the response as text, each token coloured by a metric (the paper's
Figure 9), preplan tokens outlined in orange and anchors in blue; `wrap_tokens` lays it out."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import Any, no_type_check

import altair as alt
import numpy as np

from .. import _validate
from ..attention.rhythm import check_entropy
from ..errors import WorkbenchError
from . import style
from .frame import METRICS, check_metric, response_frame, token_tooltip, value_text

__all__ = ["cells", "text_view", "wrap_tokens"]


def cells(label: str) -> int:
    """The width of `label` in monospace cells: two for a wide or full-width character
    (Chinese, Japanese and Korean text, full-width forms), none for a combining mark, one
    otherwise; at least one, so every token can be seen and hovered."""
    n = 0
    for ch in label:
        if unicodedata.combining(ch):
            continue
        n += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return max(1, n)


def wrap_tokens(labels: Sequence[str], tokens: Sequence[str], line_chars: int) -> list[tuple]:
    """Lay tokens out in lines of at most `line_chars` monospace cells (`cells`). A token
    that holds a newline ends its line, and one that holds two or more also leaves a blank
    line, as a paragraph break does in the text. Returns ``(line, x0, x1)`` per token, in
    cells."""
    if line_chars < 1:
        raise WorkbenchError(f"line_chars must be >= 1, got {line_chars}", "pass e.g. 80")
    out, line, x = [], 0, 0
    for label, tok in zip(labels, tokens, strict=True):
        w = cells(label)
        if x > 0 and x + w > line_chars:
            line, x = line + 1, 0
        out.append((line, x, x + w))
        x += w
        if "\n" in tok:
            line, x = line + min(2, tok.count("\n")), 0
    return out


@no_type_check  # validates its arguments itself, with messages that name the fix
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
    an undefined metric (e.g. FAI of the last tokens, whose horizon holds fewer than
    ``fai_min_rows`` rows) are grey.

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
    col, mtitle = METRICS[check_metric(metric)]
    line_chars = _validate.integer("line_chars", line_chars, minimum=1, example=80)
    char_px = _validate.number("char_px", char_px, low=0, low_open=True, example=7.4)
    line_px = _validate.integer("line_px", line_px, minimum=1, example=20)
    outline = _validate.flag("outline", outline)
    df = response_frame(analysis, positions)
    if col == "entropy":
        check_entropy(analysis, consequence=", so there is nothing to colour the text by")
    lay = wrap_tokens(list(df["label"]), list(df["token"]), line_chars)
    df["line"] = [a for a, _, _ in lay]
    df["x0"] = [b for _, b, _ in lay]
    df["x1"] = [c for _, _, c in lay]
    df["y0"] = df["line"] + 0.06
    df["y1"] = df["line"] + 0.94
    df["value"] = df[col]
    df["value_text"] = value_text(df["value"])  # "n/a" where undefined (a tooltip said null)
    df["tip_token"] = df["label"].str.replace(" ", "␣")
    finite = np.isfinite(df["value"].to_numpy(dtype=float))
    n_lines = int(df["line"].max()) + 1
    width = math.ceil(line_chars * char_px)
    height = n_lines * line_px
    x_scale = alt.Scale(domain=[0, line_chars], range=[0, width], nice=False, zero=True)
    y_scale = alt.Scale(domain=[0, n_lines], range=[0, height], nice=False, zero=True)
    x = alt.X("x0:Q", scale=x_scale, axis=None)
    y = alt.Y("y0:Q", scale=y_scale, axis=None)
    keep = ["t", "pos", "label", "value", "value_text", "tip_token", "line", "x0", "x1", "y0",
            "y1", "preplan", "anchor"]  # fmt: skip
    data = df[keep]
    tooltip = token_tooltip(metric, "value_text:N", "tip_token:N")
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
                # No value to show: the legend's gradient was labelled "NaN".
                legend=alt.Legend(title=metric, orient="bottom", gradientLength=160)
                if finite.any()
                else None,
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
                    # spaces as ␣: a whitespace token's label read as nothing
                    tooltip=[
                        alt.Tooltip("set:N"),
                        alt.Tooltip("pos:Q"),
                        alt.Tooltip("tip_token:N", title="label"),
                    ],
                )
            )
    subtitle = f"colour: {mtitle}"
    if not finite.any():
        subtitle += ", undefined for every token (grey)"
    elif not finite.all():
        subtitle += f"; grey: undefined ({int((~finite).sum())} tokens)"
    subtitle += "; outline: orange = preplan, dashed blue = anchor" if outline else ""
    return alt.layer(*layers, title=alt.Title("Response", subtitle=subtitle)).properties(
        width=width, height=height
    )
