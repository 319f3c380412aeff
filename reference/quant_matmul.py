"""Reference quant_matmul and trans_quant_param (docs/ops.md §1), written for clarity.

acc = x1 @ x2 in int32, then the dequant/requant epilogue in float32:
    int32 bias is added to acc before any scaling, float bias after scaling;
    int8 output: t = clip(rint(v), -256, 255); out = sat8(t + clip(rint(offset), -256, 255)); a NaN v or
    offset counts as 0 (the hardware's saturating float -> int conversion).
"""
from __future__ import annotations

from typing import Optional

import torch

from .int4_pack import nz_to_nd, unpack_int4

SCALE_MASK = 0xFFFFE000      # the 19 bits of a float32 scale that torch_npu keeps (sign, exponent, 10 mantissa bits)
OFFSET_SHIFT = 37            # bits 37..45: 9-bit two's complement offset
FLAG_BIT = 1 << 46           # always set in the encoded form


def _float_bits(x: torch.Tensor) -> torch.Tensor:
    """float32 -> its bits as a non-negative int64."""
    return x.to(torch.float32).contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF


def _bits_float(bits: torch.Tensor) -> torch.Tensor:
    """Low 32 bits of an int64 -> float32."""
    low = bits & 0xFFFFFFFF
    return torch.where(low >= 2**31, low - 2**32, low).to(torch.int32).view(torch.float32)


def quantize_offset(offset: torch.Tensor) -> torch.Tensor:
    """clip(rint(offset), -256, 255) as int64; NaN -> 0."""
    return torch.clamp(torch.round(torch.nan_to_num(offset.to(torch.float32), nan=0.0)), -256, 255).to(torch.int64)


def trans_quant_param(scale: torch.Tensor, offset: Optional[torch.Tensor] = None, round_mode: int = 0) -> torch.Tensor:
    """float32 scale (and offset) -> int64 quant param.

    bits 0..31: float bits & 0xFFFFE000 (round_mode=1: mantissa rounded to 10 bits, half to even);
    a NaN stays a NaN with its sign (quiet bit 22 set: its payload may lie only in the dropped bits);
    bits 37..45: clip(rint(offset), -256, 255) as 9-bit two's complement; bit 46 set.
    """
    raw = _float_bits(scale)
    bits = raw + 0xFFF + ((raw >> 13) & 1) if round_mode == 1 else raw
    bits = torch.where(torch.isnan(scale), raw | 0x00400000, bits)  # rounding a NaN could carry out of bit 31
    param = (bits & SCALE_MASK) | FLAG_BIT
    if offset is not None:
        param = param | ((quantize_offset(offset) & 0x1FF) << OFFSET_SHIFT)
    return param


def decode_quant_param(param: torch.Tensor) -> tuple:
    """int64 quant param -> (float32 scale, int32 offset). Only the top 19 bits of the float count."""
    scale = _bits_float(param & SCALE_MASK)
    off = (param >> OFFSET_SHIFT) & 0x1FF
    return scale, torch.where(off >= 256, off - 512, off).to(torch.int32)


def truncate_scale(scale: torch.Tensor) -> torch.Tensor:
    """float32 scale with the 13 low mantissa bits cleared, as trans_quant_param keeps it."""
    return _bits_float(_float_bits(scale) & SCALE_MASK)


def scale_is_truncated(scale_dtype: torch.dtype, has_pertoken: bool, output_dtype: torch.dtype) -> bool:
    """torch_npu encodes a float32 scale (19 bits kept) when there is no pertoken scale and the output is fp16/int8."""
    return scale_dtype == torch.float32 and not has_pertoken and output_dtype in (torch.float16, torch.int8)


def unpack_operands(x1: torch.Tensor, x2: torch.Tensor) -> tuple:
    """int4-in-int32 operands -> int32 values: x1 (m, k/8) -> (m, k); x2 (k, n/8) or (k/8, n) -> (k, n)."""
    a = unpack_int4(x1)
    k = a.shape[-1]
    if x2.shape[0] == k:
        return a, unpack_int4(x2)
    return a, unpack_int4(x2.t().contiguous()).t()


