"""Compare credit strategies over several seeds: runs, a summary table and a chart.

    exp = wb.rl.run_experiment(["none", "random", "coupled"], seeds=[0, 1, 2],
                               out="runs/exp", max_steps=40)
    exp.summary()        # start, final and peak held-out accuracy per strategy, with intervals
    exp.chart()          # accuracy against step, one line per strategy, t-interval band
    exp.summary("eval_sampled_accuracy")   # the same for the sampled accuracy
    exp.paired()         # each strategy minus plain GRPO, seed by seed

Each (strategy, seed) is an ordinary run directory ``out/<strategy>/seed-<seed>``, so the
experiment is resumable: running the same call again skips finished runs and resumes
interrupted ones. Every run evaluates on the same held-out problems.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, no_type_check

from .. import _validate
from .._io import as_path
from ..errors import WorkbenchError, warn_user
from ..intervals import check_level, level_label
from .checkpoint import latest_checkpoint, read_metrics, run_lock
from .config import EVAL_METRICS, GRPOConfig
from .runs import check_config, read_config, read_json, resume, train

__all__ = [
    "METRICS",
    "Experiment",
    "MissingEvaluationWarning",
    "UnmatchedSeedsWarning",
    "run_experiment",
]

#: Evaluation metrics of a run (see `GRPORun.evaluate`): greedy and sampled accuracy.
METRICS = EVAL_METRICS


class MissingEvaluationWarning(UserWarning):
    """An evaluation of a run has no value of the metric a table or chart reads (NaN or
    null in its metrics.jsonl, or absent): the evaluation is left out, and named.

    A run's last evaluation without a value is refused by the tables instead (its final
    accuracy is unknown); one before it leaves the table or chart over the others: the
    peak over the evaluations that have a value, no start where it is the step-0 one, a
    point of the chart over fewer seeds (or none)."""


class UnmatchedSeedsWarning(UserWarning):
    """The strategies of an experiment were not all run on the same seeds (an interrupted
    `run_experiment`, or a batch over seeds not run again to its end): a seed fixes the
    training problems and the initial sampling, so means over different seeds do not
    compare as well as the table suggests, and `Experiment.paired` leaves the seeds
    without a partner out. The runs missing are named."""


def _accuracy_scale(values: Any) -> Any:
    """An axis that starts where the accuracies are (differences between strategies are
    small), and spans 0.1 around a constant one (a zero-width domain drew one tick)."""
    import altair as alt

    lo, hi = float(values.min()), float(values.max())
    if hi - lo > 1e-9 or math.isnan(lo):
        return alt.Scale(zero=False)
    return alt.Scale(domain=[max(0.0, lo - 0.05), min(1.0, hi + 0.05)])


def _clipped(interval: tuple[float, float, float], low: float) -> tuple[float, float, float]:
    """`interval` with its bounds clipped to ``[low, 1]``: an accuracy (``low=0``) or a
    difference of two (``low=-1``) cannot leave it (NaN bounds stay NaN)."""
    m, lo, hi = interval
    return m, min(max(lo, low), 1.0), max(min(hi, 1.0), low)


class Experiment:
    """The runs of a strategies x seeds comparison, read from its folder.

    Args:
        out: the experiment folder (``out/<strategy>/seed-<seed>`` run directories), or a
            folder of such folders (a batch of an RL notebook over seeds), whose runs are
            pooled: each strategy and seed once, every run with the same other settings.
        strategies, seeds: only these runs of the folder (default: all). `run_experiment`
            returns the runs it was asked for, so that runs of other seeds written into
            the same folder (by another notebook of a batch) are not counted in.
    """

    @no_type_check  # validates its arguments itself, with messages that name the fix
    def __init__(
        self,
        out: str | Path,
        *,
        strategies: Sequence[str] | None = None,
        seeds: Sequence[int] | None = None,
    ):
        self.out = as_path(out, "an experiment's out", "folder", "runs/exp")
        self.strategies = None if strategies is None else _names(strategies)
        self.seeds = None if seeds is None else _seeds(seeds)

    def __repr__(self) -> str:
        """The folder and what it holds, from the run folders' names alone (no file is
        read, nothing raises): a notebook cell ending in an experiment shows this."""
        try:
            runs = [(d.parent.name, d.name.removeprefix("seed-")) for d in self.run_dirs()]
        except OSError:
            runs = []
        if not runs:
            return f"Experiment({str(self.out)!r}, no runs yet)"
        strategies = sorted({s for s, _ in runs})
        seeds = sorted({k for _, k in runs}, key=lambda k: (len(k), k))
        return (
            f"Experiment({str(self.out)!r}, {len(runs)} runs: strategies {strategies}, "
            f"seeds [{', '.join(seeds)}])"
        )

    def run_dirs(self) -> list[Path]:
        """Every run directory under the experiment folder: ``<strategy>/seed-<k>``, or,
        where there is none, ``<name>/<strategy>/seed-<k>`` of every subfolder, as a batch
        of an RL notebook writes them (``wb.run_batch`` over seeds: one experiment folder
        per grid point, pooled here into one comparison).

        The folder is read anew at each call (and once per table, `_configs`): runs
        started after the `Experiment` was made are seen by its next table."""
        return self._runs(self._seed_folders())

    def _runs(self, folders: list[Path]) -> list[Path]:
        """The run directories among `folders` (`_seed_folders`): those holding a
        config.json, of the strategies and seeds asked for."""
        return self._chosen([d for d in folders if (d / "config.json").is_file()])

    def _seed_folders(self) -> list[Path]:
        """Every ``seed-*`` folder of the layout in use (`run_dirs`), a run or not: the
        layout whose folders hold a config.json, else the one with any folders at all."""
        layouts = [
            sorted(p for p in self.out.glob(f"{g}/seed-*") if p.is_dir()) for g in ("*", "*/*")
        ]
        for folders in layouts:
            if any((d / "config.json").is_file() for d in folders):
                return folders
        return next((folders for folders in layouts if folders), [])

    def _chosen(self, runs: list[Path]) -> list[Path]:
        """`runs` of the strategies and seeds asked for (all when none were)."""
        if self.strategies is not None:
            runs = [d for d in runs if d.parent.name in self.strategies]
        if self.seeds is not None:
            runs = [d for d in runs if d.name in {f"seed-{k}" for k in self.seeds}]
        return runs

    def frame(self):
        """Long table of evaluations (pandas): strategy, seed, step, the run's
        ``max_steps`` and each of `METRICS` (NaN where a run did not compute it, or logged
        no value: NaN or null in its metrics.jsonl; `summary`, `paired` and `chart` name
        the latter with a `MissingEvaluationWarning`).

        Empty while the runs have not evaluated yet.

        Raises:
            WorkbenchError: the experiment folder does not exist, or holds no run
                directory (a mistyped path read as an experiment with no results), or a
                ``seed-*`` folder in it holds no config.json (a run left out silently).
        """
        return self._frame(self._configs())

    def _frame(self, configs: list[tuple[Path, GRPOConfig]]):
        """`frame` of the runs `_configs` gave. Its ``attrs["blank"]`` holds, per metric,
        the evaluations of runs that compute it (``eval_keys`` of their config) but hold no
        value of it (NaN or null in metrics.jsonl), as ``"<strategy>/seed-<k> (step N)"``:
        the tables and charts that leave them out name them (`_warn_blank`)."""
        import pandas as pd

        rows = []
        blank: dict[str, list[str]] = {m: [] for m in METRICS}
        for d, cfg in configs:
            for r in read_metrics(d):
                if "eval_accuracy" in r:
                    values = {m: r.get(m) for m in METRICS}
                    for m in cfg.eval_keys:
                        v = values[m]
                        if v is None or (isinstance(v, float) and math.isnan(v)):
                            blank[m].append(f"{cfg.strategy}/seed-{cfg.seed} (step {r['step']})")
                    rows.append(
                        {
                            "strategy": cfg.strategy,
                            "seed": cfg.seed,
                            "step": r["step"],
                            "max_steps": cfg.max_steps,
                            **{m: math.nan if v is None else v for m, v in values.items()},
                        }
                    )
        frame = pd.DataFrame(rows, columns=["strategy", "seed", "step", "max_steps", *METRICS])
        frame.attrs["blank"] = blank
        return frame

    def _warn_blank(self, frame: Any, metric: str, what: str, effect: str) -> list[str]:
        """Name the evaluations of `frame` without a `metric` value (its ``attrs``, see
        `_frame`), left out of `what` (a table or the chart) with `effect`, with a
        `MissingEvaluationWarning`; return them. They were left out without a word: the
        peak of a run was taken over its other evaluations, and the chart put the seed
        missing at that step down to runs that stopped early."""
        blank = frame.attrs.get("blank", {}).get(metric, [])
        if blank:
            warn_user(
                f"{len(blank)} evaluation(s) in {self.out} have no {metric!r} value: "
                f"{', '.join(blank)} (NaN or null in their metrics.jsonl), so {what} leaves "
                f"them out ({effect}). Restore those metrics.jsonl files from a copy, or move the "
                "folders out of the experiment and run the same wb.rl.run_experiment call "
                "again (it trains them anew)",
                MissingEvaluationWarning,
            )
        return blank

    def _warn_unmatched(self, runs: Any, what: str, effect: str) -> None:
        """Name the (strategy, seed) runs missing from `runs` (pairs of the runs that have
        values: an iterable of ``(strategy, seed)``) for `what`, with `effect`, in an
        `UnmatchedSeedsWarning`, when the strategies were not all run on the same seeds:
        a strategy interrupted before its last seed showed as fewer seeds only in a
        count column."""
        runs = set(runs)
        strategies = sorted({s for s, _ in runs})
        seeds = sorted({k for _, k in runs})
        missing = [f"{s}/seed-{k}" for s in strategies for k in seeds if (s, k) not in runs]
        if len(strategies) > 1 and missing:
            warn_user(
                f"the strategies in {self.out} were not all run on the same seeds: "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing, so "
                f"{what} {effect}. Run the same wb.rl.run_experiment call again (it runs only "
                "what is missing; a batch over seeds: the same workbench batch command), "
                "or read the seeds every strategy has (Experiment(..., seeds=[...]))",
                UnmatchedSeedsWarning,
            )

    def _configs(self) -> list[tuple[Path, GRPOConfig]]:
        """Each run directory with its config, checked: the folder is the config's
        ``<strategy>/seed-<seed>`` (a copy such as ``coupled-old/seed-0`` was read as a second
        coupled run of seed 0), and every run has the settings of the others but its
        strategy, seed and length (a run of another model or task was compared as if it
        were the same experiment).

        The seed folders are read once, for the check and the runs alike: read twice, a
        run restarted in between (`run_experiment` removes the config.json of a run that
        never checkpointed) passed the check and was then left out without a word. Each
        call reads them anew, so a table made later sees the runs started since."""
        folders = self._seed_folders()
        self._check_runs(folders)
        fix = "read the experiment's own folder; move other runs out of it"
        out: list[tuple[Path, GRPOConfig]] = []
        for d in self._runs(folders):
            _, cfg = read_config(d, fix)
            if (d.parent.name, d.name) != (cfg.strategy, f"seed-{cfg.seed}"):
                raise WorkbenchError(
                    f"{d} holds a {cfg.strategy!r} run of seed {cfg.seed}, which belongs in "
                    f"{cfg.strategy}/seed-{cfg.seed}",
                    fix,
                )
            out.append((d, cfg))
        seen: dict[tuple[str, int], Path] = {}
        for d, cfg in out:  # pooled from several folders, a run could be counted twice
            if (cfg.strategy, cfg.seed) in seen:
                raise WorkbenchError(
                    f"{seen[cfg.strategy, cfg.seed]} and {d} are both {cfg.strategy!r} runs "
                    f"of seed {cfg.seed}, which would count as two seeds",
                    "give each folder other seeds (a batch over seeds: --grid "
                    "'seeds=[0],[1],[2]'), or read one folder at a time",
                )
            seen[cfg.strategy, cfg.seed] = d
        # Strategies or seeds asked for by name but absent were left out without a word
        # (a summary of three seeds under seeds=[0, 1, 2, 3]).
        for what, asked, have in (
            ("strategies", self.strategies, {c.strategy for _, c in out}),
            ("seeds", self.seeds, {c.seed for _, c in out}),
        ):
            absent = [x for x in asked or () if x not in have]
            if absent:
                raise WorkbenchError(
                    f"{self.out} holds no runs of the {what} {absent} asked for",
                    f"run them (wb.rl.run_experiment(..., out={str(self.out)!r})), or leave "
                    f"them out of {what}=",
                )
        if out:
            ref_dir, ref = out[0]
            for d, cfg in out[1:]:
                changed = _changed_settings(ref, cfg, "strategy", "seed", "max_steps")
                if changed:
                    raise WorkbenchError(
                        f"{d} was run with other settings ({', '.join(changed)}) than "
                        f"{ref_dir}, so their accuracies do not compare",
                        fix,
                    )
        return out

    def _check_runs(self, folders: list[Path]) -> None:
        """Refuse an experiment folder that is missing, holds no run, or holds a seed
        folder without config.json among the runs asked for; `folders` are its
        `_seed_folders`, read once by `_configs`."""
        fix = (
            "run the experiment first (wb.rl.run_experiment(strategies, seeds, out=...)), "
            "or pass the folder it wrote"
        )
        if not self.out.is_dir():
            what = "is not a folder" if self.out.exists() else "does not exist"
            raise WorkbenchError(f"no experiment in {self.out}: it {what}", fix)
        # A run folder without config.json was left out of every table without a word (a
        # seed fewer). `train` writes config.json (atomically) only once the model has
        # loaded, and run_experiment restarting a run that never checkpointed removes it
        # first: such a folder is a run being started, or one whose start failed.
        bare = [d for d in self._chosen(folders) if not (d / "config.json").is_file()]
        if bare:
            names = ", ".join(str(d.relative_to(self.out)) for d in bare)
            raise WorkbenchError(
                f"{len(bare)} run folder(s) in {self.out} hold no config.json, so they cannot "
                f"be read as runs: {names}",
                "if a run is being started there, wait until it has begun training; "
                "otherwise run the same wb.rl.run_experiment call again (it starts them "
                "anew), or move those folders out of the experiment",
            )
        # Judged before the strategies and seeds asked for are picked: a folder of runs
        # none of which was asked for is named by `_configs` ("holds no runs of the
        # strategies ['coupld']"), not as a folder without runs.
        if not any((d / "config.json").is_file() for d in folders):
            raise WorkbenchError(
                f"no experiment in {self.out}: it holds no run directory "
                "(<strategy>/seed-<seed>/config.json)",
                fix,
            )

    def _metric_frame(
        self, metric: str, configs: list[tuple[Path, GRPOConfig]] | None = None, frame: Any = None
    ):
        """The rows of `frame` (default: `frame` of `configs`) that hold a `metric` value."""
        if metric not in METRICS:
            raise WorkbenchError(f"unknown metric {metric!r}", f"use one of {list(METRICS)}")
        if frame is None:
            frame = self._frame(self._configs() if configs is None else configs)
        f = frame.dropna(subset=[metric])
        if f.empty:
            raise WorkbenchError(
                f"no run in {self.out} has {metric!r} evaluations",
                "run the experiment first (sampled accuracy needs eval_samples > 0)",
            )
        return f

    def _per_run(self, metric: str):
        """``start``, ``final`` and ``peak`` of `metric` for each (strategy, seed) run.

        Raises:
            WorkbenchError: a run has not reached its last step (its "final" would be an
                earlier evaluation), its last evaluation has no value, or the runs'
                lengths differ.

        Warns:
            MissingEvaluationWarning: an evaluation before a run's last has no value
                (it is left out of the peak, and of the start at step 0).
        """
        configs = self._configs()  # read once: the frame and the check below share them
        full = self._frame(configs)
        f = self._metric_frame(metric, frame=full).sort_values("step", kind="stable")
        have = set(zip(f["strategy"], f["seed"], strict=True))
        missing = [f"{c.strategy}/seed-{c.seed}" for _, c in configs
                   if (c.strategy, c.seed) not in have]  # fmt: skip
        if missing:  # a failed run left out without a word made the rest look like all seeds
            raise WorkbenchError(
                f"{len(missing)} run(s) in {self.out} have no {metric!r} evaluation: "
                f"{', '.join(missing)}",
                "run the same wb.rl.run_experiment call again (it restarts them), or move "
                "those folders out of the experiment",
            )
        per_run = f.groupby(["strategy", "seed"])
        last = per_run["step"].max()
        # A last evaluation without a value (NaN, null in metrics.jsonl) was dropped above,
        # and the run was then said not to have finished, at its evaluation before.
        evaluated = full.groupby(["strategy", "seed"])["step"].max()
        blank = [f"{s}/seed-{k} (step {evaluated[s, k]})" for s, k in last.index
                 if last[s, k] < evaluated[s, k]]  # fmt: skip
        if blank:
            raise WorkbenchError(
                f"{len(blank)} run(s) in {self.out} have no {metric!r} value at their last "
                f"evaluation: {', '.join(blank)} (NaN or null in their metrics.jsonl)",
                "restore those metrics.jsonl files from a copy, or move the folders out of "
                "the experiment and run the same wb.rl.run_experiment call again (it trains "
                "them anew)",
            )
        ends = per_run["max_steps"].first()
        short = [f"{s}/seed-{k} (step {last[s, k]} of {ends[s, k]})" for s, k in last.index
                 if last[s, k] < ends[s, k]]  # fmt: skip
        if short:
            raise WorkbenchError(
                f"{len(short)} run(s) in {self.out} have not finished: {', '.join(short)}; "
                "their last evaluation is not a final one",
                "run the same wb.rl.run_experiment call again (it resumes them), or look "
                "at the runs so far with exp.chart()",
            )
        if ends.nunique() > 1:
            raise WorkbenchError(
                f"the runs in {self.out} train for different numbers of steps "
                f"({sorted(set(ends.tolist()))}), so their final accuracies do not compare",
                "extend the shorter runs to the same max_steps (run_experiment with it)",
            )
        # Only evaluations before the last are left without a value here (a last one was
        # refused above): named, where the peak and start were taken without a word.
        self._warn_blank(
            full,
            metric,
            "this table",
            "a peak is over the run's other evaluations; a run without a step-0 value has no start",
        )
        out = per_run[metric].agg(final="last", peak="max")
        # The start is the evaluation before training (step 0): a run whose step-0
        # evaluation is missing has none, rather than a later one read as its start.
        out.insert(0, "start", per_run[metric].first().where(per_run["step"].min() == 0))
        return out

    def summary(self, metric: str = "eval_accuracy", *, ci: float = 0.95):
        """Per strategy: start, final and peak accuracy (mean over seeds, t-interval).

        Seeds are few (3-10), so the intervals are Student-t intervals over seeds
        (`intervals.t_ci`), not percentile bootstraps, which are too narrow at small n.
        They are clipped to [0, 1], the range of an accuracy (at 3 seeds of an accuracy
        near 0.1, 79% of raw t-intervals reached below 0); seeds that all score the same
        get NaN bounds (`t_ci`).

        Args:
            metric: ``"eval_accuracy"`` (greedy) or ``"eval_sampled_accuracy"``.
            ci: interval level.

        Returns:
            A DataFrame with columns ``strategy, n_seeds, start, final, final_lo, final_hi,
            peak, peak_lo, peak_hi, gain, interval`` (``start`` = the step-0 evaluation,
            ``gain`` = final - start, means over the seeds that have them; ``interval``
            names the interval, e.g. ``"95% t, 4 df"``, and says where none could be
            given).

        A t-interval assumes roughly normal values over seeds: for accuracies piled near
        0 or 1 (skewed) it covers less than its level, about 85-89% for a nominal 95% at
        2-10 seeds of a Beta(0.5, 4)-distributed accuracy (simulated).

        An evaluation without a value (NaN or null in metrics.jsonl) is refused at a run's
        end and named in a `MissingEvaluationWarning` before it (see `_per_run`).
        """
        import pandas as pd

        from ..intervals import t_ci

        ci = check_level(ci)
        per_run = self._per_run(metric)
        self._warn_unmatched(
            per_run.index, "this table", "averages each strategy over other seeds (n_seeds)"
        )
        rows = []
        for strategy, runs in per_run.groupby(level="strategy"):
            start, final, peak = runs["start"], runs["final"], runs["peak"]
            fm, flo, fhi = _clipped(t_ci(final.tolist(), ci=ci), 0.0)
            pm, plo, phi = _clipped(t_ci(peak.tolist(), ci=ci), 0.0)
            interval = f"{level_label(ci)} t, {len(final) - 1} df"
            if len(final) < 2:
                interval = "none (one seed)"
            else:  # a label beside NaN bounds said an interval was computed
                flat = [name for name, b in (("final", flo), ("peak", plo)) if math.isnan(b)]
                if flat:
                    interval += f"; none for {' and '.join(flat)} (every seed scores the same)"
            rows.append(
                {
                    "strategy": strategy,
                    "n_seeds": len(final),
                    "start": float(start.mean()),
                    "final": fm,
                    "final_lo": flo,
                    "final_hi": fhi,
                    "peak": pm,
                    "peak_lo": plo,
                    "peak_hi": phi,
                    "gain": float((final - start).mean()),
                    "interval": interval,
                }
            )
        return pd.DataFrame(rows).sort_values("final", ascending=False, ignore_index=True)

    @no_type_check  # validates its arguments itself, with messages that name the fix
    def paired(
        self,
        metric: str = "eval_accuracy",
        *,
        baseline: str = "none",
        at: str = "final",
        ci: float = 0.95,
    ):
        """Each strategy minus `baseline`, paired by seed (same seed: same training problems).

        The mean difference over seeds gets a Student-t interval and a two-sided p-value,
        from the exact sign-flip test up to 16 seeds and the paired t-test above
        (`workbench.intervals.paired_p`; the ``test`` column names it): the t-test's tail
        at two or three seeds rests on a normality they cannot show. The p-values are
        Holm-adjusted over the strategies that have one (``p_holm``),
        so "the difference is not 0" can be claimed for every strategy with ``p_holm <
        0.05`` at a family-wise error of 5%. The interval itself is not adjusted, and is
        clipped to [-1, 1]. ``p_min`` is the smallest p-value the test can give at that
        number of seeds (``2 / 2**n`` for the sign-flip test, ``n`` the seeds whose
        difference is not 0, which flipping leaves as they are: 0.25 at 3 seeds, 0.0625 at
        5), so no ``p_holm`` can go below the smallest ``p_min`` times the number of
        strategies tested: a grid whose ``p_min`` is that large cannot show a difference
        at 5%, whatever the effect (8 strategies need at least 9 seeds).

        Args:
            metric: ``"eval_accuracy"`` (greedy) or ``"eval_sampled_accuracy"``.
            baseline: the strategy subtracted (default plain GRPO).
            at: ``"final"`` (last evaluation) or ``"peak"`` (best evaluation) of each run.
            ci: interval level.

        Returns:
            A DataFrame with columns ``strategy, n_pairs, diff, diff_lo, diff_hi, p,
            p_holm, p_min, wins, test`` (``wins``: seeds where the strategy beat the
            baseline), largest ``diff`` first.
        """
        import pandas as pd

        from ..intervals import holm, paired_p, t_ci

        if at not in ("final", "peak"):
            raise WorkbenchError(f"at={at!r}", 'use at="final" or at="peak"')
        ci = check_level(ci)
        per_run = self._per_run(metric)
        self._warn_unmatched(
            per_run.index,
            "this table",
            "pairs each strategy with the baseline on the seeds both have (n_pairs)",
        )
        value = per_run[at].unstack("strategy")
        # A list or dict (unhashable) failed inside pandas with a raw TypeError.
        if not isinstance(baseline, str) or baseline not in value.columns:
            raise WorkbenchError(
                f"the experiment has no {baseline!r} runs",
                f"pass baseline= one of {sorted(value.columns)}",
            )
        others = list(value.columns.drop(baseline))
        if not others:
            raise WorkbenchError(
                f"the experiment holds only {baseline!r} runs, so nothing compares with them",
                "run other strategies too (run_experiment([..., 'coupled'], ...))",
            )
        rows = []
        for strategy in others:
            d = (value[strategy] - value[baseline]).dropna()
            m, lo, hi = _clipped(t_ci(d.tolist(), ci=ci), -1.0)
            p, test = paired_p(d.tolist())
            label = f"paired {test} test, {level_label(ci)} t-interval"
            if len(d) < 2:  # NaN p and bounds under a label that named both
                label = "no test or interval (fewer than two paired seeds)"
            elif math.isnan(lo):
                label = f"paired {test} test; no interval (every difference is {d.iloc[0]:+g})"
            rows.append(
                {
                    "strategy": strategy,
                    "n_pairs": len(d),
                    "diff": m,
                    "diff_lo": lo,
                    "diff_hi": hi,
                    "p": p,
                    # ties (a difference of 0) flip to themselves: only the others count
                    "p_min": (
                        min(1.0, 2.0 ** (1 - int((d != 0).sum()))) if test == "sign-flip" else 0.0
                    )
                    if len(d) >= 2
                    else math.nan,
                    "wins": int((d > 0).sum()),
                    "test": label,
                    "_test": test if len(d) >= 2 else None,
                }
            )
        adjusted = holm([r["p"] for r in rows])
        family = sum(not math.isnan(p) for p in adjusted)  # a row without a test is no member
        for row, p_holm in zip(rows, adjusted, strict=True):
            row["p_holm"] = p_holm
            if not math.isnan(p_holm):
                row["test"] += f", Holm over {family}"
        columns = [
            "strategy", "n_pairs", "diff", "diff_lo", "diff_hi", "p", "p_holm", "p_min", "wins"
        ]  # fmt: skip
        out = pd.DataFrame(rows, columns=[*columns, "test"])
        # The test's name, for the chart's title (the label may say there was none).
        out.attrs["tests"] = sorted({r["_test"] for r in rows if r["_test"]})
        return out.sort_values("diff", ascending=False, ignore_index=True)

    def chart(self, metric: str = "eval_accuracy", *, ci: float = 0.95):
        """Held-out accuracy against step, one line per strategy, with a t-interval band
        over seeds (the number of seeds is in the title).

        Args:
            metric: ``"eval_accuracy"`` (greedy) or ``"eval_sampled_accuracy"``.
            ci: interval level of the band (over seeds).

        Evaluations without a value (NaN or null in metrics.jsonl) are left out, named in
        a `MissingEvaluationWarning` and counted in the subtitle.
        """
        import altair as alt

        from ..intervals import t_ci

        full = self._frame(self._configs())
        f = self._metric_frame(metric, frame=full)
        blank = self._warn_blank(
            full, metric, "the chart", "a point is the mean of the other seeds at its step"
        )
        self._warn_unmatched(
            zip(f["strategy"], f["seed"], strict=True),
            "the chart",
            "draws each strategy's mean over other seeds",
        )
        rows = []
        for (strategy, step), g in f.groupby(["strategy", "step"]):
            m, lo, hi = _clipped(t_ci(g[metric].tolist(), ci=ci), 0.0)
            rows.append(
                {"strategy": strategy, "step": step, "mean": m, "lo": lo, "hi": hi,
                 "seeds": len(g)}
            )  # fmt: skip
        import pandas as pd

        data = pd.DataFrame(rows)
        seeds = f.groupby("strategy")["seed"].nunique()
        # Runs that stopped early (or an evaluation missing) leave later steps to fewer
        # seeds: a jump there was the seed mix changing, under a title of every seed. An
        # evaluation without a value was put down to a run that stopped early (or, missing
        # from every seed, left its step out of the line without a word): each is named.
        fewer = bool((data["seeds"] < data["strategy"].map(seeds)).any())
        ends = full.groupby(["strategy", "seed"])["step"].max()
        early = bool((ends < ends.groupby(level="strategy").transform("max")).any())
        n = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
        base = alt.Chart(data).encode(
            x=alt.X("step:Q", title="step"), color=alt.Color("strategy:N", title="strategy")
        )
        # The legend comes from the lines: the band's faint swatches hid the colours.
        band = base.mark_area(opacity=0.2).encode(
            y="lo:Q", y2="hi:Q", color=alt.Color("strategy:N", legend=None)
        )
        # One seed has no interval (`t_ci` gives NaN bounds), so no band.
        subtitle = f"mean over {n} seeds, band: {level_label(ci)} t-interval"
        if seeds.max() == 1:
            subtitle = "one seed: no interval (run several seeds for a band)"
        elif seeds.min() == 1:
            subtitle += " (none where a strategy has one seed)"
        if fewer:
            subtitle += "; some steps average fewer seeds"
            subtitle += " (runs that stopped early): see seeds" if early else ": see seeds"
        if blank:
            subtitle += f"; evaluations without a value left out: {len(blank)}"
        line = base.mark_line(point=True).encode(
            y=alt.Y(
                "mean:Q",
                title="held-out accuracy" + (" (sampled)" if "sampled" in metric else " (greedy)"),
                scale=_accuracy_scale(data["mean"]),
            ),
            tooltip=["strategy:N", "step:Q", alt.Tooltip("mean:Q", format=".3f"), "seeds:Q"],
        )
        return (band + line).properties(
            title=alt.TitleParams(
                "GRPO with rhythm credit: accuracy by strategy",
                subtitle=subtitle,
            ),
            width=420,
            height=260,
        )

    @no_type_check  # validates its arguments itself, with messages that name the fix
    def paired_chart(
        self,
        metric: str = "eval_accuracy",
        *,
        baseline: str = "none",
        at: str = "final",
        ci: float = 0.95,
    ):
        """Each strategy minus `baseline` (the `paired` table) as a forest plot: the mean
        paired difference with its t-interval, a rule at 0, and the Holm-adjusted p-value
        of each row as its label (the number of seeds and the test are in the title).

        Args:
            metric, baseline, at, ci: as in `paired`.
        """
        import altair as alt

        paired = self.paired(metric, baseline=baseline, at=at, ci=ci)
        tests = paired.attrs["tests"] or ["no"]
        family = int(paired["p_holm"].notna().sum())
        table = paired.drop(columns="test")
        # A row without an interval put its label at a NaN position: dropped, and its
        # "no test" note with it; a row without a pair has no diff either, and its label
        # sits at 0 (the strategy vanished from the plot).
        table["label_x"] = table["diff_hi"].fillna(table["diff"]).fillna(0.0)
        # One pair has no test (`paired_p` gives NaN) and no interval.
        table["label"] = [
            "fewer than two seeds: no test" if math.isnan(p) else f"p_Holm {p:.2f}"
            for p in table["p_holm"]
        ]
        n = table["n_pairs"]
        seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
        kind = "sampled" if "sampled" in metric else "greedy"
        y = alt.Y("strategy:N", sort=list(table["strategy"]), title=None)
        base = alt.Chart(table).encode(y=y)
        bars = base.mark_rule(strokeWidth=2).encode(
            x=alt.X("diff_lo:Q", title=f"{at} accuracy ({kind}) minus {baseline}"), x2="diff_hi:Q"
        )
        points = base.mark_point(filled=True, size=60).encode(
            x="diff:Q",
            tooltip=[
                "strategy:N",
                alt.Tooltip("diff:Q", format="+.3f"),
                alt.Tooltip("diff_lo:Q", format="+.3f"),
                alt.Tooltip("diff_hi:Q", format="+.3f"),
                alt.Tooltip("p:Q", format=".3f"),
                alt.Tooltip("p_holm:Q", format=".3f"),
                "wins:Q",
            ],
        )
        labels = base.mark_text(align="left", dx=6, dy=-8, fontSize=10).encode(
            x="label_x:Q", text="label:N"
        )
        zero = alt.Chart().mark_rule(strokeDash=[4, 3], color="gray").encode(x=alt.datum(0))
        return alt.layer(zero, bars, points, labels, data=table).properties(
            title=alt.TitleParams(
                f"Credit strategies against {baseline}, paired by seed",
                subtitle=f"{seeds} seeds; mean difference with {level_label(ci)} t-interval; "
                f"paired {' / '.join(tests)}, Holm over {family}",
            ),
            width=420,
            height=24 * max(len(table), 2),
        )


@no_type_check  # validates its arguments itself, with messages that name the fix
def run_experiment(
    strategies: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    *,
    config: GRPOConfig | None = None,
    progress: bool = True,
    **overrides: Any,
) -> Experiment:
    """Run every strategy with every seed (skipping finished runs, resuming interrupted ones).

    Calling it again with a larger ``max_steps`` extends every run to that length from its
    last checkpoint, the final evaluation moving to the new end. Runs started with other
    settings are refused rather than mixed in. Ctrl-C (a notebook's Interrupt) checkpoints
    the run in progress and stops the experiment (KeyboardInterrupt); calling it again
    continues where it stopped.

    Args:
        strategies: credit strategies to compare (e.g. ``["none", "random", "coupled"]``).
        seeds: run seeds; each seed gives every strategy the same training problems order.
        out: experiment folder.
        config: base settings (default `GRPOConfig()`); `overrides` change fields.
        progress: progress bars.

    Returns:
        The `Experiment` of these runs (see `Experiment.summary` and `Experiment.chart`);
        other runs in `out` are left out of it.
    """
    progress = _validate.flag("progress", progress)  # "no" is truthy: bars would show
    check_config("run_experiment", config)
    base = (config or GRPOConfig()).replace(**overrides)
    _a_list("strategies", strategies)
    _a_list("seeds", seeds)
    if not strategies or not seeds:
        raise WorkbenchError("an experiment needs at least one strategy and one seed", "pass both")
    if len(set(map(repr, strategies))) < len(strategies) or len(set(map(repr, seeds))) < len(seeds):
        raise WorkbenchError(
            f"strategies {list(strategies)} or seeds {list(seeds)} repeat an entry",
            "list each strategy and each seed once",
        )
    out = as_path(out, "run_experiment's out", "folder", "runs/exp")
    # Every run's settings are checked before the first trains: a bad strategy or seed
    # was refused only after the runs before it had trained.
    grid = [base.replace(strategy=s, seed=k) for s in strategies for k in seeds]
    for cfg in grid:
        run_dir = out / cfg.strategy / f"seed-{cfg.seed}"
        status_file = run_dir / "status.json"
        # Only a checkpointed run has something to keep (the last step is always saved,
        # so a finished run has one); anything else is restarted, whatever its settings.
        # A checkpoint without status.json (deleted by hand) is one too: the run was
        # restarted, its config and metrics deleted, and its checkpoints then in the way.
        if latest_checkpoint(run_dir) is not None:
            _check_same_run(run_dir, cfg)
            done = (
                read_json(status_file, "a run status", "start the run again")
                if status_file.is_file()
                else {}
            )
            if done.get("status") == "finished" and done.get("step") == cfg.max_steps:
                continue
            run = resume(run_dir, max_steps=cfg.max_steps, progress=progress)
        elif (run_dir / "config.json").exists():
            # Started but never checkpointed: start it again from scratch, unless another
            # process is training it (its lock refuses this one before anything is removed).
            with run_lock(run_dir):
                for stale in ("config.json", "metrics.jsonl", "status.json"):
                    (run_dir / stale).unlink(missing_ok=True)
                run = train(cfg, out=run_dir, progress=progress)
        else:
            run = train(cfg, out=run_dir, progress=progress)
        if run.status == "interrupted":
            # Ctrl-C stops the experiment, not one run: `train` catches it to checkpoint
            # the run, and the loop went on to train every other strategy and seed (a
            # notebook's Interrupt had to be pressed once per run).
            print(f"experiment stopped; run_experiment(..., out={str(out)!r}) again continues it")
            raise KeyboardInterrupt
    return Experiment(out, strategies=[c.strategy for c in grid], seeds=[c.seed for c in grid])


#: What `_a_list` names as an example of each list.
_EXAMPLES = {"strategies": '["none", "coupled"]', "seeds": "[0, 1, 2]"}


def _a_list(name: str, value: Any, of: str = "") -> None:
    """Refuse `value` (the argument `name`) unless it is a list (a string is not)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise WorkbenchError(
            f"{name} must be a list{of}, got {value!r}"[:200],
            f"pass e.g. {name}={_EXAMPLES[name]}",
        )


def _names(strategies: Any) -> tuple[str, ...]:
    _a_list("strategies", strategies, " of names")
    if not all(isinstance(s, str) for s in strategies):
        raise WorkbenchError(
            f"strategies must be names (strings), got {list(strategies)!r}"[:200],
            f"pass e.g. strategies={_EXAMPLES['strategies']}",
        )
    return tuple(strategies)


def _seeds(seeds: Any) -> tuple[int, ...]:
    _a_list("seeds", seeds)
    return tuple(_validate.seed("seed", k) for k in seeds)


def _check_same_run(run_dir: Path, cfg: GRPOConfig) -> None:
    """Refuse to mix settings in one experiment: the run in `run_dir` must have been started
    with `cfg`, except for a length no longer than ``cfg.max_steps`` (a longer call extends
    it, see `resume`)."""
    saved = GRPOConfig.from_dict(
        read_json(
            run_dir / "config.json",
            "a readable JSON config",
            "restore it, or use another out folder",
        )
    )
    if saved.max_steps > cfg.max_steps:
        raise WorkbenchError(
            f"{run_dir} holds a {saved.max_steps}-step run, longer than the "
            f"max_steps={cfg.max_steps} asked for",
            f"ask for max_steps={saved.max_steps}, or use another out folder",
        )
    changed = _changed_settings(cfg, saved, "max_steps")
    if changed:
        raise WorkbenchError(
            f"{run_dir} was run with other settings ({', '.join(changed)}) than this experiment's",
            "use the settings it was started with (its config.json), or another out folder",
        )


def _changed_settings(ours: GRPOConfig, theirs: GRPOConfig, *aligned: str) -> list[str]:
    """The settings (`GRPOConfig.to_dict` keys) in which `theirs` differs from `ours`,
    leaving out the fields named in `aligned` (a run's strategy, seed or length)."""
    mine = ours.to_dict()
    other = theirs.replace(**{name: getattr(ours, name) for name in aligned}).to_dict()
    return sorted(k for k in mine if mine[k] != other[k])
