"""Scalar validators shared by every parameter record and entry point.

Each returns the value normalised (``int`` or ``float``) or raises a `WorkbenchError` that
names the setting, the bad value and a fix. Booleans are refused where numbers are
expected (``True`` is an ``int`` in Python, and ``window=True`` is always a mistake).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from .errors import WorkbenchError

__all__ = ["SEED_MAX", "env_flag", "integer", "number", "optional_number", "seed"]

#: The largest seed every generator here accepts (`torch.manual_seed` takes 64 bits).
SEED_MAX = 2**63 - 1


def as_index(value: Any) -> int:
    """`value` as an ``int``: a Python, NumPy or 0-d torch integer; TypeError for anything
    else (a float or a bool is no index: ``int(1.7)`` would pick 1 without a word; nor is a
    one-element tensor of any other shape, which torch would read as its element)."""
    if isinstance(value, bool) or getattr(value, "ndim", 0) != 0:
        raise TypeError(f"{value!r} is not an index")
    return operator.index(value)


def is_index(value: Any) -> bool:
    """Whether `value` is one integer (see `as_index`)."""
    try:
        as_index(value)
    except TypeError:
        return False
    return True


def integer(name: str, value: Any, *, minimum: int | None = None, example: Any = None) -> int:
    """`value` as an ``int`` that is at least `minimum` (NumPy and torch integer scalars,
    as positions often come, are integers too).

    Raises:
        WorkbenchError: `value` is not an integer (bools and floats included) or too small.
    """
    fix = f"pass e.g. {name}={example!r}" if example is not None else f"pass an integer {name}"
    try:
        number = as_index(value)
    except TypeError:
        raise WorkbenchError(f"{name} must be an integer, got {value!r}", fix) from None
    if minimum is not None and number < minimum:
        raise WorkbenchError(f"{name} must be at least {minimum}, got {value!r}", fix)
    return number


def seed(name: str, value: Any) -> int:
    """`value` as a seed: an integer from 0 to `SEED_MAX` (a larger one overflows inside
    torch, after the work before the draw has been done).

    Raises:
        WorkbenchError: `value` is not such an integer.
    """
    number = integer(name, value, minimum=0, example=0)
    if number > SEED_MAX:
        raise WorkbenchError(
            f"{name}={value!r} is too large for a seed", f"pass {name} from 0 to 2**63 - 1"
        )
    return number


def number(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
    example: Any = None,
) -> float:
    """`value` as a finite ``float`` in the interval from `low` to `high`.

    Args:
        low, high: the bounds; `low_open` / `high_open` exclude them.

    Raises:
        WorkbenchError: not a real number, NaN or infinite, or out of range.
    """
    fix = f"pass e.g. {name}={example!r}" if example is not None else f"pass a number {name}"
    # numbers.Real: NumPy scalars too (np.float32 is no float), as values often come
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise WorkbenchError(f"{name} must be a finite number, got {value!r}", fix)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        # an infinite bound is never in the interval (infinite values are refused above)
        lo = "(" if low_open or math.isinf(low) else "["
        hi = ")" if high_open or math.isinf(high) else "]"
        interval = f"{lo}{low}, {high}{hi}"
        fix = fix if example is not None else f"pass {name} in {interval}"
        raise WorkbenchError(f"{name} must be in {interval}, got {value!r}", fix)
    return float(value)


def optional_number(name: str, value: Any, **bounds: Any) -> float | None:
    """None, or `number` with the same arguments."""
    return None if value is None else number(name, value, **bounds)


def curve(name: str, values: Any, fix: str, ndim: int = 1, want: str | None = None) -> Any:
    """`values` as a float64 CPU torch tensor of `ndim` dimensions, or a `WorkbenchError`
    naming `name`, what was given and `fix` (a batch, a scalar or something that is not
    numbers).

    Args:
        ndim: the number of dimensions: 1 (the default) is one sequence's per-token values.
        want: what the tensor is, for the message (default for ``ndim=1``: "a [pos] curve
            of one sequence"; e.g. "a [layer, head] grid").
    """
    import torch

    try:
        v = torch.as_tensor(values).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        v = None
    if v is not None and v.is_complex():
        # they lost their imaginary part with only torch's warning
        raise WorkbenchError(f"{name} holds complex numbers (dtype {v.dtype})", fix)
    v = None if v is None else v.double()
    if v is None or v.ndim != ndim:
        if want is None:
            want = "a [pos] curve of one sequence" if ndim == 1 else f"a {ndim}-D tensor"
        shape = "" if v is None else f" of shape {tuple(v.shape)}"
        raise WorkbenchError(f"{name} needs {want}, got {type(values).__name__}{shape}", fix)
    return v


def flag(name: str, value: Any, fix: str | None = None) -> bool:
    """`value` as a ``bool`` (a NumPy bool too), or a `WorkbenchError` naming `name`: a
    string such as ``"no"`` is truthy and would silently switch the setting on."""
    import numpy as np

    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise WorkbenchError(
        f"{name} must be True or False, got {value!r}", fix or f"pass {name}=True or {name}=False"
    )


#: How the workbench's environment switches read (any case, spaces ignored).
YES = frozenset({"1", "true", "yes", "on"})
NO = frozenset({"0", "false", "no", "off"})


def env_flag(name: str, default: bool) -> bool:
    """The environment variable `name` as a switch: True for ``1``/``true``/``yes``/``on``,
    False for ``0``/``false``/``no``/``off`` (any case), `default` when it is unset or
    empty, and a `WorkbenchError` naming it for anything else: ``WORKBENCH_ALLOW_HUB=y``
    must not quietly read as "no"."""
    import os

    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if not value:
        return default
    if value in YES or value in NO:
        return value in YES
    raise WorkbenchError(
        f"the environment variable {name}={raw!r} is neither on nor off",
        f"set {name} to 1 (on) or 0 (off), or unset it (default: {int(default)})",
    )
