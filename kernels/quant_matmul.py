"""quant_matmul: int8/int4 GEMM with the whole dequant/requant fused into the epilogue (torch_npu.npu_quant_matmul).

One persistent, block-tiled kernel (``_qmm_kernel``): every program loops over
output tiles (batch, m-tile, n-tile); per tile, int8 tiles go through tl.dot
into an int32 accumulator, and the epilogue (``_epilogue``) applies int32 bias,
scale (an int64 quant param is decoded in the kernel), pertoken scale, float
bias, offset with the int9 stage and int8 saturation, and the output cast.
Only the output is written to memory.

Operand formats are constexpr branches of the same kernel:
  A_FORMAT  A_INT8     x1 int8, any strides, batch dims broadcast through stride 0
            A_INT4     x1 int32 (m, k/8), 8 int4 per word, element 0 in bits 0-3
  B_FORMAT  B_ND       x2 int8 (k, n), any strides (a transposed view is read in place)
            B_NZ       x2 int8 FRACTAL_NZ (ceil(n/32), ceil(k/16), 16, 32) from atlas_kernels.nd_to_nz
            B_INT4_N   x2 int32 (k, n/8), packed along n
            B_INT4_K   x2 int32 (k/8, n), packed along k (e.g. the transpose of a contiguous (n, k/8))
            B_SPARSE   x2 = compress_matmul's bitmap-sparse weight (mask at b_ptr, nonzeros at bv_ptr, row offsets
                       at bo_ptr), decoded per tile in the prologue (matmul_compress_dequant)

Extension point: a new B-operand format (e.g. a decompressing weight loader)
is one more B_* constant and one more branch in ``_load_b_tile``, which must
return the (BLOCK_K, BLOCK_N) int8 tile of x2 rows k0.., columns n0..
(zero outside k < K, n < N); the K loop, the tiling and ``_epilogue`` stay as
they are. A new epilogue (e.g. a different scale encoding) is one more
SCALE_* branch in ``_load_scale``.

Configs: Ascend tiles are whole 16x32 int8 fractals fitting L0A/L0B (ping-pong), L0C (int32 acc), L1 and
the UB that bishengir plans for the epilogue and for any decoder that runs in the vector unit (``_ascend_ub``);
decode (m <= 16) uses BLOCK_M = 16 so every weight byte is read once. CUDA defaults come from the cuda check
(no spills; wgmma on sm_90).

What keeps a tile's UB small on Ascend (bishengir's numbers, Ascend910B2): every vector the epilogue loads
has unit stride (a runtime stride, even for a (1,) scale, lays the whole epilogue out one element per 32-byte
block: 512 KiB instead of 35 KiB at 128x128), so the launcher passes (n,) scale and offset; the int8-output
clamps are int32 min/max after one float clamp (float min/max add NaN checks on the whole tile: 363 KiB ->
176 KiB); a k-contiguous x2 is loaded as the (BLOCK_N, BLOCK_K) rows it is stored in and transposed for the
dot (free: the cube loads it that way); an NZ x2 tile is one 3-D load of whole column fractals, not a
per-element gather (187 KiB -> 34 KiB). Packed int4 x1 is never unpacked: the dot splits by nibble (see the
K loop); interleaving its nibbles in the vector unit cost about 80 bytes of UB per element (1 MiB at 64x128x128).

Scale precision (matches torch_npu): an int64 scale is the trans_quant_param
form and only its top 19 float bits count; a float32 scale is truncated to
those 19 bits when there is no pertoken scale and the output is fp16 or int8
(torch_npu encodes it with trans_quant_param there); otherwise (pertoken,
bf16 output, bf16 scale) the scale is used at full precision.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from . import _backend
from ._validate import check_choice, check_tensor
from .autotune import KernelSpec, Target, Variant, pick_config, register_kernel, split_config
from .reference import quant_matmul as ref

OP = "quant_matmul"

# Mode constants: tl.constexpr so the kernels may read them; Python code uses their .value
A_INT8 = tl.constexpr(0)
A_INT4 = tl.constexpr(1)
B_ND = tl.constexpr(0)
B_NZ = tl.constexpr(1)
B_INT4_N = tl.constexpr(2)
B_INT4_K = tl.constexpr(3)
B_SPARSE = tl.constexpr(4)
SPARSE_CHUNK = tl.constexpr(128)  # B_SPARSE: columns per row offset; BLOCK_N is a multiple of it
SCALE_NONE = tl.constexpr(0)
SCALE_I64 = tl.constexpr(1)
SCALE_F32_TRUNC = tl.constexpr(2)
SCALE_F32 = tl.constexpr(3)
SCALE_BF16 = tl.constexpr(4)
OFFSET_NONE = tl.constexpr(0)
OFFSET_TENSOR = tl.constexpr(1)
OFFSET_FROM_SCALE = tl.constexpr(2)
BIAS_NONE = tl.constexpr(0)
BIAS_INT = tl.constexpr(1)
BIAS_FLOAT = tl.constexpr(2)

NZ_M0, NZ_N0 = 16, 32  # int8 FRACTAL_NZ: 16 rows (k) x 32 columns (n) per fractal
MAX_DIMS = 6


# ---------------------------------------------------------------- kernel
@triton.jit
def _nibble(words, j: tl.constexpr):
    """Signed int4 number j of each int32 word, as int8."""
    return ((words << (28 - 4 * j)) >> 28).to(tl.int8)


@triton.jit
def _unpack8(words, R: tl.constexpr, C: tl.constexpr):
    """(R, C) int32 words -> (R, 8*C) int8 with element 8c + j = nibble j of word c (no memory traffic)."""
    shifts = 28 - 4 * tl.arange(0, 8)
    return tl.reshape(((words[:, :, None] << shifts[None, None, :]) >> 28).to(tl.int8), (R, 8 * C))


@triton.jit
def _load_a_tile(a_base, rm, k0, M, K, sam, sak, BLOCK_K: tl.constexpr):
    """(BLOCK_M, BLOCK_K) int8 tile of x1, zero outside m < M, k < K."""
    rk = k0 + tl.arange(0, BLOCK_K)
    mask = (rm < M)[:, None] & (rk < K)[None, :]
    return tl.load(a_base + rm[:, None] * sam + rk[None, :] * sak, mask=mask, other=0)


@triton.jit
def _load_int4_n_rows(b_base, rk, n0, K, N, sbk, sbn, BLOCK_N: tl.constexpr):
    """(len(rk), BLOCK_N) int8 rows rk of an x2 packed along n (int32 (k, n/8)), zero outside k < K, n < N."""
    rw = n0 // 8 + tl.arange(0, BLOCK_N // 8)
    mask = (rk < K)[:, None] & (rw < N // 8)[None, :]
    words = tl.load(b_base + rk[:, None] * sbk + rw[None, :] * sbn, mask=mask, other=0)
    return _unpack8(words, rk.shape[0], BLOCK_N // 8)


@triton.jit
def _load_b_tile(b_base, bv_ptr, bo_ptr, k0, n0, K, N, sbk, sbn, nz_k1, B_FORMAT: tl.constexpr, B_K_UNIT: tl.constexpr,
                 BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """(BLOCK_K, BLOCK_N) int8 tile of x2 (rows k0.., columns n0..), zero outside k < K, n < N.

    B_INT4_K is the exception: it returns the (BLOCK_K/8, BLOCK_N) packed words, split by nibble in the K loop
    (B_INT4_N's rows come from ``_load_int4_n_rows`` there).
    B_SPARSE: b_base holds the nonzero mask of x2, uint8 (K, sbk), bit j of byte q of row r = x2[r, 8q + j] != 0;
    bv_ptr the nonzeros in row-major order; bo_ptr int32 (K, sbk / (SPARSE_CHUNK/8)), the index in bv_ptr of
    row r's first nonzero at column >= c * SPARSE_CHUNK. Only nonzeros are loaded (masked gather).
    """
    if B_FORMAT == B_SPARSE:
        rk = k0 + tl.arange(0, BLOCK_K)
        rq = n0 // 8 + tl.arange(0, BLOCK_N // 8)
        k_in = rk < K
        mbytes = tl.load(b_base + rk[:, None] * sbk + rq[None, :], mask=k_in[:, None] & (rq < sbk)[None, :], other=0)
        bits = (mbytes.to(tl.int32)[:, :, None] >> tl.arange(0, 8)[None, None, :]) & 1
        bits = tl.reshape(bits, (BLOCK_K, BLOCK_N))  # column 8q + j = bit j of byte q
        # row-major values: the nonzeros of row r left of column n0 + c follow offset[r, n0 / SPARSE_CHUNK]
        first = tl.load(bo_ptr + rk * (sbk // (SPARSE_CHUNK // 8)) + n0 // SPARSE_CHUNK, mask=k_in, other=0)
        idx = first[:, None] + tl.cumsum(bits, axis=1) - bits
        return tl.load(bv_ptr + idx, mask=bits != 0, other=0)
    elif B_FORMAT == B_INT4_K:
        rw = k0 // 8 + tl.arange(0, BLOCK_K // 8)
        rn = n0 + tl.arange(0, BLOCK_N)
        mask = (rw < K // 8)[:, None] & (rn < N)[None, :]
        return tl.load(b_base + rw[:, None] * sbk + rn[None, :] * sbn, mask=mask, other=0)
    elif B_FORMAT == B_NZ:
        # column fractal f of x2 holds columns 32f..32f+31 of all k1*16 rows, row-major: a (BLOCK_K, 32) slab
        # is 2-D strided, so the tile is one 3-D load (k, fractal, column in fractal) and a free reshape
        rk = k0 + tl.arange(0, BLOCK_K)
        rf = n0 // 32 + tl.arange(0, BLOCK_N // 32)
        offs = rk[:, None, None] * 32 + rf[None, :, None] * (nz_k1 * 512) + tl.arange(0, 32)[None, None, :]
        mask = (rk < K)[:, None, None] & (rf < tl.cdiv(N, 32))[None, :, None]
        return tl.reshape(tl.load(b_base + offs, mask=mask, other=0), (BLOCK_K, BLOCK_N))
    elif B_K_UNIT:  # k-contiguous x2: load it as (BLOCK_N, BLOCK_K) rows, as it lies in memory
        rk = k0 + tl.arange(0, BLOCK_K)
        rn = n0 + tl.arange(0, BLOCK_N)
        mask = (rn < N)[:, None] & (rk < K)[None, :]
        return tl.trans(tl.load(b_base + rn[:, None] * sbn + rk[None, :] * sbk, mask=mask, other=0))
    else:
        rk = k0 + tl.arange(0, BLOCK_K)
        rn = n0 + tl.arange(0, BLOCK_N)
        mask = (rk < K)[:, None] & (rn < N)[None, :]
        return tl.load(b_base + rk[:, None] * sbk + rn[None, :] * sbn, mask=mask, other=0)


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
            # clamp first keeps rint in its exact range (NaN goes to -257 like a clamp would); the rest is int32:
            # a float min/max costs Ascend's vector unit NaN checks on the whole tile
            t = _rint(tl.where(v > -257.0, tl.where(v < 256.0, v, 256.0), -257.0)).to(tl.int32)
            t = tl.minimum(tl.maximum(t, -256), 255)
            if OFFSET_MODE == OFFSET_TENSOR:
                off = tl.load(offset_ptr + rn, mask=n_mask, other=0)
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
def _qmm_kernel(a_ptr, b_ptr, out_ptr, scale_ptr, offset_ptr, pertoken_ptr, bias_ptr, bv_ptr, bo_ptr,
                M, N, K, n_batch, D1, D2, D3,
                sa0, sa1, sa2, sa3, sam, sak, sb0, sb1, sb2, sb3, sbk, sbn,
                s_bias, nz_k1,
                A_FORMAT: tl.constexpr, B_FORMAT: tl.constexpr, SCALE_MODE: tl.constexpr,
                OFFSET_MODE: tl.constexpr, HAS_PERTOKEN: tl.constexpr, BIAS_MODE: tl.constexpr,
                REQUANT: tl.constexpr, A_K_UNIT: tl.constexpr, B_K_UNIT: tl.constexpr, B_N_UNIT: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                GROUP_M: tl.constexpr):
    """out[b] (M, N) = epilogue(x1[b] @ x2[b]) for the flattened broadcast batch b < n_batch = D0*D1*D2*D3.

    Batch strides sa*/sb* are 0 along broadcast dims; s_bias is bias's stride per flattened batch (0 for 1-D bias).
    Offsets inside one matrix are 32-bit (the launcher checks); batch offsets are 64-bit.
    *_UNIT: that stride is 1, made a compile-time constant so loads vectorize along it.
    """
    if A_K_UNIT:
        sak = 1
    if B_K_UNIT:
        sbk = 1
    if B_N_UNIT:
        sbn = 1
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_batch = tiles_m * tiles_n
    per_group = GROUP_M * tiles_n
    for tile in range(pid, n_batch * per_batch, tl.num_programs(0)):
        b = tile // per_batch
        t = tile % per_batch
        first_m = (t // per_group) * GROUP_M
        group = tl.minimum(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (t % per_group) % group
        pid_n = (t % per_group) // group
        i3 = (b % D3).to(tl.int64)
        i2 = ((b // D3) % D2).to(tl.int64)
        i1 = ((b // (D3 * D2)) % D1).to(tl.int64)
        i0 = (b // (D3 * D2 * D1)).to(tl.int64)
        a_base = a_ptr + i0 * sa0 + i1 * sa1 + i2 * sa2 + i3 * sa3
        b_base = b_ptr + i0 * sb0 + i1 * sb1 + i2 * sb2 + i3 * sb3
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        n0 = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            if A_FORMAT == A_INT4:
                # x1 packed along k: nibble j of its word w is element k0 + 8w + j, and the order of K inside a
                # dot does not matter, so the dot splits by nibble against x2's rows k0 + 8w + j (no interleave)
                rw = k0 // 8 + tl.arange(0, BLOCK_K // 8)
                a_mask = (rm < M)[:, None] & (rw < K // 8)[None, :]
                aw = tl.load(a_base + rm[:, None] * sam + rw[None, :] * sak, mask=a_mask, other=0)
                if B_FORMAT == B_INT4_K:  # x2's word w holds the same k as x1's
                    bw = _load_b_tile(b_base, bv_ptr, bo_ptr, k0, n0, K, N, sbk, sbn, nz_k1, B_FORMAT, B_K_UNIT,
                                      BLOCK_K, BLOCK_N)
                for j in tl.static_range(8):
                    if B_FORMAT == B_INT4_K:
                        bj = _nibble(bw, j)
                    else:
                        bj = _load_int4_n_rows(b_base, k0 + 8 * tl.arange(0, BLOCK_K // 8) + j, n0, K, N, sbk, sbn,
                                               BLOCK_N)
                    acc = tl.dot(_nibble(aw, j), bj, acc)
            else:
                a = _load_a_tile(a_base, rm, k0, M, K, sam, sak, BLOCK_K)
                bt = _load_b_tile(b_base, bv_ptr, bo_ptr, k0, n0, K, N, sbk, sbn, nz_k1, B_FORMAT, B_K_UNIT,
                                  BLOCK_K, BLOCK_N)
                acc = tl.dot(a, bt, acc)
        rn = n0 + tl.arange(0, BLOCK_N)
        _epilogue(acc, rm, rn, M, N, out_ptr + b.to(tl.int64) * M * N, bias_ptr + b.to(tl.int64) * s_bias,
                  scale_ptr, offset_ptr, pertoken_ptr,
                  SCALE_MODE, OFFSET_MODE, HAS_PERTOKEN, BIAS_MODE, REQUANT)


# ---------------------------------------------------------------- config spaces
# A config is BLOCK_M x BLOCK_N output tile, BLOCK_K deep, GROUP_M m-tiles per L2 group.
# Ascend (A2/A3 cube): A tile (BLOCK_M, BLOCK_K) int8 and B tile (BLOCK_K, BLOCK_N) int8 each fit half of
# L0A / L0B (ping-pong), the int32 accumulator fits L0C, double-buffered A+B fit L1, the fp32 epilogue tile
# fits half the UB; tiles are whole 16x32 int8 fractals (BLOCK_M % 16, BLOCK_K % 32, BLOCK_N % 32).
# CUDA: stages x (A + B) bytes fit shared memory; the int32 accumulator stays under ~128 registers per thread.

def _is_decode(variant: Variant) -> bool:
    return variant.label.endswith("-decode")


def _min_block_k(target: Target, variant: Variant) -> int:
    if variant.constexprs["A_FORMAT"] == A_INT4.value:  # its dots are BLOCK_K/8 deep: at least one int8 fractal
        return 256                                     # (Ascend) / one int8 mma k-step (CUDA)
    if target.is_ascend and variant.constexprs["B_FORMAT"] != B_SPARSE.value:
        return 64  # only the sparse decoder, in the vector unit, needs a k-step as shallow as one fractal
    return 32


def _ascend_ub(variant: Variant, bm: int, bn: int, bk: int) -> int:
    """UB bytes bishengir plans for a tile, fitted to its numbers on Ascend910B2 (multi-buffering off where it
    retries without it). The epilogue costs per output element (a 16-row tile costs like 64 rows: each vector
    core gets 8 padded rows); ND and NZ loads go to L1 and cost no UB; the int4 and sparse decoders run in the
    vector unit and cost per decoded element."""
    c = variant.constexprs
    out = max(bm, 64) * bn
    epilogue = 11 * out if c["REQUANT"] else 2 * out if c["SCALE_MODE"] == SCALE_NONE.value else 5 * out // 2
    b_fmt = c["B_FORMAT"]
    if b_fmt == B_INT4_N.value:  # x2's (BLOCK_K/8, BLOCK_N) rows of one nibble, unpacked along n
        return epilogue + 36 * bn * bk // 8
    if b_fmt == B_INT4_K.value:
        return epilogue + 17 * (bm + bn) * bk // 8
    if b_fmt == B_SPARSE.value:  # mask bits, their cumsum, gather indices and values per weight element
        return epilogue + 21 * bk * bn
    return epilogue


def _ascend_fits(target: Target, variant: Variant, bm: int, bn: int, bk: int) -> bool:
    # NZ x2 is staged in L1 as whole column fractals: bk * (1024 + 2 bm) bytes planned on Ascend910B2
    l1 = bk * (1024 + 2 * bm) if variant.constexprs["B_FORMAT"] == B_NZ.value else 2 * (bm * bk + bk * bn)
    return (bm * bk * 2 <= target.l0a_bytes and bk * bn * 2 <= target.l0b_bytes and bm * bn * 4 <= target.l0c_bytes
            and l1 <= target.l1_bytes and _ascend_ub(variant, bm, bn, bk) <= target.ub_bytes)


def _sparse_fits(target: Target, bm: int, bn: int, bk: int, warps: int = 4) -> bool:
    """B_SPARSE: BLOCK_N is a multiple of SPARSE_CHUNK. On CUDA the decode (mask bits, cumsum, gather indices)
    lives in registers next to the accumulator: small enough tiles stay out of spills."""
    if bn % SPARSE_CHUNK.value or bk > 128:
        return False
    if target.backend == "cuda":
        return bk * bn // (32 * warps) <= 32 and bm * bn // (32 * warps) <= 64
    return True


def _space(target: Target, variant: Variant) -> list:
    configs = []
    sparse = variant.constexprs["B_FORMAT"] == B_SPARSE.value
    min_bk = _min_block_k(target, variant)
    for bm in (16, 32, 64, 128, 256):
        for bn in (32, 64, 128, 256):
            for bk in (32, 64, 128, 256, 512):
                if bk < min_bk:
                    continue
                if sparse and not _sparse_fits(target, bm, bn, bk, 8 if target.backend == "cuda" else 4):
                    continue
                if target.is_ascend:
                    if _ascend_fits(target, variant, bm, bn, bk):
                        configs.append({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8})
                elif target.backend == "cuda":
                    # wgmma (sm_90, 64-row tiles) failed on an unpacked int4 tile with BLOCK_N = 32 ("Illegal
                    # shared layout")
                    if (variant.constexprs["B_FORMAT"] == B_INT4_N.value and target.name == "sm_90" and bm >= 64
                            and bn < 64):
                        continue
                    for warps in ((8,) if sparse else (4, 8)):
                        for stages in (2, 3, 4):
                            smem = stages * (bm * bk + bk * bn)
                            acc_regs = bm * bn // (32 * warps)
                            if smem <= target.smem_bytes and acc_regs <= 128 and bm * bn >= 32 * warps * 4:
                                configs.append({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8,
                                                "num_warps": warps, "num_stages": stages})
                else:
                    configs.append({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8})
    return configs


# Ascend (prefill, decode) tiles per B format, BLOCK_M x BLOCK_N x BLOCK_K. Every epilogue fits the ND tiles
# (an int8 output needs the most UB: 11 bytes per output element). The int4 and sparse decoders run in the
# vector unit, so their tiles are as large as the UB allows.
_ASCEND_DEFAULT = {
    B_ND.value: ((128, 128, 256), (16, 256, 128)),
    B_NZ.value: ((128, 128, 256), (16, 256, 128)),
    B_INT4_K.value: ((128, 128, 256), (16, 128, 256)),
    B_INT4_N.value: ((128, 128, 256), (16, 128, 256)),
    B_SPARSE.value: ((128, 128, 32), (16, 128, 64)),
}


def _default(target: Target, variant: Variant) -> dict:
    """Derived defaults. Decode variants (m <= 16): BLOCK_M covers all rows, so each weight byte is read once,
    and a wide BLOCK_N keeps x1's re-reads (once per n-tile) small against the weight."""
    decode = _is_decode(variant)
    min_bk = _min_block_k(target, variant)
    if target.backend == "cpu":  # interpreter: large tiles mean fewer numpy round trips
        return {"BLOCK_M": 16 if decode else 64, "BLOCK_N": 256 if decode else 128, "BLOCK_K": max(min_bk, 128),
                "GROUP_M": 8}
    if variant.constexprs["B_FORMAT"] == B_SPARSE.value and target.backend == "cuda":
        # from the cuda check: no spills with the decode's bits/cumsum/indices next to the accumulator
        return {"BLOCK_M": 16 if decode else 32, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
                "num_stages": 2}
    if target.is_ascend:  # verified by the ascend check on Ascend910B2 and Ascend910_9391 (UB bytes planned there)
        bm, bn, bk = _ASCEND_DEFAULT[variant.constexprs["B_FORMAT"]][decode]
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}
    # CUDA: chosen from the cuda check (no spills; wgmma on sm_90 where Triton can use it).
    if variant.constexprs["A_FORMAT"] == A_INT4.value:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 256, "GROUP_M": 8, "num_warps": 4, "num_stages": 2}
    if target.name == "sm_90":  # wgmma needs a 64-row warpgroup tile; for decode the extra rows are masked
        return {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    return {"BLOCK_M": 16 if decode else 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
            "num_stages": 3}


_ARG_TYPES = {"M": "i32", "N": "i32", "K": "i32", "n_batch": "i32", "D1": "i32", "D2": "i32", "D3": "i32",
              **{f"s{x}{i}": "i32" for x in "ab" for i in range(4)},
              "sam": "i32", "sak": "i32", "sbk": "i32", "sbn": "i32", "s_bias": "i32", "nz_k1": "i32"}
_PTR = {torch.int8: "*i8", torch.int32: "*i32", torch.int64: "*i64", torch.float16: "*fp16",
        torch.bfloat16: "*bf16", torch.float32: "*fp32"}


def _variant(label, a_fmt, b_fmt, out, scale, bias=None, offset=False, pertoken=False) -> Variant:
    """A typical launch: x1 contiguous; x2 (k, n) row-major, (k/8, n) a transposed view for B_INT4_K,
    or k-contiguous for labels with '-t' (a transposed int8 x2)."""
    x = torch.int32 if a_fmt is A_INT4 else torch.int8
    scale_mode = (SCALE_NONE if out == torch.int32 else SCALE_I64 if scale == torch.int64
                  else SCALE_BF16 if scale == torch.bfloat16
                  else SCALE_F32_TRUNC if ref.scale_is_truncated(scale, pertoken, out) else SCALE_F32)
    offset_mode = (OFFSET_TENSOR if offset else OFFSET_FROM_SCALE if out == torch.int8 and scale == torch.int64
                   else OFFSET_NONE)
    types = {"a_ptr": _PTR[x], "b_ptr": _PTR[x], "out_ptr": _PTR[out], "scale_ptr": _PTR[scale],
             "offset_ptr": "*fp32", "pertoken_ptr": "*fp32", "bias_ptr": _PTR[bias or torch.int32],
             "bv_ptr": "*i8", "bo_ptr": "*i32", **_ARG_TYPES}
    bias_mode = BIAS_NONE if bias is None else BIAS_INT if bias == torch.int32 else BIAS_FLOAT
    modes = {"A_FORMAT": a_fmt, "B_FORMAT": b_fmt, "SCALE_MODE": scale_mode, "OFFSET_MODE": offset_mode,
             "BIAS_MODE": bias_mode}
    k_unit = b_fmt is B_INT4_K or "-t" in label
    return Variant(label, types, {**{k: v.value for k, v in modes.items()}, "HAS_PERTOKEN": pertoken,
                                  "REQUANT": out == torch.int8, "A_K_UNIT": True, "B_K_UNIT": k_unit,
                                  "B_N_UNIT": b_fmt is not B_NZ and not k_unit})


# The launcher picks its config by operand format ("i8-nd", "i8-nd-t" for a k-contiguous x2, "i8-nz", "i4-n",
# "i4-k", each with "-decode" for m <= 16); the other variants cover every epilogue branch in the checks and
# share i8-nd's config.
_VARIANTS = []
for _fmt, _a, _b, _out, _scale, _kw in (
        ("i8-nd", A_INT8, B_ND, torch.float16, torch.int64, {"bias": torch.int32}),
        ("i8-nd-t", A_INT8, B_ND, torch.int8, torch.float32, {"bias": torch.int32, "offset": True}),
        ("i8-nz", A_INT8, B_NZ, torch.float16, torch.float32, {"bias": torch.int32}),
        ("i4-n", A_INT4, B_INT4_N, torch.float16, torch.int64, {"bias": torch.int32}),
        ("i4-k", A_INT4, B_INT4_K, torch.bfloat16, torch.float32, {"pertoken": True})):
    _VARIANTS.append(_variant(_fmt, _a, _b, _out, _scale, **_kw))
    _VARIANTS.append(_variant(f"{_fmt}-decode", _a, _b, _out, _scale, **_kw))
_VARIANTS += [
    _variant("i8-nd-int8out-offset", A_INT8, B_ND, torch.int8, torch.float32, bias=torch.int32, offset=True),
    _variant("i8-nd-int8out-i64", A_INT8, B_ND, torch.int8, torch.int64),
    _variant("i8-nd-int32out", A_INT8, B_ND, torch.int32, torch.float32, bias=torch.int32),
    _variant("i8-nd-bf16-pertoken", A_INT8, B_ND, torch.bfloat16, torch.bfloat16, bias=torch.bfloat16, pertoken=True),
    _variant("i8-nd-bf16-f32bias", A_INT8, B_ND, torch.bfloat16, torch.float32, bias=torch.float32),
    _variant("i8-nd-fp16-pertoken", A_INT8, B_ND, torch.float16, torch.float32, bias=torch.float16, pertoken=True),
]


def _sparse_variant(label, out) -> Variant:
    """matmul_compress_dequant's launches: B_SPARSE x2 (uint8 mask), fp32 scale at full precision, int32 bias."""
    v = _variant(label, A_INT8, B_SPARSE, out, torch.float32, bias=torch.int32)
    scale_mode = SCALE_NONE if out == torch.int32 else SCALE_F32
    return Variant(label, {**v.types, "b_ptr": "*u8"},
                   {**v.constexprs, "SCALE_MODE": scale_mode.value, "B_K_UNIT": False, "B_N_UNIT": False})


_VARIANTS += [_sparse_variant("sparse", torch.float16), _sparse_variant("sparse-decode", torch.float16),
              _sparse_variant("sparse-int32", torch.int32)]

GEMM = register_kernel(KernelSpec("quant_matmul.gemm", _qmm_kernel, _VARIANTS, _space, _default, uses_dot=True))


# ---------------------------------------------------------------- validation (shared by the kernel path and the fake)
_OUT_DTYPES = (torch.int8, torch.float16, torch.bfloat16, torch.int32)
_FORMAT_LABEL = {(A_INT8.value, B_ND.value): "i8-nd", (A_INT8.value, B_NZ.value): "i8-nz",
                 (A_INT4.value, B_INT4_N.value): "i4-n", (A_INT4.value, B_INT4_K.value): "i4-k"}


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _allowed(int4: bool, out: torch.dtype, pertoken: bool) -> tuple:
    """(scale dtypes, bias dtypes, pertoken allowed, pertoken required) of the valid A2/A3 dtype rows."""
    i64, f32, bf16, f16, i32 = torch.int64, torch.float32, torch.bfloat16, torch.float16, torch.int32
    if int4:
        if out == f16:
            return ((f32,) if pertoken else (i64, f32)), (i32,), True, False
        return (f32,), (i32,), True, True  # bf16
    if out == torch.int8:
        return (i64, f32), (i32,), False, False
    if out == f16:
        return ((f32,), (i32, f16, f32), True, False) if pertoken else ((i64, f32), (i32,), True, False)
    if out == bf16:
        return (f32, bf16), (i32, bf16, f32), True, False
    return (f32, bf16), (i32,), False, False  # int32


def _check_vector(name: str, t: torch.Tensor, lengths: tuple, what: str):
    if t.dim() != 1 or t.shape[0] not in lengths:
        want = " or ".join(f"({n},)" for n in dict.fromkeys(lengths))
        raise ValueError(f"{OP}: {name} must have shape {want} ({what}), got {tuple(t.shape)}")


def _plan(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape) -> dict:
    """Validate every argument; return shapes and kernel modes. Errors name the argument."""
    check_tensor(OP, "x1", x1, dtypes=(torch.int8, torch.int32))
    check_tensor(OP, "x2", x2, dtypes=(torch.int8, torch.int32))
    if x2.dtype != x1.dtype:
        raise TypeError(f"{OP}: x2 must have the dtype of x1 (int8 x int8, or int32 x int32 for packed int4), "
                        f"got x1 {_name(x1.dtype)} and x2 {_name(x2.dtype)}")
    check_choice(OP, "x2_layout", x2_layout, ("nd", "nz"))
    out = torch.int8 if output_dtype is None else output_dtype
    if out not in _OUT_DTYPES:
        raise TypeError(f"{OP}: output_dtype must be None (int8), int8, float16, bfloat16 or int32, got {output_dtype}")
    int4 = x1.dtype == torch.int32
    batch: tuple = ()
    if int4:
        check_tensor(OP, "x1", x1, ndim=2)
        check_tensor(OP, "x2", x2, ndim=2)
        if x2_layout != "nd":
            raise ValueError(f"{OP}: x2_layout='nz' takes an int8 x2; packed int4 x2 must be ND")
        if out not in (torch.float16, torch.bfloat16):
            raise TypeError(f"{OP}: output_dtype must be float16 or bfloat16 for packed int4 inputs, got {_name(out)}")
        m, k = x1.shape[0], 8 * x1.shape[1]
        if x2.shape[0] == k and k:
            b_fmt, n = B_INT4_N, 8 * x2.shape[1]
        elif 8 * x2.shape[0] == k:
            b_fmt, n = B_INT4_K, x2.shape[1]
        else:
            raise ValueError(f"{OP}: K mismatch: x1 {tuple(x1.shape)} packs k = {k}, so x2 must be ({k}, n/8) or "
                             f"({k // 8}, n), got {tuple(x2.shape)}")
    else:
        check_tensor(OP, "x1", x1, ndim=(2, MAX_DIMS))
        m, k = x1.shape[-2:]
        if x2_layout == "nz":
            check_tensor(OP, "x2", x2, ndim=4)
            n1, k1, m0, n0 = x2.shape
            if (m0, n0) != (NZ_M0, NZ_N0):
                raise ValueError(f"{OP}: an NZ x2 must have shape (ceil(n/32), ceil(k/16), 16, 32), got {tuple(x2.shape)}")
            if k1 != math.ceil(k / NZ_M0):
                raise ValueError(f"{OP}: K mismatch: x1's last dim is {k}, but NZ x2 {tuple(x2.shape)} holds "
                                 f"k <= {k1 * NZ_M0} in {k1} row fractals (needs ceil(k/16) = {math.ceil(k / NZ_M0)})")
            n = n1 * NZ_N0 if x2_shape is None else x2_shape[1]
            if x2_shape is not None and (len(x2_shape) != 2 or x2_shape[0] != k or math.ceil(n / NZ_N0) != n1):
                raise ValueError(f"{OP}: x2_shape must be ({k}, n) with ceil(n/32) = {n1} for NZ x2 "
                                 f"{tuple(x2.shape)}, got {tuple(x2_shape)}")
            b_fmt, batch = B_NZ, tuple(x1.shape[:-2])
        else:
            check_tensor(OP, "x2", x2, ndim=(2, MAX_DIMS))
            if x2.shape[-2] != k:
                raise ValueError(f"{OP}: K mismatch: x1 {tuple(x1.shape)} has k = {k} in its last dim but x2 "
                                 f"{tuple(x2.shape)} has {x2.shape[-2]} in its second-to-last dim")
            n = x2.shape[-1]
            try:
                batch = tuple(torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2]))
            except RuntimeError:
                raise ValueError(f"{OP}: batch dims of x1 {tuple(x1.shape[:-2])} and x2 {tuple(x2.shape[:-2])} "
                                 f"do not broadcast (each pair must be equal or 1)") from None
            b_fmt = B_ND
    a_fmt = A_INT4 if int4 else A_INT8
    pertoken = pertoken_scale is not None
    scale_dtypes, bias_dtypes, pt_ok, pt_needed = _allowed(int4, out, pertoken)
    rows = f"{'int4' if int4 else 'int8'} inputs with {_name(out)} output"
    check_tensor(OP, "scale", scale, dtypes=(torch.int64, torch.float32, torch.bfloat16), ndim=1)
    if scale.dtype not in scale_dtypes:
        raise TypeError(f"{OP}: scale must have dtype {', '.join(map(_name, scale_dtypes))} for {rows}"
                        f"{' and pertoken_scale' if pertoken else ''}, got {_name(scale.dtype)}")
    _check_vector("scale", scale, (1, n), f"1 or n = {n}")
    if offset is not None:
        if out != torch.int8:
            raise ValueError(f"{OP}: offset is only supported with int8 output, got output_dtype={_name(out)}")
        check_tensor(OP, "offset", offset, dtypes=(torch.float32,))
        _check_vector("offset", offset, (1, n), f"1 or n = {n}")
    if pertoken:
        if not pt_ok:
            raise ValueError(f"{OP}: pertoken_scale is not supported with {_name(out)} output")
        check_tensor(OP, "pertoken_scale", pertoken_scale, dtypes=(torch.float32,))
        _check_vector("pertoken_scale", pertoken_scale, (m,), f"m = {m}")
    elif pt_needed:
        raise ValueError(f"{OP}: {rows} needs pertoken_scale")
    out_shape = (*batch, m, n)
    if bias is not None:
        check_tensor(OP, "bias", bias, dtypes=(torch.int32, torch.bfloat16, torch.float16, torch.float32))
        if bias.dtype not in bias_dtypes:
            raise TypeError(f"{OP}: bias must have dtype {', '.join(map(_name, bias_dtypes))} for {rows}"
                            f"{' and pertoken_scale' if pertoken else ''}, got {_name(bias.dtype)}")
        ok = tuple(bias.shape) == (n,) or (len(out_shape) == 3 and bias.dim() == 3
                                            and bias.shape[0] in (1, out_shape[0]) and tuple(bias.shape[1:]) == (1, n))
        if not ok:
            three_d = f" or ({out_shape[0]}, 1, {n})" if len(out_shape) == 3 else ""
            raise ValueError(f"{OP}: bias must have shape ({n},){three_d} (the 3-D form only for a 3-D output), "
                             f"got {tuple(bias.shape)}")
    scale_mode = (SCALE_NONE if out == torch.int32 else SCALE_I64 if scale.dtype == torch.int64
                  else SCALE_BF16 if scale.dtype == torch.bfloat16
                  else SCALE_F32_TRUNC if ref.scale_is_truncated(scale.dtype, pertoken, out) else SCALE_F32)
    offset_mode = (OFFSET_TENSOR if offset is not None
                   else OFFSET_FROM_SCALE if out == torch.int8 and scale.dtype == torch.int64 else OFFSET_NONE)
    bias_mode = BIAS_NONE if bias is None else BIAS_INT if bias.dtype == torch.int32 else BIAS_FLOAT
    modes = {"A_FORMAT": a_fmt, "B_FORMAT": b_fmt, "SCALE_MODE": scale_mode, "OFFSET_MODE": offset_mode,
             "BIAS_MODE": bias_mode}
    return {"m": m, "k": k, "n": n, "batch": batch, "out_shape": out_shape, "out_dtype": out,
            **{key: v.value for key, v in modes.items()}, "HAS_PERTOKEN": pertoken, "REQUANT": out == torch.int8}


