"""Reference residual add -> RMSNorm -> int8 quant (docs/ops.md §6), unfused, in plain torch.

Every step is one fp32 operation in the kernel's order, so that kernel and reference agree bit for bit
whenever the sum of squares is exact (e.g. dyadic inputs); otherwise the summation order differs
(torch's vs the kernel's tree) and the fp32 results differ by a few ulps:

    x      = fp32(x1) + fp32(x2);   x_out = x rounded to x1's dtype (nearest even)
    x_n    = x, or fp32(x_out) where the static CANN kernel normalises the rounded sum (``static_rounding``)
    rstd   = 1 / sqrt(sum(x_n * x_n) * fp32(1/N) + eps)                 (IEEE sqrt and division)
    y      = x_n * rstd * gamma (+ beta)   [static fp16: fp16(fp16(x_n * rstd) * gamma)]
    dynamic: t = y * smooth; rowmax = max|t|; q = round_half_even(t * (127 / rowmax)) (multiplier 0 when
             rowmax = 0); scale = rowmax * fp32(1/127)
    static:  q = round_half_even(y / scale + zero_point) (div_mode) or (y * scale + zero_point)
    int8: clamped to [-128, 127], NaN -> 0 (the hardware's saturating convert).
"""
from __future__ import annotations

from typing import Optional

import torch

INV_127 = torch.tensor(1.0, dtype=torch.float32) / 127.0


def div_rn(a, b) -> torch.Tensor:
    """fp32 a / b correctly rounded (computed in fp64 and rounded once more: exact for fp32 operands)."""
    return (torch.as_tensor(a).double() / torch.as_tensor(b).double()).float()


def sqrt_rn(a: torch.Tensor) -> torch.Tensor:
    """fp32 sqrt correctly rounded. torch's own CPU fp32 sqrt is not (torch 2.13: 51.88625 -> 7.2032113,
    the nearest fp32 is 7.2032108), so it goes through fp64 (one more rounding, harmless for sqrt)."""
    return torch.sqrt(a.double()).float()


def static_rounding(dtype: torch.dtype, has_beta: bool) -> tuple:
    """(round_x, half_gamma) of the static CANN kernel (ops-nn add_rms_norm_quant.h): fp16 adds in fp16 and
    multiplies by gamma in fp16; bf16 with beta normalises the bf16-rounded sum."""
    fp16 = dtype == torch.float16
    return fp16 or has_beta, fp16


def add_rms_norm(x1: torch.Tensor, x2: torch.Tensor, gamma: torch.Tensor, beta: Optional[torch.Tensor],
                 epsilon: float, round_x: bool = False, half_gamma: bool = False) -> tuple:
    """(y fp32 [R, N], x_out [R, N] in x1's dtype); the norm runs over gamma.numel() trailing elements."""
    n = gamma.numel()
    x = x1.reshape(-1, n).float() + x2.reshape(-1, n).float()
    x_out = x.to(x1.dtype)
    if round_x:
        x = x_out.float()
    inv_n = torch.tensor(1.0, dtype=torch.float32) / n
    eps = torch.tensor(epsilon, dtype=torch.float32)
    rstd = div_rn(1.0, sqrt_rn((x * x).sum(-1, keepdim=True) * inv_n + eps))
    y = x * rstd
    g = gamma.reshape(n).float()
    if half_gamma:
        y = (y.half().float() * g).half().float()
    else:
        y = y * g
    if beta is not None:
        y = y + beta.reshape(n).float()
    return y, x_out


def to_int8(v: torch.Tensor) -> torch.Tensor:
    """int8(clamp(round_half_even(v), -128, 127)), NaN -> 0."""
    return torch.clamp(v.nan_to_num(0.0, posinf=127.0, neginf=-128.0), -128, 127).round().to(torch.int8)


def dynamic_quant(t: torch.Tensor) -> tuple:
    """Per-row symmetric int8 of fp32 t [R, N]: (q [R, N] int8, scale [R] fp32)."""
    rowmax = t.abs().amax(-1, keepdim=True) if t.shape[-1] else t.new_zeros((t.shape[0], 1))
    nonzero = rowmax > 0
    q = to_int8(t * torch.where(nonzero, div_rn(127.0, torch.where(nonzero, rowmax, 1.0)), 0.0))
    return q, (rowmax * INV_127).reshape(-1)


def static_quant(y: torch.Tensor, scales: torch.Tensor, zero_points: Optional[torch.Tensor],
                 div_mode: bool) -> torch.Tensor:
    s = scales.reshape(-1).float()
    v = div_rn(y, s) if div_mode else y * s
    if zero_points is not None:
        v = v + zero_points.reshape(-1).float()
    return to_int8(v)


def add_rms_norm_dynamic_quant(x1, x2, gamma, smooth_scale1=None, smooth_scale2=None, beta=None, epsilon=1e-6,
                               out1=True, out2=False) -> tuple:
    """(y1, y2, x_out, scale1, scale2) as atlas_kernels.npu_add_rms_norm_dynamic_quant with its resolved
    output_mask (out1, out2); an output not computed is a 0-dim zero."""
    y, x_out = add_rms_norm(x1, x2, gamma, beta, epsilon)
    lead = x1.shape[:-1]
    outs = []
    for on, smooth in ((out1, smooth_scale1), (out2, smooth_scale2)):
        if not on:
            outs.append((x1.new_zeros((), dtype=torch.int8), x1.new_zeros((), dtype=torch.float32)))
            continue
        t = y if smooth is None else y * smooth.float()
        q, s = dynamic_quant(t)
        outs.append((q.reshape(x1.shape), s.reshape(lead)))
    (y1, s1), (y2, s2) = outs
    return y1, y2, x_out.reshape(x1.shape), s1, s2


def add_rms_norm_quant(x1, x2, gamma, scales1, zero_points1=None, beta=None, scales2=None, zero_points2=None,
                       epsilon=1e-6, div_mode=True) -> tuple:
    """(y1, y2, x_out) as atlas_kernels.npu_add_rms_norm_quant; y2 is zeros without scales2."""
    round_x, half_gamma = static_rounding(x1.dtype, beta is not None)
    y, x_out = add_rms_norm(x1, x2, gamma, beta, epsilon, round_x, half_gamma)
    y1 = static_quant(y, scales1, zero_points1, div_mode).reshape(x1.shape)
    y2 = (static_quant(y, scales2, zero_points2, div_mode).reshape(x1.shape) if scales2 is not None
          else x1.new_zeros(x1.shape, dtype=torch.int8))
    return y1, y2, x_out.reshape(x1.shape)
