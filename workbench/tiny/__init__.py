"""The tiny reasoner: a 4-layer Llama that solves Countdown and addition with scratchpads.

The trained checkpoint ships inside this package at `CHECKPOINT_DIR` (safetensors, tokenizer,
``card.json`` with held-out accuracy and head spans, and a model card ``README.md``). Load it
with `load()` or, as the model zoo does, with ``AutoModelForCausalLM.from_pretrained(
CHECKPOINT_DIR, use_safetensors=True)`` + ``AutoTokenizer.from_pretrained(CHECKPOINT_DIR)``.

Retrain with ``python -m workbench.tiny train [--seed S] [--steps N] [--out DIR]``; score it
with ``python -m workbench.tiny eval``.

Caveat: the model only knows the exact text formats of `workbench.tasks` (character-level
vocabulary, no chat template); other text is out of distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

__all__ = ["CHECKPOINT_DIR", "load"]

#: The shipped checkpoint folder.
CHECKPOINT_DIR: Path = Path(__file__).resolve().parent / "checkpoint"


def load(path: str | Path | None = None) -> tuple[Any, Any]:
    """Load the tiny reasoner offline.

    Args:
        path: checkpoint folder (default `CHECKPOINT_DIR`).

    Returns:
        ``(model, tokenizer)``: a `LlamaForCausalLM` in eval mode (float32, CPU, eager
        attention) and its `PreTrainedTokenizerFast`.

    Raises:
        WorkbenchError: the folder has no checkpoint.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path) if path is not None else CHECKPOINT_DIR
    if not (path / "model.safetensors").is_file():
        raise WorkbenchError(
            f"No tiny-reasoner checkpoint at {path}.",
            "Train one with `python -m workbench.tiny train --out DIR` or pass its folder.",
        )
    model = AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=True, attn_implementation="eager"
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer
