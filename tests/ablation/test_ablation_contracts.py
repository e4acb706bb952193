"""What the ablation API promises at its edges, on toy models (random 2-layer checkpoints).

- A knockout either changes the model's computation or is refused: never a silent 0.
- A target set of a fixed size leaves room for a control that differs from it.
- `summarize` intervals hold their coverage at the few traces used in practice.
- ``kl_mean`` / ``kl_max`` cover every row the intervention can reach.
- Bad input is a `WorkbenchError` that says what to pass, never a raw error or a no-op.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import workbench as wb
from workbench.ablation import (
    Knockout,
    ResidAblation,
    answer_span,
    effect_chart,
    logits_of,
    measure,
    perturb_position,
    resid_cache,
    resid_mean,
    run_ablations,
    summarize,
    target_sets,
)
from workbench.ablation.runner import _exclusions
from workbench.attention import FaiRowsWarning
from workbench.intervals import bootstrap_ci, t_ci
from workbench.tasks import get_task


@pytest.fixture(scope="module")
def traces(toy_llama):
    problems = get_task("countdown").generate(2, split="test", seed=0)
    return [wb.Trace.from_text(toy_llama, p.prompt, p.solution) for p in problems]


@pytest.fixture(scope="module")
def trace(traces):
    return traces[0]


@pytest.fixture(scope="module")
def gpt_neo(make_toy):
    """GPT-Neo, whose bridge runs attention inside the Hugging Face module (the overrides
    of tests/attention/test_architectures.py's "gpt-neo-local")."""
    import transformers

    return make_toy(
        transformers.GPTNeoConfig,
        transformers.GPTNeoForCausalLM,
        max_position_embeddings=1024,
        initializer_range=0.2,
        num_key_value_heads=None,
        attention_types=[[["global", "local"], 1]],
        window_size=16,
    )


# -- 1. a knockout changes the computation, or is refused ------------------------------------


def test_knockout_changes_the_logits_on_a_model_whose_scores_the_bridge_computes(toy_llama, trace):
    p = trace.prompt_len + 2
    clean = logits_of(toy_llama, trace.ids)
    out = logits_of(toy_llama, trace.ids, [Knockout([p], layers="all")])
    assert torch.equal(out[: p + 1], clean[: p + 1])  # rows up to p cannot see the edit
    assert float((out[p + 1 :] - clean[p + 1 :]).abs().max()) > 1e-4


def test_knockout_is_refused_where_the_bridge_would_discard_the_edit(gpt_neo):
    ids = torch.arange(1, 12)
    with pytest.raises(wb.WorkbenchError, match="GPTNeoForCausalLM") as info:
        logits_of(gpt_neo, ids, [Knockout([3])])
    assert "ResidAblation" in info.value.fix
    with pytest.raises(wb.WorkbenchError, match="does not work"):
        Knockout([3], layers=[0]).fwd_hooks(gpt_neo)
    # residual ablation works on the same model
    clean = logits_of(gpt_neo, ids)
    assert not torch.equal(logits_of(gpt_neo, ids, [ResidAblation([3], layers=0)]), clean)


def test_knockout_on_a_hybrid_names_its_attention_layers_or_refuses(hybrid_toy):
    jamba = hybrid_toy("jamba")  # Mamba layers 0 and 2, attention in layers 1 and 3
    with pytest.raises(wb.WorkbenchError, match="no softmax attention") as info:
        Knockout([3], layers=[0]).fwd_hooks(jamba)
    assert "[1, 3]" in info.value.fix
    # its attention layers run inside the Hugging Face module: refused, not a silent 0
    for layers in ("all", [1]):
        with pytest.raises(wb.WorkbenchError, match="JambaForCausalLM"):
            Knockout([3], layers=layers).fwd_hooks(jamba)


# -- 2. a fixed-size set leaves room for its controls ----------------------------------------


def test_an_ablation_pass_that_cannot_fit_in_memory_is_refused_first(make_toy):
    # The bridge's eager forward holds each layer's [head, T, T] scores and pattern: at
    # 131,072 tokens 275 GB each, where the process was killed part-way.
    from transformers import LlamaConfig, LlamaForCausalLM

    toy = make_toy(LlamaConfig, LlamaForCausalLM, max_position_embeddings=1 << 18)
    ids = torch.full((1 << 17,), 5)
    trace = wb.Trace(ids=ids, tokens=["a"] * len(ids), prompt_len=8, text="")
    with pytest.raises(wb.WorkbenchError) as err:
        wb.measure(toy, trace, wb.Knockout([9, 10], layers=[0]))
    text = str(err.value)
    assert "a forward pass of 131,072 tokens through the bridge" in text
    assert "use a shorter trace (about" in text


def test_a_size_that_fills_the_pool_is_refused_rather_than_clipped(toy_llama, trace):
    analysis = wb.analyze(toy_llama, trace, fai_min_rows=1)
    pool = int((~torch.isnan(analysis.fai)).sum()) - int(not torch.isnan(analysis.fai[0]))
    for size in (pool, pool + 1, 10 * pool):
        with pytest.raises(wb.WorkbenchError, match=f"only {pool} positions are eligible"):
            target_sets(analysis, families=["anchors"], size=size)
    sets = target_sets(analysis, families=["anchors"], controls=["random"], size=pool - 1)
    assert [len(s) for s in sets] == [pool - 1] * 4
    assert any(s.positions != sets[0].positions for s in sets[1:])


def test_a_low_fai_control_that_cannot_match_the_set_is_skipped(toy_llama, trace):
    """A response with no FAI (too short for fai_min_rows) still has preplan tokens; their
    low-FAI control was empty, and run_ablations then failed on it."""
    with pytest.warns(wb.attention.FaiRowsWarning):
        analysis = wb.analyze(toy_llama, trace, fai_min_rows=len(trace))
    sets = target_sets(analysis, families=["preplan"], controls=["random", "low_fai"])
    assert [s.kind for s in sets] == ["target", "random", "random", "random"]
    assert all(len(s) == len(sets[0]) > 0 for s in sets)
    rows = wb.run_ablations(toy_llama, [trace], analyses=[analysis], progress=False)
    assert "low_fai" not in set(rows["kind"]) and "target" in set(rows["kind"])


# -- 3. summary intervals --------------------------------------------------------------------


def _paired_frame(rng, n_traces):
    rows = []
    for t in range(n_traces):
        base = rng.normal()
        for kind in ("target", "random"):
            rows.append(
                dict(trace=t, family="anchors", kind=kind, intervention="knockout",
                     kl_mean=base + rng.normal())
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_intervals_are_student_t_over_traces(traces):
    frame = _paired_frame(np.random.default_rng(1), 4)
    s = summarize(frame, "kl_mean", ci=0.9)
    per = frame.pivot(index="trace", columns="kind", values="kl_mean")
    diff = s[s["comparison"] == "set - random"].iloc[0]
    assert (diff["estimate"], diff["lo"], diff["hi"]) == pytest.approx(
        t_ci(per["target"] - per["random"], ci=0.9)
    )
    assert set(s["interval"]) == {"t"} and set(s["ci"]) == {0.9}
    boot = summarize(frame, "kl_mean", interval="bootstrap", n_boot=200)
    assert set(boot["interval"]) == {"bootstrap"}


def test_a_kl_mean_interval_never_reaches_below_zero():
    """A KL cannot be negative, yet the t-interval of three skewed KL means ran to -0.2
    (notebook 03 showed -0.064); differences of KLs keep their negative bounds."""
    rows = [
        dict(trace=t, family="anchors", kind=kind, intervention="knockout", kl_mean=v)
        for t, (a, b) in enumerate([(0.01, 0.3), (0.02, 0.01), (0.5, 0.02)])
        for kind, v in (("target", a), ("random", b))
    ]
    s = summarize(pd.DataFrame(rows), "kl_mean").set_index("comparison")
    assert t_ci(np.array([0.01, 0.02, 0.5]))[1] < 0  # what the set's bound was
    assert s.loc["set", "lo"] == 0.0 and s.loc["random", "lo"] == 0.0
    assert s.loc["set - random", "lo"] < 0


def test_summary_intervals_hold_their_coverage_at_three_traces():
    """A nominal 95% interval of a zero mean difference covers 0 about 95% of the time
    (the percentile bootstrap covered 74% at three traces)."""
    rng = np.random.default_rng(0)
    reps = 300
    cover = 0
    for _ in range(reps):
        s = summarize(_paired_frame(rng, 3), "kl_mean")
        d = s[s["comparison"] == "set - random"].iloc[0]
        cover += bool(d["lo"] <= 0.0 <= d["hi"])
    assert cover / reps > 0.9


def test_the_chart_title_names_the_summary_level():
    s = summarize(_paired_frame(np.random.default_rng(0), 6), "kl_mean", ci=0.5)
    assert effect_chart(s).to_dict()["title"].endswith("(6 traces, 50% intervals)")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_boot=0), "n_boot"),
        (dict(ci=95), "between 0 and 1"),
        (dict(interval="bca"), "interval"),
    ],
)
def test_summary_settings_are_checked(kwargs, match):
    with pytest.raises(wb.WorkbenchError, match=match):
        summarize(_paired_frame(np.random.default_rng(0), 3), "kl_mean", **kwargs)


