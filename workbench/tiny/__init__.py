"""The tiny models: 4-layer transformers trained from scratch on the verifiable tasks, shipped inside.

- ``tiny-reasoner`` (`CHECKPOINT_DIR`): Countdown and addition with short scratchpads (about
  33 tokens), fairly diffuse attention.
- ``tiny-searcher`` (`SEARCHER_DIR`): a Qwen3 on Countdown with a written search
  (``countdown-search``: first steps in a fixed order, each with every second step checked
  against the target; 60-260 tokens). Its first two layers see only the last 4 tokens, so
  their heads are sharply local and the last two layers' heads global: a reasoner whose
  traces have a rhythm for credit strategies to act on.

Each folder holds safetensors, the tokenizer, ``card.json`` (held-out accuracy, head spans)
and a model card ``README.md``; the model zoo (``wb.load_model("tiny-searcher")``,
`workbench.models`) loads them from the same folders. `load()` returns the plain Hugging
Face pair through the zoo's loader (`workbench.models.load_hf`), on CPU with eager attention.

Retrain with ``python -m workbench.tiny train [--model NAME] [--seed S] [--steps N] [--out
DIR]`` (one command per model, recipes in `workbench.tiny.train.PRESETS`); score one with
``python -m workbench.tiny eval [--model NAME]``. Modules: `train` (recipe and loop), `evaluation`
(greedy accuracy, head spans), `card` (``card.json`` and ``README.md``), `tokenizer`.

Caveat: the model only knows the exact text formats of `workbench.tasks` (character-level
vocabulary, no chat template); other text is out of distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

__all__ = ["CHECKPOINTS", "CHECKPOINT_DIR", "SEARCHER_DIR", "load"]

#: The tiny reasoner's shipped checkpoint folder.
CHECKPOINT_DIR: Path = Path(__file__).resolve().parent / "checkpoint"
#: The tiny searcher's shipped checkpoint folder.
SEARCHER_DIR: Path = Path(__file__).resolve().parent / "searcher"
#: Shipped folder per model name.
CHECKPOINTS: dict[str, Path] = {"tiny-reasoner": CHECKPOINT_DIR, "tiny-searcher": SEARCHER_DIR}


def load(path: str | Path | None = None, name: str = "tiny-reasoner") -> tuple[Any, Any]:
    """Load a tiny model offline.

    Args:
        path: checkpoint folder (default: the shipped folder of `name`).
        name: ``"tiny-reasoner"`` or ``"tiny-searcher"`` (used when `path` is None).

    Returns:
        ``(model, tokenizer)``: the model (`LlamaForCausalLM` or `Qwen3ForCausalLM`) in eval mode (float32, CPU, eager
        attention) and its `PreTrainedTokenizerFast`.

    Raises:
        WorkbenchError: the folder has no checkpoint.
    """
    from workbench.models import load_hf

    if path is None and name not in CHECKPOINTS:
        raise WorkbenchError(f"No tiny model {name!r}.", f"Use one of {sorted(CHECKPOINTS)}.")
    from workbench._io import as_path

    # ``~`` expanded: "~/ckpt" was looked up as a folder named "~" in the current one.
    path = (
        as_path(path, "load's path", "folder", "workbench/tiny/checkpoint")
        if path is not None
        else CHECKPOINTS[name]
    )
    if not (path / "model.safetensors").is_file():
        raise WorkbenchError(
            f"No {name} checkpoint at {path}.",
            f"Train one with `python -m workbench.tiny train --model {name} --out DIR` or "
            "pass its folder.",
        )
    model, tokenizer = load_hf(path, device="cpu")
    model.set_attn_implementation("eager")
    return model.eval(), tokenizer
