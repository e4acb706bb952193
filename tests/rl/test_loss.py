"""GRPO advantages and the per-token surrogate, on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.rl import grpo_advantages, grpo_loss, token_logps


def test_group_normalised_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = grpo_advantages(rewards, num_generations=4)
    std = torch.tensor([1.0, 0.0, 0.0, 0.0]).std().item()  # unbiased, as TRL
    expected = [(1 - 0.25) / (std + 1e-4)] + [(0 - 0.25) / (std + 1e-4)] * 3 + [0.0] * 4
    assert adv.tolist() == pytest.approx(expected, rel=1e-6)
    assert grpo_advantages(rewards, 4, "none").tolist() == pytest.approx(
        [0.75, -0.25, -0.25, -0.25, 0, 0, 0, 0]
    )


def _trl_reference(logps, old, adv, mask, eps, loss_type):
    """TRL's GRPO loss, written out loop by loop (sequence advantages, no credit)."""
    B, T = len(logps), len(logps[0])
    per_seq, total, count = [], 0.0, 0
    for i in range(B):
        s, n = 0.0, 0
        for t in range(T):
            if not mask[i][t]:
                continue
            r = math.exp(logps[i][t] - old[i][t])
            term = -min(r * adv[i], max(min(r, 1 + eps), 1 - eps) * adv[i])
            s, n = s + term, n + 1
        per_seq.append(s / max(n, 1))
        total, count = total + s, count + n
    return total / count if loss_type == "dapo" else sum(per_seq) / B


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_all_ones_gamma_is_plain_grpo(loss_type):
    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(3, 5, generator=g) * 3
    old = logps + 0.3 * torch.randn(3, 5, generator=g)
    adv = torch.tensor([1.2, -0.7, 0.4])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    ours = grpo_loss(logps, old, adv, torch.ones(3, 5), mask, epsilon=0.2, loss_type=loss_type)
    ref = _trl_reference(logps.tolist(), old.tolist(), adv.tolist(), mask.tolist(), 0.2, loss_type)
    assert ours.item() == pytest.approx(ref, rel=1e-6)


def test_gamma_scales_each_tokens_gradient_for_both_signs():
    logps = torch.zeros(2, 3, requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    gamma = torch.tensor([[1.0, 1.5, 1.0], [1.5, 1.0, 1.25]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    grpo_loss(logps, logps.detach(), adv, gamma, mask, loss_type="dapo").backward()
    # At ratio 1 the surrogate's gradient is -gamma * A / (number of tokens).
    assert torch.allclose(logps.grad, -gamma * adv[:, None] / 6)


def test_gamma_is_detached():
    gamma = torch.full((1, 2), 1.5, requires_grad=True)
    logps = torch.zeros(1, 2, requires_grad=True)
    loss = grpo_loss(logps, logps.detach(), torch.tensor([1.0]), gamma, torch.ones(1, 2).bool())
    loss.backward()
    assert gamma.grad is None


def test_clipping_stops_the_gradient_beyond_the_trust_region():
    old = torch.zeros(1, 2)
    logps = torch.tensor([[0.5, -0.5]], requires_grad=True)  # ratios e^0.5 > 1.2, e^-0.5 < 0.8
    grpo_loss(logps, old, torch.tensor([1.0]), torch.ones(1, 2), torch.ones(1, 2).bool()).backward()
    assert logps.grad[0, 0].item() == 0.0  # positive advantage, ratio above 1+eps: clipped
    assert logps.grad[0, 1].item() != 0.0  # below 1-eps with A > 0: min keeps the ratio term


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_padding_reaches_neither_the_loss_nor_its_gradient(loss_type):
    """Off the mask, the tensors may hold anything (a NaN old log-prob of padding, a -inf
    log-prob of a padded target): the loss and its gradient are those of the completion
    tokens alone. (``NaN * 0`` made the whole loss NaN.)"""
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    clean = {
        "logps": -torch.rand(3, 4, generator=g) * 3,
        "old": -torch.rand(3, 4, generator=g) * 3,
        "gamma": 1 + torch.rand(3, 4, generator=g),
        "ref": -torch.rand(3, 4, generator=g) * 3,
        "ent": torch.rand(3, 4, generator=g),
    }
    adv = torch.tensor([1.2, -0.7, -0.4])
    losses, grads = [], []
    for junk in (0.0, float("nan"), float("-inf"), float("inf")):
        t = {k: torch.where(mask, v, junk) for k, v in clean.items()}
        logps = t["logps"].requires_grad_()
        loss = grpo_loss(
            logps, t["old"], adv, t["gamma"], mask, loss_type=loss_type,
            ref_logps=t["ref"], beta=0.04, entropies=t["ent"], entropy_coef=0.01,
        )  # fmt: skip
        loss.backward()
        losses.append(loss.item())
        grads.append(logps.grad)
    assert all(math.isfinite(x) for x in losses), losses
    assert losses == [losses[0]] * 4
    for grad in grads:
        assert torch.equal(grad, grads[0]) and (grad[~mask] == 0).all()


def test_token_logps_matches_log_softmax():
    logits = torch.randn(2, 4, 7)
    ids = torch.randint(0, 7, (2, 4))
    ref = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    assert torch.allclose(token_logps(logits, ids), ref, atol=1e-6)


# -- bad input: a WorkbenchError that names the fix, never NaN or a silent broadcast ---------


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.ones(6), 4), "do not split into groups"),  # was a raw RuntimeError from view
        ((torch.tensor([1.0, 0.0]), 1), "at least 2"),  # was all NaN (std of one reward)
        ((torch.tensor([1.0, 0.0]), 2, "Group"), "scale_rewards"),  # was silently "none"
        ((torch.tensor([1.0, float("nan"), 0.0, 0.0]), 2), "NaN or infinite"),
        ((torch.ones(2, 3), 3), "1 dimension"),
    ],
)
def test_bad_advantage_input_is_named(args, match):
    with pytest.raises(WorkbenchError, match=match):
        grpo_advantages(*args)


