"""Command line: ``python -m workbench.tiny {train,eval}``.

``train [--model NAME] [--seed S] [--steps N] [--out DIR]`` trains a tiny model from its
recipe (`workbench.tiny.train.PRESETS`) and writes a checkpoint folder (default: the shipped
folder of NAME, replaced atomically). ``eval [--model NAME] [--dir DIR] [--n N] [--seed S]``
prints greedy held-out accuracy per task.
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
    p_train = sub.add_parser("train", help="train the tiny reasoner")
    p_train.add_argument("--model", choices=sorted(CHECKPOINTS), default="tiny-reasoner")
    p_train.add_argument("--seed", type=int, default=0)
    p_train.add_argument("--steps", type=int, default=None)
    p_train.add_argument("--batch-size", type=int, default=None)
    p_train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p_train.add_argument("--rope-theta", type=float, default=None, help="RoPE base")
    p_train.add_argument("--out", default=None, help="checkpoint folder (default: shipped)")
    p_eval = sub.add_parser("eval", help="print held-out accuracy per task")
    p_eval.add_argument("--model", choices=sorted(CHECKPOINTS), default="tiny-reasoner")
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
        card = tr.train(cfg, out=args.out or CHECKPOINTS[args.model])
        print(json.dumps({k: card[k] for k in ("accuracy", "accuracy_large", "train_wall_time_s")}))
        return 0

    from workbench.tiny import load
    from workbench.tiny.evaluation import eval_samples, evaluate
    from workbench.tiny.train import preset

    torch.set_num_threads(args.threads)
    model, tokenizer = load(args.dir, name=args.model)
    cfg = preset(args.model)
    sample = eval_samples(cfg.tasks)[0]
    if args.n is not None:
        sample.update({t: args.n for t in cfg.tasks})
    if args.seed is not None:
        sample["seed"] = args.seed
    result = evaluate(model, tokenizer, sample, max_new_tokens=cfg.max_new_tokens)
    for name, acc in result["accuracy"].items():
        print(f"{name:12s} {acc:7.1%}  (n={result['n'][name]}, split={sample['split']}, greedy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
