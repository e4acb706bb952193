"""Interventions as TransformerLens hooks on the bridge: attention knockout, residual ablation.

Both are small frozen records that turn into a ``fwd_hooks`` list for a given model, in
TransformerLens style, so they compose by concatenation::

    ko = Knockout([41, 57], layers="all")           # later queries may not attend to 41, 57
    ab = ResidAblation([41], layers=10, mode="zero")
    logits = model.run_with_hooks(ids, fwd_hooks=ko.fwd_hooks(model) + ab.fwd_hooks(model))
    with intervene(model, ko, ab):                  # the same, as a context manager
        logits = model(ids)

Knockout (Geva et al. 2023; README, "The method"): on
``blocks.{l}.attn.hook_attn_scores`` ``[batch head_index query_pos key_pos]`` (pre-softmax;
the bridge has already put its causal mask there, a large negative number above the
diagonal), the score from every *strictly later* query ``t > s`` to a knocked-out key ``s``
is set to ``-inf``; the bridge's softmax then renormalises each row over the keys left. A
knocked-out position still attends to itself and to earlier keys, so its own residual
stream is untouched in the knocked-out layers; what it can no longer do is pass
information forward through attention in those layers. Every row keeps at least its own
position, so no row is all ``-inf``. Query positions are read as ``key_len - query_len +
i``. Where the bridge delegates attention to the wrapped Hugging Face module (GPT-Neo,
Jamba), ``hook_attn_scores`` fires after the fact and an edit there is discarded; a
one-time probe per model finds this and the knockout is refused with a `WorkbenchError`
(use residual ablation there). In a hybrid model only its attention layers can be knocked
out (``"all"`` means those).

Residual ablation (TransformerLens activation patching): on ``blocks.{l}.hook_resid_pre``
``[batch pos d_model]`` the vectors at the chosen positions are replaced by zero
(``"zero"``), by a reference mean vector (``"mean"``, see `resid_mean`), or by the same
layer's vectors of another trace (``"resample"``, see `resid_cache`). Positions before
the earliest ablated one are untouched in every layer (causality); the ablated positions
and everything after can change from layer ``l`` on.

Position 0 (the attention sink) is refused by both unless ``allow_sink=True``.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, SupportsIndex, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from .. import _compat, _validate
from ..attention.engine import arch_name, attention_layers, check_layers
from ..attention.layers import resolve_layers
from ..attention.params import check_layers as layer_selection
from ..errors import WorkbenchError
from ..models import eval_mode, model_device
from ..models.bridge import check_same_model, model_name
from ..trace import Trace, check_traces
from ..trace.tokens import check_context, check_ids, check_trace_tokens

__all__ = [
    "Intervention",
    "Knockout",
    "ResidAblation",
    "default_resid_layer",
    "fwd_hooks",
    "intervene",
    "resid_cache",
    "resid_mean",
]

Hook = tuple[str, Callable[..., Any]]
RESID_MODES = ("zero", "mean", "resample")


def _position_list(positions: Iterable[SupportsIndex], allow_sink: bool, what: str) -> list[int]:
    """`positions` as a list of non-negative ints, in the given order (repeats kept).

    A mapping is refused: iterating it gives its keys, so ``{5: 1}`` was read as position
    5 without a word.
    """
    _refuse_mapping(positions, f"{what} positions", "pass e.g. positions=[12, 30]")
    try:
        if isinstance(positions, (str, bytes)):
            raise TypeError
        items = list(positions)
    except TypeError:
        raise WorkbenchError(
            f"{what} positions must be a list of integers, got {positions!r}",
            "pass e.g. positions=[12, 30]",
        ) from None
    out = []
    for p in items:
        if not _validate.is_index(p):  # a float tensor's __index__ raised a raw TypeError
            raise WorkbenchError(
                f"{what} position {p!r} is not an integer", "pass positions as ints"
            )
        p = _validate.as_index(p)
        if p < 0:
            raise WorkbenchError(
                f"{what} position {p} is negative", "pass absolute positions (0-based)"
            )
        if p == 0 and not allow_sink:
            raise WorkbenchError(
                f"{what} would ablate position 0, the attention sink",
                "leave position 0 out, or pass allow_sink=True if you really mean it",
            )
        out.append(p)
    return out


def _refuse_mapping(value: Any, what: str, fix: str) -> None:
    """Refuse a dict (or any mapping) where a list is meant: it iterates as its keys."""
    if isinstance(value, Mapping):
        raise WorkbenchError(
            f"{what} must be a list, got a {type(value).__name__} {value!r}"[:200]
            + " (its keys would be read as the list)",
            fix,
        )


def _refuse_unordered(value: Any, what: str) -> None:
    """Refuse a set where order pairs entries: its order is not the order it was written."""
    if isinstance(value, Set):
        raise WorkbenchError(
            f"{what} are paired by order, but a {type(value).__name__} has no order "
            f"({value!r} does not iterate in the order written)",
            "pass positions and source_positions as lists, in matching order",
        )


def _check_positions(
    positions: Iterable[SupportsIndex], allow_sink: bool, what: str
) -> tuple[int, ...]:
    return tuple(sorted(set(_position_list(positions, allow_sink, what))))


def _check_heads(heads: Any) -> tuple[int, ...] | None:
    """None, or the head indices as sorted distinct ints (refusing fractions and bools,
    which ``int()`` would turn into another head without a word)."""
    if heads is None:
        return None
    _refuse_mapping(heads, "knockout heads", "pass e.g. heads=[0, 3]")
    if isinstance(heads, (str, bytes)) or not isinstance(heads, Iterable):
        raise WorkbenchError(
            f"knockout heads must be None or a list of head indices, got {heads!r}",
            "pass e.g. heads=[0, 3]",
        )
    out = set()
    for h in heads:
        if not _validate.is_index(h):
            raise WorkbenchError(
                f"knockout head {h!r} is not an integer", "pass head indices as ints"
            )
        out.add(_validate.as_index(h))
    if not out:  # an empty list would knock out no head: a silent no-op
        raise WorkbenchError(
            "knockout heads is an empty list, so the knockout would change nothing",
            "pass heads=None for every head, or a list of head indices, e.g. heads=[0, 3]",
        )
    return tuple(sorted(out))


def default_resid_layer(n_layers: int) -> int:
    """This project's default layer for residual ablation: ``floor(L/3)``.

    The first of the paper's "middle" layers: late enough that the position's token has
    been read and mixed, early enough that most of the computation comes after.
    """
    return _validate.integer("n_layers", n_layers, minimum=1, example=12) // 3


class Intervention:
    """Base class: anything with ``fwd_hooks(model)`` and a ``label``."""

    positions: Iterable[SupportsIndex]

    def fwd_hooks(self, model: Any) -> list[Hook]:
        """The ``[(hook_name, fn)]`` pairs that apply this intervention to `model` (a
        bridge), in TransformerLens's ``run_with_hooks(fwd_hooks=...)`` form."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Knockout(Intervention):
    """Attention knockout of key positions (later queries may not attend to them).

    Attributes:
        positions: absolute key positions to knock out (position 0 refused unless
            `allow_sink`).
        layers: ``"all"``, ``"middle"``, one index or a list of layer indices.
        heads: None for every head, or a non-empty list of head indices (the same in every
            layer).
        allow_sink: allow position 0.
    """

    positions: Iterable[SupportsIndex]
    layers: str | int | Sequence[int] = "all"
    heads: Sequence[int] | None = None
    allow_sink: bool = False

    def __post_init__(self) -> None:
        _validate.flag("allow_sink", self.allow_sink)
        object.__setattr__(self, "layers", layer_selection(self.layers))
        object.__setattr__(
            self, "positions", _check_positions(self.positions, self.allow_sink, "knockout")
        )
        object.__setattr__(self, "heads", _check_heads(self.heads))

    @property
    def label(self) -> str:
        return "knockout"

    def fwd_hooks(self, model: Any) -> list[Hook]:
        """``[(hook_name, fn)]`` on ``blocks.{l}.attn.hook_attn_scores`` for each layer.

        In a hybrid model (Jamba, Qwen3-Next) ``"all"`` and ``"middle"`` mean its attention
        layers; a layer without softmax attention is refused. So is a model whose bridge
        cannot apply the edit: where TransformerLens delegates attention to the wrapped
        Hugging Face module (GPT-Neo, Jamba...), ``hook_attn_scores`` fires after the fact
        and an edit there would change nothing. A one-time probe per model and layer (one
        short forward pass) checks that a knocked-out key gets zero attention weight, and
        a `WorkbenchError` names the architecture rather than every effect reading 0;
        `ResidAblation` works on every architecture.

        Args:
            model: the bridge.
        """
        layers = resolve_layers(self.layers, model.cfg.n_layers, attention=attention_layers(model))
        check_layers(model, layers)
        heads = None if self.heads is None else list(self.heads)
        if heads is not None and any(not 0 <= h < model.cfg.n_heads for h in heads):
            raise WorkbenchError(
                f"knockout heads {heads} out of range for {model.cfg.n_heads} heads",
                f"pick heads in 0..{model.cfg.n_heads - 1}",
            )
        _check_knockout_applies(model, layers)
        hook = _knockout_hook(torch.tensor(self.positions, dtype=torch.long), heads)
        return [(f"blocks.{layer}.attn.hook_attn_scores", hook) for layer in layers]


