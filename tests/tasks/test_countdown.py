"""Countdown: the verifier on hand-written cases, the generator, and the TRL reward."""

from __future__ import annotations

import random
import re
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.errors import WorkbenchError
from workbench.tasks import (
    Countdown,
    CountdownSearch,
    Problem,
    UnreadablePromptWarning,
    evaluate_expression,
    get_task,
    parse_expression,
)
from workbench.tasks.countdown import check_countdown, solve_countdown

PROMPT = "Countdown: 3 7 25 50 -> 72\n"
NUMBERS = (3, 7, 25, 50)


@pytest.fixture(scope="module")
def task() -> Countdown:
    return get_task("countdown")


def score(task: Countdown, completion: object, prompt: str = PROMPT) -> float:
    return task.reward([prompt], [completion])[0]


# --------------------------------------------------------------------------- verifier
@pytest.mark.parametrize(
    ("name", "completion", "expected"),
    [
        ("correct", "Answer: (50+25)-3", 1.0),
        ("correct_with_scratchpad", "50+25=75\n75-3=72\nAnswer: (50+25)-3\n", 1.0),
        ("spaces_ignored", "Answer:  ( 50 + 25 ) - 3 ", 1.0),
        ("not_all_numbers_needed", "Answer: 50+25-3", 1.0),
        ("last_answer_counts", "Answer: 50+25\nAnswer: 50+25-3\n", 1.0),
        ("last_answer_wrong", "Answer: 50+25-3\nAnswer: 50+25\n", 0.0),
        ("wrong_value", "Answer: 50+25-7", 0.0),
        ("reused_number", "Answer: 25+25+25-3", 0.0),
        ("number_not_given", "Answer: 8*9", 0.0),
        ("garbage", "I think the answer is seventy-two", 0.0),
        ("empty", "", 0.0),
        ("empty_answer", "Answer:", 0.0),
        ("unbalanced", "Answer: (50+25-3", 0.0),
        ("trailing_operator", "Answer: 50+25-3-", 0.0),
        ("unary_minus", "Answer: -3+75", 0.0),
        ("power_operator", "Answer: 9**99999", 0.0),
        ("decimal", "Answer: 72.0", 0.0),
        ("python_code", "Answer: __import__('os').system('true')", 0.0),
        ("division_by_zero", "Answer: 50/(7-7)", 0.0),
        ("division_by_zero_expr", "Answer: 25/(3-3)+72", 0.0),
    ],
)
def test_verifier_cases(task: Countdown, name: str, completion: str, expected: float) -> None:
    assert score(task, completion) == expected, name


def test_division_by_zero_does_not_raise() -> None:
    assert check_countdown((4, 2, 2), 2, "4/(2-2)") is False
    assert evaluate_expression(parse_expression("4/(2-2)")) is None


def test_non_integer_intermediate_results_are_allowed() -> None:
    # (7/2)*4 = 14: the documented rule allows exact fractional intermediates.
    assert check_countdown((7, 2, 4), 14, "(7/2)*4") is True
    assert check_countdown((7, 2, 4), 14, "7/2*4") is True
    assert check_countdown((7, 2, 4), 3, "7/2") is False  # 7/2 is not 3 (no truncation)


def test_duplicate_given_numbers_may_each_be_used_once() -> None:
    assert check_countdown((5, 5, 2), 25, "5*5") is True
    assert check_countdown((5, 2, 3), 25, "5*5") is False


@pytest.mark.parametrize(
    "completion",
    [
        "Answer: " + "9" * 10_000,
        "Answer: 9**99999",
        "Answer: " + "(" * 5000 + "3" + ")" * 5000,
        "Answer: " + "+".join(["3"] * 20_000),
        "x" * 1_000_000 + "\nAnswer: 50+25-3",
        "Answer: 50+25-3\n" + "y" * 1_000_000,
    ],
    ids=["10k_digits", "power", "deep_parens", "long_sum", "huge_prefix", "huge_suffix"],
)
def test_enormous_inputs_are_fast_and_never_raise(task: Countdown, completion: str) -> None:
    start = time.perf_counter()
    result = score(task, completion)
    assert time.perf_counter() - start < 2.0
    assert result in (0.0, 1.0)
    # The whole completion is read: the huge prefix's last line and the huge suffix's only
    # Answer line are right, the other answers are not.
    assert result == (1.0 if "Answer: 50+25-3" in completion else 0.0)


