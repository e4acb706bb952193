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


def _fixed_batch(tok, prompts, completions):
    """TRL's layout of ``(prompt, completion)`` rows: prompts left-padded, completions
    right-padded, unit sequence advantages."""
    n = len(prompts)
    p_w, c_w = max(map(len, prompts)), max(map(len, completions))
    pad = tok.pad_token_id or 0
    batch = {
        "prompt_ids": torch.full((n, p_w), pad),
        "prompt_mask": torch.zeros(n, p_w, dtype=torch.long),
        "completion_ids": torch.full((n, c_w), pad),
        "completion_mask": torch.zeros(n, c_w, dtype=torch.long),
        "advantages": torch.linspace(-1.0, 1.0, n),
    }
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        batch["prompt_ids"][i, p_w - len(p) :] = torch.tensor(p)
        batch["prompt_mask"][i, p_w - len(p) :] = 1
        batch["completion_ids"][i, : len(c)] = torch.tensor(c)
        batch["completion_mask"][i, : len(c)] = 1
    batch["num_items_in_batch"] = batch["completion_mask"].sum()
    return batch


def _trainer(tmp_path, policy, tok, credit, **args):
    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig

    from workbench.rl import RhythmGRPOTrainer

    trainer = RhythmGRPOTrainer(
        model=policy,
        processing_class=tok,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=TRLConfig(**{**TRL_ARGS, **args}, output_dir=str(tmp_path)),
        train_dataset=Dataset.from_list([{"prompt": "1 2 3"}] * 4),
        credit=credit,
    )
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def _tiny_rows(tok, widths, seed=0):
    """Countdown prompts of two lengths with random completions of the given widths."""
    from workbench.tasks import get_task

    problems = get_task("countdown").generate(2, seed=5)
    prompts = [tok(p.prompt)["input_ids"] for p in problems]
    prompts[1] = prompts[1] + tok(" now")["input_ids"]  # a second length: left padding
    g = torch.Generator().manual_seed(seed)
    completions = [torch.randint(3, len(tok) - 1, (w,), generator=g).tolist() for w in widths]
    return [prompts[i % 2] for i in range(len(widths))], completions


