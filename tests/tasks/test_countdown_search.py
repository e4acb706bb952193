"""Countdown with a written search: the reference trace is the search, checked line by line;
problems, splits and scoring are Countdown's."""

from __future__ import annotations

import re
import statistics

import pytest

from workbench.errors import WorkbenchError
from workbench.tasks import Countdown, CountdownSearch, get_task
from workbench.tasks.countdown import check_countdown, search_lines

STEP = re.compile(r"(\d+)([-+*/])(\d+)=(\d+)")


@pytest.fixture(scope="module")
def task() -> CountdownSearch:
    return CountdownSearch()


@pytest.fixture(scope="module")
def problems(task):
    return task.generate(300, split="test", seed=0)


def _value(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]


def test_the_documented_trace_written_out() -> None:
    p = CountdownSearch().make_problem((9, 7, 5), 10)
    assert p.prompt == "Countdown: 9 7 5 -> 10\n"
    assert p.solution == (
        "9+7=16: 16+5=21 16-5=11 16*5=80 no\n9-7=2: 5+2=7 5-2=3 5*2=10 yes\nAnswer: 5*(9-7)\n"
    )
    assert search_lines((3, 7, 25), 32) == ["25+7=32 yes"]  # a first step can finish
    assert CountdownSearch().make_problem((3, 7, 25), 32).solution.endswith("Answer: 25+7\n")
    assert search_lines((1, 1, 1), 97) is None


def test_every_line_is_true_and_only_the_last_reaches_the_target(task, problems) -> None:
    for p in problems:
        lines = p.solution.splitlines()
        search, answer = lines[:-1], lines[-1]
        assert 3 <= len(search) <= 5
        assert answer == f"Answer: {p.answer}" and task.score(p, p.solution) == 1.0
        assert check_countdown(p.numbers, p.target, p.answer)
        for k, line in enumerate(search):
            last = k == len(search) - 1
            assert line.endswith(" yes" if last else " no")
            steps = STEP.findall(line)
            assert steps, line
            for a, op, b, value in steps:
                a, b, value = int(a), int(b), int(value)
                assert a >= b and value == _value(a, op, b) and value > 0
                assert op != "/" or a % b == 0
            values = [int(v) for *_, v in steps]
            assert (p.target in values) == last
            assert not last or values[-1] == p.target


def test_first_steps_follow_the_solver_order_without_repeats(problems) -> None:
    for p in problems:
        firsts = [line.split(":")[0].split()[0] for line in p.solution.splitlines()[:-1]]
        assert len(set(firsts)) == len(firsts)
        big, mid, small = sorted(p.numbers, reverse=True)
        order = []  # the fixed order of `_steps`: pairs (0,1), (0,2), (1,2); + - * /
        for a, b in ((big, mid), (big, small), (mid, small)):
            order += [f"{a}+{b}", f"{a}-{b}", f"{a}*{b}", f"{a}/{b}"]
        positions = [order.index(f.split("=")[0]) for f in firsts]
        assert positions == sorted(positions)


def test_traces_are_long_enough_to_have_a_rhythm(problems) -> None:
    lengths = [len(p.solution) + 1 for p in problems]  # characters + eos = tokens
    assert 120 <= statistics.mean(lengths) <= 180
    assert sum(80 <= n <= 260 for n in lengths) >= 0.95 * len(lengths)


def test_problems_and_splits_are_countdowns(task, problems) -> None:
    countdown = Countdown(max_number=30, max_target=150)
    for p in problems[:50]:
        assert countdown.split_of(p.numbers, p.target) == "test" == p.split
        assert countdown.score(p, p.solution) == 1.0  # Countdown's verifier
        assert p.task == "countdown-search"
        assert all(1 <= x <= 30 for x in p.numbers) and 1 <= p.target <= 150
    assert task.make_problem((9, 7, 5), 10) == task.make_problem((9, 7, 5), 10)
    assert task.generate(20, "train", seed=3) == task.generate(20, "train", seed=3)
    assert get_task("countdown-search").generate(5, "test", seed=0) == problems[:5]


def test_answers_keep_the_operand_order_of_the_chain() -> None:
    task = CountdownSearch()
    cases = {  # (numbers, target): the expression on the Answer line
        ((20, 11, 12), 3): "11-(20-12)",
        ((5, 15, 4), 12): "4*(15/5)",
        ((10, 3, 2), 26): "(10+3)*2",
    }
    for (numbers, target), want in cases.items():
        p = task.make_problem(numbers, target)
        assert p.answer == want, (numbers, target, p.solution)
        assert check_countdown(numbers, target, p.answer)


def test_bad_settings_and_unsearchable_problems_raise() -> None:
    with pytest.raises(WorkbenchError, match="three numbers"):
        CountdownSearch(sizes=(4,))
    with pytest.raises(WorkbenchError, match="attempts"):
        CountdownSearch(attempts=(4, 2))
    with pytest.raises(WorkbenchError, match="at most 12 first steps"):
        CountdownSearch(attempts=(13, 20))  # no problem has 13 lines: generate hung
    with pytest.raises(WorkbenchError, match="no two-step solution"):
        CountdownSearch().make_problem((1, 1, 1), 97)
    assert repr(CountdownSearch()).startswith("CountdownSearch(sizes=(3,)")


@pytest.mark.parametrize("attempts", [3, (3, 4, 5), (3.5, 5), "35"])
def test_attempts_that_are_not_an_integer_pair_are_named(attempts) -> None:
    # 3 and (3, 4, 5) failed unpacking, "35" in a comparison; (3.5, 5) was accepted
    with pytest.raises(WorkbenchError, match="not a pair of integers"):
        CountdownSearch(attempts=attempts)


@pytest.mark.parametrize(
    ("numbers", "target", "words"),
    [
        ("3 7 25", 32, "positive integers"),  # was a raw TypeError
        (None, 32, "positive integers"),  # was a raw TypeError
        ((3.5, 7, 25), 32, "positive integers"),  # searched the float without a word
        ((-3, 7, 25), 32, "positive integers"),
        ((3, 7, 25, 4), 32, "three numbers, got 4"),  # a partial search of another problem
        ((3, 7), 10, "three numbers, got 2"),
        ((3, 7, 25), "32", "target must be an integer"),  # was None: "no search reaches"
        ((3, 7, 25), 32.0, "target must be an integer"),
    ],
)
def test_search_lines_names_bad_arguments(numbers, target, words) -> None:
    """search_lines took anything: text or None failed with a raw TypeError, and four
    numbers, a float number or a text target gave a search (or None) without a word."""
    with pytest.raises(WorkbenchError, match=re.escape(words)):
        search_lines(numbers, target)
    assert search_lines([9, 7, 5], 10) == search_lines((9, 7, 5), 10)
