"""`analyze`: one forward pass -> head classes, WAAD, FAI, rhythm sets and credit weights.

`Analysis` keeps the per-head reductions (`HeadStats`) of the pass, so every parameter
that only post-processes them can change without another forward pass::

    a = wb.analyze(model, trace)                       # one forward pass
    b = a.with_params(window=5, fai_horizon=(10, 100), top_q=0.3, head_quantiles=(0.2, 0.2))

What can change for free: ``window`` up to ``max_window`` (default 32: the diagonal band
``A[t, t-d], d < max_window`` is kept per head); ``fai_horizon=(H_lo, H_hi)`` whenever
``H_lo`` and ``H_hi + 1`` are kept cut distances (column sums of each head over response
rows with ``t - s < c``; `metrics.DEFAULT_FAI_CUTS` keeps H_lo in 0..21, 25, 30, 40, 50 and
H_hi in 0..20, 24, 29, 39, 49, 50, 64, 75, 100, 128, 150, 200, 256, 300, 400, 500, 512,
1000, 1024 or None, plus the horizon the analysis was made with; pass ``fai_cuts`` to keep
more); ``head_quantiles``, a fixed head classification, ``top_q``, ``k``, ``alpha``,
``tau_waad``, ``tau_delta``. Anything else (layers, heads, the trace) needs a new pass, and
an unsupported window or horizon raises a `WorkbenchError` that says so. Memory of an
`Analysis`: ``4 x heads x T x (max_window + 2 + n_cuts)`` bytes, about 20 MB for 270 heads
at T = 256 and 0.65 GB at T = 8192 (lower ``max_window``/``fai_cuts`` for long traces).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import WorkbenchError
from ..trace import Trace
from . import credit as _credit
from . import engine
from .layers import resolve_heads, resolve_layers
from .metrics import (
    DEFAULT_FAI_CUTS,
    DEFAULT_MAX_WINDOW,
    HeadStats,
    check_horizon,
    check_window,
    fai_heads,
    kurtosis,
    span_heads,
    waad_heads,
)
from .metrics import (
    delta as _delta,
)
from .rhythm import (
    check_q,
    default_taus,
    dominated_anchors,
    introductions,
    select_count,
)
from .rhythm import (
    top_q as _top_q,
)

__all__ = ["Analysis", "HeadClasses", "analyze", "analyze_many", "classify_heads", "gamma_many"]

Head = tuple[int, int]


def check_quantiles(head_quantiles: tuple[float, float]) -> tuple[float, float]:
    """Validate ``(q_local, q_global)``: each in (0, 1), summing to at most 1."""
    try:
        ql, qg = head_quantiles
    except (TypeError, ValueError):
        raise WorkbenchError(
            f"head_quantiles must be a pair (local, global), got {head_quantiles!r}",
            "pass e.g. head_quantiles=(0.3, 0.3)",
        ) from None
    for q in (ql, qg):
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q < 1:
            raise WorkbenchError(
                f"head_quantiles entries must be in (0, 1), got {head_quantiles!r}",
                "pass e.g. head_quantiles=(0.3, 0.3)",
            )
    if ql + qg > 1 + 1e-12:
        raise WorkbenchError(
            f"head_quantiles={head_quantiles} sum to more than 1, so local and global heads "
            "would overlap",
            "pass fractions that sum to at most 1, e.g. (0.3, 0.3)",
        )
    return float(ql), float(qg)


@dataclass(frozen=True)
class HeadClasses:
    """A head classification (Eq. 8) that can be fixed and reused across traces.

    Attributes:
        local_heads: ``(layer, head)`` pairs with the smallest span (``H_loc``).
        global_heads: ``(layer, head)`` pairs with the largest span (``H_glob``).
        span: ``[layer head]`` the spans it was computed from (NaN where not analysed).
        quantiles: ``(q_local, q_global)`` used.
    """

    local_heads: list[Head]
    global_heads: list[Head]
    span: Float[Tensor, "layer head_index"] = field(repr=False)
    quantiles: tuple[float, float] = (0.3, 0.3)

    @classmethod
    def from_span(
        cls,
        span: Float[Tensor, "layer head_index"],
        head_quantiles: tuple[float, float] = (0.3, 0.3),
    ) -> HeadClasses:
        """Classify the heads with a defined (non-NaN) span: see `classify_heads`."""
        ql, qg = check_quantiles(head_quantiles)
        span = torch.as_tensor(span).double()
        heads = [(int(a), int(b)) for a, b in (~torch.isnan(span)).nonzero().tolist()]
        if not heads:
            raise WorkbenchError("the span has no defined entries", "analyse at least one head")
        vals = [float(span[h]) for h in heads]
        loc, glob = classify_heads(heads, vals, (ql, qg))
        return cls(loc, glob, span, (ql, qg))


def classify_heads(
    heads: Sequence[Head], span: Sequence[float], head_quantiles: tuple[float, float]
) -> tuple[list[Head], list[Head]]:
    """Local and global heads (Eq. 8) from their spans.

    Bottom ``q_local`` of the heads by span are local, top ``q_global`` are global;
    counts are ``max(1, round(q * n))``; ties are broken by the lower ``(layer, head)``.

    Returns:
        ``(local_heads, global_heads)``, each sorted by ``(layer, head)``.
    """
    ql, qg = head_quantiles
    n = len(heads)
    order_lo = sorted(range(n), key=lambda i: (span[i], heads[i]))
    order_hi = sorted(range(n), key=lambda i: (-span[i], heads[i]))
    loc = sorted(heads[i] for i in order_lo[: select_count(ql, n)])
    glob = sorted(heads[i] for i in order_hi[: select_count(qg, n)])
    return loc, glob


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise WorkbenchError(f"k must be a positive integer, got {k!r}", "pass e.g. k=3")
    return k


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise WorkbenchError(f"alpha must be in [0, 1], got {alpha!r}", "pass e.g. alpha=0.5")
    return float(alpha)


def _check_tau(tau: float | None, name: str) -> float | None:
    if tau is None:
        return None
    if isinstance(tau, bool) or not isinstance(tau, int | float) or math.isnan(tau):
        raise WorkbenchError(f"{name} must be a number or None, got {tau!r}", f"pass {name}=None")
    return float(tau)


_PARAMS = (
    "window",
    "fai_horizon",
    "head_quantiles",
    "top_q",
    "k",
    "alpha",
    "tau_waad",
    "tau_delta",
    "classes",
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
        receiver_heads: the same number of heads as `global_heads`, highest kurtosis.
        receiver_fai: FAI over the receiver heads.
        stats: the per-head reductions (`HeadStats`) everything is computed from.
        params: the post-processing parameters in effect.
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
        window: int = 10,
        fai_horizon: tuple[int, int | None] = (0, None),
        head_quantiles: tuple[float, float] = (0.3, 0.3),
        top_q: float = 0.4,
        k: int = 3,
        alpha: float = 0.5,
        tau_waad: float | None = None,
        tau_delta: float | None = None,
        classes: HeadClasses | None = None,
        meta: dict[str, Any] | None = None,
    ):
        self.stats = stats
        self.tokens = list(tokens)
        self.ids = ids
        self.n_layers, self.n_heads = n_layers, n_heads
        self.meta = dict(meta or {})
        self.prompt_len = stats.prompt_len
        self.response = range(stats.prompt_len, stats.n_pos)
        self.heads: list[Head] = list(stats.heads)
        self.entropy = entropy
        self.params = {
            "window": check_window(window, stats.max_window),
            "fai_horizon": check_horizon(fai_horizon),
            "head_quantiles": check_quantiles(head_quantiles),
            "top_q": check_q(top_q),
            "k": _check_k(k),
            "alpha": _check_alpha(alpha),
            "tau_waad": _check_tau(tau_waad, "tau_waad"),
            "tau_delta": _check_tau(tau_delta, "tau_delta"),
            "classes": classes,
        }
        self._compute()

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
        classes: HeadClasses | None = p["classes"]
        if classes is None:
            self.local_heads, self.global_heads = classify_heads(
                self.heads, span.tolist(), p["head_quantiles"]
            )
        else:
            missing = sorted(set(classes.local_heads + classes.global_heads) - set(self.heads))
            if missing:
                raise WorkbenchError(
                    f"the fixed head classes use heads that were not analysed: {missing[:5]}",
                    "analyse the same layers/heads the classes were computed on",
                )
            self.local_heads, self.global_heads = (
                list(classes.local_heads),
                list(classes.global_heads),
            )
        self.waad_per_head = waad_heads(self.stats, p["window"])
        self.fai_per_head = fai_heads(self.stats, p["fai_horizon"])
        self.waad = self.waad_per_head[self._rows(self.local_heads)].mean(0)
        self.fai = self.fai_per_head[self._rows(self.global_heads)].mean(0)
        self.delta = _delta(self.waad)
        q = p["top_q"]
        self.preplan = _top_q(self.delta, q)
        self.anchors = _top_q(self.fai, q)
        med_w, med_d = default_taus(self.waad, self.delta)
        self.tau_waad = med_w if p["tau_waad"] is None else p["tau_waad"]
        self.tau_delta = med_d if p["tau_delta"] is None else p["tau_delta"]
        self.dominated, self.intro = self._coupled_sets(self.anchors)

    # Receiver heads are computed on first use: the RL credit pass never reads them.
    @functools.cached_property
    def _receivers(self) -> tuple[Tensor, list[Head], Tensor]:
        kurt = kurtosis(self.fai_per_head)
        order = sorted(
            range(len(self.heads)),
            key=lambda i: (
                -(kurt[i].item() if not math.isnan(kurt[i]) else -math.inf),
                self.heads[i],
            ),
        )
        heads = sorted(self.heads[i] for i in order[: len(self.global_heads)])
        return self._grid(kurt), heads, self.fai_per_head[self._rows(heads)].mean(0)

    @functools.cached_property
    def receiver_kurtosis(self) -> Float[Tensor, "layer head_index"]:
        """Receiver score (kurtosis of each head's FAI), NaN where not analysed."""
        return self._receivers[0]

    @functools.cached_property
    def receiver_heads(self) -> list[Head]:
        """As many heads as `global_heads`, highest receiver kurtosis first (sorted)."""
        return self._receivers[1]

    @functools.cached_property
    def receiver_fai(self) -> Float[Tensor, " pos"]:
        """FAI averaged over the receiver heads."""
        return self._receivers[2]

    def _coupled_sets(self, anchors: list[int]) -> tuple[list[int], list[int]]:
        k = self.params["k"]
        dom = dominated_anchors(
            anchors, self.waad, self.delta, k=k, tau_waad=self.tau_waad, tau_delta=self.tau_delta
        )
        return dom, introductions(dom, self.delta, k=k)

    def with_params(self, **changes: Any) -> Analysis:
        """A new `Analysis` from the same forward pass with some parameters changed.

        Args:
            **changes: any of ``window``, ``fai_horizon``, ``head_quantiles``, ``top_q``,
                ``k``, ``alpha``, ``tau_waad``, ``tau_delta``, ``classes`` (a fixed
                `HeadClasses`, or None for per-sequence classes). See the module docstring
                for which windows and horizons are kept.
        """
        unknown = sorted(set(changes) - set(_PARAMS))
        if unknown:
            raise WorkbenchError(
                f"with_params got unknown parameters {unknown}",
                f"change only {list(_PARAMS)}; layers, heads or the trace need wb.analyze",
            )
        params = {**self.params, **changes}
        return Analysis(
            stats=self.stats,
            entropy=self.entropy,
            tokens=self.tokens,
            ids=self.ids,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            meta=self.meta,
            **params,
        )

    recompute = with_params

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
        """The head classification in effect, as a reusable `HeadClasses`."""
        return HeadClasses(
            list(self.local_heads),
            list(self.global_heads),
            self.head_span,
            self.params["head_quantiles"],
        )

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
        _credit.check_strategy(strategy)
        g = _credit.check_gamma_amp(gamma_amp)
        n, q, alpha = self.n_pos, self.params["top_q"], self.params["alpha"]
        if strategy == "none":
            return torch.ones(n, dtype=torch.float32)
        if strategy == "local":
            return _credit.set_gamma(n, self.preplan, g)
        if strategy == "global":
            return _credit.set_gamma(n, self.anchors, g)
        if strategy == "coupled":
            return _credit.coupled_gamma(
                n, self.anchors, self.dominated, self.intro, gamma_amp=g, alpha=alpha
            )
        if strategy == "random":
            rng = np.random.default_rng(seed)
            m = select_count(q, len(self.response))
            picks = rng.choice(np.arange(self.prompt_len, n), size=m, replace=False)
            return _credit.set_gamma(n, sorted(int(x) for x in picks), g)
        if strategy == "entropy":
            if bool(torch.isnan(self.entropy[self.prompt_len :]).all()):
                raise WorkbenchError(
                    "this analysis has no entropies (it was computed with entropy=False)",
                    "analyse again with entropy=True (the default)",
                )
            return _credit.set_gamma(n, _top_q(self.entropy, q), g)
        if strategy == "bottom-local":
            return _credit.set_gamma(n, _top_q(self.delta, q, bottom=True), g)
        if strategy == "bottom-global":
            return _credit.set_gamma(n, _top_q(self.fai, q, bottom=True), g)
        anchors = _top_q(self.fai, q, bottom=True)  # bottom-coupled
        dom, intro = self._coupled_sets(anchors)
        return _credit.coupled_gamma(n, anchors, dom, intro, gamma_amp=g, alpha=alpha)

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
        """One row per head of the model (pandas): span, class, receiver score."""
        import pandas as pd

        loc, glob, rec = set(self.local_heads), set(self.global_heads), set(self.receiver_heads)
        analysed = set(self.heads)
        rows = []
        for layer in range(self.n_layers):
            for h in range(self.n_heads):
                key = (layer, h)
                cls = "local" if key in loc else "global" if key in glob else "middle"
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


def _check_trace(model: Any, trace: Trace) -> None:
    if not isinstance(trace, Trace):
        raise WorkbenchError(
            f"expected a wb.Trace, got {type(trace).__name__}",
            "build one with wb.generate(model, prompt) or wb.Trace.from_text(model, p, r)",
        )
    if trace.response_len == 0:
        raise WorkbenchError(
            "the trace has an empty response (prompt_len == len(ids)): nothing to analyse",
            "generate or pass a response of at least one token",
        )
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None and len(trace) > n_ctx:
        raise WorkbenchError(
            f"the trace has {len(trace)} tokens but the model's context holds {n_ctx}",
            "shorten the trace (fewer prompt or response tokens)",
        )


def analyze(
    model: Any,
    trace: Trace,
    *,
    layers: str | int | Sequence[int] = "all",
    heads: Sequence[Head] | None = None,
    window: int = 10,
    fai_horizon: tuple[int, int | None] = (0, None),
    head_quantiles: tuple[float, float] = (0.3, 0.3),
    top_q: float = 0.4,
    k: int = 3,
    alpha: float = 0.5,
    tau_waad: float | None = None,
    tau_delta: float | None = None,
    classes: HeadClasses | None = None,
    max_window: int | None = None,
    fai_cuts: Sequence[int] | None = None,
    path: str = "auto",
    entropy: bool = True,
) -> Analysis:
    """Analyse one trace with one forward pass (method.md, Eq. 7-10 and Sec. 5.2).

    Args:
        model: a TransformerBridge from `wb.load_model` (eager attention hooks).
        trace: the `Trace` (prompt + response).
        layers: ``"all"``, ``"middle"`` (five middle-third layers, `middle_layers`) or a
            list of layer indices.
        heads: optionally restrict to these ``(layer, head)`` pairs (within `layers`).
        window: WAAD window ``W`` (Eq. 9).
        fai_horizon: ``(H_lo, H_hi)`` for FAI (Eq. 10); ``(10, 100)`` is the paper's RL
            setting, ``(0, None)`` runs to the end of the response.
        head_quantiles: ``(q_local, q_global)`` fractions of heads by span (Eq. 8).
        top_q: fraction ``q`` for preplan/anchor sets (Sec. 5.2).
        k: look-back for locally dominated anchors.
        alpha: coupled split between a dominated anchor and its introduction.
        tau_waad / tau_delta: thresholds for ``D``; None = the response's medians.
        classes: a fixed `HeadClasses` (e.g. from `analyze_many(..., heads_from="batch")`).
        max_window: keep the diagonal band up to this window (default max(window, 32)).
        fai_cuts: extra FAI cut distances to keep (see `metrics.DEFAULT_FAI_CUTS`).
        path: ``"tiled"`` (the workbench's registered attention function on the plain
            model, exact, in query tiles, never a full pattern), ``"exact"`` (hooks on the
            bridge's ``hook_pattern``) or ``"auto"`` (tiled whenever the model supports
            it; see `workbench.attention.engine`).
        entropy: compute next-token entropies. False stops the forward pass after the
            last analysed layer (cheaper when the layers are early); ``Analysis.entropy``
            is then NaN and the ``"entropy"`` strategy is unavailable.

    Returns:
        An `Analysis` (use `Analysis.with_params` to change post-processing parameters).
    """
    return _analyze_batch(
        model,
        [trace],
        layers=layers,
        heads=heads,
        window=window,
        fai_horizon=fai_horizon,
        head_quantiles=head_quantiles,
        top_q=top_q,
        k=k,
        alpha=alpha,
        tau_waad=tau_waad,
        tau_delta=tau_delta,
        classes=classes,
        max_window=max_window,
        fai_cuts=fai_cuts,
        path=path,
        entropy=entropy,
    )[0]


def _analyze_batch(
    model: Any,
    traces: Sequence[Trace],
    *,
    layers: str | int | Sequence[int] = "all",
    heads: Sequence[Head] | None = None,
    window: int = 10,
    fai_horizon: tuple[int, int | None] = (0, None),
    head_quantiles: tuple[float, float] = (0.3, 0.3),
    top_q: float = 0.4,
    k: int = 3,
    alpha: float = 0.5,
    tau_waad: float | None = None,
    tau_delta: float | None = None,
    classes: HeadClasses | None = None,
    max_window: int | None = None,
    fai_cuts: Sequence[int] | None = None,
    path: str = "auto",
    entropy: bool = True,
) -> list[Analysis]:
    """Validate everything, then one batched forward pass (`engine.collect_many`)."""
    engine.check_model(model)
    for trace in traces:
        _check_trace(model, trace)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    layer_list = resolve_layers(layers, n_layers)
    head_list = resolve_heads(layer_list, heads, n_layers, n_heads)
    check_window(window)
    lo, hi = check_horizon(fai_horizon)
    check_quantiles(head_quantiles)
    check_q(top_q)
    _check_k(k)
    _check_alpha(alpha)
    _check_tau(tau_waad, "tau_waad")
    _check_tau(tau_delta, "tau_delta")
    mw = max(window, DEFAULT_MAX_WINDOW) if max_window is None else max_window
    check_window(mw)
    if mw < window:
        raise WorkbenchError(
            f"max_window={mw} is smaller than window={window}", "pass max_window >= window"
        )
    if path not in ("auto", "exact", "tiled"):
        raise WorkbenchError(f"path={path!r} is not a path", 'pass "auto", "exact" or "tiled"')
    cuts = [*DEFAULT_FAI_CUTS, lo, *([] if hi is None else [hi + 1]), *(fai_cuts or ())]
    pad = getattr(getattr(model, "tokenizer", None), "pad_token_id", None)
    results = engine.collect_many(
        model,
        [(t.ids, t.prompt_len) for t in traces],
        head_list,
        max_window=mw,
        cuts=cuts,
        path=path,
        pad_id=int(pad) if pad is not None else 0,
        entropy=entropy,
    )
    return [
        Analysis(
            stats=stats,
            entropy=ent,
            tokens=trace.tokens,
            ids=trace.ids,
            n_layers=n_layers,
            n_heads=n_heads,
            window=window,
            fai_horizon=(lo, hi),
            head_quantiles=head_quantiles,
            top_q=top_q,
            k=k,
            alpha=alpha,
            tau_waad=tau_waad,
            tau_delta=tau_delta,
            classes=classes,
            meta={"trace": dict(trace.meta), "layers": layer_list},
        )
        for trace, (stats, ent) in zip(traces, results, strict=True)
    ]


def analyze_many(
    model: Any,
    traces: Sequence[Trace],
    *,
    heads_from: str | HeadClasses | None = None,
    batch_size: int = 1,
    progress: bool = True,
    **kwargs: Any,
) -> list[Analysis]:
    """`analyze` many traces, with a progress bar, optionally several per forward pass.

    Args:
        model: the bridge.
        traces: the traces.
        heads_from: None classifies heads per sequence (the paper's definition);
            ``"batch"`` computes one classification from the mean span over all traces
            (no extra forward pass) and applies it to every analysis; a `HeadClasses`
            is used as given.
        batch_size: traces per forward pass (right-padded; see `engine.collect_many`).
            Traces are grouped in length order to limit padding; results keep the input
            order. Memory grows with the batch (logits: ``batch x T x d_vocab``).
        progress: show a ``tqdm.auto`` progress bar.
        **kwargs: any keyword argument of `analyze`.

    Returns:
        One `Analysis` per trace, in order.
    """
    from tqdm.auto import tqdm

    if heads_from is not None and heads_from != "batch" and not isinstance(heads_from, HeadClasses):
        raise WorkbenchError(
            f"heads_from={heads_from!r} is not a head classification",
            'pass None (per sequence), "batch" or a wb.HeadClasses',
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WorkbenchError(
            f"batch_size must be a positive integer, got {batch_size!r}", "pass e.g. 8"
        )
    traces = list(traces)
    if not traces:
        raise WorkbenchError("analyze_many got no traces", "pass a non-empty list of traces")
    if isinstance(heads_from, HeadClasses):
        kwargs["classes"] = heads_from
    order = sorted(range(len(traces)), key=lambda i: len(traces[i]))
    out: list[Analysis | None] = [None] * len(traces)
    with tqdm(total=len(traces), desc="analyze", disable=not progress, leave=False) as bar:
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            for i, a in zip(
                idx, _analyze_batch(model, [traces[i] for i in idx], **kwargs), strict=True
            ):
                out[i] = a
            bar.update(len(idx))
    result = [a for a in out if a is not None]
    if heads_from == "batch":
        span = torch.stack([a.head_span for a in result]).nanmean(0)
        classes = HeadClasses.from_span(span, result[0].params["head_quantiles"])
        result = [a.with_params(classes=classes) for a in result]
    return result


def gamma_many(
    model: Any,
    traces: Sequence[Trace],
    strategy: str = "coupled",
    *,
    layers: str | int | Sequence[int] = "middle",
    fai_horizon: tuple[int, int | None] = (10, 100),
    seed: int | None = None,
    gamma_amp: float = 1.5,
    batch_size: int = 8,
    progress: bool = False,
    **kwargs: Any,
) -> list[Float[Tensor, " pos"]]:
    """Credit weights for many rollouts (the RL entry point), batched forward passes.

    Defaults are the paper's RL setting: the five middle-third layers and
    ``fai_horizon=(10, 100)``. Heads are classified per rollout.

    Args:
        model: the current policy as a bridge (eager attention).
        traces: prompt + completion of each rollout.
        strategy: see `Analysis.gamma`.
        layers / fai_horizon: as in `analyze`.
        seed: for ``"random"``; rollout ``i`` uses ``seed + i`` (None: unseeded).
        gamma_amp: the amplification.
        batch_size: rollouts per forward pass.
        progress: show a progress bar.
        **kwargs: other `analyze` parameters (``window``, ``top_q``, ``alpha``...).

    Returns:
        One ``[pos]`` float32 tensor per trace (1.0 on the prompt).
    """
    _credit.check_strategy(strategy)
    # Only the entropy control reads the logits; the others stop after the last layer.
    kwargs.setdefault("entropy", strategy == "entropy")
    analyses = analyze_many(
        model,
        traces,
        layers=layers,
        fai_horizon=fai_horizon,
        batch_size=batch_size,
        progress=progress,
        **kwargs,
    )
    return [
        a.gamma(strategy, seed=None if seed is None else seed + i, gamma_amp=gamma_amp)
        for i, a in enumerate(analyses)
    ]
