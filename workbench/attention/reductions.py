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
The divisor is computed as ``sum_{s >= 1} A[t, s]`` (`sink_scale`), which equals
``1 - A[t, 0]`` where rows sum to 1. Where they do not (gpt-oss: a learned sink logit
outside the sequence takes a share of each row), each row is still renormalised to 1 over
its keys ``s >= 1``, as the sink's name says: on every path and every tile alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import WorkbenchError
from . import tiling
from .kernels import TileSums

__all__ = [
    "DEFAULT_FAI_CUTS",
    "DEFAULT_MAX_WINDOW",
    "MAX_BAND",
    "SINKS",
    "HeadStats",
    "StatsAccumulator",
    "banded_horizon",
    "check_sink",
    "normalise_cuts",
    "sink_scale",
]

#: FAI horizon bounds kept by default so that `Analysis.with_params` can change the horizon
#: without a forward pass: any ``H_lo`` in this list and any ``H_hi`` with ``H_hi + 1`` in it
#: (plus ``H_hi=None``, the end of the response, which is always kept). Cuts up to the
#: band's width (`DEFAULT_MAX_WINDOW`) cost nothing in the pass (they are read off the
#: band); each longer one costs as many entries per query row and head as the tile has
#: rows (at most ``StatsAccumulator.ROWS``), so only the round horizons 50, 100, 200, 400,
#: 500 and 1000 are kept.
DEFAULT_FAI_CUTS: tuple[int, ...] = (*range(0, 33), 51, 101, 201, 401, 501, 1001)

#: How the first token's attention (the attention sink) is treated: ``"keep"`` is the
#: paper's definition; ``"exclude"`` removes it and renormalises each row.
SINKS = ("keep", "exclude")


def check_sink(sink: object) -> str:
    """`sink` if it is one of `SINKS`, else a `WorkbenchError` naming them."""
    if not isinstance(sink, str) or sink not in SINKS:
        raise WorkbenchError(
            f"sink={sink!r} is not a sink setting",
            f'pass one of {list(SINKS)} ("keep" is the paper\'s definition)',
        )
    return sink


def sink_scale(rest: Tensor) -> Tensor:
    """Each row's factor for ``sink="exclude"``, ``1 / rest`` (0 where the first token takes
    everything), from ``rest[t] = sum_{s >= 1} A[t, s]``, of any shape.

    Pass the rest summed from the other keys, not ``1 - A[t, 0]``: for a head that gives
    the sink nearly everything, that difference is off by up to an ulp of 1 (6e-8 in
    float32), a large share of what remains.
    """
    return torch.where(rest > 0, 1.0 / rest.clamp_min(torch.finfo(rest.dtype).tiny), 0.0)


#: Largest WAAD window kept by default (the paper tried 5..20).
DEFAULT_MAX_WINDOW = 32

#: Widest band a pass keeps in place of column sums (``columns=False``): the band costs
#: about ``4 x width`` bytes per head and position, and ``width`` dot products per row.
MAX_BAND = 256


def banded_horizon(horizon: tuple[int, int | None]) -> bool:
    """Whether a band can hold the cuts of FAI over `horizon` (a finite ``H_hi`` with
    ``H_hi + 1 <= MAX_BAND``), so a pass needs no column sums for it."""
    return horizon[1] is not None and horizon[1] + 1 <= MAX_BAND


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

    def __repr__(self) -> str:
        """A summary (the tensors' shapes, not their values): a cell ending in
        ``analysis.stats`` printed every tensor, 28k characters for a 28-token trace."""
        try:
            n_layers = len({layer for layer, _ in self.heads})
            shapes = ", ".join(
                f"{name}={list(getattr(self, name).shape)}"
                for name in ("rowsum", "dist", "band", "cut_sums")
            )
            cuts = [str(c) for c in self.cuts]
            if len(cuts) > 8:
                cuts = [*cuts[:4], "...", *cuts[-2:]]
            return (
                f"HeadStats(heads={len(self.heads)} in {n_layers} layers, n_pos={self.n_pos}, "
                f"prompt_len={self.prompt_len}, max_window={self.max_window}, "
                f"cuts=[{', '.join(cuts)}], {shapes})"
            )
        except Exception:
            return f"<HeadStats at {id(self):#x}>"

    @property
    def max_window(self) -> int:
        """The number of diagonals kept. They bound the WAAD window, except where they
        cover the sequence (``max_window >= n_pos``, as `StatsAccumulator` caps a wider
        band): any window ``W >= n_pos`` then gives the WAAD of ``W = n_pos``
        (`window_for`)."""
        return int(self.band.shape[-1])

    def window_for(self, window: int) -> int:
        """The window to read `band` with for WAAD window `window`: `window` itself, or
        ``n_pos`` where the band covers the sequence and `window` is longer (no distance
        reaches ``n_pos``, so the larger window clips nothing more: the same WAAD)."""
        covers = self.max_window >= self.n_pos
        return min(window, max(self.n_pos, 1)) if covers else window

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