def _standalone_coupled(tmp_path):
    """A tiny-reasoner trainer with the coupled credit on the standalone pass, and a fixed
    batch of four rollouts (two prompt lengths)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.attention import CreditParams
    from workbench.models import model_path

    folder = model_path("tiny-reasoner")
    tok = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    trainer = _trainer(tmp_path, policy, tok, CreditParams(strategy="coupled"))
    trainer.fused_credit = False
    return trainer, _fixed_batch(tok, *_tiny_rows(tok, [36, 34, 30, 36]))


@pytest.mark.parametrize("arch", ["qwen3-next", "bloom", "llama-dropout", "gpt2-no-dropout"])
def test_models_the_fused_pass_cannot_see_fall_back_to_the_standalone_pass(
    tmp_path, hybrid_toy, make_toy, arch
):
    """A hybrid model's linear-attention layers (Qwen3-Next) and a class that computes
    attention itself (BLOOM) never reach the fused pass, and attention dropout in the loss
    forward cannot be reproduced by it (a Llama with ``attention_dropout=0.1``): the
    trainer falls back to the standalone pass, with the same weights as `rollout_gammas`,
    instead of failing after the first rollouts (``NotRouted``, or the dropout refusal).
    Nor can it see a left-padded rollout at its own positions where the model's position
    embeddings are absolute (GPT-2's learned ``wpe``, read at the batch column): its
    weights differed from `rollout_gammas`'s on every left-padded row, without a word."""
    import copy

    import transformers

    from workbench.attention import CreditParams
    from workbench.models import sampler

    if arch == "qwen3-next":
        bridge = hybrid_toy(arch)
    elif arch == "llama-dropout":
        bridge = make_toy(
            transformers.LlamaConfig, transformers.LlamaForCausalLM, attention_dropout=0.1
        )
    elif arch == "gpt2-no-dropout":  # dropout off, as GRPO fine-tuning sets it
        no_dropout = dict(attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
        bridge = make_toy(
            transformers.GPT2Config,
            transformers.GPT2LMHeadModel,
            num_key_value_heads=None,
            **no_dropout,
        )
    else:
        bridge = make_toy(
            transformers.BloomConfig, transformers.BloomForCausalLM, num_key_value_heads=None
        )
    tok = bridge.tokenizer
    policy = copy.deepcopy(sampler(bridge))  # TRL's set-up must not touch the shared toy
    credit = CreditParams(strategy="coupled", layers="all")
    trainer = _trainer(tmp_path, policy, tok, credit)
    assert not trainer.fuses_credit

    prompts, completions = _tiny_rows(tok, [24, 20, 16, 24])
    inputs = trainer.after_scoring(_fixed_batch(tok, prompts, completions))
    advantages = inputs["advantages"].clone()
    trainer.compute_loss(trainer.model, inputs)
    want = rollout_gammas(bridge_model(policy, tok), prompts, completions, credit, pad_to=24)
    assert (want > 1).any()
    assert torch.equal(trainer.last_rollouts["gamma"], want)
    assert torch.equal(advantages, torch.linspace(-1.0, 1.0, 4)[:, None] * want)


def test_credit_layers_the_model_lacks_are_refused_when_the_trainer_is_built(tmp_path, tiny):
    """Refused before TRL samples anything (it was refused after the first rollouts)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.attention import CreditParams
    from workbench.errors import WorkbenchError
    from workbench.models import model_path

    folder = model_path("tiny-reasoner")
    tok = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    n = policy.config.num_hidden_layers
    with pytest.raises(WorkbenchError, match=f"layer {n} is out of range"):
        _trainer(tmp_path, policy, tok, CreditParams(strategy="coupled", layers=[0, n]))


def test_a_tokenizer_of_another_model_is_refused_when_the_trainer_is_built(tmp_path, smol):
    """SmolLM2's tokenizer with the tiny reasoner built fine, then TRL's generate failed with
    a raw IndexError inside torch's embedding."""
    from transformers import AutoModelForCausalLM

    from workbench.attention import CreditParams
    from workbench.errors import WorkbenchError
    from workbench.models import model_path

    policy = AutoModelForCausalLM.from_pretrained(model_path("tiny-reasoner"))
    with pytest.raises(WorkbenchError, match="holds 49152 tokens but the model embeds") as e:
        _trainer(tmp_path, policy, smol.tokenizer, CreditParams(strategy="coupled"))
    assert "tokenizer saved with the model" in e.value.fix


def test_a_strategy_name_is_the_credit_record_with_that_strategy(tmp_path, tiny):
    """As `wb.gamma_many` takes it (the trainer refused "coupled" as not a CreditParams)."""
    from transformers import AutoModelForCausalLM

    from workbench.attention import CreditParams
    from workbench.models import model_path

    policy = AutoModelForCausalLM.from_pretrained(model_path("tiny-reasoner"))
    trainer = _trainer(tmp_path, policy, tiny.tokenizer, "global")
    assert trainer.credit == CreditParams(strategy="global")


def test_random_control_draws_anew_in_each_micro_batch_of_a_step(tmp_path, tiny):
    """With gradient accumulation the fused credit runs once per micro-batch, all in one
    step: the k-th rollout of the second micro-batch must not reuse the first's seed (it
    drew the same positions as the k-th of the first whenever their lengths matched)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.attention import CreditParams
    from workbench.models import model_path

    folder = model_path("tiny-reasoner")
    tok = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    credit = CreditParams(strategy="random")
    trainer = _trainer(
        tmp_path, policy, tok, credit, gradient_accumulation_steps=2, per_device_train_batch_size=4
    )
    assert trainer.fuses_credit
    # the control's seed is TRL's own unless given, so a sweep over args.seed draws anew
    assert trainer.credit_seed == trainer.args.seed == 42
    prompts, completions = _tiny_rows(tok, [30, 30, 30, 30])
    drawn = []
    for _ in range(2):  # the same rollouts in both micro-batches: only the seed differs
        trainer.compute_loss(trainer.model, _fixed_batch(tok, prompts, completions))
        drawn.append(trainer.last_rollouts["gamma"])
    bridge = bridge_model(policy, tok)
    for k, seed in enumerate([42, 46]):  # the second micro-batch continues the step's seeds
        want = rollout_gammas(bridge, prompts, completions, credit, seed=seed, pad_to=30)
        assert torch.equal(drawn[k], want)
    assert not torch.equal(drawn[0], drawn[1])


def test_the_random_controls_seed_follows_trl_unless_given(tmp_path, tiny):
    """A TRL seed sweep of the random control draws other tokens in each run (the
    control's seed was a fixed 0 whatever args.seed said); an explicit seed wins."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig as TRLConfig

    from workbench.attention import CreditParams
    from workbench.models import model_path
    from workbench.rl import RhythmGRPOTrainer

    folder = model_path("tiny-reasoner")
    tok = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)

    def trainer(**kwargs):
        return RhythmGRPOTrainer(
            model=policy,
            processing_class=tok,
            reward_funcs=lambda completions, **kw: [0.0] * len(completions),
            args=TRLConfig(**{**TRL_ARGS, "seed": 7}, output_dir=str(tmp_path)),
            train_dataset=Dataset.from_list([{"prompt": "1 2 3"}] * 4),
            credit=CreditParams(strategy="random"),
            **kwargs,
        )

    assert trainer().credit_seed == 7
    assert trainer(seed=3).credit_seed == 3


@pytest.mark.parametrize("fused", [True, False])
def test_logged_gamma_statistics_pool_the_micro_batches(tmp_path, tiny, fused):
    """``credit/gamma_mean`` and ``credit/amplified_frac`` are means over every completion
    token credited since the last log, not means of per-micro-batch means (which made a
    fused run with gradient accumulation log other numbers than a standalone one)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.attention import CreditParams
    from workbench.models import model_path

    folder = model_path("tiny-reasoner")
    tok = AutoTokenizer.from_pretrained(folder)
    policy = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    trainer = _trainer(
        tmp_path,
        policy,
        tok,
        CreditParams(strategy="coupled"),
        gradient_accumulation_steps=2,
        per_device_train_batch_size=4,
    )
    trainer.fused_credit = fused
    gammas = []
    for widths in ([36, 34, 30, 36], [14, 12, 12, 10]):  # two micro-batches, unequal sizes
        inputs = _fixed_batch(tok, *_tiny_rows(tok, widths, seed=len(gammas)))
        if not fused:
            inputs = trainer.after_scoring(inputs)
        trainer.compute_loss(trainer.model, inputs)
        gammas.append(trainer.last_rollouts["gamma"][inputs["completion_mask"].bool()])
    g = torch.cat(gammas)
    assert abs(float(gammas[0].mean() - gammas[1].mean())) > 1e-3, "the test needs two means"
    trainer.log({})
    logged = trainer.state.log_history[-1]
    assert logged["credit/gamma_mean"] == pytest.approx(float(g.double().mean()), rel=1e-6)
    assert logged["credit/amplified_frac"] == pytest.approx(float((g > 1).float().mean()))


def test_gamma_statistics_leave_out_tool_results(tmp_path, tiny):
    """Tokens a tool inserted into a completion (TRL's ``tool_mask`` 0) are outside TRL's
    loss; the logged credit statistics leave them out too."""
    trainer, inputs = _standalone_coupled(tmp_path)
    inputs["tool_mask"] = torch.ones_like(inputs["completion_mask"])
    inputs["tool_mask"][:, 10:20] = 0  # a tool's answer in the middle of each completion
    inputs = trainer.after_scoring(inputs)
    model_tokens = (inputs["completion_mask"] * inputs["tool_mask"]).bool()
    g = trainer.last_rollouts["gamma"][model_tokens]
    everything = trainer.last_rollouts["gamma"][inputs["completion_mask"].bool()]
    assert abs(float(g.mean() - everything.mean())) > 1e-4, "the test needs the tool tokens"
    trainer.log({})
    logged = trainer.state.log_history[-1]
    assert logged["credit/gamma_mean"] == pytest.approx(float(g.double().mean()), rel=1e-6)
    assert logged["credit/amplified_frac"] == pytest.approx(float((g > 1).float().mean()))


def test_fused_credit_trains_with_continuous_batching(tmp_path, tiny):
    """TRL samples inside the training step; with ``use_transformers_continuous_batching``
    transformers refuses any attention but its own, so the fused step routes the attention
    only after sampling (it failed with "Implementation workbench is not supported for
    continuous batching")."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig as TRLConfig

    from workbench.attention import CreditParams
    from workbench.models import model_path
    from workbench.rl import RhythmGRPOTrainer
    from workbench.tasks import get_task

    task = get_task("countdown")
    folder = model_path("tiny-reasoner")
    trainer = RhythmGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True),
        processing_class=AutoTokenizer.from_pretrained(folder),
        reward_funcs=task.reward,
        args=TRLConfig(
            **{**TRL_ARGS, "max_completion_length": 16},
            output_dir=str(tmp_path),
            max_steps=1,
            logging_steps=1,
            save_strategy="no",
            use_transformers_continuous_batching=True,
            # a small paged cache: the default one takes most of a minute to allocate
            transformers_continuous_batching_config={"num_blocks": 16, "max_batch_tokens": 256},
        ),
        train_dataset=Dataset.from_list([{"prompt": p.prompt} for p in task.generate(4)]),
        credit=CreditParams(strategy="coupled"),
    )
    assert trainer.fuses_credit
    trainer.train()
    logged = [h for h in trainer.state.log_history if "credit/gamma_mean" in h]
    assert len(logged) == 1 and logged[0]["credit/gamma_mean"] > 1.0


def test_a_resumed_run_logs_and_trains_as_one_never_interrupted(tmp_path, tiny):
    """Stopped at a checkpoint between two logs (``save_steps=2``, ``logging_steps=3``)
    and resumed with ``train(resume_from_checkpoint=...)``: the same weights, the same
    ``"random"``-control seeds (keyed on the global step), and the same ``credit/*`` row.
    The gamma statistics pooled before the checkpoint were lost, so the resumed row covered
    only the step after it (TRL's own metrics, pooled in memory, still are)."""
    import os

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig as TRLConfig

    from workbench.attention import CreditParams
    from workbench.models import model_path
    from workbench.rl import RhythmGRPOTrainer
    from workbench.rl.trl_adapter import CREDIT_STATE
    from workbench.tasks import get_task

    folder = model_path("tiny-reasoner")
    prompts = [{"prompt": p.prompt} for p in get_task("countdown").generate(12, seed=0)]

    class StopAt2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 2

    def trainer(out, callbacks=()):
        t = RhythmGRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True),
            processing_class=AutoTokenizer.from_pretrained(folder),
            # rewards that differ within a group, so that the weights move
            reward_funcs=lambda completions, **kw: [float(len(set(c))) for c in completions],
            args=TRLConfig(
                **{**TRL_ARGS, "max_completion_length": 16},
                output_dir=str(out),
                max_steps=3,
                logging_steps=3,
                save_strategy="steps",
                save_steps=2,
                learning_rate=5e-4,
                seed=0,
            ),
            train_dataset=Dataset.from_list(prompts),
            credit=CreditParams(strategy="coupled"),
            callbacks=list(callbacks),
        )
        seed = t._seed
        t.seeds = []
        t._seed = lambda n: t.seeds.append(seed(n)) or t.seeds[-1]
        return t

    whole = trainer(tmp_path / "whole")
    whole.train()
    first = trainer(tmp_path / "cut", [StopAt2()])
    first.train()
    checkpoint = tmp_path / "cut" / "checkpoint-2"
    assert (checkpoint / CREDIT_STATE).exists()
    assert not [f for f in os.listdir(checkpoint) if f.endswith(".tmp")]
    rest = trainer(tmp_path / "cut")
    rest.train(resume_from_checkpoint=str(checkpoint))

    assert whole.seeds == first.seeds + rest.seeds == [0, 100_000, 200_000]
    want, got = whole.model.state_dict(), rest.model.state_dict()
    assert max(float((want[k] - got[k]).abs().max()) for k in want) == 0.0
    assert any(not torch.equal(want[k], first.model.state_dict()[k]) for k in want)

    def credit_rows(t):
        return [
            {k: v for k, v in h.items() if k.startswith("credit/") or k == "step"}
            for h in t.state.log_history
            if "credit/gamma_mean" in h
        ]

    assert credit_rows(whole) == credit_rows(rest) and len(credit_rows(rest)) == 1


