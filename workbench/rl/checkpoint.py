"""Run directories and checkpoints, written atomically, read back with clear errors.

Layout of a run directory::

    config.json                 the GRPOConfig (written once, at the start)
    provenance.json             versions and git commit that started the run (see
                                `workbench.provenance`; written once, kept on resume)
    resumes.json                one record per resume: the step it continued from, the
                                length it trained to, and its provenance
    metrics.jsonl               one JSON object per step (and per evaluation)
    status.json                 {"status": "running" | "finished" | "interrupted", "step": N}
                                (while running, N is the last completed step)
    checkpoints/step-000010/    model.safetensors, optimizer.safetensors, state.json
    checkpoints/LATEST          the name of the newest complete checkpoint
    .lock                       held by the process training the run (`run_lock`)

Each checkpoint folder is built under a temporary name and renamed into place, and LATEST
is replaced atomically after it, so a crash never leaves LATEST pointing at a half-written
checkpoint. Everything is safetensors or JSON: nothing is unpickled on resume. Older
checkpoints are pruned only after a newer one is complete, keeping ``keep`` of them.

One process at a time trains a run directory: `train` and `resume` hold its lock
(`run_lock`) from before they change the folder until training ends, and another process
is refused with the holder's process id. Two processes writing one folder interleaved
their metrics (92 rows for 60 steps, in a measured case) and pruned the checkpoints the
other was loading. Under the lock, `resume` removes the temporary folders a killed
checkpoint write left behind (a partial model and optimizer state each).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from .. import _validate
from .._io import (
    as_path,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    check_folder,
    exclusive,
    json_text,
    remove_leftovers,
)
from ..errors import WorkbenchError

__all__ = [
    "append_metrics",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "read_metrics",
    "run_lock",
    "save_checkpoint",
]

#: The run directories this process holds the lock of, by (folder, thread): `run_lock` is
#: re-entered by `resume`'s own call of `GRPORun.train`.
_HELD: dict[tuple[Path, int], int] = {}


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir`'s lock (its ``.lock`` file; the folder must exist) for the block, or
    refuse at once if another process (or thread) trains the run.

    Re-entrant within one thread. The first holder removes what killed writers left in the
    folder and in ``checkpoints/`` (`remove_leftovers`): none of it can be in progress
    while the lock is held. The kernel releases the lock when its holder ends, however it
    ends, so a run killed with ``kill -9`` is never locked out.

    Raises:
        WorkbenchError: another process or thread holds the lock; the message names it.
    """
    key = (Path(run_dir).absolute(), threading.get_ident())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return

    def busy(holder: str) -> WorkbenchError:
        return WorkbenchError(
            f"{run_dir} is being trained by {holder}: two processes writing one run "
            "directory would interleave its metrics and checkpoints",
            "wait for that run to end, or stop it (Stop in its RL panel, Ctrl-C in its "
            "notebook or terminal, or kill its process); its lock goes with it, and "
            f"wb.rl.resume({str(run_dir)!r}) then continues it. Or train in another folder",
        )

    check_folder(run_dir, "the run directory")  # a read-only one, named before the lock
    with exclusive(run_dir / ".lock", busy=busy):
        _HELD[key] = 1
        try:
            for folder in (run_dir, run_dir / "checkpoints"):
                if folder.is_dir():
                    remove_leftovers(folder)
            yield
        finally:
            del _HELD[key]


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


