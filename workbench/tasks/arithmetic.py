"""Multi-digit addition with a column-by-column scratchpad (carries written out).

Format (one problem)::

    prompt      "Add: 457+68\\n"
    completion  "7+8+0=15\\n"        ones column: digit + digit + carry-in = column sum
                "5+6+1=12\\n"        tens column (carry 1 from the ones)
                "4+0+1=5\\n"         hundreds column (a missing digit is written as 0)
                "Answer: 525\\n"

Rules: the final answer is the integer after the last ``Answer:`` line (digits only, at most
`MAX_ANSWER_DIGITS`; leading zeros allowed, signs and separators are not); it must equal the
sum exactly. The scratchpad is not checked.

Caveat: ``a+b`` and ``b+a`` are the same canonical problem, so they always fall in the same
split.
"""

from __future__ import annotations

import random
import re
from typing import Any, no_type_check

from workbench import _validate
from workbench.errors import WorkbenchError
from workbench.tasks.base import Problem, Split, Task, completion_text, last_answer_line

__all__ = ["MAX_ANSWER_DIGITS", "MAX_OPERAND_DIGITS", "Arithmetic", "addition_scratchpad"]

MAX_ANSWER_DIGITS = 32

#: The most digits an operand may have (the prompt format reads up to this many).
MAX_OPERAND_DIGITS = 30

# `(?![0-9])`: a longer operand is no prompt of this task, not its first digits.
_PROMPT = re.compile(
    rf"Add:[ \t]*([0-9]{{1,{MAX_OPERAND_DIGITS}}})[ \t]*\+[ \t]*([0-9]{{1,{MAX_OPERAND_DIGITS}}})(?![0-9])"
)
_ANSWER = re.compile(rf"[0-9]{{1,{MAX_ANSWER_DIGITS}}}")


@no_type_check  # checks its arguments itself, with messages that name the fix
def addition_scratchpad(a: int, b: int) -> list[str]:
    """The column steps of ``a + b``, ones column first.

    Args:
        a: first non-negative operand.
        b: second non-negative operand.

    Returns:
        One line per column, ``"<digit a>+<digit b>+<carry in>=<column sum>"``.

    Raises:
        WorkbenchError: an operand is negative or no integer (a float, a string or None
            failed with a raw ValueError or TypeError).
    """
    if not (_validate.is_index(a) and _validate.is_index(b)):
        raise WorkbenchError(
            f"Operands {a!r}, {b!r} must be integers.", "Pass two ints, e.g. (457, 68)."
        )
    a, b = _validate.as_index(a), _validate.as_index(b)
    if a < 0 or b < 0:
        raise WorkbenchError(f"Operands {a}, {b} must be non-negative.", "Use a, b >= 0.")
    da, db = str(a)[::-1], str(b)[::-1]
    carry = 0
    lines = []
    for k in range(max(len(da), len(db))):
        x = int(da[k]) if k < len(da) else 0
        y = int(db[k]) if k < len(db) else 0
        s = x + y + carry
        lines.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return lines


def _operands(numbers: Any) -> tuple[int, int]:
    """Two operands as ints that a prompt states and `Arithmetic.parse_prompt` reads back, or
    a `WorkbenchError`."""
    pair = tuple(numbers) if isinstance(numbers, list | tuple) else ()
    if len(pair) != 2 or not all(_validate.is_index(x) for x in pair):
        raise WorkbenchError(
            f"Need two integer operands, got {numbers!r}.", "Pass (a, b), e.g. (457, 68)."
        )
    a, b = (_validate.as_index(x) for x in pair)
    if min(a, b) < 0 or max(a, b) >= 10**MAX_OPERAND_DIGITS:
        # the prompt format reads non-negative operands of at most 30 digits back: the
        # reward would read another problem (or none) from this one's prompt
        raise WorkbenchError(
            f"Operands must be non-negative with at most {MAX_OPERAND_DIGITS} digits, got "
            f"({a}, {b}).",
            f"Pass operands in 0..{10**MAX_OPERAND_DIGITS - 1}.",
        )
    return a, b


