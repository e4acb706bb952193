"""Progress bars on long work: `tqdm.auto`, a widget in a notebook and a bar on a terminal.

A bar the caller turned off is off, and so is one whose stderr is not a terminal (tqdm's
``disable=None``): in a log file (a batch job, ``nohup``, CI) tqdm wrote a new line at every
update, about 300 for a 300-step GRPO run. A notebook's widget ignores that test, so a
notebook shows its bars, unless ``WORKBENCH_PROGRESS=off`` is set (`ENV`): a notebook that
nobody watches (papermill) then saves none. `workbench batch` sets it in its kernels; before,
the saved notebooks kept bars frozen at their first update ("Loading weights: 0%").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["ENV", "bars_shown", "progress_bar"]

#: The environment variable that turns every bar off where it is ``off`` (or ``0``,
#: ``false``, ``no``): the workbench's and the libraries' it loads with (`bars_shown`).
ENV = "WORKBENCH_PROGRESS"


def _switched_off() -> bool:
    from ._validate import env_flag

    return not env_flag(ENV, True)


def progress_bar(iterable: Iterable[Any] | None = None, *, progress: bool, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(iterable, **kwargs)``, shown when `progress` is True, the output is
    a notebook or a terminal, and `ENV` does not turn bars off; ``kwargs`` are tqdm's
    (``total``, ``desc``, ...)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if progress and not _switched_off() else True, **kwargs)


def bars_shown() -> bool:
    """Whether a bar of `progress_bar(progress=True)` would show now: not where `ENV` turns
    bars off; in a notebook (tqdm.auto's widget), or where stderr is a terminal (tqdm's ``disable=None`` test). For
    other libraries' bars (transformers' "Loading weights") under the same rule."""
    import sys

    from tqdm.auto import tqdm

    if _switched_off():
        return False
    if any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__):
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    if isatty is None:
        return True
    try:
        return bool(isatty())
    except Exception:  # a closed or odd stream: write nothing to it
        return False
