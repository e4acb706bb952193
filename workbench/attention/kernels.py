"""A compiled CPU kernel for the tiled attention: each tile's softmax and its row and column
sums in one pass.

The tiled path (`workbench.attention.interface`) materialises every tile of scores
``[batch x head_index, query_tile, key_tile]``. In PyTorch its softmax and the analysis
reductions (row sums, ``sum_s A[t, s] s``, column sums) are separate passes over a tile of
up to 28 MB, which leaves the cache between them. `softmax_stats` does all of them while
each row is in the cache: the row's maximum, ``exp(s - max)`` and its sum, then
``p = exp(s - max) / sum`` written in place with the row's sums and the tile's column sums
accumulated on the way; entries past a row's causal limit become 0, so no mask needs to be
applied first. With the row still in the cache it also copies out the first diagonals
(WAAD's band) and adds the row to the triangles of the long FAI cuts
(`StatsAccumulator`). Measured on tiles of SmolLM2's shape at T = 4096 and 8192 (9 heads,
96 rows, one thread): 1.05-1.27 ns per score, against about 2 ns for PyTorch's softmax,
masked fill and three reductions (benchmarks/README.md, session 14).

The kernel is C, compiled on first use with the machine's C compiler (``$CC``, else ``cc``)
for this CPU (``-march=native``), and cached under the workbench's cache
(``kernels/<hash of the source, flags, compiler and CPU>``, written atomically). Its
``exp`` is a polynomial within 2 ulp of ``expf`` that gcc vectorises; sums are float
within blocks of 256 entries and float64 across them. It is built without
``-ffast-math``, so loading it leaves the process's floating-point mode (denormals) alone.
Where no compiler is found or the build fails, `available` is False after one warning and
the tiled path uses PyTorch; set ``WORKBENCH_KERNELS=0`` to choose that path.

Threads: the ``batch x head_index`` rows of a tile are split over
``torch.get_num_threads()`` Python threads (ctypes releases the GIL during the call).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..models.cache import cache_dir

__all__ = ["TileSums", "available", "softmax_stats"]

_SOURCE = r"""
#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 0 (a score minus its row's maximum); 0 below -87.3, where expf leaves
   the normal floats (a masked key: the float minimum minus the maximum). Cody-Waite
   reduction x = k ln2 + r, |r| <= ln2 / 2, and Cephes' degree-6 polynomial for exp(r):
   within 2 ulp of the correctly rounded value. Plain arithmetic, so that gcc vectorises
   the loops that call it. */
static inline float exp_neg(float x)
{
    float k = __builtin_rintf(x * 1.44269504088896341f);
    float r = x - k * 0.693359375f;
    r = r + k * 2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.33654f ? 0.0f : y * scale;
}

/* Sums over a row run in float within blocks of BLOCK entries (vector lanes), and in
   double across blocks. */
#define BLOCK 256

/* Rows r0..r1-1 of s [R, n, width]: row i of group r becomes its softmax over its first
   len = min(width, max(1, lim0 + i + 1)) entries, and 0 after them. Writes
   rowsum[r, i] = sum_j p_j and weighted[r, i] = sum_j p_j j; adds sum_i p_ij to
   colsum[r, j]. With bw > 0, band[r, i, d] = p[i, diag0 + i - d] (0 where that is < 0),
   for d < bw. With ncut > 0, tri[r, c, k] = sum_{i <= k} p[i, offs[c] + k] (0 where
   offs[c] + k < 0), for k < n. */
