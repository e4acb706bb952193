"""The streaming one-pass reduction: one forward pass, every chosen layer, no stored patterns.

Two paths compute the same `HeadStats` (see `workbench.attention.metrics`):

- ``"tiled"``: the plain Hugging Face model behind the bridge runs once with the
  workbench's registered attention function (`workbench.attention.interface`). Every
  layer's attention is computed exactly, in tiles of query rows, from the queries and keys
  the architecture really uses (after rotary embeddings and q/k norms) with the real mask
  (sliding windows included), the scaling and the soft-cap; each tile of probabilities is
  reduced and dropped. No ``T x T`` map exists. Every architecture whose attention goes
  through transformers' AttentionInterface is supported (Llama, Qwen2/3, Mistral, Gemma
  2/3, Phi-3, GPT-2, GPT-NeoX, OLMo 2, ...), and so is one whose class does not declare
  the interface but uses it (Qwen3.5, OLMo-hybrid, Bamba, Falcon-H1, StableLM), once a
  check on 64 tokens finds that the tiled pass reproduces its eager attention; a layer
  whose attention does not come through raises a clear error, never numbers.
- ``"exact"``: the bridge's own eager forward, with a forward hook on each chosen layer's
  ``blocks.{l}.attn.hook_pattern``. The hook reduces the ``[head_index query_pos key_pos]``
  pattern to per-head vectors and drops it. Memory beyond the model: one layer's pattern
  (plus the bridge's own scores and ~3 pattern-sized temporaries in the hook); a pass whose
  pattern and logits alone exceed the free memory is refused first
  (`check_pattern_memory`). Use it to
  combine an analysis with your own TransformerLens hooks, which do not fire on the tiled
  path.

``"auto"`` (the default) takes ``"tiled"`` whenever the model supports it. Both paths also
return next-token entropies from the same pass. On the tiled path they come from the final
hidden states in chunks of rows (`_OutputTap`), so the ``batch x T x d_vocab`` logits never
exist; on the exact path the bridge returns them whole, the largest tensor of a long pass.
Memory of the statistics: ``O(layers x heads x T x (max_window + n_cuts))``; a pass that
keeps no column sums (``columns=False``, the RL credit) keeps a band as wide as its longest
cut instead, ``O(layers x heads x T x H_hi)``, and on the CPU its layers take the band path
of `workbench.attention.interface` (no tiles).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .._compat import supports_attention_interface
from ..errors import WorkbenchError
from ..models import eval_mode, model_device, sampler
from . import interface
from .kernels import TileSums
from .metrics import HeadStats, StatsAccumulator, normalise_cuts

__all__ = [
    "attention_layers",
    "check_layers",
    "check_model",
    "check_pattern_memory",
    "collect",
    "collect_many",
    "entropy_from_logits",
    "tiled_supported",
]


def check_model(model: Any) -> None:
    """Raise a `WorkbenchError` unless `model` is a bridge with attention-pattern hooks."""
    hook_dict = getattr(model, "hook_dict", None)
    cfg = getattr(model, "cfg", None)
    if not isinstance(hook_dict, dict) or cfg is None or not hasattr(cfg, "n_layers"):
        raise WorkbenchError(
            f"the model ({type(model).__name__}) has no TransformerLens hooks",
            "load it with wb.load_model(...) (a TransformerBridge with eager attention)",
        )
    if not attention_layers(model):
        raise WorkbenchError(
            f"none of the {cfg.n_layers} layers of {arch_name(model)} exposes an attention "
            "pattern (blocks.{l}.attn.hook_pattern), and every metric of the workbench reads "
            "one: the model has no softmax attention (a state-space or recurrent model such "
            "as Mamba or RWKV), or TransformerLens's adapter for it does not hook the "
            "attention it has (NemotronH, Zamba2, RecurrentGemma)",
            "load a model of an architecture the README lists under 'Architectures', through "
            "wb.load_model(...)",
        )


def attention_layers(model: Any) -> list[int]:
    """The layers whose attention pattern the bridge exposes (``blocks.{l}.attn.hook_pattern``):
    every layer, except in hybrid models, whose linear-attention, state-space or
    convolution layers have none (Qwen3-Next, Jamba)."""
    hook_dict = getattr(model, "hook_dict", {})
    return [
        layer
        for layer in range(model.cfg.n_layers)
        if f"blocks.{layer}.attn.hook_pattern" in hook_dict
    ]


def check_layers(model: Any, layers: Sequence[int]) -> None:
    """Raise a `WorkbenchError` naming the layers of `layers` that have no attention pattern
    (see `attention_layers`), and the ones to pick instead."""
    have = attention_layers(model)
    missing = sorted(set(layers) - set(have))
    if missing:
        types = getattr(getattr(_sampled(model), "config", None), "layer_types", None) or []
        kinds = sorted({str(types[i]) for i in missing if i < len(types)})
        what = f" ({', '.join(kinds)})" if kinds else ""
        raise WorkbenchError(
            f"layer(s) {missing} of {arch_name(model)} have no softmax attention{what}, so "
            "they have no attention pattern to analyse",
            f"pick among its attention layers, e.g. layers={have}",
        )


def _sampled(model: Any) -> Any:
    try:
        return sampler(model)
    except WorkbenchError:
        return model


def arch_name(model: Any) -> str:
    """The class name of the Hugging Face model behind `model` (a bridge or a plain model)."""
    return type(_sampled(model)).__name__


def entropy_from_logits(
    logits: Float[Tensor, "pos d_vocab"], chunk: int = 64
) -> Float[Tensor, " pos"]:
    """Entropy (nats) of ``softmax(logits[t])`` for each row, computed in row chunks.

    ``H = log S - sum_v e_v y_v / S`` with ``y = z - max(z)``, ``e = exp(y)``, ``S = sum e``:
    one exponential and two reductions per element, and every term ``e_v y_v`` lies in
    ``[-1/e, 0]``, so float32 sums stay within about 1e-6 nats of the float64 value.
    """
    out = torch.empty(logits.shape[0], dtype=torch.float64)
    for a in range(0, logits.shape[0], chunk):
        y = logits[a : a + chunk].float()
        y = y - y.amax(-1, keepdim=True)
        e = torch.exp(y)
        s = e.sum(-1)
        out[a : a + chunk] = (s.log() - torch.linalg.vecdot(e, y) / s).cpu().double()
    return out


def _response_entropy(rows: Float[Tensor, " response_pos"], n_pos: int, prompt_len: int) -> Tensor:
    """``[pos]``: the entropies of rows ``prompt_len-1 .. n_pos-2`` placed at the response
    tokens they produced (row ``t-1`` produced token ``t``), NaN elsewhere."""
    ent = torch.full((n_pos,), float("nan"), dtype=torch.float64)
    ent[prompt_len:] = rows
    return ent


def _entropy(logits: Tensor, n_pos: int, prompt_len: int) -> Tensor:
    """Entropy of the distribution that produced each response token (row ``t-1``)."""
    return _response_entropy(
        entropy_from_logits(logits[0, prompt_len - 1 : n_pos - 1]), n_pos, prompt_len
    )


class _OutputTap:
    """Keeps the final hidden states and lets the output layer run on `PROBE` rows only.

    The ``batch x T x d_vocab`` logits (6.4 GB for SmolLM2 at T = 32768) then never exist:
    entropies are computed from the kept hidden states in row chunks (`logits`). The
    model's own logits of the probe rows check that `logits` reproduces everything the
    model does after its output layer (a final soft-cap is known; anything else is
    detected, and the caller falls back to a plain forward pass for the logits).
    """

    PROBE = 4

    def __init__(self, hf_model: Any):
        self.head = hf_model.get_output_embeddings()
        config = hf_model.config
        self.cap = getattr(config, "final_logit_softcapping", None)
        self.hidden: Tensor | None = None
        self._handle = None

    def __enter__(self) -> _OutputTap:
        if self.head is not None:
            self._handle = self.head.register_forward_pre_hook(self._pre)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()

    def _pre(self, module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        hidden = args[0] if args else None
        if self.hidden is not None or not isinstance(hidden, Tensor) or hidden.dim() != 3:
            return None
        self.hidden = hidden
        return (hidden[:, : self.PROBE], *args[1:])

    def logits(self, hidden: Tensor) -> Tensor:
        """The model's final logits for rows of final hidden states (float32)."""
        out = self.head(hidden).float()
        if self.cap:
            out = torch.tanh(out / self.cap) * self.cap
        return out

    def reproduces(self, model_logits: Tensor | None) -> bool:
        """Whether `logits` gives the model's own logits for the probe rows."""
        if self.hidden is None or model_logits is None:
            return False
        n = model_logits.shape[1]
        if n != min(self.PROBE, self.hidden.shape[1]):
            return False
        mine = self.logits(self.hidden[:, :n])
        return torch.allclose(mine, model_logits.float(), rtol=1e-5, atol=1e-5)

    def entropy(self, item: int, n_pos: int, prompt_len: int, chunk: int = 256) -> Tensor:
        """`_entropy` for one sequence of the batch, from its hidden states."""
        rows = self.hidden[item, prompt_len - 1 : n_pos - 1]
        # One chunk's logits at a time: never all of them.
        per_row = [
            entropy_from_logits(self.logits(rows[a : a + chunk]))
            for a in range(0, rows.shape[0], chunk)
        ]
        return _response_entropy(torch.cat(per_row), n_pos, prompt_len)


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