def _knockout_hook(keys: Tensor, heads: list[int] | None) -> Callable[..., Tensor]:
    def hook(scores: Tensor, hook: Any = None) -> Tensor:
        if len(keys) == 0:
            return scores
        n_q, n_k = scores.shape[-2], scores.shape[-1]
        if int(keys.max()) >= n_k:
            raise WorkbenchError(
                f"knockout position {int(keys.max())} is beyond the sequence ({n_k} tokens)",
                "use positions of this sequence",
            )
        k = keys.to(scores.device)
        q = torch.arange(n_k - n_q, n_k, device=scores.device)
        block = torch.zeros(n_q, n_k, dtype=torch.bool, device=scores.device)
        block[:, k] = q[:, None] > k[None, :]
        if heads is None:
            return scores.masked_fill(block, float("-inf"))
        out = scores.clone()
        out[:, heads] = out[:, heads].masked_fill(block, float("-inf"))
        return out

    return hook


#: ``{model: {layer: whether a knockout edit reaches the attention weights}}``.
_KNOCKOUT_PROBES: weakref.WeakKeyDictionary[Any, dict[int, bool]] = weakref.WeakKeyDictionary()


@torch.no_grad()
def _probe_knockout(model: Any, layers: Sequence[int]) -> dict[int, bool]:
    """Per layer: does a knockout on ``hook_attn_scores`` reach the attention weights?

    One forward pass of 4 tokens knocks key 1 out of queries 2 and 3 in every layer of
    `layers` and reads ``hook_pattern``: the edit took effect iff those weights are 0 and
    TransformerLens did not warn that it discarded the edit. The pass runs without the
    hooks already live on the model (an `intervene` context's), which were made for the
    caller's sequence, not for these 4 tokens (`workbench._compat.suspended_hooks`).
    """
    ids = (torch.arange(1, 5).reshape(1, -1) % int(model.cfg.d_vocab)).to(model_device(model))
    seen: dict[int, Tensor] = {}

    def read(layer: int) -> Callable[..., None]:
        def hook(pattern: Tensor, hook: Any = None) -> None:
            seen[layer] = pattern[..., 2:, 1].detach().float().cpu()

        return hook

    edit = _knockout_hook(torch.tensor([1]), None)
    hooks: list[Hook] = []
    for layer in layers:
        hooks.append((f"blocks.{layer}.attn.hook_attn_scores", edit))
        hooks.append((f"blocks.{layer}.attn.hook_pattern", read(layer)))
    with (
        warnings.catch_warnings(record=True) as caught,
        _compat.suspended_hooks(model),
        eval_mode(model),
    ):
        warnings.simplefilter("always")
        model.run_with_hooks(ids, fwd_hooks=hooks)
    discarded = any("discarded" in str(w.message) for w in caught)
    return {
        layer: not discarded and layer in seen and bool((seen[layer] == 0).all())
        for layer in layers
    }