def test_long_literal_is_capped() -> None:
    assert parse_expression("1" * 6) == 111111
    assert parse_expression("1" * 7) is None


@pytest.mark.parametrize(
    "completion",
    [
        None,
        42,
        3.5,
        b"Answer: (50+25)-3",
        ["Answer: (50+25)-3"],
        {"no": "content"},
        [{"role": "x"}],
        [{"role": "assistant", "content": [{"type": "image"}]}],
        [{"role": "assistant", "content": []}],
    ],
    ids=[
        "none",
        "int",
        "float",
        "bytes",
        "list_of_str",
        "bad_dict",
        "msg_without_content",
        "image_part",
        "no_parts",
    ],
)
def test_non_string_input_scores_zero(task: Countdown, completion: object) -> None:
    assert task.parse(completion) is None
    assert score(task, completion) == 0.0


def test_parse_expression_tree_and_exact_value() -> None:
    tree = parse_expression("(50+25)-3*2")
    assert tree == ("-", ("+", 50, 25), ("*", 3, 2))
    assert evaluate_expression(tree) == Fraction(69)
    assert evaluate_expression(parse_expression("1/3+1/3+1/3")) == 1
    assert parse_expression(None) is None
    assert parse_expression("   ") is None


# --------------------------------------------------------------------------- TRL reward
def test_reward_plain_and_conversational(task: Countdown) -> None:
    good, bad = "Answer: (50+25)-3\n", "Answer: 50+25\n"
    conv_prompt = [{"role": "user", "content": PROMPT}]
    rewards = task.reward(
        [PROMPT, PROMPT, conv_prompt, conv_prompt],
        [
            good,
            bad,
            [{"role": "assistant", "content": good}],
            [{"role": "assistant", "content": bad}],
        ],
    )
    assert rewards == [1.0, 0.0, 1.0, 0.0]
    assert all(isinstance(r, float) for r in rewards)


def test_content_given_as_text_parts_is_read(task: Countdown) -> None:
    """A message whose content is a list of parts (``{"type": "text", "text": ...}``, the
    chat templates' multimodal form) read as no text: every such completion scored 0, and
    so did its prompt's problem."""
    parts = lambda text: [{"type": "text", "text": t} for t in (text[:9], text[9:])]  # noqa: E731
    good, bad = "Answer: (50+25)-3\n", "Answer: 50+25\n"
    prompt = [{"role": "user", "content": parts(PROMPT)}]
    rewards = task.reward(
        [prompt, prompt],
        [
            [{"role": "assistant", "content": parts(good)}],
            [{"role": "assistant", "content": parts(bad)}],
        ],
    )
    assert rewards == [1.0, 0.0]


def test_reward_falls_back_to_dataset_columns(task: Countdown) -> None:
    rewards = task.reward(
        ["no problem here", "no problem here"],
        ["Answer: (50+25)-3", "Answer: 50+25"],
        numbers=[list(NUMBERS), list(NUMBERS)],
        target=[72, 72],
    )
    assert rewards == [1.0, 0.0]
    # without the columns the prompt is unreadable: 0, and a warning that says so (another
    # task's dataset gave no learning signal without a word)
    with pytest.warns(UnreadablePromptWarning, match="1 of 2 prompts are not countdown") as w:
        assert task.reward(["no problem here", PROMPT], ["Answer: (50+25)-3"] * 2)[0] == 0.0
    assert "generate(n)" in str(w[0].message)


def test_reward_columns_of_another_task_are_no_problem_of_this_one(task: Countdown) -> None:
    """The column fallback read another task's rows as this task's problems, without a word:
    on an addition dataset (``Problem.to_dict`` rows) the Countdown reward scored the
    unsolved 'Answer: 457+68' 1.0, and the arithmetic reward scored a Countdown row's
    sum of its numbers 1.0 (`score` already refused another task's problem)."""
    rows = [get_task("arithmetic").make_problem((457, 68)).to_dict()]
    columns = {k: [r[k] for r in rows] for k in ("task", "numbers", "target")}
    with pytest.warns(UnreadablePromptWarning, match="not countdown problems"):
        assert task.reward([rows[0]["prompt"]], ["Answer: 457+68"], **columns) == [0.0]
    rows = [task.make_problem((3, 7, 25), 82).to_dict()]
    columns = {k: [r[k] for r in rows] for k in ("task", "numbers", "target")}
    with pytest.warns(UnreadablePromptWarning, match="not arithmetic problems"):
        got = get_task("arithmetic").reward([rows[0]["prompt"]], ["Answer: 35"], **columns)
    assert got == [0.0]
    # rows of the same problems under another scratchpad still count, prompt or not
    got = task.reward(
        ["?"], ["Answer: (25*3)+7"], numbers=[[3, 7, 25]], target=[82], task=["countdown-search"]
    )
    assert got == [1.0]


