"""Fused dequant -> RoPE -> quant -> in-place KV-cache write (torch_npu.npu_dequant_rope_quant_kvcache).

One launch per call. A tile is a block of BLOCK_T tokens x one group of head
blocks (HEADS heads each); programs are persistent. cos/sin and the token's
cache row are loaded once per tile and reused by every head of the group; x is
read once; q, the int8 cache rows (and k/v with kv_output) are written once.
The launcher splits the heads into groups only when there are fewer token
blocks than cores (decode), so the cos/sin re-reads stay small.

Numerics: fp32 throughout (see reference/rope_quant_kvcache.py); the cache bytes
match the reference exactly (round half to even by the 1.5 * 2**23 trick, after
clamping to [-128, 127]; NaN -> 0).

Safety: the kernel computes each token's cache row and masks the cache stores
with its validity (page: 0 <= slot < C1*C2, negative = padding; contiguous:
0 <= indices[b] <= C2 - S), so bad indices never write outside the cache.
check_indices=True adds a host check that names the first bad index.

Beside this file: rope_quant_kvcache_validate.py (argument checks, the index check) and
rope_quant_kvcache_tuning.py (the tuning harness).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from . import _backend
from ._validate import bool_arg, call_op, int_arg, int_list
from .autotune import KernelSpec, Target, Variant, pick_config, register_kernel, split_config
from .reference import rope_quant_kvcache as ref
from .rope_quant_kvcache_tuning import tuning
from .rope_quant_kvcache_validate import OP, _first_bad_index, _validate


@triton.jit
def _load_x(x_ptr, w_ptr, bias_ptr, row, chan, m, cm, a,
            DEQUANT: tl.constexpr, BIAS: tl.constexpr, HAS_ACT: tl.constexpr):
    """fp32 (dequantised) x at token offsets row [BT,1,1] + channels chan [1,HB,BD2]."""
    x = tl.load(x_ptr + row + chan, mask=m, other=0)
    if DEQUANT:
        if BIAS == 1:  # int32 bias: added before the conversion
            x = x + tl.load(bias_ptr + chan, mask=cm, other=0)
        f = x.to(tl.float32) * tl.load(w_ptr + chan, mask=cm, other=0.0)
        if HAS_ACT:
            f = f * a
        if BIAS == 2:  # float bias: added after the scales
            f = f + tl.load(bias_ptr + chan, mask=cm, other=0.0).to(tl.float32)
    else:
        f = x.to(tl.float32)
    return f


@triton.jit
def _quant(val, scale_ptr, off_ptr, chan, cm, HAS_OFF: tl.constexpr):
    """int8(clamp(rint(val / scale + offset), -128, 127)), half to even; NaN -> 0."""
    # div_rn: IEEE division (a plain "/" is approximate on CUDA), so the cache bytes match the reference
    y = tl.div_rn(val, tl.load(scale_ptr + chan, mask=cm, other=1.0))
    if HAS_OFF:
        y = y + tl.load(off_ptr + chan, mask=cm, other=0.0)
    # NaN -> 0 as the hardware's saturating float -> int8 converts it (Ascend Cast, PTX cvt); done first
    # because the clamp's max/min would turn NaN into -128 on CUDA and leave it NaN in the interpreter
    y = tl.where(y == y, y, 0.0)
    y = tl.minimum(tl.maximum(y, -128.0), 127.0)
    y = (y + 12582912.0) - 12582912.0  # 1.5 * 2**23: rounds |y| < 2**22 to an integer, ties to even
    return y.to(tl.int8)


@triton.jit
def _rope_quant_kvcache_kernel(
        x_ptr, cos_ptr, sin_ptr, kc_ptr, vc_ptr, idx_ptr, scale_k_ptr, scale_v_ptr, off_k_ptr, off_v_ptr,
        w_ptr, act_ptr, bias_ptr, q_ptr, k_ptr, v_ptr,
        T, S, NQ, NKV, D, C1, C2, skc1, skc2, skn, svc1, svc2, svn, n_groups,
        DEQUANT: tl.constexpr, BIAS: tl.constexpr, HAS_ACT: tl.constexpr, HAS_OFF_K: tl.constexpr,
        HAS_OFF_V: tl.constexpr, KV_OUT: tl.constexpr, PAGE: tl.constexpr, BLOCK_D2: tl.constexpr,
        BLOCK_T: tl.constexpr, HEADS: tl.constexpr):
    """x [T, (NQ + 2*NKV) * D] -> q [T, NQ, D], caches [C1, C2, NKV, D] int8 (strided), k/v [T, NKV, D].

    BIAS: 0 none, 1 int32 (added to x), 2 float (added after the scales).
    Heads are processed in blocks of HEADS: q blocks, then k blocks, then v
    blocks; group g of n_groups takes a contiguous run of those blocks.
    """
    pid = tl.program_id(0)
    HALF = D // 2
    H = (NQ + 2 * NKV) * D
    nqb = tl.cdiv(NQ, HEADS)
    nkb = tl.cdiv(NKV, HEADS)
    n_blocks = nqb + 2 * nkb
    per_group = tl.cdiv(n_blocks, n_groups)
    n_tiles = tl.cdiv(T, BLOCK_T) * n_groups
    h_ar = tl.arange(0, HEADS)[None, :, None]
    j = tl.arange(0, BLOCK_D2)[None, None, :]
    jm = j < HALF
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        g = tile % n_groups
        tok = (tile // n_groups) * BLOCK_T + tl.arange(0, BLOCK_T)
        tm = tok < T
        tok = tok.to(tl.int64)
        tok3 = tok[:, None, None]
        tm3 = tm[:, None, None]
        # cos/sin halves: loaded once per tile, shared by every q and k head
        cs = tok3 * D + j
        csm = tm3 & jm
        c1 = tl.load(cos_ptr + cs, mask=csm, other=0.0).to(tl.float32)
        c2 = tl.load(cos_ptr + cs + HALF, mask=csm, other=0.0).to(tl.float32)
        s1 = tl.load(sin_ptr + cs, mask=csm, other=0.0).to(tl.float32)
        s2 = tl.load(sin_ptr + cs + HALF, mask=csm, other=0.0).to(tl.float32)
        if HAS_ACT:
            a = tl.load(act_ptr + tok3, mask=tm3, other=0.0)
        else:
            a = tl.full((BLOCK_T, 1, 1), 1.0, tl.float32)
        # the token's cache row, and whether it may be written at all
        if PAGE:
            slot = tl.load(idx_ptr + tok, mask=tm, other=-1).to(tl.int64)
            ok = tm & (slot >= 0) & (slot < C1.to(tl.int64) * C2)
            slot = tl.where(ok, slot, 0)
            crow = slot // C2
            ccol = slot % C2
        else:
            crow = tok // S
            start = tl.load(idx_ptr + crow, mask=tm, other=-1).to(tl.int64)
            ok = tm & (start >= 0) & (start <= C2 - S)
            ccol = tl.where(ok, start + tok % S, 0)
            crow = tl.where(ok, crow, 0)
        ok3 = ok[:, None, None]
        kbase = (crow * skc1 + ccol * skc2)[:, None, None]
        vbase = (crow * svc1 + ccol * svc2)[:, None, None]
        xrow = tok3 * H
        lo = g * per_group
        hi = tl.minimum(lo + per_group, n_blocks)
        for blk in range(lo, tl.minimum(hi, nqb)):
            heads = blk * HEADS + h_ar
            cm = (heads < NQ) & jm
            m = tm3 & cm
            chan = heads * D + j
            x1 = _load_x(x_ptr, w_ptr, bias_ptr, xrow, chan, m, cm, a, DEQUANT, BIAS, HAS_ACT)
            x2 = _load_x(x_ptr, w_ptr, bias_ptr, xrow, chan + HALF, m, cm, a, DEQUANT, BIAS, HAS_ACT)
            qo = q_ptr + tok3 * (NQ * D) + chan
            tl.store(qo, (x1 * c1 - x2 * s1).to(q_ptr.dtype.element_ty), mask=m)
            tl.store(qo + HALF, (x2 * c2 + x1 * s2).to(q_ptr.dtype.element_ty), mask=m)
        for blk in range(tl.maximum(lo, nqb), tl.minimum(hi, nqb + nkb)):
            heads = (blk - nqb) * HEADS + h_ar
            cm = (heads < NKV) & jm
            m = tm3 & cm
            chan = heads * D + j
            x1 = _load_x(x_ptr, w_ptr, bias_ptr, xrow, NQ * D + chan, m, cm, a, DEQUANT, BIAS, HAS_ACT)
            x2 = _load_x(x_ptr, w_ptr, bias_ptr, xrow, NQ * D + chan + HALF, m, cm, a, DEQUANT, BIAS, HAS_ACT)
            o1 = x1 * c1 - x2 * s1
            o2 = x2 * c2 + x1 * s2
            if KV_OUT:
                ko = k_ptr + tok3 * (NKV * D) + chan
                tl.store(ko, o1.to(k_ptr.dtype.element_ty), mask=m)
                tl.store(ko + HALF, o2.to(k_ptr.dtype.element_ty), mask=m)
            dst = kc_ptr + kbase + heads * skn + j
            tl.store(dst, _quant(o1, scale_k_ptr, off_k_ptr, chan, cm, HAS_OFF_K), mask=m & ok3)
            tl.store(dst + HALF, _quant(o2, scale_k_ptr, off_k_ptr, chan + HALF, cm, HAS_OFF_K), mask=m & ok3)
        for blk in range(tl.maximum(lo, nqb + nkb), hi):
            heads = (blk - nqb - nkb) * HEADS + h_ar
            cm = (heads < NKV) & jm
            m = tm3 & cm
            chan = heads * D + j
            x1 = _load_x(x_ptr, w_ptr, bias_ptr, xrow, (NQ + NKV) * D + chan, m, cm, a, DEQUANT, BIAS, HAS_ACT)
            x2 = _load_x(x_ptr, w_ptr, bias_ptr, xrow, (NQ + NKV) * D + chan + HALF, m, cm, a, DEQUANT, BIAS,
                         HAS_ACT)
            if KV_OUT:
                vo = v_ptr + tok3 * (NKV * D) + chan
                tl.store(vo, x1.to(v_ptr.dtype.element_ty), mask=m)
                tl.store(vo + HALF, x2.to(v_ptr.dtype.element_ty), mask=m)
            dst = vc_ptr + vbase + heads * svn + j
            tl.store(dst, _quant(x1, scale_v_ptr, off_v_ptr, chan, cm, HAS_OFF_V), mask=m & ok3)
            tl.store(dst + HALF, _quant(x2, scale_v_ptr, off_v_ptr, chan + HALF, cm, HAS_OFF_V), mask=m & ok3)


# ---------------------------------------------------------------- config spaces
# On-chip bytes per element of a [BLOCK_T, HEADS, BLOCK_D2] half-tile: x halves
# (int32), their fp32 values, the rotated halves, per-channel params and the
# int8/fp16 results; plus the tile-resident cos/sin halves (4 x fp32 per
# [BLOCK_T, BLOCK_D2] element).
_BYTES_PER_ELEM = {True: 48, False: 40}
_CS_BYTES_PER_ELEM = 16


def _tile_bytes(bt: int, hb: int, bd2: int, dequant: bool) -> int:
    return bt * hb * bd2 * _BYTES_PER_ELEM[dequant] + bt * bd2 * _CS_BYTES_PER_ELEM


def _space(target: Target, variant: Variant) -> list:
    bd2 = variant.constexprs["BLOCK_D2"]
    dequant = variant.constexprs["DEQUANT"]
    configs = []
    for bt in (1, 2, 4, 8, 16, 32):
        for hb in (1, 2, 4, 8):
            if target.is_ascend:
                if 2 * _tile_bytes(bt, hb, bd2, dequant) <= target.ub_bytes:  # double buffered
                    configs.append({"BLOCK_T": bt, "HEADS": hb})
                continue
            for warps in (1, 2, 4, 8):
                # at most 8 values per thread of each live array (x, cos/sin halves) keeps it out of spills
                threads = 32 * warps
                if 1 <= bt * hb * bd2 // threads <= 8 and bt * bd2 // threads <= 8:
                    configs.append({"BLOCK_T": bt, "HEADS": hb, "num_warps": warps})
    return configs


def _default(target: Target, variant: Variant) -> dict:
    bd2 = variant.constexprs["BLOCK_D2"]
    if target.backend == "cpu":  # interpreter: large tiles mean fewer numpy round trips
        return {"BLOCK_T": 64, "HEADS": 8}
    if target.is_ascend:
        # decode batches are small: few tokens per tile, heads fill the rest of the UB budget
        fits = [c for c in _space(target, variant) if c["BLOCK_T"] <= 4]
        return max(fits, key=lambda c: (c["BLOCK_T"] * c["HEADS"], c["BLOCK_T"]))
    # the cuda check: at D = 64, 4 heads spilled 8 bytes on sm_90 (launch-like at 4 warps, conservative at 8)
    hb = 2 if bd2 == 32 else max(1, min(4, 256 // bd2))
    return {"BLOCK_T": 4, "HEADS": hb, "num_warps": 4}


_FEATURES = ("DEQUANT", "BIAS", "HAS_ACT", "HAS_OFF_K", "HAS_OFF_V", "KV_OUT", "PAGE")


def _variant(label, x, cos, idx, bias, bd2, dequant, bias_mode, act, off_k, off_v, kv_out, page):
    types = {"x_ptr": x, "cos_ptr": cos, "sin_ptr": cos, "kc_ptr": "*i8", "vc_ptr": "*i8", "idx_ptr": idx,
             "scale_k_ptr": "*fp32", "scale_v_ptr": "*fp32", "off_k_ptr": "*fp32", "off_v_ptr": "*fp32",
             "w_ptr": "*fp32", "act_ptr": "*fp32", "bias_ptr": bias, "q_ptr": cos, "k_ptr": cos, "v_ptr": cos,
             **{n: "i32" for n in ("T", "S", "NQ", "NKV", "D", "C1", "C2", "skc1", "skc2", "skn", "svc1", "svc2",
                                   "svn", "n_groups")}}
    flags = dict(zip(_FEATURES, (dequant, bias_mode, act, off_k, off_v, kv_out, page)))
    return Variant(label, types, {**flags, "BLOCK_D2": bd2})


# The launcher picks its config by (x kind, head dim); each variant also fixes one
# combination of the optional features so that the checks compile every feature.
_VARIANTS = [
    _variant("int32-d128", "*i32", "*fp16", "*i32", "*i32", 64, True, 1, True, True, True, False, False),
    _variant("float-d128", "*fp16", "*fp16", "*i64", "*fp32", 64, False, 0, False, True, True, True, True),
    _variant("int32-d64", "*i32", "*bf16", "*i64", "*fp32", 32, True, 2, True, False, False, True, True),
    _variant("float-d64", "*bf16", "*bf16", "*i32", "*fp32", 32, False, 0, False, False, False, False, False),
    _variant("int32-d256", "*i32", "*bf16", "*i32", "*bf16", 128, True, 2, False, True, False, False, True),
    _variant("float-d256", "*fp16", "*fp16", "*i32", "*fp32", 128, False, 0, False, False, True, True, False),
    _variant("int32-d32", "*i32", "*fp16", "*i32", "*fp16", 16, True, 2, True, False, True, True, False),
    _variant("float-d32", "*bf16", "*bf16", "*i64", "*fp32", 16, False, 0, False, True, False, False, True),
]

KERNEL = register_kernel(KernelSpec(f"{OP}.fused", _rope_quant_kvcache_kernel, _VARIANTS, _space, _default))


# ---------------------------------------------------------------- op
def _empty_outputs(x, cos, sizes, kv_output):
    lead, nq, nkv, d = sizes["lead"], sizes["nq"], sizes["nkv"], sizes["d"]
    q = x.new_empty((*lead, nq, d), dtype=cos.dtype)
    kv_shape = (*lead, nkv, d) if kv_output else (0,)
    return q, x.new_empty(kv_shape, dtype=cos.dtype), x.new_empty(kv_shape, dtype=cos.dtype)


def _label(x: torch.Tensor, d: int) -> tuple:
    bd2 = max(16, triton.next_power_of_2(d // 2))
    return f"{'int32' if x.dtype == torch.int32 else 'float'}-d{2 * bd2}", bd2


@torch.library.custom_op(f"atlas::{OP}", mutates_args=("k_cache", "v_cache"))
def _op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
        indices: torch.Tensor, scale_k: torch.Tensor, scale_v: torch.Tensor, size_splits: list[int],
        offset_k: Optional[torch.Tensor], offset_v: Optional[torch.Tensor], weight_scale: Optional[torch.Tensor],
        activation_scale: Optional[torch.Tensor], bias: Optional[torch.Tensor], quant_mode: str,
        input_layout: str, kv_output: bool, cache_mode: str, check_indices: bool
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    sizes = _validate(x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, size_splits, offset_k, offset_v,
                      weight_scale, activation_scale, bias, quant_mode, input_layout, cache_mode)
    dequant = x.dtype == torch.int32
    if not dequant:  # the spec: dequant inputs are ignored for float x
        weight_scale = activation_scale = bias = None
    device = _backend.device_of(OP, x=x, cos=cos, sin=sin, k_cache=k_cache, v_cache=v_cache, indices=indices,
                                scale_k=scale_k, scale_v=scale_v, offset_k=offset_k, offset_v=offset_v,
                                weight_scale=weight_scale, activation_scale=activation_scale, bias=bias)
    if check_indices:
        bad = _first_bad_index(indices, sizes, cache_mode)
        if bad:
            raise ValueError(f"{OP}: {bad}")
    q, k, v = _empty_outputs(x, cos, sizes, kv_output)
    if not _backend.use_kernel(OP, device):
        rq, rk, rv, _, _ = ref.dequant_rope_quant_kvcache(
            x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, size_splits, offset_k=offset_k,
            offset_v=offset_v, weight_scale=weight_scale, activation_scale=activation_scale, bias=bias,
            kv_output=kv_output, cache_mode=cache_mode)
        q.copy_(rq)
        if kv_output:
            k.copy_(rk)
            v.copy_(rv)
        return q, k, v
    t = sizes["batch"] * sizes["seq"]
    if t == 0:
        return q, k, v
    nq, nkv, d = sizes["nq"], sizes["nkv"], sizes["d"]
    label, bd2 = _label(x, d)
    target = _backend.target_for(device)
    meta, opts = split_config(pick_config(KERNEL.name, target, label, T=t, NQ=nq, NKV=nkv))
    n_tb = triton.cdiv(t, meta["BLOCK_T"])
    n_blocks = triton.cdiv(nq, meta["HEADS"]) + 2 * triton.cdiv(nkv, meta["HEADS"])
    # split the heads into groups only when the token blocks alone cannot fill the cores
    n_groups = max(1, min(triton.cdiv(target.programs(False), n_tb), n_blocks))
    n_groups = triton.cdiv(n_blocks, triton.cdiv(n_blocks, n_groups))
    grid = _backend.persistent_grid(n_tb * n_groups, target)
    bias_mode = 0 if bias is None else (1 if bias.dtype == torch.int32 else 2)
    dummy = scale_k  # never read when the matching feature is off

    def arg(t_):
        return dummy if t_ is None else t_.contiguous()

    if target.backend != "cpu":  # both Triton flavours take this option; the interpreter does not fuse
        opts["enable_fp_fusion"] = False  # an FMA would change the RoPE result's last bit and so the cache bytes
    _backend.launch(
        KERNEL.name, _rope_quant_kvcache_kernel, grid,
        x.contiguous(), cos.contiguous(), sin.contiguous(), k_cache, v_cache, indices.contiguous(),
        scale_k.contiguous(), scale_v.contiguous(), arg(offset_k), arg(offset_v), arg(weight_scale),
        arg(activation_scale), arg(bias), q, k if kv_output else q, v if kv_output else q,
        t, sizes["seq"], nq, nkv, d, sizes["c1"], sizes["c2"], k_cache.stride(0), k_cache.stride(1),
        k_cache.stride(2), v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), n_groups,
        DEQUANT=dequant, BIAS=bias_mode, HAS_ACT=activation_scale is not None, HAS_OFF_K=offset_k is not None,
        HAS_OFF_V=offset_v is not None, KV_OUT=kv_output, PAGE=cache_mode == "page", BLOCK_D2=bd2,
        **meta, **opts)
    return q, k, v


@_op.register_fake
def _(x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, size_splits, offset_k, offset_v, weight_scale,
      activation_scale, bias, quant_mode, input_layout, kv_output, cache_mode, check_indices):
    sizes = _validate(x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, size_splits, offset_k, offset_v,
                      weight_scale, activation_scale, bias, quant_mode, input_layout, cache_mode)
    return _empty_outputs(x, cos, sizes, kv_output)


def dequant_rope_quant_kvcache(x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, size_splits, *,
                               offset_k=None, offset_v=None, weight_scale=None, activation_scale=None, bias=None,
                               quant_mode="static", input_layout="BSND", kv_output=False, cache_mode="contiguous",
                               check_indices=False):
    """Dequant (int32 x), split into q/k/v, RoPE on q and k, quantise k and v into the int8 caches in place.

    x: [B, S, H] or [B, H]; int32 (dequantised with weight_scale [H] fp32, optional activation_scale
        [B*S] fp32 and bias [H] int32/fp16/bf16/fp32) or fp16/bf16 (dequant inputs ignored).
        Any H = (Nq + 2*Nkv) * D: CANN's H % 64 == 0 and H <= 4096 are not needed here.
    cos, sin: [B, S, 1, D] (3-D x) or [B, D] (2-D x), fp16 or bf16, same dtype; rotate-half RoPE.
    k_cache, v_cache: int8 [C1, C2, Nkv, D], updated in place (last dim contiguous).
    indices: int32/int64. contiguous: [B], token s of batch b goes to cache[b, indices[b] + s];
        page: [B*S] slots into the cache viewed as [C1*C2, Nkv, D]. A token whose row is outside
        the cache (negative page slot = padding, slot >= C1*C2, start outside [0, C2 - S]) writes nothing.
    scale_k, scale_v, offset_k, offset_v: fp32 [Nkv, D] or [Nkv*D];
        cache = int8(clamp(round_half_even(val / scale + offset), -128, 127)), NaN -> 0.
    size_splits: [Nq*D, Nkv*D, Nkv*D]. quant_mode: "static". input_layout: "BSND".
    check_indices: raise ValueError naming the first index that would not be written (one host sync).
    Computes in fp32. Returns (q [.., Nq, D], k, v, k_cache, v_cache) in cos's dtype; k, v are RoPE'd k
    and dequantised v [.., Nkv, D] when kv_output, else empty.
    """
    q, k, v = call_op(
        OP, torch.ops.atlas.dequant_rope_quant_kvcache,
        x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, int_list(OP, "size_splits", size_splits), offset_k,
        offset_v, weight_scale, activation_scale, bias, quant_mode, input_layout, kv_output, cache_mode, check_indices)
    return q, k, v, k_cache, v_cache


_NPU_QUANT_MODES = {0: "static"}


def npu_dequant_rope_quant_kvcache(x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, size_splits, *,
                                   offset_k=None, offset_v=None, weight_scale=None, activation_scale=None,
                                   bias=None, quant_mode=0, input_layout="BSND", kv_output=False,
                                   cache_mode="contiguous"):
    """torch_npu spelling: quant_mode is an int as in torch_npu (0 = "static", the only mode supported).

    As torch_npu's binding takes them: size_splits (int[]) a list or tuple of Python or numpy ints, a 1-D integer
    numpy array or host tensor; quant_mode (int) a Python or numpy integer or a 0-d integer tensor; kv_output
    (bool) a Python or numpy bool. The rest are keyword-only after size_splits, as in torch_npu.
    """
    op = "npu_dequant_rope_quant_kvcache"
    quant_mode = int_arg(op, "quant_mode", quant_mode)
    if quant_mode not in _NPU_QUANT_MODES:
        raise ValueError(f"{op}: quant_mode must be 0 (static), got {quant_mode!r}")
    return dequant_rope_quant_kvcache(
        x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, int_list(op, "size_splits", size_splits),
        offset_k=offset_k, offset_v=offset_v, weight_scale=weight_scale, activation_scale=activation_scale,
        bias=bias, quant_mode=_NPU_QUANT_MODES[quant_mode], input_layout=input_layout,
        kv_output=bool_arg(op, "kv_output", kv_output), cache_mode=cache_mode)


KERNEL.tuning = tuning(dequant_rope_quant_kvcache)