def _check_knockout_applies(model: Any, layers: Sequence[int]) -> None:
    """Raise a `WorkbenchError` when the bridge would discard a knockout in `layers`."""
    try:
        known = _KNOCKOUT_PROBES.setdefault(model, {})
    except TypeError:  # not weak-referenceable: probe every time
        known = {}
    todo = [layer for layer in layers if layer not in known]
    if todo:
        known.update(_probe_knockout(model, todo))
    bad = [layer for layer in layers if not known[layer]]
    if bad:
        raise WorkbenchError(
            f"attention knockout does not work on {arch_name(model)}: TransformerLens runs its "
            "attention inside the wrapped Hugging Face module, so an edit of the attention "
            f"scores (layers {bad}) would be discarded and every effect would read 0",
            "use ResidAblation (mode='zero', 'mean' or 'resample'), which works on every "
            "architecture, e.g. run_ablations(..., interventions=['resid-zero'])",
        )


@dataclass(frozen=True, eq=False)
class ResidAblation(Intervention):
    """Replace the residual stream (``hook_resid_pre``) at chosen positions.

    Attributes:
        positions: absolute positions to ablate (position 0 refused unless `allow_sink`).
        layers: layer index, list, ``"all"`` or ``"middle"``; None = `default_resid_layer`
            (``floor(L/3)``).
        mode: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference: for ``"mean"``: ``{layer: [d_model]}`` (from `resid_mean`); for
            ``"resample"``: ``{layer: [pos d_model]}`` of another trace (from
            `resid_cache`). A single tensor is used for every layer. One that another
            model computed (the `Reference` of `resid_mean` / `resid_cache` records it)
            is refused by `fwd_hooks`, with any model of the same shape.
        source_positions: for ``"resample"``, the source trace's positions to copy from
            (same length as `positions`); None copies from the same positions.
        allow_sink: allow position 0.

    Two ablations are equal when their positions, layers, mode, source positions and
    `allow_sink` are, and they share the same `reference` object (tensors have no single
    truth value to compare by, and a copy may have been changed); the hash agrees, so an
    ablation can be a dict key or a set member whatever its reference holds.
    """

    positions: Iterable[SupportsIndex]
    layers: int | Sequence[int] | None = None
    mode: str = "zero"
    reference: Any = field(default=None, repr=False)
    source_positions: Sequence[int] | None = None
    allow_sink: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in RESID_MODES:
            raise WorkbenchError(
                f"residual ablation mode {self.mode!r} is unknown", f"use one of {RESID_MODES}"
            )
        _validate.flag("allow_sink", self.allow_sink)
        if self.layers is not None:
            object.__setattr__(self, "layers", layer_selection(self.layers))
        if self.source_positions is not None and self.mode != "resample":
            raise WorkbenchError(
                f"source_positions are only read by mode='resample', not mode={self.mode!r}",
                "leave source_positions out, or use mode='resample'",
            )
        if self.reference is not None and self.mode == "zero":
            raise WorkbenchError(
                "mode='zero' reads no reference, but one was given",
                "leave reference out, or use mode='mean' / 'resample' to use it",
            )
        if self.source_positions is None:
            object.__setattr__(
                self, "positions", _check_positions(self.positions, self.allow_sink, "ablation")
            )
        else:
            for value in (self.positions, self.source_positions):
                _refuse_unordered(value, "ablation positions and source_positions")
            positions = _position_list(self.positions, self.allow_sink, "ablation")
            sources = _position_list(self.source_positions, True, "resample source")
            if len(set(positions)) != len(positions):
                raise WorkbenchError(
                    f"ablation positions {positions} repeat a position, so its source is ambiguous",
                    "pass each ablated position once, with one source position each",
                )
            if len(sources) != len(positions):
                raise WorkbenchError(
                    f"{len(sources)} source positions for {len(positions)} positions",
                    "pass one source position per ablated position (same order)",
                )
            pairs = sorted(zip(positions, sources, strict=True))
            object.__setattr__(self, "positions", tuple(p for p, _ in pairs))
            object.__setattr__(self, "source_positions", tuple(s for _, s in pairs))
        if self.mode != "zero" and self.reference is None:
            fix = "resid_mean(model, traces)" if self.mode == "mean" else "resid_cache(model, t)"
            raise WorkbenchError(
                f"residual ablation mode {self.mode!r} needs a reference", f"pass reference={fix}"
            )

    def _key(self) -> tuple[Any, ...]:
        return (self.positions, self.layers, self.mode, self.source_positions, self.allow_sink)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ResidAblation):
            return NotImplemented
        return self._key() == other._key() and self.reference is other.reference

    def __hash__(self) -> int:
        return hash((self._key(), id(self.reference)))

    @property
    def label(self) -> str:
        return f"resid-{self.mode}"

    def _layers(self, model: Any) -> list[int]:
        n = model.cfg.n_layers
        return resolve_layers(default_resid_layer(n) if self.layers is None else self.layers, n)

    def _ref(self, layer: int) -> Tensor:
        ref = self.reference
        if isinstance(ref, dict):
            if layer not in ref:
                raise WorkbenchError(
                    f"the reference has no entry for layer {layer} (has {sorted(ref)})",
                    "build it for the same layers (resid_mean/resid_cache(..., layers=...))",
                )
            ref = ref[layer]
        try:
            ref = torch.as_tensor(ref)
        except (TypeError, ValueError, RuntimeError):
            ref = None
        if ref is None or ref.dtype == torch.bool or ref.is_complex():
            raise WorkbenchError(
                f"the {self.mode} reference for layer {layer} is not a tensor of numbers",
                "pass resid_mean(model, traces) or resid_cache(model, trace)",
            )
        if not bool(torch.isfinite(ref).all()):
            raise WorkbenchError(
                f"the {self.mode} reference for layer {layer} holds NaN or infinite values, "
                "which would make every later prediction NaN",
                "rebuild it with resid_mean / resid_cache from finite activations",
            )
        return ref

    def fwd_hooks(self, model: Any) -> list[Hook]:
        """``[(hook_name, fn)]`` on ``blocks.{l}.hook_resid_pre`` for each layer.

        Args:
            model: the bridge (every forward pass starts at position 0: no KV cache).
        """
        hooks = []
        pos = torch.tensor(self.positions, dtype=torch.long)
        d_model = model.cfg.d_model
        check_same_model(
            getattr(self.reference, "model", None),
            model_name(model),
            f"the {self.mode} reference",
            f"compute it with this model: reference="
            f"{'resid_mean(model, traces)' if self.mode == 'mean' else 'resid_cache(model, t)'}",
        )
        for layer in self._layers(model):
            if self.mode == "zero":
                values = None
            else:
                ref = self._ref(layer)
                if self.mode == "mean":
                    if ref.shape != (d_model,):
                        raise WorkbenchError(
                            f"mean reference for layer {layer} has shape {tuple(ref.shape)}",
                            f"pass a [d_model] = [{d_model}] vector (resid_mean)",
                        )
                    values = ref[None, :].expand(len(pos), d_model)
                else:
                    src = (
                        pos
                        if self.source_positions is None
                        else torch.tensor(self.source_positions, dtype=torch.long)
                    )
                    if ref.ndim != 2 or ref.shape[1] != d_model:
                        raise WorkbenchError(
                            f"resample reference for layer {layer} has shape {tuple(ref.shape)}",
                            "pass [pos d_model] activations of another trace (resid_cache)",
                        )
                    if len(src) and int(src.max()) >= ref.shape[0]:
                        raise WorkbenchError(
                            f"resample source position {int(src.max())} is beyond the source "
                            f"trace ({ref.shape[0]} positions)",
                            "pick a longer source trace or pass source_positions",
                        )
                    values = ref[src]
            hooks.append((f"blocks.{layer}.hook_resid_pre", _resid_hook(pos, values)))
        return hooks


