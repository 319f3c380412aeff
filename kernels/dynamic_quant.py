"""Activation quantization (torch_npu.npu_dynamic_quant, npu_dynamic_quant_asymmetric, npu_quantize).

dynamic_quant: per-token (per-row over the last dim) dynamic quantization, symmetric or asymmetric, with
optional smooth scales (one vector, or one per MoE expert chosen by group_index), to int8 or to int4 packed 8
per int32 word. quantize: static quantization with a per-tensor or per-channel scale and zero point.

Numerics: fp32 throughout, as CANN's A2 kernel (docs/ops.md "dynamic_quant"); divisions are IEEE (tl.div_rn),
rounding is half to even (the 1.5 * 2**23 trick), the clamp saturates and NaN -> 0, so integer outputs, scales
and offsets match reference/dynamic_quant.py bit for bit.

Beside this file: dynamic_quant_validate.py (argument checks) and dynamic_quant_tuning.py (the tuning
harnesses).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import numpy as np
import torch
import triton
import triton.language as tl

from . import _backend
from ._validate import bool_arg, call_op, int_arg
from .autotune import KernelSpec, Target, Variant, pick_config, register_kernel, split_config
from .dynamic_quant_tuning import tunings
from .dynamic_quant_validate import _DST, _QUANTIZE_DST, OP, QOP, _dst_name, _validate_dynamic, _validate_quantize
from .reference import dynamic_quant as ref


# ---------------------------------------------------------------- kernels
# SMOOTH: no smooth scales, one vector (K,), or one per MoE expert (E, K) picked by group_index.
SMOOTH_NONE, SMOOTH_VECTOR, SMOOTH_GROUPED = 0, 1, 2


@triton.jit
def _to_grid(t, LO: tl.constexpr, HI: tl.constexpr):
    """fp32 -> integer-valued fp32 in [LO, HI]: NaN -> 0 (as the hardware's saturating convert), clamp, then
    round half to even by the 1.5 * 2**23 trick (exact for |t| < 2**22, which the clamp guarantees)."""
    t = tl.where(t == t, t, 0.0)  # first: max/min would turn NaN into a bound on CUDA
    t = tl.minimum(tl.maximum(t, LO), HI)
    return (t + 12582912.0) - 12582912.0


@triton.jit
def _load_rows(x_ptr, smooth_ptr, r3, rm3, col, K, srow3, sok3, SMOOTH: tl.constexpr):
    """fp32 x * smooth of rows r3 [BM,1,1] at columns col [1,BW,8]; masked elements are 0."""
    m = rm3 & (col < K)
    v = tl.load(x_ptr + r3 * K + col, mask=m, other=0.0).to(tl.float32)
    if SMOOTH == 1:
        v = v * tl.load(smooth_ptr + col, mask=col < K, other=1.0).to(tl.float32)
    if SMOOTH == 2:  # rows outside every expert's range (sok3 false) are not smoothed: x * 1.0
        v = v * tl.load(smooth_ptr + srow3 + col, mask=m & sok3, other=1.0).to(tl.float32)
    return v, m


@triton.jit
def _row_stats(v, m, hi, lo, nan, ASYM: tl.constexpr):
    """Running per-row max|v| (symmetric) or max and min (asymmetric), and whether a NaN was seen."""
    nan = tl.maximum(nan, tl.max(tl.max((v != v).to(tl.int32), axis=2), axis=1))
    if ASYM:
        hi = tl.maximum(hi, tl.max(tl.max(tl.where(m, v, float("-inf")), axis=2), axis=1))
        lo = tl.minimum(lo, tl.min(tl.min(tl.where(m, v, float("inf")), axis=2), axis=1))
    else:
        hi = tl.maximum(hi, tl.max(tl.max(tl.abs(v), axis=2), axis=1))
    return hi, lo, nan


@triton.jit
def _quant_store(y_ptr, v, m, mult3, off3, r3, col, r2, w2, wm2, K, ASYM: tl.constexpr, INT4: tl.constexpr):
    """Quantize the fp32 tile v [BM,BW,8] and store it: int8 at columns col, or int32 words w2 [1,BW] of rows r2."""
    t = v * mult3
    if ASYM:
        t = t + off3
    if INT4:
        q = _to_grid(t, -8.0, 7.0).to(tl.int32) & 0xF
        shift = (tl.arange(0, 8) * 4)[None, None, :]
        words = tl.sum(q << shift, axis=2)  # disjoint nibbles: the sum is their OR
        tl.store(y_ptr + r2 * (K // 8) + w2, words, mask=wm2 & (w2 < K // 8))
    else:
        tl.store(y_ptr + r3 * K + col, _to_grid(t, -128.0, 127.0).to(tl.int8), mask=m)


@triton.jit
def _dynamic_quant_kernel(x_ptr, smooth_ptr, group_ptr, y_ptr, scale_ptr, offset_ptr, R, K, E,
                          ASYM: tl.constexpr, INT4: tl.constexpr, SMOOTH: tl.constexpr, ONE_PASS: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """x [R, K] -> y int8 [R, K] or int32 [R, K/8], scale (and offset) fp32 [R]: one row block per iteration.

    ONE_PASS (K <= BLOCK_K): the rows stay in registers / UB between the reduction and the quantization;
    otherwise a first loop over K finds the row statistics and a second one quantizes.
    """
    QMAX = 7.0 if INT4 else 127.0
    LEVELS = 15.0 if INT4 else 255.0
    w2 = tl.arange(0, BLOCK_K // 8)[None, :]
    w3 = w2[:, :, None]
    col0 = w3 * 8 + tl.arange(0, 8)[None, None, :]
    for tile in range(tl.program_id(0), tl.cdiv(R, BLOCK_M), tl.num_programs(0)):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        rm = rows < R
        rows = rows.to(tl.int64)
        r2 = rows[:, None]
        r3 = r2[:, :, None]
        rm3 = rm[:, None, None]
        srow3 = r3
        sok3 = rm3
        if SMOOTH == 2:  # expert of row r: how many cumulative ends are <= r
            expert = tl.zeros([BLOCK_M], dtype=tl.int32)
            ge = tl.arange(0, 16)
            for e0 in range(0, E, 16):
                em = e0 + ge < E
                ends = tl.load(group_ptr + e0 + ge, mask=em, other=0).to(tl.int64)
                hit = (ends[None, :] <= rows[:, None]) & em[None, :]
                expert += tl.sum(hit.to(tl.int32), axis=1)
            srow3 = (expert.to(tl.int64) * K)[:, None, None]
            sok3 = (expert < E)[:, None, None]
        hi = tl.zeros([BLOCK_M], dtype=tl.float32)
        lo = tl.zeros([BLOCK_M], dtype=tl.float32)
        if ASYM:
            hi = hi + float("-inf")
            lo = lo + float("inf")
        nan = tl.zeros([BLOCK_M], dtype=tl.int32)
        if ONE_PASS:
            v, m = _load_rows(x_ptr, smooth_ptr, r3, rm3, col0, K, srow3, sok3, SMOOTH)
            hi, lo, nan = _row_stats(v, m, hi, lo, nan, ASYM)
        else:
            for k0 in range(0, K, BLOCK_K):
                v, m = _load_rows(x_ptr, smooth_ptr, r3, rm3, k0 + col0, K, srow3, sok3, SMOOTH)
                hi, lo, nan = _row_stats(v, m, hi, lo, nan, ASYM)
        hi = tl.where(nan > 0, float("nan"), hi)  # a NaN anywhere poisons the row, whatever max() does with it
        if ASYM:
            lo = tl.where(nan > 0, float("nan"), lo)
            scale = tl.div_rn(hi - lo, tl.full([BLOCK_M], LEVELS, tl.float32))
            scale = tl.where(scale > 1e-12, scale, 1e-12)  # NaN -> 1e-12, as CANN's GetMax(a, b) = a > b ? a : b
            offset = (QMAX - tl.div_rn(hi, scale))
            mult = tl.div_rn(tl.full([BLOCK_M], 1.0, tl.float32), scale)
            tl.store(offset_ptr + rows, offset, mask=rm)
        else:
            mult = tl.div_rn(tl.full([BLOCK_M], QMAX, tl.float32), hi)
            # rowmax * fp32(1 / QMAX): the constant rounds to the correctly rounded fp32 quotient for 127 and 7
            # (checked); tl.div_rn of two constant tensors crashes triton-ascend 3.2's adapter
            scale = hi * (1.0 / QMAX)
            offset = mult  # unused
        tl.store(scale_ptr + rows, scale, mask=rm)
        mult3 = mult[:, None, None]
        off3 = offset[:, None, None]
        if ONE_PASS:
            _quant_store(y_ptr, v, m, mult3, off3, r3, col0, r2, w2, rm[:, None], K, ASYM, INT4)
        else:
            for k0 in range(0, K, BLOCK_K):
                v, m = _load_rows(x_ptr, smooth_ptr, r3, rm3, k0 + col0, K, srow3, sok3, SMOOTH)
                _quant_store(y_ptr, v, m, mult3, off3, r3, k0 + col0, r2, k0 // 8 + w2, rm[:, None], K, ASYM,
                             INT4)


@triton.jit
def _quantize_kernel(x_ptr, scale_ptr, zp_ptr, y_ptr, N, C, INNER, lo, hi,
                     DIV: tl.constexpr, HAS_ZP: tl.constexpr, INT4: tl.constexpr, BLOCK: tl.constexpr):
    """x (N elements, contiguous) -> y: element i uses scales[(i // INNER) % C] (C = 1: per tensor).

    A tile is BLOCK // 8 groups of 8 consecutive elements (one int32 word each for int4 output).
    """
    w1 = tl.arange(0, BLOCK // 8).to(tl.int64)
    w = w1[:, None]
    j = tl.arange(0, 8)[None, :]
    for tile in range(tl.program_id(0), tl.cdiv(N, BLOCK), tl.num_programs(0)):
        word = tile * (BLOCK // 8) + w  # int64: idx may pass 2**31
        idx = word * 8 + j
        m = idx < N
        ch = (idx // INNER) % C
        v = tl.load(x_ptr + idx, mask=m, other=0.0).to(tl.float32)
        s = tl.load(scale_ptr + ch, mask=m, other=1.0).to(tl.float32)
        if DIV:
            t = tl.div_rn(v, s)
        else:
            t = v * s
        if HAS_ZP:
            t = t + tl.load(zp_ptr + ch, mask=m, other=0).to(tl.float32)
        t = tl.where(t == t, t, 0.0)
        t = tl.minimum(tl.maximum(t, lo), hi)
        t = (t + 12582912.0) - 12582912.0
        if INT4:
            q = t.to(tl.int32) & 0xF
            words = tl.sum(q << (j * 4), axis=1)  # disjoint nibbles: the sum is their OR
            word1 = tile * (BLOCK // 8) + w1
            tl.store(y_ptr + word1, words, mask=word1 < N // 8)
        else:
            tl.store(y_ptr + idx, t.to(y_ptr.dtype.element_ty), mask=m)


# ---------------------------------------------------------------- config spaces
# UB bytes per element of a tile (Ascend): the x tile, its fp32 copy, the smooth row, the scaled values and
# the integer result, with slack for the masks and reductions; double buffered on top.
_DQ_BYTES_PER_ELEM = 32
_Q_BYTES_PER_ELEM = 32


def _dq_space(target: Target, variant: Variant) -> list:
    configs = []
    for bm in (1, 2, 4, 8, 16):
        for bk in (256, 512, 1024, 2048):
            if target.is_ascend:
                # BLOCK_M = 1 is left out: with group_index, triton-ascend 3.2's adapter fails to lower the
                # per-row smooth gather of a [1, W, 8] tile ("failed to legalize unresolved materialization")
                if bm > 1 and 2 * bm * bk * _DQ_BYTES_PER_ELEM <= target.ub_bytes:
                    configs.append({"BLOCK_M": bm, "BLOCK_K": bk})
                continue
            for warps in (2, 4, 8):
                if 4 <= bm * bk // (32 * warps) <= 16:
                    configs.append({"BLOCK_M": bm, "BLOCK_K": bk, "num_warps": warps})
    return configs


def _dq_default(target: Target, variant: Variant) -> dict:
    if target.backend == "cpu":  # interpreter: large tiles mean fewer numpy round trips
        return {"BLOCK_M": 16, "BLOCK_K": 1024}
    if target.is_ascend:
        # of the configs bishengir compiled: the longest row chunk (one pass up to K = BLOCK_K), then the most rows
        space = KERNEL.space(target, variant) or _dq_space(target, variant)  # (no verdicts yet: the candidates)
        return max(space, key=lambda c: (c["BLOCK_K"], c["BLOCK_M"]))
    return {"BLOCK_M": 2, "BLOCK_K": 1024, "num_warps": 4}


def _q_space(target: Target, variant: Variant) -> list:
    configs = []
    for block in (512, 1024, 2048, 4096):
        if target.is_ascend:
            if 2 * block * _Q_BYTES_PER_ELEM <= target.ub_bytes:
                configs.append({"BLOCK": block})
            continue
        for warps in (2, 4, 8):
            if 4 <= block // (32 * warps) <= 16:
                configs.append({"BLOCK": block, "num_warps": warps})
    return configs


def _q_default(target: Target, variant: Variant) -> dict:
    if target.backend == "cpu":
        return {"BLOCK": 4096}
    if target.is_ascend:
        return max(QKERNEL.space(target, variant) or _q_space(target, variant), key=lambda c: c["BLOCK"])
    return {"BLOCK": 2048, "num_warps": 4}


def _dq_variant(label, x, smooth, group, y, asym, int4, smooth_mode, one_pass):
    types = {"x_ptr": x, "smooth_ptr": smooth, "group_ptr": group, "y_ptr": y, "scale_ptr": "*fp32",
             "offset_ptr": "*fp32", "R": "i32", "K": "i32", "E": "i32"}
    return Variant(label, types, {"ASYM": asym, "INT4": int4, "SMOOTH": smooth_mode, "ONE_PASS": one_pass})


# The launcher picks a config by (symmetric or not, int8 or int4 output); each variant also fixes one
# combination of input dtype, smooth mode and pass count, so that the checks compile every feature.
_DQ_VARIANTS = [
    _dq_variant("sym-int8", "*fp16", "*fp16", "*i32", "*i8", False, False, SMOOTH_GROUPED, True),
    _dq_variant("sym-int4", "*bf16", "*bf16", "*i32", "*i32", False, True, SMOOTH_VECTOR, False),
    _dq_variant("asym-int8", "*bf16", "*bf16", "*i32", "*i8", True, False, SMOOTH_NONE, False),
    _dq_variant("asym-int4", "*fp16", "*fp16", "*i64", "*i32", True, True, SMOOTH_GROUPED, True),
]
_Q_TYPES = ("x_ptr", "scale_ptr", "zp_ptr", "y_ptr")
_Q_VARIANTS = [  # "int8": vllm-ascend's static W8A8 call (multiply, bf16 scale/offset); "int4": divide, int zp
    Variant("int8", {**dict(zip(_Q_TYPES, ("*bf16", "*bf16", "*bf16", "*i8"))), "N": "i32", "C": "i32",
                     "INNER": "i32", "lo": "fp32", "hi": "fp32"}, {"DIV": False, "HAS_ZP": True, "INT4": False}),
    Variant("int4", {**dict(zip(_Q_TYPES, ("*fp32", "*fp32", "*i32", "*i32"))), "N": "i32", "C": "i32",
                     "INNER": "i32", "lo": "fp32", "hi": "fp32"}, {"DIV": True, "HAS_ZP": True, "INT4": True}),
]

KERNEL = register_kernel(KernelSpec(f"{OP}.rowwise", _dynamic_quant_kernel, _DQ_VARIANTS, _dq_space, _dq_default))
QKERNEL = register_kernel(KernelSpec(f"{QOP}.static", _quantize_kernel, _Q_VARIANTS, _q_space, _q_default))


# ---------------------------------------------------------------- outputs
def _empty_dynamic(x, dst: str, asymmetric: bool):
    k = x.shape[-1]
    y = x.new_empty((*x.shape[:-1], k // 8), dtype=torch.int32) if dst == "int4" else x.new_empty(x.shape,
                                                                                                   dtype=torch.int8)
    scale = x.new_empty(x.shape[:-1], dtype=torch.float32)
    offset = x.new_empty(x.shape[:-1] if asymmetric else (0,), dtype=torch.float32)
    return y, scale, offset


def _empty_quantize(x, dst: str):
    if dst == "int4":
        return x.new_empty((*x.shape[:-1], x.shape[-1] // 8), dtype=torch.int32)
    return x.new_empty(x.shape, dtype=torch.uint8 if dst == "uint8" else torch.int8)


# ---------------------------------------------------------------- launch
def _launch_dynamic(x, smooth_scales, group_index, dst, asymmetric, r, k, y, scale, offset, device):
    label = f"{'asym' if asymmetric else 'sym'}-{dst}"
    target = _backend.target_for(device)
    meta, opts = split_config(pick_config(KERNEL.name, target, label, R=r, K=k))
    smooth = SMOOTH_NONE if smooth_scales is None else SMOOTH_VECTOR if group_index is None else SMOOTH_GROUPED
    x = x.contiguous()
    # numpy (the interpreter) warns on the 127 / 0 and 0 * inf of all-zero and inf rows; the hardware does not
    with np.errstate(divide="ignore", invalid="ignore") if device.type == "cpu" else contextlib.nullcontext():
        _backend.launch(
            KERNEL.name, _dynamic_quant_kernel, _backend.persistent_grid(triton.cdiv(r, meta["BLOCK_M"]), target),
            x, x if smooth_scales is None else smooth_scales.contiguous(),
            scale if group_index is None else group_index.contiguous(), y, scale, offset if asymmetric else scale,
            r, k, 0 if group_index is None else group_index.shape[0],
            ASYM=asymmetric, INT4=dst == "int4", SMOOTH=smooth, ONE_PASS=k <= meta["BLOCK_K"], **meta, **opts)


def _launch_quantize(x, scales, zero_points, dst, ax, div_mode, y, device):
    target = _backend.target_for(device)
    label = "int4" if dst == "int4" else "int8"
    n = x.numel()
    meta, opts = split_config(pick_config(QKERNEL.name, target, label, N=n))
    per_channel = scales.numel() > 1
    inner = 1
    for d in x.shape[ax + 1:]:
        inner *= d
    lo, hi = ref.RANGE[dst]
    _backend.launch(
        QKERNEL.name, _quantize_kernel, _backend.persistent_grid(triton.cdiv(n, meta["BLOCK"]), target),
        x.contiguous(), scales.contiguous(), scales if zero_points is None else zero_points.contiguous(), y,
        n, x.shape[ax] if per_channel else 1, inner if per_channel else 1, lo, hi,
        DIV=div_mode, HAS_ZP=zero_points is not None, INT4=dst == "int4", **meta, **opts)


# ---------------------------------------------------------------- ops
@torch.library.custom_op(f"atlas::{OP}", mutates_args=())
def _dynamic_op(x: torch.Tensor, smooth_scales: Optional[torch.Tensor], group_index: Optional[torch.Tensor],
                dst: str, asymmetric: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r, k = _validate_dynamic(x, smooth_scales, group_index, dst)
    y, scale, offset = _empty_dynamic(x, dst, asymmetric)
    device = _backend.device_of(OP, x=x, smooth_scales=smooth_scales, group_index=group_index)
    if _backend.use_kernel(OP, device):
        if r:
            _launch_dynamic(x, smooth_scales, group_index, dst, asymmetric, r, k, y, scale, offset, device)
        return y, scale, offset
    if asymmetric:
        ry, rs, ro = ref.dynamic_quant_asymmetric(x, smooth_scales, group_index, dst)
        offset.copy_(ro)
    else:
        ry, rs = ref.dynamic_quant(x, smooth_scales, group_index, dst)
    y.copy_(ry)
    scale.copy_(rs)
    return y, scale, offset


@_dynamic_op.register_fake
def _(x, smooth_scales, group_index, dst, asymmetric):
    _validate_dynamic(x, smooth_scales, group_index, dst)
    return _empty_dynamic(x, dst, asymmetric)


@torch.library.custom_op(f"atlas::{QOP}", mutates_args=())
def _quantize_op(x: torch.Tensor, scales: torch.Tensor, zero_points: Optional[torch.Tensor], dst: str, axis: int,
                 div_mode: bool) -> torch.Tensor:
    ax = _validate_quantize(x, scales, zero_points, dst, axis, div_mode)
    y = _empty_quantize(x, dst)
    device = _backend.device_of(QOP, input=x, scales=scales, zero_points=zero_points)
    if _backend.use_kernel(QOP, device):
        if x.numel():
            _launch_quantize(x, scales, zero_points, dst, ax, div_mode, y, device)
        return y
    y.copy_(ref.quantize(x, scales, zero_points, dst, ax, div_mode))
    return y


@_quantize_op.register_fake
def _(x, scales, zero_points, dst, axis, div_mode):
    _validate_quantize(x, scales, zero_points, dst, axis, div_mode)
    return _empty_quantize(x, dst)


def dynamic_quant(x, *, smooth_scales=None, group_index=None, dst_type=torch.int8):
    """Symmetric per-token dynamic quantization over the last dim -> (y, scale).

    x: (..., K) fp16/bf16 (fp32 also accepted). smooth_scales: (K,), or (E, K) with group_index (E,) int32/int64
    cumulative row ends (row r uses smooth_scales[e], e = number of ends <= r; rows past the last end are not
    smoothed). dst_type: torch.int8 (y int8 (..., K)) or torch.quint4x2 (y int32 (..., K/8), 8 nibbles per word,
    element 0 in bits 0-3; K % 8 == 0). scale: fp32 (...) = rowmax(|x * smooth|) / 127 (7 for int4).
    """
    dst = _dst_name(OP, dst_type, _DST)
    y, scale, _ = call_op(OP, torch.ops.atlas.dynamic_quant, x, smooth_scales, group_index, dst, False)
    return y, scale


def dynamic_quant_asymmetric(x, *, smooth_scales=None, group_index=None, dst_type=torch.int8):
    """Asymmetric per-token dynamic quantization -> (y, scale, offset); arguments as dynamic_quant.

    scale = max((rowmax - rowmin) / 255, 1e-12) (15 for int4), offset = 127 - rowmax / scale (7 for int4),
    y = round(x * (1 / scale) + offset); scale and offset fp32 (...).
    """
    dst = _dst_name(OP, dst_type, _DST)
    return call_op(OP, torch.ops.atlas.dynamic_quant, x, smooth_scales, group_index, dst, True)


def quantize(input, scales, zero_points, dtype, axis=1, div_mode=True):
    """Static quantization: y = round(input / scales + zero_points) (div_mode) or input * scales + zero_points.

    input: fp16/bf16/fp32. scales: fp32/fp16/bf16 with 1 value (per tensor) or one per index of the quantized
    axis (per channel). zero_points: None or like scales (int8/uint8/int32/float). dtype: torch.qint8 (int8
    out), torch.quint8 (uint8), torch.quint4x2 (int32 (..., K/8), 8 nibbles per word; last dim % 8 == 0).
    axis: div_mode=True, any dim of input; div_mode=False, -2 = the second-to-last dim, > -2 = the last dim.
    Computed in fp32, rounded half to even, saturated to dtype's range (NaN -> 0).
    """
    dst = _dst_name(QOP, dtype, _QUANTIZE_DST, "dtype")
    return call_op(QOP, torch.ops.atlas.quantize, input, scales, zero_points, dst,
                   int_arg(QOP, "axis", axis), bool_arg(QOP, "div_mode", div_mode))


def npu_dynamic_quant(input, *, smooth_scales=None, group_index=None, dst_type=torch.int8):
    """torch_npu spelling of dynamic_quant (dst_type None means torch.int8, as in torch_npu)."""
    return dynamic_quant(input, smooth_scales=smooth_scales, group_index=group_index, dst_type=dst_type)


def npu_dynamic_quant_asymmetric(input, *, smooth_scales=None, group_index=None, dst_type=torch.int8):
    """torch_npu spelling of dynamic_quant_asymmetric (dst_type None means torch.int8)."""
    return dynamic_quant_asymmetric(input, smooth_scales=smooth_scales, group_index=group_index, dst_type=dst_type)


def npu_quantize(input, scales, zero_points, dtype, axis=1, div_mode=True):
    """torch_npu spelling of quantize; vllm-ascend's static W8A8 call is
    npu_quantize(x, 1 / input_scale, input_offset, torch.qint8, -1, False)."""
    return quantize(input, scales, zero_points, dtype, axis, div_mode)


KERNEL.tuning, QKERNEL.tuning = tunings(dynamic_quant, dynamic_quant_asymmetric, quantize)
