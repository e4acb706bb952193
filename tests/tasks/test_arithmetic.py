"""Multi-digit addition: scratchpad, verifier, generator and TRL reward."""

from __future__ import annotations

import time

import pytest

from workbench.errors import WorkbenchError
from workbench.tasks import Arithmetic, UnreadablePromptWarning, addition_scratchpad, get_task

PROMPT = "Add: 457+68\n"


@pytest.fixture(scope="module")
def task() -> Arithmetic:
    return get_task("arithmetic")


def test_scratchpad_writes_every_carry() -> None:
    assert addition_scratchpad(457, 68) == ["7+8+0=15", "5+6+1=12", "4+0+1=5"]
    assert addition_scratchpad(999, 1) == ["9+1+0=10", "9+0+1=10", "9+0+1=10"]
    with pytest.raises(WorkbenchError, match="non-negative"):
        addition_scratchpad(-1, 3)


def test_problem_format(task: Arithmetic) -> None:
    p = task.make_problem((457, 68))
    assert p.prompt == PROMPT
    assert p.solution == "7+8+0=15\n5+6+1=12\n4+0+1=5\nAnswer: 525\n"
    assert p.answer == "525" and p.target == 525
    assert task.score(p, p.solution) == 1.0


@pytest.mark.parametrize(
    ("name", "completion", "expected"),
    [
        ("correct", "Answer: 525", 1.0),
        ("correct_with_scratchpad", "7+8+0=15\n5+6+1=12\n4+0+1=5\nAnswer: 525\n", 1.0),
        ("leading_zero", "Answer: 0525", 1.0),
        ("last_answer_counts", "Answer: 515\nAnswer: 525", 1.0),
        ("wrong", "Answer: 515", 0.0),
        ("off_by_carry", "Answer: 425", 0.0),
        ("expression_not_number", "Answer: 457+68", 0.0),
        ("negative", "Answer: -525", 0.0),
        ("separator", "Answer: 5,25", 0.0),
        ("garbage", "five hundred twenty-five", 0.0),
        ("empty", "", 0.0),
        ("huge_number", "Answer: " + "9" * 10_000, 0.0),
        ("none", None, 0.0),
        ("int", 525, 0.0),
    ],
)
def test_verifier_cases(task: Arithmetic, name: str, completion: object, expected: float) -> None:
    start = time.perf_counter()
    assert task.reward([PROMPT], [completion]) == [expected], name
    assert time.perf_counter() - start < 1.0


def test_reward_plain_and_conversational(task: Arithmetic) -> None:
    conv = [{"role": "user", "content": PROMPT}]
    rewards = task.reward(
        [PROMPT, conv, conv],
        [
            "Answer: 525",
            [{"role": "assistant", "content": "Answer: 525"}],
            [{"role": "assistant", "content": "Answer: 524"}],
        ],
    )
    assert rewards == [1.0, 1.0, 0.0]
    assert task.format_reward([PROMPT] * 3, ["Answer: 1", "Answer: x", None]) == [1.0, 0.0, 0.0]


def test_generate_deterministic_and_disjoint(task: Arithmetic) -> None:
    assert task.generate(30, "train", seed=1) == task.generate(30, "train", seed=1)
    assert task.generate(30, "train", seed=1) != task.generate(30, "train", seed=2)
    train = task.generate(3000, "train", seed=0)
    test = task.generate(300, "test", seed=0)
    key = lambda p: tuple(sorted(p.numbers))  # noqa: E731
    assert {key(p) for p in train}.isdisjoint({key(p) for p in test})
    for p in test:
        assert task.split_of(p.numbers, p.target) == "test"
        assert task.score(p, p.solution) == 1.0
        assert all(10 <= x <= 9999 for x in p.numbers)


def test_commuted_problem_is_in_the_same_split(task: Arithmetic) -> None:
    for p in task.generate(50, "test", seed=0):
        a, b = p.numbers
        assert task.split_of((b, a), p.target) == "test"


def test_bad_config() -> None:
    with pytest.raises(WorkbenchError, match="digits"):
        Arithmetic(min_digits=3, max_digits=2)
    with pytest.raises(WorkbenchError, match="test_fraction"):
        Arithmetic(test_fraction=1.5)


