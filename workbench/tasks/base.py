"""Shared base for verifiable reasoning tasks: the `Problem` record and the `Task` interface.

A task knows how to (1) generate seeded problems with reference scratchpad solutions, split
into disjoint train and test sets by a hash of each problem's canonical form, (2) parse a
model's completion into a final answer without ever raising, and (3) score a completion
(1.0 correct, 0.0 otherwise) — also through TRL's reward signature
`reward(prompts, completions, **kwargs) -> list[float]`.

Text format (the same for every consumer: SFT, evaluation, RL, the attention views):

    prompt     "<Task header>: <problem>\\n"
    completion "<scratchpad step>\\n" ... "Answer: <final answer>\\n"

The final answer is the text after the *last* line starting with ``Answer:`` (after optional
spaces or tabs) anywhere in the completion, however long: an ``Answer:`` line written
earlier, inside the reasoning, never counts once another follows it. Nothing else is read.

Caveats:
    - The train/test split is a pure function of the canonical problem (a SHA-256 hash), so it
      does not depend on the seed or the generation order; `generate` samples until it has `n`
      distinct problems of the requested split. A problem space smaller than `n` raises.
    - Completions may be plain strings or TRL conversational lists of
      ``{"role", "content"}`` dicts; prompts likewise. Anything else scores 0.0.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from numbers import Real
from typing import Any, Literal, no_type_check

from workbench.errors import WorkbenchError

from .. import _validate


class UnreadablePromptWarning(UserWarning):
    """`Task.reward` read no problem from some prompts (not this task's format, and no
    ``numbers``/``target`` columns): their completions get 0."""


__all__ = [
    "ANSWER_PREFIX",
    "MAX_ANSWER_CHARS",
    "MAX_COMPLETION_CHARS",
    "MAX_CONSECUTIVE_MISSES",
    "Problem",
    "Split",
    "Task",
    "completion_text",
]

Split = Literal["train", "test"]
"""A problem's split, ``"train"`` or ``"test"``: a pure function of the problem
(`Task.split_of`, a hash of its canonical form), so the two never share a problem
whatever the seed. `Task.generate` takes one, and every `Problem` records its own.
"""

#: Every completion ends with a line ``Answer: <final answer>``.
ANSWER_PREFIX = "Answer:"

#: `Task.generate` gives up after this many draws in a row without a new problem.
MAX_CONSECUTIVE_MISSES = 20000

#: The longest final answer line read (after ``Answer:``); a longer one is no answer.
#: The completion itself is not cut: its last ``Answer:`` line is found in linear time
#: however long it is (a cut at the first 4096 characters read an answer written inside a
#: long reasoning trace as the final one, and never the final one after it).
MAX_ANSWER_CHARS = 4096

#: The former name of `MAX_ANSWER_CHARS`, kept for imports.
MAX_COMPLETION_CHARS = MAX_ANSWER_CHARS


@dataclass(frozen=True)
class Problem:
    """One generated problem with its reference solution.

    Attributes:
        task: the task name (``"countdown"`` or ``"arithmetic"``).
        prompt: the model input, ending in a newline, e.g. ``"Countdown: 3 7 25 -> 82\\n"``.
        answer: the reference final answer as text (for Countdown one valid expression, for
            arithmetic the number), exactly what follows ``Answer: `` in `solution`.
        solution: the SFT target: scratchpad steps, then ``Answer: <answer>`` and a newline.
        numbers: the problem's inputs (Countdown: the given numbers; arithmetic: the operands).
        target: the value to reach (Countdown: the target; arithmetic: the correct result).
        split: ``"train"`` or ``"test"``, a function of the canonical problem only.
    """

    task: str
    prompt: str
    answer: str
    solution: str
    numbers: tuple[int, ...]
    target: int
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """The problem as a plain dict (one row of a `datasets.Dataset` for TRL).

        Returns:
            dict with keys task, prompt, answer, solution, numbers (list), target, split, meta.
        """
        d = asdict(self)
        d["numbers"] = list(self.numbers)
        return d


def completion_text(completion: Any) -> str | None:
    """The text of a completion or prompt in any form TRL passes, or None if unreadable.

    Args:
        completion: a string, or a conversational list of ``{"role", "content"}`` dicts (the
            contents of all messages are joined; for a completion that is the assistant turn),
            or a single such dict. A content may be a string or a list of text parts
            (``{"type": "text", "text": ...}``, joined).

    Returns:
        The text, or None for anything else (None, numbers, bytes, malformed messages).
        Parsers read its last ``Answer:`` line (`last_answer_line`), however long it is.
    """
    if isinstance(completion, str):
        text = completion
    elif isinstance(completion, dict):
        text = _content_text(completion.get("content"))
    elif isinstance(completion, list | tuple):
        parts = []
        for message in completion:
            content = _content_text(message.get("content")) if isinstance(message, dict) else None
            if content is None:
                return None
            parts.append(content)
        text = "\n".join(parts)
    else:
        text = None
    return text


def _content_text(content: Any) -> str | None:
    """A message's content as text: a string, or a list of content parts (the chat
    templates' ``[{"type": "text", "text": ...}]``), whose text parts are joined; None for
    anything else, or parts that are not text (an image: no answer to read). Content given
    as parts read as no text, so every such completion scored 0."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list | tuple) or not content:
        return None
    texts = []
    for part in content:
        if not (isinstance(part, dict) and part.get("type") == "text"):
            return None
        if not isinstance(part.get("text"), str):
            return None
        texts.append(part["text"])
    return "".join(texts)


