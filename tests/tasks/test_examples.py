"""The ``>>>`` examples in the tasks' docstrings run and print what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["workbench.tasks", "workbench.tasks.arithmetic", "workbench.tasks.countdown"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_as_written(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples to check"
    assert result.failed == 0


def test_every_module_with_examples_is_checked():
    from pathlib import Path

    import workbench

    root = Path(workbench.__file__).parent
    with_examples = {
        ".".join(("workbench", *p.relative_to(root).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for p in root.rglob("*.py")
        if ">>> " in p.read_text(encoding="utf-8")
    }
    assert with_examples == set(MODULES)
