"""Bad input to the entry points (`wb.analyze`, `analyze_many`, `gamma_many`): each is
refused by name, before any forward pass, with the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import workbench as wb
from workbench.attention import engine

PROMPT, RESPONSE = "What is 3 + 4?", " 3 plus 4 is 7, so the answer is 7."


@pytest.fixture(scope="module")
def trace(toy_llama):
    return wb.Trace.from_text(toy_llama, PROMPT, RESPONSE)


@pytest.fixture
def no_pass(monkeypatch):
    monkeypatch.setattr(engine, "collect_many", lambda *a, **k: pytest.fail("ran a forward pass"))


@pytest.mark.parametrize("traces", ["one trace", None, 7])
def test_many_traces_must_be_a_list(toy_llama, trace, traces, no_pass):
    traces = trace if traces == "one trace" else traces
    for run in (wb.analyze_many, wb.gamma_many):
        with pytest.raises(wb.WorkbenchError, match="traces must be a list") as e:
            run(toy_llama, traces)
        assert "[trace]" in e.value.fix or "list of traces" in e.value.fix


@pytest.mark.parametrize("fai_cuts", [5, "101", [1.5], [-1], [None]])
def test_fai_cuts_are_non_negative_integer_distances(toy_llama, trace, fai_cuts, no_pass):
    # [1.5] was truncated to 1 and [-1] dropped without a word; 5 and "101" crashed
    with pytest.raises(wb.WorkbenchError, match="fai_cuts must") as e:
        wb.analyze(toy_llama, trace, fai_cuts=fai_cuts)
    assert "H_hi + 1" in e.value.fix
    with pytest.raises(wb.WorkbenchError, match="fai_cuts must"):
        wb.analyze_many(toy_llama, [trace], fai_cuts=fai_cuts)


def test_fai_cuts_keep_the_horizons_they_name(toy_llama, trace):
    # fai_min_rows=1: a horizon of 5 rows holds fewer than the default 10 (FaiRowsWarning)
    a = wb.analyze(toy_llama, trace, fai_cuts=[3, 8], fai_min_rows=1)
    assert a.with_params(fai_horizon=(3, 7)).params.fai_horizon == (3, 7)
    # Without the column sums (the RL credit's pass), a horizon whose cuts were not kept
    # names the missing cut (the fix said "add it to fai_cuts"; adding H_hi still failed).
    (a,) = wb.analyze_many(
        toy_llama,
        [trace],
        fai_horizon=(3, 7),
        fai_min_rows=1,
        columns=False,
        default_cuts=False,
        progress=False,
    )
    with pytest.raises(wb.WorkbenchError, match=r"cut distance 7 \(it kept") as e:
        a.with_params(fai_horizon=(3, 6))
    assert "add 7 to fai_cuts" in e.value.fix


@pytest.mark.parametrize(
    "seed, match",
    [(-1, "at least 0"), (0.5, "integer"), (2**63 - 1, "last rollout's seed .* too large")],
)
def test_gamma_many_checks_the_seed_before_the_pass(toy_llama, trace, seed, match, no_pass):
    # rollout i uses seed + i, so the last one must be a seed too; numpy raised after the pass
    with pytest.raises(wb.WorkbenchError, match=match):
        wb.gamma_many(toy_llama, [trace, trace], "random", seed=seed)


def test_gamma_many_takes_any_iterable_of_traces(toy_llama, trace):
    a, b = wb.gamma_many(toy_llama, (t for t in [trace, trace]), "random", seed=2**63 - 2)
    assert a.shape == (len(trace),) and not torch.equal(a, b)  # seeds 2**63 - 2 and - 1


def test_a_trace_tokenized_for_another_model_is_refused(toy_llama, trace, smol, no_pass):
    # The toy's tokenizer (the tiny reasoner's) has 81 ids, all inside SmolLM2's 49,152: the
    # vocabulary check passes, yet SmolLM2 would read other tokens than the trace shows.
    assert int(trace.ids.max()) < smol.cfg.d_vocab
    with pytest.raises(wb.WorkbenchError, match="tokenized for") as e:
        wb.analyze(smol, trace)
    # rebuilt as it was encoded: the toy has no chat template (the fix named none)
    assert "wb.Trace.from_text(model, trace.prompt, trace.text, chat=False)" in e.value.fix
    with pytest.raises(wb.WorkbenchError, match="tokenized for"):
        wb.gamma_many(smol, [trace])


def test_a_trace_of_another_model_with_the_same_tokenizer_is_analysed(make_toy, trace):
    # another checkpoint (another name) with the same tokenizer: a base model and its
    # fine-tune, say; the trace's tokens are what this model reads
    other = make_toy(LlamaConfig, LlamaForCausalLM, num_hidden_layers=1)
    a = wb.analyze(other, trace, layers=[0])
    assert a.tokens == trace.tokens and torch.equal(a.ids, trace.ids)


def test_fixed_classes_and_other_quantiles_or_heads_from_conflict(toy_llama, trace, no_pass):
    """A fixed classification is used as given: quantiles that differ from its own would
    be ignored while the analysis claimed them, and ``heads_from`` would overwrite
    ``classes=`` (both were accepted without a word)."""
    span = torch.arange(toy_llama.cfg.n_layers * toy_llama.cfg.n_heads, dtype=torch.float64)
    fixed = wb.HeadClasses.from_span(span.view(toy_llama.cfg.n_layers, -1), (0.3, 0.3))
    with pytest.raises(wb.WorkbenchError, match=r"head_quantiles=\(0.2, 0.2\) cannot apply"):
        wb.analyze(toy_llama, trace, classes=fixed, head_quantiles=(0.2, 0.2))
    with pytest.raises(wb.WorkbenchError, match="cannot apply"):
        wb.analyze_many(toy_llama, [trace], classes=fixed, head_quantiles=(0.2, 0.2))
    with pytest.raises(wb.WorkbenchError, match="heads_from and classes both"):
        wb.analyze_many(toy_llama, [trace], heads_from="batch", classes=fixed)
    # a record's own quantiles were replaced by the classes' without a word
    record = wb.RhythmParams(head_quantiles=(0.1, 0.1))
    with pytest.raises(wb.WorkbenchError, match=r"params.head_quantiles=\(0.1, 0.1\)"):
        wb.analyze(toy_llama, trace, record, classes=fixed)
    with pytest.raises(wb.WorkbenchError, match=r"params.head_quantiles=\(0.1, 0.1\)"):
        wb.analyze_many(toy_llama, [trace], record, heads_from=fixed)


def test_fixed_classes_of_another_model_are_refused(toy_llama, trace):
    """Classes over another model's (layer, head) grid were used wherever their heads
    happened to exist in this one."""
    span = torch.arange(30 * 9, dtype=torch.float64).view(30, 9)  # SmolLM2's grid
    other = wb.HeadClasses([(0, 0), (0, 1)], [(1, 2), (1, 3)], span)
    shape = (toy_llama.cfg.n_layers, toy_llama.cfg.n_heads)
    with pytest.raises(wb.WorkbenchError, match=rf"{shape[0]} layers x {shape[1]} heads"):
        wb.analyze(toy_llama, trace, classes=other)
    with pytest.raises(wb.WorkbenchError, match="another model's"):
        wb.analyze_many(toy_llama, [trace], heads_from=other)


def test_an_analysis_with_fixed_classes_records_their_quantiles(toy_llama, trace):
    """Its params claimed the default quantiles, which the fixed classes never used."""
    span = torch.arange(toy_llama.cfg.n_layers * toy_llama.cfg.n_heads, dtype=torch.float64)
    fixed = wb.HeadClasses.from_span(span.view(toy_llama.cfg.n_layers, -1), (0.2, 0.2))
    assert wb.analyze(toy_llama, trace, classes=fixed).params.head_quantiles == (0.2, 0.2)
    (a,) = wb.analyze_many(toy_llama, [trace], heads_from=fixed)
    assert a.params.head_quantiles == (0.2, 0.2)


@pytest.mark.parametrize(
    "layers, heads",
    [
        (np.int64(-1), None),  # one NumPy index was "not a layer selection"
        (torch.tensor(1), None),  # so was a 0-d tensor
        (np.array([-1]), None),  # NumPy ints were kept: np.int64 in heads and meta
        (torch.tensor([1]), None),  # "layer(s) [tensor(1)] ... have no softmax attention"
        ("all", np.array([[1, 0], [1, 2]])),  # "not a (layer, head) pair of ints"
        ([1], [(np.int64(1), torch.tensor(2)), (1, 0)]),
    ],
)
def test_numpy_and_torch_indices_select_layers_and_heads_as_ints(toy_llama, trace, layers, heads):
    a = wb.analyze(toy_llama, trace, layers=layers, heads=heads, entropy=False)
    want = [(1, h) for h in ((0, 2) if heads is not None else range(toy_llama.cfg.n_heads))]
    assert a.heads == want and a.meta["layers"] == ([0, 1] if isinstance(layers, str) else [1])
    assert all(type(x) is int for pair in a.heads for x in pair)
    assert all(type(x) is int for x in a.meta["layers"])
    # the RL credit's layers take them too
    (g,) = wb.gamma_many(toy_llama, [trace], layers=layers)
    assert g.shape == (len(trace),)


def test_select_heads_refuses_indices_that_are_not_integers(toy_llama, trace):
    a = wb.analyze(toy_llama, trace, entropy=False)
    # (0, 1.7) selected head 1 and (0, True) head 1 without a word
    for bad in [(0, 1.7), (0, True), ("0", 1)]:
        with pytest.raises(wb.WorkbenchError, match="not a list of \\(layer, head\\) pairs"):
            a.select_heads([bad])
    assert a.select_heads([(np.int64(0), torch.tensor(1))]).heads == [(0, 1)]


@pytest.mark.parametrize("flag", ["entropy", "columns", "default_cuts", "fast_other_layers"])
@pytest.mark.parametrize("value", ["no", None, 0])
def test_switches_must_be_true_or_false(toy_llama, trace, flag, value, no_pass):
    # entropy="no" computed the entropies and columns=None dropped the column sums: each
    # acted by its truth value without a word
    with pytest.raises(wb.WorkbenchError, match=f"{flag} must be True or False") as e:
        wb.analyze_many(toy_llama, [trace], progress=False, **{flag: value})
    assert f"{flag}=True" in e.value.fix
    if flag == "entropy":
        with pytest.raises(wb.WorkbenchError, match="entropy must be True or False"):
            wb.analyze(toy_llama, trace, entropy=value)
    with pytest.raises(wb.WorkbenchError, match="progress must be True or False"):
        wb.analyze_many(toy_llama, [trace], progress=value)
    with pytest.raises(wb.WorkbenchError, match="progress must be True or False"):
        wb.gamma_many(toy_llama, [trace], progress=value)


def test_heads_from_an_array_is_refused_by_name(toy_llama, trace, no_pass):
    # an array's == "batch" has no truth value: a raw ValueError from numpy
    for heads_from in (np.array([1, 2]), torch.tensor([1, 2]), 3):
        with pytest.raises(wb.WorkbenchError, match="is not a head classification"):
            wb.analyze_many(toy_llama, [trace], heads_from=heads_from)


@pytest.mark.parametrize("n_layers", [True, 0, 2.0, None, "30"])
def test_middle_layers_needs_a_layer_count(n_layers):
    # True counted as one layer ([0])
    with pytest.raises(wb.WorkbenchError, match="n_layers must be a positive integer"):
        wb.middle_layers(n_layers)
    assert wb.middle_layers(np.int64(30)) == wb.middle_layers(30) == [10, 12, 15, 18, 20]


@pytest.mark.parametrize("record", [wb.RhythmParams, wb.CreditParams])
@pytest.mark.parametrize("d", [None, "window=5", [("window", 5)]])
def test_from_dict_needs_a_dict(record, d):
    # dict(d): a raw TypeError or ValueError (or, for pairs, a record built from a list)
    with pytest.raises(wb.WorkbenchError, match=r"from_dict needs a dict") as e:
        record.from_dict(d)
    assert "to_dict()" in e.value.fix
    assert record.from_dict(record().to_dict()) == record()


def test_an_entry_that_is_not_a_trace_is_named_by_its_index(toy_llama, trace, no_pass):
    for run in (wb.analyze_many, wb.gamma_many):
        with pytest.raises(wb.WorkbenchError, match=r"traces\[1\] is a NoneType, not a wb\.Trace"):
            run(toy_llama, [trace, None])
        with pytest.raises(wb.WorkbenchError, match=f"{run.__name__} got no traces"):
            run(toy_llama, [])


def test_a_negative_head_pair_says_pairs_count_from_zero(toy_llama, trace, no_pass):
    # layers=-1 counts from the end; heads=[(0, -1)] was "out of range" with no reason
    with pytest.raises(wb.WorkbenchError, match="head pairs count from 0, not from the end"):
        wb.analyze(toy_llama, trace, heads=[(0, -1)])


@pytest.fixture(scope="module")
def long_context(make_toy):
    return make_toy(LlamaConfig, LlamaForCausalLM, max_position_embeddings=1 << 18)


def _long_trace(n: int) -> wb.Trace:
    ids = torch.full((n,), 5)
    ids[0] = 1
    return wb.Trace(ids=ids, tokens=["a"] * n, prompt_len=8, text="")


def test_an_exact_pass_that_cannot_fit_is_refused_with_the_length_that_fits(long_context):
    # 131,072 tokens: one layer's pattern is 275 GB. The bridge's forward failed inside
    # torch's allocator, or, a little under the free memory, the process was killed.
    with pytest.raises(wb.WorkbenchError) as err:
        wb.analyze(long_context, _long_trace(1 << 17), path="exact")
    text = str(err.value)
    assert 'the exact path at T = 131,072 tokens (path="exact") needs at least' in text
    assert 'use path="tiled"' in text and "use a shorter trace (about" in text
    fits = int(text.split("(about ")[1].split(" tokens fit")[0].replace(",", ""))
    assert 1000 < fits < 1 << 17


def _bloom(make_toy):
    from transformers import BloomConfig, BloomForCausalLM

    # BLOOM's attention bypasses transformers' attention interface; ALiBi has no position
    # limit but the one its config states.
    bloom = make_toy(
        BloomConfig, BloomForCausalLM, num_key_value_heads=None, max_position_embeddings=1 << 18
    )
    assert not engine.tiled_supported(bloom)
    return bloom


def _llama_with_a_bypassing_layer(make_toy):
    # Layer 1 keeps its own copy of the config, asking for eager attention, as an unusual
    # config can: "auto" finds that its attention never reaches the interface.
    import copy

    toy = make_toy(LlamaConfig, LlamaForCausalLM, max_position_embeddings=1 << 18)
    attn = wb.models.sampler(toy).model.layers[1].self_attn
    attn.config = copy.copy(attn.config)
    attn.config._attn_implementation = "eager"
    return toy


@pytest.mark.parametrize(
    ("build", "why"),
    [
        (_bloom, "BloomForCausalLM (its attention does not go through"),
        (_llama_with_a_bypassing_layer, "LlamaForCausalLM (a layer of it bypasses"),
    ],
)
def test_a_model_only_the_exact_path_reads_is_told_to_shorten_the_trace(make_toy, build, why):
    """Its memory refusal told the user to take the tiled path, which cannot read it. With
    a layer that bypasses the interface, the tiled pass ran its tiled layers (111 s here)
    and then failed inside torch's allocator on that layer's 275 GB pattern; the layers
    are now probed on two tokens first."""
    model = build(make_toy)
    with pytest.raises(wb.WorkbenchError) as err:
        wb.analyze(model, _long_trace(1 << 17))
    text = str(err.value)
    assert f"only the exact path reads {why}" in text
    assert "interface): use a shorter trace (about" in text
    assert 'path="tiled"' not in text


def test_the_tiled_path_asked_for_a_bypassing_layer_it_cannot_hold_is_refused_first(make_toy):
    """path="tiled" ran the tiled layers, then failed inside torch's allocator on the
    bypassing layer's pattern."""
    model = _llama_with_a_bypassing_layer(make_toy)
    with pytest.raises(wb.WorkbenchError, match="the tiled path cannot analyse") as err:
        wb.analyze(model, _long_trace(1 << 17), path="tiled")
    assert "a layer of it bypasses" in str(err.value) and 'path="auto"' in err.value.fix


