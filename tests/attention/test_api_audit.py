"""The public helpers of the rhythm and the head classes, as a user calls them: arguments
are what they say, and what the documented counting rule produces can be used again."""

from __future__ import annotations

import pytest
import torch
from test_attention_toy import toy_analysis

import workbench as wb
from workbench.attention import top_q


@pytest.mark.parametrize("bottom", ["no", "top", None, 0])
def test_top_q_bottom_must_be_true_or_false(bottom):
    # "no" is truthy: it selected the bottom of the values without a word
    with pytest.raises(wb.WorkbenchError, match="bottom must be True or False") as e:
        top_q([1.0, 2.0, 3.0], 0.34, bottom=bottom)
    assert "bottom=True" in e.value.fix
    assert top_q([1.0, 2.0, 3.0], 0.34) == [2]
    assert top_q([1.0, 2.0, 3.0], 0.34, bottom=True) == [0]


def test_a_classification_the_counting_rule_overlaps_is_a_reusable_record():
    """README ("Counting and ties"): with one head (or counts that add up to more than the
    heads) a head is both local and global. `Analysis.classes` of such an analysis, and
    `HeadClasses.from_span` of its span, raised "are both local and global" with the fix
    ``HeadClasses.from_span(span)``, which raised the same; so did
    ``analyze_many(..., heads_from="batch")`` after its forward passes."""
    a = toy_analysis(1)
    one = a.select_heads([(0, 2)])
    assert one.local_heads == one.global_heads == [(0, 2)]
    classes = one.classes
    assert classes.local_heads == classes.global_heads == [(0, 2)]
    again = wb.HeadClasses.from_span(one.head_span)
    assert (again.local_heads, again.global_heads) == ([(0, 2)], [(0, 2)])
    assert one.with_params(classes=classes).global_heads == [(0, 2)]
    # three heads at (0.5, 0.5): round(1.5) = 2 each, so one head is in both classes
    three = a.select_heads([(0, 0), (0, 1), (0, 2)]).with_params(head_quantiles=(0.5, 0.5))
    both = set(three.local_heads) & set(three.global_heads)
    assert len(both) == 1 and three.classes.local_heads == three.local_heads
    # by hand, a head in both lists is still a mistake
    with pytest.raises(wb.WorkbenchError, match="are both local and global"):
        wb.HeadClasses([(0, 1), (0, 2)], [(0, 2), (0, 5)], a.head_span)
    with pytest.raises(wb.WorkbenchError, match="are both local and global"):
        wb.HeadClasses([(0, 2)], [(0, 2)], torch.full((1, 6), float("nan")))
