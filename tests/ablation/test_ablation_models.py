"""Ablations on real models: the tiny reasoner when it is trained, else SmolLM2-135M.

Short traces (the tasks' reference solutions, no chat template) keep each test to seconds.
No accuracy claims: only that effects are finite and the summary's intervals hold their
point estimates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.ablation import (
    Knockout,
    logits_of,
    perturb_position,
    run_ablations,
    summarize,
)
from workbench.models import list_models
from workbench.tasks import get_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(request):
    """The tiny reasoner if its checkpoint exists, else the default model."""
    info = {m.name: m for m in list_models()}["tiny-reasoner"]
    return request.getfixturevalue("tiny" if info.available else "smol")


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


def test_effects_are_finite_and_intervals_hold_estimates(model, setup):
    task, problems, traces, analyses = setup
    tiny = getattr(model, "workbench_name", None) == "tiny-reasoner"
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
    assert len(df) == len(traces) * 4  # set, random, nearby, low-FAI
    for col in ["kl_mean", "kl_max", "delta_logp", "logp_clean"]:
        assert np.isfinite(df[col]).all(), col
    assert (df["kl_mean"] >= 0).all()
    for metric in ["kl_mean", "delta_logp", *(["correct_ablated"] if tiny else [])]:
        s = summarize(df, metric, n_boot=500, seed=0)
        assert len(s) == 7
        assert np.isfinite(s[["estimate", "lo", "hi"]].to_numpy()).all()
        assert ((s["lo"] <= s["estimate"]) & (s["estimate"] <= s["hi"])).all()


def test_perturbation_on_a_real_model(model, setup):
    _, _, traces, _ = setup
    tr = traces[0]
    r = perturb_position(model, tr, tr.prompt_len + 2, top_k=2, max_new_tokens=6)
    assert len(r["alternatives"]) == 2 and r["token"] not in r["alternatives"]
    assert all(0 <= j <= 1 for j in r["jaccards"])
