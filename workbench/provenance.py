"""Provenance: the software a result was produced with, recorded next to the result.

Every artefact the workbench writes (RL run directories, the batch index, the demo report,
benchmark outputs) records `provenance()`: the versions of python, torch, transformers,
transformer-lens and trl, the workbench's own version, and the git commit of the workbench
source tree. Versions are read from the installed package metadata (nothing is imported to
learn them), and the result is computed once per process.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "installed_version", "provenance"]

#: The distributions whose versions are recorded (their names on the package index).
PACKAGES = ("torch", "transformers", "transformer-lens", "trl")

#: Seconds allowed to each git command.
_GIT_TIMEOUT = 2.0


def installed_version(dist: str) -> str | None:
    """The installed version of a distribution (``"torch"``), or None when it is absent."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(root: Path, *args: str) -> str | None:
    """Run one read-only git command in `root`; its stdout, or None on any failure."""
    try:
        proc = subprocess.run(
            ["git", "--no-optional-locks", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _commit(root: Path) -> tuple[str | None, bool | None]:
    """``(sha, dirty)`` of the git work tree whose top level is `root`, else ``(None, None)``.

    A `root` that is merely inside some other repository (an installed package under a
    project's ``.venv``) is not the workbench's tree, so it gives ``(None, None)`` too.
    """
    out = _git(root, "rev-parse", "--show-toplevel", "HEAD")
    # One answer per line: the top level may contain spaces ("My Projects/workbench").
    lines = (out or "").splitlines()
    if len(lines) != 2:
        return None, None
    top, sha = lines
    try:
        if Path(top).resolve() != root.resolve():
            return None, None
    except OSError:
        return None, None
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return sha, (None if status is None else bool(status.strip()))


@functools.cache
def _collect() -> tuple[tuple[str, Any], ...]:
    from ._version import __version__

    sha, dirty = _commit(Path(__file__).resolve().parent.parent)
    return (
        ("python", platform.python_version()),
        *((name, installed_version(name)) for name in PACKAGES),
        ("workbench", __version__),
        ("commit", sha),
        ("dirty", dirty),
    )


def provenance() -> dict[str, Any]:
    """The versions and source commit that produced a result, as a JSON-ready dict.

    Computed once per process (later calls return a fresh copy of the cached values), with
    no side effects: package versions come from installed metadata, and the commit from
    read-only git commands (``--no-optional-locks``, a 2 s timeout each).

    Takes no arguments.

    Returns:
        A dict with the keys

        - ``"python"``: the interpreter version, e.g. ``"3.11.7"``;
        - ``"torch"``, ``"transformers"``, ``"transformer-lens"``, ``"trl"``: installed
          versions (None for a package that is not installed);
        - ``"workbench"``: ``workbench.__version__``;
        - ``"commit"``: the 40-hex git commit of the workbench source tree, or None when
          the package does not sit at the top of a git work tree (an installed wheel), git
          is missing or fails;
        - ``"dirty"``: True when tracked files differ from that commit (untracked files
          are ignored), None when ``commit`` is None.
    """
    return dict(_collect())
