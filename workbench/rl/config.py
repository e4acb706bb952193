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

The rhythm credit is one `CreditParams` (``credit``: strategy, ``gamma_amp``, layers and
the `RhythmParams`), validated when the config is built, so a bad setting fails before any
run folder is written. Its defaults are the paper's RL settings (middle layers, W = 10,
horizon (10, 100), q = 0.4, gamma_amp 1.5) with the strategy ``"none"`` (plain GRPO).
`GRPOConfig.replace` and `from_dict` also take the credit's fields by name
(``strategy="coupled"``, ``top_q=0.3``; ``credit_layers`` is the layers), and read run
folders written before the record existed.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from typing import Any, no_type_check

from .. import _validate as v
from ..attention.params import CreditParams, RhythmParams, check_credit
from ..errors import WorkbenchError
from ..tasks import TASKS
from ..trace.sampling import MAX_COMPLETIONS

__all__ = ["GRPOConfig"]


#: The metrics an evaluation adds to a row (`GRPORun.evaluate`): greedy and sampled accuracy.
EVAL_METRICS = ("eval_accuracy", "eval_sampled_accuracy")

#: The default credit: the paper's RL settings with no amplification (plain GRPO).
_PLAIN_GRPO = CreditParams(strategy="none")


@no_type_check  # validated by `validate`, with messages that name the fix
@dataclass(frozen=True)
class GRPOConfig:
    """Every setting of one GRPO run (saved as ``config.json`` in its run directory).

    Attributes:
        model: model name or folder for `wb.load_model` (default: the tiny reasoner).
        task: verifiable task name (``"countdown"``, ``"countdown-search"`` or ``"arithmetic"``;
            `workbench.tasks.TASKS`).
        credit: the rhythm credit (`CreditParams`); its ``strategy`` is ``"none"`` (plain
            GRPO), ``"random"``, ``"entropy"``, ``"local"``, ``"global"``, ``"coupled"`` or
            a ``"bottom-*"`` control. ``config.strategy`` reads it.
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
        eval_every: evaluate on the held-out split every this many steps (0: only at the
            start and the end).
        eval_size: held-out problems per evaluation.
        eval_samples: sampled completions per held-out problem (at ``temperature``) for
            ``eval_sampled_accuracy``, the mean accuracy of the policy being trained;
            0 skips it. ``eval_accuracy`` is always the greedy accuracy.
        save_every: checkpoint every this many steps (the last step is always saved).
        keep_checkpoints: how many checkpoints to keep (at least 2, so a corrupt latest one
            never leaves the run without a good one).
        fused_credit: compute the credit inside the first update forward
            (`workbench.rl.credit.FusedCredit`, no extra forward pass) where the policy
            allows it (no attention dropout: `GRPORun.fuses_credit`); False uses the
            standalone pass (`rollout_gammas`). Both give the same weights.
        device: ``"cpu"``, ``"cuda"`` or None (auto).
    """

    model: str = "tiny-reasoner"
    task: str = "countdown"
    credit: CreditParams = _PLAIN_GRPO
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
    eval_every: int = 10
    eval_size: int = 64
    eval_samples: int = 4
    save_every: int = 10
    keep_checkpoints: int = 2
    fused_credit: bool = True
    device: str | None = "cpu"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def strategy(self) -> str:
        """The credit strategy (``credit.strategy``)."""
        return self.credit.strategy

    @property
    def prompts_per_step(self) -> int:
        """Prompts sampled per step: ``per_device_train_batch_size / num_generations``."""
        return self.per_device_train_batch_size // self.num_generations

    @property
    def eval_keys(self) -> tuple[str, ...]:
        """The metrics an evaluation adds to a step's row (`GRPORun.evaluate`)."""
        return EVAL_METRICS[: 2 if self.eval_samples else 1]

    def evaluates(self, step: int, end: int | None = None) -> bool:
        """Whether a run ending at `end` (default ``max_steps``) evaluates after `step`:
        every ``eval_every`` steps, and at its last step."""
        end = self.max_steps if end is None else end
        return bool(self.eval_every and step % self.eval_every == 0) or step == end

    def validate(self) -> None:
        """Raise a `WorkbenchError` naming the first bad setting and its fix."""

        def bad(problem: str, fix: str) -> None:
            raise WorkbenchError(problem, fix)

        # Why each bound: GRPO normalises within groups of >= 2 completions; a corrupt
        # latest checkpoint must still leave a good one (keep >= 2).

        check_credit(
            self.credit,
            'pass credit=wb.CreditParams(strategy="coupled"), or strategy="coupled" to '
            "GRPOConfig.replace",
        )
        # Each value is stored as the plain int or float it was checked as: a NumPy or
        # torch scalar would pass the check and then fail to be written to config.json.
        for name, minimum in _INTEGERS.items():
            value = v.integer(name, getattr(self, name), minimum=minimum, example=_DEFAULTS[name])
            object.__setattr__(self, name, value)
        object.__setattr__(self, "seed", v.seed("seed", self.seed))
        for name, bounds in _NUMBERS.items():
            value = v.number(name, getattr(self, name), example=_DEFAULTS[name], **bounds)
            object.__setattr__(self, name, value)
        if self.epsilon_high is not None:
            value = v.number("epsilon_high", self.epsilon_high, low=0, low_open=True, example=0.28)
            object.__setattr__(self, "epsilon_high", value)
        for name in ("chat", "fused_credit"):  # a NumPy bool is stored as a plain bool
            value = v.flag(name, getattr(self, name), f"pass {name}={_DEFAULTS[name]}")
            object.__setattr__(self, name, value)
        if self.device not in (None, "cpu", "cuda") and not (
            isinstance(self.device, str) and re.fullmatch(r"cuda:\d+", self.device)
        ):
            bad(f"device={self.device!r} is not a device", 'pass "cpu", "cuda", "cuda:N" or None')
        if self.per_device_train_batch_size % self.num_generations:
            bad(
                f"per_device_train_batch_size={self.per_device_train_batch_size} must be a "
                f"multiple of num_generations={self.num_generations} (it counts completions, "
                "as in TRL)",
                f"use e.g. per_device_train_batch_size={4 * self.num_generations}",
            )
        # A step samples its completions in one call, and an evaluation its eval_size x
        # eval_samples: more than one call samples was refused only once the run folder
        # was written (or, for a step, hung drawing its prompts).
        if self.per_device_train_batch_size > MAX_COMPLETIONS:
            bad(
                f"per_device_train_batch_size={self.per_device_train_batch_size} is more "
                f"than the {MAX_COMPLETIONS} completions one step can sample",
                f"pass per_device_train_batch_size of at most {MAX_COMPLETIONS}",
            )
        if self.eval_size * max(self.eval_samples, 1) > MAX_COMPLETIONS:
            times = f" x eval_samples={self.eval_samples}" if self.eval_samples else ""
            bad(
                f"eval_size={self.eval_size}{times} is more than the {MAX_COMPLETIONS} "
                "completions one evaluation can sample",
                "lower eval_size or eval_samples (eval_samples=0 skips the sampled accuracy)",
            )
        if self.loss_type not in ("dapo", "grpo"):
            bad(f"loss_type {self.loss_type!r} is not implemented", "use 'dapo' or 'grpo'")
        if self.scale_rewards not in ("group", "batch", "none"):
            bad(f"scale_rewards {self.scale_rewards!r}", "use 'group', 'batch' or 'none'")
        for name in ("model", "task"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                bad(
                    f"{name} must be a non-empty string, got {getattr(self, name)!r}",
                    f"pass e.g. {name}={_DEFAULTS[name]!r}",
                )
        if self.task.strip().lower() not in TASKS:  # get_task's rule, checked before any run
            bad(f"task {self.task!r} is not a known task", f"use one of {sorted(TASKS)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_dict` inverts it."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["credit"] = self.credit.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GRPOConfig:
        """Build a config from `to_dict` output (or flat credit keys), refusing unknown keys."""
        if not isinstance(d, dict):
            raise WorkbenchError(
                f"GRPOConfig.from_dict needs a dict of settings, got a {type(d).__name__}",
                "pass the dict of a run's config.json (GRPOConfig.to_dict())",
            )
        odd = [k for k in d if not isinstance(k, str)]
        if odd:  # failed as a raw "keywords must be strings"
            raise WorkbenchError(
                f"GRPOConfig.from_dict needs setting names as keys, got {odd[0]!r}",
                "pass the dict of a run's config.json (GRPOConfig.to_dict())",
            )
        if d.get("extra") == {}:  # written by runs from before the credit record: empty
            d = {k: v for k, v in d.items() if k != "extra"}
        return cls().replace(**d)

    def replace(self, **changes: Any) -> GRPOConfig:
        """A validated copy with some settings changed.

        Besides the fields, takes the credit's by name: ``strategy``, ``gamma_amp``,
        ``credit_layers`` (the credit's ``layers``) and any `RhythmParams` field; ``credit``
        may be a `CreditParams` or its ``to_dict`` form. A field given both ways must have
        one value (``strategy="coupled"`` beside ``credit={"strategy": "global"}`` is
        refused).
        """
        changes = dict(changes)
        given = "credit" in changes
        credit = changes.pop("credit", self.credit)
        explicit = None  # the credit fields `credit` gives: a record's all, a dict's own keys
        if isinstance(credit, dict):
            rhythm = credit.get("rhythm")
            explicit = {*credit, *(rhythm if isinstance(rhythm, dict) else ())}
            credit = CreditParams.from_dict(credit)
        flat = {k: changes.pop(k) for k in list(changes) if k in _CREDIT_KEYS}
        if "credit_layers" in flat:
            flat["layers"] = flat.pop("credit_layers")
        if flat:
            credit = check_credit(credit, 'pass credit=wb.CreditParams(strategy="coupled")')
            changed = credit.replace(**flat)
            # A field given both in `credit` and by name (a config.json holding "strategy"
            # and "credit") took the name's value without a word: which one was meant cannot
            # be told, so differing values are refused (equal ones, or a field the credit
            # dict leaves to its default, are fine).
            clash = [
                k
                for k in flat
                if given
                and (explicit is None or k in explicit)
                and _credit_field(changed, k) != _credit_field(credit, k)
            ]
            if clash:
                both = ", ".join(
                    f"{'credit_layers' if k == 'layers' else k}={flat[k]!r} but credit has "
                    f"{_credit_field(credit, k)!r}"
                    for k in clash
                )
                raise WorkbenchError(
                    f"conflicting credit settings: {both}",
                    "give each credit setting once: inside credit (its to_dict form in a "
                    "config.json) or by name beside it, not both with different values",
                )
            credit = changed
        _refuse_unknown(changes, listed=_DEFAULTS.keys() | _CREDIT_KEYS)
        return dataclasses.replace(self, credit=credit, **changes)


def _credit_field(credit: CreditParams, key: str) -> Any:
    """The value of `credit`'s field `key` (a `RhythmParams` field's inside ``rhythm``)."""
    return getattr(credit if hasattr(credit, key) else credit.rhythm, key)


_CREDIT_KEYS = {
    "strategy",
    "gamma_amp",
    "credit_layers",
    *(f.name for f in dataclasses.fields(RhythmParams)),
}


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
#: Integer settings and their minimum.
_INTEGERS = {
    "max_steps": 1,
    "seed": 0,
    "num_generations": 2,
    "per_device_train_batch_size": 2,
    "warmup_steps": 0,
    "num_iterations": 1,
    "max_completion_length": 1,
    "eval_every": 0,
    "eval_size": 1,
    "eval_samples": 0,
    "save_every": 1,
    "keep_checkpoints": 2,
}
#: Real settings and their bounds.
_NUMBERS: dict[str, dict[str, Any]] = {
    "learning_rate": {"low": 0, "low_open": True},
    "adam_beta1": {"low": 0, "high": 1, "high_open": True},
    "adam_beta2": {"low": 0, "high": 1, "high_open": True},
    "adam_epsilon": {"low": 0, "low_open": True},
    "weight_decay": {"low": 0},
    "max_grad_norm": {"low": 0, "low_open": True},
    "epsilon": {"low": 0, "high": 1, "low_open": True, "high_open": True},
    "beta": {"low": 0},
    "entropy_coef": {"low": 0},
    "temperature": {"low": 0, "low_open": True},
    "top_p": {"low": 0, "high": 1, "low_open": True},
}


def _refuse_unknown(given: Any, listed: Any) -> None:
    """Refuse names in `given` that are no field of `GRPOConfig`; the fix lists `listed`
    (what the caller takes: `replace` also takes the credit's fields by name)."""
    unknown = sorted(set(given) - _DEFAULTS.keys())
    if unknown:
        raise WorkbenchError(
            f"unknown GRPO settings {unknown}",
            f"check the spelling; known settings are {sorted(listed)}",
        )


_generated_init = GRPOConfig.__init__


@functools.wraps(_generated_init)
def _init(self: GRPOConfig, *args: Any, **kwargs: Any) -> None:
    # The dataclass's own __init__ answered GRPOConfig(strategy="coupled") (TRL's habit of
    # flat settings) and a misspelt name with a raw "unexpected keyword argument".
    flat = sorted(set(kwargs) & _CREDIT_KEYS - _DEFAULTS.keys())
    if flat:
        name = flat[0]
        raise WorkbenchError(
            f"GRPOConfig takes the credit whole, as credit=: got {', '.join(flat)} by name",
            f"pass credit=wb.CreditParams({name}=...), or GRPOConfig(...).replace({name}=...)"
            " (replace and from_dict take the credit's fields by name)",
        )
    _refuse_unknown(kwargs, listed=_DEFAULTS.keys())
    _generated_init(self, *args, **kwargs)


GRPOConfig.__init__ = _init  # type: ignore[method-assign]