Tensor = torch.Tensor


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    *,
    keep: int = 2,
) -> Path:
    """Write ``checkpoints/step-NNNNNN`` atomically, point LATEST at it, prune old ones.

    Args:
        run_dir: the run directory.
        step: the number of completed optimiser steps.
        model: the policy (its ``state_dict``; tied weights handled by safetensors).
        optimizer: the optimiser (state tensors to safetensors, the rest to JSON).
        state: extra JSON-ready state (step, seeds...).
        keep: how many checkpoints to keep.

    Returns:
        The checkpoint folder.
    """
    root = Path(run_dir) / "checkpoints"
    name = f"step-{step:06d}"
    tensors, meta = _optimizer_tensors(optimizer)
    with atomic_dir(root / name, overwrite=True) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        atomic_write_json(tmp / "optimizer.json", meta)
        atomic_write_json(tmp / "state.json", {**state, "step": step})
    atomic_write_text(root / "LATEST", name + "\n")
    for old in list_checkpoints(run_dir)[:-keep]:
        # Out of the listing first, in one rename: a process killed while deleting left a
        # half-deleted step folder that list_checkpoints offered (and resume(checkpoint=)
        # called corrupt). `run_lock`'s first holder removes a killed prune's `.old-*`.
        gone = old.with_name(f".old-{old.name}-{os.getpid()}")
        os.replace(old, gone)
        shutil.rmtree(gone, ignore_errors=True)
    return root / name


