"""Train the tiny reasoner (a 4-layer `LlamaForCausalLM`) and write its checkpoint.

Recipe: supervised fine-tuning from scratch on the reference scratchpad solutions of the two
tasks in `workbench.tasks` (train split only), loss on completion tokens (prompt and bos are
masked with -100), AdamW with linear warm-up and cosine decay, a fixed seed, a fixed number
of CPU threads. Held-out accuracy and head spans come from `workbench.tiny.evaluation`, the
model card from `workbench.tiny.card`.

Every run writes a complete checkpoint folder atomically (`workbench._io.atomic_dir`):
``config.json``, ``generation_config.json``, ``model.safetensors``, the tokenizer files,
``card.json`` (machine-readable numbers: accuracy, head spans, wall time, versions) and a
model card ``README.md``.

torch's global settings are left as they were: `make_model` and `train` seed and set the
thread count only inside `torch_settings`, which restores the previous thread count and RNG
state on exit.

Caveat: CPU only, float32. Two runs with the same seed and the same thread count give the
same weights on the same machine; other BLAS builds may differ in the last bits.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from workbench._io import atomic_dir, atomic_write_json, atomic_write_text
from workbench.tasks import Problem, get_task
from workbench.tiny.card import build_card, render_card
from workbench.tiny.evaluation import (
    EVAL_SAMPLE,
    EVAL_SAMPLE_LARGE,
    evaluate,
    generate_completions,
    head_spans,
)
from workbench.tiny.tokenizer import build_tokenizer

# The evaluation and card names are re-exported: `workbench.tiny.train` was their home.
__all__ = [
    "EVAL_SAMPLE",
    "EVAL_SAMPLE_LARGE",
    "TrainConfig",
    "evaluate",
    "generate_completions",
    "head_spans",
    "make_model",
    "render_card",
    "torch_settings",
    "train",
]


@contextmanager
def torch_settings(seed: int | None = None, threads: int | None = None) -> Iterator[None]:
    """Seed torch and set its CPU thread count for a block only.

    On exit the previous thread count and the previous RNG state (CPU, and CUDA where
    present, via `torch.random.fork_rng`) are restored, also when the block raises.

    Args:
        seed: seed for `torch.manual_seed` inside the block (None: leave the RNG as it is).
        threads: `torch.set_num_threads` inside the block (None: leave it as it is).
    """
    previous_threads = torch.get_num_threads()
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous_threads)


@dataclass
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
        seed: RNG seed (data sampling, initialisation, shuffling).
        steps: optimiser steps.
        batch_size: sequences per step.
        lr: peak learning rate (AdamW); linear warm-up for `warmup` steps, cosine to 10%.
        weight_decay: AdamW weight decay.
        warmup: warm-up steps.
        countdown_fraction: share of Countdown problems in the training mix (rest arithmetic).
        pool: distinct training problems generated per task before training.
        d_model / n_layers / n_heads / d_mlp: Llama shape (head dim = d_model / n_heads).
        rope_theta: RoPE base.
        max_new_tokens: greedy generation budget at evaluation.
        threads: torch CPU threads (1 is faster than 2 when other processes share the two
            cores of the build machine; the shipped run used the value in its card).
    """

    seed: int = 0
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 100
    countdown_fraction: float = 0.75
    pool: dict[str, int] = field(default_factory=lambda: {"countdown": 12000, "arithmetic": 20000})
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 8
    d_mlp: int = 512
    rope_theta: float = 10000.0
    max_new_tokens: int = 64
    threads: int = 1


def make_model(cfg: TrainConfig, vocab_size: int) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama (eager attention so attention patterns are exposed).

    The initialisation is seeded with ``cfg.seed`` inside `torch_settings`, so the global
    torch RNG is left as it was.

    Args:
        cfg: the run's shape settings.
        vocab_size: tokenizer size.

    Returns:
        The model, in float32 on CPU.
    """
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=256,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attn_implementation="eager",
    )
    with torch_settings(seed=cfg.seed):
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        do_sample=False,
        max_new_tokens=cfg.max_new_tokens,
    )
    return model


def _encode(tokenizer: Any, problem: Problem) -> tuple[list[int], int]:
    """Token ids of bos + prompt + solution + eos, and the number of masked prefix tokens."""
    prompt_ids = tokenizer(problem.prompt)["input_ids"]
    full = tokenizer(problem.prompt + problem.solution)["input_ids"] + [tokenizer.eos_token_id]
    return full, len(prompt_ids)


def _batch(
    encoded: Sequence[tuple[list[int], int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(encoded):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
        mask[i, : len(ids)] = 1
    return input_ids, mask, labels


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    cfg: TrainConfig | None = None,
    out: str | Path | None = None,
    overwrite: bool = True,
    progress: bool = True,
    eval_sample: dict[str, Any] | None = None,
    eval_sample_large: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the tiny reasoner and write a checkpoint folder with its model card.

    Args:
        cfg: run settings (default `TrainConfig()`).
        out: checkpoint folder (default `workbench.tiny.CHECKPOINT_DIR`); written atomically,
            so an interrupted run leaves the previous checkpoint untouched.
        overwrite: replace an existing folder.
        progress: show a tqdm progress bar.
        eval_sample: the fixed held-out sample the card reports (default `EVAL_SAMPLE`).
        eval_sample_large: the larger held-out sample (default `EVAL_SAMPLE_LARGE`).

    Returns:
        The card dict (also saved as ``card.json``).
    """
    from workbench.tiny import CHECKPOINT_DIR

    cfg = cfg or TrainConfig()
    out = Path(out) if out is not None else CHECKPOINT_DIR
    eval_sample = dict(EVAL_SAMPLE if eval_sample is None else eval_sample)
    eval_sample_large = dict(EVAL_SAMPLE_LARGE if eval_sample_large is None else eval_sample_large)
    with torch_settings(seed=cfg.seed, threads=cfg.threads):
        tokenizer = build_tokenizer()
        model, losses, train_s = _fit(cfg, tokenizer, progress)
        small = evaluate(model, tokenizer, eval_sample, cfg.max_new_tokens, return_completions=True)
        large = evaluate(model, tokenizer, eval_sample_large, cfg.max_new_tokens)
        cd = small["completions"]["countdown"][:50]
        spans = head_spans(model, tokenizer, [c[0] for c in cd], [c[1] for c in cd])
    card = build_card(
        asdict(cfg), model, train_s, losses, small, large, spans, eval_sample, eval_sample_large
    )
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "card.json", card)
        atomic_write_text(tmp / "README.md", render_card(card, small["completions"]))
    return card


def _fit(
    cfg: TrainConfig, tokenizer: Any, progress: bool
) -> tuple[LlamaForCausalLM, list[float], float]:
    """The training loop: ``(model in eval mode, loss per step, wall time in s)``."""
    model = make_model(cfg, len(tokenizer))
    t0 = time.time()
    pools = {
        name: [_encode(tokenizer, p) for p in get_task(name).generate(n, "train", seed=cfg.seed)]
        for name, n in cfg.pool.items()
    }
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98)
    )
    model.train()
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="tiny-reasoner", disable=not progress)
    for step in bar:
        n_cd = sum(rng.random() < cfg.countdown_fraction for _ in range(cfg.batch_size))
        batch = rng.choices(pools["countdown"], k=n_cd) + rng.choices(
            pools["arithmetic"], k=cfg.batch_size - n_cd
        )
        input_ids, mask, labels = _batch(batch, tokenizer.pad_token_id)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0:
            bar.set_postfix(loss=f"{sum(losses[-25:]) / len(losses[-25:]):.3f}")
    return model.eval(), losses, time.time() - t0
