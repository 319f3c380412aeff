"""The epilogue: everything after the int32 matmul, then the one store of the output tile.

It applies int32 bias, scale (an int64 quant param is decoded in the kernel), pertoken scale, float bias, offset
with the int9 stage and int8 saturation, and the output cast. A new scale encoding is one more ``ScaleMode`` member
and one more branch in ``_load_scale``.

What keeps it small in Ascend's UB (bishengir's numbers, Ascend910B2): every vector it loads has unit stride (a
runtime stride, even for a (1,) scale, lays the whole epilogue out one element per 32-byte block: 512 KiB instead
of 35 KiB at 128x128), so the launch passes (n,) scale and offset; the int8-output clamps are int32 min/max after
one float clamp (float min/max add NaN checks on the whole tile: 363 KiB -> 176 KiB).

Scale precision (matches torch_npu): an int64 scale is the trans_quant_param form and only its top 19 float bits
count; a float32 scale is truncated to those 19 bits when there is no pertoken scale and the output is fp16 or int8
(torch_npu encodes it with trans_quant_param there); otherwise (pertoken, bf16 output, bf16 scale) the scale is
used at full precision.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .formats import (BIAS_FLOAT, BIAS_INT, OFFSET_FROM_SCALE, OFFSET_TENSOR, SCALE_F32_TRUNC, SCALE_I64,
                      SCALE_NONE)


@triton.jit
def _rint(x):
    """Round half to even for |x| < 2**22 (callers clamp first); portable, no libdevice."""
    return (x + 12582912.0) - 12582912.0


@triton.jit
def _load_scale(scale_ptr, rn, n_mask, SCALE_MODE: tl.constexpr):
    """(float32 scale per column, raw int64 quant param or 0)."""
    if SCALE_MODE == SCALE_I64:
        raw = tl.load(scale_ptr + rn, mask=n_mask, other=0)
        scale = (raw & 0xFFFFE000).to(tl.int32).to(tl.float32, bitcast=True)
    else:
        raw = tl.zeros(rn.shape, dtype=tl.int64)
        scale = tl.load(scale_ptr + rn, mask=n_mask, other=0).to(tl.float32)
        if SCALE_MODE == SCALE_F32_TRUNC:  # torch_npu keeps only the top 19 bits here (trans_quant_param)
            scale = (scale.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)
    return scale, raw


@triton.jit
def _epilogue(acc, rm, rn, M, N, out_base, bias_base, scale_ptr, offset_ptr, pertoken_ptr,
              SCALE_MODE: tl.constexpr, OFFSET_MODE: tl.constexpr, HAS_PERTOKEN: tl.constexpr,
              BIAS_MODE: tl.constexpr, REQUANT: tl.constexpr):
    """Everything after the int32 matmul, then the one store of the (BLOCK_M, BLOCK_N) output tile."""
    m_mask = rm < M
    n_mask = rn < N
    out_ptrs = out_base + rm[:, None] * N + rn[None, :]
    mask = m_mask[:, None] & n_mask[None, :]
    if BIAS_MODE == BIAS_INT:
        acc = acc + tl.load(bias_base + rn, mask=n_mask, other=0)[None, :]
    if SCALE_MODE == SCALE_NONE:
        tl.store(out_ptrs, acc, mask=mask)
    else:
        scale, raw = _load_scale(scale_ptr, rn, n_mask, SCALE_MODE)
        v = acc.to(tl.float32) * scale[None, :]
        if HAS_PERTOKEN:
            v = v * tl.load(pertoken_ptr + rm, mask=m_mask, other=0)[:, None]
        if BIAS_MODE == BIAS_FLOAT:
            v = v + tl.load(bias_base + rn, mask=n_mask, other=0).to(tl.float32)[None, :]
        if REQUANT:
            # NaN -> 0, as the hardware's saturating float -> int conversion gives (Ascend Cast, PTX cvt); then
            # clamp first keeps rint in its exact range; the rest is int32: a float min/max costs Ascend's
            # vector unit NaN checks on the whole tile
            v = tl.where(v == v, v, 0.0)
            t = _rint(tl.where(v > -257.0, tl.where(v < 256.0, v, 256.0), -257.0)).to(tl.int32)
            t = tl.minimum(tl.maximum(t, -256), 255)
            if OFFSET_MODE == OFFSET_TENSOR:
                off = tl.load(offset_ptr + rn, mask=n_mask, other=0)
                off = tl.where(off == off, off, 0.0)
                off = tl.minimum(tl.maximum(_rint(tl.minimum(tl.maximum(off, -257.0), 256.0)), -256.0), 255.0)
                t = t + off.to(tl.int32)[None, :]
            elif OFFSET_MODE == OFFSET_FROM_SCALE:
                off9 = ((raw >> 37) & 0x1FF).to(tl.int32)
                t = t + ((off9 ^ 256) - 256)[None, :]
            t = tl.minimum(tl.maximum(t, -128), 127)
            tl.store(out_ptrs, t.to(tl.int8), mask=mask)
        else:
            tl.store(out_ptrs, v.to(out_base.dtype.element_ty), mask=mask)


@triton.jit
def _add_group(facc, group_sum, scale):
    """A8W4: add one k-group's exact int32 sum (BLOCK_M, BLOCK_N), scaled by its (BLOCK_N,) float32 scale row, to
    the float32 accumulator; the unsplit kernel and the split reduction share it, so they round alike."""
    return facc + group_sum.to(tl.float32) * scale[None, :]


@triton.jit
def _epilogue_grouped(acc, rm, rn, M, N, out_base, offset_ptr, pertoken_ptr, OFFSET_MODE: tl.constexpr,
                      HAS_PERTOKEN: tl.constexpr):
    """A8W4's epilogue: acc is already the float32 sum of the scaled k-group partials; add the offset, multiply
    by the pertoken scale, cast and store the (BLOCK_M, BLOCK_N) tile."""
    m_mask = rm < M
    n_mask = rn < N
    v = acc
    if OFFSET_MODE == OFFSET_TENSOR:
        v = v + tl.load(offset_ptr + rn, mask=n_mask, other=0)[None, :]
    if HAS_PERTOKEN:
        v = v * tl.load(pertoken_ptr + rm, mask=m_mask, other=0)[:, None]
    tl.store(out_base + rm[:, None] * N + rn[None, :], v.to(out_base.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])
