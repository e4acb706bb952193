"""The band path's flash call off the CPU: FlexAttention with its row log-sum-exp.

`interface._banded` needs, per layer, the attention output, each row's log-sum-exp and
``sum_s A[t, s] s`` (through an extra value channel holding the key positions, counted
back from the last key: `values_with_positions`). On the CPU
one call of PyTorch's CPU flash kernel gives them (`interface._flash`). On CUDA this module
gives the same from ``torch.nn.attention.flex_attention`` compiled with ``torch.compile``
(a fused Triton kernel that never forms the ``T x T`` map), asked for its log-sum-exp
(``AuxRequest(lse=True)``; natural log). The mask transformers hands the attention
function becomes the kernel's block mask exactly: a boolean ``[batch, 1, query_pos,
key_pos]`` mask (sliding windows, padding) is read element by element by the mask
function, and no mask means causal attention of the last ``query_pos`` positions.

Trust: FlexAttention is a prototype feature of PyTorch and its compiled kernel has never
run in this project's CI (it has no GPU; compiled FlexAttention on the CPU refuses the
log-sum-exp). So before its first use on a device, dtype and head width, `ready` runs
it on a small random layer (grouped-query heads, a sliding-window mask and plain causal
attention, lengths that are not multiples of the kernel's blocks and one shorter than a
block, the model's head width) and compares the output, the log-sum-exp and the position
moment with a dense float64 computation. If that fails or raises, `ready` warns once,
names the reason, and stays False there: the attention function then uses its portable
tiles, which are exact but slower. A call that raises later, in a pass (a shape the check
did not compile, Triton's shared memory, GPU memory), does the same from that layer on
(`give_up`: one warning naming the error). Never wrong numbers, and no traceback from
inside the compiler; at worst the old speed.

On the CPU, the tests run this module's code uncompiled (FlexAttention's reference
implementation, which forms the scores densely) against Hugging Face's eager attentions
on every architecture of the matrix, by adding ``"cpu"`` to `DEVICES`.

Memory: the block mask of a plain causal layer is built from the blocks' corners
(`_causal_blocks`, cached per shape and device: ``(T / 128)^2`` entries); a masked
layer's is evaluated at every pair of the mask transformers built (``T^2``
temporaries). The value gets ``16 - d_head % 16`` extra channels. Compiled, each
distinct shape (and mask or no mask) compiles its kernels once in a process: tens of
seconds on first use.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = [
    "DEVICES",
    "Failed",
    "attention_with_moment",
    "give_up",
    "ready",
    "serves",
    "usable",
    "values_with_positions",
]

#: Device types the band path sends to FlexAttention (the tests add ``"cpu"``).
DEVICES: tuple[str, ...] = ("cuda",)

#: Graphs Dynamo may keep for FlexAttention (`_compiled`), and the name of its setting.
RECOMPILES = 64
_RECOMPILE_LIMIT = (
    "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
)

#: The narrowest query/key head compiled FlexAttention takes (torch 2.11 on CUDA); a
#: narrower one is padded with zero columns.
MIN_QK_DIM = 16
#: Every call's kernel options. Under 128 queries Inductor would pick its flex-decoding
#: kernel, which had no valid configuration for the toys' shapes on an H200
#: (NoValidChoicesError; heads of 8 padded to 16, float32, T = 100): every short trace
#: gave up and took tiles.
KERNEL_OPTIONS = {"FORCE_USE_FLEX_ATTENTION": True}
#: The probe's tolerance against float64: far above float32 rounding (about 1e-6 here),
#: far below any wiring error (a log-sum-exp in the wrong base, a mask off by one).
PROBE_TOLERANCE = 1e-4


def serves(query: Tensor) -> bool:
    """Whether the band path sends this tensor's device to FlexAttention."""
    return query.device.type in DEVICES


