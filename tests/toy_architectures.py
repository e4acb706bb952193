"""The architecture matrix shared by the tests: tiny random checkpoints of transformers'
decoder families, as ``(config class, model class, overrides)`` given to conftest's
``make_toy`` (2 layers, 4 query heads sharing 2 key/value heads, d_model 32).

`ARCHS` is the matrix every metric, intervention and RL step is checked on against Hugging
Face's own eager forwards (tests/attention/test_architectures.py,
tests/ablation/test_ablation_architectures.py, tests/rl/test_rl_architectures.py); `MORE`
are the other families TransformerLens bridges, checked for the metrics only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import transformers

WINDOW = 16  # the sliding window of every case that has one
COMMON = dict(max_position_embeddings=1024, initializer_range=0.2)
FULL, SLIDING = "full_attention", "sliding_attention"


@dataclass(frozen=True)
class Arch:
    """One case of the matrix: a config and model class of transformers, the overrides
    given to ``make_toy``, and the intended attention type of each of the two layers."""

    id: str
    config: str
    model: str
    layers: tuple[str, str]
    overrides: dict[str, Any] = field(default_factory=dict)


LLAMA3_ROPE = dict(
    rope_type="llama3",
    rope_theta=500000.0,
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    # Small, so the llama3 frequency scaling changes some of head_dim 8's frequencies.
    original_max_position_embeddings=64,
)
# Gemma scales scores by query_pre_attn_scalar ** -0.5, not head_dim ** -0.5: 16 keeps the two
# apart (a path using head_dim would fail) while scores stay large enough for the cap to bite.
GEMMA = dict(head_dim=8, sliding_window=WINDOW, query_pre_attn_scalar=16)
# GPT-2 and GPT-NeoX have no grouped key/value heads: drop make_toy's num_key_value_heads=2,
# which their configs would keep as a stray attribute (Hugging Face ignores it; the bridge
# would read it and reshape keys to 2 heads).
NO_GQA = {"num_key_value_heads": None}

ARCHS = [
    Arch(
        "llama3",
        "LlamaConfig",
        "LlamaForCausalLM",
        (FULL, FULL),
        dict(rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True),
    ),
    Arch(
        "qwen2-full", "Qwen2Config", "Qwen2ForCausalLM", (FULL, FULL), {"use_sliding_window": False}
    ),
    Arch(
        "qwen2-all-sliding",
        "Qwen2Config",
        "Qwen2ForCausalLM",
        (SLIDING, SLIDING),
        dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=0),
    ),
    Arch(
        "qwen2-full-then-sliding",
        "Qwen2Config",
        "Qwen2ForCausalLM",
        (FULL, SLIDING),
        dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    ),
    Arch("qwen3", "Qwen3Config", "Qwen3ForCausalLM", (FULL, FULL), {"head_dim": 8}),
    Arch(
        "mistral-sliding",
        "MistralConfig",
        "MistralForCausalLM",
        (SLIDING, SLIDING),
        {"sliding_window": WINDOW},
    ),
    Arch(
        "gemma2-softcap",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        (SLIDING, FULL),
        dict(GEMMA, attn_logit_softcapping=5.0),
    ),
    Arch(
        "gemma2-no-softcap",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        (SLIDING, FULL),
        dict(GEMMA, attn_logit_softcapping=None),
    ),
    Arch(
        "gemma2-full-then-sliding",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        (FULL, SLIDING),
        dict(GEMMA, attn_logit_softcapping=5.0, layer_types=[FULL, SLIDING]),
    ),
    Arch("gemma3-sliding", "Gemma3TextConfig", "Gemma3ForCausalLM", (SLIDING, SLIDING), GEMMA),
    Arch(
        "gemma3-full-then-sliding",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        (FULL, SLIDING),
        dict(GEMMA, layer_types=[FULL, SLIDING]),
    ),
    Arch("phi3", "Phi3Config", "Phi3ForCausalLM", (FULL, FULL)),
    Arch("gpt2", "GPT2Config", "GPT2LMHeadModel", (FULL, FULL), NO_GQA),
    Arch("gpt-neox", "GPTNeoXConfig", "GPTNeoXForCausalLM", (FULL, FULL), NO_GQA),
    Arch("olmo2", "Olmo2Config", "Olmo2ForCausalLM", (FULL, FULL)),
]


# Beyond the matrix: every other decoder family of transformers that TransformerLens bridges,
# checked on the long trace only (`test_more_architectures_match_hf_eager`). Each case
# carries what sets it apart: sliding windows, chunked attention and layers without rotary
# embeddings (Llama 4, SmolLM3), attention sinks (gpt-oss), multi-query attention, latent
# attention with a value width other than the key width (DeepSeek-V3), ALiBi (BLOOM, MPT),
# a scaling other than head_dim ** -0.5 (Granite), mixtures of experts.
def _moe(**kw: Any) -> dict[str, Any]:
    return dict(num_experts_per_tok=1, **kw)


SLIDING_THEN_FULL = dict(sliding_window=WINDOW, layer_types=[SLIDING, FULL])
# Chunked attention in layer 0, a NoPE layer 1, and a mixture of experts.
LLAMA4 = dict(head_dim=8, attention_chunk_size=WINDOW, no_rope_layers=[1, 0],
              intermediate_size_mlp=64, interleave_moe_layer_step=2,
              **_moe(num_local_experts=2))  # fmt: skip
# Qwen's recipe for 131,072 tokens: max_position_embeddings stays at the pretrained length
# (256 here, under the long trace's 600) and YaRN stretches it fourfold.
QWEN_YARN = dict(
    max_position_embeddings=256,
    rope_parameters=dict(
        rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=256
    ),
)
MORE = [
    Arch("qwen2-yarn", "Qwen2Config", "Qwen2ForCausalLM", (FULL, FULL), QWEN_YARN),
    Arch("phi", "PhiConfig", "PhiForCausalLM", (FULL, FULL)),
    Arch("phi3-sliding", "Phi3Config", "Phi3ForCausalLM", (SLIDING, SLIDING),
         {"sliding_window": WINDOW}),
    Arch("gptj", "GPTJConfig", "GPTJForCausalLM", (FULL, FULL), dict(NO_GQA, rotary_dim=4)),
    Arch("gpt-bigcode", "GPTBigCodeConfig", "GPTBigCodeForCausalLM", (FULL, FULL),
         dict(NO_GQA, multi_query=True)),
    Arch("falcon-7b", "FalconConfig", "FalconForCausalLM", (FULL, FULL),
         dict(multi_query=True, new_decoder_architecture=False, parallel_attn=True)),
    Arch("llama4-chunked-nope", "Llama4TextConfig", "Llama4ForCausalLM", (SLIDING, FULL),
         LLAMA4),
    Arch("gpt-oss-sinks", "GptOssConfig", "GptOssForCausalLM", (SLIDING, FULL),
         dict(head_dim=8, **SLIDING_THEN_FULL, **_moe(num_local_experts=2))),
    Arch("smollm3-nope", "SmolLM3Config", "SmolLM3ForCausalLM", (FULL, FULL),
         {"no_rope_layers": [1, 0]}),
    Arch("cohere2", "Cohere2Config", "Cohere2ForCausalLM", (SLIDING, FULL), SLIDING_THEN_FULL),
    Arch("cohere-qk-norm", "CohereConfig", "CohereForCausalLM", (FULL, FULL),
         {"use_qk_norm": True}),
    Arch("qwen3-moe", "Qwen3MoeConfig", "Qwen3MoeForCausalLM", (FULL, FULL),
         dict(head_dim=8, moe_intermediate_size=32, **_moe(num_experts=2))),
    Arch("mixtral-sliding", "MixtralConfig", "MixtralForCausalLM", (SLIDING, SLIDING),
         dict(sliding_window=WINDOW, **_moe(num_local_experts=2))),
    Arch("olmo3", "Olmo3Config", "Olmo3ForCausalLM", (SLIDING, FULL), SLIDING_THEN_FULL),
    Arch("exaone4", "Exaone4Config", "Exaone4ForCausalLM", (SLIDING, FULL), SLIDING_THEN_FULL),
    Arch("starcoder2", "Starcoder2Config", "Starcoder2ForCausalLM", (SLIDING, SLIDING),
         {"sliding_window": WINDOW}),
    Arch("granite", "GraniteConfig", "GraniteForCausalLM", (FULL, FULL),
         {"attention_multiplier": 0.3}),
    Arch("deepseek-v3-mla", "DeepseekV3Config", "DeepseekV3ForCausalLM", (FULL, FULL),
         dict(num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=4,
              qk_nope_head_dim=8, v_head_dim=8, first_k_dense_replace=2,
              moe_intermediate_size=32, n_group=1, topk_group=1,
              **_moe(n_routed_experts=2))),
    Arch("gemma", "GemmaConfig", "GemmaForCausalLM", (FULL, FULL), {"head_dim": 8}),
    Arch("opt", "OPTConfig", "OPTForCausalLM", (FULL, FULL),
         dict(NO_GQA, ffn_dim=64, word_embed_proj_dim=32)),
    Arch("bloom-alibi", "BloomConfig", "BloomForCausalLM", (FULL, FULL), NO_GQA),
    Arch("mpt-alibi", "MptConfig", "MptForCausalLM", (FULL, FULL),
         dict(NO_GQA, d_model=32, n_heads=4, n_layers=2)),
    Arch("gpt-neo-local", "GPTNeoConfig", "GPTNeoForCausalLM", (FULL, SLIDING),
         dict(NO_GQA, attention_types=[[["global", "local"], 1]], window_size=WINDOW)),
    Arch("stablelm", "StableLmConfig", "StableLmForCausalLM", (FULL, FULL),
         dict(qk_layernorm=True, partial_rotary_factor=0.5)),
    Arch("qwen2-moe", "Qwen2MoeConfig", "Qwen2MoeForCausalLM", (FULL, FULL),
         dict(moe_intermediate_size=32, shared_expert_intermediate_size=32,
              **_moe(num_experts=2))),
    Arch("olmo", "OlmoConfig", "OlmoForCausalLM", (FULL, FULL)),
    Arch("olmoe", "OlmoeConfig", "OlmoeForCausalLM", (FULL, FULL), _moe(num_experts=2)),
    Arch("glm", "GlmConfig", "GlmForCausalLM", (FULL, FULL), {"head_dim": 8}),
    Arch("glm4", "Glm4Config", "Glm4ForCausalLM", (FULL, FULL), {"head_dim": 8}),
    Arch("nemotron", "NemotronConfig", "NemotronForCausalLM", (FULL, FULL), {"head_dim": 8}),
    Arch("seed-oss", "SeedOssConfig", "SeedOssForCausalLM", (FULL, FULL), {"head_dim": 8}),
    Arch("ernie4.5", "Ernie4_5Config", "Ernie4_5ForCausalLM", (FULL, FULL), {"head_dim": 8}),
    Arch("bitnet", "BitNetConfig", "BitNetForCausalLM", (FULL, FULL)),
    Arch("apertus", "ApertusConfig", "ApertusForCausalLM", (FULL, FULL)),
    Arch("arcee", "ArceeConfig", "ArceeForCausalLM", (FULL, FULL)),
    Arch("lfm2", "Lfm2Config", "Lfm2ForCausalLM", (FULL, FULL)),
    # How Gemma 3 4B-27B checkpoints come: a vision tower beside the text model. Its boot
    # loaded an image processor that pip-installed torchvision; the workbench reads text.
    Arch("gemma3-multimodal", "gemma3_multimodal", "Gemma3ForConditionalGeneration",
         (SLIDING, FULL), dict(GEMMA, **SLIDING_THEN_FULL)),
    # How Llama 4 (Scout, Maverick) comes: loaded as its text model, Llama4ForCausalLM,
    # whose config has no place for the vision tower's weights (refused as "config and
    # weights disagree" before).
    Arch("llama4-multimodal", "llama4_multimodal", "Llama4ForConditionalGeneration",
         (SLIDING, FULL), LLAMA4),
]  # fmt: skip
BY_ID = {a.id: a for a in ARCHS + MORE}
ARCH_IDS = [a.id for a in ARCHS]
MORE_IDS = [a.id for a in MORE]


def gemma3_multimodal(**text: Any) -> Any:
    """A Gemma 3 image-text config: `text` (make_toy's settings and the case's overrides)
    is its text model's, beside a one-layer vision tower."""
    ids = {k: text[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in text}
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=4, image_size=28, patch_size=14)  # fmt: skip
    return transformers.Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=1, image_token_index=3,
        boi_token_index=1, eoi_token_index=2, **ids,
    )  # fmt: skip


def llama4_multimodal(**text: Any) -> Any:
    """A Llama 4 image-text config: `text` is its text model's, beside a one-layer vision
    tower and its projector."""
    ids = {k: text[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in text}
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                  intermediate_size=64, vision_output_dim=32, image_size=28, patch_size=14,
                  projector_input_dim=32, projector_output_dim=32)  # fmt: skip
    return transformers.Llama4Config(
        text_config=text, vision_config=vision, image_token_index=3, boi_token_index=1,
        eoi_token_index=2, **ids,
    )  # fmt: skip


def build(make_toy: Any, arch_id: str, **extra: Any) -> Any:
    """The bridge of case `arch_id`'s checkpoint, saved and loaded by conftest's `make_toy`
    (`extra`: further config overrides, e.g. ``attn_pdrop=0.0``)."""
    arch = BY_ID[arch_id]
    return make_toy(
        globals()[arch.config] if arch.config in globals() else getattr(transformers, arch.config),
        getattr(transformers, arch.model),
        **{**COMMON, **arch.overrides, **extra},
    )
