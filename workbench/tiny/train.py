"""Train, evaluate and describe the tiny reasoner (a 4-layer `LlamaForCausalLM`).

Recipe: supervised fine-tuning from scratch on the reference scratchpad solutions of the two
tasks in `workbench.tasks` (train split only), loss on completion tokens (prompt and bos are
masked with -100), AdamW with linear warm-up and cosine decay, a fixed seed, 2 CPU threads.
Held-out accuracy is greedy decoding on a fixed sample of the *test* split.

Every run writes a complete checkpoint folder atomically (`workbench._io.atomic_dir`):
``config.json``, ``generation_config.json``, ``model.safetensors``, the tokenizer files,
``card.json`` (machine-readable numbers: accuracy, head spans, wall time, versions) and a
model card ``README.md``.

Caveats:
    - CPU only, float32. Two runs with the same seed and the same thread count give the same
      weights on the same machine; other BLAS builds may differ in the last bits.
    - Greedy evaluation groups prompts by token length, so no padding is ever used and a
      batched result equals the one-at-a-time result.
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from workbench._io import atomic_dir, atomic_write_json, atomic_write_text
from workbench.errors import WorkbenchError
from workbench.tasks import Problem, get_task
from workbench.tiny.tokenizer import build_tokenizer

__all__ = [
    "EVAL_SAMPLE",
    "TrainConfig",
    "evaluate",
    "generate_completions",
    "head_spans",
    "make_model",
    "train",
]

#: The fixed held-out sample the model card reports and the tests re-score.
EVAL_SAMPLE: dict[str, Any] = {"countdown": 100, "arithmetic": 100, "split": "test", "seed": 0}

#: Larger held-out sample for the card's headline numbers.
EVAL_SAMPLE_LARGE: dict[str, Any] = {
    "countdown": 500,
    "arithmetic": 500,
    "split": "test",
    "seed": 1,
}


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
    torch.manual_seed(cfg.seed)
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


@torch.no_grad()
def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 128,
) -> list[str]:
    """Greedy completions, batched by prompt length (no padding, so results are exact).

    Args:
        model: a causal LM (the tiny reasoner or any HF model with `generate`).
        tokenizer: its tokenizer.
        prompts: prompt texts.
        max_new_tokens: generation budget per prompt.
        batch_size: most prompts per `generate` call.

    Returns:
        One decoded completion per prompt (special tokens removed), in input order.
    """
    model.eval()
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(i)
    out: list[str] = [""] * len(prompts)
    for length, idx in sorted(by_len.items()):
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            input_ids = torch.tensor([encoded[i] for i in chunk])
            gen = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            for row, i in enumerate(chunk):
                out[i] = tokenizer.decode(gen[row, length:], skip_special_tokens=True)
    return out


def evaluate(
    model: Any,
    tokenizer: Any,
    sample: dict[str, Any] | None = None,
    max_new_tokens: int = 64,
    return_completions: bool = False,
) -> dict[str, Any]:
    """Greedy held-out accuracy per task on a fixed sample.

    Args:
        model: the model.
        tokenizer: its tokenizer.
        sample: ``{"countdown": n, "arithmetic": n, "split": "test", "seed": s}``;
            default `EVAL_SAMPLE`.
        max_new_tokens: generation budget.
        return_completions: also return the prompts and completions per task.

    Returns:
        ``{"accuracy": {task: float}, "n": {task: int}, "mean_completion_tokens": {task: float}}``
        (plus ``"completions": {task: [(prompt, completion, score)]}`` when asked).
    """
    sample = dict(EVAL_SAMPLE if sample is None else sample)
    result: dict[str, Any] = {"accuracy": {}, "n": {}, "mean_completion_tokens": {}}
    if return_completions:
        result["completions"] = {}
    for name in ("countdown", "arithmetic"):
        n = int(sample.get(name, 0))
        if n <= 0:
            continue
        task = get_task(name)
        problems = task.generate(n, split=sample.get("split", "test"), seed=sample.get("seed", 0))
        completions = generate_completions(
            model, tokenizer, [p.prompt for p in problems], max_new_tokens=max_new_tokens
        )
        scores = [task.score(p, c) for p, c in zip(problems, completions, strict=True)]
        result["accuracy"][name] = sum(scores) / n
        result["n"][name] = n
        result["mean_completion_tokens"][name] = (
            sum(len(tokenizer(c, add_special_tokens=False)["input_ids"]) + 1 for c in completions)
            / n
        )
        if return_completions:
            result["completions"][name] = [
                (p.prompt, c, s) for p, c, s in zip(problems, completions, scores, strict=True)
            ]
    return result


@torch.no_grad()
def head_spans(
    model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str]
) -> torch.Tensor:
    """Mean attention distance per head over response tokens (method.md Eq. 7).

    ``d[l, h] = mean over t in R of sum_{s <= t} A[l, h][t, s] * (t - s)``, computed per
    sequence on prompt + completion and then averaged over the sequences.

    Args:
        model: the model; switched to eager attention for the call if it uses another.
        tokenizer: its tokenizer.
        prompts: prompt texts.
        completions: one completion per prompt (the response R).

    Returns:
        Tensor ``[n_layers, n_heads]`` of spans in tokens.
    """
    model.eval()
    previous = getattr(model.config, "_attn_implementation", "eager")
    if previous != "eager":  # only eager attention returns the patterns
        model.set_attn_implementation("eager")
    try:
        return _head_spans(model, tokenizer, prompts, completions)
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


def _head_spans(
    model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str]
) -> torch.Tensor:
    total = None
    count = 0
    for prompt, completion in zip(prompts, completions, strict=True):
        n_prompt = len(tokenizer(prompt)["input_ids"])
        ids = tokenizer(prompt + completion)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) <= n_prompt:
            continue
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
        pos = torch.arange(len(ids), dtype=torch.float32)
        dist = (pos[:, None] - pos[None, :]).clamp(min=0)  # [query_pos, key_pos]
        spans = torch.stack(
            [(a[0] * dist).sum(-1)[:, n_prompt:].mean(-1) for a in out.attentions]
        )  # [layer, head]
        total = spans if total is None else total + spans
        count += 1
    if total is None:
        raise WorkbenchError("No non-empty response to measure spans on.", "Pass completions.")
    return total / count


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
    torch.set_num_threads(cfg.threads)
    tokenizer = build_tokenizer()
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
    train_s = time.time() - t0

    model.eval()
    eval_sample = dict(EVAL_SAMPLE if eval_sample is None else eval_sample)
    eval_sample_large = dict(EVAL_SAMPLE_LARGE if eval_sample_large is None else eval_sample_large)
    small = evaluate(model, tokenizer, eval_sample, cfg.max_new_tokens, return_completions=True)
    large = evaluate(model, tokenizer, eval_sample_large, cfg.max_new_tokens)
    cd = small["completions"]["countdown"][:50]
    spans = head_spans(model, tokenizer, [c[0] for c in cd], [c[1] for c in cd])
    card = _card(cfg, model, train_s, losses, small, large, spans)
    card["eval_sample"], card["eval_sample_large"] = eval_sample, eval_sample_large
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "card.json", card)
        atomic_write_text(tmp / "README.md", render_card(card, small["completions"]))
    return card


def _card(
    cfg: TrainConfig,
    model: Any,
    train_s: float,
    losses: list[float],
    small: dict[str, Any],
    large: dict[str, Any],
    spans: torch.Tensor,
) -> dict[str, Any]:
    import tokenizers
    import transformers

    flat = sorted(
        (float(spans[layer, h]), layer, h)
        for layer in range(spans.shape[0])
        for h in range(spans.shape[1])
    )
    return {
        "model": "tiny-reasoner",
        "architecture": {
            "class": "LlamaForCausalLM",
            "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads,
            "d_model": cfg.d_model,
            "d_head": cfg.d_model // cfg.n_heads,
            "d_mlp": cfg.d_mlp,
            "vocab_size": model.config.vocab_size,
            "n_params": sum(p.numel() for p in model.parameters()),
            "tokenizer": "character-level (workbench.tiny.tokenizer)",
        },
        "train_config": asdict(cfg),
        "train_wall_time_s": round(train_s, 1),
        "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
        "eval_sample": EVAL_SAMPLE,
        "accuracy": small["accuracy"],
        "eval_sample_large": EVAL_SAMPLE_LARGE,
        "accuracy_large": large["accuracy"],
        "mean_completion_tokens": small["mean_completion_tokens"],
        "head_spans": [[round(float(x), 3) for x in row] for row in spans],
        "head_spans_measured_on": "greedy completions of the first 50 fixed-sample countdown problems",
        "most_local_heads": [[layer, h, round(s, 2)] for s, layer, h in flat[:4]],
        "most_global_heads": [[layer, h, round(s, 2)] for s, layer, h in flat[::-1][:4]],
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "python": platform.python_version(),
        },
    }


def render_card(card: dict[str, Any], completions: dict[str, Any] | None = None) -> str:
    """The model card (Markdown) for a card dict.

    Args:
        card: the dict `train` returns.
        completions: optional example completions per task to show.

    Returns:
        Markdown text.
    """
    a = card["architecture"]
    c = card["train_config"]
    spans = card["head_spans"]
    span_rows = "\n".join(
        f"| {layer} | " + " | ".join(f"{x:.2f}" for x in row) + " |"
        for layer, row in enumerate(spans)
    )
    head_cols = " | ".join(f"h{h}" for h in range(len(spans[0])))
    examples = ""
    if completions:
        examples = "\n## Example greedy completions (fixed held-out sample)\n"
        for name, rows in completions.items():
            for prompt, comp, score in rows[:3]:
                examples += f"\n{name} (score {score}):\n\n```\n{prompt}{comp}\n```\n"
    return f"""# tiny-reasoner

