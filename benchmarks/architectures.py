"""Every causal language model type of the installed transformers, through `wb.load_model`
and `wb.analyze`, against Hugging Face's own eager attentions: run it after `make lock`
upgrades transformers or TransformerLens.

    python benchmarks/architectures.py                          # every type (~200)
    python benchmarks/architectures.py --types llama,mamba --lengths 40
    python benchmarks/architectures.py --workers 2 --json arch.json

The types are the keys of ``transformers.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES``. Each runs in
its own subprocess (killed after ``--timeout`` seconds), which

- builds a tiny random checkpoint of that type in a temporary folder (removed after): the
  tiny reasoner's tokenizer, hidden size 32, 2 layers, 4 query heads sharing 2 key/value
  heads, windows of 16, 2 experts with 1 active, ``initializer_range`` 0.2, plus the
  per-type settings of `OVERRIDES` (hybrids get 4 layers with attention in some of them;
  Llama 4 and Qwen 3.5 are built as the image-text classes their checkpoints ship as,
  and Gemma 3's and 4's image-text classes get a small vision tower or text model). A
  type whose toy would still exceed 5M parameters (sub-configs that keep their full-size
  defaults) is not built;
- runs Hugging Face's eager attention on it (``attn_implementation="eager"``,
  ``output_attentions=True``) on seeded random traces of each ``--lengths`` (bos first,
  prompt = the first fifth), and computes the reference with
  `workbench.attention.reference.reference_from_patterns` from those patterns in float64,
  with the entropies from its logits;
- loads the folder with ``wb.load_model`` and runs ``wb.analyze(model, trace,
  layers="all", path=p, window=10)`` for ``p`` in ``tiled`` and ``exact``, comparing every
  metric as the architecture matrix does (tests/attention/test_architectures.py): head
  span, WAAD, FAI and Delta to 1e-5 absolute + 1e-5 relative, entropy 1e-5 + 1e-4
  relative, receiver kurtosis 1e-4 + 1e-4, NaNs in the same places, and the same head
  classes and token sets.

Each type gets one result:

- ``MATCH``: every run matches;
- ``MATCH-EXACT-ONLY``: the exact path matches, the tiled path is refused with a
  `WorkbenchError` (attention outside transformers' attention interface);
- ``REFUSED``: ``wb.load_model`` or every ``wb.analyze`` raised a `WorkbenchError`;
- ``WRONG``: a run's numbers differ from the reference;
- ``RAW``: any other exception from the workbench (a traceback from inside torch or
  transformers where a clear error was due), or its process died in ``wb.load_model`` or
  ``wb.analyze``;
- ``CANNOT-JUDGE``: no verdict: the toy could not be built, Hugging Face's own eager run
  failed or returned no attentions, the type timed out, or the runs mixed matches and
  refusals other than as above.

The output is a table (failures first), the counts, and ``--json`` (checked writable
before any work, rewritten atomically after each type). The exit status is 1 when any type
is ``WRONG`` or ``RAW``, else 0. See benchmarks/README.md for its run time and last result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import _args

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = ("WRONG", "RAW", "CANNOT-JUDGE", "MATCH", "MATCH-EXACT-ONLY", "REFUSED")
PATHS = ("tiled", "exact")
#: Largest toy built, in parameters.
MAX_PARAMS = 5_000_000

# --- the toys --------------------------------------------------------------------------------

#: Config fields shrunk where a config has them, beside the common settings of `_config`.
SHRINK = [
    (("d_model", "n_embd", "embed_dim", "dim", "n_embed"), 32),
    (("ffn_dim", "decoder_ffn_dim", "encoder_ffn_dim", "n_inner", "d_ff"), 64),
    (("intermediate_size_mlp",), 64),
    (("n_layer", "n_layers", "decoder_layers", "encoder_layers", "num_layers"), 2),
    (("n_head", "n_heads", "decoder_attention_heads", "encoder_attention_heads"), 4),
    (("num_heads",), 4),
    (("num_kv_heads", "n_kv_heads", "multi_query_group_num"), 2),
    (("head_dim",), 8),
    (("sliding_window", "window_size", "attention_chunk_size"), 16),
    (("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"), 2),
    (("num_experts_per_tok", "moe_k", "top_k", "moe_topk"), 1),
    (("moe_intermediate_size", "shared_expert_intermediate_size"), 32),
    (("expert_intermediate_size",), 32),
    (("kv_lora_rank",), 16),
    (("qk_rope_head_dim",), 4),
    (("qk_nope_head_dim", "v_head_dim"), 8),
    (("n_group", "topk_group", "first_k_dense_replace"), 1),
]
#: Position limits, set to the longest trace (at least 1024).
POSITIONS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length")

_MAMBA = dict(mamba_d_head=8, mamba_d_state=16, mamba_chunk_size=16, mamba_n_heads=8)
_GEMMA4 = dict(
    vocab_size_per_layer_input=81,  # the tiny tokenizer's size
    hidden_size_per_layer_input=8,
    num_kv_shared_layers=2,
    head_dim=8,
    sliding_window=16,
    num_hidden_layers=4,
    layer_types=["sliding_attention", "full_attention"] * 2,
)


def _gemma4(config_class, text: dict):
    ids = {k: text[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    return config_class(
        text_config={**text, **_GEMMA4},
        **dict(boi_token_id=1, eoi_token_id=2, image_token_id=3, video_token_id=3),
        **dict(boa_token_id=1, eoa_token_index=2, audio_token_id=3),
        initializer_range=0.2,
        **ids,
    )


def _gemma3(config_class, text: dict):
    text = {**text, "num_key_value_heads": 2, "head_dim": 8, "query_pre_attn_scalar": 16}
    text.update(sliding_window=16, layer_types=["sliding_attention", "full_attention"])
    ids = {k: text[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    vision.update(num_attention_heads=4, image_size=28, patch_size=14)
    return config_class(
        text_config=text,
        vision_config=vision,
        **dict(mm_tokens_per_image=1, image_token_index=3, boi_token_index=1, eoi_token_index=2),
        **ids,
    )


def _qwen3_5(config_class, text: dict, moe: bool = False):
    text = {**text, "num_hidden_layers": 4, "head_dim": 8}
    if moe:
        text.update(num_experts=2, num_experts_per_tok=1, moe_intermediate_size=32)
        text.update(shared_expert_intermediate_size=32)
    ids = {k: text[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32)
    vision.update(patch_size=14, num_position_embeddings=16)
    return config_class(
        text_config=text,
        vision_config=vision,
        **dict(image_token_id=3, video_token_id=3, vision_start_token_id=1, vision_end_token_id=2),
        **ids,
    )


def _llama4(config_class, text: dict):
    drop = ("sliding_window", "window_size", "layer_types")
    text = {k: v for k, v in text.items() if k not in drop}
    text.update(num_key_value_heads=2, head_dim=8, attention_chunk_size=16, no_rope_layers=[1, 0])
    text.update(intermediate_size_mlp=64, interleave_moe_layer_step=2)
    text.update(num_local_experts=2, num_experts_per_tok=1)
    ids = {k: text[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    vision.update(vision_output_dim=32, image_size=28, patch_size=14)
    vision.update(projector_input_dim=32, projector_output_dim=32)
    return config_class(
        text_config=text,
        vision_config=vision,
        **dict(image_token_index=3, boi_token_index=1, eoi_token_index=2),
        **ids,
    )


#: Per-type settings over the common ones, or a function ``(config class, settings) ->
#: config`` for types whose config nests a text config.
OVERRIDES = {
    # hybrids: state-space or convolution layers between attention layers
    "bamba": dict(_MAMBA, num_hidden_layers=4, attn_layer_indices=[1, 3]),
    "falcon_h1": dict(_MAMBA, mamba_d_ssm=64),
    "granitemoehybrid": dict(
        _MAMBA,
        num_hidden_layers=4,
        layer_types=["mamba", "attention", "mamba", "attention"],
        position_embedding_type="rope",
    ),
    "nemotron_h": dict(
        **dict(mamba_num_heads=8, mamba_head_dim=8, n_groups=1, ssm_state_size=16, chunk_size=16),
        layers_block_type=["mamba", "attention", "mlp", "attention"],
        num_hidden_layers=4,
    ),
    "zamba2": dict(
        num_hidden_layers=4,
        layers_block_type=["mamba", "hybrid", "mamba", "hybrid"],
        **dict(n_mamba_heads=8, mamba_headdim=8, mamba_d_state=16, chunk_size=16),
        adapter_rank=8,
        attention_head_dim=8,
    ),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"], num_dense_layers=1),
    "recurrent_gemma": dict(
        num_hidden_layers=3,
        lru_width=32,
        attention_window_size=16,
        block_types=["recurrent", "attention", "attention"],
    ),
    "qwen3_5_text": dict(num_hidden_layers=4),
    "qwen3_5_moe_text": dict(num_hidden_layers=4),
    # no attention at all
    "mamba": dict(time_step_rank=8),
    "falcon_mamba": dict(time_step_rank=8),
    "mamba2": dict(num_heads=8, head_dim=8, n_groups=1, state_size=16, time_step_rank=8),
    # a sliding window in layer 1 (window_size is shrunk to 16)
    "gpt_neo": dict(attention_types=[[["global", "local"], 1]]),
    # per-layer inputs and KV sharing of the last 2 layers
    "gemma3n_text": dict(
        _GEMMA4, laurel_rank=8, altup_num_inputs=2, activation_sparsity_pattern=[0.0] * 4
    ),
    "gemma4_text": _GEMMA4,
    "gemma4_unified_text": _GEMMA4,
    "gemma4": _gemma4,
    "gemma4_unified": _gemma4,
    # JetMoE computes num_key_value_heads * num_experts_per_tok heads: 2 x 2 = 4
    "jetmoe": dict(num_experts_per_tok=2, kv_channels=8),
    # latent attention with a query low-rank projection
    "glm_moe_dsa": dict(q_lora_rank=16),
    "hy_v4": dict(q_lora_rank=16),
    "longcat_flash": dict(q_lora_rank=16),
    # image-text checkpoints, as they ship (Gemma 3's is the mapping's class too)
    "gemma3": _gemma3,
    "qwen3_5": _qwen3_5,
    "qwen3_5_moe": lambda config_class, text: _qwen3_5(config_class, text, moe=True),
    "llama4": _llama4,
}
#: The class built where the mapping's causal-LM class is not what checkpoints ship as.
BUILD_CLASS = {
    "qwen3_5": "Qwen3_5ForConditionalGeneration",
    "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration",
    "llama4": "Llama4ForConditionalGeneration",
}


def _config(model_type: str, vocab: int, positions: int):
    """``(config, model class)`` of the tiny toy of `model_type`."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config_class = getattr(transformers, CONFIG_MAPPING_NAMES[model_type])
    model_class = getattr(
        transformers, BUILD_CLASS.get(model_type, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])
    )
    default = config_class()
    keys = set(default.to_dict()) | set(vars(default))
    settings: dict = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    settings["initializer_range"] = 0.2  # scores of order one: far from uniform attention
    for names, value in SHRINK:
        settings.update({name: value for name in names if name in keys})
    settings.update({name: positions for name in POSITIONS[1:] if name in keys})
    settings.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    settings.update(num_attention_heads=4, max_position_embeddings=positions)
    if "num_key_value_heads" in keys:
        settings["num_key_value_heads"] = 2
    if "layer_types" in keys:
        settings["layer_types"] = None  # derived again from the shrunk layer count
    if "kv_lora_rank" in keys:  # latent attention, as the matrix's deepseek-v3 toy
        settings.update(num_key_value_heads=4, q_lora_rank=None)
        if "head_dim" in keys:
            settings["head_dim"] = 4  # = qk_rope_head_dim
        if "qk_head_dim" in keys:
            settings["qk_head_dim"] = 12
    if "rotary_dim" in keys:
        settings["rotary_dim"] = 4
    override = OVERRIDES.get(model_type, {})
    if callable(override):
        return override(config_class, settings), model_class
    return config_class(**{**settings, **override}), model_class


