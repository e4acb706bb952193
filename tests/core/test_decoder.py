"""The lean decoder samples what Hugging Face's ``generate`` samples, on every architecture
it accepts, and declines the rest by name.

Each case is a tiny random checkpoint (`make_toy`: 2 layers, 4 query heads sharing 2
key/value heads) of an architecture the decoder implements: Llama with the default and the
linear (position-interpolation) RoPE, Qwen2 (q/k/v biases) with a full then a sliding
layer, Qwen3 (q/k norms), and Mistral with every layer sliding. Prompts of unequal lengths,
longer than the 16-token window, share one left-padded batch.
"""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.models import sampler
from workbench.trace import sample_completions
from workbench.trace.decoder import LeanDecoder, unsupported_reason

WINDOW = 16
# Position interpolation: a RoPE whose frequencies differ from the default's but are fixed.
LINEAR_ROPE = dict(rope_type="linear", rope_theta=10000.0, factor=4.0)
CASES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {"attn_implementation": "eager"}),
    "llama-linear-rope": ("LlamaConfig", "LlamaForCausalLM", {"rope_parameters": LINEAR_ROPE}),
    "qwen2-full-then-sliding": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    ),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8}),
    "mistral-sliding": ("MistralConfig", "MistralForCausalLM", {"sliding_window": WINDOW}),
}


def _toy(make_toy, config: str, model: str, overrides: dict):
    import transformers

    bridge = make_toy(getattr(transformers, config), getattr(transformers, model), **overrides)
    return bridge, sampler(bridge)


@pytest.fixture(scope="module", params=sorted(CASES))
def toy(request, make_toy):
    return _toy(make_toy, *CASES[request.param])


def prompts(hf, lengths=(9, 30, 22), seed=0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, hf.config.vocab_size, (n,), generator=g).tolist() for n in lengths]


def test_every_case_is_accepted_and_has_its_window(toy):
    _, hf = toy
    assert unsupported_reason(hf) is None
    windows = LeanDecoder(hf).windows
    name = type(hf).__name__
    expected = {
        "MistralForCausalLM": [WINDOW, WINDOW],
        "Qwen2ForCausalLM": [None, WINDOW],
    }.get(name, [None, None])
    assert windows == expected


def test_next_token_logits_of_a_padded_batch_match_each_prompts_own_forward(toy):
    _, hf = toy
    batch = prompts(hf)
    lean = LeanDecoder(hf).next_logits(batch)
    for row, ids in zip(lean, batch, strict=True):
        with torch.no_grad():
            ref = hf(torch.tensor([ids])).logits[0, -1].float()
        torch.testing.assert_close(row, ref, atol=1e-5, rtol=1e-5)


def test_greedy_completions_in_one_padded_batch_equal_generate_prompt_by_prompt(toy):
    bridge, hf = toy
    batch = prompts(hf, seed=1)
    lean = sample_completions(bridge, batch, max_new_tokens=40, greedy=True, decoder="lean")
    for ids, got in zip(batch, lean, strict=True):
        ref = sample_completions(bridge, [ids], max_new_tokens=40, greedy=True, decoder="hf")
        assert got == ref[0]
    assert max(len(c) for c in lean) == 40, "the cases decode past the window"


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9)])
def test_sampled_completions_equal_generate_from_the_same_seed(toy, temperature, top_p):
    """One prompt length (generate's own batch): the same tokens from the same RNG state."""
    bridge, hf = toy
    batch = prompts(hf, lengths=(20, 20, 20), seed=2)
    out = {}
    for decoder in ("lean", "hf"):
        torch.manual_seed(5)
        out[decoder] = sample_completions(
            bridge,
            batch,
            num_generations=2,
            max_new_tokens=30,
            temperature=temperature,
            top_p=top_p,
            decoder=decoder,
        )
    assert out["lean"] == out["hf"]
    assert len({tuple(c) for c in out["lean"]}) > 1, "the samples differ between rows"


