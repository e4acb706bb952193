"""The update forward with each group's prompt run once (`workbench.rl.forward`).

Its log-probabilities and gradients must be those of ``prompt + completion`` rows, which
the PPO loss was written for; the architecture matrix
(`tests/attention/test_architectures.py`) checks the logits and the credit statistics
on every architecture, this file the gradients on the tiny reasoner.
"""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.models import load_hf
from workbench.rl.forward import completion_logits, rollout_batch
from workbench.rl.loss import token_logps


def test_rollouts_are_laid_out_with_left_padded_prompts_and_cache_frame_spans():
    batch = rollout_batch([[5, 6, 7], [8]], [[1, 2], [], [3], [4, 4, 4]], 2, slice(0, 4))
    assert batch.prompt_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch.prompt_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.targets.tolist() == [[1, 2, 0], [0, 0, 0], [3, 0, 0], [4, 4, 4]]
    assert batch.mask.sum(1).tolist() == [2, 0, 1, 3]
    # (start, n, prompt_len) in the cache frame: the prompt ends at column 3 in every row.
    assert batch.spans == [(0, 5, 3), (0, 3, 3), (2, 2, 1), (2, 4, 1)]
    assert [s.tolist() for s in batch.seqs][3] == [8, 4, 4, 4]
    later = rollout_batch([[5, 6, 7], [8]], [[1, 2], [], [3], [4, 4, 4]], 2, slice(2, 4))
    assert later.before == 1 and later.prompt_ids.tolist() == [[8]]
    with pytest.raises(ValueError, match="not whole groups of 2"):
        rollout_batch([[5]], [[1], [2], [3]], 2, slice(0, 3))


@pytest.mark.slow
def test_shared_prompts_give_the_rows_log_probs_and_gradients():
    torch.manual_seed(0)
    policy, _ = load_hf("tiny-reasoner", device="cpu")
    policy.train()
    prompts = [torch.randint(4, 60, (n,)).tolist() for n in (26, 21)]
    completions = [torch.randint(4, 60, (n,)).tolist() for n in (30, 12, 0, 35, 7, 30)]
    batch = rollout_batch(prompts, completions, 3, slice(0, 6))

    shared = token_logps(completion_logits(policy, batch), batch.targets)
    (shared * batch.mask).sum().backward()
    got = {n: q.grad.clone() for n, q in policy.named_parameters()}
    policy.zero_grad()
    total = 0.0
    for i, c in enumerate(completions):
        if not c:
            continue
        p = prompts[i // 3]
        logits = policy(torch.tensor([p + c])).logits[:, len(p) - 1 : -1]
        row = token_logps(logits, torch.tensor([c]))
        torch.testing.assert_close(shared[i, : len(c)], row[0], rtol=1e-5, atol=2e-5)
        total = total + row.sum()
    total.backward()
    for n, q in policy.named_parameters():
        assert float((got[n] - q.grad).norm() / q.grad.norm()) < 1e-4, n
    policy.zero_grad()


@pytest.mark.slow
def test_activation_checkpointing_is_refused_rather_than_dropping_the_prompts():
    policy, _ = load_hf("tiny-reasoner", device="cpu")
    policy.train()
    policy.activation_checkpointing_enable()
    batch = rollout_batch([[5, 6, 7]], [[8, 9], [10]], 2, slice(0, 2))
    with pytest.raises(WorkbenchError, match="did not keep the prompts' keys") as info:
        completion_logits(policy, batch)
    assert "activation_checkpointing_disable()" in info.value.fix


@pytest.mark.slow
@pytest.mark.parametrize("case", ["qwen3-next", "jamba"])
def test_hybrid_models_are_refused_by_the_update_forward_with_a_clear_error(hybrid_toy, case):
    """A hybrid model's linear-attention or state-space layers keep a state that the
    repeated key/value cache cannot hold (transformers failed with an IndexError deep in
    its cache): the update forward refuses them by name, before running anything."""
    from workbench.models import sampler

    batch = rollout_batch([[5, 6, 7]], [[1, 2], [3]], 2, slice(0, 2))
    with pytest.raises(WorkbenchError, match="linear_attention layers") as info:
        completion_logits(sampler(hybrid_toy(case)), batch)
    assert "wb.gamma_many" in info.value.fix
