"""Charts of RL training: one run's progress (the RL panel draws it live)."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

__all__ = ["progress_chart"]

SERIES = {
    "reward": "train reward",
    "eval_accuracy": "held-out accuracy (greedy)",
    "eval_sampled_accuracy": "held-out accuracy (sampled)",
}


def progress_chart(rows: list[dict[str, Any]]) -> alt.LayerChart:
    """Reward per step and held-out accuracy (greedy and sampled) at evaluations, one run.

    Args:
        rows: metric rows as logged in a run's ``metrics.jsonl``.
    """
    data = pd.DataFrame(
        [
            {"step": r["step"], "value": r[key], "series": name}
            for key, name in SERIES.items()
            for r in rows
            if key in r
        ],
        columns=["step", "value", "series"],
    )
    base = alt.Chart(data).encode(
        x=alt.X("step:Q", title="step"),
        y=alt.Y("value:Q", title="reward / accuracy", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("series:N", title=None),
        tooltip=["series:N", "step:Q", alt.Tooltip("value:Q", format=".3f")],
    )
    return (base.mark_line() + base.mark_point(filled=True)).properties(width=420, height=220)
