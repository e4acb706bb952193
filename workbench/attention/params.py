"""The parameter records: `RhythmParams` (the analysis) and `CreditParams` (RL credit).

One frozen record per concept, validated once at construction and passed whole through
`wb.analyze`, `Analysis.with_params`, the panels, `GRPOConfig`, the native trainer and the
TRL subclass. ``replace(**changes)`` returns a validated copy; unknown names are refused
with the list of known ones. ``to_dict``/``from_dict`` round-trip through JSON.

Defaults: `RhythmParams()` is the paper's analysis setting (README, "The method": W = 10,
FAI to the end of the response, 30% local / 30% global heads, q = 0.4, k = 3, alpha = 0.5,
median thresholds). `CreditParams()` is the paper's RL setting: the five middle-third layers and
the FAI horizon (10, 100), ``gamma_amp = 1.5``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, no_type_check

import numpy as np

from .. import _validate as v
from ..errors import WorkbenchError
from .credit import STRATEGIES
from .layers import LAYERS_FIX, layer_indices

__all__ = ["CreditParams", "RhythmParams"]

Horizon = tuple[int, int | None]

#: The largest ``gamma_amp``: the weights are float32 and reach ``1 + (1 + alpha)(g - 1)``
#: (a coupled anchor that also introduces a dominated one), at most ``2 g - 1``, which stays
#: finite in float32 up to half its largest value (about 1.7e38). Above it a weight was
#: ``inf`` (``gamma_amp=1e308``) and the advantages it multiplies with it.
GAMMA_AMP_MAX = float(np.finfo(np.float32).max) / 2


def check_horizon(horizon: Any) -> Horizon:
    """Validate an FAI horizon ``(H_lo, H_hi)``; ``H_hi=None`` runs to the end."""
    try:
        lo, hi = horizon
    except (TypeError, ValueError):
        raise WorkbenchError(
            f"fai_horizon must be a pair (H_lo, H_hi), got {horizon!r}",
            "pass (0, None) for analysis or (10, 100) for the paper's RL setting",
        ) from None
    lo = v.integer("fai_horizon H_lo", lo, minimum=0, example=10)
    if hi is not None:
        hi = v.integer("fai_horizon H_hi", hi, minimum=lo, example=100)
    return lo, hi


def check_quantiles(head_quantiles: Any) -> tuple[float, float]:
    """Validate ``(q_local, q_global)``: each in (0, 1), summing to at most 1."""
    try:
        ql, qg = head_quantiles
    except (TypeError, ValueError):
        raise WorkbenchError(
            f"head_quantiles must be a pair (local, global), got {head_quantiles!r}",
            "pass e.g. head_quantiles=(0.3, 0.3)",
        ) from None
    ql, qg = (
        v.number("head_quantiles", q, low=0, high=1, low_open=True, high_open=True, example=0.3)
        for q in (ql, qg)
    )
    if ql + qg > 1 + 1e-12:
        raise WorkbenchError(
            f"head_quantiles={(ql, qg)} sum to more than 1, so local and global heads "
            "would overlap",
            "pass fractions that sum to at most 1, e.g. (0.3, 0.3)",
        )
    return ql, qg


def check_layers(layers: Any) -> str | tuple[int, ...]:
    """A layer selection: ``"all"``, ``"middle"`` or non-empty distinct layer indices
    (`workbench.attention.layers.layer_indices`).

    Indices are checked against a model's layer count where the model is known
    (`workbench.attention.layers.resolve_layers`).
    """
    if isinstance(layers, str):
        if layers in ("all", "middle"):
            return layers
        raise WorkbenchError(f"layers={layers!r} is not a layer selection", LAYERS_FIX)
    return layer_indices(layers)


def _mapping(cls: type, d: Any) -> dict[str, Any]:
    """`d` as a dict for ``cls.from_dict`` (None or a list: a raw TypeError from ``dict``)."""
    if not isinstance(d, Mapping):
        raise WorkbenchError(
            f"{cls.__name__}.from_dict needs a dict, got {type(d).__name__}",
            f"pass the output of {cls.__name__}.to_dict() (e.g. read back from JSON)",
        )
    return dict(d)


def _replace(record: Any, changes: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(record)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise WorkbenchError(
            f"{type(record).__name__} has no setting(s) {unknown}",
            f"use only {sorted(known)}",
        )
    return dataclasses.replace(record, **changes)


# The records check their own fields with messages that name the fix, so the runtime type
# checker the tests install (jaxtyping + beartype) must not pre-empt them.
@no_type_check
@dataclass(frozen=True)
class RhythmParams:
    """How the rhythm is read from one forward pass (Eq. 8-10 and Sec. 5.2).

    Every field can change after the pass (`Analysis.with_params`), within what the pass
    kept (see `workbench.attention.analysis`).

    Attributes:
        window: WAAD window ``W`` (Eq. 9).
        fai_horizon: ``(H_lo, H_hi)`` for FAI (Eq. 10); ``(0, None)`` runs to the end of
            the response, ``(10, 100)`` is the paper's RL setting.
        head_quantiles: ``(q_local, q_global)`` fractions of heads by span (Eq. 8).
        top_q: fraction ``q`` of the response tokens where the metric is defined (Delta
            for preplan, FAI for anchors) in the preplan and anchor sets.
        k: look-back of locally dominated anchors.
        alpha: coupled split between a dominated anchor and its introduction.
        tau_waad / tau_delta: thresholds of ``D``; None = the response's medians.
        fai_min_rows: FAI of a token whose horizon holds fewer response rows than this is
            NaN and stays out of the anchor ranking (the workbench's addition; 1 is the
            paper's definition). Default 10, the WAAD window: near the end of a response
            the FAI of a token is a mean over a handful of rows, and on the demo trace
            (SmolLM2-135M, 112 response tokens) the last ten tokens' FAI averaged 3.8x
            the rest, so they topped the anchor ranking (``<|im_end|>``, ``.``) for no
            reason but their position. The RL setting (`CreditParams`) keeps the paper's 1.
    """

    window: int = 10
    fai_horizon: Horizon = (0, None)
    head_quantiles: tuple[float, float] = (0.3, 0.3)
    top_q: float = 0.4
    k: int = 3
    alpha: float = 0.5
    tau_waad: float | None = None
    tau_delta: float | None = None
    fai_min_rows: int = 10

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # normalise in place: the record is frozen
        set_(self, "window", v.integer("window", self.window, minimum=1, example=10))
        set_(self, "fai_horizon", check_horizon(self.fai_horizon))
        set_(self, "head_quantiles", check_quantiles(self.head_quantiles))
        set_(self, "top_q", v.number("top_q", self.top_q, low=0, high=1, low_open=True))
        set_(self, "k", v.integer("k", self.k, minimum=1, example=3))
        set_(self, "alpha", v.number("alpha", self.alpha, low=0, high=1, example=0.5))
        set_(self, "tau_waad", v.optional_number("tau_waad", self.tau_waad, example=None))
        set_(self, "tau_delta", v.optional_number("tau_delta", self.tau_delta, example=None))
        set_(self, "fai_min_rows", v.integer("fai_min_rows", self.fai_min_rows, minimum=1))

    def replace(self, **changes: Any) -> RhythmParams:
        """A validated copy with some fields changed."""
        return _replace(self, changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists); `from_dict` inverts it."""
        d = dataclasses.asdict(self)
        d["fai_horizon"], d["head_quantiles"] = list(self.fai_horizon), list(self.head_quantiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RhythmParams:
        """Build from `to_dict` output (unknown keys refused)."""
        d = _mapping(cls, d)
        for key in ("fai_horizon", "head_quantiles"):
            if key in d and isinstance(d[key], list):
                d[key] = tuple(d[key])
        return _replace(cls(), d)


#: The paper's RL reading of the rhythm: FAI over the horizon (10, 100), defined wherever
#: the horizon holds a row (the paper's definition; the RL experiments were run with it).
RL_RHYTHM = RhythmParams(fai_horizon=(10, 100), fai_min_rows=1)


@no_type_check
@dataclass(frozen=True)
class CreditParams:
    """Rhythm credit for RL (Eq. 12-19): which tokens get more advantage.

    Attributes:
        strategy: one of `workbench.attention.credit.STRATEGIES`.
        gamma_amp: the amplification, at least 1 (1.5 in the paper; 1 gives plain GRPO).
            Smaller values could make the coupled bonuses sum below zero and flip advantages;
            values above `GAMMA_AMP_MAX` (about 1.7e38) would make float32 weights infinite.
        layers: the layers analysed: ``"middle"`` (the paper's five middle-third layers),
            ``"all"`` or layer indices.
        rhythm: how preplan and anchor tokens are read (default: the RL horizon (10, 100)).

    ``replace`` also takes any `RhythmParams` field, so
    ``CreditParams().replace(strategy="coupled", top_q=0.3)`` works.
    """

    strategy: str = "coupled"
    gamma_amp: float = 1.5
    layers: str | tuple[int, ...] = "middle"
    rhythm: RhythmParams = field(default=RL_RHYTHM)

    def __post_init__(self) -> None:
        # A str first: an array's ``in`` compares element-wise (a raw ValueError).
        if not isinstance(self.strategy, str) or self.strategy not in STRATEGIES:
            raise WorkbenchError(
                f"unknown credit strategy {self.strategy!r}", f"use one of {list(STRATEGIES)}"
            )
        amp = v.number("gamma_amp", self.gamma_amp, low=1, example=1.5)
        if amp > GAMMA_AMP_MAX:
            raise WorkbenchError(
                f"gamma_amp={self.gamma_amp!r} is too large: the credit weights reach "
                "2 * gamma_amp - 1, which is not finite in float32",
                f"pass gamma_amp from 1 to {GAMMA_AMP_MAX:.3g} (1.5 in the paper)",
            )
        object.__setattr__(self, "gamma_amp", amp)
        object.__setattr__(self, "layers", check_layers(self.layers))
        if not isinstance(self.rhythm, RhythmParams):
            raise WorkbenchError(
                f"rhythm must be a RhythmParams, got {type(self.rhythm).__name__}",
                "pass rhythm=wb.RhythmParams(...)",
            )

    def replace(self, **changes: Any) -> CreditParams:
        """A validated copy; `RhythmParams` field names change `rhythm`."""
        rhythm_keys = {f.name for f in dataclasses.fields(RhythmParams)}
        inner = {k: changes.pop(k) for k in list(changes) if k in rhythm_keys}
        rhythm = changes.get("rhythm", self.rhythm)
        if inner and isinstance(rhythm, RhythmParams):  # anything else: refused by name below
            changes["rhythm"] = rhythm.replace(**inner)
        return _replace(self, changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `from_dict` inverts it."""
        layers = self.layers if isinstance(self.layers, str) else list(self.layers)
        return {
            "strategy": self.strategy,
            "gamma_amp": self.gamma_amp,
            "layers": layers,
            "rhythm": self.rhythm.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CreditParams:
        """Build from `to_dict` output (unknown keys refused)."""
        d = _mapping(cls, d)
        if isinstance(d.get("rhythm"), dict):
            # Missing keys take the credit's own defaults (RL_RHYTHM), not the analysis
            # ones: a config saved before `fai_min_rows` existed resumed with 10, not 1.
            d["rhythm"] = _replace(cls().rhythm, d["rhythm"])
        return cls().replace(**d)


def as_credit(
    credit: Any, fix: str = 'pass e.g. wb.CreditParams(strategy="coupled")'
) -> CreditParams:
    """`credit` as a `CreditParams`: a strategy name is ``CreditParams(strategy=name)`` and
    None the default record; anything else must be one (`check_credit`)."""
    if isinstance(credit, str):
        return CreditParams(strategy=credit)
    if credit is None:
        return CreditParams()
    return check_credit(credit, fix, accepted="a wb.CreditParams or a strategy name")


def check_credit(
    credit: Any,
    fix: str = 'pass e.g. wb.CreditParams(strategy="coupled")',
    accepted: str = "a wb.CreditParams",
) -> CreditParams:
    """`credit` if it is a `CreditParams`, else a `WorkbenchError` naming its type
    (`accepted`: what the caller takes, for the message), with `fix`."""
    if not isinstance(credit, CreditParams):
        raise WorkbenchError(f"credit must be {accepted}, got {type(credit).__name__}", fix)
    return credit
