"""The native GRPO loop on the tiny reasoner: it learns, logs, checkpoints and resumes exactly."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time

import pytest
import torch

import workbench as wb
from workbench.attention import CreditParams
from workbench.errors import WorkbenchError
from workbench.provenance import provenance
from workbench.rl import Experiment, GRPOConfig, read_metrics, resume, rollout_gammas, train
from workbench.rl import trainer as trainer_module
from workbench.rl.trainer import GRPORun
from workbench.tasks import get_task
from workbench.trace import encode_prompt

pytestmark = pytest.mark.slow

SMALL = dict(
    model="tiny-reasoner",
    per_device_train_batch_size=8,
    num_generations=4,
    max_completion_length=48,
    eval_size=8,
    eval_every=0,
    save_every=1,
    learning_rate=5e-5,
)


@pytest.fixture(scope="module")
def rollout(tiny):
    """A fixed rollout: 2 prompts x 2 reference-like completions."""
    task = get_task("countdown")
    problems = task.generate(2, split="test", seed=3)
    prompts, completions = [], []
    for p in problems:
        ids = encode_prompt(tiny, p.prompt, chat=False)
        for text in (p.solution, p.solution[: len(p.solution) // 2]):
            prompts.append(ids)
            completions.append(tiny.tokenizer(text, add_special_tokens=False)["input_ids"])
    return prompts, completions


class TestCredit:
    @pytest.mark.parametrize(
        "strategy", ["none", "local", "global", "coupled", "random", "entropy", "bottom-global"]
    )
    def test_shapes_and_values(self, tiny, rollout, strategy):
        prompts, completions = rollout
        width = max(len(c) for c in completions) + 3
        g = rollout_gammas(
            tiny, prompts, completions, CreditParams(strategy=strategy), pad_to=width
        )
        assert g.shape == (4, width) and g.dtype == torch.float32
        for i, c in enumerate(completions):
            assert torch.all(g[i, len(c) :] == 1.0), "padding gets weight 1"
            values = set(torch.unique(g[i, : len(c)]).tolist())
            if strategy == "none":
                assert values == {1.0}
            elif strategy == "coupled":
                # 1, 1.25 (dominated anchor or intro), 1.5, and overlap sums up to 1.75
                assert values <= {1.0, 1.25, 1.5, 1.75} and values != {1.0}
            else:
                assert values == {1.0, 1.5}
                n_amp = int((g[i, : len(c)] == 1.5).sum())
                # Eligible tokens: Delta is undefined on the last token, FAI on the last H_lo.
                eligible = {"local": len(c) - 1, "random": len(c), "entropy": len(c)}
                if strategy in eligible:
                    assert n_amp == max(1, round(0.4 * eligible[strategy]))

    def test_random_control_is_reproducible_per_seed(self, tiny, rollout):
        prompts, completions = rollout
        a = rollout_gammas(tiny, prompts, completions, CreditParams(strategy="random"), seed=5)
        b = rollout_gammas(tiny, prompts, completions, CreditParams(strategy="random"), seed=5)
        c = rollout_gammas(tiny, prompts, completions, CreditParams(strategy="random"), seed=6)
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_credit_uses_the_analysis_of_each_rollout(self, tiny, rollout):
        prompts, completions = rollout
        g = rollout_gammas(
            tiny, prompts, completions, CreditParams(strategy="global", layers="middle")
        )
        trace = wb.Trace(
            ids=torch.tensor(prompts[0] + completions[0]),
            tokens=[""] * (len(prompts[0]) + len(completions[0])),
            prompt_len=len(prompts[0]),
            text="",
        )
        a = wb.analyze(tiny, trace, CreditParams().rhythm, layers="middle")
        assert a.params.fai_horizon == (10, 100) and a.params.fai_min_rows == 1
        expected = a.gamma("global")[len(prompts[0]) :]
        assert torch.equal(g[0, : len(completions[0])], expected)


def _weights(run):
    return {k: v.detach().clone() for k, v in run.policy.state_dict().items()}


def test_a_short_run_changes_the_weights_and_writes_its_directory(tmp_path):
    from workbench.models import load_hf

    before = load_hf("tiny-reasoner")[0].state_dict()
    run = train(
        GRPOConfig(credit=CreditParams(strategy="coupled"), max_steps=2, warmup_steps=2, **SMALL),
        out=tmp_path / "r",
        progress=False,
    )
    assert run.status == "finished" and run.step == 2
    after = _weights(run)
    assert list(after) == list(before), "the trained policy keeps plain Hugging Face keys"
    assert any(not torch.equal(before[k], after[k]) for k in before), "weights must move"
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["credit"]["strategy"] == "coupled"
    assert GRPOConfig.from_dict(cfg) == run.config
    recorded = json.loads((tmp_path / "r" / "provenance.json").read_text())
    assert recorded == provenance() and recorded["torch"] == torch.__version__
    rows = read_metrics(tmp_path / "r")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert "eval_accuracy" in rows[0] and "eval_accuracy" in rows[-1]
    # Sampled accuracy: eval_samples completions per held-out problem, a multiple of 1/32.
    for r in (rows[0], rows[-1]):
        assert 0.0 <= r["eval_sampled_accuracy"] <= 1.0
        assert (r["eval_sampled_accuracy"] * 8 * 4) % 1 == 0
    assert 1.0 < rows[1]["gamma_mean"] <= 1.75
    lr = SMALL["learning_rate"]
    assert [r["learning_rate"] for r in rows[1:]] == [lr / 2, lr], "linear warm-up"
    assert (tmp_path / "r" / "checkpoints" / "LATEST").read_text().strip() == "step-000002"
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("strategy", ["coupled", "random"])
def test_an_update_in_several_chunks_equals_one_chunk(tmp_path, monkeypatch, strategy):
    """The update splits its rollouts into chunks of whole groups (`UPDATE_TOKENS`); the
    loss is normalised over the whole batch and the credit's seeds run batch-wide, so one
    group per chunk must train the same weights as one chunk for all, up to rounding."""
    import workbench.rl.trainer as trainer

    chunks: list[slice] = []
    layout = trainer.rollout_batch

    def counted(*args, **kwargs):
        batch = layout(*args, **kwargs)
        chunks.append(batch.rows)
        return batch

    monkeypatch.setattr(trainer, "rollout_batch", counted)
    cfg = GRPOConfig(credit=CreditParams(strategy=strategy), max_steps=2, seed=2, **SMALL)
    whole = train(cfg, out=tmp_path / "whole", progress=False)
    assert chunks == [slice(0, 8)] * 2
    monkeypatch.setattr(trainer, "UPDATE_TOKENS", 1)  # one group per chunk
    split = train(cfg, out=tmp_path / "split", progress=False)
    assert chunks[2:] == [slice(0, 4), slice(4, 8)] * 2
    # The loss and its gradient agree to float rounding; AdamW turns rounding in a
    # near-zero gradient into a step of up to the learning rate, so a few weights differ
    # by that much and no more.
    a, b = _weights(whole), _weights(split)
    for k in a:
        diff = (b[k] - a[k]).abs()
        assert float(diff.max()) <= 2 * cfg.learning_rate, k
        assert float((diff > 1e-6).float().mean()) < 1e-3, k
    steps = [[r for r in read_metrics(tmp_path / d) if "loss" in r] for d in ("whole", "split")]
    assert len(steps[0]) == 2
    for ra, rb in zip(*steps, strict=True):
        for key in ("gamma_mean", "loss", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5, abs=1e-7), key


def test_resume_after_interruption_matches_the_uninterrupted_run(tmp_path):
    cfg = GRPOConfig(credit=CreditParams(strategy="global"), max_steps=3, seed=1, **SMALL)
    full = train(cfg, out=tmp_path / "full", progress=False)

    def interrupt_at_2(run, row):
        if row.get("step") == 2:
            raise KeyboardInterrupt

    part = train(cfg, out=tmp_path / "part", progress=False, callbacks=[interrupt_at_2])
    assert part.status == "interrupted" and part.step == 2
    assert json.loads((tmp_path / "part" / "status.json").read_text())["status"] == "interrupted"
    # The provenance of the run is what started it: resume keeps the original file.
    original = {"python": "0.0.0", "commit": "f" * 40, "note": "written at the start"}
    (tmp_path / "part" / "provenance.json").write_text(json.dumps(original))

    resumed = resume(tmp_path / "part", progress=False)
    assert json.loads((tmp_path / "part" / "provenance.json").read_text()) == original
    assert resumed.status == "finished" and resumed.step == 3
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights must equal the full run's"
    strip = ("time_rollout", "time_credit", "time_update", "step_time")
    rows_a = [
        {k: v for k, v in r.items() if k not in strip} for r in read_metrics(tmp_path / "full")
    ]
    rows_b = [
        {k: v for k, v in r.items() if k not in strip} for r in read_metrics(tmp_path / "part")
    ]
    assert rows_a == rows_b


STRIP = ("time_rollout", "time_credit", "time_update", "step_time")


def _rows(run_dir):
    return [{k: v for k, v in r.items() if k not in STRIP} for r in read_metrics(run_dir)]


@pytest.fixture
def ctrl_c():
    """``ctrl_c()`` sends this process a real SIGINT and waits for its KeyboardInterrupt
    (Python's own handler installed, whatever the test runner set)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def send():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # interrupted at once; never reached
        raise AssertionError("no KeyboardInterrupt arrived")

    yield send
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_an_evaluation_keeps_the_steps_row_and_resume_evaluates_it(
    tmp_path, monkeypatch, ctrl_c
):
    """The weights are the step's once its update is done: Ctrl-C in the evaluation that
    follows checkpoints them with the step's row, and resume evaluates that row, so the
    metrics equal an uninterrupted run's (the final evaluation was lost before)."""
    cfg = GRPOConfig(max_steps=2, seed=1, **SMALL)  # evaluates after steps 0 and 2
    full = train(cfg, out=tmp_path / "full", progress=False)
    evaluate = GRPORun.evaluate

    def evaluate_interrupted_at_2(self):
        if self.step == 2:
            ctrl_c()
        return evaluate(self)

    monkeypatch.setattr(GRPORun, "evaluate", evaluate_interrupted_at_2)
    part = train(cfg, out=tmp_path / "part", progress=False)
    assert part.status == "interrupted" and part.step == 2
    rows = read_metrics(tmp_path / "part")
    assert [r["step"] for r in rows] == [0, 1, 2] and "eval_accuracy" not in rows[2]
    monkeypatch.undo()
    resumed = resume(tmp_path / "part", progress=False)
    assert resumed.status == "finished" and _rows(tmp_path / "part") == _rows(tmp_path / "full")
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_between_the_iterations_of_an_update_saves_no_half_updated_weights(
    tmp_path, monkeypatch, ctrl_c
):
    """With num_iterations=2 the weights move twice per step: interrupted between the two,
    they belong to no step, so nothing is checkpointed under the old step and resume
    repeats the step from the last checkpoint, equal to an uninterrupted run."""
    cfg = GRPOConfig(max_steps=1, seed=1, num_iterations=2, entropy_coef=0.01, **SMALL)
    full = train(cfg, out=tmp_path / "full", progress=False)
    runs: list[GRPORun] = []
    forward = trainer_module.completion_logits

    def completion_logits(*args, **kwargs):
        if runs and runs[0]._ahead:  # the second iteration's forward
            ctrl_c()
        return forward(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "completion_logits", completion_logits)
    part = train(
        cfg, out=tmp_path / "part", progress=False, callbacks=[lambda r, _: runs.append(r)]
    )
    assert part.status == "interrupted" and part.step == 0
    checkpoints = sorted(p.name for p in (tmp_path / "part" / "checkpoints").iterdir())
    assert checkpoints == ["LATEST", "step-000000"]
    with pytest.raises(WorkbenchError, match="partway through step 1's update"):
        part.train()
    monkeypatch.undo()
    resumed = resume(tmp_path / "part", progress=False)
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), "the step-0 checkpoint was not touched"
    assert _rows(tmp_path / "part") == _rows(tmp_path / "full")


