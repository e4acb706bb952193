"""Benchmark: the cost of computing the attention metrics, against plain forward passes.

Compares, on the default model (SmolLM2-135M-Instruct, 30 layers x 9 heads), at several
sequence lengths T:

- ``bridge``:  a plain forward pass of the TransformerBridge (eager attention);
- ``sdpa``:    a forward pass of the Hugging Face model with its default sdpa attention
               (the floor: no metric pass can be cheaper);
- ``naive``:   ``run_with_cache`` of every layer's pattern, then full-matrix metrics
               (span, WAAD, FAI per head) -- only where it fits in memory;
- ``analyze``: ``wb.analyze(model, trace, layers="all")`` (the tiled path: the workbench's
               registered attention function, exact eager attention in query tiles);
- ``analyze-torch``: the same with ``WORKBENCH_KERNELS=0``: the tiles' softmax and row
               and column sums in PyTorch instead of the compiled kernel
               (`workbench.attention.kernels`);
- ``analyze-small-tiles``: ``analyze`` in the CPU's block sizes on any device
               (`workbench.attention.tiling`; on a GPU, what its larger blocks save);
- ``sdpa-middle``: the sdpa forward pass through the RL credit layers only (it stops after
               the last of the five middle layers, layer 20 of 30);
- ``credit``:  the RL credit pass, ``wb.gamma_many(model, [trace], "coupled",
               layers="middle")`` (FAI horizon (10, 100), no entropy, so it stops after
               layer 20 too). Compare it with ``sdpa-middle``.
- ``credit-tiles``: ``credit`` without FlexAttention (`workbench.attention.flex`): on a
               GPU the portable tiles beside sdpa outputs instead of the band path (on the
               CPU the same as ``credit``, whose band path is the CPU's flash kernel).

Each (configuration, T) runs in its own subprocess, so its peak resident memory
(``ru_maxrss``, which includes the loaded model) is its own. Times exclude model loading
and include one small warm-up pass. The output starts with the provenance (package
versions and git commit, `workbench.provenance`), which ``--json`` records too. Usage::

    python benchmarks/metrics.py                      # T = 256, 1024, 4096, 8192
    python benchmarks/metrics.py --lengths 256 1024   # a subset
    python benchmarks/metrics.py --quick              # T = 256 only
    python benchmarks/metrics.py --lengths 4096 --configs sdpa analyze --repeats 3
    python benchmarks/metrics.py --device cuda --random-weights --model CONFIG_FOLDER \
        --lengths 8192 32768 --configs sdpa analyze sdpa-middle credit

``--device cuda`` runs every case on the GPU, synchronising before each clock read, and
adds each case's peak GPU memory (``torch.cuda.max_memory_allocated``); its warm-up is a
whole pass of the same length, timed apart (``first_seconds``: compilation included).
``--model`` takes a checkpoint folder instead of the embedded model; with
``--random-weights`` only its
``config.json`` and tokenizer files are read, and the cases time a seeded random model of
the same shapes (built once, in a temporary folder): the cost of every configuration
depends on the shapes alone, so a machine without the embedded weights (the GPU machine,
see benchmarks/README.md) measures the same ratios.

With ``--repeats N`` the whole set of cases runs N times, each round in the same order, so
the runs a ratio compares are adjacent in time. The table then gives each configuration's
median seconds, and each ratio as the median of the N per-round ratios with their range:
on a shared machine one run's ratio moves by 10% or more. The ``x bridge`` ratio is given
for whole-model passes only (``-`` for ``sdpa-middle``, ``credit`` and ``credit-tiles``,
which stop at layer 20).

``--profile N`` runs each case once more under ``torch.profiler`` after its timed pass and
prints its N costliest operators (by self time on the device: CUDA kernels on a GPU),
to see where a ratio's excess goes.

``--json`` is checked before any work and rewritten (atomically) after each case, so a run
cut short keeps the cases done; it lists the failed cases under ``failed``. The exit status
is 1 when any case failed or timed out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import _args

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CONFIGS = (
    "sdpa", "bridge", "naive", "analyze", "analyze-torch", "analyze-small-tiles", "sdpa-middle",
    "credit", "credit-tiles",
)  # fmt: skip
#: The configurations that stop after the last middle layer (no "x bridge" ratio).
MIDDLE = ("sdpa-middle", "credit", "credit-tiles")
#: Largest T for the naive way (at 2048 it needs ~16.5 GB; at 4096 it cannot run in 24 GB).
NAIVE_MAX = 1024
#: Largest T for the plain eager bridge forward (its [9, T, T] scores and softmax copies
#: need ~8 GB more at 8192 than at 4096, on a machine shared with other jobs).
BRIDGE_MAX = 4096


def _child(
    config: str, n: int, threads: int | None, device: str, folder: str | None, profile: int = 0
) -> dict:
    import resource

    if config == "analyze-torch":
        os.environ["WORKBENCH_KERNELS"] = "0"  # read when the first tile is computed
    import torch

    import workbench as wb

    if config == "analyze-small-tiles":
        from workbench.attention import tiling

        tiling.CACHE_SIZED = (torch.device(device).type,)
    if config == "credit-tiles":
        from workbench.attention import flex

        flex.DEVICES = ()

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cuda = device.startswith("cuda")
    from transformers import AutoConfig

    # Token ids inside the vocabulary (SmolLM2's 49,152 take [100, 40000), as before).
    vocab = AutoConfig.from_pretrained(folder or wb.models.model_path()).get_text_config()
    high = min(40000, vocab.vocab_size)
    ids = torch.randint(min(100, high - 1), high, (n,))
    prompt_len = max(1, n // 8)
    if config in ("sdpa", "sdpa-middle"):
        from transformers import AutoModelForCausalLM

        model = (
            AutoModelForCausalLM.from_pretrained(
                folder or wb.models.model_path(), attn_implementation="sdpa", dtype=torch.float32
            )
            .to(device)
            .eval()
        )
        assert model.config._attn_implementation == "sdpa"
        if config == "sdpa-middle":
            # Stop where the credit pass stops: before the block after the last middle layer.
            after = max(wb.middle_layers(model.config.num_hidden_layers)) + 1

            class Stop(Exception):
                pass

            def stop(module, args):
                raise Stop

            if after < model.config.num_hidden_layers:  # else the credit pass runs them all
                model.model.layers[after].register_forward_pre_hook(stop)

            def run(x):
                with torch.no_grad(), contextlib.suppress(Stop):
                    model(x[None].to(device))

        else:

            def run(x):
                with torch.no_grad():
                    return model(x[None].to(device)).logits
    else:
        model = wb.load_model(folder or wb.models.DEFAULT_MODEL, device=device)
        if n > model.cfg.n_ctx:
            # Beyond the trained context (8192): rotary positions extend, so time and memory
            # are real, but the attention there is not the model's trained behaviour.
            print(
                f"note: T = {n} is beyond the model's context ({model.cfg.n_ctx})", file=sys.stderr
            )
            model.cfg.n_ctx = n
        if config == "bridge":

            def run(x):
                with torch.no_grad():
                    return model(x[None].to(device))
        elif config == "naive":
            run = _naive_runner(model)
        elif config in ("credit", "credit-tiles"):

            def run(x):
                tr = wb.Trace(ids=x, tokens=["x"] * len(x), prompt_len=max(1, len(x) // 8), text="")
                return wb.gamma_many(model, [tr], "coupled", layers="middle")
        else:

            def run(x):
                tr = wb.Trace(ids=x, tokens=["x"] * len(x), prompt_len=max(1, len(x) // 8), text="")
                return wb.analyze(model, tr, layers="all")

    # On CUDA the warm-up is a whole pass of the same length: the credit pass's FlexAttention
    # is compiled for its shapes on first use (`workbench.attention.flex`), which the
    # result reports apart as ``first_seconds``.
    t0 = time.perf_counter()
    run(ids if cuda else ids[:16])
    first = time.perf_counter() - t0
    if cuda:  # the clock reads wait for the GPU; the peak is this case's own
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = run(ids)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    del out
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB
    result = {
        "config": config,
        "T": n,
        "seconds": seconds,
        "peak_rss_gb": rss_gb,
        "prompt_len": prompt_len,
        "device": device,
    }
    if cuda:
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1024**3
        result["first_seconds"] = first
        result["gpu"] = torch.cuda.get_device_name()
    if profile:
        result["profile"] = _profile(run, ids, cuda, profile)
    return result


def _profile(run, ids, cuda: bool, rows: int) -> str:
    """The table of the `rows` costliest operators of one more ``run(ids)`` (by self time
    on the GPU where there is one, else on the CPU), with their call counts."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        run(ids)
        if cuda:
            torch.cuda.synchronize()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)