# -- 4. KL rows ------------------------------------------------------------------------------


def test_kl_summaries_cover_every_row_the_intervention_reaches(toy_llama, trace):
    p = trace.prompt_len + 3
    resid = measure(toy_llama, trace, ResidAblation([p], layers=1, mode="zero"))
    kl = resid["kl"]
    assert kl[p] > 0  # the ablated position's own row changes: it is included
    assert resid["kl_mean"] == pytest.approx(np.nanmean(kl[p:]))
    assert resid["kl_max"] == pytest.approx(np.nanmax(kl[p:]))
    assert resid["kl_after_last"] == pytest.approx(np.nanmean(kl[p + 1 :]))
    ko = measure(toy_llama, trace, Knockout([p]))
    kl = ko["kl"]
    assert kl[p] == pytest.approx(0, abs=1e-9)  # a knockout cannot reach its own row
    assert ko["kl_mean"] == pytest.approx(np.nanmean(kl[p + 1 :]))
    assert ko["kl_max"] == pytest.approx(np.nanmax(kl[p + 1 :]))


# -- 5. bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda ref: ResidAblation(
                [20, 20], mode="resample", reference=ref, source_positions=[3, 4]
            ),
            "repeat",
        ),
        (
            lambda ref: ResidAblation([20], mode="resample", reference=ref, source_positions=[-1]),
            "negative",
        ),
    ],
)
def test_bad_positions_are_refused_when_the_intervention_is_built(toy_llama, traces, build, match):
    ref = resid_cache(toy_llama, traces[1])
    with pytest.raises(wb.WorkbenchError, match=match):
        build(ref)


