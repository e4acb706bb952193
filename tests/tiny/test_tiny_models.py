"""The shipped tiny models (the reasoner and the searcher): files, tokenizer and offline
loading; their behaviour re-measured against the numbers in their cards (held-out accuracy,
head spans, README examples) and the aims each was trained for; and training that is
reproducible and leaves torch's global state as it found it."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file

from workbench.errors import WorkbenchError
from workbench.tasks import get_task
from workbench.tiny import CHECKPOINTS, load
from workbench.tiny import train as tr
from workbench.tiny.card import render_card
from workbench.tiny.evaluation import evaluate, head_spans, waad_sawtooth
from workbench.tiny.tokenizer import build_tokenizer

#: Tolerances of the card checks. Greedy decoding is deterministic, but other BLAS builds
#: may differ in the last bits and flip a near-tie token: held-out accuracy may move by 3
#: problems in 100, mean completion length by 1 token, a head span by 0.05 tokens.
ACCURACY_TOL = 0.03
LENGTH_TOL = 1.0
SPAN_TOL = 0.05
#: The searcher's mean WAAD inside equations over that on separators, at least (measured
#: 1.3 on 50 traces: `benchmarks/searcher_rhythm.py`, the model card).
SAWTOOTH_MIN_RATIO = 1.2


MODELS = sorted(CHECKPOINTS)


@pytest.fixture(scope="module", params=MODELS)
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def folder(name):
    return CHECKPOINTS[name]


@pytest.fixture(scope="module")
def card(folder) -> dict:
    return json.loads((folder / "card.json").read_text())


@pytest.fixture(scope="module")
def model_and_tokenizer(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Exactly how the model zoo loads it (default attention; `head_spans` switches to eager).
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def fixed_sample(model_and_tokenizer, card) -> dict:
    """Greedy results of the shipped model on the card's fixed held-out sample (~3-20 s)."""
    model, tokenizer = model_and_tokenizer
    budget = card["train_config"]["max_new_tokens"]
    return evaluate(model, tokenizer, card["eval_sample"], budget, return_completions=True)


def _tasks(card) -> list[str]:
    return list(card["train_config"].get("tasks", ("countdown", "arithmetic")))


def test_checkpoint_files_and_size(folder) -> None:
    names = {p.name for p in folder.iterdir()}
    required = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"}
    assert required | {"tokenizer_config.json", "card.json", "README.md"} <= names
    assert not {n for n in names if n.endswith((".bin", ".pt", ".pth")) or n.startswith(".tmp")}
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total <= 10 * 2**20
    assert all(t.dtype == torch.float32 for t in load_file(folder / "model.safetensors").values())


def test_config_is_a_plain_hugging_face_family(folder, card, name) -> None:
    config = json.loads((folder / "config.json").read_text())
    family = {"tiny-reasoner": "llama", "tiny-searcher": "qwen3"}[name]
    assert config["model_type"] == family
    assert config["architectures"] == [card["architecture"]["class"]]
    if name == "tiny-searcher":  # local by construction in the first two layers
        assert config["layer_types"] == ["sliding_attention"] * 2 + ["full_attention"] * 2
        assert config["sliding_window"] == 4
    assert config["num_hidden_layers"] == card["architecture"]["n_layers"] == 4
    assert config["num_attention_heads"] == config["num_key_value_heads"] >= 4
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 0)
    assert config["rope_parameters"]["rope_theta"] == card["train_config"]["rope_theta"]
    assert card["model"] == name


def test_saved_tokenizer_matches_builder(folder, card) -> None:
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(folder)
    built = build_tokenizer()
    problem = get_task(_tasks(card)[0]).generate(1, "test", seed=0)[0]
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
    with pytest.raises(WorkbenchError, match="No tiny-searcher checkpoint"):
        load(tmp_path, name="tiny-searcher")
    with pytest.raises(WorkbenchError, match="No tiny model 'tiny-x'"):
        load(name="tiny-x")


