"""The architecture matrix: every metric against Hugging Face's own eager attention.

For each architecture below, a tiny random checkpoint (2 layers, 4 query heads sharing 2
key/value heads, d_model 32, the tiny reasoner's character tokenizer) is saved offline by
conftest's ``make_toy`` and loaded with ``wb.load_model``. The reference is *not* the
workbench's bridge: the same folder is loaded again with
``AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")`` and run with
``output_attentions=True``; its float64 patterns (every layer and head) go through
`reference_from_patterns`, and its logits give the entropies. So the reference applies each
architecture's real attention: sliding-window masks per layer (``layer_types``), logit
soft-capping, QK-norm, partial rotary, fused projections, absolute positions.

Why: the tiled path once computed wrong numbers silently on sliding-window models (it
applied a full causal mask), and the bridge's own pattern hooks are only as right as
TransformerLens's reimplementation of each architecture. Both paths (``"exact"`` and
``"tiled"``) must give head span, WAAD, FAI, Delta and entropy to 1e-5 (entropy relative
1e-4), NaNs in the same places, and the same head classes and token sets, with the
analysis FAI horizon ``(0, None)`` and the RL one ``(10, 100)``.

Each case runs on a trace shorter than 512 tokens but longer than the sliding window (100)
and one longer than 512 (600), both from seeded random
token ids with the response starting at 20% of the length. A wrong number or a refusal
always fails; only a clear `WorkbenchError` from ``wb.load_model`` (TransformerLens cannot
bridge the architecture) would be recorded as an expected failure.

Weights are drawn with ``initializer_range=0.2`` (not the configs' 0.02) so that attention
is far from uniform: scores of order one make soft-capping, QK-norm or a wrong scale visible
at 1e-5 (`test_softcap_changes_the_reference` checks that for soft-capping).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from toy_architectures import (  # tests/toy_architectures.py, shared with the other matrices
    ARCH_IDS,
    BY_ID,
    COMMON,
    MORE_IDS,
    NO_GQA,
    SLIDING,
    SLIDING_THEN_FULL,
    WINDOW,
    build,
)

import workbench as wb
from workbench.attention import engine
from workbench.attention.metrics import DEFAULT_FAI_CUTS
from workbench.attention.reference import reference_from_patterns
from workbench.errors import WorkbenchError
from workbench.models import bridge_model, sampler

pytestmark = pytest.mark.slow

LENGTHS = {"short": 100, "long": 600}  # < 512 (but > WINDOW) and > 512 tokens
HORIZONS = {"analysis": (0, None), "rl": (10, 100)}
PATHS = ("exact", "tiled")

#: Their attention bypasses transformers' attention interface: the exact path only.
EXACT_ONLY = {"falcon-7b", "bloom-alibi", "mpt-alibi", "gpt-neo-local"}


# --- comparison (as in test_attention_models.py) -------------------------------------------

# Entropy: float32 logits through different attention kernels differ by ~1e-6 relative.
ENTROPY_TOL = dict(atol=1e-5, rtol=1e-4)


def close(field_: str, a, b, atol: float = 1e-5, rtol: float = 1e-5) -> None:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape, f"{field_}: shape {a.shape} != {b.shape}"
    assert np.array_equal(np.isnan(a), np.isnan(b)), f"{field_}: NaNs in different places"
    ok = ~np.isnan(a)
    np.testing.assert_allclose(a[ok], b[ok], atol=atol, rtol=rtol, err_msg=field_)


def assert_matches_reference(a, ref: dict[str, Any]) -> None:
    for f in ["head_span", "waad", "fai", "delta", "entropy"]:
        close(f, getattr(a, f).numpy(), ref[f], **(ENTROPY_TOL if f == "entropy" else {}))
    close("receiver_kurtosis", a.receiver_kurtosis.numpy(), ref["receiver_kurtosis"], 1e-4, 1e-4)
    for f in ["local_heads", "global_heads", "preplan", "anchors", "dominated", "intro"]:
        assert getattr(a, f) == ref[f], f


# --- fixtures: one checkpoint per case, one Hugging Face pass per (case, trace) --------------


@pytest.fixture(scope="module")
def toys(make_toy):
    """``toys(arch_id)``: the bridge of that case's checkpoint, or the `WorkbenchError` that
    ``wb.load_model`` raised (built once per module)."""
    cache: dict[str, Any] = {}

    def get(arch_id: str):
        if arch_id not in cache:
            try:
                cache[arch_id] = build(make_toy, arch_id)
            except WorkbenchError as e:
                cache[arch_id] = e
        return cache[arch_id]

    return get


def _bridge(toys, arch_id: str):
    model = toys(arch_id)
    if isinstance(model, WorkbenchError):
        pytest.xfail(f"wb.load_model refuses {arch_id}: {model.problem}")
    return model


@pytest.fixture(scope="module")
def traces():
    """``{length name: Trace}``: seeded random ids (bos first), prompt = 20% of the length."""
    from workbench.tiny.tokenizer import build_tokenizer

    tok = build_tokenizer()
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name, n in LENGTHS.items():
        ids = torch.randint(4, len(tok), (n,), generator=gen)
        ids[0] = tok.bos_token_id
        tokens = tok.convert_ids_to_tokens(ids.tolist())
        out[name] = wb.Trace(ids=ids, tokens=tokens, prompt_len=n // 5, text="")
    return out


@torch.no_grad()
def eager_run(model, trace) -> tuple[dict[tuple[int, int], np.ndarray], Any]:
    """Hugging Face's eager attention on `model`'s folder, loaded again (not the bridge):
    ``({(layer, head): [query_pos, key_pos]}`` float64 patterns, logits ``[1, pos,
    d_vocab]``). Hugging Face returns one pattern per attention layer, in order, so a
    hybrid model's patterns are keyed by `engine.attention_layers`."""
    folder = sampler(model).config._name_or_path
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32
    ).eval()
    out = hf(trace.ids[None], output_attentions=True, use_cache=False)
    patterns = {
        (layer, h): att[0, h].double().numpy()
        for layer, att in zip(engine.attention_layers(model), out.attentions, strict=True)
        for h in range(att.shape[1])
    }
    return patterns, out.logits


