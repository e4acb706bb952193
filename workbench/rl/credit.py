"""Per-token credit ``gamma`` for rollouts: the one place both trainers compute it.

The native GRPO loop and `RhythmGRPOTrainer` (TRL) call `rollout_gammas` with the same
arguments, so for the same rollouts they apply the same weights. Each completion is
analysed with one extra forward pass of the current policy over prompt + completion on the
chosen layers (`wb.analyze`), then `Analysis.gamma(strategy)` gives the weights; the
prompt part is dropped. ``"none"`` needs no forward pass.

Seeds: the ``"random"`` control draws its positions from ``seed + k`` for the k-th non-empty
rollout, so the draw is reproducible and independent of batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..attention.params import CreditParams
from ..attention.run import gamma_many
from ..trace import Trace

__all__ = ["rollout_gammas"]


def rollout_gammas(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    credit: CreditParams,
    *,
    seed: int = 0,
    pad_to: int | None = None,
    batch_size: int = 32,
) -> Float[Tensor, "batch pos"]:
    """Credit weights for a batch of rollouts, ``[batch, completion_pos]``.

    Args:
        model: the policy as a TransformerBridge (its current weights are used).
        prompt_ids: token ids of each rollout's prompt.
        completion_ids: token ids of each completion (unpadded).
        credit: the `CreditParams` (strategy, amplification, layers, rhythm settings).
        seed: base seed of the ``"random"`` control (rollout i uses ``seed + i``).
        pad_to: width of the result (default: the longest completion); padding is 1.0.
        batch_size: rollouts per credit forward pass (`workbench.attention.run.gamma_many`
            right-pads them; the weights equal single passes).

    Returns:
        ``[batch, pad_to]`` float32 weights; 1.0 past each completion's end.
    """
    width = pad_to if pad_to is not None else max((len(c) for c in completion_ids), default=0)
    out = torch.ones(len(completion_ids), width, dtype=torch.float32)
    if credit.strategy == "none":
        return out
    traces = [
        Trace(
            ids=torch.tensor(list(p) + list(c), dtype=torch.long),
            tokens=[""] * (len(p) + len(c)),
            prompt_len=len(p),
            text="",
        )
        for p, c in zip(prompt_ids, completion_ids, strict=True)
    ]
    keep = [i for i, c in enumerate(completion_ids) if len(c) > 0]
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            gammas = gamma_many(
                model, [traces[i] for i in keep], credit, seed=seed, batch_size=batch_size
            )
    finally:
        if was_training:
            model.train()
    for i, g in zip(keep, gammas, strict=True):
        g = g[traces[i].prompt_len :]
        n = min(len(g), width)
        out[i, :n] = g[:n]
    return out
