"""`workbench demo` runs the main job end to end on the default model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from workbench.provenance import provenance


@pytest.mark.slow
def test_demo_answers_and_says_where_its_output_went(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "mine.png").write_bytes(b"not the demo's")  # listed as a chart of the demo
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "demo", "--max-new-tokens", "24", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "answer (" in proc.stdout and str(out.resolve()) in proc.stdout
    assert "report:" in proc.stdout and "anchors" in proc.stdout
    assert "check: the correct answer is 41; the model" in proc.stdout
    page = (out / "report.html").read_text()
    assert (
        "<script" in page
        and "cdn.jsdelivr" not in page
        and "https://" not in page.split("<script")[0]
    )
    assert "vega" in page.lower()
    # The prompt, the response and the settings are in the page's body, not in a string
    # of the inlined library's script (where they were never shown, and a backtick in a
    # response broke the script and every chart).
    import re

    scripts = [m.span() for m in re.finditer(r"<script\b.*?</script\s*>", page, re.S | re.I)]
    intro = page.index("<b>Prompt</b>")
    assert not any(a <= intro < b for a, b in scripts)
    pngs = ["text_fai.png", "rhythm.png", "local_map.png", "global_map.png", "heads.png"]
    for png in pngs:
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert f"  charts: {', '.join(pngs)}\n" in proc.stdout
    assert (out / "mine.png").read_bytes() == b"not the demo's"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["anchors"] and summary["preplan"] and summary["response_tokens"] <= 24
    # Same checkout, same environment ("dirty" may flip if files are edited meanwhile).
    expected = {k: v for k, v in provenance().items() if k != "dirty"}
    assert {k: v for k, v in summary["provenance"].items() if k != "dirty"} == expected
    for key in ("torch", "transformers", "transformer-lens", "trl"):
        assert f"{key} {summary['provenance'][key]}" in page
    assert f"commit {summary['provenance']['commit'] or 'unknown'}" in page
    saved = json.loads((out / "trace.json").read_text())
    assert saved["prompt_len"] < len(saved["ids"]) <= saved["prompt_len"] + 24
    assert saved["text"].strip() and saved["text"].strip()[:20] in proc.stdout


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("So, there are 0 muffins left.", "last number is 0: wrong. Small models"),
        ("96 - 30 - 25 = 41\n\nThe answer is 41.", "last number is 41: right."),
        ("1,041 muffins", "last number is 1041: wrong"),
        ("1. First, calculate", "last number is 1: wrong"),
        ("Let me think", "the model gave no number. Small models"),
    ],
)
def test_the_demo_says_whether_its_built_in_problem_was_answered_right(answer, verdict):
    # The default model often answers the muffin problem wrong; the demo says so, with the
    # right answer, rather than leave a user to take a wrong answer for a broken install.
    from workbench.cli import DEMO_ANSWER, _demo_verdict

    line = _demo_verdict(answer)
    assert DEMO_ANSWER == 12 * 8 - 30 - 25
    assert line.startswith("check: the correct answer is 41; ") and verdict in line


def test_report_summary_and_page_line_record_the_provenance_and_settings():
    import torch

    import workbench as wb
    from workbench.attention.metrics import stats_from_pattern
    from workbench.report import _provenance_html, _settings_text, _summary

    n = 5
    pattern = torch.tril(torch.ones(2, n, n)) / torch.arange(1, n + 1)[:, None]
    trace = wb.Trace(ids=torch.arange(n), tokens=list("abcde"), prompt_len=3, text="de")
    analysis = wb.Analysis(
        stats=stats_from_pattern(pattern, 3), entropy=torch.full((n,), float("nan")),
        tokens=trace.tokens, ids=trace.ids, n_layers=1, n_heads=2,
        params=wb.RhythmParams(fai_min_rows=1), meta={"sink": "exclude"},
    )  # fmt: skip
    summary = _summary(trace, analysis)
    assert summary["layers"] == [0]  # the analysed layers (it was a count)
    assert summary["settings"]["sink"] == "exclude"
    assert summary["settings"]["fai_min_rows"] == 1
    text = _settings_text(summary["settings"])
    assert "sink) removed" in text and "at least 1 rows" in text and "window 10" in text
    assert "top 40% of tokens" in text and "heads 30% local / 30% global" in text
    # as precise as set: top_q=0.004 was "top 0%", quantiles of 0.125 "12%"
    precise = {**summary["settings"], "top_q": 0.004, "head_quantiles": [0.125, 0.3]}
    assert "top 0.4% of" in _settings_text(precise) and "heads 12.5% local" in _settings_text(
        precise
    )
    assert _summary(trace, analysis)["provenance"] == provenance()
    line = _provenance_html({**provenance(), "trl": None, "commit": "c" * 40, "dirty": True})
    assert f"torch {provenance()['torch']}" in line and "trl not installed" in line
    assert f"commit {'c' * 40} (with uncommitted changes)" in line
    assert "commit unknown" in _provenance_html({"python": "3", "commit": None, "dirty": None})


def test_report_into_a_file_is_refused_before_anything_is_drawn(tmp_path):
    from workbench.errors import WorkbenchError
    from workbench.report import write_report

    in_the_way = tmp_path / "report"
    in_the_way.write_text("notes")
    # No model, trace or analysis is needed: the folder is checked first.
    with pytest.raises(WorkbenchError, match="is a file, not the report folder"):
        write_report(None, None, None, in_the_way)
    with pytest.raises(WorkbenchError, match="cannot create the report folder"):
        write_report(None, None, None, in_the_way / "inside")
    assert in_the_way.read_text() == "notes"


def test_a_report_that_fails_while_drawing_leaves_the_earlier_one_whole(
    tmp_path, toy_llama, monkeypatch
):
    """The charts are drawn into a staging folder and moved into place only once all exist
    (they replaced the earlier report one by one, so a failure mid-way left new PNGs and
    summary.json beside the old page)."""
    import workbench as wb
    from workbench import viz
    from workbench.report import write_report

    trace = wb.Trace.from_text(toy_llama, "What is 3 + 4?", " 3 plus 4 is 7.")
    page = write_report(toy_llama, trace, wb.analyze(toy_llama, trace), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"report.html", "summary.json", "heads.png", "rhythm.png"} <= set(before)

    def broken(*args, **kwargs):
        raise RuntimeError("interrupted while drawing")

    monkeypatch.setattr(viz, "to_html", broken)  # the page comes after the PNGs and summary
    other = wb.analyze(toy_llama, trace, window=3)
    with pytest.raises(RuntimeError, match="interrupted while drawing"):
        write_report(toy_llama, trace, other, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no staging left
    assert page == tmp_path / "report.html"


@pytest.mark.slow
def test_a_short_answer_without_anchors_is_said_in_the_commands_own_words(tmp_path):
    """Five tokens leave FAI undefined everywhere: the warning was printed with the console
    script as its source line, and "strongest anchors: " ended empty."""
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "demo", "--model", "tiny-reasoner",
         "--max-new-tokens", "5", "--out", str(tmp_path / "d")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "strongest anchors: none" in proc.stdout
    assert "workbench: warning: FAI is undefined" in proc.stderr, proc.stderr[-1000:]
    assert "sys.exit" not in proc.stderr and "warnings.warn" not in proc.stderr


def test_a_new_report_folder_appears_whole_or_not_at_all(tmp_path, toy_llama, monkeypatch):
    """A killed demo left its folder holding trace.json and a half-drawn staging folder
    (the trace was saved first, and the stage sat inside the folder); a rerun then left the
    stage there for good. A new folder is now staged beside it and renamed whole, the trace
    with it, and stale stages are removed."""
    import workbench as wb
    from workbench import viz
    from workbench.report import write_report

    trace = wb.Trace.from_text(toy_llama, "What is 3 + 4?", " 3 plus 4 is 7.")
    analysis = wb.analyze(toy_llama, trace)
    out = tmp_path / "demo"
    real = viz.to_html

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while drawing: SIGKILL leaves the stage, below

    monkeypatch.setattr(viz, "to_html", broken)
    with pytest.raises(KeyboardInterrupt):
        write_report(toy_llama, trace, analysis, out, trace_file="trace.json")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # a stage a SIGKILL left behind, beside a new folder and inside an existing one
    (tmp_path / ".demo.report-killed").mkdir()
    monkeypatch.setattr(viz, "to_html", real)
    page = write_report(toy_llama, trace, analysis, out, trace_file="trace.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    assert wb.Trace.load(out / "trace.json").ids.tolist() == trace.ids.tolist()
    assert page.is_file() and (out / "summary.json").is_file()
    (out / ".report-killed").mkdir()
    write_report(toy_llama, trace, analysis, out, trace_file="trace.json")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # a trace of another run is written with its report, never before it
    other = wb.Trace.from_text(toy_llama, "What is 5 + 1?", " 5 plus 1 is 6.")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(viz, "to_html", broken)
    with pytest.raises(KeyboardInterrupt):
        write_report(toy_llama, other, wb.analyze(toy_llama, other), out, trace_file="trace.json")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(wb.WorkbenchError, match="trace_file must be a file name"):
        write_report(toy_llama, trace, analysis, out, trace_file="../trace.json")


def test_bad_model_name_is_one_line_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench",
            "demo",
            "--model",
            "no-such-model",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "unknown model 'no-such-model'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--layers", "foo"], "--layers 'foo' is not"),
        (["--layers", ","], "--layers ',' is not"),  # no layer: found out after generating
        # read as [0, 1] without a word, while batch's --grid refuses an empty value
        (["--layers", "0,,1"], "--layers '0,,1' has an empty item"),
        (["--layers", "0,1,"], "--layers '0,1,' has an empty item"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--temperature", "-1"], "--temperature"),
        # refused by the model's generate, after loading it
        (["--seed", "-1"], "--seed must be at least 0"),
        (["--seed", str(2**64)], "--seed=18446744073709551616 is too large"),
        (["--prompt", " "], "--prompt is empty"),
    ],
)
def test_a_bad_demo_flag_fails_before_the_model_loads(tmp_path, flags, words):
    """`--layers foo` was read only after loading the model and generating (half a minute
    on the default model), and the length and temperature after loading it; they are now
    refused first, so no model is even looked up."""
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "demo", "--model", "no-such-model",
         *flags, "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr and "loading" not in proc.stdout


@pytest.mark.parametrize("text", ["0,,1", "0,1,", ",3", "0, ,1"])
def test_an_empty_layer_between_commas_is_refused_with_the_fix(text):
    from workbench.cli import _layers_arg
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="has an empty item") as e:
        _layers_arg(text)
    assert repr(text) in e.value.problem and "single commas, none empty" in e.value.fix
    assert _layers_arg("0, 1") == [0, 1]


@pytest.mark.slow
def test_a_degenerate_answer_of_another_model_is_not_blamed_on_the_install(tmp_path):
    """`demo --model tiny-reasoner` (a tiny model on a word problem it never saw) was told
    that the sampler was broken and to reinstall the locked environment."""
    proc = _workbench("demo", "--model", "tiny-reasoner", "--max-new-tokens", "20",
                      "--out", str(tmp_path / "d"))  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the model's answer is degenerate" in proc.stderr
    assert "reinstall" not in proc.stderr and "Traceback" not in proc.stderr
    assert "prompt of the model's own kind" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_a_demo_output_path_that_is_a_file_fails_before_the_model_loads(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "demo", "--out", str(tmp_path / "taken")],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode == 2 and "is a file, not the demo's output folder" in proc.stderr
    assert "loading" not in proc.stdout and "Traceback" not in proc.stderr


def _workbench(*args):
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        timeout=600,
    )


@pytest.mark.slow
def test_the_demo_expands_a_tilde_and_writes_nothing_before_its_analysis_runs(tmp_path):
    """`--out ~/d` made a folder named '~' in the current one; `--layers 0,99` was found
    out only at the analysis, after a new trace.json had replaced the old run's."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}
    common = ["--model", "tiny-reasoner", "--prompt", "Add: 12+34", "--max-new-tokens", "8"]
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "demo", *common, "--out", "~/d"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "d"
    assert (out / "report.html").is_file() and not (tmp_path / "~").exists()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "demo", *common, "--seed", "5", "--layers", "0,99",
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2 and "layer 99 is out of range" in proc.stderr
    assert "answer (" not in proc.stdout, "refused before generating"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_rl_runs_one_run_and_resume_extends_it(tmp_path):
    run = tmp_path / "run"
    small = ["--batch-size", "8", "--num-generations", "4", "--max-completion-length", "40"]
    proc = _workbench(
        "rl", "--task", "countdown", "--strategy", "coupled", "--steps", "1", "--seed", "3",
        "--out", str(run), "--eval-size", "8", "--eval-samples", "2", "--warmup-steps", "2",
        *small,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished at step 1" in proc.stdout
    assert "held-out accuracy (greedy)" in proc.stdout
    assert "held-out accuracy (sampled)" in proc.stdout
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["credit"]["strategy"], cfg["seed"], cfg["warmup_steps"], cfg["eval_samples"]) == (
        "coupled", 3, 2, 2,
    )  # fmt: skip
    proc = _workbench("rl", "--resume", str(run), "--steps", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "finished at step 2" in proc.stdout
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]
    # Resuming keeps the saved settings: flags that would change them are refused.
    proc = _workbench("rl", "--resume", str(run), "--steps", "3", "--strategy", "bogus")
    assert proc.returncode == 2 and "cannot change" in proc.stderr
    assert "Traceback" not in proc.stderr
    # named by their flags (it said ['per_device_train_batch_size']), --out among them
    proc = _workbench("rl", "--resume", str(run), "--batch-size", "4", "--out", str(run))
    assert proc.returncode == 2 and "--batch-size, --out cannot change" in proc.stderr
    # a shorter --steps finished the run at that step and left config.json longer
    proc = _workbench("rl", "--resume", str(run), "--steps", "1")
    assert proc.returncode == 2 and "shorter than the run's 2 steps" in proc.stderr
    proc = _workbench("rl", "--resume", str(run), "--steps", "0")
    assert proc.returncode == 2 and "--steps must be at least 1" in proc.stderr