def values_with_positions(
    value: Float[Tensor, "batch kv_head key_pos d_value"], width: int
) -> Float[Tensor, "batch kv_head key_pos width"]:
    """`value`, then a channel holding each key's position counted from the last key,
    ``s - (key_pos - 1)``, then zeros up to `width`: attention over it gives ``A v`` and
    ``sum_s A[t, s] (s - (key_pos - 1))`` in one call (the band path's flash call on every
    device, `interface._flash`). Counted from the last key, the moment of a row near the end
    (a response's) keeps the precision of its own distance; from key 0 it was about ``t``,
    and its float32 rounding (``t * 6e-8``) swamped a local head's distance at long T."""
    b, kv, tk, dv = value.shape
    pos = torch.arange(1 - tk, 1, dtype=value.dtype, device=value.device).view(1, 1, tk, 1)
    zeros = value.new_zeros(b, kv, tk, width - dv - 1)
    return torch.cat([value, pos.expand(b, kv, tk, 1), zeros], -1)


@functools.cache
def _flex() -> tuple[Any, Any, Any]:
    from torch.nn.attention import flex_attention as fa

    return fa.flex_attention, fa.create_block_mask, getattr(fa, "AuxRequest", None)


@functools.cache
def _compiled(device_type: str) -> Any:
    flex, _, _ = _flex()
    if device_type != "cpu":
        from .._progress import bars_shown

        if bars_shown():  # a notebook or a terminal: the first call is silent for minutes
            print(
                f"FlexAttention: compiling its kernels for {device_type} (once per process, "
                "a minute or more the first time; later lengths recompile once)",
                file=sys.stderr,
                flush=True,
            )
        compiled = torch.compile(flex)

        def run(*args: Any, **kwargs: Any) -> Any:
            # Every variant (causal or masked, each head width, the probe's shapes and then
            # dynamic ones) compiles the one flex_attention, whose cache Dynamo caps at 8
            # graphs by default; past that it ran uncompiled, which is dense: T^2 memory at
            # the lengths this path exists for.
            with torch._dynamo.config.patch(**{_RECOMPILE_LIMIT: RECOMPILES}):
                return compiled(*args, **kwargs)

        return run

    # Compiled FlexAttention on the CPU refuses the log-sum-exp; uncompiled it is exact
    # (and dense), which is what the CPU tests want, without its advice to compile.
    def dense(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
            return flex(*args, **kwargs)

    return dense


#: FlexAttention's block of queries and keys (its default).
BLOCK = 128


@functools.lru_cache(maxsize=4)
def _causal_blocks(tq: int, tk: int, device: torch.device) -> Any:
    """The block mask of causal attention for the last `tq` of `tk` positions, built from
    the blocks' corners: ``(T / 128)^2`` entries, where ``create_block_mask`` evaluated
    the mask at every one of the ``T^2`` pairs (718 MB of temporaries at T = 8192, 12 GB
    at 32768). A block is full where every pair is kept, partial (the mask function is
    evaluated there) where some are; as ``create_block_mask``, a block past the end of
    the queries or keys is never full (`tests/attention/test_flex.py` compares them)."""
    from torch.nn.attention.flex_attention import BlockMask

    offset = tk - tq
    # A lambda: FlexAttention reads a mask function's signature, which the typechecking
    # wrappers that decorate the package's functions under pytest would hide.
    keep = lambda b, h, q, k: q + offset >= k  # noqa: E731
    nq, nk = -(-tq // BLOCK), -(-tk // BLOCK)
    q0 = torch.arange(nq, device=device)[:, None] * BLOCK
    k0 = torch.arange(nk, device=device)[None, :] * BLOCK
    q1, k1 = (q0 + BLOCK).clamp(max=tq) - 1, (k0 + BLOCK).clamp(max=tk) - 1
    some = q1 + offset >= k0
    full = (q0 + offset >= k1) & (q0 + BLOCK <= tq) & (k0 + BLOCK <= tk)
    partial = some & ~full

    def listed(blocks: Tensor) -> tuple[Tensor, Tensor]:
        order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True)
        return blocks.sum(-1).to(torch.int32)[None, None], order.to(torch.int32)[None, None]

    return BlockMask.from_kv_blocks(
        *listed(partial), *listed(full), BLOCK, keep, seq_lengths=(tq, tk)
    )


def _block_mask(mask: Tensor | None, tq: int, tk: int, device: torch.device) -> Any:
    """FlexAttention's block mask for the mask transformers handed the attention function:
    causal where it is None, else the boolean ``[batch, 1 or head_index, query_pos,
    key_pos]`` `mask` read element by element (``create_block_mask`` evaluates it at
    every pair: ``T^2`` temporaries, as large as the mask itself)."""
    if mask is None:
        return _causal_blocks(tq, tk, device)
    _, create_block_mask, _ = _flex()
    if mask.shape[1] == 1:  # transformers builds one mask for every head
        keep = lambda b, h, q, k: mask[b, 0, q, k]  # noqa: E731
        return create_block_mask(keep, mask.shape[0], None, tq, tk, device)
    keep = lambda b, h, q, k: mask[b, h, q, k]  # noqa: E731
    return create_block_mask(keep, *mask.shape[:2], tq, tk, device)


def attention_with_moment(
    query: Float[Tensor, "batch head_index query_pos d_head"],
    key: Float[Tensor, "batch kv_head key_pos d_head"],
    value: Float[Tensor, "batch kv_head key_pos d_value"],
    mask: Tensor | None,
    scale: float,
) -> tuple[
    Float[Tensor, "batch head_index query_pos d_value_plus_one"],
    Float[Tensor, "batch head_index query_pos"],
]:
    """``(out, lse)`` as `interface._flash` returns them, from FlexAttention.

    ``out[..., :d_value]`` is ``A v``, ``out[..., d_value]`` is ``sum_s A[t, s] (s -
    (key_pos - 1))`` (`values_with_positions`), and
    ``lse[t] = log sum_s exp(q_t k_s scale)`` over the keys row ``t`` may attend (0, with a
    zero output, for a row with none), where ``A = softmax(q k^T scale + mask)``; queries
    are the last ``query_pos`` positions and a boolean `mask` ``[batch, 1, query_pos,
    key_pos]`` (True: attend) replaces the causal one. Key/value heads are shared by
    ``head_index // (heads / kv_heads)``.
    """
    _, _, aux = _flex()
    h, tq = query.shape[1], query.shape[2]
    kv, tk, dv = key.shape[1], key.shape[2], value.shape[-1]
    if query.shape[-1] < MIN_QK_DIM:
        # Compiled on CUDA it refused (NotImplementedError, "at least 16") a head of 8;
        # zero columns leave q k^T as it is (the scale is explicit).
        pad = (0, MIN_QK_DIM - query.shape[-1])
        query, key = torch.nn.functional.pad(query, pad), torch.nn.functional.pad(key, pad)
    v = values_with_positions(value, -(-(dv + 1) // 16) * 16)
    blocks = _block_mask(mask, tq, tk, query.device)
    run = _compiled(query.device.type)
    extra = {"return_aux": aux(lse=True)} if aux is not None else {"return_lse": True}
    try:
        out, got = run(
            query,
            key,
            v,
            block_mask=blocks,
            scale=scale,
            enable_gqa=h != kv,
            kernel_options=KERNEL_OPTIONS,
            **extra,
        )
    except Exception as e:  # compiling a new shape, Triton's resources, memory
        raise Failed(_why(e)) from e
    lse = got.lse if aux is not None else got
    # A row that sees no key (left padding) has LSE -inf; the CPU kernel's convention is 0
    # with a zero output, which `_band` and the distances rely on.
    lse = torch.where(torch.isfinite(lse), lse, 0.0).to(query.dtype)
    return out[..., : dv + 1], lse


def _dense(query: Tensor, key: Tensor, value: Tensor, mask: Tensor, scale: float):
    """The float64 reference of `attention_with_moment` for the probe."""
    groups = query.shape[1] // key.shape[1]
    q = query.double()
    k = key.double().repeat_interleave(groups, 1)
    v = value.double().repeat_interleave(groups, 1)
    scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~mask, -math.inf)
    lse = scores.logsumexp(-1)
    probs = torch.exp(scores - lse[..., None])
    pos = torch.arange(1 - key.shape[2], 1, dtype=torch.float64, device=query.device)
    return probs @ v, probs @ pos, lse


def _probe(device: torch.device, dtype: torch.dtype, d: int) -> str | None:
    """None if FlexAttention matches the dense reference on `device` for heads of `d`
    channels, else the reason."""
    gen = torch.Generator().manual_seed(0)
    b, h, kv, t = 2, 4, 2, 200

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    q, k, v = draw(b, h, t, d), draw(b, kv, t, d), draw(b, kv, t, d)
    rows = torch.arange(t, device=device)[:, None]
    causal = rows >= torch.arange(t, device=device)
    window = causal & (rows - torch.arange(t, device=device) < 37)
    # The third is shorter than one block (128), where Inductor would otherwise pick its
    # flex-decoding kernel, and is a second length (Dynamo recompiles with dynamic shapes).
    for name, mask, n in [("causal", None, t), ("sliding-window", window, t), ("short", None, 60)]:
        given = None if mask is None else mask.expand(b, 1, t, t)
        part = [x[:, :, :n] for x in (q, k, v)]
        full = causal[:n, :n] if mask is None else mask
        out, lse = attention_with_moment(*part, given, d**-0.5)
        want, moment, want_lse = _dense(*part, full.expand(b, 1, n, n), d**-0.5)
        for what, x, y in [
            ("output", out[..., :d], want),
            ("position moment", out[..., d] / n, moment / n),
            ("log-sum-exp", lse, want_lse),
        ]:
            err = float((x.double() - y).abs().max())
            if not err <= PROBE_TOLERANCE:
                return f"its {what} differs from a dense computation by {err:.3g} ({name} mask)"
    return None


class Failed(RuntimeError):
    """A FlexAttention call raised (`attention_with_moment`); the attention function then
    gives up on it there (`give_up`) and takes its tiles."""


def _why(error: BaseException) -> str:
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first}"[:300]


#: ``(device, dtype, head_dim)`` where a call raised in a pass after the check passed.
_GAVE_UP: set[tuple[torch.device, torch.dtype, int]] = set()


def usable(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """`ready`, and no call has raised there since (`give_up`)."""
    return (device, dtype, head_dim) not in _GAVE_UP and ready(device, dtype, head_dim)


def give_up(query: Tensor, error: Failed) -> None:
    """Stop using FlexAttention for `query`'s device, dtype and head width in this process,
    after a call raised in a pass although the check had passed (a shape the check did not
    compile, Triton's shared memory, GPU memory), with one warning naming the error."""
    key = (query.device, query.dtype, query.shape[-1])
    if key in _GAVE_UP:
        return
    _GAVE_UP.add(key)
    warnings.warn(
        f"FlexAttention on {query.device} ({query.dtype}, heads of {query.shape[-1]}) raised "
        f"{error} in a pass. This layer and every later one use the exact portable tiles "
        "there instead (slower).",
        RuntimeWarning,
        stacklevel=3,
    )


@functools.cache
def ready(device: torch.device, dtype: torch.dtype, head_dim: int = 64) -> bool:
    """Whether FlexAttention computes exact attention with its log-sum-exp on `device` in
    `dtype` for heads of `head_dim` channels (probed once per process for each; see the
    module docstring: its kernels' shared memory grows with the head, so a head of 256
    in float32 may not compile where one of 64 does). False after one warning naming the
    reason where it does not."""
    try:
        reason = _probe(device, dtype, head_dim)
    except Exception as e:  # a missing compiler, Triton, or an unsupported shape
        reason = f"it raised {e if isinstance(e, Failed) else _why(e)}"
    if reason is not None:
        warnings.warn(
            f"FlexAttention on {device} ({dtype}, heads of {head_dim}) failed the "
            f"workbench's check: {reason}. "
            "The RL credit pass uses the exact portable tiles there instead (slower).",
            RuntimeWarning,
            stacklevel=2,
        )
    return reason is None
