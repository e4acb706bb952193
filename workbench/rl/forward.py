"""The update forward over rollouts: each group's prompt runs once, not once per completion.

GRPO samples ``G`` completions of every prompt, and the update needs the log-probabilities
of the completion tokens only. Running ``prompt + completion`` rows computes each prompt
``G`` times. `completion_logits` instead runs a chunk's prompts once, left-padded, with a
KV cache; repeats the cache ``G`` times; and runs the completions on it with the prompts'
real positions:

- prompt of group ``g`` (``p_g`` tokens, left-padded to ``P``): positions ``0..p_g-1``;
- completion row ``i`` of that group: positions ``p_g..p_g+W-1``, attending to the cached
  prompt keys (the padding masked) and, causally, to its own tokens.

The logits of completion token ``j`` are the prompt's last row for ``j = 0`` and the
completion's row ``j - 1`` after. Gradients flow through the cache into the prompt rows,
summed over the group as in the padded forward, so loss and gradients equal those of
``prompt + completion`` rows up to float rounding (checked on every architecture of the
test matrix). On the tiny reasoner (32 rollouts, prompts of 26 tokens, completions of
about 35) a forward and backward take about 0.6 times as long as on the padded rows
(0.19 s against 0.32 s, and 0.15 s against 0.23 s, in two runs of
`benchmarks/update_forward.py`; its README lists every run).

The credit (`FusedCredit`) rides on the completion forward:
its query rows are exactly the response rows the metrics use, and the prompt's keys are
in the cache. `RolloutBatch.spans` are in the frame of the cache's keys.

Memory: the cache of one chunk repeated ``G`` times (layers x rows x ``P`` x key/value
width), and the chunk's ``rows x W x d_vocab`` logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers import DynamicCache

from ..errors import WorkbenchError

__all__ = ["RolloutBatch", "check_update_forward", "completion_logits", "rollout_batch"]

#: The ``config.layer_types`` whose layers keep their keys and values in a KV cache, the
#: only state `completion_logits` can hold and repeat per completion (checked on every
#: architecture of the test matrix).
CACHED_LAYER_TYPES = frozenset({"full_attention", "sliding_attention", "chunked_attention"})


@dataclass(frozen=True)
class RolloutBatch:
    """Rollouts ``rows`` of a step (whole groups), laid out for `completion_logits`.

    Attributes:
        rows: the rollouts' indices in the step.
        group_size: ``G``, completions per prompt.
        prompt_ids: ``[group, P]`` the groups' prompts, left-padded.
        prompt_mask: ``[group, P]`` 1 on prompt tokens, 0 on padding.
        targets: ``[batch, width]`` the completions, right-padded (the forward's input
            and the tokens whose log-probabilities the loss needs).
        mask: ``[batch, width]`` True on real completion tokens.
        p_len: ``[batch]`` each rollout's prompt length.
        width: the longest completion (at least 1).
        spans: ``(start, n, prompt_len)`` of each rollout in the cache frame (``start = P -
            p_len``, ``n = p_len + completion length``), for `FusedCredit`.
        seqs: each rollout's ``prompt + completion`` ids.
        before: completions with tokens before ``rows.start`` (the ``"random"`` seeds).
    """

    rows: slice
    group_size: int
    prompt_ids: Int[Tensor, "group prompt_pos"]
    prompt_mask: Int[Tensor, "group prompt_pos"]
    targets: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    p_len: Int[Tensor, " batch"]
    width: int
    spans: list[tuple[int, int, int]]
    seqs: list[Tensor]
    before: int


def rollout_batch(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    group_size: int,
    rows: slice,
    *,
    pad_id: int = 0,
    device: torch.device | str = "cpu",
) -> RolloutBatch:
    """Lay out rollouts ``rows`` (whole groups) of a step.

    Args:
        prompts: one prompt per group (``prompts[i // group_size]`` is rollout i's).
        completions: every completion of the step, unpadded.
        group_size: ``G``.
        rows: a slice of whole groups (start and stop multiples of ``G``).
        pad_id: the id written in padding (never attended to).
        device: where the tensors go.
    """
    G, start, stop = group_size, rows.start, rows.stop
    if start % G or stop % G:
        raise ValueError(f"rows {start}..{stop} are not whole groups of {G}")
    groups = [list(prompts[g]) for g in range(start // G, stop // G)]
    comps = [list(completions[r]) for r in range(start, stop)]
    P = max(len(p) for p in groups)
    width = max(1, max(len(c) for c in comps))
    prompt_ids = torch.full((len(groups), P), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros(len(groups), P, dtype=torch.long)
    for g, p in enumerate(groups):
        prompt_ids[g, P - len(p) :] = torch.tensor(p, dtype=torch.long)
        prompt_mask[g, P - len(p) :] = 1
    targets = torch.full((len(comps), width), pad_id, dtype=torch.long)
    for i, c in enumerate(comps):
        targets[i, : len(c)] = torch.tensor(c, dtype=torch.long)
    p_len = torch.tensor([len(groups[i // G]) for i in range(len(comps))])
    c_len = torch.tensor([len(c) for c in comps])
    return RolloutBatch(
        rows=slice(start, stop),
        group_size=G,
        prompt_ids=prompt_ids.to(device),
        prompt_mask=prompt_mask.to(device),
        targets=targets.to(device),
        mask=(torch.arange(width)[None, :] < c_len[:, None]).to(device),
        p_len=p_len.to(device),
        width=width,
        spans=[(P - int(p), int(p) + int(c), int(p)) for p, c in zip(p_len, c_len, strict=True)],
        seqs=[torch.tensor(groups[i // G] + c, dtype=torch.long) for i, c in enumerate(comps)],
        before=sum(1 for c in completions[:start] if c),
    )


def check_update_forward(model: Any) -> None:
    """Raise a `WorkbenchError` if `model` has layers whose state is not a key/value cache
    (a hybrid model's linear-attention, state-space or convolution layers: Qwen3-Next,
    Jamba, ...). `completion_logits` could neither hold nor repeat that state, and
    transformers would fail deep inside its cache.

    Args:
        model: a Hugging Face causal language model.
    """
    types = getattr(getattr(model, "config", None), "layer_types", None) or []
    other = sorted({str(t) for t in types} - CACHED_LAYER_TYPES)
    if other:
        raise WorkbenchError(
            f"{type(model).__name__} has {', '.join(other)} layers; the native GRPO loop "
            "runs each prompt once and repeats its key/value cache for the completions, "
            "and those layers keep a state that cache cannot hold",
            "train a model whose every layer is attention; the credit of this one can "
            "still be computed with wb.gamma_many(model, traces, credit)",
        )


def completion_logits(
    model: Any, batch: RolloutBatch, credit: AbstractContextManager[Any] | None = None
) -> Float[Tensor, "batch pos d_vocab"]:
    """The logits that produced each completion token, ``[batch, width, d_vocab]``.

    Row ``i``, column ``j`` is ``logits(prompt_i + completion_i[:j])``: the distribution
    completion token ``j`` was drawn from (columns past a completion's end are padding).
    Runs with or without gradients, in the model's mode.

    Args:
        model: a Hugging Face causal language model.
        batch: from `rollout_batch`.
        credit: a `FusedCredit` built on ``batch.spans``: it
            is entered around the completion forward only, whose query rows are the
            responses' (see the module docstring).

    Raises:
        WorkbenchError: a hybrid model (`check_update_forward`), or one that kept no
            cache (gradient checkpointing in a training forward).
    """
    check_update_forward(model)
    G = batch.group_size
    # Real positions 0..p_g-1 for each left-padded prompt (what the unpadded row would use,
    # which matters for absolute position embeddings).
    positions = (batch.prompt_mask.cumsum(-1) - 1).clamp(min=0)
    # A cache without a config keeps every key, sliding-window layers included (a
    # config-built one would crop them); the masks still apply each layer's window.
    cache = DynamicCache()
    head = model(
        input_ids=batch.prompt_ids,
        attention_mask=batch.prompt_mask,
        position_ids=positions,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    if cache.get_seq_length() != batch.prompt_ids.shape[1]:
        # Activation (gradient) checkpointing turns caching off in a training forward: the
        # completions would then run without their prompts.
        raise WorkbenchError(
            "the model did not keep the prompts' keys and values in its KV cache (activation "
            "checkpointing, formerly gradient checkpointing, turns the cache off in a "
            "training forward)",
            "turn it off for the native GRPO loop (model.activation_checkpointing_disable(), "
            "formerly gradient_checkpointing_disable()), or train with "
            "wb.rl.RhythmGRPOTrainer",
        )
    grouped = DynamicCache()
    for i, layer in enumerate(cache.layers):
        grouped.update(layer.keys.repeat_interleave(G, 0), layer.values.repeat_interleave(G, 0), i)
    rows, width = batch.targets.shape
    ones = torch.ones(rows, width, dtype=batch.prompt_mask.dtype, device=batch.prompt_mask.device)
    mask = torch.cat([batch.prompt_mask.repeat_interleave(G, 0), ones], 1)
    with credit if credit is not None else nullcontext():
        tail = model(
            input_ids=batch.targets,
            attention_mask=mask,
            position_ids=batch.p_len[:, None] + torch.arange(width, device=batch.p_len.device),
            cache=grouped,
            use_cache=False,
        ).logits
    return torch.cat([head.repeat_interleave(G, 0)[:, None], tail[:, : width - 1]], 1)
