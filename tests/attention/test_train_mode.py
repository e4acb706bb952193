"""A model left in train mode (after fine-tuning through the bridge, say) is measured as in
eval mode, on every path that measures: dropout never enters a number, and the model's mode
is left as it was."""

from __future__ import annotations

import pytest
import torch
from toy_architectures import build

import workbench as wb
from workbench.ablation.effects import logits_of
from workbench.ablation.interventions import resid_cache
from workbench.attention.reference import reference_analyze
from workbench.viz.maps import attention_maps

PROMPT, RESPONSE = "12+34=", " 46, yes 46: 12 and 34 make 46 and 8 9 7 5 3 2 1 0 99"


@pytest.fixture(scope="module")
def gpt2(make_toy):
    """GPT-2's defaults drop attention, residual and embedding activations (p = 0.1)."""
    model = build(make_toy, "gpt2")
    assert model.cfg.n_layers == 2 and wb.models.sampler(model).config.attn_pdrop == 0.1
    return model


def _in_train_mode(model):
    model.train()
    model.original_model.train()
    return [m.training for m in model.modules()] + [
        m.training for m in model.original_model.modules()
    ]


@pytest.mark.parametrize("path", ["exact", "tiled"])
def test_analyze_in_train_mode_gives_the_eval_numbers(gpt2, path):
    trace = wb.Trace.from_text(gpt2, PROMPT, RESPONSE)
    gpt2.eval()
    want = wb.analyze(gpt2, trace, path=path)
    modes = _in_train_mode(gpt2)
    # The exact path gave different WAAD on every call, up to 0.9 off (of a 0..10 range).
    for _ in range(2):
        got = wb.analyze(gpt2, trace, path=path)
        for name in ("waad", "fai", "entropy"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), equal_nan=True)
        assert got.anchors == want.anchors and got.preplan == want.preplan
    assert _in_train_mode(gpt2) == modes and all(modes)
    gpt2.eval()


def test_the_reference_maps_and_ablation_passes_ignore_train_mode(gpt2):
    trace = wb.Trace.from_text(gpt2, PROMPT, RESPONSE)
    gpt2.eval()
    want_ref = reference_analyze(gpt2, trace, layers=[0, 1])
    want_maps = attention_maps(gpt2, trace).maps
    want_logits = logits_of(gpt2, trace.ids)
    want_resid = resid_cache(gpt2, trace, [1])[1]
    _in_train_mode(gpt2)
    assert torch.equal(attention_maps(gpt2, trace).maps, want_maps)
    assert torch.equal(logits_of(gpt2, trace.ids), want_logits)
    assert torch.equal(resid_cache(gpt2, trace, [1])[1], want_resid)
    got_ref = reference_analyze(gpt2, trace, layers=[0, 1])
    for key in ("waad", "fai"):
        torch.testing.assert_close(
            torch.as_tensor(got_ref[key]), torch.as_tensor(want_ref[key]), equal_nan=True
        )
    assert gpt2.training and gpt2.original_model.training  # left as it was
    gpt2.eval()
