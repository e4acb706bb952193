"""Charts of RL training: one run's progress (the RL panel draws it live)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, no_type_check

import altair as alt
import numpy as np
import pandas as pd

from ..errors import WorkbenchError
from .maps import MAX_CELLS

__all__ = ["progress_chart"]

SERIES = {
    "reward": "train reward",
    "eval_accuracy": "held-out accuracy (greedy)",
    "eval_sampled_accuracy": "held-out accuracy (sampled)",
}


def _check_rows(rows: Any) -> list[Mapping[str, Any]]:
    """`rows` as a list of metric rows; a row with a charted series needs a ``step``, and
    the step and series values must be numbers (a string would be charted as nothing)."""
    fix = "pass the rows of a run's metrics.jsonl: [{'step': 0, 'reward': 0.5}, ...]"
    if isinstance(rows, str | bytes | Mapping) or not hasattr(rows, "__iter__"):
        raise WorkbenchError(f"rows must be a list of metric rows, got {type(rows).__name__}", fix)
    rows = list(rows)
    for i, r in enumerate(rows):
        if not isinstance(r, Mapping):
            raise WorkbenchError(f"row {i} is a {type(r).__name__}, not a metric row (a dict)", fix)
        keys = [k for k in SERIES if k in r]
        if keys and "step" not in r:
            raise WorkbenchError(f"row {i} has {keys[0]} but no step", fix)
        for k in ["step", *keys] if keys else []:
            if k != "step" and r[k] is None:
                continue  # missing (JSON null): not charted
            if isinstance(r[k], bool) or not isinstance(r[k], numbers.Real):
                raise WorkbenchError(f"row {i} has {k}={r[k]!r}, not a number", fix)
            if k == "step" and not math.isfinite(r[k]):  # its point was dropped unseen
                raise WorkbenchError(f"row {i} has step={r[k]!r}, not a finite number", fix)
    return rows


@no_type_check  # validates its arguments itself, with messages that name the fix
def progress_chart(rows: list[dict[str, Any]]) -> alt.LayerChart:
    """Reward per step and held-out accuracy (greedy and sampled) at evaluations, one run.

    A run of more steps than a chart embeds (5,000 points, altair's limit) has its train
    reward averaged over each ``k`` consecutive steps, drawn at their mean step; the
    title says so and gives ``k``. The evaluations are drawn as they are.

    Args:
        rows: metric rows as logged in a run's ``metrics.jsonl``.
    """
    data = pd.DataFrame(
        [
            {"step": r["step"], "value": r[key], "series": name}
            for key, name in SERIES.items()
            for r in _check_rows(rows)
            if key in r
        ],
        columns=["step", "value", "series"],
    )
    data, title = _fit(data)
    # 0 to 1, the range of a verifiable reward and of an accuracy, or wider where a task's
    # reward leaves it (a format penalty below 0): points outside a fixed 0-1 were drawn
    # past the axis, over the title and the legend.
    values = pd.to_numeric(data["value"], errors="coerce").to_numpy(dtype=float)
    values = values[np.isfinite(values)]
    low = min(0.0, float(values.min())) if len(values) else 0.0
    high = max(1.0, float(values.max())) if len(values) else 1.0
    base = alt.Chart(data).encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("value:Q", title="reward / accuracy", scale=alt.Scale(domain=[low, high])),
        # A fixed domain: the same colour per series in every run, and an empty chart (a
        # run not yet logged) drew an invalid SVG (an empty legend sized 1.8e308).
        color=alt.Color("series:N", title=None, scale=alt.Scale(domain=list(SERIES.values()))),
        tooltip=["series:N", "step:Q", alt.Tooltip("value:Q", format=".3f")],
    )
    chart = (base.mark_line() + base.mark_point(filled=True)).properties(width=420, height=220)
    return chart if title is None else chart.properties(title=title)


def _fit(data: pd.DataFrame) -> tuple[pd.DataFrame, Any]:
    """`data` as it fits a chart (`MAX_CELLS` rows, altair's limit): a run of more steps has
    its train reward averaged over each `k` consecutive logged steps (drawn at their mean
    step); the evaluations are kept as they are. Returns the rows and a title that says so
    (None when nothing was averaged)."""
    if len(data) <= MAX_CELLS:
        return data, None
    is_reward = data["series"] == SERIES["reward"]
    reward, evals = data[is_reward].sort_values("step", kind="stable"), data[~is_reward]
    room = MAX_CELLS - len(evals)
    if room < 1:
        raise WorkbenchError(
            f"{len(evals)} evaluations are more points than a chart embeds ({MAX_CELLS})",
            "chart every k-th evaluation: progress_chart(rows[::k])",
        )
    k = math.ceil(len(reward) / room)
    chunk = np.arange(len(reward)) // k
    reward = (
        reward.groupby(chunk)
        .agg(step=("step", "mean"), value=("value", "mean"))
        .assign(series=SERIES["reward"])
    )
    title = alt.Title(
        f"train reward: mean of each {k} consecutive steps",
        subtitle=f"{len(chunk)} steps logged; a chart embeds at most {MAX_CELLS:,} points",
        fontSize=12,
        fontWeight="normal",
    )
    return pd.concat([reward, evals], ignore_index=True), title
