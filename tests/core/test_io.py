"""Atomic writes: an interrupted writer never leaves a torn file or folder."""

from __future__ import annotations

import pytest

from workbench._io import atomic_dir, atomic_write_json, atomic_write_text


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