#: Calls of the wrong type, and what the `WorkbenchError` says. Under pytest the runtime type
#: checks (beartype) refuse them first, so they run in a plain interpreter, as users run them.
WRONG_TYPES = {
    "ResidAblation(5)": "list of integers",
    "Knockout(5)": "list of integers",
    "ResidAblation(5, mode='resample', reference={}, source_positions=[3])": "list of integers",
    "ResidAblation([20], mode='resample', reference={}, source_positions=[2.7])": "not an integer",
    "measure(None, None, 'knockout')": "needs an intervention",
    "target_sets('a trace')": "needs a wb.Analysis",
}

_RUN_WRONG_TYPES = """
import json, sys
import torch
import workbench as wb
from workbench.ablation import Knockout, ResidAblation, measure, target_sets
out = {}
for call in json.loads(sys.argv[1]):
    try:
        eval(call)
        out[call] = "no error"
    except wb.WorkbenchError as e:
        out[call] = str(e)
    except Exception as e:
        out[call] = "raw " + type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"""


def test_wrongly_typed_input_is_a_workbench_error_outside_the_type_checks():
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _RUN_WRONG_TYPES, json.dumps(list(WRONG_TYPES))],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for call, match in WRONG_TYPES.items():
        assert match in got[call], (call, got[call])


def test_duplicate_positions_without_sources_are_merged():
    assert ResidAblation([20, 20, 7]).positions == (7, 20)
    iv = ResidAblation([20, 7], mode="resample", reference={}, source_positions=[3, 0])
    assert (iv.positions, iv.source_positions) == ((7, 20), (0, 3))


@pytest.mark.parametrize("iv", [Knockout([100]), ResidAblation([100])])
def test_positions_beyond_the_sequence_are_an_error_not_a_no_op(toy_llama, trace, iv):
    assert len(trace) < 100
    with pytest.raises(wb.WorkbenchError, match="beyond the sequence"):
        logits_of(toy_llama, trace.ids, [iv])


def test_resample_with_one_trace_is_refused(toy_llama, traces):
    with pytest.raises(wb.WorkbenchError, match="at least two traces"):
        run_ablations(toy_llama, traces[:1], interventions=["resid-resample"], progress=False)


# -- 6. bad input found by fuzzing: refused, never silently wrong -----------------------------

WRONG_TYPES.update(
    {
        # a fraction or a bool picked another head; one int was a raw TypeError
        "Knockout([5], heads=[1.7])": "not an integer",
        "Knockout([5], heads=[True])": "not an integer",
        "Knockout([5], heads=3)": "list of head indices",
        "Knockout([0], allow_sink='no')": "True or False",
        # pairs 1.5 ran two trials; a negative count failed inside top_q
        "wb.ablation.perturbation_test(None, [], [], n_pairs=1.5)": "n_pairs must be an integer",
        "wb.ablation.default_resid_layer(2.5)": "n_layers must be an integer",
        "wb.ablation.content_words(None)": "needs text",
        # an empty list knocked out no head; None, a string or a fraction was no error
        "Knockout([5], heads=[])": "empty list",
        "wb.intervals.t_ci(None)": "1-D list of numbers",
        "wb.intervals.t_ci('5')": "1-D list of numbers",
        "wb.intervals.bootstrap_ci([1.0, 2.0], n_boot=0)": "n_boot must be at least 1",
        "wb.intervals.bootstrap_ci([1.0, 2.0], n_boot=2.5)": "n_boot must be an integer",
    }
)


def test_a_trace_is_taken_where_ids_are(toy_llama, trace):
    """logits_of and greedy_continue read a `wb.Trace` as its ids (their docstrings and
    `_ids` said so), but were annotated to take a tensor, so the runtime type checks
    refused what the code accepted."""
    torch.testing.assert_close(logits_of(toy_llama, trace), logits_of(toy_llama, trace.ids))
    assert torch.equal(
        wb.ablation.greedy_continue(toy_llama, trace, max_new_tokens=2),
        wb.ablation.greedy_continue(toy_llama, trace.ids, max_new_tokens=2),
    )


def test_a_batch_or_float_ids_are_refused_not_flattened_or_truncated(toy_llama, trace):
    """A [2 pos] batch was read as one sequence twice as long; float ids were truncated."""
    with pytest.raises(wb.WorkbenchError, match="one sequence"):
        logits_of(toy_llama, torch.stack([trace.ids, trace.ids]))
    with pytest.raises(wb.WorkbenchError, match="one sequence"):
        resid_cache(toy_llama, torch.stack([trace.ids, trace.ids]))
    with pytest.raises(wb.WorkbenchError, match="integer token ids"):
        wb.ablation.greedy_continue(toy_llama, trace.ids[:20].float() + 0.7, max_new_tokens=2)
    with pytest.raises(wb.WorkbenchError, match="negative token id"):
        logits_of(toy_llama, torch.tensor([1, -3, 4]))
    with pytest.raises(wb.WorkbenchError, match="is empty"):
        logits_of(toy_llama, torch.zeros(0, dtype=torch.long))


def test_answer_positions_without_a_prediction_are_refused(toy_llama, trace):
    """Position 0 read row -1 (the last row) and gave a log-prob of the wrong token."""
    clean = logits_of(toy_llama, trace.ids)
    for span in ([0], [-1], [len(trace)]):
        with pytest.raises(wb.WorkbenchError, match="not in 1"):
            wb.ablation.answer_logprob(clean, trace.ids, span)
    with pytest.raises(wb.WorkbenchError, match="not in 1"):
        measure(toy_llama, trace, Knockout([trace.prompt_len + 2]), span=([0], "answer"))
    with pytest.raises(wb.WorkbenchError, match="logits of shape"):
        wb.ablation.answer_logprob(clean[:10], trace.ids, [trace.prompt_len])


