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
    # WORKBENCH_PROGRESS=off (a kernel nobody watches: `workbench batch` sets it) hides
    # every bar, the libraries' too (bars_shown)
    from workbench._progress import ENV, bars_shown

    for value, shown in [("off", False), ("0", False), ("on", True)]:
        monkeypatch.setenv(ENV, value)
        monkeypatch.setattr(sys, "stderr", _Terminal())
        for _ in progress_bar(range(3), desc="work", progress=True):
            pass
        assert ("work: 100%" in sys.stderr.getvalue()) is shown, value
        assert bars_shown() is shown, value
    monkeypatch.delenv(ENV)
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


def test_a_grpo_run_shows_its_folder_strategy_seed_and_steps(tmp_path):
    """A cell ending in ``wb.rl.train(...)`` showed ``<workbench.rl.trainer.GRPORun object
    at 0x...>``; it shows one line, read from the run's attributes (no file)."""
    from workbench.rl import GRPOConfig
    from workbench.rl.trainer import GRPORun

    folder = tmp_path / "run"
    run = GRPORun(GRPOConfig(model="tiny-reasoner", max_steps=3, seed=2), folder, progress=False)
    assert repr(run) == f"GRPORun({str(folder)!r}, strategy='none', seed=2, step 0/3, new)"
    assert not folder.exists()  # nothing read or written
    run.step, run.status = 3, "finished"
    assert repr(run).endswith("step 3/3, finished)")
    # a run whose constructor failed partway (no attributes yet) still shows, never raises
    assert repr(GRPORun.__new__(GRPORun)).startswith("GRPORun(")


def test_head_stats_show_a_summary_not_their_tensors(tiny, tiny_trace):
    """``analysis.stats`` printed every tensor: 28,363 characters for a 28-token trace."""
    analysis = wb.analyze(tiny, tiny_trace)
    stats = analysis.stats
    text = repr(stats)
    assert len(text) < 400 and "tensor(" not in text, text
    n_layers = tiny.cfg.n_layers
    assert text.startswith(
        f"HeadStats(heads={len(stats.heads)} in {n_layers} layers, n_pos={stats.n_pos}, "
        f"prompt_len={stats.prompt_len}, max_window={stats.max_window}, cuts=["
    )
    assert f"band={list(stats.band.shape)}" in text
    assert f"cut_sums={list(stats.cut_sums.shape)}" in text
    # equality stays the dataclass's (eq=False: identity), the fields unchanged
    assert stats == stats and stats != stats.select(range(len(stats.heads)))


def test_a_batch_result_shows_counts_and_its_index(tmp_path):
    """The dataclass repr printed every index row: 7,408 characters for 50 runs."""
    from workbench.batch import BatchResult

    rows = [
        {"run_id": f"r{i}", "x": i, "status": "failed" if i % 25 == 0 else "ok", "error": ""}
        for i in range(50)
    ]
    index = tmp_path / "out" / "index.csv"
    result = BatchResult(rows, index)
    assert repr(result) == f"BatchResult(50 runs, 48 ok, 2 failed, index={str(index)!r})"
    assert repr(BatchResult(rows[1:2], index)).startswith("BatchResult(1 run, 1 ok, 0 failed")
    assert result.rows == rows and result == BatchResult(list(rows), index)


def test_loading_a_model_writes_no_transformers_bar_to_a_log(monkeypatch):
    """transformers' "Loading weights: 100%|...|" bar was written on every load, also to a
    log file. The workbench's rule: a bar on a terminal (and in a notebook), none in a log;
    the caller's transformers setting comes back after the load, whatever it was."""
    from transformers.utils import logging as hf_logging

    from workbench.models import load_hf

    was = hf_logging.is_progress_bar_enabled()
    try:
        hf_logging.enable_progress_bar()
        log = io.StringIO()
        monkeypatch.setattr(sys, "stderr", log)
        load_hf("tiny-reasoner", device="cpu")
        assert "Loading weights" not in log.getvalue()
        assert hf_logging.is_progress_bar_enabled()
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        load_hf("tiny-reasoner", device="cpu")
        assert "Loading weights" in terminal.getvalue()
        hf_logging.disable_progress_bar()  # the caller's own choice is kept
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        load_hf("tiny-reasoner", device="cpu")
        assert "Loading weights" not in terminal.getvalue()
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def test_record_refuses_the_names_of_the_batch_index_own_columns():
    """``wb.record(status="converged")`` replaced the run's status in the index: the run
    counted as failed (``BatchResult.ok`` False) and the next run_batch ran it again."""
    from workbench.batch import RUNNER_COLUMNS

    for name in RUNNER_COLUMNS:
        with pytest.raises(wb.WorkbenchError, match=f"own '{name}' column"):
            wb.record(**{name: 1})
    assert wb.record(my_status="converged", x2=2) == {"my_status": "converged", "x2": 2}


def test_a_failed_run_index_row_names_the_problem(tmp_path, monkeypatch):
    """The index's ``error`` held the last line of papermill's traceback, which for a
    `WorkbenchError` raised in the notebook was only its ``Fix: ...`` line; and a value
    recorded under a runner column (by a kernel with an older workbench) replaced it."""
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from workbench.batch import RECORD_MIME, _execute

    def execute_notebook(source, out, **kwargs):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("wb.record(...)")
        cell.outputs = [
            nbformat.v4.new_output(
                "display_data", data={RECORD_MIME: {"status": "converged", "x2": 2}}
            )
        ]
        nb.cells = [cell]
        nbformat.write(nb, out)
        raise PapermillExecutionError(
            1,
            2,
            "wb.analyze(...)",
            "WorkbenchError",
            "window must be at least 1\nFix: pass 10",
            [
                "WorkbenchError: window must be at least 1",
                "Fix: pass 10",
                "Traceback ...",
                "Fix: pass 10",
            ],
        )

    monkeypatch.setattr(pm, "execute_notebook", execute_notebook)
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "nb.ipynb")
    row = _execute(tmp_path / "nb.ipynb", tmp_path / "run.ipynb", {}, None, {})
    assert row["status"] == "failed" and row["x2"] == 2
    assert row["error"] == "WorkbenchError: window must be at least 1 Fix: pass 10"
