"""`Analysis`: everything derived from one forward pass over one trace, immutable.

`Analysis` keeps the per-head reductions (`HeadStats`) of the pass, so every
`RhythmParams` field, which only post-processes them, can change without another pass::

    a = wb.analyze(model, trace)                       # one forward pass
    b = a.with_params(window=5, fai_horizon=(10, 100), top_q=0.3, head_quantiles=(0.2, 0.2))
    c = a.select_heads([(10, 0), (12, 3), (15, 1)])   # a subset of the analysed heads

What can change for free: ``window`` up to ``max_window`` (default 32: the diagonal band
``A[t, t-d], d < max_window`` is kept per head; a ``max_window`` of at least the sequence
length T keeps all T diagonals, and then any window, a window ``W >= T`` giving the WAAD of
``W = T``); ``fai_horizon=(H_lo, H_hi)`` whenever
``H_lo`` and ``H_hi + 1`` are kept cut distances (column sums of each head over response
rows with ``t - s < c``; `metrics.DEFAULT_FAI_CUTS` keeps H_lo in 0..32, 51, 101, ... and
H_hi in 0..31, 50, 100, 200, 400, 500, 1000 or None, plus the horizon the analysis was made
with; pass ``fai_cuts`` to keep more); ``head_quantiles``, a fixed head classification, ``top_q``, ``k``, ``alpha``,
``tau_waad``, ``tau_delta``; and the heads, to any subset of those analysed. Anything else
(more layers or heads, the trace) needs a new pass, and an unsupported window or horizon
raises a `WorkbenchError` that says so. Memory of an `Analysis`:
``4 x heads x T x (max_window + 2 + n_cuts)`` bytes, about 20 MB for 270 heads at T = 256
and 0.65 GB at T = 8192 (lower ``max_window``/``fai_cuts`` for long traces).

An `Analysis` cannot be changed in place (assigning an attribute raises); `with_params` and
`select_heads` return new ones that share the statistics.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, no_type_check

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .. import _validate
from ..errors import WorkbenchError
from . import credit as _credit
from .heads import Head, HeadClasses, classify_heads
from .layers import head_pairs
from .metrics import HeadStats, fai_heads, kurtosis, span_heads, waad_heads
from .metrics import delta as _delta
from .params import CreditParams, RhythmParams
from .rhythm import coupled_sets, thresholds
from .rhythm import top_q as _top_q

__all__ = ["Analysis"]

_KEEP: Any = object()  # with_params: keep the classes in effect


def check_classes(
    classes: Any, grid: tuple[int, int] | None = None, heads: Sequence[Head] | None = None
) -> None:
    """Refuse anything but a `HeadClasses` or None (a raw AttributeError in `_compute`);
    given the model's ``(n_layers, n_heads)`` `grid`, classes over another grid; given the
    analysed `heads`, classes that use other heads (checked before a forward pass too)."""
    if classes is not None and not isinstance(classes, HeadClasses):
        raise WorkbenchError(
            f"classes must be a wb.HeadClasses or None, got {type(classes).__name__}",
            "pass e.g. analysis.classes, wb.HeadClasses.from_span(span), or None to "
            "classify the heads per sequence",
        )
    if classes is not None and grid is not None and tuple(classes.span.shape) != grid:
        # another model's classes: heads that happen to exist here would be read as them
        raise WorkbenchError(
            f"the fixed classes span a {tuple(classes.span.shape)} (layer, head) grid, but "
            f"this model has {grid[0]} layers x {grid[1]} heads: they are another model's",
            "classify this model's heads (classes=None, or heads_from='batch'), or pass "
            "classes computed on it",
        )
    if classes is not None and heads is not None:
        missing = sorted(set(classes.local_heads + classes.global_heads) - set(heads))
        if missing:
            raise WorkbenchError(
                f"the fixed head classes use heads that were not analysed: {missing[:5]}",
                "analyse the same layers/heads the classes were computed on, or pass "
                "classes=None (with_params) to classify these heads per sequence",
            )


class Analysis:
    """Everything the workbench derives from one forward pass over one trace.

    Per-token tensors are ``[pos]`` over the whole sequence (prompt + response), float64,
    NaN outside the response or where undefined. Position lists hold absolute positions.

    Attributes:
        tokens: the token strings.
        ids: ``[pos]`` token ids.
        prompt_len: first response position.
        response: ``range`` of response positions.
        heads: the analysed ``(layer, head)`` pairs.
        head_span: ``[layer head_index]`` span (Eq. 7), NaN for heads not analysed.
        local_heads / global_heads: ``H_loc`` / ``H_glob`` (Eq. 8), per sequence unless a
            fixed `HeadClasses` was given.
        waad: WAAD over the local heads (Eq. 9). fai: FAI over the global heads (Eq. 10).
        delta: ``|WAAD[t] - WAAD[t+1]|`` (Sec. 5.2).
        entropy: next-token entropy in nats: ``entropy[t]`` is the entropy of the
            distribution that generated token ``t`` (logits at row ``t-1``).
        preplan / anchors: ``T_loc`` (top ``q`` Delta) / ``T_glob`` (top ``q`` FAI).
        dominated / intro: ``D`` and ``I(D)``.
        tau_waad / tau_delta: the thresholds used (defaults resolved to the medians).
        receiver_kurtosis: ``[layer head_index]`` receiver score (NaN where not analysed).
        receiver_heads: at most as many heads as `global_heads` (fewer where heads have
            no receiver score), highest kurtosis.
        receiver_fai: FAI over the receiver heads.
        stats: the per-head reductions (`HeadStats`) everything is computed from.
        params: the `RhythmParams` in effect.
        fixed_classes: the fixed `HeadClasses` given, or None (classes per sequence).
    """

    def __init__(
        self,
        *,
        stats: HeadStats,
        entropy: Float[Tensor, " pos"],
        tokens: list[str],
        ids: Tensor,
        n_layers: int,
        n_heads: int,
        params: RhythmParams | None = None,
        classes: HeadClasses | None = None,
        meta: dict[str, Any] | None = None,
    ):
        params = RhythmParams() if params is None else params
        if not isinstance(params, RhythmParams):
            raise WorkbenchError(
                f"params must be a RhythmParams, got {type(params).__name__}",
                "pass wb.RhythmParams(...) or keyword settings",
            )
        check_classes(classes, (n_layers, n_heads))
        self.stats = stats
        self.tokens = list(tokens)
        self.ids = ids
        self.n_layers, self.n_heads = n_layers, n_heads
        self.meta = dict(meta or {})
        self.prompt_len = stats.prompt_len
        self.response = range(stats.prompt_len, stats.n_pos)
        self.heads: list[Head] = list(stats.heads)
        self.entropy = entropy
        # Fixed classes carry the quantiles they were computed with; `params` says so
        # (it claimed the defaults, which were never used).
        same = classes is None or params.head_quantiles == classes.quantiles
        self.params = params if same else params.replace(head_quantiles=classes.quantiles)
        self.fixed_classes = classes
        self._compute()
        self._frozen = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(
                f"an Analysis is immutable (tried to set {name!r}); use with_params(...) or "
                "select_heads(...) for a changed copy"
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"an Analysis is immutable (tried to delete {name!r})")

    # -- construction ---------------------------------------------------------------------

    def _grid(self, values: Tensor) -> Tensor:
        out = torch.full((self.n_layers, self.n_heads), float("nan"), dtype=torch.float64)
        if self.heads:
            layer, head = torch.tensor(self.heads).T
            out[layer, head] = values.to(torch.float64)
        return out

    def _rows(self, heads: Sequence[Head]) -> list[int]:
        index = {h: i for i, h in enumerate(self.heads)}
        return [index[h] for h in heads]

    def _compute(self) -> None:
        p = self.params
        span = span_heads(self.stats)
        self.head_span = self._grid(span)
        classes = self.fixed_classes
        if classes is None:
            self.local_heads, self.global_heads = classify_heads(
                self.heads, span.tolist(), p.head_quantiles
            )
        else:
            check_classes(classes, heads=self.heads)
            self.local_heads, self.global_heads = (
                list(classes.local_heads),
                list(classes.global_heads),
            )
        self.waad_per_head = waad_heads(self.stats, p.window)
        self.fai_per_head = fai_heads(self.stats, p.fai_horizon, p.fai_min_rows)
        self.waad = self.waad_per_head[self._rows(self.local_heads)].mean(0)
        self.fai = self.fai_per_head[self._rows(self.global_heads)].mean(0)
        self.delta = _delta(self.waad)
        q = p.top_q
        self.preplan = _top_q(self.delta, q)
        self.anchors = _top_q(self.fai, q)
        self.tau_waad, self.tau_delta = thresholds(self.waad, self.delta, p.tau_waad, p.tau_delta)
        self.dominated, self.intro = self._coupled_sets(self.anchors)

    # Receiver heads are computed on first use: the RL credit pass never reads them.
    @functools.cached_property
    def _receivers(self) -> tuple[Tensor, list[Head], Tensor]:
        kurt = kurtosis(self.fai_per_head)
        # A head without a score (its FAI constant, or defined at fewer than four tokens) is
        # no receiver: ranked last, it was picked whenever too few heads had one.
        scored = [i for i in range(len(self.heads)) if not math.isnan(kurt[i])]
        order = sorted(scored, key=lambda i: (-kurt[i].item(), self.heads[i]))
        heads = sorted(self.heads[i] for i in order[: len(self.global_heads)])
        if not heads:
            nan = torch.full((self.n_pos,), float("nan"), dtype=self.fai_per_head.dtype)
            return self._grid(kurt), heads, nan
        return self._grid(kurt), heads, self.fai_per_head[self._rows(heads)].mean(0)

    @functools.cached_property
    def receiver_kurtosis(self) -> Float[Tensor, "layer head_index"]:
        """Receiver score (kurtosis of each head's FAI), NaN where not analysed."""
        return self._receivers[0]

    @functools.cached_property
    def receiver_heads(self) -> list[Head]:
        """As many heads as `global_heads` (fewer where fewer heads have a receiver score:
        a head whose FAI is constant, or defined at fewer than four tokens, has none), those
        of highest receiver kurtosis, sorted."""
        return self._receivers[1]

    @functools.cached_property
    def receiver_fai(self) -> Float[Tensor, " pos"]:
        """FAI averaged over the receiver heads."""
        return self._receivers[2]

    def _coupled_sets(self, anchors: list[int]) -> tuple[list[int], list[int]]:
        return coupled_sets(
            anchors,
            self.waad,
            self.delta,
            k=self.params.k,
            tau_waad=self.tau_waad,
            tau_delta=self.tau_delta,
        )

    def with_params(
        self, params: RhythmParams | None = None, *, classes: Any = _KEEP, **changes: Any
    ) -> Analysis:
        """A new `Analysis` from the same forward pass with some parameters changed.

        Args:
            params: a whole `RhythmParams` to use (default: the current one).
            classes: a fixed `HeadClasses`, or None for per-sequence classes (default:
                keep what is in effect). Fixed classes keep their own quantiles (the new
                `params` record them); asking for others with them is refused: a
                ``head_quantiles=`` keyword other than theirs, or a `params` record whose
                ``head_quantiles`` differ both from the current ones (``self.params``,
                so ``a.params.replace(...)`` asks for none) and from theirs.
            **changes: `RhythmParams` fields to change, e.g. ``window=5``. See the module
                docstring for which windows and horizons are kept.
        """
        if "sink" in changes and changes.pop("sink") != self.meta.get("sink", "keep"):
            raise WorkbenchError(
                "the sink setting changes every reduction of the forward pass, so "
                "with_params cannot change it",
                "analyse again: wb.analyze(model, trace, sink=...)",
            )
        base = self.params if params is None else params
        if not isinstance(base, RhythmParams):
            raise WorkbenchError(
                f"params must be a RhythmParams, got {type(base).__name__}",
                "pass wb.RhythmParams(...) or keyword settings",
            )
        new = base.replace(**changes) if changes else base
        fixed = self.fixed_classes if classes is _KEEP else classes
        check_classes(fixed)
        if fixed is not None:  # they carry their own quantiles, which `params` then records
            if "head_quantiles" in changes:
                fixed.check_quantiles(new.head_quantiles)
            elif base.head_quantiles != self.params.head_quantiles:  # the record asks
                fixed.check_quantiles(base.head_quantiles, "params.head_quantiles")
        return self._copy(self.stats, new, fixed)

    @no_type_check  # validates its arguments itself, with messages that name the fix
    def select_heads(self, heads: Sequence[Head]) -> Analysis:
        """A new `Analysis` over a subset of the analysed heads (no forward pass).

        Args:
            heads: ``(layer, head)`` pairs, each among `heads`.

        Returns:
            The same trace and parameters, with span, classes, WAAD, FAI and the rhythm
            sets recomputed from these heads only.
        """
        wanted = head_pairs("heads", heads, "pass e.g. [(10, 0), (12, 3)]")
        missing = sorted(set(wanted) - set(self.heads))
        if missing or not wanted:
            raise WorkbenchError(
                f"select_heads needs analysed heads; not analysed: {missing[:5]}"
                if missing
                else "select_heads got no heads",
                "pick from Analysis.heads, or analyse those layers with wb.analyze",
            )
        stats = self.stats.select(self._rows(wanted))
        meta = {**self.meta, "layers": sorted({layer for layer, _ in wanted})}
        return self._copy(stats, self.params, self.fixed_classes, meta)

    def _copy(
        self,
        stats: HeadStats,
        params: RhythmParams,
        classes: HeadClasses | None,
        meta: dict[str, Any] | None = None,
    ) -> Analysis:
        return Analysis(
            stats=stats,
            entropy=self.entropy,
            tokens=self.tokens,
            ids=self.ids,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            params=params,
            classes=classes,
            meta=self.meta if meta is None else meta,
        )

    # -- views ----------------------------------------------------------------------------

    @property
    def n_pos(self) -> int:
        """Sequence length."""
        return self.stats.n_pos

    @property
    def response_tokens(self) -> list[str]:
        """The response's token strings."""
        return self.tokens[self.prompt_len :]

    @property
    def classes(self) -> HeadClasses:
        """The head classification in effect, as a reusable `HeadClasses`: the fixed one
        as given (with the span and quantiles it was computed from), else this sequence's."""
        if self.fixed_classes is not None:
            return self.fixed_classes
        return HeadClasses(
            list(self.local_heads),
            list(self.global_heads),
            self.head_span,
            self.params.head_quantiles,
        )

    @no_type_check  # validates its arguments itself, with messages that name the fix
    def gamma(
        self, strategy: str = "coupled", *, seed: int | None = None, gamma_amp: float = 1.5
    ) -> Float[Tensor, " pos"]:
        """Credit weights ``[pos]`` (float32) for a strategy (Eq. 12-19).

        Args:
            strategy: one of `credit.STRATEGIES`: ``"none"``, ``"local"``, ``"global"``,
                ``"coupled"``, ``"random"``, ``"entropy"``, ``"bottom-local"``,
                ``"bottom-global"``, ``"bottom-coupled"``.
            seed: RNG seed for ``"random"`` (None: fresh entropy from the OS).
            gamma_amp: the amplification ``gamma_amp`` (1.5 in the paper).

        Returns:
            ``[pos]``: 1.0 outside the amplified sets and on the prompt. Coupled bonuses
            add where sets overlap (see `workbench.attention.credit`).
        """
        g = CreditParams(strategy=strategy, gamma_amp=gamma_amp).gamma_amp  # validated
        if seed is not None:
            seed = _validate.seed("seed", seed)
        return _credit.gamma_of(self, strategy, seed=seed, gamma_amp=g)

    def to_frame(self):
        """One row per token (pandas): position, token, response flag, metrics and sets."""
        import pandas as pd

        n = self.n_pos

        def flags(positions: list[int]) -> np.ndarray:
            f = np.zeros(n, dtype=bool)
            f[positions] = True
            return f

        return pd.DataFrame(
            {
                "pos": np.arange(n),
                "token": self.tokens,
                "response": np.arange(n) >= self.prompt_len,
                "waad": self.waad.numpy(),
                "delta": self.delta.numpy(),
                "fai": self.fai.numpy(),
                "receiver_fai": self.receiver_fai.numpy(),
                "entropy": self.entropy.numpy(),
                "preplan": flags(self.preplan),
                "anchor": flags(self.anchors),
                "dominated": flags(self.dominated),
                "intro": flags(self.intro),
                "gamma_coupled": self.gamma("coupled").numpy(),
            }
        )

    def heads_frame(self):
        """One row per head of the model (pandas): ``layer head analysed span cls
        receiver_kurtosis receiver``, where ``cls`` is ``"local"``, ``"global"``,
        ``"local and global"`` (the counting rule put the head in both: one head analysed,
        or quantiles adding up to more than 1), ``"middle"``, or None where not analysed."""
        import pandas as pd

        loc, glob, rec = set(self.local_heads), set(self.global_heads), set(self.receiver_heads)
        analysed = set(self.heads)
        rows = []
        for layer in range(self.n_layers):
            for h in range(self.n_heads):
                key = (layer, h)
                named = [c for c, heads in (("local", loc), ("global", glob)) if key in heads]
                cls = " and ".join(named) or "middle"
                rows.append(
                    {
                        "layer": layer,
                        "head": h,
                        "analysed": key in analysed,
                        "span": float(self.head_span[layer, h]),
                        "cls": cls if key in analysed else None,
                        "receiver_kurtosis": float(self.receiver_kurtosis[layer, h]),
                        "receiver": key in rec,
                    }
                )
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return (
            f"Analysis(prompt_len={self.prompt_len}, response_len={len(self.response)}, "
            f"heads={len(self.heads)}, local={len(self.local_heads)}, "
            f"global={len(self.global_heads)}, preplan={len(self.preplan)}, "
            f"anchors={len(self.anchors)}, dominated={len(self.dominated)})"
        )
