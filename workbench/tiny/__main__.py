"""Command line: ``python -m workbench.tiny {train,eval}``.

``train [--model NAME] [--seed S] [--steps N] [--out DIR]`` trains a tiny model from its
recipe (`workbench.tiny.train.PRESETS`) and writes a checkpoint folder (default: the shipped
folder of NAME, replaced atomically, and only by its own recipe: other settings need
``--out``). ``eval [--model NAME] [--dir DIR] [--n N] [--seed S]``
prints greedy held-out accuracy per task; a folder with a ``card.json`` is scored on the
tasks and generation budget its card records.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: arguments (default `sys.argv[1:]`).

    Returns:
        The process exit status.
    """
    from workbench.tiny import CHECKPOINTS

    parser = argparse.ArgumentParser(prog="python -m workbench.tiny", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_train = sub.add_parser("train", help="train a tiny model from its recipe")
    p_train.add_argument("--model", choices=sorted(CHECKPOINTS), default="tiny-reasoner")
    p_train.add_argument("--seed", type=int, default=0)
    p_train.add_argument("--steps", type=int, default=None)
    p_train.add_argument("--batch-size", type=int, default=None)
    p_train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p_train.add_argument("--rope-theta", type=float, default=None, help="RoPE base")
    p_train.add_argument("--out", default=None, help="checkpoint folder (default: shipped)")
    p_eval = sub.add_parser("eval", help="print held-out accuracy per task")
    p_eval.add_argument(
        "--model",
        choices=sorted(CHECKPOINTS),
        default=None,
        help="default: the model of --dir's card.json, else tiny-reasoner",
    )
    p_eval.add_argument("--dir", default=None, help="checkpoint folder (default: shipped)")
    p_eval.add_argument("--n", type=int, default=None, help="problems per task")
    p_eval.add_argument("--seed", type=int, default=None)
    p_eval.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    from workbench.errors import WorkbenchError

    # Like `workbench`'s own command line: a bad input is one message and status 2.
    try:
        return _run(args)
    except WorkbenchError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch

    from workbench.tiny import CHECKPOINTS

    if args.command == "train":
        from workbench.errors import WorkbenchError
        from workbench.tiny import train as tr

        changes = {
            "steps": args.steps,
            "rope_theta": args.rope_theta,
            "threads": args.threads,
            "batch_size": args.batch_size,
        }
        cfg = tr.preset(
            args.model, seed=args.seed, **{k: v for k, v in changes.items() if v is not None}
        )
        if args.out is None and cfg != tr.preset(args.model):
            # The shipped folder is what every notebook and test loads: a 10-step run of a
            # workshop exercise replaced it without a word.
            changed = [k for k, v in changes.items() if v is not None] + (
                ["seed"] if args.seed != 0 else []
            )
            raise WorkbenchError(
                f"these settings ({', '.join('--' + k.replace('_', '-') for k in changed)}) "
                f"differ from {args.model}'s recipe, and without --out the run would replace "
                "the shipped checkpoint that the notebooks and tests load",
                f"pass --out DIR for the new checkpoint (then `eval --dir DIR`), or leave the "
                f"settings at the recipe to retrain {args.model} itself",
            )
        card = tr.train(cfg, out=args.out or CHECKPOINTS[args.model])
        print(json.dumps({k: card[k] for k in ("accuracy", "accuracy_large", "train_wall_time_s")}))
        return 0

    from workbench import _validate
    from workbench.tiny import load
    from workbench.tiny.evaluation import eval_samples, evaluate

    # Checked before loading: --n 0 printed nothing with status 0, --threads 0 was a raw
    # RuntimeError out of torch.
    threads = _validate.integer("--threads", args.threads, minimum=1, example=1)
    if args.n is not None:
        _validate.integer("--n", args.n, minimum=1, example=100)
    if args.seed is not None:
        _validate.seed("--seed", args.seed)
    name, tasks, budget = _eval_recipe(args.model, args.dir)
    model, tokenizer = load(args.dir, name=name)
    sample = eval_samples(tasks)[0]
    if args.n is not None:
        sample.update({t: args.n for t in tasks})
    if args.seed is not None:
        sample["seed"] = args.seed
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = evaluate(model, tokenizer, sample, max_new_tokens=budget)
    finally:
        torch.set_num_threads(previous)
    for name, acc in result["accuracy"].items():
        print(f"{name:12s} {acc:7.1%}  (n={result['n'][name]}, split={sample['split']}, greedy)")
    return 0


def _eval_recipe(model: str | None, folder: str | None) -> tuple[str, tuple[str, ...], int]:
    """``(name, tasks, max_new_tokens)`` to score a checkpoint with: those its folder's
    ``card.json`` records (a searcher folder scored with the reasoner's tasks read 0%),
    else those of the `model` recipe (default tiny-reasoner)."""
    from pathlib import Path

    from workbench.errors import WorkbenchError
    from workbench.tiny.train import TrainConfig, preset

    card_file = Path(folder).expanduser() / "card.json" if folder is not None else None
    if card_file is None or not card_file.is_file():
        cfg = preset(model or "tiny-reasoner")
        return cfg.name, cfg.tasks, cfg.max_new_tokens
    try:
        card = json.loads(card_file.read_text())
        name = card["model"]
        recipe = card["train_config"]
        # Cards from before a field was recorded hold its default (`workbench.tiny.card`).
        tasks = tuple(recipe.get("tasks", TrainConfig.tasks))
        budget = int(recipe.get("max_new_tokens", TrainConfig.max_new_tokens))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WorkbenchError(
            f"cannot read the model card {card_file} ({type(e).__name__}: {e})",
            "remove or repair the card.json (it is rewritten by `train`), then pass --model",
        ) from None
    if model is not None and model != name:
        raise WorkbenchError(
            f"--model {model} but the checkpoint in {folder} is {name} (its card.json)",
            f"pass --model {name}, or leave --model out",
        )
    return name, tasks, budget


if __name__ == "__main__":
    sys.exit(main())
