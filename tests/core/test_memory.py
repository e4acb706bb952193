"""`workbench._memory`: what a new allocation can take, read from the kernel and the
process's memory cgroup, and the refusal of what cannot fit."""

from __future__ import annotations

from pathlib import Path

import pytest

import workbench as wb
from workbench import _memory

GB = 10**9


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_cgroup_v2_limit_leaves_the_limit_less_the_working_set(tmp_path):
    # usage counts page cache; its inactive file pages are reclaimable, so they are free
    _write(
        tmp_path,
        {
            "cgroup": "0::/job/42\n",
            "sys/job/42/memory.max": f"{24 * GB}\n",
            "sys/job/42/memory.current": f"{20 * GB}\n",
            "sys/job/42/memory.stat": f"anon 5\ninactive_file {6 * GB}\nactive_file 9\n",
        },
    )
    assert _memory._cgroup_room(tmp_path / "sys", tmp_path / "cgroup") == 10 * GB


def test_a_cgroup_v1_folder_hidden_from_the_container_is_read_at_the_mount(tmp_path):
    _write(
        tmp_path,
        {
            "cgroup": "5:cpu,cpuacct:/\n4:memory:/docker/abc\n0::/\n",
            "sys/memory/memory.limit_in_bytes": f"{8 * GB}",
            "sys/memory/memory.usage_in_bytes": f"{3 * GB}",
            "sys/memory/memory.stat": f"cache 1\ntotal_inactive_file {GB}\n",
        },
    )
    assert _memory._cgroup_room(tmp_path / "sys", tmp_path / "cgroup") == 6 * GB


def test_an_unlimited_or_missing_cgroup_sets_no_limit(tmp_path):
    _write(
        tmp_path,
        {
            "cgroup": "4:memory:/\n",
            "sys/memory/memory.limit_in_bytes": "9223372036854771712",
            "sys/memory/memory.usage_in_bytes": "8698093568",
        },
    )
    assert _memory._cgroup_room(tmp_path / "sys", tmp_path / "cgroup") is None
    assert _memory._cgroup_room(tmp_path / "none", tmp_path / "no-table") is None


def test_the_cpu_has_some_free_memory_and_no_more_than_it_has():
    total = _memory._stat(Path("/proc/meminfo"), "MemTotal:") * 1024
    free = _memory.available_bytes("cpu")
    assert free is not None and 0 < free <= total


def test_what_cannot_fit_is_refused_with_both_sizes_and_the_fix():
    _memory.check_fits(1, "cpu", "one byte", "none needed")  # fits: nothing happens
    with pytest.raises(wb.WorkbenchError) as err:
        _memory.check_fits(10**18, "cpu", "a huge thing", "make it smaller")
    text = str(err.value)
    assert "a huge thing needs at least 1000000000.0 GB at once" in text
    assert "GB is free on cpu" in text and "make it smaller" in text
