"""How many query rows one unit of the engine's work holds, on each kind of device.

The engine reduces attention in blocks of query rows: the attention function's tiles of
scores (`interface._tiled`), the accumulator's chunks of a tile (`StatsAccumulator.add`)
and the band path's blocks of diagonals (`interface._band`). The right size differs by
device:

- **The CPU** (`CACHE_SIZED`): a tile of about ``2^22`` scores, 96 to 224 rows, stays in
  the cache; measured on one thread (SmolLM2, a whole `wb.analyze`), 32-row tiles cost
  10% more at T = 4096 and 448-row tiles 15% more at T = 1024. The accumulator reduces
  256 rows at a time, the band 128.
- **A GPU** (anything else): every block is a handful of kernel launches (a tile and its
  reductions, about 20 to 50), and each launch costs microseconds whatever its size. The
  CPU's sizes made a long trace launch-bound: 86 tiles a layer for SmolLM2 at T = 8192,
  and `wb.analyze` took 6.0x an sdpa forward on an H200 (2.5x at T = 32768, where each
  tile holds more work). A GPU tile holds up to a 32nd of the free GPU memory in float32
  scores (`gpu_elements`, within ``2^24`` to ``2^28``; the tile, its probabilities and
  the temporaries then take at most about half the free memory) and at most ``T / 8``
  rows: a causal tile of ``n`` rows computes about ``n^2 / 2`` scores past its rows'
  last keys, ``n / T`` more work in all. The accumulator's chunks and the band's blocks
  stay within ``2^26`` elements. Measured on an H200 (session 35, `benchmarks/README.md`,
  SmolLM2's shapes, one round): `wb.analyze` over all layers took 0.82 s at T = 8192
  against 3.42 s in the CPU's sizes (1.87x and 7.84x an sdpa forward), and 4.82 s at
  32768 against 14.39 s (0.92x and 2.75x); the credit's band blocks made no difference
  (0.73 s either way at 8192). The tiles serve every analysis on a GPU.

Block sizes change which numbers are summed together (the column sums run over tiles),
so results differ between devices by float rounding only, never more; the tests run
the GPU sizes on the CPU by emptying `CACHE_SIZED`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["CACHE_SIZED", "band_rows", "chunk_rows", "gpu_elements", "tile_rows"]

#: Device types whose blocks are sized for a CPU cache (the tests empty it to run the
#: GPU sizes on the CPU).
CACHE_SIZED: tuple[str, ...] = ("cpu",)

#: CPU: target elements of one tile of scores, and the bounds on its rows.
CPU_ELEMENTS = 1 << 22
CPU_ROWS = (96, 224)
#: CPU: rows the accumulator reduces at a time, and rows of one block of the band.
CPU_CHUNK = 256
CPU_BAND = 128
#: GPU: the elements of one accumulator chunk's triangle or band block, the bounds on a
#: tile's elements (`gpu_elements`), and the bounds on any block's rows.
GPU_ELEMENTS = 1 << 26
GPU_TILE_ELEMENTS = (1 << 24, 1 << 28)
GPU_ROWS = (96, 4096)
#: GPU: a tile holds at most this fraction of the keys' rows (its causal waste).
GPU_TILE_SHARE = 8
#: Tile rows are a multiple of this.
MULTIPLE = 32


def _cache_sized(device: torch.device) -> bool:
    return device.type in CACHE_SIZED


def _clamp(rows: int, bounds: tuple[int, int]) -> int:
    return min(max(rows // MULTIPLE * MULTIPLE, bounds[0]), bounds[1])


def gpu_elements(device: torch.device) -> int:
    """The most float32 scores of one tile on `device` (not a CPU): a 32nd of its free
    memory, within `GPU_TILE_ELEMENTS`; `GPU_ELEMENTS` where the free memory is not known
    (a device other than CUDA)."""
    try:
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    except (RuntimeError, AssertionError):  # no driver, or another process's context
        free = None
    if free is None:
        return GPU_ELEMENTS
    lo, hi = GPU_TILE_ELEMENTS
    return min(max(free // 32, lo), hi)


def tile_rows(device: torch.device, heads: int, keys: int) -> int:
    """Query rows of one tile of scores over `keys` keys for ``batch x head_index =
    heads``: on the CPU about `CPU_ELEMENTS` scores within `CPU_ROWS`; on a GPU up to
    `gpu_elements` scores and ``keys / GPU_TILE_SHARE`` rows, within `GPU_ROWS`."""
    per_row = max(1, heads * keys)
    if _cache_sized(device):
        return _clamp(CPU_ELEMENTS // per_row, CPU_ROWS)
    rows = min(gpu_elements(device) // per_row, max(1, keys // GPU_TILE_SHARE))
    return _clamp(rows, GPU_ROWS)


def chunk_rows(device: torch.device, heads: int, cpu: int = CPU_CHUNK) -> int:
    """Rows `StatsAccumulator.add` reduces at a time for `heads` accumulator rows: `cpu`
    on the CPU; elsewhere as many as keep its largest temporary, a ``heads x rows x
    rows`` triangle (a long FAI cut), within ``GPU_ELEMENTS``, and never fewer than
    `CPU_CHUNK`."""
    if _cache_sized(device):
        return cpu
    fit = math.isqrt(GPU_ELEMENTS // max(1, heads))
    return _clamp(fit, (CPU_CHUNK, GPU_ROWS[1]))


def band_rows(device: torch.device, heads: int, width: int) -> int:
    """Query rows of one block of `interface._band` for ``batch x head_index = heads``: a
    block of ``rows`` queries scores ``rows + width - 1`` keys, so off the CPU ``heads x
    rows x (rows + width) <= GPU_ELEMENTS``, and never fewer than `CPU_BAND`."""
    if _cache_sized(device):
        return CPU_BAND
    per = GPU_ELEMENTS // max(1, heads)
    fit = (math.isqrt(width * width + 4 * per) - width) // 2  # rows * (rows + width) <= per
    return _clamp(fit, (CPU_BAND, GPU_ROWS[1]))
