"""Countdown: reach a target from a few given numbers with + - * / (the paper's RL task).

Format (one problem)::

    prompt      "Countdown: 3 7 25 -> 82\\n"
    completion  "25*3=75\\n75+7=82\\n"        scratchpad: one arithmetic step per line
                "Answer: (25*3)+7\\n"           the final expression

Rules (this project's, fixed for every consumer):
    - Each given number may be used **at most once** (the multiset of numbers in the answer
      must be contained in the multiset of given numbers); not every number must be used.
    - Only non-negative integer literals, ``+ - * /`` and parentheses; no unary minus, no
      ``**``, no decimals. Whitespace is ignored.
    - The value is computed exactly with `fractions.Fraction` and must equal the target.
      Non-integer *intermediate* results are allowed (``(7/2)*4 = 14`` is valid), as in the
      paper's eval-based verifier; division by zero makes the answer wrong.
    - Only the last ``Answer:`` line counts; the scratchpad is not checked.

Safety: model text is never `eval`-ed; `workbench.tasks.expressions` parses it with caps
(inputs beyond a cap are wrong answers, never a hang).

Caveat: the generator only builds problems whose reference solution keeps every intermediate
result a positive integer; targets lie in ``[1, max_target]`` and differ from every given
number. The reference is the *shortest* solution a fixed-order search finds (so the same
problem always gets the same scratchpad), which may use fewer numbers than the problem has.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from typing import Any, no_type_check

from workbench import _validate
from workbench.errors import WorkbenchError
from workbench.tasks.base import Problem, Split, Task, completion_text, last_answer_line
from workbench.tasks.expressions import (
    MAX_DEPTH,
    MAX_EXPR_CHARS,
    MAX_LITERAL_DIGITS,
    _evaluate,
    evaluate_expression,
    literals,
    parse_expression,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPR_CHARS",
    "MAX_LITERAL_DIGITS",
    "MAX_TARGET_DIGITS",
    "Countdown",
    "CountdownSearch",
    "evaluate_expression",
    "parse_expression",
    "search_lines",
    "solve_countdown",
]

# The exact search grows about a hundredfold per number: an unreachable target takes about
# 2 s with six numbers on one core, and minutes with seven.
MAX_NUMBERS = 6

#: The most digits a target may have (the prompt format reads up to this many).
MAX_TARGET_DIGITS = 7

# `(?![0-9])`: a longer number is no prompt of this task, not its first digits.
_PROMPT = re.compile(
    rf"Countdown:[ \t]*((?:[0-9]{{1,{MAX_LITERAL_DIGITS}}}[ \t]+){{1,7}}[0-9]{{1,{MAX_LITERAL_DIGITS}}})"
    rf"[ \t]*->[ \t]*([0-9]{{1,{MAX_TARGET_DIGITS}}})(?![0-9])"
)


def check_countdown(numbers: tuple[int, ...], target: int, expression: Any) -> bool:
    """Whether `expression` reaches `target` using each of `numbers` at most once.

    Args:
        numbers: the given numbers (a multiset).
        target: the value to reach.
        expression: the answer text (e.g. ``"(50+25)-3"``); anything not parseable is wrong.

    Returns:
        True if the expression parses, uses a sub-multiset of `numbers`, and equals `target`
        exactly.
    """
    node = parse_expression(expression)
    if node is None:
        return False
    used = Counter(literals(node))
    if used - Counter(numbers):  # some literal used more often than given (or not given)
        return False
    value = _evaluate(node)  # the parser's own tree: no need to check its shape again
    return value is not None and value == target


# --------------------------------------------------------------------------- solver
_Item = tuple[int, str, bool]  # (value, expression, is_composite)


def _steps(items: list[_Item]) -> list[tuple[int, int, str, int]]:
    """All legal single steps (i, j, op, value) on `items`, in a fixed order.

    Operands are ordered larger first; only positive integer results are produced.
    """
    out = []
    for i in range(len(items)):
        for j in range(len(items)):
            if i == j:
                continue
            a, b = items[i][0], items[j][0]
            if a < b or (a == b and i > j):
                continue
            out.append((i, j, "+", a + b))
            if a > b:
                out.append((i, j, "-", a - b))
            if b > 1:
                out.append((i, j, "*", a * b))
                if a % b == 0:
                    out.append((i, j, "/", a // b))
    return out


def _wrap(item: _Item) -> str:
    return f"({item[1]})" if item[2] else item[1]


@no_type_check  # checks its arguments itself, with messages that name the fix
def solve_countdown(
    numbers: tuple[int, ...], target: int, max_value: int | None = None
) -> tuple[list[str], str] | None:
    """Shortest solution by a deterministic search (fewest steps first, fixed step order).

    Args:
        numbers: the given numbers.
        target: the value to reach.
        max_value: intermediate results above this are pruned. None (the default) prunes
            nothing that can be reached, so "no solution" is exact: a value built from
            numbers ``S`` with + - * / is at most ``prod(s + 1 for s in S) - 1``.

    Returns:
        ``(steps, expression)``: scratchpad lines like ``"50+25=75"`` and the final expression
        like ``"(50+25)-3"``; or None if no solution with positive integer intermediate
        results exists.
    """
    numbers = _checked_numbers(numbers)
    target = _validate.integer("target", target, example=82)
    if max_value is not None:
        max_value = _validate.integer("max_value", max_value, minimum=1, example=1000)
    if max_value is None:
        max_value = math.prod(n + 1 for n in numbers) - 1
    start: list[_Item] = [(v, str(v), False) for v in sorted(numbers, reverse=True)]
    for depth in range(1, len(numbers)):
        found = _search(start, target, depth, [], max_value)
        if found is not None:
            return found
    return None


def _apply(items: list[_Item], i: int, j: int, op: str, value: int) -> tuple[str, str, list[_Item]]:
    """One step on `items`: its scratchpad line (``"50+25=75"``), its expression and the
    items left (the result joins them as a composite, larger values first)."""
    expr = f"{_wrap(items[i])}{op}{_wrap(items[j])}"
    rest = [it for k, it in enumerate(items) if k not in (i, j)]
    left = sorted([*rest, (value, expr, True)], key=lambda it: -it[0])
    return f"{items[i][0]}{op}{items[j][0]}={value}", expr, left


def _search(
    items: list[_Item], target: int, depth: int, steps: list[str], max_value: int
) -> tuple[list[str], str] | None:
    if depth == 0:
        return None
    for i, j, op, value in _steps(items):
        if value > max_value:
            continue
        line, expr, new_items = _apply(items, i, j, op, value)
        if value == target:
            return [*steps, line], expr
        found = _search(new_items, target, depth - 1, [*steps, line], max_value)
        if found is not None:
            return found
    return None


@no_type_check  # checks its arguments itself, with messages that name the fix
def search_lines(numbers: tuple[int, ...], target: int) -> list[str] | None:
    """The written search of a 3-number Countdown problem, one line per first step.

    First steps are tried in the solver's fixed order (`_steps`: larger operand first, + - *
    /, positive integer results only), each distinct step once. A line is the first step and,
    after a colon, every legal second step on what is left, in the same order; it ends in
    ``yes`` at the first step that reaches the target (the line stops there) and in ``no``
    when none does. A first step that reaches the target ends the search at once
    (``12*8=96 yes``).

    Args:
        numbers: the three given numbers.
        target: the target.

    Returns:
        The lines, the last one ending in ``yes``; None if no two-step search reaches the
        target.

    Raises:
        WorkbenchError: `numbers` are not three positive integers, or `target` is no integer
            (a string of digits failed with a raw TypeError, and a float target or four
            numbers gave a search of another problem without a word).
    """
    numbers = _checked_numbers(numbers)
    if len(numbers) != 3:
        raise WorkbenchError(
            f"search_lines writes the search of three numbers, got {len(numbers)}: {numbers}.",
            "Pass three numbers, e.g. search_lines((3, 7, 25), 32).",
        )
    target = _validate.integer("target", target, example=32)
    found = _written_search(numbers, target)
    return None if found is None else found[0]


def _written_search(numbers: tuple[int, ...], target: int) -> tuple[list[str], str] | None:
    """`search_lines` and the expression of the chain on its last line."""
    items: list[_Item] = [(v, str(v), False) for v in sorted(numbers, reverse=True)]
    lines: list[str] = []
    tried: set[str] = set()
    for i, j, op, value in _steps(items):
        first, expr, left = _apply(items, i, j, op, value)
        if first in tried:  # equal given numbers: the same step leaves the same numbers
            continue
        tried.add(first)
        if value == target:
            return [*lines, f"{first} yes"], expr
        seconds = []
        for a, b, op2, result in _steps(left):
            second, chain, _ = _apply(left, a, b, op2, result)
            seconds.append(second)
            if result == target:
                return [*lines, f"{first}: {' '.join(seconds)} yes"], chain
        lines.append(f"{first}: {' '.join(seconds)} no")
    return None


# --------------------------------------------------------------------------- task
def _checked_numbers(numbers: Any) -> tuple[int, ...]:
    """Countdown's given numbers as a tuple of positive ints, at most `MAX_NUMBERS` of them
    (a string failed with a raw TypeError; seven numbers searched for minutes)."""
    given = tuple(numbers) if isinstance(numbers, list | tuple) else ()
    if not given or not all(_validate.is_index(n) and n >= 1 for n in given):
        raise WorkbenchError(
            f"Countdown numbers must be positive integers, got {numbers!r}.",
            "Pass a tuple of the given numbers, e.g. (3, 7, 25).",
        )
    if len(given) > MAX_NUMBERS:
        raise WorkbenchError(
            f"Countdown with {len(given)} numbers: the exact search is limited to "
            f"{MAX_NUMBERS} (with seven, an unreachable target takes minutes).",
            f"Pass at most {MAX_NUMBERS} numbers.",
        )
    return tuple(_validate.as_index(n) for n in given)


def _checked_problem(numbers: Any, target: Any) -> tuple[tuple[int, ...], int]:
    """`make_problem`'s arguments as ``(numbers, target)`` of ints, or a `WorkbenchError`
    (None failed with a raw TypeError; a float target was searched for and never found)."""
    numbers, target = _statable(numbers, target)
    if target in numbers:
        raise WorkbenchError(
            f"Countdown {numbers} -> {target}: the target is one of the numbers, so "
            f"'Answer: {target}' solves it without a step.",
            "Pick a target that needs at least one step.",
        )
    return numbers, target


def _statable(numbers: Any, target: Any) -> tuple[tuple[int, ...], int]:
    """``(numbers, target)`` as ints that a prompt states and `parse_prompt` reads back, or a
    `WorkbenchError`."""
    given = _checked_numbers(numbers)
    if len(given) < 2:  # the prompt format reads two or more (one number reaches no target)
        raise WorkbenchError(
            f"Countdown with one number {given}: no step can be taken, and the prompt format "
            "states at least two.",
            "Pass two to six numbers, e.g. (3, 7, 25).",
        )
    big = [n for n in given if n >= 10**MAX_LITERAL_DIGITS]
    if big:  # the verifier reads numbers of at most MAX_LITERAL_DIGITS digits
        raise WorkbenchError(
            f"Countdown number(s) {big} have more than {MAX_LITERAL_DIGITS} digits, which an "
            "answer may not write, so even the reference solution would score 0.",
            f"Pass numbers below {10**MAX_LITERAL_DIGITS}.",
        )
    target = _validate.integer("target", target, minimum=1, example=82)
    if target >= 10**MAX_TARGET_DIGITS:
        raise WorkbenchError(
            f"Countdown target {target} has more than {MAX_TARGET_DIGITS} digits, more than "
            "the prompt format reads back (the reward would read another target).",
            f"Pass a target below {10**MAX_TARGET_DIGITS}.",
        )
    return given, target


class Countdown(Task):
    """The Countdown task: combine the given numbers with + - * / to reach the target.

    Args:
        sizes: how many numbers a problem has; one size is drawn uniformly per problem
            (the paper uses 3 or 4; the tiny reasoner is trained on 3).
        max_number: given numbers are drawn uniformly from ``1..max_number``.
        max_target: targets lie in ``1..max_target``.
        test_fraction: share of the canonical problem space in the test split.

    Example:
        >>> task = Countdown()
        >>> p = task.generate(1, split="test", seed=0)[0]
        >>> task.score(p, p.solution)
        1.0
    """

    name = "countdown"
    prompt_header = "Countdown"

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def __init__(
        self,
        sizes: tuple[int, ...] = (3,),
        max_number: int = 20,
        max_target: int = 100,
        test_fraction: float = 0.1,
    ):
        super().__init__(test_fraction)
        # sizes=3 (no tuple) failed with a raw TypeError; NumPy integers are sizes too
        given = tuple(sizes) if isinstance(sizes, list | tuple) else ()
        if not given or any(not _validate.is_index(s) or not 2 <= s <= MAX_NUMBERS for s in given):
            raise WorkbenchError(
                f"sizes={sizes!r}: every size must be an int in 2..{MAX_NUMBERS}.",
                "Use e.g. sizes=(3, 4).",
            )
        # A float (20.5) failed inside random.randint, a string or None in the comparison.
        max_number = _validate.integer("max_number", max_number, example=20)
        max_target = _validate.integer("max_target", max_target, example=100)
        if not 2 <= max_number <= 10**4 or not 1 <= max_target <= 10**6:
            raise WorkbenchError(
                f"max_number={max_number!r}, max_target={max_target!r} out of range.",
                "Use 2 <= max_number <= 10000 and 1 <= max_target <= 10**6.",
            )
        self.sizes = tuple(_validate.as_index(s) for s in given)
        self.max_number = max_number
        self.max_target = max_target

    def __repr__(self) -> str:
        return (
            f"Countdown(sizes={self.sizes}, max_number={self.max_number}, "
            f"max_target={self.max_target})"
        )

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def format_prompt(self, numbers: tuple[int, ...], target: int) -> str:
        """The prompt text for a problem.

        Args:
            numbers: the given numbers, in display order.
            target: the target.

        Returns:
            e.g. ``"Countdown: 3 7 25 -> 82\\n"``.

        Raises:
            WorkbenchError: a prompt that `parse_prompt` would not read back as this problem
                (the target 82.5 was written and read back as 82; None raised a TypeError).
        """
        numbers, target = _statable(numbers, target)
        return f"{self.prompt_header}: {' '.join(map(str, numbers))} -> {target}\n"

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def make_problem(self, numbers: tuple[int, ...], target: int) -> Problem:
        """A `Problem` (with reference solution and split) for given numbers and target.

        Args:
            numbers: the given numbers, in display order.
            target: the target.

        Returns:
            The problem.

        Raises:
            WorkbenchError: the target cannot be reached with positive integer steps.
        """
        numbers, target = _checked_problem(numbers, target)
        solved = solve_countdown(numbers, target)
        if solved is None:
            raise WorkbenchError(
                f"Countdown {numbers} -> {target} has no solution with integer steps.",
                "Pick a reachable target.",
            )
        return self._problem(tuple(numbers), target, *solved)

    def _problem(
        self, numbers: tuple[int, ...], target: int, lines: list[str], expr: str
    ) -> Problem:
        """The `Problem` whose reference solution is `lines` then ``Answer: expr``."""
        return Problem(
            task=self.name,
            prompt=self.format_prompt(numbers, target),
            answer=expr,
            solution="".join(f"{line}\n" for line in lines) + f"Answer: {expr}\n",
            numbers=numbers,
            target=target,
            split=self.split_of(numbers, target),
        )

    def _sample(self, rng: random.Random, split: Split) -> Problem | None:
        """One draw: a problem, or None when the drawn target is out of range (a miss that
        `generate` counts, so an impossible configuration ends in its error, not a hang)
        or the problem is in the other split (known before its solution is searched)."""
        size = rng.choice(self.sizes)
        numbers = tuple(rng.randint(1, self.max_number) for _ in range(size))
        values = list(numbers)
        while len(values) > 1:  # random full combination -> a reachable target
            i, j = rng.sample(range(len(values)), 2)
            a, b = max(values[i], values[j]), min(values[i], values[j])
            ops = ["+", "*"] + (["-"] if a > b else []) + (["/"] if b > 1 and a % b == 0 else [])
            op = rng.choice(ops)
            v = {"+": a + b, "-": a - b, "*": a * b, "/": a // max(b, 1)}[op]
            values = [x for k, x in enumerate(values) if k not in (i, j)] + [v]
        target = values[0]
        if not 1 <= target <= self.max_target or target in numbers:
            return None
        if self.split_of(numbers, target) != split:
            return None
        return self.make_problem(numbers, target)

    def _canonical(self, numbers: tuple[int, ...], target: int) -> str:
        return f"{','.join(map(str, sorted(numbers)))}->{target}"

    def parse(self, completion: Any) -> str | None:
        """The final expression of a completion, if it is well-formed.

        Args:
            completion: model output (string or TRL conversational list).

        Returns:
            The expression text after the last ``Answer:`` line with whitespace removed, or
            None when there is no such line or it does not parse as an expression.
            Never raises.
        """
        text = completion_text(completion)
        if text is None:
            return None
        answer = last_answer_line(text)
        if answer is None or parse_expression(answer) is None:
            return None
        return "".join(answer.split())

    def _check(self, numbers: tuple[int, ...], target: int, parsed: Any) -> bool:
        return check_countdown(numbers, target, parsed)

    def parse_prompt(self, prompt: Any) -> tuple[tuple[int, ...], int] | None:
        """``(numbers, target)`` read back from a Countdown prompt, or None.

        Args:
            prompt: prompt text or conversational list; the last ``Countdown: ... -> T``
                in it is used.

        Returns:
            The numbers and target, or None if there is no readable problem.
        """
        text = completion_text(prompt)
        if text is None:
            return None
        matches = _PROMPT.findall(text[-4096:])
        if not matches:
            return None
        nums, target = matches[-1]
        return tuple(int(x) for x in nums.split()), int(target)


class CountdownSearch(Countdown):
    """Countdown with a written search: first steps tried in order, each checked, until one works.

    Prompts, parser and verifier are Countdown's, and splits are too (`problem_family` is
    ``"countdown"``, so a problem is in the same split under both tasks). The reference
    scratchpad is `search_lines`: one line per first step tried, listing every second step
    and ending in ``no``, until a line ends in ``yes``; the ``Answer:`` line follows::

        Countdown: 9 7 5 -> 10
        9+7=16: 16+5=21 16-5=11 16*5=80 no
        9-7=2: 5+2=7 5-2=3 5*2=10 yes
        Answer: 5*(9-7)

    The problems are the 3-number Countdown problems (numbers up to 30, targets up to 150,
    so that enough of them need a search) whose search takes `attempts` lines (default 3 to
    5), so every trace is a real search of 60-260 characters, 150 on average (= tokens of the
    tiny models): short chunks of local arithmetic, each closed by a check against the target
    far back in the prompt. The search is a pure function of the problem, so a model that
    follows it greedily never repeats itself.

    Args:
        attempts: inclusive range of search lines a problem's trace must have.
        max_number, max_target: as in `Countdown` (larger defaults).
        **kwargs: `Countdown`'s settings (``sizes`` must be ``(3,)``).
    """

    name = "countdown-search"
    problem_family = "countdown"

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def __init__(
        self,
        attempts: tuple[int, int] = (3, 5),
        max_number: int = 30,
        max_target: int = 150,
        **kwargs: Any,
    ):
        super().__init__(max_number=max_number, max_target=max_target, **kwargs)
        # attempts=3 or (3.5, 5) failed on unpacking or compared as fractions of a line
        pair = tuple(attempts) if isinstance(attempts, list | tuple) else ()
        if len(pair) != 2 or not all(_validate.is_index(a) for a in pair):
            raise WorkbenchError(
                f"attempts={attempts!r} is not a pair of integers (lo, hi).",
                "Use e.g. attempts=(3, 5).",
            )
        lo, hi = (_validate.as_index(a) for a in pair)
        # Three numbers give at most 12 distinct first steps (3 pairs x 4 operations), so
        # a written search has at most 12 lines.
        if not 1 <= lo <= hi <= 12 or self.sizes != (3,):
            raise WorkbenchError(
                f"attempts={attempts!r}, sizes={self.sizes!r}: the search needs three numbers "
                "and a range 1 <= lo <= hi <= 12 of lines (three numbers have at most 12 "
                "first steps).",
                "Use e.g. attempts=(3, 5) and sizes=(3,).",
            )
        self.attempts = (lo, hi)

    def __repr__(self) -> str:
        return super().__repr__().replace("Countdown(", "CountdownSearch(", 1)[:-1] + (
            f", attempts={self.attempts})"
        )

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def make_problem(self, numbers: tuple[int, ...], target: int) -> Problem:
        """Countdown's problem with the written search as its reference solution.

        Args:
            numbers: the three given numbers, in display order.
            target: the target.

        Returns:
            The problem (whatever its number of search lines).

        Raises:
            WorkbenchError: the target cannot be reached in two steps.
        """
        numbers, target = _checked_problem(numbers, target)
        found = _written_search(numbers, target) if len(numbers) == 3 else None
        if found is None:
            raise WorkbenchError(
                f"Countdown {numbers} -> {target} has no two-step solution to search for.",
                "Pick three numbers and a target reachable in two steps.",
            )
        return self._problem(tuple(numbers), target, *found)

    def _sample(self, rng: random.Random, split: Split) -> Problem | None:
        problem = super()._sample(rng, split)
        if problem is None:
            return None
        n_lines = problem.solution.count("\n") - 1
        return problem if self.attempts[0] <= n_lines <= self.attempts[1] else None