def test_a_stop_request_stops_one_train_call_only(tmp_path):
    def stop_after_1(run, row):
        if row["step"] == 1:
            run.request_stop()

    run = train(GRPOConfig(max_steps=2, **SMALL), out=tmp_path, progress=False,
                callbacks=[stop_after_1])  # fmt: skip
    assert run.status == "stopped" and run.step == 1
    run.callbacks.clear()
    assert run.train().status == "finished" and run.step == 2


def test_resuming_from_an_older_checkpoint_sets_the_later_ones_aside(tmp_path):
    """Going back to step 2 of a 3-step run makes step 2 the latest checkpoint before the
    first new step: a crash then resumes from step 2 again, never from the abandoned step
    3 with step 3's row gone (the later checkpoint is kept, renamed)."""
    cfg = GRPOConfig(max_steps=3, seed=1, **SMALL)
    train(cfg, out=tmp_path / "full", progress=False)
    shutil.copytree(tmp_path / "full", tmp_path / "back")

    def crash(run, row):
        raise RuntimeError("a crash before the first new checkpoint")

    with pytest.raises(RuntimeError, match="a crash"):
        resume(tmp_path / "back", checkpoint="step-000002", callbacks=[crash], progress=False)
    root = tmp_path / "back" / "checkpoints"
    assert (root / "LATEST").read_text().strip() == "step-000002"
    assert sorted(p.name for p in root.iterdir()) == [
        "LATEST", "abandoned-step-000003", "step-000002"
    ]  # fmt: skip
    resumed = resume(tmp_path / "back", progress=False)
    assert resumed.step == 3 and _rows(tmp_path / "back") == _rows(tmp_path / "full")


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (("metrics.jsonl", "7\n"), "line 1 of .* is not a metrics row"),
        (("metrics.jsonl", '{"step": "1"}\n'), "line 1 of .* is not a metrics row"),
        # a hand-edited value reached pandas in the experiment tables (a raw TypeError)
        (("metrics.jsonl", '{"step": 1, "accuracy": "0.5?"}\n'), "holds 'accuracy' = '0.5\\?'"),
        (("resumes.json", "{not json"), "resumes.json is not a readable list"),
        (("checkpoints/step-000001/state.json", "[]"), "step-000001 is corrupt"),
        (("checkpoints/step-000001/state.json", "{}"), "step-000001 is corrupt"),
    ],
)
def test_a_damaged_run_folder_is_a_clear_error(tmp_path, damage, problem):
    run_dir = tmp_path / "r"
    train(GRPOConfig(max_steps=1, eval_samples=0, **SMALL), out=run_dir, progress=False)
    config = (run_dir / "config.json").read_text()
    name, text = damage
    (run_dir / name).write_text(text)
    with pytest.raises(WorkbenchError, match=problem):
        resume(run_dir, max_steps=2, progress=False)
    assert (run_dir / "config.json").read_text() == config, "refused before any change"


