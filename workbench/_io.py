"""Atomic file and folder writes: nothing half-written is ever left under a final name.

A writer works in a temporary sibling (same filesystem, so the final `os.replace` is an
atomic rename) and only a completed write is moved into place. Readers therefore see either
the old content or the new, never a torn file. A writer interrupted by an exception removes
its temporary sibling; one killed outright (``kill -9``, a power cut) leaves a hidden
``.tmp-*`` sibling behind, which later writers ignore and do not remove (it could be another
process's write in progress). A folder written by one process at a time (a run directory,
a batch folder, the model cache) is guarded by `exclusive`, and its owner removes such
leftovers under that lock (`remove_leftovers`), when no other writer can be running.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "as_path",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_folder",
    "exclusive",
    "json_ready",
    "json_text",
    "make_folder",
    "non_finite",
    "remove_leftovers",
]

#: The fix `check_folder` and `make_folder` name for a folder that cannot be written.
WRITABLE_FIX = "pass a folder in a place you can write to"


def non_finite(value: Any, where: str) -> str | None:
    """Where in `value` (a JSON-like tree of dicts, lists and tuples, named `where`) the
    first NaN or infinite float sits, e.g. ``meta['stats'][2]``; None when there is none.

    JSON has no NaN or Infinity: `json.dumps` writes them as the bare words ``NaN`` and
    ``Infinity``, which ``JSON.parse`` (JupyterLab, browsers) refuses, so writers that
    must produce standard JSON check with this first and name the offending entry.
    """
    if isinstance(value, float):  # NumPy's float64 is a float too
        return None if math.isfinite(value) else where
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite(item, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


def as_path(value: Any, name: str, kind: str, example: str) -> Path:
    """`value` as a `Path` (``~`` expanded), or a `WorkbenchError` naming `name` (e.g.
    ``"run_batch's notebook"``) for anything that is not a non-empty str or os.PathLike:
    None or a number failed with a raw TypeError inside pathlib, and ``""`` named the
    current folder. `kind`: ``"file"`` or ``"folder"``; `example`: a path to suggest."""
    from .errors import WorkbenchError

    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise WorkbenchError(
            f"{name} must be a {kind} path, got {value!r}"[:200],
            f"pass a str or pathlib.Path, e.g. {example!r}",
        )
    return Path(value).expanduser()


def json_ready(value: Any) -> Any:
    """`value` (a JSON-like tree of dicts, lists and tuples) with every NaN or infinite
    float replaced by None, so that it is written as JSON's ``null``.

    For measurements, where a missing number is a fact to record (a mean over an empty
    selection): writers of user data refuse them instead (`non_finite`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def json_text(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(obj, **kwargs)`` as standard JSON: NaN and infinities become ``null``
    (`json_ready`) instead of the bare ``NaN`` that ``JSON.parse``, jq and browsers refuse."""
    return json.dumps(json_ready(obj), allow_nan=False, **kwargs)


def check_folder(path: Path, what: str, fix: str | None = None) -> None:
    """Refuse, without creating anything, a folder (`what`) that could not be written: a
    path that exists as a file, one under a file, or one whose nearest existing folder
    (itself or an ancestor) is not writable. For checks before long work whose output
    would otherwise be lost. `fix`: the remedy to name (by default one for each case)."""
    from .errors import WorkbenchError

    try:
        exists, is_dir = path.exists(), path.is_dir()
        base = path.absolute()
        while not base.exists() and base != base.parent:
            base = base.parent
    except OSError as e:  # a folder above it that may not be looked into (EACCES)
        raise WorkbenchError(
            f"cannot look for {what} {path}: {e.strerror or e}", fix or WRITABLE_FIX
        ) from None
    if exists and not is_dir:
        raise WorkbenchError(
            f"{str(path)!r} is a file, not {what}", fix or f"pass a folder path for {what}"
        )
    if base.exists() and not base.is_dir():
        raise WorkbenchError(
            f"cannot create {what} {path}: {base} is a file",
            fix or "pass a folder path that is not inside a file",
        )
    if base.is_dir() and not os.access(base, os.W_OK | os.X_OK):
        where = "it" if base == path.absolute() else f"{base}"
        raise WorkbenchError(
            f"cannot write into {what} {path}: {where} is not writable", fix or WRITABLE_FIX
        )


def make_folder(path: Path, what: str, fix: str | None = None) -> Path:
    """Create the folder `path` (and its parents) and check that it can be written to, or
    say clearly why not (`fix`: the remedy to name, by default `check_folder`'s for each
    case), before any work whose results would be lost."""
    from .errors import WorkbenchError

    check_folder(path, what, fix)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkbenchError(
            f"cannot create {what} {path}: {e.strerror or e}", fix or WRITABLE_FIX
        ) from None
    check_folder(path, what, fix)  # it exists now: can it be written into?
    return path


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary sibling, fsync, rename). A symbolic link
    at `path` is written through: its target gets the data and the link stays."""
    path = Path(path)
    if path.is_symlink():  # the rename would replace the link itself with a plain file
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    # mkstemp creates 0600; give the file the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented, standard JSON (`json_text`) to `path` atomically."""
    return atomic_write_text(path, json_text(obj, indent=2, sort_keys=True) + "\n")


def stage_folder(parent: Path, prefix: str) -> Path:
    """A new empty folder in `parent` named `prefix` plus a random tail, with the
    permissions ``mkdir`` would give (``mkdtemp`` makes 0700, and a staged folder renamed
    into place stayed private to its owner)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it to `path` only on success.

    Yields the temporary folder to fill. If the block raises (or is interrupted), the
    temporary folder is removed and `path` is untouched. With `overwrite=True` an existing
    `path` is replaced; the old folder is removed only after the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = stage_folder(path.parent, f".tmp-{path.name}-")
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            old = path.with_name(f".old-{path.name}-{os.getpid()}")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:  # the old folder goes back: `path` is never left missing
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def exclusive(
    lock: str | os.PathLike,
    *,
    busy: Callable[[str], BaseException] | None = None,
    waiting: str = "another process holds it",
) -> Iterator[bool]:
    """Hold an exclusive lock on the file `lock` (created) for the block, so that one process
    at a time writes what it guards.

    The lock is ``flock``'s: the kernel releases it when its holder ends, however it ends
    (``kill -9`` included), so a lock is never stale and nothing needs cleaning up after a
    crash. While held, the file records its holder (``process P on HOST since T``) for the
    messages of those refused or kept waiting. Two opens in one process exclude each other
    too.

    Args:
        lock: the lock file; its folder must exist.
        busy: when another holds the lock, raise ``busy(holder)`` at once (holder: the
            record above). None: print ``workbench: <waiting> (<holder>); waiting for it``
            and wait.
        waiting: what the wait message says is going on.

    Yields:
        Whether the lock is held: False without ``fcntl`` (Windows) or on a file system
        without locks (some network mounts), where the block runs unguarded.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    try:
        f = open(lock, "a+")  # noqa: SIM115 - closed by the with below
    except OSError as e:  # another user's lock file, a read-only file system, a folder
        from .errors import WorkbenchError

        raise WorkbenchError(
            f"cannot open the lock file {lock}: {e.strerror or e}",
            f"make {lock} a file you can write (or remove it: it holds no data), or write "
            "somewhere you can",
        ) from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            if busy is not None:
                raise busy(holder) from None
            print(f"workbench: {waiting} ({holder}); waiting for it", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: the block runs unguarded
            yield False
            return
        try:
            f.seek(0)
            f.truncate()
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            f.write(f"process {os.getpid()} on {socket.gethostname()} since {stamp}\n")
            f.flush()
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_leftovers(folder: Path, *patterns: str) -> list[Path]:
    """Remove what killed writers left in `folder`: the entries matching the glob
    `patterns` (default ``.tmp-*`` and ``.old-*``, the temporary siblings of `atomic_dir`
    and `atomic_write_bytes`). Call it only under the `exclusive` lock of whatever writes
    those names, when none of them can be a write in progress. Returns what was removed."""
    patterns = patterns or (".tmp-*", ".old-*")
    removed = []
    for pattern in patterns:
        for p in sorted(folder.glob(pattern)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(p)
    return removed
