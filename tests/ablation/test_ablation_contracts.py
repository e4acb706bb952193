"""What the ablation API promises at its edges, on toy models (random 2-layer checkpoints).

- A knockout either changes the model's computation or is refused: never a silent 0.
- A target set of a fixed size leaves room for a control that differs from it.
- `summarize` intervals hold their coverage at the few traces used in practice.
- ``kl_mean`` / ``kl_max`` cover every row the intervention can reach.
- Bad input is a `WorkbenchError` that says what to pass, never a raw error or a no-op.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import workbench as wb
from workbench.ablation import (
    Knockout,
    ResidAblation,
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
from workbench.intervals import t_ci
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
    }
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