@pytest.fixture(scope="module")
def hf_runs(toys, traces):
    """``hf_runs(arch_id, length)``: ``(patterns, entropy)`` from Hugging Face eager attention
    on that case's folder: ``{(layer, head): [query_pos, key_pos]}`` float64 patterns and the
    float64 entropy of the distribution that produced each response token (NaN elsewhere)."""
    cache: dict[tuple[str, str], Any] = {}

    def get(arch_id: str, length: str):
        key = (arch_id, length)
        if key not in cache:
            trace = traces[length]
            patterns, logits = eager_run(_bridge(toys, arch_id), trace)
            n = len(trace)
            entropy = np.full(n, np.nan)
            logp = torch.log_softmax(logits[0].double(), -1)
            ent = -(logp.exp() * logp).sum(-1).numpy()
            entropy[trace.prompt_len :] = ent[trace.prompt_len - 1 : n - 1]
            cache[key] = (patterns, entropy)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def references(hf_runs, traces):
    """``references(arch_id, length, horizon)``: `reference_from_patterns` of the HF run."""
    cache: dict[tuple[str, str, str], dict[str, Any]] = {}

    def get(arch_id: str, length: str, horizon: str):
        key = (arch_id, length, horizon)
        if key not in cache:
            patterns, entropy = hf_runs(arch_id, length)
            n_layers = 1 + max(layer for layer, _ in patterns)
            n_heads = 1 + max(h for _, h in patterns)
            cache[key] = reference_from_patterns(
                patterns,
                traces[length].prompt_len,
                n_layers=n_layers,
                n_heads=n_heads,
                entropy=entropy,
                window=10,
                fai_horizon=HORIZONS[horizon],
            )
        return cache[key]

    return get


