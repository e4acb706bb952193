"""The benchmark scripts as a user starts them: each explains itself, and a bad argument
stops it at once with one clear line and exit status 2 (a zero length reached torch and
died of SIGFPE; --steps 0 ran the default 60 steps; most others were tracebacks)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def _run(*args: str, cwd: Path, **more_env: str) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **more_env}
    return subprocess.run(
        [sys.executable, str(BENCH / args[0]), *args[1:]],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_script_explains_itself(script, tmp_path):
    proc = _run(script, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, words",
    [
        (["attention_tiles.py", "--lengths", "0"], "must be at least 1, got 0"),
        (["metrics.py", "--repeats", "-2"], "must be at least 1, got -2"),
        (["metrics.py", "--random-weights", "--model", "no-such-folder"], "does not exist"),
        (["rl.py", "--steps", "0"], "must be at least 1, got 0"),
        (["rl_experiment.py", "--steps", "0"], "must be at least 1, got 0"),
        (["update_forward.py", "--repeats", "1"], "must be at least 2, got 1"),
        (["sinks.py", "--traces", "no-such-folder"], "does not exist"),
        (["table2.py", "--problems", "0"], "must be at least 1, got 0"),
        (["searcher_rhythm.py", "--n", "0"], "must be at least 1, got 0"),
        (["architectures.py", "--lengths", "8"], "must be at least 20, got 8"),
        (["architectures.py", "--types", "llama,no_such"], "'no_such' is not a causal LM type"),
    ],
)
def test_a_bad_argument_is_one_clear_line(args, words, tmp_path):
    proc = _run(*args, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert words in proc.stderr and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir()), "nothing was written"


@pytest.mark.slow
def test_an_unwritable_json_is_refused_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("x")
    proc = _run("metrics.py", "--lengths", "16", "--json", "a-file/m.json", cwd=tmp_path)
    assert proc.returncode == 2 and "error:" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "sdpa" not in proc.stdout  # no case ran


@pytest.mark.slow
def test_the_credit_pass_is_timed_both_ways_and_profiled_on_request(tmp_path):
    """`metrics.py` times the credit pass with its band path (`credit`) and without
    (`credit-tiles`), each against the sdpa forward through the same layers (no ratio
    to the whole-model bridge), and with ``--profile N`` prints, and records, each case's
    N costliest operators from one more pass."""
    args = ("--lengths", "16", "--configs", "credit", "credit-tiles", "--profile", "3")
    proc = _run("metrics.py", *args, "--json", "m.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    got = json.loads((tmp_path / "m.json").read_text())
    assert [r["config"] for r in got["results"]] == ["credit", "credit-tiles"]
    for r in got["results"]:
        table = r["profile"]
        assert "Self CPU" in table and table in proc.stdout
        rows = [line for line in table.splitlines() if line.strip().startswith("aten::")]
        assert 1 <= len(rows) <= 3, table
    # no x bridge (it stops at the middle layers), no x sdpa (sdpa-middle did not run)
    assert re.search(r"^\| 16 \| credit-tiles \| [0-9.]+ \| - \| - \|", proc.stdout, re.M)


@pytest.mark.slow
def test_the_architecture_sweep_judges_each_type_against_hf_eager(tmp_path):
    """`architectures.py` on two types: Llama's toy matches Hugging Face's eager attention
    on both paths, Mamba (no attention) is refused clearly; neither is WRONG or RAW, so the
    exit status is 0, and --json holds both results."""
    args = ("--types", "llama,mamba", "--lengths", "40", "--json", "out/arch.json")
    scratch = tmp_path / "scratch"  # where the toys' temporary folders go
    scratch.mkdir()
    proc = _run("architectures.py", *args, cwd=tmp_path, TMPDIR=str(scratch))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    got = json.loads((tmp_path / "out" / "arch.json").read_text())
    results = {r["type"]: r for r in got["results"]}
    assert results["llama"]["result"] == "MATCH", results["llama"]
    assert set(results["llama"]["runs"]) == {"40 tiled", "40 exact"}
    assert results["mamba"]["result"] == "REFUSED", results["mamba"]
    assert got["counts"]["MATCH"] == 1 and got["counts"]["REFUSED"] == 1
    assert "| llama | LlamaForCausalLM | MATCH |" in proc.stdout
    assert not any(scratch.iterdir()), "the toys' folders are removed"


def test_a_type_gets_one_result_from_its_runs(monkeypatch):
    """Any raw exception, then any wrong number, decides the type (and the exit status 1);
    matches with every tiled run refused are MATCH-EXACT-ONLY; any other mix of matches
    and refusals, or a run without a reference, cannot be judged."""
    monkeypatch.syspath_prepend(str(BENCH))
    judge = __import__("architectures")._judge

    def result(tiled: str, exact: str) -> str:
        runs = {"40 tiled": {"result": tiled, "detail": ""}}
        runs["40 exact"] = {"result": exact, "detail": ""}
        return judge(runs, lambda result, detail, **more: result)

    assert result("MATCH", "MATCH") == "MATCH"
    assert result("REFUSED", "MATCH") == "MATCH-EXACT-ONLY"
    assert result("REFUSED", "REFUSED") == "REFUSED"
    assert result("MATCH", "REFUSED") == "CANNOT-JUDGE"
    assert result("UNJUDGED", "UNJUDGED") == "CANNOT-JUDGE"
    assert result("WRONG", "MATCH") == "WRONG"
    assert result("WRONG", "RAW") == "RAW"


def test_a_few_traces_get_a_sawtooth_interval_that_holds(monkeypatch):
    """`searcher_rhythm.py --n 3` printed the percentile bootstrap as its 95% interval at
    any number of traces; below about 30 it under-covers (75% at 3 traces, 90% at 10,
    `workbench.intervals`), so a few traces gave a too narrow interval. Below 30 traces it
    is now the Student-t interval of the mean, named in the output; from 30, the
    bootstrap as before."""
    from workbench.intervals import bootstrap_ci, t_ci

    monkeypatch.syspath_prepend(str(BENCH))
    interval = __import__("searcher_rhythm").sawtooth_interval

    few = [1.2, 1.3, 1.45]
    name, lo, hi = interval(few)
    assert name == "Student-t" and (lo, hi) == t_ci(few)[1:]
    _, b_lo, b_hi = bootstrap_ci(few)
    assert hi - lo > 2 * (b_hi - b_lo)  # the bootstrap's was far narrower
    many = [1.2 + 0.01 * i for i in range(30)]
    assert interval(many) == ("percentile bootstrap", *bootstrap_ci(many)[1:])
