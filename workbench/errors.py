"""Errors the workbench raises on bad input.

Every error names the problem and the fix, so a user in a notebook sees one readable
message instead of a stack trace from deep inside torch. `WorkbenchError` subclasses
`ValueError` so generic handlers still catch it.
"""

from __future__ import annotations

__all__ = ["WorkbenchError"]


class WorkbenchError(ValueError):
    """Bad input or state, with what went wrong and how to fix it.

    Args:
        problem: what is wrong, naming the offending value.
        fix: what the user should do instead.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\nFix: {fix}")
