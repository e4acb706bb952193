"""The parameter records: validated once, frozen, replaced by name, round-tripped."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from test_attention_toy import toy_analysis

import workbench as wb
from workbench.attention.params import CreditParams, RhythmParams


def test_defaults_are_the_papers_settings():
    r = RhythmParams()
    assert (r.window, r.fai_horizon, r.head_quantiles, r.top_q, r.k, r.alpha) == (
        10, (0, None), (0.3, 0.3), 0.4, 3, 0.5,
    )  # fmt: skip
    c = CreditParams()
    assert (c.strategy, c.gamma_amp, c.layers, c.rhythm.fai_horizon) == (
        "coupled", 1.5, "middle", (10, 100),
    )  # fmt: skip


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: RhythmParams(window=0), "window must be at least 1"),
        (lambda: RhythmParams(window=2.5), "window must be an integer"),
        (lambda: RhythmParams(window=True), "window must be an integer"),
        (lambda: RhythmParams(fai_horizon=(5, 2)), "H_hi must be at least 5"),
        (lambda: RhythmParams(fai_horizon=7), "must be a pair"),
        (lambda: RhythmParams(head_quantiles=(0.7, 0.7)), "sum to more than 1"),
        (lambda: RhythmParams(top_q=0), "top_q must be in"),
        (lambda: RhythmParams(alpha=float("nan")), "alpha must be a finite number"),
        (lambda: RhythmParams(tau_waad="high"), "tau_waad must be a finite number"),
        (lambda: CreditParams(strategy="anchors"), "unknown credit strategy 'anchors'"),
        (lambda: CreditParams(gamma_amp=-2), r"gamma_amp must be in \[1"),
        (lambda: CreditParams(gamma_amp=0.5), r"gamma_amp must be in \[1"),
        (lambda: CreditParams(layers=[]), "not a layer selection"),
        (lambda: CreditParams(layers="first"), "not a layer selection"),
        (lambda: CreditParams(rhythm={"window": 3}), "rhythm must be a RhythmParams"),
        (lambda: RhythmParams().replace(windw=3), r"no setting\(s\) \['windw'\]"),
        (lambda: CreditParams().replace(stratgy="global"), "no setting"),
    ],
)
def test_bad_settings_are_refused_at_construction(build, match):
    with pytest.raises(wb.WorkbenchError, match=match):
        build()


def test_records_are_frozen_and_replace_returns_validated_copies():
    r = RhythmParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.window = 5
    r5 = r.replace(window=5)
    assert (r.window, r5.window) == (10, 5)
    c = CreditParams().replace(strategy="global", top_q=0.3, layers=[4, 2])
    assert (c.strategy, c.rhythm.top_q, c.layers) == ("global", 0.3, (4, 2))
    assert c.rhythm.fai_horizon == (10, 100), "the other rhythm fields are kept"


def test_json_round_trip():
    c = CreditParams(strategy="random", gamma_amp=2.0, layers=[3], rhythm=RhythmParams(k=2))
    back = CreditParams.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    assert RhythmParams.from_dict(json.loads(json.dumps(RhythmParams().to_dict()))) == (
        RhythmParams()
    )


def test_an_analysis_is_immutable():
    a = toy_analysis(1)
    with pytest.raises(AttributeError, match="immutable"):
        a.waad = torch.zeros(3)
    with pytest.raises(AttributeError, match="immutable"):
        del a.anchors
    b = a.with_params(window=4)
    assert a.params.window == 10 and b.params.window == 4 and b.stats is a.stats


def test_with_params_takes_a_whole_record_or_keywords():
    a = toy_analysis(2, n=30, pl=5)
    p = a.params.replace(window=3, top_q=0.25)
    b, c = a.with_params(p), a.with_params(window=3, top_q=0.25)
    assert b.params == c.params == p
    assert b.anchors == c.anchors and b.preplan == c.preplan


def test_select_heads_equals_an_analysis_of_those_heads_only():
    a = toy_analysis(4, n=30, pl=5, nh=8)
    keep = [(0, 1), (0, 3), (0, 4), (0, 6), (0, 7)]
    b = a.select_heads(keep)
    rows = [a.heads.index(h) for h in keep]
    fresh = wb.Analysis(
        stats=a.stats.select(rows),
        entropy=a.entropy,
        tokens=a.tokens,
        ids=a.ids,
        n_layers=1,
        n_heads=8,
        params=a.params,
    )
    assert b.heads == keep and b.meta["layers"] == [0]
    for f in ["waad", "fai", "delta"]:
        np.testing.assert_array_equal(getattr(b, f).numpy(), getattr(fresh, f).numpy())
    assert (b.local_heads, b.global_heads, b.anchors) == (
        fresh.local_heads, fresh.global_heads, fresh.anchors,
    )  # fmt: skip
    assert torch.isnan(b.head_span[0, 0]) and not torch.isnan(a.head_span[0, 0])
    with pytest.raises(wb.WorkbenchError, match="not analysed"):
        a.select_heads([(0, 9)])
    with pytest.raises(wb.WorkbenchError, match="no heads"):
        a.select_heads([])


def test_a_fixed_classification_is_kept_whole_and_head_quantiles_cannot_silently_skip_it():
    a = toy_analysis(6, n=30, pl=5, nh=10)
    # a classification computed elsewhere, e.g. from a batch's mean span (heads_from="batch")
    span = a.head_span.clone()
    span[0, :] = torch.arange(10, dtype=torch.float64)
    fixed = wb.HeadClasses.from_span(span, (0.3, 0.3))
    b = a.with_params(classes=fixed)
    assert (b.local_heads, b.global_heads) == (fixed.local_heads, fixed.global_heads)
    # `classes` returns the fixed record as given: its span and quantiles, not this trace's
    assert b.classes is fixed
    # quantiles only choose per-sequence classes: changing them while a fixed classification
    # is kept would change nothing, so it is refused with the two ways out
    with pytest.raises(wb.WorkbenchError, match="the fixed head classification") as e:
        b.with_params(head_quantiles=(0.5, 0.5))
    assert "classes=None" in e.value.fix
    per_seq = b.with_params(head_quantiles=(0.5, 0.5), classes=None)
    assert per_seq.local_heads == a.with_params(head_quantiles=(0.5, 0.5)).local_heads
    refixed = b.with_params(classes=wb.HeadClasses.from_span(span, (0.5, 0.5)))
    assert len(refixed.local_heads) == 5
    assert b.with_params(window=4).classes is fixed, "other changes keep the classes"
    # the params record the quantiles the fixed classes were computed with (they claimed
    # the defaults), and other quantiles given with new fixed classes are refused
    other = wb.HeadClasses.from_span(span, (0.2, 0.2))
    assert a.with_params(classes=other).params.head_quantiles == (0.2, 0.2)
    with pytest.raises(wb.WorkbenchError, match=r"head_quantiles=\(0.4, 0.4\) cannot apply"):
        a.with_params(classes=other, head_quantiles=(0.4, 0.4))


@pytest.mark.parametrize("classes", ["batch", [(0, 1)], {"local_heads": [(0, 1)]}])
def test_classes_that_are_not_a_head_classification_are_refused(classes):
    a = toy_analysis(1)
    with pytest.raises(wb.WorkbenchError, match=r"classes must be a wb\.HeadClasses"):
        a.with_params(classes=classes)


@pytest.mark.parametrize("seed, match", [(-1, "at least 0"), (1.5, "integer"), ("7", "integer")])
def test_a_bad_random_seed_is_refused_by_name(seed, match):
    a = toy_analysis(1)
    with pytest.raises(wb.WorkbenchError, match=f"seed must .*{match}"):
        a.gamma("random", seed=seed)
    assert torch.equal(a.gamma("random", seed=3), a.gamma("random", seed=3))


def test_a_hand_built_head_classification_is_checked():
    a = toy_analysis(1)
    span = a.head_span
    # an empty class made WAAD (or FAI) a mean over no heads: NaN everywhere, no preplan
    # (or anchor) tokens, without a word
    for local, glob in [([], [(0, 1)]), ([(0, 1)], [])]:
        with pytest.raises(wb.WorkbenchError, match="is empty: its WAAD or FAI") as e:
            wb.HeadClasses(local, glob, span)
        assert "from_span" in e.value.fix
    # pairs read back from JSON are lists: a TypeError (unhashable) deep in the analysis
    listed = wb.HeadClasses([[0, 2], [0, 1]], [[0, np.int64(3)]], span)
    assert listed.local_heads == [(0, 1), (0, 2)] and listed.global_heads == [(0, 3)]
    assert a.with_params(classes=listed).local_heads == [(0, 1), (0, 2)]
    with pytest.raises(wb.WorkbenchError, match="not a list of \\(layer, head\\) pairs"):
        wb.HeadClasses([(0, 1.5)], [(0, 3)], span)
    with pytest.raises(wb.WorkbenchError, match="sum to more than 1"):
        wb.HeadClasses([(0, 1)], [(0, 3)], span, (0.9, 0.9))
    # a span that is no [layer, head] grid: a ValueError (unpacking) from nonzero()
    for bad in (torch.ones(6), torch.ones(1, 2, 3)):
        with pytest.raises(wb.WorkbenchError, match="must be a \\[layer, head\\] grid"):
            wb.HeadClasses.from_span(bad)


@pytest.mark.parametrize(
    "span, match",
    [
        (None, "must be a \\[layer, head\\] grid, got no tensor"),  # raw RuntimeError
        ("abc", "must be a \\[layer, head\\] grid, got no tensor"),  # raw TypeError
        (torch.tensor([[1.0, float("inf")], [2.0, 3.0]]), "infinite"),  # ranked global
        (torch.tensor([[1.0, float("-inf")], [2.0, 3.0]]), "infinite"),  # ranked local
    ],
)
def test_head_classes_from_span_refuses_bad_spans(span, match):
    with pytest.raises(wb.WorkbenchError, match=match) as e:
        wb.HeadClasses.from_span(span)
    assert e.value.fix