# --- the matrix ----------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", list(HORIZONS))
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("length", list(LENGTHS))
@pytest.mark.parametrize("arch_id", ARCH_IDS)
def test_metrics_match_hf_eager(toys, traces, references, arch_id, length, path, horizon):
    model = _bridge(toys, arch_id)
    ref = references(arch_id, length, horizon)
    a = wb.analyze(
        model, traces[length], layers="all", path=path, window=10, fai_horizon=HORIZONS[horizon]
    )
    assert_matches_reference(a, ref)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "arch_id", ["llama3", "mistral-sliding", "gemma2-softcap", "gpt2", "gpt-oss-sinks"]
)
def test_sink_exclusion_matches_the_reference(toys, traces, hf_runs, arch_id, path):
    """``sink="exclude"``: every metric of A' (first column removed, rows renormalised),
    against the reference applied to Hugging Face's own eager patterns. gpt-oss's rows give
    a learned sink logit a share, so they do not sum to 1: the tiled path left the rows of
    its tiles past the first token's column unscaled (WAAD off by 0.15)."""
    model = _bridge(toys, arch_id)
    trace = traces["long"]
    patterns, entropy = hf_runs(arch_id, "long")
    ref = reference_from_patterns(
        patterns, trace.prompt_len, n_layers=model.cfg.n_layers, n_heads=model.cfg.n_heads,
        entropy=entropy, window=10, fai_horizon=(0, None), sink="exclude",
    )  # fmt: skip
    a = wb.analyze(model, trace, layers="all", path=path, sink="exclude")
    assert a.meta["sink"] == "exclude"
    assert_matches_reference(a, ref)
    kept = wb.analyze(model, trace, layers="all", path=path)
    # Sliding-window layers never reach the first token from these response rows: there,
    # and only there, nothing changes.
    sees_sink = any(p[trace.prompt_len :, 0].max() > 1e-6 for p in patterns.values())
    same = np.allclose(kept.head_span.numpy(), a.head_span.numpy(), equal_nan=True)
    assert same != sees_sink
    with pytest.raises(WorkbenchError, match="cannot change it"):
        a.with_params(sink="keep")
    assert a.with_params(sink="exclude", window=5).params.window == 5


@pytest.mark.parametrize(
    "arch_id", [a for a in ARCH_IDS if SLIDING in BY_ID[a].layers or "softcap" in a]
)
def test_small_tiles_cross_the_window_exactly(toys, traces, arch_id):
    """Tiles of 7 query rows cut through every sliding window and every soft-capped row:
    the tiled path's statistics still equal the exact path's (which matches HF above)."""
    model = _bridge(toys, arch_id)
    tr = traces["short"]
    heads = [(layer, h) for layer in range(2) for h in range(4)]
    kw = dict(max_window=WINDOW + 4, cuts=DEFAULT_FAI_CUTS)
    s1, e1 = engine.collect(model, tr.ids, tr.prompt_len, heads, path="exact", **kw)
    s2, e2 = engine.collect(model, tr.ids, tr.prompt_len, heads, path="tiled", tile_rows=7, **kw)
    for f in ["rowsum", "dist", "band", "cut_sums"]:
        close(f, getattr(s1, f).numpy(), getattr(s2, f).numpy())
    close("entropy", e1.numpy(), e2.numpy(), **ENTROPY_TOL)


@pytest.mark.parametrize("arch_id", ARCH_IDS + [a for a in MORE_IDS if SLIDING in BY_ID[a].layers])
def test_case_has_the_intended_layer_types(toys, hf_runs, arch_id):
    """The matrix covers what it claims: in Hugging Face's own patterns, a sliding layer
    gives no weight to keys ``WINDOW`` or more tokens back, and a full layer does."""
    patterns, _ = hf_runs(arch_id, "short")
    n = next(iter(patterns.values())).shape[0]
    far = np.tril(np.ones((n, n), dtype=bool), -WINDOW)  # t - s >= WINDOW
    for layer, kind in enumerate(BY_ID[arch_id].layers):
        weight = max(float(patterns[layer, h][far].max()) for h in range(4))
        if kind == SLIDING:
            assert weight == 0.0, f"layer {layer} is not sliding"
        else:
            assert weight > 1e-3, f"layer {layer} looks sliding"


@pytest.mark.parametrize("arch_id", MORE_IDS)
def test_more_architectures_match_hf_eager(toys, traces, references, arch_id):
    """Every other family: on the trace longer than 512 tokens, each path the model takes
    (the tiled path where its attention goes through transformers' interface, a clear
    refusal of it where not, and the exact path) and the RL credit pass equal Hugging
    Face's eager reference."""
    model = _bridge(toys, arch_id)
    trace = traces["long"]
    ref = references(arch_id, "long", "analysis")
    assert engine.tiled_supported(model) == (arch_id not in EXACT_ONLY)
    for path in PATHS:
        if path == "tiled" and arch_id in EXACT_ONLY:
            with pytest.raises(WorkbenchError, match="does not route its attention"):
                wb.analyze(model, trace, path=path)
            continue
        assert_matches_reference(wb.analyze(model, trace, path=path, window=10), ref)
    assert_credit_matches_reference(credit_pass(model, trace), references(arch_id, "long", "rl"))