def _build(model_type: str, folder: str, positions: int) -> None:
    """Save the toy of `model_type` with the tiny tokenizer in `folder`."""
    import torch

    from workbench.tiny.tokenizer import build_tokenizer

    tok = build_tokenizer()
    config, model_class = _config(model_type, len(tok), positions)
    try:  # count on the meta device first: full-size sub-configs take minutes to allocate
        with torch.device("meta"):
            n_params = sum(p.numel() for p in model_class(config).parameters())
    except Exception:
        n_params = 0
    if n_params <= MAX_PARAMS:
        torch.manual_seed(0)
        model = model_class(config)
        n_params = sum(p.numel() for p in model.parameters())
    if n_params > MAX_PARAMS:
        raise RuntimeError(
            f"toy not tiny: {n_params / 1e6:.0f}M parameters (sub-configs keep their defaults)"
        )
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


# --- one type (in its own process) -----------------------------------------------------------

#: ``(atol, rtol)`` of each metric, as the architecture matrix's ``assert_matches_reference``.
TOLERANCES = {
    "head_span": (1e-5, 1e-5),
    "waad": (1e-5, 1e-5),
    "fai": (1e-5, 1e-5),
    "delta": (1e-5, 1e-5),
    "entropy": (1e-5, 1e-4),  # float32 logits through different kernels: ~1e-6 relative
    "receiver_kurtosis": (1e-4, 1e-4),
}
SETS = ("local_heads", "global_heads", "preplan", "anchors", "dominated", "intro")


