"""GRPO with rhythm credit beyond the Llama family: one step on each architecture.

Tiny random checkpoints (conftest's ``make_toy``; cases of the shared matrix,
tests/toy_architectures.py) are trained for one step
by the workbench's own loop (``wb.rl.train`` pointed at the checkpoint folder): 2 prompts,
2 completions each, completions of at most 16 tokens, the coupled credit on every layer.
Random weights never solve a task, so the task's reward is replaced by a fixed 1/0 pattern
within each group: the advantages are then non-zero and the step really moves the weights.

A step must either finish with a finite loss, a finite non-zero gradient, finite credit
weights (some amplified) and finite moved weights, the fused credit (inside the update
forward) and the standalone pass agreeing; or be refused, before the run folder is
written, with a `WorkbenchError` that names the missing feature (GPT-2 applies attention
dropout in training, which the fused credit cannot reproduce).

`test_fused_credit_equals_the_standalone_pass_with_sliding_windows` mirrors
tests/rl/test_credit.py's check of the fused credit against `rollout_gammas` on
sliding-window and soft-capped models, with prompts longer than the window.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from toy_architectures import build  # tests/toy_architectures.py

from workbench.attention import CreditParams
from workbench.models import sampler
from workbench.rl import GRPOConfig, rollout_gammas, train
from workbench.rl.credit import FusedCredit
from workbench.rl.forward import completion_logits, rollout_batch
from workbench.rl.trainer import GRPORun
from workbench.trace import sample_completions

pytestmark = pytest.mark.slow

NO_DROPOUT = dict(attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)

#: ``{id: (case of the shared matrix, extra config overrides)}``.
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "gemma2-softcap": ("gemma2-softcap", {}),
    "gemma3-full-then-sliding": ("gemma3-full-then-sliding", {}),
    "gpt2": ("gpt2", {}),  # attn_pdrop 0.1 by default
    "gpt2-no-dropout": ("gpt2", NO_DROPOUT),
    "phi3": ("phi3", {}),
    "mistral-sliding": ("mistral-sliding", {}),
    "qwen2-full-then-sliding": ("qwen2-full-then-sliding", {}),
    "qwen3": ("qwen3", {}),
    "gpt-neox": ("gpt-neox", {}),
    "olmo2": ("olmo2", {}),
}

TINY = dict(
    task="arithmetic",
    credit=CreditParams(strategy="coupled", layers="all"),
    max_steps=1,
    num_generations=2,
    per_device_train_batch_size=4,
    max_completion_length=16,
    eval_size=1,
    eval_samples=0,
    eval_every=0,
    save_every=1,
    learning_rate=1e-3,
)


@pytest.fixture(scope="module")
def toys(make_toy):
    """``toys(arch_id)``: the bridge of that case's checkpoint (built once per module)."""
    cache: dict[str, Any] = {}

    def get(arch_id: str):
        if arch_id not in cache:
            case, extra = ARCHS[arch_id]
            cache[arch_id] = build(make_toy, case, **extra)
        return cache[arch_id]

    return get


def folder_of(bridge: Any) -> str:
    return sampler(bridge).config._name_or_path


@pytest.fixture
def half_rewarded(monkeypatch):
    """The task's reward replaced by 1, 0, 1, 0, ... (one rewarded completion per group of
    2), so every group has a non-zero advantage whatever random weights generate."""

    def scores(self, problems, completions, n):
        return [float(i % 2 == 0) for i in range(len(completions))]

    monkeypatch.setattr(GRPORun, "_scores", scores)


def finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


TRAINED = [a for a in ARCHS if a != "gpt2"]


@pytest.mark.parametrize("arch_id", TRAINED)
def test_one_grpo_step_on_every_architecture(toys, tmp_path, half_rewarded, arch_id):
    """One GRPO step with the coupled credit (fused into the update forward) finishes with
    a finite loss, a finite non-zero gradient norm, finite credit weights of which some are
    amplified, and finite weights that moved; the standalone credit pass
    (``fused_credit=False``) gives the same weights, loss and credit."""
    folder = folder_of(toys(arch_id))
    before = {k: v.clone() for k, v in sampler(toys(arch_id)).state_dict().items()}
    runs = {}
    for fused in (True, False):
        cfg = GRPOConfig(model=folder, fused_credit=fused, **TINY)
        runs[fused] = train(cfg, out=tmp_path / str(fused), progress=False)
    row = runs[True].metrics[-1]
    assert runs[True].status == "finished" and row["step"] == 1
    assert finite(row["loss"]) and finite(row["grad_norm"]) and row["grad_norm"] > 0
    assert finite(row["gamma_mean"]) and row["gamma_mean"] >= 1.0
    assert 0 < row["gamma_amplified"] < 1, "the credit must amplify some tokens, not all"
    after = runs[True].policy.state_dict()
    assert all(bool(torch.isfinite(v).all()) for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before), "weights must move"
    alone = runs[False].metrics[-1]
    for key in ("gamma_mean", "gamma_amplified", "reward", "completion_length"):
        assert alone[key] == pytest.approx(row[key], rel=1e-6), key
    assert alone["loss"] == pytest.approx(row["loss"], rel=1e-4, abs=1e-7)
    other = runs[False].policy.state_dict()
    for k in after:
        torch.testing.assert_close(other[k], after[k], rtol=1e-4, atol=1e-5)