def test_answer_span_counts_and_prefix_are_checked(trace):
    """n_last=0 returned the whole response ([-0:]); an empty prefix matched at the end."""
    for n_last in (0, -2):
        with pytest.raises(wb.WorkbenchError, match="n_last must be at least 1"):
            wb.ablation.answer_span(trace, prefix="no such marker", n_last=n_last)
    with pytest.raises(wb.WorkbenchError, match="non-empty string"):
        wb.ablation.answer_span(trace, prefix="")


def test_kl_settings_are_checked_not_turned_into_nan_rows(toy_llama, trace):
    """chunk=-1 gave all-NaN KL; a negative prompt_len silently counted prompt rows."""
    clean = logits_of(toy_llama, trace.ids)
    kl = wb.ablation.kl_per_position
    with pytest.raises(wb.WorkbenchError, match="chunk must be at least 1"):
        kl(clean, clean, trace.prompt_len, chunk=-1)
    with pytest.raises(wb.WorkbenchError, match="prompt_len must be at least 0"):
        kl(clean, clean, -5)
    with pytest.raises(wb.WorkbenchError, match="beyond the"):
        kl(clean, clean, len(trace) + 1)
    with pytest.raises(wb.WorkbenchError, match="of one shape"):
        kl(clean, clean[:10], trace.prompt_len)


def test_settings_an_ablation_does_not_read_are_refused(toy_llama, trace):
    p = trace.prompt_len + 2
    with pytest.raises(wb.WorkbenchError, match="only read by mode='resample'"):
        ResidAblation([p], mode="zero", source_positions=[3])
    with pytest.raises(wb.WorkbenchError, match="reads no reference"):
        ResidAblation([p], mode="zero", reference={1: torch.zeros(3)})
    nan = torch.full((toy_llama.cfg.d_model,), float("nan"))
    with pytest.raises(wb.WorkbenchError, match="NaN or infinite"):
        logits_of(toy_llama, trace.ids, [ResidAblation([p], mode="mean", reference=nan)])
    with pytest.raises(wb.WorkbenchError, match="needs a task"):
        measure(toy_llama, trace, Knockout([p]), max_new_tokens=3)
    with pytest.raises(wb.WorkbenchError, match="clean_logits of shape"):
        measure(toy_llama, trace, Knockout([p]), clean_logits=torch.zeros(5, 3))


def test_frames_and_summary_settings_are_checked():
    frame = _paired_frame(np.random.default_rng(0), 3)
    with pytest.raises(wb.WorkbenchError, match="seed must be at least 0"):
        summarize(frame, "kl_mean", interval="bootstrap", seed=-1)
    with pytest.raises(wb.WorkbenchError, match="no column"):
        summarize(frame.drop(columns="kl_mean"), "kl_mean")
    with pytest.raises(wb.WorkbenchError, match="not a summarize result"):
        effect_chart(frame)
    with pytest.raises(wb.WorkbenchError, match="not a run_ablations result"):
        wb.ablation.kl_curve_chart(summarize(frame, "kl_mean"))


WRONG_TYPES.update(
    {
        # a dict iterated as its keys: {5: 1} knocked out position 5 (heads, layers too)
        "Knockout({5: 1})": "must be a list, got a dict",
        "Knockout([5], heads={0: 1})": "must be a list, got a dict",
        "Knockout([5], layers={1: 2})": "is a mapping, not a layer selection",
        "Knockout([5], layers=[1, 1])": "lists layer 1 more than once",
        "Knockout([5], layers=torch.tensor([[1]]))": "has 2 dimensions",
        "Knockout([5], layers='first')": "not a layer selection",
        "ResidAblation({5: 1})": "must be a list, got a dict",
        "ResidAblation([5], layers={1: 2})": "is a mapping, not a layer selection",
        "ResidAblation([5], layers=(0, 0))": "lists layer 0 more than once",
        # a set's order is not the order written: {5, 10} paired 3 with 10
        "ResidAblation([3, 7], mode='resample', reference={}, source_positions={5, 10})": (
            "paired by order"
        ),
        "ResidAblation({3, 7}, mode='resample', reference={}, source_positions=[5, 10])": (
            "paired by order"
        ),
    }
)


def test_unordered_positions_are_fine_where_order_does_not_matter():
    """A set of positions is sorted anyway; only pairing needs an order."""
    assert Knockout({20, 7}).positions == (7, 20)
    assert ResidAblation({20, 7}).positions == (7, 20)
    with pytest.raises(wb.WorkbenchError, match="is not an integer"):
        Knockout(torch.tensor([3.0, 5.0]))  # a float tensor's __index__: a raw TypeError


def test_every_list_of_traces_is_checked_by_one_check(toy_llama, traces):
    """resid_mean, run_ablations and perturbation_test name the entry that is not a trace,
    and refuse one trace or None, with one message (`check_traces`)."""
    for call in (
        lambda t: resid_mean(toy_llama, t),
        lambda t: run_ablations(toy_llama, t, progress=False),
        lambda t: wb.ablation.perturbation_test(toy_llama, t, []),
    ):
        with pytest.raises(wb.WorkbenchError, match=r"traces\[1\] is a str, not a wb\.Trace"):
            call([traces[0], "text"])
        for single in (traces[0], None):
            with pytest.raises(wb.WorkbenchError, match=r"traces must be a list of wb\.Trace"):
                call(single)
    with pytest.raises(wb.WorkbenchError, match=r"expected a wb\.Trace, got str"):
        perturb_position(toy_llama, "text", 3)


# -- 7. controls compare like with like; bad input found by the ablation audit ---------------