def test_resume_refuses_a_max_steps_that_is_not_a_positive_integer(tmp_path):
    train(GRPOConfig(max_steps=1, eval_samples=0, **SMALL), out=tmp_path, progress=False)
    for bad in (0, -1):  # (other types are refused by the type checker under pytest)
        with pytest.raises(WorkbenchError, match="max_steps must be"):
            resume(tmp_path, max_steps=bad, progress=False)


def test_corrupt_checkpoint_is_a_clear_error_and_the_previous_is_kept(tmp_path):
    run = train(GRPOConfig(max_steps=2, **SMALL), out=tmp_path / "r", progress=False)
    latest = tmp_path / "r" / "checkpoints" / "step-000002"
    (latest / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(WorkbenchError, match="step-000002 is corrupt") as e:
        resume(tmp_path / "r", max_steps=3, progress=False)
    assert "checkpoint='step-000001'" in str(e.value)
    assert (tmp_path / "r" / "checkpoints" / "step-000001").is_dir()
    again = resume(tmp_path / "r", checkpoint="step-000001", max_steps=2, progress=False)
    assert again.step == 2 and run.step == 2


def test_sampled_evaluation_can_be_switched_off(tmp_path):
    run = train(GRPOConfig(max_steps=1, eval_samples=0, **SMALL), out=tmp_path, progress=False)
    assert all("eval_sampled_accuracy" not in r for r in run.metrics)
    with pytest.raises(WorkbenchError, match="eval_samples"):
        GRPOConfig(eval_samples=-1)


def test_bad_settings_are_named():
    with pytest.raises(WorkbenchError, match="multiple of num_generations"):
        GRPOConfig(per_device_train_batch_size=6, num_generations=4)
    with pytest.raises(WorkbenchError, match="unknown credit strategy 'anchors'"):
        GRPOConfig().replace(strategy="anchors")
    with pytest.raises(WorkbenchError, match="unknown GRPO settings"):
        GRPOConfig.from_dict({"lr": 1e-3})
    # runs from before the credit record saved an empty "extra", which was refused
    assert GRPOConfig.from_dict({**GRPOConfig().to_dict(), "extra": {}}) == GRPOConfig()
    with pytest.raises(WorkbenchError, match="unknown GRPO settings"):
        GRPOConfig.from_dict({**GRPOConfig().to_dict(), "extra": {"a": 1}})


def test_an_existing_run_directory_is_not_overwritten(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WorkbenchError, match="holds a run that never reached its first"):
        train(GRPOConfig(**SMALL), out=tmp_path, progress=False)
    (tmp_path / "checkpoints" / "step-000001").mkdir(parents=True)
    (tmp_path / "checkpoints" / "LATEST").write_text("step-000001\n")
    with pytest.raises(WorkbenchError, match="already holds a run") as e:
        train(GRPOConfig(**SMALL), out=tmp_path, progress=False)
    assert "wb.rl.resume" in e.value.fix
    assert (tmp_path / "config.json").read_text() == "{}", "nothing was overwritten"


def test_experiment_runs_each_strategy_and_seed_once(tmp_path):
    from workbench.rl import run_experiment

    small = {**SMALL, "max_steps": 1}
    exp = run_experiment(["none", "coupled"], [0, 1], tmp_path, progress=False, **small)
    assert len(exp.run_dirs()) == 4
    table = exp.summary()
    assert set(table["strategy"]) == {"none", "coupled"}
    sampled = exp.summary("eval_sampled_accuracy")
    assert sampled["start"].between(0, 1).all() and (sampled["n_seeds"] == 2).all()
    with pytest.raises(WorkbenchError, match="unknown metric"):
        exp.summary("reward")
    # Paired by seed: coupled minus none, from the same runs' final evaluations.
    frame = exp.frame().sort_values("step")
    final = frame.groupby(["strategy", "seed"])["eval_sampled_accuracy"].last()
    paired = exp.paired("eval_sampled_accuracy")
    assert list(paired["strategy"]) == ["coupled"] and paired["n_pairs"][0] == 2
    diffs = [final["coupled", s] - final["none", s] for s in (0, 1)]
    assert paired["diff"][0] == pytest.approx(sum(diffs) / 2)
    assert paired["wins"][0] == sum(d > 0 for d in diffs)
    # One comparison: Holm leaves its p-value as it is; the table says which test it used.
    assert paired["p_holm"][0] == pytest.approx(paired["p"][0], nan_ok=True)
    assert "paired sign-flip test" in paired["test"][0] and "Holm over 1" in paired["test"][0]
    # two seeds: the test cannot go below 2 / 2**2, or below 1 where a difference is 0
    assert paired["p_min"][0] == min(1.0, 2.0 / 2 ** sum(d != 0 for d in diffs))
    assert not paired["p"][0] < paired["p_min"][0]
    assert table["interval"].str.contains("t, 1 df").all()
    with pytest.raises(WorkbenchError, match="no 'random' runs"):
        exp.paired(baseline="random")
    assert (table["n_seeds"] == 2).all()
    # Seeds that score the same get NaN bounds (a zero-width interval claimed certainty).
    per_seed = frame.groupby(["strategy", "seed"])["eval_accuracy"].last()
    for row in table.itertuples():
        agree = per_seed[row.strategy].nunique() == 1
        assert math.isnan(row.final_lo) == agree and math.isnan(row.final_hi) == agree
        assert agree or 0 <= row.final_lo <= row.final <= row.final_hi <= 1  # clipped
    spec = exp.chart().to_dict()
    assert {layer["mark"]["type"] for layer in spec["layer"]} == {"area", "line"}
    band = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "area")
    assert band["encoding"]["color"]["legend"] is None, "the lines' colours make the legend"
    forest = exp.paired_chart("eval_sampled_accuracy").to_dict()
    assert "2 seeds" in forest["title"]["subtitle"] and "Holm" in forest["title"]["subtitle"]
    (row,) = next(iter(forest["datasets"].values()))  # one comparison: coupled - none
    assert row["diff"] == pytest.approx(paired["diff"][0])
    assert row["label"] == f"p_Holm {paired['p_holm'][0]:.2f}"
    mtimes = {d: (d / "metrics.jsonl").stat().st_mtime_ns for d in exp.run_dirs()}
    run_experiment(["none", "coupled"], [0, 1], tmp_path, progress=False, **small)
    assert all((d / "metrics.jsonl").stat().st_mtime_ns == m for d, m in mtimes.items())
    # The experiment returned holds the runs asked for: seed 1's runs, written into the
    # same folder by another call (another notebook of a batch), are not counted in.
    mine = run_experiment(["none", "coupled"], [0], tmp_path, progress=False, **small)
    assert [d.relative_to(tmp_path).as_posix() for d in mine.run_dirs()] == [
        "coupled/seed-0",
        "none/seed-0",
    ]
    assert (mine.summary()["n_seeds"] == 1).all() and "2 runs" in repr(mine)
    only = Experiment(tmp_path, strategies=["coupled"], seeds=[1])
    assert [d.relative_to(tmp_path).as_posix() for d in only.run_dirs()] == ["coupled/seed-1"]
    for bad, match in ((dict(seeds=1), "seeds must be a list"),
                       (dict(strategies="none"), "strategies must be a list of names"),
                       (dict(strategies=[None]), "must be names")):  # fmt: skip
        with pytest.raises(WorkbenchError, match=match):
            Experiment(tmp_path, **bad)
    # One seed: the mean and no interval (never a zero-width one), and the chart says so.
    one = tmp_path / "one-seed"
    for strategy in ("none", "coupled"):
        shutil.copytree(tmp_path / strategy / "seed-0", one / strategy / "seed-0")
    single = Experiment(one)
    table = single.summary()
    assert table["final"].notna().all() and (table["n_seeds"] == 1).all()
    assert table["final_lo"].isna().all() and table["final_hi"].isna().all()
    assert (table["interval"] == "none (one seed)").all()
    assert "one seed: no interval" in single.chart().to_dict()["title"]["subtitle"]
    assert single.paired()["diff_lo"].isna().all()
    (row,) = next(iter(single.paired_chart().to_dict()["datasets"].values()))
    assert row["label"] == "fewer than two seeds: no test"
    # A batch over seeds writes one experiment folder per grid point: read together, their
    # runs pool into the two-seed comparison (it was "holds no run directory").
    batch = tmp_path / "batch"
    for seed in (0, 1):
        for strategy in ("none", "coupled"):
            run = f"{strategy}/seed-{seed}"
            shutil.copytree(tmp_path / run, batch / f"seeds=[{seed}]" / run)
    pooled = Experiment(batch)
    assert len(pooled.run_dirs()) == 4 and "4 runs" in repr(pooled)
    assert pooled.summary().equals(exp.summary()) and pooled.paired().equals(exp.paired())
    shutil.copytree(tmp_path / "none" / "seed-0", batch / "again" / "none" / "seed-0")
    with pytest.raises(WorkbenchError, match="are both 'none' runs of seed 0") as e:
        Experiment(batch).summary()
    assert "--grid 'seeds=[0],[1],[2]'" in e.value.fix
    # A run cut short after its step-0 evaluation is named, never averaged in as "final".
    cut = tmp_path / "cut"
    for strategy in ("none", "coupled"):
        shutil.copytree(tmp_path / strategy, cut / strategy)
    metrics = cut / "coupled" / "seed-1" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    for table in (Experiment(cut).summary, Experiment(cut).paired):
        with pytest.raises(WorkbenchError, match=r"not finished: coupled/seed-1 \(step 0 of 1\)"):
            table()
    with pytest.raises(WorkbenchError, match="ci must be an interval level"):
        exp.summary(ci=95)
    for table in (exp.paired, exp.paired_chart):  # ci=2 was accepted
        with pytest.raises(WorkbenchError, match="ci must be an interval level"):
            table(ci=2)

    # Runs that would have been compared without a word are named instead.
    def copy(name):
        folder = tmp_path / name
        for strategy in ("none", "coupled"):
            shutil.copytree(tmp_path / strategy, folder / strategy)
        return folder

    moved = copy("moved")  # an old copy of a run: read as a second coupled seed 0
    shutil.copytree(moved / "coupled" / "seed-0", moved / "coupled-old" / "seed-0")
    with pytest.raises(WorkbenchError, match="belongs in coupled/seed-0"):
        Experiment(moved).summary()
    failed = copy("failed")  # a run with no evaluation: the others looked like all seeds
    (failed / "coupled" / "seed-1" / "metrics.jsonl").unlink()
    with pytest.raises(WorkbenchError, match=r"no 'eval_accuracy' evaluation: coupled/seed-1"):
        Experiment(failed).paired()
    other = copy("other")  # another task or model, compared as the same experiment
    config = json.loads((other / "coupled" / "seed-1" / "config.json").read_text())
    (other / "coupled" / "seed-1" / "config.json").write_text(
        json.dumps({**config, "eval_size": config["eval_size"] + 1})
    )
    with pytest.raises(WorkbenchError, match=r"other settings \(eval_size\)"):
        Experiment(other).summary()
    torn = copy("torn")
    (torn / "none" / "seed-0" / "config.json").write_text('{"model": ')
    with pytest.raises(WorkbenchError, match="is not a readable JSON config"):
        Experiment(torn).frame()
    alone = tmp_path / "alone"
    shutil.copytree(tmp_path / "none", alone / "none")
    with pytest.raises(WorkbenchError, match="holds only 'none' runs"):
        Experiment(alone).paired()