#: Architectures TransformerLens's bridge gets wrong with the locked transformers: each is
#: refused by ``wb.load_model`` with the failure named, never bridged.
BRIDGE_FAILURES = {
    # It has no adapter for these.
    "ministral": (
        "MinistralConfig", "MinistralForCausalLM", dict(head_dim=8, **SLIDING_THEN_FULL),
        "cannot wrap",
    ),
    "persimmon": ("PersimmonConfig", "PersimmonForCausalLM", NO_GQA, "cannot wrap"),
    # Its adapter splits the fused projection as if keys and values had one head.
    "falcon-grouped-kv": (
        "FalconConfig", "FalconForCausalLM", dict(new_decoder_architecture=True, num_kv_heads=2),
        "cannot wrap",
    ),
    # Its adapter reads `embed_positions`, which CodeGen's attention no longer has.
    "codegen": (
        "CodeGenConfig", "CodeGenForCausalLM", dict(NO_GQA, rotary_dim=4, n_ctx=1024),
        "fails in a forward pass of",
    ),
    # Its attention patterns match Hugging Face's, but its logits are off by ~0.1.
    "falcon-alibi": (
        "FalconConfig", "FalconForCausalLM",
        dict(alibi=True, multi_query=True, new_decoder_architecture=False),
        "computes other logits than",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BRIDGE_FAILURES))
def test_architectures_the_bridge_gets_wrong_are_refused_at_load(make_toy, case):
    """``wb.load_model`` runs the bridge and the model on a short probe: an architecture
    TransformerLens cannot wrap, an adapter that fails in its forward pass, and one that
    computes other logits are refused with a clear error that names the failure."""
    config, model, overrides, failure = BRIDGE_FAILURES[case]
    with pytest.raises(WorkbenchError, match=f"{failure} {model} ") as info:
        make_toy(getattr(transformers, config), getattr(transformers, model), **COMMON, **overrides)
    assert model in info.value.problem and "TransformerLens" in info.value.problem
    assert "Architectures" in info.value.fix
    if case in ("ministral", "persimmon"):  # not its list of ~100 adapters, cut mid-name
        assert "(ValueError: it has no adapter for this architecture)" in info.value.problem


@pytest.mark.parametrize(
    ("config", "model", "overrides"),
    [
        ("MambaConfig", "MambaForCausalLM", dict(state_size=4)),  # no attention at all
        # Attention in layers 1 and 3, which TransformerLens's adapter does not hook.
        ("Zamba2Config", "Zamba2ForCausalLM", dict(num_hidden_layers=4,
          layers_block_type=["mamba", "hybrid"] * 2, n_mamba_heads=8, mamba_headdim=8,
          mamba_d_state=16, adapter_rank=8, attention_head_dim=8, chunk_size=16)),
    ],
)  # fmt: skip
def test_a_model_with_no_attention_pattern_to_read_is_refused_by_name(
    make_toy, config, model, overrides
):
    bridge = make_toy(getattr(transformers, config), getattr(transformers, model), **overrides)
    trace = wb.Trace(ids=torch.arange(1, 30), tokens=["a"] * 29, prompt_len=5, text="")
    with pytest.raises(WorkbenchError) as info:
        wb.analyze(bridge, trace)
    assert f"of {model} exposes an attention pattern" in info.value.problem
    assert "Architectures" in info.value.fix


def test_a_config_that_misstates_the_head_count_is_refused_at_load(make_toy):
    """JetMoE's attention computes num_key_value_heads x num_experts_per_tok heads; a
    config.json stating another num_attention_heads (4 against 2 x 1) loaded, and every
    analysis then failed with a raw shape error deep in the reductions."""
    with pytest.raises(WorkbenchError) as info:
        make_toy(
            transformers.JetMoeConfig, transformers.JetMoeForCausalLM, **COMMON,
            kv_channels=8, num_local_experts=2, num_experts_per_tok=1,
        )  # fmt: skip
    assert "computes [2] head(s) per layer, but its config gives 4" in info.value.problem
    assert "num_experts_per_tok" in info.value.fix


