"""Sampling: every path that samples is the argmax of full forward passes, on both models.

The model that samples is the plain Hugging Face model behind the bridge, never one that
TransformerLens has wrapped in place (whose cached decoding a transformers release broke
once, silently). Each sampling path is checked, greedily, against step-by-step argmax of
full uncached forward passes of the bridge that the analysis uses, and each model's first
20 greedy tokens of a fixed prompt are pinned as golden strings.
"""

from __future__ import annotations

import pytest
import torch

import workbench as wb
from workbench.ablation import greedy_continue, logits_of
from workbench.cli import DEMO_PROBLEM
from workbench.models import bridge_model, load_hf, sampler
from workbench.tasks import get_task
from workbench.trace import (
    degeneracy,
    encode_prompt,
    eos_token_ids,
    sample_completions,
)
from workbench.trace.decoder import unsupported_reason

pytestmark = pytest.mark.slow

COUNTDOWN = get_task("countdown").generate(1, "test", seed=0)[0].prompt
# (model fixture, prompt, chat, the first 20 greedy tokens of the response)
GOLDEN = {
    "smollm2-135m": (
        "smol",
        DEMO_PROBLEM,
        True,
        "1. First, calculate the total number of trays of muffins sold: 12 x ",
    ),
    "tiny-reasoner": ("tiny", COUNTDOWN, False, "6/2=3\n20+3=24\nAnswer"),
}


def argmax_decode(model, prompt_ids: list[int], n: int) -> list[int]:
    """The reference: one full uncached forward pass of the bridge per token, argmax."""
    eos = set(eos_token_ids(model.tokenizer, sampler(model)))
    seq = torch.tensor(prompt_ids)
    out: list[int] = []
    for _ in range(n):
        nxt = int(logits_of(model, seq)[-1].argmax())
        out.append(nxt)
        seq = torch.cat([seq, torch.tensor([nxt])])
        if nxt in eos:
            break
    return out


@pytest.fixture(scope="module", params=sorted(GOLDEN))
def case(request):
    fixture, prompt, chat, golden = GOLDEN[request.param]
    model = request.getfixturevalue(fixture)
    ids = encode_prompt(model, prompt, chat=chat)
    return model, prompt, chat, golden, ids, argmax_decode(model, ids, 20)


def test_generate_is_the_argmax_of_full_passes_and_matches_the_golden_string(case):
    model, prompt, chat, golden, _, reference = case
    trace = wb.generate(model, prompt, max_new_tokens=20, temperature=0, chat=chat)
    assert trace.response_ids.tolist() == reference
    assert model.tokenizer.decode(trace.response_ids) == golden


def test_batched_completions_of_unequal_prompts_are_the_argmax(case):
    """The RL rollout and evaluation sampler, several prompts of different lengths at once."""
    model, _, chat, _, ids, reference = case
    other = encode_prompt(model, "2 + 2 =", chat=chat)
    out = sample_completions(model, [ids, other, ids], max_new_tokens=20, greedy=True)
    assert out[0] == reference and out[2] == reference
    assert out[1] == argmax_decode(model, other, 20)


def test_greedy_continuation_is_the_argmax(case):
    """The perturbation test's continuation, from inside a response."""
    model, _, _, _, ids, reference = case
    prefix = ids + reference[:5]
    new = greedy_continue(model, torch.tensor(prefix), max_new_tokens=15)
    assert new.tolist() == reference[5:]


def test_a_policy_that_was_bridged_still_samples_the_argmax(case):
    """As in RL: the policy samples after a bridge was built over it for the credit pass."""
    model, _, _, _, ids, reference = case
    name = "smollm2-135m" if model.cfg.n_layers == 30 else "tiny-reasoner"
    policy, tokenizer = load_hf(name, device="cpu")
    keys = list(policy.state_dict())
    bridge = bridge_model(policy, tokenizer)
    assert sampler(bridge) is policy
    assert list(policy.state_dict()) == keys, "the policy's modules are not wrapped"
    attn = policy.model.layers[0].self_attn
    assert type(attn).__module__.startswith("transformers."), type(attn)
    out = sample_completions(policy, [ids], tokenizer=tokenizer, max_new_tokens=20, greedy=True)
    assert out[0] == reference


