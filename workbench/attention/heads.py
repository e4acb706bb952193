"""Head classes (Eq. 8): the local and the global heads, by span.

`classify_heads` applies the paper's quantile rule to one set of spans; `HeadClasses`
holds a classification so it can be fixed and reused across traces (for example one
computed from the mean span of a batch, `analyze_many(..., heads_from="batch")`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from .. import _validate
from .._validate import as_index
from ..errors import WorkbenchError
from .layers import head_pairs
from .params import check_quantiles
from .rhythm import select_count

__all__ = ["Head", "HeadClasses", "classify_heads"]

Head = tuple[int, int]


# Checks its own fields with messages that name the fix (see `params`).
@no_type_check
@dataclass(frozen=True)
class HeadClasses:
    """A head classification (Eq. 8) that can be fixed and reused across traces.

    Attributes:
        local_heads: ``(layer, head)`` pairs with the smallest span (``H_loc``), at least one.
        global_heads: ``(layer, head)`` pairs with the largest span (``H_glob``), at least one.
        span: ``[layer head]`` the spans it was computed from (NaN where not analysed).
        quantiles: ``(q_local, q_global)`` used.

    Built by hand, the head lists are normalised to sorted distinct ``(int, int)`` tuples
    (pairs read back from JSON are lists); an empty list is refused, since WAAD or FAI
    would then be a mean over no heads (NaN everywhere, no preplan or anchor tokens), so
    is a head in both lists, and so is a head outside the span's grid (a negative index
    included). A head is in both lists only where the counting rule puts it there
    (`classify_heads` of the span with these quantiles: one head, or counts that add up
    to more than the heads, as README "The method" says), as in `from_span` and
    `Analysis.classes` of such an analysis. The span must be a ``[layer, head]`` grid
    without infinite values (it is kept as float64 on the CPU).
    """

    local_heads: list[Head]
    global_heads: list[Head]
    span: Float[Tensor, "layer head_index"] = field(repr=False)
    quantiles: tuple[float, float] = (0.3, 0.3)

    def __post_init__(self) -> None:
        span = _span_grid(self.span, "HeadClasses.span")
        object.__setattr__(self, "span", span)
        for name in ("local_heads", "global_heads"):
            object.__setattr__(self, name, _head_list(name, getattr(self, name), span.shape))
        quantiles = check_quantiles(self.quantiles)
        object.__setattr__(self, "quantiles", quantiles)
        both = sorted(set(self.local_heads) & set(self.global_heads))
        # WAAD and FAI would read the same heads: by hand, a mistake; by the counting rule
        # (one head: `Analysis.classes` of `a.select_heads([(10, 0)])`), what it says
        rule = _by_rule(span, quantiles) if both and bool((~span.isnan()).any()) else None
        if both and rule != (self.local_heads, self.global_heads):
            raise WorkbenchError(
                f"heads {both[:4]} are both local and global",
                "pass disjoint lists, or classes=wb.HeadClasses.from_span(span)",
            )

    def check_quantiles(self, head_quantiles: Any, name: str = "head_quantiles") -> None:
        """Refuse `head_quantiles` (None: none asked for; `name` says where they came from)
        other than those these fixed classes were computed with: they would be ignored
        while the analysis claimed them. Checked as a pair first (``0.3`` alone is none)."""
        if head_quantiles is None:
            return
        asked = check_quantiles(head_quantiles)
        if asked != self.quantiles:
            also = (
                f", or a record with head_quantiles={self.quantiles} "
                "(e.g. analysis.params.replace(...))"
                if name != "head_quantiles"
                else ""
            )
            raise WorkbenchError(
                f"{name}={asked} cannot apply to the fixed head "
                f"classification computed with quantiles {self.quantiles}",
                "pass classes=None to classify per sequence with these quantiles, or "
                f"classes=wb.HeadClasses.from_span(span, head_quantiles){also}",
            )

    @classmethod
    def from_span(
        cls,
        span: Float[Tensor, "layer head_index"],
        head_quantiles: tuple[float, float] = (0.3, 0.3),
    ) -> HeadClasses:
        """Classify the heads with a defined (non-NaN) span: see `classify_heads`.

        Args:
            span: ``[layer head_index]`` head spans (Eq. 7), e.g. ``analysis.head_span`` or
                a mean of several; NaN marks a head not analysed, which is left out.
            head_quantiles: ``(q_local, q_global)``: the bottom ``q_local`` of the heads by
                span are local, the top ``q_global`` global (Eq. 8; the paper's 30% / 30%).

        Returns:
            The `HeadClasses`, keeping `span` (as float64) and the quantiles.
        """
        quantiles = check_quantiles(head_quantiles)
        span = _span_grid(span, "the span")
        if not bool((~span.isnan()).any()):
            raise WorkbenchError("the span has no defined entries", "analyse at least one head")
        return cls(*_by_rule(span, quantiles), span, quantiles)


def _by_rule(span: Tensor, quantiles: tuple[float, float]) -> tuple[list[Head], list[Head]]:
    """`classify_heads` of the heads with a defined span in a checked `span` grid."""
    heads = [(int(a), int(b)) for a, b in (~torch.isnan(span)).nonzero().tolist()]
    return classify_heads(heads, [float(span[h]) for h in heads], quantiles)


def _span_grid(span: Any, name: str) -> Tensor:
    """`span` as a ``[layer, head]`` float64 grid (NaN allowed: heads not analysed), or a
    `WorkbenchError` naming `name`: no grid, or infinite values."""
    fix = "pass analysis.head_span, or a mean of them (NaN where not analysed)"
    grid = _validate.curve(name, span, fix, ndim=2, want="a [layer, head] grid")
    if bool(torch.isinf(grid).any()):
        raise WorkbenchError(
            f"{name} holds infinite values (a head's span is a finite distance)", fix
        )
    return grid


def _head_list(name: str, heads: Any, grid: tuple[int, int]) -> list[Head]:
    """`heads` as sorted distinct ``(layer, head)`` int tuples, at least one, each inside
    the span's `grid` (``(n_layers, n_heads)``; a negative index is no head: the analysis
    looks heads up as given, so ``(-1, 0)`` was refused only by `Analysis.with_params`)."""
    fix = "pass e.g. [(10, 0), (12, 3)], or build the classes with HeadClasses.from_span"
    out = head_pairs(f"HeadClasses.{name}", heads, fix)
    if not out:
        raise WorkbenchError(
            f"HeadClasses.{name} is empty: its WAAD or FAI would be a mean over no heads",
            "pass at least one (layer, head), or build the classes with HeadClasses.from_span",
        )
    n_layers, n_heads = grid
    bad = [(a, b) for a, b in out if not (0 <= a < n_layers and 0 <= b < n_heads)]
    if bad:
        raise WorkbenchError(
            f"HeadClasses.{name} holds {bad[:5]}, outside the span's grid of {n_layers} "
            f"layers x {n_heads} heads (indices count from 0)",
            f"pick layers in 0..{n_layers - 1} and heads in 0..{n_heads - 1}, as in analysis.heads",
        )
    return out


@no_type_check  # validates its arguments itself, with messages that name the fix
def classify_heads(
    heads: Sequence[Head], span: Sequence[float], head_quantiles: tuple[float, float]
) -> tuple[list[Head], list[Head]]:
    """Local and global heads (Eq. 8) from their spans.

    Bottom ``q_local`` of the heads by span are local, top ``q_global`` are global;
    counts are ``max(1, round(q * n))``; ties are broken by the lower ``(layer, head)``.

    Returns:
        ``(local_heads, global_heads)``, each sorted by ``(layer, head)``.
    """
    ql, qg = check_quantiles(head_quantiles)
    fix = (
        "pass the analysed (layer, head) pairs and their spans, one each, e.g. from analysis.heads"
    )
    try:
        heads = [(as_index(a), as_index(b)) for a, b in heads]
    except (TypeError, ValueError):
        raise WorkbenchError(f"heads={heads!r} is not a list of (layer, head) pairs", fix) from None
    if len(set(heads)) != len(heads):
        raise WorkbenchError("heads lists a (layer, head) pair twice", fix)
    try:
        values = torch.as_tensor(span, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        values = None
    if values is None or values.ndim != 1 or len(values) != len(heads):
        raise WorkbenchError(
            f"span must hold one number per head ({len(heads)}), got {span!r}"[:300], fix
        )
    if not bool(torch.isfinite(values).all()):
        raise WorkbenchError(
            "span holds NaN or infinite values: those heads have no span to rank",
            "leave out the heads that were not analysed (NaN in analysis.head_span)",
        )
    span = values.tolist()
    n = len(heads)
    order_lo = sorted(range(n), key=lambda i: (span[i], heads[i]))
    order_hi = sorted(range(n), key=lambda i: (-span[i], heads[i]))
    loc = sorted(heads[i] for i in order_lo[: select_count(ql, n)])
    glob = sorted(heads[i] for i in order_hi[: select_count(qg, n)])
    return loc, glob