def _heads(head_idx: list[int], n_heads: int) -> slice | list[int]:
    """The index of heads `head_idx` of a layer's `n_heads` (a slice, so a view, for all)."""
    return slice(None) if head_idx == list(range(n_heads)) else head_idx


def _select(pattern: Tensor, head_idx: list[int], n_heads: int) -> Tensor:
    return pattern[:, _heads(head_idx, n_heads)]


class Collector:
    """Per-sequence `StatsAccumulator`s fed from the attention of one padded batch.

    Sequence ``i`` occupies positions ``start_i .. start_i + n_i - 1`` of its batch row
    (``start_i > 0`` when it is left-padded, as in TRL's batches); its statistics use
    positions relative to ``start_i``. Rotary attention depends only on relative positions,
    so a left-padded sequence's statistics equal those of its own unpadded pass up to float
    rounding. `reducers` are the per-layer callbacks of `interface.analysis_pass`; the
    hook path calls `feed` directly.

    Args:
        spans: ``(start, n, prompt_len)`` of each sequence in the batch.
        heads: sorted ``(layer, head)`` pairs to reduce.
        n_heads: query heads per layer of the model.
        max_window, cuts, sink: as in `collect`.
        device: where the accumulators live.
        columns: False keeps no column sums beyond the band (`StatsAccumulator`): the
            reducers then take a layer as its row distances and band where the attention
            function can compute them without the probabilities (`interface.Banded`).
    """

    def __init__(
        self,
        spans: Sequence[tuple[int, int, int]],
        heads: Sequence[tuple[int, int]],
        n_heads: int,
        *,
        max_window: int,
        cuts: Sequence[int],
        device: torch.device | str = "cpu",
        sink: str = "keep",
        columns: bool = True,
    ):
        self.spans = [(int(s), int(n), int(pl)) for s, n, pl in spans]
        self.heads = sorted(heads)
        self.n_heads = n_heads
        self.by_layer = _layer_rows(self.heads)
        self.columns = columns
        self._accumulate(max_window, list(cuts), device, sink)

    def _accumulate(
        self, max_window: int, cuts: list[int], device: torch.device | str, sink: str
    ) -> None:
        """One accumulator per sequence."""
        self.accs = [
            StatsAccumulator(
                list(self.heads), n, pl, max_window, cuts, device, sink=sink, columns=self.columns
            )
            for _, n, pl in self.spans
        ]

    def feed(
        self,
        r: slice,
        p: Tensor,
        rows: slice,
        idx: list[int],
        key0: int = 0,
        sums: TileSums | None = None,
    ) -> None:
        """Hand query rows `r` of the batched pattern `p` ``[batch, head, rows, keys]``, over
        the keys from `key0`, to each sequence (heads `idx` of one layer, accumulator rows
        `rows`), with the tile's `sums` where the kernel computed them."""
        sel = _select(p.detach(), idx, self.n_heads)
        for i, (acc, (start, n, _)) in enumerate(zip(self.accs, self.spans, strict=True)):
            lo, hi = max(r.start, start), min(r.stop, start + n)
            if lo >= hi:
                continue
            k0 = max(start, key0)  # the sequence's first key in the tile
            mine = None
            if sums is not None and (lo, hi, k0) == (r.start, r.stop, key0):
                # The tile's sums are this sequence's only when all its rows and keys are.
                mine = sums.select((i, _heads(idx, self.n_heads)))
            acc.add(
                slice(lo - start, hi - start),
                sel[i, :, lo - r.start : hi - r.start, k0 - key0 : hi - key0],
                rows,
                key0=k0 - start,
                sums=mine,
            )

    def feed_band(self, r: slice, dist: Tensor, band: Tensor, rows: slice, idx: list[int]) -> None:
        """`feed` for rows given as row distances ``[batch, head, rows]`` and diagonal band
        ``[batch, head, rows, width]`` (`interface.Banded`)."""
        dist, band = _select(dist, idx, self.n_heads), _select(band, idx, self.n_heads)
        for i, (acc, (start, n, _)) in enumerate(zip(self.accs, self.spans, strict=True)):
            lo, hi = max(r.start, start), min(r.stop, start + n)
            if lo < hi:
                part = slice(lo - r.start, hi - r.start)
                acc.add_band(
                    slice(lo - start, hi - start), dist[i, :, part], band[i, :, part], rows
                )

    def reducers(self) -> dict[int, interface.Reducer]:
        """``{layer: reduce(rows, probs, key0, sums)}`` for `interface.analysis_pass`
        (`interface.Banded` ones when the accumulators keep no column sums beyond the band)."""
        banded = not self.columns and bool(self.accs) and self.accs[0].sink == "keep"
        width = max(acc.max_window for acc in self.accs) if banded else 0
        fused = self._fused()
        out: dict[int, interface.Reducer] = {}
        for layer, (rows, idx) in self.by_layer.items():

            def reduce(r: slice, p: Tensor, key0: int, sums, rows=rows, idx=idx) -> None:
                self.feed(r, p, rows, idx, key0, sums)

            def reduce_band(r: slice, dist: Tensor, band: Tensor, rows=rows, idx=idx) -> None:
                self.feed_band(r, dist, band, rows, idx)

            if banded:
                out[layer] = interface.Banded(reduce, width, reduce_band)
            elif fused is not None:
                out[layer] = interface.Fused(reduce, *fused)
            else:
                out[layer] = reduce
        return out

    def _fused(self) -> tuple[int, tuple[int, ...]] | None:
        """What the kernel can compute for the accumulator with each tile (the band's width
        and the long cuts, `interface.Fused`): for one sequence from position 0, whose
        tiles are all its own (`feed` uses them only then)."""
        if len(self.spans) != 1 or self.spans[0][0] != 0 or self.accs[0].sink != "keep":
            return None
        return self.accs[0].max_window, self.accs[0].long_cuts

    def finish(self) -> list[HeadStats]:
        """The statistics of each sequence, in order."""
        return [acc.finish() for acc in self.accs]


