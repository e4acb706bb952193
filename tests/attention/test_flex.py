"""FlexAttention's causal block mask, built from the blocks' corners (`flex._causal_blocks`),
and how its compiled kernel is called.

`create_block_mask` evaluates a mask at all ``T^2`` pairs (12 GB of temporaries at T =
32768); the engine builds the causal mask from ``(T / 128)^2`` block corners instead. For
every shape (lengths that are and are not multiples of the block, a KV cache offset, a
single row), both must list the same partial and full blocks and mean the same mask.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask

from workbench.attention import flex

CPU = torch.device("cpu")
SHAPES = [(1, 1), (5, 5), (128, 128), (129, 300), (300, 300), (200, 517), (1, 400)]


def assert_same(got, want) -> None:
    for field in ("kv_num_blocks", "full_kv_num_blocks"):
        assert torch.equal(getattr(got, field), getattr(want, field)), field
    assert torch.equal(got.to_dense(), want.to_dense())


@pytest.mark.parametrize(("tq", "tk"), SHAPES)
def test_the_causal_block_mask_is_create_block_masks(tq, tk):
    offset = tk - tq
    want = create_block_mask(lambda b, h, q, k: q + offset >= k, None, None, tq, tk, CPU)
    assert_same(flex._causal_blocks(tq, tk, CPU), want)


def test_the_compiled_kernel_may_keep_more_graphs_than_dynamos_default(monkeypatch):
    """Off the CPU each variant of the call (causal or masked, each head width, static
    then dynamic shapes) is a graph of the one compiled flex_attention; past Dynamo's
    default cap of 8 it would run uncompiled, dense in T^2 memory. The compiled call runs
    with the cap raised to `flex.RECOMPILES`, and only during it."""
    import torch._dynamo.config as dynamo

    seen = []
    monkeypatch.setattr(
        torch, "compile", lambda fn: lambda *a, **k: seen.append(dynamo.recompile_limit)
    )
    flex._compiled.cache_clear()
    try:
        run = flex._compiled("cuda")
        before = dynamo.recompile_limit
        run()
        assert seen == [flex.RECOMPILES] and dynamo.recompile_limit == before
    finally:
        flex._compiled.cache_clear()


def test_compiling_says_so_where_progress_shows(monkeypatch, capsys):
    """The first compiled call takes a minute or more with nothing to show for it, so in a
    notebook or a terminal one line says what is happening; in a log (papermill, CI,
    ``WORKBENCH_PROGRESS=off``) nothing is written."""
    from workbench import _progress

    monkeypatch.setattr(torch, "compile", lambda fn: fn)
    for shown in (True, False):
        monkeypatch.setattr(_progress, "bars_shown", lambda shown=shown: shown)
        flex._compiled.cache_clear()
        try:
            flex._compiled("cuda")
            flex._compiled("cuda")  # once per device type
        finally:
            flex._compiled.cache_clear()
        said = capsys.readouterr().err.count("FlexAttention: compiling its kernels for cuda")
        assert said == (1 if shown else 0)


def test_short_traces_keep_the_flex_attention_kernel(monkeypatch):
    """Under 128 queries Inductor would lower the call to its flex-decoding kernel, which
    had no valid configuration on an H200 for the toys' shapes (every short trace gave up
    and took tiles; session 36). Every call forces the flex-attention kernel, and the
    probe runs a length under one block, so a device where even that fails is caught
    before a pass rather than in one. The results stay FlexAttention's own (uncompiled
    here) and equal the dense reference."""
    calls = []
    real = flex._compiled("cpu")

    def recording(*args, **kwargs):
        calls.append((args[0].shape[2], kwargs.get("kernel_options")))
        return real(*args, **kwargs)

    monkeypatch.setattr(flex, "_compiled", lambda device_type: recording)
    assert flex._probe(CPU, torch.float32, 8) is None
    assert {n for n, _ in calls} >= {200, 60}
    assert all(options == {"FORCE_USE_FLEX_ATTENTION": True} for _, options in calls)