def test_demo_answer_is_coherent(smol):
    """The demo's greedy answer is a real answer, not a broken sampler's repetition."""
    trace = wb.generate(smol, DEMO_PROBLEM, max_new_tokens=160, temperature=0)
    stats = degeneracy(trace.response_ids)
    assert trace.response_len > 40
    assert stats["distinct_share"] > 0.25 and stats["longest_run"] < 4, stats
    wb.trace.check_not_degenerate(trace)  # raises on a degenerate answer


def _degenerate_trace(**meta):
    ids = torch.tensor([1, 2, 16, *([17] * 40)])  # "1-----...", a broken sampler's answer
    prompt = meta.pop("prompt", DEMO_PROBLEM)
    return wb.Trace(ids=ids, tokens=["x"] * len(ids), prompt_len=2, text="1-----",
                    prompt=prompt, meta=meta)  # fmt: skip


REFERENCE = {"model": "smollm2-135m", "source": "generate", "temperature": 0, "chat": True}


@pytest.mark.parametrize(
    "change",
    [
        {"model": "tiny-reasoner"},  # `workbench demo --model tiny-reasoner`
        {"prompt": "Tom has 3 boxes with 12 pens each."},
        {"temperature": 0.7},
        {"source": "from_text"},
    ],
)
def test_a_degenerate_answer_blames_the_install_only_for_the_reference_answer(change):
    """The default model's greedy answer to the demo's problem is tested coherent with the
    lock (`test_demo_answer_is_coherent`), so there a degenerate one means a broken sampler.
    Any other (`demo --model tiny-reasoner`: a tiny model on a word problem it never saw)
    was told to reinstall the environment too."""
    with pytest.raises(wb.WorkbenchError, match="answer is degenerate") as e:
        wb.trace.check_not_degenerate(_degenerate_trace(**REFERENCE))
    assert "reinstall the locked environment" in e.value.fix
    with pytest.raises(wb.WorkbenchError, match="answer is degenerate") as e:
        wb.trace.check_not_degenerate(_degenerate_trace(**{**REFERENCE, **change}))
    assert "reinstall" not in e.value.fix and "broken" not in e.value.fix
    assert "prompt of the model's own kind" in e.value.fix
    assert "`workbench demo` with its defaults checks the installation" in e.value.fix


def test_on_token_that_is_not_a_function_is_named_before_sampling(tiny, monkeypatch):
    """It failed with a raw "'int' object is not callable" from inside the decoder, after
    the prefill and the first draw."""
    from workbench.trace import sampling

    monkeypatch.setattr(sampling, "sampler", lambda m: pytest.fail("sampled"))
    ids = encode_prompt(tiny, "12+7=", chat=False)
    for bad in (5, "bar.update"):
        with pytest.raises(wb.WorkbenchError, match="on_token must be a function") as e:
            sample_completions(tiny, [ids], max_new_tokens=4, on_token=bad)
        assert repr(bad) in e.value.problem
        assert "a function of no arguments" in e.value.fix


def test_a_bridge_the_workbench_did_not_build_is_refused_for_sampling(tiny):
    from transformer_lens.model_bridge import TransformerBridge

    policy, tokenizer = load_hf("tiny-reasoner", device="cpu")
    foreign = TransformerBridge.boot_transformers("x", hf_model=policy, tokenizer=tokenizer)
    with pytest.raises(wb.WorkbenchError, match="not built by the workbench"):
        sampler(foreign)
    with pytest.raises(wb.WorkbenchError, match="cannot sample from a str"):
        sampler("tiny-reasoner")


def test_seeded_draws_from_the_seed_alone_and_leaves_the_callers_rng_as_it_was():
    from workbench.trace.sampling import seeded

    model = torch.nn.Linear(2, 2)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    with seeded(model, 7):
        first = torch.rand(3)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.rand(5)  # the caller's draws do not change what the block draws
    with seeded(model, 7):
        assert torch.equal(torch.rand(3), first)