def _loss_args():
    logps = -torch.rand(2, 3)
    return [logps, logps.clone(), torch.tensor([1.0, -1.0]), torch.ones(2, 3)], torch.ones(
        2, 3, dtype=torch.bool
    )


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(mask=torch.ones(3, dtype=torch.bool)), "mask must have 2"),  # was broadcast
        (dict(mask=torch.ones(2, 3)), "boolean"),
        (dict(advantages=torch.tensor([1.0])), "advantages has shape"),  # was broadcast
        (dict(gamma=torch.ones(1, 3)), "gamma has shape"),
        (dict(beta=0.1), "no ref_logps"),  # the KL term was left out silently
        (dict(entropy_coef=0.1), "no entropies"),
        (dict(normalizer=0), "normalizer"),  # was NaN
        (dict(token_normalizer=0.0), "token_normalizer"),
        (dict(epsilon=-0.1), "epsilon"),
        (dict(loss_type="bnpo"), "loss_type"),  # was a plain ValueError
        # a credit built from an FAI curve (NaN where undefined): the loss was NaN
        (
            dict(gamma=torch.tensor([[1.0, float("nan"), 1.0], [1.0, 1.0, 1.0]])),
            "gamma holds NaN or infinite values on completion tokens",
        ),
        (dict(advantages=torch.tensor([float("inf"), 1.0])), "advantages holds NaN"),
    ],
)
def test_bad_loss_input_is_named(change, match):
    (logps, old, adv, gamma), mask = _loss_args()
    tensors = dict(logps=logps, old_logps=old, advantages=adv, gamma=gamma, mask=mask)
    settings = {k: v for k, v in change.items() if k not in tensors}
    tensors.update({k: v for k, v in change.items() if k in tensors})
    with pytest.raises(WorkbenchError, match=match):
        grpo_loss(**tensors, **settings)


def test_token_ids_outside_the_vocabulary_are_named():
    logits = torch.randn(2, 3, 5)
    with pytest.raises(WorkbenchError, match="outside the 5 logits"):
        token_logps(logits, torch.full((2, 3), 7))
    with pytest.raises(WorkbenchError, match="target_ids has shape"):
        token_logps(logits, torch.zeros(2, 2, dtype=torch.long))


@pytest.mark.parametrize("name", ["logps", "old_logps", "ref_logps", "entropies"])
@pytest.mark.parametrize("bad", [float("nan"), -float("inf")])
def test_non_finite_log_probs_on_completion_tokens_are_named(name, bad):
    """A NaN in the log-probs on a completion token returned a NaN loss without a word (a
    NaN gamma or advantage was refused); off the mask (padding) anything still passes."""
    (logps, old, adv, gamma), mask = _loss_args()
    tensors = dict(logps=logps, old_logps=old, advantages=adv, gamma=gamma, mask=mask,
                   ref_logps=logps.clone(), entropies=torch.ones(2, 3))  # fmt: skip
    settings = dict(beta=0.1, entropy_coef=0.01)
    assert torch.isfinite(grpo_loss(**tensors, **settings))
    mask[1, 2] = False
    tensors[name] = tensors[name].clone()
    tensors[name][1, 2] = bad  # padding: left out
    assert torch.isfinite(grpo_loss(**tensors, **settings))
    tensors[name][0, 1] = bad
    with pytest.raises(WorkbenchError, match=f"^{name} holds NaN or infinite values on completion"
                       ) as e:  # fmt: skip
        grpo_loss(**tensors, **settings)
    assert "finite logits" in e.value.fix
    if name in ("ref_logps", "entropies"):  # not read where their coefficient is 0
        assert torch.isfinite(grpo_loss(**tensors, beta=0.0, entropy_coef=0.0))


def test_the_loss_and_the_trainer_share_one_finite_check():
    """The trainer checked its log-probs for finite values in a loop of its own (its
    message named no tensor: NaN entropies read as "log-probabilities"), beside two loops
    in `grpo_loss`; and a NaN advantage was told to rebuild the credit weights. One check
    now serves all three, the trainer passing its step and remedy as context."""
    from workbench.rl.loss import check_finite

    (logps, old, _, gamma), mask = _loss_args()
    with pytest.raises(WorkbenchError, match=r"^advantages holds NaN or infinite values, which"
                       ) as e:  # fmt: skip
        grpo_loss(logps, old, torch.tensor([math.nan, 1.0]), gamma, mask)
    assert "grpo_advantages" in e.value.fix and "gamma" not in e.value.fix
    entropies = torch.ones(2, 3)
    entropies[1, 1] = math.inf
    tensors = [("logps", logps), ("old_logps", None), ("entropies", entropies)]
    with pytest.raises(WorkbenchError) as e:
        check_finite(
            tensors, mask, "lower learning_rate", context="the loss is not finite at step 3"
        )
    assert e.value.problem == (
        "the loss is not finite at step 3: entropies holds NaN or infinite values on "
        "completion tokens"
    )
    assert e.value.fix == "lower learning_rate"
    mask[1, 1] = False  # padding may hold anything
    check_finite(tensors, mask, "unused")
