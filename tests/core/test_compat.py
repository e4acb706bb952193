"""The compat seam: the one module that touches private APIs, and the version check."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

import workbench
from workbench import _compat
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
    r"\._tokenizer\b",
    r"get_tokenizer_with_bos|init_kwargs",
    r"load_modality_processor",
    r"_save_checkpoint|_load_optimizer_and_scheduler|_get_output_dir",
    r"progress_bar_states",
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
    with pytest.warns(workbench.UntestedVersionWarning) as record:  # the public name
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


def test_the_registered_attention_function_is_left_behind_by_nothing(toy_llama):
    """An analysis pass switches the plain model to the workbench's attention function
    and back, whatever happens inside."""
    import workbench as wb
    from workbench.attention import interface
    from workbench.models import sampler

    hf = sampler(toy_llama)
    before = _compat.attention_implementation(hf)
    ids = torch.arange(3, 40)
    trace = wb.Trace(ids=ids, tokens=["x"] * len(ids), prompt_len=10, text="")
    wb.analyze(toy_llama, trace, path="tiled")
    assert _compat.attention_implementation(hf) == before
    with pytest.raises(RuntimeError, match="boom"), interface.analysis_pass(hf, {}):
        assert _compat.attention_implementation(hf) == interface.NAME
        raise RuntimeError("boom")
    assert _compat.attention_implementation(hf) == before
    with pytest.raises(WorkbenchError, match="outside an analysis pass"):
        interface.attention(hf.model.layers[0].self_attn, *[torch.zeros(1, 4, 2, 8)] * 3, None)


def test_make_test_latest_lets_the_untested_version_warning_through(fresh_check, monkeypatch):
    """`make test-latest` runs newer versions on purpose: its -W filter must match the
    warning's text, or every test would fail on it (warnings are errors in the suite)."""
    make = (PACKAGE.parent / "Makefile").read_text()
    prefix = re.search(r'-W "default:([^"]+)"', make).group(1)
    monkeypatch.setattr(_compat, "_installed", lambda d: "0.0.1")
    with pytest.warns(_compat.UntestedVersionWarning) as record:
        _compat.check_versions()
    assert str(record[0].message).startswith(prefix)


def test_a_layer_that_never_reaches_the_function_is_an_error_not_numbers(toy_llama):
    from workbench.attention import interface
    from workbench.models import sampler

    hf = sampler(toy_llama)
    noop = lambda rows, probs, key0, sums: None  # noqa: E731
    with (
        pytest.raises(interface.NotRouted, match=r"(?s)layer\(s\) \[5\].*path=\"exact\""),
        interface.analysis_pass(hf, {0: noop, 5: noop}),
    ):
        hf(input_ids=torch.arange(3, 20)[None])


def test_auto_falls_back_to_the_bridge_hooks_when_a_layer_bypasses_the_function(
    toy_llama, monkeypatch
):
    import contextlib

    import workbench as wb
    from workbench.attention import interface

    ids = torch.arange(3, 40)
    trace = wb.Trace(ids=ids, tokens=["x"] * len(ids), prompt_len=10, text="")
    exact = wb.analyze(toy_llama, trace, path="exact")
    real = interface.analysis_pass

    @contextlib.contextmanager
    def bypassed(*args, **kwargs):
        with real(*args, **kwargs):
            yield
        raise interface.NotRouted("layer 1 bypassed the attention interface", "use exact")

    monkeypatch.setattr(interface, "analysis_pass", bypassed)
    with pytest.raises(interface.NotRouted):
        wb.analyze(toy_llama, trace, path="tiled")
    auto = wb.analyze(toy_llama, trace)  # falls back to the hooks
    assert torch.equal(auto.head_span, exact.head_span) and auto.anchors == exact.anchors


def test_bridging_a_multimodal_checkpoint_installs_nothing(make_toy, monkeypatch):
    """TransformerLens's boot loads an image processor for Gemma 3's image-text model and,
    lacking torchvision, ran `pip install torchvision`: here it replaced the locked CPU
    torch with a CUDA build. The workbench reads text and needs no processor."""
    import importlib
    import subprocess

    from toy_architectures import build

    def no_install(cmd, *args, **kwargs):
        pytest.fail(f"a package manager ran: {cmd}")

    for name in ("check_call", "check_output", "run", "Popen", "call"):
        monkeypatch.setattr(subprocess, name, no_install)
    source = importlib.import_module(_compat._BOOT_MODULE)
    assert callable(source.load_modality_processor)  # still there to turn off
    model = build(make_toy, "gemma3-multimodal")
    assert model.cfg.n_layers == 2 and getattr(model, "processor", None) is None
    assert source.load_modality_processor is not None and "lambda" not in repr(
        source.load_modality_processor
    )  # put back after the boot


def test_a_model_whose_forward_trl_patched_is_bridged_with_its_own_forward(make_toy):
    """TRL's GRPOTrainer replaces the policy's `forward` (its fused LM head) with a closure
    over the original model's forward; the bridge's structural copy ran the original's
    modules, its pattern hooks never fired, and GPT-Neo's credit came from all-zero
    attention (WAAD 0.0 against 6.6) under TRL."""
    from toy_architectures import build
    from trl.trainer.utils import add_fused_lm_head

    import workbench as wb
    from workbench.models import bridge_model, sampler

    plain = build(make_toy, "gpt-neo-local")  # takes the exact path (hooks), as under TRL
    hf, tok = sampler(plain), plain.tokenizer
    ids = torch.randint(4, len(tok), (40,), generator=torch.Generator().manual_seed(0))
    trace = wb.Trace(ids=ids, tokens=tok.convert_ids_to_tokens(ids.tolist()), prompt_len=8,
                     text="")  # fmt: skip
    want = wb.analyze(plain, trace, path="exact")
    add_fused_lm_head(hf)
    got = wb.analyze(bridge_model(hf, tok), trace, path="exact")
    torch.testing.assert_close(got.waad, want.waad, equal_nan=True)
    assert float(got.waad.nan_to_num().abs().max()) > 0
    assert got.anchors == want.anchors


def test_the_exact_path_refuses_a_pass_whose_pattern_hooks_never_fired(toy_llama, monkeypatch):
    """Whatever makes the hooks miss a layer, its statistics would be zeros: refused."""
    import workbench as wb

    trace = wb.Trace.from_text(toy_llama, "What is 3 + 4?", " 3 plus 4 is 7.")
    monkeypatch.setattr(
        toy_llama, "run_with_hooks", lambda inp, fwd_hooks, stop_at_layer=None: toy_llama(inp)
    )
    with pytest.raises(WorkbenchError, match=r"hooks of layer\(s\) \[0, 1\] never fired"):
        wb.analyze(toy_llama, trace, path="exact")