def _tied(analysis):
    """A copy of `analysis` whose FAI is the same (1.0) wherever it is defined."""
    import copy

    tied = copy.copy(analysis)
    fai = analysis.fai.clone()
    fai[~torch.isnan(fai)] = 1.0
    object.__setattr__(tied, "fai", fai)
    return tied


def test_a_low_fai_control_never_shares_a_position_with_its_set(toy_llama, trace):
    """Preplan and intro tokens often have low FAI, and with tied FAI the lowest-FAI
    positions are the top ones: the control then measured (part of) the set itself."""
    analysis = wb.analyze(toy_llama, trace, fai_min_rows=1)
    for an, size in ((analysis, None), (analysis, 3), (_tied(analysis), 3)):
        sets = target_sets(an, controls=["low_fai"], size=size)
        fai_pool = {int(p) for p in torch.nonzero(~torch.isnan(an.fai)).flatten()} - {0}
        for s in sets:
            if s.kind == "target":
                target = set(s.positions)
                continue
            assert len(s) == len(target) and not set(s.positions) & target, (s, target)
            lowest = sorted(fai_pool - target, key=lambda p: (float(an.fai[p]), p))
            assert list(s.positions) == sorted(lowest[: len(target)])
        assert "low_fai[anchors]" in {s.name for s in sets}


def test_a_knockout_inside_an_intervene_context_is_probed_without_its_hooks(toy_llama, trace):
    """The one-time knockout probe (4 tokens) ran under the context's hooks, whose positions
    lie beyond it: "ablation position 30 is beyond the sequence (4 tokens)"."""
    from workbench.ablation import intervene
    from workbench.ablation.interventions import _KNOCKOUT_PROBES

    resid, ko = ResidAblation([10], layers=0), Knockout([12], layers=[1])
    both = logits_of(toy_llama, trace.ids, [resid, ko])
    _KNOCKOUT_PROBES.pop(toy_llama, None)  # the probe runs again, inside the context
    with intervene(toy_llama, resid):
        inside = logits_of(toy_llama, trace.ids, [ko])
        still = logits_of(toy_llama, trace.ids)  # the context's hook is still live
    assert torch.allclose(inside, both, atol=1e-5)
    assert torch.allclose(still, logits_of(toy_llama, trace.ids, [resid]), atol=1e-5)
    assert not toy_llama.hook_dict["blocks.0.hook_resid_pre"].fwd_hooks  # and gone after


def test_traces_tokenized_for_another_model_are_refused_by_the_ablation_entry_points(
    toy_llama, smol, trace
):
    """The toy's ids all fit SmolLM2's vocabulary, but SmolLM2 reads other tokens."""
    analysis = wb.analyze(toy_llama, trace)
    p = trace.prompt_len + 2
    calls = [
        lambda: run_ablations(smol, [trace], analyses=[analysis], progress=False),
        lambda: measure(smol, trace, Knockout([p])),
        lambda: wb.ablation.perturbation_test(smol, [trace], [analysis], progress=False),
        lambda: perturb_position(smol, trace, p),
    ]
    for call in calls:
        with pytest.raises(wb.WorkbenchError, match="tokenized for") as e:
            call()
        assert "Trace.from_text" in e.value.fix


def test_resampling_from_a_duplicate_trace_is_refused(toy_llama, traces):
    """A trace resampled from its own copy measured exactly 0 with zero-width intervals."""
    a, b = traces
    with pytest.raises(wb.WorkbenchError, match=r"traces\[1\] and traces\[2\] have the same"):
        run_ablations(toy_llama, [a, b, b], interventions=["resid-resample"], progress=False)


def _excluded(model, trace):
    """The positions run_ablations keeps out of every set (answer, special, last token)."""
    special = model.tokenizer.all_special_ids
    return _exclusions(trace, answer_span(trace, special_ids=special)[0], special)