def test_sampling_checks_the_context_and_the_number_of_completions_first(tiny):
    """max_new_tokens=10**20 was a raw OverflowError, and a bridge sampled past its
    context (wb.generate checked it, sample_completions did not); num_generations=10**12
    built its list of rows without bound."""
    from workbench.trace.sampling import MAX_COMPLETIONS, MAX_SEQUENCE

    ids = encode_prompt(tiny, "12+7=", chat=False)
    for n in (10**20, tiny.cfg.n_ctx):
        with pytest.raises(wb.WorkbenchError, match="context holds") as e:
            sample_completions(tiny, [[1], ids], max_new_tokens=n)
        assert f"a {len(ids)}-token prompt plus max_new_tokens={n}" in str(e.value)
    plain = sampler(tiny)  # a plain Hugging Face model states no n_ctx
    with pytest.raises(wb.WorkbenchError, match=f"more than the {MAX_SEQUENCE}"):
        sample_completions(plain, [ids], max_new_tokens=10**20, tokenizer=tiny.tokenizer)
    with pytest.raises(wb.WorkbenchError, match=f"more than the {MAX_COMPLETIONS}") as e:
        sample_completions(tiny, [ids, ids], num_generations=10**12)
    assert "num_generations" in e.value.fix
    room = tiny.cfg.n_ctx - len(ids)
    assert len(sample_completions(tiny, [ids], max_new_tokens=room, greedy=True)[0]) <= room


def test_a_plain_model_is_held_to_the_context_its_config_states(tiny):
    """A plain Hugging Face model has no ``cfg.n_ctx``: its config's max_position_embeddings
    is its context. A plain GPT-2 failed past its positions with a raw IndexError, and a
    RoPE model (the tiny reasoner, 256 positions) sampled 5000 tokens without a word."""
    from transformers import GPT2Config, GPT2LMHeadModel

    ids = encode_prompt(tiny, "12+7=", chat=False)
    plain = sampler(tiny)
    room = plain.config.max_position_embeddings - len(ids)
    with pytest.raises(wb.WorkbenchError, match="context holds 256") as e:
        sample_completions(plain, [ids], max_new_tokens=room + 1, tokenizer=tiny.tokenizer)
    assert "max_new_tokens" in e.value.fix
    out = sample_completions(plain, [ids], max_new_tokens=room, tokenizer=tiny.tokenizer)
    assert len(out[0]) <= room
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tiny.tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2
    )
    gpt2 = GPT2LMHeadModel(config).eval()
    with pytest.raises(wb.WorkbenchError, match="context holds 32"):
        sample_completions(gpt2, [ids], max_new_tokens=60, greedy=True, tokenizer=tiny.tokenizer)


def test_temperature_zero_asks_the_sampler_for_greedy_by_name(tiny):
    """generate's temperature=0 is greedy; sample_completions says greedy=True is how."""
    with pytest.raises(wb.WorkbenchError, match="asks for greedy decoding") as e:
        sample_completions(tiny, [[1, 5]], max_new_tokens=2, temperature=0)
    assert "greedy=True" in e.value.fix
    with pytest.raises(wb.WorkbenchError, match=r"temperature must be in \[0"):
        sample_completions(tiny, [[1, 5]], max_new_tokens=2, temperature=-0.5)
    assert sample_completions(tiny, [[1, 5]], max_new_tokens=2, temperature=0, greedy=True)


@pytest.mark.parametrize("decoder", ["auto", "hf"])
def test_a_generation_config_asking_for_dicts_or_stop_strings_gives_ids_or_the_fix(tiny, decoder):
    """return_dict_in_generate=True made generate return a dict (slicing it was a raw
    TypeError), num_return_sequences=2 failed in generate (a raw ValueError; the sampler's
    num_generations says how many), and stop strings made generate fail for want of a
    tokenizer (a raw ValueError)."""
    config = sampler(tiny).generation_config
    ids = encode_prompt(tiny, "12+7=", chat=False)
    want = sample_completions(tiny, [ids], max_new_tokens=8, greedy=True, decoder="hf")
    for field, value in [("return_dict_in_generate", True), ("num_return_sequences", 2)]:
        before = getattr(config, field)
        setattr(config, field, value)
        try:
            got = sample_completions(tiny, [ids], max_new_tokens=8, greedy=True, decoder=decoder)
            torch.manual_seed(0)
            two = sample_completions(tiny, [ids], num_generations=2, max_new_tokens=8)
        finally:
            setattr(config, field, before)
        assert got == want, field
        assert len(two) == 2, field
    before = config.stop_strings
    config.stop_strings = ["\n"]
    try:
        with pytest.raises(wb.WorkbenchError, match="stop_strings") as e:
            sample_completions(tiny, [ids], max_new_tokens=8, greedy=True, decoder=decoder)
    finally:
        config.stop_strings = before
    assert unsupported_reason(sampler(tiny)) is None, "the config is as it was"
    assert "generation_config.stop_strings = None" in e.value.fix


