"""Atomic writes: an interrupted writer never leaves a torn file or folder; a folder one
process writes at a time is locked, and its owner removes what killed writers left."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench._io import (
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    check_folder,
    exclusive,
    make_folder,
    remove_leftovers,
)
from workbench.errors import WorkbenchError


def test_atomic_text_replaces_whole_file(tmp_path):
    p = atomic_write_text(tmp_path / "a" / "f.txt", "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in p.parent.iterdir()] == ["f.txt"]


def test_atomic_json_is_sorted_and_readable(tmp_path):
    p = atomic_write_json(tmp_path / "x.json", {"b": 1, "a": [1, 2]})
    assert p.read_text().index('"a"') < p.read_text().index('"b"')


def test_writing_through_a_symbolic_link_keeps_the_link(tmp_path):
    """The rename replaced a link (say, latest.json -> runs/7/trace.json) by a plain file."""
    target = tmp_path / "runs" / "trace.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new" and link.read_text() == "new"


def test_interrupted_folder_is_never_visible(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "half.bin").write_bytes(b"x" * 10)
        raise KeyboardInterrupt
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_folder_appears_complete(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("2")
        assert not target.exists()
    assert sorted(p.name for p in target.iterdir()) == ["a", "b"]


def test_overwrite_keeps_the_old_folder_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "old").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in target.iterdir()] == ["old"]
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_failed_move_of_the_new_folder_puts_the_old_one_back(tmp_path, monkeypatch):
    """The old folder was moved aside, the new one failed to move in (a full disk, a
    permission), and `path` was left missing, its contents under a hidden name."""
    import os

    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "old").write_text("old")
    real_replace, calls = os.replace, []

    def replace(src, dst):  # the second move of an overwrite fails
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    monkeypatch.setattr(os, "replace", real_replace)
    assert [p.name for p in target.iterdir()] == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_refuses_to_clobber_without_overwrite(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(FileExistsError), atomic_dir(tmp_path / "m"):
        pass


def test_written_files_and_folders_get_ordinary_permissions(tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    f = atomic_write_text(tmp_path / "f.txt", "x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "a").write_text("1")
    assert f.stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def _read_only_folder(tmp_path, monkeypatch):
    """A folder the test process cannot write into. Root writes anywhere, so there the
    operating system's answer for it is replaced by the one a normal user gets."""
    import os

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        from workbench import _io

        real = os.access
        monkeypatch.setattr(
            _io.os, "access", lambda p, mode: False if Path(p) == folder else real(p, mode)
        )
    return folder


def test_a_folder_that_cannot_be_written_is_refused_with_the_given_fix(tmp_path, monkeypatch):
    folder = _read_only_folder(tmp_path, monkeypatch)
    with pytest.raises(WorkbenchError, match="cannot write into the report folder") as e:
        make_folder(folder, "the report folder")
    assert "a place you can write to" in e.value.fix
    with pytest.raises(WorkbenchError, match="is a file, not the cache") as e:
        make_folder(_a_file(tmp_path), "the cache", fix="set WORKBENCH_CACHE")
    assert e.value.fix == "set WORKBENCH_CACHE"


def test_every_writer_checks_its_folder_before_working(tmp_path, monkeypatch):
    import altair as alt

    import workbench as wb

    folder = _read_only_folder(tmp_path, monkeypatch)
    with pytest.raises(WorkbenchError, match="cannot write into the chart's folder"):
        wb.viz.save(alt.Chart().mark_point(), folder / "chart.json")
    with pytest.raises(WorkbenchError, match="cannot write into the batch folder"):
        wb.run_batch(Path(__file__).parents[2] / "notebooks/05_batch.ipynb", [{}], folder)


def test_a_folder_under_a_read_only_one_is_refused_before_anything_is_created(
    tmp_path, monkeypatch, capsys
):
    """The checks made before long work (the demo, a run, a tiny model's training) look at
    the nearest folder that exists: a new folder inside a read-only one cannot be made."""
    from workbench._io import check_folder
    from workbench.cli import main

    folder = _read_only_folder(tmp_path, monkeypatch)
    with pytest.raises(WorkbenchError, match=f"{folder} is not writable") as e:
        check_folder(folder / "new" / "deeper", "the demo's output folder")
    assert "cannot write into the demo's output folder" in str(e.value)
    check_folder(tmp_path / "new" / "deeper", "the demo's output folder")  # writable: passes
    assert not (tmp_path / "new").exists()
    # The demo says so before loading the model (it said so after generating).
    assert main(["demo", "--model", "no-such-model", "--out", str(folder / "demo")]) == 2
    out = capsys.readouterr()
    assert "cannot write into the demo's output folder" in out.err and "loading" not in out.out