def normalise_cuts(cuts: Sequence[int], n_pos: int) -> tuple[int, ...]:
    """Sorted distinct cut distances clipped to ``1..n_pos`` with ``n_pos`` always present."""
    out = {min(int(c), n_pos) for c in cuts if int(c) > 0}
    out.add(n_pos)
    return tuple(sorted(out))


class StatsAccumulator:
    """Builds a `HeadStats` from tiles of query rows of each head's pattern.

    Call `add` with tiles ``P[h, rows, keys]`` in ascending row order for each head (each
    query row exactly once: the tiled path and the hook path both do; a tile may start at
    a later key, ``key0``, when the keys before it get nothing from its rows, as outside a
    sliding window); `finish` returns
    the statistics. `add` reduces ``ROWS`` query rows at a time, so a whole pattern can be
    passed at once.

    Cost per query row and head, beyond reading the tile: a row sum and a product with the
    key positions (row distances), one column sum (the unlimited FAI cut), a ``max_window``
    gather (the band) and one entry per tile row for each FAI cut longer than
    ``max_window`` (the upper triangle of a square block: the rows of a cut's horizon
    that end inside the tile; the horizon's earlier rows are the running column sum).
    Cuts up to ``max_window`` are read off the band in `finish`.
    Memory: the outputs plus about one tile of temporaries.

    Args:
        heads: the ``(layer, head)`` pairs; `add` gets their rows in this order.
        n_pos: sequence length.
        prompt_len: first response position.
        max_window: number of diagonals kept in `HeadStats.band`, at most `n_pos` (the
            diagonals beyond the sequence are empty; see `HeadStats.max_window`).
        cuts: cut distances for `HeadStats.cut_sums` (normalised by `normalise_cuts`).
        device: where the accumulators live.
        sink: ``"keep"`` or ``"exclude"`` (see the module docstring).
        dtype: of the tiles' arithmetic and the accumulators. float32 serves the engine's
            passes; the raw-pattern functions (`metrics.stats_from_pattern`) take float64,
            so FAI over a horizon that starts after its token (the difference of two of a
            column's cut sums) keeps attention far below float32's rounding of the sums.
        first_row: the first query row `add` will be given: 0, or ``prompt_len`` for a
            pass that computes only the response rows (the prompt given as a KV cache).
            Rows before it stay 0 in ``rowsum``, ``dist`` and ``band``; no metric reads
            them, and prompt rows never reach a response column, so FAI is unchanged.
        columns: False keeps no column sums beyond the band: ``max_window`` widens to
            the longest finite cut, every cut is read off the band, and the whole column
            (the cut ``n_pos``, FAI to the end of the response) is kept only when the
            band holds it (``n_pos <= max_window``). The rows may then come as a band
            (`add_band`), which a pass computes without the probabilities (the RL credit,
            `workbench.attention.interface.Banded`).
    """

    #: Query rows reduced at a time on the CPU (a long cut's triangle is ``ROWS x ROWS``
    #: per head); a GPU takes more (`tiling.chunk_rows`).
    ROWS = tiling.CPU_CHUNK

    def __init__(
        self,
        heads: list[tuple[int, int]],
        n_pos: int,
        prompt_len: int,
        max_window: int,
        cuts: Sequence[int],
        device: torch.device | str = "cpu",
        sink: str = "keep",
        first_row: int = 0,
        columns: bool = True,
        dtype: torch.dtype = torch.float32,
    ):
        if first_row not in (0, prompt_len):
            raise ValueError(f"first_row must be 0 or prompt_len ({prompt_len}), not {first_row}")
        self.sink = sink
        self.dtype = dtype
        self.heads = list(heads)
        self.n_pos = n_pos
        self.prompt_len = prompt_len
        self.cuts = normalise_cuts(cuts, n_pos)
        if not columns:
            max_window = max([max_window, *(min(int(c), n_pos) for c in cuts)])
        # Diagonals d >= n_pos hold nothing (t - d < 0 for every row t): a band of n_pos
        # of them is every WAAD window W >= n_pos (no distance reaches W, so none is
        # clipped), and a wider one only allocated zeros (max_window=10**5: ~120 GB).
        max_window = min(max_window, max(n_pos, 1))
        self.max_window = max_window
        self.columns = columns
        #: Whether `finish` keeps the whole column (the cut ``n_pos``).
        self.whole = columns or n_pos <= max_window
        nh, n_r = len(self.heads), n_pos - prompt_len
        self.device = torch.device(device)
        self.rowsum = torch.zeros(nh, n_pos, device=device, dtype=dtype)
        self.dist = torch.zeros(nh, n_pos, device=device, dtype=dtype)
        # `max_window` zero rows after the last position: `finish` reads the cuts along the
        # band's diagonals as one strided view, which then never leaves the storage.
        self._band_rows = torch.zeros(
            nh, n_pos + max_window, max_window, device=device, dtype=dtype
        )
        self.band = self._band_rows[:, :n_pos]
        # The last row is the running column sum over the response rows seen so far; a
        # finite cut's entry is set once, when the tile holding its horizon's last row comes.
        self.cut_sums = torch.zeros(nh, len(self.cuts), n_r, device=device, dtype=dtype)
        finite = list(enumerate(self.cuts[:-1]))
        self._band_cuts = [(i, c) for i, c in finite if c <= max_window]
        if not columns and self.whole:  # the band holds the whole column too
            self._band_cuts.append((len(self.cuts) - 1, n_pos))
        #: The cuts longer than the band, whose triangles `add` reduces per tile, and their
        #: indices into `cuts`.
        self.long_cuts: tuple[int, ...] = tuple(c for _, c in finite if c > max_window)
        self._long_idx = tuple(i for i, c in finite if c > max_window)
        self._next = [first_row] * nh
        self._aux: dict[tuple[int, torch.device], Tensor] = {}

    def _positions(self, tk: int, device: torch.device) -> Tensor:
        """``[tk]`` key positions as floats (cached: every layer uses the same tiles)."""
        m = self._aux.get((tk, device))
        if m is None:
            m = torch.arange(tk, device=device, dtype=self.dtype)
            self._aux = {(tk, device): m}
        return m

    def add(
        self,
        rows: slice,
        pattern: Float[Tensor, "head q_tile k_tile"],
        head_rows: slice | None = None,
        key0: int = 0,
        sums: TileSums | None = None,
    ) -> None:
        """Accumulate one tile.

        Args:
            rows: the query positions of the tile (``slice(row0, row0 + q_tile)``), the
                next rows of these heads.
            pattern: ``[head q_tile k_tile]`` attention of those rows to keys
                ``key0..key0+k_tile-1`` (``key0 + k_tile >= row0 + q_tile``; keys beyond
                the row are 0).
            head_rows: which rows of the accumulators the heads of `pattern` fill
                (default: all).
            key0: the tile's first key (at most ``row0``). The keys before it must have
                probability 0 in every row of the tile (outside a sliding window); the
                reductions then cost ``O(k_tile)`` per row, not ``O(row0 + q_tile)``.
            sums: `pattern`'s sums as the kernel computed them with its softmax
                (`workbench.attention.kernels.TileSums` with leading dimension ``head``:
                the row sums, the row distances, the column sums and, where
                given, the band of `max_window` diagonals and the triangles of
                `long_cuts`), used in place of the same reductions of `pattern`
                (``sink="keep"``, at most ``ROWS`` rows).
        """
        hr = head_rows if head_rows is not None else slice(None)
        row0, row1 = rows.start, rows.stop
        tq, tk = pattern.shape[-2], pattern.shape[-1]
        assert row1 - row0 == tq and key0 + tk >= row1 and 0 <= key0 <= row0, (
            rows,
            pattern.shape,
            key0,
        )
        assert set(self._next[hr]) == {row0}, "tiles must come in ascending row order"
        self._next[hr] = [row1] * len(self._next[hr])
        if sums is not None and self.sink == "keep" and tq <= self.ROWS:
            self._add(row0, row1, pattern[:, :, : row1 - key0], hr, key0, sums)
            return
        # Bounds the temporaries of a whole pattern; on a GPU in larger chunks (`tiling`).
        chunk = tiling.chunk_rows(pattern.device, pattern.shape[0], cpu=self.ROWS)
        for a in range(0, tq, chunk):
            e = min(tq, a + chunk)
            self._add(row0 + a, row0 + e, pattern[:, a:e, : row0 + e - key0], hr, key0)

    def add_band(
        self,
        rows: slice,
        dist: Float[Tensor, "head q_tile"],
        band: Float[Tensor, "head q_tile band"],
        head_rows: slice | None = None,
    ) -> None:
        """Accumulate rows given as their row distances and diagonal band (``sink="keep"``).

        Args:
            rows: the query positions, the next rows of these heads.
            dist: ``[head q_tile]`` ``sum_s A[t, s] (t - s)``.
            band: ``[head q_tile w]`` ``A[t, t-d]`` for ``d < w``, ``w >= max_window``.
            head_rows: which rows of the accumulators the heads fill (default: all).

        Rows sum to 1 (the band's probabilities are normalised by construction), and the
        column sums are read off the band in `finish`, so only an accumulator built with
        ``columns=False`` takes bands.
        """
        hr = head_rows if head_rows is not None else slice(None)
        if self.columns:
            raise ValueError("add_band needs an accumulator built with columns=False")
        if self.sink != "keep":
            raise ValueError("add_band supports sink='keep' only")
        assert band.shape[-1] >= self.max_window, (band.shape, self.max_window)
        assert set(self._next[hr]) == {rows.start}, "rows must come in ascending order"
        self._next[hr] = [rows.stop] * len(self._next[hr])
        self.rowsum[hr, rows] = 1.0
        self.dist[hr, rows] = dist.to(self.device, self.dtype)
        self.band[hr, rows] = band[..., : self.max_window].to(self.device, self.dtype)

    def _add(
        self,
        row0: int,
        row1: int,
        pattern: Tensor,
        hr: slice,
        key0: int,
        sums: TileSums | None = None,
    ) -> None:
        """Reduce rows ``row0..row1-1`` of `hr`'s heads (their keys ``key0..row1-1``),
        taking the row and column sums from `sums` where given (``sink="keep"``)."""
        tk = row1
        dev = pattern.device
        p = pattern.to(self.dtype)
        h = p.shape[0]
        pl = self.prompt_len
        pos = self._positions(tk, dev)
        # rowsum[t] = sum_s A[t,s]; dist[t] = sum_s A[t,s] (t-s)
        #   = (t - c) rowsum[t] - sum_s A[t,s] (s - c), with c = row1 - 1, these rows' last.
        # Measured from c, a row near it keeps the precision of its own distance: measured
        # from key0, both terms were about t, and their float32 rounding (t * 6e-8, 2e-4 at
        # T = 4096) swamped a local head's distance, so the span of a short response after
        # a long prompt was off by 1e-3 relative. The kernel's `sums.dist` is summed from
        # each row's own key.
        scale = None
        if sums is None:
            rowsum = p.sum(-1)
            c = row1 - 1
            # A'[t,s] = A[t,s] * scale[t] for s >= 1 (and 0 at s = 0) with `sink="exclude"`:
            # the sink column is left out of the distances.
            j0 = 1 if self.sink == "exclude" and key0 == 0 else 0
            back = torch.matmul(p[..., j0:], pos[j0 : tk - key0] - (c - key0))  # a GEMV
        else:
            rowsum, dist = sums.rowsum.to(self.dtype), sums.dist.to(self.dtype)
        if self.sink == "exclude":
            # A'[t,s] = A[t,s] * scale[t] for s >= 1, with `sink_scale`. With key0 > 0 these
            # rows give the first token nothing, and their rest is the whole row: 1, or less
            # where a learned sink logit (gpt-oss) takes a share (taken as 1, such rows were
            # left unscaled, so a row's value depended on where its tile started).
            rest = p[..., 1:].sum(-1) if key0 == 0 else rowsum
            scale = sink_scale(rest)
            rowsum = rest * scale
            back = back * scale
        if sums is None:
            dist = (pos[row0:row1] - c) * rowsum - back
        self.rowsum[hr, row0:row1] = rowsum.to(self.device)
        self.dist[hr, row0:row1] = dist.to(self.device)
        # Diagonal band: A[t, t-d].
        w = self.max_window
        if sums is not None and sums.band is not None:
            got = sums.band[..., :w]
        else:
            idx = torch.arange(row0, row1, device=dev)[:, None] - torch.arange(w, device=dev)
            valid = idx >= max(key0, 0 if scale is None else 1)
            index = (idx - key0).clamp(min=0).unsqueeze(0).expand(h, -1, -1)
            got = p.gather(-1, index) * valid
        if scale is not None:
            got = got * scale[..., None]
        self.band[hr, row0:row1] = got.to(self.device)
        if row1 <= pl:
            return  # prompt rows never reach a response column
        running = self.cut_sums[hr, -1]  # the response rows before these
        if self.long_cuts:
            tri = None if sums is None else sums.tri
            self._long_cuts(row0, p, scale, running, hr, key0, tri)
        # Column sums over the response columns (prompt rows are 0 there).
        weight = (
            torch.ones(1, 1, row1 - row0, device=dev, dtype=self.dtype)
            if scale is None
            else scale[:, None]
        )
        first = max(key0, pl)  # the first response column these rows reach
        if sums is None:
            colsum = torch.matmul(weight, p)[:, 0, first - key0 :]  # [h, response column]
        else:
            colsum = sums.colsum[:, first - key0 : tk - key0].to(self.dtype)
        if scale is not None and pl == 0 and key0 == 0:
            colsum[:, 0] = 0.0  # A'[t, 0] = 0
        running[:, first - pl : tk - pl] += colsum.to(self.device)

    def _long_cuts(
        self,
        row0: int,
        p: Tensor,
        scale: Tensor | None,
        running: Tensor,
        hr: slice,
        key0: int,
        tri: Tensor | None = None,
    ) -> None:
        """Set the cuts longer than the band whose horizons end in rows ``row0..``.

        Cut ``c`` of column ``s`` is the column's sum over rows ``s .. s+c-1``. The horizon
        of column ``s = row0 - c + 1 + i`` ends at row ``row0 + i``: its cut is the running
        sum before these rows plus ``sum_{j <= i} A[row0 + j, s]``, the column sums of the
        upper triangle of the ``n x n`` block of these rows and those ``n`` columns (0 for
        the columns before `key0`, which these rows do not reach). `tri` ``[h, cut, n]``,
        where given, holds those column sums (`kernels.TileSums.tri`, ``sink="keep"``).
        """
        n = p.shape[1]
        dev, pl = p.device, self.prompt_len
        low = pl if scale is None else max(pl, 1)  # the first column with a cut
        if tri is None:
            weighted = p if scale is None else p * scale[..., None]
            upper = torch.ones(n, n, dtype=torch.bool, device=dev).triu_()  # [j, i]: j <= i
        long = zip(self._long_idx, self.long_cuts, strict=True)
        for ci_long, (ci, c) in enumerate(long):
            first = row0 - c + 1  # the column whose horizon ends at row0
            skip = max(0, low - first)  # columns before `low` (or before 0) have no cut here
            if skip >= n:
                continue
            cols = slice(first + skip - pl, first + n - pl)  # response columns
            self.cut_sums[hr, ci, cols] = running[:, cols]
            seen = max(skip, key0 - first)  # the first of them these rows reach
            if seen >= n:
                continue
            if tri is not None:
                part = tri[:, ci_long, seen:]
            else:
                block = weighted[:, :, first + seen - key0 : first + n - key0]  # [h, j, i]
                part = (block * upper[:, seen:]).sum(1)  # [h, i]
            self.cut_sums[hr, ci, first + seen - pl : first + n - pl] += part.to(self.device)

    def finish(self) -> HeadStats:
        """The accumulated statistics (moved to the CPU)."""
        n, pl, w = self.n_pos, self.prompt_len, self.max_window
        cut_sums = self.cut_sums
        total = cut_sums[:, -1]
        for i, c in zip(self._long_idx, self.long_cuts, strict=True):
            # Horizons that run past the last row hold the whole column.
            first = max(n - c + 1, pl)
            cut_sums[:, i, first - pl :] = total[:, first - pl :]
        if self._band_cuts:
            # cut c of column s = sum_{d<c} A[s+d, s] = sum_{d<c} band[s+d, d]: element d of
            # the view's row s is band[s+d, d] (a stride of w + 1), 0 past the last row.
            rows = self._band_rows
            diag = rows.as_strided((rows.shape[0], n - pl, w), (rows.stride(0), w, w + 1), pl * w)
            for h in range(0, len(self.heads), 32):  # [32, response_pos, w] at a time
                prefix = diag[h : h + 32].cumsum(-1)
                for i, c in self._band_cuts:
                    cut_sums[h : h + 32, i] = prefix[..., c - 1]
        cuts = self.cuts
        if not self.whole:  # the last row holds only the tiles' column sums, if any
            cuts, cut_sums = cuts[:-1], cut_sums[:, :-1]
        return HeadStats(
            heads=self.heads,
            n_pos=self.n_pos,
            prompt_len=self.prompt_len,
            rowsum=self.rowsum.cpu(),
            dist=self.dist.cpu(),
            band=self.band.cpu(),
            cuts=cuts,
            cut_sums=cut_sums.cpu(),
        )
