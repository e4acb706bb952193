"""Target sets from an `Analysis`, each with matched controls of the same size.

Families (the sets the paper's rhythm names, Sec. 5.2):

- ``"anchors"``: ``T_glob``, the top-q FAI tokens (`Analysis.anchors`);
- ``"preplan"``: ``T_loc``, the top-q Delta tokens (`Analysis.preplan`);
- ``"dominated"``: locally dominated anchors ``D`` (`Analysis.dominated`);
- ``"intro"``: their introduction tokens ``I(D)`` (`Analysis.intro`).

How controls are matched (this project's rules):

- Same count: every control has exactly ``len(family set)`` positions.
- Same eligible pool: the family's ranking pool, i.e. response positions where its metric
  is defined (FAI for anchors and dominated anchors; Delta for preplan and intro tokens),
  never position 0, and, when ``exclude`` is given (e.g. the answer span), without those.
- ``"random"``: a uniform draw without replacement from the pool, one per seed
  (``seed, seed + 1, ...``). It may overlap the family set: it is chance, not a complement.
  Where the set is the whole pool (a short response) every draw would be the set itself,
  so the family gets no random control (`run_ablations` warns).
- ``"low_fai"``: the lowest-FAI positions of the FAI pool minus the family set (disjoint
  from the set, so a preplan or intro token, or an anchor whose FAI ties the lowest, is
  never its own control), counted and tie-broken by the project's rule
  (`workbench.attention.rhythm.top_q` with ``bottom=True``, ties to the lower position), the
  paper's "bottom" control; skipped, as ``"nearby"`` is, where fewer positions outside the
  set have FAI than the set has positions (a short response has none). Caveat: with the
  analysis default horizon (to the end of the response) the lowest-FAI tokens sit near the
  end of the response, where little comes after them; their small effects are partly a
  matter of position.
- ``"nearby"``: position-matched chance. For each position ``p`` of the set (in order),
  a uniform draw from the pool positions within ``p - window .. p + window`` that are
  neither in the set nor drawn already (widening the window until one is free), one draw
  per seed like ``"random"``. It keeps the set's place in the sequence, which the uniform
  ``"random"`` control does not (anchors sit earlier than average). It needs as many
  free pool positions as the set has; when the pool is smaller (top-q sets of a short
  response with many exclusions) the family gets no nearby control.

``size=m`` replaces the anchor and preplan sets by their top ``m`` (by FAI / Delta, same
rule): ablating 40% of a response at once mostly measures that 40% is a lot, so a fixed
small count is often the better experiment. Dominated and intro sets are kept as they are.
``m`` must be smaller than the family's pool (a `WorkbenchError` otherwise): a set that is
the whole pool leaves no control that could differ from it. A family whose pool is empty
(a response too short for any token to have FAI, say) gives no target set, with or without
``size``, as do empty families (no dominated anchors, say).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import _validate
from ..attention.analysis import Analysis
from ..attention.rhythm import top_q
from ..errors import WorkbenchError
from ..models.bridge import check_same_model, model_name
from ..trace.tokens import check_trace_tokens
from .interventions import _refuse_mapping

__all__ = [
    "CONTROLS",
    "FAMILIES",
    "TargetSet",
    "analysis_list",
    "check_pairs",
    "target_sets",
]

#: The rhythm's target sets: anchors (top-q FAI), preplan (top-q Delta), the locally
#: dominated anchors D and their introductions I(D).
FAMILIES = ("anchors", "preplan", "dominated", "intro")
#: Their matched controls (the module docstring gives the rules): random positions of the
#: family's pool, nearby positions, and the lowest-FAI positions outside the set.
CONTROLS = ("random", "nearby", "low_fai")
#: Half-width of the ``"nearby"`` control's window (tokens).
NEARBY_WINDOW = 5


@dataclass(frozen=True)
class TargetSet:
    """Positions to ablate, with what they are and what they are matched to.

    Attributes:
        name: unique label, e.g. ``"anchors"``, ``"random[anchors]#1"``,
            ``"low_fai[anchors]"``.
        family: the rhythm set it belongs to or is matched to (``"anchors"``...).
        kind: ``"target"``, ``"random"``, ``"nearby"`` or ``"low_fai"``.
        positions: sorted absolute positions.
        seed: the RNG seed for ``"random"`` and ``"nearby"`` controls, else None.
    """

    name: str
    family: str
    kind: str
    positions: tuple[int, ...]
    seed: int | None = None

    def __len__(self) -> int:
        return len(self.positions)


def _pool(values: torch.Tensor, exclude: set[int]) -> np.ndarray:
    v = torch.as_tensor(values).double().numpy()
    pos = np.flatnonzero(~np.isnan(v))
    return np.array([p for p in pos if p != 0 and p not in exclude], dtype=np.int64)


def _masked(values: torch.Tensor, pool: np.ndarray) -> torch.Tensor:
    out = torch.full_like(torch.as_tensor(values).double(), float("nan"))
    v = torch.as_tensor(values).double()
    out[pool] = v[pool]
    return out


def _top(values: torch.Tensor, m: int, *, bottom: bool = False) -> list[int]:
    """Exactly `m` positions by the project's top-q rule (``q = m / n``)."""
    n = int((~torch.isnan(values)).sum())
    if m <= 0 or n == 0:
        return []
    if m > n:
        raise WorkbenchError(
            f"asked for {m} positions but only {n} are eligible",
            "use a smaller size (or a longer trace)",
        )
    picks = top_q(values, m / n, bottom=bottom)
    assert len(picks) == m, (len(picks), m)
    return picks