def last_answer_line(text: str) -> str | None:
    """The text after the last ``Answer:`` line of `text`, stripped, or None if there is none.

    Args:
        text: a completion. The whole text is searched, from its end, in linear time (the
            final answer of a long reasoning trace comes last; reading only a first window
            scored an ``Answer:`` line inside the reasoning instead, or nothing at all).
            ``\\r\\n``, ``\\r`` and ``\\n`` end a line. An ``Answer:`` line counts when
            only spaces and tabs come before it on its line.

    Returns:
        The final answer text (may be empty string when the line is just ``Answer:``), or
        None when there is no ``Answer:`` line or the last one is longer than
        `MAX_ANSWER_CHARS` (no task's answer is that long).
    """
    # One line break for every consumer: "Answer: 525\r99" is the line "Answer: 525".
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    end = len(text)
    while True:  # str.rfind scans from the right, each stretch of text once: linear time
        hit = text.rfind(ANSWER_PREFIX, 0, end)
        if hit < 0:
            return None
        start = hit
        while start > 0 and text[start - 1] in " \t":
            start -= 1
        if start == 0 or text[start - 1] == "\n":  # the prefix starts its line
            stop = text.find("\n", hit)
            line = text[hit + len(ANSWER_PREFIX) : len(text) if stop < 0 else stop]
            return None if len(line) > MAX_ANSWER_CHARS else line.strip()
        end = start  # "Answer:" inside a line: look further back


def _same_problems(task: Task) -> set[str]:
    """The registered tasks whose problems `task` scores: those of its problem family
    (Countdown and its written search pose the same problems)."""
    from . import TASKS

    family = task.problem_family or task.name
    return {name for name, cls in TASKS.items() if (cls.problem_family or name) == family}


