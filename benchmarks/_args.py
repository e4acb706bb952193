"""Shared command-line helpers of the benchmark scripts (not a benchmark itself).

The scripts run as ``python benchmarks/x.py``, so this folder is on ``sys.path`` and they
import it as ``import _args``. It holds

- argparse types that range-check a value when it is parsed (``positive_int``,
  ``non_negative_int``, ``at_least(n)``, ``existing_file``, ``existing_dir``), so a bad
  argument stops the script at once with argparse's usage line and exit status 2, instead
  of a traceback (or a SIGFPE) deep inside torch, or a silent default;
- ``output_file(path, what)``: the check, before any work, that a file can be written
  there (its folder is created);
- ``entry(main)``: runs a script's ``main`` and turns a `workbench.errors.WorkbenchError`
  into ``error: <problem>`` and ``fix: <fix>`` on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

#: The exit status of a bad argument or input (argparse's own).
BAD_INPUT = 2


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an int of at least `low`."""

    def parse(text: str) -> int:
        value = _int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"int >= {low}"  # argparse names the type in some messages
    return parse


#: An argparse type: an int >= 1.
positive_int = at_least(1)
#: An argparse type: an int >= 0.
non_negative_int = at_least(0)


def _existing(kind: str, is_kind: Callable[[Path], bool], other: str) -> Callable[[str], str]:
    """An argparse type: the path of an existing `kind` (``"file"`` or ``"folder"``)."""

    def parse(text: str) -> str:
        path = Path(text).expanduser()
        if not is_kind(path):
            why = f"is a {other}" if path.exists() else "does not exist"
            raise argparse.ArgumentTypeError(f"{text!r} {why}: pass an existing {kind}")
        return str(path)

    parse.__name__ = f"existing {kind}"
    return parse


#: An argparse type: the path of an existing file.
existing_file = _existing("file", Path.is_file, "folder")
#: An argparse type: the path of an existing folder.
existing_dir = _existing("folder", Path.is_dir, "file")


def output_file(path: str | None, what: str) -> Path | None:
    """Check, before any work, that the file `path` (`what`, e.g. ``"--json"``) can be
    written: not a folder, and its folder (created here) writable. None passes through.
    Raises `WorkbenchError`."""
    if path is None:
        return None
    from workbench._io import make_folder
    from workbench.errors import WorkbenchError

    out = Path(path).expanduser()
    if out.is_dir():
        raise WorkbenchError(f"{what} {path!r} is a folder", f"pass a file path for {what}")
    make_folder(
        out.parent, f"the folder of {what}", f"pass a {what} path in a folder you can write to"
    )
    return out


def report(error: BaseException) -> int:
    """Print a `WorkbenchError` as ``error: ...`` / ``fix: ...`` on stderr; the exit status.

    An error that came back from a worker process was rebuilt from its message alone
    (``problem\\nFix: fix``), so the fix is split off its problem again."""
    problem = getattr(error, "problem", str(error))
    fix = getattr(error, "fix", None)
    if fix is None and "\nFix: " in problem:
        problem, fix = problem.split("\nFix: ", 1)
    print(f"error: {problem}", file=sys.stderr)
    if fix:
        print(f"fix: {fix}", file=sys.stderr)
    return BAD_INPUT


def entry(main: Callable[[], int | None]) -> int:
    """Run a script's `main`: its exit status, or `BAD_INPUT` after `report` for a
    `WorkbenchError` (no traceback: the message names the problem and its fix)."""
    try:
        return main() or 0
    except Exception as e:
        from workbench.errors import WorkbenchError

        if isinstance(e, WorkbenchError):
            return report(e)
        raise