def test_resuming_the_same_trainer_after_an_interrupt_draws_the_steps_seeds_anew(tmp_path, tiny):
    """Interrupted (KeyboardInterrupt in a notebook) after the first micro-batch of a step
    past the last checkpoint, then resumed from it in the same object: the resumed step's
    micro-batches draw the step's own ``"random"`` seeds from the start (they continued the
    interrupted step's count, 200_004 and 200_008 instead of 200_000 and 200_004)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig as TRLConfig

    from workbench.attention import CreditParams
    from workbench.models import model_path
    from workbench.rl import RhythmGRPOTrainer
    from workbench.tasks import get_task

    folder = model_path("tiny-reasoner")

    class Interrupt(TrainerCallback):
        armed = True

        def on_substep_end(self, args, state, control, **kwargs):
            if self.armed and state.global_step == 2:
                self.armed = False
                raise KeyboardInterrupt

    trainer = RhythmGRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True),
        processing_class=AutoTokenizer.from_pretrained(folder),
        reward_funcs=lambda completions, **kw: [float(len(set(c))) for c in completions],
        args=TRLConfig(
            **{**TRL_ARGS, "max_completion_length": 16, "per_device_train_batch_size": 4},
            gradient_accumulation_steps=2,
            output_dir=str(tmp_path),
            max_steps=3,
            save_strategy="steps",
            save_steps=2,
            seed=0,
        ),
        train_dataset=Dataset.from_list(
            [{"prompt": p.prompt} for p in get_task("countdown").generate(12, seed=0)]
        ),
        credit=CreditParams(strategy="random"),
        callbacks=[Interrupt()],
    )
    seed, seeds = trainer._seed, []
    trainer._seed = lambda n: seeds.append(seed(n)) or seeds[-1]
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert seeds == [0, 4, 100_000, 100_004, 200_000]
    seeds.clear()
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert seeds == [200_000, 200_004]


def test_a_bridge_from_load_model_trains_the_plain_model_it_shares_parameters_with(tmp_path):
    """TRL sampled on the bridge `wb.load_model` returns and failed deep inside
    TransformerLens (a raw ValueError about the attention mask) once `train` ran. The
    trainer takes the plain model the bridge was built over: the same parameter objects,
    so the step TRL takes moves the bridge the user holds."""
    from datasets import Dataset
    from trl import GRPOConfig as TRLConfig

    import workbench as wb
    from workbench.attention import CreditParams
    from workbench.models import sampler
    from workbench.rl import RhythmGRPOTrainer

    bridge = wb.load_model("tiny-reasoner", device="cpu")  # its own: TRL sets the model up
    plain = sampler(bridge)
    assert {id(p) for p in bridge.parameters()} == {id(p) for p in plain.parameters()}
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    trainer = RhythmGRPOTrainer(
        bridge,  # positional, as TRL's signature allows
        processing_class=bridge.tokenizer,
        # distinct rewards within each group: non-zero advantages, so the weights move
        reward_funcs=lambda completions, **kw: [float(i) for i in range(len(completions))],
        args=TRLConfig(
            **{**TRL_ARGS, "max_completion_length": 8},
            output_dir=str(tmp_path),
            max_steps=1,
            save_strategy="no",
            learning_rate=1e-3,
        ),
        train_dataset=Dataset.from_list([{"prompt": "1 2 3"}] * 8),
        credit=CreditParams(strategy="coupled"),
    )
    assert trainer.model is plain
    trainer.train()
    assert trainer.state.global_step == 1
    moved = [k for k, v in plain.state_dict().items() if not torch.equal(before[k], v)]
    assert moved, "the step moved the plain model's weights"
    assert {id(p) for p in bridge.parameters()} == {id(p) for p in plain.parameters()}


def test_a_task_object_as_reward_funcs_is_refused_naming_its_reward_method(tmp_path, tiny):
    """``reward_funcs=task`` (for ``task.reward``) failed inside TRL with a raw
    AttributeError; it is refused before TRL builds anything, naming ``task.reward``."""
    from transformers import AutoModelForCausalLM

    from workbench.errors import WorkbenchError
    from workbench.models import model_path
    from workbench.rl import RhythmGRPOTrainer
    from workbench.tasks import get_task

    policy = AutoModelForCausalLM.from_pretrained(model_path("tiny-reasoner"))
    task = get_task("countdown")
    for reward_funcs in (task, [task.reward, task]):
        with pytest.raises(WorkbenchError, match="holds a Countdown object, not its reward") as e:
            RhythmGRPOTrainer(model=policy, processing_class=tiny.tokenizer,
                              reward_funcs=reward_funcs)  # fmt: skip
        assert "reward_funcs=task.reward" in e.value.fix
    with pytest.raises(WorkbenchError, match="holds a int, which TRL cannot call") as e:
        RhythmGRPOTrainer(policy, 3, processing_class=tiny.tokenizer)
    assert "task.reward" in e.value.fix


def test_args_other_than_trls_grpo_config_are_refused_when_the_trainer_is_built(tiny):
    """The workbench's own ``wb.rl.GRPOConfig`` (the native loop's, same names) or a dict
    as ``args`` failed inside TRL's set-up with a raw AttributeError."""
    from transformers import AutoModelForCausalLM

    import workbench as wb
    from workbench.errors import WorkbenchError
    from workbench.models import model_path
    from workbench.rl import RhythmGRPOTrainer

    policy = AutoModelForCausalLM.from_pretrained(model_path("tiny-reasoner"))
    common = dict(model=policy, processing_class=tiny.tokenizer,
                  reward_funcs=lambda completions, **kw: [0.0] * len(completions))  # fmt: skip
    with pytest.raises(WorkbenchError, match="workbench's own GRPOConfig") as e:
        RhythmGRPOTrainer(**common, args=wb.rl.GRPOConfig())
    assert "trl.GRPOConfig(" in e.value.fix and "credit=config.credit" in e.value.fix
    with pytest.raises(WorkbenchError, match=r"args must be a trl\.GRPOConfig, got dict"):
        RhythmGRPOTrainer(**common, args={"output_dir": "out"})


