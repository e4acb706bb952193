"""What `wb.rl.Experiment` says about its numbers, on synthetic run folders laid out as
runs write them (``<strategy>/seed-<k>/config.json`` and ``metrics.jsonl``): every label
names what was computed, and no run or seed is left out without a word."""

from __future__ import annotations

import json
import math

import pytest

from workbench.errors import WorkbenchError
from workbench.rl import Experiment, GRPOConfig


def _run(root, strategy, seed, accuracies, *, max_steps=None, steps=None):
    """A run folder whose evaluations at `steps` (default 0, 5, 10, ...) are `accuracies`
    (None: an evaluation row without a value)."""
    steps = steps or [5 * i for i in range(len(accuracies))]
    run = root / strategy / f"seed-{seed}"
    run.mkdir(parents=True)
    cfg = GRPOConfig().replace(strategy=strategy, seed=seed, max_steps=max_steps or steps[-1])
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    rows = [{"step": s, "eval_accuracy": a} for s, a in zip(steps, accuracies, strict=True)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_labels_say_where_no_test_or_interval_could_be_given(tmp_path):
    """Every paired difference 0, or one seed, gave NaN bounds (and a NaN p) under a label
    that named a t-interval and a test; the forest plot dropped the labels of such rows,
    which it placed at their NaN upper bound."""
    for seed in (0, 1, 2):
        _run(tmp_path, "none", seed, [0.5, 0.5])
        _run(tmp_path, "coupled", seed, [0.5, 0.5])  # the same accuracies: differences 0
    _run(tmp_path, "random", 0, [0.5, 0.6])  # one seed paired
    exp = Experiment(tmp_path)
    paired = exp.paired().set_index("strategy")
    assert math.isnan(paired.loc["coupled", "diff_lo"])
    assert paired.loc["coupled", "test"] == (
        "paired sign-flip test; no interval (every difference is +0), Holm over 1"
    )
    assert paired.loc["random", "test"] == "no test or interval (fewer than two paired seeds)"
    layers = exp.paired_chart().to_dict()
    table = layers["datasets"][layers["data"]["name"]]
    assert all(row["label_x"] is not None for row in table)
    assert "fewer than two seeds: no test" in {row["label"] for row in table}
    summary = exp.summary().set_index("strategy")
    assert summary.loc["none", "interval"] == (
        "95% t, 2 df; none for final and peak (every seed scores the same)"
    )
    assert summary.loc["random", "interval"] == "none (one seed)"


def test_a_level_is_labelled_as_given(tmp_path):
    """ci=0.995 was labelled "100%"."""
    for seed, (a, b) in enumerate([(0.5, 0.6), (0.4, 0.7), (0.5, 0.9)]):
        _run(tmp_path, "none", seed, [0.3, a])
        _run(tmp_path, "coupled", seed, [0.3, b])
    exp = Experiment(tmp_path)
    assert set(exp.summary(ci=0.995)["interval"]) == {"99.5% t, 2 df"}
    assert exp.paired(ci=0.995)["test"].iloc[0].startswith("paired sign-flip test, 99.5% t-")


def test_the_start_is_the_evaluation_before_training(tmp_path):
    """A run whose step-0 evaluation is missing took its step-5 value as its start, so the
    start and gain of its strategy mixed two steps."""
    _run(tmp_path, "none", 0, [None, 0.9, 0.9])
    _run(tmp_path, "none", 1, [0.5, 0.6, 0.7])
    row = Experiment(tmp_path).summary().iloc[0]
    assert row["start"] == pytest.approx(0.5) and row["gain"] == pytest.approx(0.2)


def test_the_chart_says_where_fewer_seeds_are_averaged(tmp_path):
    """Two runs stopped at step 10 of 20: the later points were one seed's, under a title
    of three (the line jumped with the seed mix)."""
    for seed in (0, 1):
        _run(tmp_path, "none", seed, [0.4, 0.45, 0.45], max_steps=20)
    _run(tmp_path, "none", 2, [0.4, 0.5, 0.6, 0.65, 0.7])
    chart = Experiment(tmp_path).chart().to_dict()
    assert "some steps average fewer seeds" in chart["title"]["subtitle"]
    rows = next(iter(chart["datasets"].values()))
    assert {r["step"]: r["seeds"] for r in rows} == {0: 3, 5: 3, 10: 3, 15: 1, 20: 1}


def test_strategies_or_seeds_asked_for_but_absent_are_named(tmp_path):
    for seed in (0, 1, 2):
        _run(tmp_path, "none", seed, [0.5, 0.6])
    with pytest.raises(WorkbenchError, match=r"no runs of the seeds \[3\]"):
        Experiment(tmp_path, seeds=[0, 1, 2, 3]).summary()
    with pytest.raises(WorkbenchError, match=r"no runs of the strategies \['coupled'\]"):
        Experiment(tmp_path, strategies=["none", "coupled"]).summary()
