"""Reinforcement learning with rhythm credit: GRPO whose per-token advantage is ``gamma * A``.

    import workbench as wb
    run = wb.rl.train(wb.rl.GRPOConfig(max_steps=20).replace(strategy="coupled"), out="runs/coupled")
    run = wb.rl.resume("runs/coupled")                 # after an interruption

The credit (`rollout_gammas`) is shared with `RhythmGRPOTrainer`, the TRL subclass that runs
the same credit wherever TRL runs.
"""

from ..trace import sample_completions
from .checkpoint import latest_checkpoint, list_checkpoints, read_metrics
from .config import GRPOConfig
from .credit import rollout_gammas
from .experiment import Experiment, MissingEvaluationWarning, UnmatchedSeedsWarning, run_experiment
from .loss import grpo_advantages, grpo_loss, token_logps
from .runs import resume, train
from .trainer import GRPORun

__all__ = [
    "Experiment",
    "GRPOConfig",
    "GRPORun",
    "MissingEvaluationWarning",
    "RhythmGRPOTrainer",
    "UnmatchedSeedsWarning",
    "grpo_advantages",
    "grpo_loss",
    "latest_checkpoint",
    "list_checkpoints",
    "read_metrics",
    "resume",
    "rollout_gammas",
    "run_experiment",
    "sample_completions",
    "token_logps",
    "train",
]


def __getattr__(name: str):
    # TRL is imported only when its trainer is asked for (it takes seconds to import).
    if name in ("RhythmGRPOTrainer", "unpad_rollouts"):
        from . import trl_adapter

        return getattr(trl_adapter, name)
    raise AttributeError(f"module 'workbench.rl' has no attribute {name!r}")
