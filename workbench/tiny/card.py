"""The tiny reasoner's model card: the machine-readable ``card.json`` dict and its Markdown.

`build_card` collects the numbers of a finished run (architecture, recipe, held-out
accuracy, head spans, versions); `render_card` turns that dict into the ``README.md`` that
ships with the checkpoint.
"""

from __future__ import annotations

import platform
from typing import Any

import torch

__all__ = ["build_card", "render_card"]


def build_card(
    train_config: dict[str, Any],
    model: Any,
    train_s: float,
    losses: list[float],
    small: dict[str, Any],
    large: dict[str, Any],
    spans: torch.Tensor,
    eval_sample: dict[str, Any],
    eval_sample_large: dict[str, Any],
) -> dict[str, Any]:
    """The card dict of a finished run (saved as ``card.json``).

    Args:
        train_config: the run's `TrainConfig` as a dict (``dataclasses.asdict``).
        model: the trained model.
        train_s: training wall time in seconds.
        losses: the loss of every step.
        small / large: `evaluate` results on `eval_sample` / `eval_sample_large`.
        spans: ``[n_layers, n_heads]`` head spans (`head_spans`).
        eval_sample / eval_sample_large: the held-out samples scored.

    Returns:
        A JSON-serialisable dict.
    """
    import tokenizers
    import transformers

    c = train_config
    flat = sorted(
        (float(spans[layer, h]), layer, h)
        for layer in range(spans.shape[0])
        for h in range(spans.shape[1])
    )
    return {
        "model": "tiny-reasoner",
        "architecture": {
            "class": "LlamaForCausalLM",
            "n_layers": c["n_layers"],
            "n_heads": c["n_heads"],
            "d_model": c["d_model"],
            "d_head": c["d_model"] // c["n_heads"],
            "d_mlp": c["d_mlp"],
            "vocab_size": model.config.vocab_size,
            "n_params": sum(p.numel() for p in model.parameters()),
            "tokenizer": "character-level (workbench.tiny.tokenizer)",
        },
        "train_config": dict(c),
        "train_wall_time_s": round(train_s, 1),
        "final_loss": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 4),
        "eval_sample": dict(eval_sample),
        "accuracy": small["accuracy"],
        "eval_sample_large": dict(eval_sample_large),
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
