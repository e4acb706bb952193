"""Start a GRPO run in a new run directory (`train`), or continue one (`resume`).

A run directory holds ``config.json``, ``provenance.json``, ``status.json``,
``metrics.jsonl``, ``checkpoints/`` and, once resumed, ``resumes.json``; everything that can
be refused (settings, model, task, credit layers) is refused before the directory is
written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, no_type_check

from .. import _validate
from .._io import as_path, atomic_write_json, atomic_write_text, check_folder, make_folder
from .._validate import as_index, integer, is_index
from ..errors import WorkbenchError
from ..provenance import provenance
from .checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_metrics,
    rewrite_metrics,
    run_lock,
)
from .config import GRPOConfig
from .trainer import GRPORun

__all__ = ["resume", "train"]


@no_type_check  # validates its arguments itself, with messages that name the fix
def train(
    config: GRPOConfig | None = None,
    out: str | Path = "runs/grpo",
    *,
    callbacks: list[Callable[[GRPORun, dict[str, Any]], None]] | None = None,
    progress: bool = True,
    **overrides: Any,
) -> GRPORun:
    """Start a GRPO run in a new run directory and train it.

    The run directory gets ``config.json`` and ``provenance.json`` (package versions and
    git commit, see `workbench.provenance`) before the first step.

    Args:
        config: the run's settings (default `GRPOConfig()`); `overrides` change fields.
        out: the run directory; it must not already hold a run (use `resume`).
        callbacks: called as ``cb(run, row)`` after every logged row (live charts).
        progress: show a progress bar.

    Returns:
        The finished (or interrupted) `GRPORun`.
    """
    check_config("train", config)
    progress = _validate.flag("progress", progress)  # "no" is truthy: bars would show
    callbacks = _check_callbacks(callbacks)
    config = (
        (config or GRPOConfig()).replace(**overrides) if overrides else (config or GRPOConfig())
    )
    run_dir = as_path(out, "train's out", "folder", "runs/grpo")
    check_folder(run_dir, "a run directory")
    if (run_dir / "config.json").exists():
        if latest_checkpoint(run_dir) is None:
            _no_checkpoint(
                run_dir,
                f"delete the folder (shutil.rmtree({str(run_dir)!r})) and start again, or "
                "pick another out folder",
            )
        raise WorkbenchError(
            f"{run_dir} already holds a run",
            f"continue it with wb.rl.resume({str(run_dir)!r}), or pick another out folder",
        )
    left = [
        *(["metrics.jsonl"] if (run_dir / "metrics.jsonl").exists() else []),
        *(["checkpoints"] if list_checkpoints(run_dir) else []),
    ]
    if left:
        # Its config.json deleted, a run's folder took a new run: the new rows were appended
        # to the old ones, and pruning kept the old run's later checkpoints over the new.
        raise WorkbenchError(
            f"{run_dir} holds the {' and '.join(left)} of an earlier run but no config.json: "
            "a new run there would mix its rows and checkpoints with that run's",
            "pick another out folder, or move those aside (or restore the earlier run's "
            "config.json and continue it with wb.rl.resume)",
        )
    # Everything that can be refused (settings, model, task, credit layers) is, before
    # the folder exists.
    run = GRPORun(config, run_dir, callbacks=callbacks, progress=progress)
    make_folder(run_dir, "a run directory")
    with run_lock(run_dir):
        if (run_dir / "config.json").exists():  # started by another process meanwhile
            raise WorkbenchError(
                f"{run_dir} already holds a run (started while this one loaded its model)",
                f"continue it with wb.rl.resume({str(run_dir)!r}), or pick another out folder",
            )
        atomic_write_json(run_dir / "config.json", config.to_dict())
        atomic_write_json(run_dir / "provenance.json", provenance())
        return run.train()


def check_config(caller: str, config: Any) -> None:
    """Refuse a `caller`'s config that is neither None nor a `GRPOConfig`: a dict read from
    a run's config.json failed as a raw AttributeError in the trainer."""
    if config is not None and not isinstance(config, GRPOConfig):
        raise WorkbenchError(
            f"{caller}'s config must be a wb.rl.GRPOConfig, got a {type(config).__name__}",
            "pass GRPOConfig.from_dict(d) for a dict d (a run's config.json), or its "
            f"fields as keywords: {caller}(..., max_steps=10)",
        )


