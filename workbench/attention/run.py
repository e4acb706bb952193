"""The entry points: `analyze` (one trace), `analyze_many` (many) and `gamma_many` (RL).

Each validates everything before any forward pass, then runs the engine
(`workbench.attention.engine.collect_many`) once per batch of traces and wraps the
statistics in `Analysis` objects. The rhythm parameters travel as one `RhythmParams`
(keyword settings such as ``window=5`` change a copy of it); RL credit as one
`CreditParams`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, no_type_check

from jaxtyping import Float
from torch import Tensor

from .. import _validate
from ..errors import WorkbenchError
from ..models.bridge import model_name
from ..trace import Trace, check_trace, check_traces
from ..trace.tokens import check_context, check_trace_tokens
from . import engine
from .analysis import Analysis, check_classes
from .heads import Head, HeadClasses
from .layers import resolve_heads, resolve_layers
from .metrics import DEFAULT_FAI_CUTS, DEFAULT_MAX_WINDOW
from .params import CreditParams, RhythmParams, as_credit
from .reductions import MAX_BAND, banded_horizon, check_sink

__all__ = ["analyze", "analyze_many", "check_analysable", "gamma_many"]

PATHS = ("auto", "exact", "tiled")
TRACE_FIX = "build one with wb.generate(model, prompt) or wb.Trace.from_text(model, p, r)"


def check_analysable(model: Any, trace: Any) -> None:
    """Refuse what `analyze` cannot read `model` on: no `wb.Trace`, an empty response (no
    rows: every metric would be NaN), another model's tokens, or more than its context."""
    check_trace(trace, TRACE_FIX)
    if trace.response_len == 0:
        raise WorkbenchError(
            "the trace has an empty response (prompt_len == len(ids)): nothing to analyse",
            "generate or pass a response of at least one token",
        )
    check_trace_tokens(model, trace)
    check_context(
        model,
        len(trace),
        what="the trace",
        fix="shorten the trace (fewer prompt or response tokens)",
    )


def _check_traces(traces: Any, caller: str) -> list[Trace]:
    """`traces` as a non-empty list of traces (one `Trace` or None refused, with the fix)."""
    usage = "pass [trace] (or use wb.analyze for one trace)" if isinstance(traces, Trace) else None
    return check_traces(traces, TRACE_FIX, caller=caller, usage=usage)


def _check_cuts(fai_cuts: Any) -> list[int]:
    """Validate `fai_cuts`: cut distances, non-negative integers (``H_lo``, ``H_hi + 1``)."""
    if fai_cuts is None:
        return []
    problem = None
    if isinstance(fai_cuts, str) or not hasattr(fai_cuts, "__iter__"):
        problem = f"fai_cuts must be a list of cut distances, got {fai_cuts!r}"
    else:
        try:
            return [_validate.integer("fai_cuts", c, minimum=0) for c in fai_cuts]
        except WorkbenchError:
            problem = f"fai_cuts must hold non-negative integers, got {list(fai_cuts)!r}"
    raise WorkbenchError(
        problem,
        "pass cut distances H_lo and H_hi + 1, e.g. fai_cuts=[10, 101] to keep the horizon "
        "(10, 100)",
    )


def _check_fixed_classes(classes: Any, changes: dict[str, Any], params: Any = None) -> None:
    """Refuse ``head_quantiles=``, or a `params` record's quantiles other than the default,
    that differ from those of fixed `classes` (`HeadClasses.check_quantiles`): the classes
    would replace them while the analysis claimed them (as `Analysis.with_params` refuses)."""
    if not isinstance(classes, HeadClasses):
        return
    if "head_quantiles" in changes:
        classes.check_quantiles(changes["head_quantiles"])
    elif isinstance(params, RhythmParams) and params.head_quantiles != DEFAULT_QUANTILES:
        classes.check_quantiles(params.head_quantiles, "params.head_quantiles")


#: The quantiles a record has unless it asks for others.
DEFAULT_QUANTILES = RhythmParams().head_quantiles


def _rhythm(params: Any, changes: dict[str, Any]) -> RhythmParams:
    if params is None:
        params = RhythmParams()
    elif not isinstance(params, RhythmParams):
        raise WorkbenchError(
            f"params must be a wb.RhythmParams, got {type(params).__name__}",
            "pass wb.RhythmParams(...) or keyword settings such as window=10",
        )
    return params.replace(**changes) if changes else params


