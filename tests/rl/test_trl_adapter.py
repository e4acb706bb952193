"""The same credit inside TRL's GRPOTrainer, on CPU, with the tiny reasoner."""

from __future__ import annotations

import pytest
import torch

from workbench.models import bridge_model
from workbench.rl import rollout_gammas

pytestmark = pytest.mark.slow

#: A small TRL configuration for the fixed-batch tests.
TRL_ARGS = dict(
    use_cpu=True,
    bf16=False,
    report_to="none",
    per_device_train_batch_size=8,
    num_generations=4,
    max_completion_length=40,
    loss_type="dapo",
)


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
        **{**TRL_ARGS, "per_device_train_batch_size": 16},
        output_dir=str(tmp_path),
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
    assert trainer.fuses_credit, "TRL's defaults (gradient checkpointing on) fuse the credit"
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


@pytest.mark.parametrize("fused", [True, False])
def test_trl_loss_is_the_clipped_surrogate_with_per_token_advantages(tmp_path, tiny, fused):
    """TRL's loss for a fixed batch equals, by hand, ``sum_t -min(r_t A_i g_t,
    clip(r_t) A_i g_t) / tokens`` (TRL's "dapo" loss) with the workbench's gamma."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig as TRLConfig

    from workbench.attention import CreditParams
    from workbench.models import model_path
    from workbench.rl import RhythmGRPOTrainer
    from workbench.tasks import get_task
    from workbench.trace import sample_completions

    task = get_task("countdown")
    problems = task.generate(2, seed=5)
    folder = model_path("tiny-reasoner")
    tok = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    credit = CreditParams(strategy="coupled")
    trainer = RhythmGRPOTrainer(
        model=policy,
        processing_class=tok,
        reward_funcs=task.reward,
        args=TRLConfig(**TRL_ARGS, output_dir=str(tmp_path)),
        train_dataset=Dataset.from_list([{"prompt": p.prompt} for p in problems]),
        credit=credit,
        fused_credit=fused,
    )
    assert trainer.fuses_credit == fused

    # A fixed batch as TRL lays it out: prompts of two lengths (left-padded), completions
    # right-padded, sequence advantages, and old log-probs that make the clip bite.
    prompts = [tok(p.prompt)["input_ids"] for p in problems]
    prompts[1] = prompts[1] + tok(" now")["input_ids"]  # a second length: left padding
    torch.manual_seed(0)
    completions = sample_completions(
        policy, prompts, tokenizer=tok, num_generations=4, max_new_tokens=40, temperature=1.0
    )
    rows = [(prompts[i // 4], c) for i, c in enumerate(completions)]
    p_w, c_w = max(len(p) for p, _ in rows), max(len(c) for _, c in rows)
    pad = tok.pad_token_id or 0
    prompt_ids = torch.full((8, p_w), pad)
    prompt_mask = torch.zeros(8, p_w, dtype=torch.long)
    completion_ids = torch.full((8, c_w), pad)
    completion_mask = torch.zeros(8, c_w, dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        prompt_ids[i, p_w - len(p) :], prompt_mask[i, p_w - len(p) :] = torch.tensor(p), 1
        completion_ids[i, : len(c)], completion_mask[i, : len(c)] = torch.tensor(c), 1
    advantages = torch.tensor([1.0, -0.5, 0.8, -1.2, 0.3, -0.9, 1.5, -0.1])

    # By hand: log-probs from a plain forward, gamma from the standalone pass.
    ids = torch.cat([prompt_ids, completion_ids], 1)
    mask = torch.cat([prompt_mask, completion_mask], 1)
    with torch.no_grad():
        logits = policy(input_ids=ids, attention_mask=mask).logits[:, p_w - 1 : -1].float()
    logps = logits.log_softmax(-1).gather(-1, completion_ids[..., None])[..., 0]
    old = logps + 0.3 * torch.randn(logps.shape, generator=torch.Generator().manual_seed(1))
    gamma = rollout_gammas(
        bridge_model(policy, tok), [p for p, _ in rows], [c for _, c in rows], credit,
        pad_to=c_w,
    )  # fmt: skip
    assert (gamma > 1).any()
    m = completion_mask.float()

    def by_hand(g):
        adv = advantages[:, None] * g
        ratio = torch.exp(logps - old)
        clipped = ratio.clamp(1 - trainer.epsilon_low, 1 + trainer.epsilon_high)
        return float((-torch.min(ratio * adv, clipped * adv) * m).sum() / m.sum())

    inputs = {
        "prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "advantages": advantages.clone(), "num_items_in_batch": m.sum(),
        "old_per_token_logps": old,
    }  # fmt: skip
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    if not fused:
        inputs = trainer.after_scoring(inputs)
    loss = float(trainer.compute_loss(trainer.model, inputs).detach())
    assert loss == pytest.approx(by_hand(gamma), rel=1e-4, abs=1e-6)
    assert abs(by_hand(gamma) - by_hand(torch.ones_like(gamma))) > 1e-3, "gamma must matter"
    assert torch.equal(trainer.last_rollouts["gamma"], gamma)
