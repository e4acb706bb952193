"""Batch runner: many traces x target sets x interventions -> a tidy DataFrame, and a summary.

`run_ablations` analyses each trace (or takes given analyses), builds the target sets and
their matched controls (`target_sets`; each trace's random and nearby controls draw with
their own seeds, ``seed + i * n_random`` on for trace ``i``, so the draws of different
traces are independent and a run is repeatable), applies each intervention kind to each
set and measures the effects (`measure`). One row per (trace, target set, intervention).

`summarize` turns the rows into numbers with intervals: per family and intervention, the
mean effect of the family's set, of its random controls (averaged over seeds within a
trace first) and of its low-FAI control, and the paired differences "set minus random" and
"set minus low-FAI" (computed per trace, then averaged). Intervals are Student-t intervals
over traces (``mean +- t_{n-1} s / sqrt(n)``, `workbench.intervals.t_ci`), the choice the RL
experiment tables make for few seeds: at the handful of traces used in practice the
percentile bootstrap is too narrow (a nominal 95% interval covered a true zero difference
in 74% of simulated 3-trace runs and 82% of 5-trace runs; the t interval in 94%, as
nominal up to simulation noise, for normal values; for skewed ones such as KL effects it
covers 82-90% below 20 traces when lognormal with sigma 1, 69-76% with sigma 1.5: the
more skewed, the less). 0/1 outcomes get Wilson's interval (`summarize`).
``interval="bootstrap"`` gives the percentile bootstrap over traces instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, no_type_check

import numpy as np
import torch

from .. import _validate
from ..attention.analysis import Analysis
from ..attention.run import analyze
from ..errors import WorkbenchError, warn_user
from ..intervals import bootstrap_ci, check_level, t_ci, wilson_ci
from ..trace import Trace, check_traces
from ..trace.tokens import check_trace_tokens
from .effects import answer_span, logits_of, measure
from .interventions import Knockout, ResidAblation, resid_cache, resid_mean
from .targets import (
    CONTROLS,
    FAMILIES,
    _check_names,
    analysis_list,
    check_pairs,
    target_sets,
)

#: The columns of a `summarize` table that `effect_chart` reads (it adds the interval's
#: kind and level).
SUMMARY_COLUMNS = (
    "intervention",
    "family",
    "comparison",
    "metric",
    "estimate",
    "lo",
    "hi",
    "n_traces",
)

__all__ = [
    "CONTINUATION_METRICS",
    "INTERVENTIONS",
    "METRICS",
    "per_position",
    "run_ablations",
    "summarize",
]

#: Intervention kinds `run_ablations` understands.
INTERVENTIONS = ("knockout", "resid-zero", "resid-mean", "resid-resample")
#: Interval kinds `summarize` offers.
INTERVALS = ("t", "bootstrap")
#: Effect columns `summarize` can summarise.
METRICS = (
    "kl_mean", "kl_after_last", "kl_max", "delta_logp", "correct_ablated", "delta_correct"
)  # fmt: skip
#: The metrics of greedy continuations (NaN unless `run_ablations` ran them).
CONTINUATION_METRICS = ("correct_ablated", "delta_correct")

_COLUMNS = [
    "trace",
    "target",
    "family",
    "kind",
    "seed",
    "intervention",
    "n",
    "first",
    "last",
    "kl_mean",
    "kl_after_last",
    "kl_max",
    "logp_clean",
    "logp_ablated",
    "delta_logp",
    "answer_len",
    "answer_kind",
    "cut",
    "correct_clean",
    "correct_ablated",
    "delta_correct",
    "prompt_len",
    "positions",
    "kl_curve",
]


def _check_kinds(kinds: Any) -> list[str]:
    """The intervention names, checked as the family and control names are
    (`_check_names`), and at least one."""
    kinds = _check_names(kinds, INTERVENTIONS, "interventions")
    if not kinds:
        raise WorkbenchError("unknown interventions []", f"use some of {list(INTERVENTIONS)}")
    return kinds


def _check_analyze_kwargs(kwargs: Any) -> None:
    """Refuse `analyze_kwargs` that ``wb.analyze(model, trace, **kwargs)`` cannot take (not
    a mapping, a key that is no name, or the model or trace it already gets), before any
    work rather than at the first trace's analysis."""
    fix = "pass a dict of wb.analyze settings, e.g. analyze_kwargs={'window': 5}"
    if not isinstance(kwargs, Mapping | None):
        raise WorkbenchError(
            f"analyze_kwargs must be a dict of wb.analyze settings, got {kwargs!r}", fix
        )
    bad = [k for k in kwargs or {} if not isinstance(k, str) or k in ("model", "trace")]
    if bad:
        raise WorkbenchError(
            f"analyze_kwargs holds {bad}, which wb.analyze takes no setting of "
            "(run_ablations passes the model and each trace itself)",
            fix,
        )