def test_resample_skips_a_family_together_with_its_controls_and_says_so(toy_llama, traces):
    """Sets beyond the source trace were skipped one by one and silently, so a family's set
    and control means came from different traces."""
    long = traces[0]
    short = wb.Trace.from_text(toy_llama, long.prompt, long.text[: len(long.text) * 2 // 5])
    kw = dict(families=["anchors", "preplan"], controls=["random"], n_random=3)
    with pytest.warns(UserWarning, match="resid-resample skipped") as caught:
        df = run_ablations(
            toy_llama, [long, short], interventions=["resid-resample"], progress=False, **kw
        )
    # what should be skipped, from the sets themselves (trace i draws from seed + 3 i)
    n_family = n_control = 0
    for i, (tr, source) in enumerate(((long, short), (short, long))):
        sets = target_sets(
            wb.analyze(toy_llama, tr), **kw, seed=3 * i, exclude=_excluded(toy_llama, tr)
        )
        got = set(df.loc[df["trace"] == i, "target"])
        for fam in kw["families"]:
            group = [s for s in sets if s.family == fam]
            if not group:
                continue
            shift = source.prompt_len - tr.prompt_len  # the responses aligned at their start
            fits = max(group[0].positions) + shift < len(source)
            n_family += not fits
            for s in group:
                ok = fits and max(s.positions) + shift < len(source)
                n_control += fits and not ok
                assert (s.name in got) == ok, (i, s.name)
    # the long trace's preplan set reaches beyond the short trace; its anchors do not, but
    # some of their controls do
    assert n_family >= 1 and n_control >= 1, (n_family, n_control)
    message = str(caught[0].message)
    assert f"skipped {n_family} (trace, family)" in message
    assert f"and {n_control} further control" in message
    assert len([w for w in caught if "resid-resample" in str(w.message)]) == 1


def test_resampling_aligns_the_responses_at_their_start(toy_llama, traces):
    """A response token got the residual at the same absolute position of the next trace,
    which is a prompt token there when that trace's prompt is longer."""
    first = traces[0]
    longer = wb.Trace.from_text(toy_llama, first.prompt + " Think it through.", first.text)
    shift = longer.prompt_len - first.prompt_len
    assert shift > 0
    df = run_ablations(
        toy_llama, [first, longer], interventions=["resid-resample"], families=["anchors"],
        controls=[], progress=False,
    )  # fmt: skip
    row = df[(df["trace"] == 0) & (df["kind"] == "target")].iloc[0]
    source = resid_cache(toy_llama, longer)
    aligned = ResidAblation(
        list(row["positions"]), None, "resample", source, [p + shift for p in row["positions"]]
    )
    same = ResidAblation(list(row["positions"]), None, "resample", source)
    assert row["kl_mean"] == pytest.approx(measure(toy_llama, first, aligned)["kl_mean"])
    assert row["kl_mean"] != pytest.approx(measure(toy_llama, first, same)["kl_mean"])


def test_a_size_skips_families_with_no_eligible_positions_and_names_the_trace(toy_llama, traces):
    """An empty pool said "use a size below 0"; a too-large size did not say which trace."""
    short = wb.Trace.from_text(toy_llama, traces[0].prompt, "7")
    with pytest.warns(FaiRowsWarning):
        empty = wb.analyze(toy_llama, short)
    assert target_sets(empty, families=["anchors"], size=2) == []
    assert target_sets(empty, families=["anchors"]) == []  # as without a size
    too_big = r"traces\[1\]: anchors: size=1000"
    with pytest.raises(wb.WorkbenchError, match=too_big) as e, pytest.warns(FaiRowsWarning):
        run_ablations(toy_llama, [short, traces[0]], families=["anchors"], size=1000)
    assert "size below" in e.value.fix


def test_random_controls_draw_with_other_seeds_on_every_trace(toy_llama, traces):
    """The same seeds on every trace correlated the controls across traces, while the
    interval over traces assumes independent ones."""
    df = run_ablations(
        toy_llama, traces, families=["anchors"], controls=["random"], n_random=2, seed=5,
        size=2, progress=False,
    )  # fmt: skip
    random = df[df["kind"] == "random"]
    assert sorted(random.loc[random["trace"] == 0, "seed"]) == [5, 6]
    assert sorted(random.loc[random["trace"] == 1, "seed"]) == [7, 8]
    for i, tr in enumerate(traces):
        sets = target_sets(
            wb.analyze(toy_llama, tr), families=["anchors"], controls=["random"], n_random=2,
            seed=5 + 2 * i, size=2, exclude=_excluded(toy_llama, tr),
        )  # fmt: skip
        rows = random[random["trace"] == i]
        for s in sets[1:]:
            assert rows.loc[rows["target"] == s.name, "positions"].item() == s.positions
            assert rows.loc[rows["target"] == s.name, "seed"].item() == s.seed
    again = run_ablations(
        toy_llama, traces, families=["anchors"], controls=["random"], n_random=2, seed=5,
        size=2, progress=False,
    )  # fmt: skip
    assert again["positions"].tolist() == df["positions"].tolist()  # repeatable


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(interventions=None), "interventions must be a list of names"),
        (dict(analyses="one"), "needs a list of analyses"),
        (dict(exclude_answer="no"), "exclude_answer must be True or False"),
        (dict(analyses="pair", analyze_kwargs={"fai_min_rows": 1}), "would be ignored"),
        (dict(seed=2**63 - 2, n_random=3), "too large"),
        (dict(task="countdown"), "max_new_tokens=0 runs none"),
        (dict(problems=[None, None]), "max_new_tokens=0 runs none"),
    ],
)
def test_run_ablations_refuses_settings_it_would_misread(toy_llama, traces, kwargs, match):
    """None and one Analysis were raw TypeErrors; analyze_kwargs beside analyses and a
    string flag were silently ignored or misread; a seed too large for the last trace's
    controls failed after the work before it; a task or problems without a continuation
    length turned the continuation test off without a word."""
    analysis = wb.analyze(toy_llama, traces[0])
    if kwargs.get("analyses") == "one":
        kwargs["analyses"] = analysis
    elif kwargs.get("analyses") == "pair":
        kwargs["analyses"] = [analysis, wb.analyze(toy_llama, traces[1])]
    with pytest.raises(wb.WorkbenchError, match=match):
        run_ablations(toy_llama, traces, progress=False, **kwargs)


def test_an_empty_heads_list_is_refused_not_a_no_op(toy_llama, trace):
    with pytest.raises(wb.WorkbenchError, match="empty list") as e:
        Knockout([5], heads=[])
    assert "heads=None" in e.value.fix
    every = logits_of(toy_llama, trace.ids, [Knockout([5])])  # None: every head
    assert torch.equal(every, logits_of(toy_llama, trace.ids, [Knockout([5], heads=[0, 1, 2, 3])]))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: t_ci(None), "1-D list of numbers"),
        (lambda: t_ci("5"), "1-D list of numbers"),
        (lambda: t_ci(5.0), "1-D list of numbers"),
        (lambda: t_ci([[1.0, 2.0], [3.0, 4.0]]), "1-D list of numbers"),
        (lambda: bootstrap_ci([1.0, 2.0], n_boot=0), "n_boot must be at least 1"),
        (lambda: bootstrap_ci([1.0, 2.0], n_boot=2.5), "n_boot must be an int"),
        (lambda: bootstrap_ci(None), "1-D list of numbers"),
    ],
)
def test_interval_inputs_are_checked(call, match):
    with pytest.raises(wb.WorkbenchError, match=match):
        call()