def test_experiment_called_again_with_more_steps_extends_its_runs(tmp_path):
    from workbench.rl import run_experiment

    small = {**SMALL, "max_steps": 1, "eval_samples": 0}
    run_experiment(["none"], [0], tmp_path / "short", progress=False, **small)
    run_dir = tmp_path / "short" / "none" / "seed-0"
    # A checkpointed run without its status.json is continued: it was restarted, its
    # config.json and metrics.jsonl deleted first.
    (run_dir / "status.json").unlink()
    exp = run_experiment(
        ["none"], [0], tmp_path / "short", progress=False, **{**small, "max_steps": 2}
    )
    assert json.loads((run_dir / "config.json").read_text())["max_steps"] == 2
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "finished", "step": 2}
    # The old end (step 1) is not on the new schedule (eval_every=0): only 0 and 2 are.
    assert list(exp.frame()["step"]) == [0, 2], "the extended run evaluates at its new end"
    (resumed,) = json.loads((run_dir / "resumes.json").read_text())
    assert resumed["from_step"] == 1 and resumed["max_steps"] == 2
    assert resumed["commit"] == json.loads((run_dir / "provenance.json").read_text())["commit"]
    # Constant learning rate after warm-up: extending equals starting with the longer length.
    full = run_experiment(
        ["none"], [0], tmp_path / "long", progress=False, **{**small, "max_steps": 2}
    )
    strip = ("time_rollout", "time_credit", "time_update", "step_time")
    rows = [
        [{k: v for k, v in r.items() if k not in strip} for r in read_metrics(d)]
        for d in (run_dir, tmp_path / "long" / "none" / "seed-0")
    ]
    assert rows[0] == rows[1], "extended, the run's metrics are those of the longer run"
    assert full.summary()["final"][0] == exp.summary()["final"][0]
    with pytest.raises(WorkbenchError, match="2-step run, longer than the max_steps=1"):
        run_experiment(["none"], [0], tmp_path / "short", progress=False, **small)
    # resume shortened it: "finished" at step 1 of a 2-step config, with an extra evaluation
    with pytest.raises(WorkbenchError, match="shorter than the run's 2 steps"):
        resume(run_dir, max_steps=1, progress=False)
    with pytest.raises(WorkbenchError, match="strategies must be a list"):
        run_experiment("none", [0], tmp_path / "x", progress=False, **small)
    with pytest.raises(WorkbenchError, match="unknown credit strategy 'bogus'"):
        run_experiment(["none", "bogus"], [0], tmp_path / "late", progress=False, **small)
    assert not (tmp_path / "late").exists(), "refused before the first run trained"
    with pytest.raises(WorkbenchError, match=r"other settings \(learning_rate\)"):
        run_experiment(
            ["none"],
            [0],
            tmp_path / "short",
            progress=False,
            **{**small, "max_steps": 2, "learning_rate": 1e-2},
        )


