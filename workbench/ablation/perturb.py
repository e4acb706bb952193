"""The paper's perturbation test: force another token at a position, continue greedily.

At a response position ``p``: take the top-``k`` alternatives to the trace's token at
``p`` (the most likely tokens of the distribution that produced it, row ``p - 1``,
skipping the original token and the tokenizer's ``all_special_ids``), force each one at
``p``, continue greedily for ``max_new_tokens`` and compare the continuation with the
greedy continuation after the original token by the Jaccard overlap of their content
words.
A low overlap means the choice at ``p`` steered what followed. The paper (Sec. 5,
GSM8K, Qwen3-4B-Base) finds high-FAI positions more disruptive (Jaccard 0.534) than
low-FAI positions (0.631), in 87% of trials.

This project's choices (the paper gives no details):

- content words: lower-cased runs of letters/digits (``[a-z0-9]+``) not in `STOPWORDS`
  (a short English list); Jaccard of the two sets, 1.0 when both are empty;
- a trial pairs the ``i``-th highest-FAI position with the ``i``-th lowest-FAI position of
  the same trace (``n_pairs`` per trace), both from the FAI-eligible response positions
  that leave at least `min_after` tokens of the trace after them and whose token is not
  special; "high more disruptive" means its mean Jaccard is lower by more than `TIE`
  (closer means are a tie, counted as not more disruptive and in ``n_ties``);
- positions are picked with `workbench.attention.rhythm.top_q` (ties: lower position), the
  low ones from the positions not picked as high, so the two of a pair always differ (with
  tied FAI the same position could otherwise be both);
- FAI is the analysis's own (its ``fai_horizon`` and ``fai_min_rows``); with the default
  horizon (to the end) the last tokens' FAI rests on few rows, which the analysis's
  ``fai_min_rows`` (10 by default) already leaves undefined, and `min_after` with
  ``fai_min_rows=1``;
- the alternatives are deterministic (the top-``k`` of the logits, no sampling), and so is
  the whole test; a continuation stops after an end-of-sequence token or at the model's
  context (``n_ctx``), whichever comes first;
- a trace with fewer than two eligible positions gives no trial; a warning names it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any, no_type_check

import numpy as np
import torch

from .. import _validate
from .._progress import progress_bar
from ..attention.analysis import Analysis
from ..attention.engine import check_model
from ..attention.rhythm import top_q
from ..errors import WorkbenchError
from ..trace import Trace, check_trace, check_traces
from ..trace.tokens import UTF8_MAX_BYTES, check_trace_tokens, token_strings
from .effects import greedy_continue, logits_of
from .targets import analysis_list, check_pairs

__all__ = ["STOPWORDS", "TIE", "content_words", "jaccard", "perturb_position", "perturbation_test"]

# Mean Jaccards closer than this are a tie: the mean of [1, 1, 1/3] and of [1/3, 1, 1]
# differ in the last bit, and that rounding decided "more disruptive" and hid the tie.
TIE = 1e-9

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "so",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "we",
        "you",
        "i",
        "he",
        "she",
        "they",
        "them",
        "our",
        "your",
        "my",
        "his",
        "her",
        "their",
        "me",
        "us",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "not",
        "no",
        "yes",
        "can",
        "will",
        "would",
        "should",
        "could",
        "may",
        "might",
        "must",
        "shall",
        "let",
        "lets",
        "s",
        "t",
        "just",
        "also",
        "which",
        "what",
        "who",
        "whom",
        "how",
        "when",
        "where",
        "why",
        "than",
        "too",
        "very",
        "into",
        "onto",
        "over",
        "under",
        "up",
        "down",
        "out",
        "about",
        "all",
        "any",
        "each",
        "both",
        "some",
        "such",
        "only",
        "own",
        "same",
        "other",
        "more",
        "most",
    ]
)


def content_words(text: str) -> set[str]:
    """Lower-cased ``[a-z0-9]+`` words of `text` minus `STOPWORDS`."""
    if not isinstance(text, str):
        raise WorkbenchError(
            f"content_words needs text, got a {type(text).__name__}",
            "pass a str (decode token ids with model.tokenizer.decode first)",
        )
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS}


def jaccard(a: str, b: str) -> float:
    """Content-word Jaccard overlap of two texts (1.0 when both have no content words)."""
    x, y = content_words(a), content_words(b)
    if not x and not y:
        return 1.0
    return len(x & y) / len(x | y)


@torch.no_grad()
@no_type_check  # validates its arguments itself, with messages that name the fix
def perturb_position(
    model: Any,
    trace: Trace,
    position: int,
    *,
    top_k: int = 3,
    max_new_tokens: int = 32,
    logits: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Force each top-k alternative token at `position`; compare greedy continuations.

    Args:
        model: the bridge.
        trace: the trace.
        position: a response position (``prompt_len <= position < len(trace)``).
        top_k: number of alternative tokens: the most likely at `position` under the
            clean logits, other than the original and special tokens (ties: lower id).
        max_new_tokens: continuation length after the forced token.
        logits: the trace's clean ``[pos d_vocab]`` logits, exactly one row per token of
            the trace (computed when None).

    Returns:
        A dict: ``position``, ``token`` (original), ``original`` (greedy continuation
        text after the original token), ``alternatives`` (token strings),
        ``continuations`` (texts), ``jaccards`` (one per alternative) and ``jaccard``
        (their mean).
    """
    check_model(model)
    check_trace(trace)
    check_trace_tokens(model, trace)
    position = _validate.integer("position", position, example=trace.prompt_len)
    if not trace.prompt_len <= position < len(trace):
        raise WorkbenchError(
            f"position {position} is not a response position "
            f"({trace.prompt_len}..{len(trace) - 1})",
            "perturb a token of the response",
        )
    _validate.integer("top_k", top_k, minimum=1, example=3)
    # No new token leaves both continuations empty: every alternative would read as a tie.
    _validate.integer("max_new_tokens", max_new_tokens, minimum=1, example=32)
    tok = model.tokenizer
    special = set(getattr(tok, "all_special_ids", []) or [])
    d_vocab = model.cfg.d_vocab
    if logits is None:
        logits = logits_of(model, trace.ids[: position + 1])
    else:  # one row per token of the trace: fewer or more rows are another sequence's
        try:  # a NumPy array reached torch.argsort raw; a string torch.as_tensor
            logits = torch.as_tensor(logits)
        except (TypeError, ValueError, RuntimeError):
            raise WorkbenchError(
                f"logits must be an array of numbers, got a {type(logits).__name__}",
                "pass logits=logits_of(model, trace.ids), or leave it out",
            ) from None
        shape = tuple(logits.shape)
        if shape != (len(trace), d_vocab):
            raise WorkbenchError(
                f"logits of shape {shape} are not this trace's [pos d_vocab] = "
                f"{(len(trace), d_vocab)} logits",
                "pass logits=logits_of(model, trace.ids), or leave it out",
            )
    if torch.isnan(logits[position - 1]).any():  # NaN sorts anywhere: arbitrary alternatives
        raise WorkbenchError(
            f"the logits before position {position} (row {position - 1}) hold NaN, so they "
            "rank no alternative tokens",
            "pass logits=logits_of(model, trace.ids) of a model whose forward pass is finite, "
            "or leave it out",
        )
    orig = int(trace.ids[position])
    # Ties go to the lower token id: argsort is not stable, and a bf16 model's top logits
    # often tie, so which tokens were forced depended on the sort's implementation.
    order = torch.sort(logits[position - 1], descending=True, stable=True).indices.tolist()
    alts = [t for t in order[: top_k + len(special) + 1] if t != orig and t not in special]
    alts = alts[:top_k]
    prefix = trace.ids[:position]

    def cont(token: int) -> str:
        seq = torch.cat([prefix, torch.tensor([token])])
        new = greedy_continue(model, seq, max_new_tokens=max_new_tokens)
        return tok.decode(new, skip_special_tokens=True)

    original = cont(orig)
    conts = [cont(a) for a in alts]
    js = [jaccard(original, c) for c in conts]
    return {
        "position": position,
        "token": trace.tokens[position],
        "original": original,
        # Each as it would read after the prefix (a SentencePiece word keeps its space; the
        # context covers a character the prefix leaves incomplete).
        "alternatives": [
            token_strings(tok, [*prefix[-UTF8_MAX_BYTES:].tolist(), a])[-1] for a in alts
        ],
        "continuations": conts,
        "jaccards": js,
        "jaccard": float(np.mean(js)) if js else float("nan"),
    }


