"""Attention maps for charts: per-head patterns over the response rows, pooled small.

A full ``[query_pos, key_pos]`` map of every head is ``L x H x T^2`` floats (18 GB at 4K
tokens for SmolLM2); a chart may embed at most 5,000 cells. `attention_maps` runs one
forward pass with a hook on each needed layer's ``blocks.{l}.attn.hook_pattern`` that keeps
only the response rows, mean-pools them into ``bin x bin`` blocks at once and drops the
pattern, so memory is one layer's pattern plus ``heads x max_cells`` floats.

Mean pooling is linear, so the map of a head group (the mean over its heads,
Eq. 8) is the mean of the pooled per-head maps: `AttentionMaps.group` gives the
local-head, global-head or any other group's map without another forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, no_type_check

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .. import _validate
from ..attention.engine import attention_layers, check_layers, check_pattern_memory
from ..attention.reductions import check_sink, sink_scale
from ..errors import WorkbenchError
from ..models import eval_mode
from ..models.bridge import model_name
from ..trace.tokens import check_context, check_trace_tokens

__all__ = ["AttentionMaps", "attention_maps", "pool", "pool_bin"]

Head = tuple[int, int]
#: Altair's default row limit: no chart embeds more cells than this.
MAX_CELLS = 5000


def pool_bin(n_rows: int, n_cols: int, max_cells: int = MAX_CELLS) -> int:
    """The smallest square block size ``b`` with ``ceil(R/b) * ceil(C/b) <= max_cells``."""
    if n_rows < 1 or n_cols < 1:
        raise WorkbenchError(f"cannot pool an empty {n_rows} x {n_cols} map", "pass a response")
    max_cells = _validate.integer("max_cells", max_cells, minimum=1, example=MAX_CELLS)
    b = max(1, math.floor(math.sqrt(n_rows * n_cols / max_cells)))
    while math.ceil(n_rows / b) * math.ceil(n_cols / b) > max_cells:
        b += 1
    return b


def pool(x: Float[Tensor, "*batch row col"], b: int) -> Float[Tensor, "*batch row_bin col_bin"]:
    """Mean over ``b x b`` blocks; a partial block at the edge is the mean of its real cells."""
    if b == 1:
        return x.float()
    *batch, r, c = x.shape
    rb, cb = math.ceil(r / b), math.ceil(c / b)
    padded = x.new_zeros((*batch, rb * b, cb * b), dtype=torch.float32)
    padded[..., :r, :c] = x
    sums = padded.reshape(*batch, rb, b, cb, b).sum((-3, -1))
    ones = torch.zeros(rb * b, cb * b)
    ones[:r, :c] = 1
    counts = ones.reshape(rb, b, cb, b).sum((1, 3))
    return sums / counts


@dataclass
class AttentionMaps:
    """Pooled attention of some heads over the response rows of one sequence.

    Attributes:
        heads: the ``(layer, head)`` pairs, one per entry of `maps`.
        maps: ``[head row_bin col_bin]`` mean attention in each ``bin x bin`` block.
        bin: the block size (1 = exact, one cell per (query, key) pair).
        row_start: first query position (the response start); rows run to ``n_pos - 1``.
        col_start: first key position (0 for all keys, the response start otherwise).
        n_pos: sequence length.
        tokens: the token strings of the whole sequence.
        ids: the token ids of the whole sequence (None if not recorded), so that a chart
            can tell whether an `Analysis` is of the same trace.
        sink: ``"keep"`` (the attention as the model computed it) or ``"exclude"`` (key 0
            zeroed and each row renormalised before pooling, see `attention_maps`).
        model: the name of the model whose attention this is (`wb.models.model_name`;
            None if unknown), so a chart can tell whether an `Analysis` is of that model.
    """

    heads: list[Head]
    maps: Float[Tensor, "head row_bin col_bin"] = field(repr=False)
    bin: int
    row_start: int
    col_start: int
    n_pos: int
    tokens: list[str] = field(repr=False)
    ids: list[int] | None = field(default=None, repr=False)
    sink: str = "keep"
    model: str | None = None

    def group(self, heads: Any) -> np.ndarray:
        """``[row_bin col_bin]``: the mean map of `heads` (a head group, or one head); a head
        listed twice counts once (it weighed twice in the mean)."""
        if isinstance(heads, tuple) and len(heads) == 2 and all(map(_validate.is_index, heads)):
            heads = [heads]  # one head: read as a list, it failed with "0 is not a pair"
        heads = list(dict.fromkeys(head_list(heads)))
        if not heads:
            raise WorkbenchError("the head group is empty", "pick at least one head")
        index = {h: i for i, h in enumerate(self.heads)}
        missing = [h for h in heads if h not in index]
        if missing:
            layers = sorted({layer for layer, _ in self.heads})
            per_layer = 1 + max((h for _, h in self.heads), default=-1)
            raise WorkbenchError(
                f"no map was recorded for heads {missing[:5]} (these maps hold "
                f"{len(self.heads)} heads of layers {layers[:8]}{'...' if len(layers) > 8 else ''}"
                f", head indices below {per_layer})",
                "pick a recorded head, or, if the model has these heads, compute their maps: "
                "wb.viz.attention_maps(model, trace, heads=...)",
            )
        idx = torch.tensor([index[h] for h in heads])
        return self.maps[idx].mean(0).numpy()


def head_pair(item: Any) -> Head:
    """`item` as a ``(layer, head)`` pair of ints (NumPy and torch integers too; a float,
    bool or string is no index: ``int(0.5)`` would pick head 0 without a word)."""
    try:
        layer, h = item
        return _validate.as_index(layer), _validate.as_index(h)
    except (TypeError, ValueError):
        raise WorkbenchError(
            f"{item!r} is not a (layer, head) pair", "pass heads as [(layer, head), ...]"
        ) from None


def head_list(heads: Any) -> list[Head]:
    """`heads` as a list of `head_pair` pairs."""
    if isinstance(heads, str) or not hasattr(heads, "__iter__"):
        raise WorkbenchError(
            f"heads={heads!r} is not a list of (layer, head) pairs",
            "pass heads as [(layer, head), ...]",
        )
    return [head_pair(item) for item in heads]


def _heads_arg(model: Any, heads: Any) -> list[Head]:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if heads is None:  # a hybrid model's attention layers only
        return [(layer, h) for layer in attention_layers(model) for h in range(n_heads)]
    out = []
    for layer, h in head_list(heads):
        if not (0 <= layer < n_layers and 0 <= h < n_heads):
            raise WorkbenchError(
                f"head {(layer, h)} is out of range for {n_layers} layers x {n_heads} heads",
                "pick heads the model has",
            )
        out.append((layer, h))
    if not out:
        raise WorkbenchError("heads is empty", "pass None for all heads, or some heads")
    check_layers(model, [layer for layer, _ in out])
    return sorted(set(out))


@no_type_check  # validates its arguments itself, with messages that name the fix
def attention_maps(
    model: Any,
    trace: Any,
    heads: Sequence[Head] | None = None,
    *,
    keys: str = "all",
    max_cells: int = MAX_CELLS,
    sink: str = "keep",
) -> AttentionMaps:
    """Record pooled attention maps of `heads` over the response rows (one forward pass).

    Args:
        model: a bridge from `wb.load_model`.
        trace: a `wb.Trace` or a `wb.Analysis` (anything with ``ids``, ``prompt_len``,
            ``tokens``).
        heads: ``(layer, head)`` pairs; None = every head (of the attention layers only, in
            a hybrid model). Only their layers are hooked and the pass stops after the last
            of them.
        keys: ``"all"`` (key columns over prompt + response, sink included) or
            ``"response"`` (response keys only: a square map).
        max_cells: most cells per map; blocks of ``bin x bin`` are averaged to fit.
        sink: ``"keep"`` (the attention as computed) or ``"exclude"``: before pooling, the
            first token's column is zeroed and each response row is divided by the sum of
            its other keys (``wb.analyze(..., sink="exclude")``'s attention); a row that
            gives key 0 everything becomes zeros. With ``keys="response"`` the rows are
            still renormalised over every key but 0 (prompt keys included).

    Returns:
        An `AttentionMaps`.
    """
    if keys not in ("all", "response"):
        raise WorkbenchError(f"keys={keys!r} is not a key range", 'pass "all" or "response"')
    check_sink(sink)
    if not hasattr(getattr(model, "cfg", None), "n_layers"):
        raise WorkbenchError(
            f"expected a model from wb.load_model, got {type(model).__name__}",
            'pass model = wb.load_model("tiny-reasoner") (or another model name)',
        )
    if not all(hasattr(trace, name) for name in ("ids", "prompt_len", "tokens")):
        raise WorkbenchError(
            f"expected a wb.Trace or a wb.Analysis, got {type(trace).__name__}",
            "pass a trace from wb.generate or wb.Trace.from_text, or its analysis",
        )
    max_cells = _validate.integer("max_cells", max_cells, minimum=1, example=MAX_CELLS)
    ids = torch.as_tensor(trace.ids).long()
    n, p = len(ids), int(trace.prompt_len)
    if p >= n:
        raise WorkbenchError("the trace has an empty response", "pass a trace with a response")
    # Another model's trace failed inside the embedding, or drew this model's attention
    # over other tokens than the trace shows.
    check_trace_tokens(model, trace)
    check_context(model, n, what="the trace", fix="shorten the trace")
    head_list = _heads_arg(model, heads)
    c0 = 0 if keys == "all" else p
    b = pool_bin(n - p, n - c0, max_cells)
    by_layer: dict[int, list[int]] = {}
    for layer, h in head_list:
        by_layer.setdefault(layer, []).append(h)
    out: dict[Head, Tensor] = {}

    def make_hook(layer: int):
        hs = by_layer[layer]

        def hook(pattern: Tensor, hook: Any = None) -> None:
            rows = pattern[0, hs, p:n, c0:n].detach().float()
            if sink == "exclude":  # the scale reads every key but 0, prompt keys included
                rest = pattern[0, hs, p:n, 1:n].float().sum(-1)
                rows = rows * sink_scale(rest)[..., None]
                if c0 == 0:
                    rows[..., 0] = 0.0
            rows = rows.cpu()
            pooled = pool(rows, b)
            for i, h in enumerate(hs):
                out[(layer, h)] = pooled[i]

        return hook

    fwd_hooks = [(f"blocks.{layer}.attn.hook_pattern", make_hook(layer)) for layer in by_layer]
    check_pattern_memory(
        model,
        1,
        n,
        logits=False,
        what=f"attention maps of a {n:,}-token trace (each hooked layer's full pattern)",
        fix="{shorter}; the analysis itself (wb.analyze) needs no map",
    )
    with torch.no_grad(), eval_mode(model):
        model.run_with_hooks(
            ids[None].to(model.cfg.device),
            fwd_hooks=fwd_hooks,
            return_type=None,
            stop_at_layer=max(by_layer) + 1,
        )
    missing = [h for h in head_list if h not in out]
    if missing:
        raise WorkbenchError(
            f"the attention-pattern hooks did not fire for heads {missing[:5]}",
            "load the model with wb.load_model (eager attention)",
        )
    return AttentionMaps(
        heads=head_list,
        maps=torch.stack([out[h] for h in head_list]),
        bin=b,
        row_start=p,
        col_start=c0,
        n_pos=n,
        tokens=list(trace.tokens),
        ids=[int(i) for i in ids],
        sink=sink,
        model=model_name(model),
    )