def test_experiment_restarts_a_run_that_never_checkpointed_whatever_its_settings(tmp_path):
    """A leftover with no checkpoint holds nothing to keep, so it is started again with this
    experiment's settings rather than refused for differing from them."""
    from workbench.rl import run_experiment

    small = {**SMALL, "max_steps": 1, "eval_samples": 0}
    run_experiment(["none"], [0], tmp_path, progress=False, **small)
    run_dir = tmp_path / "none" / "seed-0"
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "status.json").write_text(json.dumps({"status": "running", "step": 0}))
    run_experiment(["none"], [0], tmp_path, progress=False, **{**small, "learning_rate": 1e-2})
    assert json.loads((run_dir / "config.json").read_text())["learning_rate"] == 1e-2
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "finished", "step": 1}
    assert [r["step"] for r in read_metrics(run_dir)] == [0, 1], "no rows of the old run remain"


def test_a_bad_credit_setting_fails_before_any_folder_is_written(tmp_path):
    with pytest.raises(WorkbenchError, match="gamma_amp must be in"):
        train(GRPOConfig(**SMALL).replace(gamma_amp=-1), out=tmp_path / "a", progress=False)
    with pytest.raises(WorkbenchError, match="out of range for a model with 4 layers"):
        train(GRPOConfig(**SMALL).replace(credit_layers=[99]), out=tmp_path / "b", progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_config_given_as_a_dict_is_named_with_its_conversion(tmp_path):
    """A run's config.json, read as a dict and passed on, failed as a raw AttributeError."""
    with pytest.raises(WorkbenchError, match=r"must be a wb\.rl\.GRPOConfig, got a dict") as e:
        train({"max_steps": 1}, out=tmp_path / "a", progress=False)
    assert "GRPOConfig.from_dict" in e.value.fix
    assert not (tmp_path / "a").exists()


def test_a_completion_length_the_context_cannot_hold_fails_before_any_folder_is_written(
    tmp_path,
):
    """The first rollout refused it, after the folder was made: a run that never reached a
    checkpoint, which the same command with a fixed length then refused, and a fix naming
    generate's max_new_tokens, not the config's field."""
    with pytest.raises(WorkbenchError, match="max_completion_length=300 does not fit") as e:
        train(GRPOConfig(**SMALL).replace(max_completion_length=300), out=tmp_path / "a",
              progress=False)  # fmt: skip
    room = int(e.value.fix.rsplit(" ", 1)[-1])
    assert "--max-completion-length" in e.value.fix and 0 < room < 256
    assert not (tmp_path / "a").exists()
    GRPORun(GRPOConfig(**SMALL).replace(max_completion_length=room), tmp_path / "a")
    with pytest.raises(WorkbenchError, match="does not fit"):
        GRPORun(GRPOConfig(**SMALL).replace(max_completion_length=room + 1), tmp_path / "a")


@pytest.mark.parametrize("strategy", ["coupled", "random"])
def test_fused_and_standalone_credit_train_the_same_run(tmp_path, strategy):
    """The fused credit (inside the update forward) and the standalone pass give the same
    gamma, so two steps of training give the same metrics and, to rounding, weights."""
    cfg = GRPOConfig(credit=CreditParams(strategy=strategy), max_steps=2, **SMALL)
    fused = train(cfg, out=tmp_path / "fused", progress=False)
    alone = train(cfg.replace(fused_credit=False), out=tmp_path / "alone", progress=False)
    same = ("gamma_mean", "gamma_amplified", "reward", "completion_length")
    for a, b in zip(fused.metrics[1:], alone.metrics[1:], strict=True):
        assert {k: a[k] for k in same} == {k: b[k] for k in same}
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-7)
    assert fused.metrics[1]["gamma_amplified"] > 0
    wa, wb = _weights(fused), _weights(alone)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


