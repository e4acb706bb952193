"""Interruptions of a run: Ctrl-C held back over the steps that must not be split, and
phase marks for the fault tests.

`defer_sigint` holds SIGINT during an optimiser step or a checkpoint write and sets a flag
instead, so the weights, the step counter and the checkpoint always agree. `phase` writes
``begin NAME STEP`` / ``end NAME STEP`` lines to the file named by ``WORKBENCH_PHASE_LOG``
(nothing when it is unset); tests/rl/test_faults.py uses them to SIGKILL a run inside a
chosen phase.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

__all__ = ["defer_sigint", "phase"]


@contextlib.contextmanager
def defer_sigint(flag: threading.Event) -> Iterator[None]:
    """Hold Ctrl-C during the block (an optimiser step, a checkpoint) and set `flag` instead.

    The loop turns the flag into a KeyboardInterrupt once the step's bookkeeping is done,
    so the weights, the step counter and the checkpoint always agree. Where Ctrl-C is
    ignored (``SIG_IGN``: a worker started to outlive it) it stays ignored, not turned into
    an interrupt after the step; where its handler was not installed from Python (None:
    an embedding application's), it is left alone, as it could not be put back. Off the
    main thread signals cannot be handled, and the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    current = signal.getsignal(signal.SIGINT)
    if current is None or current == signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *a: flag.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def phase(name: str, step: int) -> Iterator[None]:
    """Mark the start and end of a phase of the loop (see the module docstring)."""
    path = os.environ.get("WORKBENCH_PHASE_LOG")
    if not path:
        yield
        return
    with open(path, "a") as f:
        f.write(f"begin {name} {step}\n")
    yield
    with open(path, "a") as f:
        f.write(f"end {name} {step}\n")
