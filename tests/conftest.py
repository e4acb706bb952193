"""Shared fixtures: real models, loaded once per test session.

Tests never reach a model hub: HF_HUB_OFFLINE is set before anything imports transformers.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP thread in every process the tests start too (notebook kernels, RL panel runs,
# batch workers), not only in this one (`one_thread`): on two cores a notebook training RL
# beside the RL panel's run took 172 s and 168 s with two threads each, 18 s each with one.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

#: Where the tiny random checkpoints (`make_toy`) run: the CPU, or ``WORKBENCH_TEST_DEVICE``
#: (``cuda`` in `benchmarks/cuda_check.sh`, which runs the architecture matrix on a GPU;
#: Hugging Face's reference passes stay on the CPU).
TOY_DEVICE = os.environ.get("WORKBENCH_TEST_DEVICE", "cpu")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One torch thread for the whole suite.

    The test machines have two cores; small forward passes gain little from a second
    OpenMP thread, and two threads competing with any other process (a notebook kernel, a
    browser, another job) were measured 10-20x slower here than one.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def flexattention_afresh(monkeypatch):
    """Each test starts with FlexAttention not given up anywhere: a test whose kernel
    raised (`flex.give_up`, on a GPU a shape it could not compile) would otherwise send
    every later test of the process to the tiles, and their path checks would fail for
    that reason instead of their own."""
    from workbench.attention import flex

    monkeypatch.setattr(flex, "_GAVE_UP", set())


@pytest.fixture(scope="session")
def smol():
    """The default embedded model (SmolLM2-135M-Instruct) as a TransformerBridge."""
    import workbench as wb

    return wb.load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def tiny():
    """The shipped tiny reasoner as a TransformerBridge (skipped until it is trained)."""
    import workbench as wb
    from workbench.models import list_models

    info = {m.name: m for m in list_models()}["tiny-reasoner"]
    if not info.available:
        pytest.skip("the tiny reasoner checkpoint is not in workbench/tiny/checkpoint yet")
    return wb.load_model("tiny-reasoner", device="cpu")


def _save_toy(folder, config_class, model_class, **overrides):
    import workbench as wb
    from workbench.tiny.tokenizer import build_tokenizer

    tok = build_tokenizer()
    settings = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=160,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model_class(config_class(**{**settings, **overrides})).save_pretrained(folder)
    tok.save_pretrained(folder)
    return wb.load_model(str(folder), device=TOY_DEVICE)


@pytest.fixture(scope="session")
def make_toy(tmp_path_factory):
    """``make_toy(ConfigClass, ModelClass, **overrides)``: a tiny random checkpoint (2
    layers, 4 query heads sharing 2 key/value heads, d_model 32) of any architecture, with
    the tiny reasoner's tokenizer, saved as a folder and loaded through the zoo."""

    def make(config_class, model_class, **overrides):
        folder = tmp_path_factory.mktemp(model_class.__name__)
        return _save_toy(folder, config_class, model_class, **overrides)

    return make


#: Hybrid toys (`hybrid_toy`), 4 layers each: ``(config, model class, overrides)``.
HYBRIDS = {
    # layer types: linear, linear, linear, full attention
    "qwen3-next": ("Qwen3NextConfig", "Qwen3NextForCausalLM", {"head_dim": 8}),
    # the same layout; its class does not declare the attention interface, but uses it
    "qwen3.5": ("Qwen3_5TextConfig", "Qwen3_5ForCausalLM", {"head_dim": 8}),
    # Mamba layers, with attention in layers 1 and 3
    "jamba": ("JambaConfig", "JambaForCausalLM", {"attn_layer_period": 2, "attn_layer_offset": 1}),
}


@pytest.fixture(scope="session")
def hybrid_toy(make_toy):
    """``hybrid_toy(name)``: a 4-layer random hybrid model of `HYBRIDS` (linear-attention or
    state-space layers between attention layers), built once per session."""
    import transformers

    built: dict[str, object] = {}

    def get(name: str):
        if name not in built:
            config, model, overrides = HYBRIDS[name]
            built[name] = make_toy(
                getattr(transformers, config),
                getattr(transformers, model),
                num_hidden_layers=4,
                max_position_embeddings=1024,
                initializer_range=0.2,
                **overrides,
            )
        return built[name]

    return get


@pytest.fixture(scope="session")
def toy_llama(make_toy):
    """A 2-layer random Llama (4 query heads sharing 2 key/value heads) with the tiny
    reasoner's tokenizer, saved as a checkpoint folder and loaded through the zoo: a real
    model whose numbers are small enough to check closed forms on."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return make_toy(
        LlamaConfig, LlamaForCausalLM, tie_word_embeddings=True, attn_implementation="eager"
    )


@pytest.fixture
def altair_globals():
    """Altair's active theme and renderer before the test; restored after it."""
    import altair as alt

    before = (alt.theme.active, alt.renderers.active)
    yield before
    alt.theme.enable(before[0])
    alt.renderers.enable(before[1])
