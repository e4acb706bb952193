"""Train a tiny model (a 4-layer Llama or Qwen3) and write its checkpoint.

Recipe (`PRESETS` holds each shipped model's: the tiny reasoner, a Llama, on Countdown and
addition; the tiny searcher, a Qwen3 whose first two layers have a 4-token sliding window,
on Countdown with a written search): supervised
fine-tuning from scratch on the reference scratchpad solutions of its tasks in
`workbench.tasks` (train split only), loss on completion tokens (prompt and bos are
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
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from workbench import _validate
from workbench._io import (
    as_path,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    check_folder,
    make_folder,
)
from workbench._progress import progress_bar
from workbench.errors import WorkbenchError
from workbench.tasks import Problem, get_task
from workbench.tiny.card import build_card, render_card
from workbench.tiny.evaluation import (
    EVAL_SAMPLE,
    EVAL_SAMPLE_LARGE,
    eval_samples,
    evaluate,
    generate_completions,
    head_spans,
)
from workbench.tiny.tokenizer import build_tokenizer

# The evaluation and card names are re-exported: `workbench.tiny.train` was their home.
__all__ = [
    "EVAL_SAMPLE",
    "EVAL_SAMPLE_LARGE",
    "PRESETS",
    "TrainConfig",
    "evaluate",
    "generate_completions",
    "head_spans",
    "make_model",
    "preset",
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
        name: the model's name (its card and zoo name).
        tasks: the training tasks (`workbench.tasks` names), one or two.
        seed: RNG seed (data sampling, initialisation, shuffling).
        steps: optimiser steps.
        batch_size: sequences per step.
        lr: peak learning rate (AdamW); linear warm-up for `warmup` steps, cosine to 10%.
        weight_decay: AdamW weight decay.
        warmup: warm-up steps.
        countdown_fraction: with two tasks, the share of the first in each batch (the rest is
            the second); unused with one task.
        pool: distinct training problems generated per task before training.
        d_model / n_layers / n_heads / d_mlp: Llama shape (head dim = d_model / n_heads).
        rope_theta: RoPE base.
        arch: ``"llama"`` (`LlamaForCausalLM`) or ``"qwen3"`` (`Qwen3ForCausalLM`: q/k norms,
            and per-layer sliding windows).
        sliding_window: with ``"qwen3"``, the keys a sliding layer sees (the query's own
            position included), or None for none.
        sliding_layers: the layers that use the sliding window (the others see everything).
        max_new_tokens: greedy generation budget at evaluation (also the model's
            ``generation_config``).
        max_positions: the model's ``max_position_embeddings``.
        threads: torch CPU threads (1 is faster than 2 when other processes share the two
            cores of the build machine; the shipped run used the value in its card).
    """

    name: str = "tiny-reasoner"
    tasks: tuple[str, ...] = ("countdown", "arithmetic")
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
    arch: str = "llama"
    sliding_window: int | None = None
    sliding_layers: tuple[int, ...] = ()
    max_new_tokens: int = 64
    max_positions: int = 256
    threads: int = 1

    def __post_init__(self) -> None:
        from workbench.tasks import TASKS

        self.tasks = tuple(self.tasks)
        if not 1 <= len(self.tasks) <= 2 or any(t not in TASKS for t in self.tasks):
            raise WorkbenchError(
                f"tasks={self.tasks!r}: one or two task names are needed.",
                f"Use names from {sorted(TASKS)}.",
            )
        for key in ("steps", "batch_size", "threads"):
            # 0 steps would write an untrained checkpoint; 0 threads or batch rows fail
            # deep inside torch.
            value = _validate.integer(
                key, getattr(self, key), minimum=1, example=getattr(TrainConfig, key)
            )
            object.__setattr__(self, key, value)
        # 2**64 overflowed inside torch; -1 drew the problems of seed 1 (Python's `random`).
        self.seed = _validate.seed("seed", self.seed)
        # A RoPE base <= 0 or NaN trained on NaN losses and failed later in the head spans;
        # a learning rate <= 0 writes an untrained checkpoint.
        self.rope_theta = _validate.number(
            "rope_theta", self.rope_theta, low=0, low_open=True, example=10000.0
        )
        self.lr = _validate.number("lr", self.lr, low=0, low_open=True, example=2e-3)
        self.countdown_fraction = _validate.number(
            "countdown_fraction", self.countdown_fraction, low=0, high=1, example=0.75
        )
        self.sliding_layers = tuple(self.sliding_layers)
        if self.arch not in ("llama", "qwen3"):
            raise WorkbenchError(
                f"arch={self.arch!r} is not a tiny-model family.", "Use llama or qwen3."
            )
        sliding = self.sliding_window is not None or self.sliding_layers
        if sliding and (
            self.arch != "qwen3"
            or not isinstance(self.sliding_window, int)
            or self.sliding_window < 1
            or not self.sliding_layers
            or any(not 0 <= i < self.n_layers for i in self.sliding_layers)
        ):
            raise WorkbenchError(
                f"sliding_window={self.sliding_window!r}, sliding_layers={self.sliding_layers!r}"
                f" (arch {self.arch!r}): a window needs arch='qwen3', a window of at least 1"
                " and layers in range.",
                "Use e.g. arch='qwen3', sliding_window=4, sliding_layers=(0, 1).",
            )
        if set(self.pool) != set(self.tasks):
            raise WorkbenchError(
                f"pool={self.pool!r} must name exactly the tasks {self.tasks!r}.",
                "Give a pool size per training task.",
            )