class SharedFrameCollector(Collector):
    """`Collector` for a batch whose responses all start at one column ``P`` of the frame:
    TRL's batches (prompts left-padded to ``P``, completions after them) and the
    shared-prompt update forward (`workbench.rl.forward`, where the prompts are a KV
    cache and only the completion rows ``P, P+1, ...`` are computed). Only the response
    rows are reduced; prompt rows, if the forward computes them, are skipped.

    One `StatsAccumulator` reduces every rollout's heads at once, in the frame of the
    cache (``n_pos`` = ``P`` + the longest completion, ``prompt_len = P``): each layer's
    tile ``[batch, head_index, rows, keys]`` becomes ``batch x heads`` accumulator rows in
    one call, instead of one call per rollout. Every statistic is frame-independent: row
    distances and diagonals are differences of positions, the masked left padding holds no
    probability, and the response columns are ``P..`` for all. A rollout's query rows past
    its own end are zeroed before the reduction, so they add nothing to its column sums.
    `finish` cuts each rollout's statistics out of the common ones (equal to its own
    `Collector` statistics up to float rounding); `finish_frame` returns the common ones
    for a batched computation (`workbench.attention.batch_credit.frame_gammas`).

    Args:
        spans: ``(start, n, prompt_len)`` of each rollout in the frame, with
            ``start + prompt_len`` the same for all (``P``).
        heads, n_heads, max_window, cuts, device: as in `Collector` (``sink="keep"``).
    """

    def _accumulate(
        self, max_window: int, cuts: list[int], device: torch.device | str, sink: str
    ) -> None:
        """One accumulator for every rollout, in the frame of the batch."""
        if not self.columns:
            raise ValueError("the shared frame keeps its column sums (columns=True)")
        if sink != "keep":
            raise ValueError("the shared frame supports sink='keep' only (the credit's)")
        firsts = {s + pl for s, _, pl in self.spans}
        if len(firsts) != 1:
            raise ValueError(f"the responses start at different columns {sorted(firsts)}")
        self.first = firsts.pop()
        self.cuts = cuts
        b = len(self.spans)
        self.ends = torch.tensor([s + n for s, n, _ in self.spans], dtype=torch.long)
        self.n_pos = max(self.first, int(self.ends.max()) if b else 0)
        # Accumulator rows: layer by layer, each layer's block ordered (rollout, head).
        per_layer = [
            b * rows.start + torch.arange(b * (rows.stop - rows.start)).view(b, -1)
            for rows, _ in self.by_layer.values()
        ]
        #: ``[batch, head]``: each rollout's accumulator rows, its heads in sorted order.
        self.rows = torch.cat(per_layer, 1) if per_layer else torch.zeros(b, 0, dtype=torch.long)
        self.acc = StatsAccumulator(
            [h for h in self.heads for _ in range(b)],  # labels only; `finish` relabels
            self.n_pos,
            self.first,
            max_window,
            self.cuts,
            device,
            first_row=self.first,
        )
        self._valid: dict[tuple[int, int], Tensor] = {}

    def _rows_valid(self, lo: int, hi: int, device: torch.device) -> Tensor:
        """``[batch, 1, hi-lo, 1]``: 1 where frame row ``t`` is inside its rollout."""
        key = (lo, hi)
        if key not in self._valid:
            t = torch.arange(lo, hi)
            self._valid = {key: (t[None, :] < self.ends[:, None]).float()[:, None, :, None]}
        return self._valid[key].to(device)

    def feed(
        self,
        r: slice,
        p: Tensor,
        rows: slice,
        idx: list[int],
        key0: int = 0,
        sums: TileSums | None = None,
    ) -> None:
        """Hand query rows `r` of the batched pattern `p` ``[batch, head, rows, keys]``, over
        the keys from `key0`, to the accumulator (heads `idx` of one layer, whose sorted
        positions are `rows`). `sums` are not used: rows past a rollout's end are zeroed
        first, which the tile's sums do not know."""
        lo = max(r.start, self.first)  # prompt rows (a full-row forward) are not needed
        hi = min(r.stop, self.n_pos)  # rows past the longest completion belong to no one
        if hi <= lo:
            return
        n = hi - lo
        sel = _select(p.detach(), idx, self.n_heads)[:, :, lo - r.start : hi - r.start, : hi - key0]
        sel = sel * self._rows_valid(lo, hi, sel.device)
        b, h = sel.shape[:2]
        self.acc.add(
            slice(lo, hi),
            sel.reshape(b * h, n, hi - key0),
            slice(b * rows.start, b * rows.stop),
            key0=key0,
        )

    def _fused(self) -> None:
        """The kernel's sums are never used here (see `feed`)."""
        return None

    def finish_frame(self) -> tuple[HeadStats, Int[Tensor, "batch head"], Int[Tensor, " batch"]]:
        """The common statistics, each rollout's rows of them ``[batch, head]``, and each
        rollout's end column ``[batch]`` (its response is ``P .. end - 1``)."""
        return self.acc.finish(), self.rows, self.ends

    def finish(self) -> list[HeadStats]:
        """The statistics of each rollout, in its own frame (positions from its ``start``)."""
        common, rows, _ = self.finish_frame()
        out = []
        for i, (start, n, pl) in enumerate(self.spans):
            idx, cut = rows[i], slice(start, start + n)
            cuts = normalise_cuts(self.cuts, n)
            # A cut at least the rollout's length holds its whole column (the last one).
            which = [common.cuts.index(c) if c < n else len(common.cuts) - 1 for c in cuts]
            out.append(
                HeadStats(
                    heads=list(self.heads),
                    n_pos=n,
                    prompt_len=pl,
                    rowsum=common.rowsum[idx, cut],
                    dist=common.dist[idx, cut],
                    band=common.band[idx, cut],
                    cuts=cuts,
                    cut_sums=common.cut_sums[idx][:, which, : n - pl],
                )
            )
        return out