def test_intervals_take_one_list_of_numbers_and_drop_nan_values_as_missing():
    assert t_ci([1.0, float("nan"), 3.0]) == t_ci([1.0, 3.0])
    assert bootstrap_ci([1.0, float("nan"), 3.0]) == bootstrap_ci([1.0, 3.0])
    assert np.isnan(t_ci([float("nan")] * 3)).all()
    with pytest.raises(wb.WorkbenchError, match="1-D list of numbers"):
        t_ci(np.array(5.0))  # one number has no interval; it read as (5.0, nan, nan)


def test_a_metric_the_frame_has_no_values_of_is_refused(toy_llama, trace):
    """correct_ablated without continuations summarised to all-NaN rows with n_traces 0."""
    df = run_ablations(toy_llama, [trace], families=["anchors"], n_random=1, progress=False)
    assert len(df) and df["correct_ablated"].isna().all()
    with pytest.raises(wb.WorkbenchError, match="no values of 'correct_ablated'") as e:
        summarize(df, "correct_ablated")
    assert "max_new_tokens" in e.value.fix and "task" in e.value.fix
    assert len(summarize(df, "kl_mean"))


def test_perturb_position_needs_one_row_of_logits_per_token(toy_llama, trace):
    clean = logits_of(toy_llama, trace.ids)
    p = trace.prompt_len + 1
    for logits in (torch.cat([clean, clean[-1:]]), clean[: p + 1]):
        with pytest.raises(wb.WorkbenchError, match="not this trace's"):
            perturb_position(toy_llama, trace, p, logits=logits, max_new_tokens=1)
    assert perturb_position(toy_llama, trace, p, logits=clean, max_new_tokens=1)["jaccards"]


def test_a_residual_ablation_with_a_reference_hashes_and_compares_by_that_reference(
    toy_llama, traces
):
    ref = resid_mean(toy_llama, traces, layers=1)
    a = ResidAblation([7], layers=1, mode="mean", reference=ref)
    assert a == ResidAblation([7], layers=1, mode="mean", reference=ref)
    assert hash(a) == hash(ResidAblation([7], layers=1, mode="mean", reference=ref))
    copy = {k: v.clone() for k, v in ref.items()}  # another reference, maybe changed later
    assert a != ResidAblation([7], layers=1, mode="mean", reference=copy)
    assert a != ResidAblation([8], layers=1, mode="mean", reference=ref)
    assert len({a, ResidAblation([7], layers=1, mode="mean", reference=ref)}) == 1


def test_exclude_as_a_mapping_is_refused_not_read_as_its_keys(toy_llama, trace):
    analysis = wb.analyze(toy_llama, trace)
    with pytest.raises(wb.WorkbenchError, match="keys would be read"):
        target_sets(analysis, exclude={trace.prompt_len + 1: 1})
    # a negative position matched nothing, so it excluded nothing (Knockout refuses it)
    with pytest.raises(wb.WorkbenchError, match="negative position -31"):
        target_sets(analysis, exclude=[-31])


def _outcomes(metric, set_values, random_values):
    """A `run_ablations`-shaped frame of one family: per trace the set's value and two
    seeded random controls' values."""
    rows = []
    for i, (v, rs) in enumerate(zip(set_values, random_values, strict=True)):
        rows.append(dict(trace=i, kind="target", seed=None, value=v))
        rows += [dict(trace=i, kind="random", seed=s, value=r) for s, r in enumerate(rs)]
    df = pd.DataFrame(rows).rename(columns={"value": metric})
    df["intervention"], df["family"] = "knockout", "anchors"
    return df


@pytest.mark.parametrize(
    "metric, low, high",
    [("correct_ablated", 0.0, 1.0), ("delta_correct", -1.0, 1.0), ("kl_mean", 0.0, None)],
)
def test_interval_bounds_stay_within_the_values_a_metric_can_take(metric, low, high):
    """Three traces whose random controls average to 1, 1 and 0.5: a t-interval of
    [-0.72, 2.38] for a proportion; its difference from a set of 0s reached -2.38."""
    top = 1.0 if high is None else high
    df = _outcomes(metric, [low] * 3, [[top, top], [top, top], [top, (top + low) / 2]])
    s = summarize(df, metric).set_index("comparison")
    width = None if high is None else high - low
    for label in ("random", "set - random"):
        lo, hi = s.loc[label, ["lo", "hi"]]
        assert lo <= s.loc[label, "estimate"] <= hi
        if label == "random":
            assert lo >= low and (high is None or hi <= high), (label, lo, hi)
        elif width is not None:  # a difference of two values in [low, high]
            assert -width <= lo and hi <= width, (label, lo, hi)
    if high is not None:  # the unclipped t-interval went past the range: clipping was needed
        ref = t_ci([top, top, (top + low) / 2])
        assert ref[2] > high and s.loc["random", "hi"] == high


def test_continuation_metrics_without_continuations_are_refused_by_name(toy_llama, trace):
    df = run_ablations(toy_llama, [trace], families=["anchors"], n_random=1, progress=False)
    with pytest.raises(wb.WorkbenchError, match="no values of 'delta_correct'") as e:
        summarize(df, "delta_correct")
    assert "max_new_tokens" in e.value.fix


