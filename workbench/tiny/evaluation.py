"""Score the tiny reasoner: greedy completions, held-out accuracy and per-head spans.

Greedy evaluation groups prompts by token length, so no padding is ever used and a batched
result equals the one-at-a-time result. Head spans are those of the analysis engine
(`workbench.attention.metrics.head_span`, Eq. 7 of the paper), averaged over sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from workbench.attention.metrics import head_span
from workbench.errors import WorkbenchError
from workbench.tasks import get_task
from workbench.trace import sample_completions

__all__ = [
    "EVAL_SAMPLE",
    "EVAL_SAMPLE_LARGE",
    "eval_samples",
    "evaluate",
    "generate_completions",
    "head_spans",
    "waad_sawtooth",
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


def eval_samples(tasks: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fixed and the larger held-out sample of a model trained on `tasks`.

    Args:
        tasks: task names.

    Returns:
        ``(small, large)``: 100 test problems per task with seed 0, 500 with seed 1
        (`EVAL_SAMPLE` and `EVAL_SAMPLE_LARGE` for the tiny reasoner's two tasks).
    """
    return (
        {**{t: 100 for t in tasks}, "split": "test", "seed": 0},
        {**{t: 500 for t in tasks}, "split": "test", "seed": 1},
    )


@torch.no_grad()
def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 64,
    batch_size: int = 128,
) -> list[str]:
    """Greedy completions, batched by prompt length (no padding, so results are exact).

    The model is put in eval mode while generating and then back in its previous mode.

    Args:
        model: a causal LM (the tiny reasoner or any HF model with `generate`).
        tokenizer: its tokenizer.
        prompts: prompt texts.
        max_new_tokens: generation budget per prompt.
        batch_size: most prompts per `generate` call.

    Returns:
        One decoded completion per prompt (special tokens removed), in input order.
    """
    # The length-bucketed greedy batching is `sample_completions`' (the RL trainer's too).
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    completions = sample_completions(
        model,
        encoded,
        greedy=True,
        max_new_tokens=max_new_tokens,
        batch_limit=batch_size,
        tokenizer=tokenizer,
    )
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in completions]


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
        sample: ``{task: n, ..., "split": "test", "seed": s}`` with `workbench.tasks` names;
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
    for name in (k for k in sample if k not in ("split", "seed")):
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
    """Mean attention distance per head over response tokens (Eq. 7 of the paper).

    Each sequence (prompt + completion + eos) is measured with the engine's
    `workbench.attention.metrics.head_span`; the spans are then averaged over sequences.

    Args:
        model: a Hugging Face causal LM; switched to eager attention for the call if it
            uses another (only eager attention returns the patterns).
        tokenizer: its tokenizer.
        prompts: prompt texts.
        completions: one completion per prompt (the response R).

    Returns:
        Float32 tensor ``[n_layers, n_heads]`` of spans in tokens.

    Raises:
        WorkbenchError: no prompt has a non-empty response.
    """
    model.eval()
    previous = getattr(model.config, "_attn_implementation", "eager")
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        return _mean_spans(model, tokenizer, prompts, completions)
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)


def _mean_spans(
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
        spans = torch.stack([head_span(a[0], n_prompt) for a in out.attentions])
        total = spans if total is None else total + spans
        count += 1
    if total is None:
        raise WorkbenchError("No non-empty response to measure spans on.", "Pass completions.")
    return (total / count).float()


def waad_sawtooth(analysis: Any) -> float:
    """How much WAAD climbs inside a written search's equations: a tooth per step.

    ``mean WAAD[t]`` over response tokens inside an equation (operators, ``=`` and digits
    that continue a number) divided by ``mean WAAD[t]`` over the separators between them
    (spaces and newlines). Above 1, WAAD rises through each equation and drops at every
    step boundary.

    Args:
        analysis: a `wb.Analysis` of a trace in the ``countdown-search`` format.

    Returns:
        The ratio.
    """
    tokens, start = analysis.tokens, analysis.prompt_len
    inside, between = [], []
    for t in analysis.response:
        prev = tokens[t - 1] if t > start else "\n"
        if tokens[t] in (" ", "\n"):
            between.append(t)
        elif tokens[t] in "+-*/=" or (tokens[t].isdigit() and prev.isdigit()):
            inside.append(t)
    return float(analysis.waad[inside].mean() / analysis.waad[between].mean())