class Task(ABC):
    """A verifiable reasoning task: seeded generator, safe parser and exact verifier.

    Subclasses implement `_sample` (one random problem from an RNG), `_canonical` (the key the
    split hashes), `parse` and `_check`. Everything else is shared.

    Attributes:
        name: registry name.
        test_fraction: fraction of the canonical problem space assigned to the test split.
    """

    name: str = "task"
    prompt_header: str = "Task"
    #: The name the split hash and the generator's RNG use: tasks that pose the same problems
    #: with other reference scratchpads share it, so they share splits and problem lists.
    problem_family: str | None = None

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def __init__(self, test_fraction: float = 0.1):
        # a string or None failed in the comparison with a raw TypeError
        real = not isinstance(test_fraction, bool) and isinstance(test_fraction, Real)
        if not real or not 0.0 < test_fraction < 1.0:
            raise WorkbenchError(
                f"test_fraction={test_fraction!r} must lie strictly between 0 and 1.",
                "Pass e.g. test_fraction=0.1.",
            )
        self.test_fraction = test_fraction

    # ----------------------------------------------------------------- subclass hooks
    @abstractmethod
    def _sample(self, rng: random.Random, split: Split) -> Problem | None:
        """One random problem from `rng`, or None for a draw that gave none (`generate`
        counts it as a miss: one draw per call, never a loop that could hang on a
        configuration with no valid problem). A task whose problems are costly to build may
        also return None, before building it, for a draw outside `split` (`generate` checks
        the split of what is returned either way); it must draw from `rng` the same way."""

    @abstractmethod
    def _canonical(self, numbers: tuple[int, ...], target: int) -> str:
        """The canonical key of a problem; equal keys mean the same problem."""

    @abstractmethod
    def parse(self, completion: Any) -> Any:
        """The final answer in `completion`, or None. Never raises on model output."""

    @abstractmethod
    def _check(self, numbers: tuple[int, ...], target: int, parsed: Any) -> bool:
        """Whether a parsed answer (not None) solves the problem."""

    @abstractmethod
    def parse_prompt(self, prompt: Any) -> tuple[tuple[int, ...], int] | None:
        """``(numbers, target)`` read back from a prompt in this task's format, or None."""

    # ----------------------------------------------------------------- split and generation
    @no_type_check  # checks its arguments itself, with messages that name the fix
    def split_of(self, numbers: Sequence[int], target: int) -> Split:
        """The split a problem belongs to: a hash of its canonical form.

        Args:
            numbers: the problem's numbers.
            target: the problem's target.

        Returns:
            ``"test"`` for a `test_fraction` share of the problem space, else ``"train"``.

        Raises:
            WorkbenchError: `numbers` are not integers or `target` is no integer (the float
                3.0 hashed as another problem than 3, so a split was claimed for a problem
                that is not the one asked about; None raised a raw TypeError).
        """
        try:
            if isinstance(numbers, str | bytes):  # iterates as characters or bytes
                raise TypeError("text")
            given = tuple(_validate.as_index(n) for n in numbers)
            target = _validate.as_index(target)
        except TypeError:
            raise WorkbenchError(
                f"split_of needs integer numbers and target, got {numbers!r}, {target!r}"[:200],
                "pass a problem's numbers and target, e.g. split_of(p.numbers, p.target)",
            ) from None
        key = f"{self.problem_family or self.name}|{self._canonical(given, target)}"
        h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
        return "test" if h / 2**64 < self.test_fraction else "train"

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def generate(self, n: int, split: str = "train", seed: int = 0) -> list[Problem]:
        """`n` distinct problems of one split, deterministic for a given seed.

        Args:
            n: how many problems (>= 0).
            split: ``"train"`` or ``"test"``; the two never share a problem.
            seed: RNG seed; the same (task settings, n, split, seed) give the same list.

        Returns:
            A list of `n` `Problem` with `split` set.

        Raises:
            WorkbenchError: bad `n` or `split`, or too few distinct problems exist.
        """
        _validate.integer("n", n, minimum=0, example=100)
        # The seed enters the RNG as text: 1.0, True or None would silently give other lists
        # than the integer seed they stand for (NumPy and torch integers are integers).
        seed = _validate.integer("seed", seed, example=0)
        if split not in ("train", "test"):
            raise WorkbenchError(f"split={split!r} is unknown.", 'Use "train" or "test".')
        rng = random.Random(f"{self.problem_family or self.name}|{split}|{seed}")
        out: list[Problem] = []
        seen: set[str] = set()
        misses = 0  # consecutive draws that gave nothing new
        while len(out) < n:
            p = self._sample(rng, split)
            key = None if p is None else self._canonical(p.numbers, p.target)
            if p is None or key in seen or self.split_of(p.numbers, p.target) != split:
                misses += 1
                if misses > MAX_CONSECUTIVE_MISSES:
                    raise WorkbenchError(
                        f"Only {len(out)} distinct {split} problems found for {self!r} "
                        f"({MAX_CONSECUTIVE_MISSES} draws in a row gave nothing new); "
                        f"asked for {n}.",
                        "Ask for fewer problems or widen the task's number ranges.",
                    )
                continue
            misses = 0
            seen.add(key)
            out.append(_with_split(p, split))
        return out

    # ----------------------------------------------------------------- scoring
    @no_type_check  # checks its arguments itself, with messages that name the fix
    def score(self, problem: Problem, completion: Any) -> float:
        """Score one completion against a problem.

        Args:
            problem: the problem the completion answers.
            completion: model output (string or conversational list); anything else is 0.0.

        Returns:
            1.0 if the final answer is correct, else 0.0.

        Raises:
            WorkbenchError: `problem` is not a `Problem`, or another task's (its numbers
                would be read as this task's: a Countdown target as a sum).
        """
        if not isinstance(problem, Problem):
            raise WorkbenchError(
                f"score() needs a Problem, got {type(problem).__name__}",
                "pass a problem from task.generate(...) or task.make_problem(...)",
            )
        if problem.task != self.name and problem.task not in _same_problems(self):
            # another task's numbers mean something else (Countdown's target is no sum)
            raise WorkbenchError(
                f"the problem is a {problem.task!r} problem, and this is the {self.name!r} task",
                f"score it with get_task({problem.task!r}), the task that made it",
            )
        return self._score(problem.numbers, problem.target, completion)

    def _score(self, numbers: tuple[int, ...], target: int, completion: Any) -> float:
        parsed = self.parse(completion)
        if parsed is None:
            return 0.0
        try:
            return 1.0 if self._check(numbers, target, parsed) else 0.0
        except Exception:  # a verifier must never take a training run down
            return 0.0

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def reward(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        """Correctness reward with TRL's signature.

        The problem is read back from each prompt (this task's prompt format); when a prompt
        cannot be read, the dataset columns ``numbers`` and ``target`` in `kwargs` (one entry
        per completion, as TRL passes them) are used instead; a column entry that is missing
        or not whole numbers, or a row whose ``task`` column names another task's problems,
        reads as no problem (0.0), never an error.

        The final answer is the completion's last ``Answer:`` line, however long the
        completion (`last_answer_line`): one written earlier, in the reasoning, never counts.

        Args:
            prompts: one prompt per completion (string or conversational list).
            completions: model outputs (string or conversational list).
            **kwargs: extra dataset columns from TRL; ``numbers``/``target`` are used.

        Returns:
            One float per completion: 1.0 correct, 0.0 otherwise (also for unreadable input,
            with an `UnreadablePromptWarning`: a dataset of another task's prompts gave
            zero rewards, so no learning signal, without a word).
        """
        _check_columns(prompts, completions)
        if len(prompts) != len(completions):
            raise WorkbenchError(
                f"{len(prompts)} prompts but {len(completions)} completions.",
                "Pass one prompt per completion (TRL repeats each prompt per generation).",
            )
        col_numbers = kwargs.get("numbers")
        col_target = kwargs.get("target")
        col_task = kwargs.get("task")
        same = _same_problems(self) if col_task is not None else None
        rewards, unreadable = [], 0
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            problem = self.parse_prompt(prompt)
            if problem is None and col_numbers is not None and col_target is not None:
                try:  # whole numbers only: int(82.7) would read another target
                    numbers = tuple(_validate.as_index(x) for x in col_numbers[i])
                    problem = (numbers, _validate.as_index(col_target[i]))
                    # another task's row (`Problem.to_dict` writes the task column): its
                    # numbers mean something else, as `score` refuses (an addition's
                    # 'Answer: 457+68' scored 1 as Countdown, without a word)
                    if same is not None and col_task[i] not in same:
                        problem = None
                except (TypeError, ValueError, LookupError):  # a column of another shape
                    problem = None
            if problem is None:
                rewards.append(0.0)
                unreadable += 1
                continue
            rewards.append(self._score(problem[0], problem[1], completion))
        if unreadable:
            warnings.warn(
                UnreadablePromptWarning(
                    f"{unreadable} of {len(prompts)} prompts are not {self.name} problems, so "
                    "their completions were rewarded 0. Fix: build the prompts with this "
                    f"task ([p.prompt for p in get_task({self.name!r}).generate(n)]), or "
                    "give the dataset numbers and target columns"
                ),
                stacklevel=2,
            )
        return rewards

    @no_type_check  # checks its arguments itself, with messages that name the fix
    def format_reward(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        """Format-only reward with TRL's signature: 1.0 when the answer line parses.

        Args:
            prompts: one prompt per completion (unused except for the length check).
            completions: model outputs (string or conversational list).
            **kwargs: ignored.

        Returns:
            One float per completion: 1.0 if `parse` finds a well-formed final answer
            (right or wrong), 0.0 otherwise.
        """
        _check_columns(prompts, completions)
        if len(prompts) != len(completions):
            raise WorkbenchError(
                f"{len(prompts)} prompts but {len(completions)} completions.",
                "Pass one prompt per completion.",
            )
        return [0.0 if self.parse(c) is None else 1.0 for c in completions]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _check_columns(prompts: Any, completions: Any) -> None:
    """Refuse prompts or completions that are not lists: one string was read as a list of
    characters (each scored 0.0), None or a generator failed with a raw TypeError."""
    for name, value in (("prompts", prompts), ("completions", completions)):
        if isinstance(value, str | bytes | dict) or not hasattr(value, "__len__"):
            raise WorkbenchError(
                f"{name} must be a list (one entry per completion), got {type(value).__name__}",
                "pass lists, e.g. task.reward([prompt], [completion]) for one completion",
            )


def _with_split(p: Problem, split: str) -> Problem:
    return Problem(
        task=p.task,
        prompt=p.prompt,
        answer=p.answer,
        solution=p.solution,
        numbers=p.numbers,
        target=p.target,
        split=split,
        meta=p.meta,
    )
