"""The native update's forward + backward on fixed rollouts: full rows against shared
prompts, each without and with the fused credit.

    python benchmarks/update_forward.py                          # tiny reasoner, 32 and 128
    python benchmarks/update_forward.py --model smollm2-135m --batch 8 --length 128

One batch of rollouts is sampled once (Countdown, G = 8, temperature 1.0); then, on those
same rollouts and weights, each configuration runs ``--repeats`` times (the first is a
warm-up) and the median is printed:

| config | what runs |
|---|---|
| `rows` | ``prompt + completion`` rows, right-padded (the update before the prompt sharing) |
| `rows+credit` | the same inside `FusedCredit`, then the gamma post-processing |
| `shared` | each group's prompt once, completions on its repeated KV cache (`workbench.rl.forward`) |
| `shared+credit` | the same with `FusedCredit`, then the post-processing |

Each is a forward, a backward of the summed completion log-probabilities, and (with
credit) `FusedCredit.gammas`. "credit in the forward" is ``(shared+credit - shared -
post-processing)``: the attention work the credit layers add inside the forward, which a
trainer's step timer counts as update time. One run, side by side, after the provenance.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from contextlib import nullcontext

import _args

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rollouts(model_name: str, batch: int, group: int, length: int):
    import torch

    from workbench.models import bridge_model, load_hf
    from workbench.rl import GRPOConfig
    from workbench.tasks import get_task
    from workbench.trace import encode_prompt, sample_completions

    policy, tok = load_hf(model_name, device="cpu")
    bridge = bridge_model(policy, tok)  # for its tokenizer, as the native loop encodes
    problems = get_task("countdown").generate(batch // group, split="train", seed=0)
    prompts = [encode_prompt(bridge, p.prompt, chat=GRPOConfig().chat) for p in problems]
    torch.manual_seed(0)
    completions = sample_completions(
        policy, prompts, tokenizer=tok, num_generations=group, max_new_tokens=length
    )
    return policy, prompts, completions


def timings(policy, prompts, completions, group: int, repeats: int) -> dict[str, float]:
    import torch

    from workbench.attention import CreditParams
    from workbench.rl.credit import FusedCredit
    from workbench.rl.forward import completion_logits, rollout_batch
    from workbench.rl.loss import token_logps

    credit = CreditParams(strategy="coupled")
    n = len(completions)
    batch = rollout_batch(prompts, completions, group, slice(0, n))
    seqs = [list(prompts[i // group]) + list(c) for i, c in enumerate(completions)]
    width = max(len(s) for s in seqs)
    ids = torch.zeros(n, width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    p_len = batch.p_len
    first = int(p_len.min()) - 1
    idx = p_len[:, None] - 1 - first + torch.arange(batch.width)
    idx = idx.clamp(max=width - first - 1)

    def rows(fused):
        with fused if fused is not None else nullcontext():
            logits = policy(ids, logits_to_keep=width - first).logits
        return logits.gather(1, idx[..., None].expand(-1, -1, logits.shape[-1]))

    def one(layout: str, with_credit: bool) -> tuple[float, float]:
        fused = None
        if with_credit and layout == "rows":
            spans = [(0, len(s), len(prompts[i // group])) for i, s in enumerate(seqs)]
            fused = FusedCredit(policy, credit, spans, [torch.tensor(s) for s in seqs])
        elif with_credit:
            fused = FusedCredit(policy, credit, batch.spans, batch.seqs)
        policy.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        logits = rows(fused) if layout == "rows" else completion_logits(policy, batch, fused)
        (token_logps(logits, batch.targets) * batch.mask).sum().backward()
        t1 = time.perf_counter()
        if fused is not None:
            fused.gammas(batch.width, seed=0, logits=logits)
        return time.perf_counter() - t0, time.perf_counter() - t1

    policy.train()
    out: dict[str, float] = {}
    post: list[float] = []
    for layout in ("rows", "shared"):
        for with_credit in (False, True):
            times = []
            for r in range(repeats):
                total, gammas = one(layout, with_credit)
                if r:  # the first is a warm-up
                    times.append(total)
                    if with_credit and layout == "shared":
                        post.append(gammas)
            out[layout + ("+credit" if with_credit else "")] = statistics.median(times)
    out["post-processing"] = statistics.median(post)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-reasoner")
    ap.add_argument(
        "--batch",
        type=_args.positive_int,
        nargs="+",
        default=[32, 128],
        help="completions (a multiple of --generations)",
    )
    ap.add_argument("--generations", type=_args.positive_int, default=8)
    ap.add_argument("--length", type=_args.positive_int, default=64, help="most completion tokens")
    ap.add_argument(
        "--repeats", type=_args.at_least(2), default=6, help="runs of each (the first a warm-up)"
    )
    ap.add_argument("--threads", type=_args.positive_int, default=1)
    args = ap.parse_args(argv)
    odd = [b for b in args.batch if b % args.generations]
    if odd:
        ap.error(
            f"--batch {odd} is not a multiple of --generations {args.generations}: each "
            "prompt is sampled --generations times"
        )

    import torch

    from workbench.provenance import provenance

    torch.set_num_threads(args.threads)
    print("provenance " + json.dumps(provenance()), flush=True)
    print(
        f"\n| {args.model}, completions | rows | rows+credit | shared | shared+credit | "
        "rows / shared | post-processing | credit in the forward |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for b in args.batch:
        policy, prompts, completions = rollouts(args.model, b, args.generations, args.length)
        t = timings(policy, prompts, completions, args.generations, args.repeats)
        n = len(completions)  # the completions sampled (prompts x --generations)
        mean_len = sum(len(c) for c in completions) / n
        inside = t["shared+credit"] - t["shared"] - t["post-processing"]
        print(
            f"| {n} x {mean_len:.0f} tokens (prompts {len(prompts[0])}) | {t['rows']:.3f} s | "
            f"{t['rows+credit']:.3f} s | {t['shared']:.3f} s | {t['shared+credit']:.3f} s | "
            f"**{t['rows'] / t['shared']:.2f}x** | {t['post-processing']:.3f} s | "
            f"{inside:.3f} s |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(_args.entry(main))