A {a["n_layers"]}-layer Hugging Face `LlamaForCausalLM` ({a["n_params"]:,} parameters) trained
from scratch by `python -m workbench.tiny train` to solve the two verifiable tasks of
`workbench.tasks` with short scratchpads. It exists so every notebook, test and RL run of the
workbench has a real reasoning model that loads offline in a second and trains on 2 CPU cores.
It is a toy: use it to exercise the method, not to reproduce the paper's numbers.

## Architecture
- Llama: {a["n_layers"]} layers, {a["n_heads"]} heads of dimension {a["d_head"]}
  (d_model {a["d_model"]}, no grouped-query attention), SwiGLU MLP width {a["d_mlp"]},
  RoPE (theta 10000), RMSNorm, tied embeddings, eager attention.
- Tokenizer: {a["tokenizer"]}, vocabulary {a["vocab_size"]}; `<s>` is prepended to every
  encoding (position 0, available as an attention sink), `</s>` ends each completion. No chat
  template.

## Format
Prompts and completions are exactly those of `workbench.tasks`:

```
Countdown: 11 3 12 -> 96
11-3=8
12*8=96
Answer: 12*(11-3)
```

```
Add: 917+56
7+6+0=13
1+5+1=7
9+0+0=9
Answer: 973
```

## Training recipe
Supervised learning from scratch on reference scratchpads of the *train* split (loss on
completion tokens only): {c["steps"]} AdamW steps, batch {c["batch_size"]}, peak lr {c["lr"]}
(warm-up {c["warmup"]} steps, cosine to 10%), weight decay {c["weight_decay"]}, mix
{c["countdown_fraction"]:.0%} Countdown (3 numbers in 1..20, target 1..100) /
{1 - c["countdown_fraction"]:.0%} addition (2-4 digits), seed {c["seed"]}, CPU threads: {c["threads"]}.
Wall time: **{card["train_wall_time_s"] / 60:.1f} min** on 2 CPU cores shared with other jobs (final loss
{card["final_loss"]}). torch {card["versions"]["torch"]}, transformers
{card["versions"]["transformers"]}.

