"""The GRPO maths and mechanics against TRL (`trl/trainer/grpo_trainer.py`), on toy cases.

TRL's `nanstd` is imported as it is; its `_compute_loss` needs a trainer, so it is written
out below line by line (`_trl_loss`). The trainer's update is compared with the same
loss over plain ``prompt + completion`` rows of the tiny reasoner.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import threading

import pytest
import torch

from workbench.rl import grpo_advantages, grpo_loss

# -- advantages ------------------------------------------------------------------------------


def _trl_advantages(rewards, G, scale):
    """`GRPOTrainer._generate_and_score_completions` (sum_then_normalize, one process)."""
    from trl.trainer.utils import nanstd

    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G)
    if scale in ("group", "none"):
        std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G)
    else:
        std = nanstd(rewards).expand_as(rewards)
    adv = rewards - mean
    if scale != "none":
        adv = adv / (std + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("G", [2, 3, 8])
def test_advantages_equal_trls(scale, G):
    g = torch.Generator().manual_seed(G)
    rewards = torch.randint(0, 3, (4 * G,), generator=g).float() / 2
    rewards[:G] = 1.0  # one group with equal rewards
    ours = grpo_advantages(rewards, G, scale)
    torch.testing.assert_close(ours, _trl_advantages(rewards, G, scale), rtol=1e-6, atol=1e-6)
    assert torch.isfinite(ours).all() and (ours[:G] == 0).all()


def test_advantages_by_hand():
    # G = 2, rewards 1 and 0: sample std sqrt(0.5) (Bessel), so +-0.5 / (0.70711 + 1e-4).
    a = grpo_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2)
    assert a.tolist() == pytest.approx([0.70700, -0.70700, 0.0, 0.0], abs=1e-5)
    # "batch": the group's mean, the batch's std (sample std of [1, 0, 1, 1] = 0.5).
    b = grpo_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2, "batch")
    assert b.tolist() == pytest.approx([0.5 / 0.5001, -0.5 / 0.5001, 0.0, 0.0], abs=1e-6)
    assert grpo_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2, "none").tolist() == [
        0.5, -0.5, 0.0, 0.0,
    ]  # fmt: skip
    same = grpo_advantages(torch.full((8,), 0.3), 4, "batch")  # batch std 0: no NaN
    assert torch.isfinite(same).all() and same.abs().max() < 1e-3


# -- the per-token loss ----------------------------------------------------------------------


def _trl_loss(logps, old, adv2d, mask, *, eps, eps_high, loss_type, ref=None, beta=0.0,
              ent=None, coef=0.0):  # fmt: skip
    """TRL's `_compute_loss` for token-level importance sampling, one process, one
    micro-batch; `adv2d` is ``A[:, None] * gamma`` (TRL takes (B, T) advantages)."""
    mask = mask.float()
    coef_1 = torch.exp(logps - old)
    coef_2 = torch.clamp(coef_1, 1 - eps, 1 + eps_high)
    per_token_loss = -torch.min(coef_1 * adv2d, coef_2 * adv2d)
    if beta != 0.0:  # use_bias_correction_kl (TRL's default): the k3 estimate times coef_1
        per_token_kl = (torch.exp(ref - logps) - (ref - logps) - 1) * coef_1
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    else:  # dapo: num_items_in_batch is the batch's completion tokens
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    if coef != 0.0:  # the bonus is the mean entropy per token, whatever the loss type
        loss = loss - coef * (ent * mask).sum() / mask.sum().clamp(min=1.0)
    return loss


def _toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    logps = -torch.rand(4, 6, generator=g) * 3
    return dict(
        logps=logps,
        old=logps + 0.4 * torch.randn(4, 6, generator=g),
        ref=logps + 0.3 * torch.randn(4, 6, generator=g),
        ent=torch.rand(4, 6, generator=g) * 2,
        adv=torch.tensor([1.3, -0.6, 0.2, -0.9]),
        gamma=1 + 0.5 * (torch.rand(4, 6, generator=g) > 0.6).float(),
        mask=torch.arange(6)[None] < torch.tensor([6, 3, 1, 4])[:, None],
    )


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
@pytest.mark.parametrize(
    "eps, eps_high, beta, coef",
    [(0.2, None, 0.0, 0.0), (0.2, 0.28, 0.0, 0.0), (0.2, 0.28, 0.04, 0.0),
     (0.2, None, 0.0, 0.01), (0.1, 0.3, 0.1, 0.05)],
)  # fmt: skip
def test_loss_and_gradient_equal_trls(loss_type, eps, eps_high, beta, coef):
    """Value and gradient of `grpo_loss` against TRL's, for ratios inside and outside the
    asymmetric clip range, the k3 KL and the entropy bonus; ``A[:, None] * gamma`` is the
    (B, T) advantage TRL takes."""
    for seed in range(3):
        t = _toy(seed)
        logps = t["logps"].clone().requires_grad_()
        ent = t["ent"].clone().requires_grad_()
        ours = grpo_loss(
            logps, t["old"], t["adv"], t["gamma"], t["mask"], epsilon=eps,
            epsilon_high=eps_high, loss_type=loss_type, ref_logps=t["ref"], beta=beta,
            entropies=ent, entropy_coef=coef,
        )  # fmt: skip
        theirs = _trl_loss(
            logps, t["old"], t["adv"][:, None] * t["gamma"], t["mask"], eps=eps,
            eps_high=eps if eps_high is None else eps_high, loss_type=loss_type,
            ref=t["ref"], beta=beta, ent=ent, coef=coef,
        )  # fmt: skip
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-6, abs=1e-7)
        g_ours = torch.autograd.grad(ours, (logps, ent), allow_unused=True)
        g_theirs = torch.autograd.grad(theirs, (logps, ent), allow_unused=True)
        for a, b in zip(g_ours, g_theirs, strict=True):
            if b is None:
                assert a is None or not a.any()
            else:
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_clip_higher_by_hand():
    """epsilon 0.2, epsilon_high 0.28: a ratio e^0.25 = 1.284 is clipped to 1.28 for A > 0
    (gradient 0) and kept for A < 0 (the min takes the unclipped, larger loss); a ratio
    e^-0.3 = 0.741 is clipped to 0.8 for A < 0 and kept for A > 0."""
    logps = torch.tensor([[0.25, -0.3], [0.25, -0.3]], requires_grad=True)
    old, mask = torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool)
    loss = grpo_loss(logps, old, torch.tensor([1.0, -1.0]), torch.ones(2, 2), mask,
                     epsilon=0.2, epsilon_high=0.28, loss_type="dapo")  # fmt: skip
    r1, r2 = math.exp(0.25), math.exp(-0.3)
    expected = (-1.28 - r2 + r1 + 0.8) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logps.grad.flatten().tolist() == pytest.approx([0.0, -r2 / 4, r1 / 4, 0.0], rel=1e-6)


def test_the_kl_term_is_trls_bias_corrected_k3_by_hand():
    """TRL (``use_bias_correction_kl=True``, its default) weighs the k3 estimate by the
    importance ratio, so that its gradient is the reverse KL's: ``d/dlogp [r * k3] = r *
    (logp - ref_logp)``. On-policy, logp = -1, ref = -1.5, beta 0.1, A = 0: the value is
    0.1 * (e^-0.5 + 0.5 - 1) = 0.010653 either way, the gradient 0.1 * 0.5 = 0.05 (the
    plain k3 gave 0.1 * (1 - e^-0.5) = 0.039347, the forward KL's gradient). Off-policy
    (old = -1.2, r = e^0.2) the value is r * k3 too."""
    for old, r in ((None, 1.0), (-1.2, math.exp(0.2))):
        logps = torch.full((1, 1), -1.0, requires_grad=True)
        old_logps = logps.detach() if old is None else torch.full((1, 1), old)
        loss = grpo_loss(logps, old_logps, torch.zeros(1), torch.ones(1, 1),
                         torch.ones(1, 1, dtype=torch.bool), ref_logps=torch.full((1, 1), -1.5),
                         beta=0.1)  # fmt: skip
        assert loss.item() == pytest.approx(0.1 * r * (math.exp(-0.5) - 0.5), rel=1e-6)
        loss.backward()
        assert logps.grad.item() == pytest.approx(0.1 * r * 0.5, rel=1e-6)


def test_the_entropy_bonus_is_the_mean_per_token_for_grpo_too():
    """TRL's bonus is ``coef * sum(H * mask) / sum(mask)`` whatever the loss type. Rows of 1
    and 3 tokens with entropies 3 and 1, 1, 1: the token mean is 6 / 4 = 1.5; the mean of
    the rows' means, 2, was taken for ``loss_type="grpo"`` (loss -0.2 instead of -0.15)."""
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    ent = torch.tensor([[3.0, 9.0, 9.0], [1.0, 1.0, 1.0]])
    zero = torch.zeros(2, 3)
    for loss_type in ("grpo", "dapo"):
        loss = grpo_loss(zero, zero, torch.zeros(2), torch.ones(2, 3), mask,
                         loss_type=loss_type, entropies=ent, entropy_coef=0.1)  # fmt: skip
        assert loss.item() == pytest.approx(-0.15, rel=1e-6), loss_type


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_chunks_with_the_batch_normalizers_sum_to_the_whole_batch(loss_type):
    """The trainer splits a batch into chunks of rows and sums their losses: with the
    batch's normalizers (sequences or tokens, and its token count for the entropy) the sum
    is the whole batch's loss."""
    t = _toy(3)
    kw = dict(loss_type=loss_type, ref_logps=t["ref"], beta=0.04, entropies=t["ent"],
              entropy_coef=0.05, epsilon_high=0.28)  # fmt: skip
    whole = grpo_loss(t["logps"], t["old"], t["adv"], t["gamma"], t["mask"], **kw)
    tokens = float(t["mask"].sum())
    normalizer = tokens if loss_type == "dapo" else 4.0
    parts = 0.0
    for rows in (slice(0, 1), slice(1, 4)):
        sub = dict(kw, ref_logps=t["ref"][rows], entropies=t["ent"][rows])
        parts += grpo_loss(t["logps"][rows], t["old"][rows], t["adv"][rows],
                           t["gamma"][rows], t["mask"][rows], normalizer=normalizer,
                           token_normalizer=tokens, **sub)  # fmt: skip
    assert float(parts) == pytest.approx(whole.item(), rel=1e-6)


# -- the trainer's update against TRL's loss over plain rows ---------------------------------

SMALL = dict(model="tiny-reasoner", per_device_train_batch_size=8, num_generations=4,
             max_completion_length=24, eval_size=4, eval_every=0, learning_rate=5e-5,
             max_steps=5)  # fmt: skip


def _rollouts():
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(4, 60, (n,), generator=g).tolist() for n in (9, 6)]
    completions = [torch.randint(4, 60, (n,), generator=g).tolist()
                   for n in (5, 3, 0, 7, 2, 6, 4, 1)]  # fmt: skip
    return prompts, completions


