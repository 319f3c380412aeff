"""dequant_rope_quant_kvcache's argument checks: TypeError/ValueError naming the argument, what was given and what
is allowed; and the optional host check of the cache indices (check_indices=True).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._validate import check_choice, check_common, check_tensor

OP = "dequant_rope_quant_kvcache"
_X_DTYPES = (torch.int32, torch.float16, torch.bfloat16)
_COS_DTYPES = (torch.float16, torch.bfloat16)
_BIAS_DTYPES = (torch.int32, torch.float16, torch.bfloat16, torch.float32)
_MAX_D = 256


def _check_shape(name: str, t: torch.Tensor, shapes: list, source: str = "x's batch and sequence sizes"):
    """ValueError unless t's shape is one of shapes (derived from ``source``, which the message names)."""
    if tuple(t.shape) not in [tuple(s) for s in shapes]:
        allowed = " or ".join(str(list(s)) for s in shapes)
        raise ValueError(f"{OP}: {name} must have shape {allowed} (from {source}), got {list(t.shape)}")


def _validate(x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, size_splits, offset_k, offset_v,
              weight_scale, activation_scale, bias, quant_mode, input_layout, cache_mode) -> dict:
    """Check every argument; return the sizes the launcher and the fake need."""
    check_tensor(OP, "x", x, dtypes=_X_DTYPES, ndim=(2, 3))
    check_common(OP, {"x": x, "cos": cos, "sin": sin, "k_cache": k_cache, "v_cache": v_cache, "indices": indices,
                      "scale_k": scale_k, "scale_v": scale_v, "offset_k": offset_k, "offset_v": offset_v,
                      "weight_scale": weight_scale, "activation_scale": activation_scale, "bias": bias},
                 outputs=("k_cache", "v_cache"))
    check_choice(OP, "quant_mode", quant_mode, ("static",))
    check_choice(OP, "input_layout", input_layout, ("BSND",))
    check_choice(OP, "cache_mode", cache_mode, ("contiguous", "page"))
    batch, seq, h = (x.shape[0], x.shape[1], x.shape[2]) if x.dim() == 3 else (x.shape[0], 1, x.shape[1])
    splits = [int(s) for s in size_splits]
    if len(splits) != 3 or min(splits) < 0 or sum(splits) != h:
        raise ValueError(f"{OP}: size_splits must be 3 non-negative sizes [Nq*D, Nkv*D, Nkv*D] summing to the "
                         f"last dim of x (H = {h}), got {list(size_splits)}")
    for name, cache in (("k_cache", k_cache), ("v_cache", v_cache)):
        check_tensor(OP, name, cache, dtypes=(torch.int8,), ndim=4)
        if cache.stride(-1) != 1:
            raise ValueError(f"{OP}: {name} must be contiguous in its last dim, got strides {cache.stride()}")
    if v_cache.shape != k_cache.shape:
        raise ValueError(f"{OP}: v_cache must have the shape of k_cache {list(k_cache.shape)}, "
                         f"got {list(v_cache.shape)}")
    c1, c2, nkv, d = k_cache.shape
    if d % 2 or not 2 <= d <= _MAX_D:
        raise ValueError(f"{OP}: the head dim D = k_cache.shape[3] must be even and at most {_MAX_D}, got {d}")
    if splits[1] != nkv * d or splits[2] != nkv * d or splits[0] % d:
        raise ValueError(f"{OP}: size_splits must be [Nq*D, Nkv*D, Nkv*D] with Nkv = {nkv}, D = {d} from "
                         f"k_cache {list(k_cache.shape)}, got {splits}")
    nq = splits[0] // d
    check_tensor(OP, "cos", cos, dtypes=_COS_DTYPES)
    check_tensor(OP, "sin", sin, dtypes=_COS_DTYPES)
    if sin.dtype != cos.dtype:
        raise TypeError(f"{OP}: sin must have the dtype of cos ({cos.dtype}), got {sin.dtype}")
    cs_shape = [batch, seq, 1, d] if x.dim() == 3 else [batch, d]
    _check_shape("cos", cos, [cs_shape], "x's batch and sequence sizes and k_cache's D")
    _check_shape("sin", sin, [cs_shape], "x's batch and sequence sizes and k_cache's D")
    check_tensor(OP, "indices", indices, dtypes=(torch.int32, torch.int64), ndim=1)
    if cache_mode == "page":
        _check_shape("indices", indices, [[batch * seq]])
    else:
        _check_shape("indices", indices, [[batch]])
        if c1 < batch:
            raise ValueError(f"{OP}: contiguous cache_mode writes cache[b] for every batch row b, so "
                             f"k_cache.shape[0] must be >= B = {batch}, got {c1}")
    per_channel = [[nkv, d], [nkv * d]]
    for name, t, optional in (("scale_k", scale_k, False), ("scale_v", scale_v, False),
                              ("offset_k", offset_k, True), ("offset_v", offset_v, True)):
        check_tensor(OP, name, t, dtypes=(torch.float32,), optional=optional)
        if t is not None:
            _check_shape(name, t, per_channel, "k_cache's Nkv and D")
    if x.dtype == torch.int32:
        check_tensor(OP, "weight_scale (required for int32 x)", weight_scale, dtypes=(torch.float32,))
        _check_shape("weight_scale", weight_scale, [[h]], "x's last dim H")
        check_tensor(OP, "activation_scale", activation_scale, dtypes=(torch.float32,), optional=True)
        if activation_scale is not None:
            _check_shape("activation_scale", activation_scale, [[batch * seq]])
        check_tensor(OP, "bias", bias, dtypes=_BIAS_DTYPES, optional=True)
        if bias is not None:
            _check_shape("bias", bias, [[h]], "x's last dim H")
    lead = (batch, seq) if x.dim() == 3 else (batch,)
    return {"batch": batch, "seq": seq, "h": h, "nq": nq, "nkv": nkv, "d": d, "c1": c1, "c2": c2, "lead": lead}


def _first_bad_index(indices: torch.Tensor, sizes: dict, cache_mode: str) -> Optional[str]:
    """Host check (one sync): a description of the first index that would not be written, or None."""
    idx = indices.to(torch.int64).cpu()
    c1, c2, seq = sizes["c1"], sizes["c2"], sizes["seq"]
    if cache_mode == "page":
        bad = (idx >= c1 * c2).nonzero()
        if len(bad):
            i = int(bad[0])
            return f"indices[{i}] = {int(idx[i])} is outside the cache's {c1 * c2} slots [0, {c1 * c2})" \
                   f" (C1*C2 = {c1}*{c2}; a negative slot means padding and is skipped)"
        used = idx[idx >= 0]
        if used.unique().numel() != used.numel():
            seen = {}
            for i, s in enumerate(idx.tolist()):
                if s >= 0 and s in seen:
                    return f"indices[{i}] = {s} repeats indices[{seen[s]}]: page slots must be unique"
                seen[s] = i
        return None
    bad = ((idx < 0) | (idx > c2 - seq)).nonzero()
    if len(bad):
        i = int(bad[0])
        return f"indices[{i}] = {int(idx[i])} is outside [0, C2 - S] = [0, {c2 - seq}] (C2 = {c2}, S = {seq})"
    return None

