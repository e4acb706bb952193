"""Charts of RL training: one run's progress (the RL panel draws it live)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, no_type_check

import altair as alt
import pandas as pd

from ..errors import WorkbenchError

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
    return rows


@no_type_check  # validates its arguments itself, with messages that name the fix
def progress_chart(rows: list[dict[str, Any]]) -> alt.LayerChart:
    """Reward per step and held-out accuracy (greedy and sampled) at evaluations, one run.

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
    base = alt.Chart(data).encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("value:Q", title="reward / accuracy", scale=alt.Scale(domain=[0, 1])),
        # A fixed domain: the same colour per series in every run, and an empty chart (a
        # run not yet logged) drew an invalid SVG (an empty legend sized 1.8e308).
        color=alt.Color("series:N", title=None, scale=alt.Scale(domain=list(SERIES.values()))),
        tooltip=["series:N", "step:Q", alt.Tooltip("value:Q", format=".3f")],
    )
    return (base.mark_line() + base.mark_point(filled=True)).properties(width=420, height=220)
