"""The same credit inside TRL's GRPOTrainer, on CPU, with the tiny reasoner."""

from __future__ import annotations

import pytest
import torch

from workbench.models import bridge_model
from workbench.rl import rollout_gammas

pytestmark = pytest.mark.slow


def test_two_trl_steps_apply_the_native_credit(tmp_path, tiny):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig as TRLConfig

    from workbench.attention import CreditParams
    from workbench.models import model_path
    from workbench.rl import RhythmGRPOTrainer
    from workbench.tasks import get_task

    task = get_task("countdown")
    dataset = Dataset.from_list([{"prompt": p.prompt} for p in task.generate(8, seed=0)])
    folder = model_path("tiny-reasoner")
    policy = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    args = TRLConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=40,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        learning_rate=5e-5,
        seed=0,
    )

    class Probe(RhythmGRPOTrainer):
        """Keeps the policy's weights as they were when the credit was computed."""

        def after_scoring(self, out):
            out = super().after_scoring(out)
            self.weights_at_credit = {k: v.clone() for k, v in policy.state_dict().items()}
            return out

    trainer = Probe(
        model=policy,
        processing_class=AutoTokenizer.from_pretrained(folder),
        reward_funcs=task.reward,
        args=args,
        train_dataset=dataset,
        credit=CreditParams(strategy="coupled"),
    )
    trainer.train()
    trained = {k: v.clone() for k, v in policy.state_dict().items()}
    assert trainer.state.global_step == 2
    logged = [h for h in trainer.state.log_history if "credit/gamma_mean" in h]
    assert len(logged) == 2 and all(h["credit/gamma_mean"] > 1.0 for h in logged)

    # For the same rollouts, the native path's credit (unpadded lists, a bridge loaded by
    # the zoo with the trained weights) equals the weights TRL applied.
    last = trainer.last_rollouts
    # The native loop's credit: a bridge over the policy (as GRPORun builds it),
    # with the weights the policy had when TRL computed its credit.
    policy.load_state_dict(trainer.weights_at_credit)
    bridge = bridge_model(policy, trainer.processing_class)
    native = rollout_gammas(
        bridge,
        last["prompts"],
        last["completions"],
        CreditParams(strategy="coupled"),
        pad_to=last["gamma"].shape[1],
    )
    assert torch.equal(native, last["gamma"])
    assert list(policy.state_dict()) == list(before), "TRL's model keeps plain HF keys"
    assert any(not torch.equal(before[k], v) for k, v in trained.items()), "weights must move"
