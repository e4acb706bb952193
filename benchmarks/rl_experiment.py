"""The credit-strategy experiment: strategies x seeds of GRPO on a tiny model.

    python benchmarks/rl_experiment.py --setup searcher --out runs/rl-searcher   # 9 x 10 seeds
    python benchmarks/rl_experiment.py --out runs/rl-experiment    # the first grid (reasoner)
    python benchmarks/rl_experiment.py --out /tmp/x --steps 2 --seeds 0    # a smoke run

Two setups (`SETUPS`): ``searcher`` trains the tiny searcher on Countdown with a written
search (166-token traces on average, sliding-window local heads), with the six strategies and the three
bottom-40% controls over ten seeds; ``reasoner`` is the first experiment, the tiny reasoner
on short Countdown scratchpads, six strategies over five seeds.

Each (strategy, seed) is an ordinary run directory (``OUT/<strategy>/seed-<seed>``) run by
`wb.rl.run_experiment` in its own process (``--workers`` at a time, one torch thread each),
so the grid is resumable: run the same command again and finished runs are skipped,
interrupted ones resumed. Runs are queued seed by seed, so a grid cut short still has every
strategy on the first seeds. At the end it prints the summary tables (greedy and sampled
held-out accuracy) as Markdown, and writes ``summary.json`` and ``chart-*.png`` into OUT.
``summary.json`` records ``invocation_wall_s`` (this command's time, small when the runs
were already done) apart from ``grid_step_seconds``, the training steps' time summed over
the run directories' ``metrics.jsonl`` (``step_time``; evaluations and loading excluded).
The output starts with the provenance (package versions and git commit,
`workbench.provenance`), which ``summary.json`` records too (and each run directory its own).

Intervals are over seeds, so they are Student-t intervals; each strategy is compared with
plain GRPO (``none``) by the exact paired sign-flip test (the paired t-test above 16 seeds),
Holm-adjusted over the strategies (see `Experiment.paired`, whose ``p_min`` says how small
a p-value the seeds allow: five seeds and five strategies can never pass Holm at 5%).
``--tables-from CSV`` recomputes the tables from a recorded ``evaluations.csv`` (for
example ``results/rl_experiment/evaluations.csv``) without training.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import _args

STRATEGIES = ["none", "random", "entropy", "local", "global", "coupled"]
CONTROLS = ["bottom-local", "bottom-global", "bottom-coupled"]

#: The settings of the reported experiments (benchmarks/README.md); see GRPOConfig.
SETUPS = {
    "reasoner": {
        "strategies": STRATEGIES,
        "seeds": [0, 1, 2, 3, 4],
        "steps": 60,
        "settings": dict(
            model="tiny-reasoner",
            task="countdown",
            per_device_train_batch_size=128,
            num_generations=8,
            learning_rate=2e-4,
            warmup_steps=10,
            max_completion_length=64,
            eval_every=20,
            eval_size=200,
            eval_samples=4,
            save_every=20,
        ),
    },
    "searcher": {
        "strategies": STRATEGIES + CONTROLS,
        "seeds": list(range(10)),
        "steps": 24,
        "settings": dict(
            model="tiny-searcher",
            task="countdown-search",
            per_device_train_batch_size=64,
            num_generations=8,
            # 3e-5: plain GRPO gains about 9 greedy points in 24 steps (1e-4, the first
            # grids' rate, gained 4 in 24 and 48 steps; benchmarks/README.md).
            learning_rate=3e-5,
            warmup_steps=4,
            max_completion_length=200,
            eval_every=0,
            eval_size=100,
            eval_samples=2,
            save_every=8,
        ),
    },
}
#: The first experiment's settings (kept under this name for its readers).
SETTINGS = SETUPS["reasoner"]["settings"]


def _one(strategy: str, seed: int, out: str, settings: dict) -> tuple[str, int, float]:
    import torch

    torch.set_num_threads(1)
    from workbench.rl import run_experiment

    t0 = time.perf_counter()
    run_experiment([strategy], [seed], out, progress=False, **settings)
    return strategy, seed, time.perf_counter() - t0


def markdown(table) -> str:
    """A DataFrame as a Markdown table (floats to 3 decimals), without extra packages."""
    cols = list(table.columns)
    fmt = [(f"{v:.3f}" if isinstance(v, float) else str(v)) for v in table.to_numpy().ravel()]
    rows = [fmt[i : i + len(cols)] for i in range(0, len(fmt), len(cols))]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def tables(exp) -> dict:
    """Print the summary and paired tables of both metrics; return them as records."""
    out = {}
    for metric in ("eval_accuracy", "eval_sampled_accuracy"):
        table = exp.summary(metric)
        out[metric] = table.to_dict(orient="records")
        print(f"\n### {metric} (mean over seeds, {table['interval'][0]} interval)\n")
        print(markdown(table))
        if set(table["strategy"]) <= {"none"}:  # plain GRPO alone (a pilot): nothing to pair
            continue
        paired = exp.paired(metric)
        out[metric + "_paired"] = paired.to_dict(orient="records")
        print(f"\n{metric}: final minus plain GRPO ('none'), paired by seed; {paired['test'][0]}\n")
        print(markdown(paired.drop(columns="test")))
    return out


def _recorded(csv: str):
    from workbench.rl import Experiment

    class Recorded(Experiment):
        """An experiment read from its recorded evaluations (no run directories)."""

        def _configs(self):
            return []  # no run folders: every run is in the recorded table

        def _frame(self, configs):
            import pandas as pd

            frame = pd.read_csv(csv)
            if "max_steps" not in frame:  # recorded before runs kept their length: all
                frame["max_steps"] = frame["step"].max()  # ran to the last step recorded
            return frame

    import pandas as pd

    from workbench.errors import WorkbenchError

    need = ["strategy", "seed", "step", "eval_accuracy", "eval_sampled_accuracy"]
    try:
        header = list(pd.read_csv(csv, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise WorkbenchError(
            f"cannot read {csv!r} as CSV: {e}", "pass an evaluations.csv of a grid"
        ) from None
    missing = [c for c in need if c not in header]
    if missing:
        raise WorkbenchError(
            f"{csv!r} lacks the grid's columns {missing} (it has {header})"[:300],
            "pass an evaluations.csv of a grid, e.g. benchmarks/results/rl_experiment/"
            "evaluations.csv",
        )
    return Recorded(Path(csv).parent)


def grid_step_seconds(out: Path) -> float | None:
    """The training steps' time summed over the run directories under `out` (each
    ``metrics.jsonl``'s ``step_time``, the last record of each step); None without any."""
    total, found = 0.0, False
    for path in out.glob("*/seed-*/metrics.jsonl"):
        steps: dict[int, float] = {}
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and "step_time" in rec:
                    steps[rec.get("step")] = float(rec["step_time"])
        total += sum(steps.values())
        found = found or bool(steps)
    return total if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/rl-experiment")
    ap.add_argument("--setup", choices=sorted(SETUPS), default="reasoner")
    ap.add_argument("--strategies", nargs="+", default=None, help="default: the setup's")
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the setup's")
    ap.add_argument("--steps", type=_args.positive_int, default=None, help="default: the setup's")
    ap.add_argument("--workers", type=_args.positive_int, default=2)
    ap.add_argument("--learning-rate", type=float, default=None, help="default: the setup's")
    ap.add_argument(
        "--tables-from",
        type=_args.existing_file,
        default=None,
        help="print the tables of a recorded evaluations.csv",
    )
    args = ap.parse_args(argv)
    if args.tables_from:
        tables(_recorded(args.tables_from))
        return 0
    from workbench.provenance import provenance

    prov = provenance()
    print("provenance " + json.dumps(prov), flush=True)

    setup = SETUPS[args.setup]
    steps = args.steps if args.steps is not None else setup["steps"]
    settings = {**setup["settings"], "max_steps": steps}
    if args.learning_rate is not None:
        settings["learning_rate"] = args.learning_rate
    if steps < settings["eval_every"]:
        settings["eval_every"] = 0
    strategies = args.strategies or setup["strategies"]
    seeds = args.seeds if args.seeds is not None else setup["seeds"]
    jobs = [(s, seed) for seed in seeds for s in strategies]
    # Before any process starts: every run's settings, and the folder they go to.
    from workbench._io import make_folder
    from workbench.rl import GRPOConfig

    base = GRPOConfig().replace(**settings)
    for s, seed in jobs:
        base.replace(strategy=s, seed=seed)
    make_folder(Path(args.out), "--out")
    t0 = time.perf_counter()
    # A fresh process per run: one torch thread each, nothing shared between runs.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = [pool.submit(_one, s, seed, args.out, settings) for s, seed in jobs]
        try:
            for i, fut in enumerate(as_completed(futures), 1):
                strategy, seed, seconds = fut.result()  # a worker's error is raised here
                print(f"[{i}/{len(jobs)}] {strategy} seed {seed}: {seconds:.0f} s", flush=True)
        except BaseException:
            for f in futures:  # do not start the queued runs before reporting
                f.cancel()
            raise
    wall = time.perf_counter() - t0

    from workbench._io import atomic_write_json
    from workbench.rl import Experiment
    from workbench.viz import save

    exp = Experiment(args.out)
    out = Path(args.out)
    report = {
        "provenance": prov,
        "settings": settings,
        "invocation_wall_s": wall,  # this command's time (runs done before are skipped)
        "grid_step_seconds": grid_step_seconds(out),  # training steps, all runs summed
        "tables": {},
    }
    report["tables"] = tables(exp)
    for metric in ("eval_accuracy", "eval_sampled_accuracy"):
        save(exp.chart(metric), out / f"chart-{metric}.png")
        if len(exp.frame()["strategy"].unique()) > 1:
            save(exp.paired_chart(metric), out / f"chart-paired-{metric}.png")
    frame = exp.frame()
    steps = frame[frame.step > 0].groupby("strategy").size()
    report["evaluations_per_strategy"] = steps.to_dict()
    # Through json once: NumPy numbers from the tables become plain ones.
    atomic_write_json(out / "summary.json", json.loads(json.dumps(report, default=float)))
    print(f"\nwall time {wall / 60:.1f} min with {args.workers} workers; written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_args.entry(main))