## Held-out accuracy (greedy, test split, never seen in training)
| task | fixed sample ({card["eval_sample"]["countdown"]} problems, seed {card["eval_sample"]["seed"]}) | larger sample ({card["eval_sample_large"]["countdown"]} problems, seed {card["eval_sample_large"]["seed"]}) | mean completion tokens |
|---|---|---|---|
| countdown | {card["accuracy"]["countdown"]:.1%} | {card["accuracy_large"]["countdown"]:.1%} | {card["mean_completion_tokens"]["countdown"]:.1f} |
| arithmetic | {card["accuracy"]["arithmetic"]:.1%} | {card["accuracy_large"]["arithmetic"]:.1%} | {card["mean_completion_tokens"]["arithmetic"]:.1f} |

The fixed sample is what `tests/tiny/test_tiny_reasoner.py` re-scores against `card.json`.

## Head spans (method.md Eq. 7)
Mean attention distance in tokens per head over response tokens,
{card["head_spans_measured_on"]}:

| layer | {head_cols} |
|---|{"---|" * len(spans[0])}
{span_rows}

Most local heads (layer, head, span): {card["most_local_heads"]}.
Most long-range heads: {card["most_global_heads"]}.

{card.get("notes", "")}

## Use
```python
from workbench.tiny import CHECKPOINT_DIR, load

model, tokenizer = load()  # AutoModelForCausalLM / AutoTokenizer from CHECKPOINT_DIR
```
{examples}"""


def load_card(path: str | Path) -> dict[str, Any]:
    """Read ``card.json`` from a checkpoint folder.

    Args:
        path: the checkpoint folder.

    Returns:
        The card dict.
    """
    return json.loads((Path(path) / "card.json").read_text())