def test_reward_length_mismatch_raises(task: Countdown) -> None:
    with pytest.raises(WorkbenchError, match="2 prompts but 1 completions"):
        task.reward([PROMPT, PROMPT], ["Answer: 1"])


def test_format_reward(task: Countdown) -> None:
    completions = ["Answer: 50+25", "Answer: (50+", "no answer line", None]
    assert task.format_reward([PROMPT] * 4, completions) == [1.0, 0.0, 0.0, 0.0]


def test_parse_prompt_roundtrip(task: Countdown) -> None:
    assert task.parse_prompt(PROMPT) == (NUMBERS, 72)
    assert task.parse_prompt([{"role": "user", "content": PROMPT}]) == (NUMBERS, 72)
    assert task.parse_prompt("Countdown: -> 5") is None
    assert task.parse_prompt(17) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_text_never_raises(text: str) -> None:
    task = Countdown()
    assert task.reward([PROMPT], [text])[0] in (0.0, 1.0)
    assert task.reward([PROMPT], ["Answer: " + text])[0] in (0.0, 1.0)


# --------------------------------------------------------------------------- generator
def test_generate_is_deterministic_per_seed(task: Countdown) -> None:
    a = task.generate(50, split="train", seed=3)
    b = task.generate(50, split="train", seed=3)
    c = task.generate(50, split="train", seed=4)
    assert a == b
    assert a != c


def test_train_and_test_never_overlap(task: Countdown) -> None:
    train = task.generate(3000, split="train", seed=0)
    test = task.generate(300, split="test", seed=0)
    key = lambda p: (tuple(sorted(p.numbers)), p.target)  # noqa: E731
    assert {key(p) for p in train}.isdisjoint({key(p) for p in test})
    assert {p.split for p in train} == {"train"} and {p.split for p in test} == {"test"}
    assert len({key(p) for p in test}) == 300  # distinct within a split


def test_reference_solutions_are_correct_and_short(task: Countdown) -> None:
    for p in task.generate(300, split="test", seed=1):
        assert isinstance(p, Problem)
        assert p.prompt == task.format_prompt(p.numbers, p.target)
        assert p.solution.endswith(f"Answer: {p.answer}\n")
        assert task.score(p, p.solution) == 1.0
        assert len(p.numbers) == 3 and all(1 <= x <= 20 for x in p.numbers)
        assert 1 <= p.target <= 100 and p.target not in p.numbers
        assert len(p.prompt) + len(p.solution) < 80
        # every scratchpad line is a true equation
        for line in p.solution.splitlines()[:-1]:
            lhs, rhs = line.split("=")
            assert evaluate_expression(parse_expression(lhs)) == int(rhs)


def test_solver_finds_shortest() -> None:
    assert solve_countdown((3, 7, 25), 28) == (["25+3=28"], "25+3")
    steps, expr = solve_countdown((11, 3, 12), 96)
    assert len(steps) == 2 and check_countdown((11, 3, 12), 96, expr)
    assert solve_countdown((1, 1, 1), 97) is None


def test_the_solver_is_exact_whatever_the_intermediate_values() -> None:
    """'No solution' is a claim about every route: 1009*997 - 9000 passes through 1005973,
    which a fixed pruning bound of 10**6 cut away."""
    steps, expr = solve_countdown((1009, 997, 9000), 996973)
    assert check_countdown((1009, 997, 9000), 996973, expr) and len(steps) == 2
    problem = Countdown(max_number=10000).make_problem((1009, 997, 9000), 996973)
    assert Countdown(max_number=10000).score(problem, problem.solution) == 1.0


