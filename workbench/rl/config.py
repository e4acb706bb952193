"""Configuration of a GRPO run with rhythm credit.

Names follow TRL's `GRPOConfig` where TRL has the concept, so a setting moves between the
native loop and `RhythmGRPOTrainer` unchanged. Differences from TRL's defaults, each chosen
for short CPU runs on the tiny reasoner:

- ``learning_rate`` 1e-5 (TRL: 1e-6): the tiny model needs larger steps to move in minutes.
- ``max_completion_length`` 96 (TRL: 512): the tasks' solutions are short.
- ``num_generations`` 8 (same as TRL); ``per_device_train_batch_size`` counts completions
  per step as in TRL and must be a multiple of ``num_generations`` (TRL: 8 -> here 32,
  i.e. 4 prompts per step).
- ``lr_scheduler_type`` is always constant after an optional linear warm-up over
  ``warmup_steps`` (TRL: linear decay): a run can be extended or resumed without changing
  the schedule of its first steps. Warm-up matters at the learning rates a small model
  needs: Adam's first steps move every weight by about the full learning rate.
- ``loss_type`` "dapo" (TRL's default: token-level mean over the batch) or "grpo"
  (per-sequence mean, then mean over sequences); other TRL loss types are not implemented.
- ``beta`` 0.0 and ``entropy_coef`` 0.0 as in TRL and the paper (no KL, no entropy term);
  both are available.

Settings that are known to train the tiny reasoner: ``per_device_train_batch_size=128``,
``learning_rate=2e-4``, ``warmup_steps=10`` (`benchmarks/rl_experiment.py`): plain GRPO then
gains about 8 points of sampled held-out accuracy on Countdown in 60 steps. With 32
completions per step and no warm-up, pilots did not improve (and 1e-3 collapsed).

The rhythm-credit settings (``strategy``, ``gamma_amp``, ``credit_layers``, ``top_q``,
``window``, ``fai_horizon``, ``alpha``, ``k``) follow ``shared/method.md``; the defaults are
the paper's RL settings (middle layers, W = 10, horizon (10, 100), q = 0.4, gamma_amp 1.5).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..attention.credit import STRATEGIES
from ..errors import WorkbenchError

__all__ = ["GRPOConfig"]


@dataclass
class GRPOConfig:
    """Every setting of one GRPO run (saved as ``config.json`` in its run directory).

    Attributes:
        model: model name or folder for `wb.load_model` (default: the tiny reasoner).
        task: verifiable task name (``"countdown"`` or ``"arithmetic"``).
        strategy: credit strategy: ``"none"`` (plain GRPO), ``"random"``, ``"entropy"``,
            ``"local"``, ``"global"``, ``"coupled"`` or a ``"bottom-*"`` control.
        max_steps: optimiser steps.
        seed: seed of everything (problems, sampling, random-credit draws).
        num_generations: completions per prompt (G).
        per_device_train_batch_size: completions per step (a multiple of G).
        learning_rate, adam_beta1, adam_beta2, adam_epsilon, weight_decay, max_grad_norm:
            AdamW and clipping, as in TRL/transformers.
        warmup_steps: linear learning-rate warm-up from ``learning_rate / warmup_steps``
            at step 1 to ``learning_rate`` at step ``warmup_steps`` (0: none).
        epsilon, epsilon_high: PPO clip range (``epsilon_high`` None means ``epsilon``).
        beta: KL coefficient against the starting policy (0: no reference model).
        entropy_coef: entropy bonus coefficient.
        num_iterations: optimisation passes over each batch (TRL's mu).
        loss_type: ``"dapo"`` or ``"grpo"`` (see the module docstring).
        scale_rewards: ``"group"`` (divide by the group's std), ``"batch"`` or ``"none"``.
        max_completion_length, temperature, top_p: sampling.
        chat: apply the chat template to prompts (for instruct models).
        gamma_amp, credit_layers, top_q, window, fai_horizon, alpha, k: rhythm credit.
        eval_every: evaluate on the held-out split every this many steps (0: only at the
            start and the end).
        eval_size: held-out problems per evaluation.
        eval_samples: sampled completions per held-out problem (at ``temperature``) for
            ``eval_sampled_accuracy``, the mean accuracy of the policy being trained;
            0 skips it. ``eval_accuracy`` is always the greedy accuracy.
        save_every: checkpoint every this many steps (the last step is always saved).
        keep_checkpoints: how many checkpoints to keep (at least 2, so a corrupt latest one
            never leaves the run without a good one).
        device: ``"cpu"``, ``"cuda"`` or None (auto).
    """

    model: str = "tiny-reasoner"
    task: str = "countdown"
    strategy: str = "none"
    max_steps: int = 50
    seed: int = 0
    num_generations: int = 8
    per_device_train_batch_size: int = 32
    learning_rate: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    entropy_coef: float = 0.0
    num_iterations: int = 1
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    max_completion_length: int = 96
    temperature: float = 1.0
    top_p: float = 1.0
    chat: bool = False
    gamma_amp: float = 1.5
    credit_layers: Any = "middle"
    top_q: float = 0.4
    window: int = 10
    fai_horizon: tuple[int, int | None] = (10, 100)
    alpha: float = 0.5
    k: int = 3
    eval_every: int = 10
    eval_size: int = 64
    eval_samples: int = 4
    save_every: int = 10
    keep_checkpoints: int = 2
    device: str | None = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def prompts_per_step(self) -> int:
        """Prompts sampled per step: ``per_device_train_batch_size / num_generations``."""
        return self.per_device_train_batch_size // self.num_generations

    def validate(self) -> None:
        """Raise a `WorkbenchError` naming the first bad setting and its fix."""

        def bad(problem: str, fix: str) -> None:
            raise WorkbenchError(problem, fix)

        if self.strategy not in STRATEGIES:
            bad(f"unknown strategy {self.strategy!r}", f"use one of {list(STRATEGIES)}")
        if self.num_generations < 2:
            bad(
                f"num_generations={self.num_generations}: GRPO needs at least 2 completions "
                "per prompt to normalise rewards within a group",
                "use num_generations=8 (TRL's default) or at least 2",
            )
        if (
            self.per_device_train_batch_size < self.num_generations
            or self.per_device_train_batch_size % self.num_generations
        ):
            bad(
                f"per_device_train_batch_size={self.per_device_train_batch_size} must be a "
                f"multiple of num_generations={self.num_generations} (it counts completions, "
                "as in TRL)",
                f"use e.g. per_device_train_batch_size={4 * self.num_generations}",
            )
        for name in ("max_steps", "max_completion_length", "num_iterations", "eval_size"):
            if int(getattr(self, name)) < 1:
                bad(f"{name} must be at least 1, got {getattr(self, name)}", f"raise {name}")
        if self.max_steps < 1:
            bad("max_steps must be at least 1", "raise max_steps")
        if self.learning_rate <= 0:
            bad(f"learning_rate must be positive, got {self.learning_rate}", "use e.g. 1e-5")
        if not 0 < self.epsilon < 1:
            bad(f"epsilon must be in (0, 1), got {self.epsilon}", "use 0.2 (TRL's default)")
        if self.loss_type not in ("dapo", "grpo"):
            bad(f"loss_type {self.loss_type!r} is not implemented", "use 'dapo' or 'grpo'")
        if self.scale_rewards not in ("group", "batch", "none"):
            bad(f"scale_rewards {self.scale_rewards!r}", "use 'group', 'batch' or 'none'")
        if self.temperature <= 0:
            bad(f"temperature must be > 0 for sampling, got {self.temperature}", "use 1.0")
        if self.keep_checkpoints < 2:
            bad(
                f"keep_checkpoints={self.keep_checkpoints}: keep at least 2 so a corrupt "
                "latest checkpoint still leaves a good one",
                "use keep_checkpoints=2",
            )
        if self.warmup_steps < 0:
            bad(f"warmup_steps must be >= 0, got {self.warmup_steps}", "use e.g. 10 (or 0)")
        if self.eval_samples < 0:
            bad(f"eval_samples must be >= 0, got {self.eval_samples}", "use 4 (or 0 to skip)")
        if self.eval_every < 0 or self.save_every < 1:
            bad("eval_every must be >= 0 and save_every >= 1", "use eval_every=10, save_every=10")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_dict` inverts it."""
        d = dataclasses.asdict(self)
        d["fai_horizon"] = list(self.fai_horizon)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GRPOConfig:
        """Build a config from `to_dict` output, refusing unknown keys with a clear error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise WorkbenchError(
                f"unknown GRPO settings {unknown}",
                f"check the spelling; known settings are {sorted(known)}",
            )
        d = dict(d)
        if "fai_horizon" in d:
            d["fai_horizon"] = tuple(d["fai_horizon"])  # JSON stores it as a list
        return cls(**d)

    def replace(self, **changes: Any) -> GRPOConfig:
        """A copy with some settings changed (validated)."""
        return self.from_dict({**self.to_dict(), **changes})