def _run_dir(run_dir: Any) -> Path:
    """`run_dir` as a Path (`as_path`: anything but a non-empty path or str is refused)."""
    return as_path(run_dir, "a run directory", "folder", "runs/coupled")


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders, oldest first (temporary folders are ignored).

    Args:
        run_dir: a run directory (as `wb.rl.train` wrote it); its checkpoints are in
            ``run_dir/checkpoints/step-NNNNNN``.

    Returns:
        The ``step-NNNNNN`` folders, sorted by step; empty when the run has none yet.
    """
    root = _run_dir(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint LATEST names (or the newest folder when LATEST is missing, or names
    no checkpoint folder: an empty or edited pointer never gives another folder).

    Args:
        run_dir: a run directory (as `wb.rl.train` wrote it).

    Returns:
        The ``run_dir/checkpoints/step-NNNNNN`` folder to resume from, or None when the
        run has no checkpoint.
    """
    found = list_checkpoints(run_dir)
    root = _run_dir(run_dir) / "checkpoints"
    pointer = root / "LATEST"
    if pointer.is_file():
        try:
            p = root / pointer.read_text().strip()
        except (OSError, UnicodeDecodeError):  # a damaged pointer names no folder
            p = None
        if p in found:
            return p
    return found[-1] if found else None


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load a checkpoint into `model` (and `optimizer`); return its saved state.

    Raises:
        WorkbenchError: when any file is missing or unreadable; the message names the
            checkpoint and the previous good one to resume from instead.
    """
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
        if not isinstance(state, dict) or type(state.get("step")) is not int:
            raise ValueError("state.json names no integer step")
        named = re.fullmatch(r"step-(\d+)", path.name)
        if named and int(named[1]) != state["step"]:
            # a step other than the folder's (hand-edited, or copied from another folder)
            # resumed the run at that step: past its length, it "finished" at once
            raise ValueError(f"state.json names step {state['step']}, not the folder's")
        missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
        if unexpected or missing:
            raise ValueError(f"weights do not match the model (missing {missing[:3]})")
        if optimizer is not None:
            tensors = load_file(str(path / "optimizer.safetensors"))
            meta = json.loads((path / "optimizer.json").read_text())
            sd_state: dict[int, dict[str, Any]] = {}
            for key, value in tensors.items():
                pid, name = key.split(".", 1)
                sd_state.setdefault(int(pid), {})[name] = value
            for pid, scalars in meta["scalars"].items():
                sd_state.setdefault(int(pid), {}).update(scalars)
            optimizer.load_state_dict({"state": sd_state, "param_groups": meta["param_groups"]})
    except Exception as e:
        earlier = [p.name for p in list_checkpoints(path.parent.parent) if p.name < path.name]
        fix = (
            f"resume from the previous checkpoint: resume(run_dir, checkpoint={earlier[-1]!r})"
            if earlier
            else "start the run again (no earlier checkpoint exists)"
        )
        raise WorkbenchError(
            f"checkpoint {path} is corrupt or incomplete ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0][:200]}); it was left in place",
            fix,
        ) from e
    return state


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one JSON line to ``metrics.jsonl`` (flushed and fsynced)."""
    import os

    path = Path(run_dir) / "metrics.jsonl"
    with open(path, "a") as f:
        f.write(json_text(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: str | Path, *, up_to_step: int | None = None) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (a torn last line, from a crash, is skipped; a line
    that is not JSON anywhere else is refused).

    Args:
        run_dir: the run directory.
        up_to_step: keep only rows with ``step <= up_to_step``.

    Returns:
        The rows, oldest first; none for a run that has logged none yet.

    Raises:
        WorkbenchError: `run_dir` is not a folder (a mistyped path read as a run with no
            rows, and charted as an empty one), or a line before the last is not a
            metrics row; the message names the file and the line.
    """
    run_dir = _run_dir(run_dir)
    if not run_dir.is_dir():
        what = "is not a folder" if run_dir.exists() else "does not exist"
        raise WorkbenchError(
            f"no run in {run_dir}: it {what}",
            "pass the folder a run was started in (wb.rl.train(..., out=DIR))",
        )
    path = run_dir / "metrics.jsonl"
    if up_to_step is not None:
        up_to_step = _validate.integer("up_to_step", up_to_step, example=10)
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    lines = path.read_text().splitlines()
    # The last line holding text: the only one a crash (or a read while the trainer
    # appends) can leave torn, since every row is written whole with its newline.
    last = max((i for i, line in enumerate(lines, 1) if line.strip()), default=0)
    for number, line in enumerate(lines, 1):
        if not line.strip():  # holds no row (a hand-edited file's blank line)
            continue
        try:
            row = metrics_row(line)
        except ValueError as e:
            if number == last and isinstance(e, NotJsonError):
                continue
            # A bad line elsewhere was skipped without a word: its step was missing from
            # every table and chart, and a resume rewrote the file without it.
            raise WorkbenchError(
                f"line {number} of {path} {e}: {line[:80]!r}",
                "restore the file from a copy, or correct or delete that line",
            ) from None
        if up_to_step is None or row["step"] <= up_to_step:
            rows.append(row)
    return rows


class NotJsonError(ValueError):
    """A line of ``metrics.jsonl`` that is not JSON (`metrics_row`): a torn last line."""


def metrics_row(line: str) -> dict[str, Any]:
    """One line of ``metrics.jsonl`` as its row: a JSON object with an integer ``step``
    whose values are numbers (None for NaN) or lists of them, as the trainer logs them.

    Raises:
        ValueError: saying what the line is instead: ``"is not JSON (...)"`` (a
            `NotJsonError`, as a torn line is), ``"is not a metrics row (...)"`` or
            ``"holds 'key' = value, not a number"``.
    """
    try:
        row = json.loads(line)
    except ValueError as e:
        raise NotJsonError(f"is not JSON ({e})") from None
    if not isinstance(row, dict) or type(row.get("step")) is not int or row["step"] < 0:
        raise ValueError("is not a metrics row (a JSON object with an integer step >= 0)")
    # Every value the trainer logs is a number (None for NaN): a hand-edited text value
    # failed later, deep inside pandas, in the tables and charts that read it.
    odd = next(((k, v) for k, v in row.items() if not _numeric(v)), None)
    if odd is not None:
        raise ValueError(f"holds {odd[0]!r} = {odd[1]!r}, not a number")
    return row


def _numeric(value: Any) -> bool:
    """A logged value: a number, None (NaN as JSON writes it), or a list of those."""
    if isinstance(value, list):
        return all(_numeric(v) and not isinstance(v, list) for v in value)
    return value is None or type(value) in (int, float)


def rewrite_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``metrics.jsonl`` atomically (used on resume to drop rows past the checkpoint)."""
    atomic_write_text(
        Path(run_dir) / "metrics.jsonl", "".join(json_text(r, sort_keys=True) + "\n" for r in rows)
    )
