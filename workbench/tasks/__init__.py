"""Verifiable reasoning tasks: seeded generators, safe answer parsers and exact rewards.

Three tasks share one interface (`Task`) and one text format (see `workbench.tasks.base`):

- ``"countdown"`` (`Countdown`): reach a target from 3 given numbers with + - * /, each
  number used at most once — the paper's RL task.
- ``"countdown-search"`` (`CountdownSearch`): Countdown problems that need a search, with
  the search written out (first steps in a fixed order, each with every second step checked
  against the target) as scratchpad.
- ``"arithmetic"`` (`Arithmetic`): multi-digit addition with a column-by-column scratchpad.

Example:
    >>> from workbench.tasks import get_task
    >>> task = get_task("countdown")
    >>> problems = task.generate(4, split="train", seed=0)
    >>> task.reward([p.prompt for p in problems], [p.solution for p in problems])
    [1.0, 1.0, 1.0, 1.0]

`get_task` returns the default configuration that the shipped tiny reasoner was trained on;
construct `Countdown(...)` / `Arithmetic(...)` directly for other sizes.
"""

from __future__ import annotations

from typing import Any, no_type_check

from workbench.errors import WorkbenchError
from workbench.tasks.arithmetic import Arithmetic, addition_scratchpad
from workbench.tasks.base import (
    ANSWER_PREFIX,
    Problem,
    Split,
    Task,
    UnreadablePromptWarning,
    completion_text,
)
from workbench.tasks.countdown import (
    Countdown,
    CountdownSearch,
    evaluate_expression,
    parse_expression,
    solve_countdown,
)

__all__ = [
    "ANSWER_PREFIX",
    "TASKS",
    "Arithmetic",
    "Countdown",
    "CountdownSearch",
    "Problem",
    "Split",
    "Task",
    "UnreadablePromptWarning",
    "addition_scratchpad",
    "completion_text",
    "evaluate_expression",
    "get_task",
    "parse_expression",
    "solve_countdown",
]

#: Registered task names and their classes (constructed with default settings).
TASKS: dict[str, type[Task]] = {
    "countdown": Countdown,
    "countdown-search": CountdownSearch,
    "arithmetic": Arithmetic,
}


@no_type_check  # checks its arguments itself, with messages that name the fix
def get_task(name: str, **kwargs: Any) -> Task:
    """A task by registry name.

    Args:
        name: a key of `TASKS`: ``"countdown"``, ``"countdown-search"`` or ``"arithmetic"``
            (case-insensitive, surrounding spaces ignored).
        **kwargs: passed to the task's constructor (e.g. ``sizes=(3, 4)`` for Countdown).

    Returns:
        A new `Task` instance.

    Raises:
        WorkbenchError: the name is not registered.
    """
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in TASKS:
        raise WorkbenchError(
            f"Unknown task {name!r}.", f"Use one of {sorted(TASKS)} (see workbench.tasks.TASKS)."
        )
    cls = TASKS[key]
    unknown = sorted(set(kwargs) - _settings(cls))
    if unknown:  # the constructor raised a raw TypeError
        raise WorkbenchError(
            f"Task {key!r} has no setting(s) {unknown}.",
            f"Use the settings {cls.__name__} takes: {sorted(_settings(cls))}.",
        )
    return cls(**kwargs)


def _settings(cls: type) -> set[str]:
    """The keyword arguments `cls` accepts, following ``**kwargs`` up to the parent's."""
    import inspect

    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {
            p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY
        }
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names - {"self"}