#: The shipped models' recipes: ``python -m workbench.tiny train --model NAME`` runs one.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny-reasoner": {},
    # Countdown with a written search (60-260 token traces), on Qwen3 (the paper's family)
    # whose first two layers see only the last 4 tokens: trained with full attention
    # everywhere, no head of this model size became local (smallest span 20 tokens, also
    # with RoPE base 100), so the local heads are made by the mask; the evaluation budget
    # covers the longest reference trace.
    "tiny-searcher": {
        "name": "tiny-searcher",
        "tasks": ("countdown-search",),
        "pool": {"countdown-search": 6000},
        "steps": 1200,
        "arch": "qwen3",
        "sliding_window": 4,
        "sliding_layers": (0, 1),
        "max_new_tokens": 224,
        # The shipped run's count (its card): another count changes the weights' last bits
        # from the first step (measured 2e-7 after 2 steps), so the retrain would not be it.
        "threads": 2,
    },
}


def preset(name: str, **changes: Any) -> TrainConfig:
    """The recipe of a shipped tiny model, with optional changes.

    Args:
        name: a key of `PRESETS`.
        **changes: `TrainConfig` fields to override (e.g. ``steps=10`` for a smoke run).

    Returns:
        The config.

    Raises:
        WorkbenchError: unknown name.
    """
    if name not in PRESETS:
        raise WorkbenchError(f"No tiny-model recipe {name!r}.", f"Use one of {sorted(PRESETS)}.")
    return TrainConfig(**{**PRESETS[name], **changes})