def test_four_number_variant() -> None:
    task = Countdown(sizes=(3, 4), max_number=50)
    problems = task.generate(100, split="train", seed=0)
    assert {len(p.numbers) for p in problems} == {3, 4}
    assert all(task.score(p, p.solution) == 1.0 for p in problems)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": -1}, "n must be at least 0"),
        ({"n": 1, "split": "validation"}, "split"),
    ],
)
def test_generate_bad_arguments(task: Countdown, kwargs: dict, match: str) -> None:
    with pytest.raises(WorkbenchError, match=match):
        task.generate(**kwargs)


def test_generate_too_many_raises() -> None:
    with pytest.raises(WorkbenchError, match="distinct"):
        Countdown(max_number=2, max_target=4).generate(50, split="train", seed=0)


def test_each_draw_is_one_attempt_that_generate_counts() -> None:
    """`_sample` makes one draw and returns None when it is not a valid problem, so a
    configuration whose draws are (almost) never valid ends in generate's error instead of
    retrying inside one draw forever (as CountdownSearch(attempts=(13, 20)) did)."""
    task = Countdown(sizes=(2,), max_number=2, max_target=1)  # only (2, 2) -> 1 is valid
    split = task.split_of((2, 2), 1)
    draws = [task._sample(random.Random(i), split) for i in range(40)]
    assert None in draws and {d.target for d in draws if d is not None} == {1}
    other = "test" if split == "train" else "train"
    assert all(task._sample(random.Random(i), other) is None for i in range(40))
    with pytest.raises(WorkbenchError, match="Only 1 distinct"):
        task.generate(2, split=split, seed=0)


def test_the_search_task_skips_the_other_splits_draws_before_searching_them() -> None:
    """A draw from the other split is a miss before its written search is built (the
    search dominated generate's time), and the lists are those of checking afterwards."""
    task = CountdownSearch()
    rng = random.Random(0)
    for _ in range(200):
        state = rng.getstate()
        train = task._sample(rng, "train")
        after = rng.getstate()
        rng.setstate(state)
        test = task._sample(rng, "test")
        assert rng.getstate() == after, "the split asked for does not change the draws"
        assert train is None or test is None, "one split per draw"
        for p, split in ((train, "train"), (test, "test")):
            assert p is None or task.split_of(p.numbers, p.target) == split


def test_registry() -> None:
    assert isinstance(get_task("Countdown"), Countdown)
    with pytest.raises(WorkbenchError, match="Unknown task"):
        get_task("sudoku")
    with pytest.raises(WorkbenchError, match="sizes"):
        Countdown(sizes=(1,))


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: get_task(["countdown"]), "Unknown task"),  # was unhashable-list TypeError
        (lambda: get_task("countdown", bogus=1), "has no setting(s) ['bogus']"),
        (lambda: get_task("countdown-search", bogus=1), "has no setting(s) ['bogus']"),
        (lambda: Countdown(sizes=3), "sizes=3"),  # was "'int' object is not iterable"
        (lambda: Countdown(max_number=20.5), "max_number must be an integer"),  # randrange
        (lambda: Countdown(max_number="20"), "max_number must be an integer"),
        (lambda: Countdown(max_target=None), "max_target must be an integer"),
        (lambda: Countdown(max_target=50.5), "max_target must be an integer"),  # accepted
        (lambda: Countdown(test_fraction="0.1"), "test_fraction='0.1'"),
        (lambda: Countdown(test_fraction=None), "test_fraction=None"),
        (lambda: Countdown().generate(2, seed=1.0), "seed must be an integer"),  # other list
        (lambda: Countdown().generate(2, seed=None), "seed must be an integer"),
        (lambda: Countdown().generate(2, seed=True), "seed must be an integer"),
        (lambda: Countdown().score(None, "Answer: 1"), "needs a Problem"),
        (lambda: Countdown().score({"numbers": (1, 2)}, "Answer: 1"), "needs a Problem"),
        (lambda: Countdown().reward(None, None), "prompts must be a list"),
        (lambda: Countdown().reward("abc", "xyz"), "prompts must be a list"),  # 3 zeros
        (lambda: Countdown().reward([PROMPT], "Answer: 1"), "completions must be a list"),
        (lambda: Countdown().reward((p for p in [PROMPT]), ["x"]), "prompts must be a list"),
        (lambda: Countdown().format_reward("ab", "cd"), "prompts must be a list"),
        (lambda: Countdown().make_problem(None, 5), "positive integers"),
        (lambda: Countdown().make_problem((3, 7, 25), 82.0), "target must be an integer"),
        # seven numbers searched for minutes before answering "no solution"
        (lambda: Countdown().make_problem((2, 3, 5, 7, 11, 13, 17), 999983), "limited to 6"),
        (lambda: Countdown(sizes=(7,)), "in 2..6"),
    ],
)
def test_bad_arguments_are_named(call, words) -> None:
    with pytest.raises(WorkbenchError, match=re.escape(words)):
        call()