# ---------------------------------------------------------------- launcher
_CONSTEXPRS = ("A_FORMAT", "B_FORMAT", "SCALE_MODE", "OFFSET_MODE", "HAS_PERTOKEN", "BIAS_MODE", "REQUANT")


def config_label(plan: dict, b_k_unit: bool) -> str:
    """The registry variant whose config a call uses: operand format, plus '-decode' for m <= 16."""
    label = _FORMAT_LABEL[plan["A_FORMAT"], plan["B_FORMAT"]]
    if plan["B_FORMAT"] == B_ND.value and b_k_unit:
        label += "-t"
    return f"{label}-decode" if plan["m"] <= 16 else label


def _check_32bit(name: str, t: torch.Tensor, dims: int = 2):
    """The kernel indexes inside one matrix with 32-bit offsets."""
    span = sum((size - 1) * abs(stride) for size, stride in zip(t.shape[-dims:], t.stride()[-dims:]))
    if span >= 2**31:
        raise ValueError(f"{OP}: {name} {tuple(t.shape)} spans {span} elements in its last {dims} dims; the kernel "
                         f"indexes one matrix with 32-bit offsets (< 2**31)")


def _batch_strides(t: torch.Tensor, batch: tuple) -> list:
    """4 batch strides of ``t`` expanded to ``batch`` (0 along broadcast and padding dims)."""
    strides = list(t.expand(*batch, *t.shape[-2:]).stride()[:-2]) if batch else []
    return [0] * (4 - len(strides)) + strides


