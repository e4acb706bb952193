"""Atomic writes: an interrupted writer never leaves a torn file or folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench._io import atomic_dir, atomic_write_json, atomic_write_text, make_folder
from workbench.errors import WorkbenchError


def test_atomic_text_replaces_whole_file(tmp_path):
    p = atomic_write_text(tmp_path / "a" / "f.txt", "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in p.parent.iterdir()] == ["f.txt"]


def test_atomic_json_is_sorted_and_readable(tmp_path):
    p = atomic_write_json(tmp_path / "x.json", {"b": 1, "a": [1, 2]})
    assert p.read_text().index('"a"') < p.read_text().index('"b"')


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
