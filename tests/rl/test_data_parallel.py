"""TRL data-parallel for real: `accelerate launch` with two CPU processes (gloo).

Both runs train `RhythmGRPOTrainer` for two steps on the same fixed global batch
(tests/rl/scripts/trl_data_parallel.py): one process with all 16 rollouts, and two with 8
each. Each rank must compute the credit of its own completions, and the logged gamma
statistics and losses must equal the single-process run's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from workbench.attention import CreditParams
from workbench.models import bridge_model, load_hf
from workbench.rl import rollout_gammas

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).parent / "scripts" / "trl_data_parallel.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], out: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]


@pytest.mark.parametrize("strategy", ["coupled", "random"])
def test_two_processes_train_like_one_on_the_same_global_batch(tmp_path, tiny, strategy):
    """With ``"random"``, rank r's k-th rollout of a step draws with seed ``8 r + k`` (the
    ranks drew the same positions for their k-th rollouts before). Its gammas then differ
    from the single process's: TRL shuffles each process's rows before its micro-batches,
    so the single process's k-th rollout is another one (the README's caveat)."""
    one, two = tmp_path / "one", tmp_path / "two"
    [single] = run(
        [sys.executable, str(SCRIPT), "--out", str(one), "--processes", "1",
         "--strategy", strategy],
        one,
    )  # fmt: skip
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    ranks = run(
        [
            accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), str(SCRIPT), "--out", str(two),
            "--strategy", strategy,
        ],
        two,
    )  # fmt: skip
    assert [r["processes"] for r in ranks] == [2, 2] and single["processes"] == 1

    def rows(record, step):
        """The (prompt, completion, gamma) rows a run trained on at `step`, as a multiset
        (a completion can be sampled twice for the same prompt)."""
        return Counter(
            (tuple(r["prompt"]), tuple(r["completion"]), tuple(r["gamma"]))
            for r in record["rows"][step]
        )

    for step in range(2):
        if strategy == "random":
            break
        want = rows(single, step)
        mine = [rows(rank, step) for rank in ranks]
        # Each rank trained on its own half of the global batch, with the credit of
        # exactly those rollouts; together they are the single process's batch and credit.
        assert sum(mine[0].values()) == sum(mine[1].values()) == 8
        assert mine[0] + mine[1] == want

    # The credit of rank 1's rollouts is the standalone pass's on exactly those rollouts.
    policy, tok = load_hf("tiny-reasoner", device="cpu")
    rows = ranks[1]["rows"][0]
    reference = rollout_gammas(
        bridge_model(policy, tok),
        [r["prompt"] for r in rows],
        [r["completion"] for r in rows],
        CreditParams(strategy=strategy),
        seed=8,  # step 0, after rank 0's 8 rollouts
    )
    for i, r in enumerate(rows):
        assert reference[i, : len(r["completion"])].tolist() == r["gamma"]

    # What TRL logs (reduced over processes) equals the single-process run.
    def logged(record, name):
        return [h[name] for h in record["log_history"] if name in h]

    for name in ("credit/gamma_mean", "credit/amplified_frac", "loss", "grad_norm"):
        assert len(logged(single, name)) == 2, name
        if strategy == "random":
            continue
        for rank in ranks:
            assert logged(rank, name) == pytest.approx(logged(single, name), rel=1e-5), name