@pytest.mark.parametrize(
    ("answer", "reward"),
    [("525999", 0.0), ("525", 1.0)],  # cut inside the line / the line ends at the cap
)
def test_an_answer_line_past_4096_characters_is_read_whole(task: Arithmetic, answer, reward):
    """The whole completion is read. When only the first MAX_COMPLETION_CHARS characters
    were, a last Answer line that the cap cut through must not score by its first part:
    'Answer: 525' of 'Answer: 525999' would be right."""
    from workbench.tasks.base import MAX_COMPLETION_CHARS

    line = "\nAnswer: 525"
    completion = "x" * (MAX_COMPLETION_CHARS - len(line)) + f"\nAnswer: {answer}\n"
    assert len(completion) > MAX_COMPLETION_CHARS
    assert task.reward([PROMPT], [completion]) == [reward]
    assert task.score(task.make_problem((457, 68)), completion) == reward


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: Arithmetic(min_digits=2.5), "min_digits must be an integer"),  # randrange
        (lambda: Arithmetic(max_digits="4"), "max_digits must be an integer"),
        (lambda: Arithmetic(max_digits=None), "max_digits must be an integer"),
        (lambda: Arithmetic().make_problem((1.5, 2)), "two integer operands"),  # int('.')
        (lambda: Arithmetic().make_problem(("1", 2)), "two integer operands"),
    ],
)
def test_bad_settings_and_operands_are_named(call, words) -> None:
    with pytest.raises(WorkbenchError, match=words):
        call()


def test_an_operand_is_never_read_as_the_first_digits_of_a_longer_one(task: Arithmetic):
    """A 31-digit operand was read as its first 30 digits: a wrong sum scored 1."""
    b = 10**30 + 7
    prompt = f"Add: 5+{b}\n"
    assert task.parse_prompt(prompt) is None
    with pytest.warns(UnreadablePromptWarning):
        assert task.reward([prompt], [f"Answer: {5 + b // 10}"]) == [0.0]


@pytest.mark.parametrize(
    ("numbers", "target", "match"),
    [
        ((10**30, 1), None, "at most 30 digits"),  # its reward read another problem
        ((-5, 3), None, "non-negative"),
        ((457, 68), 500, "is not 457\\+68"),  # the target was ignored without a word
    ],
)
def test_make_problem_refuses_what_the_prompt_cannot_state(
    task: Arithmetic, numbers, target, match
):
    with pytest.raises(WorkbenchError, match=match):
        task.make_problem(numbers, target)
    assert task.make_problem((457, 68), 525).target == 525


def test_the_answer_is_plain_ascii_digits_as_documented(task: Arithmetic):
    """Fullwidth and Arabic-Indic digits were read as the numbers they stand for."""
    assert task.reward([PROMPT], ["Answer: \uff15\uff12\uff15"]) == [0.0]  # fullwidth 525
    assert task.reward([PROMPT], ["Answer: \u0665\u0662\u0665"]) == [0.0]  # Arabic-Indic 525
    assert task.reward([PROMPT], ["Answer: 525"]) == [1.0]


def test_an_answer_in_the_reasoning_is_not_the_final_answer(task: Arithmetic) -> None:
    """Past 4096 characters the final Answer line was not read, and an earlier one was."""
    think = "Let me add the columns again. " * 200
    assert task.reward([PROMPT], [f"Answer: 525\n{think}\nAnswer: 524\n"]) == [0.0]
    assert task.reward([PROMPT], [f"Answer: 524\n{think}\nAnswer: 525\n"]) == [1.0]
    assert task.reward([PROMPT], [f"{think}\nAnswer: 525"]) == [1.0]


@pytest.mark.parametrize(
    "call",
    [
        lambda: addition_scratchpad("457", 68),  # was a raw TypeError
        lambda: addition_scratchpad(457.5, 68),  # was a raw ValueError (int('.'))
        lambda: addition_scratchpad(None, 68),
        lambda: addition_scratchpad(True, 68),  # was int('e'): ValueError
        lambda: Arithmetic().format_prompt((457,)),  # was a raw IndexError
        lambda: Arithmetic().format_prompt((1.5, 2)),  # wrote "Add: 1.5+2", read back as None
        lambda: Arithmetic().format_prompt(None),
        lambda: Arithmetic().split_of(None, 3),  # was a raw TypeError
        lambda: Arithmetic().split_of((457.0, 68), 525),  # hashed as another problem
    ],
)
def test_helpers_name_bad_operands(call) -> None:
    """The public helpers raised raw TypeError/ValueError/IndexError on bad operands, or
    wrote a prompt that parse_prompt does not read back."""
    import numpy as np

    with pytest.raises(WorkbenchError, match="integer"):
        call()
    assert addition_scratchpad(np.int64(457), 68) == ["7+8+0=15", "5+6+1=12", "4+0+1=5"]
    task = Arithmetic()
    assert task.format_prompt([np.int64(457), 68]) == PROMPT
    assert task.split_of((68, 457), 525) == task.split_of(np.array([457, 68]), np.int64(525))