@pytest.mark.parametrize("decoder", ["lean", "hf"])
def test_prompts_given_as_iterators_or_tensors_sample_as_lists(tiny, decoder):
    """Each prompt is read once: an iterator was spent by the argument check and then failed
    on its length (a raw TypeError)."""
    ids = encode_prompt(tiny, "12+7=", chat=False)
    want = sample_completions(tiny, [ids], max_new_tokens=6, greedy=True, decoder=decoder)
    for given in (iter(ids), torch.tensor(ids), tuple(ids)):
        got = sample_completions(tiny, [given], max_new_tokens=6, greedy=True, decoder=decoder)
        assert got == want


@pytest.mark.parametrize("decoder", ["auto", "hf"])
def test_a_generation_config_with_beams_still_samples_and_takes_the_argmax(tiny, decoder):
    """num_beams=3 in the model's generation config made greedy=True run beam search on the
    generate path (not the argmax the docstring promises) and sampling return the best of
    three beams; both decoders now ignore it and agree. Settings that change nothing
    (repetition_penalty 1.0, output_scores) keep the lean decoder."""
    config = sampler(tiny).generation_config
    ids = encode_prompt(tiny, "12+7=", chat=False)
    want = argmax_decode(tiny, ids, 12)
    lean = sample_completions(tiny, [ids], max_new_tokens=12, greedy=True, decoder="lean")
    torch.manual_seed(0)
    drawn = sample_completions(tiny, [ids], num_generations=3, max_new_tokens=12, decoder="lean")
    before = {k: getattr(config, k) for k in ("num_beams", "repetition_penalty", "output_scores")}
    config.num_beams = 3
    try:
        got = sample_completions(tiny, [ids], max_new_tokens=12, greedy=True, decoder=decoder)
        torch.manual_seed(0)
        again = sample_completions(
            tiny, [ids], num_generations=3, max_new_tokens=12, decoder=decoder
        )
        config.repetition_penalty, config.output_scores = 1.0, True
        assert unsupported_reason(sampler(tiny)) is None
    finally:
        for k, v in before.items():
            setattr(config, k, v)
    assert got == lean
    assert got[0] == want[: len(got[0])]
    assert again == drawn


@pytest.mark.parametrize("decoder", ["lean", "hf"])
def test_on_token_is_called_once_per_decoding_step(tiny, decoder):
    """What wb.generate's progress bar counts: one call per new token of the batch (200
    tokens of SmolLM2 took 10 s with nothing on screen)."""
    ids = encode_prompt(tiny, "12+7=", chat=False)
    steps = []
    out = sample_completions(
        tiny,
        [ids],
        max_new_tokens=12,
        greedy=True,
        decoder=decoder,
        on_token=lambda: steps.append(1),
    )
    assert len(steps) == len(out[0]) > 0
    with pytest.raises(wb.WorkbenchError, match="progress must be True or False"):
        wb.generate(tiny, "12+7=", max_new_tokens=2, progress="no")
    quiet = wb.generate(tiny, "12+7=", max_new_tokens=4, temperature=0, progress=False)
    assert torch.equal(quiet.ids, wb.generate(tiny, "12+7=", max_new_tokens=4, temperature=0).ids)


def test_an_answer_that_ends_early_closes_its_bar_complete(tiny, monkeypatch):
    """generate's bar counts up to max_new_tokens; an answer that ended at its EOS before
    that closed the bar short of its total, which a notebook draws red (failed) and leaves
    on screen."""
    import io

    from tqdm import tqdm

    from workbench.trace import sampling

    bars = []

    def bar(**kwargs):
        kwargs.pop("progress")
        bars.append(tqdm(file=io.StringIO(), **kwargs))
        return bars[-1]

    monkeypatch.setattr(sampling, "progress_bar", bar)
    trace = wb.generate(tiny, "12+7=", max_new_tokens=200, temperature=0, chat=False)
    assert trace.response_len < 200  # it ended at its EOS
    assert bars[0].n == bars[0].total == trace.response_len
