"""The architecture matrix for interventions and decoding: the workbench against plain
Hugging Face eager forwards.

For each architecture of the shared matrix (tests/toy_architectures.py's ``ARCHS``: Llama 3
RoPE, Qwen2 full / all-sliding / mixed, Qwen3 QK-norm, Mistral sliding window, Gemma 2 with and without soft-capping, Gemma 3, Phi-3's fused
projections, GPT-2 and GPT-NeoX's absolute and partial rotary positions, OLMo 2), a tiny
random checkpoint is saved by conftest's ``make_toy`` and loaded with ``wb.load_model``.
The reference is *not* the bridge: the same folder is loaded again with
``AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")``, and the
intervention is applied inside Hugging Face's own computation:

- `Knockout` is documented as a key knockout (Geva et al.): every strictly later query of
  the chosen heads and layers gets score ``-inf`` on the knocked-out keys, after the
  causal mask, before the softmax. The reference does exactly that in Hugging Face's eager
  attention function (the modeling module's ``eager_attention_forward``, patched for the
  call), by adding ``-inf`` to its additive mask for those heads: the mask is added after
  soft-capping and after the sliding-window mask, as the workbench's hook sees the scores.
- `ResidAblation` (zero mode) replaces ``hook_resid_pre`` of layer ``l`` at the chosen
  positions by zero: the reference zeroes those rows of the hidden states entering Hugging
  Face's decoder layer ``l`` (a forward pre-hook).
- ``wb.generate`` at temperature 0 and greedy `sample_completions` on prompts of two
  lengths (the lean decoder's left padding, on the Llama-family models) equal the argmax
  of full eager forwards, token by token, and Hugging Face's own greedy ``generate``.

Logits agree to 1e-4 (float32); each intervention must move the logits by far more than
that, so a knockout or ablation that did nothing would fail. Sequences are 60 tokens,
longer than the sliding window (16), so every window is crossed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
import transformers
from toy_architectures import ARCH_IDS, build  # tests/toy_architectures.py

import workbench as wb
from workbench.ablation import Knockout, ResidAblation, greedy_continue, logits_of
from workbench.models import sampler
from workbench.trace import sample_completions

pytestmark = pytest.mark.slow


TOL = dict(rtol=1e-4, atol=1e-4)
#: An intervention must move some logit by more than this (far above `TOL`).
MOVES = 1e-2


@pytest.fixture(scope="module")
def toys(make_toy):
    """``toys(arch_id)``: ``(bridge, Hugging Face eager model of the same folder)``, built
    once per module."""
    cache: dict[str, Any] = {}

    def get(arch_id: str):
        if arch_id not in cache:
            bridge = build(make_toy, arch_id)
            folder = sampler(bridge).config._name_or_path
            hf = transformers.AutoModelForCausalLM.from_pretrained(
                folder, attn_implementation="eager", dtype=torch.float32
            ).eval()
            cache[arch_id] = (bridge, hf)
        return cache[arch_id]

    return get


@pytest.fixture(scope="module")
def ids():
    """60 seeded random token ids, bos first."""
    from workbench.tiny.tokenizer import build_tokenizer

    tok = build_tokenizer()
    out = torch.randint(4, len(tok), (60,), generator=torch.Generator().manual_seed(0))
    out[0] = tok.bos_token_id
    return out


# --- Hugging Face references ---------------------------------------------------------------


@torch.no_grad()
def hf_logits(hf: Any, ids: torch.Tensor) -> torch.Tensor:
    return hf(ids[None], use_cache=False).logits[0]


def knockout_reference(
    hf: Any, ids: torch.Tensor, layers: list[int], heads: list[int] | None, keys: list[int]
) -> torch.Tensor:
    """Logits of `hf` with keys `keys` knocked out of every strictly later query, in
    `heads` (None: all) of `layers`, inside Hugging Face's own eager attention: ``-inf`` is
    added to the additive mask (which eager attention adds after soft-capping)."""
    module = sys.modules[type(hf).__module__]
    real = module.eager_attention_forward

    def patched(attn, query, key, value, attention_mask, *args, **kwargs):
        if attn.layer_idx in layers:
            b, n_heads, n_q, _ = query.shape
            n_k = key.shape[-2]
            mask = torch.zeros(1, 1, n_q, n_k) if attention_mask is None else attention_mask
            mask = mask[..., :n_k].expand(b, n_heads, n_q, n_k).clone()
            q = torch.arange(n_k - n_q, n_k)
            k = torch.tensor(keys)
            block = torch.zeros(n_q, n_k, dtype=torch.bool)
            block[:, k] = q[:, None] > k[None, :]
            chosen = list(range(n_heads)) if heads is None else heads
            mask[:, chosen] = mask[:, chosen].masked_fill(block, float("-inf"))
            attention_mask = mask
        return real(attn, query, key, value, attention_mask, *args, **kwargs)

    module.eager_attention_forward = patched
    try:
        return hf_logits(hf, ids)
    finally:
        module.eager_attention_forward = real


def decoder_layers(hf: Any) -> torch.nn.ModuleList:
    """The decoder layers of a Hugging Face causal LM (``model.layers`` or GPT-2's ``h``)."""
    base = hf.base_model
    return base.layers if hasattr(base, "layers") else base.h


def resid_zero_reference(
    hf: Any, ids: torch.Tensor, layer: int, positions: list[int]
) -> torch.Tensor:
    """Logits of `hf` with the hidden states entering decoder layer `layer` zeroed at
    `positions` (a forward pre-hook, whether they are passed by position or by name)."""

    def zero(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, positions] = 0.0
        return x

    def pre(_module, args, kwargs):
        if args:
            return (zero(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": zero(kwargs["hidden_states"])}

    handle = decoder_layers(hf)[layer].register_forward_pre_hook(pre, with_kwargs=True)
    try:
        return hf_logits(hf, ids)
    finally:
        handle.remove()


def greedy_reference(
    hf: Any,
    prompt: list[int],
    n: int,
    logits_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[int]:
    """`n` greedy tokens after `prompt`: the argmax of a full forward per token."""
    seq = torch.tensor(prompt)
    for _ in range(n):
        logits = hf_logits(hf, seq) if logits_fn is None else logits_fn(seq)
        seq = torch.cat([seq, logits[-1].argmax()[None]])
    return seq[len(prompt) :].tolist()


def assert_same_logits(got: torch.Tensor, want: torch.Tensor, clean: torch.Tensor) -> None:
    torch.testing.assert_close(got, want.float(), **TOL)
    moved = float((want - clean).abs().max())
    assert moved > MOVES, f"the intervention moved the reference logits by only {moved}"


# --- the tests -----------------------------------------------------------------------------

KEYS = [5, 30]  # before and after the sliding window's reach of the last rows


@pytest.mark.parametrize("arch_id", ARCH_IDS)
def test_knockout_matches_hf_on_every_architecture(toys, ids, arch_id):
    """`Knockout` of keys 5 and 30 in one head of one layer (each layer), and in every head
    of every layer, gives the logits of Hugging Face's eager forward with those scores set
    to ``-inf`` (soft-capping, sliding windows, QK-norm and grouped heads included); the
    clean logits (`logits_of` without interventions) equal Hugging Face's too."""
    bridge, hf = toys(arch_id)
    clean = hf_logits(hf, ids)
    torch.testing.assert_close(logits_of(bridge, ids), clean, **TOL)
    cases = [([0], [1]), ([1], [3]), ([0, 1], None)]
    for layers, heads in cases:
        got = logits_of(bridge, ids, [Knockout(KEYS, layers=layers, heads=heads)])
        want = knockout_reference(hf, ids, layers, heads, KEYS)
        assert_same_logits(got, want, clean)


@pytest.mark.parametrize("arch_id", ARCH_IDS)
def test_resid_zero_ablation_matches_hf_on_every_architecture(toys, ids, arch_id):
    """`ResidAblation` (zero mode) at positions 5, 30 and 31 in layer 0 and in layer 1
    gives the logits of Hugging Face's forward with the hidden states entering that
    decoder layer zeroed there (Gemma's embedding scale, GPT-2's position embeddings and
    every block before the layer included)."""
    bridge, hf = toys(arch_id)
    clean = hf_logits(hf, ids)
    positions = [5, 30, 31]
    for layer in (0, 1):
        got = logits_of(bridge, ids, [ResidAblation(positions, layers=layer, mode="zero")])
        assert_same_logits(got, resid_zero_reference(hf, ids, layer, positions), clean)


@pytest.mark.parametrize("arch_id", ARCH_IDS)
def test_greedy_generate_matches_hf_on_every_architecture(toys, arch_id):
    """``wb.generate(temperature=0)`` gives the argmax of full eager forwards and Hugging
    Face's own greedy ``generate``, on a prompt longer than the sliding window; greedy
    `sample_completions` of two prompts of different lengths in one call (the lean
    decoder left-pads them into one batch on Llama-family models) gives each prompt's own
    argmax continuation."""
    bridge, hf = toys(arch_id)
    n = 12
    trace = wb.generate(
        bridge, "What is 12 + 35? Think step by step.", max_new_tokens=n, temperature=0,
        chat=False,
    )  # fmt: skip
    prompt = trace.ids[: trace.prompt_len].tolist()
    got = trace.ids[trace.prompt_len :].tolist()
    want = greedy_reference(hf, prompt, n)
    assert got == want[: len(got)]
    eos = set(wb.trace.eos_token_ids(bridge.tokenizer, hf))
    assert len(got) == n or got[-1] in eos, "stops early only at an end-of-sequence token"
    own = hf.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0,
    )[0, len(prompt) :].tolist()  # fmt: skip
    assert own == want
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.randint(4, 60, (m,), generator=gen).tolist() for m in (40, 23)]
    outs = sample_completions(bridge, prompts, greedy=True, max_new_tokens=8)
    for p, out in zip(prompts, outs, strict=True):
        assert out == greedy_reference(hf, p, 8)[: len(out)]


@pytest.mark.parametrize("arch_id", ["mistral-sliding", "gemma2-softcap", "gpt2"])
def test_greedy_continuation_under_a_knockout_matches_hf(toys, ids, arch_id):
    """`greedy_continue` under a knockout (one full hooked pass per token, as `measure`
    scores answers) equals greedy decoding of Hugging Face's forward with the same
    knockout."""
    bridge, hf = toys(arch_id)
    prefix = ids[:40]
    ko = Knockout(KEYS, layers="all", heads=[0, 2])
    got = greedy_continue(bridge, prefix, interventions=[ko], max_new_tokens=6, stop_at_eos=False)
    want = greedy_reference(
        hf, prefix.tolist(), 6, lambda seq: knockout_reference(hf, seq, [0, 1], [0, 2], KEYS)
    )
    assert got.tolist() == want
