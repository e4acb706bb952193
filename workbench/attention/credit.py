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
- ``"random"``: the same number of response tokens as ``top_q`` picks, uniformly at random
  (seeded).
- ``"entropy"``: the top ``q`` response tokens by next-token entropy.
- ``"bottom-local"`` / ``"bottom-global"``: the bottom ``q`` by Delta / by FAI.
- ``"bottom-coupled"``: the coupled formula with the bottom-``q`` FAI tokens as anchors
  (``D`` and ``I(D)`` recomputed for them with the same rules) — this project's reading of
  the paper's bottom control.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["STRATEGIES", "coupled_gamma", "set_gamma"]

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
