"""`HeadStats`: the per-head, per-token reductions of one sequence's attention, and the
`StatsAccumulator` that builds them from tiles of query rows.

Everything the workbench computes from attention goes through these reductions, so that the
metrics (`workbench.attention.metrics`) can be recomputed for a new window, FAI horizon,
head quantile or top-q without another forward pass:

- ``rowsum[h, t]   = sum_s A[t, s]``                       (1 up to rounding)
- ``dist[h, t]     = sum_s A[t, s] * (t - s)``             (row distance; span = its mean)
- ``band[h, t, d]  = A[t, t - d]`` for ``d < max_window``   (the diagonal band)
- ``cut_sums[h, c, s] = sum_{t in R, s <= t < s + cuts[c]} A[t, s]`` for response ``s``

With these, for any ``W <= max_window`` (Eq. 9)::

    WAAD_h[t] = sum_{d<W} band[t, d] * d + W * (rowsum[t] - sum_{d<W} band[t, d])

and for any horizon ``(H_lo, H_hi)`` with ``H_lo`` and ``H_hi + 1`` among ``cuts`` (Eq. 10)::

    FAI_h[s] = (cut_sums[H_hi + 1][s] - cut_sums[H_lo][s]) / |T(s)|

WAAD and FAI are linear in the pattern, so the value for a head group (``A_loc`` or
``A_glob``, plain means over heads) is the mean of the per-head values.

Attention sink (``sink="exclude"``, the workbench's addition): every reduction is taken of
``A'[t, s] = A[t, s] / (1 - A[t, 0])`` for ``s >= 1`` and ``A'[t, 0] = 0``, the attention
with the first token's share removed and each row renormalised. A row that gives the
first token everything (``A[t, 0] = 1``, e.g. row 0) has no ``A'`` and reduces to zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "DEFAULT_FAI_CUTS",
    "DEFAULT_MAX_WINDOW",
    "SINKS",
    "HeadStats",
    "StatsAccumulator",
    "normalise_cuts",
]

#: FAI horizon bounds kept by default so that `Analysis.with_params` can change the horizon
#: without a forward pass: any ``H_lo`` in this list and any ``H_hi`` with ``H_hi + 1`` in it
#: (plus ``H_hi=None``, the end of the response, which is always kept).
DEFAULT_FAI_CUTS: tuple[int, ...] = (
    *range(0, 22),
    25, 30, 40, 50, 51, 65, 76, 101, 129, 151, 201, 257, 301, 401, 501, 513, 1001, 1025,
)  # fmt: skip

#: How the first token's attention (the attention sink) is treated: ``"keep"`` is the
#: paper's definition; ``"exclude"`` removes it and renormalises each row.
SINKS = ("keep", "exclude")

#: Largest WAAD window kept by default (the paper tried 5..20).
DEFAULT_MAX_WINDOW = 32


@dataclass(frozen=True, eq=False)
class HeadStats:
    """Per-head, per-token reductions of the attention of one sequence.

    Attributes:
        heads: the analysed ``(layer, head)`` pairs, one per row of every tensor.
        n_pos: sequence length ``N``.
        prompt_len: first response position; the response is ``prompt_len..N-1``.
        rowsum: ``[head pos]`` row sums of each head's pattern.
        dist: ``[head pos]`` ``sum_s A[t,s] (t-s)`` (Eq. 7 before the mean).
        band: ``[head pos band]`` ``A[t, t-d]`` for ``d < max_window`` (0 where ``t-d<0``).
        cuts: sorted distances ``c`` of `cut_sums`; the last is ``n_pos`` (no limit).
        cut_sums: ``[head cut response_pos]`` ``sum_{t in R, t - s < c} A[t, s]``.
    """

    heads: list[tuple[int, int]]
    n_pos: int
    prompt_len: int
    rowsum: Float[Tensor, "head pos"]
    dist: Float[Tensor, "head pos"]
    band: Float[Tensor, "head pos band"]
    cuts: tuple[int, ...]
    cut_sums: Float[Tensor, "head cut response_pos"]

    @property
    def max_window(self) -> int:
        """The largest WAAD window these statistics support."""
        return int(self.band.shape[-1])

    @property
    def n_response(self) -> int:
        """Number of response positions."""
        return self.n_pos - self.prompt_len

    def select(self, rows: Sequence[int]) -> HeadStats:
        """The statistics of a subset of heads (row indices into `heads`)."""
        idx = torch.as_tensor(list(rows), dtype=torch.long)
        return HeadStats(
            heads=[self.heads[i] for i in rows],
            n_pos=self.n_pos,
            prompt_len=self.prompt_len,
            rowsum=self.rowsum[idx],
            dist=self.dist[idx],
            band=self.band[idx],
            cuts=self.cuts,
            cut_sums=self.cut_sums[idx],
        )


def exclude_sink(
    p: Float[Tensor, "... query_pos key_pos"],
) -> Float[Tensor, "... query_pos key_pos"]:
    """``A'[t, s] = A[t, s] / (1 - A[t, 0])`` for ``s >= 1``, ``A'[t, 0] = 0`` (a copy);
    rows with ``A[t, 0] = 1`` become zeros."""
    rest = 1.0 - p[..., :1]
    out = torch.where(rest > 0, p / rest.clamp_min(torch.finfo(p.dtype).tiny), 0.0)
    out[..., 0] = 0.0
    return out


def normalise_cuts(cuts: Sequence[int], n_pos: int) -> tuple[int, ...]:
    """Sorted distinct cut distances clipped to ``1..n_pos`` with ``n_pos`` always present."""
    out = {min(int(c), n_pos) for c in cuts if int(c) > 0}
    out.add(n_pos)
    return tuple(sorted(out))


class StatsAccumulator:
    """Builds a `HeadStats` from tiles of query rows of each head's pattern.

    Call `add` with consecutive or arbitrary tiles ``P[h, rows, keys]`` (each query row
    exactly once); `finish` returns the statistics. Memory: the outputs plus about three
    tiles of temporaries during `add`.

    Args:
        heads: the ``(layer, head)`` pairs; `add` gets their rows in this order.
        n_pos: sequence length.
        prompt_len: first response position.
        max_window: number of diagonals kept in `HeadStats.band`.
        cuts: cut distances for `HeadStats.cut_sums` (normalised by `normalise_cuts`).
        device: where the accumulators live.
        sink: ``"keep"`` or ``"exclude"`` (see the module docstring).
    """

    def __init__(
        self,
        heads: list[tuple[int, int]],
        n_pos: int,
        prompt_len: int,
        max_window: int,
        cuts: Sequence[int],
        device: torch.device | str = "cpu",
        sink: str = "keep",
    ):
        self.sink = sink
        self.heads = list(heads)
        self.n_pos = n_pos
        self.prompt_len = prompt_len
        self.max_window = max_window
        self.cuts = normalise_cuts(cuts, n_pos)
        nh, n_r = len(self.heads), n_pos - prompt_len
        self.device = torch.device(device)
        self.rowsum = torch.zeros(nh, n_pos, device=device)
        self.dist = torch.zeros(nh, n_pos, device=device)
        self.band = torch.zeros(nh, n_pos, max_window, device=device)
        self.cut_sums = torch.zeros(nh, len(self.cuts), n_r, device=device)
        self._cuts_t = torch.tensor(self.cuts, dtype=torch.long, device=device)
        self._c_max = max(self.cuts[:-1], default=1)
        self._pos_cache: dict[tuple[int, torch.device], Tensor] = {}

    def _positions(self, tk: int, device: torch.device) -> Tensor:
        """``[tk]`` key positions as floats (cached: every layer uses the same tiles)."""
        m = self._pos_cache.get((tk, device))
        if m is None:
            m = torch.arange(tk, device=device, dtype=torch.float32)
            self._pos_cache = {(tk, device): m}
        return m

    def add(
        self,
        rows: slice,
        pattern: Float[Tensor, "head q_tile k_tile"],
        head_rows: slice | None = None,
    ) -> None:
        """Accumulate one tile.

        Args:
            rows: the query positions of the tile (``slice(row0, row0 + q_tile)``).
            pattern: ``[head q_tile k_tile]`` attention of those rows to keys
                ``0..k_tile-1`` (``k_tile >= row0 + q_tile``; keys beyond the row are 0).
            head_rows: which rows of the accumulators the heads of `pattern` fill
                (default: all).
        """
        hr = head_rows if head_rows is not None else slice(None)
        row0, row1 = rows.start, rows.stop
        tq, tk = pattern.shape[-2], pattern.shape[-1]
        assert row1 - row0 == tq and tk >= row1, (rows, pattern.shape)
        dev = pattern.device
        p = pattern.float()
        if self.sink == "exclude":
            p = exclude_sink(p)
        # rowsum[t] = sum_s A[t,s]; dist[t] = sum_s A[t,s] (t-s) = t * rowsum[t] - sum_s A[t,s] s
        # (the subtraction loses about t * 1e-7 in float32, far below 1e-5 * span).
        rowsum = p.sum(-1)
        weighted = torch.matmul(p, self._positions(tk, dev))  # sum_s A[t,s] s (a GEMV)
        rows_f = torch.arange(row0, row1, device=dev, dtype=torch.float32)
        self.rowsum[hr, row0:row1] = rowsum.to(self.device)
        self.dist[hr, row0:row1] = (rows_f * rowsum - weighted).to(self.device)
        # Diagonal band: A[t, t-d].
        w = self.max_window
        idx = torch.arange(row0, row1, device=dev)[:, None] - torch.arange(w, device=dev)[None, :]
        valid = idx >= 0
        got = p.gather(-1, idx.clamp(min=0).unsqueeze(0).expand(p.shape[0], tq, w))
        self.band[hr, row0:row1] = (got * valid).to(self.device)
        # Column sums over response rows, by query distance (FAI numerators).
        pl = self.prompt_len
        r0 = max(row0, pl)
        if r0 < row1 and tk > pl:
            rows_r = p[:, r0 - row0 :]  # [h, response rows in tile, keys]
            # The unlimited cut (the last, n_pos) is a plain column sum.
            self.cut_sums[hr, -1, : tk - pl] += rows_r[:, :, pl:tk].sum(1).to(self.device)
            if len(self.cuts) > 1:
                # Finite cuts c: rows r0..min(s + c - 1, row1 - 1) of column s; only columns
                # s >= r0 - c_max + 1 can receive any, so the prefix sums stay narrow.
                c_lo = max(pl, r0 - self._c_max + 1)
                csum = rows_r[:, :, c_lo:tk].cumsum(1)
                cols = torch.arange(c_lo, tk, device=dev)
                last = torch.clamp(
                    cols[None, :] + self._cuts_t.to(dev)[:-1, None] - 1, max=row1 - 1
                )
                local = last - r0  # [cut, cols]
                ok = local >= 0
                g = csum.gather(1, local.clamp(min=0).unsqueeze(0).expand(p.shape[0], -1, -1))
                self.cut_sums[hr, :-1, c_lo - pl : tk - pl] += (g * ok).to(self.device)

    def finish(self) -> HeadStats:
        """The accumulated statistics (moved to the CPU)."""
        return HeadStats(
            heads=self.heads,
            n_pos=self.n_pos,
            prompt_len=self.prompt_len,
            rowsum=self.rowsum.cpu(),
            dist=self.dist.cpu(),
            band=self.band.cpu(),
            cuts=self.cuts,
            cut_sums=self.cut_sums.float().cpu(),
        )
