"""GRPO advantages and the PPO-clip surrogate with per-token credit (Eq. 12-19).

The paper replaces GRPO's per-token advantage ``A_i`` by ``gamma[t] * A_i``; gamma is
detached and applies to positive and negative advantages alike. With gamma all ones this is
exactly TRL's GRPO loss (same clipping, same aggregation for ``"dapo"`` and ``"grpo"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, no_type_check

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from .. import _validate
from ..errors import WorkbenchError

__all__ = ["grpo_advantages", "grpo_loss", "token_logps"]

SCALE_REWARDS = ("group", "batch", "none")
LOSS_TYPES = ("dapo", "grpo")


def _tensor(name: str, value: Any, *, ndim: int) -> Tensor:
    """`value` as a real tensor of `ndim` dimensions, or a `WorkbenchError`."""
    if not isinstance(value, Tensor):
        raise WorkbenchError(
            f"{name} must be a torch tensor, got a {type(value).__name__}",
            f"pass {name} as a torch.Tensor",
        )
    if value.ndim != ndim:
        raise WorkbenchError(
            f"{name} must have {ndim} dimension(s), got shape {tuple(value.shape)}",
            f"pass {name} with {ndim} dimension(s)",
        )
    return value


def _same_shape(name: str, value: Tensor, shape: tuple[int, ...], like: str) -> None:
    if tuple(value.shape) != shape:
        raise WorkbenchError(
            f"{name} has shape {tuple(value.shape)} but {like} has {shape}",
            f"pass {name} for the same completions and positions as {like} (no broadcasting)",
        )


def check_finite(
    tensors: Iterable[tuple[str, Tensor | None]], mask: Tensor, fix: str, *, context: str = ""
) -> None:
    """Refuse the first of `tensors` (``(name, tensor)`` pairs; None is skipped) that holds
    a NaN or infinite value where the loss reads it: on `mask` for a ``[batch pos]``
    tensor, everywhere for a ``[batch]`` one (the advantages). Padding may hold anything.

    The one finite check of the loss's inputs: `grpo_loss` runs it on the credit, the
    advantages and the log-probs; the trainer runs it on its own log-probs before the
    loss, with `context` (the step and rows) in front and its remedy as `fix`, so that a
    diverged policy is named with its step. The two had their own loops, with messages
    that differed (the trainer's named no tensor: the entropies read as log-probs).

    Args:
        tensors: the named tensors, checked in order.
        mask: ``[batch pos]`` True on completion tokens.
        fix: the remedy; ``{name}`` in it is the tensor's name.
        context: where, e.g. ``"the GRPO loss is not finite at step 3 (rows 0-7)"``;
            without it the message says what the value would do to the loss.

    Raises:
        WorkbenchError: ``"[context: ]<name> holds NaN or infinite values on completion
            tokens[, which would make the loss NaN or infinite]"``.
    """
    for name, value in tensors:
        if value is None:
            continue
        on_tokens = value.ndim == mask.ndim
        read = value.detach()[mask] if on_tokens else value.detach()
        if not bool(torch.isfinite(read).all()):
            problem = f"{name} holds NaN or infinite values" + (
                " on completion tokens" if on_tokens else ""
            )
            problem = (
                f"{context}: {problem}"
                if context
                else f"{problem}, which would make the loss NaN or infinite"
            )
            raise WorkbenchError(problem, fix.replace("{name}", name))


@no_type_check  # validates its arguments itself, with messages that name the fix
def grpo_advantages(
    rewards: Float[Tensor, " batch"], num_generations: int, scale_rewards: str = "group"
) -> Float[Tensor, " batch"]:
    """Group-normalised advantages ``A_i = (r_i - mean_group r) / (std r + 1e-4)``.

    ``std`` is the sample standard deviation (Bessel's correction, ``G - 1`` in the
    denominator: ``torch.std``'s default, as TRL's ``nanstd``), and ``1e-4`` is TRL's guard
    against a zero spread. With ``G = 2`` and rewards 1 and 0 the advantages are about
    +-0.707, not +-1 (the population std, 0.5, would give +-1).

    Args:
        rewards: one reward per completion, groups of `num_generations` consecutive
            completions share a prompt.
        num_generations: group size G.
        scale_rewards: ``"group"`` divides by the group's std (the paper's GRPO),
            ``"batch"`` by the whole batch's std, ``"none"`` not at all (as in TRL).

    Returns:
        ``[batch]`` advantages; a group whose rewards are all equal gets zeros.

    Raises:
        WorkbenchError: the rewards are not a 1-D float tensor of finite values whose
            length is a multiple of `num_generations` (at least 2), or `scale_rewards` is
            unknown.
    """
    rewards = _tensor("rewards", rewards, ndim=1)
    if not rewards.is_floating_point():
        raise WorkbenchError(
            f"rewards must be floating point, got dtype {rewards.dtype}",
            "pass rewards.float()",
        )
    num_generations = _validate.integer("num_generations", num_generations, minimum=2, example=8)
    if len(rewards) % num_generations:
        raise WorkbenchError(
            f"{len(rewards)} rewards do not split into groups of num_generations={num_generations}",
            "pass one reward per completion, num_generations consecutive completions per prompt",
        )
    if scale_rewards not in SCALE_REWARDS:
        raise WorkbenchError(
            f"scale_rewards={scale_rewards!r} is unknown", f"use one of {SCALE_REWARDS}"
        )
    if not bool(torch.isfinite(rewards).all()):
        raise WorkbenchError(
            "rewards hold NaN or infinite values, which would make the advantages NaN",
            "check the reward function: every completion needs a finite reward",
        )
    grouped = rewards.view(-1, num_generations)
    mean = grouped.mean(dim=1, keepdim=True)
    adv = (grouped - mean).reshape(-1)
    if scale_rewards == "group":
        std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1)
        adv = adv / (std + 1e-4)
    elif scale_rewards == "batch":
        adv = adv / (rewards.std() + 1e-4) if rewards.numel() > 1 else adv
    return adv


@no_type_check  # validates its arguments itself, with messages that name the fix
def token_logps(
    logits: Float[Tensor, "batch pos d_vocab"], target_ids: Tensor
) -> Float[Tensor, "batch pos"]:
    """Log-probability of each target token under `logits` (same positions).

    Computed as ``logit[target] - logsumexp(logits)`` to avoid a full log-softmax tensor.

    Args:
        logits: ``[batch pos d_vocab]`` logits; row ``t`` scores the token at ``t`` (shift
            a model's output by one first: its row ``t`` predicts token ``t + 1``). Any
            float dtype; computed in float32.
        target_ids: ``[batch pos]`` integer token ids, one per row of `logits`.

    Returns:
        ``[batch pos]`` float32 log-probabilities ``log softmax(logits)[target]``.

    Raises:
        WorkbenchError: `target_ids` is not an integer tensor of ``logits.shape[:2]``, or
            holds an id outside the vocabulary (``0 .. d_vocab - 1``).
    """
    logits = _tensor("logits", logits, ndim=3)
    target_ids = _tensor("target_ids", target_ids, ndim=2)
    _same_shape("target_ids", target_ids, tuple(logits.shape[:2]), "logits[..., 0]")
    if target_ids.dtype not in (torch.int64, torch.int32):
        raise WorkbenchError(
            f"target_ids must be integer token ids, got dtype {target_ids.dtype}",
            "pass target_ids.long()",
        )
    if target_ids.numel():
        lo, hi = (int(x) for x in torch.aminmax(target_ids))
        if lo < 0 or hi >= logits.shape[-1]:
            raise WorkbenchError(
                f"target_ids hold ids from {lo} to {hi}, outside the {logits.shape[-1]} "
                "logits of the vocabulary",
                "pass ids of the model whose logits these are",
            )
    logits = logits.float()
    picked = logits.gather(-1, target_ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


@no_type_check  # validates its arguments itself, with messages that name the fix
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
    token_normalizer: float | None = None,
    ref_logps: Float[Tensor, "batch pos"] | None = None,
    beta: float = 0.0,
    entropies: Float[Tensor, "batch pos"] | None = None,
    entropy_coef: float = 0.0,
) -> Float[Tensor, ""]:
    """The clipped surrogate with per-token advantage ``gamma[t] * A_i`` (Eq. 12).

    ``loss_t = -min(r_t * g_t A_i, clip(r_t, 1-eps, 1+eps_high) * g_t A_i)`` with
    ``r_t = exp(logp_t - old_logp_t)``, plus ``beta * r_t * KL_t`` (TRL's k3 estimator
    against `ref_logps`, weighed by the ratio as TRL's default ``use_bias_correction_kl``),
    aggregated by `loss_type`; minus ``entropy_coef`` times the mean entropy
    per completion token, whatever the loss type (as TRL's entropy bonus).

    Args:
        logps: log-probs of the completion tokens under the current policy (with grad).
        old_logps: the same under the policy that sampled them (no grad).
        advantages: ``[batch]`` sequence advantages.
        gamma: ``[batch pos]`` credit weights (detached here).
        mask: ``[batch pos]`` True on real completion tokens; the other positions
            (padding) reach neither the loss nor its gradient, whatever they hold.
        epsilon, epsilon_high: clip range.
        loss_type: ``"dapo"``: sum over tokens / `normalizer` (default: the number of
            tokens); ``"grpo"``: mean over each sequence's tokens, then sum / `normalizer`
            (default: the number of sequences). Pass a normalizer to split one batch into
            micro-batches with the same total gradient.
        token_normalizer: what the entropy bonus's sum over tokens is divided by (default:
            `normalizer` for ``"dapo"``, the tokens of `mask` for ``"grpo"``): pass the
            batch's number of completion tokens with micro-batches.
        ref_logps, beta: KL penalty (skipped when beta is 0).
        entropies, entropy_coef: entropy bonus (skipped when the coefficient is 0).

    Returns:
        The scalar loss.

    Raises:
        WorkbenchError: a tensor's shape differs from `logps` (``[batch pos]``;
            `advantages` ``[batch]``), `mask` is not boolean, a setting is out of range,
            or a penalty coefficient is set without its tensor (``beta`` without
            `ref_logps`, ``entropy_coef`` without `entropies`), or `advantages`, or on the
            mask `gamma`, the log-probs (and `ref_logps` and `entropies` where their
            coefficient is not 0) hold NaN or infinite values.
    """
    logps = _tensor("logps", logps, ndim=2)
    shape = tuple(logps.shape)
    for name, value in (("old_logps", old_logps), ("gamma", gamma), ("mask", mask)):
        _same_shape(name, _tensor(name, value, ndim=2), shape, "logps")
    _same_shape(
        "advantages", _tensor("advantages", advantages, ndim=1), shape[:1], "the batch of logps"
    )
    if mask.dtype != torch.bool:
        raise WorkbenchError(
            f"mask must be boolean (True on completion tokens), got dtype {mask.dtype}",
            "pass mask.bool()",
        )
    _validate.number("epsilon", epsilon, low=0, high=1, low_open=True, high_open=True,
                     example=0.2)  # fmt: skip
    if epsilon_high is not None:
        _validate.number("epsilon_high", epsilon_high, low=0, low_open=True, example=0.28)
    if loss_type not in LOSS_TYPES:
        raise WorkbenchError(f"unknown loss_type {loss_type!r}", f"use one of {LOSS_TYPES}")
    for name, value in (("normalizer", normalizer), ("token_normalizer", token_normalizer)):
        if value is not None:
            _validate.number(name, value, low=0, low_open=True, example=1.0)
    for name, coef, tensor, tensor_name in (
        ("beta", beta, ref_logps, "ref_logps"),
        ("entropy_coef", entropy_coef, entropies, "entropies"),
    ):
        if _validate.number(name, coef, low=0, example=0.0) != 0.0:
            if tensor is None:
                raise WorkbenchError(
                    f"{name}={coef} but no {tensor_name}: the term would be left out silently",
                    f"pass {tensor_name}=..., or {name}=0",
                )
            _same_shape(tensor_name, _tensor(tensor_name, tensor, ndim=2), shape, "logps")
    # A credit built from a metric curve (FAI is NaN where undefined) made the loss NaN
    # without a word, where NaN rewards are refused (`grpo_advantages`).
    check_finite(
        [("gamma", gamma)],
        mask,
        "build the credit weights with wb.gamma_many or analysis.gamma(...) (finite, 1 "
        "where no token is credited), or replace the NaN: torch.nan_to_num(gamma, 1.0)",
    )
    check_finite(
        [("advantages", advantages)],
        mask,
        "compute the advantages with grpo_advantages from finite rewards",
    )
    # The log-probs (and the entropies, where used) made the loss NaN without a word, as a
    # NaN gamma did; padding may hold anything (`real` below), so only the mask is read.
    check_finite(
        [
            ("logps", logps),
            ("old_logps", old_logps),
            ("ref_logps", ref_logps if beta != 0.0 else None),
            ("entropies", entropies if entropy_coef != 0.0 else None),
        ],
        mask,
        "compute {name} from finite logits (token_logps; NaN logits mean the model has "
        "diverged), and set mask False where a row has no completion token",
    )
    eps_high = epsilon if epsilon_high is None else epsilon_high
    m = mask.float()

    def real(x: Tensor) -> Tensor:
        """`x` on the completion tokens, 0 off the mask: padding may hold anything (NaN
        or -inf log-probs of a padded target), and ``NaN * 0`` is NaN in the sum and in
        the gradient."""
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))

    logps = real(logps)
    adv = real(gamma.detach()) * advantages.detach()[:, None]
    ratio = torch.exp(logps - real(old_logps.detach()))
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if beta != 0.0 and ref_logps is not None:
        diff = real(ref_logps.detach()) - logps
        # Weighed by the importance ratio (TRL's default, ``use_bias_correction_kl``): its
        # gradient is then the reverse KL's, ``r * (logp - ref_logp)``; the plain k3's,
        # ``1 - exp(ref_logp - logp)``, is the forward KL's.
        per_token = per_token + beta * ratio * (torch.exp(diff) - diff - 1)
    tokens = m.sum().clamp(min=1.0)
    if loss_type == "dapo":
        norm = tokens if normalizer is None else normalizer
        loss = (per_token * m).sum() / norm
    elif loss_type == "grpo":
        per_seq = (per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        norm = per_seq.numel() if normalizer is None else normalizer
        loss = per_seq.sum() / norm
    else:
        raise AssertionError(loss_type)  # checked above
    if entropy_coef != 0.0 and entropies is not None:
        # TRL: the bonus is the mean entropy per completion token, not normalised as the
        # policy term is (``"grpo"`` took the mean of each sequence's mean before).
        if token_normalizer is None:  # dapo's normalizer counts the batch's tokens
            token_normalizer = norm if loss_type == "dapo" else tokens
        loss = loss - entropy_coef * (real(entropies) * m).sum() / token_normalizer
    return loss
