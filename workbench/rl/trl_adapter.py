"""Rhythm credit inside TRL: a `trl.GRPOTrainer` whose advantages are per-token.

`RhythmGRPOTrainer` runs wherever TRL runs (accelerate, several GPUs, DeepSpeed), with the
same credit code as the native loop (`workbench.rl.credit`). It replaces the sequence
advantages ``A`` of shape ``(B,)`` by ``A[:, None] * gamma`` of shape ``(B, T)``, which
TRL's loss accepts as they are. Where the gamma comes from:

- **fused** (default, when TRL's batch is trained on with the weights that sampled it:
  ``num_iterations == 1``, ``steps_per_generation == gradient_accumulation_steps``,
  strategy other than ``"entropy"``, a model whose every layer computes its attention
  through transformers' attention interface, no learned absolute position embeddings
  (GPT-2's ``wpe``: TRL's left padding moves a rollout's positions, see the caveats), and
  no dropout reaching the attention): `compute_loss`
  (TRL's public hook) runs TRL's own loss with the workbench's attention function
  collecting the credit layers' statistics inside TRL's forward (`FusedCredit`); a
  forward hook on the policy sets the advantages when the forward returns, before TRL
  reads them. No extra pass: every layer's output and gradient still comes from sdpa;
  the credit layers also compute their probabilities apart, without gradients, to reduce
  them. `training_step` keeps the attention routed (`routing`) from the loss forward to
  the end of the step (not while TRL samples), so that TRL's default gradient
  checkpointing recomputes exactly what the forward computed, whatever attention the
  model was loaded with.
- **standalone** otherwise: after TRL has scored a batch (`after_scoring`), one extra
  no-grad pass over a bridge of the policy (`rollout_gammas`).

Under accelerate each process computes the gamma of its own completions; the logged
statistics are reduced over processes, so they equal a single-process run's.

    from workbench.rl import RhythmGRPOTrainer
    trainer = RhythmGRPOTrainer(model=hf_model, processing_class=tokenizer,
                                reward_funcs=task.reward, args=trl.GRPOConfig(...),
                                train_dataset=dataset,
                                credit=wb.CreditParams(strategy="coupled"))
    trainer.train()

Caveats:
    - TRL logs the advantages before this override; the gamma statistics are logged
      separately as ``credit/gamma_mean`` and ``credit/amplified_frac``.
    - The standalone pass uses a TransformerBridge over a structural copy of the policy
      (`workbench.models.bridge_model`: the policy's own parameters, eager attention),
      built once and reused, under ``torch.no_grad``; TRL's model object itself is left
      untouched, so it samples and saves as a plain model.
    - TRL left-pads prompts. Rotary attention depends only on relative positions, so the
      fused statistics of a left-padded rollout equal its unpadded ones up to float
      rounding; the ``"random"`` control's draws depend on the micro-batch a rollout is in.
      Learned absolute positions (GPT-2, GPT-BigCode) are read at the batch column in TRL's
      forward, so such a model takes the standalone pass, which reads each rollout unpadded.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import time
from typing import Any, no_type_check

import torch

from .. import _validate
from .._compat import (
    check_versions,
    grpo_trainer_base,
    supports_attention_interface,
)
from .._io import atomic_write_json
from ..attention.layers import resolve_layers
from ..attention.params import CreditParams, as_credit
from ..errors import WorkbenchError
from ..models import bridge_model, sampler, text_config
from .credit import FusedCredit, attention_dropout, rollout_gammas, routing
from .forward import CACHED_LAYER_TYPES

try:
    _GRPOTrainer = grpo_trainer_base()
except ImportError as e:  # pragma: no cover - trl is a dependency
    raise ImportError("RhythmGRPOTrainer needs TRL: pip install trl") from e
check_versions()

__all__ = ["RhythmGRPOTrainer", "unpad_rollouts"]

#: The workbench's file in each TRL checkpoint folder: the gamma statistics pooled since
#: the last log, so that a resumed run logs the same ``credit/*`` row.
CREDIT_STATE = "workbench_credit_state.json"


def unpad_rollouts(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
) -> tuple[list[list[int]], list[list[int]]]:
    """TRL's padded batch (prompts left-padded, completions right-padded) as id lists."""
    prompts = [ids[m.bool()].tolist() for ids, m in zip(prompt_ids, prompt_mask, strict=True)]
    completions = [
        ids[m.bool()].tolist() for ids, m in zip(completion_ids, completion_mask, strict=True)
    ]
    return prompts, completions