def test_presets_name_their_tasks_and_refuse_bad_recipes() -> None:
    searcher = tr.preset("tiny-searcher", steps=5)
    assert searcher.tasks == ("countdown-search",) and searcher.steps == 5
    assert searcher.name == "tiny-searcher" and searcher.arch == "qwen3"
    assert (searcher.sliding_window, searcher.sliding_layers) == (4, (0, 1))
    assert tr.preset("tiny-reasoner") == tr.TrainConfig()
    with pytest.raises(WorkbenchError, match="No tiny-model recipe"):
        tr.preset("tiny-x")
    with pytest.raises(WorkbenchError, match="must name exactly the tasks"):
        tr.TrainConfig(tasks=("countdown",))
    with pytest.raises(WorkbenchError, match="one or two task names"):
        tr.TrainConfig(tasks=("sudoku",), pool={"sudoku": 3})
    with pytest.raises(WorkbenchError, match="a window needs arch='qwen3'"):
        tr.TrainConfig(sliding_window=4, sliding_layers=(0,))
    with pytest.raises(WorkbenchError, match="layers in range"):
        tr.TrainConfig(arch="qwen3", sliding_window=4, sliding_layers=(7,))
    with pytest.raises(WorkbenchError, match="not a tiny-model family"):
        tr.TrainConfig(arch="gpt2")
    for key in ("steps", "batch_size", "threads"):  # 0 steps: an untrained checkpoint
        with pytest.raises(WorkbenchError, match=f"{key} must be at least 1, got 0"):
            tr.TrainConfig(**{key: 0})


def test_each_preset_is_the_recipe_its_card_records(name, card) -> None:
    """``python -m workbench.tiny train --model NAME`` is the shipped run: the searcher's
    preset trained on 1 CPU thread, its card on 2, and the thread count changes the weights."""
    recipe = tr.preset(name).__dict__
    recorded = card["train_config"]  # older cards lack fields added since, at their defaults
    differ = {
        k: (v, recipe[k])
        for k, v in recorded.items()
        if (list(v) if isinstance(v, list | tuple) else v)
        != (list(recipe[k]) if isinstance(recipe[k], list | tuple) else recipe[k])
    }
    assert differ == {}


def test_an_unusable_out_is_refused_before_training(tmp_path, monkeypatch) -> None:
    """A run is thrown away if its folder is found unusable only when it ends."""

    def fit(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(tr, "_fit", fit)
    cfg = tr.TrainConfig(steps=1)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(WorkbenchError, match="is a file, not a checkpoint folder"):
        tr.train(cfg, out=notes, progress=False)
    with pytest.raises(WorkbenchError, match="is a file"):
        tr.train(cfg, out=notes / "ckpt", progress=False)
    (tmp_path / "old").mkdir()
    with pytest.raises(WorkbenchError, match="already exists and overwrite=False"):
        tr.train(cfg, out=tmp_path / "old", overwrite=False, progress=False)
    assert notes.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "old"]


