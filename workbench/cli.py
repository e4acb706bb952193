"""The `workbench` command line (also `python -m workbench`).

    workbench models            list the embedded models and whether they are cached
    workbench demo              load the default model, answer a word problem, write outputs

Subcommands for batch runs and RL join here as they land.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .errors import WorkbenchError

__all__ = ["main"]

DEMO_PROBLEM = (
    "A baker makes 12 trays of muffins with 8 muffins on each tray. She sells 30 muffins "
    "in the morning and 25 in the afternoon. How many muffins are left? "
    "Think step by step, then give the final answer."
)


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import cache_dir, list_models, model_path

    if args.rebuild:
        model_path(args.rebuild, rebuild=True)
    print(f"{'name':<16}{'available':<11}{'cached':<8}description")
    for m in list_models():
        print(
            f"{m.name:<16}{'yes' if m.available else 'no':<11}"
            f"{'yes' if m.cached else 'no':<8}{m.description}"
        )
        print(f"{'':<35}from: {m.source}")
        if m.path is not None:
            print(f"{'':<35}path: {m.path}")
    print(f"\ncache: {cache_dir()}  (set WORKBENCH_CACHE to move it)")
    print("also accepted: any local Hugging Face checkpoint folder; hub names with allow_hub=True")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .models import load_model
    from .trace import generate

    out = Path(args.out)
    t0 = time.time()
    print(f"loading {args.model} ...", flush=True)
    model = load_model(args.model, device=args.device)
    print(f"loaded in {time.time() - t0:.1f} s", flush=True)
    print(f"\nproblem: {args.prompt}\n", flush=True)
    t1 = time.time()
    trace = generate(
        model,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
    )
    print(f"answer ({trace.response_len} tokens, {time.time() - t1:.1f} s):\n")
    print(trace.text.strip())
    out.mkdir(parents=True, exist_ok=True)
    trace_path = trace.save(out / "trace.json")
    print(f"\noutputs: {out.resolve()}")
    print(f"  trace: {trace_path.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `workbench` command."""
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Attention rhythm workbench: analyse preplan/anchor tokens, ablate, train.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list embedded models and the cache")
    p.add_argument("--rebuild", metavar="NAME", help="rebuild an embedded model's cache first")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("demo", help="answer a built-in word problem with the default model")
    p.add_argument("--model", default="smollm2-135m", help="model name or folder")
    p.add_argument("--prompt", default=DEMO_PROBLEM, help="the question to answer")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument(
        "--out",
        default=os.environ.get("WORKBENCH_DEMO_OUT", "demo-output"),
        help="folder for the outputs (default: ./demo-output)",
    )
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `workbench` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except WorkbenchError as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