def check_pattern_memory(
    model: Any, batch: int, n_pos: int, *, logits: bool, what: str, fix: str
) -> None:
    """Refuse a pass through the bridge's eager attention that cannot fit in memory.

    Such a pass holds at least one layer's ``[batch head_index query_pos key_pos]`` pattern
    and, when the last layer runs, the ``[batch pos d_vocab]`` logits (measured on SmolLM2
    at T = 2048 and 4096: the logits plus 1.5 patterns), so ``need = batch x heads x T^2 +
    batch x T x d_vocab`` elements is a lower bound: a pass that might fit is never refused.

    Args:
        model: the bridge.
        batch, n_pos: the input's shape.
        logits: whether the pass computes the full logits.
        what: the pass, as the error's subject.
        fix: the fix; ``{shorter}`` in it becomes "use a shorter trace (about N tokens
            fit)", N solving ``need(N) = free memory``.
    """
    from .._memory import check_fits

    per_pattern = _pattern_bytes(model, batch)
    per_logits = batch * model.cfg.d_vocab * next(model.parameters()).element_size() * logits

    def shorter(have: int) -> str:  # the longest T with per_pattern T^2 + per_logits T <= have
        root = (per_logits**2 + 4 * per_pattern * have) ** 0.5
        fits = int((root - per_logits) / (2 * per_pattern))
        return fix.format(shorter=f"use a shorter trace (about {fits:,} tokens fit)")

    need = per_pattern * n_pos * n_pos + per_logits * n_pos
    check_fits(need, model_device(model), what, shorter)


