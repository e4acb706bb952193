"""The workbench: see how a language model reasons through its attention, then use it.

Implements the method of "Attention Illuminates LLM Reasoning: The Preplan-and-Anchor
Rhythm" (arXiv 2510.13554): head span, local/global heads, WAAD, FAI, preplan and anchor
tokens, and the RL credit strategies built on them.

    import workbench as wb
    model = wb.load_model()                     # embedded SmolLM2-135M-Instruct, offline
    trace = wb.generate(model, "What is 17 * 23?", max_new_tokens=64, seed=0)
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__

# name -> the submodule it comes from. Nothing is imported until first use, so `import
# workbench` and `workbench models` stay fast and `import workbench.attention` loads
# neither altair nor ipywidgets (tests/core/test_packaging.py pins both).
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        [
            "Knockout", "ResidAblation", "TargetSet", "intervene", "measure",
            "perturbation_test", "run_ablations", "summarize", "target_sets",
        ],
        "ablation",
    ),
    **dict.fromkeys(
        [
            "Analysis", "CreditParams", "HeadClasses", "PeakDetector", "RhythmParams", "analyze", "analyze_many", "delta",
            "fai", "gamma_many", "head_span", "middle_layers", "receiver_kurtosis",
            "rhythm_statistics", "waad",
        ],
        "attention",
    ),
    **dict.fromkeys(["record", "run_batch"], "batch"),
    "WorkbenchError": "errors",
    "UntestedVersionWarning": "_compat",
    **dict.fromkeys(["DEFAULT_MODEL", "ModelInfo", "list_models", "load_model"], "models"),
    **dict.fromkeys(["Trace", "generate"], "trace"),
    **dict.fromkeys(["Workbench", "workbench"], "ui"),
}  # fmt: skip
_SUBMODULES = ("ablation", "attention", "batch", "models", "rl", "tasks", "trace", "ui", "viz")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# This module's own helpers, not the workbench's API: kept out of tab completion.
_HELPERS = frozenset({"Any", "TYPE_CHECKING", "importlib"})


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES} - _HELPERS)


if TYPE_CHECKING:  # what type checkers and IDEs see
    from . import rl, tasks, ui, viz
    from ._compat import UntestedVersionWarning
    from .ablation import (
        Knockout,
        ResidAblation,
        TargetSet,
        intervene,
        measure,
        perturbation_test,
        run_ablations,
        summarize,
        target_sets,
    )
    from .attention import (
        Analysis,
        CreditParams,
        HeadClasses,
        PeakDetector,
        RhythmParams,
        analyze,
        analyze_many,
        delta,
        fai,
        gamma_many,
        head_span,
        middle_layers,
        receiver_kurtosis,
        rhythm_statistics,
        waad,
    )
    from .batch import record, run_batch
    from .errors import WorkbenchError
    from .models import DEFAULT_MODEL, ModelInfo, list_models, load_model
    from .trace import Trace, generate
    from .ui import Workbench, workbench

__all__ = [
    "DEFAULT_MODEL",
    "Analysis",
    "CreditParams",
    "HeadClasses",
    "Knockout",
    "ModelInfo",
    "PeakDetector",
    "ResidAblation",
    "RhythmParams",
    "TargetSet",
    "Trace",
    "UntestedVersionWarning",
    "Workbench",
    "WorkbenchError",
    "analyze",
    "analyze_many",
    "delta",
    "fai",
    "gamma_many",
    "generate",
    "head_span",
    "intervene",
    "list_models",
    "load_model",
    "measure",
    "middle_layers",
    "perturbation_test",
    "receiver_kurtosis",
    "record",
    "rhythm_statistics",
    "rl",
    "run_ablations",
    "run_batch",
    "summarize",
    "target_sets",
    "tasks",
    "ui",
    "viz",
    "waad",
    "workbench",
]
