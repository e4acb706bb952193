"""Altair charts of ablation results, in the workbench style (`workbench.viz.style`).

- `effect_chart`: a `summarize` table as points with interval bars, one row per
  comparison (set, random, low-FAI, set - random, set - low-FAI), one panel per family.
- `kl_curve_chart`: per-position KL after the ablation, for one trace: the set and its
  controls as lines, the set's ablated positions as rules.

Both return plain altair charts: render them offline with `workbench.viz.enable_offline`
(or `workbench.viz.chart_widget`), export with `workbench.viz.save`.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from .. import _validate
from ..errors import WorkbenchError
from ..viz import style
from .runner import SUMMARY_COLUMNS, _check_frame, per_position

__all__ = ["effect_chart", "kl_curve_chart"]

_ORDER = [
    "set",
    "random",
    "nearby",
    "low_fai",
    "set - random",
    "set - nearby",
    "set - low_fai",
]
_FAMILY_COLORS = {
    "anchors": style.ANCHOR,
    "dominated": style.GLOBAL,
    "preplan": style.PREPLAN,
    "intro": style.LOCAL,
}
_METRIC_TITLES = {
    "kl_mean": "mean KL from the first ablated position on (nats)",
    "kl_after_last": "mean KL after the last ablated position (nats)",
    "kl_max": "largest KL from the first ablated position on (nats)",
    "delta_logp": "change in answer log-prob (nats)",
    "correct_ablated": "fraction still correct (greedy)",
    "delta_correct": "change in greedy correctness (ablated - clean)",
}


def _level(summary: pd.DataFrame) -> str:
    """``"95% "``: the summary's interval level(s) as percentages (empty without a ``ci``
    column, as in summaries from before it was recorded)."""
    if "ci" not in summary:
        return ""
    levels = sorted({float(c) for c in summary["ci"].dropna()})
    return "".join(f"{round(100 * c, 6):g}% " for c in levels[:1]) + "".join(
        f"/ {round(100 * c, 6):g}% " for c in levels[1:]
    )


def effect_chart(summary: pd.DataFrame, *, intervention: str | None = None) -> alt.FacetChart:
    """Effect by target set with the summary's intervals (Student-t over traces by default).

    Args:
        summary: a `summarize` DataFrame.
        intervention: which intervention to show (None: the first in the table).

    Returns:
        A faceted altair chart (one column per family): points at the estimates, bars
        from ``lo`` to ``hi``, a zero rule; differences are drawn in the family colour,
        plain means in grey.
    """
    if not isinstance(summary, pd.DataFrame):
        raise WorkbenchError(
            f"effect_chart needs a summarize table, got a {type(summary).__name__}",
            "pass wb.summarize(df, metric)",
        )
    if len(summary) == 0:
        raise WorkbenchError("the summary is empty", "run run_ablations and summarize first")
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise WorkbenchError(
            f"the table has no column(s) {missing}: it is not a summarize result",
            "pass wb.summarize(df, metric), not the run_ablations frame itself",
        )
    iv = intervention if intervention is not None else summary["intervention"].iloc[0]
    d = summary[summary["intervention"] == iv].copy()
    if d.empty:
        raise WorkbenchError(
            f"no rows for intervention {iv!r}",
            f"pick one of {sorted(summary['intervention'].unique())}",
        )
    metric = str(d["metric"].iloc[0])
    d["is_difference"] = d["comparison"].str.contains(" - ")
    d["color"] = [
        _FAMILY_COLORS.get(f, style.MUTED) if c == "set" or c.startswith("set - ")
        else style.MUTED
        for f, c in zip(d["family"], d["comparison"], strict=True)
    ]  # fmt: skip
    base = alt.Chart(d).encode(
        y=alt.Y("comparison:N", sort=_ORDER, title=None),
        tooltip=[
            "family",
            "comparison",
            alt.Tooltip("estimate:Q", format=".4g"),
            alt.Tooltip("lo:Q", format=".4g"),
            alt.Tooltip("hi:Q", format=".4g"),
            "n_traces",
        ],
    )
    x_title = _METRIC_TITLES.get(metric, metric)
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("lo:Q", title=x_title), x2="hi:Q", color=alt.Color("color:N", scale=None)
    )
    points = base.mark_point(filled=True, size=60).encode(
        x="estimate:Q", color=alt.Color("color:N", scale=None)
    )
    zero = base.mark_rule(color="#888888", strokeDash=[3, 3]).encode(x=alt.datum(0))
    n = int(d["n_traces"].max())
    title = f"{iv}: effect by target set ({n} trace{'s' * (n != 1)}, {_level(d)}intervals)"
    if (d["n_traces"] < 2).any():  # one trace has NaN bounds (`t_ci`, `bootstrap_ci`): no bar
        title += "; no interval where a comparison has one trace"
    return (
        alt.layer(zero, bars, points)
        .properties(width=260, height=24 * len(_ORDER))
        .facet(column=alt.Column("family:N", title=None))
        .properties(title=title)
    )


def kl_curve_chart(
    frame: pd.DataFrame,
    *,
    trace: int = 0,
    intervention: str = "knockout",
    family: str = "anchors",
    width: int = style.WIDTH,
) -> alt.LayerChart:
    """Per-position KL after the ablation, one trace, one family and its controls.

    Args:
        frame: a `run_ablations` DataFrame.
        trace: the trace index.
        intervention: the intervention kind.
        family: the target family (its set and its controls are drawn).
        width: chart width in pixels.

    Returns:
        Lines of ``KL(clean || ablated)`` at each response row (row ``t`` predicts token
        ``t + 1``) for the set (family colour) and each control (grey), with vertical
        rules at the set's ablated positions.
    """
    _check_frame(frame, ["trace", "intervention", "family", "kind", "positions"], "kl_curve_chart")
    _validate.integer("width", width, minimum=1, example=style.WIDTH)
    sel = frame[
        (frame["trace"] == trace)
        & (frame["intervention"] == intervention)
        & (frame["family"] == family)
    ]
    if sel.empty:
        raise WorkbenchError(
            f"no ablations for trace {trace}, {intervention!r}, {family!r}",
            "pick a trace, intervention and family that run_ablations produced",
        )
    long = per_position(sel)
    target = sel[sel["kind"] == "target"]
    positions = [int(p) for p in target["positions"].iloc[0]] if len(target) else []
    color = _FAMILY_COLORS.get(family, style.ANCHOR)
    names = list(dict.fromkeys(long["target"]))
    colors = [color if n == family else style.MUTED for n in names]
    lines = (
        alt.Chart(long)
        .mark_line(strokeWidth=1.5, point=False)
        .encode(
            x=alt.X(
                "pos:Q", title="position (row t predicts token t + 1)", scale=alt.Scale(zero=False)
            ),
            y=alt.Y("kl:Q", title="KL(clean ‖ ablated), nats"),
            color=alt.Color("target:N", scale=alt.Scale(domain=names, range=colors)),
            opacity=alt.condition(alt.datum.kind == "target", alt.value(1.0), alt.value(0.5)),
            tooltip=["target", "pos", alt.Tooltip("kl:Q", format=".4g")],
        )
    )
    rules = (
        alt.Chart(pd.DataFrame({"pos": positions}))
        .mark_rule(color=color, strokeDash=[2, 2], opacity=0.6)
        .encode(x="pos:Q")
    )
    return alt.layer(rules, lines).properties(
        width=width,
        height=220,
        title=f"trace {trace}: KL after {intervention} of {family} (dashed: ablated positions)",
    )
