"""The workshop's exercise checks (`workbench.workshop`, notebooks/06_workshop*.ipynb):
a right answer passes, a wrong answer fails with a message that says why."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.workshop import check_anchors


def anchors(count):
    """A learner's `my_anchors` that chooses ``count(q, n)`` of the n defined values."""

    def my_anchors(fai, q):
        pos = [i for i in range(len(fai)) if not math.isnan(fai[i])]
        m = count(q, len(pos))
        return sorted(sorted(pos, key=lambda i: (-fai[i].item(), i))[:m])

    return my_anchors


def test_the_solution_passes(capsys):
    # the solution notebook's counting: max(1, round(q * n))
    check_anchors(anchors(lambda q, n: max(1, round(q * n))))
    assert "all" in capsys.readouterr().out


def test_truncating_the_count_fails():
    # README, "The method": max(1, round(q * n)); int(q * n) takes one too few whenever q * n ends in .5+
    with pytest.raises(AssertionError, match="round, not truncate"):
        check_anchors(anchors(lambda q, n: max(1, int(q * n))))


@pytest.mark.parametrize("returned", [None, 3.0, [float("nan")]])
def test_an_answer_that_is_not_a_list_of_positions_fails_with_a_message(returned):
    # e.g. a function that forgets `return`: an AssertionError that says so, not a TypeError
    with pytest.raises(AssertionError, match="must return a list of positions"):
        check_anchors(lambda fai, q: returned)


def test_a_tensor_of_positions_is_a_list_of_positions(capsys):
    check_anchors(lambda fai, q: torch.tensor(anchors(lambda q, n: max(1, round(q * n)))(fai, q)))
    assert "all" in capsys.readouterr().out


def test_a_mask_or_unsorted_positions_fail_with_what_to_change():
    """A True/False mask was read as positions 0 and 1 ("you chose [0, 0, 1, ...]"), and
    unsorted positions passed although the exercise asks for them sorted."""
    right = anchors(lambda q, n: max(1, round(q * n)))

    def mask(fai, q):
        chosen = set(right(fai, q))
        return torch.tensor([i in chosen for i in range(len(fai))])

    with pytest.raises(AssertionError, match="not a mask"):
        check_anchors(mask)

    def unsorted(fai, q):
        got = right(fai, q)
        return got[::-1] if len(got) > 1 else got

    with pytest.raises(AssertionError, match="return them sorted"):
        check_anchors(unsorted)
