"""The workbench's attention function, registered with transformers' AttentionInterface.

During an analysis pass the plain Hugging Face model (the one behind the bridge, see
`workbench.models.sampler`) runs with ``attn_implementation="workbench"``. Its attention
layers then call `attention` with what every architecture really uses: queries and keys
after rotary embeddings and q/k norms, the real mask (sliding windows included), the
scaling, and extras such as the logit soft-cap or attention sinks. `attention` computes
eager attention exactly, in tiles of query rows, hands each tile of probabilities
``[batch, head_index, query_tile, key_tile]`` (the keys from the first any row of the tile
sees) to the pass's reducer for that layer, and returns the attention output, so no
``T x T`` map ever exists.

Exactness: each tile is ``softmax(softcap(q k^T * scaling) + mask)`` in float32, the same
operations, in the same order, as transformers' eager attention; keys after a query are
skipped (every model here is causal), and so are keys a boolean mask hides from every row
of a tile (a sliding window: `_first_key`; the reducers then reduce only the keys the tile
computed). On the CPU without gradients the softmax is the compiled kernel's
(`workbench.attention.kernels`: its ``exp`` within 2 ulp of ``expf``, each probability
within 1.5e-6 of float64, as close as PyTorch's), which hands the reducers the tile's
row and column sums with it (`kernels.TileSums`); elsewhere, or where no C compiler is
found, it is PyTorch's. Memory beyond the model: one tile of scores and
probabilities (about ``4M`` elements on the CPU, up to ``2^28`` on a GPU: `tiling`) and
the mask transformers builds (None for plain causal attention; a ``[batch, 1, T, T]``
boolean mask for sliding windows).

Layers that are not analysed use the same computation, or transformers' sdpa with
``fast_other_layers=True`` (faster; float rounding then differs from eager).

The band path: a reducer that needs only the row distances and the first few diagonals
(`Banded`: a pass that keeps no column sums, such as the RL credit with its FAI horizon
(10, 100)) gets them without any tile. One call of the CPU flash kernel returns the
output, each row's log-sum-exp and, through an extra value channel holding the key
positions, ``sum_s A[t, s] s``; the band ``A[t, t-d] = exp(q_t k_{t-d} scaling - LSE_t)``
costs ``width`` dot products per row. Measured on one SmolLM2-shaped layer at T = 8192,
one thread: 1.16-1.37x sdpa (q and k padded with zeros to the value width costs about
10% of that; the band about 7%), against 1.85-2.15x for sdpa plus tiles. It applies to
plain attention (no soft-cap, no sinks, no mask or a boolean one) in float32 without
gradients, on the CPU, and on CUDA where compiled FlexAttention passed its check
(`workbench.attention.flex`: the same output, log-sum-exp and position channel; on an
H200, 1.58-2.44x sdpa through the middle layers at T = 8192 and 1.25x at 32768, session
36, where 22% of the pass was copying the statistics to the CPU); anywhere else the same
reducer gets tiles. Memory: the kernel's own blocks, the padded q, k and v (``batch x
heads x T x (d_head + 8)`` each), and a float copy of the mask in chunks of query rows
where one is given.

The analysis (column sums kept) takes tiles on every device, in the device's block sizes
(`workbench.attention.tiling`). On an H200 they cost 1.87-1.88x sdpa over all layers at
T = 8192 and 0.92-0.93x at 32768 (sessions 35 and 36; sdpa there is not flash). A
FlexAttention path that read the column sums off transposed calls, without tiles,
measured 2.86x and 1.84x in the same run, with 88 s of compilation, and was removed
(commit 5ed891b has it).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .._compat import (
    attention_implementation,
    register_attention,
    sdpa_attention,
)
from ..errors import WorkbenchError
from . import flex, kernels, tiling

__all__ = ["NAME", "Banded", "Fused", "NotRouted", "StopPass", "analysis_pass", "attention"]

#: The name the function is registered under.
NAME = "workbench"
#: ``reduce(rows, probs, key0, sums)``: the probabilities of query positions ``rows`` to the
#: keys ``key0 .. key0 + key_pos - 1`` (the keys before `key0` are masked for every row: a
#: sliding window), and their row and column sums when the compiled kernel computed them
#: with the softmax (`kernels.TileSums`; None otherwise).
Reducer = Callable[
    [slice, Float[Tensor, "batch head_index query_pos key_pos"], int, "kernels.TileSums | None"],
    None,
]
BandReduce = Callable[
    [
        slice,
        Float[Tensor, "batch head_index query_pos"],
        Float[Tensor, "batch head_index query_pos band"],
    ],
    None,
]


@dataclass(frozen=True)
class _Asking:
    """A reducer that asks the attention function for more than its tiles; it reduces the
    tiles with `tiles` wherever that cannot be given."""

    tiles: Reducer

    def __call__(
        self, rows: slice, probs: Tensor, key0: int, sums: kernels.TileSums | None
    ) -> None:
        self.tiles(rows, probs, key0, sums)


@dataclass(frozen=True)
class Banded(_Asking):
    """A reducer that needs no more of a layer's attention than its row distances and its
    first `width` diagonals (a pass that keeps no column sums, such as the RL credit).

    Where the attention is plain (no soft-cap, no sinks), float32 on the CPU (or on CUDA,
    through FlexAttention: `flex`) and computed without gradients, `attention` then never
    forms a tile of probabilities: one flash
    attention call gives the output, each row's log-sum-exp and, through an extra value
    channel holding the key positions, ``sum_s A[t, s] s``; the band ``A[t, t-d] =
    exp(q_t k_{t-d} scaling - LSE_t)`` costs ``width`` dot products per row. `band` then
    receives, for query positions ``rows``, ``dist [batch head_index query_pos]``
    (``sum_s A[t, s] (t - s)``) and ``band [batch head_index query_pos width]``
    (``A[t, t-d]``, 0 where ``t - d < 0`` or masked). Elsewhere the tiles go to `tiles`.
    """

    width: int
    band: BandReduce


@dataclass(frozen=True)
class Fused(_Asking):
    """A reducer that also takes, from the compiled kernel (`kernels`), each tile's first
    `width` diagonals and, for each of `cuts`, the column sums of the upper triangle of the
    square block of columns ``rows.start - cut + 1 ..`` (`kernels.TileSums.band` and
    ``.tri``): what `StatsAccumulator` reads off every tile of a single sequence. Where
    the kernel does not run, the tiles go to `tiles` without them."""

    width: int
    cuts: tuple[int, ...]


class StopPass(Exception):
    """Raised inside the forward pass once the last analysed layer is done."""


class NotRouted(WorkbenchError):
    """An analysed layer's attention never reached the workbench's function."""


@dataclass
class _Pass:
    reducers: dict[int, Reducer]
    stop_after: int | None
    tile_rows: int | None
    fast_other_layers: bool
    sdpa_outputs: bool = False
    seen: set[int] = field(default_factory=set)


_ACTIVE: contextvars.ContextVar[_Pass | None] = contextvars.ContextVar("workbench_pass")


@functools.cache
def _register() -> None:
    register_attention(NAME, attention)


@contextlib.contextmanager
def analysis_pass(
    hf_model: Any,
    reducers: dict[int, Reducer],
    *,
    stop_after: int | None = None,
    tile_rows: int | None = None,
    fast_other_layers: bool = False,
    train: bool = False,
    sdpa_outputs: bool = False,
) -> Iterator[None]:
    """Run `hf_model`'s forward passes inside the block through `attention`.

    Args:
        hf_model: a plain Hugging Face causal LM (not one wrapped by TransformerLens).
        reducers: ``{layer: reduce(rows, probs, key0, sums)}``; ``probs`` is ``[batch
            head_index query_tile key_tile]`` for the query positions ``rows`` and the keys
            from ``key0`` (the keys before it are masked for every row of the tile);
            ``sums`` its `kernels.TileSums` or None.
        stop_after: raise `StopPass` when a later layer's attention is reached (the caller
            catches it): the rest of the model never runs.
        tile_rows: query rows per tile (default: `tiling.tile_rows`, sized for the
            device).
        fast_other_layers: layers without a reducer use sdpa.
        train: leave the model's mode alone (a training forward; gradients flow through
            `attention`, and the reducers see detached probabilities). Default: eval mode
            inside the block.
        sdpa_outputs: every layer's output comes from sdpa (with its fast backward); a
            layer with a reducer also computes its probabilities in tiles, without
            gradients, only to reduce them (the RL credit passes: the model computes
            exactly what it computes without the workbench, plus the reductions).

    Raises:
        NotRouted: after the block, if an analysed layer's attention never came through.
    """
    _register()
    run = _Pass(dict(reducers), stop_after, tile_rows, fast_other_layers, sdpa_outputs)
    previous = attention_implementation(hf_model)
    was_training = hf_model.training
    token = _ACTIVE.set(run)
    # The modules know their pass too: autograd may recompute a checkpointed layer in
    # another thread, where the context variable is not set.
    tagged = [m for m in hf_model.modules() if hasattr(m, "layer_idx")]
    for m in tagged:
        m._workbench_pass = run
    hf_model.set_attn_implementation(NAME)
    if not train:
        hf_model.eval()
    try:
        yield
    finally:
        hf_model.set_attn_implementation(previous)
        if not train:  # a training step may change the mode itself; leave that alone
            hf_model.train(was_training)
        for m in tagged:
            m.__dict__.pop("_workbench_pass", None)
        _ACTIVE.reset(token)
    _check_seen(hf_model, run.reducers, run.seen)


def _check_seen(hf_model: Any, reducers: dict[int, Reducer], seen: set[int]) -> None:
    missing = sorted(set(reducers) - seen)
    if missing:
        raise NotRouted(
            f"the attention of layer(s) {missing} of {type(hf_model).__name__} did not go "
            "through transformers' attention interface, so the tiled path cannot analyse it",
            'use path="exact" (TransformerLens hooks on the bridge)',
        )


def routes_every_layer(hf_model: Any, layers: list[int]) -> bool:
    """Whether the attention of every layer in `layers` comes through `attention`, found
    with a forward pass of two tokens up to the last of them (milliseconds). A layer that
    bypasses the interface computes its full ``[batch head_index query_pos key_pos]``
    pattern eagerly inside a tiled pass, so a caller asks this before a pass whose
    patterns cannot fit in memory."""
    device = next(hf_model.parameters()).device
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    try:
        with (
            torch.no_grad(),
            analysis_pass(hf_model, {layer: _ignore for layer in layers}, stop_after=max(layers)),
            contextlib.suppress(StopPass),
        ):
            hf_model(input_ids=ids, use_cache=False)
    except NotRouted:
        return False
    return True


def _ignore(*_: Any) -> None:
    """A reducer that keeps nothing (`routes_every_layer`, `reproduces_eager`)."""


def reproduces_eager(hf_model: Any, layers: list[int], n_pos: int = 64) -> bool:
    """Whether `attention` computes this model's attention as its own eager attention does,
    for a model class that does not declare transformers' attention interface
    (``_supports_attention_backend``) but may use it all the same (Qwen3.5, OLMo-hybrid,
    Bamba, Falcon-H1 and StableLM do; BLOOM, Falcon, MPT, GPT-1 and XGLM do not).

    Checked once per model (the answer is kept on it) with `n_pos` fixed random tokens:
    every layer in `layers` must reach `attention`, and the logits of that pass must equal
    those of the model's eager attention, to 1e-4 of their largest magnitude in float32
    (1e-2 in a 16-bit dtype, whose eager attention rounds its probabilities). A class that
    declares the interface is not checked: the architecture matrix covers those.
    """
    known = hf_model.__dict__.get("_workbench_reproduces_eager")
    if known is not None:
        return known
    ok = bool(layers)
    if ok:
        vocab = hf_model.get_input_embeddings().weight.shape[0]
        device = next(hf_model.parameters()).device
        limit = getattr(hf_model.config.get_text_config(), "max_position_embeddings", None)
        n_pos = min(n_pos, limit) if isinstance(limit, int) and limit > 1 else n_pos
        ids = torch.randint(0, vocab, (1, n_pos), generator=torch.Generator().manual_seed(0))
        ids = ids.to(device)
        previous, was_training = attention_implementation(hf_model), hf_model.training
        try:
            with torch.no_grad():
                with analysis_pass(hf_model, {layer: _ignore for layer in layers}):
                    ours = hf_model(input_ids=ids, use_cache=False).logits.double()
                hf_model.set_attn_implementation("eager")
                hf_model.eval()
                theirs = hf_model(input_ids=ids, use_cache=False).logits.double()
        except NotRouted:  # a layer's attention never reached `attention`
            ok = False
        finally:
            hf_model.set_attn_implementation(previous)
            hf_model.train(was_training)
        if ok:
            tol = 1e-4 if next(hf_model.parameters()).dtype == torch.float32 else 1e-2
            ok = bool(((ours - theirs).abs().max() <= tol * theirs.abs().max()).item())
    hf_model.__dict__["_workbench_reproduces_eager"] = ok
    return ok


def active_pass(hf_model: Any) -> _Pass | None:
    """The pass `hf_model` routes its attention through, if any."""
    return next(
        (
            m.__dict__["_workbench_pass"]
            for m in hf_model.modules()
            if "_workbench_pass" in m.__dict__
        ),
        None,
    )


@contextlib.contextmanager
def armed(hf_model: Any, reducers: dict[int, Reducer]) -> Iterator[None]:
    """Give the reducers to the pass `hf_model` already routes through, for the block.

    For a pass that spans more than the forward to reduce: a training step whose backward
    recomputes checkpointed layers must run the same attention computation as its forward,
    so the routing has to outlive the forward, while only that forward feeds reducers.
    """
    run = active_pass(hf_model)
    if run is None:
        raise WorkbenchError(
            "the model does not route its attention through the workbench's function",
            "wrap the step in interface.analysis_pass(model, {}, ...) first",
        )
    before, run.reducers, run.seen = run.reducers, dict(reducers), set()
    try:
        yield
    finally:
        armed_with, run.reducers = run.reducers, before
    _check_seen(hf_model, armed_with, run.seen)


def attention(
    module: Any,
    query: Float[Tensor, "batch head_index query_pos d_head"],
    key: Float[Tensor, "batch kv_head key_pos d_head"],
    value: Float[Tensor, "batch kv_head key_pos d_value"],
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    s_aux: Tensor | None = None,
    **kwargs: Any,
) -> tuple[Float[Tensor, "batch query_pos head_index d_value"], None]:
    """Exact eager attention in query tiles, feeding the active pass's reducer.

    ``A = softmax(softcap(q k^T * scaling) + mask)`` per head (float32), with key/value
    heads shared by ``head_index // (heads / kv_heads)`` (grouped-query attention) and,
    when the model has attention sinks (``s_aux``), one extra logit per head that takes
    probability mass and is then dropped, as in transformers' eager attention.

    Returns:
        ``(output [batch query_pos head_index d_value], None)``.
    """
    del kwargs
    run = getattr(module, "_workbench_pass", None) or _ACTIVE.get(None)
    layer = getattr(module, "layer_idx", None)
    if dropout:  # only a training forward passes it (transformers passes 0.0 in eval mode)
        raise WorkbenchError(
            f"the model applies attention dropout ({dropout}) in training, which the "
            "workbench's attention function does not reproduce",
            "set the model's attention_dropout to 0 (GRPO fine-tuning normally uses none), "
            "or compute the credit with a separate pass (fused_credit=False)",
        )
    if run is None or layer is None:
        raise WorkbenchError(
            f"the workbench's attention function ran outside an analysis pass (layer {layer})",
            "let workbench.attention.engine run it (wb.analyze), or reload the model",
        )
    if run.stop_after is not None and layer > run.stop_after:
        raise StopPass
    run.seen.add(layer)
    reduce = run.reducers.get(layer)
    plain = softcap is None and s_aux is None  # what sdpa can compute
    try:
        if isinstance(reduce, Banded) and plain and _can_band(query, key, value, attention_mask):
            with torch.no_grad():
                return _banded(query, key, value, attention_mask, scaling, reduce), None
    except flex.Failed as e:  # the reducer has been handed nothing yet: tiles instead
        flex.give_up(query, e)
    if plain and (run.sdpa_outputs or (reduce is None and run.fast_other_layers)):
        if reduce is not None:
            with torch.no_grad():
                q, k, v = query.detach(), key.detach(), value.detach()
                _tiled(q, k, v, attention_mask, scaling, None, None, reduce, run, output=False)
        return sdpa_attention()(module, query, key, value, attention_mask, scaling=scaling)
    return _tiled(query, key, value, attention_mask, scaling, softcap, s_aux, reduce, run)


def _tiled(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    scaling: float | None,
    softcap: float | None,
    sinks: Tensor | None,
    reduce: Reducer | None,
    run: _Pass,
    output: bool = True,
) -> tuple[Tensor | None, None]:
    b, h, tq, d = query.shape
    kv, tk = key.shape[1], key.shape[2]
    groups = h // kv
    scale = d**-0.5 if scaling is None else scaling
    offset = tk - tq  # absolute position of query row 0
    out = None
    if output:
        out = torch.empty(b, h, tq, value.shape[-1], dtype=value.dtype, device=value.device)
    rows = run.tile_rows or tiling.tile_rows(query.device, b * h, tk)
    low = torch.finfo(torch.float32).min
    # On the CPU without autograd, every tile's scores become its probabilities in one
    # reused buffer: the same operations in place (the CPU softmax kernel reads each row
    # before writing it), so no tile allocates a new ``T``-wide tensor. Measured on one
    # SmolLM2-shaped layer at T = 4096, one thread: 6-8% faster, bitwise the same results.
    buffer = None
    if _cpu_fast(query, key, value):
        buffer = torch.empty(b * h * min(rows, tq) * tk, dtype=query.dtype, device=query.device)
    fused = buffer is not None and sinks is None and kernels.available()
    for a in range(0, tq, rows):
        e = min(tq, a + rows)
        n, end = e - a, offset + e  # keys after the tile's last query are never attended
        first = _first_key(mask, a, e, end)  # keys before it are masked for every row
        width = end - first
        # Grouped-query attention without copying K/V: the g query heads of one key/value
        # head become g * n rows of one product.
        q = query[:, :, a:e].reshape(b * kv, groups * n, d)
        keys = key[:, :, first:end].flatten(0, 1).transpose(-1, -2)
        # `q k^T * scale` with the scale applied inside the product (BLAS alpha): bitwise
        # the same as multiplying afterwards, without another pass over the scores.
        if buffer is not None:
            scores = buffer[: b * h * n * width].view(b * kv, groups * n, width)
            torch.baddbmm(scores, q, keys, beta=0.0, alpha=scale, out=scores)
        else:
            unused = torch.empty(1, 1, 1, dtype=q.dtype, device=q.device).expand(
                b * kv, groups * n, width
            )
            scores = torch.baddbmm(unused, q, keys, beta=0.0, alpha=scale).float()
        scores = scores.view(b, h, n, width)
        if softcap is not None and buffer is not None:
            scores.div_(softcap).tanh_().mul_(softcap)
        elif softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if mask is None:
            if not fused:  # the kernel stops each row at its causal limit itself
                above = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu_(1)
                scores[..., offset + a : end].masked_fill_(above, low)
        elif mask.dtype == torch.bool:
            scores.masked_fill_(~mask[:, :, a:e, first:end], low)
        elif buffer is not None:
            scores.add_(mask[:, :, a:e, first:end])
        else:
            scores = scores + mask[:, :, a:e, first:end]
        sums = None
        if fused:  # softmax, row sums and column sums in one pass (`kernels`)
            diag0 = offset + a - first  # the key of the tile's first query row
            bw, cuts = (reduce.width, reduce.cuts) if isinstance(reduce, Fused) else (0, ())
            got = kernels.softmax_stats(
                scores.view(b * h, n, width),
                diag0 if mask is None else width,  # a mask is in the scores already
                diag0,
                bw,
                [diag0 - c + 1 for c in cuts],
            )
            probs, sums = scores, got.split(b, h)
        elif sinks is not None:
            sink = sinks.float().reshape(1, h, 1, 1).expand(b, h, n, 1)
            both = torch.cat([scores, sink], dim=-1)
            probs = torch.softmax(both - both.amax(-1, keepdim=True), dim=-1)[..., :-1]
        elif buffer is not None:
            probs = torch.ops.aten._softmax.out(scores, -1, False, out=scores)
        else:
            probs = torch.softmax(scores, dim=-1)
        del scores
        if reduce is not None:
            reduce(slice(offset + a, end), probs, first, sums)
        if out is not None:
            p = probs.to(value.dtype).reshape(b, kv, groups * n, width)
            out[:, :, a:e] = torch.matmul(p, value[:, :, first:end]).view(b, h, n, -1)
        del probs
    return (None if out is None else out.transpose(1, 2).contiguous()), None


def _first_key(mask: Tensor | None, a: int, e: int, end: int) -> int:
    """The first key any of query rows ``a..e-1`` may attend, when a boolean mask hides
    the keys before it from every row (a sliding window): the tile (or `_flash` chunk)
    then skips them, and a window of ``W`` costs ``O(rows x (rows + W))`` instead of
    ``O(rows x T)``. Their probabilities are exactly 0 in eager attention
    (``exp(min - max)``). A row that sees
    no key at all (left padding) is uniform over the keys its tile computes, as it was
    before this skip (keys after the tile were never computed); no statistic reads it."""
    if mask is None or mask.dtype != torch.bool:
        return 0
    seen = mask[:, :, a:e, :end].flatten(0, 2).any(0)
    return int(seen.to(torch.uint8).argmax()) if bool(seen.any()) else 0


#: `_flash` with a mask: query rows per chunk, and the most elements of a chunk's float mask.
_FLASH_CHUNK = 512
_FLASH_ROWS = 1 << 24


def _cpu_fast(query: Tensor, key: Tensor, value: Tensor) -> bool:
    """Whether the CPU-only paths apply: float32 on the CPU, without gradients. They are
    the tiles' reused buffer with the compiled kernel (`_tiled`, `kernels`) and the band
    path with the CPU's flash call (`_banded`; on CUDA it has FlexAttention's, see
    `_can_band`). Anywhere else (CUDA, MPS, another dtype, a training forward) the
    portable path runs: the same tiles with PyTorch's softmax and reductions, and tiles
    for `Banded` reducers where `_can_band` is False. The architecture matrix checks that
    path on the CPU by making this return False."""
    return query.device.type == "cpu" and _float32_no_grad(query, key, value)


def _float32_no_grad(query: Tensor, key: Tensor, value: Tensor) -> bool:
    """float32 inputs, none of which autograd is tracking: what every fast path needs."""
    grads = torch.is_grad_enabled() and any(x.requires_grad for x in (query, key, value))
    return not grads and query.dtype == key.dtype == value.dtype == torch.float32


def _can_band(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None) -> bool:
    """Whether `_banded` computes this layer: float32 without gradients, ``d_value ==
    d_head``, no mask or a boolean one, and a flash kernel with the row log-sum-exp for
    the device: the CPU's (`_cpu_fast`), or FlexAttention where `flex.serves` the device,
    passed its check there and has not raised since (`flex.usable`)."""
    shapes = query.shape[-1] == key.shape[-1] == value.shape[-1] and query.shape[2] > 0
    if not shapes or not (mask is None or mask.dtype == torch.bool):
        return False
    if flex.serves(query):
        return _float32_no_grad(query, key, value) and flex.usable(
            query.device, query.dtype, query.shape[-1]
        )
    return _cpu_fast(query, key, value)


def _flash(
    query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, scale: float
) -> tuple[Tensor, Tensor]:
    """Flash attention with the key positions as an extra value channel.

    Returns ``(out [batch head_index query_pos d_head + 1], lse [batch head_index
    query_pos])``: the attention output, then ``sum_s A[t, s] (s - (key_pos - 1))`` (the
    positions counted back from the last key, `flex.values_with_positions`); and each row's
    log-sum-exp of ``q k^T * scale`` over its unmasked keys (0, with a zero output, for a
    row with none). q and k get zero columns up to the value width (a multiple of 8; the
    scale is explicit, so the scores are unchanged). A boolean `mask` becomes the kernel's
    additive float mask in chunks of query rows (`_FLASH_CHUNK` rows, at most `_FLASH_ROWS`
    elements each), each over only the keys its rows can see.
    """
    if flex.serves(query):
        return flex.attention_with_moment(query, key, value, mask, scale)
    b, h, tq, d = query.shape
    tk = key.shape[2]
    width = -(-(d + 1) // 8) * 8
    q = torch.nn.functional.pad(query, (0, width - d))
    k = torch.nn.functional.pad(key, (0, width - d))
    v = flex.values_with_positions(value, width)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if mask is None and tq == tk:
        out, lse = flash(q, k, v, is_causal=True, scale=scale)
        return out[..., : d + 1], lse
    out = query.new_empty(b, h, tq, d + 1)
    lse = query.new_empty(b, h, tq)
    rows = max(1, min(_FLASH_CHUNK, _FLASH_ROWS // max(1, b * tk)))
    for a in range(0, tq, rows):
        e = min(tq, a + rows)
        # Each chunk runs over the keys its rows can see: none after its last row (every
        # model here is causal) and, with a mask, none before the first key it allows (a
        # sliding window then costs O(rows x (rows + window)), not O(rows x T)).
        hi = tk - tq + e
        lo = _first_key(mask, a, e, hi)
        if mask is None:  # causal, the queries being the last `tq` positions
            keep = torch.ones(e - a, hi, dtype=torch.bool, device=q.device).tril_(tk - tq + a)
            keep = keep[None, None]
        else:
            keep = mask[:, :, a:e, lo:hi]
        additive = torch.zeros(keep.shape, dtype=q.dtype, device=q.device)
        additive.masked_fill_(~keep, float("-inf"))
        o, lse[:, :, a:e] = flash(
            q[:, :, a:e], k[:, :, lo:hi], v[:, :, lo:hi], attn_mask=additive, scale=scale
        )
        out[:, :, a:e] = o[..., : d + 1]
    return out, lse


def _band(
    query: Tensor,
    key: Tensor,
    lse: Tensor,
    mask: Tensor | None,
    scale: float,
    width: int,
    rows: int = tiling.CPU_BAND,
) -> Float[Tensor, "batch head_index query_pos band"]:
    """``A[t, t-d] = exp(q_t k_{t-d} scale - LSE_t)`` for ``d < width`` (0 where ``t - d <
    0`` or masked), in blocks of query rows against the keys their band reaches."""
    b, h, tq, d = query.shape
    kv, tk = key.shape[1], key.shape[2]
    groups, offset = h // kv, tk - tq
    out = query.new_empty(b, h, tq, width)
    back = torch.arange(width, device=query.device)
    for a in range(0, tq, rows):
        e = min(tq, a + rows)
        n = e - a
        lo = max(0, offset + a - width + 1)  # the first key any row of the block reaches
        q = query[:, :, a:e].reshape(b * kv, groups * n, d)
        keys = key[:, :, lo : offset + e].flatten(0, 1).transpose(-1, -2)
        scores = torch.bmm(q, keys).view(b, h, n, -1)
        col = (offset + torch.arange(a, e, device=query.device))[:, None] - back  # [n, width]
        valid = col >= 0
        if mask is not None:
            valid = valid & mask[:, :, a:e].gather(
                -1, col.clamp(min=0).expand(*mask.shape[:2], n, width)
            )
        got = scores.gather(-1, (col - lo).clamp(min=0).expand(b, h, n, width))
        got = torch.exp(got.mul_(scale).sub_(lse[:, :, a:e, None]))
        # `where`, not a product: a row with no unmasked key has LSE 0, and exp may overflow.
        out[:, :, a:e] = torch.where(valid, got, 0.0)
    return out


def _banded(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    mask: Tensor | None,
    scaling: float | None,
    reduce: Banded,
) -> Float[Tensor, "batch query_pos head_index d_value"]:
    """The layer's output, its row distances and band handed to ``reduce.band`` (see
    `Banded`)."""
    d = query.shape[-1]
    tq, tk = query.shape[2], key.shape[2]
    scale = d**-0.5 if scaling is None else scaling
    out, lse = _flash(query, key, value, mask, scale)
    t = torch.arange(tk - tq, tk, dtype=out.dtype, device=out.device) - (tk - 1)
    # sum_s A[t,s] (t-s) = (t - c) - sum_s A[t,s] (s - c), c = tk - 1, the rows summing to 1
    dist = t - out[..., d]
    rows = tiling.band_rows(query.device, query.shape[0] * query.shape[1], reduce.width)
    band = _band(query, key, lse, mask, scale, reduce.width, rows)
    reduce.band(slice(tk - tq, tk), dist, band)
    return out[..., :d].transpose(1, 2).contiguous()