def _a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


def test_make_folder_names_the_fix_of_each_case_as_check_folder_does(tmp_path):
    """The default fix is computed in one place (check_folder): make_folder passed its own
    over every case, so a path that is a file was told to find a writable place."""
    with pytest.raises(WorkbenchError, match="is a file, not the cache") as e:
        make_folder(_a_file(tmp_path), "the cache")
    assert e.value.fix == "pass a folder path for the cache"
    with pytest.raises(WorkbenchError, match="is a file") as e:
        make_folder(_a_file(tmp_path) / "under", "the cache")
    assert e.value.fix == "pass a folder path that is not inside a file"


def test_non_finite_names_where_the_first_nan_sits():
    from workbench._io import non_finite

    assert non_finite({"a": [1, 2.5, "nan"], "b": None}, "meta") is None
    assert non_finite({"a": [1, float("nan")]}, "meta") == "meta['a'][1]"
    assert non_finite(float("-inf"), "x") == "x"


def test_json_writers_write_nan_and_infinities_as_null_never_as_bare_words(tmp_path):
    """``NaN`` and ``Infinity`` are not JSON: a metrics row or summary holding them must
    still open in JupyterLab, browsers and jq, so they are written as ``null``."""
    import json

    from workbench._io import json_text
    from workbench.rl.checkpoint import append_metrics, read_metrics, rewrite_metrics

    row = {"step": 1, "gamma_mean": float("nan"), "grad": [1.5, float("inf"), -float("inf")]}
    assert json_text(row, sort_keys=True) == (
        '{"gamma_mean": null, "grad": [1.5, null, null], "step": 1}'
    )
    strict = {"parse_constant": lambda word: pytest.fail(f"{word} written as a bare word")}
    p = atomic_write_json(tmp_path / "x.json", {"a": (float("nan"), 2)})
    assert json.loads(p.read_text(), **strict) == {"a": [None, 2]}
    append_metrics(tmp_path, row)
    rewrite_metrics(tmp_path, [row, {**row, "step": 2}])
    append_metrics(tmp_path, {**row, "step": 3})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line, **strict)["gamma_mean"] for line in lines] == [None] * 3
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert row["gamma_mean"] != row["gamma_mean"], "the caller's row is left as it was"


@pytest.mark.parametrize("value", [None, 3, "", b"x.json"])
def test_a_path_argument_that_is_not_a_path_is_named_with_an_example(value):
    """One check serves every writer (Trace.save/load, write_report, run_batch, RLPanel,
    viz.save): None and numbers failed inside pathlib, and "" named the current folder."""
    from workbench._io import as_path

    with pytest.raises(WorkbenchError, match="run_batch's out must be a folder path") as e:
        as_path(value, "run_batch's out", "folder", "runs/batch")
    assert "e.g. 'runs/batch'" in e.value.fix


def test_a_path_argument_is_a_path_with_the_home_folder_expanded():
    from workbench._io import as_path

    assert as_path("~/runs", "out", "folder", "runs") == Path.home() / "runs"
    assert as_path(Path("a") / "b.png", "path", "file", "x.png") == Path("a/b.png")


def test_every_function_that_takes_a_path_names_a_missing_one():
    """None failed inside pathlib for train, resume and run_experiment, and "" read the
    current folder as a run directory; each now names its argument (`as_path`)."""
    from workbench import rl

    calls = {
        "train's out": lambda: rl.train(out=None, progress=False),
        "resume's run_dir": lambda: rl.resume(None),
        "an experiment's out": lambda: rl.Experiment(None),
        "run_experiment's out": lambda: rl.run_experiment(
            out=None, strategies=["none"], seeds=[0], progress=False
        ),
        "a run directory": lambda: rl.read_metrics(""),
    }
    for name, call in calls.items():
        with pytest.raises(WorkbenchError, match=f"{name} must be a folder path"):
            call()


