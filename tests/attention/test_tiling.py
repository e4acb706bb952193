"""Block sizes of the engine's work (`workbench.attention.tiling`).

On the CPU the tiles stay the cache-sized ones that were measured fastest; on a GPU
(every other device) they grow to amortise kernel launches, but never past their
element budget, and every size is a usable number of rows whatever the shape.
"""

from __future__ import annotations

import pytest
import torch

from workbench.attention import tiling

CPU, GPU = torch.device("cpu"), torch.device("meta")  # "meta": any device but the CPU


SHAPES = [(1, 1), (9, 1024), (9, 4096), (9, 8192), (9, 32768), (64, 131072), (10**6, 7)]


@pytest.mark.parametrize(("heads", "keys"), SHAPES)
def test_cpu_tiles_hold_about_4m_scores_in_96_to_224_rows(heads, keys):
    rows = tiling.tile_rows(CPU, heads, keys)
    assert 96 <= rows <= 224 and rows % 32 == 0
    if 96 < rows < 224:
        assert rows * heads * keys <= tiling.CPU_ELEMENTS < (rows + 32) * heads * keys


@pytest.mark.parametrize(("heads", "keys"), SHAPES)
def test_gpu_tiles_are_larger_but_within_their_budget(heads, keys):
    """At most `gpu_elements` scores and an eighth of the keys' rows (each tile of a
    causal pass computes ``rows^2 / 2`` scores its rows do not need), unless that is
    fewer than 96 rows."""
    rows = tiling.tile_rows(GPU, heads, keys)
    assert 96 <= rows <= tiling.GPU_ROWS[1] and rows % 32 == 0
    if rows > 96:
        assert rows * heads * keys <= tiling.gpu_elements(GPU) and rows <= keys // 8


def test_gpu_tiles_of_the_default_model_at_8k_and_32k(monkeypatch):
    """SmolLM2 (9 heads): 86 CPU tiles a layer at T = 8192 become 10 (896 rows) with
    `GPU_ELEMENTS`, 8 (1024 rows, an eighth) on a GPU with room; at T = 32768, 342 become
    147 (224 rows), and 37 (896 rows) on a GPU with room."""
    assert tiling.tile_rows(CPU, 9, 8192) == 96
    assert tiling.tile_rows(GPU, 9, 8192) == 896
    assert tiling.tile_rows(GPU, 9, 32768) == 224
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2**60, 2**60))
    cuda = torch.device("cuda")
    assert tiling.tile_rows(cuda, 9, 8192) == 1024
    assert tiling.tile_rows(cuda, 9, 32768) == 896


def test_a_tile_takes_a_32nd_of_the_free_gpu_memory(monkeypatch):
    cuda = torch.device("cuda")
    for free, want in [(4 * 2**30, 4 * 2**30 // 32), (2**60, 1 << 28), (2**20, 1 << 24)]:
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, free))
        assert tiling.gpu_elements(cuda) == want

    def no_driver(device):
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_driver)
    assert tiling.gpu_elements(cuda) == tiling.GPU_ELEMENTS


@pytest.mark.parametrize("heads", [1, 9, 288, 10**6])
def test_accumulator_chunks_keep_their_triangle_within_the_budget(heads):
    assert tiling.chunk_rows(CPU, heads) == tiling.CPU_CHUNK
    assert tiling.chunk_rows(CPU, heads, cpu=8) == 8  # a hand-set chunk (the tests')
    rows = tiling.chunk_rows(GPU, heads)
    assert tiling.CPU_CHUNK <= rows <= tiling.GPU_ROWS[1]
    if rows > tiling.CPU_CHUNK:
        assert heads * rows * rows <= tiling.GPU_ELEMENTS


@pytest.mark.parametrize("width", [1, 11, 101, 256])
@pytest.mark.parametrize("heads", [1, 9, 288, 10**6])
def test_band_blocks_keep_their_scores_within_the_budget(heads, width):
    assert tiling.band_rows(CPU, heads, width) == tiling.CPU_BAND
    rows = tiling.band_rows(GPU, heads, width)
    assert tiling.CPU_BAND <= rows <= tiling.GPU_ROWS[1]
    if rows > tiling.CPU_BAND:
        assert heads * rows * (rows + width) <= tiling.GPU_ELEMENTS


def test_emptying_cache_sized_gives_the_cpu_the_gpu_sizes(monkeypatch):
    """How the tests run the GPU sizes on the CPU."""
    monkeypatch.setattr(tiling, "CACHE_SIZED", ())
    assert tiling.tile_rows(CPU, 9, 8192) == tiling.tile_rows(GPU, 9, 8192)
    assert tiling.chunk_rows(CPU, 9, cpu=8) == tiling.chunk_rows(GPU, 9)
    assert tiling.band_rows(CPU, 9, 101) == tiling.band_rows(GPU, 9, 101)
