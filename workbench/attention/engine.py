"""The streaming one-pass reduction: one forward pass, every chosen layer, no stored patterns.

Two paths compute the same `HeadStats` (see `workbench.attention.metrics`):

- ``"exact"``: the bridge's own eager forward, with a forward hook on each chosen layer's
  ``blocks.{l}.attn.hook_pattern``. The hook reduces the ``[head_index query_pos key_pos]``
  pattern to per-head vectors and drops it. Memory beyond the model: one layer's pattern
  (plus the bridge's own scores and ~3 pattern-sized temporaries in the hook) and
  ``O(layers x heads x T x (max_window + n_cuts))`` for the statistics.
- ``"tiled"``: no full pattern, ever. Each layer's attention bridge ``forward`` is
  replaced, for the duration of the pass only, by a function that computes the same eager
  attention (q/k/v projections, rotary embedding, GQA, ``softmax(q k^T * scale)`` in
  float32, ``P v``) in tiles of query rows (about 4M scores per tile), feeding each tile to
  the reductions. Layers that are not analysed use the same tiled computation, or PyTorch's
  ``scaled_dot_product_attention`` with ``fast_other_layers=True`` (faster, but the residual
  stream then differs from eager by float rounding). Memory: one tile and its ~3
  temporaries plus the statistics; the model's own 4-D causal mask (``T x T`` bools) is
  the only quadratic tensor left. It agrees with ``"exact"`` to float rounding (about
  1e-7 here) and is faster, because the bridge's own eager forward builds several full
  ``[batch, head, T, T]`` tensors per layer. It is supported for plain rotary attention
  (Llama, Mistral, Qwen2-style: no QK-norm, soft-capping, sinks, sliding window or
  gating); other architectures use ``"exact"``. The original ``forward`` is restored in a
  ``finally`` block.

``"auto"`` takes ``"tiled"`` above `TILED_THRESHOLD` (512) tokens when supported. Both
paths also return next-token entropies from the logits of the same pass (computed in row
chunks; the logits themselves, ``batch x T x d_vocab`` floats, are the largest tensor of a
long pass). On the tiled path, user hooks on the attention internals (``hook_pattern``,
``hook_attn_scores``, ``hook_q``...) do not fire: pass ``path="exact"`` to combine an
analysis with your own attention hooks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from .._compat import (
    attention_parts,
    has_sliding_window,
    is_plain_rotary_attention,
    llama_rotary,
    replaced_forwards,
)
from ..errors import WorkbenchError
from .metrics import HeadStats, StatsAccumulator

__all__ = [
    "TILED_THRESHOLD",
    "check_model",
    "collect",
    "collect_many",
    "entropy_from_logits",
    "tiled_supported",
]

#: Sequences longer than this use the tiled path under ``path="auto"``.
TILED_THRESHOLD = 512
#: Target size (elements) of one tile of scores, ``heads x tile_rows x T``.
_TILE_ELEMENTS = 1 << 22


def check_model(model: Any) -> None:
    """Raise a `WorkbenchError` unless `model` is a bridge with attention-pattern hooks."""
    hook_dict = getattr(model, "hook_dict", None)
    cfg = getattr(model, "cfg", None)
    if not isinstance(hook_dict, dict) or cfg is None or not hasattr(cfg, "n_layers"):
        raise WorkbenchError(
            f"the model ({type(model).__name__}) has no TransformerLens hooks",
            "load it with wb.load_model(...) (a TransformerBridge with eager attention)",
        )
    if "blocks.0.attn.hook_pattern" not in hook_dict:
        raise WorkbenchError(
            "the model has no attention-pattern hooks (blocks.{l}.attn.hook_pattern)",
            "load it with wb.load_model(...), which switches attention to eager",
        )


def entropy_from_logits(
    logits: Float[Tensor, "pos d_vocab"], chunk: int = 64
) -> Float[Tensor, " pos"]:
    """Entropy (nats) of ``softmax(logits[t])`` for each row, computed in row chunks."""
    out = torch.empty(logits.shape[0], dtype=torch.float64)
    for a in range(0, logits.shape[0], chunk):
        logp = torch.log_softmax(logits[a : a + chunk].float(), dim=-1)
        # float32 terms, float64 sum: about 1e-6 nats from the float64 reference.
        out[a : a + chunk] = -(logp.exp() * logp).double().sum(-1).cpu()
    return out


def _entropy(logits: Tensor, n_pos: int, prompt_len: int) -> Tensor:
    """Entropy of the distribution that produced each response token (row ``t-1``)."""
    ent = torch.full((n_pos,), float("nan"), dtype=torch.float64)
    ent[prompt_len:] = entropy_from_logits(logits[0, prompt_len - 1 : n_pos - 1])
    return ent


def _layer_rows(heads: list[tuple[int, int]]) -> dict[int, tuple[slice, list[int]]]:
    """For each layer: the accumulator rows of its heads and their head indices."""
    out: dict[int, tuple[slice, list[int]]] = {}
    i = 0
    while i < len(heads):
        layer = heads[i][0]
        j = i
        while j < len(heads) and heads[j][0] == layer:
            j += 1
        out[layer] = (slice(i, j), [h for _, h in heads[i:j]])
        i = j
    return out


def _select(pattern: Tensor, head_idx: list[int], n_heads: int) -> Tensor:
    if head_idx == list(range(n_heads)):
        return pattern
    return pattern[:, head_idx]


def tiled_supported(model: Any) -> bool:
    """Whether the tiled path can reproduce this model's attention exactly.

    It must be plain rotary attention with a full causal mask in *every* layer: no
    QK-norm, soft-capping, sinks, gating or sliding window (a sliding window, in any layer,
    needs the model's real mask, which the tiled path does not apply).
    """
    try:
        blocks = list(model.blocks)
        parts = [attention_parts(b.attn) for b in blocks]
    except (AttributeError, IndexError, TypeError):
        return False
    cfg = model.cfg
    if not blocks or getattr(cfg, "positional_embedding_type", None) != "rotary":
        return False
    hf_config = getattr(getattr(model, "original_model", None), "config", None)
    if hf_config is None or has_sliding_window(hf_config):
        return False
    if any(
        getattr(cfg, a, False)
        for a in (
            "gated_q_proj",
            "use_split_qkv_input",
            "use_attn_in",
            "use_attn_result",
            "rotary_adjacent_pairs",
            "rotary_interleaved_cos_sin",
            "qk_norm_after_rope",
        )
    ):
        return False
    return all(_plain_rotary(b.attn, p) for b, p in zip(blocks, parts, strict=True))


def _plain_rotary(attn: Any, parts: tuple[Any, ...]) -> bool:
    oc, *linears = parts
    if not all(isinstance(m, torch.nn.Linear) for m in linears):
        return False
    if any(
        getattr(oc, a, None) is not None
        for a in ("q_norm", "k_norm", "q_layernorm", "sinks", "attn_logit_softcapping")
    ):
        return False
    if getattr(oc, "sliding_window", None):
        return False
    rope = getattr(getattr(oc, "config", None), "rope_parameters", None)
    if isinstance(rope, dict) and rope.get("llama_4_scaling_beta") is not None:
        return False
    return is_plain_rotary_attention(attn)


def _make_tiled_forward(
    attn: Any, reduce, n_heads: int, tile_rows: int | None, fast_other_layers: bool
):
    """A replacement for one attention bridge's forward (see module docstring)."""
    apply_rotary_pos_emb, repeat_kv = llama_rotary()
    oc, wq, wk, wv, wo = attention_parts(attn)
    head_dim = oc.head_dim
    groups = getattr(oc, "num_key_value_groups", 1)
    scaling = getattr(oc, "scaling", head_dim**-0.5)

    def forward(*args: Any, **kwargs: Any) -> tuple[Tensor, None]:
        hs = kwargs.pop("hidden_states") if "hidden_states" in kwargs else args[0]
        cos, sin = kwargs["position_embeddings"]
        b, t, _ = hs.shape
        shape = (b, t, -1, head_dim)
        q = wq(hs).view(shape).transpose(1, 2)
        k = wk(hs).view(shape).transpose(1, 2)
        v = wv(hs).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if reduce is None and fast_other_layers:
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scaling, enable_gqa=groups > 1
            )
        else:
            k = repeat_kv(k, groups)
            v = repeat_kv(v, groups)
            out = torch.empty_like(q)
            rows = tile_rows or max(16, _TILE_ELEMENTS // max(1, n_heads * t))
            for a in range(0, t, rows):
                e = min(t, a + rows)
                scores = torch.matmul(q[:, :, a:e], k[:, :, :e].transpose(-2, -1)) * scaling
                # Only the tile's diagonal block has keys after the query.
                above = torch.ones(e - a, e - a, dtype=torch.bool, device=q.device).triu_(1)
                scores[..., a:e].masked_fill_(above, -math.inf)
                p = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
                del scores
                if reduce is not None:
                    reduce(slice(a, e), p)
                out[:, :, a:e] = torch.matmul(p, v[:, :, :e])
                del p
        out = out.transpose(1, 2).reshape(b, t, -1)
        return wo(out), None

    return forward


def collect(
    model: Any,
    ids: Int[Tensor, " pos"],
    prompt_len: int,
    heads: Sequence[tuple[int, int]],
    *,
    max_window: int,
    cuts: Sequence[int],
    path: str = "auto",
    tile_rows: int | None = None,
    fast_other_layers: bool = False,
) -> tuple[HeadStats, Float[Tensor, " pos"]]:
    """One forward pass over `ids` that reduces the attention of `heads` to `HeadStats`.

    Args:
        model: a TransformerBridge (eager attention).
        ids: ``[pos]`` token ids (prompt + response).
        prompt_len: first response position.
        heads: sorted ``(layer, head)`` pairs to reduce.
        max_window: diagonals to keep (largest WAAD window that can be recomputed).
        cuts: FAI cut distances to keep (see `metrics.DEFAULT_FAI_CUTS`).
        path: ``"exact"`` (pattern hooks), ``"tiled"`` (query tiles, no full pattern) or
            ``"auto"`` (tiled above `TILED_THRESHOLD` tokens when supported).
        tile_rows: query rows per tile on the tiled path (default: about 4M scores).
        fast_other_layers: on the tiled path, run layers that are not analysed with
            ``scaled_dot_product_attention`` (faster; the residual stream then differs
            from eager attention by float rounding, about 1e-5 relative in later metrics)
            instead of the same tiled eager computation.

    Returns:
        ``(stats, entropy)``: the statistics (CPU) and ``[pos]`` next-token entropy
        (entropy of the distribution that produced token ``t``, i.e. logits at row ``t-1``;
        NaN outside the response).
    """
    return collect_many(
        model,
        [(ids, prompt_len)],
        heads,
        max_window=max_window,
        cuts=cuts,
        path=path,
        tile_rows=tile_rows,
        fast_other_layers=fast_other_layers,
    )[0]


@torch.no_grad()
def collect_many(
    model: Any,
    items: Sequence[tuple[Tensor, int]],
    heads: Sequence[tuple[int, int]],
    *,
    max_window: int,
    cuts: Sequence[int],
    path: str = "auto",
    tile_rows: int | None = None,
    fast_other_layers: bool = False,
    pad_id: int = 0,
    entropy: bool = True,
) -> list[tuple[HeadStats, Tensor]]:
    """`collect` for several sequences in one batched forward pass.

    The sequences are right-padded to the longest. With causal attention a real token
    never attends to the padding after it, and position ids are unchanged, so every
    sequence's statistics equal those of its own pass (up to float rounding of the
    batched matrix products); no attention mask is needed. Memory grows with the batch:
    logits are ``batch x T x d_vocab`` floats.

    Args:
        items: ``(ids, prompt_len)`` pairs.
        pad_id: the token id used for padding (never attended to).
        entropy: compute next-token entropies from the logits. False stops the pass
            after the last analysed layer (TransformerLens ``stop_at_layer``): the later
            blocks and the unembedding never run, and the entropies are NaN. The RL
            credit pass uses this for every strategy but ``"entropy"``.
        (others): as in `collect`.

    Returns:
        One ``(stats, entropy)`` per item, in order.
    """
    check_model(model)
    heads = sorted(heads)
    lens = [int(ids.shape[0]) for ids, _ in items]
    t_max = max(lens)
    if path not in ("auto", "exact", "tiled"):
        raise WorkbenchError(f"path={path!r} is not a path", 'pass "auto", "exact" or "tiled"')
    if path == "auto":
        path = "tiled" if t_max > TILED_THRESHOLD and tiled_supported(model) else "exact"
    elif path == "tiled" and not tiled_supported(model):
        raise WorkbenchError(
            f"the tiled path does not support this model's attention "
            f"({type(model.blocks[0].attn).__name__})",
            'use path="exact" (or "auto")',
        )
    device = next(model.parameters()).device
    n_heads = model.cfg.n_heads
    accs = [
        StatsAccumulator(list(heads), n, pl, max_window, cuts, device)
        for n, (_, pl) in zip(lens, items, strict=True)
    ]
    by_layer = _layer_rows(list(heads))
    inp = torch.full((len(items), t_max), pad_id, dtype=torch.long, device=device)
    for i, (ids, _) in enumerate(items):
        inp[i, : lens[i]] = ids.to(device)
    # Blocks from `stop_at_layer` on never run; None runs the whole model.
    stop_at_layer = None if entropy else max(by_layer) + 1
    if stop_at_layer is not None and stop_at_layer >= model.cfg.n_layers:
        stop_at_layer = None

    def feed(r: slice, p: Tensor, rows: slice, idx: list[int]) -> None:
        """Hand rows `r` of the batched pattern `p` [batch, head, rows, keys] to each sequence."""
        sel = _select(p, idx, n_heads)
        for i, acc in enumerate(accs):
            n = lens[i]
            if r.start >= n:
                continue
            stop = min(r.stop, n)
            acc.add(slice(r.start, stop), sel[i, :, : stop - r.start, :stop], rows)

    if path == "exact":

        def make_hook(rows: slice, head_idx: list[int]):
            def hook(pattern: Tensor, hook: Any = None) -> None:
                feed(slice(0, t_max), pattern.detach(), rows, head_idx)

            return hook

        fwd_hooks = [
            (f"blocks.{layer}.attn.hook_pattern", make_hook(rows, idx))
            for layer, (rows, idx) in by_layer.items()
        ]
        logits = model.run_with_hooks(inp, fwd_hooks=fwd_hooks, stop_at_layer=stop_at_layer)
    else:
        forwards = {}
        for layer, block in enumerate(model.blocks[:stop_at_layer]):
            reduce = None
            if layer in by_layer:
                rows, idx = by_layer[layer]

                def reduce(r: slice, p: Tensor, rows=rows, idx=idx) -> None:
                    feed(r, p, rows, idx)

            forwards[block.attn] = _make_tiled_forward(
                block.attn, reduce, n_heads * len(items), tile_rows, fast_other_layers
            )
        with replaced_forwards(forwards):
            logits = model.run_with_hooks(inp, stop_at_layer=stop_at_layer)
    out = []
    for i, acc in enumerate(accs):
        if entropy:
            ent = _entropy(logits[i : i + 1], lens[i], items[i][1])
        else:
            ent = torch.full((lens[i],), float("nan"), dtype=torch.float64)
        out.append((acc.finish(), ent))
    del logits
    return out
