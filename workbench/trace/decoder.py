"""A lean KV-cached decoder for Llama-family models: sampling without `generate`'s overhead.

`LeanDecoder` samples from a plain Hugging Face Llama, Mistral, Qwen2 or Qwen3 causal LM by
reading its weights (at the start of every call, so a model being trained samples from its
current weights) and running its forward as a few dozen tensor operations per token: a
static KV cache, one left-padded batch for prompts of any lengths, the query/key/value and
gate/up projections each as one product (their weights concatenated once per call), the
queries and keys rotated together, the padding mask built once per call, each distinct
prompt prefilled once (its cache then copied to the rows that share it), finished rows
dropped from the forward once a quarter of the batch has finished, and no per-token Python
beyond the layer loop. On the tiny models a decode step is several times cheaper than
``model.generate``'s, which dominates RL rollouts on small models.

It follows Hugging Face's own computation step by step (eager attention, RMSNorm in float32,
RoPE from the model's ``inv_freq``, logits in float32, `TemperatureLogitsWarper` and
`TopPLogitsWarper`, ``torch.multinomial`` on the softmax, pad after EOS), so on a batch of
prompts of one length it draws the same tokens as ``generate`` from the same RNG state, up
to float rounding (tests check both on tiny random checkpoints of each architecture).

`lean_decoder` says whether a model qualifies and why not: other architectures, RoPE
scaling, biases or activations it does not implement, or a generation config that asks for
more than temperature and top-p (repetition penalties, bad words, ...) all fall back to
``generate`` in `sample_completions`, never to a different distribution.

Memory: one copy of the attention and MLP input weights per call (concatenated), and a
cache of ``2 * layers * batch * kv_heads * (prompt + max_new_tokens) * head_dim`` values in
the model's dtype, the same as a static cache in ``generate``, reserved at the start: a
batch whose cache does not fit in the free memory is refused then, with its size
(`workbench._memory.check_fits`), rather than killing the process part-way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from ..models import model_device

__all__ = ["LeanDecoder", "lean_decoder", "unsupported_reason"]

#: The model classes whose forward `LeanDecoder` implements (each checked against
#: Hugging Face's own forward in tests/core/test_decoder.py).
SUPPORTED = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}

#: Generation-config fields that do not change the sampled distribution (the sampling
#: settings themselves are passed explicitly).
_HARMLESS_GENERATION = {
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "max_length",
    "max_new_tokens",
    "use_cache",
    "cache_implementation",
    "transformers_version",
    "_from_model_config",
    # `sample_completions` sets these for ``generate`` too (one sequence per row as ids,
    # no beams, no extra outputs), so both decoders draw alike whatever the config says.
    "return_dict_in_generate",
    "num_return_sequences",
    "num_beams",
    "num_beam_groups",
    "length_penalty",
    "early_stopping",
    "output_scores",
    "output_logits",
    "output_attentions",
    "output_hidden_states",
}

#: Values of generation-config fields that leave the distribution as it is (a config that
#: writes ``repetition_penalty: 1.0`` out changes nothing).
_NEUTRAL_GENERATION = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "typical_p": 1.0,
    "diversity_penalty": 0.0,
}


#: RoPE types whose frequencies are fixed at load time (the rotary module's ``inv_freq``
#: and ``attention_scaling``), so one table serves every step; "dynamic" and "longrope"
#: recompute them from the sequence length.
_STATIC_ROPE = {"default", "linear", "llama3", "yarn"}


def _global_hooks() -> bool:
    from torch.nn.modules import module

    return bool(module._global_forward_hooks or module._global_forward_pre_hooks)


def _changed_generation(gen: Any) -> list[str]:
    """The generation-config fields set away from their defaults, harmless ones aside."""
    from transformers import GenerationConfig

    default = GenerationConfig().to_dict()
    return sorted(
        k
        for k, v in gen.to_dict().items()
        if k not in _HARMLESS_GENERATION
        and k in default
        and default[k] != v
        and (default[k] or v)  # None, False and 0 all mean "off"
        and _NEUTRAL_GENERATION.get(k, object()) != v
    )


def unsupported_reason(hf: Any) -> str | None:
    """Why `LeanDecoder` cannot sample for the Hugging Face model `hf` (None: it can)."""
    name = type(hf).__name__
    if name not in SUPPORTED:
        return f"{name} is not one of the lean decoder's architectures ({sorted(SUPPORTED)})"
    cfg = hf.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") not in _STATIC_ROPE:
        return f"RoPE type {rope.get('rope_type')!r} (its frequencies change with the length)"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r} (only silu is implemented)"
    if getattr(cfg, "mlp_bias", False):
        return "MLP biases (not implemented)"
    if getattr(cfg, "_attn_implementation", "eager") not in ("eager", "sdpa"):
        return f"attention implementation {cfg._attn_implementation!r}"
    hooked = [n for n, m in hf.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    if hooked or _global_hooks():
        return f"forward hooks are attached ({hooked[:3] or 'global'}), which it would skip"
    gen = getattr(hf, "generation_config", None)
    extra = [] if gen is None else _changed_generation(gen)
    if extra:
        return f"its generation config sets {extra}, which change sampling beyond temperature/top-p"
    return None


def lean_decoder(hf: Any) -> LeanDecoder | None:
    """A `LeanDecoder` for `hf`, or None when `unsupported_reason(hf)` says it cannot."""
    return None if unsupported_reason(hf) else LeanDecoder(hf)


def cut_at_eos(seq: list[int], eos: set[int] | Sequence[int]) -> list[int]:
    """`seq` up to and including its first EOS (all of it when there is none)."""
    cut = next((j + 1 for j, tok in enumerate(seq) if tok in eos), len(seq))
    return seq[:cut]


def _rms(x: torch.Tensor, norm: Any) -> torch.Tensor:
    # As LlamaRMSNorm: normalise in float32, scale in the input dtype.
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def layer_windows(cfg: Any, n_layers: int) -> list[int | None]:
    """The keys each layer's attention reads, as a config states them: ``sliding_window``
    on the layers its ``layer_types`` call ``"sliding_attention"``, and on every layer of a
    config with a window and no layer types (Mistral); None (the whole sequence) elsewhere.
    Layers of other kinds (linear attention, state-space) get None too: check their types
    apart."""
    window = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if not types:
        return [window] * n_layers
    return [window if t == "sliding_attention" else None for t in types]


def check_cache_fits(need: int, device: Any, rows: int, total: int, max_new_tokens: int) -> None:
    """Refuse sampling `rows` rows of up to `total` tokens whose KV cache needs `need`
    bytes on `device` when they are not free (`workbench._memory.check_fits`), naming
    the two ways to need less."""
    from .._memory import check_fits

    check_fits(
        need,
        device,
        f"sampling {rows} row(s) of up to {total:,} tokens (its KV cache)",
        f"sample fewer rows at once (batch_limit in sample_completions, a smaller batch "
        f"in RL) or fewer new tokens (max_new_tokens={max_new_tokens})",
    )


class LeanDecoder:
    """Batched KV-cached sampling for one Hugging Face Llama-family model (see the module).

    Args:
        hf: a plain ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM`` or
            ``Qwen3ForCausalLM`` (`unsupported_reason` must be None).
    """

    def __init__(self, hf: Any) -> None:
        reason = unsupported_reason(hf)
        if reason is not None:
            raise ValueError(f"the lean decoder cannot sample for this model: {reason}")
        self.hf = hf
        cfg = hf.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.windows = layer_windows(cfg, len(hf.model.layers))

    def _weights(self) -> list[tuple[Tensor, Tensor | None, Tensor]]:
        """Per layer: the query/key/value weight and bias, and the gate/up weight, each
        concatenated (read now, so a model in training gives its current weights)."""
        out = []
        for layer in self.hf.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            projs = (attn.q_proj, attn.k_proj, attn.v_proj)
            bias = None
            if any(p.bias is not None for p in projs):
                bias = torch.cat(
                    [
                        p.bias if p.bias is not None else p.weight.new_zeros(p.weight.shape[0])
                        for p in projs
                    ]
                )
            qkv = torch.cat([p.weight for p in projs])
            out.append((qkv, bias, torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])))
        return out

    def _forward(
        self,
        ids: Int[Tensor, "batch pos"],
        cos: Float[Tensor, "batch pos d_head"],
        sin: Float[Tensor, "batch pos d_head"],
        masks: list[Float[Tensor, "batch 1 pos key_pos"]],
        caches: list[tuple[Tensor, Tensor]],
        start: int,
        weights: list[tuple[Tensor, Tensor | None, Tensor]],
    ) -> Float[Tensor, "batch d_vocab"]:
        """Logits of each row's last slot after writing slots ``start:start+pos`` of `ids`.

        `cos`/`sin` cover those slots; `masks` holds each layer's additive mask (0 where a
        query slot may read a key slot, the dtype's minimum elsewhere) over key slots
        ``0:start+pos`` (a query dimension of 1 broadcasts); `caches` holds each layer's
        ``[batch, kv_head, slot, d_head]`` keys and values, written in place; `weights`
        comes from `_weights`."""
        hf = self.hf
        m = hf.model
        b, t = ids.shape
        x = m.embed_tokens(ids)
        cos, sin = cos[:, None], sin[:, None]
        end = start + t
        nh, nkv = self.n_heads, self.n_kv
        g = nh // nkv
        layers = zip(m.layers, caches, masks, self.windows, weights, strict=True)
        for layer, (kc, vc), add, window, (w_qkv, b_qkv, w_gu) in layers:
            attn = layer.self_attn
            h = _rms(x, layer.input_layernorm)
            # [b, head, t, d_head]: the query heads, then the key heads, then the values.
            qkv = F.linear(h, w_qkv, b_qkv).view(b, t, nh + 2 * nkv, self.d_head).transpose(1, 2)
            qk = qkv[:, : nh + nkv]
            if hasattr(attn, "q_norm"):
                qk = torch.cat([_rms(qk[:, :nh], attn.q_norm), _rms(qk[:, nh:], attn.k_norm)], 1)
            qk = _rotate(qk, cos, sin)
            q = qk[:, :nh]
            kc[:, :, start:end] = qk[:, nh:]
            vc[:, :, start:end] = qkv[:, nh + nkv :]
            # Grouped heads without repeat_kv's copy: head h reads kv head h // group, so
            # the queries of one kv head stack as (B, kv, group*T, d_head); the cache views
            # fold (B, kv) into one batch dimension without a copy.
            # A sliding layer reads only the slots its window can reach (as Hugging Face's
            # sliding cache keeps only those).
            lo = 0 if window is None else max(0, start - window + 1)
            qg = q.reshape(b, self.n_kv, g * t, self.d_head)
            w = torch.matmul(qg, kc[:, :, lo:end].transpose(-1, -2)) * attn.scaling
            w = w.view(b, self.n_kv, g, t, end - lo) + add[:, :, None, :, lo:]
            w = w.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
            w = w.view(b, self.n_kv, g * t, end - lo)
            o = torch.matmul(w, vc[:, :, lo:end]).view(b, nh, t, self.d_head)
            x = x + attn.o_proj(o.transpose(1, 2).reshape(b, t, -1))
            gate, up = F.linear(_rms(x, layer.post_attention_layernorm), w_gu).chunk(2, dim=-1)
            x = x + layer.mlp.down_proj(F.silu(gate) * up)
        last = _rms(x[:, -1], m.norm)
        return hf.lm_head(last).float()

    def _masks(self, valid: torch.Tensor, start: int, end: int, dtype: torch.dtype) -> list:
        """Per layer, the additive mask (B, 1, end-start, end) of query slots start:end."""
        q = torch.arange(start, end, device=valid.device)[:, None]
        kv = torch.arange(end, device=valid.device)[None, :]
        causal = (kv <= q)[None] & valid[:, None, :end]
        low = torch.finfo(dtype).min
        out, memo = [], {}
        for window in self.windows:
            if window not in memo:
                allowed = causal if window is None else causal & (kv > q - window)[None]
                memo[window] = torch.zeros(allowed.shape, dtype=dtype, device=valid.device)
                memo[window].masked_fill_(~allowed, low)
                memo[window] = memo[window][:, None]
            out.append(memo[window])
        return out

    def _check_memory(self, rows: int, total: int, max_new_tokens: int) -> None:
        """Refuse a batch whose cache cannot fit, before any of it is allocated: ``2 x
        layers x rows x kv_heads x total x d_head`` values in the model's dtype, and the
        rotary ``cos``/``sin`` of ``rows x total x d_head`` each."""
        weight = self.hf.model.embed_tokens.weight
        cache = 2 * len(self.hf.model.layers) * rows * self.n_kv * total * self.d_head
        need = (cache + 2 * rows * total * self.d_head) * weight.element_size()
        check_cache_fits(need, weight.device, rows, total, max_new_tokens)

    def _start(self, prompts: Sequence[Sequence[int]], total: int, pad: int) -> tuple:
        """The left-padded ids (B, width), slot validity (B, total), cos/sin (B, total,
        d_head) and an empty cache per layer for `total` slots."""
        hf = self.hf
        device = model_device(hf)
        dtype = hf.model.embed_tokens.weight.dtype
        lengths = torch.tensor([len(p) for p in prompts], device=device)
        width = int(lengths.max())
        pads = width - lengths
        ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=device)
        for r, p in enumerate(prompts):
            ids[r, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
        slots = torch.arange(max(total, width), device=device)
        valid = slots[None, :] >= pads[:, None]
        positions = (slots[None, :] - pads[:, None]).clamp(min=0)
        # The model's own rotary module, once for every slot: (B, slots, d_head) each.
        cos, sin = hf.model.rotary_emb(hf.model.embed_tokens.weight[:1], positions)
        shape = (len(prompts), self.n_kv, max(total, width), self.d_head)
        caches = [
            tuple(torch.zeros(shape, dtype=dtype, device=device) for _ in "kv")
            for _ in hf.model.layers
        ]
        return ids, width, valid, cos, sin, caches

    @torch.no_grad()
    def next_logits(
        self, prompts: Sequence[Sequence[int]], pad: int = 0
    ) -> Float[Tensor, "batch d_vocab"]:
        """float32 logits ``[batch, d_vocab]`` of the token after each prompt, all prompts
        in one left-padded forward (what the first sampling step reads)."""
        ids, width, valid, cos, sin, caches = self._start(prompts, 0, pad)
        masks = self._masks(valid, 0, width, cos.dtype)
        was_training = self.hf.training
        self.hf.eval()
        try:
            return self._forward(ids, cos, sin, masks, caches, 0, self._weights())
        finally:
            self.hf.train(was_training)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        eos: Sequence[int],
        pad: int,
        greedy: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        on_token: Callable[[], None] | None = None,
    ) -> list[list[int]]:
        """Complete every prompt (one row each), sampling from the global torch RNG.

        Args:
            prompts: token ids, of any lengths (left-padded into one batch; padded slots
                are masked out of attention and do not shift positions).
            max_new_tokens: length cap.
            eos: end-of-sequence ids; a row that emits one is finished and gets `pad`.
            pad: the id written after a row has finished (and into padded prompt slots).
            greedy: argmax instead of sampling.
            temperature, top_p: as `TemperatureLogitsWarper` and `TopPLogitsWarper`.
            on_token: called after each decoding step (one new token in every row), e.g.
                to advance a progress bar.

        Returns:
            The new tokens of each row, up to and including its first EOS.
        """
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        hf = self.hf
        total = max(len(p) for p in prompts) + max_new_tokens
        self._check_memory(len(prompts), total, max_new_tokens)
        # Each distinct prompt is prefilled once (GRPO samples G completions of every
        # prompt); its cache, slots and first logits are then copied to each of its rows.
        keys = [tuple(int(x) for x in p) for p in prompts]
        distinct = list(dict.fromkeys(keys))
        ids, width, valid, cos, sin, caches = self._start(distinct, total, pad)
        where = {k: i for i, k in enumerate(distinct)}
        copy = torch.tensor([where[k] for k in keys], device=ids.device)
        device, dtype, b = ids.device, cos.dtype, len(prompts)
        warpers = []
        if not greedy:
            if float(temperature) != 1.0:
                warpers.append(TemperatureLogitsWarper(float(temperature)))
            if float(top_p) < 1.0:
                warpers.append(TopPLogitsWarper(float(top_p)))
        eos_t = torch.tensor(list(eos), dtype=torch.long, device=device)
        unfinished = torch.ones(b, dtype=torch.long, device=device)
        out = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=device)
        weights = self._weights()
        # One query slot at a time after the prompts: its mask row is the padding mask (every
        # earlier slot is causal, and a sliding layer reads only its window's slots).
        pad_mask = torch.zeros((b, valid.shape[1]), dtype=dtype, device=device)
        pad_mask = pad_mask.masked_fill_(~valid[copy], torch.finfo(dtype).min)[:, None, None]
        was_training = hf.training
        hf.eval()
        try:
            start, step_ids = 0, ids
            rows = torch.arange(b, device=device)  # the rows the forward computes
            for t in range(max_new_tokens):
                end = width + t
                if t == 0:
                    masks = self._masks(valid, start, end, dtype)
                else:
                    masks = [pad_mask[..., :end]] * len(caches)
                logits = self._forward(
                    step_ids, cos[:, start:end], sin[:, start:end], masks, caches, start, weights
                )
                if t == 0 and len(distinct) < b:
                    logits, cos, sin = logits[copy], cos[copy], sin[copy]
                    caches = [(k[copy], v[copy]) for k, v in caches]
                if len(rows) < b:
                    # Finished rows are no longer computed. They still draw (from uniform
                    # logits; their token becomes pad): the draws of multinomial's one-sample
                    # path do not depend on the probabilities, so every other row keeps
                    # the draws it would get from `generate`.
                    full = logits.new_zeros(b, logits.shape[-1])
                    full[rows] = logits
                    logits = full
                for warp in warpers:
                    logits = warp(None, logits)
                if greedy:
                    nxt = logits.argmax(dim=-1)
                else:
                    nxt = torch.multinomial(logits.softmax(dim=-1), num_samples=1).squeeze(1)
                nxt = nxt * unfinished + pad * (1 - unfinished)
                out[:, t] = nxt
                if on_token is not None:
                    on_token()
                if len(eos_t):
                    unfinished = unfinished & ~torch.isin(nxt, eos_t)
                if not bool(unfinished.any()):
                    out = out[:, : t + 1]
                    break
                going = unfinished[rows].bool()
                if 4 * int(going.sum()) <= 3 * len(rows):  # a quarter has finished: compact
                    caches = [(k[going], v[going]) for k, v in caches]
                    cos, sin, pad_mask, rows = cos[going], sin[going], pad_mask[going], rows[going]
                start, step_ids = end, nxt[rows][:, None]
        finally:
            hf.train(was_training)
        eos_set = {int(e) for e in eos}
        return [cut_at_eos(seq, eos_set) for seq in out.tolist()]
