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


def test_bool_settings_take_numpy_bools_and_no_count_exceeds_one_sampling_call():
    """``fused_credit=np.True_`` (as a NumPy mask gives it) was refused as "must be True or
    False"; a batch or evaluation larger than one sampling call passed, then hung drawing
    its prompts or failed once the run folder was written; an int key failed as a raw
    TypeError."""
    import numpy as np

    cfg = GRPOConfig(fused_credit=np.True_, chat=np.False_)
    assert (cfg.fused_credit, cfg.chat) == (True, False) and type(cfg.fused_credit) is bool
    json.dumps(cfg.to_dict())
    with pytest.raises(WorkbenchError, match="more than the 1000000 completions one step"):
        GRPOConfig(per_device_train_batch_size=2**40)
    with pytest.raises(WorkbenchError, match=r"eval_size=64 x eval_samples=1000000000 is more"):
        GRPOConfig(eval_samples=10**9)
    with pytest.raises(WorkbenchError, match=r"eval_size=10000000 is more than"):
        GRPOConfig(eval_size=10**7, eval_samples=0)
    with pytest.raises(WorkbenchError, match="needs setting names as keys, got 1"):
        GRPOConfig.from_dict({1: 2})


def test_grpo_config_names_credit_settings_and_misspellings_given_to_its_constructor():
    """``GRPOConfig(strategy="coupled")`` (TRL's flat settings) and ``GRPOConfig(lr=...)``
    failed as the dataclass's raw "unexpected keyword argument"."""
    with pytest.raises(WorkbenchError, match="takes the credit whole") as e:
        GRPOConfig(strategy="coupled", max_steps=3)
    assert "CreditParams(strategy=" in e.value.fix and ".replace(strategy=" in e.value.fix
    with pytest.raises(WorkbenchError, match=r"unknown GRPO settings \['lr'\]") as e:
        GRPOConfig(lr=1e-3)
    assert "learning_rate" in e.value.fix
    assert GRPOConfig(max_steps=3).replace(strategy="coupled").strategy == "coupled"


def test_an_experiment_refuses_a_run_whose_config_lacks_the_settings_every_run_writes(
    tmp_path,
):
    """A config.json emptied or cut down to a few keys was read with the defaults for the
    rest: the run was tabled as a default run of another length, model or task."""
    run = _run(tmp_path, "none", 0, [0.1, 0.2])
    (run / "config.json").write_text(json.dumps({"credit": {"strategy": "none"}, "seed": 0}))
    with pytest.raises(WorkbenchError, match=r"lacks the settings \['model', 'task', 'max_steps'"):
        Experiment(tmp_path).summary()


