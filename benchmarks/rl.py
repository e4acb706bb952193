"""Steps per second of the native GRPO loop against TRL's GRPOTrainer, and the credit share.

    python benchmarks/rl.py                     # 20 steps each, coupled credit
    python benchmarks/rl.py --steps 10 --threads 2
    python benchmarks/rl.py --model smollm2-135m --batch 8 --length 128 --skip-trl

Both trainers run the tiny reasoner (or ``--model``) on Countdown with the same batch (completions per step),
group size, completion length, learning rate and credit strategy, with the credit fused
into the update forward (`workbench.rl.credit.FusedCredit`; ``--standalone`` uses the
separate pass instead). For the native loop the script reports how its step time splits
into rollout (sampling + rewards), credit (computing gamma once the forward has reduced the
attention) and update (forward + backward + AdamW); for TRL, the credit's share of its step.
``--overhead`` also times plain GRPO (strategy ``none``) and reports the whole cost of the
credit, attention work inside the forward included: (step - plain step) / step. The paper's
credit overhead is 2-3.3% of a step. The first step of each trainer is a warm-up and is not
timed. One run, printed side by side, after the provenance (package versions and git
commit, `workbench.provenance`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import _args

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def native(args, strategy: str) -> dict:
    from workbench.attention import CreditParams
    from workbench.rl import GRPOConfig, train

    cfg = GRPOConfig(
        model=args.model,
        credit=CreditParams(strategy=strategy),
        fused_credit=not args.standalone,
        max_steps=args.steps + 1,
        per_device_train_batch_size=args.batch,
        num_generations=args.generations,
        max_completion_length=args.length,
        learning_rate=1e-5,
        eval_every=0,
        eval_size=8,
        eval_samples=0,
        save_every=10_000,
    )
    with tempfile.TemporaryDirectory() as d:
        run = train(cfg, out=f"{d}/run", progress=False)
    rows = [r for r in run.metrics if r.get("step", 0) >= 2]  # step 1 is the warm-up
    total = sum(r["step_time"] for r in rows)
    return {
        "seconds_per_step": total / len(rows),
        "rollout": sum(r["time_rollout"] for r in rows) / total,
        "credit": sum(r["time_credit"] for r in rows) / total,
        "update": sum(r["time_update"] for r in rows) / total,
        "credit_seconds": statistics.mean(r["time_credit"] for r in rows),
    }


def trl(args, strategy: str) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig as TRLConfig

    from workbench.attention import CreditParams
    from workbench.models import load_hf
    from workbench.rl import RhythmGRPOTrainer
    from workbench.tasks import get_task

    task = get_task("countdown")
    n_prompts = (args.steps + 1) * args.batch // args.generations
    data = Dataset.from_list([{"prompt": p.prompt} for p in task.generate(n_prompts, seed=0)])
    policy, tokenizer = load_hf(args.model)

    class Clock(TrainerCallback):
        def __init__(self):
            self.starts, self.ends = [], []

        def on_step_begin(self, *a, **k):
            self.starts.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.ends.append(time.perf_counter())

    clock = Clock()
    with tempfile.TemporaryDirectory() as d:
        trainer = RhythmGRPOTrainer(
            model=policy,
            processing_class=tokenizer,
            reward_funcs=task.reward,
            args=TRLConfig(
                output_dir=d,
                use_cpu=True,
                bf16=False,
                report_to="none",
                per_device_train_batch_size=args.batch,
                num_generations=args.generations,
                max_completion_length=args.length,
                max_steps=args.steps + 1,
                learning_rate=1e-5,
                lr_scheduler_type="constant",
                save_strategy="no",
                logging_steps=10_000,
                disable_tqdm=True,
                seed=0,
            ),
            train_dataset=data,
            credit=CreditParams(strategy=strategy),
            fused_credit=not args.standalone,
            callbacks=[clock],
        )
        trainer.train()
    times = [e - s for s, e in zip(clock.starts, clock.ends, strict=False)][1:]
    credit = trainer.credit_seconds[1:] or [0.0]
    return {
        "seconds_per_step": sum(times) / len(times),
        "credit": sum(credit) / sum(times),
        "credit_seconds": statistics.mean(credit),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--steps", type=_args.positive_int, default=20, help="timed steps (after one warm-up)"
    )
    p.add_argument("--batch", type=_args.positive_int, default=32, help="completions per step")
    p.add_argument("--generations", type=_args.positive_int, default=8)
    p.add_argument("--length", type=_args.positive_int, default=64, help="max completion tokens")
    p.add_argument("--strategy", default="coupled")
    p.add_argument("--model", default="tiny-reasoner", help="model name or folder")
    p.add_argument("--skip-trl", action="store_true", help="time the native loop only")
    p.add_argument(
        "--threads", type=_args.positive_int, default=None, help="torch threads (default: torch's)"
    )
    p.add_argument("--standalone", action="store_true", help="the separate credit pass")
    p.add_argument("--overhead", action="store_true", help="also time plain GRPO (none)")
    args = p.parse_args()
    import torch

    from workbench.provenance import provenance

    print("provenance " + json.dumps(provenance()), flush=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"{args.model}, Countdown, strategy={args.strategy}, {args.batch} completions/step "
        f"(G={args.generations}), <= {args.length} tokens, {args.steps} timed steps, "
        f"{torch.get_num_threads()} torch threads"
    )
    n = native(args, args.strategy)
    rows = [("native GRPO loop", n)]
    t = None
    if not args.skip_trl:
        t = trl(args, args.strategy)
        rows.append(("TRL GRPOTrainer (+credit)", t))
    if args.overhead:
        rows.append(("native, plain GRPO (none)", native(args, "none")))
        if not args.skip_trl:
            rows.append(("TRL, plain GRPO (none)", trl(args, "none")))
    ref = t["seconds_per_step"] if t else None
    print(f"\n{'trainer':<28}{'s/step':>8}{'steps/s':>9}{'x TRL':>8}")
    for name, r in rows:
        sps = r["seconds_per_step"]
        ratio = f"{ref / sps:>8.2f}" if ref else f"{'-':>8}"
        print(f"{name:<28}{sps:>8.2f}{1 / sps:>9.3f}{ratio}")
    mode = "standalone pass" if args.standalone else "fused"
    print(
        f"\nnative step split ({mode}): rollout {n['rollout']:.1%}, credit {n['credit']:.1%} "
        f"({n['credit_seconds']:.3f} s), update {n['update']:.1%}  (paper: credit 2-3.3%)"
    )
    if t:
        print(f"TRL: credit {t['credit']:.1%} of a step ({t['credit_seconds']:.3f} s)")
    if args.overhead:
        plain = {name: r["seconds_per_step"] for name, r in rows}
        for who, full in (("native", n), ("TRL", t)):
            base = plain.get(f"{who}, plain GRPO (none)")
            if full and base:
                cost = (full["seconds_per_step"] - base) / full["seconds_per_step"]
                print(f"{who}: whole credit cost (step - plain step) / step = {cost:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_args.entry(main))
