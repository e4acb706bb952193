"""The per-token frame every rhythm chart draws from: `METRICS`, `response_frame`, the
token label (`display_token`), the ``positions=`` crop and the token tooltip."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, no_type_check

import altair as alt
import pandas as pd

from .. import _validate
from ..errors import WorkbenchError
from .maps import MAX_CELLS

__all__ = [
    "METRICS",
    "check_analysis",
    "check_metric",
    "crop_positions",
    "display_token",
    "response_frame",
    "token_tooltip",
    "value_text",
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


#: The C0 control characters and DEL as their Unicode control pictures (U+2400..).
CONTROL_PICTURES = {c: chr(0x2400 + c) for c in range(0x20)} | {0x7F: "\u2421"}


def display_token(token: str) -> str:
    """A token as shown in charts: newlines (``\\n``, ``\\r\\n``) as ``↵``, a lone carriage
    return as ``␍``, tabs as ``→``, any other control character (``\\x00``..``\\x1f``,
    ``\\x7f``: form feed, escape, NUL...) as its control picture (``␌``, ``␛``, ``␀``, which
    can be seen and which the PNG/SVG exporter can draw: it aborts the process on the raw
    character); ``∅`` for the empty token."""
    s = token.replace("\r\n", "\n").replace("\r", "␍").replace("\n", "↵").replace("\t", "→")
    s = s.translate(CONTROL_PICTURES)
    return s if s else "∅"


def check_metric(metric: Any) -> str:
    """`metric` if it is a name in `METRICS`, else a `WorkbenchError` naming the choices."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise WorkbenchError(
            f"metric={metric!r} is not a per-token metric", f"pick one of {list(METRICS)}"
        )
    return metric


def check_analysis(analysis: Any) -> Any:
    """Refuse anything but a `wb.Analysis` (a raw AttributeError deep in a chart)."""
    from ..attention.analysis import Analysis

    if not isinstance(analysis, Analysis):
        raise WorkbenchError(
            f"expected a wb.Analysis, got {type(analysis).__name__}",
            "pass analysis = wb.analyze(model, trace)",
        )
    return analysis


def crop_positions(analysis: Any, positions: Any) -> range:
    resp = check_analysis(analysis).response
    if positions is None:
        sel = resp
    else:
        if isinstance(positions, range) and positions.step == 1:
            lo, hi = positions.start, max(positions.start, positions.stop)  # not listed
            items: list[int] | None = []
        else:
            try:  # integers only: int(25.5) would crop to 25 without a word
                items = [_validate.as_index(p) for p in positions]
            except TypeError:
                items = None
            if items is not None:
                lo, hi = (items[0], items[-1] + 1) if items else (0, 0)
        # A chart crops to a contiguous span: a list that is not one would be drawn as
        # the span from its first to its last element.
        if items is None or any(b != a + 1 for a, b in itertools.pairwise(items)):
            raise WorkbenchError(
                f"positions={positions!r} is not a range of positions",
                "pass e.g. positions=range(100, 300) (absolute positions, contiguous)",
            ) from None
        sel = range(max(lo, resp.start), max(min(hi, resp.stop), resp.start))
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


@no_type_check  # validates its arguments itself, with messages that name the fix
def response_frame(analysis: Any, positions: Sequence[int] | range | None = None) -> pd.DataFrame:
    """One row per response token: ``t`` (index in the response), ``pos``, ``token``,
    ``label`` (display text), ``response`` (True on every row here), the columns of
    `METRICS` (``waad``, ``delta``, ``fai``, ``receiver_fai``, ``entropy``,
    ``gamma_coupled``) and the flags ``preplan``, ``anchor``, ``dominated``, ``intro``.
    NaN metrics stay NaN (null in the chart).

    Args:
        analysis: an `Analysis`.
        positions: absolute positions to keep (a ``range`` or consecutive indices),
            clipped to the response, as the charts' ``positions=``; None keeps the whole
            response (at most `MAX_CELLS` tokens either way).

    Returns:
        A `pandas.DataFrame` with one row per kept position, in order.
    """
    sel = crop_positions(analysis, positions)
    df = analysis.to_frame().iloc[sel.start : sel.stop].reset_index(drop=True)
    df.insert(0, "t", df["pos"] - analysis.prompt_len)
    df.insert(3, "label", [display_token(s) for s in df["token"]])
    return df


def value_text(values: Any) -> list[str]:
    """Metric values as tooltip text: four significant digits (four decimals showed the
    FAI of a long trace, around 1e-4, as 0.0001 or 0.0000), ``n/a`` where it is NaN."""
    return [f"{v:.4g}" if pd.notna(v) and abs(v) != float("inf") else "n/a" for v in values]


def token_tooltip(metric: str, value: str = "value:Q", token: str = "label:N") -> list[alt.Tooltip]:
    """Tooltip of one response token in the per-token charts (`response_frame` columns):
    the token text, its response position ``t`` (the curves' x axis), its absolute
    position, the metric (field `value`, e.g. ``"value_text:N"`` for text that says
    ``n/a`` where it is NaN) and the preplan / anchor flags; `token` names the token
    field (e.g. ``"tip_token:N"``, spaces as ``␣``, which a tooltip would not show). Every field must be a column
    of the data of the layer that carries it (tests check this on ``to_dict()``)."""
    fmt = {"format": ".4~g"} if value.endswith(":Q") else {}
    return [
        alt.Tooltip(token, title="token"),
        alt.Tooltip("t:Q", title="response position"),
        alt.Tooltip("pos:Q", title="absolute position"),
        alt.Tooltip(value, title=metric, **fmt),
        alt.Tooltip("preplan:N", title="preplan"),
        alt.Tooltip("anchor:N", title="anchor"),
    ]
