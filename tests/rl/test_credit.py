"""Fused credit (inside the update forward) against the standalone credit pass.

The fused weights come from the policy's own training forward (gradients on, train mode,
sdpa after the last credit layer); the standalone ones from a separate no-grad pass over
a bridge. On the same rollouts and weights they must be the same, strategy by strategy.
"""

from __future__ import annotations

import pytest
import torch

from workbench.attention.credit import STRATEGIES
from workbench.attention.params import CreditParams
from workbench.models import bridge_model, load_hf
from workbench.rl.credit import FusedCredit, rollout_gammas
from workbench.rl.forward import completion_logits, rollout_batch
from workbench.trace import encode_prompt, sample_completions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rollouts():
    from workbench.models import list_models
    from workbench.tasks import get_task

    if not {m.name: m for m in list_models()}["tiny-reasoner"].available:
        pytest.skip("the tiny reasoner checkpoint is not shipped")
    policy, tok = load_hf("tiny-reasoner", device="cpu")
    bridge = bridge_model(policy, tok)
    problems = get_task("countdown").generate(2, seed=3)
    prompts = [encode_prompt(bridge, p.prompt, chat=False) for p in problems]
    torch.manual_seed(0)
    completions = sample_completions(
        policy, prompts, tokenizer=tok, num_generations=4, max_new_tokens=48, temperature=1.0
    )
    completions[1] = []  # an empty completion keeps its row of ones and uses no seed
    return policy, bridge, [prompts[i // 4] for i in range(8)], completions


def fused_gammas(policy, credit, prompts, completions, seed):
    """TRL's way: ``prompt + completion`` rows (here one forward per group) with
    gradients, then `gammas`."""
    width = max(len(c) for c in completions)
    out, k = torch.ones(len(completions), width), 0
    policy.train()
    for g in range(0, len(completions), 4):
        rows, p = completions[g : g + 4], prompts[g]
        t = max(1, max(len(c) for c in rows))
        ids = torch.zeros(4, len(p) + t, dtype=torch.long)
        for r, c in enumerate(rows):
            ids[r, : len(p) + len(c)] = torch.tensor(p + c)
        fused = FusedCredit(
            policy, credit, [(0, len(p) + len(c), len(p)) for c in rows],
            [ids[r, : len(p) + len(c)] for r, c in enumerate(rows)],
        )  # fmt: skip
        with fused:
            logits = policy(ids).logits[:, len(p) - 1 : -1]
        assert logits.requires_grad, "the update forward keeps its gradients"
        out[g : g + 4, :t] = fused.gammas(t, seed=seed + k, logits=logits)
        k += sum(1 for c in rows if c)
    return out


def shared_prompt_gammas(policy, credit, prompts, completions, seed):
    """The native loop's way: each group's prompt once, the completions on its KV cache,
    the credit collected on the completion rows (`workbench.rl.forward`)."""
    batch = rollout_batch(prompts[::4], completions, 4, slice(0, len(completions)))
    fused = FusedCredit(policy, credit, batch.spans, batch.seqs)
    policy.train()
    logits = completion_logits(policy, batch, fused)
    assert logits.requires_grad, "the update forward keeps its gradients"
    return fused.gammas(batch.width, seed=seed, logits=logits)


@pytest.mark.parametrize("layout", ["full rows", "shared prompts"])
@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "none"])
def test_fused_credit_equals_the_standalone_pass(rollouts, strategy, layout):
    policy, bridge, prompts, completions = rollouts
    credit = CreditParams(strategy=strategy)
    reference = rollout_gammas(bridge, prompts, completions, credit, seed=7)
    way = fused_gammas if layout == "full rows" else shared_prompt_gammas
    fused = way(policy, credit, prompts, completions, seed=7)
    assert torch.equal(fused, reference)
    assert (reference[1] == 1.0).all()
    if strategy != "entropy":  # entropy can leave a short rollout without amplified tokens
        assert (reference > 1.0).any(), "the test must exercise amplified positions"


def test_the_fused_forward_is_the_training_forward(rollouts):
    """Same logits (to rounding) and the same gradients as a plain sdpa training forward."""
    policy, _, prompts, completions = rollouts
    p, c = prompts[0], completions[0]
    ids = torch.tensor([p + c])
    policy.train()
    policy.zero_grad()
    plain = policy(ids).logits
    plain.sum().backward()
    want = {n: q.grad.clone() for n, q in policy.named_parameters() if q.grad is not None}
    policy.zero_grad()
    fused = FusedCredit(
        policy, CreditParams(strategy="coupled"), [(0, len(p + c), len(p))], [ids[0]]
    )
    with fused:
        got = policy(ids).logits
    got.sum().backward()
    torch.testing.assert_close(got, plain, rtol=1e-4, atol=1e-4)
    for n, q in policy.named_parameters():
        if n in want:  # float rounding of eager vs sdpa: relative to the gradient's size
            assert float((q.grad - want[n]).norm() / want[n].norm()) < 1e-4, n
    policy.zero_grad()
