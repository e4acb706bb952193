"""The `workbench` command line (also `python -m workbench`).

    workbench models            list the embedded models and whether they are cached
    workbench demo              load the default model, answer a word problem, write outputs
    workbench batch NB --grid k=v1,v2 --out DIR   papermill over a grid, with an index.csv
    workbench rl --strategy coupled --steps N --out DIR   one GRPO run (--resume DIR continues)

Subcommands for batch runs and RL join here as they land.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from . import _validate
from .errors import WorkbenchError
from .models import DEMO_PROBLEM
from .tasks import TASKS

__all__ = ["main"]

DEMO_ANSWER = 41  # 12 * 8 - 30 - 25


def _demo_verdict(text: str) -> str:
    """One line comparing the last number of the demo's answer with `DEMO_ANSWER`: the
    default model (135M parameters) is often wrong, which a user should not have to work
    out, nor take for a broken install."""
    numbers = re.findall(r"-?\d+(?:,\d{3})*(?:\.\d+)?", text)
    last = numbers[-1].replace(",", "") if numbers else None
    if last is not None and float(last) == DEMO_ANSWER:
        return (
            f"check: the correct answer is {DEMO_ANSWER}; the model's last number is {last}: right."
        )
    said = " gave no number" if last is None else f"'s last number is {last}: wrong"
    return (
        f"check: the correct answer is {DEMO_ANSWER}; the model{said}. "
        "Small models often are wrong; the analysis reads how the model reasoned, right or wrong."
    )


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import cache_dir, list_models, model_path

    if args.rebuild is not None:  # `--rebuild ""` (an unset variable) rebuilt nothing, silently
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


def _layers_arg(text: str) -> str | list[int]:
    if text in ("all", "middle"):
        return text
    fix = "pass e.g. --layers middle or --layers 0,5,10"
    parts = text.split(",")
    if any(x.strip() for x in parts) and any(not x.strip() for x in parts):
        # '0,,1' was read as [0, 1] (a layer number lost between the commas) while batch's
        # --grid refuses the same empty value
        raise WorkbenchError(
            f"--layers {text!r} has an empty item in its comma-separated list",
            "separate the layer numbers with single commas, none empty: e.g. --layers 0,5,10",
        )
    try:
        layers = [int(x) for x in parts]
    except ValueError:
        layers = None
    if not layers:  # "" or "," named no layer, and was found out only after generating
        raise WorkbenchError(
            f"--layers {text!r} is not 'all', 'middle' or a comma-separated list of layers", fix
        )
    return layers


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._io import as_path, check_folder
    from .models import load_model
    from .trace import check_not_degenerate, generate

    out = as_path(args.out, "the demo's --out", "folder", "demo-output")  # "~" expanded
    # A typo or a file in the way fails now, not after loading and generating.
    layers = _layers_arg(args.layers)
    check_folder(out, "the demo's output folder")
    _validate.integer("--max-new-tokens", args.max_new_tokens, minimum=1, example=128)
    _validate.number("--temperature", args.temperature, low=0, example=0.7)
    # found out only after loading the model (a minute for the default one from cold)
    _validate.seed("--seed", args.seed)
    if not args.prompt.strip():
        raise WorkbenchError("--prompt is empty", "pass the question to answer, or leave it out")
    t0 = time.time()
    print(f"loading {args.model} ...", flush=True)
    model = load_model(args.model, device=args.device)
    print(f"loaded in {time.time() - t0:.1f} s", flush=True)
    if layers not in ("all", "middle"):  # --layers 0,99 failed only after generating
        from .attention.engine import check_layers
        from .attention.layers import resolve_layers

        check_layers(model, resolve_layers(layers, model.cfg.n_layers))
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
    if args.prompt == DEMO_PROBLEM:
        print(f"\n{_demo_verdict(trace.text)}")
    # A broken sampler must fail here, loudly, not be analysed as if it were reasoning.
    check_not_degenerate(trace)
    from .attention import analyze
    from .report import CHARTS, write_report

    t2 = time.time()
    # The analysis's warnings (no FAI on a short answer) were printed with the console
    # script as their source line: a command prints them as its own lines.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        analysis = analyze(model, trace, layers=layers, sink=args.sink)
    for w in caught:
        print(f"workbench: warning: {w.message}", file=sys.stderr)
    print(
        f"\nanalysed {len(analysis.local_heads) + len(analysis.global_heads)} classified heads "
        f"in {time.time() - t2:.1f} s: {len(analysis.preplan)} preplan tokens, "
        f"{len(analysis.anchors)} anchors, {len(analysis.dominated)} locally dominated"
    )
    top = sorted(analysis.anchors, key=lambda p: -float(analysis.fai[p]))[:8]
    print("strongest anchors: " + (", ".join(repr(analysis.tokens[p]) for p in top) or "none"))
    from .report import _settings_text

    print(f"settings: {_settings_text({'sink': args.sink, **analysis.params.to_dict()})}")
    # Written once the analysis has run, the trace with the report in one step: a failure
    # or a kill leaves an earlier run's outputs as they were (or no folder), never a new
    # trace beside an old report.
    report = write_report(model, trace, analysis, out, trace_file="trace.json")
    trace_path = out / "trace.json"
    print(f"\noutputs: {out.resolve()}")
    print(f"  report: {report.resolve()}  (self-contained HTML, opens offline)")
    # its own charts: an existing --out folder may hold other PNGs, which were listed too
    print(f"  charts: {', '.join(f'{name}.png' for name in CHARTS)}")
    print(f"  trace:  {trace_path.resolve()}")
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import run_batch

    try:
        result = run_batch(
            args.notebook,
            args.grid,
            args.out,
            workers=args.workers,
            timeout=args.timeout,
            rerun_failed=not args.keep_failed,
        )
    except WorkbenchError as e:  # `--workers 0` was told "pass e.g. workers=2"
        raise _as_flags(e, {"workers": "--workers", "timeout": "--timeout"}) from None
    n_ok = sum(r["status"] == "ok" for r in result.rows)
    # A rerun that ran nothing said "2/2 runs succeeded" as a fresh batch did.
    n_skipped = len(result.skipped)
    ran = (
        f" ({len(result.rows) - n_skipped} run now, {n_skipped} done before and skipped)"
        if n_skipped
        else ""
    )
    print(f"{n_ok}/{len(result.rows)} runs succeeded{ran}; index: {result.index_path.resolve()}")
    for r in result.rows:
        if r["status"] != "ok":
            print(f"  failed: {r['notebook']}: {r['error']}")
    return 0 if result.ok else 1


def _cmd_rl(args: argparse.Namespace) -> int:
    from .rl import GRPOConfig, resume, train

    # config field -> the flag that sets it
    flags = {
        "model": ("--model", args.model),
        "task": ("--task", args.task),
        "strategy": ("--strategy", args.strategy),
        "max_steps": ("--steps", args.steps),
        "seed": ("--seed", args.seed),
        "num_generations": ("--num-generations", args.num_generations),
        "per_device_train_batch_size": ("--batch-size", args.batch_size),
        "learning_rate": ("--learning-rate", args.learning_rate),
        "max_completion_length": ("--max-completion-length", args.max_completion_length),
        "eval_every": ("--eval-every", args.eval_every),
        "eval_size": ("--eval-size", args.eval_size),
        "eval_samples": ("--eval-samples", args.eval_samples),
        "warmup_steps": ("--warmup-steps", args.warmup_steps),
    }
    overrides = {k: v for k, (_, v) in flags.items() if v is not None}
    if args.config is not None and not args.config.strip():  # was ignored: a default run
        raise WorkbenchError(
            "--config names no file (it is empty)",
            "pass a config.json written by a run, or leave --config out",
        )
    if args.resume is not None:  # `--resume ""` was told to add --out for a new run
        if not args.resume.strip():
            raise WorkbenchError(
                "--resume names no folder (it is empty)",
                "pass the folder of the run to continue: --resume runs/NAME",
            )
        ignored = sorted(flags[k][0] for k in set(overrides) - {"max_steps"})
        ignored += ["--config"] * bool(args.config) + ["--out"] * bool(args.out)
        if ignored:
            raise WorkbenchError(
                f"--resume continues a run with its saved settings, so {', '.join(ignored)} "
                "cannot change",
                "pass only --resume DIR (and --steps N to extend it), or start a new run "
                "with --out",
            )
        if args.steps is not None and args.steps < 1:
            raise WorkbenchError(f"--steps must be at least 1, got {args.steps}", "pass --steps N")
        run = resume(args.resume, max_steps=args.steps)
    else:
        if not args.out:
            raise WorkbenchError(
                "workbench rl needs --out DIR for a new run", "add --out runs/NAME"
            )
        base = GRPOConfig()
        if args.config:
            import json

            fix = "pass a config.json written by a run or by GRPOConfig.to_dict()"
            try:
                saved = json.loads(Path(args.config).read_text())
            except (OSError, ValueError) as e:  # ValueError: JSON or UTF-8 decoding
                raise WorkbenchError(
                    f"--config {args.config} could not be read as JSON ({e})", fix
                ) from None
            if not isinstance(saved, dict):
                raise WorkbenchError(
                    f"--config {args.config} holds a JSON {type(saved).__name__}, not a config "
                    "object",
                    fix,
                )
            base = GRPOConfig.from_dict(saved)
        try:
            config = base.replace(**overrides)
        except WorkbenchError as e:
            raise _as_flags(e, {k: flags[k][0] for k in overrides}) from None
        run = train(config, out=args.out)
    print(f"run {run.run_dir}: {run.status} at step {run.step}")
    for key, name in (("eval_accuracy", "greedy"), ("eval_sampled_accuracy", "sampled")):
        accs = [r[key] for r in run.metrics if key in r]
        if accs:
            print(
                f"held-out accuracy ({name}): start {accs[0]:.3f}, end {accs[-1]:.3f}, "
                f"peak {max(accs):.3f}"
            )
    if run.status == "interrupted":
        # Not a success to a shell loop or a scheduler: the run stopped short. 130 is a
        # Ctrl-C's exit status; the checkpoint makes it resumable.
        print(f"resume it with: workbench rl --resume {run.run_dir}")
        return 130
    return 0 if run.status == "finished" else 1


def _as_flags(error: WorkbenchError, names: dict[str, str]) -> WorkbenchError:
    """`error` with the config fields in `names` said as the flags that set them: `rl
    --steps 0` was told "max_steps must be at least 1 ... pass e.g. max_steps=50", names a
    command line does not take. Only where the field starts the message or has ``=``
    after it, so that the word "model" in a message stays a word."""

    def flagged(text: str | None) -> str | None:
        if text is None:
            return None
        for field, flag in names.items():
            text = re.sub(rf"^{field}(?=\s)|(?<![\w-]){field}(?==)", flag, text)
        return text

    return WorkbenchError(flagged(error.problem) or "", flagged(error.fix))


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
    p.add_argument("--layers", default="all", help="'all', 'middle' or e.g. 0,5,10")
    p.add_argument(
        "--sink",
        choices=["keep", "exclude"],
        default="exclude",
        help="the first token's attention: 'exclude' (default here: on SmolLM2 the sink "
        "takes ~29%% of every row and flattens the rhythm) or 'keep' (the paper's definition)",
    )
    p.add_argument(
        "--out",
        # an empty WORKBENCH_DEMO_OUT (unset in a script) was refused as an empty --out
        default=os.environ.get("WORKBENCH_DEMO_OUT", "").strip() or "demo-output",
        help="folder for the outputs (default: $WORKBENCH_DEMO_OUT, else ./demo-output)",
    )
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("batch", help="run a parameterised notebook over a grid (papermill)")
    p.add_argument("notebook", help="notebook with one cell tagged 'parameters'")
    p.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="a parameter and its values; repeat for a product grid (at least one). A list "
        "in brackets is one value (seeds=[0,1],[2]); text in double quotes stays text "
        "(label='\"10\"'); separate values that hold commas with ';'",
    )
    p.add_argument("--out", required=True, help="output folder (index.csv + notebooks)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (default 1)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed per cell")
    p.add_argument(
        "--keep-failed", action="store_true", help="do not re-run runs that failed last time"
    )
    p.set_defaults(func=_cmd_batch)

    p = sub.add_parser("rl", help="one GRPO run with rhythm credit (or --resume DIR)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    p.add_argument("--out", help="run directory of a new run")
    p.add_argument("--config", metavar="FILE", help="settings from a JSON file (flags override)")
    p.add_argument("--model", help="model name or folder (default: tiny-reasoner)")
    p.add_argument("--task", choices=sorted(TASKS))
    p.add_argument(
        "--strategy",
        help="a credit strategy (workbench.attention.credit.STRATEGIES; an unknown name is "
        "refused with the list), default none",
    )
    p.add_argument(
        "--steps", type=int, help="optimiser steps (with --resume: extend the run to this many)"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--num-generations", type=int)
    p.add_argument("--batch-size", type=int, help="completions per step (TRL's meaning)")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--max-completion-length", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--eval-size", type=int)
    p.add_argument("--eval-samples", type=int, help="sampled completions per held-out problem")
    p.add_argument("--warmup-steps", type=int, help="linear learning-rate warm-up")
    p.set_defaults(func=_cmd_rl)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `workbench` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    terminate = _terminate_as_ctrl_c()
    try:
        return args.func(args)
    except WorkbenchError as e:
        print(f"workbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `workbench models | head`: the reader left, as for any CLI
        with contextlib.suppress(OSError):  # no second traceback when Python flushes stdout
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if terminate is not None:
            signal.signal(signal.SIGTERM, terminate)


def _terminate_as_ctrl_c() -> Any:
    """Make SIGTERM (``kill``, ``timeout``, a scheduler's stop) act as Ctrl-C for the
    command; return the handler it replaced (None where none was replaced).

    SIGTERM killed the command where it stood: a batch left its kernels' RL runs marked
    running and its temporary notebooks behind, where Ctrl-C stops the kernels, checkpoints
    and says what is left. The SIGINT handler in place then runs (`wb.rl.train` holds Ctrl-C
    over a step or a checkpoint write and stops after it); where SIGINT is ignored (a
    background job inherits that) SIGTERM still stops the command, as KeyboardInterrupt.
    """
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum: int, frame: Any) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, terminate)


if __name__ == "__main__":
    sys.exit(main())
