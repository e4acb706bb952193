"""A compiled CPU kernel for the tiled attention: each tile's softmax and its row and column
sums in one pass.

The tiled path (`workbench.attention.interface`) materialises every tile of scores
``[batch x head_index, query_tile, key_tile]``. In PyTorch its softmax and the analysis
reductions (row sums, row distances ``sum_s A[t, s] (t - s)``, column sums) are separate passes over a tile of
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

Threads: a tile's rows, in items of `PART_ROWS` rows of one ``batch x head_index`` group,
are shared by ``torch.get_num_threads()`` threads of PyTorch's own OpenMP pool: the kernel
is built with ``-fopenmp`` where PyTorch's runtime is GNU OpenMP (``libgomp.so.1``, found
among the process's mapped files; `threaded`), and runs on one thread elsewhere. Each item
keeps its own column sums, added in a fixed order, so the results are bitwise the same for
any number of threads.
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .._validate import env_flag
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

/* Rows i0..i1-1 of group r of s [g, n, width]: row i becomes its softmax over its first
   len = min(width, max(1, lim0 + i + 1)) entries, and 0 after them. Writes
   rowsum[r, i] = sum_j p_j and dist[r, i] = sum_j p_j (diag0 + i - j), the row distance
   (weights measured back from the row's own key, so that a row whose mass is near it keeps
   float precision: measured from key 0, the sum was about t and its float32 rounding, t * 6e-8,
   swamped a local head's distance at long T); adds sum_i p_ij to cs[j].
   With bw > 0, band[r, i, d] = p[i, diag0 + i - d] (0 where that is < 0), for d < bw.
   With ncut > 0, adds to tr[c, k] the rows' share of sum_{i <= k} p[i, offs[c] + k] (0
   where offs[c] + k < 0), for k < n. */
static void rows(float *restrict s, int64_t r, int64_t i0, int64_t i1, int64_t n,
                 int64_t width, int64_t lim0, float *restrict rowsum,
                 float *restrict dist, float *restrict cs, int64_t diag0, int64_t bw,
                 float *restrict band, int64_t ncut, const int64_t *restrict offs,
                 float *restrict tr)
{
    for (int64_t i = i0; i < i1; i++) {
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
        int64_t key = diag0 + i;
        for (int64_t a = 0; a < len; a += BLOCK) {
            int64_t e = a + BLOCK < len ? a + BLOCK : len;
            float part = 0.0f, moment = 0.0f;
            #pragma omp simd reduction(+:part, moment)
            for (int64_t j = a; j < e; j++) {
                float p = row[j] * inv;
                row[j] = p;
                part += p;
                moment += p * (float)(int32_t)(key - j);  /* int32: AVX2 converts it */
                cs[j] += p;
            }
            rs += part;
            w += moment;
        }
        if (len < width) memset(row + len, 0, (size_t)(width - len) * sizeof(float));
        rowsum[r * n + i] = (float)rs;
        dist[r * n + i] = (float)w;
        if (bw > 0) {
            float *restrict b = band + (r * n + i) * bw;
            for (int64_t d = 0; d < bw; d++) {
                int64_t j = diag0 + i - d;
                b[d] = j >= 0 ? row[j] : 0.0f;
            }
        }
        for (int64_t c = 0; c < ncut; c++) {
            float *restrict t = tr + c * n;
            int64_t k0 = i > -offs[c] ? i : -offs[c];
            const float *restrict src = row + offs[c];
            for (int64_t k = k0; k < n; k++) t[k] += src[k];
        }
    }
}

int kernel_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Every row of s [g, n, width] (see `rows`), in g x parts items of consecutive rows, run
   on `threads` OpenMP threads where built with OpenMP (the runtime PyTorch loaded). Item
   (r, part) adds its column sums to colsum[part, r] and its triangles to
   tri[part, r]; both are then summed into part 0 in the order of the parts, so the
   results do not depend on the number of threads. */
void softmax_stats(float *restrict s, int64_t g, int64_t n, int64_t width, int64_t lim0,
                   float *restrict rowsum, float *restrict dist,
                   float *restrict colsum, int64_t diag0, int64_t bw, float *restrict band,
                   int64_t ncut, const int64_t *restrict offs, float *restrict tri,
                   int64_t parts, int64_t threads)
{
    int64_t step = (n + parts - 1) / parts;
    #pragma omp parallel for schedule(static) num_threads(threads) if(threads > 1)
    for (int64_t item = 0; item < g * parts; item++) {
        int64_t r = item / parts, part = item % parts;
        int64_t i0 = part * step, i1 = i0 + step < n ? i0 + step : n;
        rows(s, r, i0, i1, n, width, lim0, rowsum, dist,
             colsum + (part * g + r) * width, diag0, bw, band, ncut, offs,
             ncut ? tri + (part * g + r) * ncut * n : tri);
    }
    if (parts < 2) return;
    #pragma omp parallel for schedule(static) num_threads(threads) if(threads > 1)
    for (int64_t r = 0; r < g; r++) {
        for (int64_t part = 1; part < parts; part++) {
            float *restrict to = colsum + r * width;
            const float *restrict from = colsum + (part * g + r) * width;
            #pragma omp simd
            for (int64_t j = 0; j < width; j++) to[j] += from[j];
            if (ncut == 0) continue;
            float *restrict tt = tri + r * ncut * n;
            const float *restrict tf = tri + (part * g + r) * ncut * n;
            for (int64_t k = 0; k < ncut * n; k++) tt[k] += tf[k];
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
#: Query rows per work item of the kernel: a tile's ``group x ceil(rows / 32)`` items are
#: what its threads share, and the number of items (so the order of the column sums)
#: does not depend on the number of threads.
PART_ROWS = 32


@dataclass(frozen=True)
class TileSums:
    """Sums of one tile of probabilities, computed in the pass that normalised it.

    The leading dimensions are the tile's: ``[batch head_index]`` from the attention
    function, ``[head_index]`` once a `Collector` cuts out one sequence's heads. Key
    indices ``j`` are relative to the tile's first key ``key0``; query row ``i`` sits at
    key ``diag0 + i``.

    Attributes:
        rowsum: ``[... query_pos]`` ``sum_j P[i, j]``.
        dist: ``[... query_pos]`` ``sum_j P[i, j] (diag0 + i - j)``: the row distance
            ``sum_s A[t, s] (t - s)``, summed from the row's own key back (float precision of
            the distance itself, not of ``t``).
        colsum: ``[... key_pos]`` ``sum_i P[i, j]`` over the tile's rows.
        band: ``[... query_pos band]`` ``P[i, diag0 + i - d]`` (0 before the tile's first
            key), when asked for.
        tri: ``[... cut query_pos]`` ``sum_{i <= k} P[i, offsets[c] + k]`` (0 before the
            tile's first key): the upper triangle's column sums of the square block that
            starts at column ``offsets[c]``, when asked for.
    """

    rowsum: Float[Tensor, "*tile query_pos"]
    dist: Float[Tensor, "*tile query_pos"]
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
        return (self.rowsum, self.dist, self.colsum, self.band, self.tri)


def _disabled() -> bool:
    return not env_flag("WORKBENCH_KERNELS", True)


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the machine and its CPU's feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    flags = next((ln for ln in info.splitlines() if ln.startswith(("flags", "Features"))), "")
    return f"{platform.machine()} {flags}"


def _openmp_runtime() -> str | None:
    """The GNU OpenMP runtime PyTorch runs its threads on (``libgomp.so.1``, from the
    process's mapped files), or None.

    The kernel is built with ``-fopenmp`` only where this is found: its ``libgomp.so.1``
    then binds to the runtime already loaded, so its threads are PyTorch's own pool. (A
    second pool would compete with PyTorch's idle threads, which spin for a while after
    each parallel region: measured here, Python threads splitting a tile got no speedup
    from a second core while those spun.)"""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    found = {ln.split()[-1] for ln in maps.splitlines() if ln.endswith("/libgomp.so.1")}
    return found.pop() if len(found) == 1 else None


def _compile(cc: str, folder: Path, openmp: bool) -> Path:
    """Compile and link the kernel in `folder`; returns the shared library. With `openmp`
    it is first built with ``-fopenmp``, then, if that fails, without."""
    src, lib = folder / "tiles.c", folder / "tiles.so"
    src.write_text(_SOURCE)

    def build(*extra: str) -> Path:
        cmd = [cc, *_FLAGS, *extra, "-shared", str(src), "-o", str(lib)]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        return lib

    if openmp:
        with contextlib.suppress(subprocess.CalledProcessError):
            return build("-fopenmp")
    return build()


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
    runtime = _openmp_runtime()
    key = "\0".join([_SOURCE, *_FLAGS, version, _cpu_id(), runtime or "no OpenMP"])
    key = hashlib.sha256(key.encode()).hexdigest()
    folder = cache_dir() / "kernels" / key[:16]
    lib = folder / "tiles.so"
    if not lib.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            try:
                built = _compile(cc, Path(tmp), runtime is not None)
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
    fn.argtypes = [ptr, *[i64] * 4, *[ptr] * 3, i64, i64, ptr, i64, ptr, ptr, i64, i64]
    dll.kernel_openmp.restype = ctypes.c_int
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


def threaded() -> bool:
    """Whether the kernel runs on PyTorch's threads (built with OpenMP, see
    `_openmp_runtime`); if not, each call runs on one thread."""
    lib = _library()
    return lib is not None and bool(lib.kernel_openmp())


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
        diag0: key index of query row 0, for the row distances and the band.
        band: diagonals of `TileSums.band` (0: none).
        offsets: first columns of the square blocks of `TileSums.tri`, each at most
            ``key_pos - query_pos`` (empty: none).

    Returns:
        `TileSums` with leading dimension ``group``.
    """
    lib = _library()
    assert lib is not None and scores.device.type == "cpu", scores.device  # host memory only
    assert scores.is_contiguous() and scores.dtype == torch.float32
    g, n, width = scores.shape
    assert all(o + n <= width for o in offsets), (offsets, n, width)
    parts = -(-n // PART_ROWS)
    # Column sums and triangles per part, summed into part 0 by the kernel.
    colsum = scores.new_zeros(parts, g, width)
    tri = scores.new_zeros(parts, g, len(offsets), n) if len(offsets) else None
    out = TileSums(
        rowsum=scores.new_empty(g, n),
        dist=scores.new_empty(g, n),
        colsum=colsum[0],
        band=scores.new_empty(g, n, band) if band else None,
        tri=None if tri is None else tri[0],
    )
    offs = torch.tensor(list(offsets) or [0], dtype=torch.int64)
    _kernel(
        lib, scores.data_ptr(), g, n, width, lim0, out.rowsum.data_ptr(),
        out.dist.data_ptr(), colsum.data_ptr(), diag0, band,
        0 if out.band is None else out.band.data_ptr(), len(offsets), offs.data_ptr(),
        0 if tri is None else tri.data_ptr(), parts, torch.get_num_threads(),
    )  # fmt: skip
    return out


def _kernel(lib: ctypes.CDLL, *args: int) -> None:
    """One call of the C function (its own frame, so that profiles name it)."""
    lib.softmax_stats(*args)
