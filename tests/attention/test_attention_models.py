"""The streaming engine against the loop reference on real models, and bad input.

Short traces and a few layers keep each test to a few seconds on two CPU cores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench as wb
from workbench._compat import attention_implementation
from workbench.attention import engine
from workbench.attention.metrics import DEFAULT_FAI_CUTS
from workbench.attention.reference import reference_analyze
from workbench.models import sampler

pytestmark = pytest.mark.slow

PROMPT = "What is 17 * 23?"
RESPONSE = "Let me think. 17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391. So the answer is 391."


@pytest.fixture(scope="module")
def trace(smol):
    return wb.Trace.from_text(smol, PROMPT, RESPONSE)


def close(a, b, atol=1e-5, rtol=1e-5):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    np.testing.assert_allclose(a[ok], b[ok], atol=atol, rtol=rtol)


# Entropy is -sum p log p over 49,152 tokens of float32 logits that went through 30 layers;
# two float32 forward passes (tiled vs eager attention, other CPU kernels) differ by about
# 1e-6 relative in the logits, which moved entropies of 1-5 nats by up to 5.3e-5 on another
# CPU. Relative 1e-4 covers that; a real error (a row off by one, a wrong softmax axis, the
# prompt's rows) moves them by 0.1 nats or more and still fails.
ENTROPY_TOL = dict(atol=1e-5, rtol=1e-4)


def close_metric(field, a, b):
    close(a, b, **(ENTROPY_TOL if field == "entropy" else {}))


def assert_matches_reference(a, ref):
    for f in ["head_span", "waad", "fai", "delta", "entropy"]:
        close_metric(f, getattr(a, f).numpy(), ref[f])
    close(a.receiver_kurtosis.numpy(), ref["receiver_kurtosis"], atol=1e-4, rtol=1e-4)
    for f in ["local_heads", "global_heads", "preplan", "anchors", "dominated", "intro"]:
        assert getattr(a, f) == ref[f], f
    for s in ["local", "global", "coupled", "entropy", "bottom-coupled"]:
        np.testing.assert_array_equal(
            a.gamma(s).numpy(), ref["gamma_" + s.replace("-", "_")].astype(np.float32)
        )


@pytest.mark.parametrize("path", ["exact", "tiled"])
def test_default_model_matches_reference(smol, trace, path):
    params = dict(window=10, fai_horizon=(0, None), top_q=0.4)
    a = wb.analyze(smol, trace, layers=[0, 14, 29], path=path, **params)
    ref = reference_analyze(smol, trace, layers=[0, 14, 29], **params)
    assert_matches_reference(a, ref)


def test_rl_setting_matches_reference(smol, trace):
    params = dict(window=5, fai_horizon=(10, 100), top_q=0.3, k=2, alpha=0.7)
    a = wb.analyze(smol, trace, layers="middle", **params)
    ref = reference_analyze(smol, trace, layers=wb.middle_layers(30), **params)
    assert_matches_reference(a, ref)
    # Heads outside the middle layers are not analysed: NaN span.
    assert torch.isnan(a.head_span[0]).all() and not torch.isnan(a.head_span[10]).any()


def test_head_subset_matches_reference(smol, trace):
    heads = [(3, 0), (3, 4), (7, 1), (7, 2), (7, 8)]
    a = wb.analyze(smol, trace, layers=[3, 7], heads=heads, head_quantiles=(0.4, 0.4))
    ref = reference_analyze(smol, trace, layers=[3, 7], heads=heads, head_quantiles=(0.4, 0.4))
    assert_matches_reference(a, ref)
    assert a.heads == heads


def test_tiled_path_matches_exact_statistics(smol, trace):
    heads = [(layer, h) for layer in (1, 20) for h in range(9)]
    kw = dict(max_window=16, cuts=DEFAULT_FAI_CUTS)
    s1, e1 = engine.collect(smol, trace.ids, trace.prompt_len, heads, path="exact", **kw)
    s2, e2 = engine.collect(
        smol, trace.ids, trace.prompt_len, heads, path="tiled", tile_rows=7, **kw
    )
    for f in ["rowsum", "dist", "band", "cut_sums"]:
        close(getattr(s1, f).numpy(), getattr(s2, f).numpy(), atol=1e-5, rtol=1e-5)
    close(e1.numpy(), e2.numpy(), **ENTROPY_TOL)
    # The plain model is back on its own attention implementation afterwards.
    assert attention_implementation(sampler(smol)) == "sdpa"


def test_tiny_reasoner_matches_reference(tiny):
    tr = wb.Trace.from_text(tiny, "12+7=", "12+7=19", chat=False)
    n = tiny.cfg.n_layers
    for path in ("exact", "tiled"):
        a = wb.analyze(tiny, tr, layers="all", path=path, fai_horizon=(1, None))
        ref = reference_analyze(tiny, tr, layers=list(range(n)), fai_horizon=(1, None))
        assert_matches_reference(a, ref)


@pytest.mark.parametrize("path", ["exact", "tiled"])
def test_beyond_a_sliding_window_fai_is_exactly_zero_and_ranks_no_receiver(path):
    """Layers 0 and 1 of tiny-searcher see the last 4 tokens only, so with H_lo = 10 their
    FAI is 0. Two float32 prefix sums of a column differ by rounding all the same, and
    that noise (of either sign, about 1e-8) gave those heads a receiver kurtosis: they
    were picked as receiver heads, and FAI on layer 1 alone ranked its anchors by it."""
    model = wb.load_model("tiny-searcher")
    trace = wb.Trace.from_text(
        model,
        "What is 7 + 5? Think step by step.",
        "7 + 5 = 12. So the answer is 12. Let me check: 12 - 5 = 7, yes. Answer: 12",
    )
    a = wb.analyze(model, trace, path=path, fai_horizon=(10, 100))
    window = [i for i, (layer, _) in enumerate(a.heads) if layer < 2]
    assert len(window) == 16
    assert (a.fai_per_head[window][:, trace.prompt_len :].nan_to_num() == 0).all()
    assert torch.isnan(a.receiver_kurtosis[:2]).all()
    ref = reference_analyze(model, trace, layers=[0, 1, 2, 3], fai_horizon=(10, 100))
    score = ref["receiver_kurtosis"]
    ranked = sorted((h for h in a.heads if not np.isnan(score[h])), key=lambda h: (-score[h], h))
    assert a.receiver_heads == sorted(ranked[: len(a.global_heads)])
    one = wb.analyze(model, trace, path=path, layers=[1], fai_horizon=(10, 100), fai_min_rows=1)
    ref1 = reference_analyze(model, trace, layers=[1], fai_horizon=(10, 100), fai_min_rows=1)
    assert one.anchors == ref1["anchors"]  # all FAI 0: the ties go to the lower positions


def test_heads_without_a_receiver_score_are_no_receivers(tiny):
    """A 3-token horizon leaves every kurtosis undefined; the receivers were then the first
    heads in (layer, head) order, and receiver_fai their mean."""
    tr = wb.Trace.from_text(tiny, "12+7=", "12+7=19", chat=False)
    a = wb.analyze(tiny, tr, fai_horizon=(0, None), fai_min_rows=1)
    b = a.with_params(fai_horizon=(len(tr) - 4, None))
    assert torch.isnan(b.receiver_kurtosis).all()
    assert b.receiver_heads == [] and torch.isnan(b.receiver_fai).all()
    assert not b.heads_frame()["receiver"].any()
    assert len(a.receiver_heads) == len(a.global_heads)  # with scores, as many as before


def test_with_params_needs_no_forward_pass(smol, trace, monkeypatch):
    a = wb.analyze(smol, trace, layers=[5, 15])

    def boom(*args, **kwargs):
        raise AssertionError("a forward pass ran")

    monkeypatch.setattr(engine, "collect_many", boom)
    changes = dict(window=20, fai_horizon=(10, 100), head_quantiles=(0.2, 0.3), top_q=0.3)
    b = a.with_params(**changes)
    monkeypatch.undo()
    c = wb.analyze(smol, trace, layers=[5, 15], **changes)
    for f in ["waad", "fai", "delta", "head_span"]:
        close(getattr(b, f).numpy(), getattr(c, f).numpy(), atol=1e-12, rtol=0)
    for f in ["local_heads", "global_heads", "preplan", "anchors", "dominated", "intro"]:
        assert getattr(b, f) == getattr(c, f)


def test_analyze_many_fixed_classes(smol, trace):
    other = wb.Trace.from_text(smol, "Name a colour.", "Blue, like the sky on a clear day.")
    out = wb.analyze_many(smol, [trace, other], layers=[2, 12], heads_from="batch", progress=False)
    mean_span = torch.stack([a.head_span for a in out]).nanmean(0)
    classes = wb.HeadClasses.from_span(mean_span)
    for a in out:
        assert a.local_heads == classes.local_heads and a.global_heads == classes.global_heads
    again = wb.analyze_many(smol, [other], layers=[2, 12], heads_from=classes, progress=False)
    assert again[0].global_heads == classes.global_heads
    close(again[0].fai.numpy(), out[1].fai.numpy(), atol=1e-12, rtol=0)
    per_seq = wb.analyze(smol, other, layers=[2, 12])
    assert per_seq.classes.local_heads == per_seq.local_heads


def test_frames_and_entropy_alignment(smol, trace):
    a = wb.analyze(smol, trace, layers=[0])
    df = a.to_frame()
    assert list(df["token"]) == trace.tokens
    assert (
        df["entropy"][: trace.prompt_len].isna().all()
        and df["entropy"][trace.prompt_len :].notna().all()
    )
    # entropy[t] is the entropy of the distribution that produced token t (logits at t-1).
    with torch.no_grad():
        logits = smol(trace.ids[None])[0].double()
    t = trace.prompt_len + 3
    p = torch.softmax(logits[t - 1], -1)
    assert abs(float(-(p * p.log()).sum()) - float(a.entropy[t])) < 1e-5
    assert len(a.heads_frame()) == 30 * 9


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layers=[30]), "out of range"),
        (dict(layers=[-31]), "out of range"),
        (dict(layers="top"), "not a layer selection"),
        (dict(layers=[]), "empty"),
        (dict(layers=[1], heads=[(1, 9)]), "out of range"),
        (dict(layers=[1], heads=[(2, 0)]), "not among the selected layers"),
        (dict(window=0), "window"),
        (dict(window=-3), "window"),
        (dict(head_quantiles=(0.3, 1.2)), "head_quantiles"),
        (dict(top_q=0), "top_q"),
        (dict(fai_horizon=(5, 2)), "H_hi"),
        (dict(k=-1), "k must"),
        (dict(path="fast"), "path"),
    ],
)
def test_bad_arguments(smol, trace, kwargs, match, monkeypatch):
    monkeypatch.setattr(engine, "collect_many", lambda *a, **k: pytest.fail("ran a forward pass"))
    kwargs = {"layers": [0], **kwargs}
    with pytest.raises(wb.WorkbenchError, match=match):
        wb.analyze(smol, trace, **kwargs)


def test_bad_traces_and_models(smol, trace):
    empty = wb.Trace(ids=trace.ids, tokens=trace.tokens, prompt_len=len(trace), text="")
    with pytest.raises(wb.WorkbenchError, match="empty response"):
        wb.analyze(smol, empty)
    n = smol.cfg.n_ctx + 1
    long = wb.Trace(ids=torch.zeros(n, dtype=torch.long), tokens=["a"] * n, prompt_len=5, text="")
    with pytest.raises(wb.WorkbenchError, match="context"):
        wb.analyze(smol, long)
    with pytest.raises(wb.WorkbenchError, match="no TransformerLens hooks"):
        wb.analyze(sampler(smol), trace)
    with pytest.raises(wb.WorkbenchError, match="heads_from"):
        wb.analyze_many(smol, [trace], heads_from="global")


@pytest.mark.parametrize("path", ["exact", "tiled"])
def test_batched_passes_match_single_passes(smol, trace, path):
    # Right padding: real tokens never attend to the pads after them.
    other = wb.Trace.from_text(smol, "Name a colour.", "Blue.")
    kw = dict(layers=[4, 17], path=path)
    batched = wb.analyze_many(smol, [trace, other], batch_size=2, progress=False, **kw)
    for a, t in zip(batched, [trace, other], strict=True):
        b = wb.analyze(smol, t, **kw)
        for f in ["head_span", "waad", "fai", "delta", "entropy"]:
            close_metric(f, getattr(a, f).numpy(), getattr(b, f).numpy())
        assert a.anchors == b.anchors and a.preplan == b.preplan
    g = wb.gamma_many(smol, [trace, other], "coupled", layers=[4, 17], batch_size=2)
    np.testing.assert_array_equal(
        g[1].numpy(), batched[1].with_params(fai_horizon=(10, 100)).gamma("coupled").numpy()
    )


def test_fast_other_layers_and_support_check(smol, trace):
    # Layers that are not analysed may use sdpa: the residual stream then differs from eager
    # attention only by float rounding, so the analysed layer's statistics stay close.
    heads = [(20, h) for h in range(9)]
    kw = dict(max_window=8, cuts=(1, 11, 101))
    s1, _ = engine.collect(smol, trace.ids, trace.prompt_len, heads, path="exact", **kw)
    s2, _ = engine.collect(
        smol, trace.ids, trace.prompt_len, heads, path="tiled", fast_other_layers=True, **kw
    )
    close(s1.dist.numpy(), s2.dist.numpy(), atol=1e-3, rtol=1e-3)
    close(s1.cut_sums.numpy(), s2.cut_sums.numpy(), atol=1e-4, rtol=1e-3)
    assert engine.tiled_supported(smol)
    assert not engine.tiled_supported(object())


@pytest.mark.parametrize("path", ["exact", "tiled"])
def test_without_entropy_the_pass_stops_after_the_last_layer(smol, trace, path):
    ran = set()
    # The exact path runs the bridge, the tiled path the plain model behind it.
    hf = sampler(smol)
    handles = []
    if path == "tiled":
        for name, module in [("block 18", hf.model.layers[18]), ("unembed", hf.lm_head)]:
            hook = lambda m, i, o, name=name: ran.add(name)  # noqa: E731
            handles.append(module.register_forward_hook(hook))
    else:
        for name in ["blocks.18.mlp.hook_out", "unembed.hook_out"]:
            smol.add_hook(name, lambda x, hook: ran.add(hook.name))
    try:
        full = wb.analyze(smol, trace, layers=[4, 17], path=path)
        assert len(ran) == 2, "the full pass runs block 18 and the unembedding"
        ran.clear()
        short = wb.analyze(smol, trace, layers=[4, 17], path=path, entropy=False)
        assert not ran, "blocks after the last analysed layer must not run"
    finally:
        smol.reset_hooks()
        for handle in handles:
            handle.remove()
    # Everything but the entropy comes from layers <= 17, so it is bit-for-bit the same.
    for f in ["head_span", "waad", "fai", "delta"]:
        close(getattr(short, f).numpy(), getattr(full, f).numpy(), atol=0, rtol=0)
    for s in ["local", "global", "coupled", "bottom-coupled"]:
        assert torch.equal(short.gamma(s), full.gamma(s))
    assert torch.isnan(short.entropy).all()
    with pytest.raises(wb.WorkbenchError, match="no entropies"):
        short.gamma("entropy")
    # gamma_many skips the logits for every strategy but "entropy", with the same weights.
    for s in ["coupled", "entropy"]:
        g = wb.gamma_many(smol, [trace], s, layers=[4, 17], rhythm=full.params)
        assert torch.equal(g[0], full.gamma(s))


def test_a_long_traces_logits_never_exist_all_at_once(smol):
    """The tiled path lets the output layer run on a few probe rows and computes the
    entropies from the hidden states in chunks: at T = 32768 the full logits alone would
    be 6.4 GB."""
    torch.manual_seed(0)
    ids = torch.randint(100, 40000, (700,))
    long = wb.Trace(ids=ids, tokens=["x"] * 700, prompt_len=100, text="")
    rows = []
    handle = sampler(smol).lm_head.register_forward_hook(lambda m, i, o: rows.append(o.shape[-2]))
    try:
        tiled = wb.analyze(smol, long, layers=[0], path="tiled")
    finally:
        handle.remove()
    # The model's probe rows, the tap's check of them, then 600 response rows in chunks.
    probe = engine._OutputTap.PROBE
    assert rows[:2] == [probe, probe] and max(rows) <= 256 and sum(rows[2:]) == 600
    exact = wb.analyze(smol, long, layers=[0], path="exact")
    close(tiled.entropy.numpy(), exact.entropy.numpy(), **ENTROPY_TOL)


def test_an_unknown_output_transform_falls_back_to_the_models_logits(smol, trace, monkeypatch):
    """If the model transforms its logits in a way the tap does not reproduce, the probe
    rows disagree and the entropies come from the model's own logits, never the tap's."""
    right = wb.analyze(smol, trace, layers=[0], path="tiled")
    real = engine._OutputTap.logits
    monkeypatch.setattr(engine._OutputTap, "logits", lambda self, h: 2 * real(self, h))
    fallback = wb.analyze(smol, trace, layers=[0], path="tiled")
    close(fallback.entropy.numpy(), right.entropy.numpy(), **ENTROPY_TOL)
