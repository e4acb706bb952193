"""The parameter records: validated once, frozen, replaced by name, round-tripped."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from test_attention_toy import toy_analysis

import workbench as wb
from workbench.attention.credit import coupled_gamma
from workbench.attention.layers import layer_indices, resolve_layers
from workbench.attention.params import (
    GAMMA_AMP_MAX,
    CreditParams,
    RhythmParams,
    check_layers,
)


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


@pytest.mark.parametrize("amp", [1e308, 1e39, GAMMA_AMP_MAX * 1.01])
def test_a_gamma_amp_whose_weights_overflow_float32_is_refused(amp):
    """``gamma_amp`` had no upper bound: ``a.gamma(gamma_amp=1e308)`` gave ``inf`` weights."""
    with pytest.raises(wb.WorkbenchError, match=r"gamma_amp=.* is too large") as e:
        CreditParams(gamma_amp=amp)
    assert "1.7e+38" in e.value.fix
    a = toy_analysis(3, n=30, pl=5)
    with pytest.raises(wb.WorkbenchError, match="not finite in float32"):
        a.gamma("coupled", gamma_amp=amp)


def test_the_largest_gamma_amp_gives_finite_weights():
    # the largest weight, 1 + (1 + alpha)(g - 1): an anchor that also introduces one
    for alpha in (0.0, 0.5, 1.0):
        a = toy_analysis(3, n=30, pl=5, alpha=alpha)
        for strategy in ("local", "global", "coupled", "bottom-coupled", "random"):
            g = a.gamma(strategy, seed=0, gamma_amp=GAMMA_AMP_MAX)
            assert bool(torch.isfinite(g).all()) and g.max() > 1e38, strategy
    worst = coupled_gamma(3, [1], [], [1], gamma_amp=GAMMA_AMP_MAX, alpha=1.0)
    assert bool(torch.isfinite(worst).all())


@pytest.mark.parametrize(
    "layers, match",
    [
        (torch.tensor([[1]]), r"has 2 dimensions \(shape \(1, 1\)\)"),  # read as layer 1
        (np.array([[1, 2]]), r"has 2 dimensions \(shape \(1, 2\)\)"),
        ({1: 2}, "is a mapping"),  # its keys: layer 1
        ((1, 1), "lists layer 1 more than once"),  # kept until resolved
        ([3, np.int64(2), torch.tensor(3)], "lists layer 3 more than once"),
        ([[1]], "layer must be an integer"),
        ([], "not a layer selection"),
    ],
)
def test_a_layer_selection_is_flat_and_lists_each_layer_once(layers, match):
    """``torch.tensor([[1]])`` and ``{1: 2}`` were read as layer 1, and
    ``CreditParams(layers=(1, 1))`` kept the duplicate; one function normalises explicit
    layers for the records and for a model's layers (`layers.layer_indices`)."""
    with pytest.raises(wb.WorkbenchError, match=match) as e:
        CreditParams(layers=layers)
    assert e.value.fix
    with pytest.raises(wb.WorkbenchError, match=match):
        resolve_layers(layers, 4)
    with pytest.raises(wb.WorkbenchError, match=match):
        check_layers(layers)


def test_flat_layer_selections_are_plain_ints_in_order():
    for layers in ([2, -1], (2, -1), np.array([2, -1]), torch.tensor([2, -1])):
        got = CreditParams(layers=layers).layers
        assert got == (2, -1) and all(type(x) is int for x in got)
        assert resolve_layers(layers, 4) == [2, 3]
    assert CreditParams(layers=torch.tensor(1)).layers == (1,) == layer_indices(np.int64(1))
    assert CreditParams(layers="middle").layers == "middle"
    with pytest.raises(wb.WorkbenchError) as e:
        CreditParams(layers=[4, 2, 4])
    assert "layers=[2, 4]" in e.value.fix


