"""Two TRL steps of `RhythmGRPOTrainer` on a fixed global batch, in one or several processes.

    accelerate launch --multi_gpu --num_processes 2 --mixed_precision no \
        trl_data_parallel.py --out DIR       # 2 ranks (over gloo on a machine without GPUs;
                                             # `--cpu --num_processes 2` runs one process)
    python trl_data_parallel.py --out DIR --processes 1                        # 1 rank
    (either with --strategy random: the control whose draws are seeded per rollout)

Everything but the sampling is TRL's own step: the credit (fused into TRL's loss forward),
the loss, the gradient all-reduce and the optimiser. The rollouts are a fixed global batch
of 16 (4 prompts x 4 completions, sampled once with a fixed seed, identical in every
process), and rank ``r`` of ``n`` trains on rows ``r * 16/n ..``, so one process and two
see the same global batch. Each rank writes ``rank-<r>.json``: the rows it trained on, the
gamma it computed for them at each step, and TRL's log history.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import ClassVar

import torch

GLOBAL = 16
G = 4


def fixed_rollouts(tok, policy, task):
    from workbench.trace import sample_completions

    problems = task.generate(GLOBAL // G, seed=11)
    prompts = [tok(p.prompt)["input_ids"] for p in problems]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        completions = sample_completions(
            policy, prompts, tokenizer=tok, num_generations=G, max_new_tokens=40, temperature=1.0
        )
    advantages = torch.randn(GLOBAL, generator=torch.Generator().manual_seed(2))
    return [prompts[i // G] for i in range(GLOBAL)], completions, advantages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--processes", type=int, default=int(os.environ.get("WORLD_SIZE", 1)))
    ap.add_argument("--strategy", default="coupled")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    from workbench.attention import CreditParams
    from workbench.models import model_path
    from workbench.rl import RhythmGRPOTrainer
    from workbench.tasks import get_task

    task = get_task("countdown")
    folder = model_path("tiny-reasoner")
    tok = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    prompts, completions, advantages = fixed_rollouts(tok, policy, task)
    per_rank = GLOBAL // args.processes
    p_w = max(len(p) for p in prompts)
    c_w = max(len(c) for c in completions)
    pad = tok.pad_token_id or 0

    class FixedBatch(RhythmGRPOTrainer):
        """TRL's step on this rank's rows of the fixed global batch (instead of sampling)."""

        seen: ClassVar[list] = []

        def _generate_and_score_completions(self, inputs):
            rank = self.accelerator.process_index
            rows = range(rank * per_rank, (rank + 1) * per_rank)
            out = {
                "prompt_ids": torch.full((per_rank, p_w), pad),
                "prompt_mask": torch.zeros(per_rank, p_w, dtype=torch.long),
                "completion_ids": torch.full((per_rank, c_w), pad),
                "completion_mask": torch.zeros(per_rank, c_w, dtype=torch.long),
                "advantages": advantages[list(rows)].clone(),
                "num_items_in_batch": torch.tensor(float(sum(len(c) for c in completions))),
            }
            for j, i in enumerate(rows):
                p, c = prompts[i], completions[i]
                out["prompt_ids"][j, p_w - len(p) :] = torch.tensor(p)
                out["prompt_mask"][j, p_w - len(p) :] = 1
                out["completion_ids"][j, : len(c)] = torch.tensor(c)
                out["completion_mask"][j, : len(c)] = 1
            return self.after_scoring(out)

        def _apply(self, *args):
            super()._apply(*args)
            last = self.last_rollouts  # the rows this rank trained on, and their gamma
            self.seen.append(
                [{"prompt": p, "completion": c, "gamma": g[: len(c)].tolist()}
                 for p, c, g in zip(last["prompts"], last["completions"], last["gamma"], strict=True)]
            )  # fmt: skip

    trainer = FixedBatch(
        model=policy,
        processing_class=tok,
        reward_funcs=task.reward,
        args=GRPOConfig(
            output_dir=args.out,
            use_cpu=True,
            bf16=False,
            report_to="none",
            per_device_train_batch_size=per_rank,
            num_generations=G,
            max_completion_length=40,
            max_steps=2,
            logging_steps=1,
            save_strategy="no",
            learning_rate=1e-4,
            seed=0,
        ),
        train_dataset=Dataset.from_list([{"prompt": "x"}] * GLOBAL),
        credit=CreditParams(strategy=args.strategy),
    )
    assert trainer.fuses_credit
    trainer.train()
    rank = trainer.accelerator.process_index
    record = {
        "rank": rank,
        "processes": trainer.accelerator.num_processes,
        "rows": trainer.seen,
        "log_history": trainer.state.log_history,
    }
    Path(args.out, f"rank-{rank}.json").write_text(json.dumps(record))
    # Both ranks have written their records: leave without the interpreter's teardown. Left
    # to it, a rank once aborted in torch.distributed's threads ("terminate called without
    # an active exception") after training had finished, failing a CI run; and destroying
    # the process group first (accelerate's end_training) hung in 2 of 4 local runs.
    trainer.accelerator.wait_for_everyone()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
