"""Do attention sinks other than the first token matter on the embedded model?

    python benchmarks/sinks.py --traces /tmp/t2traces     # table2.py's kept traces
    python benchmarks/sinks.py                            # the demo trace only

For every head (all layers) and trace, from the exact eager patterns, it measures how much
attention distant response rows (``t >= s + 10``, so local attention does not count) give

- to the first token: ``mean_t A[t, 0]``;
- to the strongest other key: ``max_{s >= 1} mean_t A[t, s]`` (the "second sink").

A second sink matters for ``sink="exclude"`` if it takes a share comparable to the first
token's. The output: the distribution of both over heads, the share of heads whose strongest
other key takes more than 10% and more than 25%, and which tokens those keys are.
"""

from __future__ import annotations

import argparse
import collections
import json
import os

import _args

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Rows closer than this to a key do not count towards its sink score.
MIN_DISTANCE = 10


def head_scores(model, trace) -> tuple:
    """``(first, other, other_pos)``: ``[layer, head]`` first-token and strongest-other-key
    means over distant response rows, and the position of that key."""
    import torch

    n, pl = len(trace), trace.prompt_len
    firsts, others, where = [], [], []
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(trace.ids[None], names_filter=lambda k: k in names)
    t = torch.arange(n)
    for name in names:
        a = cache[name][0].double()  # [head, query_pos, key_pos]
        rows = t >= pl
        far = (t[:, None] - t[None, :] >= MIN_DISTANCE) & rows[:, None]  # [query, key]
        count = far.sum(0).clamp(min=1)  # distant response rows per key
        mean = (a * far).sum(1) / count  # [head, key]
        mean[:, far.sum(0) < 5] = 0.0  # keys with too few distant rows are not scored
        firsts.append(mean[:, 0])
        rest = mean[:, 1:]
        best = rest.max(-1)
        others.append(best.values)
        where.append(best.indices + 1)
    return torch.stack(firsts), torch.stack(others), torch.stack(where)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--traces",
        type=_args.existing_dir,
        default=None,
        help="a folder of trace-*.json (table2.py --traces)",
    )
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    from pathlib import Path

    from workbench.errors import WorkbenchError

    json_path = _args.output_file(args.json, "--json")  # before any work
    paths = sorted(Path(args.traces).glob("trace-*.json")) if args.traces else []
    if args.traces and not paths:
        raise WorkbenchError(
            f"no trace-*.json in the folder {args.traces!r}",
            "pass the folder of table2.py --traces (or leave --traces out for the demo trace)",
        )

    import torch
    from tqdm.auto import tqdm

    import workbench as wb
    from workbench.cli import DEMO_PROBLEM
    from workbench.provenance import provenance

    prov = provenance()
    print("provenance:", json.dumps(prov))
    model = wb.load_model()
    if args.traces:
        traces = [wb.Trace.load(p) for p in paths]
    else:
        traces = [wb.generate(model, DEMO_PROBLEM, max_new_tokens=160, temperature=0.0)]
    firsts, others, tokens = [], [], collections.Counter()
    for tr in tqdm(traces, desc="traces"):
        f, o, w = head_scores(model, tr)
        firsts.append(f)
        others.append(o)
        big = o > 0.10
        tokens.update(
            f"{tr.tokens[int(p)]!r} ({'prompt' if p < tr.prompt_len else 'response'} position {p})"
            for p in w[big].tolist()
        )
    f, o = torch.stack(firsts), torch.stack(others)  # [trace, layer, head]
    q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    fq, oq = torch.quantile(f.flatten(), q), torch.quantile(o.flatten(), q)
    report = {
        "provenance": prov,
        "traces": len(traces),
        "heads": int(f[0].numel()),
        "first_mean": float(f.mean()),
        "first_quantiles_10_50_90": fq.tolist(),
        "other_mean": float(o.mean()),
        "other_quantiles_10_50_90": oq.tolist(),
        "share_heads_other_over_10pct": float((o > 0.10).double().mean()),
        "share_heads_other_over_25pct": float((o > 0.25).double().mean()),
        "share_heads_other_over_first": float((o > f).double().mean()),
        "top_other_tokens": tokens.most_common(10),
    }
    print(f"\n{len(traces)} traces x {report['heads']} heads; distant response rows (t >= s + "
          f"{MIN_DISTANCE})\n")  # fmt: skip
    print("| key | mean share | 10% / 50% / 90% of heads |")
    print("|---|---|---|")
    print(f"| first token | {report['first_mean']:.3f} | "
          + " / ".join(f"{x:.3f}" for x in fq.tolist()) + " |")  # fmt: skip
    print(f"| strongest other key | {report['other_mean']:.3f} | "
          + " / ".join(f"{x:.3f}" for x in oq.tolist()) + " |")  # fmt: skip
    print(
        f"\nheads (x traces) whose strongest other key takes > 10%: "
        f"{report['share_heads_other_over_10pct']:.1%}; > 25%: "
        f"{report['share_heads_other_over_25pct']:.1%}; more than the first token: "
        f"{report['share_heads_other_over_first']:.1%}"
    )
    print("keys most often the strongest other key (> 10%):")
    for key, count in report["top_other_tokens"]:
        print(f"  {count:4d} heads: {key}")
    if json_path is not None:
        from workbench._io import atomic_write_json

        atomic_write_json(json_path, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(_args.entry(main))