def _plain_model(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple, dict]:
    """TRL's arguments with a bridge from `wb.load_model` as `model` replaced by the plain
    Hugging Face model it was built over (`workbench.models.sampler`).

    TRL sampled on the bridge, and its generate failed deep inside TransformerLens (a raw
    ValueError about the attention mask) after the trainer was built. The plain model is
    the one to train: the bridge runs over a structural copy that shares its parameters
    (`workbench._compat.structural_copy`), so the steps TRL takes move the bridge the
    user holds too. A bridge the workbench did not build wraps its model in place and is
    refused, and so is what cannot sample (None, a bare torch module: a raw AttributeError
    about ``config`` inside TRL). A string is TRL's: a model folder or hub id it loads.
    """
    positional = "model" not in kwargs and len(args) > 0
    if not positional and "model" not in kwargs:
        return args, kwargs  # Python's own message for the missing argument
    model = args[0] if positional else kwargs["model"]
    if isinstance(model, str):
        return args, kwargs
    try:
        plain = sampler(model)
    except WorkbenchError:
        if not hasattr(model, "original_model"):  # not a TransformerBridge (`sampler`'s test)
            raise
        raise WorkbenchError(
            "model is a TransformerBridge the workbench did not build: it wraps its Hugging "
            "Face model in place, so TRL can neither sample nor train it as a plain model",
            "pass the plain Hugging Face model (AutoModelForCausalLM.from_pretrained(...)), "
            "or a bridge from wb.load_model(...)",
        ) from None
    if plain is model:
        return args, kwargs
    if positional:
        return (plain, *args[1:]), kwargs
    return args, {**kwargs, "model": plain}


#: Names of learned absolute position-embedding tables (GPT-2 and GPT-BigCode's ``wpe``,
#: BERT-style ``position_embeddings``): transformers reads them at the batch column, so a
#: left-padded row of TRL's loss forward sits at other positions than it was sampled at.
_ABSOLUTE_POSITIONS = ("wpe", "position_embeddings")


def _absolute_positions(policy: Any) -> str | None:
    """The name of `policy`'s learned absolute position table (`_ABSOLUTE_POSITIONS`), or
    None: the fused pass then sees each left-padded rollout at its own positions (rotary
    embeddings, and OPT's positions counted from the attention mask)."""
    modules = getattr(policy, "named_modules", None)
    for name, module in modules() if callable(modules) else ():
        if isinstance(module, torch.nn.Embedding) and name.split(".")[-1] in _ABSOLUTE_POSITIONS:
            return name
    return None


#: The keywords TRL passes every reward function, besides the dataset's other columns.
_REWARD_KEYWORDS = (
    "prompts",
    "completions",
    "completion_ids",
    "trainer_state",
    "log_extra",
    "log_metric",
)


def _check_reward_funcs(reward_funcs: Any) -> None:
    """Refuse what TRL cannot call as a reward (a task object for its ``reward`` method
    failed inside TRL with a raw AttributeError): each must be a function, a reward model
    (a torch module) or a model name. A function must take TRL's keywords
    (`_REWARD_KEYWORDS`): ``def reward(completions)`` failed with a raw TypeError inside
    TRL once the first rollouts were sampled."""
    funcs = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
    for func in funcs:
        if func is None or isinstance(func, str | torch.nn.Module):
            continue  # None: TRL's own message (it needs at least one)
        if callable(func):
            _check_reward_signature(func)
            continue
        name = type(func).__name__
        if callable(getattr(func, "reward", None)):
            raise WorkbenchError(
                f"reward_funcs holds a {name} object, not its reward function",
                "pass the task's reward method: reward_funcs=task.reward",
            )
        raise WorkbenchError(
            f"reward_funcs holds a {name}, which TRL cannot call as a reward",
            "pass a function completions -> rewards (e.g. reward_funcs=task.reward for a "
            "wb.tasks task), a reward model, or a list of those",
        )


