"""Reference activation quantization (docs/ops.md "dynamic_quant" and "quantize"): fp32 torch, no Triton.

Written from the formulas, not from the kernel: per-token dynamic quantization (symmetric and asymmetric,
smooth scales, MoE group_index, int8 or int4 packed 8 per int32) and static per-tensor / per-channel quantize.
"""
from __future__ import annotations

from typing import Optional

import torch

# int8 / int4 ranges and the constants of CANN's A2 DynamicQuant kernel
QMAX = {"int8": 127.0, "int4": 7.0}                 # symmetric: y in [-QMAX, QMAX]
ASYM_LEVELS = {"int8": 255.0, "int4": 15.0}         # asymmetric: (max - min) / levels
ASYM_OFFSET = {"int8": 127.0, "int4": 7.0}          # offset = ASYM_OFFSET - max / scale
ASYM_MIN_SCALE = 1e-12                              # the asymmetric scale is at least this (as float32)
RANGE = {"int8": (-128.0, 127.0), "uint8": (0.0, 255.0), "int4": (-8.0, 7.0)}
_F32 = torch.float32


def _f32(v: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(v, dtype=_F32, device=like.device)


def to_int(t: torch.Tensor, dst: str) -> torch.Tensor:
    """fp32 -> the integer grid of ``dst``: NaN -> 0, clamp, round half to even (int8/uint8, or int4 packed)."""
    lo, hi = RANGE[dst]
    t = torch.where(torch.isnan(t), torch.zeros_like(t), t).clamp(lo, hi)
    q = torch.round(t)  # half to even
    if dst == "int4":
        return pack_int4(q.to(torch.int32))
    return q.to(torch.uint8 if dst == "uint8" else torch.int8)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """int32 (..., K) in [-8, 7] -> int32 (..., K/8): element 8w + j in bits 4j..4j+3 of word w."""
    nib = (q.to(torch.int64) & 0xF).reshape(*q.shape[:-1], q.shape[-1] // 8, 8)
    word = (nib << (4 * torch.arange(8, device=q.device))).sum(-1)
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def smoothed_rows(x: torch.Tensor, smooth_scales: Optional[torch.Tensor] = None,
                  group_index: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x as fp32 rows (R, K), times smooth_scales (K,), or per row times smooth_scales[e] (E, K) where e is the
    number of group_index entries <= the row (rows past group_index[-1] are not smoothed)."""
    k = x.shape[-1]
    rows = x.reshape(-1, k).to(_F32)
    if smooth_scales is None:
        return rows
    s = smooth_scales.to(_F32)
    if group_index is None:
        return rows * s.reshape(k)
    ends = group_index.to(torch.int64).reshape(-1)
    r = torch.arange(rows.shape[0], device=x.device)
    expert = (ends[None, :] <= r[:, None]).sum(1)
    inside = expert < ends.numel()
    factor = torch.ones_like(rows)
    factor[inside] = s[expert[inside]]
    return rows * factor


def dynamic_quant(x: torch.Tensor, smooth_scales: Optional[torch.Tensor] = None,
                  group_index: Optional[torch.Tensor] = None, dst: str = "int8") -> tuple:
    """Symmetric per-token quantization of x (..., K) over its last dim -> (y, scale fp32 (...)).

    m = QMAX / rowmax(|x * smooth|) (IEEE division), y = round_half_even(x * m) clamped (NaN -> 0),
    scale = rowmax * (1 / QMAX). y: int8 (..., K), or int4 packed int32 (..., K/8) when dst == "int4".
    """
    rows = smoothed_rows(x, smooth_scales, group_index)
    qmax = QMAX[dst]
    amax = rows.abs().amax(-1) if rows.shape[-1] else rows.new_zeros(rows.shape[0])
    mult = _f32(qmax, rows) / amax
    y = to_int(rows * mult[:, None], dst)
    scale = amax * (_f32(1.0, rows) / _f32(qmax, rows))
    lead = x.shape[:-1]
    return y.reshape(*lead, y.shape[-1]), scale.reshape(lead)


def dynamic_quant_asymmetric(x: torch.Tensor, smooth_scales: Optional[torch.Tensor] = None,
                             group_index: Optional[torch.Tensor] = None, dst: str = "int8") -> tuple:
    """Asymmetric per-token quantization -> (y, scale, offset), scale and offset fp32 (...).

    scale = max((rowmax - rowmin) / LEVELS, 1e-12), offset = OFFSET - rowmax / scale,
    y = round_half_even(x * (1 / scale) + offset) clamped (NaN -> 0); int8: 255 levels, offset 127;
    int4: 15, 7. A NaN in the row makes rowmax/rowmin NaN (so scale = 1e-12, offset NaN, y = 0).
    """
    rows = smoothed_rows(x, smooth_scales, group_index)
    if rows.shape[-1]:
        nan = torch.isnan(rows).any(-1)
        mx = torch.where(nan, torch.nan, rows.amax(-1))
        mn = torch.where(nan, torch.nan, rows.amin(-1))
    else:
        mx = mn = rows.new_zeros(rows.shape[0])
    eps = _f32(ASYM_MIN_SCALE, rows)
    scale = (mx - mn) / _f32(ASYM_LEVELS[dst], rows)
    scale = torch.where(scale > eps, scale, eps)
    offset = _f32(ASYM_OFFSET[dst], rows) - mx / scale
    recip = _f32(1.0, rows) / scale
    y = to_int(rows * recip[:, None] + offset[:, None], dst)
    lead = x.shape[:-1]
    return y.reshape(*lead, y.shape[-1]), scale.reshape(lead), offset.reshape(lead)


def quantize(x: torch.Tensor, scales: torch.Tensor, zero_points: Optional[torch.Tensor], dst: str, axis: int,
             div_mode: bool) -> torch.Tensor:
    """Static quantization: y = round_half_even(x / scales + zero_points) (div_mode) or x * scales + zero_points,
    in fp32, clamped to dst's range (NaN -> 0). scales / zero_points hold 1 value (per tensor) or one per index
    of x's dim ``axis`` (already normalised to a non-negative dim)."""
    shape = [1] * x.dim()
    if x.dim():
        shape[axis] = -1
    s = scales.to(_F32).reshape(-1)
    s = s.reshape(shape) if s.numel() > 1 else s.reshape([1] * x.dim())
    t = x.to(_F32) / s if div_mode else x.to(_F32) * s
    if zero_points is not None:
        z = zero_points.to(_F32).reshape(-1)
        t = t + (z.reshape(shape) if z.numel() > 1 else z.reshape([1] * x.dim()))
    return to_int(t, dst)
