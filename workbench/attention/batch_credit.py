"""Credit weights of a whole batch of rollouts from one set of statistics.

The shared-prompt update forward (`workbench.rl.forward`) reduces every rollout's credit
heads in one frame (`engine.SharedFrameCollector`): each rollout's response starts at the
same column ``P`` and ends at its own ``end``. `frame_gammas` computes the per-head span,
WAAD and FAI of every rollout in a few batched operations on those common statistics,
with the same functions and equations as `Analysis` (Eq. 7-10):

- span (Eq. 7): mean over the rollout's response rows of the row distance;
- classes (Eq. 8): the bottom / top quantiles by span, ties to the lower ``(layer, head)``;
- WAAD (Eq. 9) over the local heads, FAI (Eq. 10) over the global heads, with each
  rollout's own end bounding its horizons; ``Delta[t] = |WAAD[t] - WAAD[t+1]|``.

Only the selection of preplan and anchor tokens, the coupled sets and the weights run per
rollout, on short numpy arrays, through the same functions `Analysis.gamma` uses
(`credit.gamma_of`). The result equals ``Analysis.gamma`` of each rollout's own
statistics up to float rounding of the batched reductions (a tie broken differently by
one ulp is the only way they can differ; the tests compare them exactly).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from .credit import gamma_of
from .metrics import HeadStats, fai_heads, waad_heads
from .params import RhythmParams
from .rhythm import coupled_sets, select_count, thresholds, top_q

__all__ = ["frame_gammas"]


class _Rollout:
    """One rollout's curves in its response's frame (``prompt_len = 0``), with the rhythm
    sets computed on first use: the record `credit.gamma_of` reads."""

    prompt_len = 0

    def __init__(self, waad, delta, fai, entropy, params: RhythmParams):
        self.waad, self.delta, self.fai, self.entropy = waad, delta, fai, entropy
        self.params, self.n_pos = params, len(waad)

    @functools.cached_property
    def preplan(self) -> list[int]:
        return top_q(self.delta, self.params.top_q)

    @functools.cached_property
    def anchors(self) -> list[int]:
        return top_q(self.fai, self.params.top_q)

    @functools.cached_property
    def tau(self) -> tuple[float, float]:
        return thresholds(self.waad, self.delta, self.params.tau_waad, self.params.tau_delta)

    @functools.cached_property
    def _sets(self) -> tuple[list[int], list[int]]:
        return self._coupled_sets(self.anchors)

    @property
    def dominated(self) -> list[int]:
        return self._sets[0]

    @property
    def intro(self) -> list[int]:
        return self._sets[1]

    def _coupled_sets(self, anchors: list[int]) -> tuple[list[int], list[int]]:
        tau_w, tau_d = self.tau
        return coupled_sets(
            anchors, self.waad, self.delta, k=self.params.k, tau_waad=tau_w, tau_delta=tau_d
        )


def _group_mean(per_head: Tensor, pick: Tensor) -> Tensor:
    """``[batch, response_pos]``: the mean over each rollout's picked heads ``[batch, k]``
    of ``per_head`` ``[batch, head, response_pos]``."""
    idx = pick.sort(-1).values  # the heads in (layer, head) order, as `Analysis` sums them
    return per_head.gather(1, idx[..., None].expand(-1, -1, per_head.shape[-1])).mean(1)


def frame_gammas(
    stats: HeadStats,
    rows: Int[Tensor, "batch head"],
    ends: Int[Tensor, " batch"],
    params: RhythmParams,
    strategy: str,
    *,
    gamma_amp: float = 1.5,
    seeds: list[int] | None = None,
    entropy: Float[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, "batch pos"]:
    """The weights of every rollout's response, ``[batch, n_pos - prompt_len]``.

    Args:
        stats: the common statistics (`engine.SharedFrameCollector.finish_frame`); every
            response starts at ``stats.prompt_len``.
        rows: ``[batch, head]`` each rollout's rows of `stats`, heads in ``(layer, head)``
            order.
        ends: ``[batch]`` the column after each rollout's last token.
        params: the `RhythmParams`.
        strategy: one of `credit.STRATEGIES`.
        gamma_amp: the amplification.
        seeds: the ``"random"`` seed of each rollout.
        entropy: ``[batch, response_pos]`` next-token entropies (``"entropy"`` only).

    Returns:
        float32, 1.0 past each rollout's end (and everywhere for an empty response).
    """
    pl, n = stats.prompt_len, stats.n_pos
    b, nh = rows.shape
    lengths = (ends - pl).clamp(min=0)
    out = torch.ones(b, n - pl, dtype=torch.float32)
    if strategy == "none" or b == 0 or n == pl:
        return out
    inside = torch.arange(n - pl)[None, :] < lengths[:, None]  # [batch, response_pos]
    # Span (Eq. 7) over each rollout's own response rows, then its classes (Eq. 8).
    dist = stats.dist[:, pl:].double()[rows]  # [batch, head, response_pos]
    span = (dist * inside[:, None]).sum(-1) / lengths.clamp(min=1)[:, None].double()
    ql, qg = params.head_quantiles
    local = span.argsort(dim=-1, stable=True)[:, : select_count(ql, nh)]
    glob = (-span).argsort(dim=-1, stable=True)[:, : select_count(qg, nh)]
    waad = _group_mean(waad_heads(stats, params.window)[:, pl:][rows], local)
    head_ends = torch.empty(stats.rowsum.shape[0], dtype=torch.long)
    head_ends[rows] = ends[:, None].expand(-1, nh)
    per_fai = fai_heads(stats, params.fai_horizon, params.fai_min_rows, ends=head_ends)
    fai = _group_mean(per_fai[:, pl:][rows], glob)
    waad = torch.where(inside, waad, float("nan"))
    delta = torch.full_like(waad, float("nan"))
    delta[:, :-1] = (waad[:, :-1] - waad[:, 1:]).abs()
    waad_np, delta_np, fai_np = waad.numpy(), delta.numpy(), fai.numpy()
    ent = None if entropy is None else entropy.double().numpy()
    for i in range(b):
        c = int(lengths[i])
        if c == 0:
            continue
        r = _Rollout(
            waad_np[i, :c],
            delta_np[i, :c],
            fai_np[i, :c],
            np.full(c, np.nan) if ent is None else ent[i, :c],
            params,
        )
        seed = None if seeds is None else seeds[i]
        out[i, :c] = gamma_of(r, strategy, seed=seed, gamma_amp=gamma_amp)
    return out