def test_head_quantiles_that_are_no_pair_are_refused_beside_fixed_classes(
    toy_llama, trace, no_pass
):
    """With fixed classes, ``head_quantiles=0.3`` met ``tuple(0.3)``: a raw TypeError."""
    span = torch.arange(toy_llama.cfg.n_layers * toy_llama.cfg.n_heads, dtype=torch.float64)
    fixed = wb.HeadClasses.from_span(span.view(toy_llama.cfg.n_layers, -1))
    with pytest.raises(wb.WorkbenchError, match="head_quantiles must be a pair"):
        wb.analyze(toy_llama, trace, classes=fixed, head_quantiles=0.3)
    with pytest.raises(wb.WorkbenchError, match="head_quantiles must be a pair"):
        wb.analyze_many(toy_llama, [trace], heads_from=fixed, head_quantiles=0.3)


def test_fixed_classes_of_heads_outside_the_selection_are_refused_before_the_pass(
    toy_llama, trace, no_pass
):
    """Classes computed over every layer, with ``layers=[1]``: refused only after the
    forward pass, which the entry points promise to validate everything before."""
    span = torch.arange(toy_llama.cfg.n_layers * toy_llama.cfg.n_heads, dtype=torch.float64)
    fixed = wb.HeadClasses.from_span(span.view(toy_llama.cfg.n_layers, -1))
    assert fixed.local_heads[0][0] == 0  # the lowest spans are in layer 0
    with pytest.raises(wb.WorkbenchError, match="use heads that were not analysed: \\[\\(0, 0\\)"):
        wb.analyze(toy_llama, trace, layers=[1], classes=fixed)
    with pytest.raises(wb.WorkbenchError, match="use heads that were not analysed"):
        wb.analyze_many(toy_llama, [trace], heads_from=fixed, heads=[(1, 0), (1, 1)])


def test_gamma_many_takes_a_window_wider_than_the_band(toy_llama, trace):
    """A window over 256 diagonals (the band of a pass without column sums) was refused
    with a fix naming ``columns=True``, an option gamma_many does not take."""
    credit = wb.CreditParams(strategy="local").replace(window=300)
    (g,) = wb.gamma_many(toy_llama, [trace], credit)
    a = wb.analyze(toy_llama, trace, credit.rhythm, layers="middle", max_window=300)
    assert torch.equal(g, a.gamma("local"))