def _compare(a, ref: dict) -> tuple[list[str], float]:
    """What in analysis `a` differs from the reference `ref`, and the largest
    ``|a - ref| / (atol + rtol |ref|)`` over the metrics (a match stays at or below 1)."""
    import numpy as np

    problems, worst = [], 0.0
    for name, (atol, rtol) in TOLERANCES.items():
        x = np.asarray(getattr(a, name).numpy(), dtype=float)
        y = np.asarray(ref[name], dtype=float)
        if x.shape != y.shape:
            problems.append(f"{name}: shape {x.shape}, reference {y.shape}")
            continue
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            problems.append(f"{name}: NaNs in different places")
        ok = ~np.isnan(x) & ~np.isnan(y)
        if ok.any():
            diff = np.abs(x[ok] - y[ok])
            ratio = float(np.max(diff / (atol + rtol * np.abs(y[ok]))))
            worst = max(worst, ratio)
            if ratio > 1:
                problems.append(f"{name}: max |diff| {diff.max():.2g} ({ratio:.3g}x tolerance)")
    problems += [f"{name} differ" for name in SETS if getattr(a, name) != ref[name]]
    return problems, worst


def _stage(name: str) -> None:
    """Mark the step under way, for the parent to read if this process dies."""
    print(f"STAGE {name}", flush=True)


