"""The tiny searcher's rhythm: WAAD, preplan and anchor tokens on its own greedy searches.

    python benchmarks/searcher_rhythm.py                       # 50 held-out problems
    python benchmarks/searcher_rhythm.py --model DIR --n 20    # another checkpoint
    python benchmarks/searcher_rhythm.py --chart benchmarks/results/searcher-rhythm.png

For the first `--n` problems of the model card's fixed held-out sample, the model writes its
search greedily; each trace is analysed with the paper's settings (`wb.analyze`, W = 10, all
layers, sink kept). Printed, the sawtooth with a 95% interval over traces (the percentile
bootstrap from 30 traces; below that, where the bootstrap under-covers, Student-t):

- the head spans (min, max; sink kept and excluded);
- the sawtooth: mean WAAD inside the equations (operators, ``=`` and the digits that
  continue a number) against the separators between them (spaces and newlines). A ratio
  above 1 means WAAD climbs through each equation of the search and drops at every step
  boundary, a tooth per equation;
- where preplan tokens (top-40% Delta) and anchors (top-40% FAI) fall, against the share of
  such tokens in the response: line starts, step starts (after a space or a colon), and the
  ``yes`` / ``no`` checks.

With ``--chart PATH`` the first trace's WAAD/FAI curves are saved there (PNG); without it
no chart is written (the recorded figure is ``benchmarks/results/searcher-rhythm.png``).
"""

from __future__ import annotations

import argparse
import json
import statistics

import _args

#: Fewer traces than this get the sawtooth's Student-t interval instead of the percentile
#: bootstrap, whose nominal 95% under-covers there (`workbench.intervals`: 75% at 3 traces,
#: 84% at 5, 90% at 10, 93% at 20).
BOOTSTRAP_MIN = 30


def sawtooth_interval(ratios: list[float]) -> tuple[str, float, float]:
    """``(name, lo, hi)``: the 95% interval of the mean of the per-trace `ratios`."""
    import math

    from workbench.intervals import bootstrap_ci, t_ci

    n = sum(not math.isnan(r) for r in ratios)  # both drop NaN ratios
    if n < BOOTSTRAP_MIN:
        return "Student-t", *t_ci(ratios)[1:]
    return "percentile bootstrap", *bootstrap_ci(ratios)[1:]


def classify(analysis) -> dict[str, list[int]]:
    """Response positions by role: line starts, step starts, checks, the rest."""
    tokens = analysis.tokens
    start = analysis.prompt_len
    roles: dict[str, list[int]] = {"line_start": [], "step_start": [], "check": [], "other": []}
    for t in analysis.response:
        prev = tokens[t - 1] if t > start else "\n"
        if prev == "\n":
            roles["line_start"].append(t)
        elif prev in (" ", ":") and tokens[t] not in (" ", "y", "n"):
            roles["step_start"].append(t)
        elif tokens[t] in ("y", "n") and prev == " ":
            roles["check"].append(t)
        else:
            roles["other"].append(t)
    return roles


def measure(model, problems, completions) -> dict:
    """The rhythm statistics of a set of greedy searches (see the module docstring)."""
    import torch

    import workbench as wb
    from workbench.tiny.evaluation import waad_sawtooth

    ratios, spans_min, spans_max, spans_min_x = [], [], [], []
    share: dict[str, dict[str, list[float]]] = {"preplan": {}, "anchors": {}, "base": {}}
    analyses = []
    for p, c in zip(problems, completions, strict=True):
        trace = wb.Trace.from_text(model, p.prompt, c, chat=False)
        a = wb.analyze(model, trace)
        analyses.append(a)
        x = wb.analyze(model, trace, sink="exclude", entropy=False)
        spans_min.append(float(torch.nanquantile(a.head_span.flatten(), 0.0)))
        spans_max.append(float(torch.nanquantile(a.head_span.flatten(), 1.0)))
        spans_min_x.append(float(torch.nanquantile(x.head_span.flatten(), 0.0)))
        roles = classify(a)
        ratios.append(waad_sawtooth(a))
        n = len(a.response)
        for role, positions in roles.items():
            share["base"].setdefault(role, []).append(len(positions) / n)
            for name, chosen in (("preplan", a.preplan), ("anchors", a.anchors)):
                hits = len(set(chosen) & set(positions)) / max(1, len(chosen))
                share[name].setdefault(role, []).append(hits)
    interval, lo, hi = sawtooth_interval(ratios)
    return {
        "n_traces": len(analyses),
        "span_min": statistics.fmean(spans_min),
        "span_max": statistics.fmean(spans_max),
        "span_min_sink_excluded": statistics.fmean(spans_min_x),
        "sawtooth": statistics.fmean(ratios),
        "sawtooth_ci": (lo, hi),
        "sawtooth_interval": interval,
        "sawtooth_min": min(ratios),
        "share": {k: {r: statistics.fmean(v) for r, v in d.items()} for k, d in share.items()},
        "analyses": analyses,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-searcher")
    ap.add_argument("--n", type=_args.positive_int, default=50, help="problems")
    ap.add_argument("--chart", default=None, help="save the first trace's curves here (PNG)")
    ap.add_argument("--threads", type=_args.positive_int, default=1)
    args = ap.parse_args(argv)
    chart = _args.output_file(args.chart, "--chart")  # before any work
    import torch

    torch.set_num_threads(args.threads)
    import workbench as wb
    from workbench.models import sampler
    from workbench.tasks import get_task
    from workbench.tiny.evaluation import generate_completions

    model = wb.load_model(args.model)
    hf = sampler(model)
    task = get_task("countdown-search")
    problems = task.generate(args.n, "test", seed=0)
    completions = generate_completions(
        hf, model.tokenizer, [p.prompt for p in problems], max_new_tokens=224
    )
    result = measure(model, problems, completions)
    analyses = result.pop("analyses")
    lo, hi = result["sawtooth_ci"]
    print(json.dumps({k: v for k, v in result.items() if k != "share"}, indent=1))
    print(
        f"WAAD inside equations / on separators: {result['sawtooth']:.2f} [{lo:.2f}, {hi:.2f}] "
        f"(95% {result['sawtooth_interval']} over {result['n_traces']} traces)"
    )
    print("share of tokens by role (base = share of the response):")
    for name, d in result["share"].items():
        print(f"  {name:8s} " + "  ".join(f"{r} {v:.2f}" for r, v in d.items()))
    a = analyses[0]
    print("first trace, preplan tokens in brackets:")
    print("".join(f"[{tok}]" if t in a.preplan else tok for t, tok in enumerate(a.tokens)))
    if chart is not None:
        from workbench.viz import rhythm_curves, save

        save(rhythm_curves(a), chart)
        print("chart:", chart)
    return 0


if __name__ == "__main__":
    raise SystemExit(_args.entry(main))