def _capture_steps(run):
    """Record the gradients each optimiser step applies and the weights it starts from."""
    seen = []
    step = run.optimizer.step

    def recorded(*args, **kwargs):
        seen.append(
            (
                {n: p.grad.clone() for n, p in run.policy.named_parameters()},
                copy.deepcopy(run.policy.state_dict()),
            )
        )
        return step(*args, **kwargs)

    run.optimizer.step = recorded
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("loss_type, split", [("grpo", False), ("dapo", False), ("grpo", True)])
def test_the_update_is_trls_loss_over_plain_rows(tmp_path, monkeypatch, loss_type, split):
    """Two iterations (importance ratio), KL against the starting weights, entropy bonus,
    clip-higher, credit, temperature 0.7 and clipping off, in one chunk or one per group:
    each optimiser step applies the gradient of TRL's loss over ``prompt + completion``
    rows, log-probs and entropies of ``logits / temperature`` as TRL's (the update used
    the untempered logits)."""
    from workbench.rl import trainer
    from workbench.rl.config import GRPOConfig
    from workbench.rl.trainer import GRPORun

    if split:
        monkeypatch.setattr(trainer, "UPDATE_TOKENS", 1)

    T = 0.7
    cfg = GRPOConfig(**SMALL, num_iterations=2, beta=0.04, entropy_coef=0.01, temperature=T,
                     loss_type=loss_type, epsilon_high=0.28, max_grad_norm=1e9)  # fmt: skip
    run = GRPORun(cfg, tmp_path / "r", progress=False)
    start = copy.deepcopy(run.policy)
    prompts, completions = _rollouts()
    adv = grpo_advantages(torch.tensor([1.0, 0, 0, 1, 0, 0, 1, 1]), 4)
    gamma = torch.ones(8, 7)
    gamma[:, 1] = 1.5
    seen = _capture_steps(run)
    with torch.random.fork_rng():
        run._update(prompts, completions, adv, gamma.clone(), 0)
    assert len(seen) == 2

    mask = torch.arange(7)[None] < torch.tensor([len(c) for c in completions])[:, None]

    def rows(model):
        logps, ents = torch.zeros(8, 7), torch.zeros(8, 7)
        for i, c in enumerate(completions):
            if c:
                p = prompts[i // 4]
                logits = model(torch.tensor([p + c])).logits[0, len(p) - 1 : -1].float() / T
                lp = torch.log_softmax(logits, -1)
                logps = logps.index_put((torch.tensor([i]), torch.arange(len(c))),
                                        lp.gather(-1, torch.tensor(c)[:, None])[:, 0])  # fmt: skip
                ents = ents.index_put((torch.tensor([i]), torch.arange(len(c))),
                                      -(lp.exp() * lp).sum(-1))  # fmt: skip
        return logps, ents

    with torch.no_grad():
        ref = rows(start)[0]
        old = rows(start)[0]  # the weights that sampled: the first iteration's
    for it, (grads, weights) in enumerate(seen):
        model = copy.deepcopy(start)
        model.load_state_dict(weights)
        model.train()
        logps, ents = rows(model)
        loss = _trl_loss(logps, old, adv[:, None] * gamma, mask, eps=0.2, eps_high=0.28,
                         loss_type=loss_type, ref=ref, beta=0.04, ent=ents, coef=0.01)  # fmt: skip
        loss.backward()
        for n, q in model.named_parameters():
            rel = float((grads[n] - q.grad).norm() / q.grad.norm())
            assert rel < 1e-4, (it, n, rel)
    ref_weights = run.ref_policy.state_dict()  # the starting weights, frozen
    assert all(torch.equal(w, ref_weights[k]) for k, w in start.state_dict().items())
    assert not any(q.requires_grad for q in run.ref_policy.parameters())


@pytest.mark.slow
def test_clipping_warm_up_and_a_fixed_seed(tmp_path, monkeypatch):
    """The applied gradient has norm max_grad_norm when the raw one is larger (the logged
    norm is the raw one, as transformers logs); the learning rate is lr * s / warmup_steps
    up to warmup_steps, then lr; the same seed gives the same update, bit for bit."""
    from workbench.rl.config import GRPOConfig
    from workbench.rl.trainer import GRPORun

    cfg = GRPOConfig(**SMALL, max_grad_norm=0.05, warmup_steps=3, seed=3)
    prompts, completions = _rollouts()
    adv = grpo_advantages(torch.tensor([1.0, 0, 0, 1, 0, 0, 1, 1]), 4)
    runs = [GRPORun(cfg, tmp_path / str(i), progress=False) for i in range(2)]
    for run in runs:
        seen = _capture_steps(run)
        _, grad_norm, _, _ = run._update(prompts, completions, adv, torch.ones(8, 7), 0)
        applied = torch.linalg.vector_norm(torch.stack([g.norm() for g in seen[0][0].values()]))
        assert grad_norm > 0.05 and float(applied) == pytest.approx(0.05, rel=1e-4)
    a, b = (r.policy.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)

    run = runs[0]
    lrs = []

    def no_update(*args):
        lrs.append(run.optimizer.param_groups[0]["lr"])
        return 0.0, 0.0, torch.ones(8, 2), 0.0

    monkeypatch.setattr(run, "_sample", lambda prompts, n, seed: [[5, 6]] * len(prompts) * n)
    monkeypatch.setattr(run, "_update", no_update)
    logged = []
    for _ in range(5):
        logged.append(run._train_step()["learning_rate"])
        run.step += 1
    lr = cfg.learning_rate
    assert lrs == logged == pytest.approx([lr / 3, 2 * lr / 3, lr, lr, lr], rel=1e-12)


# -- interrupts -------------------------------------------------------------------------------


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_ctrl_c_inside_a_deferred_block_only_sets_the_flag():
    """SIGINT during an optimiser step is held: the block runs to its end, the flag is set,
    and the previous handler is back afterwards."""
    from workbench.rl.interrupts import defer_sigint

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        flag, done = threading.Event(), []
        with defer_sigint(flag):
            os.kill(os.getpid(), signal.SIGINT)
            done.append(True)
        assert done == [True] and flag.is_set()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_an_ignored_ctrl_c_stays_ignored_and_is_not_turned_into_an_interrupt():
    """A process that ignores SIGINT (a worker meant to outlive a Ctrl-C in its terminal)
    had it set the flag inside a step, which the loop then raised as KeyboardInterrupt."""
    from workbench.rl.interrupts import defer_sigint

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        flag = threading.Event()
        with defer_sigint(flag):
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
        assert not flag.is_set() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