def _nearby(positions: Sequence[int], pool: np.ndarray, rng: np.random.Generator) -> list[int]:
    """One free pool position near each of `positions` (see the module docstring)."""
    taken = set(positions)
    picks: list[int] = []
    for p in positions:
        w = NEARBY_WINDOW
        while True:
            near = [int(c) for c in pool if abs(int(c) - p) <= w and int(c) not in taken]
            if near:
                c = int(rng.choice(near))
                taken.add(c)
                picks.append(c)
                break
            w *= 2
    return picks


def _check_names(names: Any, allowed: Sequence[str], what: str) -> list[str]:
    """`names` (one name or a list) as a list: each of `allowed`, none twice."""
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, Iterable):
        raise WorkbenchError(
            f"{what} must be a list of names, got {names!r}", f"use some of {list(allowed)}"
        )
    out = list(names)
    bad = [n for n in out if n not in allowed]
    if bad:
        raise WorkbenchError(f"unknown {what} {bad}", f"use some of {list(allowed)}")
    twice = sorted({n for n in out if out.count(n) > 1})
    if twice:  # every set (or control) of a repeated name would be ablated, and counted, twice
        raise WorkbenchError(
            f"{what} {out} name {twice} more than once: a slip, not a setting (a repeated "
            "name's sets were built or ablated, and counted, twice)",
            f"name each once, e.g. {list(dict.fromkeys(out))}",
        )
    return out