def _resid_hook(pos: Tensor, values: Tensor | None) -> Callable[..., Tensor]:
    def hook(resid: Tensor, hook: Any = None) -> Tensor:
        if len(pos) == 0:
            return resid
        if int(pos.max()) >= resid.shape[1]:
            raise WorkbenchError(
                f"ablation position {int(pos.max())} is beyond the sequence "
                f"({resid.shape[1]} tokens)",
                "use positions of this sequence",
            )
        rows = pos.to(resid.device)
        out = resid.clone()
        if values is None:
            out[:, rows] = 0.0
        else:
            out[:, rows] = values.to(device=resid.device, dtype=resid.dtype)
        return out

    return hook


class Reference(dict):
    """``{layer: tensor}`` activations from `resid_cache` or `resid_mean`, with the name of
    the model that computed them (`model_name`, None for a model the workbench did not
    load), so that `ResidAblation` refuses them on another model of the same shape (the
    tiny reasoner and searcher take each other's activations in every shape). A plain
    dict (or a tensor) records no model and is used as it is."""

    model: str | None = None


def _reference(values: dict[int, Tensor], model: Any) -> Reference:
    ref = Reference(values)
    ref.model = model_name(model)
    return ref


def fwd_hooks(model: Any, *interventions: Intervention) -> list[Hook]:
    """Concatenate the hooks of several interventions (applied together)."""
    hooks: list[Hook] = []
    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise WorkbenchError(
                f"expected a Knockout or ResidAblation, got {type(iv).__name__}",
                "build interventions with wb.Knockout(...) / wb.ResidAblation(...)",
            )
        hooks.extend(iv.fwd_hooks(model))
    return hooks