def test_integer_scalars_are_settings_and_seeds() -> None:
    import numpy as np
    import torch

    task = Countdown(sizes=(np.int64(3),), max_number=np.int64(20))
    assert task.sizes == (3,) and type(task.max_number) is int
    want = Countdown().generate(3, seed=2)
    assert task.generate(3, seed=np.int64(2)) == want
    assert task.generate(3, seed=torch.tensor(2)) == want
    p = Countdown().make_problem((3, 7, 25), 82)
    assert Countdown().reward((p.prompt,), [p.solution]) == [1.0]  # tuples are lists too


def test_a_prompt_is_never_read_as_the_first_digits_of_a_longer_number(task: Countdown) -> None:
    """'-> 10000000' was read as the target 1000000: a wrong answer to it scored 1."""
    prompt = "Countdown: 1000 1000 10 -> 10000000\n"
    assert task.parse_prompt(prompt) is None
    with pytest.warns(UnreadablePromptWarning):
        assert task.reward([prompt], ["Answer: 1000*1000"]) == [0.0]
    cols = {"numbers": [[1000, 1000, 10]], "target": [10000000]}
    assert task.reward([prompt], ["Answer: 1000*1000*10"], **cols) == [1.0]


@pytest.mark.parametrize(
    ("numbers", "target", "match"),
    [
        ((1000000, 2), 1000002, "more than 6 digits"),  # its own reference scored 0
        ((3, 7, 25), 10**7, "more than 7 digits"),  # the reward read another target
        ((3, 7, 25), 7, "the target is one of the numbers"),  # was "no solution"
        ((3, 7, 25), -4, "at least 1"),  # a negative target never reads back
    ],
)
def test_make_problem_refuses_problems_its_own_format_cannot_state(
    task: Countdown, numbers, target, match
) -> None:
    with pytest.raises(WorkbenchError, match=match):
        task.make_problem(numbers, target)


def test_a_problem_is_scored_only_by_its_own_task(task: Countdown) -> None:
    """An arithmetic problem's numbers read as Countdown's: 'Answer: 457+68' scored 1."""
    sum_problem = get_task("arithmetic").make_problem((457, 68))
    with pytest.raises(WorkbenchError, match="'arithmetic' problem"):
        task.score(sum_problem, "Answer: 457+68")
    search = get_task("countdown-search")  # the same problems with another scratchpad
    problem = task.make_problem((3, 7, 25), 82)
    assert search.score(problem, "Answer: (25*3)+7") == 1.0


def test_reward_columns_must_be_whole_numbers(task: Countdown) -> None:
    """int(82.7) read the target 82, and a float number 3.9 the number 3."""
    for numbers, target in (([3, 7, 25], 82.7), ([3.9, 7, 25], 82)):
        with pytest.warns(UnreadablePromptWarning):
            got = task.reward(["?"], ["Answer: (25*3)+7"], numbers=[numbers], target=[target])
        assert got == [0.0]


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_a_carriage_return_ends_a_line_for_the_answer_as_for_the_cut(
    task: Countdown, newline
) -> None:
    completion = f"25*3=75{newline}75+7=82{newline}Answer: (25*3)+7{newline}"
    assert task.reward(["Countdown: 3 7 25 -> 82\n"], [completion]) == [1.0]


def test_the_expression_helpers_name_a_mistake() -> None:
    with pytest.raises(WorkbenchError, match="parse it first"):
        evaluate_expression("(25*3)+7")
    assert evaluate_expression(parse_expression("2+")) is None  # text that does not parse
    assert evaluate_expression(parse_expression("(25*3)+7")) == 82
    with pytest.raises(WorkbenchError, match="positive integers"):
        solve_countdown("3 7 25", 82)
    with pytest.raises(WorkbenchError, match="at most 6"):
        solve_countdown((1, 2, 3, 4, 5, 6, 7), 5000)