void softmax_stats(float *restrict s, int64_t r0, int64_t r1, int64_t n, int64_t width,
                   int64_t lim0, float *restrict rowsum, float *restrict weighted,
                   float *restrict colsum, int64_t diag0, int64_t bw, float *restrict band,
                   int64_t ncut, const int64_t *restrict offs, float *restrict tri)
{
    for (int64_t r = r0; r < r1; r++) {
        float *restrict cs = colsum + r * width;
        for (int64_t i = 0; i < n; i++) {
            float *restrict row = s + (r * n + i) * width;
            int64_t len = lim0 + i + 1;
            if (len > width) len = width;
            if (len < 1) len = 1;
            float m = row[0];
            #pragma omp simd reduction(max:m)
            for (int64_t j = 1; j < len; j++) m = row[j] > m ? row[j] : m;
            double z = 0.0;
            for (int64_t a = 0; a < len; a += BLOCK) {
                int64_t e = a + BLOCK < len ? a + BLOCK : len;
                float part = 0.0f;
                #pragma omp simd reduction(+:part)
                for (int64_t j = a; j < e; j++) {
                    float x = exp_neg(row[j] - m);
                    row[j] = x;
                    part += x;
                }
                z += part;
            }
            float inv = (float)(1.0 / z);
            double rs = 0.0, w = 0.0;
            for (int64_t a = 0; a < len; a += BLOCK) {
                int64_t e = a + BLOCK < len ? a + BLOCK : len;
                float part = 0.0f, moment = 0.0f;
                #pragma omp simd reduction(+:part, moment)
                for (int64_t j = a; j < e; j++) {
                    float p = row[j] * inv;
                    row[j] = p;
                    part += p;
                    moment += p * (float)(int32_t)(j - a);  /* int32: AVX2 converts it */
                    cs[j] += p;
                }
                rs += part;
                w += moment + (double)a * part;
            }
            if (len < width) memset(row + len, 0, (size_t)(width - len) * sizeof(float));
            rowsum[r * n + i] = (float)rs;
            weighted[r * n + i] = (float)w;
            if (bw > 0) {
                float *restrict b = band + (r * n + i) * bw;
                for (int64_t d = 0; d < bw; d++) {
                    int64_t j = diag0 + i - d;
                    b[d] = j >= 0 ? row[j] : 0.0f;
                }
            }
            for (int64_t c = 0; c < ncut; c++) {
                float *restrict t = tri + (r * ncut + c) * n;
                int64_t k0 = i > -offs[c] ? i : -offs[c];
                const float *restrict src = row + offs[c];
                for (int64_t k = k0; k < n; k++) t[k] += src[k];
            }
        }
    }
}
"""

# -fno-trapping-math lets gcc vectorise rintf; -ffp-contract=fast fuses the polynomial's
# multiply-adds. Neither changes the floating-point mode of the process (-ffast-math's
# crtfastmath.o would set flush-to-zero for all of it).
_FLAGS = [
    "-O3", "-march=native", "-fPIC", "-std=gnu99", "-fopenmp-simd",
    "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast",
]  # fmt: skip
#: Rows of a tile at or above which the work is split over threads.
_SPLIT = 4


@dataclass(frozen=True)
class TileSums:
    """Sums of one tile of probabilities, computed in the pass that normalised it.

    The leading dimensions are the tile's: ``[batch head_index]`` from the attention
    function, ``[head_index]`` once a `Collector` cuts out one sequence's heads. Key
    indices ``j`` are relative to the tile's first key ``key0``; query row ``i`` sits at
    key ``diag0 + i``.

    Attributes:
        rowsum: ``[... query_pos]`` ``sum_j P[i, j]``.
        weighted: ``[... query_pos]`` ``sum_j P[i, j] j``.
        colsum: ``[... key_pos]`` ``sum_i P[i, j]`` over the tile's rows.
        band: ``[... query_pos band]`` ``P[i, diag0 + i - d]`` (0 before the tile's first
            key), when asked for.
        tri: ``[... cut query_pos]`` ``sum_{i <= k} P[i, offsets[c] + k]`` (0 before the
            tile's first key): the upper triangle's column sums of the square block that
            starts at column ``offsets[c]``, when asked for.
    """

    rowsum: Float[Tensor, "*tile query_pos"]
    weighted: Float[Tensor, "*tile query_pos"]
    colsum: Float[Tensor, "*tile key_pos"]
    band: Float[Tensor, "*tile query_pos band"] | None = None
    tri: Float[Tensor, "*tile cut query_pos"] | None = None

    def split(self, *shape: int) -> TileSums:
        """The same sums with the leading dimension split into `shape`."""
        return TileSums(
            *(None if x is None else x.view(*shape, *x.shape[1:]) for x in self._fields())
        )

    def select(self, index: Any) -> TileSums:
        """The sums of the leading dimensions `index` picks (``x[index]`` of each)."""
        return TileSums(*(None if x is None else x[index] for x in self._fields()))

    def _fields(self) -> tuple[Tensor | None, ...]:
        return (self.rowsum, self.weighted, self.colsum, self.band, self.tri)


def _disabled() -> bool:
    return os.environ.get("WORKBENCH_KERNELS", "1").strip().lower() in ("0", "off", "false", "no")


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the machine and its CPU's feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    flags = next((ln for ln in info.splitlines() if ln.startswith(("flags", "Features"))), "")
    return f"{platform.machine()} {flags}"


def _compile(cc: str, folder: Path) -> Path:
    """Compile and link the kernel in `folder`; returns the shared library."""
    src, lib = folder / "tiles.c", folder / "tiles.so"
    src.write_text(_SOURCE)
    subprocess.run(
        [cc, *_FLAGS, "-shared", str(src), "-o", str(lib)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return lib


@functools.cache
def _library() -> ctypes.CDLL | None:
    """The compiled kernel (built once per source, flags, compiler and CPU), or None."""
    if _disabled():
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return _fallback("no C compiler was found (set CC, or install gcc)")
    try:
        version = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return _fallback(f"the C compiler {cc!r} did not run ({e})")
    key = hashlib.sha256("\0".join([_SOURCE, *_FLAGS, version, _cpu_id()]).encode()).hexdigest()
    folder = cache_dir() / "kernels" / key[:16]
    lib = folder / "tiles.so"
    if not lib.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            try:
                built = _compile(cc, Path(tmp))
            except (OSError, subprocess.SubprocessError) as e:
                why = (getattr(e, "stderr", None) or str(e)).strip()[-500:]
                return _fallback(f"compiling it with {cc!r} failed: {why}")
            folder.mkdir(exist_ok=True)
            part = folder / f"tiles.so.{os.getpid()}"
            shutil.copyfile(built, part)
            os.replace(part, lib)  # atomic: a concurrent build finds a whole library
    try:
        dll = ctypes.CDLL(str(lib))
    except OSError as e:
        return _fallback(f"loading {lib} failed ({e}); delete that folder to rebuild it")
    fn = dll.softmax_stats
    fn.restype = None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ptr, *[i64] * 5, *[ptr] * 3, i64, i64, ptr, i64, ptr, ptr]
    return dll


def _fallback(reason: str) -> None:
    warnings.warn(
        f"the workbench's compiled attention kernel is off: {reason}. The tiled attention "
        "uses PyTorch instead (the same numbers, 7-14% slower at T = 4096-8192). Set "
        "WORKBENCH_KERNELS=0 to choose that without this warning.",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def available() -> bool:
    """Whether `softmax_stats` can run (the kernel compiled and loaded, and is enabled)."""
    return not _disabled() and _library() is not None


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="workbench-kernel")


def softmax_stats(
    scores: Float[Tensor, "group query_pos key_pos"],
    lim0: int,
    diag0: int = 0,
    band: int = 0,
    offsets: Sequence[int] = (),
) -> TileSums:
    """Softmax of each row of `scores` in place, with its sums (``available()`` must hold).

    Row ``i`` of each group is normalised over its first ``len_i = min(key_pos, lim0 + i +
    1)`` entries (the causal limit when query row ``i`` sits at key ``lim0 + i``; pass
    ``lim0 >= key_pos`` for whole rows, the mask being in the scores) and set to 0 after
    them::

        P[g, i, j] = exp(S[g, i, j] - m_i) / sum_{j' < len_i} exp(S[g, i, j'] - m_i),  j < len_i

    with ``m_i`` the row's maximum.

    Args:
        scores: ``[group query_pos key_pos]`` contiguous float32 on the CPU; overwritten by
            ``P``.
        lim0: the causal limit of query row 0 (see above).
        diag0: key index of query row 0, for the band.
        band: diagonals of `TileSums.band` (0: none).
        offsets: first columns of the square blocks of `TileSums.tri`, each at most
            ``key_pos - query_pos`` (empty: none).

    Returns:
        `TileSums` with leading dimension ``group``.
    """
    lib = _library()
    assert lib is not None and scores.is_contiguous() and scores.dtype == torch.float32
    g, n, width = scores.shape
    assert all(o + n <= width for o in offsets), (offsets, n, width)
    out = TileSums(
        rowsum=scores.new_empty(g, n),
        weighted=scores.new_empty(g, n),
        colsum=scores.new_zeros(g, width),
        band=scores.new_empty(g, n, band) if band else None,
        tri=scores.new_zeros(g, len(offsets), n) if len(offsets) else None,
    )
    offs = torch.tensor(list(offsets) or [0], dtype=torch.int64)
    args = (
        n, width, lim0, out.rowsum.data_ptr(), out.weighted.data_ptr(), out.colsum.data_ptr(),
        diag0, band, 0 if out.band is None else out.band.data_ptr(),
        len(offsets), offs.data_ptr(), 0 if out.tri is None else out.tri.data_ptr(),
    )  # fmt: skip
    threads = min(torch.get_num_threads(), g)
    if threads <= 1 or n * width < _SPLIT * 1024:
        _kernel(lib, scores.data_ptr(), 0, g, *args)
    else:
        step = -(-g // threads)
        pool = _pool(threads)
        jobs = [
            pool.submit(_kernel, lib, scores.data_ptr(), a, min(g, a + step), *args)
            for a in range(0, g, step)
        ]
        for job in jobs:
            job.result()
    return out


def _kernel(lib: ctypes.CDLL, *args: int) -> None:
    """One call of the C function (its own frame, so that profiles name it)."""
    lib.softmax_stats(*args)
