"""The native GRPO loop with rhythm credit: short runs in a notebook, resumable.

One step (Eq. 12-19):

1. sample ``prompts_per_step`` training problems (seeded by run seed and step) and
   ``num_generations`` completions for each (seeded likewise);
2. reward each completion with the task's verifier and normalise within its group;
3. minimise the PPO-clip surrogate with per-token advantage ``gamma[t] * A_i``
   (`grpo_loss`), a chunk of whole groups at a time with gradients accumulated, then one
   AdamW step. Each group's prompt runs once, its completions on the prompt's KV cache
   (`workbench.rl.forward.completion_logits`). ``gamma`` comes from the first update
   forward of each chunk (`FusedCredit`: the weights that sampled the rollouts, no extra
   pass; skipped for ``"none"``), or, with ``fused_credit=False`` or a policy with
   dropout reaching the attention (`GRPORun.fuses_credit`), from a standalone pass before the update
   (`rollout_gammas`).

Every random draw of step ``s`` is seeded from ``(seed, s)``, so a run resumed from its
checkpoint at step ``s`` repeats exactly what the uninterrupted run would have done.
Ctrl-C (KeyboardInterrupt) in a notebook ends the current step cleanly: the last completed
step is checkpointed and the run is marked ``interrupted``; `resume` continues it
(`train` and `resume`, which start and continue runs in their directories, are in
`workbench.rl.runs`).

Memory: the policy, its AdamW state (2 x parameters), and per update forward the logits of
a chunk of whole groups (at most `UPDATE_LOGITS` floats and about `UPDATE_TOKENS` token
rows, or one group), and the KV cache of its prompts repeated once per completion.
"""

from __future__ import annotations

import copy
import math
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_json, json_ready
from ..attention.layers import resolve_layers
from ..errors import WorkbenchError
from ..models import bridge_model, load_hf, model_device
from ..tasks import get_task
from ..trace import encode_prompt, sample_completions
from ..trace.sampling import seeded
from ..trace.tokens import context_length
from .checkpoint import (
    append_metrics,
    rewrite_metrics,
    run_lock,
    save_checkpoint,
)
from .config import GRPOConfig
from .credit import FusedCredit, attention_dropout, rollout_gammas
from .forward import RolloutBatch, check_update_forward, completion_logits, rollout_batch
from .interrupts import defer_sigint, phase
from .loss import check_finite, grpo_advantages, grpo_loss, token_logps

__all__ = ["GRPORun"]

#: Training problems drawn once per run; each step samples its prompts from this pool.
POOL_SIZE = 2000
#: Most logits (rows x tokens x vocabulary) one update forward may hold: 64M floats, 256 MB.
UPDATE_LOGITS = 1 << 26
#: Token rows (completions x width) per update forward, spread evenly over whole groups.
#: Smaller chunks keep the activations in cache: on the tiny reasoner (one thread), 128
#: completions of ~35 tokens took 0.77 s for one forward + backward in one chunk, 0.64 s in
#: two of 64 and 0.65 s in four of 32, 0.72 s in eight of 16.
UPDATE_TOKENS = 3072
#: The held-out problems are the same for every run (seed fixed), so runs compare fairly.
EVAL_SEED = 1234
#: Mixed into a step's seed for the update's own draws (dropout), apart from sampling's.
UPDATE_STREAM = 1


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919) % (2**31 - 1)


#: The remedy named when an update diverges (a non-finite loss or gradient norm).
DIVERGED_FIX = (
    "lower learning_rate or raise warmup_steps; wb.rl.resume continues from the last checkpoint"
)


