"""Will an allocation fit? A check before the few allocations that grow with the input.

A tensor larger than the free memory does not always fail where it is made: on Linux an
allocation a little under the free memory succeeds, and the process is killed when its
pages are first written. In a notebook that is a dead kernel with every variable lost, no
error at all. (Measured: the exact path at 131,072 tokens on a toy Llama was OOM-killed.)
The passes whose memory grows fastest with their input (the exact path's
``[head_index, query_pos, key_pos]`` patterns, the lean decoder's KV cache) call
`check_fits` first, with a lower bound of what they will hold at once, so a request that
cannot fit is refused with its size and a fix, and one that might fit is never refused.

Free memory: on the CPU, the kernel's ``MemAvailable`` plus free swap, capped by the
process's memory cgroup (v1 or v2: its limit less its working set, i.e. usage less inactive
file pages, as container runtimes count it); on CUDA, the device's free memory plus what
torch's caching allocator holds unused. Elsewhere (other systems, MPS) nothing is checked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import WorkbenchError

__all__ = ["available_bytes", "check_fits"]

#: Limits at or above this mean "no limit" (cgroup v1 writes 2**63 rounded to a page).
_UNLIMITED = 1 << 60


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            parts = line.split()  # "total_inactive_file 123", "MemAvailable: 456 kB"
            if len(parts) >= 2 and parts[0] == key and parts[1].isdigit():
                return int(parts[1])
    except OSError:
        pass
    return 0


def _cgroup_room(root: Path = Path("/sys/fs/cgroup"), table: Path | None = None) -> int | None:
    """The process's memory cgroup limit less its working set, in bytes; None without one."""
    try:
        lines = (table or Path("/proc/self/cgroup")).read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # v2: one unified hierarchy
            files = ("memory.max", "memory.current", "memory.stat", "inactive_file")
            bases = [root / rel, root]
        elif "memory" in controllers.split(","):  # v1
            files = (
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "memory.stat",
                "total_inactive_file",
            )
            bases = [root / "memory" / rel, root / "memory"]
        else:
            continue
        limit_name, usage_name, stat_name, inactive = files
        for base in bases:  # the cgroup's own folder, or the mount's root where it is hidden
            limit = _read_int(base / limit_name)
            usage = _read_int(base / usage_name)
            if limit is not None and usage is not None:
                if limit < _UNLIMITED:
                    working = max(0, usage - _stat(base / stat_name, inactive))
                    rooms.append(max(0, limit - working))
                break
    return min(rooms) if rooms else None


def available_bytes(device: Any) -> int | None:
    """Bytes a new allocation on `device` can take now, or None where that is unknown.

    Args:
        device: a `torch.device` or its name.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type != "cpu":
        return None
    info = Path("/proc/meminfo")
    mem = _stat(info, "MemAvailable:")  # "MemAvailable:   17911544 kB"
    # Swap counts: the kernel kills a process only when it is full too (slow, not lost).
    room = [(mem + _stat(info, "SwapFree:")) * 1024] if mem else []
    cgroup = _cgroup_room()
    if cgroup is not None:
        room.append(cgroup)
    return min(room) if room else None


def check_fits(need: int, device: Any, what: str, fix: str | Callable[[int], str]) -> None:
    """Refuse `what` when `need` bytes (a lower bound) exceed what `device` has free.

    Args:
        need: bytes the operation will hold at once, at least.
        device: where it allocates.
        what: the operation and its size, as the error's subject ("sampling 64 rows of
            8,192 tokens").
        fix: what to change, or a function of the free bytes that says it (only called
            when the operation is refused).

    Raises:
        WorkbenchError: naming both sizes and `fix`.
    """
    have = available_bytes(device)
    if have is not None and need > have:
        raise WorkbenchError(
            f"{what} needs at least {need / 1e9:.1f} GB at once, and {have / 1e9:.1f} GB is "
            f"free on {torch.device(device)} (the process would be killed part-way, a "
            "notebook's kernel with it)",
            fix(have) if callable(fix) else fix,
        )