def test_a_half_precision_model_the_bridge_cannot_run_has_float32_as_its_fix(toys):
    """TransformerLens's OLMo 2 adapter mixes float32 with the model's dtype, so its bridge
    fails in bfloat16: the refusal names the dtype and says to bridge in float32 (the matrix
    runs OLMo 2 in float32). A bfloat16 model the bridge runs is accepted."""
    olmo = _bridge(toys, "olmo2")
    half = copy.deepcopy(sampler(olmo)).to(torch.bfloat16)
    with pytest.raises(
        WorkbenchError, match="fails in a forward pass of Olmo2ForCausalLM "
    ) as info:
        bridge_model(half, olmo.tokenizer)
    assert info.value.problem.endswith("on this architecture in bfloat16")
    assert "float32" in info.value.fix and "Architectures" not in info.value.fix
    llama = _bridge(toys, "llama3")
    bridge_model(copy.deepcopy(sampler(llama)).to(torch.bfloat16), llama.tokenizer)


@pytest.mark.parametrize(
    ("case", "attention"), [("qwen3-next", [3]), ("qwen3.5", [3]), ("jamba", [1, 3])]
)
def test_hybrid_models_analyse_their_attention_layers(hybrid_toy, traces, case, attention):
    """A hybrid model (linear-attention or state-space layers between attention layers)
    loads; ``"all"`` and ``"middle"`` mean its attention layers (in the analysis and the
    head picker), and their metrics equal the reference from Hugging Face's eager
    patterns; a selection that names a layer without attention gets a clear error naming
    the attention layers; the attention maps cover exactly their heads."""
    from workbench.ui.heads import HeadPicker

    model = hybrid_toy(case)
    assert engine.attention_layers(model) == attention
    trace = traces["long"]
    with pytest.raises(WorkbenchError, match=r"layer\(s\) \[0\] .* no softmax attention") as info:
        wb.analyze(model, trace, layers=[0, attention[-1]])
    assert f"layers={attention}" in info.value.fix
    # a head of a layer without attention, under layers="all": it was "not among the
    # selected layers", with the fix to use layers="all"
    with pytest.raises(WorkbenchError, match=r"head \(0, 0\) is in layer 0, which computes no"):
        wb.analyze(model, trace, heads=[(0, 0)])
    patterns, _ = eager_run(model, trace)
    assert {layer for layer, _ in patterns} == set(attention)
    ref = reference_from_patterns(
        patterns, trace.prompt_len, n_layers=4, n_heads=model.cfg.n_heads, window=10
    )
    a = wb.analyze(model, trace, window=10, entropy=False)
    assert sorted({layer for layer, _ in a.heads}) == attention
    for f in ["head_span", "waad", "fai", "delta"]:
        close(f, getattr(a, f).numpy(), ref[f])
    for f in ["local_heads", "global_heads", "preplan", "anchors"]:
        assert getattr(a, f) == ref[f], f
    middle = wb.analyze(model, trace, layers="middle", entropy=False)
    assert sorted({layer for layer, _ in middle.heads}) == attention  # 1 or 2 of them
    picker = HeadPicker()
    picker.set_model(model)
    assert picker.layers == attention and list(picker.custom_layers.options) == attention
    maps = wb.viz.attention_maps(model, trace)
    assert {layer for layer, _ in maps.heads} == set(attention)


def test_a_class_that_uses_the_interface_undeclared_takes_the_tiled_path_once_checked(
    hybrid_toy, traces, monkeypatch
):
    """Qwen3.5's class does not declare transformers' attention interface, so it was
    analysed on the exact path only ([head, T, T] per layer: slow and memory-bound on long
    traces), though its attention goes through the interface. A check on 64 tokens now
    finds that the tiled pass reproduces its eager attention; where it does not (here the
    model's eager attention is made to differ), the model stays on the exact path."""
    import copy

    from transformers.models.qwen3_5 import modeling_qwen3_5

    model = hybrid_toy("qwen3.5")
    hf = sampler(model)
    assert not type(hf)._supports_attention_backend and engine.tiled_supported(model)
    trace = traces["long"]
    patterns, _ = eager_run(model, trace)
    ref = reference_from_patterns(
        patterns, trace.prompt_len, n_layers=4, n_heads=model.cfg.n_heads, window=10
    )
    for path in PATHS:
        a = wb.analyze(model, trace, path=path, window=10, entropy=False)
        for f in ["head_span", "waad", "fai", "delta"]:
            close(f"{path} {f}", getattr(a, f).numpy(), ref[f])

    eager = modeling_qwen3_5.eager_attention_forward

    def other(module, query, *args, **kwargs):  # eager attention with sharper scores
        return eager(module, 1.5 * query, *args, **kwargs)

    monkeypatch.setattr(modeling_qwen3_5, "eager_attention_forward", other)
    other_hf = copy.deepcopy(hf)
    del other_hf.__dict__["_workbench_reproduces_eager"]  # the answer kept for `hf`
    fresh = bridge_model(other_hf, model.tokenizer)
    assert not engine.tiled_supported(fresh)
    with pytest.raises(WorkbenchError, match="does not route its attention"):
        wb.analyze(fresh, trace, path="tiled")


