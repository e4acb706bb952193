"""Edge cases of the `workbench` command and its report: each bad input or failing place
ends in one line that names the problem and the fix, and outputs appear as mkdir makes
them."""

from __future__ import annotations

import errno
import os
import stat
import tempfile

import pytest


def _notebook(path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("a = 0")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print(a)")]
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def report_input(toy_llama):
    """``(model, trace, analysis)``: a short trace of the toy Llama and its analysis."""
    import workbench as wb

    trace = wb.Trace.from_text(toy_llama, "What is 3 + 4?", " 3 plus 4 is 7.")
    return toy_llama, trace, wb.analyze(toy_llama, trace)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(
    ("flags", "problem", "fix"),
    [
        (["--workers", "0"], "--workers must be at least 1, got 0", "pass e.g. --workers=2"),
        (["--timeout", "-1"], "--timeout must be in (0, inf)", "pass e.g. --timeout=600"),
        (["--timeout", "2.5"], "--timeout=2.5: papermill counts whole seconds", "--timeout=3"),
    ],
)
def test_a_bad_batch_flag_is_named_as_the_flag(tmp_path, capsys, flags, problem, fix):
    """`batch --workers 0` was told "pass e.g. workers=2", the name of run_batch's
    argument, which the command line does not take."""
    from workbench.cli import main

    nb = _notebook(tmp_path / "p.ipynb")
    assert main(["batch", str(nb), "--grid", "a=1", "--out", str(tmp_path / "b"), *flags]) == 2
    err = capsys.readouterr().err
    assert problem in err and fix in err, err
    assert " workers=" not in err and " timeout=" not in err


def test_an_empty_rl_config_is_refused_not_ignored(tmp_path, capsys):
    """`rl --config "" --out DIR` (an unset variable) ignored the flag and started a run
    with the default settings, exiting 0 as if the config had been used."""
    from workbench.cli import main

    assert main(["rl", "--config", "", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--config names no file" in err and "Fix:" in err
    assert not (tmp_path / "r").exists()


def test_a_report_folder_that_cannot_be_made_is_one_clear_error(
    tmp_path, report_input, monkeypatch
):
    """Where the folder checks pass but the staging folder cannot be made (root writing
    under /proc, a full disk), the demo ended, after all its work, with a raw
    FileNotFoundError traceback from tempfile.mkdtemp."""
    import workbench as wb
    from workbench.report import write_report

    monkeypatch.setattr(tempfile, "mkdtemp", _disk_full)
    out = tmp_path / "report"
    with pytest.raises(wb.WorkbenchError, match="cannot create the report folder") as e:
        write_report(*report_input, out)
    assert "No space left on device" in e.value.problem and e.value.fix
    assert not out.exists()


def test_a_new_report_folder_has_the_permissions_mkdir_gives(tmp_path, report_input):
    """A new report folder is its staging folder renamed, and tempfile.mkdtemp makes it
    0700: `workbench demo`'s output folder could not be read by anyone else (a web server,
    a colleague), unlike every other folder the workbench makes."""
    from workbench.report import write_report

    old = os.umask(0o022)
    try:
        page = write_report(*report_input, tmp_path / "new" / "report")
    finally:
        os.umask(old)
    assert stat.S_IMODE(page.parent.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o755


@pytest.mark.parametrize(("env", "want"), [("", "demo-output"), ("  ", "demo-output"), ("o", "o")])
def test_an_empty_demo_out_variable_means_the_default_folder(monkeypatch, env, want):
    """``WORKBENCH_DEMO_OUT=""`` (a variable cleared in a script) was read as ``--out ""``
    and refused, naming a flag the user never passed."""
    from workbench.cli import build_parser

    monkeypatch.setenv("WORKBENCH_DEMO_OUT", env)
    assert build_parser().parse_args(["demo"]).out == want


def test_a_report_that_cannot_be_written_is_one_clear_error(tmp_path, report_input, monkeypatch):
    """A full disk while the charts were saved ended the demo with a raw OSError traceback;
    the folder is left as it was."""
    import workbench as wb
    from workbench import viz
    from workbench.report import write_report

    monkeypatch.setattr(viz, "save", _disk_full)
    out = tmp_path / "report"
    with pytest.raises(wb.WorkbenchError, match=r"cannot write the report into .*No space") as e:
        write_report(*report_input, out)
    assert "free space there" in e.value.fix
    assert not out.exists() and not list(tmp_path.iterdir())