THINK = "I try 50+25 and then something else. " * 150  # about 5,500 characters


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        # the right answer inside the reasoning, a wrong final one: scored 1.0 (the first
        # 4096 characters were read, and only they)
        (f"<think>\nAnswer: 50+25-3\n{THINK}</think>\nAnswer: 50+25\n", 0.0),
        # a wrong answer inside the reasoning, a right final one: scored 0.0
        (f"<think>\nAnswer: 50+25\n{THINK}</think>\nAnswer: 50+25-3\n", 1.0),
        # a long reasoning trace and its right final answer: scored 0.0 (nothing was read)
        (f"<think>\n{THINK}</think>\nAnswer: 50+25-3\n", 1.0),
        (f"{THINK}\n  \tAnswer:  50+25-3  ", 1.0),  # indented, no final newline
        (f"Answer: 50+25-3\n{THINK}\nThe Answer: 50+25\n", 1.0),  # not a line start
        (f"Answer: 50+25-3\n{THINK}\nAnswer:\n", 0.0),  # the last Answer line is empty
    ],
    ids=[
        "right_in_reasoning",
        "wrong_in_reasoning",
        "long_reasoning",
        "indented",
        "midline_prefix",
        "empty_last",
    ],
)
def test_the_last_answer_line_counts_however_long_the_completion(
    task: Countdown, completion: str, expected: float
) -> None:
    """A reasoning model's completion runs past 4096 characters; its final answer comes
    last. Reading only the first 4096 characters scored an answer inside the reasoning."""
    assert len(completion) > 4096
    assert score(task, completion) == expected
    chat = [{"role": "assistant", "content": completion}]
    assert task.reward([[{"role": "user", "content": PROMPT}]], [chat]) == [expected]


@pytest.mark.parametrize(
    "completion",
    [
        "Answer: 50+25-3\n" + "xAnswer:" * 125_000,  # a million characters of mid-line hits
        "Answer: 50+25-3\n" + ("x" + " " * 60 + "Answer:") * 15_000,
        "\r\n" * 500_000 + "Answer: 50+25-3\r\n",
    ],
    ids=["midline_hits", "indented_midline_hits", "many_crlf_lines"],
)
def test_finding_the_last_answer_line_is_linear(task: Countdown, completion: str) -> None:
    start = time.perf_counter()
    assert score(task, completion) == 1.0
    assert time.perf_counter() - start < 2.0


def test_reward_columns_of_another_shape_score_zero_without_raising(task: Countdown) -> None:
    """A mapping column without the completion's index raised a raw KeyError."""
    with pytest.warns(UnreadablePromptWarning):
        got = task.reward(["?"], ["Answer: 3+7"], numbers={5: [3, 7]}, target={5: 10})
    assert got == [0.0]


@pytest.mark.parametrize(
    ("call", "words"),
    [
        # "-> 82.5" was written and read back as the target 82
        (lambda t: t.format_prompt((3, 7, 25), 82.5), "target must be an integer"),
        (lambda t: t.format_prompt((3, 7.5, 25), 82), "positive integers"),  # read as None
        (lambda t: t.format_prompt(None, 82), "positive integers"),  # was a raw TypeError
        (lambda t: t.format_prompt((3, 7, 25), 10**7), "more than 7 digits"),  # read as None
        (lambda t: t.format_prompt((3,), 82), "one number"),  # read back as None
        (lambda t: t.make_problem((3,), 82), "one number"),
        (lambda t: t.split_of(None, 82), "split_of needs integer"),  # was a raw TypeError
        # the float 3.0 hashed as another problem: a split claimed for the wrong problem
        (lambda t: t.split_of((3.0, 7, 25), 82), "split_of needs integer"),
        (lambda t: t.split_of((3, 7, 25), 82.0), "split_of needs integer"),
        (lambda t: t.split_of("3725", 82), "split_of needs integer"),  # read as characters
    ],
)
def test_prompts_and_splits_are_only_made_for_problems_they_state(task: Countdown, call, words):
    """format_prompt wrote whatever it was given, so a prompt could read back as another
    problem ('-> 82.5' as 82) or none; split_of hashed floats and text as other problems."""
    with pytest.raises(WorkbenchError, match=re.escape(words)):
        call(task)
    prompt = task.format_prompt([3, 7, 25], 7)  # a target among the numbers can be stated
    assert task.parse_prompt(prompt) == ((3, 7, 25), 7)
    assert task.split_of([25, 3, 7], 82) == task.split_of((3, 7, 25), 82)
