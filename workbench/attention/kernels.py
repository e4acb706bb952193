"""A compiled CPU kernel for the tiled attention: each tile's softmax and its row and column
sums in one pass.

The tiled path (`workbench.attention.interface`) materialises every tile of scores
``[batch x head_index, query_tile, key_tile]``. In PyTorch its softmax and the analysis
reductions (row sums, ``sum_s A[t, s] s``, column sums) are separate passes over a tile of
up to 28 MB, which leaves the cache between them. `softmax_stats` does all of them while
each row is in the cache: the row's maximum, ``exp(s - max)`` and its sum, then
``p = exp(s - max) / sum`` written in place with the row's sums and the tile's column sums
accumulated on the way; entries past a row's causal limit become 0, so no mask needs to be
applied first. Measured on one tile of SmolLM2's shape at T = 8192 (9 heads, 96 rows, one
thread): 7.0 ms against 14 ms for PyTorch's softmax, masked fill and three reductions.

The kernel is C, compiled on first use with the machine's C compiler (``$CC``, else ``cc``)
for this CPU (``-march=native``), and cached under the workbench's cache
(``kernels/<hash of the source, flags, compiler and CPU>``, written atomically). It uses
glibc's vector ``expf`` (libmvec), within 4 ulp of the correctly rounded result; sums are
accumulated in float64. It is built without ``-ffast-math`` linking, so loading it leaves
the process's floating-point mode (denormals) alone. Where no compiler is found or the
build fails, `available` is False after one warning and the tiled path uses PyTorch; set
``WORKBENCH_KERNELS=0`` to choose that path.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from ..models.cache import cache_dir

__all__ = ["TileSums", "available", "softmax_stats"]

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef WORKBENCH_SIMD_EXP
/* glibc's vector expf (libmvec), declared as -ffast-math's headers would, without it. */
float expf(float) __attribute__((__simd__("notinbranch")));
#endif

/* Rows r0..r1-1 of s [R, n, width]: row i of group r becomes its softmax over its first
   len = min(width, max(1, diag0 + i + 1)) entries, and 0 after them. Writes
   rowsum[r, i] = sum_j p_j and weighted[r, i] = sum_j p_j j; adds sum_i p_ij to
   colsum[r, j]. */
void softmax_stats(float *restrict s, int64_t r0, int64_t r1, int64_t n, int64_t width,
                   int64_t diag0, float *restrict rowsum, float *restrict weighted,
                   float *restrict colsum)
{
    for (int64_t r = r0; r < r1; r++) {
        float *restrict cs = colsum + r * width;
        for (int64_t i = 0; i < n; i++) {
            float *restrict row = s + (r * n + i) * width;
            int64_t len = diag0 + i + 1;
            if (len > width) len = width;
            if (len < 1) len = 1;
            float m = row[0];
            #pragma omp simd reduction(max:m)
            for (int64_t j = 1; j < len; j++) m = row[j] > m ? row[j] : m;
            double z = 0.0;
            #pragma omp simd reduction(+:z)
            for (int64_t j = 0; j < len; j++) {
                float e = expf(row[j] - m);
                row[j] = e;
                z += e;
            }
            float inv = (float)(1.0 / z);
            double rs = 0.0, w = 0.0;
            #pragma omp simd reduction(+:rs, w)
            for (int64_t j = 0; j < len; j++) {
                float p = row[j] * inv;
                row[j] = p;
                rs += p;
                w += p * (float)(int32_t)j;  /* int32: AVX2 converts it in vectors */
                cs[j] += p;
            }
            if (len < width) memset(row + len, 0, (size_t)(width - len) * sizeof(float));
            rowsum[r * n + i] = (float)rs;
            weighted[r * n + i] = (float)w;
        }
    }
}
"""

_FLAGS = ["-O3", "-march=native", "-fPIC", "-fopenmp-simd", "-fno-math-errno", "-std=c99"]
#: Rows of a tile at or above which the work is split over threads.
_SPLIT = 4