def _per_column(t: torch.Tensor, n: int) -> torch.Tensor:
    """A (1,) or (n,) vector as a contiguous (n,): the kernel loads it with unit stride (on Ascend a runtime
    stride turns the whole epilogue into one element per 32-byte block: 8x the UB)."""
    return t.expand(n).contiguous()


@torch.library.custom_op("atlas::quant_matmul", mutates_args=())
def _quant_matmul_op(x1: torch.Tensor, x2: torch.Tensor, scale: torch.Tensor, offset: Optional[torch.Tensor],
                     pertoken_scale: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                     output_dtype: Optional[torch.dtype], x2_layout: str, x2_shape: Optional[list[int]]) -> torch.Tensor:
    plan = _plan(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape)
    device = _backend.device_of(OP, x1=x1, x2=x2, scale=scale, offset=offset, pertoken_scale=pertoken_scale,
                                bias=bias)
    if not _backend.use_kernel(OP, device):
        return ref.quant_matmul(x1, x2, scale, offset, pertoken_scale, bias, plan["out_dtype"], x2_layout,
                                None if x2_layout == "nd" else (plan["k"], plan["n"]))
    m, n, k, batch = plan["m"], plan["n"], plan["k"], plan["batch"]
    out = torch.empty(plan["out_shape"], dtype=plan["out_dtype"], device=device)
    if out.numel() == 0:
        return out
    sizes = [1] * (4 - len(batch)) + list(batch)
    sa = _batch_strides(x1, batch)
    if plan["B_FORMAT"] == B_NZ.value:
        sb, sbk, sbn, nz_k1 = [0, 0, 0, 0], 0, 0, x2.shape[1]
    else:
        sb, sbk, sbn, nz_k1 = _batch_strides(x2, batch), x2.stride(-2), x2.stride(-1), 0
    s_bias = 0
    if bias is not None:
        bias = bias.contiguous()
        s_bias = n if bias.dim() == 3 and bias.shape[0] != 1 else 0
    if pertoken_scale is not None:
        pertoken_scale = pertoken_scale.contiguous()
    _check_32bit("x1", x1)
    _check_32bit("x2", x2, 4 if plan["B_FORMAT"] == B_NZ.value else 2)
    _check_32bit("out", out)
    units = {"A_K_UNIT": x1.stride(-1) == 1, "B_K_UNIT": sbk == 1 and x2.shape[-2] > 1,
             "B_N_UNIT": sbn == 1 and not (sbk == 1 and x2.shape[-2] > 1)}
    target = _backend.target_for(device)
    meta, opts = split_config(pick_config(GEMM.name, target, config_label(plan, units["B_K_UNIT"])))
    n_tiles = math.prod(batch) * triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"])
    grid = _backend.persistent_grid(n_tiles, target, uses_dot=True)
    _backend.launch(GEMM.name, _qmm_kernel, grid, a_ptr=x1, b_ptr=x2, out_ptr=out, scale_ptr=_per_column(scale, n),
                    offset_ptr=out if offset is None else _per_column(offset, n),
                    pertoken_ptr=out if pertoken_scale is None else pertoken_scale,
                    bias_ptr=out if bias is None else bias, bv_ptr=x2, bo_ptr=x2,
                    M=m, N=n, K=k, n_batch=math.prod(batch), D1=sizes[1], D2=sizes[2], D3=sizes[3],
                    **dict(zip(("sa0", "sa1", "sa2", "sa3"), sa)), sam=x1.stride(-2), sak=x1.stride(-1),
                    **dict(zip(("sb0", "sb1", "sb2", "sb3"), sb)), sbk=sbk, sbn=sbn, s_bias=s_bias, nz_k1=nz_k1,
                    **{c: plan[c] for c in _CONSTEXPRS}, **units, **meta, **opts)
    return out


