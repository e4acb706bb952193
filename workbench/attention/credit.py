"""Credit weights ``gamma[t]`` for each strategy of the paper (Eq. 12-19).

``gamma`` multiplies the GRPO advantage of each response token; it is 1.0 outside the
amplified sets (and on the prompt). ``gamma_amp = 1.5`` by default.

- ``"none"``: all ones.
- ``"local"`` (local-chunk): ``1 + (gamma_amp - 1) * [t in T_loc]`` (preplan tokens).
- ``"global"`` (global-anchor): ``1 + (gamma_amp - 1) * [t in T_glob]`` (anchors).
- ``"coupled"``: ``1 + (gamma_amp-1)[t in T_glob \\ D] + (1-alpha)(gamma_amp-1)[t in D]
  + alpha (gamma_amp-1)[t in I(D)]``. The bonuses **add** where the sets overlap (a token
  in ``I(D)`` that is also an anchor gets both), so the possible values are
  ``1``, ``1+(1-alpha)(g-1)``, ``1+alpha(g-1)``, ``1+(g-1)`` and their sums over overlaps.
- ``"random"``: the same fraction ``top_q`` of the response, ``max(1, round(q * R))`` of its
  ``R`` tokens, uniformly at random (seeded). The metric strategies count only tokens where
  their metric is defined (FAI has none in the last ``H_lo``), so at short responses random
  amplifies a few tokens more than "global" (14 against 10 at ``R = 34``).
- ``"entropy"``: the top ``q`` response tokens by next-token entropy.
- ``"bottom-local"`` / ``"bottom-global"``: the bottom ``q`` by Delta / by FAI.
- ``"bottom-coupled"``: the coupled formula with the bottom-``q`` FAI tokens as anchors
  (``D`` and ``I(D)`` recomputed for them with the same rules) — this project's reading of
  the paper's bottom control.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .rhythm import check_entropy, select_count, top_q

__all__ = ["STRATEGIES", "coupled_gamma", "gamma_of", "set_gamma"]

STRATEGIES = (
    "none",
    "local",
    "global",
    "coupled",
    "random",
    "entropy",
    "bottom-local",
    "bottom-global",
    "bottom-coupled",
)


def set_gamma(n_pos: int, positions: list[int], gamma_amp: float = 1.5) -> Float[Tensor, " pos"]:
    """``1 + (gamma_amp - 1) * [t in positions]`` as a ``[pos]`` float32 tensor."""
    g = torch.ones(n_pos, dtype=torch.float32)
    if positions:
        g[torch.as_tensor(positions, dtype=torch.long)] = float(gamma_amp)
    return g


def coupled_gamma(
    n_pos: int,
    anchors: list[int],
    dominated: list[int],
    intro: list[int],
    *,
    gamma_amp: float = 1.5,
    alpha: float = 0.5,
) -> Float[Tensor, " pos"]:
    """The coupled weights (Eq. 16-19); bonuses add where sets overlap. ``[pos]`` float32."""
    bonus = np.zeros(n_pos)
    g1 = gamma_amp - 1.0
    dom = set(dominated)
    for t in anchors:
        bonus[t] += (1.0 - alpha) * g1 if t in dom else g1
    for t in intro:
        bonus[t] += alpha * g1
    return torch.as_tensor(1.0 + bonus, dtype=torch.float32)


def gamma_of(
    a: Any, strategy: str, *, seed: int | None = None, gamma_amp: float = 1.5
) -> Float[Tensor, " pos"]:
    """The weights ``[pos]`` (float32) of `strategy` for one sequence's rhythm.

    Args:
        a: an `Analysis`, or any record with its fields ``n_pos``, ``prompt_len``,
            ``params`` (``top_q``, ``alpha``), ``preplan``, ``anchors``, ``dominated``,
            ``intro``, ``delta``, ``fai``, ``entropy`` and ``_coupled_sets(anchors)``
            (the batched credit's per-rollout record).
        strategy, seed, gamma_amp: as in `Analysis.gamma` (validated there).
    """
    n, q, alpha, g = a.n_pos, a.params.top_q, a.params.alpha, gamma_amp
    if strategy == "none":
        return torch.ones(n, dtype=torch.float32)
    if strategy == "local":
        return set_gamma(n, a.preplan, g)
    if strategy == "global":
        return set_gamma(n, a.anchors, g)
    if strategy == "coupled":
        return coupled_gamma(n, a.anchors, a.dominated, a.intro, gamma_amp=g, alpha=alpha)
    if strategy == "random":
        rng = np.random.default_rng(seed)
        m = select_count(q, n - a.prompt_len)
        picks = rng.choice(np.arange(a.prompt_len, n), size=m, replace=False)
        return set_gamma(n, sorted(int(x) for x in picks), g)
    if strategy == "entropy":
        check_entropy(a)
        return set_gamma(n, top_q(a.entropy, q), g)
    if strategy == "bottom-local":
        return set_gamma(n, top_q(a.delta, q, bottom=True), g)
    if strategy == "bottom-global":
        return set_gamma(n, top_q(a.fai, q, bottom=True), g)
    anchors = top_q(a.fai, q, bottom=True)  # bottom-coupled
    dom, intro = a._coupled_sets(anchors)
    return coupled_gamma(n, anchors, dom, intro, gamma_amp=g, alpha=alpha)