def a8w4_group_sums(x1: torch.Tensor, x2: torch.Tensor, group_k: int) -> torch.Tensor:
    """int32 (k/g, m, n): sum over k-group j of (x1 - 8) . W, with x1 int8 (m, k), x2 int32 (k, n/8) packed int4."""
    w = unpack_int4(x2).to(torch.float64)
    a = x1.to(torch.float64) - 8
    (m, k), n = a.shape, w.shape[1]
    # exact in float64: |sum| <= g * 136 * 8 << 2**53
    return torch.bmm(a.reshape(m, k // group_k, group_k).transpose(0, 1),
                     w.reshape(k // group_k, group_k, n)).to(torch.int32)


def quant_matmul_a8w4(x1, x2, scale, offset, pertoken_scale, output_dtype, group_k: int) -> torch.Tensor:
    """out[i, c] = (sum_j group_sum[j, i, c] * s[j, c] + offset[c]) * pertoken[i], the groups added in float32
    in order j = 0, 1, ...; s = the 19-bit float of scale int64 (k/g, n)."""
    s, _ = decode_quant_param(scale)
    sums = a8w4_group_sums(x1, x2, group_k)
    v = torch.zeros(sums.shape[1:], dtype=torch.float32, device=x1.device)
    for j in range(sums.shape[0]):
        v = v + sums[j].to(torch.float32) * s[j]
    if offset is not None:
        v = v + offset.to(torch.float32)
    if pertoken_scale is not None:
        v = v * pertoken_scale.to(torch.float32).reshape(-1, 1)
    return v.to(output_dtype)


def quant_matmul(x1, x2, scale, offset=None, pertoken_scale=None, bias=None, output_dtype=None,
                 x2_layout: str = "nd", x2_shape=None, group_k: int = 0) -> torch.Tensor:
    """Reference for atlas_kernels.quant_matmul (same arguments, group_k = group_sizes[2]; no validation)."""
    if group_k:
        return quant_matmul_a8w4(x1, x2, scale, offset, pertoken_scale, output_dtype, group_k)
    output_dtype = output_dtype or torch.int8
    if x2_layout == "nz":
        k = x1.shape[-1]
        n = x2_shape[1] if x2_shape is not None else x2.shape[-4] * x2.shape[-1]
        x2 = nz_to_nd(x2, k, n)
    if x1.dtype == torch.int32:
        x1, x2 = unpack_operands(x1, x2)
    # float64 holds every int8 x int8 sum exactly (|acc| < 2**31 << 2**53) and runs on every device
    acc = torch.matmul(x1.to(torch.float64), x2.to(torch.float64)).to(torch.int32)
    if bias is not None and bias.dtype == torch.int32:
        acc = acc + bias
    if output_dtype == torch.int32:
        return acc
    embedded_offset = None
    if scale.dtype == torch.int64:
        s, embedded_offset = decode_quant_param(scale)
    elif scale_is_truncated(scale.dtype, pertoken_scale is not None, output_dtype):
        s = truncate_scale(scale)
    else:
        s = scale.to(torch.float32)
    v = acc.to(torch.float32) * s
    if pertoken_scale is not None:
        v = v * pertoken_scale.to(torch.float32).unsqueeze(-1)
    if bias is not None and bias.dtype != torch.int32:
        v = v + bias.to(torch.float32)
    if output_dtype != torch.int8:
        return v.to(output_dtype)
    # NaN -> 0: the hardware's saturating float -> int conversion (Ascend Cast, PTX cvt) gives 0 for NaN
    t = torch.clamp(torch.round(torch.nan_to_num(v, nan=0.0)), -256, 255)
    if offset is not None:
        t = t + quantize_offset(offset).to(torch.float32)
    elif embedded_offset is not None:
        t = t + embedded_offset.to(torch.float32)
    return torch.clamp(t, -128, 127).to(torch.int8)
