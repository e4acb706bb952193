"""GRPO advantages and the PPO-clip surrogate with per-token credit (method.md, Eq. 12-19).

The paper replaces GRPO's per-token advantage ``A_i`` by ``gamma[t] * A_i``; gamma is
detached and applies to positive and negative advantages alike. With gamma all ones this is
exactly TRL's GRPO loss (same clipping, same aggregation for ``"dapo"`` and ``"grpo"``).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = ["grpo_advantages", "grpo_loss", "token_logps"]


def grpo_advantages(
    rewards: Float[Tensor, " batch"], num_generations: int, scale_rewards: str = "group"
) -> Float[Tensor, " batch"]:
    """Group-normalised advantages ``A_i = (r_i - mean_group r) / (std r + 1e-4)``.

    Args:
        rewards: one reward per completion, groups of `num_generations` consecutive
            completions share a prompt.
        num_generations: group size G.
        scale_rewards: ``"group"`` divides by the group's std (the paper's GRPO),
            ``"batch"`` by the whole batch's std, ``"none"`` not at all (as in TRL).

    Returns:
        ``[batch]`` advantages; a group whose rewards are all equal gets zeros.
    """
    grouped = rewards.view(-1, num_generations)
    mean = grouped.mean(dim=1, keepdim=True)
    adv = (grouped - mean).reshape(-1)
    if scale_rewards == "group":
        std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1)
        adv = adv / (std + 1e-4)
    elif scale_rewards == "batch":
        adv = adv / (rewards.std() + 1e-4) if rewards.numel() > 1 else adv
    return adv


def token_logps(
    logits: Float[Tensor, "batch pos d_vocab"], target_ids: Tensor
) -> Float[Tensor, "batch pos"]:
    """Log-probability of each target token under `logits` (same positions).

    Computed as ``logit[target] - logsumexp(logits)`` to avoid a full log-softmax tensor.
    """
    logits = logits.float()
    picked = logits.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def grpo_loss(
    logps: Float[Tensor, "batch pos"],
    old_logps: Float[Tensor, "batch pos"],
    advantages: Float[Tensor, " batch"],
    gamma: Float[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "dapo",
    normalizer: float | None = None,
    ref_logps: Float[Tensor, "batch pos"] | None = None,
    beta: float = 0.0,
    entropies: Float[Tensor, "batch pos"] | None = None,
    entropy_coef: float = 0.0,
) -> Float[Tensor, ""]:
    """The clipped surrogate with per-token advantage ``gamma[t] * A_i`` (Eq. 12).

    ``loss_t = -min(r_t * g_t A_i, clip(r_t, 1-eps, 1+eps_high) * g_t A_i)`` with
    ``r_t = exp(logp_t - old_logp_t)``, plus ``beta * KL_t`` (TRL's k3 estimator against
    `ref_logps`) and minus ``entropy_coef * H_t``.

    Args:
        logps: log-probs of the completion tokens under the current policy (with grad).
        old_logps: the same under the policy that sampled them (no grad).
        advantages: ``[batch]`` sequence advantages.
        gamma: ``[batch pos]`` credit weights (detached here).
        mask: ``[batch pos]`` True on real completion tokens.
        epsilon, epsilon_high: clip range.
        loss_type: ``"dapo"``: sum over tokens / `normalizer` (default: the number of
            tokens); ``"grpo"``: mean over each sequence's tokens, then sum / `normalizer`
            (default: the number of sequences). Pass a normalizer to split one batch into
            micro-batches with the same total gradient.
        ref_logps, beta: KL penalty (skipped when beta is 0).
        entropies, entropy_coef: entropy bonus (skipped when the coefficient is 0).

    Returns:
        The scalar loss.
    """
    eps_high = epsilon if epsilon_high is None else epsilon_high
    m = mask.float()
    adv = gamma.detach() * advantages.detach()[:, None]
    ratio = torch.exp(logps - old_logps.detach())
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if beta != 0.0 and ref_logps is not None:
        diff = ref_logps.detach() - logps
        per_token = per_token + beta * (torch.exp(diff) - diff - 1)
    if entropy_coef != 0.0 and entropies is not None:
        per_token = per_token - entropy_coef * entropies
    if loss_type == "dapo":
        norm = m.sum().clamp(min=1.0) if normalizer is None else normalizer
        return (per_token * m).sum() / norm
    if loss_type == "grpo":
        per_seq = (per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        norm = per_seq.numel() if normalizer is None else normalizer
        return per_seq.sum() / norm
    raise ValueError(f"unknown loss_type {loss_type!r}")