def _one(model_type: str, lengths: list[int]) -> dict:
    """Build, run and judge `model_type`: its result as a JSON-ready dict."""
    import traceback

    import numpy as np
    import torch
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    import workbench as wb
    from workbench.attention import engine
    from workbench.attention.reference import reference_from_patterns
    from workbench.errors import WorkbenchError
    from workbench.tiny.tokenizer import build_tokenizer

    torch.set_num_threads(1)  # a toy gains nothing from threads; --workers uses the cores
    name = BUILD_CLASS.get(model_type, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type])
    out: dict = {"type": model_type, "class": name}

    def verdict(result: str, detail: str, **more) -> dict:
        return {**out, "result": result, "detail": " ".join(detail.split()), **more}

    def raw(where: str, e: Exception) -> dict:
        return {"where": where, "error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()}

    tok = build_tokenizer()
    gen = torch.Generator().manual_seed(0)
    traces = {}
    for n in lengths:
        ids = torch.randint(4, len(tok), (n,), generator=gen)
        ids[0] = tok.bos_token_id
        tokens = tok.convert_ids_to_tokens(ids.tolist())
        traces[n] = wb.Trace(ids=ids, tokens=tokens, prompt_len=n // 5, text="")

    with tempfile.TemporaryDirectory(prefix="toy-") as folder:
        _stage("build")
        try:
            _build(model_type, folder, max(1024, *lengths))
        except Exception as e:
            return verdict("CANNOT-JUDGE", f"not built: {type(e).__name__}: {str(e)[:300]}")

        _stage("hf-eager")
        try:
            hf = transformers.AutoModelForCausalLM.from_pretrained(
                folder, attn_implementation="eager", dtype=torch.float32
            ).eval()
            with torch.no_grad():
                hf_out = {
                    n: hf(tr.ids[None], output_attentions=True, use_cache=False)
                    for n, tr in traces.items()
                }
            del hf
        except Exception as e:
            return verdict("CANNOT-JUDGE", f"Hugging Face eager fails: {type(e).__name__}: {e}")
        attentions = getattr(hf_out[lengths[0]], "attentions", None)
        no_reference = None
        if not attentions or any(x is None for x in attentions):
            no_reference = "Hugging Face eager returns no attention patterns"

        _stage("load_model")
        try:
            model = wb.load_model(folder, device="cpu")
        except WorkbenchError as e:
            return verdict("REFUSED", f"load_model: {e.problem}", message=str(e))
        except Exception as e:
            info = raw("load_model", e)
            return verdict("RAW", f"load_model: {info['error'][:300]}", **info)

        # Hugging Face returns one pattern per attention layer, in order.
        layers = engine.attention_layers(model)
        mismatch = None
        if no_reference is None and len(layers) != len(attentions):
            mismatch = (
                f"the workbench reads attention in {len(layers)} layers {layers}, "
                f"Hugging Face's eager run returns {len(attentions)} patterns"
            )
            no_reference = mismatch
        runs: dict[str, dict] = {}
        for n, trace in traces.items():
            ref = None
            if no_reference is None:
                try:
                    patterns = {
                        (layer, h): att[0, h].double().numpy()
                        for layer, att in zip(layers, hf_out[n].attentions, strict=True)
                        for h in range(att.shape[1])
                    }
                    entropy = np.full(n, np.nan)  # entropy[t]: of the distribution at t - 1
                    logp = torch.log_softmax(hf_out[n].logits[0].double(), -1)
                    ent = -(logp.exp() * logp).sum(-1).numpy()
                    entropy[trace.prompt_len :] = ent[trace.prompt_len - 1 : n - 1]
                    ref = reference_from_patterns(
                        patterns,
                        trace.prompt_len,
                        n_layers=1 + max(layer for layer, _ in patterns),
                        n_heads=1 + max(h for _, h in patterns),
                        entropy=entropy,
                        window=10,
                        fai_horizon=(0, None),
                    )
                except Exception as e:
                    no_reference = f"no reference: {type(e).__name__}: {e}"
            for path in PATHS:
                key = f"{n} {path}"
                _stage(f"analyze {key}")
                try:
                    a = wb.analyze(model, trace, layers="all", path=path, window=10)
                except WorkbenchError as e:
                    runs[key] = {"result": "REFUSED", "detail": e.problem, "message": str(e)}
                    continue
                except Exception as e:
                    runs[key] = {"result": "RAW", **raw(f"analyze {key}", e)}
                    continue
                if mismatch is not None:  # an analysis of other layers than the model has
                    runs[key] = {"result": "WRONG", "detail": mismatch}
                    continue
                if ref is None:
                    runs[key] = {"result": "UNJUDGED", "detail": no_reference}
                    continue
                problems, worst = _compare(a, ref)
                runs[key] = {
                    "result": "WRONG" if problems else "MATCH",
                    "detail": "; ".join(problems),
                    "worst_tolerance_ratio": worst,
                }
    return _judge(runs, verdict)


def _judge(runs: dict[str, dict], verdict) -> dict:
    """The type's result from its runs' (keyed ``"<length> <path>"``), as `verdict`
    ``(result, detail, runs=runs)`` makes it."""
    by = {r: [k for k, v in runs.items() if v["result"] == r] for r in ("RAW", "WRONG")}
    for result in ("RAW", "WRONG"):
        if by[result]:
            first = runs[by[result][0]]
            what = first.get("error", first.get("detail", ""))
            return verdict(result, f"{', '.join(by[result])}: {what[:400]}", runs=runs)
    results = {k: v["result"] for k, v in runs.items()}
    unjudged = [v["detail"] for v in runs.values() if v["result"] == "UNJUDGED"]
    if unjudged:
        return verdict("CANNOT-JUDGE", unjudged[0], runs=runs)
    refused = [k for k, r in results.items() if r == "REFUSED"]
    if len(refused) == len(runs):
        return verdict("REFUSED", f"analyze: {runs[refused[0]]['detail']}", runs=runs)
    worst = max(v.get("worst_tolerance_ratio", 0.0) for v in runs.values())
    ratio = f"largest diff {worst:.2f}x tolerance"
    if not refused:
        return verdict("MATCH", ratio, runs=runs)
    if set(refused) == {k for k in runs if k.endswith(" tiled")}:
        why = runs[refused[0]]["detail"]
        return verdict("MATCH-EXACT-ONLY", f"{ratio}; tiled refused: {why}", runs=runs)
    return verdict("CANNOT-JUDGE", f"refused only on {', '.join(refused)}", runs=runs)


# --- the sweep ------------------------------------------------------------------------------


def _run_one(model_type: str, lengths: list[int], timeout: int) -> dict:
    """Run `_one` for `model_type` in a subprocess; its result. The subprocess's temporary
    files go to a folder of its own, removed here even when it is killed."""
    cmd = [sys.executable, __file__, "--one", model_type, "--lengths", *map(str, lengths)]
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix=f"arch-{model_type}-") as scratch:
            env = {**os.environ, "TMPDIR": scratch}
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        stdout, stderr, rc = e.stdout, e.stderr, None
        stdout = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout or ""
        stderr = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or ""
    seconds = round(time.perf_counter() - t0, 1)
    lines = stdout.splitlines()
    found = [x for x in lines if x.startswith("RESULT ")]
    if found:
        return {**json.loads(found[-1][len("RESULT ") :]), "seconds": seconds}
    stages = [x[len("STAGE ") :] for x in lines if x.startswith("STAGE ")]
    stage = stages[-1] if stages else "start"
    result = {"type": model_type, "seconds": seconds, "stderr": stderr[-3000:]}
    if rc is None:  # a tiny toy that takes this long: too big a sub-config, or a hang
        detail = f"timed out after {timeout} s in {stage}"
        return {**result, "result": "CANNOT-JUDGE", "detail": detail}
    tail = " ".join(stderr.strip().splitlines()[-1:])[:300]
    # A death in the workbench's own steps counts against it; in building the toy, not.
    workbench = stage == "load_model" or stage.startswith("analyze")
    detail = f"process died (exit status {rc}) in {stage}: {tail}"
    return {**result, "result": "RAW" if workbench else "CANNOT-JUDGE", "detail": detail}


def _table(results: list[dict]) -> None:
    """The results, failures first, then by result and type; the counts."""
    order = {r: i for i, r in enumerate(RESULTS)}
    print("| type | class | result | detail |")
    print("|---|---|---|---|")
    for r in sorted(results, key=lambda r: (order[r["result"]], r["type"])):
        detail = r["detail"].replace("|", "\\|")  # a Markdown table cell
        detail = detail if len(detail) <= 300 else detail[:300] + "..."
        print(f"| {r['type']} | {r.get('class', '')} | {r['result']} | {detail} |")
    counts = Counter(r["result"] for r in results)
    print("\n" + ", ".join(f"{r} {counts[r]}" for r in RESULTS) + f" (of {len(results)} types)")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--types", default=None, help="comma-separated model types (default: every one)"
    )
    ap.add_argument(
        "--lengths",
        type=_args.at_least(20),
        nargs="+",
        default=[40, 80],
        help="trace lengths (at least 20: longer than the toys' windows of 16)",
    )
    ap.add_argument("--timeout", type=_args.positive_int, default=120, help="seconds per type")
    ap.add_argument("--workers", type=_args.positive_int, default=1, help="types at a time")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--one", metavar="TYPE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(_one(args.one, args.lengths)), flush=True)
        return 0
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    known = sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    types = known if args.types is None else [t.strip() for t in args.types.split(",")]
    unknown = [t for t in types if t not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES]
    if unknown or not types:
        ap.error(
            f"--types: {', '.join(map(repr, unknown)) or 'none given'} is not a causal LM type "
            f"of this transformers (e.g. {', '.join(known[:4])}; the keys of "
            "transformers.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)"
        )
    json_path = _args.output_file(args.json, "--json")  # before any work
    from workbench._io import atomic_write_json
    from workbench.provenance import provenance

    prov = provenance()
    print("provenance " + json.dumps(prov), flush=True)
    results: list[dict] = []

    def write() -> None:
        if json_path is not None:
            counts = Counter(r["result"] for r in results)
            atomic_write_json(
                json_path,
                {
                    "provenance": prov,
                    "lengths": args.lengths,
                    "counts": {r: counts[r] for r in RESULTS},
                    "results": sorted(results, key=lambda r: r["type"]),
                },
            )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        jobs = [pool.submit(_run_one, t, args.lengths, args.timeout) for t in types]
        for i, job in enumerate(jobs, 1):
            r = job.result()
            results.append(r)
            write()
            print(f"[{i}/{len(types)}] {r['type']}: {r['result']} ({r['seconds']} s)", flush=True)
    print(f"\n{len(types)} types in {time.perf_counter() - t0:.0f} s\n")
    _table(results)
    write()
    return 1 if any(r["result"] in ("WRONG", "RAW") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(_args.entry(main))
