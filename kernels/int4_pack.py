"""int4 packing and FRACTAL_NZ relayout (torch_npu.npu_convert_weight_to_int4pack).

Each op is one pass over memory: packing and the NZ relayout happen in the
same kernel. Kernels are persistent: the grid is at most one program per core
and every program loops over its tiles.

Layouts (docs/ops.md §5): ND (..., M, N) -> NZ (..., N1, M1, 16, N0) with
N0 = 32 bytes' worth of elements and zero padding.

Beside this file: int4_pack_validate.py (argument checks, output shapes), int4_pack_spaces.py (config
spaces) and int4_pack_tuning.py (the tuning harnesses).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from . import _backend
from ._validate import call_op, int_arg, int_list
from .autotune import KernelSpec, Target, Variant, pick_config, register_kernel, split_config
from .int4_pack_spaces import _default, _rename, _space
from .int4_pack_tuning import tunings
from .int4_pack_validate import (M0, OP, _check_tile_offsets, _first_bad, _nd_to_nz_shape, _nz_span, _nz_to_nd_shape,
                                 _pack_shape, _unpack_shape)
from .reference import int4_pack as ref


@triton.jit
def _nz_tile(x, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, N0: tl.constexpr):
    """(BLOCK_R, BLOCK_P) -> (G, BLOCK_R, W): the column groups of N0 that NZ stores BLOCK_R*N0 apart."""
    G: tl.constexpr = (BLOCK_P + N0 - 1) // N0
    W: tl.constexpr = BLOCK_P // G
    if G == 1:
        return tl.reshape(x, (1, BLOCK_R, W))
    return tl.permute(tl.reshape(x, (BLOCK_R, G, W)), (1, 0, 2))


@triton.jit
def _nd_tile(x, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr):
    """Inverse of _nz_tile: (G, BLOCK_R, W) -> (BLOCK_R, BLOCK_P)."""
    if x.shape[0] == 1:
        return tl.reshape(x, (BLOCK_R, BLOCK_P))
    return tl.reshape(tl.permute(x, (1, 0, 2)), (BLOCK_R, BLOCK_P))


@triton.jit
def _nz_ptrs(ptr, r0, c0, r_ext, n1, M1, N0: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr):
    """Pointers and mask of the NZ tile whose ND corner is (r0, c0), as (G, BLOCK_R, W) (see _nz_tile).

    r_ext masks rows, n1 column groups. Offsets past the tile's corner are int32.
    """
    G: tl.constexpr = (BLOCK_P + N0 - 1) // N0
    W: tl.constexpr = BLOCK_P // G
    group = M1 * 16 * N0  # elements of one N0-wide column group
    ptr += (c0 // N0).to(tl.int64) * group + r0.to(tl.int64) * N0 + c0 % N0
    g = tl.arange(0, G)[:, None, None]
    r = tl.arange(0, BLOCK_R)[None, :, None]
    w = tl.arange(0, W)[None, None, :]
    mask = (g < n1 - c0 // N0) & (r < r_ext - r0)
    return ptr + g * group + r * N0 + w, mask


@triton.jit
def _merge_pairs(x, bad, BLOCK_R: tl.constexpr, N: tl.constexpr, SHIFT: tl.constexpr):
    """(BLOCK_R, 2N) -> (BLOCK_R, N): column pairs (a, b) become a + (b << SHIFT); bad pairs are ORed."""
    a, b = tl.split(tl.reshape(x, (BLOCK_R, N, 2)))
    bad_a, bad_b = tl.split(tl.reshape(bad, (BLOCK_R, N, 2)))
    return a + (b << SHIFT), bad_a | bad_b


@triton.jit
def _pack_int4_kernel(w_ptr, out_ptr, bad_ptr, R, P, stride_wr, stride_wc, M1, N1,
                      PER: tl.constexpr, NZ: tl.constexpr, N0: tl.constexpr, STRIDED: tl.constexpr,
                      BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr):
    """Pack int32 weight (R, P*PER) into P columns of PER nibbles (int32 or uint8 out).

    Each tile loads one (BLOCK_R, BLOCK_P*PER) block of the weight and merges adjacent
    columns pairwise (log2(PER) times) into (BLOCK_R, BLOCK_P) words. The nibbles are
    merged as digits w + 8 in [0, 15], which need no masking; XOR with 0x8...8 then
    turns each digit into the two's complement nibble ((w + 8) ^ 8 == w & 0xF).
    NZ: write the packed matrix straight into (N1, M1, 16, N0) with zero padding.
    bad_ptr[pid] gets the number of packed words this program saw with a value outside [-8, 7].
    """
    pid = tl.program_id(0)
    if not STRIDED:
        stride_wc = 1  # a compile-time unit stride keeps the tile's rows contiguous in the UB
    r_ext = R
    p_ext = P
    if NZ:
        r_ext = M1 * 16
        p_ext = N1 * N0
    tiles_p = tl.cdiv(p_ext, BLOCK_P)
    n_tiles = tl.cdiv(r_ext, BLOCK_R) * tiles_p
    rows = tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_P)
    w_cols = tl.arange(0, BLOCK_P * PER)
    n_bad = tl.zeros((BLOCK_R, BLOCK_P), dtype=tl.int32)
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        r0 = (tile // tiles_p) * BLOCK_R
        p0 = (tile % tiles_p) * BLOCK_P
        # the tile's corner in int64, offsets inside it in int32
        w_tile = w_ptr + r0.to(tl.int64) * stride_wr + (p0 * PER).to(tl.int64) * stride_wc
        valid = (rows < R - r0)[:, None] & (w_cols < (P - p0) * PER)[None, :]
        w = tl.load(w_tile + rows[:, None] * stride_wr + w_cols[None, :] * stride_wc, mask=valid, other=0)
        lo, hi = tl.split(tl.reshape(w, (BLOCK_R, BLOCK_P * PER // 2, 2)))
        lo += 8
        hi += 8
        word = lo + (hi << 4)
        bad = lo | hi  # a digit outside [0, 15] sets a bit above the low four
        if PER == 8:
            word, bad = _merge_pairs(word, bad, BLOCK_R, BLOCK_P * 2, 8)
            word, bad = _merge_pairs(word, bad, BLOCK_R, BLOCK_P, 16)
            word ^= -0x77777778  # 0x88888888
        else:
            word ^= 0x88
        n_bad += ((bad >> 4) != 0).to(tl.int32)
        # padding (rows >= R, cols >= P) packs the zeros the load filled in: (0 + 8) ^ 8 == 0
        packed = word.to(out_ptr.dtype.element_ty)
        if NZ:
            dst, inside = _nz_ptrs(out_ptr, r0, p0, r_ext, N1, M1, N0, BLOCK_R, BLOCK_P)
            tl.store(dst, _nz_tile(packed, BLOCK_R, BLOCK_P, N0), mask=inside)
        else:
            dst = out_ptr + r0.to(tl.int64) * P + p0 + rows[:, None] * P + cols[None, :]
            tl.store(dst, packed, mask=(rows < R - r0)[:, None] & (cols < P - p0)[None, :])
    tl.store(bad_ptr + pid, tl.sum(tl.sum(n_bad, axis=1), axis=0))


@triton.jit
def _unpack_int4_kernel(p_ptr, out_ptr, R, P, M1, PER: tl.constexpr, NZ: tl.constexpr, N0: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr):
    """Unpack (R, P) packed int32/uint8 (ND or NZ) into int32 (R, P*PER), sign-extended.

    Each tile is stored as one (BLOCK_R, BLOCK_P*PER) block.
    """
    pid = tl.program_id(0)
    tiles_p = tl.cdiv(P, BLOCK_P)
    n_tiles = tl.cdiv(R, BLOCK_R) * tiles_p
    rows = tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_P)
    out_cols = tl.arange(0, BLOCK_P * PER)
    shifts = 28 - 4 * tl.arange(0, PER)
    for tile in range(pid, n_tiles, tl.num_programs(0)):
        r0 = (tile // tiles_p) * BLOCK_R
        p0 = (tile % tiles_p) * BLOCK_P
        valid = (rows < R - r0)[:, None] & (cols < P - p0)[None, :]
        if NZ:
            src, inside = _nz_ptrs(p_ptr, r0, p0, R, tl.cdiv(P, N0), M1, N0, BLOCK_R, BLOCK_P)
            packed = _nd_tile(tl.load(src, mask=inside, other=0), BLOCK_R, BLOCK_P)
        else:
            packed = tl.load(p_ptr + r0.to(tl.int64) * P + p0 + rows[:, None] * P + cols[None, :], mask=valid, other=0)
        # nibble j to the top, then an arithmetic shift back sign-extends it
        nibbles = (packed.to(tl.int32)[:, :, None] << shifts[None, None, :]) >> 28
        out = out_ptr + r0.to(tl.int64) * (P * PER) + p0 * PER + rows[:, None] * (P * PER) + out_cols[None, :]
        tl.store(out, tl.reshape(nibbles, (BLOCK_R, BLOCK_P * PER)),
                 mask=(rows < R - r0)[:, None] & (out_cols < (P - p0) * PER)[None, :])


@triton.jit
def _nd_to_nz_kernel(x_ptr, out_ptr, M, N, stride_b, stride_m, stride_n, M1, N1, n_batch,
                     N0: tl.constexpr, STRIDED: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(B, M, N) strided -> (B, N1, M1, 16, N0) contiguous, zero padded."""
    pid = tl.program_id(0)
    if not STRIDED:
        stride_n = 1  # a compile-time unit stride keeps the tile's rows contiguous in the UB
    tiles_n = tl.cdiv(N1 * N0, BLOCK_N)
    tiles_per_batch = tl.cdiv(M1 * 16, BLOCK_M) * tiles_n
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    for tile in range(pid, n_batch * tiles_per_batch, tl.num_programs(0)):
        b = tile // tiles_per_batch
        t = tile % tiles_per_batch
        r0 = (t // tiles_n) * BLOCK_M
        c0 = (t % tiles_n) * BLOCK_N
        x_tile = x_ptr + b.to(tl.int64) * stride_b + r0.to(tl.int64) * stride_m + c0.to(tl.int64) * stride_n
        valid = (rows < M - r0)[:, None] & (cols < N - c0)[None, :]
        x = tl.load(x_tile + rows[:, None] * stride_m + cols[None, :] * stride_n, mask=valid, other=0)
        dst, inside = _nz_ptrs(out_ptr + b.to(tl.int64) * (N1 * M1 * 16 * N0), r0, c0, M1 * 16, N1, M1, N0,
                               BLOCK_M, BLOCK_N)
        tl.store(dst, _nz_tile(x, BLOCK_M, BLOCK_N, N0), mask=inside)


@triton.jit
def _nz_to_nd_kernel(x_ptr, out_ptr, M, N, M1, N1, n_batch,
                     N0: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(B, N1, M1, 16, N0) -> (B, M, N) contiguous, dropping the padding."""
    pid = tl.program_id(0)
    tiles_n = tl.cdiv(N, BLOCK_N)
    tiles_per_batch = tl.cdiv(M, BLOCK_M) * tiles_n
    rows = tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    for tile in range(pid, n_batch * tiles_per_batch, tl.num_programs(0)):
        b = tile // tiles_per_batch
        t = tile % tiles_per_batch
        r0 = (t // tiles_n) * BLOCK_M
        c0 = (t % tiles_n) * BLOCK_N
        src, inside = _nz_ptrs(x_ptr + b.to(tl.int64) * (N1 * M1 * 16 * N0), r0, c0, M, tl.cdiv(N, N0), M1, N0,
                               BLOCK_M, BLOCK_N)
        x = _nd_tile(tl.load(src, mask=inside, other=0), BLOCK_M, BLOCK_N)
        dst = out_ptr + (b.to(tl.int64) * M + r0) * N + c0 + rows[:, None] * N + cols[None, :]
        tl.store(dst, x, mask=(rows < M - r0)[:, None] & (cols < N - c0)[None, :])


_PACK_VARIANTS = [
    Variant(f"{out}-{layout}" + ("-strided" if strided else ""),
            {"w_ptr": "*i32", "out_ptr": ptr, "bad_ptr": "*i32", "R": "i32", "P": "i32",
             "stride_wr": "i32", "stride_wc": "i32", "M1": "i32", "N1": "i32"},
            {"PER": per, "NZ": nz, "N0": n0, "STRIDED": strided})
    for out, ptr, per, n0 in (("int32", "*i32", 8, 8), ("uint8", "*u8", 2, 32))
    for layout, nz in (("nd", False), ("nz", True))
    for strided in (False, True)
]
_UNPACK_VARIANTS = [
    Variant(v.label, {"p_ptr": v.types["out_ptr"], "out_ptr": "*i32", "R": "i32", "P": "i32", "M1": "i32"},
            {k: c for k, c in v.constexprs.items() if k != "STRIDED"})
    for v in _PACK_VARIANTS if not v.constexprs["STRIDED"]
]
_RELAYOUT_VARIANTS = {
    "nd_to_nz": [Variant(f"{bits}bit" + ("-strided" if strided else ""),
                         {"x_ptr": f"*i{bits}", "out_ptr": f"*i{bits}", "M": "i32", "N": "i32", "stride_b": "i32",
                          "stride_m": "i32", "stride_n": "i32", "M1": "i32", "N1": "i32", "n_batch": "i32"},
                         {"N0": 256 // bits, "STRIDED": strided})
                 for bits in (8, 16, 32) for strided in (False, True)],
    "nz_to_nd": [Variant(f"{bits}bit", {"x_ptr": f"*i{bits}", "out_ptr": f"*i{bits}", "M": "i32", "N": "i32",
                                        "M1": "i32", "N1": "i32", "n_batch": "i32"}, {"N0": 256 // bits})
                 for bits in (8, 16, 32)],
}


def _relayout_spec(name, fn):
    return KernelSpec(
        name=f"int4_pack.{name}", fn=fn, variants=_RELAYOUT_VARIANTS[name],
        space=lambda t, v: [_rename(c, ("BLOCK_M", "BLOCK_N")) for c in _space("relayout")(t, v)],
        default=lambda t, v: _rename(_default("relayout")(t, v), ("BLOCK_M", "BLOCK_N")))


PACK = register_kernel(KernelSpec("int4_pack.pack", _pack_int4_kernel, _PACK_VARIANTS, _space("pack"),
                                  _default("pack")))
UNPACK = register_kernel(KernelSpec("int4_pack.unpack", _unpack_int4_kernel, _UNPACK_VARIANTS, _space("unpack"),
                                    _default("unpack")))
ND_TO_NZ = register_kernel(_relayout_spec("nd_to_nz", _nd_to_nz_kernel))
NZ_TO_ND = register_kernel(_relayout_spec("nz_to_nd", _nz_to_nd_kernel))


# ---------------------------------------------------------------- launchers
_BITVIEW = {1: torch.int8, 2: torch.int16, 4: torch.int32}


def _config(spec: KernelSpec, target: Target, variant: str, shape: dict) -> tuple:
    return split_config(pick_config(spec.name, target, variant, spec.tuning.bucket(shape)))


@torch.library.custom_op("atlas::convert_weight_to_int4pack", mutates_args=())
def _pack_op(weight: torch.Tensor, out_dtype: torch.dtype, layout: str) -> torch.Tensor:
    per, p, n0, m1, n1, shape = _pack_shape(weight, out_dtype, layout)
    device = _backend.device_of(OP, weight=weight)
    if not _backend.use_kernel(OP, device):
        if bool(((weight < -8) | (weight > 7)).any()):
            raise ValueError(f"{OP}: weight values must be in [-8, 7]; {_first_bad(weight)}")
        return ref.convert_weight_to_int4pack(weight, out_dtype, layout)
    rows = weight.shape[0]
    nz = layout == "nz"
    out = torch.empty(shape, dtype=out_dtype, device=device)
    target = _backend.target_for(device)
    strided = weight.stride(1) != 1
    variant = f"{'int32' if out_dtype == torch.int32 else 'uint8'}-{layout}" + ("-strided" if strided else "")
    meta, opts = _config(PACK, target, variant, {"R": rows, "C": weight.shape[1]})
    br, bp = meta["BLOCK_R"], meta["BLOCK_P"]
    _check_tile_offsets(OP, "weight", br * weight.stride(0) + bp * per * weight.stride(1),
                        _nz_span(br, bp, m1, n0) if nz else br * p)
    r_ext, p_ext = (m1 * M0, n1 * n0) if nz else (rows, p)
    grid = _backend.persistent_grid(triton.cdiv(r_ext, meta["BLOCK_R"]) * triton.cdiv(p_ext, meta["BLOCK_P"]), target)
    bad = torch.zeros(grid[0], dtype=torch.int32, device=device)
    if out.numel():
        _backend.launch(PACK.name, _pack_int4_kernel, grid, weight, out, bad, rows, p, weight.stride(0),
                        weight.stride(1), m1, n1, PER=per, NZ=nz, N0=n0, STRIDED=strided, **meta, **opts)
    if bool(bad.any()):  # one host sync: packing is a load-time op
        raise ValueError(f"{OP}: weight values must be in [-8, 7]; {_first_bad(weight)}")
    return out


@_pack_op.register_fake
def _(weight, out_dtype, layout):
    return weight.new_empty(_pack_shape(weight, out_dtype, layout)[-1], dtype=out_dtype)


def convert_weight_to_int4pack(weight: torch.Tensor, *, out_dtype: torch.dtype = torch.int32,
                               layout: str = "nd") -> torch.Tensor:
    """Pack int4 values held in int32 into int32 (8 per word) or uint8 (2 per byte).

    weight: int32 (R, C), values in [-8, 7]; any strides (a transposed view is
        packed along its own last dim, read in place).
    out_dtype: torch.int32 -> (R, C/8), C % 8 == 0; torch.uint8 -> (R, C/2), C % 2 == 0.
        Element 0 sits in the low nibble; negative values keep their two's
        complement nibble (-1 -> 0xF).
    layout: "nd", or "nz" -> FRACTAL_NZ (ceil(P/N0), ceil(R/16), 16, N0) of the
        packed matrix (P packed columns, N0 = 8 for int32, 32 for uint8), zero padded.
    Values outside [-8, 7] raise ValueError (the kernel counts them; one host sync).
    """
    return call_op(OP, torch.ops.atlas.convert_weight_to_int4pack, weight, out_dtype, layout)


@torch.library.custom_op("atlas::unpack_int4", mutates_args=())
def _unpack_op(packed: torch.Tensor, layout: str, shape: Optional[list[int]]) -> torch.Tensor:
    per, n0, m1, rows, p = _unpack_shape(packed, layout, shape)
    device = _backend.device_of("unpack_int4", packed=packed)
    if not _backend.use_kernel("unpack_int4", device):
        return ref.unpack_int4(packed if layout == "nd" else ref.nz_to_nd(packed, rows, p))
    packed = packed.contiguous()
    out = torch.empty((rows, p * per), dtype=torch.int32, device=device)
    target = _backend.target_for(device)
    meta, opts = _config(UNPACK, target, f"{'int32' if packed.dtype == torch.int32 else 'uint8'}-{layout}",
                         {"R": rows, "C": p * per})
    br, bp = meta["BLOCK_R"], meta["BLOCK_P"]
    _check_tile_offsets("unpack_int4", "packed", br * p * per, _nz_span(br, bp, m1, n0) if layout == "nz" else 0)
    n_tiles = triton.cdiv(rows, br) * triton.cdiv(p, bp)
    if out.numel():
        _backend.launch(UNPACK.name, _unpack_int4_kernel, _backend.persistent_grid(n_tiles, target), packed, out,
                        rows, p, m1, PER=per, NZ=layout == "nz", N0=n0, **meta, **opts)
    return out


@_unpack_op.register_fake
def _(packed, layout, shape):
    per, _, _, rows, p = _unpack_shape(packed, layout, shape)
    return packed.new_empty((rows, p * per), dtype=torch.int32)


def unpack_int4(packed: torch.Tensor, *, layout: str = "nd", shape: Optional[tuple] = None) -> torch.Tensor:
    """Inverse of convert_weight_to_int4pack: int32 (R, C) with values in [-8, 7].

    packed: int32 (8 values per word) or uint8 (2 per byte); ND (R, P) or NZ (N1, M1, 16, N0).
    shape: (R, C) of the original weight; for "nz" it drops the padding
        (default: the padded extent). For "nd" it must match if given.
    """
    return call_op("unpack_int4", torch.ops.atlas.unpack_int4, packed, layout,
                   int_list("unpack_int4", "shape", shape, optional=True))


def _bitview(x: torch.Tensor) -> torch.Tensor:
    """The same bytes as a signed integer tensor: the relayout kernels only move bits."""
    return x.view(_BITVIEW[x.element_size()])


@torch.library.custom_op("atlas::nd_to_nz", mutates_args=())
def _nd_to_nz_op(x: torch.Tensor) -> torch.Tensor:
    shape = _nd_to_nz_shape(x)
    device = _backend.device_of("nd_to_nz", x=x)
    if not _backend.use_kernel("nd_to_nz", device):
        return ref.nd_to_nz(x)
    *_, m, n = x.shape
    *_, n1, m1, _, n0 = shape
    out = torch.empty(shape, dtype=x.dtype, device=device)
    if out.numel() == 0:
        return out
    x3 = x.reshape(-1, m, n)  # a view unless the batch dims cannot be merged
    target = _backend.target_for(device)
    strided = x3.stride(2) != 1
    meta, opts = _config(ND_TO_NZ, target, f"{x.element_size() * 8}bit" + ("-strided" if strided else ""),
                         {"B": x3.shape[0], "M": m, "N": n})
    _check_tile_offsets("nd_to_nz", "x", meta["BLOCK_M"] * x3.stride(1) + meta["BLOCK_N"] * x3.stride(2),
                        _nz_span(meta["BLOCK_M"], meta["BLOCK_N"], m1, n0))
    n_tiles = x3.shape[0] * triton.cdiv(m1 * M0, meta["BLOCK_M"]) * triton.cdiv(n1 * n0, meta["BLOCK_N"])
    if out.numel():
        _backend.launch(ND_TO_NZ.name, _nd_to_nz_kernel, _backend.persistent_grid(n_tiles, target), _bitview(x3),
                        _bitview(out), m, n, x3.stride(0), x3.stride(1), x3.stride(2), m1, n1, x3.shape[0],
                        N0=n0, STRIDED=strided, **meta, **opts)
    return out


@_nd_to_nz_op.register_fake
def _(x):
    return x.new_empty(_nd_to_nz_shape(x))


def nd_to_nz(x: torch.Tensor) -> torch.Tensor:
    """FRACTAL_NZ relayout: (..., M, N) -> (..., ceil(N/N0), ceil(M/16), 16, N0), zero padded.

    x: int8, uint8, fp16, bf16 or int32 (packed int4), any strides on the last two dims.
    N0 is 32 bytes' worth of elements: int8/uint8 32, fp16/bf16 16, int32 8.
    """
    return call_op("nd_to_nz", torch.ops.atlas.nd_to_nz, x)


@torch.library.custom_op("atlas::nz_to_nd", mutates_args=())
def _nz_to_nd_op(x: torch.Tensor, shape: Optional[list[int]]) -> torch.Tensor:
    out_shape = _nz_to_nd_shape(x, shape)
    *batch, m, n = out_shape
    device = _backend.device_of("nz_to_nd", x=x)
    if not _backend.use_kernel("nz_to_nd", device):
        return ref.nz_to_nd(x, m, n)
    *_, n1, m1, _, n0 = x.shape
    x = x.contiguous()
    n_batch = math.prod(batch)
    out = torch.empty(out_shape, dtype=x.dtype, device=device)
    target = _backend.target_for(device)
    meta, opts = _config(NZ_TO_ND, target, f"{x.element_size() * 8}bit", {"B": n_batch, "M": m, "N": n})
    _check_tile_offsets("nz_to_nd", "x", meta["BLOCK_M"] * n, _nz_span(meta["BLOCK_M"], meta["BLOCK_N"], m1, n0))
    n_tiles = n_batch * triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"])
    if out.numel():
        _backend.launch(NZ_TO_ND.name, _nz_to_nd_kernel, _backend.persistent_grid(n_tiles, target), _bitview(x),
                        _bitview(out), m, n, m1, n1, n_batch, N0=n0, **meta, **opts)
    return out


@_nz_to_nd_op.register_fake
def _(x, shape):
    return x.new_empty(_nz_to_nd_shape(x, shape))


def nz_to_nd(x: torch.Tensor, shape: Optional[tuple] = None) -> torch.Tensor:
    """Inverse of nd_to_nz: (..., N1, M1, 16, N0) -> (..., M, N).

    shape: (M, N) of the original last two dims (default: the padded extent).
    """
    return call_op("nz_to_nd", torch.ops.atlas.nz_to_nd, x, int_list("nz_to_nd", "shape", shape, optional=True))


def npu_convert_weight_to_int4pack(weight: torch.Tensor, inner_k_tiles: int = 0) -> torch.Tensor:
    """torch_npu spelling: int32 (R, C) -> int32 (R, C/8), ND. inner_k_tiles (torch_npu's int: a Python or numpy
    integer or a 0-d integer tensor) is accepted and ignored, as in torch_npu."""
    int_arg("npu_convert_weight_to_int4pack", "inner_k_tiles", inner_k_tiles)
    return convert_weight_to_int4pack(weight)


PACK.tuning, UNPACK.tuning, ND_TO_NZ.tuning, NZ_TO_ND.tuning = tunings(
    convert_weight_to_int4pack, unpack_int4, nd_to_nz, nz_to_nd)