def test_a_reward_function_without_trls_keywords_is_refused_when_the_trainer_is_built(tiny):
    """TRL calls each reward function with ``prompts=``, ``completions=``,
    ``completion_ids=`` and more by name: ``lambda completions: ...`` built, then failed
    with a raw TypeError inside TRL once the first rollouts were sampled."""
    from transformers import AutoModelForCausalLM

    from workbench.errors import WorkbenchError
    from workbench.models import model_path
    from workbench.rl import RhythmGRPOTrainer

    policy = AutoModelForCausalLM.from_pretrained(model_path("tiny-reasoner"))

    def short(prompts, completions):
        return [0.0] * len(completions)

    for reward_funcs in (lambda completions: [0.0] * len(completions), [short]):
        with pytest.raises(WorkbenchError, match="cannot take the keywords TRL calls it") as e:
            RhythmGRPOTrainer(model=policy, processing_class=tiny.tokenizer,
                              reward_funcs=reward_funcs)  # fmt: skip
        assert "**kwargs" in e.value.fix


def test_a_tokenizer_without_pad_or_eos_token_is_refused_when_the_trainer_is_built(tmp_path, tiny):
    """TRL pads its batches with the pad token (the EOS token when there is none): with
    neither, the trainer built and TRL's padding failed with a raw TypeError after the
    first rollouts were sampled."""
    import copy

    from transformers import AutoModelForCausalLM

    from workbench.errors import WorkbenchError
    from workbench.models import model_path

    policy = AutoModelForCausalLM.from_pretrained(model_path("tiny-reasoner"))
    tok = copy.deepcopy(tiny.tokenizer)
    tok.pad_token, tok.eos_token = None, None
    with pytest.raises(WorkbenchError, match="neither a pad token nor an EOS token") as e:
        _trainer(tmp_path, policy, tok, "coupled")
    assert "pad_token" in e.value.fix


