"""The user-facing paths on a GPU, each checked against the same call on the CPU.

`benchmarks/cuda_check.sh smoke` runs it on the device machine (nothing in CI needs it):
the embedded tiny reasoner is loaded on the CPU and on `--device`, and each path runs on
both with the same trace and seeds. Analysis and credit go through the engine's CUDA
code (FlexAttention where it passed its check, the portable tiles elsewhere); the
knockout and the residual ablation through TransformerLens hooks; one native GRPO step
through sampling, the credit pass and the update (32 completions in 8 groups of 4, seed 1:
groups with mixed rewards, so the step must have a finite loss and a nonzero gradient; a
step whose every group is uniform has zero advantages and would pass with a broken update).
Each check prints PASS or FAIL with
the largest difference, and a failure does not stop the others. Exit status: the number
of failed checks.

    python benchmarks/cuda_smoke.py --device cuda
    python benchmarks/cuda_smoke.py --device cpu    # a dry run (CPU against CPU)
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import _args
import torch

import workbench as wb
from workbench._io import atomic_write_json

#: The GPU's float32 kernels differ from the CPU's in rounding only (TF32 is off).
TOLERANCE = 1e-3


def _gap(a: Any, b: Any) -> float:
    a, b = torch.as_tensor(a).double().cpu(), torch.as_tensor(b).double().cpu()
    both = ~(torch.isnan(a) | torch.isnan(b))
    if not torch.equal(torch.isnan(a), torch.isnan(b)):
        return float("inf")
    return float((a[both] - b[both]).abs().max()) if both.any() else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    json_path = _args.output_file(args.json, "--json")  # before any work
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results: dict[str, dict[str, Any]] = {}

    def check(name: str, fn: Callable[[], float | None]) -> None:
        t0 = time.perf_counter()
        try:
            gap = fn()
            ok = gap is None or gap <= TOLERANCE
            results[name] = {"ok": ok, "gap": gap, "seconds": time.perf_counter() - t0}
            print(f"{'PASS' if ok else 'FAIL'} {name}: largest difference {gap}", flush=True)
        except Exception as e:
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=4)
        if json_path is not None:  # after each check: a run cut short keeps those done
            atomic_write_json(json_path, {"device": args.device, "results": results})

    cpu = wb.load_model("tiny-reasoner", device="cpu")
    dev = wb.load_model("tiny-reasoner", device=args.device)
    problem = wb.tasks.get_task("countdown").generate(1, split="test", seed=3)[0]
    trace = wb.generate(cpu, problem.prompt, max_new_tokens=96, temperature=0.0, chat=False)
    print(f"device {args.device}; trace of {len(trace)} tokens", flush=True)
    analyses: dict[str, Any] = {}

    def analysis() -> float:
        a, b = wb.analyze(cpu, trace), wb.analyze(dev, trace)
        analyses.update(cpu=a, dev=b)
        gaps = [_gap(getattr(a, f), getattr(b, f)) for f in ("waad", "fai", "entropy")]
        gaps.append(_gap(a.head_span, b.head_span) / max(1.0, len(trace)))
        if a.anchors != b.anchors or a.preplan != b.preplan:
            return float("inf")
        return max(gaps)

    def credit() -> float:
        params = wb.CreditParams(strategy="coupled")
        g_cpu = wb.gamma_many(cpu, [trace], params)
        g_dev = wb.gamma_many(dev, [trace], params)
        return max(_gap(x, y) for x, y in zip(g_cpu, g_dev, strict=True))

    def knockout() -> float:
        a = analyses.get("cpu") or wb.analyze(cpu, trace)
        keys = a.anchors[:3]
        knockout = [wb.Knockout(keys)]
        clean = wb.ablation.logits_of(cpu, trace.ids)
        ko_cpu = wb.ablation.logits_of(cpu, trace.ids, knockout)
        ko_dev = wb.ablation.logits_of(dev, trace.ids, knockout)
        if _gap(clean, ko_cpu) == 0.0:
            return float("inf")  # the knockout changed nothing: not a test
        return _gap(ko_cpu, ko_dev)

    def resid() -> float:
        a = analyses.get("cpu") or wb.analyze(cpu, trace)
        ablation = [wb.ResidAblation(a.preplan[:3], mode="zero")]
        r_cpu = wb.ablation.logits_of(cpu, trace.ids, ablation)
        r_dev = wb.ablation.logits_of(dev, trace.ids, ablation)
        return _gap(r_cpu, r_dev)

    def grpo_step() -> None:
        with tempfile.TemporaryDirectory() as out:
            config = wb.rl.GRPOConfig(
                credit=wb.CreditParams(strategy="coupled"),
                max_steps=1,
                seed=1,
                num_generations=4,
                per_device_train_batch_size=32,
                eval_every=0,
                eval_size=4,
                device=args.device,
            )
            run = wb.rl.train(config, out=f"{out}/run", progress=False)
            metrics = run.metrics[-1]
            keys = ("accuracy", "reward_std", "loss", "grad_norm", "gamma_mean")
            print("  step metrics:", {k: metrics.get(k) for k in keys})
            assert run.step == 1 and metrics["gamma_mean"] >= 1.0, metrics
            assert math.isfinite(metrics["loss"]), f"loss {metrics['loss']}"
            # Mixed rewards within a group (reward_std > 0 over the batch is necessary):
            # a zero gradient means the update did not reach the weights.
            assert metrics["reward_std"] > 0, f"uniform rewards, not a test: {metrics}"
            assert metrics["grad_norm"] > 0 and math.isfinite(metrics["grad_norm"]), (
                f"grad_norm {metrics['grad_norm']} (loss {metrics['loss']})"
            )

    check("analysis (engine, all heads)", analysis)
    check("credit (gamma_many, coupled)", credit)
    check("knockout (TransformerLens hooks)", knockout)
    check("residual ablation", resid)
    check("one native GRPO step", grpo_step)
    if json_path is not None:
        atomic_write_json(json_path, {"device": args.device, "results": results})
    failed = sum(not r["ok"] for r in results.values())
    print(f"{len(results) - failed} passed, {failed} failed")
    return failed


if __name__ == "__main__":
    sys.exit(_args.entry(main))
