"""The shipped tiny reasoner: files, tokenizer, card, offline loading, accuracy, bridge."""

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
from workbench.tiny.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((CHECKPOINT_DIR / "card.json").read_text())


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)  # faster than 2 for many tiny ops when the cores are shared
    # Exactly how the model zoo loads it.
    model = AutoModelForCausalLM.from_pretrained(CHECKPOINT_DIR, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT_DIR)
    return model.eval(), tokenizer


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


def test_card_numbers_meet_the_aims(card) -> None:
    acc = card["accuracy"]
    assert 0.25 <= card["accuracy_large"]["countdown"] <= 0.75
    assert acc["arithmetic"] >= 0.8
    assert card["mean_completion_tokens"]["countdown"] < 64
    spans = torch.tensor(card["head_spans"])
    assert spans.shape == (card["architecture"]["n_layers"], card["architecture"]["n_heads"])
    # heads differ in reach: the bottom and top of the span ranking are far apart
    assert spans.max() - spans.min() > 5.0
    ranked = sorted(spans.flatten().tolist())
    assert abs(ranked[0] - card["most_local_heads"][0][2]) < 0.01
    assert abs(ranked[-1] - card["most_global_heads"][0][2]) < 0.01
    readme = (CHECKPOINT_DIR / "README.md").read_text()
    assert f"{acc['countdown']:.1%}" in readme and "torch" in readme


def test_load_missing_checkpoint_raises(tmp_path) -> None:
    with pytest.raises(WorkbenchError, match="No tiny-reasoner checkpoint"):
        load(tmp_path)


@pytest.mark.slow
def test_generates_and_matches_card_accuracy(model_and_tokenizer, card) -> None:
    model, tokenizer = model_and_tokenizer
    sample = card["eval_sample"]
    result = tr.evaluate(model, tokenizer, sample, return_completions=True)
    for name in ("countdown", "arithmetic"):
        assert result["n"][name] == sample[name]
        assert abs(result["accuracy"][name] - card["accuracy"][name]) <= 0.03, name
    # completions are in the task format and short
    prompt, completion, score = result["completions"]["countdown"][0]
    assert prompt.startswith("Countdown: ") and "Answer:" in completion
    assert score == get_task("countdown").reward([prompt], [completion])[0]


@pytest.mark.slow
def test_head_spans_match_card(model_and_tokenizer, card) -> None:
    model, tokenizer = model_and_tokenizer
    problems = get_task("countdown").generate(card["eval_sample"]["countdown"], "test", seed=0)
    prompts = [p.prompt for p in problems[:50]]
    completions = tr.generate_completions(model, tokenizer, prompts)
    spans = tr.head_spans(model, tokenizer, prompts, completions)
    assert torch.allclose(spans, torch.tensor(card["head_spans"]), atol=0.05)


@pytest.mark.slow
def test_transformer_bridge_exposes_patterns(model_and_tokenizer, card) -> None:
    from transformer_lens.model_bridge import TransformerBridge

    model, tokenizer = model_and_tokenizer
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


def test_train_smoke_is_atomic_and_reproducible(tmp_path) -> None:
    cfg = tr.TrainConfig(steps=3, batch_size=4, warmup=1, pool={"countdown": 16, "arithmetic": 16})
    cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_mlp, cfg.max_new_tokens = 32, 2, 4, 64, 8
    small = {"countdown": 4, "arithmetic": 4, "split": "test", "seed": 0}
    cards = []
    for name in ("a", "b"):
        cards.append(
            tr.train(
                cfg, out=tmp_path / name, progress=False, eval_sample=small, eval_sample_large=small
            )
        )
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "a" / "card.json").read_text())["eval_sample"] == small
    assert cards[0]["accuracy"] == cards[1]["accuracy"]
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