@_quant_matmul_op.register_fake
def _(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape):
    plan = _plan(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape)
    return x1.new_empty(plan["out_shape"], dtype=plan["out_dtype"])


def quant_matmul(x1: torch.Tensor, x2: torch.Tensor, scale: torch.Tensor, *, offset: Optional[torch.Tensor] = None,
                 pertoken_scale: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
                 output_dtype: Optional[torch.dtype] = None, x2_layout: str = "nd",
                 x2_shape: Optional[tuple] = None) -> torch.Tensor:
    """Quantized matmul with the dequant/requant fused: out = epilogue(x1 @ x2), int32 accumulation.

    x1: int8 (..., m, k), 2-D to 6-D, any strides; or int32 (m, k/8) holding 8 int4 each (element 0 in bits 0-3).
    x2: int8 (..., k, n), any strides (a transposed view is read in place), batch dims broadcast with x1's;
        int4: int32 (k, n/8) packed along n, or (k/8, n) packed along k (e.g. a transposed (n, k/8)); 2-D.
        x2_layout="nz": x2 is int8 FRACTAL_NZ (ceil(n/32), ceil(k/16), 16, 32) from atlas_kernels.nd_to_nz,
        read in place; x2_shape=(k, n) gives the unpadded n (default: the padded ceil(n/32)*32).
    scale: (1,) or (n,); int64 (trans_quant_param form), float32 or bfloat16.
    offset: float32 (1,) or (n,), int8 output only (overrides an offset encoded in an int64 scale).
    pertoken_scale: float32 (m,). bias: (n,) or, for a 3-D output, (batch, 1, n); int32 (added before scaling),
        or bfloat16/float16/float32 (added after scaling).
    output_dtype: None (int8), torch.int8, float16, bfloat16 or int32 (acc + bias, scale ignored).
    Returns (*broadcast batch, m, n). Valid dtype combinations are torch_npu's A2/A3 rows; others raise.
    A float32 scale counts with its top 19 bits only when there is no pertoken_scale and the output is fp16/int8
    (as torch_npu encodes it); with pertoken_scale, bf16 output or a bf16 scale it is used at full precision.
    """
    return torch.ops.atlas.quant_matmul(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout,
                                        None if x2_shape is None else list(x2_shape))


