"""Ablations on real models: the tiny reasoner when it is trained, else SmolLM2-135M.

Short traces (the tasks' reference solutions, no chat template) keep each test to seconds.
No accuracy claims: a knockout of the top anchors moves later predictions measurably, an
intervention that changes nothing measures exactly zero, effects are finite and the
summary's intervals hold their point estimates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.ablation import (
    Knockout,
    ResidAblation,
    logits_of,
    measure,
    perturb_position,
    resid_cache,
    run_ablations,
    summarize,
)
from workbench.models import list_models
from workbench.tasks import get_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def is_tiny():
    """Whether the tiny reasoner's checkpoint exists (then `model` is the tiny reasoner)."""
    return {m.name: m for m in list_models()}["tiny-reasoner"].available


@pytest.fixture(scope="module")
def model(request, is_tiny):
    """The tiny reasoner if its checkpoint exists, else the default model."""
    return request.getfixturevalue("tiny" if is_tiny else "smol")


@pytest.fixture(scope="module")
def setup(model):
    task = get_task("countdown")
    problems = task.generate(3, split="test", seed=0)
    traces = [wb.Trace.from_text(model, p.prompt, p.solution, chat=False) for p in problems]
    analyses = [wb.analyze(model, t, layers="middle") for t in traces]
    return task, problems, traces, analyses


def test_knockout_of_nothing_on_the_default_model(smol):
    tr = wb.Trace.from_text(smol, "2+2?", "4", chat=False)
    clean = logits_of(smol, tr.ids)
    torch.testing.assert_close(logits_of(smol, tr.ids, [Knockout([])]), clean, atol=1e-6, rtol=0)
    # every earlier key but the sink, in one layer with grouped-query attention
    n, store = len(tr), {}

    def grab(key):
        def hook(x, hook=None):
            store[key] = x[0].detach().double().clone()

        return hook

    layer = smol.cfg.n_layers // 2
    name = f"blocks.{layer}.attn"
    smol.run_with_hooks(
        tr.ids[None],
        fwd_hooks=[
            (f"{name}.hook_attn_scores", grab("s")),
            *Knockout(range(1, n), layers=[layer]).fwd_hooks(smol),
            (f"{name}.hook_pattern", grab("p")),
        ],
    )
    t = torch.arange(1, n)
    two = torch.stack([store["s"][:, t, 0], store["s"][:, t, t]], -1).softmax(-1)
    torch.testing.assert_close(store["p"][:, t, 0], two[..., 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(store["p"][:, t, t], two[..., 1], atol=1e-6, rtol=0)
    assert float(store["p"].sum(-1).sub(1).abs().max()) < 1e-6


def test_effects_are_finite_and_intervals_hold_estimates(model, setup, is_tiny):
    task, problems, traces, analyses = setup
    tiny = is_tiny
    df = run_ablations(
        model,
        traces,
        analyses=analyses,
        families=["anchors"],
        n_random=1,
        size=3,
        task=task,
        problems=problems,
        max_new_tokens=48 if tiny else 0,  # greedy answers only on the fast tiny model
        progress=False,
    )
    if tiny:
        assert df["correct_ablated"].isin([0.0, 1.0]).all()
        # each ablated answer against the clean one from the same cut
        assert (df["delta_correct"] == df["correct_ablated"] - df["correct_clean"]).all()
    assert len(df) == len(traces) * 4  # set, random, nearby, low-FAI
    for col in ["kl_mean", "kl_max", "delta_logp", "logp_clean"]:
        assert np.isfinite(df[col]).all(), col
    # rows before the first ablated position cannot see the knockout: exactly unchanged
    for row in df.itertuples():
        before = row.kl_curve[row.prompt_len - 1 : row.first + 1]
        assert np.all(before < 1e-9), (row.target, before.max())
        assert row.kl_max >= row.kl_mean > 0, row.target
    # the top-3 anchors of every trace, knocked out in every layer, move later predictions
    # (measured 0.56-1.38 nats per row on the tiny reasoner, 0.77-1.04 on SmolLM2)
    targets = df[df["kind"] == "target"]
    assert len(targets) == len(traces)
    assert (targets["kl_mean"] > 0.1).all(), targets[["trace", "positions", "kl_mean"]]
    assert (targets["kl_max"] > 1.0).all(), targets[["trace", "positions", "kl_max"]]
    continuations = ["correct_ablated", "delta_correct"] if tiny else []
    for metric in ["kl_mean", "delta_logp", *continuations]:
        s = summarize(df, metric, n_boot=500, seed=0)
        assert len(s) == 7 and np.isfinite(s["estimate"]).all()
        # Bounds are NaN only where the per-trace values do not vary (outcomes that agree)
        bounded = s.dropna(subset=["lo", "hi"])
        assert (
            (bounded["lo"] <= bounded["estimate"]) & (bounded["estimate"] <= bounded["hi"])
        ).all()
        if metric == "correct_ablated":  # the set's outcomes are a proportion: Wilson
            assert (s.loc[s["comparison"] == "set", "interval"] == "wilson").all()
            assert s.loc[s["interval"] == "wilson", ["lo", "hi"]].notna().all().all()
        elif metric == "delta_correct":  # often 0 on every trace: no spread, no bounds
            assert s["estimate"].between(-1, 1).all()
            assert (bounded["lo"] >= -2).all() and (bounded["hi"] <= 2).all()
        else:
            assert len(bounded) == len(s)


def test_perturbation_on_a_real_model(model, setup):
    _, _, traces, _ = setup
    tr = traces[0]
    r = perturb_position(model, tr, tr.prompt_len + 2, top_k=2, max_new_tokens=6)
    assert len(r["alternatives"]) == 2 and r["token"] not in r["alternatives"]
    assert all(0 <= j <= 1 for j in r["jaccards"])


def test_an_intervention_that_changes_nothing_measures_zero(model, setup):
    """The same anchors, through the same hooks, with nothing changed: the residual stream
    resampled from the trace itself. Every effect is 0, while the real knockout of those
    positions measures the runner's numbers. (A knockout in no head, ``heads=[]``, is
    refused: it is a no-op nobody means.)"""
    _, _, traces, analyses = setup
    layer = model.cfg.n_layers // 2
    for tr, an in zip(traces, analyses, strict=True):
        pos = an.anchors[:3]
        clean = logits_of(model, tr.ids)
        same = resid_cache(model, tr, layer)
        iv = ResidAblation(pos, layers=layer, mode="resample", reference=same)
        m = measure(model, tr, iv, clean_logits=clean)
        assert m["kl_mean"] == m["kl_max"] == 0.0, (iv, m["kl_mean"], m["kl_max"])
        assert m["delta_logp"] == 0.0, (iv, m["delta_logp"])
        real = measure(model, tr, Knockout(pos), clean_logits=clean)
        assert real["kl_mean"] > 0.1 and real["kl_max"] > 1.0, (pos, real["kl_mean"])