@dataclass(frozen=True)
class TileSums:
    """Sums of one tile of probabilities, computed in the pass that normalised it.

    The leading dimensions are the tile's: ``[batch head_index]`` from the attention
    function, ``[head_index]`` once a `Collector` cuts out one sequence's heads.

    Attributes:
        rowsum: ``[... query_pos]`` ``sum_j P[t, key0 + j]``.
        weighted: ``[... query_pos]`` ``sum_j P[t, key0 + j] j`` (key positions relative to
            the tile's first key ``key0``).
        colsum: ``[... key_pos]`` ``sum_t P[t, key0 + j]`` over the tile's rows.
    """

    rowsum: Float[Tensor, "*tile query_pos"]
    weighted: Float[Tensor, "*tile query_pos"]
    colsum: Float[Tensor, "*tile key_pos"]


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


def _compile(cc: str, folder: Path, simd: bool) -> Path:
    """Compile and link the kernel in `folder`; returns the shared library."""
    src, obj, lib = folder / "tiles.c", folder / "tiles.o", folder / "tiles.so"
    src.write_text(_SOURCE)
    defines = ["-DWORKBENCH_SIMD_EXP"] if simd else []
    run = functools.partial(subprocess.run, check=True, capture_output=True, text=True, timeout=120)
    run([cc, *_FLAGS, *defines, "-c", str(src), "-o", str(obj)])
    # Linked without -ffast-math: no crtfastmath.o, so loading it sets no FTZ/DAZ mode.
    run([cc, "-shared", str(obj), "-o", str(lib), *(["-lmvec"] if simd else []), "-lm"])
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
        errors = []
        folder.parent.mkdir(parents=True, exist_ok=True)
        for simd in (True, False):  # libmvec is glibc's; elsewhere the scalar expf
            with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
                try:
                    built = _compile(cc, Path(tmp), simd)
                except (OSError, subprocess.SubprocessError) as e:
                    errors.append(getattr(e, "stderr", None) or str(e))
                    continue
                folder.mkdir(exist_ok=True)
                part = folder / f"tiles.so.{os.getpid()}"
                shutil.copyfile(built, part)
                os.replace(part, lib)  # atomic: a concurrent build finds a whole library
                break
        else:
            return _fallback(f"compiling it with {cc!r} failed: {errors[-1].strip()[-500:]}")
    try:
        dll = ctypes.CDLL(str(lib))
    except OSError as e:
        return _fallback(f"loading {lib} failed ({e}); delete that folder to rebuild it")
    fn = dll.softmax_stats
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 5, *[ctypes.c_void_p] * 3]
    return dll


def _fallback(reason: str) -> None:
    warnings.warn(
        f"the workbench's compiled attention kernel is off: {reason}. The tiled attention "
        "uses PyTorch instead (the same numbers, about 10-15% slower at long T). Set "
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
    scores: Float[Tensor, "group query_pos key_pos"], diag0: int
) -> tuple[
    Float[Tensor, "group query_pos"],
    Float[Tensor, "group query_pos"],
    Float[Tensor, "group key_pos"],
]:
    """Softmax of each row of `scores` in place, with its sums (``available()`` must hold).

    Row ``i`` of each group is normalised over its first ``len_i = min(key_pos, diag0 + i +
    1)`` entries (the causal limit: query row ``i`` sits at key ``diag0 + i``; pass
    ``diag0 >= key_pos`` for whole rows) and set to 0 after them::

        P[g, i, j] = exp(S[g, i, j] - m_i) / sum_{j' < len_i} exp(S[g, i, j'] - m_i),  j < len_i

    with ``m_i`` the row's maximum.

    Args:
        scores: ``[group query_pos key_pos]`` contiguous float32 on the CPU; overwritten by
            ``P``.
        diag0: key index of query row 0.

    Returns:
        ``(rowsum [group query_pos], weighted [group query_pos], colsum [group key_pos])``:
        ``sum_j P[g, i, j]``, ``sum_j P[g, i, j] j`` and ``sum_i P[g, i, j]``.
    """
    lib = _library()
    assert lib is not None and scores.is_contiguous() and scores.dtype == torch.float32
    g, n, width = scores.shape
    rowsum = scores.new_empty(g, n)
    weighted = scores.new_empty(g, n)
    colsum = scores.new_zeros(g, width)
    args = (n, width, diag0, rowsum.data_ptr(), weighted.data_ptr(), colsum.data_ptr())
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
    return rowsum, weighted, colsum


def _kernel(lib: ctypes.CDLL, *args: int) -> None:
    """One call of the C function (its own frame, so that profiles name it)."""
    lib.softmax_stats(*args)
