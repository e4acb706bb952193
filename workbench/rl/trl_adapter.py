"""Rhythm credit inside TRL: a `trl.GRPOTrainer` whose advantages are per-token.

`RhythmGRPOTrainer` runs wherever TRL runs (accelerate, several GPUs, DeepSpeed), with the
same credit code as the native loop (`rollout_gammas`). After TRL has generated and scored
a batch, it replaces the sequence advantages ``A`` of shape ``(B,)`` by ``A[:, None] *
gamma`` of shape ``(B, T)``, which TRL's loss accepts as they are.

    from workbench.rl import RhythmGRPOTrainer
    trainer = RhythmGRPOTrainer(model=hf_model, processing_class=tokenizer,
                                reward_funcs=task.reward, args=trl.GRPOConfig(...),
                                train_dataset=dataset,
                                credit=wb.CreditParams(strategy="coupled"))
    trainer.train()

Caveats:
    - TRL logs the advantages before this override; the gamma statistics are logged
      separately as ``credit/gamma_mean`` and ``credit/amplified_frac``.
    - The attention pass uses a TransformerBridge over a structural copy of the policy
      (`workbench.models.bridge_model`: the policy's own parameters, eager attention),
      built once and reused, under ``torch.no_grad``; TRL's model object itself is left
      untouched, so it samples and saves as a plain model.
"""

from __future__ import annotations

from typing import Any

import torch

from .._compat import check_versions, grpo_trainer_base, log_trl_metric
from ..attention.params import CreditParams
from ..errors import WorkbenchError
from ..models import bridge_model
from .credit import rollout_gammas

try:
    _GRPOTrainer = grpo_trainer_base()
except ImportError as e:  # pragma: no cover - trl is a dependency
    raise ImportError("RhythmGRPOTrainer needs TRL: pip install trl") from e
check_versions()

__all__ = ["RhythmGRPOTrainer", "unpad_rollouts"]


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


class RhythmGRPOTrainer(_GRPOTrainer):
    """`trl.GRPOTrainer` with the paper's per-token credit ``gamma[t] * A_i``.

    Args:
        *args, **kwargs: as for `trl.GRPOTrainer`.
        credit: the `CreditParams` (strategy ``"coupled"``, ``"global"``, ``"local"``,
            ``"random"``, ``"entropy"``, ``"bottom-*"`` or ``"none"``, amplification,
            layers, rhythm settings); default ``CreditParams()``, the paper's RL setting
            with the coupled strategy. The same record as `GRPOConfig.credit`.
        seed: base seed of the ``"random"`` control (step s uses ``seed + 100_000 * s``).
    """

    def __init__(
        self,
        *args: Any,
        credit: CreditParams | None = None,
        seed: int = 0,
        **kwargs: Any,
    ):
        credit = CreditParams() if credit is None else credit
        if not isinstance(credit, CreditParams):  # refused before TRL builds anything
            raise WorkbenchError(
                f"credit must be a wb.CreditParams, got {type(credit).__name__}",
                'pass credit=wb.CreditParams(strategy="coupled", gamma_amp=1.5)',
            )
        super().__init__(*args, **kwargs)
        self.credit = credit
        self.credit_seed = seed
        self._bridge = None
        self._bridge_of = None
        self.last_rollouts: dict[str, Any] | None = None

    def _credit_bridge(self):
        policy = self.accelerator.unwrap_model(self.model)
        if self._bridge is None or self._bridge_of is not policy:
            # The bridge hooks a copy: TRL's model stays plain (sampling, checkpoints).
            self._bridge = bridge_model(policy, self.processing_class)
            self._bridge_of = policy
        return self._bridge

    def after_scoring(self, out: dict[str, Any]) -> dict[str, Any]:
        """Replace the sequence advantages ``(B,)`` of a scored batch by ``A[:, None] * gamma``."""
        prompts, completions = unpad_rollouts(
            out["prompt_ids"], out["prompt_mask"], out["completion_ids"], out["completion_mask"]
        )
        width = out["completion_ids"].shape[1]
        if self.credit.strategy == "none":
            gamma = torch.ones(len(completions), width)
        else:
            gamma = rollout_gammas(
                self._credit_bridge(),
                prompts,
                completions,
                self.credit,
                seed=self.credit_seed + 100_000 * int(self.state.global_step),
                pad_to=width,
            )
        gamma = gamma.to(out["advantages"].device)
        advantages = out["advantages"]
        if advantages.dim() == 1:
            advantages = advantages[:, None]
        out["advantages"] = advantages * gamma
        mask = out["completion_mask"].bool()
        log_trl_metric(self, "credit/gamma_mean", float(gamma[mask].mean()))
        log_trl_metric(self, "credit/amplified_frac", float((gamma[mask] > 1).float().mean()))
        self.last_rollouts = {"prompts": prompts, "completions": completions, "gamma": gamma.cpu()}
        return out
