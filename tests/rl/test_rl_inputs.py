"""Bad input to the RL layer's entry points is named with its fix, before anything is
written: never a raw error from deep inside, never a silently wrong table. Run folders are
synthetic (laid out as runs write them) wherever no model is needed."""

from __future__ import annotations

import json
import math
import re

import pytest

from workbench.attention import CreditParams
from workbench.errors import WorkbenchError
from workbench.rl import Experiment, GRPOConfig, read_metrics, resume, run_experiment, train


def _run(root, strategy, seed, accuracies, *, steps=None, config=True):
    """A finished run folder ``root/<strategy>/seed-<seed>`` whose evaluations at `steps`
    (default 0, 5, 10, ...) are `accuracies` (None: null in metrics.jsonl, as a NaN is
    written); without config.json when `config` is False."""
    steps = steps or [5 * i for i in range(len(accuracies))]
    run = root / strategy / f"seed-{seed}"
    run.mkdir(parents=True)
    if config:
        cfg = GRPOConfig().replace(strategy=strategy, seed=seed, max_steps=steps[-1])
        (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    rows = [{"step": s, "eval_accuracy": a} for s, a in zip(steps, accuracies, strict=True)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_a_run_folder_without_config_is_named_not_left_out(tmp_path):
    """A ``seed-*`` folder without config.json (a start that failed, a file deleted) was
    left out of every table without a word: a strategy summarised over a seed fewer."""
    for seed in (0, 1):
        _run(tmp_path, "none", seed, [0.1, 0.2])
        _run(tmp_path, "coupled", seed, [0.1, 0.3], config=seed == 0)
    exp = Experiment(tmp_path)
    for table in (exp.summary, exp.frame, exp.chart):
        with pytest.raises(WorkbenchError, match=r"1 run folder\(s\) in .* hold no config") as e:
            table()
        assert "coupled/seed-1" in e.value.problem
        assert "run_experiment call again" in e.value.fix and "move those" in e.value.fix
    # the runs asked for are all whole: read as before
    assert Experiment(tmp_path, strategies=["none"]).summary()["n_seeds"].tolist() == [2]
    assert Experiment(tmp_path, seeds=[0]).summary()["n_seeds"].tolist() == [1, 1]
    # no folder has a config: the folders are named, not "no run directory"
    (tmp_path / "none" / "seed-0" / "config.json").unlink()
    (tmp_path / "none" / "seed-1" / "config.json").unlink()
    (tmp_path / "coupled" / "seed-0" / "config.json").unlink()
    with pytest.raises(WorkbenchError, match=r"4 run folder\(s\) in .* hold no config"):
        Experiment(tmp_path).summary()


def test_a_mistyped_strategy_is_named_as_absent_not_as_an_empty_folder(tmp_path):
    """``strategies=["coupld"]`` alone said the folder "holds no run directory"."""
    _run(tmp_path, "coupled", 0, [0.1, 0.3])
    for kwargs, absent in ((dict(strategies=["coupld"]), "strategies ['coupld']"),
                           (dict(seeds=[7]), "seeds [7]")):  # fmt: skip
        with pytest.raises(WorkbenchError, match=rf"holds no runs of the {re.escape(absent)}"):
            Experiment(tmp_path, **kwargs).summary()
    with pytest.raises(WorkbenchError, match="holds no run directory"):
        Experiment(tmp_path / "coupled", strategies=["coupld"]).summary()


@pytest.mark.parametrize("final", [None, math.nan])
def test_a_final_evaluation_without_a_value_is_named_as_such(tmp_path, final):
    """A finished run whose last eval_accuracy is null (or NaN) was said to "have not
    finished (step 0 of 10)": the row without a value had been dropped."""
    _run(tmp_path, "none", 0, [0.1, 0.2, 0.3])
    _run(tmp_path, "coupled", 0, [0.1, 0.2, final])
    exp = Experiment(tmp_path)
    for table in (exp.summary, exp.paired):
        with pytest.raises(WorkbenchError, match="no 'eval_accuracy' value at their last") as e:
            table()
        assert "coupled/seed-0 (step 10)" in e.value.problem
        assert "not finished" not in e.value.problem
        assert "metrics.jsonl" in e.value.fix


def test_a_line_that_is_not_json_is_refused_unless_it_is_a_torn_last_line(tmp_path):
    """A bad line in the middle of metrics.jsonl was skipped without a word (its step
    missing from every table); only the last line can be torn by a crash mid-write."""
    rows = "".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in range(3))
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows + '{"step": 3, "lo')  # torn: skipped
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2]
    path.write_text(rows + "\n" + '{"step": 3, "lo\n\n')  # blank lines hold no row
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1, 2]
    lines = rows.splitlines(keepends=True)
    path.write_text(lines[0] + "garbage{\n" + "".join(lines[1:]))
    with pytest.raises(WorkbenchError, match=r"line 2 of .*metrics.jsonl is not JSON") as e:
        read_metrics(tmp_path)
    assert "garbage{" in e.value.problem and "delete that line" in e.value.fix


