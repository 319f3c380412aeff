"""Fused residual add -> RMSNorm -> int8 quant (torch_npu.npu_add_rms_norm_quant, npu_add_rms_norm_dynamic_quant).

One launch per call, persistent programs; a tile is ROWS rows. x = x1 + x2 is
computed in fp32; x_out (the next layer's residual) is x rounded to the input
dtype; RMSNorm and the quantisation run on the fp32 values (docs/ops.md §6 has
the order of every rounding; reference/add_rms_norm_quant.py does the same).

Two row layouts, picked by the launcher from the row length N:
- tile (N, rounded up to a power of two, <= the tile config's BLOCK_N): the whole row stays on chip;
  x1, x2 are read once, every output written once.
- loop (longer rows, e.g. hidden 7168 / 8192): the row is walked in BLOCK_N chunks:
  sum of squares (x_out written here), then, for the dynamic form, the row max of each
  quantised output, then normalise + quantise. x1 and x2 are re-read per pass (from L2).

The dynamic quant follows the issue's definition: t = y * smooth (fp32), rowmax = max|t|,
multiplier = 127 / rowmax (IEEE division), q = round_half_even(t * multiplier),
scale = rowmax * fp32(1/127). A zero row gives q = 0 and scale = 0 (multiplier 0).

Beside this file: add_rms_norm_quant_validate.py (argument checks) and add_rms_norm_quant_tuning.py (the
tuning harness).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import triton
import triton.language as tl

from . import _backend
from ._validate import call_op
from .add_rms_norm_quant_tuning import tuning
from .add_rms_norm_quant_validate import _float_arg, _int8_dtype, _output_mask, _validate_dynamic, _validate_static
from .autotune import KernelSpec, Target, Variant, pick_config, register_kernel, split_config
from .reference import add_rms_norm_quant as ref

OP_STATIC = "add_rms_norm_quant"
OP_DYNAMIC = "add_rms_norm_dynamic_quant"
INV_127 = float(np.float32(1.0) / np.float32(127.0))  # scale = rowmax * fp32(1/127)


@triton.jit
def _quant_int8(v):
    """int8(clamp(round_half_even(v), -128, 127)), NaN -> 0 (as the hardware's saturating convert)."""
    v = tl.where(v == v, v, 0.0)
    v = tl.minimum(tl.maximum(v, -128.0), 127.0)
    v = (v + 12582912.0) - 12582912.0  # 1.5 * 2**23: rounds |v| < 2**22 to an integer, ties to even
    return v.to(tl.int8)


@triton.jit
def _load_x(x1_ptr, x2_ptr, off, m, ROUND_X: tl.constexpr):
    """(x used by the norm (fp32), x_out in the input dtype) at offsets off."""
    x = tl.load(x1_ptr + off, mask=m, other=0.0).to(tl.float32) + \
        tl.load(x2_ptr + off, mask=m, other=0.0).to(tl.float32)
    x_out = x.to(x1_ptr.dtype.element_ty)
    if ROUND_X:  # the static CANN kernel normalises the rounded sum (fp16; bf16 with beta)
        x = x_out.to(tl.float32)
    return x, x_out


@triton.jit
def _rstd(sum_sq, inv_n, eps):
    """1 / sqrt(sum_sq * (1/N) + eps), IEEE sqrt and division (a plain sqrt or / is approximate on CUDA)."""
    return tl.div_rn(tl.full(sum_sq.shape, 1.0, tl.float32), tl.sqrt_rn(sum_sq * inv_n + eps))


@triton.jit
def _multiplier(rowmax):
    """127 / rowmax (IEEE division); 0 for a zero row (and for the padding rows of a tile)."""
    nonzero = rowmax > 0
    return tl.where(nonzero, tl.div_rn(tl.full(rowmax.shape, 127.0, tl.float32), tl.where(nonzero, rowmax, 1.0)), 0.0)


@triton.jit
def _col(ptr, col, cm, ON: tl.constexpr):
    """fp32 per-column values at col; 1 where masked (a harmless divisor; the row max masks these columns) and
    everywhere when not ON (the pointer is a dummy)."""
    if ON:
        v = tl.load(ptr + col, mask=cm, other=1.0).to(tl.float32)
    else:
        v = tl.full(col.shape, 1.0, tl.float32)
    return v


@triton.jit
def _normalize(x, rstd, g, b, HAS_BETA: tl.constexpr, HALF_GAMMA: tl.constexpr):
    """y = x * rstd * gamma (+ beta), fp32; HALF_GAMMA: x * rstd and the gamma product rounded to fp16."""
    y = x * rstd
    if HALF_GAMMA:  # the static CANN kernel multiplies by gamma in fp16 for fp16 inputs
        y = (y.to(tl.float16).to(tl.float32) * g).to(tl.float16).to(tl.float32)
    else:
        y = y * g
    if HAS_BETA:
        y = y + b
    return y


@triton.jit
def _smooth(y, s, HAS_S: tl.constexpr):
    if HAS_S:
        y = y * s
    return y


@triton.jit
def _static_quant(y, s, zp, HAS_ZP: tl.constexpr, DIV_MODE: tl.constexpr):
    """int8 of y / scale + zero_point (DIV_MODE) or y * scale + zero_point."""
    if DIV_MODE:
        v = tl.div_rn(y, s)
    else:
        v = y * s
    if HAS_ZP:
        v = v + zp
    return _quant_int8(v)


@triton.jit
def _quantize(y, p1, p2, z1, z2, mult1, mult2, y1_ptr, y2_ptr, off, m, DYNAMIC: tl.constexpr, OUT1: tl.constexpr,
              OUT2: tl.constexpr, HAS_S1: tl.constexpr, HAS_S2: tl.constexpr, HAS_ZP1: tl.constexpr,
              HAS_ZP2: tl.constexpr, DIV_MODE: tl.constexpr):
    """Store y1 / y2 of normalised y: dynamic (smooth, then times the row's multiplier) or static."""
    if DYNAMIC:
        if OUT1:
            tl.store(y1_ptr + off, _quant_int8(_smooth(y, p1, HAS_S1) * mult1), mask=m)
        if OUT2:
            tl.store(y2_ptr + off, _quant_int8(_smooth(y, p2, HAS_S2) * mult2), mask=m)
    else:
        tl.store(y1_ptr + off, _static_quant(y, p1, z1, HAS_ZP1, DIV_MODE), mask=m)
        if OUT2:
            tl.store(y2_ptr + off, _static_quant(y, p2, z2, HAS_ZP2, DIV_MODE), mask=m)


@triton.jit
def _add_rms_norm_quant_kernel(
        x1_ptr, x2_ptr, gamma_ptr, beta_ptr, s1_ptr, s2_ptr, zp1_ptr, zp2_ptr,
        y1_ptr, y2_ptr, x_out_ptr, scale1_ptr, scale2_ptr, R, N, inv_n, eps,
        DYNAMIC: tl.constexpr, OUT1: tl.constexpr, OUT2: tl.constexpr, HAS_S1: tl.constexpr,
        HAS_S2: tl.constexpr, HAS_ZP1: tl.constexpr, HAS_ZP2: tl.constexpr, HAS_BETA: tl.constexpr,
        DIV_MODE: tl.constexpr, ROUND_X: tl.constexpr, HALF_GAMMA: tl.constexpr, ONE_TILE: tl.constexpr,
        BLOCK_N: tl.constexpr, ROWS: tl.constexpr):
    """x1, x2 [R, N] -> x_out [R, N] (input dtype), y1, y2 [R, N] int8, scale1, scale2 [R] fp32 (dynamic).

    s1/s2 (HAS_S1/HAS_S2): per-column smooth scales (dynamic) or quant scales of output 1 / 2 (static: HAS_S1
    always, HAS_S2 = OUT2). zp1/zp2: per-column zero points (static). OUT1/OUT2: the quantised outputs written.
    ONE_TILE: the whole row is one BLOCK_N tile (N <= BLOCK_N), else it is walked in chunks.
    """
    pid = tl.program_id(0)
    rows_ar = tl.arange(0, ROWS)[:, None]
    cols = tl.arange(0, BLOCK_N)[None, :]
    if ONE_TILE:
        # the per-column parameters: loaded once per program, reused by every tile
        cm = cols < N
        g, b = _col(gamma_ptr, cols, cm, True), _col(beta_ptr, cols, cm, HAS_BETA)
        p1, p2 = _col(s1_ptr, cols, cm, HAS_S1), _col(s2_ptr, cols, cm, HAS_S2)
        z1, z2 = _col(zp1_ptr, cols, cm, HAS_ZP1), _col(zp2_ptr, cols, cm, HAS_ZP2)
        for tile in range(pid, tl.cdiv(R, ROWS), tl.num_programs(0)):
            row = tile * ROWS + rows_ar
            rm = row < R
            off = row.to(tl.int64) * N + cols
            m = rm & cm
            x, x_out = _load_x(x1_ptr, x2_ptr, off, m, ROUND_X)
            tl.store(x_out_ptr + off, x_out, mask=m)
            rstd = _rstd(tl.sum(x * x, axis=1), inv_n, eps)[:, None]
            y = _normalize(x, rstd, g, b, HAS_BETA, HALF_GAMMA)
            mult1 = tl.full([ROWS, 1], 1.0, tl.float32)
            mult2 = tl.full([ROWS, 1], 1.0, tl.float32)
            if DYNAMIC:
                if OUT1:
                    amax1 = tl.max(tl.where(cm, tl.abs(_smooth(y, p1, HAS_S1)), 0.0), axis=1)
                    mult1 = _multiplier(amax1)[:, None]
                    tl.store(scale1_ptr + row, (amax1 * 0.007874015718698502)[:, None], mask=rm)
                if OUT2:
                    amax2 = tl.max(tl.where(cm, tl.abs(_smooth(y, p2, HAS_S2)), 0.0), axis=1)
                    mult2 = _multiplier(amax2)[:, None]
                    tl.store(scale2_ptr + row, (amax2 * 0.007874015718698502)[:, None], mask=rm)
            _quantize(y, p1, p2, z1, z2, mult1, mult2, y1_ptr, y2_ptr, off, m, DYNAMIC, OUT1, OUT2, HAS_S1, HAS_S2,
                      HAS_ZP1, HAS_ZP2, DIV_MODE)
    else:
        for tile in range(pid, tl.cdiv(R, ROWS), tl.num_programs(0)):
            row = tile * ROWS + rows_ar
            rm = row < R
            base = row.to(tl.int64) * N
            # pass 1: x_out and the sum of squares (elementwise partial sums, reduced once at the end)
            acc = tl.zeros([ROWS, BLOCK_N], tl.float32)
            for c0 in range(0, N, BLOCK_N):
                col = c0 + cols
                m = rm & (col < N)
                x, x_out = _load_x(x1_ptr, x2_ptr, base + col, m, ROUND_X)
                tl.store(x_out_ptr + base + col, x_out, mask=m)
                acc += x * x
            rstd = _rstd(tl.sum(acc, axis=1), inv_n, eps)[:, None]
            mult1 = tl.full([ROWS, 1], 1.0, tl.float32)
            mult2 = tl.full([ROWS, 1], 1.0, tl.float32)
            if DYNAMIC:
                # pass 2: the row max of each quantised output
                amax1 = tl.zeros([ROWS], tl.float32)
                amax2 = tl.zeros([ROWS], tl.float32)
                for c0 in range(0, N, BLOCK_N):
                    col = c0 + cols
                    cm = col < N
                    x, x_out = _load_x(x1_ptr, x2_ptr, base + col, rm & cm, ROUND_X)
                    y = _normalize(x, rstd, _col(gamma_ptr, col, cm, True), _col(beta_ptr, col, cm, HAS_BETA),
                                   HAS_BETA, HALF_GAMMA)
                    if OUT1:
                        t = _smooth(y, _col(s1_ptr, col, cm, HAS_S1), HAS_S1)
                        amax1 = tl.maximum(amax1, tl.max(tl.where(cm, tl.abs(t), 0.0), axis=1))
                    if OUT2:
                        t = _smooth(y, _col(s2_ptr, col, cm, HAS_S2), HAS_S2)
                        amax2 = tl.maximum(amax2, tl.max(tl.where(cm, tl.abs(t), 0.0), axis=1))
                mult1 = _multiplier(amax1)[:, None]
                mult2 = _multiplier(amax2)[:, None]
                if OUT1:
                    tl.store(scale1_ptr + row, (amax1 * 0.007874015718698502)[:, None], mask=rm)
                if OUT2:
                    tl.store(scale2_ptr + row, (amax2 * 0.007874015718698502)[:, None], mask=rm)
            # last pass: normalise and quantise
            for c0 in range(0, N, BLOCK_N):
                col = c0 + cols
                cm = col < N
                m = rm & cm
                x, x_out = _load_x(x1_ptr, x2_ptr, base + col, m, ROUND_X)
                y = _normalize(x, rstd, _col(gamma_ptr, col, cm, True), _col(beta_ptr, col, cm, HAS_BETA),
                               HAS_BETA, HALF_GAMMA)
                _quantize(y, _col(s1_ptr, col, cm, HAS_S1), _col(s2_ptr, col, cm, HAS_S2),
                          _col(zp1_ptr, col, cm, HAS_ZP1), _col(zp2_ptr, col, cm, HAS_ZP2), mult1, mult2,
                          y1_ptr, y2_ptr, base + col, m, DYNAMIC, OUT1, OUT2, HAS_S1, HAS_S2, HAS_ZP1, HAS_ZP2,
                          DIV_MODE)


# ---------------------------------------------------------------- config spaces
# Tile variants: configs are one row of BLOCK_N columns, the longest row a tile holds; a launch with a
# shorter row takes BLOCK_N // next_pow2(N) rows per tile (the same elements, less per-column data, so
# the checked config is the worst case). Loop variants: BLOCK_N columns x ROWS rows per chunk.
# Ascend UB model (bishengir's planned UB for this kernel, Ascend910B2: 146-149 KB at 256 elements,
# 438-443 KB at 1024): about 48 KiB fixed + 400 bytes per tile element; the verdicts decide.
_UB_FIXED = 48 * 1024
_UB_PER_ELEM = 400


def _ub_model(elems: int) -> int:
    return _UB_FIXED + elems * _UB_PER_ELEM


def _space(target: Target, variant: Variant) -> list:
    one_tile = variant.constexprs["ONE_TILE"]
    if target.is_ascend:
        shapes = [(bn, 1) for bn in (64, 128, 256, 512)] if one_tile else \
            [(bn, rows) for bn in (64, 128, 256, 512) for rows in (1, 2, 4)]
        # candidates up to 25% past the model; the stored verdicts keep the ones bishengir compiled
        return [{"BLOCK_N": bn, "ROWS": rows} for bn, rows in shapes
                if _ub_model(bn * rows) <= target.ub_bytes * 5 // 4]
    shapes = [(bn, 1) for bn in (1024, 2048, 4096, 8192)] if one_tile else \
        [(bn, rows) for bn in (512, 1024, 2048) for rows in (1, 2, 4)]
    configs = []
    for bn, rows in shapes:
        for warps in (4, 8, 16):
            if 2 <= rows * bn // (32 * warps) <= 16:  # values per thread of each live tile-shaped array
                configs.append({"BLOCK_N": bn, "ROWS": rows, "num_warps": warps})
    return configs


def _default(target: Target, variant: Variant) -> dict:
    one_tile = variant.constexprs["ONE_TILE"]
    if target.backend == "cpu":  # interpreter: large tiles mean fewer numpy round trips
        return {"BLOCK_N": 8192, "ROWS": 1} if one_tile else {"BLOCK_N": 1024, "ROWS": 8}
    if target.is_ascend:
        fits = [c for c in _space(target, variant) if _ub_model(c["BLOCK_N"] * c["ROWS"]) <= target.ub_bytes]
        return max(fits, key=lambda c: (c["BLOCK_N"] * c["ROWS"], c["BLOCK_N"]))
    return {"BLOCK_N": 4096, "ROWS": 1, "num_warps": 16} if one_tile else {"BLOCK_N": 1024, "ROWS": 1, "num_warps": 4}


_FEATURES = ("DYNAMIC", "OUT1", "OUT2", "HAS_S1", "HAS_S2", "HAS_ZP1", "HAS_ZP2", "HAS_BETA", "DIV_MODE", "ROUND_X",
             "HALF_GAMMA", "ONE_TILE")


def _variant(label, x, s, zp, *flags):
    types = {"x1_ptr": x, "x2_ptr": x, "gamma_ptr": x, "beta_ptr": x, "s1_ptr": s, "s2_ptr": s, "zp1_ptr": zp,
             "zp2_ptr": zp, "y1_ptr": "*i8", "y2_ptr": "*i8", "x_out_ptr": x, "scale1_ptr": "*fp32",
             "scale2_ptr": "*fp32", "R": "i32", "N": "i32", "inv_n": "fp32", "eps": "fp32"}
    return Variant(label, types, dict(zip(_FEATURES, flags)))


# The launcher picks its config by (form, row layout); each variant also fixes one dtype and one
# combination of the optional features so that the checks compile every feature:
#                DYNAMIC OUT1  OUT2   S1     S2     ZP1    ZP2    BETA   DIV    ROUND_X HALF_G ONE_TILE
_VARIANTS = [
    _variant("dynamic-tile", "*fp16", "*fp16", "*i32",
             True, True, True, True, True, False, False, True, True, False, False, True),
    _variant("dynamic-loop", "*bf16", "*bf16", "*i32",
             True, True, True, True, False, False, False, False, True, False, False, False),
    _variant("static-tile", "*bf16", "*bf16", "*bf16",
             False, True, True, True, True, True, True, True, True, True, False, True),
    _variant("static-loop", "*fp16", "*fp32", "*i32",
             False, True, False, True, False, True, False, False, False, True, True, False),
]

KERNEL = register_kernel(KernelSpec(f"{OP_STATIC}.fused", _add_rms_norm_quant_kernel, _VARIANTS, _space, _default))


# ---------------------------------------------------------------- launch
def _launch(x1, x2, gamma, rows, n, outs, *, dynamic, s1=None, s2=None, zp1=None, zp2=None, beta=None, epsilon,
            out1=True, out2=False, has_s1=False, has_s2=False, div_mode=True, round_x=False, half_gamma=False):
    """Launch the kernel over rows x n; outs = (y1, y2, x_out, scale1, scale2), unused ones any tensor."""
    if rows == 0 or n == 0:
        return
    device = x1.device
    target = _backend.target_for(device)
    form = "dynamic" if dynamic else "static"
    block_n = max(16, triton.next_power_of_2(n))
    meta, opts = split_config(pick_config(KERNEL.name, target, f"{form}-tile", R=rows, N=n))
    one_tile = block_n <= meta["BLOCK_N"]
    if one_tile:  # as many whole rows as the checked tile holds
        meta = {"BLOCK_N": block_n, "ROWS": min(meta["BLOCK_N"] // block_n, triton.next_power_of_2(rows))}
    else:
        meta, opts = split_config(pick_config(KERNEL.name, target, f"{form}-loop", R=rows, N=n))
    grid = _backend.persistent_grid(triton.cdiv(rows, meta["ROWS"]), target)
    y1, y2, x_out, scale1, scale2 = outs

    def arg(t):
        return x1 if t is None else t.contiguous()

    _backend.launch(
        KERNEL.name, _add_rms_norm_quant_kernel, grid,
        x1.contiguous(), x2.contiguous(), gamma.contiguous(), arg(beta), arg(s1), arg(s2), arg(zp1), arg(zp2),
        y1, y2, x_out, scale1, scale2, rows, n, float(np.float32(1.0) / np.float32(n)), float(epsilon),
        DYNAMIC=dynamic, OUT1=out1, OUT2=out2, HAS_S1=has_s1, HAS_S2=has_s2, HAS_ZP1=zp1 is not None,
        HAS_ZP2=zp2 is not None, HAS_BETA=beta is not None, DIV_MODE=div_mode, ROUND_X=round_x,
        HALF_GAMMA=half_gamma, ONE_TILE=one_tile, **meta, **opts)


def _dynamic_outputs(x1, out1, out2):
    lead = x1.shape[:-1]
    placeholder = (x1.new_zeros((), dtype=torch.int8), x1.new_zeros((), dtype=torch.float32))

    def pair(on):  # torch_npu returns 0-dim tensors for an output it does not compute
        return (x1.new_empty(x1.shape, dtype=torch.int8), x1.new_empty(lead, dtype=torch.float32)) if on \
            else placeholder

    (y1, s1), (y2, s2) = pair(out1), pair(out2)
    return y1, y2, x1.new_empty(x1.shape), s1, s2


@torch.library.custom_op(f"atlas::{OP_DYNAMIC}", mutates_args=())
def _dynamic_op(x1: torch.Tensor, x2: torch.Tensor, gamma: torch.Tensor, smooth_scale1: Optional[torch.Tensor],
                smooth_scale2: Optional[torch.Tensor], beta: Optional[torch.Tensor], epsilon: float, out1: bool,
                out2: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, n = _validate_dynamic(x1, x2, gamma, smooth_scale1, smooth_scale2, beta)
    outs = _dynamic_outputs(x1, out1, out2)
    if not _backend.use_kernel(OP_DYNAMIC, x1.device):
        for o, r in zip(outs, ref.add_rms_norm_dynamic_quant(x1, x2, gamma, smooth_scale1, smooth_scale2, beta,
                                                             epsilon, out1, out2)):
            o.copy_(r)
        return outs
    if n == 0:  # empty rows: rowmax 0, scale 0
        for s, on in ((outs[3], out1), (outs[4], out2)):
            if on:
                s.zero_()
    _launch(x1, x2, gamma, rows, n, outs, dynamic=True, s1=smooth_scale1 if out1 else None,
            s2=smooth_scale2 if out2 else None, beta=beta, epsilon=epsilon, out1=out1, out2=out2,
            has_s1=out1 and smooth_scale1 is not None, has_s2=out2 and smooth_scale2 is not None)
    return outs


@_dynamic_op.register_fake
def _(x1, x2, gamma, smooth_scale1, smooth_scale2, beta, epsilon, out1, out2):
    _validate_dynamic(x1, x2, gamma, smooth_scale1, smooth_scale2, beta)
    return _dynamic_outputs(x1, out1, out2)


def _static_outputs(x1, scales2):
    y2 = x1.new_empty(x1.shape, dtype=torch.int8) if scales2 is not None else x1.new_zeros(x1.shape, dtype=torch.int8)
    return x1.new_empty(x1.shape, dtype=torch.int8), y2, x1.new_empty(x1.shape)


@torch.library.custom_op(f"atlas::{OP_STATIC}", mutates_args=())
def _static_op(x1: torch.Tensor, x2: torch.Tensor, gamma: torch.Tensor, scales1: torch.Tensor,
               zero_points1: Optional[torch.Tensor], beta: Optional[torch.Tensor], scales2: Optional[torch.Tensor],
               zero_points2: Optional[torch.Tensor], epsilon: float, div_mode: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows, n = _validate_static(x1, x2, gamma, scales1, zero_points1, beta, scales2, zero_points2)
    if scales2 is None:  # CANN reads zero_points2 only with scales2
        zero_points2 = None
    outs = _static_outputs(x1, scales2)
    if not _backend.use_kernel(OP_STATIC, x1.device):
        for o, r in zip(outs, ref.add_rms_norm_quant(x1, x2, gamma, scales1, zero_points1, beta, scales2,
                                                     zero_points2, epsilon, div_mode)):
            o.copy_(r)
        return outs
    round_x, half_gamma = ref.static_rounding(x1.dtype, beta is not None)
    _launch(x1, x2, gamma, rows, n, (*outs, scales1, scales1), dynamic=False, s1=scales1, s2=scales2,
            zp1=zero_points1, zp2=zero_points2, beta=beta, epsilon=epsilon, out2=scales2 is not None,
            has_s1=True, has_s2=scales2 is not None, div_mode=div_mode, round_x=round_x, half_gamma=half_gamma)
    return outs


@_static_op.register_fake
def _(x1, x2, gamma, scales1, zero_points1, beta, scales2, zero_points2, epsilon, div_mode):
    _validate_static(x1, x2, gamma, scales1, zero_points1, beta, scales2, zero_points2)
    return _static_outputs(x1, scales2)


# ---------------------------------------------------------------- torch_npu spellings
def npu_add_rms_norm_dynamic_quant(x1, x2, gamma, *, smooth_scale1=None, smooth_scale2=None, beta=None,
                                   epsilon=1e-6, output_mask=None, y_dtype=None):
    """x = x1 + x2; y = RMSNorm(x) * gamma (+ beta); per-row symmetric int8 quant of y (* smooth_scale1/2).

    x1, x2: [..., N] fp16/bf16 (2 to 8 dims); gamma, smooth_scale1/2, beta: [N], x1's dtype.
    output_mask: None (y1, plus y2 when both smooth scales are given) or [bool, bool].
    y_dtype: None or torch.int8. Returns (y1, y2 [..., N] int8, x_out [..., N] x1's dtype,
    scale1, scale2 [...] fp32); an output not computed is a 0-dim zero tensor (torch_npu: 0-dim, unspecified).
    """
    op = "npu_add_rms_norm_dynamic_quant"
    _int8_dtype(op, "y_dtype", y_dtype)
    out1, out2 = _output_mask(op, output_mask, smooth_scale1, smooth_scale2)
    return call_op(OP_DYNAMIC, torch.ops.atlas.add_rms_norm_dynamic_quant, x1, x2, gamma, smooth_scale1,
                   smooth_scale2, beta, _float_arg(op, "epsilon", epsilon), out1, out2)


def npu_add_rms_norm_quant(x1, x2, gamma, scales1, zero_points1=None, beta=None, scales2=None, zero_points2=None, *,
                           axis=-1, epsilon=1e-06, div_mode=True, dst_type=None):
    """x = x1 + x2; y = RMSNorm(x) * gamma (+ beta); y1 = int8(round(y / scales1 + zero_points1)) (div_mode)
    or int8(round(y * scales1 + zero_points1)); y2 likewise with scales2 / zero_points2.

    x1, x2: fp16/bf16, 1 to 8 dims; gamma (and beta, x1's dtype) give the normalised trailing dims of x1.
    scales1/2: fp32 or bf16, zero_points1/2: int32, bf16 or fp32, all of gamma's shape. axis: -1 only.
    Returns (y1, y2 int8 of x1's shape, x_out = x1 + x2 in x1's dtype); y2 is zeros without scales2
    (torch_npu: unspecified). zero_points1 may be omitted here (torch_npu requires it positionally, None allowed).
    """
    op = "npu_add_rms_norm_quant"
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis != -1:
        raise ValueError(f"{op}: axis must be -1 (the only value torch_npu supports), got {axis!r}")
    if not isinstance(div_mode, (bool, np.bool_)):
        raise TypeError(f"{op}: div_mode must be a bool, got {type(div_mode).__name__} {div_mode!r}"[:300])
    _int8_dtype(op, "dst_type", dst_type)
    return call_op(OP_STATIC, torch.ops.atlas.add_rms_norm_quant, x1, x2, gamma, scales1, zero_points1, beta,
                   scales2, zero_points2, _float_arg(op, "epsilon", epsilon), bool(div_mode))


KERNEL.tuning = tuning(npu_add_rms_norm_dynamic_quant, npu_add_rms_norm_quant)