@contextlib.contextmanager
def intervene(model: Any, *interventions: Intervention) -> Iterator[Any]:
    """Context manager: every forward pass of `model` inside runs under the interventions.

    The hooks assume each forward pass starts at position 0 (no KV cache);
    `workbench.ablation.effects.greedy_continue` decodes under interventions that way.

    Args:
        model: the TransformerBridge (`wb.load_model`) to run under the interventions.
        *interventions: `Knockout` and `ResidAblation` objects, applied together; none at
            all runs the model unchanged. Anything else is a `WorkbenchError`, raised
            before any hook is added.

    Returns:
        A context manager that yields `model` itself with the interventions' hooks added;
        they are removed on leaving the ``with`` block, also when it raises.

    Example:
        ``with wb.intervene(model, wb.Knockout(positions=[5])) as m: logits = m(trace.ids[None])``
    """
    with model.hooks(fwd_hooks=fwd_hooks(model, *interventions)):
        yield model


def _ids(model: Any, trace_or_ids: Trace | Tensor, what: str = "the sequence") -> Tensor:
    """``[1 pos]`` int64 ids of one sequence (a `Trace` or 1-D token ids), checked: integer
    ids the model's vocabulary holds, at least one, within its context. A batch, float ids
    or another model's ids are a `WorkbenchError` (a batch would be read as one long
    sequence, a float id truncated to another token). A `Trace` recorded under another
    model must read as the same tokens under this model's tokenizer (`check_trace_tokens`):
    the tiny reasoner's ids fit SmolLM2's vocabulary and were run as other tokens."""
    fix = "pass a wb.Trace or one sequence of this model's token ids (1-D integers)"
    if isinstance(trace_or_ids, Trace):
        check_trace_tokens(model, trace_or_ids)
        ids = trace_or_ids.ids
    else:
        try:
            ids = torch.as_tensor(trace_or_ids)
        except (TypeError, ValueError, RuntimeError):
            raise WorkbenchError(
                f"{what} must be token ids, got a {type(trace_or_ids).__name__}", fix
            ) from None
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise WorkbenchError(f"{what} must hold integer token ids, got dtype {ids.dtype}", fix)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1:
        raise WorkbenchError(
            f"{what} must be one sequence of token ids, got shape {tuple(ids.shape)}",
            "pass one sequence at a time (a 1-D tensor of ids)",
        )
    if len(ids) == 0:
        raise WorkbenchError(f"{what} is empty", "pass at least one token id")
    check_ids(model, ids, what=what)
    check_context(model, len(ids), what=what, fix="pass a sequence the model's context holds")
    return ids.long().reshape(1, -1)