@no_type_check  # validates its arguments itself, with messages that name the fix
def analyze(
    model: Any,
    trace: Trace,
    params: RhythmParams | None = None,
    *,
    layers: str | int | Sequence[int] = "all",
    heads: Sequence[Head] | None = None,
    classes: HeadClasses | None = None,
    max_window: int | None = None,
    fai_cuts: Sequence[int] | None = None,
    path: str = "auto",
    entropy: bool = True,
    sink: str = "keep",
    **changes: Any,
) -> Analysis:
    """Analyse one trace with one forward pass (Eq. 7-10 and Sec. 5.2).

    Args:
        model: a TransformerBridge from `wb.load_model`.
        trace: the `Trace` (prompt + response).
        params: the `RhythmParams` (default ``RhythmParams()``: W = 10, FAI to the end of
            the response, 30% / 30% head quantiles, q = 0.4, k = 3, alpha = 0.5).
        layers: ``"all"``, ``"middle"`` (five middle-third layers, `middle_layers`) or a
            list of layer indices. In a hybrid model, ``"all"`` and ``"middle"`` count
            only its attention layers (`engine.attention_layers`).
        heads: optionally restrict to these ``(layer, head)`` pairs (within `layers`).
        classes: a fixed `HeadClasses` (e.g. from `analyze_many(..., heads_from="batch")`).
        max_window: keep the diagonal band up to this window (default max(window, 32)).
        fai_cuts: extra FAI cut distances to keep (see `metrics.DEFAULT_FAI_CUTS`).
        path: ``"tiled"`` (the workbench's registered attention function on the plain
            model, exact, in query tiles, never a full pattern), ``"exact"`` (hooks on the
            bridge's ``hook_pattern``) or ``"auto"`` (tiled whenever the model supports
            it; see `workbench.attention.engine`).
        entropy: compute next-token entropies. False stops the forward pass after the
            last analysed layer; ``Analysis.entropy`` is then NaN.
        sink: ``"keep"`` (the paper's definition) or ``"exclude"`` (the workbench's
            addition): every metric is computed from ``A'[t, s] = A[t, s] / (1 - A[t, 0])``
            for ``s >= 1`` and ``A'[t, 0] = 0``, the attention with the first token (the
            attention sink, about 29% of each response row on SmolLM2) removed and each
            row renormalised. Changing it needs a new forward pass.
        **changes: `RhythmParams` fields overriding `params`, e.g. ``window=5``.

    Returns:
        An `Analysis` (`Analysis.with_params` changes the rhythm parameters for free).
    """
    options = dict(
        layers=layers,
        heads=heads,
        classes=classes,
        max_window=max_window,
        fai_cuts=_check_cuts(fai_cuts),
        path=path,
        entropy=_validate.flag("entropy", entropy),
        sink=sink,
    )
    _check_fixed_classes(classes, changes, params)
    engine.check_model(model)
    check_analysable(model, trace)
    return _analyze_batch(model, [trace], _rhythm(params, changes), **options)[0]


