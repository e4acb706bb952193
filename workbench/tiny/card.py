"""A tiny model's card: the machine-readable ``card.json`` dict and its Markdown.

`build_card` collects the numbers of a finished run (architecture, recipe, held-out
accuracy, head spans, versions); `render_card` turns that dict into the ``README.md`` that
ships with the checkpoint.
"""

from __future__ import annotations

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

    from workbench.provenance import provenance

    c = train_config
    tasks = list(c.get("tasks", ("countdown", "arithmetic")))
    flat = sorted(
        (float(spans[layer, h]), layer, h)
        for layer in range(spans.shape[0])
        for h in range(spans.shape[1])
    )
    return {
        "model": c.get("name", "tiny-reasoner"),
        "architecture": {
            "class": type(model).__name__,
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
        "head_spans_measured_on": (
            f"greedy completions of the first 50 fixed-sample {tasks[0]} problems"
        ),
        "most_local_heads": [[layer, h, round(s, 2)] for s, layer, h in flat[:4]],
        "most_global_heads": [[layer, h, round(s, 2)] for s, layer, h in flat[::-1][:4]],
        # The workbench commit that trained it, beside the libraries: the recipe lives in
        # the code, so a card without it cannot be reproduced.
        "versions": {**provenance(), "tokenizers": tokenizers.__version__},
    }


def _source(versions: dict[str, Any]) -> str:
    """``, workbench 0.x at commit ...`` for cards that record it (cards before it did not)."""
    if "workbench" not in versions:
        return ""
    commit = versions.get("commit")
    at = f" at commit {commit[:12]}{' (with local changes)' * bool(versions.get('dirty'))}"
    return f", workbench {versions['workbench']}{at if commit else ''}"


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
    name = card["model"]
    tasks = list(c.get("tasks", ("countdown", "arithmetic")))
    if len(tasks) == 2:
        mix = f"mix {c['countdown_fraction']:.0%} {tasks[0]} / {1 - c['countdown_fraction']:.0%} {tasks[1]}"
    else:
        mix = f"task {tasks[0]}"
    formats = "\n\n".join(_format_example(t) for t in tasks)
    acc_rows = "\n".join(
        f"| {t} | {card['accuracy'][t]:.1%} | {card['accuracy_large'][t]:.1%} | "
        f"{card['mean_completion_tokens'][t]:.1f} |"
        for t in tasks
    )
    return f"""# {name}

A {a["n_layers"]}-layer Hugging Face `{a["class"]}` ({a["n_params"]:,} parameters) trained
from scratch by `python -m workbench.tiny train --model {name}` on {_describe(tasks)}. It
exists so every notebook, test and RL run of the workbench has a real reasoning model that
loads offline in a second and trains on 2 CPU cores. It is a toy: use it to exercise the
method, not to reproduce the paper's numbers.

## Architecture
- {_family(c)}: {a["n_layers"]} layers, {a["n_heads"]} heads of dimension {a["d_head"]}
  (d_model {a["d_model"]}, no grouped-query attention), SwiGLU MLP width {a["d_mlp"]},
  RoPE (theta {c["rope_theta"]:g}), RMSNorm, tied embeddings, eager attention.{_windows(c)}
- Tokenizer: {a["tokenizer"]}, vocabulary {a["vocab_size"]}; `<s>` is prepended to every
  encoding (position 0, available as an attention sink), `</s>` ends each completion. No chat
  template.

## Format
Prompts and completions are exactly those of `workbench.tasks` (reference solutions shown):

{formats}

## Training recipe
Supervised learning from scratch on reference scratchpads of the *train* split (loss on
completion tokens only): {c["steps"]} AdamW steps, batch {c["batch_size"]}, peak lr {c["lr"]}
(warm-up {c["warmup"]} steps, cosine to 10%), weight decay {c["weight_decay"]},
{mix}, problem pool {c["pool"]}, seed {c["seed"]}, CPU threads: {c["threads"]}.
Wall time: **{card["train_wall_time_s"] / 60:.1f} min** on 2 CPU cores shared with other jobs (final loss
{card["final_loss"]}). torch {card["versions"]["torch"]}, transformers
{card["versions"]["transformers"]}{_source(card["versions"])}.

## Held-out accuracy (greedy, test split, never seen in training)
| task | fixed sample ({card["eval_sample"][tasks[0]]} problems, seed {card["eval_sample"]["seed"]}) | larger sample ({card["eval_sample_large"][tasks[0]]} problems, seed {card["eval_sample_large"]["seed"]}) | mean completion tokens |
|---|---|---|---|
{acc_rows}

Greedy decoding, at most {c["max_new_tokens"]} new tokens.

The fixed sample is what `tests/tiny/test_tiny_models.py` re-scores against `card.json`.

## Head spans (Eq. 7)
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
import workbench as wb
from workbench.tiny import load

model, tokenizer = load(name="{name}")  # the plain Hugging Face pair
bridge = wb.load_model("{name}")  # the same weights in the workbench's model zoo
```
{examples}"""


_DESCRIPTIONS = {
    "countdown": "Countdown (3 numbers in 1..20, target 1..100) with its shortest solution",
    "countdown-search": (
        "Countdown (3 numbers in 1..30, target 1..150) with a written search: first steps in "
        "a fixed order, each followed by every second step and checked against the target, "
        "until one reaches it (3-5 lines)"
    ),
    "arithmetic": "addition of 2-4 digit numbers with a column-by-column scratchpad",
}


def _describe(tasks: list[str]) -> str:
    return "; ".join(_DESCRIPTIONS.get(t, t) for t in tasks)


def _format_example(task_name: str) -> str:
    from workbench.tasks import get_task

    problem = get_task(task_name).generate(1, "train", seed=0)[0]
    return f"```\n{problem.prompt}{problem.solution}```"


def _family(c: dict[str, Any]) -> str:
    return "Qwen3 (q/k RMSNorm)" if c.get("arch") == "qwen3" else "Llama"


def _windows(c: dict[str, Any]) -> str:
    if not c.get("sliding_layers"):
        return ""
    layers = ", ".join(str(i) for i in c["sliding_layers"])
    return (
        f"\n- Sliding-window attention in layers {layers}: each query sees only the last "
        f"{c['sliding_window']} tokens (itself included); the other layers see everything."
    )