#: Why only the exact path reads a model whose tiled pass a layer does not go through.
_BYPASSED = "a layer of it bypasses transformers' attention interface"


def _patterns_fit(model: Any, batch: int, n_pos: int) -> bool:
    """Whether one layer's ``[batch head_index query_pos key_pos]`` pattern fits in the free
    memory (unknown: assumed to)."""
    from .._memory import available_bytes

    have = available_bytes(model_device(model))
    return have is None or _pattern_bytes(model, batch) * n_pos * n_pos <= have


def _pattern_bytes(model: Any, batch: int) -> int:
    """Bytes of one layer's pattern per query and key position: ``batch x heads x size``."""
    return batch * model.cfg.n_heads * next(model.parameters()).element_size()


def tiled_supported(model: Any) -> bool:
    """Whether the tiled path can analyse this bridge's model (see the module docstring):
    its class declares transformers' attention interface, or, for one that does not, a
    check on 64 tokens finds that it uses the interface all the same and that the tiled
    pass reproduces its eager attention (`interface.reproduces_eager`, once per model)."""
    try:
        hf = sampler(model)
    except WorkbenchError:
        return False
    return supports_attention_interface(hf) or interface.reproduces_eager(
        hf, attention_layers(model)
    )


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
    sink: str = "keep",
) -> tuple[HeadStats, Float[Tensor, " pos"]]:
    """One forward pass over `ids` that reduces the attention of `heads` to `HeadStats`.

    Args:
        model: a TransformerBridge (eager attention).
        ids: ``[pos]`` token ids (prompt + response).
        prompt_len: first response position.
        heads: sorted ``(layer, head)`` pairs to reduce.
        max_window: diagonals to keep (largest WAAD window that can be recomputed).
        cuts: FAI cut distances to keep (see `metrics.DEFAULT_FAI_CUTS`).
        path: ``"tiled"`` (the registered attention function, query tiles, no full
            pattern), ``"exact"`` (TransformerLens pattern hooks) or ``"auto"`` (tiled
            when the model supports it).
        tile_rows: query rows per tile on the tiled path (default: `tiling.tile_rows`,
            about 4M scores and 96 to 224 rows on the CPU, more on a GPU).
        fast_other_layers: on the tiled path, run layers that are not analysed with
            ``scaled_dot_product_attention`` (faster; the residual stream then differs
            from eager attention by float rounding, about 1e-5 relative in later metrics)
            instead of the same tiled eager computation.
        sink: ``"keep"`` (the paper) or ``"exclude"``: reduce the attention with the first
            token's column removed and each row renormalised (see `workbench.attention.reductions`).

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
        sink=sink,
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
    sink: str = "keep",
    sdpa_outputs: bool = False,
    columns: bool = True,
    only_exact: str | None = None,
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
        sdpa_outputs: on the tiled path, every layer's output comes from sdpa and the
            analysed layers compute their probabilities apart, only to reduce them (the RL
            credit passes; metrics then differ from an all-eager pass by float rounding).
        columns: False keeps no column sums beyond the band (every FAI cut is read off a
            band as wide as the longest; FAI to the end of the response is then kept only
            for sequences the band spans). On the CPU the analysed layers then cost one
            flash attention call and a band of dot products each, instead of tiles of
            probabilities (`interface.Banded`; the RL credit pass, `gamma_many`).
        only_exact: why only the exact path can read this model, for the message that
            refuses a pass too large for memory (set by ``"auto"``'s own fallback).
        (others): as in `collect`.

    Returns:
        One ``(stats, entropy)`` per item, in order.
    """
    check_model(model)
    heads = sorted(heads)
    check_layers(model, [layer for layer, _ in heads])
    lens = [int(ids.shape[0]) for ids, _ in items]
    t_max = max(lens)
    if path not in ("auto", "exact", "tiled"):
        raise WorkbenchError(f"path={path!r} is not a path", 'pass "auto", "exact" or "tiled"')
    auto = path == "auto"
    if auto:
        path = "tiled" if tiled_supported(model) else "exact"
        if path == "exact":
            only_exact = "its attention does not go through transformers' attention interface"
    elif path == "tiled" and not tiled_supported(model):
        raise WorkbenchError(
            f"the tiled path does not support this model: {arch_name(model)} "
            "does not route its attention through transformers' attention interface",
            'use path="exact" (or "auto")',
        )
    if (
        path == "tiled"
        and not _patterns_fit(model, len(items), t_max)
        and not interface.routes_every_layer(sampler(model), sorted({ly for ly, _ in heads}))
    ):
        # A layer that bypasses the interface would compute its whole pattern eagerly
        # inside the tiled pass (a raw allocator error, or the process killed, after the
        # tiled layers before it had run): "auto" takes the exact path, whose check
        # refuses it with the length that fits.
        if not auto:
            raise WorkbenchError(
                f"the tiled path cannot analyse {arch_name(model)} at T = {t_max:,}: "
                f"{_BYPASSED}, and would compute that layer's whole pattern",
                'use path="auto" (it says how long a trace fits) or a shorter trace',
            )
        path, only_exact = "exact", _BYPASSED
    device = model_device(model)
    collector = Collector(
        [(0, n, pl) for n, (_, pl) in zip(lens, items, strict=True)],
        heads,
        model.cfg.n_heads,
        max_window=max_window,
        cuts=cuts,
        device=device,
        sink=sink,
        columns=columns,
    )
    by_layer = collector.by_layer
    inp = torch.full((len(items), t_max), pad_id, dtype=torch.long, device=device)
    for i, (ids, _) in enumerate(items):
        inp[i, : lens[i]] = ids.to(device)
    # Blocks from `stop_at_layer` on never run; None runs the whole model.
    stop_at_layer = None if entropy else max(by_layer) + 1
    if stop_at_layer is not None and stop_at_layer >= model.cfg.n_layers:
        stop_at_layer = None

    tap: Any = None  # the tiled path's `_OutputTap`, when it computes the entropies
    if path == "exact":
        check_pattern_memory(
            model,
            len(items),
            t_max,
            logits=stop_at_layer is None,
            what=f'the exact path at T = {t_max:,} tokens (path="exact")',
            # the tiled path, whose memory grows linearly, cannot read this model
            fix=f"only the exact path reads {arch_name(model)} ({only_exact}): {{shorter}}"
            if only_exact
            else 'use path="tiled" (or "auto"; its memory grows linearly), or {shorter}',
        )
        fired: set[int] = set()

        def make_hook(layer: int, rows: slice, head_idx: list[int]):
            def hook(pattern: Tensor, hook: Any = None) -> None:
                fired.add(layer)
                collector.feed(slice(0, t_max), pattern, rows, head_idx)

            return hook

        fwd_hooks = [
            (f"blocks.{layer}.attn.hook_pattern", make_hook(layer, rows, idx))
            for layer, (rows, idx) in by_layer.items()
        ]
        with eval_mode(model):  # as the tiled path's pass: no dropout on the pattern
            logits = model.run_with_hooks(inp, fwd_hooks=fwd_hooks, stop_at_layer=stop_at_layer)
        silent = sorted(set(by_layer) - fired)
        if silent:  # the statistics of those layers would be all zero, and look like numbers
            raise WorkbenchError(
                f"the attention-pattern hooks of layer(s) {silent[:8]} never fired in the "
                f"forward pass of {arch_name(model)}, so their attention was never seen",
                "bridge the model with wb.load_model or wb.models.bridge_model from its "
                "unpatched class (a model whose forward was replaced runs other modules)",
            )
    else:
        reducers = collector.reducers()
        hf = sampler(model)
        stop_after = None if stop_at_layer is None else stop_at_layer - 1
        logits = None
        tap = _OutputTap(hf) if entropy else contextlib.nullcontext()
        try:
            with (
                interface.analysis_pass(
                    hf, reducers, stop_after=stop_after, tile_rows=tile_rows,
                    fast_other_layers=fast_other_layers, sdpa_outputs=sdpa_outputs,
                ),
                contextlib.suppress(interface.StopPass),  # raised after the last analysed layer
                tap,
            ):  # fmt: skip
                logits = hf(input_ids=inp, use_cache=False).logits
        except interface.NotRouted:
            if not auto:
                raise
            # Some layer bypasses the attention interface (an unusual config): the bridge's
            # hooks see every layer.
            return collect_many(
                model, items, heads, max_window=max_window, cuts=cuts, path="exact",
                pad_id=pad_id, entropy=entropy, sink=sink, columns=columns,
                only_exact=_BYPASSED,
            )  # fmt: skip
        if entropy and not tap.reproduces(logits):
            if tap.hidden is not None:
                # An output transform the tap does not know (its probe rows disagree with the
                # model's): take the logits from a plain forward pass of the same weights.
                logits = hf(input_ids=inp, use_cache=False).logits
            tap = None  # else the output layer was never seen, and full logits came back
    out = []
    for i, stats in enumerate(collector.finish()):
        if entropy and isinstance(tap, _OutputTap):
            ent = tap.entropy(i, lens[i], items[i][1])
        elif entropy:
            ent = _entropy(logits[i : i + 1], lens[i], items[i][1])
        else:
            ent = torch.full((lens[i],), float("nan"), dtype=torch.float64)
        out.append((stats, ent))
    del logits
    return out