def test_gpt2_attention_dropout_trains_with_the_standalone_credit(toys, tmp_path, half_rewarded):
    """GPT-2 applies attention dropout in training (``attn_pdrop`` 0.1), which the fused
    credit cannot reproduce (it failed at the first update, after the run folder was
    written): the run then takes the standalone pass, as the TRL adapter does, and is the
    run of ``fused_credit=False``. Plain GRPO trains the same model too."""
    folder = folder_of(toys("gpt2"))
    runs = {}
    for name, changes in {
        "default": {},
        "alone": dict(fused_credit=False),
        "plain": dict(strategy="none"),
    }.items():
        runs[name] = train(
            GRPOConfig(model=folder, **TINY).replace(**changes),
            out=tmp_path / name,
            progress=False,
        )
        row = runs[name].metrics[-1]
        assert finite(row["loss"]) and finite(row["grad_norm"]) and finite(row["gamma_mean"])
        assert not runs[name].fuses_credit
    assert runs["default"].metrics[-1]["gamma_amplified"] > 0
    same = ("loss", "grad_norm", "gamma_mean", "gamma_amplified", "reward")
    assert [runs["default"].metrics[-1][k] for k in same] == [
        runs["alone"].metrics[-1][k] for k in same
    ]
    a, b = runs["default"].policy.state_dict(), runs["alone"].policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fused = GRPOConfig(model=folder_of(toys("gpt2-no-dropout")), **TINY)
    assert GRPORun(fused, tmp_path / "x", progress=False).fuses_credit


def test_a_run_with_dropout_resumes_exactly(toys, tmp_path, half_rewarded):
    """GPT-2's dropout draws its masks in the update forward: they are seeded by the run's
    seed and step like every other draw, so a run interrupted after step 1 and resumed
    ends with the uninterrupted run's weights (it drew from the global RNG before)."""
    from workbench.rl import resume

    cfg = GRPOConfig(model=folder_of(toys("gpt2")), **TINY).replace(max_steps=2)
    full = train(cfg, out=tmp_path / "full", progress=False)

    def interrupt_at_1(run, row):
        if row.get("step") == 1:
            torch.rand(3)  # the caller's RNG moves on; the run's draws must not follow it
            raise KeyboardInterrupt

    part = train(cfg, out=tmp_path / "part", progress=False, callbacks=[interrupt_at_1])
    assert part.status == "interrupted" and part.step == 1
    resumed = resume(tmp_path / "part", progress=False)
    a, b = full.policy.state_dict(), resumed.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights must equal the full run's"
    assert [r["grad_norm"] for r in resumed.metrics[1:]] == [
        r["grad_norm"] for r in full.metrics[1:]
    ]


@pytest.mark.parametrize(
    "arch_id", ["mistral-sliding", "qwen2-full-then-sliding", "gemma2-softcap"]
)
def test_fused_credit_equals_the_standalone_pass_with_sliding_windows(toys, arch_id):
    """As tests/rl/test_credit.py on the tiny reasoner: the credit weights the native
    update computes inside its training forward (shared prompts, completions on their KV
    cache, train mode, gradients on) equal `rollout_gammas`'s standalone pass over the
    bridge, for every strategy that reads attention, on prompts longer than the sliding
    window (of two lengths) and completions that cross it."""
    bridge = toys(arch_id)
    policy = sampler(bridge)
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(4, 60, (n,), generator=gen).tolist() for n in (30, 21)]
    torch.manual_seed(0)
    completions = sample_completions(bridge, prompts, num_generations=3, max_new_tokens=40)
    completions[1] = []  # an empty completion keeps its row of ones
    rollout_prompts = [prompts[i // 3] for i in range(len(completions))]
    amplified, was_training = False, policy.training
    try:
        for strategy in ("local", "global", "coupled", "random", "entropy", "bottom-global"):
            credit = CreditParams(strategy=strategy, layers="all")
            want = rollout_gammas(bridge, rollout_prompts, completions, credit, seed=7)
            batch = rollout_batch(prompts, completions, 3, slice(0, len(completions)))
            fused = FusedCredit(policy, credit, batch.spans, batch.seqs)
            policy.train()
            logits = completion_logits(policy, batch, fused)
            assert logits.requires_grad, "the update forward keeps its gradients"
            got = fused.gammas(batch.width, seed=7, logits=logits)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=strategy)
            assert bool(torch.isfinite(got).all()) and (want[1] == 1.0).all()
            amplified |= bool((want > 1.0).any())
    finally:
        policy.train(was_training)
    assert amplified, "the test must exercise amplified positions"