def _check_reward_signature(func: Any) -> None:
    """Refuse a reward function that cannot take the keywords TRL calls it with."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without a signature: left to TRL
        return
    try:
        signature.bind(**dict.fromkeys(_REWARD_KEYWORDS))
    except TypeError as e:
        name = getattr(func, "__name__", type(func).__name__)
        raise WorkbenchError(
            f"the reward function {name} cannot take the keywords TRL calls it with ({e})",
            "give it **kwargs: def reward(completions, **kwargs) -> list[float] (TRL passes "
            f"{', '.join(_REWARD_KEYWORDS)} and every other dataset column by name)",
        ) from None


def _check_args(config: Any) -> None:
    """Refuse `args` that is not TRL's `GRPOConfig` (the workbench's own `GRPOConfig`, a dict):
    TRL failed with a raw AttributeError (its model arguments, ``seed``) while building."""
    from trl import GRPOConfig as TRLConfig

    from .config import GRPOConfig

    if config is None or isinstance(config, TRLConfig):
        return
    if isinstance(config, GRPOConfig):
        raise WorkbenchError(
            "args is the workbench's own GRPOConfig (for wb.rl.train), not TRL's",
            "pass args=trl.GRPOConfig(output_dir=..., ...): its settings have the same names; "
            "pass the credit as credit=config.credit",
        )
    raise WorkbenchError(
        f"args must be a trl.GRPOConfig, got {type(config).__name__}",
        "pass args=trl.GRPOConfig(output_dir=..., ...), or leave it out for TRL's defaults",
    )


class RhythmGRPOTrainer(_GRPOTrainer):
    """`trl.GRPOTrainer` with the paper's per-token credit ``gamma[t] * A_i``.

    Args:
        *args, **kwargs: as for `trl.GRPOTrainer`; ``model`` may also be a bridge from
            `wb.load_model`, whose plain Hugging Face model (`workbench.models.sampler`)
            is then trained: it shares its parameters with the bridge.
        credit: the `CreditParams` (strategy ``"coupled"``, ``"global"``, ``"local"``,
            ``"random"``, ``"entropy"``, ``"bottom-*"`` or ``"none"``, amplification,
            layers, rhythm settings), or a strategy name for that record's defaults;
            default ``CreditParams()``, the paper's RL setting with the coupled strategy.
            The same record as `GRPOConfig.credit`.
        seed: base seed of the ``"random"`` control (step s uses ``seed + 100_000 * s``,
            plus the number of rollouts already credited in that step: the micro-batches
            of one step draw independently); default ``args.seed``, TRL's seed, so a sweep
            over TRL seeds draws other random tokens in each run.
        fused_credit: compute the credit inside TRL's own loss forward where the
            configuration allows it (see the module docstring); False always uses the
            standalone pass.
    """

    @no_type_check  # checks its own arguments, with messages that name the fix
    def __init__(
        self,
        *args: Any,
        credit: CreditParams | str | None = None,
        seed: int | None = None,
        fused_credit: bool = True,
        **kwargs: Any,
    ):
        credit = as_credit(  # refused before TRL builds anything
            credit, 'pass credit=wb.CreditParams(strategy="coupled", gamma_amp=1.5)'
        )
        # Checked now: a float or str seed failed only after the first rollouts were sampled,
        # and fused_credit="no" acted as True.
        if seed is not None:
            seed = _validate.seed("seed", seed)
        _validate.flag(
            "fused_credit", fused_credit, "pass fused_credit=True (the default) or False"
        )
        args, kwargs = _plain_model(args, kwargs)
        _check_reward_funcs(args[1] if len(args) > 1 else kwargs.get("reward_funcs"))
        _check_args(args[2] if len(args) > 2 else kwargs.get("args"))
        super().__init__(*args, **kwargs)
        self.credit = credit
        # TRL's seed unless given: a fixed 0 drew the same random tokens in every run of a
        # sweep over args.seed.
        self.credit_seed = self.args.seed if seed is None else seed
        self.fused_credit = fused_credit
        #: Seconds spent computing gamma, one entry per batch (after the attention work).
        self.credit_seconds: list[float] = []
        self._bridge = None
        self._bridge_of = None
        self._seed_step: tuple[bool, int] | None = None
        self._seed_used = 0
        self._credit_totals: dict[str, torch.Tensor] = {}
        self._step_scope: contextlib.ExitStack | None = None
        self.last_rollouts: dict[str, Any] | None = None
        # A tokenizer of another model sampled ids beyond the embedding: a raw IndexError
        # inside TRL's generate, after the trainer was built.
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        embed = getattr(self._policy(), "get_input_embeddings", lambda: None)()
        rows = getattr(embed, "num_embeddings", None)
        if rows is not None and hasattr(tokenizer, "__len__") and len(tokenizer) > rows:
            raise WorkbenchError(
                f"the processing_class holds {len(tokenizer)} tokens but the model embeds "
                f"{rows}: it is not this model's tokenizer",
                "pass the tokenizer saved with the model: "
                "AutoTokenizer.from_pretrained(<the model's folder>)",
            )
        # TRL pads with the EOS token when the tokenizer has no pad token; with neither, its
        # padding failed with a raw TypeError after the first rollouts were sampled.
        if getattr(tokenizer, "pad_token_id", 0) is None:
            raise WorkbenchError(
                "the processing_class has neither a pad token nor an EOS token: TRL pads "
                "every batch of rollouts with the pad token",
                "give the tokenizer a pad token of its vocabulary before building the "
                "trainer (e.g. tokenizer.pad_token = tokenizer.unk_token), or pass the "
                "tokenizer saved with the model",
            )
        # The credit layers are checked now, not after the first rollouts are sampled.
        if not isinstance(credit.layers, str):
            n = getattr(
                text_config(getattr(self._policy(), "config", None)), "num_hidden_layers", None
            )
            if n is not None:
                resolve_layers(list(credit.layers), int(n))

    def _credit_bridge(self):
        policy = self.accelerator.unwrap_model(self.model)
        if self._bridge is None or self._bridge_of is not policy:
            # The bridge hooks a copy: TRL's model stays plain (sampling, checkpoints).
            self._bridge = bridge_model(policy, self.processing_class)
            self._bridge_of = policy
        return self._bridge

    @property
    def fuses_credit(self) -> bool:
        """Whether the credit is computed inside the loss forward (see the module docstring)."""
        args = self.args
        return (
            self.fused_credit
            and self.credit.strategy not in ("none", "entropy")
            and self.num_iterations == 1
            and args.steps_per_generation == args.gradient_accumulation_steps
            and self._routes_attention()
            and _absolute_positions(self._policy()) is None
            # TRL's loss forward applies dropout (`attention_dropout`), which the fused pass cannot
            # reproduce: the credit then comes from the standalone (eval-mode) pass.
            and attention_dropout(self._policy()) is None
        )

    def _policy(self) -> Any:
        return self.accelerator.unwrap_model(self.model)

    def _routes_attention(self) -> bool:
        """Whether every layer of the policy computes softmax attention through transformers'
        attention interface, where the fused pass collects it. A hybrid model's linear-
        attention, state-space or convolution layers (Qwen3-Next, Jamba, LFM2) and classes
        that compute attention themselves (Falcon, BLOOM, MPT, GPT-Neo) never reach it: the
        fused pass would fail after the first rollouts (``NotRouted``), while the standalone
        pass picks their attention layers. A class that uses the interface without
        declaring it (StableLM) takes the standalone pass too: the check that the tiled
        pass reproduces its eager attention (`interface.reproduces_eager`) runs a forward
        of its own, which is not made inside TRL's distributed step."""
        policy = self._policy()
        types = getattr(getattr(policy, "config", None), "layer_types", None) or []
        return supports_attention_interface(policy) and {str(t) for t in types} <= set(
            CACHED_LAYER_TYPES
        )

    def _seed(self, rollouts: int) -> int:
        """Base seed of the ``"random"`` draws of the next `rollouts` rollouts.

        ``seed + 100_000 * step``, plus the rollouts credited before these in this step
        (and mode) over all processes, counting each micro-batch's processes in order: the
        fused pass runs once per micro-batch on every process, so without the offset the
        k-th rollout of every micro-batch and process would draw the same positions.
        """
        key = (bool(self.model.training), int(self.state.global_step))
        if key != self._seed_step:
            self._seed_step, self._seed_used = key, 0
        n, rank = self.accelerator.num_processes, self.accelerator.process_index
        seed = self.credit_seed + 100_000 * key[1] + self._seed_used * n + rank * rollouts
        self._seed_used += rollouts
        return seed

    def _apply(self, inputs: dict[str, Any], gammas: Any, prompts, completions) -> None:
        """``advantages <- A[:, None] * gammas()``, timed into `credit_seconds`, and the
        gamma statistics counted for the next log (reduced over processes and pooled over
        the tokens since the last log, so they do not depend on how the batch is split)."""
        t0 = time.perf_counter()
        gamma = gammas().to(inputs["advantages"].device)
        advantages = inputs["advantages"]
        if advantages.dim() == 1:
            advantages = advantages[:, None]
        inputs["advantages"] = advantages * gamma
        # TRL's loss mask: tool results inserted into a completion (``tool_mask`` 0) get no
        # gradient, so their gammas are not counted either.
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        g = gamma[mask.bool()]
        totals = torch.stack(
            [g.sum(), (g > 1).float().sum(), torch.tensor(float(g.numel()), device=g.device)]
        )
        totals = self.accelerator.reduce(totals.to(self.accelerator.device), reduction="sum")
        # Pooled until the next log (`log`): TRL averages its metrics per call, and the
        # fused path runs once per micro-batch, the standalone one once per generation.
        mode = "train" if self.model.training else "eval"
        self._credit_totals[mode] = self._credit_totals.get(mode, 0) + totals.cpu().double()
        self.last_rollouts = {"prompts": prompts, "completions": completions, "gamma": gamma.cpu()}
        self.credit_seconds.append(time.perf_counter() - t0)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's log, with ``credit/gamma_mean`` and ``credit/amplified_frac`` over every
        completion token credited since the last log. (TRL's own metric log averages one
        value per call: with gradient accumulation the fused path's per-micro-batch means
        would log another number than the standalone path for the same gammas.) No token
        credited (every completion masked out: ``mask_truncated_completions``), no entry."""
        mode = "train" if self.model.training else "eval"
        totals = self._credit_totals.pop(mode, None)
        if totals is not None and float(totals[2]) > 0:
            prefix = "eval_" if mode == "eval" else ""
            count = float(totals[2])
            logs[f"{prefix}credit/gamma_mean"] = float(totals[0]) / count
            logs[f"{prefix}credit/amplified_frac"] = float(totals[1]) / count
        super().log(logs, start_time)

    def save_extra_state(self, folder: str) -> None:
        """The gamma statistics pooled since the last log (`CREDIT_STATE`), written
        atomically into the checkpoint `folder` before TRL's files: a checkpoint saved
        between two logs (``save_steps`` not a multiple of ``logging_steps``) lost them,
        and the resumed run's next ``credit/*`` row covered only the steps after it."""
        totals = self._credit_totals.get("train")
        state = {"train_totals": None if totals is None else [float(t) for t in totals]}
        atomic_write_json(os.path.join(folder, CREDIT_STATE), state)

    def load_extra_state(self, checkpoint: str | None) -> None:
        """On resuming from `checkpoint`, the pooled gamma statistics of `save_extra_state`
        restored (a checkpoint without the file, from TRL's own trainer, pools nothing).
        What a run interrupted in this trainer object left counted is dropped: its
        statistics of the steps after the checkpoint (logged twice) and the ``"random"``
        seeds it had used in the step it stopped in (the resumed step drew other tokens)."""
        if checkpoint is None:
            return
        self._seed_step, self._seed_used = None, 0
        path = os.path.join(checkpoint, CREDIT_STATE)
        self._credit_totals.pop("train", None)
        if os.path.exists(path):
            with open(path) as f:
                totals = json.load(f).get("train_totals")
            if totals is not None:
                self._credit_totals["train"] = torch.tensor(totals, dtype=torch.float64)

    def after_scoring(self, out: dict[str, Any]) -> dict[str, Any]:
        """The standalone path: replace the sequence advantages ``(B,)`` of a scored batch by
        ``A[:, None] * gamma`` (the fused path leaves them to `compute_loss`)."""
        if self.fuses_credit:
            return out
        prompts, completions = unpad_rollouts(
            out["prompt_ids"], out["prompt_mask"], out["completion_ids"], out["completion_mask"]
        )
        width = out["completion_ids"].shape[1]

        def gammas() -> torch.Tensor:
            if self.credit.strategy == "none":
                return torch.ones(len(completions), width)
            return rollout_gammas(
                self._credit_bridge(),
                prompts,
                completions,
                self.credit,
                seed=self._seed(len(completions)),
                pad_to=width,
            )

        self._apply(out, gammas, prompts, completions)
        return out

    def training_step(self, model, inputs, num_items_in_batch=None):
        """TRL's step; on the fused path its loss forward and backward inside `routing`
        (entered by `compute_loss`, left when the step returns), so that a backward that
        recomputes checkpointed layers (TRL's default) runs the forward's computation. TRL
        samples earlier in the step, outside it: with the model's own attention, the only
        one transformers' continuous batching (``use_transformers_continuous_batching``)
        accepts."""
        if not self.fuses_credit:
            return super().training_step(model, inputs, num_items_in_batch)
        with contextlib.ExitStack() as stack:
            self._step_scope = stack
            try:
                return super().training_step(model, inputs, num_items_in_batch)
            finally:
                self._step_scope = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's loss; on the fused path with the credit collected inside its forward."""
        if not self.fuses_credit or "advantages" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        prompt_mask, completion_mask = inputs["prompt_mask"], inputs["completion_mask"]
        p_width, width = prompt_mask.shape[1], completion_mask.shape[1]
        starts = (p_width - prompt_mask.sum(1)).tolist()  # TRL left-pads the prompts
        prompts, completions = unpad_rollouts(
            inputs["prompt_ids"], prompt_mask, inputs["completion_ids"], completion_mask
        )
        spans = [
            (s, len(p) + len(c), len(p))
            for s, p, c in zip(starts, prompts, completions, strict=True)
        ]
        ids = [
            torch.tensor(p + c, dtype=torch.long) for p, c in zip(prompts, completions, strict=True)
        ]
        policy = self.accelerator.unwrap_model(model)
        if self._step_scope is not None:  # in `training_step`: routed until it returns
            self._step_scope.enter_context(routing(policy))
            self._step_scope = None
        fused = FusedCredit(policy, self.credit, spans, ids)
        seed = self._seed(len(completions))

        def set_advantages(module: Any, args: Any, output: Any) -> None:
            handle.remove()  # once: TRL makes one forward per loss
            self._apply(inputs, lambda: fused.gammas(width, seed=seed), prompts, completions)

        handle = policy.register_forward_hook(set_advantages)
        try:
            with fused:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            handle.remove()