def test_rl_without_out_is_a_clear_error():
    proc = _workbench("rl", "--strategy", "coupled")
    assert proc.returncode == 2
    assert "needs --out DIR" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("flags", "problem", "fix"),
    [
        (["--steps", "0"], "--steps must be at least 1, got 0", "--steps=50"),
        (["--num-generations", "3", "--batch-size", "8"],
         "--batch-size=8 must be a multiple of --num-generations=3", "--batch-size=12"),
        (["--learning-rate", "nan"], "--learning-rate must be a finite number", "--learning-rate="),
    ],
)  # fmt: skip
def test_a_bad_rl_flag_is_named_as_the_flag(tmp_path, capsys, flags, problem, fix):
    """`rl --steps 0` was told "max_steps must be at least 1 ... pass e.g. max_steps=50",
    the name of a config field that no flag of the command takes."""
    from workbench.cli import main

    assert main(["rl", "--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err
    assert problem in err and f"e.g. {fix}" in err
    assert "max_steps" not in err and "per_device" not in err and "learning_rate" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        # told to add --out for a new run; with --out, a new run started
        (["rl", "--resume", ""], "--resume names no folder"),
        (["rl", "--resume", "", "--steps", "3"], "--resume names no folder"),
        # rebuilt nothing and listed the models, as if it had
        (["models", "--rebuild", ""], "unknown model ''"),
    ],
)
def test_an_empty_value_of_a_flag_is_not_read_as_no_flag(capsys, argv, words):
    from workbench.cli import main

    assert main(argv) == 2
    out = capsys.readouterr()
    assert words in out.err and "cache:" not in out.out


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"[1, 2]", "holds a JSON list, not a config object"), (b"\xff\xfe", "could not be read")],
)
def test_rl_config_that_is_not_a_json_object_is_a_clear_error(tmp_path, content, problem):
    (tmp_path / "c.json").write_bytes(content)
    proc = _workbench("rl", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    assert problem in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_an_interrupted_rl_run_exits_130_and_says_how_to_resume(tmp_path):
    """Ctrl-C stops `workbench rl` cleanly at a checkpoint, but the run did not finish, so
    the exit status is 130 (it was 0: a shell loop or a scheduler took it for done)."""
    from processes import interrupt_after_first_step, start  # tests/processes.py

    run = tmp_path / "run"
    proc = start(
        ["-m", "workbench", "rl", "--task", "countdown", "--steps", "50", "--out", str(run),
         "--batch-size", "8", "--num-generations", "4", "--max-completion-length", "40",
         "--eval-size", "8", "--eval-samples", "2"]
    )  # fmt: skip
    out, err = interrupt_after_first_step(proc, run / "metrics.jsonl")
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in out and f"--resume {run}" in out


def test_a_closed_pipe_ends_the_listing_quietly():
    """`workbench models | head -1` ended with a BrokenPipeError traceback."""
    import subprocess
    import sys

    # `true` has left before the listing is written (importing takes longer), every time
    proc = subprocess.run(
        f"{sys.executable} -m workbench models | true; echo ${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr and proc.stdout.split() == ["141"], proc.stderr


@pytest.mark.slow
def test_sigterm_stops_an_rl_run_at_a_checkpoint_it_resumes_from(tmp_path):
    """SIGTERM (kill, timeout, a scheduler) killed `workbench rl` where it stood, its run
    left marked running; it now stops as Ctrl-C does: after the step, checkpointed."""
    import signal
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "rl", "--out", str(run), "--steps", "400",
         "--eval-every", "1000", "--eval-size", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        metrics = run / "metrics.jsonl"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and not (
            metrics.is_file() and metrics.read_text().count("\n") >= 3
        ):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "interrupted" and 1 <= status["step"] < 400, status
    assert (run / "checkpoints" / f"step-{status['step']:06d}").is_dir()
    assert f"resume it with: workbench rl --resume {run}" in out
