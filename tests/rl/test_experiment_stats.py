"""What `wb.rl.Experiment` says about its numbers, on synthetic run folders laid out as
runs write them (``<strategy>/seed-<k>/config.json`` and ``metrics.jsonl``): every label
names what was computed, and no run or seed is left out without a word."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from workbench.errors import WorkbenchError
from workbench.rl import Experiment, GRPOConfig, UnmatchedSeedsWarning


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
    unmatched = r"random/seed-1, random/seed-2 are missing"
    with pytest.warns(UnmatchedSeedsWarning, match=unmatched):
        paired = exp.paired().set_index("strategy")
    assert math.isnan(paired.loc["coupled", "diff_lo"])
    assert paired.loc["coupled", "test"] == (
        "paired sign-flip test; no interval (every difference is +0), Holm over 1"
    )
    assert paired.loc["random", "test"] == "no test or interval (fewer than two paired seeds)"
    with pytest.warns(UnmatchedSeedsWarning, match=unmatched):
        layers = exp.paired_chart().to_dict()
    table = layers["datasets"][layers["data"]["name"]]
    assert all(row["label_x"] is not None for row in table)
    assert "fewer than two seeds: no test" in {row["label"] for row in table}
    with pytest.warns(UnmatchedSeedsWarning, match=unmatched):
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
    from workbench.rl import MissingEvaluationWarning

    with pytest.warns(MissingEvaluationWarning, match=r"none/seed-0 \(step 0\)"):
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


@pytest.mark.parametrize("blank", [None, math.nan])
def test_an_evaluation_without_a_value_before_the_last_is_named(tmp_path, blank):
    """An evaluation without a value before a run's last (null or NaN in metrics.jsonl)
    was left out without a word: the peak was taken over the other evaluations, and the
    chart put the seed missing at that step down to "runs that stopped early". The last
    evaluation without a value is refused by the tables (see test_rl_inputs)."""
    from workbench.rl import MissingEvaluationWarning

    for seed in (0, 1):
        _run(tmp_path, "none", seed, [0.1, 0.2, 0.3])
        _run(tmp_path, "coupled", seed, [0.1, blank if seed == 0 else 0.5, 0.3])
    exp = Experiment(tmp_path)
    named = r"1 evaluation\(s\) in .* have no 'eval_accuracy' value: coupled/seed-0 \(step 5\)"
    for table in (exp.summary, exp.paired, exp.chart):
        with pytest.warns(MissingEvaluationWarning, match=named) as seen:
            table()
        assert seen[0].filename == __file__, "the warning names the caller's line"
        assert "NaN or null in their metrics.jsonl" in str(seen[0].message)
    with pytest.warns(MissingEvaluationWarning):
        subtitle = exp.chart().to_dict()["title"]["subtitle"]
    assert "evaluations without a value" in subtitle and "stopped early" not in subtitle
    # the values that are there are read as before
    with pytest.warns(MissingEvaluationWarning):
        summary = exp.summary().set_index("strategy")
    assert summary.loc["coupled", "peak"] == pytest.approx(0.4)
    # every seed without a value at a step: the step left the line with no seed fewer
    _run(tmp_path, "random", 0, [0.1, blank, 0.3])
    with (
        pytest.warns(UnmatchedSeedsWarning, match="random/seed-1 is missing"),
        pytest.warns(MissingEvaluationWarning, match=r"2 evaluation\(s\)") as seen,
    ):
        subtitle = exp.chart().to_dict()["title"]["subtitle"]
    assert "random/seed-0 (step 5)" in str(seen[0].message)
    assert "evaluations without a value left out: 2" in subtitle
    # a run's last evaluation without a value: the chart names it (the tables refuse it)
    final = tmp_path / "final"
    _run(final, "none", 0, [0.1, 0.2, 0.3])
    _run(final, "none", 1, [0.1, 0.2, blank])
    with pytest.warns(MissingEvaluationWarning, match=r"none/seed-1 \(step 10\)"):
        subtitle = Experiment(final).chart().to_dict()["title"]["subtitle"]
    assert "stopped early" not in subtitle and "evaluations without a value" in subtitle
    # no warning where every evaluation has its value
    clean = tmp_path / "clean"
    _run(clean, "none", 0, [0.1, 0.2, 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Experiment(clean).summary()
        Experiment(clean).chart()


def test_the_run_folders_are_read_once_per_table(tmp_path, monkeypatch):
    """The seed folders were globbed twice per table (once to check them, once to list
    the runs): a run restarted in between (run_experiment removes the config.json of a run
    that never checkpointed) passed the check and was then left out of the table without a
    word, its strategy summarised over a seed fewer."""
    for seed in (0, 1):
        _run(tmp_path, "none", seed, [0.1, 0.2])
        _run(tmp_path, "coupled", seed, [0.1, 0.3])
    scans = []
    original = Experiment._seed_folders

    def scan(self):
        scans.append(self)
        if len(scans) == 2:  # the run is restarted between two reads
            (tmp_path / "coupled" / "seed-1" / "config.json").unlink()
        return original(self)

    monkeypatch.setattr(Experiment, "_seed_folders", scan)
    exp = Experiment(tmp_path)
    try:
        summary = exp.summary().set_index("strategy")
    except WorkbenchError as e:  # named, where the run lost its config.json
        assert "coupled/seed-1" in e.problem
    else:
        assert summary.loc["coupled", "n_seeds"] == 2, "a seed was left out silently"
    assert len(scans) == 1, f"{len(scans)} reads of the folders for one table"
    # A later table reads the folders again: a run started since is seen.
    _run(tmp_path, "random", 0, [0.1, 0.2])
    (tmp_path / "coupled" / "seed-1" / "config.json").write_text(
        json.dumps(GRPOConfig().replace(strategy="coupled", seed=1, max_steps=5).to_dict())
    )
    scans.clear()
    with pytest.warns(UnmatchedSeedsWarning, match="random/seed-1 is missing"):
        assert set(exp.summary()["strategy"]) == {"none", "coupled", "random"}
    assert len(scans) == 1


def test_strategies_run_on_other_seeds_are_named(tmp_path):
    """An experiment interrupted before a strategy's last seed (or a batch over seeds
    not run again to its end) was summarised without a word: each strategy's mean over
    its own seeds, the missing run visible only as a smaller n_seeds. A seed fixes the
    training problems, so the missing runs are named, with the fix."""
    for seed in (0, 1, 2):
        _run(tmp_path, "none", seed, [0.2, 0.3 + 0.1 * seed])
    for seed in (0, 1):
        _run(tmp_path, "coupled", seed, [0.2, 0.5 + 0.1 * seed])
    exp = Experiment(tmp_path)
    for table in (exp.summary, exp.paired, exp.chart):
        with pytest.warns(UnmatchedSeedsWarning, match="coupled/seed-2 is missing") as seen:
            table()
        assert len(seen) == 1 and seen[0].filename == __file__
        assert "run_experiment call again" in str(seen[0].message)
    # read on the seeds both strategies have, nothing is left to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = Experiment(tmp_path, seeds=[0, 1]).summary().set_index("strategy")
    assert summary["n_seeds"].tolist() == [2, 2]
    # one strategy alone has no partner to be matched with
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Experiment(tmp_path, strategies=["none"]).summary()


@pytest.mark.parametrize("baseline", [["none"], {"none": 1}])
def test_a_baseline_that_is_no_name_is_refused_with_the_fix(tmp_path, baseline):
    """``paired(baseline=["none"])`` (a list, as `strategies` is) raised pandas' raw
    ``TypeError: unhashable type: 'list'`` from deep inside the column lookup."""
    for seed in (0, 1):
        _run(tmp_path, "none", seed, [0.2, 0.3])
        _run(tmp_path, "coupled", seed, [0.2, 0.4])
    exp = Experiment(tmp_path)
    for table in (exp.paired, exp.paired_chart):
        with pytest.raises(WorkbenchError, match=r"no \[?\{?'none'") as e:
            table(baseline=baseline)
        assert "'coupled'" in e.value.fix and "'none'" in e.value.fix


def test_a_strategy_without_a_seed_in_common_keeps_its_row_in_the_forest_plot(tmp_path):
    """A strategy run on none of the baseline's seeds (0 pairs) had a NaN difference, so
    its point, its bar and its "no test" label all sat at NaN: Vega-Lite drops such marks,
    and the strategy vanished from the plot without a word. Its label now sits at 0."""
    for seed in (0, 1, 2):
        _run(tmp_path, "none", seed, [0.2, 0.3 + 0.1 * seed])
        _run(tmp_path, "coupled", seed, [0.2, 0.5])
    _run(tmp_path, "random", 7, [0.2, 0.6])  # no seed in common with the baseline
    exp = Experiment(tmp_path)
    with pytest.warns(UnmatchedSeedsWarning):
        paired = exp.paired().set_index("strategy")
    assert paired.loc["random", "n_pairs"] == 0 and math.isnan(paired.loc["random", "p"])
    with pytest.warns(UnmatchedSeedsWarning):
        layers = exp.paired_chart().to_dict()
    table = {row["strategy"]: row for row in layers["datasets"][layers["data"]["name"]]}
    assert table["random"]["label_x"] == 0.0
    assert table["random"]["label"] == "fewer than two seeds: no test"


def test_p_min_counts_only_the_seeds_whose_difference_is_not_zero(tmp_path):
    """A tie (the same accuracy for both strategies) flips to itself, so the sign-flip test
    cannot go below ``2 / 2**(seeds that differ)``: with two ties in five seeds ``p_min``
    said 0.0625 while no p-value below 0.25 was possible."""
    finals = {"none": [0.3, 0.3, 0.3, 0.4, 0.5], "coupled": [0.5, 0.6, 0.7, 0.4, 0.5]}
    for strategy, values in finals.items():
        for seed, value in enumerate(values):
            _run(tmp_path, strategy, seed, [0.2, value])
    (row,) = Experiment(tmp_path).paired().to_dict("records")
    assert row["n_pairs"] == 5 and row["p"] == pytest.approx(0.25)
    assert row["p_min"] == pytest.approx(0.25) and row["p"] >= row["p_min"]