@no_type_check  # validates its arguments itself, with messages that name the fix
def run_ablations(
    model: Any,
    traces: Sequence[Trace],
    *,
    analyses: Sequence[Analysis] | None = None,
    interventions: Iterable[str] = ("knockout",),
    families: Iterable[str] = FAMILIES,
    controls: Iterable[str] = CONTROLS,
    n_random: int = 3,
    seed: int = 0,
    size: int | None = None,
    exclude_answer: bool = True,
    knockout_layers: str | int | Sequence[int] = "all",
    resid_layers: int | Sequence[int] | None = None,
    task: Any = None,
    problems: Sequence[Any] | None = None,
    max_new_tokens: int = 0,
    analyze_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    callback: Callable[[int, int], None] | None = None,
):
    """Ablate every target set and control of every trace; one row per ablation.

    Args:
        model: the bridge.
        traces: the traces.
        analyses: their analyses (None: ``wb.analyze(model, trace, **analyze_kwargs)``).
        interventions: kinds from `INTERVENTIONS`, each at most once (as are the names of
            `families` and `controls`). ``"resid-mean"`` uses the mean residual
            over the response positions of all `traces`; ``"resid-resample"`` copies from
            the next trace in the list (cyclically), so it needs at least two traces, and
            no trace may have the same token ids as the next (copying a trace's own
            activations changes nothing). The copy is aligned at the response start: the
            ``k``-th response token gets the residual of the next trace's ``k``-th
            response token, so a response position never gets a prompt token's residual
            when the prompts differ in length. Where a family's set reaches beyond the
            next trace's response, that trace's whole family (set and controls) is skipped for
            resampling, so set and control means come from the same traces; a control
            that reaches beyond it while its set does not is skipped alone. One warning
            per call counts what was skipped.
        families / controls / n_random / size: see `target_sets`.
        seed: the first RNG seed of the controls. Trace ``i`` draws its controls with
            seeds from ``seed + i * n_random`` on (``seed + i * n_random + k`` for the
            ``k``-th random and nearby control), so draws differ between traces (the
            summary's interval treats traces as independent) and a run is repeatable;
            the ``seed`` column holds the seed each control used.
        exclude_answer: keep the answer span (`answer_span`) out of every target set and
            control, so the answer log-prob measures influence, not direct damage.
            Special tokens (eos) and the last two tokens are always kept out: the last
            has no later query, and after the one before it no prediction of the trace
            is measured (`kl_after_last` and a knockout's every KL would be NaN). A trace
            whose answer span is empty (its response ends at the ``Answer:`` marker) has
            NaN ``logp_*`` and ``delta_logp`` rows; one warning per call names such
            traces.
        knockout_layers: layers for ``"knockout"``.
        resid_layers: layer(s) for residual ablations (None: ``floor(L/3)``).
        task / problems: a `workbench.tasks.Task` and one `Problem` per trace, to test
            whether greedy continuations still reach the right answer (only with
            ``max_new_tokens > 0``, which needs them; with 0 they are refused).
        max_new_tokens: continuation length (0: no continuation test).
        analyze_kwargs: keyword arguments for `wb.analyze` (only without `analyses`).
        progress: a ``tqdm.auto`` progress bar over traces, in a notebook or a terminal;
            none when stderr is not a terminal (a log file: tqdm wrote a line per trace).
        callback: called as ``callback(done, total)`` after each trace (for panels).

    Returns:
        A pandas DataFrame with columns ``trace, target, family, kind, seed,
        intervention, n, first, last, kl_mean, kl_after_last, kl_max, logp_clean,
        logp_ablated, delta_logp, answer_len, answer_kind, cut, correct_clean,
        correct_ablated, delta_correct, prompt_len, positions, kl_curve`` (``positions``: the ablated
        positions; ``kl_curve``: the ``[pos]`` KL array of `measure`, for `per_position`
        and the charts). A trace that gives no target set of any family (too short, or
        every eligible position excluded) has no rows, and one warning per call names
        such traces; when none gives one, a `WorkbenchError` (not an empty frame).
    """
    import pandas as pd

    from .._progress import progress_bar

    kinds = _check_kinds(interventions)
    traces = check_traces(traces, caller="run_ablations")
    usage = "pass analyses=wb.analyze_many(model, traces), one per trace, or leave it out"
    analyses = None if analyses is None else analysis_list(analyses, "run_ablations", usage)
    problems = None if problems is None else list(problems)
    for trace in traces:
        check_trace_tokens(model, trace)
    _validate.integer("max_new_tokens", max_new_tokens, minimum=0, example=32)
    _validate.flag("exclude_answer", exclude_answer)
    progress = _validate.flag("progress", progress)
    n_random = _validate.integer("n_random", n_random, minimum=0, example=3)
    seed = _validate.seed("seed", seed)
    families = _check_names(families, FAMILIES, "target families")  # before any trace's
    controls = _check_names(controls, CONTROLS, "controls")  # sets, so no trace is named
    if not families:  # no set, so no row: an empty frame (as interventions=[] is refused)
        raise WorkbenchError(
            "families=[] names no target family, so run_ablations would ablate nothing",
            f"pass some of {list(FAMILIES)}, e.g. families=['anchors'], or leave it out for all",
        )
    _check_analyze_kwargs(analyze_kwargs)
    if seed + (len(traces) - 1) * n_random > _validate.SEED_MAX:
        raise WorkbenchError(
            f"seed={seed} is too large: the last trace's controls would draw with seed "
            f"{seed + (len(traces) - 1) * n_random} (seed + i * n_random), beyond 2**63 - 1",
            "pass a smaller seed",
        )
    if analyses is not None and analyze_kwargs is not None:
        raise WorkbenchError(
            "analyze_kwargs are for the analyses run_ablations computes, but analyses were "
            "given, so they would be ignored",
            "pass analyze_kwargs to wb.analyze_many when computing the analyses, or leave "
            "analyses out",
        )
    if callback is not None and not callable(callback):
        raise WorkbenchError(
            f"callback must be callable, got {callback!r}", "pass a function (done, total)"
        )
    if analyses is not None:
        check_pairs(traces, analyses, model)
    if problems is not None and len(problems) != len(traces):
        raise WorkbenchError(
            f"{len(traces)} traces but {len(problems)} problems",
            "pass one problem per trace (same order)",
        )
    if not max_new_tokens and (task is not None or problems is not None):
        raise WorkbenchError(
            "a task and problems score greedy continuations, but max_new_tokens=0 runs none",
            "pass max_new_tokens > 0 (e.g. 32) for the continuation test, or leave task and "
            "problems out",
        )
    if max_new_tokens and (task is None or problems is None):
        raise WorkbenchError(
            "max_new_tokens > 0 needs a task and one problem per trace",
            "pass task=get_task(...) and problems=[...], or max_new_tokens=0",
        )
    if "resid-resample" in kinds and len(traces) < 2:
        raise WorkbenchError(
            "resid-resample copies activations from another trace, but run_ablations got one trace",
            "pass at least two traces, or another intervention (e.g. 'resid-mean')",
        )
    if "resid-resample" in kinds:
        same = sorted(
            {
                tuple(sorted((i, (i + 1) % len(traces))))
                for i in range(len(traces))
                if torch.equal(traces[i].ids, traces[(i + 1) % len(traces)].ids)
            }
        )
        if same:
            pairs = ", ".join(f"traces[{i}] and traces[{j}]" for i, j in same)
            raise WorkbenchError(
                f"resid-resample copies each trace's activations from the next trace, but "
                f"{pairs} have the same token ids, so the copy would change nothing and "
                "every effect would read 0",
                "pass distinct traces (drop the duplicates), or another intervention "
                "(e.g. 'resid-mean')",
            )
    mean_ref = resid_mean(model, traces, resid_layers) if "resid-mean" in kinds else None
    special = getattr(model.tokenizer, "all_special_ids", []) or []
    rows: list[dict[str, Any]] = []
    skipped_families = skipped_controls = 0
    nan_notes: dict[str, set[int]] = {}  # what is NaN -> the traces where it is
    no_random: list[tuple[int, str]] = []  # (trace, family) whose set is its whole pool
    no_sets: list[int] = []  # traces that gave no target set of any family
    for i, tr in enumerate(progress_bar(traces, desc="ablate", progress=progress)):
        an = analyses[i] if analyses is not None else analyze(model, tr, **(analyze_kwargs or {}))
        span = answer_span(tr, special_ids=special)
        try:
            sets = target_sets(
                an,
                families=families,
                controls=controls,
                n_random=n_random,
                seed=seed + i * n_random,  # per trace: independent draws, still repeatable
                size=size,
                exclude=_exclusions(tr, span[0] if exclude_answer else [], special),
            )
        except WorkbenchError as e:
            raise WorkbenchError(f"traces[{i}]: {e.problem}", e.fix) from None
        if not sets:  # its rows were missing from the frame without a word
            no_sets.append(i)
        if "random" in controls and n_random:  # a set that is its whole pool has none
            drawn = {ts.family for ts in sets if ts.kind == "random"}
            no_random += [
                (i, ts.family) for ts in sets if ts.kind == "target" and ts.family not in drawn
            ]
        clean = logits_of(model, tr.ids)
        other = None
        resampled: dict[str, bool] = {}  # set name -> it is resampled on this trace
        shift = 0  # source position - position: the two responses aligned at their start
        if "resid-resample" in kinds:
            source = traces[(i + 1) % len(traces)]
            other = resid_cache(model, source, resid_layers)
            shift = source.prompt_len - tr.prompt_len
            family_fits: dict[str, bool] = {}
            for ts in sets:  # the family's set comes first, then its controls
                fits = max(ts.positions) + shift < len(source)
                if ts.kind == "target":
                    family_fits[ts.family] = fits
                    skipped_families += not fits
                elif family_fits[ts.family] and not fits:
                    skipped_controls += 1
                resampled[ts.name] = family_fits[ts.family] and fits
        clean_correct: dict[int, float] = {}
        problem = problems[i] if problems is not None else None
        for ts in sets:
            for kind in kinds:
                iv: Any
                if kind == "knockout":
                    iv = Knockout(ts.positions, layers=knockout_layers)
                elif kind == "resid-zero":
                    iv = ResidAblation(ts.positions, layers=resid_layers, mode="zero")
                elif kind == "resid-mean":
                    iv = ResidAblation(ts.positions, resid_layers, "mean", mean_ref)
                else:
                    if not resampled[ts.name]:
                        continue  # counted above; warned once below
                    sources = [p + shift for p in ts.positions]
                    iv = ResidAblation(ts.positions, resid_layers, "resample", other, sources)
                notes: dict[str, str] = {}
                m = measure(
                    model,
                    tr,
                    iv,
                    clean_logits=clean,
                    span=span,
                    task=task,
                    problem=problem,
                    max_new_tokens=max_new_tokens,
                    clean_correct=clean_correct,
                    notes=notes,
                )
                for what in notes:
                    nan_notes.setdefault(what, set()).add(i)
                kl_curve = m.pop("kl")
                rows.append(
                    {
                        "trace": i,
                        "target": ts.name,
                        "family": ts.family,
                        "kind": ts.kind,
                        "seed": ts.seed,
                        "intervention": kind,
                        **m,
                        "prompt_len": tr.prompt_len,
                        "positions": ts.positions,
                        "kl_curve": kl_curve,
                    }
                )
        if callback is not None:
            callback(i + 1, len(traces))
    why = (
        "no family has a set there: the response is too short for FAI or Delta, every "
        "eligible position is excluded (the answer span, special tokens and the last two "
        "tokens always are), or the family is empty (no dominated anchors)"
    )
    if traces and len(no_sets) == len(traces):  # an empty frame: an empty summary
        raise WorkbenchError(
            f"run_ablations found no target set to ablate in any of the {len(traces)} "
            f"trace(s) for families {families}: {why}",
            "pass longer traces, other families (e.g. families=['anchors', 'preplan']), "
            "or exclude_answer=False",
        )
    elif no_sets:
        listed = ", ".join(map(str, no_sets[:10])) + (", ..." if len(no_sets) > 10 else "")
        warn_user(
            f"{len(no_sets)} of {len(traces)} trace(s) gave no row (traces {listed}, by "
            f"index): {why}; summarize's n_traces counts only the others"
        )
    if skipped_families or skipped_controls:
        warn_user(
            f"resid-resample skipped {skipped_families} (trace, family) pair(s) whose set "
            "reaches beyond the next trace's response (set and controls both left out, so set and "
            f"control means come from the same traces) and {skipped_controls} further "
            "control(s) that reach beyond it; pass traces whose responses are at least as "
            "long as those of the traces they follow to resample every set"
        )
    if no_random:
        listed = ", ".join(f"traces[{i}] {fam}" for i, fam in no_random[:10])
        warn_user(
            f"{len(no_random)} (trace, family) pair(s) got no random control ({listed}"
            f"{', ...' if len(no_random) > 10 else ''}): the set is its family's whole "
            "eligible pool, so every draw would be the set itself; summarize's 'set - "
            "random' leaves those traces out (pass a smaller size, or longer traces)"
        )
    for what, where in nan_notes.items():
        warn_user(_NAN_NOTES[what].format(sorted(where)))
    return pd.DataFrame(rows, columns=_COLUMNS)