class GRPORun:
    """One GRPO run: its config, model, optimiser, run directory and metrics.

    Use `train` / `resume` rather than the constructor. Attributes: ``config``,
    ``run_dir``, ``policy`` (the plain Hugging Face model being trained; it samples
    the rollouts), ``model`` (a TransformerBridge over it for the credit pass), ``step`` (completed steps), ``metrics`` (list of dicts, one per step,
    evaluations included as ``eval_accuracy`` and ``eval_sampled_accuracy``), ``status``.
    """

    def __init__(
        self,
        config: GRPOConfig,
        run_dir: str | Path,
        *,
        callbacks: list[Callable[[GRPORun, dict[str, Any]], None]] | None = None,
        progress: bool = True,
    ):
        """Load the policy, build the optimiser and draw the problems; nothing is written
        to `run_dir` yet (`train` and `resume` write it).

        Args:
            config: the run's settings (`GRPOConfig`).
            run_dir: the run directory its metrics, status and checkpoints go to.
            callbacks: each called as ``cb(run, row)`` after every logged metrics row (the
                step-0 evaluation, then every step; ``row`` as ``metrics.jsonl`` holds
                it), e.g. to update a live chart. An exception in one ends `train` with
                status ``"failed"``; the last checkpoint stays the state to resume from.
            progress: show a progress bar during `train` (in a notebook or on a terminal;
                none where stderr is not a terminal, as in a log file).
        """
        self.config = config
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks or [])
        self.progress = progress
        # The policy stays a plain Hugging Face model (it trains, generates and saves as
        # usual); the credit pass hooks a bridge over a copy that shares its parameters.
        self.policy, self.tokenizer = load_hf(config.model, device=config.device)
        self.policy.train()
        check_update_forward(self.policy)  # before any rollout, not at the first update
        self.model = bridge_model(self.policy, self.tokenizer)
        self._vocab = int(self.policy.get_output_embeddings().weight.shape[0])
        if not isinstance(config.credit.layers, str):  # refused here, before any folder
            resolve_layers(list(config.credit.layers), self.model.cfg.n_layers)
        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(),
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            eps=config.adam_epsilon,
            weight_decay=config.weight_decay,
        )
        self.ref_policy = None
        if config.beta != 0.0:
            self.ref_policy = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.task = get_task(config.task)
        self.pool = self.task.generate(POOL_SIZE, split="train", seed=config.seed)
        self.eval_problems = self.task.generate(config.eval_size, split="test", seed=EVAL_SEED)
        self._prompt_cache: dict[str, list[int]] = {}
        self._check_room()
        self.step = 0
        self.metrics: list[dict[str, Any]] = []
        self.status = "new"
        self._stop = threading.Event()
        self._interrupted = threading.Event()
        # True from an update's first optimiser step until `step` counts it: the weights are
        # then ahead of the step counter and must not be checkpointed under it.
        self._ahead = False

    def __repr__(self) -> str:
        """One line for a notebook cell: folder, strategy, seed, steps done and status.

        Read from attributes only (no file), and never raises: a run whose constructor
        failed partway still shows what it has."""
        try:
            cfg = getattr(self, "config", None)
            parts = [repr(str(getattr(self, "run_dir", "?")))]
            if cfg is not None:
                parts += [f"strategy={cfg.strategy!r}", f"seed={cfg.seed}"]
                parts.append(f"step {getattr(self, 'step', '?')}/{cfg.max_steps}")
            else:
                parts.append(f"step {getattr(self, 'step', '?')}")
            parts.append(str(getattr(self, "status", "?")))
            return f"GRPORun({', '.join(parts)})"
        except Exception:
            return f"<GRPORun at {id(self):#x}>"

    # ------------------------------------------------------------------ helpers
    def _check_room(self) -> None:
        """Refuse a `max_completion_length` that the longest prompt of the task leaves no
        room for in the model's context, before any run folder exists (the first rollout
        failed, leaving a folder that never reached a checkpoint, with a fix that named
        `generate`'s ``max_new_tokens``)."""
        limit = context_length(self.model)
        if limit is None:
            return
        cfg = self.config
        problems = [*self.pool, *self.eval_problems]
        longest = max(len(self._prompt_ids(p.prompt)) for p in problems) if problems else 0
        if longest + cfg.max_completion_length > limit:
            raise WorkbenchError(
                f"max_completion_length={cfg.max_completion_length} does not fit: the longest "
                f"prompt of task {cfg.task!r} has {longest} tokens, and the context of model "
                f"{cfg.model!r} holds {limit}",
                f"lower max_completion_length (--max-completion-length) to at most "
                f"{max(0, limit - longest)}",
            )

    def _prompt_ids(self, prompt: str) -> list[int]:
        if prompt not in self._prompt_cache:
            self._prompt_cache[prompt] = encode_prompt(self.model, prompt, chat=self.config.chat)
        return self._prompt_cache[prompt]

    @property
    def fuses_credit(self) -> bool:
        """Whether the credit is computed inside the first update forward (`FusedCredit`):
        ``fused_credit`` is on, the strategy weighs tokens, and the policy applies no
        dropout that reaches the attention in training (`attention_dropout`: GPT-2's
        checkpoints have ``attn_pdrop=0.1``, Phi-2's ``resid_pdrop=0.1``), which the fused
        pass cannot reproduce. Otherwise the standalone pass (`rollout_gammas`)
        serves, as in the TRL adapter (`RhythmGRPOTrainer.fuses_credit`)."""
        cfg = self.config
        return (
            cfg.fused_credit and cfg.strategy != "none" and attention_dropout(self.policy) is None
        )

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def request_stop(self) -> None:
        """Ask a run in another thread (e.g. the RL panel) to stop after the current step."""
        self._stop.set()

    def _set_status(self, status: str) -> None:
        self.status = status
        atomic_write_json(self.run_dir / "status.json", {"status": status, "step": self.step})

    def _log(self, row: dict[str, Any]) -> None:
        # As metrics.jsonl will hold it (NaN as None), so a resumed run's rows equal these.
        row = json_ready(row)
        with defer_sigint(self._interrupted):
            self.metrics.append(row)
            append_metrics(self.run_dir, row)
        for cb in self.callbacks:
            cb(self, row)

    def _complete_last_row(self, end: int) -> None:
        """Evaluate the last logged step if its evaluation is due and missing (Ctrl-C
        landed in it): the same numbers as uninterrupted, its seeds being the step's."""
        last = self.metrics[-1] if self.metrics else None
        if not last or last["step"] != self.step or not self.config.evaluates(self.step, end):
            return
        if all(key in last for key in self.config.eval_keys):
            return
        with phase("evaluate", self.step):
            last.update(self.evaluate())
        rewrite_metrics(self.run_dir, self.metrics)

    def _sample(self, prompts: list[list[int]], n: int, seed: int) -> list[list[int]]:
        """`n` completions per prompt at the training temperature, seeded by `seed` alone."""
        cfg = self.config
        with seeded(self.policy, seed):
            return sample_completions(
                self.policy,
                prompts,
                tokenizer=self.tokenizer,
                num_generations=n,
                max_new_tokens=cfg.max_completion_length,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
            )

    def _scores(self, problems: list[Any], completions: list[list[int]], n: int) -> list[float]:
        """The task's reward of each completion; completion ``i`` answers ``problems[i // n]``."""
        return [
            self.task.score(problems[i // n], self._decode(c)) for i, c in enumerate(completions)
        ]

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float]:
        """Accuracy on the held-out problems (the same set for every run).

        Returns:
            ``{"eval_accuracy": greedy accuracy}``, plus ``"eval_sampled_accuracy"``: the
            mean accuracy of ``eval_samples`` completions per problem sampled at the
            training temperature (seeded, so a resumed run repeats it). Greedy accuracy
            is the policy's mode; the sampled accuracy is what GRPO optimises, and on a
            small model it moves long before the mode does.
        """
        cfg = self.config
        prompts = [self._prompt_ids(p.prompt) for p in self.eval_problems]

        def accuracy(completions: list[list[int]], n: int) -> float:
            scores = self._scores(self.eval_problems, completions, n)
            return float(sum(scores) / len(scores))

        out = {
            "eval_accuracy": accuracy(
                sample_completions(
                    self.policy,
                    prompts,
                    tokenizer=self.tokenizer,
                    greedy=True,
                    max_new_tokens=cfg.max_completion_length,
                ),
                1,
            )
        }
        if cfg.eval_samples:
            sampled = self._sample(prompts, cfg.eval_samples, _step_seed(EVAL_SEED, self.step))
            out["eval_sampled_accuracy"] = accuracy(sampled, cfg.eval_samples)
        return out

    # ------------------------------------------------------------------ one step
    def _train_step(self) -> dict[str, Any]:
        cfg = self.config
        step = self.step + 1
        seed = _step_seed(cfg.seed, step)
        rng = random.Random(seed)
        problems = [self.pool[rng.randrange(len(self.pool))] for _ in range(cfg.prompts_per_step)]
        prompts = [self._prompt_ids(p.prompt) for p in problems]

        t0 = time.perf_counter()
        with phase("sample", step):
            completions = self._sample(prompts, cfg.num_generations, seed)
        G = cfg.num_generations
        rewards = torch.tensor(self._scores(problems, completions, G), dtype=torch.float32)
        advantages = grpo_advantages(rewards, G, cfg.scale_rewards)
        t1 = time.perf_counter()

        rollout_prompts = [prompts[i // G] for i in range(len(completions))]
        width = max(1, max(len(c) for c in completions))
        gamma = None
        if not self.fuses_credit:
            with phase("credit", step):
                gamma = rollout_gammas(
                    self.model,
                    rollout_prompts,
                    completions,
                    cfg.credit,
                    seed=seed,
                    pad_to=width,
                )
        t2 = time.perf_counter()

        lr = cfg.learning_rate
        if cfg.warmup_steps and step < cfg.warmup_steps:
            lr *= step / cfg.warmup_steps
        for group in self.optimizer.param_groups:
            group["lr"] = lr  # a function of the step alone, so resume needs no scheduler
        # Seeded too: a policy with dropout draws its masks in the update forward, and a
        # resumed run must draw the same ones.
        with phase("update", step), seeded(self.policy, _step_seed(seed, UPDATE_STREAM)):
            loss_value, grad_norm, gamma, fused_s = self._update(
                prompts, completions, advantages, gamma, seed
            )
        t3 = time.perf_counter()

        lengths = torch.tensor([len(c) for c in completions], dtype=torch.float32)
        mask = torch.arange(width)[None, :] < lengths[:, None]
        return {
            "step": step,
            "reward": float(rewards.mean()),
            "reward_std": float(rewards.std()),
            "accuracy": float((rewards == 1.0).float().mean()),
            "loss": loss_value,
            "grad_norm": grad_norm,
            "learning_rate": lr,
            "completion_length": float(lengths.mean()),
            "gamma_mean": float(gamma[mask].mean()),
            "gamma_amplified": float((gamma[mask] > 1.0).float().mean()),
            "time_rollout": t1 - t0,
            # Fused: the gamma computation after the first update forwards (the extra
            # attention work inside them is not separable and counts as update time).
            "time_credit": t2 - t1 + fused_s,
            "time_update": t3 - t2 - fused_s,
            "step_time": t3 - t0,
        }

    def _update(
        self,
        prompts: list[list[int]],
        completions: list[list[int]],
        advantages: torch.Tensor,
        gamma: torch.Tensor | None,
        seed: int,
    ) -> tuple[float, float, torch.Tensor, float]:
        """One optimiser step per iteration; returns ``(loss, grad_norm, gamma, seconds
        spent computing a fused gamma)``. With `gamma` None it is computed inside the first
        iteration's forward of each chunk (`FusedCredit`)."""
        cfg = self.config
        G = cfg.num_generations
        device = model_device(self.policy)
        n_tokens = float(sum(len(c) for c in completions))
        normalizer = max(n_tokens, 1.0) if cfg.loss_type == "dapo" else float(len(completions))

        # Rows go through the model in chunks of whole groups, spread evenly over chunks of
        # about UPDATE_TOKENS token rows (activations that stay in cache) within a budget of
        # logits; each group's prompt runs once (`completion_logits`).
        chunks = []
        pad = self.tokenizer.pad_token_id or 0
        width = max(1, max(len(c) for c in completions))
        parts = math.ceil(len(completions) * width / UPDATE_TOKENS)
        most = G * math.ceil(len(completions) // G / parts)  # rows per chunk, evenly
        start = 0
        while start < len(completions):
            stop = start + G
            while stop + G - start <= most and stop < len(completions):
                t = max(len(completions[r]) for r in range(start, stop + G))
                if (stop + G - start) * max(t, 1) * self._vocab > UPDATE_LOGITS:
                    break
                stop += G
            chunks.append(
                rollout_batch(
                    prompts, completions, G, slice(start, stop), pad_id=pad, device=device
                )
            )
            start = stop

        def tempered(logits: torch.Tensor) -> torch.Tensor:
            """The logits of the distribution the completions were sampled from (TRL's
            ``logits / temperature``), for the log-probs and the entropies of the loss."""
            return logits if cfg.temperature == 1.0 else logits.float() / cfg.temperature

        def logps_of(model: torch.nn.Module, chunk: RolloutBatch, credit: Any = None):
            """Per-token log-probs ``[rows, width]`` of the completions at the sampling
            temperature, and the model's logits (the credit's entropies read those, as
            the standalone pass does)."""
            logits = completion_logits(model, chunk, credit)
            return token_logps(tempered(logits), chunk.targets), logits

        old: list[torch.Tensor | None] = [None] * len(chunks)
        refs: list[torch.Tensor | None] = [None] * len(chunks)
        with torch.no_grad():
            for j, chunk in enumerate(chunks):
                if cfg.num_iterations > 1:
                    old[j] = logps_of(self.policy, chunk)[0]
                if self.ref_policy is not None:
                    refs[j] = logps_of(self.ref_policy, chunk)[0]

        total_loss = 0.0
        grad_norm = 0.0
        fused_s = 0.0
        fuse = gamma is None
        if fuse:  # filled chunk by chunk in the first iteration, before each chunk's loss
            gamma = torch.ones(len(completions), max(1, max(len(c) for c in completions)))
        for it in range(cfg.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            for j, chunk in enumerate(chunks):
                rows, mask = chunk.rows, chunk.mask
                if fuse and it == 0:
                    fused = FusedCredit(self.policy, cfg.credit, chunk.spans, chunk.seqs)
                    logps, logits = logps_of(self.policy, chunk, fused)
                    t_f = time.perf_counter()
                    # "random": the k-th completion with tokens uses seed + k, batch-wide.
                    part = fused.gammas(chunk.width, seed=seed + chunk.before, logits=logits)
                    gamma[rows, : chunk.width] = part
                    fused_s += time.perf_counter() - t_f
                else:
                    logps, logits = logps_of(self.policy, chunk)
                entropies = None
                if cfg.entropy_coef != 0.0:
                    logp_all = torch.log_softmax(tempered(logits).float(), -1)
                    entropies = -(logp_all.exp() * logp_all).sum(-1)
                # A diverged policy's NaN log-probs are refused here, with the step and the
                # remedy, by the check `grpo_loss` runs on them (which knows neither).
                check_finite(
                    [
                        ("logps", logps),
                        ("old_logps", old[j]),
                        ("ref_logps", refs[j] if cfg.beta else None),
                        ("entropies", entropies if cfg.entropy_coef else None),
                    ],
                    mask,
                    DIVERGED_FIX,
                    context=f"the GRPO loss is not finite at step {self.step + 1} (rows "
                    f"{rows.start}-{rows.stop - 1})",
                )
                loss = grpo_loss(
                    logps,
                    old[j] if old[j] is not None else logps.detach(),
                    advantages[rows].to(device),
                    gamma[rows, : mask.shape[1]].to(device),
                    mask,
                    epsilon=cfg.epsilon,
                    epsilon_high=cfg.epsilon_high,
                    loss_type=cfg.loss_type,
                    normalizer=normalizer,
                    token_normalizer=max(n_tokens, 1.0),
                    ref_logps=refs[j],
                    beta=cfg.beta,
                    entropies=entropies,
                    entropy_coef=cfg.entropy_coef,
                )
                if not bool(torch.isfinite(loss)):
                    # Before backward: the weights stay those of the last good step.
                    raise WorkbenchError(
                        f"the GRPO loss is {float(loss.detach())} at step {self.step + 1} (rows "
                        f"{rows.start}-{rows.stop - 1})",
                        DIVERGED_FIX,
                    )
                loss.backward()
                total_loss += float(loss.detach())
            with defer_sigint(self._interrupted):
                grad_norm = float(
                    torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                )
                if not math.isfinite(grad_norm):
                    # Clipping an infinite norm scales by 0 (inf * 0 = NaN): refuse the
                    # step, so the weights stay those of the last good one.
                    raise WorkbenchError(
                        f"the gradient norm is {grad_norm} at step {self.step + 1}",
                        DIVERGED_FIX,
                    )
                self.optimizer.step()
                self._ahead = True
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss / cfg.num_iterations, grad_norm, gamma, fused_s

    # ------------------------------------------------------------------ the loop
    def _checkpoint(self) -> None:
        with defer_sigint(self._interrupted), phase("checkpoint", self.step):
            save_checkpoint(
                self.run_dir,
                self.step,
                self.policy,
                self.optimizer,
                {"seed": self.config.seed},
                keep=self.config.keep_checkpoints,
            )

    def train(self, max_steps: int | None = None) -> GRPORun:
        """Run until ``max_steps`` (default: the config's), evaluating and checkpointing.

        The run directory (which must exist) is locked while it trains (`run_lock`):
        another process training it at the same time is refused.

        Returns:
            self, with ``status`` ``"finished"``, ``"interrupted"`` (Ctrl-C) or
            ``"stopped"`` (`request_stop`).
        """
        with run_lock(self.run_dir):
            return self._train(max_steps)

    def _train(self, max_steps: int | None) -> GRPORun:
        from .._progress import progress_bar

        cfg = self.config
        end = max_steps if max_steps is not None else cfg.max_steps
        if self._ahead:
            raise WorkbenchError(
                f"this run was interrupted partway through step {self.step + 1}'s update, so "
                "its weights belong to no step and cannot be trained on",
                f"continue from the last checkpoint with wb.rl.resume({str(self.run_dir)!r})",
            )
        self._interrupted.clear()
        self._set_status("running")
        bar = progress_bar(
            total=end,
            initial=self.step,
            # the seed too: an experiment's runs of one strategy showed identical bars
            desc=f"GRPO {cfg.strategy} seed {cfg.seed}",
            progress=self.progress,
        )
        try:
            if self.step == 0 and not self.metrics:
                with phase("evaluate", 0):
                    row0 = {"step": 0, **self.evaluate()}
                self._log(row0)
                self._checkpoint()
            self._complete_last_row(end)
            while self.step < end:
                if self._stop.is_set():
                    self._stop.clear()  # consumed: a later train() runs on
                    self._checkpoint()
                    self._set_status("stopped")
                    return self
                row = self._train_step()
                with defer_sigint(self._interrupted):  # the counter and the weights agree again
                    self.step, self._ahead = row["step"], False
                last = self.step == end
                try:
                    if cfg.evaluates(self.step, end):
                        with phase("evaluate", self.step):
                            row.update(self.evaluate())
                finally:
                    # Logged even when Ctrl-C lands in the evaluation: the weights are this
                    # step's and are checkpointed with it, and the next train() evaluates it
                    # (`_complete_last_row`), so no step's row is lost.
                    self._log(row)
                if self.step % cfg.save_every == 0 or last:
                    self._checkpoint()
                if not last:  # so that status.json tells how far a running run has got
                    self._set_status("running")
                if self._interrupted.is_set():
                    raise KeyboardInterrupt
                bar.update()
                latest = next((r for r in reversed(self.metrics) if "eval_accuracy" in r), {})
                bar.set_postfix(
                    reward=f"{row['reward']:.2f}",
                    acc=f"{latest.get('eval_accuracy', math.nan):.2f}",
                    sampled=f"{latest.get('eval_sampled_accuracy', math.nan):.2f}",
                    step_s=f"{row['step_time']:.1f}",
                )
        except KeyboardInterrupt:
            if self._ahead:
                # Between two optimiser steps of one update (num_iterations > 1): these
                # weights are no step's, so the last checkpoint stays the one to resume.
                self._set_status("interrupted")
                print(
                    f"interrupted during step {self.step + 1}'s update: its weights are not "
                    f"saved; wb.rl.resume({str(self.run_dir)!r}) continues from the last "
                    "checkpoint"
                )
                return self
            # Otherwise the weights are those of `self.step` completed steps (they change
            # only in the deferred optimiser steps): checkpoint them and stop cleanly.
            self._checkpoint()
            self._set_status("interrupted")
            print(
                f"interrupted after step {self.step}: checkpoint saved; continue with "
                f"wb.rl.resume({str(self.run_dir)!r})"
            )
            return self
        except BaseException:
            # Anything else (an error, SystemExit) leaves the last checkpoint as the state
            # to resume from; the folder must not claim to be running.
            self._set_status("failed")
            raise
        finally:
            bar.close()
        self._set_status("finished")
        return self
