"""The tiny reasoner: a 4-layer Llama that solves Countdown and addition with scratchpads.

The trained checkpoint ships inside this package at `CHECKPOINT_DIR` (safetensors, tokenizer,
``card.json`` with held-out accuracy and head spans, and a model card ``README.md``); the
model zoo (``wb.load_model("tiny-reasoner")``, `workbench.models`) loads it from this same
folder. `load()` returns the plain Hugging Face pair through the zoo's loader
(`workbench.models.load_hf`), on CPU with eager attention.

Retrain with ``python -m workbench.tiny train [--seed S] [--steps N] [--out DIR]``; score it
with ``python -m workbench.tiny eval``. Modules: `train` (recipe and loop), `evaluation`
(greedy accuracy, head spans), `card` (``card.json`` and ``README.md``), `tokenizer`.

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
    from workbench.models import load_hf

    path = Path(path) if path is not None else CHECKPOINT_DIR
    if not (path / "model.safetensors").is_file():
        raise WorkbenchError(
            f"No tiny-reasoner checkpoint at {path}.",
            "Train one with `python -m workbench.tiny train --out DIR` or pass its folder.",
        )
    model, tokenizer = load_hf(path, device="cpu")
    model.set_attn_implementation("eager")
    return model.eval(), tokenizer