#: What `run_ablations` says, once per call, about metrics left NaN in some traces' rows
#: (`measure` warns per call; its own sets never end at the last two positions, so only
#: the answer span can be empty here).
_NAN_NOTES = {
    "answer": "logp_clean, logp_ablated and delta_logp are NaN in every row of traces {} "
    "(by index): their answer span is empty (the response ends at its answer marker), "
    "so summarize(frame, 'delta_logp') leaves them out; read the KL metrics for them",
    "after_last": "kl_after_last is NaN in some rows of traces {} (by index): an ablated "
    "set ends at one of the trace's last two positions",
    "continuation": "correct_ablated and delta_correct are NaN in some rows of traces {} "
    "(by index): an ablated set ends the trace, so no continuation follows it",
}


def _exclusions(trace: Trace, answer: Sequence[int], special: Sequence[int]) -> list[int]:
    """Positions no target set may use: the answer span, special tokens, the last two tokens.

    The last token has no later query, so ablating it changes nothing by construction; the
    one before it only changes row ``N - 1``, which predicts past the trace, so nothing
    after it is measured (a set ending there had a NaN ``kl_after_last``, and a knockout
    of it alone NaN for every KL). `measure` refuses an intervention that reaches no
    measured row.
    """
    sp = {int(i) for i in special}
    out = set(answer) | {len(trace) - 1, len(trace) - 2}
    out |= {p for p in trace.response if int(trace.ids[p]) in sp}
    return sorted(out)