def test_softcap_changes_the_reference(references):
    """Soft-capping moves the metrics far beyond the tolerance, so a path that ignored it
    would fail the matrix (same seed, same weights: only the cap differs)."""
    capped = references("gemma2-softcap", "short", "analysis")
    plain = references("gemma2-no-softcap", "short", "analysis")
    for f in ["head_span", "waad", "fai"]:
        assert np.nanmax(np.abs(capped[f] - plain[f])) > 1e-3, f


@pytest.mark.parametrize("arch_id", ARCH_IDS)
def test_rl_update_forward_with_shared_prompts_matches_full_rows(toys, arch_id):
    """The native GRPO update runs each group's prompt once and its completions on the
    repeated KV cache (`workbench.rl.forward`). On every architecture its logits must equal
    each ``prompt + completion`` row's own forward, and the credit statistics it collects
    on the response rows must give the metrics of a full pass over each rollout (prompts
    longer than the sliding window, of two lengths, so the left padding and every window
    are crossed)."""
    from workbench.attention.metrics import fai_heads, span_heads, waad_heads
    from workbench.attention.params import CreditParams
    from workbench.rl.credit import FusedCredit
    from workbench.rl.forward import completion_logits, rollout_batch

    bridge = _bridge(toys, arch_id)
    hf = sampler(bridge)
    gen = torch.Generator().manual_seed(1)
    vocab = hf.config.vocab_size

    def ids(n: int) -> list[int]:
        return torch.randint(4, vocab, (n,), generator=gen).tolist()

    prompts = [ids(30), ids(22)]
    completions = [ids(n) for n in (40, 25, 0, 33, 40, 12)]
    batch = rollout_batch(prompts, completions, 3, slice(0, 6))
    credit = CreditParams(strategy="coupled", layers="all")
    fused = FusedCredit(hf, credit, batch.spans, batch.seqs)
    with torch.no_grad():  # eval mode: GPT-2's toy has attention dropout
        logits = completion_logits(hf, batch, fused)
        stats = fused.collector.finish()
        items = [(s, len(prompts[i // 3])) for i, s in enumerate(batch.seqs)]
        full = engine.collect_many(
            bridge, items, fused.collector.heads, max_window=10, cuts=[10, 101],
            path="tiled", entropy=False, sdpa_outputs=True,
        )  # fmt: skip
        for i, c in enumerate(completions):
            if not c:
                continue
            p = prompts[i // 3]
            want = hf(torch.tensor([p + c])).logits[0, len(p) - 1 : -1]
            torch.testing.assert_close(logits[i, : len(c)], want, rtol=1e-4, atol=1e-5)
            got, ref = stats[i], full[i][0]
            close(f"span {i}", span_heads(got), span_heads(ref))
            close(f"waad {i}", waad_heads(got), waad_heads(ref))
            close(f"fai {i}", fai_heads(got, (10, 100)), fai_heads(ref, (10, 100)))


def credit_pass(model, trace):
    """`wb.analyze_many` with the RL credit pass's options (`gamma_many`'s: the FAI horizon
    (10, 100), sdpa outputs, no column sums)."""
    (a,) = wb.analyze_many(
        model, [trace], window=10, fai_horizon=HORIZONS["rl"], layers="all", max_window=10,
        default_cuts=False, columns=False, fast_other_layers=True, sdpa_outputs=True,
        progress=False,
    )  # fmt: skip
    return a


def assert_credit_matches_reference(a, ref: dict[str, Any]) -> None:
    """What the credit pass keeps (no entropy) equals the reference: the metrics to 1e-5,
    the head classes and token sets exactly."""
    for f in ["head_span", "waad", "fai", "delta"]:
        close(f, getattr(a, f).numpy(), ref[f])
    for f in ["local_heads", "global_heads", "preplan", "anchors", "dominated", "intro"]:
        assert getattr(a, f) == ref[f], f


@pytest.mark.parametrize("kernel", ["cpu-flash", "flex"])
@pytest.mark.parametrize("length", list(LENGTHS))
@pytest.mark.parametrize("arch_id", ARCH_IDS)
def test_credit_band_pass_matches_hf_eager(
    toys, traces, references, monkeypatch, arch_id, length, kernel
):
    """The RL credit pass (`gamma_many`'s options: sdpa outputs, no column sums) computes
    each plain layer from one flash call and a band of dot products (`interface.Banded`),
    and soft-capped layers from tiles. Either way every metric of the RL horizon equals the
    Hugging Face eager reference. FAI to the end of the response is refused with a clear
    error where the band (101 diagonals) does not span the trace, and exact where it does.
    The flash call is the CPU kernel's, or FlexAttention's (CUDA's, here uncompiled, with
    a GPU's block sizes: `tiling`), with the mask transformers built for each layer
    (sliding windows included)."""
    from workbench.attention import flex, interface, tiling

    model = _bridge(toys, arch_id)
    banded, flexed = [], []
    real, real_flex = interface._banded, flex.attention_with_moment
    monkeypatch.setattr(interface, "_banded", lambda *a: banded.append(1) or real(*a))
    monkeypatch.setattr(flex, "attention_with_moment", lambda *a: flexed.append(1) or real_flex(*a))
    if kernel == "flex":
        monkeypatch.setattr(flex, "DEVICES", ("cuda", "cpu"))
        monkeypatch.setattr(tiling, "CACHE_SIZED", ())
    weight = next(sampler(model).parameters())
    on_flex = flex.serves(weight)  # kernel "flex", or WORKBENCH_TEST_DEVICE=cuda
    if on_flex:  # its probe for this head width, once, uncounted
        assert flex.ready(weight.device, torch.float32, model.cfg.d_head)
        flexed.clear()
    a = credit_pass(model, traces[length])
    capped = getattr(sampler(model).config, "attn_logit_softcapping", None) is not None
    assert len(banded) == (0 if capped else model.cfg.n_layers)
    assert len(flexed) == (len(banded) if on_flex else 0)
    assert_credit_matches_reference(a, references(arch_id, length, "rl"))
    if len(traces[length]) > 101:  # longer than the band
        with pytest.raises(WorkbenchError, match="did not keep the column sums"):
            a.with_params(fai_horizon=(0, None))
    else:  # the band spans the sequence, so it holds the whole column too
        to_end = a.with_params(fai_horizon=(0, None)).fai.numpy()
        close("fai to the end", to_end, references(arch_id, length, "analysis")["fai"])


@pytest.mark.parametrize("horizon", list(HORIZONS))
@pytest.mark.parametrize("arch_id", ARCH_IDS)
def test_the_portable_path_matches_hf_eager(
    toys, traces, references, monkeypatch, arch_id, horizon
):
    """Off the CPU (CUDA, MPS) the attention function takes its portable path: tiles with
    PyTorch's softmax and reductions, no reused buffer, no compiled kernel and no band path
    (`interface._cpu_fast` is False), in a GPU's larger blocks (`tiling`). Forced here on
    the CPU, it must match Hugging Face's eager attention as the CPU paths do, both for
    `wb.analyze` and for the RL credit's options (sdpa outputs, no column sums), on the
    trace longer than 512 tokens."""
    from workbench.attention import flex, interface, kernels, tiling

    def refused(*args, **kwargs):
        raise AssertionError("a CPU-only path ran")

    monkeypatch.setattr(interface, "_cpu_fast", lambda *tensors: False)
    # on CUDA (WORKBENCH_TEST_DEVICE=cuda) the band path's FlexAttention would serve it
    monkeypatch.setattr(flex, "DEVICES", ())
    monkeypatch.setattr(interface, "_banded", refused)
    monkeypatch.setattr(kernels, "softmax_stats", refused)
    monkeypatch.setattr(tiling, "CACHE_SIZED", ())
    model = _bridge(toys, arch_id)
    trace, fai_horizon = traces["long"], HORIZONS[horizon]
    ref = references(arch_id, "long", horizon)
    a = wb.analyze(model, trace, layers="all", path="tiled", window=10, fai_horizon=fai_horizon)
    assert_matches_reference(a, ref)
    if horizon == "rl":
        assert_credit_matches_reference(credit_pass(model, trace), ref)