def _analyze_batch(
    model: Any,
    traces: Sequence[Trace],
    params: RhythmParams,
    *,
    layers: Any = "all",  # validated by resolve_layers (NumPy and torch integers too)
    heads: Any = None,  # validated by resolve_heads
    classes: HeadClasses | None = None,
    max_window: int | None = None,
    fai_cuts: Sequence[int] | None = None,
    path: str = "auto",
    entropy: bool = True,
    default_cuts: bool = True,
    sink: str = "keep",
    fast_other_layers: bool = False,
    sdpa_outputs: bool = False,
    columns: bool = True,
) -> list[Analysis]:
    """Validate the pass options, then one batched forward pass (`engine.collect_many`).

    The model and the traces are checked by the callers (`analyze`, `analyze_many`),
    before this typed signature sees them. ``default_cuts=False`` keeps only the cuts of ``params.fai_horizon`` and `fai_cuts`
    (the RL credit pass never changes its horizon afterwards).
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    attention = engine.attention_layers(model)
    layer_list = resolve_layers(layers, n_layers, attention)
    head_list = resolve_heads(layer_list, heads, n_layers, n_heads, attention)
    window = params.window
    mw = max(window, DEFAULT_MAX_WINDOW) if max_window is None else max_window
    _validate.integer("max_window", mw, minimum=window, example=max(window, DEFAULT_MAX_WINDOW))
    if path not in PATHS:
        raise WorkbenchError(f"path={path!r} is not a path", f"pass one of {list(PATHS)}")
    check_sink(sink)
    check_classes(classes, (int(n_layers), int(n_heads)), head_list)
    lo, hi = params.fai_horizon
    cuts = [
        *(DEFAULT_FAI_CUTS if default_cuts else ()),
        lo,
        *([] if hi is None else [hi + 1]),
        *(fai_cuts or ()),
    ]
    widest = max([mw, *cuts])
    if not columns and (not banded_horizon(params.fai_horizon) or widest > MAX_BAND):
        raise WorkbenchError(
            f"columns=False keeps no column sums, so it needs a finite fai_horizon and cuts "
            f"of at most {MAX_BAND} (got fai_horizon={params.fai_horizon}, "
            f"cuts up to {widest})",
            "pass columns=True (the default), or default_cuts=False with a horizon such as "
            "fai_horizon=(10, 100)",
        )
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
        sink=sink,
        fast_other_layers=fast_other_layers,
        sdpa_outputs=sdpa_outputs,
        columns=columns,
    )
    for stats, ent in results:
        _check_finite(stats, ent, entropy)
    return [
        Analysis(
            stats=stats,
            entropy=ent,
            tokens=trace.tokens,
            ids=trace.ids,
            n_layers=n_layers,
            n_heads=n_heads,
            params=params,
            classes=classes,
            # the model's name: another model's analysis (same tokenizer and shape) is
            # refused where it meets a model (`check_same_model`)
            meta={
                "trace": dict(trace.meta),
                "layers": layer_list,
                "sink": sink,
                "model": model_name(model),
            },
        )
        for trace, (stats, ent) in zip(traces, results, strict=True)
    ]


def _check_finite(stats: Any, ent: Any, entropy: bool) -> None:
    """Refuse NaN or infinite attention or logits, naming where they first appear
    (weights changed after loading, or an overflow), instead of all-NaN metrics."""
    import torch

    bad = ~torch.isfinite(stats.rowsum)
    if bool(bad.any()):
        row, pos = (int(x) for x in bad.nonzero()[0])
        layer, head = stats.heads[row]
        raise WorkbenchError(
            f"the attention of layer {layer} head {head} is not finite at position {pos}",
            "check the model's weights for NaN or infinite values (a diverged training run, "
            "or weights changed after loading); reload the model",
        )
    if entropy:
        logits_bad = ~torch.isfinite(ent[stats.prompt_len :])
        if bool(logits_bad.any()):
            pos = stats.prompt_len + int(logits_bad.nonzero()[0])
            raise WorkbenchError(
                f"the model's logits are not finite at position {pos} (next-token entropy "
                "is undefined there)",
                "check the model's weights for NaN or infinite values; reload the model",
            )


@no_type_check  # validates its arguments itself, with messages that name the fix
def analyze_many(
    model: Any,
    traces: Sequence[Trace],
    params: RhythmParams | None = None,
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
        params: the `RhythmParams` (as in `analyze`).
        heads_from: None classifies heads per sequence (the paper's definition);
            ``"batch"`` computes one classification from the mean span over all traces
            (no extra forward pass) and applies it to every analysis; a `HeadClasses`
            is used as given.
        batch_size: traces per forward pass (right-padded; see `engine.collect_many`).
            Traces are grouped in length order to limit padding; results keep the input
            order. Memory grows with the batch.
        progress: show a ``tqdm.auto`` progress bar (in a notebook or a terminal; none
            where stderr is not a terminal, as in a log file).
        **kwargs: the other keyword arguments of `analyze` (pass options and
            `RhythmParams` fields), and ``columns=False`` for a pass that keeps no column
            sums beyond the diagonal band (with ``default_cuts=False`` and a finite
            ``fai_horizon``, as `gamma_many`): on the CPU its layers then cost about an
            sdpa forward each (`engine.collect_many`), and FAI to the end of the response
            is no longer available.

    Returns:
        One `Analysis` per trace, in order.
    """
    import torch

    from .._progress import progress_bar

    # A str first: an array's ``== "batch"`` has no truth value (a raw ValueError).
    from_batch = isinstance(heads_from, str) and heads_from == "batch"
    if not (heads_from is None or from_batch or isinstance(heads_from, HeadClasses)):
        raise WorkbenchError(
            f"heads_from={heads_from!r} is not a head classification",
            'pass None (per sequence), "batch" or a wb.HeadClasses',
        )
    batch_size = _validate.integer("batch_size", batch_size, minimum=1, example=8)
    _validate.flag("progress", progress)
    traces = _check_traces(traces, "analyze_many")
    engine.check_model(model)
    for trace in traces:
        check_analysable(model, trace)
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in _PASS_OPTIONS}
    if "fai_cuts" in options:
        options["fai_cuts"] = _check_cuts(options["fai_cuts"])
    for name in _FLAGS:
        if name in options:
            options[name] = _validate.flag(name, options[name])
    if heads_from is not None and options.get("classes") is not None:
        raise WorkbenchError(
            "heads_from and classes both fix the head classes",
            'pass one: heads_from (None, "batch" or a wb.HeadClasses) or classes',
        )
    if isinstance(heads_from, HeadClasses):
        options["classes"] = heads_from
    _check_fixed_classes(options.get("classes"), kwargs, params)
    params = _rhythm(params, kwargs)
    order = sorted(range(len(traces)), key=lambda i: len(traces[i]))
    out: list[Analysis | None] = [None] * len(traces)
    with progress_bar(total=len(traces), desc="analyze", progress=progress, leave=False) as bar:
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            batch = _analyze_batch(model, [traces[i] for i in idx], params, **options)
            for i, a in zip(idx, batch, strict=True):
                out[i] = a
            bar.update(len(idx))
    result = [a for a in out if a is not None]
    if from_batch:
        span = torch.stack([a.head_span for a in result]).nanmean(0)
        classes = HeadClasses.from_span(span, params.head_quantiles)
        result = [a.with_params(classes=classes) for a in result]
    return result