def test_a_perturbation_pair_never_pairs_a_position_with_itself(toy_llama, trace):
    """With tied FAI the top and the bottom positions were the same ones."""
    analysis = _tied(wb.analyze(toy_llama, trace, fai_min_rows=1))
    trials, _ = wb.ablation.perturbation_test(
        toy_llama, [trace], [analysis], n_pairs=2, top_k=1, max_new_tokens=1, progress=False
    )
    assert len(trials) == 2
    assert not set(trials["high_pos"]) & set(trials["low_pos"])


def test_residual_references_of_another_tokenizers_trace_are_refused(toy_llama, smol, trace):
    """The toy's ids fit SmolLM2's vocabulary: resid_cache and resid_mean ran them as
    SmolLM2's tokens (another text) and returned its activations as a reference without a
    word, while measure and run_ablations refused the same trace."""
    calls = [lambda: resid_cache(smol, trace), lambda: resid_mean(smol, [trace])]
    for call in calls:
        with pytest.raises(wb.WorkbenchError, match="tokenized for") as e:
            call()
        assert "Trace.from_text" in e.value.fix
    assert resid_cache(toy_llama, trace)  # its own model takes it


def test_greedy_continue_refuses_interventions_it_would_not_apply(toy_llama, trace):
    """hooked=False with interventions decoded on the plain model and returned the clean
    continuation: the knockout silently reached nothing."""
    prefix = trace.ids[: trace.prompt_len + 4]
    ko = Knockout([trace.prompt_len + 1])
    with pytest.raises(wb.WorkbenchError, match="hooked=False decodes on the plain model") as e:
        wb.ablation.greedy_continue(
            toy_llama, prefix, interventions=[ko], max_new_tokens=3, hooked=False
        )
    assert "hooked=True" in e.value.fix
    clean = wb.ablation.greedy_continue(toy_llama, prefix, max_new_tokens=3, hooked=False)
    assert torch.equal(
        clean, wb.ablation.greedy_continue(toy_llama, prefix, max_new_tokens=3, hooked=True)
    )


def test_answer_logprob_takes_arrays_and_refuses_what_it_would_misread(toy_llama, trace):
    """NumPy or list logits were a raw AttributeError, float ids a raw IndexError; a
    position listed twice counted twice, a [2 pos] batch of ids was read as one sequence,
    and NaN logits gave a NaN log-probability without a word."""
    logprob = wb.ablation.answer_logprob
    clean = logits_of(toy_llama, trace.ids)
    span = [len(trace) - 2, len(trace) - 1]
    want = logprob(clean, trace.ids, span)
    lp = torch.log_softmax(clean.double(), -1)
    assert want == pytest.approx(sum(float(lp[p - 1, trace.ids[p]]) for p in span))
    assert logprob(clean.numpy(), trace.ids.tolist(), span) == pytest.approx(want)
    assert logprob(clean.tolist(), trace.ids[None], span) == pytest.approx(want)
    cases = [
        ((clean, trace.ids.float(), span), "integer token ids"),
        ((clean, trace.ids, [span[0], span[0]]), "more than once"),
        ((clean, torch.stack([trace.ids, trace.ids])[:, ::2], [3]), "one sequence"),
        ((clean * float("nan"), trace.ids, span), "hold NaN"),
        (("logits", trace.ids, span), "arrays of numbers"),
        ((clean[:, :2], trace.ids, span), "vocabulary"),
    ]
    for args, match in cases:
        with pytest.raises(wb.WorkbenchError, match=match):
            logprob(*args)


def test_kl_per_position_reads_zero_probabilities_and_refuses_nan(toy_llama, trace):
    """A token both logits rule out (-inf) made every KL NaN (0 * (-inf + inf)), NaN
    logits gave NaN KL without a word, and a string was a raw TypeError from torch."""
    kl = wb.ablation.kl_per_position
    clean = logits_of(toy_llama, trace.ids)
    ablated = logits_of(toy_llama, trace.ids, [Knockout([trace.prompt_len])])
    pl, n = trace.prompt_len, len(trace)
    lp, lq = torch.log_softmax(clean.double(), -1), torch.log_softmax(ablated.double(), -1)
    want = (lp.exp() * (lp - lq)).sum(-1)[pl - 1 : n - 1]
    torch.testing.assert_close(kl(clean, ablated, pl)[pl - 1 : n - 1], want)
    # a token ruled out by both: the KL over the others, as if it had no entry at all
    out = torch.zeros(clean.shape[1], dtype=torch.bool)
    out[3] = True
    masked = kl(clean.masked_fill(out, -math.inf), ablated.masked_fill(out, -math.inf), pl)
    keep = ~out
    others = kl(clean[:, keep], ablated[:, keep], pl)
    torch.testing.assert_close(masked[pl - 1 : n - 1], others[pl - 1 : n - 1])
    # ruled out by the ablation alone: infinite, as KL is
    assert torch.isinf(kl(clean, ablated.masked_fill(out, -math.inf), pl)[pl - 1 : n - 1]).all()
    bad = ablated.clone()
    bad[pl + 1, 0] = float("nan")
    with pytest.raises(wb.WorkbenchError, match="ablated logits hold NaN in 1 response row"):
        kl(clean, bad, pl)
    with pytest.raises(wb.WorkbenchError, match="arrays of numbers"):
        kl("clean", "ablated", pl)


def test_perturb_position_refuses_logits_that_are_no_array(toy_llama, trace):
    """A string as logits was a raw TypeError from torch.as_tensor."""
    with pytest.raises(wb.WorkbenchError, match="logits must be an array of numbers"):
        perturb_position(toy_llama, trace, trace.prompt_len + 1, logits="x", max_new_tokens=1)