def test_a_negative_index_may_not_name_a_layer_listed_otherwise():
    """``[1, -1]`` on two layers is layer 1 twice, refused as ``[1, 1]`` is (it was merged
    into one layer without a word); the message names both spellings."""
    with pytest.raises(wb.WorkbenchError, match=r"name layer 1 twice .* \(1 and -1\)") as e:
        resolve_layers([1, -1], 2)
    assert "layers=[1]" in e.value.fix
    with pytest.raises(wb.WorkbenchError, match="name layer 3 twice"):
        resolve_layers(np.array([-1, 0, 3]), 4)
    assert resolve_layers([1, -1], 3) == [1, 2]


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


def test_a_credit_record_saved_without_some_rhythm_keys_reads_them_as_the_rl_defaults():
    """A config saved before fai_min_rows existed resumed with the analysis default 10
    instead of the credit's 1; a partial rhythm lost the horizon (10, 100)."""
    old = CreditParams().to_dict()
    del old["rhythm"]["fai_min_rows"]
    assert CreditParams.from_dict(old) == CreditParams()
    partial = CreditParams.from_dict({"rhythm": {"top_q": 0.3}}).rhythm
    assert partial == CreditParams().rhythm.replace(top_q=0.3)


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


def test_a_record_whose_quantiles_fixed_classes_would_drop_is_refused():
    """``with_params(RhythmParams(head_quantiles=...), classes=fixed)`` kept the fixed
    classes' quantiles and dropped the record's without a word (only the keyword form was
    refused). A record asks for quantiles where they differ from the analysis's current
    ones; where they are the current ones (``a.params.replace(...)``) or the classes' own,
    nothing is dropped."""
    a = toy_analysis(6, n=30, pl=5, nh=10)
    span = a.head_span.clone()
    span[0, :] = torch.arange(10, dtype=torch.float64)
    fixed = wb.HeadClasses.from_span(span, (0.2, 0.2))
    record = a.params.replace(head_quantiles=(0.1, 0.1))
    with pytest.raises(wb.WorkbenchError, match=r"params.head_quantiles=\(0.1, 0.1\) cannot") as e:
        a.with_params(record, classes=fixed)
    assert "classes=None" in e.value.fix and "(0.2, 0.2)" in e.value.fix
    b = a.with_params(classes=fixed)  # fixed classes kept from here on
    with pytest.raises(wb.WorkbenchError, match="cannot apply to the fixed head"):
        b.with_params(record)
    # the current quantiles, or the classes' own, ask for nothing the classes drop
    assert a.with_params(a.params.replace(window=4), classes=fixed).params.head_quantiles == (
        0.2, 0.2,
    )  # fmt: skip
    assert b.with_params(b.params.replace(window=4)).classes is fixed
    assert (
        a.with_params(a.params.replace(head_quantiles=(0.2, 0.2)), classes=fixed).classes is fixed
    )
    # the record's quantiles apply where the classes are per sequence
    assert b.with_params(record, classes=None).params.head_quantiles == (0.1, 0.1)
    # a keyword overrides the record's quantiles: it alone is checked
    c = a.with_params(record, classes=fixed, head_quantiles=(0.2, 0.2))
    assert c.params.head_quantiles == (0.2, 0.2)


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
        with pytest.raises(wb.WorkbenchError, match="needs a \\[layer, head\\] grid"):
            wb.HeadClasses.from_span(bad)


@pytest.mark.parametrize(
    "span, match",
    [
        ("abc", r"HeadClasses.span needs a \[layer, head\] grid, got str"),
        (None, r"HeadClasses.span needs a \[layer, head\] grid, got NoneType"),
        (torch.ones(6), r"grid, got Tensor of shape \(6,\)"),
        (torch.ones(1, 1, 6), r"grid, got Tensor of shape \(1, 1, 6\)"),
        (torch.tensor([[1.0, float("inf"), 2.0, 3.0, 4.0, 5.0]]), "infinite values"),
    ],
)
def test_a_hand_built_classification_checks_its_span(span, match):
    """``HeadClasses(span=...)`` was not checked at all: a string or a 1-D span was kept."""
    with pytest.raises(wb.WorkbenchError, match=match) as e:
        wb.HeadClasses([(0, 1)], [(0, 3)], span)
    assert "head_span" in e.value.fix


