"""The paper's Table 2 (and its layer-wise Table 10) on the embedded model, with intervals.

    python benchmarks/table2.py                       # 70 problems, both sink settings
    python benchmarks/table2.py --problems 10 --boot 50   # a smoke run

Generates seeded arithmetic word problems, samples one response to each at T = 0.7 on
SmolLM2-135M-Instruct, analyses every head (one forward pass per trace and sink setting),
and computes the three couplings of `workbench.attention.stats` with their shuffled
controls and lifts (value / control):

1. mean next-token entropy at WAAD peaks against over all response tokens;
2. the share of FAI peaks that coincide with or follow a WAAD peak;
3. the share of receiver-head FAI peaks among global-head FAI peaks.

Intervals: 95% percentile bootstrap over problems (resampling whole traces, the unit the
statistics pool over), with the shuffled controls recomputed in each resample. The
layer-wise lifts (Table 10) use the heads of one layer at a time (`Analysis.select_heads`,
no further forward pass) with fewer resamples. Prints Markdown tables and writes JSON with
the provenance.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import _args

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The sampling temperature of the responses.
TEMPERATURE = 0.7

#: The paper's Table 2 values (Qwen3-4B): (value, random baseline).
PAPER = {
    "entropy": (0.3608, 0.2386),
    "fai_follows_waad": (0.5253, 0.3687),
    "receiver_overlap": (0.6084, 0.2241),
}

TEMPLATES = [
    "A bakery sold {a} trays of muffins with {b} muffins on each tray. It had baked {c} "
    "muffins. How many muffins are left?",
    "Tom has {a} boxes of pencils with {b} pencils in each box. He gives away {c} pencils. "
    "How many pencils does he have now?",
    "A farmer plants {a} rows of trees with {b} trees in each row, then {c} more trees. How "
    "many trees are there in total?",
    "A library has {c} books. It buys {a} boxes of {b} books each. How many books does it "
    "have now?",
    "A bus carries {b} people on each of {a} trips. On the last day {c} fewer people rode in "
    "total. How many people rode on the last day?",
]


def problems(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(3, 19), rng.randint(3, 19)
        c = rng.randint(1, a * b)
        out.append(TEMPLATES[i % len(TEMPLATES)].format(a=a, b=b, c=c))
    return out


def couplings(items, n_shuffles: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    from workbench.attention.stats import (
        entropy_at_waad_peaks,
        fai_follows_waad,
        receiver_global_overlap,
    )

    e = entropy_at_waad_peaks(items)
    f = fai_follows_waad(items, n_shuffles=n_shuffles, seed=seed)
    r = receiver_global_overlap(items, n_shuffles=n_shuffles, seed=seed)
    return {
        "entropy": (e["peak_entropy"], e["mean_entropy"]),
        "fai_follows_waad": (f["share"], f["shuffled_share"]),
        "receiver_overlap": (r["overlap"], r["chance"]),
    }


def with_intervals(items, n_boot: int, n_shuffles: int, seed: int = 0) -> dict[str, dict]:
    import numpy as np

    point = couplings(items, n_shuffles=200, seed=seed)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in point}
    for b in range(n_boot):
        sample = [items[i] for i in rng.integers(0, len(items), len(items))]
        for k, (v, c) in couplings(sample, n_shuffles=n_shuffles, seed=b).items():
            draws[k].append((v, c, v / c if c else float("nan")))
    out = {}
    for k, (v, c) in point.items():
        arr = np.array(draws[k], dtype=float)
        lo, hi = np.nanpercentile(arr, [2.5, 97.5], axis=0)
        out[k] = {
            "value": v, "value_ci": [lo[0], hi[0]],
            "control": c, "control_ci": [lo[1], hi[1]],
            "lift": v / c if c else float("nan"), "lift_ci": [lo[2], hi[2]],
        }  # fmt: skip
    return out


def perturbation(model, traces, analyses, n_boot: int, seed: int = 0) -> dict | None:
    """`wb.perturbation_test` over every trace, with percentile bootstrap intervals over
    traces (the trials of one trace are resampled together); None when no trace gave a
    trial (responses too short to swap a high- and a low-FAI token)."""
    import numpy as np

    import workbench as wb

    trials, _ = wb.perturbation_test(model, traces, analyses, progress=False)
    if len(trials) == 0:
        return None
    by_trace = [g for _, g in trials.groupby("trace")]

    def stats(groups) -> tuple[float, float, float, float]:
        cols = ["jaccard_high", "jaccard_low", "high_more_disruptive"]
        t = np.concatenate([g[cols].to_numpy(dtype=float) for g in groups])
        return t[:, 0].mean(), t[:, 1].mean(), (t[:, 1] - t[:, 0]).mean(), t[:, 2].mean()

    point = stats(by_trace)
    rng = np.random.default_rng(seed)
    boots = np.array(
        [
            stats([by_trace[i] for i in rng.integers(0, len(by_trace), len(by_trace))])
            for _ in range(n_boot)
        ]
    )
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    keys = ("jaccard_high", "jaccard_low", "difference", "frac_high_more_disruptive")
    out = {"n_trials": len(trials), "n_traces": len(by_trace)}
    for i, k in enumerate(keys):
        out[k], out[k + "_ci"] = float(point[i]), [float(lo[i]), float(hi[i])]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=_args.positive_int, default=70)
    parser.add_argument("--max-new-tokens", type=_args.positive_int, default=160)
    parser.add_argument("--boot", type=_args.positive_int, default=500, help="bootstrap resamples")
    parser.add_argument("--layer-boot", type=_args.positive_int, default=100)
    parser.add_argument(
        "--no-perturb", action="store_true", help="skip the perturbation test (the slow part)"
    )
    parser.add_argument("--threads", type=_args.positive_int, default=None)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument(
        "--traces",
        default=None,
        help="a folder to keep the generated traces in (reused when it holds them and they "
        "were made with this run's problem, --max-new-tokens, temperature and seed, "
        "regenerated otherwise: the generation is most of the time, about 20 minutes for "
        "70 problems on 2 CPU cores)",
    )
    args = parser.parse_args()
    from pathlib import Path

    from workbench._io import make_folder

    # Before any work: where the results and the traces go can be written.
    json_path = _args.output_file(args.json, "--json")
    folder = make_folder(Path(args.traces), "--traces") if args.traces else None

    import torch

    import workbench as wb
    from workbench.attention.stats import Curves
    from workbench.provenance import provenance

    if args.threads:
        torch.set_num_threads(args.threads)
    prov = provenance()
    print("provenance:", json.dumps(prov))
    model = wb.load_model()
    t0 = time.time()
    from tqdm.auto import tqdm

    traces = []
    reused = regenerated = 0
    for i, p in enumerate(tqdm(problems(args.problems), desc="generate")):
        path = folder / f"trace-{i:03d}.json" if folder else None
        asked = {"max_new_tokens": args.max_new_tokens, "temperature": TEMPERATURE, "seed": i}
        if path is not None and path.is_file():
            kept = wb.Trace.load(path)
            if kept.prompt == p and all(kept.meta.get(k) == v for k, v in asked.items()):
                traces.append(kept)
                reused += 1
                continue
            regenerated += 1  # made for another problem or settings: made again below
        t = wb.generate(model, p, **asked)
        if path is not None:
            t.save(path)  # atomic: replaces a kept trace only once written
        traces.append(t)
    if folder is not None:
        print(
            f"traces in {folder}: {reused} reused, {regenerated} regenerated (made with another "
            f"problem or settings), {len(traces) - reused - regenerated} new"
        )
    print(f"{len(traces)} traces, mean {sum(t.response_len for t in traces) / len(traces):.0f} "
          f"response tokens, generated in {time.time() - t0:.0f} s")  # fmt: skip
    report = {"provenance": prov, "problems": args.problems, "paper": PAPER}
    n_layers = model.cfg.n_layers
    for sink in ("keep", "exclude"):
        t0 = time.time()
        analyses = wb.analyze_many(model, traces, sink=sink, progress=False)
        items = [Curves.of(a) for a in analyses]
        table = with_intervals(items, args.boot, n_shuffles=20)
        layers = {}
        for layer in tqdm(range(n_layers), desc=f"layers (sink={sink})"):
            per = [
                Curves.of(a.select_heads([(layer, h) for h in range(model.cfg.n_heads)]))
                for a in analyses
            ]
            layers[layer] = with_intervals(per, args.layer_boot, n_shuffles=10)
        report[sink] = {"table2": table, "layers": layers}
        if not args.no_perturb:
            got = perturbation(model, traces, analyses, args.boot)
            if got is None:
                print("\nperturbation test: no trials (the responses are too short)")
            else:
                report[sink]["perturbation"] = got
        print(f"\nsink={sink} ({time.time() - t0:.0f} s); 95% bootstrap over problems "
              f"(n = {len(items)})\n")  # fmt: skip
        print(
            "| coupling | value [95% CI] | random [95% CI] | lift [95% CI] | paper value / random |"
        )
        print("|---|---|---|---|---|")
        for k, r in table.items():
            pv, pc = PAPER[k]
            print(
                f"| {k} | {r['value']:.4f} [{r['value_ci'][0]:.4f}, {r['value_ci'][1]:.4f}] "
                f"| {r['control']:.4f} [{r['control_ci'][0]:.4f}, {r['control_ci'][1]:.4f}] "
                f"| {r['lift']:.2f} [{r['lift_ci'][0]:.2f}, {r['lift_ci'][1]:.2f}] "
                f"| {pv:.4f} / {pc:.4f} ({pv / pc:.2f}) |"
            )
        print("\nlayer-wise lifts (heads of one layer; 95% CI):\n")
        print("| layer | entropy | FAI follows WAAD | receiver overlap |")
        print("|---|---|---|---|")
        for layer, t in layers.items():
            cells = [
                f"{t[k]['lift']:.2f} [{t[k]['lift_ci'][0]:.2f}, {t[k]['lift_ci'][1]:.2f}]"
                for k in ("entropy", "fai_follows_waad", "receiver_overlap")
            ]
            print(f"| {layer} | " + " | ".join(cells) + " |")
        if "perturbation" in report[sink]:
            r = report[sink]["perturbation"]
            print(
                f"\nperturbation test ({r['n_trials']} trials over {r['n_traces']} traces; 95% "
                "bootstrap over traces):\n"
            )
            print("| quantity | value [95% CI] |")
            print("|---|---|")
            for key, label in (
                ("jaccard_high", "Jaccard after a high-FAI swap"),
                ("jaccard_low", "Jaccard after a low-FAI swap"),
                ("difference", "low - high (more disruption at high FAI if > 0)"),
                ("frac_high_more_disruptive", "trials where high-FAI disrupts more"),
            ):
                v, (lo, hi) = r[key], r[key + "_ci"]
                print(f"| {label} | {v:.3f} [{lo:.3f}, {hi:.3f}] |")
    if json_path is not None:
        from workbench._io import atomic_write_json

        atomic_write_json(json_path, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(_args.entry(main))