def test_a_run_folder_that_does_not_exist_is_no_run_with_no_rows(tmp_path):
    """read_metrics returned [] for a mistyped folder, the same as for a run that has
    logged nothing yet, and a chart of it was silently empty."""
    from workbench import rl

    with pytest.raises(WorkbenchError, match="it does not exist") as e:
        rl.read_metrics(tmp_path / "typo")
    assert "wb.rl.train" in e.value.fix
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkbenchError, match="it is not a folder"):
        rl.read_metrics(tmp_path / "file")
    assert rl.read_metrics(tmp_path) == []  # a run folder before its first row


def _hold_in_child(lock: Path, seconds: float) -> subprocess.Popen:
    """A child process that holds `lock` (via `exclusive`) for `seconds`, once it prints."""
    code = (
        "import sys, time; from workbench._io import exclusive\n"
        f"with exclusive({str(lock)!r}):\n"
        "    print('held', flush=True); time.sleep(float(sys.argv[1]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_refuses_another_process_with_its_holder_named(tmp_path):
    lock = tmp_path / ".lock"
    proc = _hold_in_child(lock, 30)
    try:
        refuse = lambda who: WorkbenchError(f"held by {who}", "wait")  # noqa: E731
        with (
            pytest.raises(WorkbenchError, match=rf"held by process {proc.pid} on "),
            exclusive(lock, busy=refuse),
        ):
            pytest.fail("the block ran while another process held the lock")
    finally:
        proc.kill()
        proc.wait()
    # The kernel releases a killed holder's lock: nothing stale remains to clean up.
    with exclusive(lock, busy=lambda who: WorkbenchError(who, "")) as held:
        assert held
        assert f"process {os.getpid()} on " in lock.read_text()


def test_without_busy_a_lock_waits_for_its_holder_and_says_so(tmp_path, capsys):
    lock = tmp_path / ".lock"
    proc = _hold_in_child(lock, 1.5)
    t0 = time.monotonic()
    with exclusive(lock, waiting="another process converts") as held:
        waited = time.monotonic() - t0
        assert held
    proc.wait()
    assert waited > 1.0  # the holder slept 1.5 s after taking it
    out = capsys.readouterr().out
    assert f"another process converts (process {proc.pid} on " in out and "waiting" in out


def test_two_opens_in_one_process_exclude_each_other(tmp_path):
    lock = tmp_path / ".lock"
    with (
        exclusive(lock),
        pytest.raises(RuntimeError, match="busy"),
        exclusive(lock, busy=lambda who: RuntimeError("busy")),
    ):
        pytest.fail("the block ran while this process held the lock")


def test_leftovers_of_killed_writes_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".tmp-step-000003-k1ll3d").mkdir()
    (tmp_path / ".tmp-step-000003-k1ll3d" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".old-step-000002-4242").mkdir()
    (tmp_path / ".tmp-metrics.jsonl-x7").write_text("{")
    (tmp_path / ".tmp-run-a.ipynb").write_text("{}")
    keep = ["step-000002", "metrics.jsonl", "tmp-notes.txt", ".lock"]
    for name in keep:
        (tmp_path / name).write_text("kept")
    removed = remove_leftovers(tmp_path)
    assert len(removed) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    (tmp_path / ".tmp-a-1").mkdir()
    (tmp_path / ".tmp-b.ipynb").write_text("{}")
    assert remove_leftovers(tmp_path, ".tmp-a-*", ".tmp-x-*") == [tmp_path / ".tmp-a-1"]
    assert (tmp_path / ".tmp-b.ipynb").is_file()


def test_a_folder_that_cannot_be_looked_for_is_named_not_a_raw_oserror(tmp_path):
    """``Path.exists`` raises for a folder above it that may not be searched (EACCES) or a
    name too long for the file system; both reached the user as a raw OSError."""
    with pytest.raises(WorkbenchError, match=r"cannot look for the run folder .*too long") as e:
        check_folder(tmp_path / ("x" * 300) / "run", "the run folder")
    assert "a place you can write to" in e.value.fix


def test_a_lock_file_that_cannot_be_opened_is_named_not_a_raw_oserror(tmp_path):
    """Another user's read-only lock file (or a folder in its place) was a raw
    PermissionError from inside the lock."""
    lock = tmp_path / ".lock"
    lock.mkdir()
    with (
        pytest.raises(WorkbenchError, match=r"cannot open the lock file .*\.lock: Is a dir") as e,
        exclusive(lock),
    ):
        pytest.fail("the block ran without its lock")
    assert "remove it: it holds no data" in e.value.fix