def _eligible_fai(analysis: Analysis, trace: Trace, min_after: int, special: set[int]):
    fai = analysis.fai.clone().double()
    n = len(trace)
    for p in range(n):
        if p == 0 or p + min_after >= n or int(trace.ids[p]) in special:
            fai[p] = float("nan")
    return fai


@no_type_check  # validates its arguments itself, with messages that name the fix
def perturbation_test(
    model: Any,
    traces: Sequence[Trace],
    analyses: Sequence[Analysis],
    *,
    n_pairs: int = 1,
    top_k: int = 3,
    max_new_tokens: int = 24,
    min_after: int = 4,
    progress: bool = True,
):
    """High-FAI against low-FAI positions, paired within each trace (see module docstring).

    Args:
        model: the bridge.
        traces / analyses: the traces and their analyses (same order).
        n_pairs: (high, low) pairs per trace.
        top_k: alternatives per position.
        max_new_tokens: continuation length.
        min_after: a position needs at least this many trace tokens after it.
        progress: a progress bar (shown in a notebook or a terminal, never in a log file).

    Returns:
        ``(trials, summary)``: a DataFrame with one row per trial (``trace``, ``pair``,
        ``high_pos``, ``low_pos``, ``high_fai``, ``low_fai``, ``high_depth``,
        ``low_depth``, ``jaccard_high``, ``jaccard_low``, ``high_more_disruptive``) and a
        dict with ``jaccard_high``, ``jaccard_low`` (means over trials),
        ``frac_high_more_disruptive`` (ties, means within `TIE`, count as not),
        ``n_trials``, ``depth_high`` and ``depth_low`` (the mean depth of the two kinds of
        position in their responses, ``(p - prompt_len) / response length``: the pairs
        are not matched on it, so a difference in disruption can partly be one of depth,
        an earlier token leaving more of the response to change), ``n_traces`` (those that gave a
        trial), ``n_ties``, and the per-trace difference ``disruption_diff`` = mean over
        traces of ``jaccard_low - jaccard_high`` with its t-interval (``disruption_lo``,
        ``disruption_hi``) and p-value (``disruption_p``, the exact sign-flip test over
        traces up to 16, the paired t-test above; ``disruption_test`` names it), next to
        the paper's numbers (``paper_*``), which are bare means. The sign-flip p is at
        least ``2 / 2**n`` (0.25 at 3 traces, 0.0625 at 5): below 6 traces it cannot reach
        0.05 even where the t-interval beside it excludes 0 (it did in 40% of simulated
        5-trace runs with a true effect of one standard deviation).
    """
    import pandas as pd

    usage = "pass e.g. perturbation_test(model, [trace], [analysis])"
    traces = check_traces(traces, caller="perturbation_test", usage=usage, allow_empty=True)
    analyses = analysis_list(analyses, "perturbation_test", usage)
    check_pairs(traces, analyses, model)
    if traces:  # None (or a model name) met a raw AttributeError further on
        check_model(model)
    for trace in traces:
        check_trace_tokens(model, trace)
    _validate.integer("n_pairs", n_pairs, minimum=1, example=1)
    _validate.integer("top_k", top_k, minimum=1, example=3)
    # 0 new tokens made every trial a tie (both continuations empty, Jaccard 1.0).
    _validate.integer("max_new_tokens", max_new_tokens, minimum=1, example=24)
    _validate.integer("min_after", min_after, minimum=0, example=4)
    progress = _validate.flag("progress", progress)
    special = set(getattr(model.tokenizer, "all_special_ids", []) or [])
    rows, skipped = [], []
    for i, (tr, an) in enumerate(
        progress_bar(list(zip(traces, analyses, strict=True)), desc="perturb", progress=progress)
    ):
        fai = _eligible_fai(an, tr, min_after, special)
        n_ok = int((~torch.isnan(fai)).sum())
        m = min(n_pairs, n_ok // 2)
        if m == 0:
            skipped.append(i)
            continue
        hi = sorted(top_q(fai, m / n_ok), key=lambda p: (-float(fai[p]), p))
        # The low positions come from the others: with tied FAI the same position could
        # otherwise be both the high and the low one of a pair (m <= n_ok // 2 leaves enough).
        rest = fai.clone()
        rest[hi] = float("nan")
        lo = sorted(top_q(rest, m / (n_ok - m), bottom=True), key=lambda p: (float(fai[p]), p))
        logits = logits_of(model, tr.ids)
        n_resp = len(tr) - tr.prompt_len
        for j, (ph, pl) in enumerate(zip(hi, lo, strict=True)):
            rh = perturb_position(
                model, tr, ph, top_k=top_k, max_new_tokens=max_new_tokens, logits=logits
            )
            rl = perturb_position(
                model, tr, pl, top_k=top_k, max_new_tokens=max_new_tokens, logits=logits
            )
            rows.append(
                {
                    "trace": i,
                    "pair": j,
                    "high_pos": ph,
                    "low_pos": pl,
                    "high_fai": float(fai[ph]),
                    "low_fai": float(fai[pl]),
                    "high_depth": (ph - tr.prompt_len) / n_resp,
                    "low_depth": (pl - tr.prompt_len) / n_resp,
                    "jaccard_high": rh["jaccard"],
                    "jaccard_low": rl["jaccard"],
                    "high_more_disruptive": bool(rh["jaccard"] < rl["jaccard"] - TIE),
                }
            )
    if skipped:  # they left the summary's means (all NaN when none was left) without a word
        warnings.warn(
            f"perturbation_test left out {len(skipped)} of {len(traces)} trace(s) "
            f"(traces {skipped[:10]}{' ...' if len(skipped) > 10 else ''}): each has fewer than "
            f"two response positions with a defined FAI, a non-special token and at least "
            f"min_after={min_after} tokens after it; pass longer traces, a smaller min_after, "
            "or analyses with a smaller fai_min_rows (analysis.with_params(fai_min_rows=1))",
            stacklevel=2,
        )
    trials = pd.DataFrame(
        rows,
        columns=[
            "trace",
            "pair",
            "high_pos",
            "low_pos",
            "high_fai",
            "low_fai",
            "high_depth",
            "low_depth",
            "jaccard_high",
            "jaccard_low",
            "high_more_disruptive",
        ],
    )
    summary = {
        "jaccard_high": float(trials["jaccard_high"].mean()) if len(trials) else float("nan"),
        "jaccard_low": float(trials["jaccard_low"].mean()) if len(trials) else float("nan"),
        "frac_high_more_disruptive": (
            float(trials["high_more_disruptive"].mean()) if len(trials) else float("nan")
        ),
        "n_trials": len(trials),
        "depth_high": float(trials["high_depth"].mean()) if len(trials) else float("nan"),
        "depth_low": float(trials["low_depth"].mean()) if len(trials) else float("nan"),
        **_uncertainty(trials),
        "paper_jaccard_high": 0.534,
        "paper_jaccard_low": 0.631,
        "paper_frac_high_more_disruptive": 0.87,
    }
    return trials, summary


def _uncertainty(trials: Any) -> dict[str, Any]:
    """What the trial means can and cannot show: ties (counted as "not more disruptive"),
    and the per-trace difference ``jaccard_low - jaccard_high`` (positive: the high-FAI
    token disrupts more) with a t-interval and the exact sign-flip p-value over traces
    (the trials of one trace share it, so the trace is the unit)."""
    from ..intervals import paired_p, t_ci

    per_trace = (trials["jaccard_low"] - trials["jaccard_high"]).groupby(trials["trace"]).mean()
    diff, lo, hi = t_ci(per_trace.tolist())
    p, test = paired_p(per_trace.tolist())
    return {
        "n_traces": int(per_trace.size),
        "n_ties": int(((trials["jaccard_high"] - trials["jaccard_low"]).abs() <= TIE).sum()),
        "disruption_diff": diff,
        "disruption_lo": lo,
        "disruption_hi": hi,
        "disruption_p": p,
        "disruption_test": f"per-trace mean of jaccard_low - jaccard_high, 95% t-interval, "
        f"paired {test} test over traces",
    }