def test_rows_that_finish_early_leave_the_other_rows_draws_unchanged(toy):
    """With many end tokens the rows stop at different steps, so the lean decoder drops the
    finished ones from its forward; every row must still draw what ``generate`` draws."""
    _, hf = toy
    rows = [p for p in prompts(hf, lengths=(20, 20, 20, 20), seed=4) for _ in range(3)]
    eos = list(range(3, 3 + hf.config.vocab_size // 6))  # about one token in six ends a row
    pad = 0
    torch.manual_seed(5)
    lean = LeanDecoder(hf).generate(rows, max_new_tokens=30, eos=eos, pad=pad)
    torch.manual_seed(5)
    with torch.no_grad():
        ids = torch.tensor(rows)
        gen = hf.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=30, do_sample=True,
            top_k=0, eos_token_id=eos, pad_token_id=pad,
        )[:, 20:]  # fmt: skip
    want = [wb.trace.decoder.cut_at_eos(seq, set(eos)) for seq in gen.tolist()]
    assert lean == want
    lengths = sorted(len(c) for c in lean)
    assert lengths[len(lengths) // 4] < lengths[-1], "a quarter must finish before the last"


def test_other_architectures_fall_back_to_generate_and_lean_says_why(make_toy):
    bridge, hf = _toy(make_toy, "Phi3Config", "Phi3ForCausalLM", {})
    assert "Phi3ForCausalLM is not one of the lean decoder's architectures" in (
        unsupported_reason(hf) or ""
    )
    batch = prompts(hf)
    with pytest.raises(wb.WorkbenchError, match=r"lean decoder cannot sample.*Phi3"):
        sample_completions(bridge, batch, max_new_tokens=5, decoder="lean")
    torch.manual_seed(0)
    auto = sample_completions(bridge, batch, max_new_tokens=8)
    torch.manual_seed(0)
    assert auto == sample_completions(bridge, batch, max_new_tokens=8, decoder="hf")


def test_a_hooked_model_or_a_penalising_generation_config_samples_with_generate(toy_llama):
    hf = sampler(toy_llama)
    calls = []
    handle = hf.model.layers[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        assert "forward hooks are attached" in unsupported_reason(hf)
        sample_completions(toy_llama, prompts(hf), max_new_tokens=4, greedy=True)
        assert calls, "generate ran the model, hooks and all"
    finally:
        handle.remove()
    assert unsupported_reason(hf) is None
    before = hf.generation_config.repetition_penalty
    hf.generation_config.repetition_penalty = 1.3
    try:
        assert "repetition_penalty" in unsupported_reason(hf)
    finally:
        hf.generation_config.repetition_penalty = before
    assert unsupported_reason(hf) is None


def test_an_unknown_decoder_is_refused(toy_llama):
    with pytest.raises(wb.WorkbenchError, match='use decoder="auto", "lean" or "hf"'):
        sample_completions(toy_llama, [[3, 4]], max_new_tokens=2, decoder="fast")


@pytest.mark.parametrize(
    "temperature,top_p", [(1.0, 1.0), (2.0, 1.0), (0.5, 1.0), (1.0, 0.7), (2.0, 0.8)]
)
def test_the_sampled_distribution_is_the_tempered_nucleus_of_hand_made_logits(
    toy_llama, temperature, top_p
):
    """Closed form, independent of Hugging Face's warpers: next-token probabilities
    0.5/0.3/0.15/0.05 become softmax(logits / T), cut to the smallest head of the sorted
    distribution whose mass reaches top_p, renormalised (4000 draws, within 4 standard
    errors; tokens outside the four are never drawn)."""
    hf = sampler(toy_llama)
    lean = LeanDecoder(hf)
    vocab = hf.config.vocab_size
    base = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    logits = torch.full((vocab,), -1e9)
    logits[10:14] = base
    lean._forward = lambda ids, *args, **kwargs: logits.expand(ids.shape[0], vocab).clone()
    n = 4000
    torch.manual_seed(0)
    out = lean.generate(
        [[1, 5]] * n, max_new_tokens=1, eos=[2], pad=0, temperature=temperature, top_p=top_p
    )
    counts = torch.bincount(torch.tensor([o[0] for o in out]), minlength=vocab).float()
    assert counts[10:14].sum() == n
    p = torch.softmax(base / temperature, -1)  # already in descending order
    keep = int((p.cumsum(0) < top_p - 1e-6).sum()) + 1
    want = torch.zeros(4)
    want[:keep] = p[:keep] / p[:keep].sum()
    se = (want * (1 - want) / n).sqrt().clamp(min=1e-3)
    assert ((counts[10:14] / n - want).abs() <= 4 * se).all(), (counts[10:14] / n, want)


@pytest.mark.parametrize(
    ("config", "model", "overrides", "decoder"),
    [
        ("LlamaConfig", "LlamaForCausalLM", {}, "lean"),
        # the model's own generate, for every architecture the lean decoder does not take
        ("GPT2Config", "GPT2LMHeadModel", {"n_positions": 100_100, "num_key_value_heads": 4}, "hf"),
        # layers alternate sliding (window 16, a bounded cache) and full attention
        ("Gemma2Config", "Gemma2ForCausalLM", {"sliding_window": 16}, "hf"),
    ],
)
def test_a_batch_whose_kv_cache_cannot_fit_is_refused_before_it_is_allocated(
    make_toy, config, model, overrides, decoder
):
    """4,096 rows of 100,003 tokens: at least 52 GB of cache on the Llama and GPT-2 toys,
    and 1.7 TB on Gemma 2's full layers alone. The lean decoder allocated its cache whole,
    and a cache a little under the free memory let the process be killed part-way (a dead
    notebook kernel); the model's own generate grew its cache until that happened, after
    a long wait."""
    import transformers

    toy = make_toy(
        getattr(transformers, config),
        getattr(transformers, model),
        max_position_embeddings=100_100,
        **overrides,
    )
    with pytest.raises(wb.WorkbenchError) as err:
        sample_completions(
            toy, [[1, 5, 6]], num_generations=4096, batch_limit=4096, max_new_tokens=100_000,
            decoder=decoder,
        )  # fmt: skip
    text = str(err.value)
    assert "sampling 4096 row(s) of up to 100,003 tokens (its KV cache) needs at least" in text
    assert "batch_limit" in text and "max_new_tokens=100000" in text