@no_type_check  # validates its arguments itself, with messages that name the fix
def resume(
    run_dir: str | Path,
    *,
    checkpoint: str | int | None = None,
    max_steps: int | None = None,
    callbacks: list[Callable[[GRPORun, dict[str, Any]], None]] | None = None,
    progress: bool = True,
) -> GRPORun:
    """Continue a run from its latest (or a named) checkpoint.

    Metrics logged after that checkpoint are dropped and recomputed, so the resumed run's
    metrics equal an uninterrupted run's. The run's ``provenance.json`` (what started it)
    is left as it is; each resume that continues it (trains a step, or evaluates a step
    whose evaluation was interrupted) appends the step it starts from, the length it trains
    to and the same provenance record (versions, git commit) to ``resumes.json``, so a run
    continued by other code says so. Resuming a finished run changes nothing.

    Args:
        run_dir: the run directory.
        checkpoint: a checkpoint folder name (``"step-000010"``) or its step (``10``);
            default LATEST.
        max_steps: train to this many steps (default: the config's). A larger value extends
            the run, and ``config.json`` then records the new length, so the folder still
            describes the run it holds. The learning rate is constant after warm-up, so an
            extended run follows the schedule of one started with the longer length.
        callbacks, progress: as in `train`.
    """

    run_dir = as_path(run_dir, "resume's run_dir", "folder", "runs/coupled")
    checkpoint = _checkpoint_name(checkpoint)
    progress = _validate.flag("progress", progress)  # "no" is truthy: bars would show
    callbacks = _check_callbacks(callbacks)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise WorkbenchError(
            f"{run_dir} is not a run directory (no config.json)",
            "pass the folder a run was started in (train(..., out=DIR))",
        )
    with run_lock(run_dir):  # before the model loads: a run in training is refused at once
        return _resume(run_dir, checkpoint, max_steps, callbacks, progress)


def _resume(
    run_dir: Path,
    checkpoint: str | os.PathLike | None,
    max_steps: int | None,
    callbacks: list[Callable[[GRPORun, dict[str, Any]], None]] | None,
    progress: bool,
) -> GRPORun:
    cfg_path = run_dir / "config.json"
    saved, config = read_config(
        run_dir, "restore it from a copy, or start the run again in a new folder"
    )
    path = run_dir / "checkpoints" / checkpoint if checkpoint else latest_checkpoint(run_dir)
    if checkpoint and path.resolve().parent != (run_dir / "checkpoints").resolve():
        # An absolute path or "../" reached another run's checkpoint: this run's config,
        # history and metrics would have continued from another run's weights.
        raise WorkbenchError(
            f"checkpoint {str(checkpoint)!r} is not one of {run_dir}'s checkpoints",
            f"pick one of wb.rl.list_checkpoints({str(run_dir)!r}) (a name such as "
            "'step-000010', or a step), or resume the other run from its own folder",
        )
    # Only a listed checkpoint: an "abandoned-step-N" one resumed from a step whose rows
    # had been dropped, and set every real checkpoint aside as "later" than it.
    if checkpoint and path.name not in {p.name for p in list_checkpoints(run_dir)}:
        raise WorkbenchError(
            f"{run_dir} has no checkpoint {str(checkpoint)!r}",
            f"pick one of wb.rl.list_checkpoints({str(run_dir)!r}), or omit checkpoint=",
        )
    if path is None:
        _no_checkpoint(
            run_dir,
            f"delete the folder (shutil.rmtree({str(run_dir)!r})) and start it again with "
            "wb.rl.train",
        )
    if max_steps is not None:
        max_steps = integer("max_steps", max_steps, minimum=1)
    old_end = config.max_steps
    if max_steps is not None and max_steps < old_end:
        # it trained to max_steps, wrote "finished" and left config.json at the longer
        # length, with an evaluation at a step the full schedule has none
        raise WorkbenchError(
            f"max_steps={max_steps} is shorter than the run's {old_end} steps: resume "
            "finishes or extends a run, it does not shorten one",
            f"leave max_steps out (or pass one of at least {old_end}); the earlier steps' "
            f"weights are in wb.rl.list_checkpoints({str(run_dir)!r})",
        )
    extended = max_steps is not None and max_steps > old_end
    if extended:
        config = config.replace(max_steps=max_steps)
    history = run_dir / "resumes.json"
    past = _read_history(history)
    run = GRPORun(config, run_dir, callbacks=callbacks, progress=progress)
    state = load_checkpoint(path, run.policy, run.optimizer)
    run.step = state["step"]
    if "seed" in state and state["seed"] != config.seed:
        # config.json's seed edited: the run went on drawing another seed's problems
        raise WorkbenchError(
            f"checkpoint {path.name} was saved by a run with seed {state['seed']!r}, but "
            f"{cfg_path} says seed={config.seed}",
            f"restore the seed in config.json, or start a run with seed={config.seed} in a "
            "new folder",
        )
    rows = read_metrics(run_dir, up_to_step=run.step)
    _check_rows(run_dir, rows, run.step, path.name)
    # Everything that can be refused has been: from here the folder changes.
    if checkpoint:
        _abandon_later(run_dir, path)
    if extended:
        saved["max_steps"] = max_steps
        atomic_write_json(cfg_path, saved)
    last = rows[-1] if rows else {}
    unevaluated = (
        bool(last)
        and config.evaluates(last["step"], config.max_steps)
        and any(key not in last for key in config.eval_keys)
    )
    if run.step < config.max_steps or unevaluated:  # a finished run resumed: nothing to record
        entry = {"from_step": run.step, "max_steps": config.max_steps, **provenance()}
        atomic_write_json(history, [*past, entry])
    for row in rows:  # the old last step is evaluated only if the new schedule says so
        if row["step"] == old_end and not config.evaluates(old_end):
            for key in config.eval_keys:
                row.pop(key, None)
    rewrite_metrics(run_dir, rows)
    run.metrics = rows
    return run.train(max_steps)


