"""The public API as a notebook user meets it: what a cell shows, what tab completion
lists, how errors read and when progress bars appear."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest

import workbench as wb

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_tab_completion_lists_every_public_name():
    import workbench

    names = dir(workbench)
    for name in [*workbench.__all__, *workbench._LAZY]:
        assert name in names, name
        assert getattr(workbench, name) is not None
    # the module's own imports are no API: wb.<Tab> offered wb.Any and wb.importlib
    assert not {"Any", "TYPE_CHECKING", "importlib"} & set(names)


def test_a_workbench_error_in_a_notebook_reads_problem_and_fix_first(capsys, monkeypatch, tmp_path):
    """IPython (a notebook cell, or the terminal) shows the problem and the fix above the
    frames, then the usual traceback; the message used to come only at its bottom."""
    import builtins

    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    if InteractiveShell.initialized():
        pytest.skip("another IPython shell runs in this process")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))  # no profile or history in ~/.ipython
    config = Config()
    config.HistoryManager.enabled = False
    had = set(vars(builtins))
    shell = InteractiveShell.instance(config=config)
    try:
        shell.run_cell(
            "import workbench as wb\n"
            "def deep():\n"
            "    raise wb.WorkbenchError('window must be at least 1, got 0', 'pass window=10')\n"
        )
        capsys.readouterr()
        result = shell.run_cell("deep()")
        out = ANSI.sub("", capsys.readouterr().out)
    finally:
        InteractiveShell.clear_instance()
        for name in set(vars(builtins)) - had:  # __IPYTHON__ tells libraries IPython runs
            delattr(builtins, name)
    assert isinstance(result.error_in_exec, wb.WorkbenchError)
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[:2] == ["WorkbenchError: window must be at least 1, got 0", "Fix: pass window=10"]
    # then the whole traceback, frames included, for whoever needs to debug
    assert "Traceback (most recent call last)" in lines[3]
    assert any("raise wb.WorkbenchError" in line for line in lines)
    assert lines[-1] == "Fix: pass window=10"


def test_a_workbench_error_outside_ipython_is_python_own():
    err = wb.WorkbenchError("the problem", "the fix")
    assert str(err) == "the problem\nFix: the fix"
    rendered = "".join(err._render_traceback_())  # what a non-IPython caller would get
    assert rendered.startswith("workbench.errors.WorkbenchError: the problem\nFix: the fix")


def _fake_run(root, strategy, seed):
    run = root / strategy / f"seed-{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"strategy": strategy, "seed": seed}))


def test_an_experiment_shows_its_folder_and_runs(tmp_path):
    from workbench.rl import Experiment

    empty = Experiment(tmp_path / "nothing-here")
    assert repr(empty) == f"Experiment({str(tmp_path / 'nothing-here')!r}, no runs yet)"
    for strategy in ("none", "coupled"):
        for seed in (0, 2, 10):
            _fake_run(tmp_path / "exp", strategy, seed)
    text = repr(Experiment(tmp_path / "exp"))
    assert text == (
        f"Experiment({str(tmp_path / 'exp')!r}, 6 runs: strategies ['coupled', 'none'], "
        "seeds [0, 2, 10])"
    )


def test_run_experiment_refuses_a_progress_that_is_not_a_flag(tmp_path):
    with pytest.raises(wb.WorkbenchError, match="progress must be True or False"):
        wb.rl.run_experiment(["none"], [0], out=tmp_path / "exp", progress="no")
    assert not (tmp_path / "exp").exists()  # refused before any run started


@pytest.fixture(scope="module")
def tiny_trace(tiny):
    return wb.generate(tiny, "12+7=", max_new_tokens=16, seed=0)


def test_run_ablations_refuses_a_progress_that_is_not_a_flag(tiny, tiny_trace):
    with pytest.raises(wb.WorkbenchError, match="progress must be True or False"):
        wb.run_ablations(tiny, [tiny_trace], progress="no")


def test_run_ablations_writes_no_bar_to_a_log(tiny, tiny_trace, capsys):
    """stderr that is not a terminal (a log file, CI, pytest's capture) gets no bar: tqdm
    wrote one line per trace there. A notebook still shows one (tqdm.auto's widget)."""
    analysis = wb.analyze(tiny, tiny_trace)
    frame = wb.run_ablations(
        tiny, [tiny_trace], analyses=[analysis], families=["anchors"], n_random=1
    )
    assert len(frame) > 0
    assert "ablate" not in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_every_long_loop_shows_its_bar_on_a_terminal_only(tiny, tiny_trace, monkeypatch):
    """analyze_many, the GRPO trainer, run_batch and the tiny trainer wrote a line per
    update to a log (about 300 for a 300-step run); all share one rule: a bar on a
    terminal (and in a notebook), none in a log, none when progress=False."""
    from workbench._progress import progress_bar

    for stream, progress, shown in [
        (_Terminal(), True, True),
        (io.StringIO(), True, False),
        (_Terminal(), False, False),
    ]:
        monkeypatch.setattr(sys, "stderr", stream)
        for _ in progress_bar(range(3), desc="work", progress=progress):
            pass
        assert ("work: 100%" in stream.getvalue()) is shown, (progress, shown)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    wb.analyze_many(tiny, [tiny_trace, tiny_trace], progress=True)
    assert log.getvalue() == ""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    wb.analyze_many(tiny, [tiny_trace, tiny_trace], progress=True)
    assert "analyze" in terminal.getvalue()


def test_what_a_cell_shows_is_short_and_fast(tiny, tiny_trace):
    long = wb.Trace(
        ids=tiny_trace.ids.repeat(200),
        tokens=tiny_trace.tokens * 200,
        prompt_len=tiny_trace.prompt_len,
        text=tiny_trace.text * 200,
    )
    analysis = wb.analyze(tiny, tiny_trace)
    sets = wb.target_sets(analysis, families=["anchors"], n_random=1)
    objects = [
        long,
        analysis,
        analysis.classes,
        wb.RhythmParams(),
        wb.CreditParams(),
        sets[0],
        *wb.list_models(),
    ]
    for obj in objects:
        text = repr(obj)
        assert len(text) < 600, (type(obj).__name__, len(text))
        assert "tensor(" not in text, type(obj).__name__
    assert repr(long).startswith(f"Trace(prompt_len={long.prompt_len}, response_len=")
    assert repr(analysis).startswith("Analysis(prompt_len=")
