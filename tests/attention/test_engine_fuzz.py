"""A seeded random differential check of the engine against Hugging Face's eager attention.

The architecture matrix (test_architectures.py) runs each path on two fixed traces with the
analysis and the RL horizon. This file draws the combinations it does not cover together,
each case from its own seed: 1- and 2-token responses, 1-token prompts, responses shorter
than the window or than ``H_lo``, windows of 1 and longer than the trace, horizons ``(0,
None)``, ``(H, H)`` and ``(lo, hi)`` past the response, ``fai_min_rows``, ``sink`` kept or
excluded, subsets of layers and heads, batches of traces of different lengths
(``analyze_many``), tiles of 1-5 rows, the portable path (in the CPU's block sizes or a
GPU's), the RL credit's band pass (CPU flash and FlexAttention), grouped-query heads,
sliding windows (3 and 5) narrower than W, soft-capping and float64 weights. The
reference is `reference_from_patterns` of the patterns of the same checkpoint loaded
again with ``attn_implementation="eager"``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers

import workbench as wb
from workbench.attention import engine, flex, interface, tiling
from workbench.attention.analysis import Analysis
from workbench.attention.metrics import DEFAULT_FAI_CUTS, FaiRowsWarning
from workbench.attention.params import RhythmParams
from workbench.attention.reference import reference_from_patterns
from workbench.models import bridge_model, sampler

pytestmark = pytest.mark.slow

TOYS = {
    "llama-gqa": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "mistral-window-3": (
        transformers.MistralConfig, transformers.MistralForCausalLM, {"sliding_window": 3},
    ),
    "gemma2-softcap-window-5": (
        transformers.Gemma2Config, transformers.Gemma2ForCausalLM,
        dict(head_dim=8, sliding_window=5, query_pre_attn_scalar=16, attn_logit_softcapping=5.0),
    ),
}  # fmt: skip
MODES = ("analyze", "tiles", "portable", "many", "credit", "credit-flex", "float64")
CASES = 48


@pytest.fixture(scope="module")
def toys(make_toy):
    """``{name: (bridge, eager Hugging Face model)}`` (float32), plus ``"float64"``: the
    Llama toy and its eager twin in float64."""
    out = {}
    for name, (config, model, overrides) in TOYS.items():
        bridge = make_toy(config, model, initializer_range=0.2, **overrides)
        folder = sampler(bridge).config._name_or_path
        out[name] = (bridge, _eager(folder, torch.float32))
    folder = sampler(out["llama-gqa"][0]).config._name_or_path
    twin = _eager(folder, torch.float64)
    out["float64"] = (
        bridge_model(_eager(folder, torch.float64), out["llama-gqa"][0].tokenizer),
        twin,
    )
    return out


def _eager(folder, dtype):
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=dtype
    ).eval()


@torch.no_grad()
def reference(hf, trace, heads, **params):
    out = hf(trace.ids[None], output_attentions=True, use_cache=False)
    patterns = {(ly, h): out.attentions[ly][0, h].double().numpy() for ly, h in heads}
    n, pl = len(trace), trace.prompt_len
    entropy = np.full(n, np.nan)
    logp = torch.log_softmax(out.logits[0].double(), -1)
    entropy[pl:] = (-(logp.exp() * logp).sum(-1)).numpy()[pl - 1 : n - 1]
    return reference_from_patterns(patterns, pl, n_layers=2, n_heads=4, entropy=entropy, **params)


def close(name, a, b, tol=1e-5):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"{name}: NaNs in different places"
    ok = ~np.isnan(a)
    np.testing.assert_allclose(a[ok], b[ok], atol=tol, rtol=1e-5, err_msg=name)


def draw(rng: np.random.Generator) -> dict:
    """One case: the traces' lengths, the parameters and the path options."""
    mode = MODES[int(rng.integers(len(MODES)))]
    lens = [int(rng.choice([2, 3, 4, 9, 17, 40])) for _ in range(3 if mode == "many" else 1)]
    pls = [max(1, min(n - 1, int(rng.choice([1, n - 1, n - 2, n // 2])))) for n in lens]
    lo = int(rng.choice([0, 0, 1, 3, 10]))
    hi = [None, lo, lo + 2, lo + 90][int(rng.integers(4))]
    if mode.startswith("credit") and hi is None:
        hi = lo + 5
    layers = sorted({int(x) for x in rng.choice(2, int(rng.integers(1, 3)), replace=False)})
    heads = [(ly, h) for ly in layers for h in range(4)]
    if rng.integers(3) == 0:
        heads = sorted(heads[i] for i in rng.choice(len(heads), int(rng.integers(1, 5)), False))
    return dict(
        mode=mode,
        toy="float64" if mode == "float64" else list(TOYS)[int(rng.integers(len(TOYS)))],
        lens=lens,
        pls=pls,
        heads=heads,
        window=int(rng.choice([1, 2, 10, 50])),
        fai_horizon=(lo, hi),
        fai_min_rows=int(rng.choice([1, 2, 10])),
        sink="keep" if mode.startswith("credit") else str(rng.choice(["keep", "exclude"])),
        tile_rows=int(rng.choice([1, 2, 5])),
        seed=int(rng.integers(2**31)),
    )


def run(bridge, traces, case, monkeypatch) -> list[Analysis]:
    """The engine's analyses of `traces` on the path `case` asks for."""
    mode, heads = case["mode"], case["heads"]
    params = {k: case[k] for k in ("window", "fai_horizon", "fai_min_rows")}
    layers = sorted({ly for ly, _ in heads})
    if mode == "portable":
        monkeypatch.setattr(interface, "_cpu_fast", lambda *tensors: False)
        if case["seed"] % 2:  # a GPU's block sizes (`tiling`)
            monkeypatch.setattr(tiling, "CACHE_SIZED", ())
    if mode == "credit-flex":  # CUDA's FlexAttention for the band (uncompiled here)
        monkeypatch.setattr(flex, "DEVICES", ("cuda", "cpu"))
    if mode == "tiles":
        lo, hi = case["fai_horizon"]
        (trace,) = traces
        stats, ent = engine.collect(
            bridge, trace.ids, trace.prompt_len, heads, max_window=max(case["window"], 32),
            cuts=[*DEFAULT_FAI_CUTS, lo, *([] if hi is None else [hi + 1])], path="tiled",
            tile_rows=case["tile_rows"], sink=case["sink"],
        )  # fmt: skip
        return [
            Analysis(
                stats=stats,
                entropy=ent,
                tokens=trace.tokens,
                ids=trace.ids,
                n_layers=2,
                n_heads=4,
                params=RhythmParams(**params),
            )
        ]
    kw: dict = dict(layers=layers, heads=heads, sink=case["sink"], progress=False, **params)
    if mode.startswith("credit"):  # gamma_many's pass: sdpa outputs, no column sums
        kw.update(
            max_window=case["window"], default_cuts=False, columns=False, entropy=False,
            fast_other_layers=True, sdpa_outputs=True,
        )  # fmt: skip
    return wb.analyze_many(bridge, traces, batch_size=len(traces), **kw)


@pytest.mark.parametrize("index", range(CASES))
def test_random_combinations_match_hf_eager(toys, monkeypatch, index):
    case = draw(np.random.default_rng([2026, index]))
    bridge, hf = toys[case["toy"]]
    tok = bridge.tokenizer
    gen = np.random.default_rng(case["seed"])
    traces = []
    for n, pl in zip(case["lens"], case["pls"], strict=True):
        ids = torch.tensor(gen.integers(4, len(tok), n))
        ids[0] = tok.bos_token_id
        traces.append(
            wb.Trace(
                ids=ids, tokens=tok.convert_ids_to_tokens(ids.tolist()), prompt_len=pl, text=""
            )
        )
    params = {k: case[k] for k in ("window", "fai_horizon", "fai_min_rows", "sink")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FaiRowsWarning)  # a response shorter than min_rows
        got = run(bridge, traces, case, monkeypatch)
    credit = case["mode"].startswith("credit")
    for trace, a in zip(traces, got, strict=True):
        ref = reference(hf, trace, case["heads"], **params)
        fields = ["head_span", "waad", "fai", "delta"] + ([] if credit else ["entropy"])
        for f in fields:
            tol = 1e-4 if f == "entropy" else 1e-5
            close(f"{case} {f}", getattr(a, f).numpy(), ref[f], tol)
        close(f"{case} kurtosis", a.receiver_kurtosis.numpy(), ref["receiver_kurtosis"], 1e-3)
        for f in ["local_heads", "global_heads", "preplan", "anchors", "dominated", "intro"]:
            assert getattr(a, f) == ref[f], f"{case} {f}"