def _checkpoint_name(checkpoint: Any) -> str | os.PathLike | None:
    """`checkpoint` as a checkpoint folder name: a step is ``step-NNNNNN``, the one name
    `save_checkpoint` gives it (an int failed as a raw TypeError joining it to a path)."""
    if checkpoint is None or isinstance(checkpoint, os.PathLike):
        return checkpoint  # a path: joined to the checkpoints folder, as before
    if isinstance(checkpoint, str) and checkpoint.strip():  # "" resumed from LATEST
        return checkpoint
    if is_index(checkpoint) and as_index(checkpoint) >= 0:
        return f"step-{as_index(checkpoint):06d}"
    raise WorkbenchError(
        f"checkpoint must be a checkpoint folder name or a step, got {checkpoint!r}",
        'pass e.g. checkpoint="step-000010" or checkpoint=10 (one of '
        "wb.rl.list_checkpoints(run_dir)), or omit it for the latest",
    )


def read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    """The JSON object in `path`, or a `WorkbenchError` naming the file (a torn or hand-edited
    file failed with a raw JSONDecodeError)."""
    import json

    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WorkbenchError(f"{path} is not {what} ({e})", fix) from None
    if not isinstance(value, dict):
        raise WorkbenchError(f"{path} holds {type(value).__name__}, not {what}", fix)
    return value


#: Settings every version of the workbench wrote to a run's config.json.
_ALWAYS_SAVED = (
    "model",
    "task",
    "max_steps",
    "seed",
    "num_generations",
    "per_device_train_batch_size",
    "learning_rate",
    "max_completion_length",
)


def read_config(run_dir: Path, fix: str) -> tuple[dict[str, Any], GRPOConfig]:
    """A run's ``config.json``, as saved and as a `GRPOConfig`.

    Refuses one that lacks a setting every version wrote: read with the defaults for what
    is missing, a config.json emptied to ``{}`` resumed as a default run (another model,
    task or length) on this run's checkpoint."""
    path = run_dir / "config.json"
    saved = read_json(path, "a readable JSON config", fix)
    lost = [k for k in _ALWAYS_SAVED if k not in saved]
    if not {"credit", "strategy"} & saved.keys():  # "strategy": runs before the record
        lost.append("credit")
    if lost:
        raise WorkbenchError(
            f"{path} lacks the settings {lost} that every run writes: it was edited or "
            "damaged, and read with defaults it would describe another run",
            fix,
        )
    return saved, GRPOConfig.from_dict(saved)


def _read_history(path: Path) -> list[Any]:
    """``resumes.json``'s entries (none when it does not exist yet)."""
    import json

    if not path.is_file():
        return []
    try:
        past = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        past = e
    if not isinstance(past, list):
        raise WorkbenchError(
            f"{path} is not a readable list of resumes ({past})",
            "restore it from a copy, or move it aside (it only records past resumes)",
        )
    return past