@pytest.mark.parametrize("local", [[(-1, 1)], [(0, -2)], [(1, 0)], [(0, 6)]])
def test_a_hand_built_classification_holds_only_heads_of_its_span_grid(local):
    """A negative layer index was refused only by `with_params` (as a head not analysed),
    after the record had been built and passed around."""
    span = toy_analysis(1).head_span  # 1 layer x 6 heads
    with pytest.raises(wb.WorkbenchError, match="outside the span's grid of 1 layers x 6") as e:
        wb.HeadClasses(local, [(0, 3)], span)
    assert "0..0" in e.value.fix and "0..5" in e.value.fix
    listed = wb.HeadClasses([[0, 5]], [(0, 0)], span.tolist())  # a grid read back from JSON
    assert listed.span.dtype == torch.float64 and listed.span.shape == (1, 6)


def test_a_hand_built_classification_never_puts_a_head_in_both_classes():
    """WAAD and FAI then read the same head: accepted, while `check_quantiles` refused
    quantiles whose classes would overlap."""
    span = toy_analysis(1).head_span
    with pytest.raises(wb.WorkbenchError, match=r"heads \[\(0, 1\)\] are both local and global"):
        wb.HeadClasses([(0, 1), (0, 2)], [(0, 1), (0, 5)], span)


@pytest.mark.parametrize(
    "span, match",
    [
        (None, "the span needs a \\[layer, head\\] grid, got NoneType"),  # raw RuntimeError
        ("abc", "the span needs a \\[layer, head\\] grid, got str"),  # raw TypeError
        (torch.tensor([[1.0, float("inf")], [2.0, 3.0]]), "infinite"),  # ranked global
        (torch.tensor([[1.0, float("-inf")], [2.0, 3.0]]), "infinite"),  # ranked local
    ],
)
def test_head_classes_from_span_refuses_bad_spans(span, match):
    with pytest.raises(wb.WorkbenchError, match=match) as e:
        wb.HeadClasses.from_span(span)
    assert e.value.fix


def test_a_strategy_that_is_no_string_is_refused_by_name():
    """An array of names reached ``in STRATEGIES``: a raw ValueError from NumPy (an
    array's truth value), in `CreditParams` and `Analysis.gamma` alike."""
    names = np.array(["coupled", "local"])
    with pytest.raises(wb.WorkbenchError, match="unknown credit strategy") as e:
        CreditParams(strategy=names)
    assert "'coupled'" in e.value.fix
    with pytest.raises(wb.WorkbenchError, match="unknown credit strategy"):
        toy_analysis(1).gamma(names)
    assert CreditParams(strategy=np.str_("local")).strategy == "local"  # a NumPy str is one


@pytest.mark.parametrize("rhythm", [{"window": 3}, None])
def test_replacing_the_rhythm_with_no_record_is_refused_by_name(rhythm):
    """``replace(rhythm=..., top_q=...)`` applied the rhythm fields to what was given: a raw
    AttributeError (``'dict' object has no attribute 'replace'``)."""
    with pytest.raises(wb.WorkbenchError, match="rhythm must be a RhythmParams"):
        CreditParams().replace(rhythm=rhythm, top_q=0.3)
    got = CreditParams().replace(rhythm=RhythmParams(window=4), top_q=0.3).rhythm
    assert (got.window, got.top_q) == (4, 0.3)


def test_with_params_refuses_another_models_classes():
    """`wb.analyze` refused classes over another (layer, head) grid; `with_params` used them
    wherever their heads happened to exist in this analysis."""
    a = toy_analysis(1)  # 1 layer x 6 heads
    other = wb.HeadClasses([(0, 0)], [(0, 3)], torch.arange(12.0).view(2, 6))
    with pytest.raises(wb.WorkbenchError, match="1 layers x 6 heads: they are another model's"):
        a.with_params(classes=other)
    mine = wb.HeadClasses([(0, 0)], [(0, 3)], a.head_span)
    assert a.with_params(classes=mine).global_heads == [(0, 3)]