def test_numpy_settings_are_stored_as_plain_numbers_and_bad_ones_named():
    """A NumPy scalar passed validation, then config.json could not be written (after the
    run folder was made); a seed beyond 64 bits and "cuda:x" failed only inside torch."""
    import numpy as np

    cfg = GRPOConfig(learning_rate=np.float32(1e-4), max_steps=np.int64(3), seed=torch.tensor(2))
    assert (type(cfg.learning_rate), type(cfg.max_steps), type(cfg.seed)) == (float, int, int)
    assert GRPOConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for kwargs, match in [
        (dict(seed=2**64), "too large for a seed"),
        (dict(device="cuda:x"), "not a device"),
        (dict(task="countdwn"), "not a known task"),  # refused only once a run was built
    ]:
        with pytest.raises(WorkbenchError, match=match):
            GRPOConfig(**kwargs)
    with pytest.raises(WorkbenchError, match="needs a dict"):
        GRPOConfig.from_dict(None)


def test_a_latest_pointer_that_names_no_checkpoint_is_not_followed(tmp_path):
    """An empty LATEST gave the checkpoints folder itself as the latest checkpoint."""
    from workbench.rl import latest_checkpoint

    root = tmp_path / "checkpoints"
    (root / "step-000002").mkdir(parents=True)
    for pointer in ("\n", "..\n", "../..\n"):
        (root / "LATEST").write_text(pointer)
        assert latest_checkpoint(tmp_path) == root / "step-000002"
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    with pytest.raises(WorkbenchError, match="up_to_step must be an integer"):
        read_metrics(tmp_path, up_to_step=True)  # True read as step 1


