"""Layer and head selection: ``"all"``, ``"middle"`` or a list (README, "The method").

The "middle" selection is the paper's RL default: five layers evenly spaced from
``floor(L/3)`` to ``floor(2L/3)`` inclusive, rounded to integers, duplicates removed (fewer
than five when ``L`` is small). Rounding uses Python's ``round`` (half to even), the same
rule as the project's top-q counting, so 30 layers give ``[10, 12, 15, 18, 20]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, no_type_check

from .. import _validate
from ..errors import WorkbenchError

__all__ = ["head_pairs", "layer_indices", "middle_layers", "resolve_heads", "resolve_layers"]

LAYERS_FIX = 'pass "all", "middle" or a list of layer indices, e.g. [10, 12]'


@no_type_check  # validates its argument itself, with messages that name the fix
def layer_indices(layers: Any) -> tuple[int, ...]:
    """An explicit layer selection as plain ints, in the order given: one integer
    (`_validate.as_index`: NumPy and 0-d torch integers too) or a flat, non-empty sequence
    of distinct ones. Negative indices stay as given (`resolve_layers` reads them against
    a model). `CreditParams` and `resolve_layers` both normalise with it.

    Raises:
        WorkbenchError: a mapping (``{1: 2}`` iterated as its keys, layer 1), an array or
            tensor of more than one dimension (``torch.tensor([[1]])`` read as layer 1),
            no layers, an entry that is not an integer, or a layer listed twice.
    """
    if _validate.is_index(layers):
        return (_validate.as_index(layers),)
    if isinstance(layers, Mapping):
        raise WorkbenchError(
            f"layers={layers!r} is a mapping, not a layer selection (its keys would be "
            "read as the layers)",
            LAYERS_FIX,
        )
    ndim = getattr(layers, "ndim", 1)
    if ndim != 1:
        shape = tuple(getattr(layers, "shape", ()))
        raise WorkbenchError(
            f"layers={layers!r} has {ndim} dimensions (shape {shape}), not a layer selection",
            'pass a flat list of layer indices (e.g. layers.flatten().tolist()), "all" or "middle"',
        )
    try:
        items = [] if isinstance(layers, str | bytes) else list(layers)
    except TypeError:
        items = []
    if not items:
        raise WorkbenchError(
            f"layers={layers!r} is empty or not a sequence: not a layer selection", LAYERS_FIX
        )
    # As plain ints: a NumPy or torch integer kept its type in the heads and meta.
    out = tuple(_validate.integer("layer", x, example=0) for x in items)
    twice = sorted({x for x in out if out.count(x) > 1})
    if twice:
        raise WorkbenchError(
            f"layers={list(out)} lists layer {twice[0]} more than once",
            f"list each layer once, e.g. layers={sorted(set(out))}",
        )
    return out


def head_pairs(name: str, heads: Any, fix: str) -> list[tuple[int, int]]:
    """`heads` as sorted distinct ``(layer, head)`` int tuples (`_validate.as_index`: NumPy
    and torch integers too; a float or bool is no head, where ``int(1.7)`` would pick 1).

    Raises:
        WorkbenchError: `heads` (named `name`, remedied by `fix`) is not such pairs.
    """
    try:
        return sorted({(_validate.as_index(a), _validate.as_index(b)) for a, b in heads})
    except (TypeError, ValueError):
        raise WorkbenchError(
            f"{name}={heads!r} is not a list of (layer, head) pairs", fix
        ) from None


@no_type_check  # validates its argument itself, with a message that names the fix
def middle_layers(n_layers: int) -> list[int]:
    """The paper's five middle-third layers for a model with `n_layers` layers.

    Args:
        n_layers: number of layers ``L`` (>= 1).

    Returns:
        Sorted distinct layer indices, evenly spaced from ``floor(L/3)`` to
        ``floor(2L/3)`` inclusive (README, "The method").
    """
    # `is_index`: a bool is no layer count (``True`` gave [0]); NumPy integers are
    if not _validate.is_index(n_layers) or _validate.as_index(n_layers) < 1:
        raise WorkbenchError(
            f"n_layers must be a positive integer, got {n_layers!r}",
            "pass the model's layer count, e.g. model.cfg.n_layers",
        )
    n_layers = _validate.as_index(n_layers)
    lo, hi = n_layers // 3, (2 * n_layers) // 3
    picks = [round(lo + (hi - lo) * i / 4) for i in range(5)]
    return sorted(set(picks))


@no_type_check  # validates its arguments itself, with messages that name the fix
def resolve_layers(
    layers: str | int | Sequence[int],
    n_layers: int,
    attention: Sequence[int] | None = None,
) -> list[int]:
    """Turn a layer selection into a sorted list of distinct layer indices.

    Args:
        layers: ``"all"``, ``"middle"`` (see `middle_layers`), one index or a list of
            distinct indices (`layer_indices`; negative indices count from the end, and
            may not name a layer listed otherwise).
        n_layers: the model's number of layers.
        attention: the layers that have attention (`engine.attention_layers`; None: all).
            In a hybrid model ``"all"`` means these, and ``"middle"`` the five middle-third
            of these (`middle_layers` of their count, indexing into them).

    Returns:
        Sorted distinct indices in ``0..n_layers-1``.
    """
    if isinstance(layers, str):
        have = list(range(n_layers)) if attention is None else sorted(attention)
        if layers == "all":
            return have
        if layers == "middle":
            return [have[i] for i in middle_layers(len(have))] if have else []
        raise WorkbenchError(f"layers={layers!r} is not a layer selection", LAYERS_FIX)
    given = layer_indices(layers)
    out: dict[int, int] = {}  # layer -> the index that named it
    for layer in given:
        if not -n_layers <= layer < n_layers:
            raise WorkbenchError(
                f"layer {layer} is out of range for a model with {n_layers} layers",
                f"pick layers in 0..{n_layers - 1}",
            )
        index = layer % n_layers
        if index in out:  # [1, -1] on two layers, as [1, 1] in layer_indices
            raise WorkbenchError(
                f"layers={list(given)} name layer {index} twice on a model with "
                f"{n_layers} layers ({out[index]} and {layer})",
                f"list each layer once, e.g. layers={sorted({x % n_layers for x in given})}",
            )
        out[index] = layer
    return sorted(out)


@no_type_check  # validates its arguments itself, with messages that name the fix
def resolve_heads(
    layers: list[int],
    heads: Sequence[tuple[int, int]] | None,
    n_layers: int,
    n_heads: int,
    attention: Sequence[int] | None = None,
) -> list[tuple[int, int]]:
    """The analysed heads as sorted ``(layer, head)`` pairs.

    Args:
        layers: resolved layer indices (from `resolve_layers`).
        heads: optional restriction to these ``(layer, head)`` pairs; each layer must be
            among `layers` unless `layers` was ``"all"``. None keeps every head of `layers`.
        n_layers: the model's number of layers.
        n_heads: query heads per layer.
        attention: the layers that compute attention (`engine.attention_layers`), so that
            a head of a hybrid model's other layers is named as such; None: every layer.

    Returns:
        Sorted distinct ``(layer, head)`` pairs.
    """
    if heads is None:
        return [(layer, h) for layer in layers for h in range(n_heads)]
    try:
        items = [tuple(x) for x in heads]
    except TypeError:
        raise WorkbenchError(
            f"heads={heads!r} is not a list of (layer, head) pairs",
            "pass e.g. heads=[(10, 0), (12, 3)]",
        ) from None
    if not items:
        raise WorkbenchError("heads is an empty list", "pass at least one (layer, head), or None")
    out = set()
    allowed = set(layers)
    for item in items:
        if len(item) != 2 or not all(_validate.is_index(x) for x in item):
            raise WorkbenchError(
                f"head {item!r} is not a (layer, head) pair of ints",
                "pass e.g. heads=[(10, 0), (12, 3)]",
            )
        layer, h = (_validate.as_index(x) for x in item)  # NumPy / torch integers as ints
        if not 0 <= layer < n_layers or not 0 <= h < n_heads:
            # `layers=-1` counts from the end; a head pair does not (a head is named once,
            # as the maps, classes and frames name it)
            raise WorkbenchError(
                f"head {item} is out of range for a model with {n_layers} layers x {n_heads} heads"
                + (" (head pairs count from 0, not from the end)" if min(layer, h) < 0 else ""),
                f"pick layers in 0..{n_layers - 1} and heads in 0..{n_heads - 1}",
            )
        if attention is not None and layer not in attention:
            # it was "not among the selected layers; use layers='all'", under layers="all"
            raise WorkbenchError(
                f"head {item} is in layer {layer}, which computes no attention (a "
                "state-space, linear-attention or convolution layer of this hybrid model)",
                f"pick heads of the attention layers {sorted(attention)}",
            )
        if layer not in allowed:
            raise WorkbenchError(
                f"head {item} is in layer {layer}, which is not among the selected layers "
                f"{sorted(allowed)}",
                'add the layer to `layers` or use layers="all" with `heads`',
            )
        out.add((layer, h))
    return sorted(out)
