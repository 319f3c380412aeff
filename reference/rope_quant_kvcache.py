"""Reference dequant -> RoPE -> quant -> KV-cache write (docs/ops.md §4), unfused, in plain torch.

Numerics (shared with the kernel so the cache bytes match exactly): everything
in fp32 (the dequantised x is not rounded to fp16 first, unlike CANN with fp16
cos); q/k/v outputs are rounded to cos's dtype at the end; k and v are
quantised from their fp32 values as int8(clamp(round_half_even(val / scale +
offset), -128, 127)), NaN -> 0.

Cache safety (the kernel's masking): a token whose cache row is outside the
cache writes nothing: page slots outside [0, C1*C2) (negative = padding),
contiguous starts outside [0, C2 - S].
"""
from __future__ import annotations

from typing import Optional

import torch


def dequant(x: torch.Tensor, weight_scale: Optional[torch.Tensor], activation_scale: Optional[torch.Tensor],
            bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x [T, H] -> fp32 [T, H]. int32 x: (float(x + int bias) * weight_scale) * activation_scale (+ float bias)."""
    if x.dtype != torch.int32:
        return x.float()
    int_bias = bias is not None and bias.dtype == torch.int32
    f = (x + bias).float() if int_bias else x.float()
    f = f * weight_scale.float()
    if activation_scale is not None:
        f = f * activation_scale.reshape(-1, 1)
    if bias is not None and not int_bias:
        f = f + bias.float()
    return f


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE: x [T, N, D] fp32, cos/sin [T, 1, D] fp32."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def quant(x: torch.Tensor, scale: torch.Tensor, offset: Optional[torch.Tensor]) -> torch.Tensor:
    """int8(clamp(round_half_even(x / scale + offset), -128, 127)), NaN -> 0; scale/offset per channel [N, D].

    NaN -> 0 and +-Inf -> 127/-128 are what the hardware's saturating float -> int8 conversion gives (Ascend
    C's Cast, PTX cvt.rni.sat.s8.f32); torch's own NaN -> int8 cast is undefined.
    """
    y = x / scale
    if offset is not None:
        y = y + offset
    return torch.clamp(y.nan_to_num(0.0), -128, 127).round().to(torch.int8)


def cache_rows(indices: torch.Tensor, batch: int, seq: int, c1: int, c2: int, cache_mode: str):
    """(row, col, valid) of every token's cache entry, tokens in (b, s) order."""
    idx = indices.to(torch.int64).reshape(-1)
    if cache_mode == "page":
        valid = (idx >= 0) & (idx < c1 * c2)
        return idx // c2, idx % c2, valid
    b = torch.arange(batch, device=idx.device).repeat_interleave(seq)
    s = torch.arange(seq, device=idx.device).repeat(batch)
    start = idx[b]
    valid = (start >= 0) & (start <= c2 - seq)
    return b, start + s, valid


def dequant_rope_quant_kvcache(x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, size_splits, *,
                               offset_k=None, offset_v=None, weight_scale=None, activation_scale=None, bias=None,
                               kv_output=False, cache_mode="contiguous"):
    """Same contract as atlas_kernels.dequant_rope_quant_kvcache; updates k_cache/v_cache in place."""
    batch, seq = x.shape[0], (x.shape[1] if x.dim() == 3 else 1)
    c1, c2, nkv, d = k_cache.shape
    nq = size_splits[0] // d
    t = batch * seq
    f = dequant(x.reshape(t, -1), weight_scale, activation_scale, bias)
    q, k, v = torch.split(f, list(size_splits), dim=-1)
    q, k, v = q.reshape(t, nq, d), k.reshape(t, nkv, d), v.reshape(t, nkv, d)
    c, s = cos.reshape(t, 1, d).float(), sin.reshape(t, 1, d).float()
    q, k = rope(q, c, s), rope(k, c, s)
    kq = quant(k, scale_k.reshape(nkv, d), None if offset_k is None else offset_k.reshape(nkv, d))
    vq = quant(v, scale_v.reshape(nkv, d), None if offset_v is None else offset_v.reshape(nkv, d))
    row, col, valid = cache_rows(indices, batch, seq, c1, c2, cache_mode)
    row, col = row[valid], col[valid]
    k_cache[row, col] = kq[valid]
    v_cache[row, col] = vq[valid]
    lead = (batch, seq) if x.dim() == 3 else (batch,)
    out = cos.dtype
    q = q.to(out).reshape(*lead, nq, d)
    if kv_output:
        k, v = k.to(out).reshape(*lead, nkv, d), v.to(out).reshape(*lead, nkv, d)
    else:
        k = v = x.new_empty((0,), dtype=out)
    return q, k, v, k_cache, v_cache