def test_an_experiment_folder_without_runs_is_named_by_frame_as_by_summary(tmp_path):
    """frame() of a mistyped folder was an empty table, while summary() raised."""
    for folder, words in (
        (tmp_path / "nope", "does not exist"),
        (tmp_path, "holds no run directory"),
    ):
        exp = Experiment(folder)
        for table in (exp.frame, exp.summary):
            with pytest.raises(WorkbenchError, match=f"no experiment in .*{words}") as e:
                table()
            assert "run_experiment" in e.value.fix


@pytest.mark.parametrize("where", ["loss", "gradient norm"])
def test_a_diverged_update_is_refused_before_it_moves_the_weights(tmp_path, where):
    """A NaN loss or an infinite gradient norm stops the run with the fix, and the weights
    stay those of the last good step: clipping an infinite norm would scale the gradient
    by 0 and write NaN into every weight."""
    seen: list[tuple[GRPORun, dict]] = []

    def diverge(run, row):
        if seen:
            return
        seen.append((run, _weights(run)))
        if where == "loss":  # NaN logits in the update's forward only (sampling has no grad)
            run.policy.get_output_embeddings().register_forward_hook(
                lambda m, i, o: o * math.nan if torch.is_grad_enabled() else None
            )
        else:
            next(run.policy.parameters()).register_hook(lambda g: torch.full_like(g, math.inf))

    with pytest.raises(WorkbenchError, match=f"{where} is .*at step 1") as e:
        train(GRPOConfig(max_steps=1, **SMALL), out=tmp_path, progress=False,
              callbacks=[diverge])  # fmt: skip
    assert "lower learning_rate" in str(e.value) and "wb.rl.resume" in str(e.value)
    if where == "loss":  # the tensor is named (`loss.check_finite`, as grpo_loss names it)
        assert "logps holds NaN or infinite values on completion tokens" in e.value.problem
    run, before = seen[0]
    after = _weights(run)
    assert all(torch.equal(before[k], after[k]) for k in before), "no step was taken"
    assert [r["step"] for r in read_metrics(tmp_path)] == [0]