@torch.no_grad()
def resid_cache(
    model: Any, trace: Trace | Tensor, layers: int | Sequence[int] | None = None
) -> dict[int, Float[Tensor, "pos d_model"]]:
    """``{layer: [pos d_model]}`` residual stream (``hook_resid_pre``) of one trace.

    The reference for ``ResidAblation(mode="resample")``: run it on another trace. A
    `Reference` (a dict) that records the model, so it is refused on another model.
    """
    n = model.cfg.n_layers
    layer_list = resolve_layers(default_resid_layer(n) if layers is None else layers, n)
    store: dict[int, Tensor] = {}

    def make(layer: int):
        def hook(x: Tensor, hook: Any = None) -> None:
            store[layer] = x[0].detach().float().cpu().clone()

        return hook

    with eval_mode(model):
        model.run_with_hooks(
            _ids(model, trace, "the trace").to(model_device(model)),
            fwd_hooks=[(f"blocks.{lay}.hook_resid_pre", make(lay)) for lay in layer_list],
        )
    return _reference(store, model)


@torch.no_grad()
@no_type_check  # validates its arguments itself, with messages that name the fix
def resid_mean(
    model: Any,
    traces: Sequence[Trace],
    layers: int | Sequence[int] | None = None,
    *,
    where: str = "response",
) -> dict[int, Float[Tensor, " d_model"]]:
    """``{layer: [d_model]}`` mean residual stream over a reference set of traces.

    Args:
        model: the bridge.
        traces: the reference traces (one forward pass each).
        layers: layer(s); None = `default_resid_layer`.
        where: ``"response"`` (response positions only) or ``"all"`` (every position but
            0, the sink, whose residual norm is atypical).

    Returns:
        A `Reference` (a dict) that records the model, so it is refused on another model.
    """
    if where not in ("response", "all"):
        raise WorkbenchError(f"where={where!r} is unknown", 'use "response" or "all"')
    traces = check_traces(
        traces, caller="resid_mean", usage="pass e.g. resid_mean(model, [trace_a, trace_b])"
    )
    sums: dict[int, Tensor] = {}
    count = 0
    for t in traces:
        cache = resid_cache(model, t, layers)
        start = t.prompt_len if where == "response" else 1
        for layer, x in cache.items():
            s = x[start:].double().sum(0)
            sums[layer] = sums.get(layer, 0) + s
        count += len(t) - start
    if count == 0:
        raise WorkbenchError("the reference traces have no positions to average", "pass longer")
    return _reference({layer: (s / count).float() for layer, s in sums.items()}, model)