class Arithmetic(Task):
    """Add two multi-digit numbers, writing each column's sum and carry.

    Args:
        min_digits: fewest digits per operand.
        max_digits: most digits per operand; each operand's length is drawn uniformly.
        test_fraction: share of the canonical problem space in the test split.

    Example:
        >>> task = Arithmetic()
        >>> p = task.generate(1, split="test", seed=0)[0]
        >>> task.score(p, p.solution)
        1.0
    """

    name = "arithmetic"
    prompt_header = "Add"

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def __init__(self, min_digits: int = 2, max_digits: int = 4, test_fraction: float = 0.1):
        super().__init__(test_fraction)
        # a float failed inside random.randint, a string or None in the comparison
        min_digits = _validate.integer("min_digits", min_digits, example=2)
        max_digits = _validate.integer("max_digits", max_digits, example=4)
        if not 1 <= min_digits <= max_digits <= 30:
            raise WorkbenchError(
                f"min_digits={min_digits!r}, max_digits={max_digits!r} out of range.",
                "Use 1 <= min_digits <= max_digits <= 30.",
            )
        self.min_digits = min_digits
        self.max_digits = max_digits

    def __repr__(self) -> str:
        return f"Arithmetic(min_digits={self.min_digits}, max_digits={self.max_digits})"

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def format_prompt(self, numbers: tuple[int, ...], target: int | None = None) -> str:
        """The prompt text for ``numbers[0] + numbers[1]``.

        Args:
            numbers: the two operands.
            target: unused (the sum is not shown); kept for a uniform signature.

        Returns:
            e.g. ``"Add: 457+68\\n"``.

        Raises:
            WorkbenchError: operands that `parse_prompt` would not read back (one operand
                raised an IndexError; ``(1.5, 2)`` wrote ``"Add: 1.5+2"``).
        """
        a, b = _operands(numbers)
        return f"{self.prompt_header}: {a}+{b}\n"

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def make_problem(self, numbers: tuple[int, ...], target: int | None = None) -> Problem:
        """A `Problem` for ``numbers[0] + numbers[1]``.

        Args:
            numbers: the two non-negative operands.
            target: None, or the sum itself (kept for a uniform signature).

        Returns:
            The problem, with the column-by-column scratchpad as its solution.
        """
        a, b = _operands(numbers)
        total = a + b
        if target is not None and target != total:
            raise WorkbenchError(
                f"target={target!r} is not {a}+{b} = {total}; an addition's target is its sum.",
                "Leave target out.",
            )
        steps = addition_scratchpad(a, b)
        return Problem(
            task=self.name,
            prompt=self.format_prompt((a, b)),
            answer=str(total),
            solution="".join(f"{s}\n" for s in steps) + f"Answer: {total}\n",
            numbers=(a, b),
            target=total,
            split=self.split_of((a, b), total),
        )

    def _operand(self, rng: random.Random) -> int:
        d = rng.randint(self.min_digits, self.max_digits)
        return rng.randint(10 ** (d - 1) if d > 1 else 0, 10**d - 1)

    def _sample(self, rng: random.Random, split: Split) -> Problem:
        return self.make_problem((self._operand(rng), self._operand(rng)))

    def _canonical(self, numbers: tuple[int, ...], target: int) -> str:
        return "+".join(map(str, sorted(numbers)))

    def parse(self, completion: Any) -> int | None:
        """The integer answer of a completion.

        Args:
            completion: model output (string or TRL conversational list).

        Returns:
            The integer after the last ``Answer:`` line, or None if there is none or it is
            not 1..`MAX_ANSWER_DIGITS` plain digits. Never raises.
        """
        text = completion_text(completion)
        if text is None:
            return None
        answer = last_answer_line(text)
        if answer is None or _ANSWER.fullmatch(answer) is None:
            return None
        return int(answer)

    def _check(self, numbers: tuple[int, ...], target: int, parsed: Any) -> bool:
        return isinstance(parsed, int) and parsed == sum(numbers)

    def parse_prompt(self, prompt: Any) -> tuple[tuple[int, ...], int] | None:
        """``(operands, sum)`` read back from an addition prompt, or None.

        Args:
            prompt: prompt text or conversational list; the last ``Add: a+b`` in it is used.

        Returns:
            The operands and their sum, or None if there is no readable problem.
        """
        text = completion_text(prompt)
        if text is None:
            return None
        matches = _PROMPT.findall(text[-4096:])
        if not matches:
            return None
        a, b = (int(x) for x in matches[-1])
        return (a, b), a + b
