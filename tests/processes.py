"""Helpers for tests that run the workbench in a child process and interrupt it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def start(args: list[str]) -> subprocess.Popen:
    """``python ARGS`` offline on one thread, with SIGINT at its default (a test runner
    started without job control may pass it on ignored), its output captured as text."""
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def interrupt_after_first_step(proc: subprocess.Popen, metrics: Path) -> tuple[str, str]:
    """Wait (at most 300 s) until a training run logs a step into `metrics`, send the
    process Ctrl-C, and return its ``(stdout, stderr)`` once it has ended."""
    deadline = time.monotonic() + 300
    while not (metrics.exists() and metrics.read_text().strip()) and proc.poll() is None:
        assert time.monotonic() < deadline, "no step was logged"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=300)
