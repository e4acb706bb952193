"""Interventions, target sets and effects on a toy model (random 2-layer Llama, ~40k params).

A model this small loads in about a second and runs a forward pass in milliseconds, so
every property is checked exactly and in every layer; the real-model tests live in
``test_ablation_models.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.ablation import (
    Knockout,
    ResidAblation,
    answer_span,
    bootstrap_ci,
    content_words,
    fwd_hooks,
    greedy_continue,
    intervene,
    jaccard,
    logits_of,
    measure,
    per_position,
    perturb_position,
    perturbation_test,
    resid_cache,
    resid_mean,
    run_ablations,
    summarize,
    target_sets,
)
from workbench.models import sampler
from workbench.tasks import get_task
from workbench.trace import eos_token_ids


@pytest.fixture(scope="module")
def toy(toy_llama):
    return toy_llama


@pytest.fixture(scope="module")
def problems():
    return get_task("countdown").generate(3, split="test", seed=0)


@pytest.fixture(scope="module")
def traces(toy, problems):
    return [wb.Trace.from_text(toy, p.prompt, p.solution) for p in problems]


@pytest.fixture(scope="module")
def trace(traces):
    return traces[0]


def capture(store, key):
    def hook(x, hook=None):
        store[key] = x.detach().clone()

    return hook


# -- knockout --------------------------------------------------------------------------------


def test_knockout_of_nothing_changes_nothing(toy, trace):
    clean = logits_of(toy, trace.ids)
    for iv in [Knockout([]), Knockout([], layers=[1]), ResidAblation([])]:
        np.testing.assert_allclose(logits_of(toy, trace.ids, [iv]), clean, atol=1e-6, rtol=0)
    # a knockout of the last position only: no query comes after it
    last = Knockout([len(trace) - 1])
    np.testing.assert_allclose(logits_of(toy, trace.ids, [last]), clean, atol=1e-6, rtol=0)


def test_knockout_all_but_sink_is_closed_form(toy, trace):
    """Knocking out every key 1..N-1 leaves each row t with keys {0, t} only.

    Closed form: ``pattern[t] = softmax(scores[t, [0, t]])`` on those two keys, 0 elsewhere
    (row 0 keeps its one key). Checked in every layer against the scores of the same pass.
    """
    n = len(trace)
    ko = Knockout(range(1, n), layers="all")
    store: dict = {}
    hooks = []
    for layer in range(toy.cfg.n_layers):  # capture the scores before the knockout edits them
        hooks.append((f"blocks.{layer}.attn.hook_attn_scores", capture(store, ("s", layer))))
    hooks += ko.fwd_hooks(toy)
    for layer in range(toy.cfg.n_layers):
        hooks.append((f"blocks.{layer}.attn.hook_pattern", capture(store, ("p", layer))))
    toy.run_with_hooks(trace.ids[None], fwd_hooks=hooks)
    t = torch.arange(n)
    for layer in range(toy.cfg.n_layers):
        s, p = store[("s", layer)][0].double(), store[("p", layer)][0].double()
        expect = torch.zeros_like(p)
        two = torch.stack([s[:, t, 0], s[:, t, t]], -1).softmax(-1)  # [head, t, 2]
        expect[:, t, 0] = two[..., 0]
        expect[:, t[1:], t[1:]] = two[:, 1:, 1]
        expect[:, 0, 0] = 1.0
        torch.testing.assert_close(p, expect, atol=1e-6, rtol=0)


def test_knockout_only_blocks_later_queries(toy, trace):
    k = 7
    store_c: dict = {}
    store_k: dict = {}
    name = "blocks.0.attn.hook_pattern"
    toy.run_with_hooks(trace.ids[None], fwd_hooks=[(name, capture(store_c, 0))])
    toy.run_with_hooks(
        trace.ids[None],
        fwd_hooks=[*Knockout([k], layers=[0]).fwd_hooks(toy), (name, capture(store_k, 0))],
    )
    c, a = store_c[0][0], store_k[0][0]
    torch.testing.assert_close(a[:, : k + 1], c[:, : k + 1])  # rows up to k untouched
    assert torch.all(a[:, k + 1 :, k] == 0)  # later rows give k no weight
    torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))  # renormalised
    assert not torch.allclose(a[:, k + 1 :], c[:, k + 1 :])


def test_knockout_selected_heads_and_layers(toy, trace):
    store: dict = {}
    name = "blocks.1.attn.hook_pattern"
    ko = Knockout([5], layers=[1], heads=[2])
    toy.run_with_hooks(trace.ids[None], fwd_hooks=[*ko.fwd_hooks(toy), (name, capture(store, 0))])
    p = store[0][0]
    assert torch.all(p[2, 6:, 5] == 0)
    assert torch.all(p[[0, 1, 3], 6:, 5] > 0)
    assert [h for h, _ in ko.fwd_hooks(toy)] == ["blocks.1.attn.hook_attn_scores"]


def test_sink_is_refused_unless_asked(toy):
    with pytest.raises(wb.WorkbenchError, match="attention sink"):
        Knockout([0, 3])
    with pytest.raises(wb.WorkbenchError, match="attention sink"):
        ResidAblation([0])
    assert Knockout([0, 3], allow_sink=True).positions == (0, 3)
    with pytest.raises(wb.WorkbenchError, match="negative"):
        Knockout([-1])
    with pytest.raises(TypeError):  # WorkbenchError outside pytest's runtime type checks
        Knockout(["a"])
    assert Knockout(np.array([4, 2])).positions == (2, 4)
    with pytest.raises(wb.WorkbenchError, match="out of range"):
        Knockout([3], layers=[5]).fwd_hooks(toy)


# -- residual ablation -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
def test_residual_ablation_touches_only_chosen_positions(toy, traces, mode):
    tr = traces[0]
    layer, pos = 1, [tr.prompt_len + 2, tr.prompt_len + 6]  # differ between traces
    ref = None
    if mode == "mean":
        ref = resid_mean(toy, traces, layer)
    if mode == "resample":
        ref = resid_cache(toy, traces[1], layer)
    iv = ResidAblation(pos, layers=layer, mode=mode, reference=ref)
    pre, post = f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_resid_post"
    clean: dict = {}
    abl: dict = {}
    toy.run_with_hooks(
        tr.ids[None], fwd_hooks=[(pre, capture(clean, 0)), (post, capture(clean, 1))]
    )
    toy.run_with_hooks(
        tr.ids[None],
        fwd_hooks=[*iv.fwd_hooks(toy), (pre, capture(abl, 0)), (post, capture(abl, 1))],
    )
    others = [p for p in range(len(tr)) if p not in pos]
    torch.testing.assert_close(abl[0][0, others], clean[0][0, others], atol=0, rtol=0)
    if mode == "zero":
        want = torch.zeros(len(pos), toy.cfg.d_model)
    elif mode == "mean":
        want = ref[layer][None].expand(len(pos), -1)
    else:
        want = ref[layer][pos]
    torch.testing.assert_close(abl[0][0, pos], want)
    # the layer's output: unchanged before the first ablated position, changed after it
    torch.testing.assert_close(abl[1][0, : pos[0]], clean[1][0, : pos[0]], atol=0, rtol=0)
    assert not torch.allclose(abl[1][0, pos[-1] + 1 :], clean[1][0, pos[-1] + 1 :])


def test_residual_ablation_needs_reference_and_known_mode(toy, trace):
    with pytest.raises(wb.WorkbenchError, match="needs a reference"):
        ResidAblation([3], mode="mean")
    with pytest.raises(wb.WorkbenchError, match="unknown"):
        ResidAblation([3], mode="noise")
    bad = ResidAblation([3], layers=0, mode="mean", reference=torch.zeros(5))
    with pytest.raises(wb.WorkbenchError, match="d_model"):
        bad.fwd_hooks(toy)
    short = ResidAblation([30], layers=0, mode="resample", reference=torch.zeros(10, 32))
    with pytest.raises(wb.WorkbenchError, match="beyond the source"):
        short.fwd_hooks(toy)


def test_hooks_compose_and_context_manager_matches(toy, trace):
    ko, ab = Knockout([5, 9]), ResidAblation([12], layers=0)
    both = logits_of(toy, trace.ids, [ko, ab])
    with intervene(toy, ko, ab):
        inside = toy(trace.ids[None])[0]
    torch.testing.assert_close(inside, both)
    assert len(fwd_hooks(toy, ko, ab)) == toy.cfg.n_layers + 1
    after = toy(trace.ids[None])[0]  # the hooks are gone after the block
    torch.testing.assert_close(after, logits_of(toy, trace.ids))


@pytest.mark.parametrize("kind", ["clean", "knockout", "resid"])
def test_greedy_continuation_is_the_argmax_of_full_passes(toy, trace, kind):
    """Clean continuations (the plain sampler, KV cache) and hooked ones (one full pass per
    token) both equal the step-by-step argmax of full uncached passes of the bridge."""
    ivs = {
        "clean": [],
        "knockout": [Knockout([5, 9, 12])],
        "resid": [ResidAblation([5, 9, 14], layers=1)],
    }[kind]
    prefix = trace.ids[:15]
    if ivs:  # the intervention really changes what the model computes
        assert not torch.allclose(logits_of(toy, prefix, ivs), logits_of(toy, prefix))
    eos = set(eos_token_ids(toy.tokenizer, sampler(toy)))
    seq = prefix
    for _ in range(8):
        nxt = int(logits_of(toy, seq, ivs)[-1].argmax())
        seq = torch.cat([seq, torch.tensor([nxt])])
        if nxt in eos:
            break
    for hooked in (None, True):
        new = greedy_continue(toy, prefix, interventions=ivs, max_new_tokens=8, hooked=hooked)
        assert new.tolist() == seq[15:].tolist()


# -- target sets -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analysis(toy, trace):
    # The paper's FAI (every response token that has a later row): this short trace's full
    # sets then fall on both sides of the nearby-control rule (see below).
    return wb.analyze(toy, trace, fai_min_rows=1)


@pytest.mark.parametrize("size", [None, 3])
def test_controls_have_the_size_of_their_set(analysis, trace, size):
    span, _ = answer_span(trace)
    sets = target_sets(analysis, n_random=4, seed=7, size=size, exclude=span)
    fams = {s.family for s in sets}
    assert {"anchors", "preplan"} <= fams
    metric = {"anchors": analysis.fai, "dominated": analysis.fai}
    metric |= {"preplan": analysis.delta, "intro": analysis.delta}
    n_nearby = {}
    for fam in fams:
        group = [s for s in sets if s.family == fam]
        target = [s for s in group if s.kind == "target"]
        assert len(target) == 1
        m = len(target[0])
        assert [len(s) for s in group] == [m] * len(group)
        assert sum(s.kind == "random" for s in group) == 4
        # a nearby control per seed exactly when the family's pool (positions where its
        # metric is defined, not 0, not excluded) has m positions outside the set, else none
        values = metric[fam].double().numpy()
        pool = {int(p) for p in np.flatnonzero(~np.isnan(values))} - {0, *span}
        free = len(pool - set(target[0].positions))
        n_nearby[fam] = sum(s.kind == "nearby" for s in group)
        assert n_nearby[fam] == (4 if free >= m else 0), (fam, m, free)
        for s in group:
            if s.kind == "nearby":
                assert not set(s.positions) & set(target[0].positions)
        # a low-FAI control exactly when the FAI pool has m positions outside the set; it
        # never shares a position with the set it is compared with
        fai = analysis.fai.double().numpy()
        fai_free = {int(p) for p in np.flatnonzero(~np.isnan(fai))} - {0, *span}
        fai_free -= set(target[0].positions)
        low = [s for s in group if s.kind == "low_fai"]
        assert len(low) == (1 if len(fai_free) >= m else 0), (fam, m, len(fai_free))
        assert all(set(s.positions) <= fai_free for s in low)
        for s in group:
            assert 0 not in s.positions
            assert not set(s.positions) & set(span)
            assert all(p >= trace.prompt_len for p in s.positions)
            assert list(s.positions) == sorted(set(s.positions))
    if size is not None:
        assert len(next(s for s in sets if s.name == "anchors")) == size
        assert set(n_nearby.values()) == {4}  # 3 positions always leave 3 free
    else:  # this trace's full sets fall on both sides of the rule
        assert n_nearby["anchors"] == 0 and 4 in n_nearby.values(), n_nearby
    names = [s.name for s in sets]
    assert len(names) == len(set(names))


def test_target_sets_follow_the_analysis(analysis):
    sets = {s.name: s for s in target_sets(analysis, controls=["low_fai"])}
    assert list(sets["anchors"].positions) == analysis.anchors
    assert list(sets["preplan"].positions) == analysis.preplan
    low = sets["low_fai[anchors]"].positions
    fai = analysis.fai.numpy()
    ok = ~np.isnan(fai)
    ok[0] = False
    cut = np.sort(fai[ok])[len(low) - 1]
    assert all(fai[p] <= cut for p in low)  # the lowest FAI values
    again = target_sets(analysis, seed=3)
    assert again == target_sets(analysis, seed=3)  # seeded
    with pytest.raises(wb.WorkbenchError, match="unknown"):
        target_sets(analysis, families=["nope"])


# -- effects ---------------------------------------------------------------------------------


def test_answer_span_is_the_answer(toy, traces, problems):
    for tr, pr in zip(traces, problems, strict=True):
        span, kind = answer_span(tr)
        assert kind == "answer"
        assert "".join(tr.tokens[p] for p in span) == pr.answer
    tr = wb.Trace.from_text(toy, "hi\n", "no marker here")
    span, kind = answer_span(tr, n_last=3)
    assert kind == "last" and span == list(range(len(tr) - 3, len(tr)))


def test_measure_rows_before_the_ablation_are_exact(toy, trace, problems):
    iv = Knockout([20, 25])
    m = measure(toy, trace, iv, task=get_task("countdown"), problem=problems[0], max_new_tokens=4)
    kl = m["kl"]
    assert np.all(np.isnan(kl[: trace.prompt_len - 1])) and np.isnan(kl[-1])
    assert np.all(kl[trace.prompt_len - 1 : 21] < 1e-9)  # rows up to 20 can't see the change
    assert np.isfinite(m["kl_mean"]) and np.isfinite(m["delta_logp"])
    assert m["cut"] == 26 and m["correct_clean"] in (0.0, 1.0)
    assert m["correct_ablated"] in (0.0, 1.0)
    # a knockout of the last position reaches no measured row: refused, not NaN and 0
    with pytest.raises(wb.WorkbenchError, match="can change no measured prediction"):
        measure(toy, trace, Knockout([len(trace) - 1]))


def test_batch_runner_and_summary(toy, traces, problems):
    df = run_ablations(
        toy,
        traces,
        interventions=["knockout", "resid-zero"],
        families=["anchors"],
        size=3,
        n_random=1,
        task=get_task("countdown"),
        problems=problems,
        max_new_tokens=3,
        progress=False,
    )
    assert set(df["trace"]) == {0, 1, 2}
    assert len(df) == 3 * 2 * 4  # traces x interventions x sets
    assert df.groupby(["trace", "family", "intervention"])["n"].nunique().max() == 1
    assert np.isfinite(df["kl_mean"]).all() and np.isfinite(df["delta_logp"]).all()
    for metric in ["kl_mean", "delta_logp", "correct_ablated"]:
        s = summarize(df, metric, n_boot=200)
        assert set(s["comparison"]) >= {"set", "random", "nearby", "low_fai", "set - nearby"}
        bounded = s.dropna(subset=["lo", "hi"])  # NaN only where the values do not vary
        assert (bounded["lo"] <= bounded["estimate"] + 1e-12).all()
        assert (bounded["estimate"] <= bounded["hi"] + 1e-12).all()
        assert metric == "correct_ablated" or len(bounded) == len(s)
    again = summarize(df, n_boot=200)
    assert again.equals(summarize(df, n_boot=200))  # seeded
    long = per_position(df.head(3))
    assert {"pos", "offset", "kl"} <= set(long.columns) and len(long) > 0
    with pytest.raises(wb.WorkbenchError, match="summarisable"):
        summarize(df, "nope")
    with pytest.raises(wb.WorkbenchError, match="unknown interventions"):
        run_ablations(toy, traces, interventions=["ablate"], progress=False)


def test_batch_runner_mean_and_resample(toy, traces):
    df = run_ablations(
        toy,
        traces[:2],
        interventions=["resid-mean", "resid-resample"],
        families=["anchors"],
        controls=["random"],
        n_random=1,
        size=2,
        progress=False,
    )
    assert set(df["intervention"]) == {"resid-mean", "resid-resample"}
    assert np.isfinite(df["kl_mean"]).all()
    assert df["cut"].isna().all()  # no continuation asked for


def test_bootstrap_ci():
    est, lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 10.0], seed=1)
    assert lo <= est <= hi and est == 4.0
    assert bootstrap_ci([1.0, 2.0, 3.0, 10.0], seed=1) == (est, lo, hi)
    est1, lo1, hi1 = bootstrap_ci([5.0])  # one trace: no interval, never a zero-width one
    assert est1 == 5.0 and np.isnan(lo1) and np.isnan(hi1)
    assert all(np.isnan(bootstrap_ci([float("nan")])))


# -- perturbation test -----------------------------------------------------------------------


def test_content_word_jaccard():
    assert content_words("The answer is 72, so 72!") == {"answer", "72"}
    assert jaccard("the cat sat", "a cat sat") == 1.0
    assert jaccard("cat sat", "dog sat") == pytest.approx(1 / 3)
    assert jaccard("the", "a") == 1.0


def test_perturbation_test_runs(toy, traces):
    analyses = [wb.analyze(toy, t) for t in traces]
    trials, summary = perturbation_test(
        toy, traces, analyses, top_k=2, max_new_tokens=4, progress=False
    )
    assert len(trials) == summary["n_trials"] == 3
    assert (trials["high_fai"] >= trials["low_fai"]).all()
    assert trials[["jaccard_high", "jaccard_low"]].apply(lambda c: c.between(0, 1)).all().all()
    assert 0 <= summary["frac_high_more_disruptive"] <= 1
    # The bare means came with no uncertainty, and ties counted as "not more disruptive"
    # without a word: the per-trace difference, its interval and test, and the ties.
    per_trace = (trials["jaccard_low"] - trials["jaccard_high"]).groupby(trials["trace"]).mean()
    assert summary["n_traces"] == 3 and summary["disruption_diff"] == pytest.approx(
        per_trace.mean()
    )
    assert summary["n_ties"] == int((trials["jaccard_high"] == trials["jaccard_low"]).sum())
    assert 0.25 <= summary["disruption_p"] <= 1  # 3 traces: the sign-flip test's floor
    assert "sign-flip" in summary["disruption_test"]
    tr = traces[0]
    r = perturb_position(toy, tr, tr.prompt_len + 1, top_k=3, max_new_tokens=3)
    orig = int(tr.ids[tr.prompt_len + 1])
    assert len(r["jaccards"]) == 3 and r["token"] == tr.tokens[tr.prompt_len + 1]
    assert orig not in [toy.tokenizer.convert_tokens_to_ids(a) for a in r["alternatives"]]
    with pytest.raises(wb.WorkbenchError, match="not a response position"):
        perturb_position(toy, tr, 2)
