"""Effects of an intervention on one trace: KL of later predictions, answer log-prob, answer.

Definitions (this project's, documented so numbers are comparable):

- Row ``t`` of the logits predicts token ``t + 1``. The *response rows* are
  ``prompt_len - 1 .. N - 2`` (the rows that predict response tokens).
- ``kl[t] = KL(P_clean(. | t) || P_ablated(. | t))`` in nats, float64, on response rows;
  NaN elsewhere. Rows before the first ablated position are unchanged by construction.
- ``kl_mean``: mean of ``kl`` over the response rows the intervention can reach: for a
  residual ablation from the *first* ablated position on (its own row, which predicts the
  next token from the ablated vector, is usually the most affected); for a knockout
  strictly after it (a knocked-out position still attends to itself and earlier keys, so
  its own row is unchanged). ``kl_max``: the largest of those rows. ``kl_after_last``:
  the mean over rows strictly after the *last* ablated position, for both (purely
  downstream). Row ``N - 2`` is the last row measured (row ``N - 1`` predicts past the
  trace), so an intervention that reaches no row (a knockout of positions from ``N - 2``
  on only, a residual ablation of position ``N - 1`` only) is refused by `measure`: every
  KL would be NaN and ``delta_logp`` 0 by construction. ``kl_after_last`` is NaN, with a
  warning, when the last ablated position is ``N - 2`` or ``N - 1`` (nothing after it is
  measured); `run_ablations` keeps both out of every set.
- Answer span (`answer_span`): the tokens after the last ``Answer:`` of the response (the
  tasks' format), without surrounding whitespace-only and special tokens and ending at the
  answer line's newline; without an ``Answer:`` line, the last ``n_last`` (default 5)
  response tokens that are not special tokens. ``logp_*`` is the summed log-probability of
  the span's tokens under teacher forcing; ``delta_logp = logp_ablated - logp_clean``.
  An empty span (a response that ends at its ``Answer:`` marker) leaves the three NaN,
  with a warning.
- Greedy continuation (`greedy_continue`, one full hooked pass per token): from the cut
  ``last ablated position + 1`` (the original tokens up to and including the last
  ablated one are kept), ``max_new_tokens`` greedy tokens with and without the
  intervention; the response text (original tokens up to the cut + the continuation) is
  scored by the task. The clean continuation is greedy too, so it may differ from a
  sampled trace. ``delta_correct = correct_ablated - correct_clean`` compares each
  ablated answer with the clean one from its own cut: sets and controls end at different
  positions, and the clean greedy answer from an early cut can be wrong where a later
  cut's is right, so ``correct_ablated`` alone, compared across them, measured where the
  continuation started as much as the ablation. Where nothing of the trace follows the
  cut (the last ablated position is its last token, or an end-of-sequence token of the
  response) nothing is regenerated, so ``correct_ablated`` and ``delta_correct`` are NaN,
  with a warning, not ``correct_clean`` and 0 by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, no_type_check

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .. import _validate
from ..attention.engine import check_pattern_memory
from ..attention.run import check_analysable
from ..errors import WorkbenchError, warn_user
from ..models import eval_mode, live_hooks, model_device, sampler
from ..trace import Trace, check_trace, eos_token_ids, sample_completions
from .interventions import Intervention, ResidAblation, _ids, fwd_hooks

__all__ = [
    "answer_logprob",
    "answer_span",
    "greedy_continue",
    "kl_per_position",
    "logits_of",
    "measure",
]


@torch.no_grad()
def logits_of(
    model: Any, ids: Trace | Tensor, interventions: Sequence[Intervention] = ()
) -> Float[Tensor, "pos d_vocab"]:
    """``[pos d_vocab]`` float32 logits of one sequence (a `wb.Trace` or 1-D token ids),
    under the interventions (if any)."""
    ids = _ids(model, ids, "the sequence").to(model_device(model))
    hooks = fwd_hooks(model, *_intervention_list(interventions))
    check_pattern_memory(
        model,
        1,
        len(ids[0]),
        logits=True,
        what=f"a forward pass of {len(ids[0]):,} tokens through the bridge (eager attention)",
        fix="{shorter}",
    )
    with eval_mode(model):  # no dropout: an effect is a difference of two of these passes
        logits = model.run_with_hooks(ids, fwd_hooks=hooks) if hooks else model(ids)
    return logits[0].float().cpu()


def _intervention_list(interventions: Any) -> tuple[Intervention, ...]:
    """The interventions as a tuple; one bare intervention is refused (it is no list)."""
    if isinstance(interventions, Intervention) or not isinstance(interventions, Sequence):
        raise WorkbenchError(
            f"interventions must be a list, got {interventions!r}",
            "pass e.g. interventions=[Knockout([12, 30])]",
        )
    return tuple(interventions)


@no_type_check  # checks its shapes itself, with messages that name the fix
def kl_per_position(
    clean: Float[Tensor, "pos d_vocab"],
    ablated: Float[Tensor, "pos d_vocab"],
    prompt_len: int,
    chunk: int = 128,
) -> Float[Tensor, " pos"]:
    """``[pos]`` KL(clean || ablated) in nats on response rows, NaN elsewhere (float64).

    A token with ``-inf`` clean logit (probability 0) adds nothing (``0 log 0 = 0``); one
    with probability under the clean logits and ``-inf`` under the ablated ones makes the
    row's KL infinite. NaN logits in a response row are a `WorkbenchError` (the KL would
    read NaN).
    """
    fix = "pass logits_of(model, ids) and logits_of(model, ids, interventions) of one trace"
    try:  # a string or a ragged list was a raw TypeError / ValueError from torch
        clean, ablated = torch.as_tensor(clean), torch.as_tensor(ablated)
    except (TypeError, ValueError, RuntimeError):
        raise WorkbenchError("clean and ablated logits must be arrays of numbers", fix) from None
    if clean.ndim != 2 or clean.shape != ablated.shape:
        raise WorkbenchError(
            f"clean and ablated logits must both be [pos d_vocab] of one shape, got "
            f"{tuple(clean.shape)} and {tuple(ablated.shape)}",
            fix,
        )
    if clean.dtype == torch.bool or ablated.dtype == torch.bool:
        raise WorkbenchError("clean and ablated logits must be numbers, got booleans", fix)
    n = clean.shape[0]
    prompt_len = _validate.integer("prompt_len", prompt_len, minimum=0, example=n // 2)
    if prompt_len > n:
        raise WorkbenchError(
            f"prompt_len={prompt_len} is beyond the {n} rows of the logits",
            "pass the trace's prompt_len",
        )
    chunk = _validate.integer("chunk", chunk, minimum=1, example=128)
    out = torch.full((n,), float("nan"), dtype=torch.float64)
    lo = max(prompt_len - 1, 0)
    for name, values in (("clean", clean), ("ablated", ablated)):
        nan = torch.isnan(values[lo : n - 1]).any(-1) if values.is_floating_point() else None
        if nan is not None and bool(nan.any()):
            raise WorkbenchError(
                f"the {name} logits hold NaN in {int(nan.sum())} response row(s) (first: row "
                f"{lo + int(nan.nonzero()[0])}), so their KL would read NaN",
                "pass the logits of finite forward passes (logits_of(model, ids, ...)); a "
                "residual reference or model that overflows gives NaN there",
            )
    for a in range(lo, n - 1, chunk):
        b = min(a + chunk, n - 1)
        lp = torch.log_softmax(clean[a:b].double(), -1)
        lq = torch.log_softmax(ablated[a:b].double(), -1)
        # 0 log 0 = 0: a token both logits rule out (-inf) was NaN (0 * (-inf + inf))
        terms = torch.where(lp == float("-inf"), 0.0, lp.exp() * (lp - lq))
        out[a:b] = terms.sum(-1).clamp_min(0.0)
    return out


def answer_span(
    trace: Trace,
    *,
    prefix: str = "Answer:",
    n_last: int = 5,
    special_ids: Sequence[int] = (),
) -> tuple[list[int], str]:
    """Positions of the final answer's tokens, and how they were found.

    Args:
        trace: the trace.
        prefix: the answer marker (the tasks' ``Answer:``).
        n_last: fallback count when the response has no marker.
        special_ids: token ids never part of the answer (eos and the like).

    Returns:
        ``(positions, kind)``, kind ``"answer"`` (after the marker) or ``"last"``
        (fallback). Positions may be empty when the marker ends the response.
    """
    check_trace(trace)
    if not isinstance(prefix, str) or not prefix:
        raise WorkbenchError(
            f"prefix must be a non-empty string, got {prefix!r}", 'pass e.g. prefix="Answer:"'
        )
    n_last = _validate.integer("n_last", n_last, minimum=1, example=5)
    special = _index_list(special_ids, "special_ids")
    pl = trace.prompt_len
    toks = trace.response_tokens
    ids = [int(i) for i in trace.response_ids]
    starts = np.cumsum([0] + [len(s) for s in toks])
    joined = "".join(toks)
    at = joined.rfind(prefix)
    if at >= 0:
        end = at + len(prefix)
        span: list[int] = []
        for j, s in enumerate(toks):
            if starts[j] + len(s) <= end or ids[j] in special:
                continue
            if not s.strip():  # whitespace-only
                if span and "\n" in s:
                    break
                continue
            span.append(pl + j)
            if "\n" in s:
                break
        return span, "answer"
    keep = [pl + j for j, i in enumerate(ids) if i not in special]
    return keep[-n_last:], "last"


def _index_list(values: Any, name: str) -> list[int]:
    """`values` as a list of ints (a fraction or a bool is no index)."""
    if isinstance(values, Tensor | np.ndarray):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise WorkbenchError(
            f"{name} must be a list of integers, got {values!r}", f"pass {name} as a list of ints"
        )
    out = []
    for v in values:
        if not _validate.is_index(v):
            raise WorkbenchError(f"{name} holds {v!r}, which is not an integer", "pass ints")
        out.append(_validate.as_index(v))
    return out


@no_type_check  # validates its arguments itself (logits may be any array of numbers)
def answer_logprob(logits: Float[Tensor, "pos d_vocab"], ids: Tensor, span: Sequence[int]) -> float:
    """Summed log-probability of the tokens at `span` (row ``p - 1`` predicts ``p``).

    Raises:
        WorkbenchError: the logits are not an array of float numbers, or hold NaN in a
            row the span reads; the ids are not one sequence of integer ids of the logits'
            length and vocabulary; a span position is not in ``1 .. len(ids) - 1``
            (position 0 has no row that predicts it) or is listed twice (its log-probability
            would count twice).
    """
    span = _index_list(span, "span")
    fix = "pass the [pos d_vocab] logits of these ids (logits_of(model, ids))"
    try:  # a NumPy array or a list reached `.double()` / `.ndim` as a raw AttributeError
        logits = torch.as_tensor(logits)
        ids = torch.as_tensor(ids)
    except (TypeError, ValueError, RuntimeError):
        raise WorkbenchError("logits and ids must be arrays of numbers", fix) from None
    if not logits.is_floating_point():
        raise WorkbenchError(f"logits must be float numbers, got dtype {logits.dtype}", fix)
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise WorkbenchError(
            f"ids must be integer token ids, got dtype {ids.dtype}", "pass trace.ids"
        )
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1:  # a batch was read as one long sequence
        raise WorkbenchError(
            f"ids must be one sequence of token ids, got shape {tuple(ids.shape)}",
            "pass one sequence at a time (trace.ids)",
        )
    if logits.ndim != 2 or logits.shape[0] != len(ids):
        raise WorkbenchError(
            f"logits of shape {tuple(logits.shape)} are not [pos d_vocab] of the {len(ids)} ids",
            fix,
        )
    bad = [p for p in span if not 1 <= p < len(ids)]
    if bad:
        raise WorkbenchError(
            f"span positions {bad} are not in 1..{len(ids) - 1} (position 0 has no "
            "prediction; the ids end before the others)",
            "pass positions of this sequence's tokens, e.g. answer_span(trace)[0]",
        )
    twice = sorted({p for p in span if span.count(p) > 1})
    if twice:
        raise WorkbenchError(
            f"span lists position(s) {twice} more than once, so their log-probability "
            "would be counted twice",
            "pass each position once, e.g. answer_span(trace)[0]",
        )
    if not span:
        return float("nan")
    rows = torch.tensor([p - 1 for p in span])
    tokens = ids[span].long()
    if bool(((tokens < 0) | (tokens >= logits.shape[1])).any()):
        raise WorkbenchError(
            f"the span's token ids {tokens.tolist()} are not all in the logits' vocabulary "
            f"(0..{logits.shape[1] - 1})",
            fix,
        )
    if bool(torch.isnan(logits[rows]).any()):
        raise WorkbenchError(
            "the logits hold NaN in a row that predicts the span, so its log-probability "
            "would read NaN",
            "pass logits of a finite forward pass (logits_of(model, ids))",
        )
    lp = torch.log_softmax(logits[rows].double(), -1)
    return float(lp[torch.arange(len(span)), tokens].sum())


def _eos(model: Any) -> set[int]:
    """End-of-sequence ids: the tokenizer's and the generation config's."""
    return set(eos_token_ids(model.tokenizer, sampler(model)))


@torch.no_grad()
def greedy_continue(
    model: Any,
    prefix: Trace | Tensor,
    *,
    interventions: Sequence[Intervention] = (),
    max_new_tokens: int = 32,
    stop_at_eos: bool = True,
    hooked: bool | None = None,
) -> Tensor:
    """Greedy tokens after `prefix` (1-D ids, or a `wb.Trace`), with the interventions' hooks
    live.

    Two paths, each exact for what it computes:

    - unhooked (no interventions, and no hooks live on the bridge): the plain Hugging Face model behind the bridge samples
      greedily with its KV cache (`workbench.trace.sample_completions`), as `wb.generate`
      does;
    - hooked (interventions, hooks live on the bridge such as inside `intervene`, or
      ``hooked=True``): one full forward pass of the bridge per
      new token, with the hooks and no KV cache, so every hook sees the whole sequence
      from position 0. Exact on every architecture and under any transformers release,
      at the cost of one full pass per token (O(new tokens x length)).

    Use ``hooked=True`` for a clean continuation that is compared with hooked ones, so
    both come from the same computation. ``hooked=False`` with interventions is refused:
    the plain model would decode without them.

    Returns:
        ``[new_pos]`` int64 ids (at most `max_new_tokens`); stops after an
        end-of-sequence token (kept) when `stop_at_eos`.
    """
    _validate.integer("max_new_tokens", max_new_tokens, minimum=0, example=32)
    prefix = _ids(model, prefix, "the prefix")[0].cpu()
    interventions = _intervention_list(interventions)
    for name, flag in (("stop_at_eos", stop_at_eos), ("hooked", hooked)):
        if not isinstance(flag, bool) and not (name == "hooked" and flag is None):
            raise WorkbenchError(f"{name} must be True or False, got {flag!r}", f"pass {name}=True")
    if hooked is False and interventions:  # the plain model would decode without them
        raise WorkbenchError(
            f"hooked=False decodes on the plain model, which would ignore the "
            f"{len(interventions)} intervention(s) given (a clean continuation, silently)",
            "leave hooked out (or pass hooked=True) to decode under the interventions, or "
            "pass no interventions for a clean continuation",
        )
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx is not None:
        max_new_tokens = min(max_new_tokens, n_ctx - len(prefix))
    if max_new_tokens <= 0:
        return torch.zeros(0, dtype=torch.long)
    if hooked is None:  # hooks live on the bridge (wb.intervene) need the hooked path too
        hooked = bool(interventions) or bool(live_hooks(model))
    if not hooked and stop_at_eos:
        new = sample_completions(
            model, [prefix.tolist()], max_new_tokens=max_new_tokens, greedy=True
        )
        return torch.tensor(new[0], dtype=torch.long)
    eos = _eos(model) if stop_at_eos else set()
    seq = prefix
    for _ in range(max_new_tokens):
        nxt = int(logits_of(model, seq, interventions)[-1].argmax())
        seq = torch.cat([seq, torch.tensor([nxt])])
        if nxt in eos:
            break
    return seq[len(prefix) :]


def _after(kl: Tensor, pos: int) -> Tensor:
    v = kl[pos + 1 :]
    return v[~torch.isnan(v)]


@no_type_check  # validates its arguments itself (clean_logits may be any array of numbers)
def measure(
    model: Any,
    trace: Trace,
    intervention: Intervention,
    *,
    clean_logits: Tensor | None = None,
    span: tuple[list[int], str] | None = None,
    task: Any = None,
    problem: Any = None,
    max_new_tokens: int = 0,
    clean_correct: dict[int, float] | None = None,
    notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Every effect of one intervention on one trace (see the module docstring).

    Args:
        model: the bridge.
        trace: the trace.
        intervention: a `Knockout` or `ResidAblation` (its positions define first/last).
        clean_logits: the trace's unablated ``[pos d_vocab]`` logits, a tensor or any
            array of finite numbers (computed when None).
        span: a precomputed `answer_span` result.
        task / problem: a `workbench.tasks.Task` and its `Problem`, to score greedy
            continuations (only with ``max_new_tokens > 0``, which needs them; with 0 they
            are refused, as `run_ablations` refuses them).
        max_new_tokens: continuation length; 0 skips the continuation test.
        clean_correct: a cache ``{cut: score}`` of clean continuations, filled as it goes.
        notes: where given, ``{what: message}`` for each metric left NaN because there was
            nothing to measure (``"after_last"``, ``"answer"``, ``"continuation"``) is
            added to it instead of warned (`run_ablations` counts them into one warning
            per call).

    Returns:
        A dict: ``n``, ``first``, ``last``, ``kl`` (``[pos]`` numpy), ``kl_mean``,
        ``kl_after_last``, ``kl_max``, ``logp_clean``, ``logp_ablated``, ``delta_logp``,
        ``answer_len``, ``answer_kind``, and with a continuation ``cut``,
        ``correct_clean``, ``correct_ablated``, ``delta_correct``. A metric with nothing
        to measure is NaN and a warning says why: ``kl_after_last`` when the last ablated
        position is one of the trace's last two (no prediction row after it), the
        log-probs when the answer span is empty, ``correct_ablated`` and
        ``delta_correct`` when nothing of the trace follows the cut.

    Raises:
        WorkbenchError: besides bad arguments, an intervention that can change no
            measured prediction: row ``N - 2`` of an ``N``-token trace is the last one
            measured, and a knockout changes only rows after its first position (so
            positions ``N - 2`` and ``N - 1`` alone reach none), a residual ablation rows
            from its first position on (``N - 1`` alone reaches none).
    """
    if not isinstance(intervention, Intervention):
        raise WorkbenchError(
            f"measure needs an intervention, got {intervention!r}",
            "pass e.g. Knockout([12, 30]) or ResidAblation([12], mode='zero'); "
            "run_ablations takes intervention names",
        )
    # a Trace with a response (no rows to measure, every metric NaN, otherwise), of this
    # model's tokens and within its context: the checks `wb.analyze` makes
    check_analysable(model, trace)
    _validate.integer("max_new_tokens", max_new_tokens, minimum=0, example=32)
    if max_new_tokens and (task is None or problem is None):
        raise WorkbenchError(
            "max_new_tokens > 0 scores greedy continuations, which needs a task and its problem",
            "pass task=get_task(...) and problem=..., or max_new_tokens=0",
        )
    if not max_new_tokens and (task is not None or problem is not None):
        # the continuation test was skipped without a word: no correct_* in the result
        raise WorkbenchError(
            "a task and problem score greedy continuations, but max_new_tokens=0 runs none",
            "pass max_new_tokens > 0 (e.g. 32) for the continuation test, or leave task and "
            "problem out",
        )
    for name, value in (("clean_correct", clean_correct), ("notes", notes)):
        if value is not None and not isinstance(value, dict):
            raise WorkbenchError(
                f"{name} must be a dict (or None), got a {type(value).__name__}",
                f"pass {name}={{}} to collect it, or leave it out",
            )
    pos = list(intervention.positions)
    if not pos:
        raise WorkbenchError("the intervention has no positions", "pass a non-empty target set")
    if max(pos) >= len(trace):
        raise WorkbenchError(
            f"position {max(pos)} is beyond the trace ({len(trace)} tokens)",
            "use positions of this trace",
        )
    first, last = min(pos), max(pos)
    n = len(trace)
    # A knockout leaves the first ablated position's own row unchanged; a residual
    # ablation changes it (see the module docstring).
    resid = isinstance(intervention, ResidAblation)
    reach_from = first if resid else first + 1
    if reach_from > n - 2:  # row n - 2 predicts the last token; row n - 1 predicts nothing
        how = (
            "a residual ablation changes the rows from its first position on"
            if resid
            else "a knockout changes only the rows of later queries"
        )
        raise WorkbenchError(
            f"{intervention.label} of position(s) {pos} can change no measured prediction: "
            f"{how}, and row {n - 2} is the last row of this {n}-token trace that predicts "
            "one of its tokens (row t predicts token t + 1), so every KL would read NaN "
            "and delta_logp 0 by construction",
            f"ablate a position up to {n - 2 if resid else n - 3} "
            "(run_ablations keeps the last two positions out of every set)",
        )
    if clean_logits is None:
        clean_logits = logits_of(model, trace.ids)
    else:
        clean_logits = _clean_logits(clean_logits)
    ablated = logits_of(model, trace.ids, [intervention])
    if tuple(clean_logits.shape) != tuple(ablated.shape):
        raise WorkbenchError(
            f"clean_logits of shape {tuple(clean_logits.shape)} are not this "
            f"trace's [pos d_vocab] = {tuple(ablated.shape)} logits",
            "pass clean_logits=logits_of(model, trace.ids) of the same trace, or leave it out",
        )
    kl = kl_per_position(clean_logits, ablated, trace.prompt_len)
    after_first, after_last = _after(kl, reach_from - 1), _after(kl, last)
    if span is None:
        tok = getattr(model, "tokenizer", None)
        span = answer_span(trace, special_ids=getattr(tok, "all_special_ids", []) or [])
    if not isinstance(span, tuple) or len(span) != 2:
        raise WorkbenchError(
            f"span must be an answer_span result (positions, kind), got {span!r}",
            "pass span=answer_span(trace), or leave it out",
        )
    positions, kind = span
    positions = _index_list(positions, "span")  # a generator was consumed before len()
    lp_c = answer_logprob(clean_logits, trace.ids, positions)
    lp_a = answer_logprob(ablated, trace.ids, positions)
    found: dict[str, str] = {}
    if not len(after_last):
        found["after_last"] = (
            f"kl_after_last is NaN: the last ablated position {last} is one of the trace's "
            f"last two ({n - 2}, {n - 1}), so no prediction row after it is measured; leave "
            "them out of the set to read it (kl_mean and kl_max are measured)"
        )
    if not len(positions):
        found["answer"] = (
            "logp_clean, logp_ablated and delta_logp are NaN: the answer span is empty (the "
            "response ends at its answer marker, or an empty span was passed); read the KL "
            "metrics, or pass span=(positions, kind) of the answer's tokens"
        )
    row: dict[str, Any] = {
        "n": len(pos),
        "first": first,
        "last": last,
        "kl": kl.numpy(),
        "kl_mean": float(after_first.mean()) if len(after_first) else float("nan"),
        "kl_after_last": float(after_last.mean()) if len(after_last) else float("nan"),
        "kl_max": float(after_first.max()) if len(after_first) else float("nan"),
        "logp_clean": lp_c,
        "logp_ablated": lp_a,
        "delta_logp": lp_a - lp_c,
        "answer_len": len(positions),
        "answer_kind": kind,
    }
    if max_new_tokens and task is not None and problem is not None:
        cut = last + 1
        cache = {} if clean_correct is None else clean_correct
        if cut not in cache:
            cache[cut] = _score_continuation(model, trace, cut, (), max_new_tokens, task, problem)
        row["cut"] = cut
        row["correct_clean"] = cache[cut]
        if _continues(model, trace, cut):
            row["correct_ablated"] = _score_continuation(
                model, trace, cut, (intervention,), max_new_tokens, task, problem
            )
            row["delta_correct"] = row["correct_ablated"] - row["correct_clean"]
        else:  # nothing is regenerated: the ablated answer is the clean one by construction
            row["correct_ablated"] = row["delta_correct"] = float("nan")
            found["continuation"] = (
                f"correct_ablated and delta_correct are NaN: the last ablated position "
                f"{last} ends the trace (its last token, or an end-of-sequence token), so "
                "no continuation follows it and the ablated answer would equal the clean "
                "one by construction; ablate earlier positions for the continuation test"
            )
    if notes is None:
        for note in found.values():
            warn_user(note)
    else:
        notes.update(found)
    return row


def _clean_logits(values: Any) -> Tensor:
    """The given clean logits as a CPU tensor (an array or nested list of numbers converted,
    as `kl_per_position` converts them), or a `WorkbenchError`: they are not float numbers,
    or some are NaN or infinite (every KL and log-prob would read NaN)."""
    fix = "pass clean_logits=logits_of(model, trace.ids) of the same trace, or leave it out"
    try:
        v = torch.as_tensor(values).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        v = None
    if v is None or not v.is_floating_point():
        what = type(values).__name__ if v is None else f"{type(values).__name__} of {v.dtype}"
        raise WorkbenchError(f"clean_logits must be an array of float logits, got {what}", fix)
    finite = torch.isfinite(v)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise WorkbenchError(
            f"clean_logits hold {bad:,} NaN or infinite value(s) of {v.numel():,}: every KL "
            "and log-prob would read NaN",
            fix,
        )
    return v


def _continues(model: Any, trace: Trace, cut: int) -> bool:
    """Whether a continuation from `cut` regenerates anything: some of the trace follows
    the cut, and the token before it is no end-of-sequence token of the response."""
    if cut >= len(trace):
        return False
    return not (int(trace.ids[cut - 1]) in _eos(model) and cut > trace.prompt_len)


def _score_continuation(
    model: Any,
    trace: Trace,
    cut: int,
    interventions: Sequence[Intervention],
    max_new_tokens: int,
    task: Any,
    problem: Any,
) -> float:
    prefix = trace.ids[:cut]
    if _continues(model, trace, cut):
        # Clean and ablated continuations come from the same (hooked) computation.
        new = greedy_continue(
            model, prefix, interventions=interventions, max_new_tokens=max_new_tokens, hooked=True
        )
    else:
        new = torch.zeros(0, dtype=torch.long)
    ids = torch.cat([prefix[trace.prompt_len :], new])
    text = model.tokenizer.decode(ids, skip_special_tokens=True)
    return float(task.score(problem, text))
