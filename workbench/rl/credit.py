"""Per-token credit ``gamma`` for rollouts: the one place both trainers compute it.

Two ways to the same weights:

- `FusedCredit` (the default in both trainers): the statistics are collected *inside the
  policy's first update forward* on the rollouts, which uses the weights that sampled them
  (the paper's separate ``actor_attn`` copy mirrors exactly these). Every layer's output
  still comes from sdpa; the credit layers also compute their attention probabilities in
  tiles, without gradients, and reduce them. Gamma is computed, detached, after the
  forward and before the loss. No extra forward pass.
- `rollout_gammas`: the standalone reference, one extra no-grad forward pass of the current
  policy over prompt + completion on the chosen layers (`wb.gamma_many`). Used where the
  forward cannot be fused (TRL with several iterations per batch, the ``"entropy"``
  strategy in TRL, attention dropout) and by the tests as the reference.

Both give the weights `Analysis.gamma(strategy)` gives; the prompt part is dropped.
``"none"`` needs neither.

Seeds: the ``"random"`` control draws its positions from ``seed + k`` for the k-th non-empty
rollout, so the draw is reproducible and independent of batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, no_type_check

import torch
from jaxtyping import Float
from torch import Tensor

from .. import _validate
from ..attention import engine, interface
from ..attention.analysis import Analysis
from ..attention.batch_credit import frame_gammas
from ..attention.layers import resolve_heads, resolve_layers
from ..attention.params import CreditParams, check_credit
from ..attention.run import gamma_many
from ..errors import WorkbenchError
from ..models import model_device, text_config
from ..trace import Trace

__all__ = [
    "FusedCredit",
    "attention_dropout",
    "rollout_gammas",
    "routing",
]


#: Config fields that hold a model's attention-dropout rate (Llama-style, GPT-2/Phi, BERT).
_ATTENTION_DROPOUT = ("attention_dropout", "attn_pdrop", "attention_probs_dropout_prob")

#: Config fields of dropout (or layer drop) on the hidden states in training, applied
#: functionally by some architectures (OPT's ``dropout``, Falcon's ``hidden_dropout``), so
#: that no ``nn.Dropout`` module shows it: Phi/GPT-2/GPT-J/CodeGen, MPT, GPT-NeoX/StableLM/
#: BLOOM/Falcon, BioGPT, Starcoder2, OPT/XGLM. Classifier and summary heads are no part of
#: the causal LM's forward and are left out.
_HIDDEN_DROPOUT = (
    "resid_pdrop",
    "embd_pdrop",
    "emb_pdrop",
    "hidden_dropout",
    "hidden_dropout_prob",
    "residual_dropout",
    "embedding_dropout",
    "dropout",
    "activation_dropout",
    "layerdrop",
)


def _rate(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def attention_dropout(policy: Any) -> tuple[str, float] | None:
    """The config field (or module) and rate of the dropout `policy` applies in training
    that reaches its attention, or None when it applies none: attention dropout
    (``attention_dropout``, or GPT-2's ``attn_pdrop``, 0.1 in its checkpoints), and dropout
    on the hidden states that feed the attention (Phi-2's ``resid_pdrop`` 0.1, OPT's
    ``dropout`` 0.1, or any ``nn.Dropout`` module with a positive rate). In a training
    forward either makes the attention probabilities differ from call to call and from
    the eval-mode standalone pass, and the fused credit cannot reproduce them, so both
    trainers then use the standalone pass (`GRPORun.fuses_credit`,
    `RhythmGRPOTrainer.fuses_credit`)."""
    cfg = getattr(policy, "config", None)
    for name in (*_ATTENTION_DROPOUT, *_HIDDEN_DROPOUT):
        rate = _rate(getattr(cfg, name, None))
        if rate is not None:
            return name, rate
    modules = getattr(policy, "named_modules", None)
    for name, module in modules() if callable(modules) else ():
        if isinstance(module, torch.nn.Dropout):
            rate = _rate(module.p)
            if rate is not None:
                return name, rate
    return None


def _check_width(name: str, width: Any, longest: int) -> int:
    """`width` as an int of at least `longest` (a narrower result would cut the weights of
    the longest completion off without a word)."""
    width = _validate.integer(name, width, minimum=0, example=max(longest, 1))
    if width < longest:
        raise WorkbenchError(
            f"{name}={width} would cut off the longest completion ({longest} tokens)",
            f"pass {name} of at least {longest} (the widest completion), or None",
        )
    return width


def _token_ids(name: str, ids: Any) -> list[int]:
    """One rollout's token ids as ints (`_validate.as_index`): ``torch.tensor(..., dtype=long)``
    would truncate a float id without a word."""
    try:
        return [_validate.as_index(x) for x in ids]
    except TypeError:
        raise WorkbenchError(
            f"{name} must hold lists of integer token ids, got {ids!r:.80}",
            "pass each rollout's token ids as a list of ints (or an integer tensor)",
        ) from None


@no_type_check  # validates its arguments itself, with messages that name the fix
def rollout_gammas(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    credit: CreditParams,
    *,
    seed: int = 0,
    pad_to: int | None = None,
    batch_size: int = 32,
) -> Float[Tensor, "batch pos"]:
    """Credit weights for a batch of rollouts, ``[batch, completion_pos]``.

    Args:
        model: the policy as a TransformerBridge (its current weights are used).
        prompt_ids: token ids of each rollout's prompt.
        completion_ids: token ids of each completion (unpadded).
        credit: the `CreditParams` (strategy, amplification, layers, rhythm settings).
        seed: base seed of the ``"random"`` control (the k-th rollout with a non-empty
            completion uses ``seed + k``; an empty one uses none).
        pad_to: width of the result, at least the longest completion (default: the
            longest completion); padding is 1.0.
        batch_size: rollouts per credit forward pass (`workbench.attention.run.gamma_many`
            right-pads them; the weights equal single passes).

    Returns:
        ``[batch, pad_to]`` float32 weights; 1.0 past each completion's end.
    """
    check_credit(credit)
    # None reached `gamma_many` as "unseeded": the "random" draws changed from call to call
    seed = _validate.seed("seed", seed)
    fix = "pass one list of token ids per rollout in prompt_ids and in completion_ids"
    try:
        prompt_ids, completion_ids = list(prompt_ids), list(completion_ids)
    except TypeError:
        raise WorkbenchError("prompt_ids and completion_ids must be lists", fix) from None
    if len(prompt_ids) != len(completion_ids):
        raise WorkbenchError(
            f"{len(prompt_ids)} prompts for {len(completion_ids)} completions", fix
        )
    prompt_ids = [_token_ids("prompt_ids", p) for p in prompt_ids]
    completion_ids = [_token_ids("completion_ids", c) for c in completion_ids]
    longest = max((len(c) for c in completion_ids), default=0)
    width = longest if pad_to is None else _check_width("pad_to", pad_to, longest)
    out = torch.ones(len(completion_ids), width, dtype=torch.float32)
    if credit.strategy == "none":
        return out
    traces = [
        Trace(
            ids=torch.tensor(p + c, dtype=torch.long),
            tokens=[""] * (len(p) + len(c)),
            prompt_len=len(p),
            text="",
        )
        for p, c in zip(prompt_ids, completion_ids, strict=True)
    ]
    keep = [i for i, c in enumerate(completion_ids) if len(c) > 0]
    if not keep:  # every rollout ended at once (EOS first): no token to weigh, no pass
        return out
    was_training = model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            gammas = gamma_many(
                model, [traces[i] for i in keep], credit, seed=seed, batch_size=batch_size
            )
    finally:
        if was_training:
            model.train()
    for i, g in zip(keep, gammas, strict=True):
        g = g[traces[i].prompt_len :]
        n = min(len(g), width)
        out[i, :n] = g[:n]
    return out


def routing(policy: Any, reducers: dict | None = None) -> Any:
    """Route `policy`'s attention through the workbench's function as a fused credit pass
    does (every layer's output from sdpa; the credit layers also reduce their attention
    probabilities, computed in tiles without gradients), keeping its mode.

    A trainer whose backward recomputes checkpointed layers wraps the whole step in this,
    so that the recomputation runs the same computation as the forward; `FusedCredit`
    inside it only arms the reducers for the forward it reduces.
    """
    return interface.analysis_pass(
        policy, reducers or {}, fast_other_layers=True, sdpa_outputs=True, train=True
    )


class FusedCredit:
    """Collect the credit statistics inside a forward pass the trainer makes anyway.

    Use it around the policy's first update forward on a batch of rollouts::

        fused = FusedCredit(policy, credit, spans, ids)
        with fused:
            logits = policy(input_ids).logits          # with gradients, as usual
        gamma = fused.gammas(width, seed=seed)         # [batch, width], detached

    Args:
        policy: the plain Hugging Face model being trained (its mode is left alone).
        credit: the `CreditParams`.
        spans: ``(start, n, prompt_len)`` of each rollout in the batch rows: its tokens are
            positions ``start .. start + n - 1`` (``start > 0`` when left-padded), the
            first ``prompt_len`` of them the prompt.
        ids: each rollout's ``[n]`` token ids (for the analyses' records).

    When every response starts at the same column (``start + prompt_len`` equal: TRL's
    left-padded prompts, or the native update's shared prompts, `workbench.rl.forward`,
    whose forward computes only the completions' rows on the prompts' KV cache), the
    statistics of all rollouts are reduced together and their weights computed batched
    (`engine.SharedFrameCollector`, `workbench.attention.batch_credit`); only the response
    rows are reduced, all the credit needs. Otherwise each rollout has its own accumulator
    and `Analysis`.

    Every layer's output, and its gradient, comes from sdpa, as in the plain training
    forward; the credit layers also compute their probabilities in tiles, without
    gradients, only to reduce them. The standalone pass (`gamma_many`) computes the same,
    so the weights equal `rollout_gammas`'s up to the float rounding of batch shapes. The
    ``"entropy"`` strategy needs the next-token entropies: pass the update's logits to
    `gammas`. A policy in train mode that applies dropout reaching the attention
    (`attention_dropout`) is refused on entering: its statistics would change from call to
    call; both trainers use the standalone pass for it.
    """

    @no_type_check  # validates `credit` itself, with a message that names the fix
    def __init__(
        self,
        policy: Any,
        credit: CreditParams,
        spans: Sequence[tuple[int, int, int]],
        ids: Sequence[Tensor],
    ):
        check_credit(credit)
        cfg = text_config(policy.config)
        self.n_layers = int(cfg.num_hidden_layers)
        self.n_heads = int(cfg.num_attention_heads)
        self.policy, self.credit, self.spans, self.ids = policy, credit, list(spans), list(ids)
        self.layers = resolve_layers(
            credit.layers if isinstance(credit.layers, str) else list(credit.layers),
            self.n_layers,
        )
        lo, hi = credit.rhythm.fai_horizon
        shared = len({s + pl for s, _, pl in self.spans}) == 1
        kind = engine.SharedFrameCollector if shared else engine.Collector
        self.collector = kind(
            self.spans,
            resolve_heads(self.layers, None, self.n_layers, self.n_heads),
            self.n_heads,
            max_window=credit.rhythm.window,
            cuts=[lo, *([] if hi is None else [hi + 1])],
            device=model_device(policy),
        )
        self._pass: Any = None

    def __enter__(self) -> FusedCredit:
        found = attention_dropout(self.policy) if self.policy.training else None
        if found is not None:
            # Attention dropout fails inside the attention function; dropout on the hidden
            # states would pass unseen, the statistics changing from call to call.
            raise WorkbenchError(
                f"the policy applies dropout in training ({found[0]}={found[1]}): the "
                "attention the fused credit would collect in this forward changes from call "
                "to call and differs from the standalone (eval-mode) pass",
                "compute the credit with the standalone pass (rollout_gammas; "
                "fused_credit=False), run this forward in eval mode, or set the model's "
                "dropout to 0",
            )
        if interface.active_pass(self.policy) is not None:
            # Inside a `routing` scope (a whole training step): only arm its reducers.
            self._pass = interface.armed(self.policy, self.collector.reducers())
        else:
            self._pass = routing(self.policy, self.collector.reducers())
        self._pass.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pass.__exit__(*exc)

    def gammas(
        self, width: int, *, seed: int = 0, logits: Tensor | None = None
    ) -> Float[Tensor, "batch pos"]:
        """The completions' weights, ``[batch, width]`` (1.0 past each completion).

        Args:
            width: columns of the result (the completion width of the batch), at least
                the longest completion.
            seed: base seed of ``"random"`` (the k-th rollout with a completion uses
                ``seed + k``, as in `rollout_gammas`).
            logits: ``[batch, width, d_vocab]`` logits of the rows that produced the
                completion tokens (needed for ``"entropy"`` only).
        """
        if self.credit.strategy == "entropy" and logits is None:
            raise WorkbenchError(
                'the "entropy" strategy needs the update logits',
                "pass gammas(width, logits=...) with the logits of the completion rows",
            )
        longest = max((n - pl for _, n, pl in self.spans), default=0)
        width = _check_width("width", width, longest)
        # The k-th rollout with a completion uses seed + k; an empty one uses none (as the
        # reference).
        seeds, k = [], 0
        for _, n, pl in self.spans:
            seeds.append(seed + k)
            k += n > pl
        if isinstance(self.collector, engine.SharedFrameCollector):
            return self._frame_gammas(width, seeds, logits)
        out = torch.ones(len(self.spans), width, dtype=torch.float32)
        for i, stats in enumerate(self.collector.finish()):
            _, n, pl = self.spans[i]
            if n <= pl:
                continue  # an empty completion: no weights
            ent = torch.full((n,), float("nan"), dtype=torch.float64)
            if self.credit.strategy == "entropy":
                ent[pl:] = engine.entropy_from_logits(logits[i, : n - pl].detach())
            analysis = Analysis(
                stats=stats,
                entropy=ent,
                tokens=[""] * n,
                ids=self.ids[i],
                n_layers=self.n_layers,
                n_heads=self.n_heads,
                params=self.credit.rhythm,
                meta={"layers": self.layers, "sink": "keep"},
            )
            g = analysis.gamma(self.credit.strategy, seed=seeds[i], gamma_amp=self.credit.gamma_amp)
            c = min(n - pl, width)
            out[i, :c] = g[pl : pl + c]
        return out

    def _frame_gammas(self, width: int, seeds: list[int], logits: Tensor | None) -> Tensor:
        """`gammas` of a shared-frame batch, its metrics computed batched
        (`workbench.attention.batch_credit`)."""
        stats, rows, ends = self.collector.finish_frame()
        entropy = None
        if self.credit.strategy == "entropy":
            cols = stats.n_pos - stats.prompt_len
            rows_logits = logits[:, :cols].detach()
            entropy = engine.entropy_from_logits(rows_logits.flatten(0, 1)).view(len(ends), -1)
        g = frame_gammas(
            stats,
            rows,
            ends,
            self.credit.rhythm,
            self.credit.strategy,
            gamma_amp=self.credit.gamma_amp,
            seeds=seeds,
            entropy=entropy,
        )
        out = torch.ones(len(self.spans), width, dtype=torch.float32)
        c = min(width, g.shape[1])
        out[:, :c] = g[:, :c]
        return out