#: The pass options that are switches (True or False).
_FLAGS = ("entropy", "default_cuts", "fast_other_layers", "sdpa_outputs", "columns")

_PASS_OPTIONS = (
    "layers",
    "heads",
    "classes",
    "max_window",
    "fai_cuts",
    "path",
    "entropy",
    "default_cuts",
    "sink",
    "fast_other_layers",
    "sdpa_outputs",
    "columns",
)


@no_type_check  # validates its arguments itself, with messages that name the fix
def gamma_many(
    model: Any,
    traces: Sequence[Trace],
    credit: CreditParams | str | None = None,
    *,
    seed: int | None = None,
    batch_size: int = 8,
    progress: bool = False,
    path: str = "auto",
    **changes: Any,
) -> list[Float[Tensor, " pos"]]:
    """Credit weights for many rollouts (the RL entry point), batched forward passes.

    The default `CreditParams` is the paper's RL setting: the coupled strategy, the five
    middle-third layers, ``fai_horizon=(10, 100)``, ``gamma_amp=1.5``. Heads are
    classified per rollout. Only the band and the cuts the credit needs are kept; every
    layer's output comes from sdpa, as in the policy's training forward, or on the CPU,
    for a horizon the band holds (``H_hi < 256``), from the same flash kernel with the key
    positions as an extra value channel (`interface.Banded`: the credit layers then form
    no tile of probabilities; metrics differ from an all-eager pass by float rounding);
    and the pass stops after the last credit layer unless the strategy reads the
    entropies.

    Args:
        model: the current policy as a bridge.
        traces: prompt + completion of each rollout.
        credit: a `CreditParams`, or a strategy name (the rest at its defaults).
        seed: for ``"random"``; rollout ``i`` uses ``seed + i`` (None: unseeded).
        batch_size: rollouts per forward pass.
        progress: show a progress bar.
        path: the engine path (as in `analyze`).
        **changes: `CreditParams` or `RhythmParams` fields, e.g. ``strategy="global"``,
            ``layers=[3, 4]`` or ``top_q=0.3``.

    Returns:
        One ``[pos]`` float32 tensor per trace (1.0 on the prompt).
    """
    credit = as_credit(credit)
    credit = credit.replace(**changes) if changes else credit
    traces = _check_traces(traces, "gamma_many")
    if seed is not None:
        # rollout i uses seed + i: checked here, not by numpy after the forward passes
        seed = _validate.seed("seed", seed)
        _validate.seed("the last rollout's seed (seed + len(traces) - 1)", seed + len(traces) - 1)
    analyses = analyze_many(
        model,
        traces,
        credit.rhythm,
        layers=credit.layers if isinstance(credit.layers, str) else list(credit.layers),
        batch_size=batch_size,
        progress=progress,
        path=path,
        max_window=credit.rhythm.window,
        default_cuts=False,
        entropy=credit.strategy == "entropy",
        # As the fused credit inside a training forward: every layer's output from sdpa,
        # the credit layers' probabilities computed apart, only to be reduced.
        fast_other_layers=True,
        sdpa_outputs=True,
        # A finite horizon's cuts are read off a band H_hi + 1 wide, so on the CPU the
        # credit layers need no tiles of probabilities (`interface.Banded`); a band also
        # holds the WAAD window only up to MAX_BAND diagonals.
        columns=not banded_horizon(credit.rhythm.fai_horizon) or credit.rhythm.window > MAX_BAND,
    )
    return [
        a.gamma(
            credit.strategy, seed=None if seed is None else seed + i, gamma_amp=credit.gamma_amp
        )
        for i, a in enumerate(analyses)
    ]