def trans_quant_param(scale: torch.Tensor, offset: Optional[torch.Tensor] = None, round_mode: int = 0) -> torch.Tensor:
    """float32 scale (and offset) -> int64 quant param, the form quant_matmul's kernel decodes.

    scale: float32 (t,) or (1, t) (any shape); offset: float32, broadcast with scale.
    bits 0..31: float bits & 0xFFFFE000 (round_mode=1: mantissa rounded to 10 bits, half to even, instead);
    bits 37..45: clip(rint(offset), -256, 255) as a 9-bit two's complement; bit 46 set.
    """
    check_tensor("trans_quant_param", "scale", scale, dtypes=(torch.float32,))
    check_tensor("trans_quant_param", "offset", offset, dtypes=(torch.float32,), optional=True)
    check_choice("trans_quant_param", "round_mode", round_mode, (0, 1))
    if offset is not None:
        try:
            shape = torch.broadcast_shapes(scale.shape, offset.shape)
        except RuntimeError:
            raise ValueError(f"trans_quant_param: offset {tuple(offset.shape)} does not broadcast with scale "
                             f"{tuple(scale.shape)}") from None
        scale, offset = scale.expand(shape), offset.expand(shape)
    return ref.trans_quant_param(scale, offset, round_mode)


def decode_quant_param(param: torch.Tensor) -> tuple:
    """int64 quant param -> (float32 scale, int32 offset): the inverse of trans_quant_param (19-bit scale)."""
    check_tensor("decode_quant_param", "param", param, dtypes=(torch.int64,))
    return ref.decode_quant_param(param)


def npu_quant_matmul(x1, x2, scale, *, offset=None, pertoken_scale=None, bias=None, output_dtype=None):
    """torch_npu spelling of quant_matmul (ND x2; for an NZ weight call quant_matmul(..., x2_layout='nz'))."""
    return quant_matmul(x1, x2, scale, offset=offset, pertoken_scale=pertoken_scale, bias=bias,
                        output_dtype=output_dtype)


def npu_trans_quant_param(scale, offset=None, round_mode=0):
    """torch_npu spelling of trans_quant_param."""
    return trans_quant_param(scale, offset, round_mode)