def target_sets(
    analysis: Analysis,
    *,
    families: Iterable[str] = FAMILIES,
    controls: Iterable[str] = CONTROLS,
    n_random: int = 3,
    seed: int = 0,
    size: int | None = None,
    exclude: Iterable[int] = (),
) -> list[TargetSet]:
    """Target sets and their matched controls for one analysed trace.

    Args:
        analysis: the `Analysis` of the trace.
        families: which rhythm sets (see `FAMILIES`).
        controls: which controls (see `CONTROLS`); each is built per family.
        n_random: number of random and of nearby controls (seeds ``seed .. seed +
            n_random - 1``).
        seed: first RNG seed.
        size: None keeps the analysis's sets; an int takes the top `size` anchors / preplan
            tokens instead (dominated and intro sets are unchanged; a family with an empty
            pool is skipped).
        exclude: positions never to target, in targets or controls (e.g. the answer span);
            a list, not a mapping (a dict would be read as its keys), of positions of the
            trace (a negative one, or one beyond it, is refused: it would exclude nothing).
        families / controls: each name at most once (a repeated name is refused: its sets
            would be ablated and counted twice).

    Returns:
        For each non-empty family: the family's set, then its controls, in that order.
        Every control has the family set's size: a random control whose pool is too
        small is a `WorkbenchError`, and it is left out where the set is its whole pool
        (every draw would be the set itself); the nearby and low_fai controls are left
        out where too few free positions remain.

    Raises:
        WorkbenchError: when `size` is not below the size of a family's non-empty pool (the
            set would be the whole pool and no control could differ from it), or when a
            family set is larger than the pool of its random control.
    """
    if not isinstance(analysis, Analysis):
        raise WorkbenchError(
            f"target_sets needs a wb.Analysis, got a {type(analysis).__name__}",
            "pass wb.analyze(model, trace), not the trace itself",
        )
    fams = _check_names(families, FAMILIES, "target families")
    ctrls = _check_names(controls, CONTROLS, "controls")
    _validate.integer("n_random", n_random, minimum=0, example=3)
    _validate.seed("seed", seed)
    if size is not None:
        _validate.integer("size", size, minimum=1, example=4)
    excl = _exclusions(exclude)
    beyond = sorted(p for p in excl if p >= len(analysis.ids))
    if beyond:  # it excluded nothing, as a negative position would not (refused too)
        raise WorkbenchError(
            f"exclude holds position(s) {beyond[:5]}, beyond the {len(analysis.ids)} tokens "
            "of the analysed trace, so it would exclude nothing there",
            "pass positions of this trace (0-based, below its length), e.g. its answer span",
        )
    metric = {"anchors": analysis.fai, "dominated": analysis.fai}
    metric |= {"preplan": analysis.delta, "intro": analysis.delta}
    fai_pool = _pool(analysis.fai, excl)
    out: list[TargetSet] = []
    for fam in fams:
        pool = _pool(metric[fam], excl)
        if size is not None and fam in ("anchors", "preplan"):
            if len(pool) == 0:  # nothing eligible: no set, as with size=None
                continue
            if size >= len(pool):
                raise WorkbenchError(
                    f"{fam}: size={size} but only {len(pool)} positions are eligible, so the "
                    "set would be the whole pool and every control would equal it",
                    f"use a size below {len(pool)} (or a longer trace, or fewer exclusions)",
                )
            positions = _top(_masked(metric[fam], pool), size)
        else:
            positions = [p for p in getattr(analysis, fam) if p not in excl and p != 0]
        m = len(positions)
        if m == 0:
            continue
        out.append(TargetSet(fam, fam, "target", tuple(sorted(positions))))
        if "random" in ctrls and m > len(pool):
            raise WorkbenchError(
                f"{fam}: {m} positions but only {len(pool)} eligible for a random control",
                "use a smaller size or fewer exclusions",
            )
        # A set that is its whole pool: every draw would be the set itself, and "set -
        # random" 0 by construction (a one-token preplan set of a six-token response).
        if "random" in ctrls and not set(pool.tolist()) <= set(positions):
            for i in range(n_random):
                rng = np.random.default_rng(seed + i)
                picks = rng.choice(pool, size=m, replace=False)
                out.append(
                    TargetSet(
                        f"random[{fam}]#{i}",
                        fam,
                        "random",
                        tuple(sorted(int(p) for p in picks)),
                        seed + i,
                    )
                )
        free = len(set(pool.tolist()) - set(positions))
        if "nearby" in ctrls and free >= m:
            for i in range(n_random):
                picks = _nearby(positions, pool, np.random.default_rng(seed + i))
                out.append(
                    TargetSet(f"nearby[{fam}]#{i}", fam, "nearby", tuple(sorted(picks)), seed + i)
                )
        # Drawn from outside the set (a control that shares positions with its set would
        # measure the set itself). Like "nearby": skipped where too few such tokens have
        # FAI to match the set's size (a short response has none); an empty or smaller
        # control would not be a control.
        in_set = set(positions)
        low_pool = np.array([p for p in fai_pool if int(p) not in in_set], dtype=np.int64)
        if "low_fai" in ctrls and len(low_pool) >= m:
            low = _top(_masked(analysis.fai, low_pool), m, bottom=True)
            out.append(TargetSet(f"low_fai[{fam}]", fam, "low_fai", tuple(low)))
    return out