def test_a_model_that_cannot_sample_is_refused_when_the_trainer_is_built(tiny):
    """``model=None`` or a bare torch module failed inside TRL with a raw AttributeError
    about ``config``."""
    from workbench.errors import WorkbenchError
    from workbench.rl import RhythmGRPOTrainer

    reward = lambda completions, **kw: [0.0] * len(completions)  # noqa: E731
    for model in (None, torch.nn.Linear(2, 2)):
        with pytest.raises(WorkbenchError, match="cannot sample from a") as e:
            RhythmGRPOTrainer(model, reward, processing_class=tiny.tokenizer)
        assert "Hugging Face causal LM" in e.value.fix


def test_no_gamma_statistics_are_logged_when_no_completion_token_was_credited(tmp_path, tiny):
    """With ``mask_truncated_completions`` every completion of a window can be masked out
    (all cut at ``max_completion_length``, common early in training): no token is
    credited, and the row has no ``credit/*`` entries (it logged ``gamma_mean`` 0.0, a
    value no gamma takes)."""
    trainer, inputs = _standalone_coupled(tmp_path)
    inputs["completion_mask"][:] = 0  # TRL's mask of truncated completions
    trainer.after_scoring(inputs)
    trainer.log({})
    assert not [k for k in trainer.state.log_history[-1] if k.startswith("credit/")]
