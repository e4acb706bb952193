"""Faults lose nothing: an RL run killed with SIGKILL ten times, in sampling, the update, a
checkpoint write and an evaluation, resumes to the same metrics as a run never killed; a
run in training is refused to every other process; and a batch grid killed mid-run keeps
a valid index and reruns only what is missing.

The runs are real child processes (``python -m workbench rl`` / ``workbench batch``). The
trainer marks the start and end of each phase in ``WORKBENCH_PHASE_LOG``; the test waits
for the start of the chosen phase and kills the process at once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.rl import GRPOConfig, latest_checkpoint, read_metrics, resume, train

pytestmark = pytest.mark.slow

PHASES = ["sample", "update", "checkpoint", "evaluate"]
TIMING = ("step_time", "time_rollout", "time_credit", "time_update")
CONFIG = dict(
    credit={"strategy": "coupled"}, max_steps=6, per_device_train_batch_size=8,
    num_generations=4, max_completion_length=24, eval_every=2, eval_size=4, eval_samples=2,
    save_every=1, learning_rate=1e-4,
)  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _launch(args: list[str], phase_log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workbench", "rl", *args],
        env={**ENV, "WORKBENCH_PHASE_LOG": str(phase_log)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # A test run started without job control (CI) passes SIGINT on ignored: Ctrl-C
        # below would then not stop the child.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _kill_in(proc: subprocess.Popen, phase_log: Path, phase: str, min_step: int) -> str:
    """SIGKILL `proc` right after it begins `phase` at a step >= `min_step`; returns the
    last phase line written before it died ('' if it finished first)."""
    seen = phase_log.read_text().count("\n") if phase_log.exists() else 0
    while proc.poll() is None:
        lines = phase_log.read_text().splitlines() if phase_log.exists() else []
        for line in lines[seen:]:
            kind, name, step = line.split()
            if kind == "begin" and name == phase and int(step) >= min_step:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return phase_log.read_text().splitlines()[-1]
        time.sleep(0.001)
    return ""


def test_sigkill_at_ten_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = GRPOConfig().replace(**CONFIG)
    reference = train(cfg, out=tmp_path / "reference", progress=False)
    assert reference.status == "finished"

    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    run_dir, log = tmp_path / "killed", tmp_path / "phases.log"
    rng = random.Random(0)
    kills = []
    for i in range(10):
        target = PHASES[i % len(PHASES)]
        done = latest_checkpoint(run_dir) if run_dir.exists() else None
        start = -1 if done is None else int(done.name.split("-")[1])
        steps = range(start + 1, CONFIG["max_steps"] + 1)
        if target == "evaluate":  # at step 0 and every eval_every steps
            steps = [s for s in steps if s % CONFIG["eval_every"] == 0]
        elif target != "checkpoint":  # sampling and the update happen from step 1
            steps = [s for s in steps if s >= 1]
        step = rng.choice(list(steps)[:2])
        args = ["--resume", str(run_dir)] if done is not None or i else []
        if not args:
            args = ["--config", str(tmp_path / "config.json"), "--out", str(run_dir)]
        elif done is None:  # killed before its first checkpoint: start again
            shutil.rmtree(run_dir)
            args = ["--config", str(tmp_path / "config.json"), "--out", str(run_dir)]
        proc = _launch(args, log)
        last = _kill_in(proc, log, target, step)
        assert last, f"kill {i}: the run ended before it began {target} at step {step}"
        kind, name, at = last.split()
        ckpt = latest_checkpoint(run_dir)
        saved = -1 if ckpt is None else int(ckpt.name.split("-")[1])
        kills.append((target, kind, name, int(at), saved))
        # At most one checkpoint interval of work is lost: the last checkpoint is the
        # step before the one in progress (or that step itself once it is written).
        assert int(at) - max(saved, 0) <= CONFIG["save_every"], kills[-1]
        assert proc.returncode == -signal.SIGKILL
    hit = {name for _, kind, name, _, _ in kills if kind == "begin"}
    assert hit >= set(PHASES), kills  # every phase was killed inside at least once

    final = resume(run_dir, progress=False)
    assert final.status == "finished" and final.step == CONFIG["max_steps"]
    # The weights and the optimiser's state too, not only the metrics: the last update
    # shows in no row but the final evaluation's (a coarse accuracy of 4 problems).
    mine, theirs = final.policy.state_dict(), reference.policy.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine), "final weights differ"
    moments = [final.optimizer.state_dict()["state"], reference.optimizer.state_dict()["state"]]
    assert moments[0].keys() == moments[1].keys()
    for pid, state in moments[0].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(moments[1][pid][key]))
    assert _without_timing(read_metrics(run_dir)) == _without_timing(
        read_metrics(tmp_path / "reference")
    )
    status = json.loads((run_dir / "status.json").read_text())
    assert status == {"status": "finished", "step": CONFIG["max_steps"]}
    # What the kills inside checkpoint writes left (a partial model and optimizer each)
    # was removed by the next process to hold the run's lock.
    left = [p for p in run_dir.rglob("*") if p.name.startswith((".tmp-", ".old-"))]
    assert not left, left


def test_a_run_being_trained_is_refused_to_every_other_process_and_thread(tmp_path):
    """Two processes training one run directory interleaved their metrics (92 rows for
    60 steps, measured) and pruned checkpoints the other was loading, whose error then
    told the user to start the run again. Now `resume` and `run_experiment` are refused
    while another process trains it, naming that process, and change nothing; status.json
    tells how far the running run has got."""
    from workbench.rl import run_experiment
    from workbench.rl.checkpoint import run_lock

    # A run that never ends by itself (Ctrl-C ends it below): 400 steps ended before the
    # checks did in a full CI run.
    cfg = GRPOConfig().replace(
        **{**CONFIG, "max_steps": 10**5, "save_every": 10**5, "eval_every": 0}
    )
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    run_dir = tmp_path / "exp" / "coupled" / "seed-0"
    proc = _launch(["--config", str(tmp_path / "config.json"), "--out", str(run_dir)],
                   tmp_path / "phases.log")  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        status = {}
        while status.get("step", 0) < 2:  # updated after every step while it runs
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            with contextlib.suppress(OSError, ValueError):
                status = json.loads((run_dir / "status.json").read_text())
            time.sleep(0.05)
        assert status["status"] == "running"
        before = sorted(p.name for p in run_dir.iterdir())
        for attempt in (
            lambda: resume(run_dir, progress=False),
            lambda: run_experiment(["coupled"], [0], tmp_path / "exp", config=cfg, progress=False),
        ):
            with pytest.raises(WorkbenchError, match=f"being trained by process {proc.pid} on"):
                attempt()
        assert proc.poll() is None, "the refused calls must not have disturbed the run"
        assert sorted(p.name for p in run_dir.iterdir()) == before
        assert (run_dir / "config.json").is_file() and (run_dir / "checkpoints").is_dir()
    finally:
        proc.send_signal(signal.SIGINT)  # it checkpoints and stops
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()  # never left training (its run has no end of its own)
            proc.wait()
            raise
    assert proc.returncode == 130, err.decode()[-2000:]  # the shell's code for Ctrl-C
    final = json.loads((run_dir / "status.json").read_text())
    assert final["status"] == "interrupted"
    steps = [row["step"] for row in read_metrics(run_dir)]
    assert steps == list(range(final["step"] + 1)), "one row per step, in order"
    # Its lock went with it: this thread can hold it now, and another thread cannot.
    with run_lock(run_dir):
        errors = []
        other = threading.Thread(target=lambda: errors.append(_try_lock(run_dir)))
        other.start()
        other.join()
        assert errors and "being trained by process" in errors[0]


def _try_lock(run_dir: Path) -> str:
    from workbench.rl.checkpoint import run_lock

    try:
        with run_lock(run_dir):
            return "held"
    except WorkbenchError as e:
        return str(e)


def _slow_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell("import time\ntime.sleep(1.5)"),
        nbformat.v4.new_code_cell("import workbench as wb\nwb.record(double=2 * x)"),
    ]
    nbformat.write(nb, str(path))
    return path


def test_a_batch_killed_mid_grid_keeps_a_valid_index_and_reruns_only_the_missing(tmp_path):
    nb, out = _slow_notebook(tmp_path / "slow.ipynb"), tmp_path / "out"
    cmd = [sys.executable, "-m", "workbench", "batch", str(nb), "--grid", "x=1,2,3,4,5,6",
           "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=ENV, start_new_session=True, stderr=subprocess.PIPE)
    index = out / "index.csv"
    deadline = time.monotonic() + 300
    while not (index.is_file() and len(index.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernels, mid-grid
    proc.wait()

    with index.open() as f:
        rows = list(csv.DictReader(f))  # still a valid table
    done = {r["run_id"]: r for r in rows}
    assert 2 <= len(done) < 6 and all(r["status"] == "ok" for r in done.values())
    finished = {rid: (out / f"{rid}.ipynb").stat().st_mtime_ns for rid in done}

    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    with index.open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["x"]) for r in rows) == [1, 2, 3, 4, 5, 6]
    assert all(r["status"] == "ok" and int(r["double"]) == 2 * int(r["x"]) for r in rows)
    for rid, mtime in finished.items():  # what was finished was not run again
        assert (out / f"{rid}.ipynb").stat().st_mtime_ns == mtime


def test_a_prune_killed_midway_leaves_no_half_deleted_checkpoint_listed(tmp_path, monkeypatch):
    """A process killed while it deleted an old checkpoint left a half-deleted step folder
    that list_checkpoints offered (and resume(checkpoint=) then called corrupt)."""
    import workbench.rl.checkpoint as ckpt

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, model, optimizer, {})

    def killed_midway(path, ignore_errors=False):
        (Path(path) / "model.safetensors").unlink()  # one file gone, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, 3, model, optimizer, {})
    monkeypatch.undo()
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step-000002", "step-000003"]
    for p in ckpt.list_checkpoints(tmp_path):
        ckpt.load_checkpoint(p, torch.nn.Linear(3, 2))  # each one listed is whole
    with ckpt.run_lock(tmp_path):  # the next holder removes the killed prune's leftover
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
            "LATEST",
            "step-000002",
            "step-000003",
        ]
