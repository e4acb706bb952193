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
log-sum-exp). So before its first use on a device and dtype, `ready` runs it on a small
random layer (grouped-query heads, a sliding-window mask and plain causal attention,
lengths that are not multiples of the kernel's blocks) and compares the output, the
log-sum-exp and the position moment with a dense float64 computation. If that fails or
raises, `ready` warns once, names the reason, and stays False for that device: the
attention function then uses its portable tiles there, which are exact but slower. Never
wrong numbers, at worst the old speed.

On the CPU, the tests run this module's code uncompiled (FlexAttention's reference
implementation, which forms the scores densely) against Hugging Face's eager attentions
on every architecture of the matrix, by adding ``"cpu"`` to `DEVICES`.

Memory: the block mask of a plain causal layer is built from a ``query_pos x key_pos``
boolean grid (cached per shape and device, ``T^2`` bytes: 1 GiB at T = 32768), as for a
masked layer from the mask transformers built; the value gets ``16 - d_head % 16``
extra channels.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["DEVICES", "attention_with_moment", "ready", "serves", "values_with_positions"]

#: Device types the band path sends to FlexAttention (the tests add ``"cpu"``).
DEVICES: tuple[str, ...] = ("cuda",)

#: The narrowest query/key head compiled FlexAttention takes (torch 2.11 on CUDA); a
#: narrower one is padded with zero columns.
MIN_QK_DIM = 16
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
        return torch.compile(flex)

    # Compiled FlexAttention on the CPU refuses the log-sum-exp; uncompiled it is exact
    # (and dense), which is what the CPU tests want, without its advice to compile.
    def dense(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
            return flex(*args, **kwargs)

    return dense


@functools.lru_cache(maxsize=4)
def _causal_blocks(tq: int, tk: int, device: torch.device) -> Any:
    _, create_block_mask, _ = _flex()
    offset = tk - tq
    # Lambdas: FlexAttention reads a mask function's signature, which the typechecking
    # wrappers that decorate the package's functions under pytest would hide.
    return create_block_mask(lambda b, h, q, k: q + offset >= k, None, None, tq, tk, device)


def _block_mask(mask: Tensor | None, tq: int, tk: int, device: torch.device) -> Any:
    if mask is None:
        return _causal_blocks(tq, tk, device)
    _, create_block_mask, _ = _flex()
    if mask.shape[1] == 1:  # transformers builds one mask for every head
        return create_block_mask(
            lambda b, h, q, k: mask[b, 0, q, k], mask.shape[0], None, tq, tk, device
        )
    return create_block_mask(lambda b, h, q, k: mask[b, h, q, k], *mask.shape[:2], tq, tk, device)


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
    out, got = run(query, key, v, block_mask=blocks, scale=scale, enable_gqa=h != kv, **extra)
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


def _probe(device: torch.device, dtype: torch.dtype) -> str | None:
    """None if FlexAttention matches the dense reference on `device`, else the reason."""
    gen = torch.Generator().manual_seed(0)
    b, h, kv, t, d = 2, 4, 2, 200, 64

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

    q, k, v = draw(b, h, t, d), draw(b, kv, t, d), draw(b, kv, t, d)
    rows = torch.arange(t, device=device)[:, None]
    causal = rows >= torch.arange(t, device=device)
    window = causal & (rows - torch.arange(t, device=device) < 37)
    for name, mask, full in [("causal", None, causal), ("sliding-window", window, window)]:
        given = None if mask is None else mask.expand(b, 1, t, t)
        out, lse = attention_with_moment(q, k, v, given, d**-0.5)
        want, moment, want_lse = _dense(q, k, v, full.expand(b, 1, t, t), d**-0.5)
        for what, x, y in [
            ("output", out[..., :d], want),
            ("position moment", out[..., d] / t, moment / t),
            ("log-sum-exp", lse, want_lse),
        ]:
            err = float((x.double() - y).abs().max())
            if not err <= PROBE_TOLERANCE:
                return f"its {what} differs from a dense computation by {err:.3g} ({name} mask)"
    return None


@functools.cache
def ready(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether FlexAttention computes exact attention with its log-sum-exp on `device` in
    `dtype` (probed once per process; see the module docstring). False after one warning
    naming the reason where it does not."""
    try:
        reason = _probe(device, dtype)
    except Exception as e:  # a missing compiler, Triton, or an unsupported shape
        reason = f"it raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if reason is not None:
        warnings.warn(
            f"FlexAttention on {device} ({dtype}) failed the workbench's check: {reason}. "
            "The RL credit pass uses the exact portable tiles there instead (slower).",
            RuntimeWarning,
            stacklevel=2,
        )
    return reason is None