def _abandon_later(run_dir: Path, chosen: Path) -> None:
    """Point LATEST at `chosen` and rename the later checkpoints ``abandoned-step-N`` (kept,
    but out of `list_checkpoints`, so pruning and a corrupt-checkpoint fallback never mix a
    discarded future into the resumed run)."""
    later = [p for p in list_checkpoints(run_dir) if p.name > chosen.name]
    atomic_write_text(chosen.parent / "LATEST", chosen.name + "\n")
    for p in later:
        target, n = p.with_name(f"abandoned-{p.name}"), 1
        while target.exists():
            n += 1
            target = p.with_name(f"abandoned-{n}-{p.name}")
        os.replace(p, target)


def _status(run_dir: Path) -> str:
    import json

    try:
        return str(json.loads((run_dir / "status.json").read_text()).get("status"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


def _no_checkpoint(run_dir: Path, fix: str) -> None:
    """Refuse to continue `run_dir`, which has no checkpoint: it never reached its first,
    or (its LATEST pointer or a logged step says it did) its checkpoints are gone, where
    deleting the folder would lose its metrics without a word."""
    steps = [r["step"] for r in _readable_rows(run_dir)]
    if (run_dir / "checkpoints" / "LATEST").is_file() or any(s > 0 for s in steps):
        raise WorkbenchError(
            f"{run_dir} holds a run whose checkpoints are gone (status: {_status(run_dir)}; "
            f"metrics up to step {max(steps, default=0)}), so there is nothing to continue "
            "from",
            "restore its checkpoints folder from a copy, or start the run again in another "
            "out folder (this one's metrics stay readable with wb.rl.read_metrics)",
        )
    raise WorkbenchError(
        f"{run_dir} holds a run that never reached its first checkpoint (status: "
        f"{_status(run_dir)}), so there is nothing to continue",
        fix,
    )


def _readable_rows(run_dir: Path) -> list[dict[str, Any]]:
    """`read_metrics`, or none where it refuses the file (only for a message)."""
    try:
        return read_metrics(run_dir)
    except WorkbenchError:
        return []


def _check_rows(run_dir: Path, rows: list[dict[str, Any]], step: int, name: str) -> None:
    """Refuse a ``metrics.jsonl`` that lacks, repeats or reorders a row of the steps 0 to
    `step` that checkpoint `name` completed (an uninterrupted run logs each once, in order):
    resuming carried the gap into every table and chart, and a deleted file restarted the
    record at the next step."""
    steps = [r["step"] for r in rows]
    if steps == list(range(step + 1)):
        return
    missing = sorted(set(range(step + 1)) - set(steps))
    repeated = sorted({s for s in steps if steps.count(s) > 1})
    if missing:
        what, fix = f"lacks the row of {_few(missing)}", "restore metrics.jsonl from a copy"
    elif repeated:
        what, fix = f"repeats the row of {_few(repeated)}", "delete the repeated lines"
    else:
        what, fix = "holds its rows out of order", "put its lines in the order of their steps"
    raise WorkbenchError(
        f"{run_dir / 'metrics.jsonl'} {what}, though checkpoint {name} completed steps 0 "
        f"to {step}: resuming would carry that into every table and chart",
        f"{fix}, resume from an earlier checkpoint whose rows it holds (checkpoint=N), or "
        "start the run again in a new folder",
    )


def _few(steps: list[int]) -> str:
    """``step 3`` or ``steps 1, 2, 4`` (the first five, and how many more)."""
    more = f" (and {len(steps) - 5} more)" if steps[5:] else ""
    return f"step{'s' if steps[1:] else ''} {', '.join(map(str, steps[:5]))}{more}"


def _check_callbacks(callbacks: Any) -> list[Callable[..., Any]] | None:
    """`callbacks` as a list of functions, or a `WorkbenchError`: a single function or a
    number failed as a raw TypeError, and an entry that is not a function only after the
    first evaluation, with the run folder written."""
    fix = "pass a list of functions, each called as cb(run, row): callbacks=[on_row]"
    if callbacks is None:
        return None
    if callable(callbacks) or isinstance(callbacks, str | bytes | dict):
        raise WorkbenchError(f"callbacks must be a list of functions, got {callbacks!r:.80}", fix)
    try:
        callbacks = list(callbacks)
    except TypeError:
        raise WorkbenchError(
            f"callbacks must be a list of functions, got {callbacks!r:.80}", fix
        ) from None
    odd = next((cb for cb in callbacks if not callable(cb)), None)
    if odd is not None:
        raise WorkbenchError(f"callbacks holds {odd!r:.80}, which is not a function", fix)
    return callbacks
