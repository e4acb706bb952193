"""Errors the workbench raises on bad input.

Every error names the problem and the fix, so a user in a notebook sees one readable
message instead of a stack trace from deep inside torch. `WorkbenchError` subclasses
`ValueError` so generic handlers still catch it.
"""

from __future__ import annotations

__all__ = ["WorkbenchError", "warn_user"]


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

    def _render_traceback_(self) -> list[str]:
        """IPython's hook for how a notebook shows this error: the problem and the fix
        first, then the usual traceback (which ends with them again).

        A notebook prints a traceback top down, every frame of the workbench's own checks
        before the message at the bottom, so the message was the last thing a user read.
        Outside IPython (a script, pytest) tracebacks are Python's own.
        """
        import traceback

        etype, tb = type(self), self.__traceback__
        try:
            from IPython import get_ipython

            formatter = getattr(get_ipython(), "InteractiveTB", None)
        except ImportError:
            formatter = None
        if formatter is None:
            return [
                *traceback.format_exception_only(etype, self),
                "\n",
                *traceback.format_exception(etype, self, tb),
            ]
        body = formatter.structured_traceback(etype, self, tb)
        if getattr(formatter, "mode", None) == "Minimal":  # %xmode Minimal: the message alone
            return body
        head = formatter.get_exception_only(etype, self)  # its last line ends in a newline
        return [*head, *body]


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` at the first frame outside the workbench (and
    outside the runtime type checker's wrappers around its functions, where one is
    installed): the user's line, also when a panel made the call. The project's test
    filter that makes the workbench's own warnings errors does not apply there, and the
    default filter shows a message once per user line."""
    import sys
    import warnings

    inside = ("workbench", "jaxtyping", "beartype")
    frame, level = sys._getframe(0), 1  # this frame is warnings.warn's stacklevel 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in inside:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