def _random_checkpoint(source: str | None, dest: str) -> str:
    """A checkpoint folder `dest` with the config and tokenizer files of `source` (a
    folder; None: the embedded model) and seeded random float32 weights."""
    import shutil
    from pathlib import Path

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    import workbench as wb

    src = Path(source) if source else wb.models.model_path()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src), dtype=torch.float32)
    model.save_pretrained(dest)
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")) or f.name == "chat_template.jinja":
            shutil.copy(f, dest)
    return dest


def _naive_runner(model):
    import torch

    def run(x, window: int = 10):
        n = len(x)
        pl = max(1, n // 8)
        names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
        with torch.no_grad():
            logits, cache = model.run_with_cache(x[None], names_filter=lambda k: k in names)
        t = torch.arange(n, dtype=torch.float32)
        dist = (t[:, None] - t[None, :]).clamp(min=0)
        clipped = dist.clamp(max=window)
        count = (n - torch.maximum(t, torch.tensor(float(pl))))[pl:]  # |T(s)| for (0, None)
        spans, waads, fais = [], [], []
        for name in names:
            p = cache[name][0]  # [head, T, T]
            spans.append((p * dist).sum(-1)[:, pl:].mean(-1))
            waads.append((p * clipped).sum(-1))
            fais.append(p[:, pl:, pl:].sum(1) / count)
        span = torch.stack(spans).flatten()
        k = max(1, round(0.3 * len(span)))
        loc = span.argsort()[:k]
        glob = span.argsort(descending=True)[:k]
        waad = torch.cat(waads)[loc].mean(0)
        fai = torch.cat(fais)[glob].mean(0)
        return logits, waad, fai

    return run


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--lengths", type=_args.positive_int, nargs="+", default=[256, 1024, 4096, 8192]
    )
    ap.add_argument("--quick", action="store_true", help="T = 256 only")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument(
        "--threads", type=_args.positive_int, default=None, help="torch threads in each child"
    )
    ap.add_argument("--timeout", type=_args.positive_int, default=900, help="seconds per case")
    ap.add_argument(
        "--repeats", type=_args.positive_int, default=1, help="rounds of every case (see above)"
    )
    ap.add_argument("--device", default="cpu", help='"cpu" or "cuda" (see above)')
    ap.add_argument(
        "--model",
        type=_args.existing_dir,
        default=None,
        help="a checkpoint folder (default: the embedded)",
    )
    ap.add_argument(
        "--random-weights", action="store_true", help="the model's shapes, random weights"
    )
    ap.add_argument(
        "--json",
        default=None,
        help='also write {"provenance": ..., "results": [...]} here (rewritten after each case)',
    )
    ap.add_argument(
        "--profile",
        type=_args.positive_int,
        default=0,
        metavar="N",
        help="print each case's N costliest operators (one more pass, profiled)",
    )
    ap.add_argument("--child", nargs=2, metavar=("CONFIG", "T"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        config, n = args.child[0], int(args.child[1])
        got = _child(config, n, args.threads, args.device, args.model, args.profile)
        print("RESULT " + json.dumps(got))
        return 0
    from workbench._io import atomic_write_json

    json_path = _args.output_file(args.json, "--json")  # before any work
    if args.random_weights:
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix="metrics-random-")
        args.model = _random_checkpoint(args.model, scratch.name)
    from workbench.provenance import provenance

    prov = provenance()
    print("provenance " + json.dumps(prov), flush=True)
    # Each case once per round, in the order given (a repeated length or config was run,
    # and printed, twice).
    lengths = [256] if args.quick else list(dict.fromkeys(args.lengths))
    args.configs = list(dict.fromkeys(args.configs))
    results: list[dict] = []
    failures: list[dict] = []
    cases = []
    w = max(len(c) for c in args.configs)  # the progress lines' config column

    def write() -> None:  # after each case: a run cut short keeps the cases done
        if json_path is not None:
            atomic_write_json(
                json_path, {"provenance": prov, "results": results, "failed": failures}
            )

    for n in lengths:
        for config in args.configs:
            if config == "naive" and n > NAIVE_MAX:
                print(
                    f"T={n:5d} {config:{w}s} skipped (needs > {NAIVE_MAX} tokens' worth of memory)"
                )
            elif config == "bridge" and n > BRIDGE_MAX:
                print(f"T={n:5d} {config:{w}s} skipped (full [9, T, T] eager scores; see README)")
            else:
                cases.append((n, config))
    for round_ in range(args.repeats):
        for n, config in cases:
            cmd = [sys.executable, __file__, "--child", config, str(n), "--device", args.device]
            if args.model:
                cmd += ["--model", args.model]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if args.profile:
                cmd += ["--profile", str(args.profile)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"T={n:5d} {config:{w}s} timed out after {args.timeout} s", flush=True)
                failures.append({"config": config, "T": n, "round": round_, "why": "timeout"})
                write()
                continue
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                print(
                    f"T={n:5d} {config:{w}s} failed (rc {proc.returncode}): {proc.stderr[-500:]}",
                    flush=True,
                )
                why = f"rc {proc.returncode}: {proc.stderr[-500:]}"
                failures.append({"config": config, "T": n, "round": round_, "why": why})
                write()
                continue
            r = json.loads(line[0][len("RESULT ") :])
            r["round"] = round_
            results.append(r)
            write()
            gpu = f"  peak GPU {r['peak_gpu_gb']:6.2f} GB" if "peak_gpu_gb" in r else ""
            print(
                f"T={n:5d} {config:{w}s} {r['seconds']:8.2f} s  "
                f"peak RSS {r['peak_rss_gb']:5.2f} GB{gpu}",
                flush=True,
            )
            if "profile" in r:
                print(r["profile"], flush=True)
    print()
    _table(results, lengths, args.configs)
    write()
    if failures:
        print(f"\n{len(failures)} of {len(cases) * args.repeats} cases failed", file=sys.stderr)
        return 1
    return 0


def _ratio(results: list[dict], n: int, config: str, base: str) -> str:
    """The median over rounds of ``seconds(config) / seconds(base)`` in the same round, with
    the range when there are several rounds ("-" without `base`)."""
    got = {r["round"]: r["seconds"] for r in results if r["T"] == n and r["config"] == config}
    ref = {r["round"]: r["seconds"] for r in results if r["T"] == n and r["config"] == base}
    ratios = [got[k] / ref[k] for k in got if k in ref]
    if not ratios:
        return "-"
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}"
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def _table(results: list[dict], lengths: list[int], configs: list[str]) -> None:
    """The side-by-side table: median seconds, ratios paired by round, peak RSS."""
    # "x sdpa": against the sdpa forward of the same layers (sdpa-middle for the credit pass).
    gpu = any("peak_gpu_gb" in r for r in results)
    print(
        "| T | config | seconds | x bridge | x sdpa | peak RSS (GB) |" + (" peak GPU (GB) |" * gpu)
    )
    print("|---|---|---|---|---|---|" + ("---|" * gpu))
    for n in lengths:
        for config in configs:
            runs = [r for r in results if r["T"] == n and r["config"] == config]
            if not runs:
                continue
            seconds = statistics.median([r["seconds"] for r in runs])
            rss = max(r["peak_rss_gb"] for r in runs)
            peak = f" {max(r.get('peak_gpu_gb', 0.0) for r in runs):.2f} |" if gpu else ""
            # The bridge is a whole-model forward: no ratio for the middle-layer passes.
            middle = config in MIDDLE
            xb = "-" if middle else _ratio(results, n, config, "bridge")
            xs = _ratio(results, n, config, "sdpa-middle" if middle else "sdpa")
            print(f"| {n} | {config} | {seconds:.2f} | {xb} | {xs} | {rss:.2f} |{peak}")


if __name__ == "__main__":
    raise SystemExit(_args.entry(main))