def test_train_refuses_a_folder_holding_an_earlier_runs_rows_or_checkpoints(tmp_path):
    """A run folder whose config.json was deleted took a new run: its rows were appended
    to the old run's (steps 0, 1, 2, 0, 1) and pruning kept the old run's later checkpoint
    over the new run's own."""
    rows = tmp_path / "rows"
    rows.mkdir()
    (rows / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n')
    ckpts = tmp_path / "ckpts"
    (ckpts / "checkpoints" / "step-000002").mkdir(parents=True)
    for run, what in ((rows, "metrics.jsonl"), (ckpts, "checkpoints")):
        with pytest.raises(WorkbenchError, match=f"holds the {what} of an earlier run") as e:
            train(GRPOConfig(max_steps=1), out=run, progress=False)
        assert "another out folder" in e.value.fix
        assert not (run / "config.json").exists()
    assert (rows / "metrics.jsonl").read_text() == '{"step": 0}\n{"step": 1}\n'


def test_callbacks_that_are_not_a_list_of_functions_are_refused(tmp_path):
    """``callbacks=print`` or ``callbacks=3`` failed as a raw TypeError; ``[3]`` only after
    the first evaluation, with the run folder written and "failed"."""
    for bad, words in ((print, "must be a list of functions"), (3, "must be a list"),
                       ([3], "holds 3, which is not a function")):  # fmt: skip
        with pytest.raises(WorkbenchError, match=words) as e:
            train(GRPOConfig(max_steps=1), out=tmp_path / "a", callbacks=bad, progress=False)
        assert "callbacks=[on_row]" in e.value.fix
    assert not (tmp_path / "a").exists()
    run = _fake_run(tmp_path)
    with pytest.raises(WorkbenchError, match="callbacks must be a list of functions"):
        resume(run, callbacks=print, progress=False)


def test_a_run_whose_checkpoints_are_gone_is_not_said_never_to_have_checkpointed(tmp_path):
    """A finished run whose checkpoint folders were deleted was said to have "never reached
    its first checkpoint", with the fix to delete the folder (and its metrics with it)."""
    run = _fake_run(tmp_path)
    (run / "metrics.jsonl").write_text("".join(f'{{"step": {s}}}\n' for s in range(3)))
    (run / "status.json").write_text('{"status": "finished", "step": 2}')
    for call in (lambda: resume(run, progress=False),
                 lambda: train(GRPOConfig(max_steps=2), out=run, progress=False)):  # fmt: skip
        with pytest.raises(WorkbenchError, match="whose checkpoints are gone") as e:
            call()
        assert "metrics up to step 2" in e.value.problem and "finished" in e.value.problem
        assert "rmtree" not in e.value.fix and "restore its checkpoints" in e.value.fix


def test_an_empty_or_set_aside_checkpoint_name_is_refused(tmp_path):
    """``checkpoint=""`` resumed from LATEST without a word; ``"abandoned-step-N"`` (set
    aside by an earlier resume, its rows dropped) was loaded, and every real checkpoint,
    sorting after its name, was set aside as "later"."""
    run = _fake_run(tmp_path)
    for name in ("step-000001", "abandoned-step-000002", ".tmp-step-000002-x"):
        (run / "checkpoints" / name).mkdir(parents=True)
    with pytest.raises(WorkbenchError, match="checkpoint must be a checkpoint folder name"):
        resume(run, checkpoint="", progress=False)
    for name in ("abandoned-step-000002", ".tmp-step-000002-x"):
        with pytest.raises(WorkbenchError, match=f"has no checkpoint '{re.escape(name)}'"):
            resume(run, checkpoint=name, progress=False)
    # (the lock's holder removed the killed write's leftover, as it always does)
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left == ["abandoned-step-000002", "step-000001"]


def test_a_damaged_latest_pointer_or_step_is_named_or_not_followed(tmp_path):
    """A LATEST holding bytes that are not text failed as a raw UnicodeDecodeError; a
    state.json naming another step than its folder's resumed the run at that step (past
    its length: "finished" at once, with no step trained); a negative step was a row."""
    import torch

    from workbench.rl import latest_checkpoint
    from workbench.rl.checkpoint import load_checkpoint

    root = tmp_path / "checkpoints"
    (root / "step-000002").mkdir(parents=True)
    (root / "LATEST").write_bytes(b"\xff\xfe")
    assert latest_checkpoint(tmp_path) == root / "step-000002"
    (root / "step-000002" / "state.json").write_text('{"step": 5, "seed": 0}')
    with pytest.raises(WorkbenchError, match=r"state\.json names step 5, not the folder.s"):
        load_checkpoint(root / "step-000002", torch.nn.Linear(1, 1))
    (tmp_path / "metrics.jsonl").write_text('{"step": -1}\n{"step": 0}\n')
    with pytest.raises(WorkbenchError, match=r"line 1 of .* is not a metrics row"):
        read_metrics(tmp_path)


def test_rollout_gammas_refuses_a_seed_that_is_not_one():
    """``seed=None`` reached the analysis as "unseeded": the "random" control's draws
    changed from call to call."""
    from workbench.rl.credit import rollout_gammas

    credit = CreditParams(strategy="random")
    for bad, words in ((None, "seed must be an integer"), (-1, "seed must be at least 0")):
        with pytest.raises(WorkbenchError, match=words):
            rollout_gammas(object(), [[1, 2]], [[3]], credit, seed=bad)


@pytest.mark.slow
def test_resume_refuses_rows_or_a_seed_that_do_not_match_the_checkpoint(tmp_path):
    """A deleted or emptied metrics.jsonl resumed with no rows before the next step (steps
    0 to N lost from every table), a missing or repeated row was carried on, and a seed
    edited in config.json continued the run drawing another seed's problems."""
    import shutil

    small = dict(per_device_train_batch_size=8, num_generations=4, max_completion_length=16,
                 eval_size=4, eval_every=0, eval_samples=0, save_every=1)  # fmt: skip
    full = tmp_path / "full"
    train(GRPOConfig(max_steps=2, **small), out=full, progress=False)
    lines = (full / "metrics.jsonl").read_text().splitlines(keepends=True)
    config = json.loads((full / "config.json").read_text())
    damages = {
        "lacks the row of steps 0, 1, 2": lambda r: (r / "metrics.jsonl").unlink(),
        "lacks the row of step 1": lambda r: (r / "metrics.jsonl").write_text(lines[0] + lines[2]),
        "repeats the row of step 0": lambda r: (r / "metrics.jsonl").write_text(
            lines[0] + "".join(lines)
        ),
        "saved by a run with seed 0, but .* says seed=3": lambda r: (r / "config.json").write_text(
            json.dumps({**config, "seed": 3})
        ),
        # read with defaults, an emptied config.json resumed as a default run
        r"lacks the settings \['model', 'task', 'max_steps'": lambda r: (
            r / "config.json"
        ).write_text("{}"),
    }
    for i, (problem, damage) in enumerate(damages.items()):
        run = tmp_path / f"run{i}"
        shutil.copytree(full, run)
        damage(run)
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        with pytest.raises(WorkbenchError, match=problem):
            resume(run, max_steps=3, progress=False)
        after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        assert {k: v for k, v in after.items() if k != ".lock"} == {
            k: v for k, v in before.items() if k != ".lock"
        }, "refused before any change"