def test_a_constant_accuracy_gets_an_axis_with_room_around_it():
    """All strategies at 0.5625 for every step gave a zero-width domain: one tick, "1"."""
    import pandas as pd

    from workbench.rl.experiment import _accuracy_scale

    assert _accuracy_scale(pd.Series([0.5625] * 3)).to_dict() == {"domain": [0.5125, 0.6125]}
    assert _accuracy_scale(pd.Series([0.99, 0.99])).to_dict() == {"domain": [0.94, 1.0]}
    assert _accuracy_scale(pd.Series([0.5, 0.6])).to_dict() == {"zero": False}


def test_resuming_a_finished_run_records_no_continuation(tmp_path):
    """`wb.rl.resume` of a finished run (as the README's Train block does) trains nothing;
    it added a resumes.json entry every time."""
    run_dir = tmp_path / "r"
    train(GRPOConfig(max_steps=1, eval_samples=0, **SMALL), out=run_dir, progress=False)
    metrics = (run_dir / "metrics.jsonl").read_text()
    for _ in range(2):
        assert resume(run_dir, progress=False).step == 1
    assert not (run_dir / "resumes.json").exists()
    assert (run_dir / "metrics.jsonl").read_text() == metrics
    resume(run_dir, max_steps=2, progress=False)  # an extension is a continuation
    assert [r["from_step"] for r in json.loads((run_dir / "resumes.json").read_text())] == [1]


@pytest.mark.slow
def test_ctrl_c_stops_the_whole_experiment_at_the_run_in_progress(tmp_path):
    """Ctrl-C in `run_experiment` checkpoints the run in progress and stops: the runs after
    it trained to the end regardless (a notebook's Interrupt was needed once per run)."""
    from processes import interrupt_after_first_step, start  # tests/processes.py

    settings = {**SMALL, "max_steps": 40}
    script = (
        "import workbench as wb\n"
        f"wb.rl.run_experiment(['none', 'coupled'], [0], {str(tmp_path)!r}, progress=False,"
        f" **{settings!r})\n"
    )
    proc = start(["-c", script])
    out, err = interrupt_after_first_step(proc, tmp_path / "none" / "seed-0" / "metrics.jsonl")
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    assert "experiment stopped" in out
    status = json.loads((tmp_path / "none" / "seed-0" / "status.json").read_text())
    assert status["status"] == "interrupted" and status["step"] < 40
    assert not (tmp_path / "coupled").exists(), "the next strategy must not start"


def test_a_run_directory_that_cannot_be_written_is_named_before_its_lock(tmp_path, monkeypatch):
    """The lock file is the first thing `resume` writes; a read-only run directory failed
    there with a raw PermissionError."""
    from workbench.rl.checkpoint import run_lock

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with (
        pytest.raises(WorkbenchError, match="cannot write into the run directory"),
        run_lock(tmp_path),
    ):
        pytest.fail("the block ran")
    assert not (tmp_path / ".lock").exists()