def _exclusions(exclude: Any) -> set[int]:
    """`exclude` as a set of ints; a fraction is refused, not truncated to a neighbour, and a
    mapping is refused, not read as its keys."""
    _refuse_mapping(exclude, "exclude", "pass e.g. exclude=[40, 41]")
    if isinstance(exclude, (str, bytes)) or not isinstance(exclude, Iterable):
        raise WorkbenchError(
            f"exclude must be a list of positions, got {exclude!r}", "pass e.g. exclude=[40, 41]"
        )
    out = set()
    for p in exclude:
        if not _validate.is_index(p):
            raise WorkbenchError(
                f"exclude holds {p!r}, which is not a position (an integer)",
                "pass positions as ints, e.g. exclude=[40, 41]",
            )
        p = _validate.as_index(p)
        if p < 0:  # never matched a position, so it excluded nothing (Knockout refuses it)
            raise WorkbenchError(
                f"exclude holds the negative position {p}", "pass absolute positions (0-based)"
            )
        out.add(p)
    return out


def analysis_list(analyses: Any, caller: str, usage: str) -> list[Analysis]:
    """`analyses` as a list; one `Analysis` (or a `Trace`) where a list is meant is refused
    with the fix, not iterated into a raw TypeError."""
    from ..trace import Trace

    if isinstance(analyses, Trace | Analysis) or not isinstance(analyses, Iterable):
        raise WorkbenchError(
            f"{caller} needs a list of analyses, got a {type(analyses).__name__}", usage
        )
    return list(analyses)


def check_pairs(traces: Sequence[Any], analyses: Sequence[Analysis], model: Any = None) -> None:
    """Each analysis must be of the trace at the same index (same token ids), so targets
    are never positions of another trace's prompt or response, and (given `model`) of
    that model, so they are never another model's anchors."""
    if len(traces) != len(analyses):
        raise WorkbenchError(
            f"{len(traces)} traces but {len(analyses)} analyses",
            "pass one analysis per trace (same order)",
        )
    for i, (trace, analysis) in enumerate(zip(traces, analyses, strict=True)):
        if not isinstance(analysis, Analysis):
            raise WorkbenchError(
                f"analyses[{i}] is a {type(analysis).__name__}, not a wb.Analysis",
                "pass the results of wb.analyze / wb.analyze_many",
            )
        if analysis.prompt_len != trace.prompt_len or not torch.equal(analysis.ids, trace.ids):
            raise WorkbenchError(
                f"analyses[{i}] is not an analysis of traces[{i}] (different token ids or "
                "prompt length)",
                "pass the analyses in the same order as the traces, e.g. "
                "analyses=wb.analyze_many(model, traces)",
            )
        if model is not None:
            # a trace of another model's tokens first: its analysis follows from it
            check_trace_tokens(model, trace)
            check_same_model(
                analysis.meta.get("model"),
                model_name(model),
                f"analyses[{i}]",
                "analyse the traces with this model: analyses=wb.analyze_many(model, traces); "
                "to ablate another model's positions on purpose, pass them to "
                "wb.measure(model, trace, wb.Knockout(positions))",
            )