def make_model(cfg: TrainConfig, vocab_size: int) -> LlamaForCausalLM | Qwen3ForCausalLM:
    """A freshly initialised tiny Llama or Qwen3 (eager attention, so patterns are exposed).

    The initialisation is seeded with ``cfg.seed`` inside `torch_settings`, so the global
    torch RNG is left as it was.

    Args:
        cfg: the run's shape settings.
        vocab_size: tokenizer size.

    Returns:
        The model, in float32 on CPU.
    """
    shape = dict(
        vocab_size=vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.max_positions,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attn_implementation="eager",
    )
    if cfg.arch == "qwen3":
        layer_types = [
            "sliding_attention" if i in cfg.sliding_layers else "full_attention"
            for i in range(cfg.n_layers)
        ]
        config = Qwen3Config(
            **shape,
            head_dim=cfg.d_model // cfg.n_heads,
            use_sliding_window=bool(cfg.sliding_layers),
            sliding_window=cfg.sliding_window,
            layer_types=layer_types,
        )
        model_class: type = Qwen3ForCausalLM
    else:
        config = LlamaConfig(**shape)
        model_class = LlamaForCausalLM
    with torch_settings(seed=cfg.seed):
        model = model_class(config)
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
        out: checkpoint folder (default: the shipped folder of ``cfg.name``); written atomically,
            so an interrupted run leaves the previous checkpoint untouched.
        overwrite: replace an existing folder (when False, an existing one is refused
            before training starts).
        progress: show a ``tqdm.auto`` progress bar (in a notebook or a terminal; none
            where stderr is not a terminal, as in a log file).
        eval_sample: the fixed held-out sample the card reports (default: 100 test problems
            per task, seed 0; `eval_samples`).
        eval_sample_large: the larger held-out sample (default: 500 per task, seed 1).

    Returns:
        The card dict (also saved as ``card.json``).

    Raises:
        WorkbenchError: `out` is a file, cannot be created, or exists with
            ``overwrite=False`` (all checked before training).
    """
    from workbench.tiny import CHECKPOINTS

    cfg = cfg or TrainConfig()
    # ``~`` expanded: "~/ckpt" wrote the checkpoint into a folder named "~" in the current one.
    out = (
        CHECKPOINTS[cfg.name]
        if out is None
        else as_path(out, "train's out", "folder", "/tmp/tiny-ckpt")
    )
    _check_out(out, overwrite)
    small_default, large_default = eval_samples(cfg.tasks)
    eval_sample = dict(small_default if eval_sample is None else eval_sample)
    eval_sample_large = dict(large_default if eval_sample_large is None else eval_sample_large)
    with torch_settings(seed=cfg.seed, threads=cfg.threads):
        tokenizer = build_tokenizer()
        model, losses, train_s = _fit(cfg, tokenizer, progress)
        small = evaluate(model, tokenizer, eval_sample, cfg.max_new_tokens, return_completions=True)
        large = evaluate(model, tokenizer, eval_sample_large, cfg.max_new_tokens)
        rows = small["completions"][cfg.tasks[0]][:50]
        spans = head_spans(model, tokenizer, [r[0] for r in rows], [r[1] for r in rows])
    card = build_card(
        asdict(cfg), model, train_s, losses, small, large, spans, eval_sample, eval_sample_large
    )
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "card.json", card)
        atomic_write_text(tmp / "README.md", render_card(card, small["completions"]))
    return card


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output the finished run could not be written to, before training starts.

    Found only at the end, it would throw the whole run away (and a file given as `out`
    would be moved aside and replaced by the checkpoint folder).
    """
    check_folder(out, "a checkpoint folder")
    if out.exists() and not overwrite:
        raise WorkbenchError(
            f"the checkpoint folder {out} already exists and overwrite=False.",
            "Pass another out= folder, or overwrite=True to replace it when the run ends.",
        )
    make_folder(
        out.parent,
        "the folder that holds the checkpoint",
        "pass an out= folder in a place you can write to",
    )


def _fit(
    cfg: TrainConfig, tokenizer: Any, progress: bool
) -> tuple[LlamaForCausalLM | Qwen3ForCausalLM, list[float], float]:
    """The training loop: ``(model in eval mode, loss per step, wall time in s)``."""
    model = make_model(cfg, len(tokenizer))
    t0 = time.time()
    pools = {
        name: [_encode(tokenizer, p) for p in get_task(name).generate(n, "train", seed=cfg.seed)]
        for name, n in ((t, cfg.pool[t]) for t in cfg.tasks)
    }
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98)
    )
    model.train()
    losses: list[float] = []
    bar = progress_bar(range(cfg.steps), desc=cfg.name, progress=progress)
    for step in bar:
        if len(cfg.tasks) == 1:
            batch = rng.choices(pools[cfg.tasks[0]], k=cfg.batch_size)
        else:
            first, second = cfg.tasks
            n_first = sum(rng.random() < cfg.countdown_fraction for _ in range(cfg.batch_size))
            batch = rng.choices(pools[first], k=n_first) + rng.choices(
                pools[second], k=cfg.batch_size - n_first
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
