"""The shipped tiny reasoner: files, tokenizer and offline loading; its behaviour re-measured
against the numbers in its card (held-out accuracy, head spans, README examples); and
training that is reproducible and leaves torch's global state as it found it."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file

from workbench.errors import WorkbenchError
from workbench.tasks import get_task
from workbench.tiny import CHECKPOINT_DIR, load
from workbench.tiny import train as tr
from workbench.tiny.card import render_card
from workbench.tiny.evaluation import evaluate, head_spans
from workbench.tiny.tokenizer import build_tokenizer

#: Tolerances of the card checks. Greedy decoding is deterministic, but other BLAS builds
#: may differ in the last bits and flip a near-tie token: held-out accuracy may move by 3
#: problems in 100, mean completion length by 1 token, a head span by 0.05 tokens.
ACCURACY_TOL = 0.03
LENGTH_TOL = 1.0
SPAN_TOL = 0.05


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((CHECKPOINT_DIR / "card.json").read_text())


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Exactly how the model zoo loads it (default attention; `head_spans` switches to eager).
    model = AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT_DIR)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def fixed_sample(model_and_tokenizer, card) -> dict:
    """Greedy results of the shipped model on the card's fixed held-out sample (~3 s)."""
    model, tokenizer = model_and_tokenizer
    return evaluate(model, tokenizer, card["eval_sample"], return_completions=True)


def test_checkpoint_files_and_size() -> None:
    names = {p.name for p in CHECKPOINT_DIR.iterdir()}
    required = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"}
    assert required | {"tokenizer_config.json", "card.json", "README.md"} <= names
    assert not {n for n in names if n.endswith((".bin", ".pt", ".pth")) or n.startswith(".tmp")}
    total = sum(p.stat().st_size for p in CHECKPOINT_DIR.iterdir())
    assert total <= 10 * 2**20
    assert all(
        t.dtype == torch.float32 for t in load_file(CHECKPOINT_DIR / "model.safetensors").values()
    )


def test_config_is_plain_llama(card) -> None:
    config = json.loads((CHECKPOINT_DIR / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == card["architecture"]["n_layers"] == 4
    assert config["num_attention_heads"] == config["num_key_value_heads"] >= 4
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 0)


def test_saved_tokenizer_matches_builder() -> None:
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(CHECKPOINT_DIR)
    built = build_tokenizer()
    problem = get_task("countdown").generate(1, "test", seed=0)[0]
    text = problem.prompt + problem.solution
    ids = saved(text)["input_ids"]
    assert ids == built(text)["input_ids"]
    assert ids[0] == saved.bos_token_id == 1 and len(ids) == len(text) + 1  # one token a char
    assert saved.decode(ids, skip_special_tokens=True) == text
    assert (saved.eos_token_id, saved.pad_token_id) == (2, 0)
    assert not getattr(saved, "chat_template", None)


def test_load_missing_checkpoint_raises(tmp_path) -> None:
    with pytest.raises(WorkbenchError, match="No tiny-reasoner checkpoint"):
        load(tmp_path)


def test_accuracy_matches_the_card_and_meets_the_aims(fixed_sample, card) -> None:
    for name in ("countdown", "arithmetic"):
        assert fixed_sample["n"][name] == card["eval_sample"][name]
        got, want = fixed_sample["accuracy"][name], card["accuracy"][name]
        assert abs(got - want) <= ACCURACY_TOL, (name, got, want)
        got = fixed_sample["mean_completion_tokens"][name]
        want = card["mean_completion_tokens"][name]
        assert abs(got - want) <= LENGTH_TOL, (name, got, want)
    # the aims the model was trained for, on the re-measured numbers
    assert 0.25 <= fixed_sample["accuracy"]["countdown"] <= 0.9
    assert fixed_sample["accuracy"]["arithmetic"] >= 0.8
    assert fixed_sample["mean_completion_tokens"]["countdown"] < 64
    # completions are in the task format and scored by the task
    prompt, completion, score = fixed_sample["completions"]["countdown"][0]
    assert prompt.startswith("Countdown: ") and "Answer:" in completion
    assert score == get_task("countdown").reward([prompt], [completion])[0]


def test_head_spans_match_the_card(model_and_tokenizer, fixed_sample, card) -> None:
    model, tokenizer = model_and_tokenizer
    rows = fixed_sample["completions"]["countdown"][:50]  # card["head_spans_measured_on"]
    spans = head_spans(model, tokenizer, [r[0] for r in rows], [r[1] for r in rows])
    arch = card["architecture"]
    assert spans.shape == (arch["n_layers"], arch["n_heads"]) and spans.dtype == torch.float32
    torch.testing.assert_close(spans, torch.tensor(card["head_spans"]), atol=SPAN_TOL, rtol=0)
    # heads differ in reach, and the card's extreme heads are the measured extremes
    assert float(spans.max() - spans.min()) > 5.0
    (l_lo, h_lo, _), (l_hi, h_hi, _) = card["most_local_heads"][0], card["most_global_heads"][0]
    assert float(spans[l_lo, h_lo]) <= float(spans.min()) + 2 * SPAN_TOL
    assert float(spans[l_hi, h_hi]) >= float(spans.max()) - 2 * SPAN_TOL


def test_head_spans_equal_eq7_written_out(model_and_tokenizer) -> None:
    """`head_spans` (the engine's per-sequence spans, averaged) against Eq. 7 computed
    directly on the eager patterns; the model's attention implementation is restored."""
    model, tokenizer = model_and_tokenizer
    problems = get_task("countdown").generate(3, "test", seed=0)
    prompts, completions = [p.prompt for p in problems], [p.solution for p in problems]
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    per_sequence = []
    with torch.no_grad():
        for prompt, completion in zip(prompts, completions, strict=True):
            n_prompt = len(tokenizer(prompt)["input_ids"])
            ids = tokenizer(prompt + completion)["input_ids"] + [tokenizer.eos_token_id]
            out = model(input_ids=torch.tensor([ids]), output_attentions=True)
            pos = torch.arange(len(ids), dtype=torch.float64)
            dist = (pos[:, None] - pos[None, :]).clamp(min=0)  # [query, key]
            per_sequence.append(
                torch.stack(
                    [(a[0].double() * dist).sum(-1)[:, n_prompt:].mean(-1) for a in out.attentions]
                )
            )
    model.set_attn_implementation(previous)
    got = head_spans(model, tokenizer, prompts, completions)
    want = torch.stack(per_sequence).mean(0)
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=0)
    assert model.config._attn_implementation == previous