def _fake_run(tmp_path):
    """A run folder as `train` starts it (config.json), with no checkpoint."""
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(GRPOConfig(max_steps=2).to_dict()))
    return run


def test_resume_takes_a_checkpoint_step_and_names_the_accepted_forms(tmp_path):
    """``checkpoint=1`` failed as a raw TypeError joining it to a path; a step names its
    ``step-NNNNNN`` folder, the one name checkpoints get."""
    run = _fake_run(tmp_path)
    with pytest.raises(WorkbenchError, match="has no checkpoint 'step-000007'"):
        resume(run, checkpoint=7, progress=False)
    for bad in (1.0, True, -1, [1]):
        with pytest.raises(WorkbenchError, match="checkpoint must be a checkpoint folder name"
                           ) as e:  # fmt: skip
            resume(run, checkpoint=bad, progress=False)
        assert 'checkpoint="step-000010" or checkpoint=10' in e.value.fix
    assert not (run / "checkpoints").exists()


def test_another_runs_checkpoint_is_refused(tmp_path):
    """An absolute path or "../" reached another run's checkpoint: this run would have
    continued from another run's weights under its own config and history."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    run, other = _fake_run(tmp_path / "a"), _fake_run(tmp_path / "b")
    elsewhere = other / "checkpoints" / "step-000001"
    elsewhere.mkdir(parents=True)
    # from a/r/checkpoints: up to a/r, a, the root, then into b's run
    relative = "../../../b/r/checkpoints/step-000001"
    assert (run / "checkpoints" / relative).resolve() == elsewhere.resolve()
    for checkpoint in (elsewhere, str(elsewhere), relative):
        with pytest.raises(WorkbenchError, match="is not one of") as e:
            resume(run, checkpoint=checkpoint, progress=False)
        assert "list_checkpoints" in e.value.fix


@pytest.mark.slow
def test_a_checkpoint_step_resumes_from_that_checkpoint(tmp_path):
    """The step reaches the checkpoint folder itself (here an empty one, named corrupt)."""
    run = _fake_run(tmp_path)
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    with pytest.raises(WorkbenchError, match="step-000001 is corrupt"):
        resume(run, checkpoint=1, progress=False)


def test_a_progress_flag_that_is_not_a_bool_is_refused(tmp_path):
    """``progress="no"`` is truthy: the bars showed. Refused before any folder is written
    or model loaded, as `run_experiment` refuses it."""
    with pytest.raises(WorkbenchError, match="progress must be True or False, got 'no'") as e:
        train(GRPOConfig(max_steps=1), out=tmp_path / "a", progress="no")
    assert "progress=False" in e.value.fix
    assert not (tmp_path / "a").exists()
    run = _fake_run(tmp_path)
    with pytest.raises(WorkbenchError, match="progress must be True or False, got 'no'"):
        resume(run, progress="no")
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


def test_run_experiment_names_a_config_given_as_a_dict(tmp_path):
    """As `train` does: it failed as a raw AttributeError."""
    with pytest.raises(WorkbenchError, match=r"run_experiment's config must be a wb\.rl\.GRPO"
                       ) as e:  # fmt: skip
        run_experiment(["none"], [0], tmp_path / "out", config={"max_steps": 1}, progress=False)
    assert "GRPOConfig.from_dict" in e.value.fix
    assert not (tmp_path / "out").exists()


def test_a_credit_setting_given_twice_with_two_values_is_refused():
    """A config.json holding ``"strategy": "coupled"`` and ``"credit": {"strategy":
    "global"}`` trained "coupled" without a word."""
    both = {"strategy": "coupled", "credit": {"strategy": "global"}}
    with pytest.raises(WorkbenchError, match="strategy='coupled' but credit has 'global'") as e:
        GRPOConfig.from_dict(both)
    assert "give each credit setting once" in e.value.fix
    with pytest.raises(WorkbenchError, match=r"credit_layers=\[1, 3\] but credit has \(1, 2\)"):
        GRPOConfig.from_dict({"credit_layers": [1, 3], "credit": {"layers": [1, 2]}})
    with pytest.raises(WorkbenchError, match=r"top_q=0\.3 but credit has 0\.2"):
        GRPOConfig.from_dict({"top_q": 0.3, "credit": {"rhythm": {"top_q": 0.2}}})
    with pytest.raises(WorkbenchError, match="strategy='coupled' but credit has 'global'"):
        GRPOConfig().replace(credit=CreditParams(strategy="global"), strategy="coupled")
    # one value, or a field the credit dict leaves to its default: no conflict
    saved = GRPOConfig().replace(strategy="coupled", top_q=0.3).to_dict()
    assert GRPOConfig.from_dict({**saved, "strategy": "coupled"}).strategy == "coupled"
    cfg = GRPOConfig.from_dict({"top_q": 0.3, "credit": {"strategy": "global"}})
    assert (cfg.strategy, cfg.credit.rhythm.top_q) == ("global", 0.3)
    # a field by name changes the config's own credit, as before
    assert GRPOConfig.from_dict(saved).replace(strategy="global").strategy == "global"
