"""The compat seam: the one module that touches private APIs, and the version check."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

import workbench
from workbench import _compat
from workbench.attention import engine
from workbench.errors import WorkbenchError

PACKAGE = Path(workbench.__file__).parent

# What only the seam may say: private modules, internal class names, private methods and
# attributes of transformers, TransformerLens and TRL.
PRIVATE = [
    r"\.original_component\b",
    r"\._modules\b",
    r"__dict__\[\"forward\"\]",
    r"transformers\.models\.\w+\.modeling_",
    r"\._name_or_path\b|\"_name_or_path\"",
    r"_generate_and_score_completions",
    r"\._metrics\b",
    r"AttentionBridge\b",
]


def test_no_module_but_the_seam_uses_a_private_api():
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_compat.py":
            continue
        text = path.read_text()
        found += [f"{path.relative_to(PACKAGE)}: {p}" for p in PRIVATE if re.search(p, text)]
    assert not found, found


@pytest.fixture
def fresh_check(monkeypatch):
    _compat.check_versions.cache_clear()
    yield
    _compat.check_versions.cache_clear()


def test_tested_versions_do_not_warn(fresh_check):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _compat.check_versions() == {}


def test_an_untested_version_warns_once_with_the_fix(fresh_check, monkeypatch):
    real = _compat._installed
    monkeypatch.setattr(
        _compat, "_installed", lambda d: "5.99.0" if d == "transformers" else real(d)
    )
    with pytest.warns(_compat.UntestedVersionWarning) as record:
        bad = _compat.check_versions()
        _compat.check_versions()  # cached: no second warning
    assert bad == {"transformers": ("5.99.0", _compat.TESTED["transformers"])}
    assert len(record) == 1
    message = str(record[0].message)
    assert "transformers 5.99.0" in message and "make clean-venv && make test" in message
    assert "make test-latest" in message


def test_a_local_build_tag_counts_as_its_release(monkeypatch):
    real = _compat._installed
    monkeypatch.setattr(_compat, "_installed", lambda d: "2.13.0+cpu" if d == "torch" else real(d))
    assert "torch" not in _compat.untested_versions()


class TestSlidingWindow:
    def test_configs(self):
        from transformers import Gemma2Config, LlamaConfig, MistralConfig, Qwen2Config

        assert not _compat.has_sliding_window(LlamaConfig())
        assert _compat.has_sliding_window(MistralConfig(sliding_window=16))
        assert not _compat.has_sliding_window(MistralConfig(sliding_window=None))
        assert not _compat.has_sliding_window(Qwen2Config(use_sliding_window=False))
        assert _compat.has_sliding_window(
            Qwen2Config(use_sliding_window=True, sliding_window=16, max_window_layers=1)
        )
        assert _compat.has_sliding_window(Gemma2Config())

    def test_the_tiled_path_refuses_a_sliding_window_model(self, make_toy):
        """The tiled path applies a plain causal mask, so a sliding window must send the
        analysis to the exact path (it once gave wrong numbers with no warning)."""
        from transformers import MistralConfig, MistralForCausalLM

        model = make_toy(
            MistralConfig, MistralForCausalLM, sliding_window=16, max_position_embeddings=256
        )
        assert not engine.tiled_supported(model)
        with pytest.raises(WorkbenchError, match="tiled path does not support"):
            ids = torch.arange(3, 40)
            engine.collect(model, ids, 10, [(0, 0)], max_window=4, cuts=(1,), path="tiled")


def test_seam_helpers_on_a_real_bridge(toy_llama):
    attn = toy_llama.blocks[0].attn
    oc, *linears = _compat.attention_parts(attn)
    assert all(isinstance(m, torch.nn.Linear) for m in linears) and hasattr(oc, "head_dim")
    assert _compat.is_plain_rotary_attention(attn)
    assert engine.tiled_supported(toy_llama)
    with _compat.replaced_forwards({attn: lambda *a, **k: None}):
        assert "forward" in attn.__dict__
    assert "forward" not in attn.__dict__