def test_readme_is_the_card_rendered(fixed_sample, card) -> None:
    """The shipped README is what `render_card` makes of ``card.json`` and the re-generated
    example completions (the first three per task of the fixed sample)."""
    readme = (CHECKPOINT_DIR / "README.md").read_text()
    assert render_card(card, fixed_sample["completions"]) == readme


@pytest.mark.slow
def test_transformer_bridge_exposes_patterns(card) -> None:
    from transformer_lens.model_bridge import TransformerBridge

    model, tokenizer = load()  # its own copy: the bridge wraps the model's modules in place
    bridge = TransformerBridge.boot_transformers(
        str(CHECKPOINT_DIR), hf_model=model, tokenizer=tokenizer, device="cpu"
    )
    text = "Countdown: 3 7 25 -> 28\n25+3=28\nAnswer: 25+3\n"
    tokens = torch.tensor([tokenizer(text)["input_ids"]])
    logits, cache = bridge.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    n_layers, n_heads = card["architecture"]["n_layers"], card["architecture"]["n_heads"]
    T = tokens.shape[1]
    for layer in range(n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (1, n_heads, T, T)
        assert torch.allclose(pattern.sum(-1), torch.ones(1, n_heads, T), atol=1e-4)
        assert torch.all(pattern.triu(1) == 0)
    with torch.no_grad():
        hf_logits = model(tokens).logits
    assert torch.allclose(torch.as_tensor(logits), hf_logits, atol=1e-3)


def test_make_model_leaves_torch_global_state_alone() -> None:
    cfg = tr.TrainConfig(seed=123, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    a = tr.make_model(cfg, vocab_size=20)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng)
    torch.rand(3)  # moving the global RNG does not change the seeded initialisation
    b = tr.make_model(cfg, vocab_size=20)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_torch_settings_restore_on_error() -> None:
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    inner = 1 if threads != 1 else 2
    with pytest.raises(RuntimeError, match="boom"), tr.torch_settings(seed=1, threads=inner):
        assert torch.get_num_threads() == inner
        torch.rand(5)
        raise RuntimeError("boom")
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng)


def test_train_smoke_is_atomic_and_reproducible(tmp_path) -> None:
    cfg = tr.TrainConfig(steps=3, batch_size=4, warmup=1, pool={"countdown": 16, "arithmetic": 16})
    cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_mlp, cfg.max_new_tokens = 32, 2, 4, 64, 8
    cfg.threads = 1
    small = {"countdown": 4, "arithmetic": 4, "split": "test", "seed": 0}
    cards = []
    outer_threads = torch.get_num_threads()
    torch.set_num_threads(2)  # differs from the run's count (1, fast on shared cores)
    try:
        for name in ("a", "b"):
            rng = torch.get_rng_state()
            cards.append(
                tr.train(
                    cfg,
                    out=tmp_path / name,
                    progress=False,
                    eval_sample=small,
                    eval_sample_large=small,
                )
            )
            # training seeds torch and sets its thread count only for the run
            assert torch.get_num_threads() == 2
            assert torch.equal(torch.get_rng_state(), rng)
    finally:
        torch.set_num_threads(outer_threads)
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "a" / "card.json").read_text())["eval_sample"] == small
    assert cards[0]["accuracy"] == cards[1]["accuracy"]
    assert cards[0]["final_loss"] == cards[1]["final_loss"]
    assert cards[0]["train_config"]["threads"] == cfg.threads
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(FileExistsError):
        tr.train(
            cfg,
            out=tmp_path / "a",
            overwrite=False,
            progress=False,
            eval_sample=small,
            eval_sample_large=small,
        )
    model, tokenizer = load(tmp_path / "a")
    assert model.config.num_hidden_layers == 2 and tokenizer.bos_token_id == 1