def test_command_line_bad_input_is_one_message_not_a_traceback(tmp_path, capsys) -> None:
    from workbench.tiny.__main__ import main

    assert main(["eval", "--dir", str(tmp_path)]) == 2
    assert main(["train", "--threads", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "error: No tiny-reasoner checkpoint at" in err and "Fix: Train one" in err
    assert "threads must be at least 1, got 0" in err and "Traceback" not in err


def test_the_shipped_checkpoint_is_replaced_only_by_its_own_recipe(capsys) -> None:
    """`train --steps 10` without --out replaced the tiny reasoner that every notebook and
    test loads; settings off the recipe now need --out (checked before any training)."""
    from workbench.tiny import CHECKPOINTS
    from workbench.tiny.__main__ import main

    shipped = (CHECKPOINTS["tiny-reasoner"] / "model.safetensors").stat().st_mtime_ns
    assert main(["train", "--steps", "10"]) == 2
    assert main(["train", "--model", "tiny-searcher", "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "(--steps) differ from tiny-reasoner's recipe" in err
    assert "(--seed) differ from tiny-searcher's recipe" in err
    assert "pass --out DIR" in err and "Traceback" not in err
    assert (CHECKPOINTS["tiny-reasoner"] / "model.safetensors").stat().st_mtime_ns == shipped


def test_a_recipe_that_cannot_train_is_refused() -> None:
    """A RoPE base <= 0 or NaN trained on NaN losses and then failed in the head spans with
    a message about attention patterns; a learning rate <= 0 wrote an untrained model."""
    for key, value in [("rope_theta", -1.0), ("rope_theta", float("nan")), ("lr", 0.0)]:
        with pytest.raises(WorkbenchError, match=key):
            tr.TrainConfig(**{key: value})
    with pytest.raises(WorkbenchError, match="countdown_fraction"):
        tr.TrainConfig(countdown_fraction=1.5)
    for seed in (-1, 2**64):  # overflowed in torch; -1 drew seed 1's problems
        with pytest.raises(WorkbenchError, match="seed"):
            tr.TrainConfig(seed=seed)


def test_command_line_eval_refuses_bad_counts_before_loading(capsys, monkeypatch) -> None:
    """``eval --n 0`` printed nothing with status 0; ``--threads 0`` was a torch traceback."""
    import workbench.tiny
    from workbench.tiny.__main__ import main

    monkeypatch.setattr(workbench.tiny, "load", lambda *a, **k: pytest.fail("loaded"))
    assert main(["eval", "--n", "0"]) == 2
    assert main(["eval", "--n", "-5"]) == 2
    assert main(["eval", "--threads", "0"]) == 2
    assert main(["eval", "--seed", "-3"]) == 2
    err = capsys.readouterr().err
    assert "--seed must be at least 0, got -3" in err
    assert "--n must be at least 1, got 0" in err and "--n must be at least 1, got -5" in err
    assert "--threads must be at least 1, got 0" in err and "Traceback" not in err


def test_command_line_eval_scores_a_folder_on_its_cards_tasks(capsys) -> None:
    """``eval --dir <a searcher checkpoint>`` scored it on the reasoner's tasks (0%)."""
    from workbench.tiny.__main__ import main

    searcher = str(CHECKPOINTS["tiny-searcher"])
    assert main(["eval", "--dir", searcher, "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("countdown-search") and "(n=2," in out and "arithmetic" not in out
    assert main(["eval", "--dir", searcher, "--model", "tiny-reasoner"]) == 2
    assert "the checkpoint in" in capsys.readouterr().err
    # the reasoner's card predates the recorded task list: its default tasks are used
    assert main(["eval", "--dir", str(CHECKPOINTS["tiny-reasoner"]), "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("countdown ") and "arithmetic" in out


def test_paths_with_a_tilde_are_the_home_folder(tmp_path, monkeypatch) -> None:
    """``load("~/ckpt")`` looked for a folder named "~" in the current one, and
    ``train(out="~/ckpt")`` wrote its checkpoint there."""
    import shutil

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    shutil.copytree(CHECKPOINTS["tiny-reasoner"], tmp_path / "ckpt")
    model, _ = load("~/ckpt")
    assert model.config.num_hidden_layers == 4
    (tmp_path / "taken").write_text("a file")
    monkeypatch.setattr(tr, "_fit", lambda *a: pytest.fail("trained"))
    with pytest.raises(WorkbenchError, match="is a file"):  # checked before training
        tr.train(tr.TrainConfig(steps=1), out="~/taken", progress=False)
    assert not (tmp_path / "~").exists()


def test_accuracy_matches_the_card(fixed_sample, card) -> None:
    for task in _tasks(card):
        assert fixed_sample["n"][task] == card["eval_sample"][task]
        got, want = fixed_sample["accuracy"][task], card["accuracy"][task]
        assert abs(got - want) <= ACCURACY_TOL, (task, got, want)
        got = fixed_sample["mean_completion_tokens"][task]
        want = card["mean_completion_tokens"][task]
        assert abs(got - want) <= LENGTH_TOL, (task, got, want)
        # completions are in the task format and scored by the task
        prompt, completion, score = fixed_sample["completions"][task][0]
        assert "Answer:" in completion
        assert score == get_task(task).reward([prompt], [completion])[0]


@pytest.mark.parametrize("name", ["tiny-reasoner"], indirect=True)
def test_the_reasoner_meets_its_aims(fixed_sample) -> None:
    assert 0.25 <= fixed_sample["accuracy"]["countdown"] <= 0.9
    assert fixed_sample["accuracy"]["arithmetic"] >= 0.8
    assert fixed_sample["mean_completion_tokens"]["countdown"] < 64
    prompt = fixed_sample["completions"]["countdown"][0][0]
    assert prompt.startswith("Countdown: ")


@pytest.mark.parametrize("name", ["tiny-searcher"], indirect=True)
def test_the_searcher_meets_its_aims(fixed_sample, card) -> None:
    """Issue 18's aims: 80-200 token traces, held-out accuracy between 30% and 70% (room
    for RL), the most local head's span under 3 tokens, a written search in the output."""
    assert 0.3 <= fixed_sample["accuracy"]["countdown-search"] <= 0.7
    assert 80 <= fixed_sample["mean_completion_tokens"]["countdown-search"] <= 200
    assert min(min(row) for row in card["head_spans"]) < 3.0
    assert max(max(row) for row in card["head_spans"]) > 10.0
    completions = [c for _, c, _ in fixed_sample["completions"]["countdown-search"]]
    assert sum(" no\n" in c for c in completions) >= 0.9 * len(completions)
    assert sum(c.count("\n") >= 4 for c in completions) >= 0.9 * len(completions)


def test_head_spans_match_the_card(model_and_tokenizer, fixed_sample, card) -> None:
    model, tokenizer = model_and_tokenizer
    rows = fixed_sample["completions"][_tasks(card)[0]][:50]  # card["head_spans_measured_on"]
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


def test_readme_is_the_card_rendered(folder, fixed_sample, card) -> None:
    """The shipped README is what `render_card` makes of ``card.json`` and the re-generated
    example completions (the first three per task of the fixed sample)."""
    readme = (folder / "README.md").read_text()
    assert render_card(card, fixed_sample["completions"]) == readme


@pytest.mark.slow
def test_transformer_bridge_exposes_patterns(name, folder, card) -> None:
    from transformer_lens.model_bridge import TransformerBridge

    # its own copy: the bridge wraps the model's modules in place
    model, tokenizer = load(name=name)
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=model, tokenizer=tokenizer, device="cpu"
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
    # the card names the workbench source that trained it
    from workbench.provenance import provenance

    source = provenance()
    assert cards[0]["versions"]["commit"] == source["commit"]
    assert cards[0]["versions"]["workbench"] == source["workbench"]
    readme = (tmp_path / "a" / "README.md").read_text()
    assert f"workbench {source['workbench']}" in readme
    assert source["commit"] is None or source["commit"][:12] in readme
    assert cards[0]["train_config"]["threads"] == cfg.threads
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(WorkbenchError, match="already exists and overwrite=False"):
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


def test_single_task_recipe_trains_and_cards(tmp_path) -> None:
    cfg = tr.preset(
        "tiny-searcher",
        steps=2,
        batch_size=4,
        warmup=1,
        pool={"countdown-search": 8},
        d_model=32,
        n_layers=2,
        n_heads=4,
        d_mlp=64,
        sliding_layers=(0,),
        max_new_tokens=8,
    )
    small = {"countdown-search": 3, "split": "test", "seed": 0}
    card = tr.train(
        cfg, out=tmp_path / "s", progress=False, eval_sample=small, eval_sample_large=small
    )
    assert card["model"] == "tiny-searcher"
    assert set(card["accuracy"]) == {"countdown-search"}
    assert "countdown-search problems" in card["head_spans_measured_on"]
    readme = (tmp_path / "s" / "README.md").read_text()
    assert readme.startswith("# tiny-searcher") and " no\n" in readme  # the search format
    model, _ = load(tmp_path / "s", name="tiny-searcher")
    assert type(model).__name__ == "Qwen3ForCausalLM" == card["architecture"]["class"]
    assert model.config.layer_types == ["sliding_attention", "full_attention"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tiny-searcher"], indirect=True)
def test_the_searchers_waad_saws_through_each_equation(fixed_sample) -> None:
    """The rhythm issue 18 asks for, on the searcher's own greedy searches: WAAD over the
    local heads climbs through each equation of the search (operators, ``=``, continuing
    digits) and drops at every separator (space, newline), a tooth per step."""
    import workbench as wb

    model = wb.load_model("tiny-searcher")
    ratios = []
    for prompt, completion, _ in fixed_sample["completions"]["countdown-search"][:10]:
        a = wb.analyze(model, wb.Trace.from_text(model, prompt, completion, chat=False))
        assert max(a.head_span[layer].max() for layer in (0, 1)) < 3.0  # the window heads
        assert set(a.local_heads) <= {(layer, h) for layer in (0, 1) for h in range(8)}
        ratios.append(waad_sawtooth(a))
    assert sum(ratios) / len(ratios) > SAWTOOTH_MIN_RATIO, ratios
    assert sum(r > 1.0 for r in ratios) >= 9, ratios
