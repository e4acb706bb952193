"""Sampling completions for GRPO groups and greedy evaluation.

Prompts of equal token length are batched together, so no padding ever enters the prompt
(padding would change a causal model's attention and the credit computed from it).
Completions end after the first end-of-sequence token (kept, as in TRL) or at
``max_new_tokens``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from ..trace import eos_token_ids

__all__ = ["sample_completions"]


@torch.no_grad()
def sample_completions(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    num_generations: int = 1,
    max_new_tokens: int = 96,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    batch_limit: int = 64,
    tokenizer: Any = None,
) -> list[list[int]]:
    """Sample `num_generations` completions for each prompt.

    Uses the wrapped Hugging Face model's ``generate`` (KV cache; no hooks fire) and the
    global torch RNG: seed it (e.g. under `torch.random.fork_rng`) for reproducibility.

    Args:
        model: a TransformerBridge (``model.original_model`` generates) or a plain
            Hugging Face causal LM (then pass `tokenizer`).
        prompt_ids: token ids of each prompt.
        num_generations: completions per prompt.
        max_new_tokens: length cap.
        temperature, top_p: sampling settings (ignored when `greedy`).
        greedy: greedy decoding.
        batch_limit: most sequences generated in one call.
        tokenizer: the tokenizer (default: ``model.tokenizer``).

    Returns:
        ``len(prompt_ids) * num_generations`` token-id lists, prompt-major (the completions
        of prompt 0 first), each ending at its first EOS (included) or at the cap.
    """
    hf = getattr(model, "original_model", model)
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    device = next(hf.parameters()).device
    eos = eos_token_ids(tokenizer, hf)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0]
    rows: list[tuple[int, Sequence[int]]] = [
        (i, p) for i, p in enumerate(prompt_ids) for _ in range(num_generations)
    ]
    by_len: dict[int, list[int]] = defaultdict(list)
    for r, (_, p) in enumerate(rows):
        by_len[len(p)].append(r)
    out: list[list[int]] = [[] for _ in rows]
    kwargs: dict[str, Any] = {"do_sample": not greedy}
    if not greedy:
        kwargs.update(temperature=float(temperature), top_p=float(top_p), top_k=0)
    was_training = hf.training
    hf.eval()
    try:
        for length in sorted(by_len):
            members = by_len[length]
            for start in range(0, len(members), batch_limit):
                chunk = members[start : start + batch_limit]
                ids = torch.tensor([list(rows[r][1]) for r in chunk], device=device)
                gen = hf.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=max_new_tokens,
                    eos_token_id=eos or None,
                    pad_token_id=pad,
                    **kwargs,
                )[:, length:].cpu()
                for r, seq in zip(chunk, gen.tolist(), strict=True):
                    cut = next((j + 1 for j, t in enumerate(seq) if t in eos), len(seq))
                    out[r] = seq[:cut]
    finally:
        hf.train(was_training)
    return out