def _check_frame(frame: Any, columns: Sequence[str], what: str) -> None:
    """Refuse anything but a `run_ablations` DataFrame with `columns`."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise WorkbenchError(
            f"{what} needs the DataFrame of run_ablations, got a {type(frame).__name__}",
            "pass df = wb.run_ablations(model, traces, ...)",
        )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise WorkbenchError(
            f"the frame has no column(s) {missing}: it is not a run_ablations result",
            "pass df = wb.run_ablations(model, traces, ...) (not its summary)",
        )


def per_position(frame) -> Any:
    """Long frame of the KL curves: one row per (ablation row, response row ``t``).

    Columns: the identifying columns of `frame` plus ``pos`` (absolute row ``t``),
    ``offset`` (``t - last``, rows after the last ablated position are ``> 0``) and
    ``kl``. Only rows where KL is defined (response rows) are kept.
    """
    import pandas as pd

    parts = []
    keys = ["trace", "target", "family", "kind", "seed", "intervention", "first", "last"]
    _check_frame(frame, [*keys, "kl_curve"], "per_position")
    for _, r in frame.iterrows():
        kl = np.asarray(r["kl_curve"], dtype=float)
        pos = np.flatnonzero(~np.isnan(kl))
        d = pd.DataFrame({"pos": pos, "kl": kl[pos]})
        for k in keys:
            d[k] = r[k]
        d["offset"] = d["pos"] - r["last"]
        parts.append(d)
    if not parts:
        return pd.DataFrame(columns=[*keys, "pos", "offset", "kl"])
    return pd.concat(parts, ignore_index=True)[[*keys, "pos", "offset", "kl"]]


#: Metrics whose per-trace value is a 0/1 outcome (seeded controls average to fractions).
BINARY = ("correct_ablated",)
#: The values a metric can take, where bounded: `summarize` clips an interval's bounds to
#: them (a difference of two such values to ``(lo - hi, hi - lo)``). A t-interval of a few
#: skewed KL means reached -0.06, and of 0/1 outcomes averaged over seeds 1.21; a clipped
#: interval covers every true value the unclipped one covered.
RANGES = {
    "kl_mean": (0.0, math.inf),
    "kl_after_last": (0.0, math.inf),
    "kl_max": (0.0, math.inf),
    "correct_ablated": (0.0, 1.0),
    "delta_correct": (-1.0, 1.0),
}


def _clip(metric: str, difference: bool, lo: float, hi: float) -> tuple[float, float]:
    """Interval bounds clipped to the values `metric` (or a difference of two) can take."""
    a, b = RANGES.get(metric, (-math.inf, math.inf))
    if difference:
        a, b = a - b, b - a
    # NaN bounds (no interval) stay NaN: min/max with NaN first returns it
    return (lo if math.isnan(lo) else max(lo, a)), (hi if math.isnan(hi) else min(hi, b))


def summarize(
    frame,
    metric: str = "kl_mean",
    *,
    interval: str = "t",
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
):
    """Mean effects with intervals over traces, and paired differences against controls.

    Args:
        frame: a `run_ablations` DataFrame.
        metric: a column from `METRICS` that holds values (``correct_ablated`` only has
            them where `run_ablations` ran continuations: task, problems and
            ``max_new_tokens > 0``; a frame without any is a `WorkbenchError`).
        interval: ``"t"`` (default): Student-t intervals over traces (`t_ci`), which hold
            their coverage at few traces for roughly symmetric values (82-90% for skewed
            ones such as KL below 20 traces, lognormal sigma 1; 69-76% at sigma 1.5); ``"bootstrap"``: percentile bootstrap
            intervals over traces (`bootstrap_ci`, resampling traces with replacement),
            too narrow below about 30 traces. Either way a row of a `BINARY` metric whose
            per-trace values are all 0 or 1 (``correct_ablated`` of the set) is a proportion and gets Wilson's
            score interval (`wilson_ci`; ``interval`` says ``"wilson"``), and values that
            do not vary get NaN bounds. Bounds are clipped to the values the metric (or a
            difference of two) can take (`RANGES`: a KL mean's lower bound at 0, a
            proportion's at 0 and 1, its differences at -1 and 1).
        n_boot: bootstrap resamples (``interval="bootstrap"`` only).
        ci: interval level, between 0 and 1.
        seed: bootstrap RNG seed (``interval="bootstrap"`` only).

    Returns:
        A DataFrame, one row per (intervention, family, comparison) with columns
        ``intervention, family, comparison, metric, estimate, lo, hi, n_traces, interval,
        ci``. ``comparison`` is ``"set"``, a control (``"random"``, ``"nearby"``,
        ``"low_fai"``) or ``"set - <control>"``; per trace the seeded controls are first
        averaged over seeds. With one trace the bounds are NaN (no interval). Rows whose
        `metric` is NaN (nothing to measure, e.g. ``delta_logp`` of a trace whose answer
        span is empty) are left out, with a warning that counts them and names their
        traces, so ``n_traces`` can differ between the rows of the table.

    Compare answers between a set and its controls with ``delta_correct``, not
    ``correct_ablated``: each continuation starts after its own last ablated position, so
    sets and controls start at different places, and the clean greedy answer alone can
    differ between them (on four countdown traces of the tiny reasoner, "set - random" of
    ``correct_ablated`` read -0.75, interval [-1, -0.29], of which -0.5 was the clean
    answers' own difference; ``delta_correct`` read -0.25, [-1.28, 0.78]). A later cut also
    leaves less to regenerate; the ``nearby`` control is the one matched for position.
    """
    import pandas as pd

    if metric not in METRICS:
        raise WorkbenchError(f"metric {metric!r} is not summarisable", f"use one of {METRICS}")
    if interval not in INTERVALS:
        raise WorkbenchError(f"interval={interval!r} is unknown", f"use one of {INTERVALS}")
    _validate.integer("n_boot", n_boot, minimum=1, example=2000)
    _validate.seed("seed", seed)
    ci = check_level(ci)  # even with no rows to summarise
    _check_frame(frame, ["intervention", "family", "trace", "kind", metric], "summarize")
    if len(frame) and not frame[metric].notna().any():
        how = (
            f"{metric} is measured by greedy continuations: run "
            "wb.run_ablations(..., task=get_task(...), problems=[...], max_new_tokens=32)"
            if metric in CONTINUATION_METRICS
            else "summarise another metric, e.g. metric='kl_mean'"
        )
        raise WorkbenchError(
            f"the frame has no values of {metric!r} (every row is NaN), so there is nothing "
            "to summarise",
            how,
        )
    missing = frame[metric].isna()
    if missing.any():  # pandas' means skip NaN: say so rather than average over fewer
        where = sorted({int(t) for t in frame.loc[missing, "trace"]})
        listed = ", ".join(map(str, where[:10])) + (", ..." if len(where) > 10 else "")
        warn_user(
            f"{int(missing.sum())} of {len(frame)} rows have no {metric} (NaN, in traces "
            f"{listed}): summarize leaves them out, so a comparison rests on the traces "
            "that have it (its n_traces) and a trace's seeded controls on the seeds that "
            "have it; run_ablations' warnings said why they are NaN"
        )
    rows = []
    for (iv, fam), g in frame.groupby(["intervention", "family"], sort=False):
        per = g.groupby(["trace", "kind"])[metric].mean().unstack("kind")
        cols: dict[str, Any] = {}
        for kind, label in (("target", "set"), *((c, c) for c in CONTROLS)):
            if kind in per:
                cols[label] = per[kind]
        for c in CONTROLS:
            if "set" in cols and c in cols:
                cols[f"set - {c}"] = cols["set"] - cols[c]
        for label, series in cols.items():
            values = series.to_numpy(dtype=float)
            how = interval
            outcomes = values[~np.isnan(values)]
            if (
                metric in BINARY
                and not label.startswith("set - ")
                and np.isin(outcomes, (0, 1)).all()
            ):
                how = "wilson"  # 0/1 outcomes: a proportion (the t-interval covered 14-67%)
                est, lo, hi = wilson_ci(values, ci=ci)
            elif interval == "t":
                est, lo, hi = t_ci(values, ci=ci)
            else:
                est, lo, hi = bootstrap_ci(values, n_boot=n_boot, ci=ci, seed=seed)
            lo, hi = _clip(metric, label.startswith("set - "), lo, hi)
            rows.append(
                {
                    "intervention": iv,
                    "family": fam,
                    "comparison": label,
                    "metric": metric,
                    "estimate": est,
                    "lo": lo,
                    "hi": hi,
                    "n_traces": int(series.notna().sum()),
                    "interval": how,
                    "ci": float(ci),
                }
            )
    return pd.DataFrame(rows, columns=[*SUMMARY_COLUMNS, "interval", "ci"])
