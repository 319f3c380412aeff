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
An int4 x2 packed along n (B_INT4_N) is unpacked at most 32 rows per dot (A8W4_SUB; 8 strided rows per nibble
for int4 x1): a whole (BLOCK_K, BLOCK_N) unpack made every A8W4 tile overflow the UB (283 KB at 16x32x64).

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

from . import _backend, _split_k
from ._validate import call_op, check_choice, check_common, check_tensor, int_arg, int_list
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
SCALE_I64_GROUP = tl.constexpr(5)  # A8W4: int64 quant params (k/GROUP_K, n), one row per k-group
OFFSET_NONE = tl.constexpr(0)
OFFSET_TENSOR = tl.constexpr(1)
OFFSET_FROM_SCALE = tl.constexpr(2)
BIAS_NONE = tl.constexpr(0)
BIAS_INT = tl.constexpr(1)
BIAS_FLOAT = tl.constexpr(2)

NZ_M0, NZ_N0 = 16, 32  # int8 FRACTAL_NZ: 16 rows (k) x 32 columns (n) per fractal
A8W4_K_STEP = 64  # A8W4's k-group is a multiple of this, so some BLOCK_K of every config space divides it
A8W4_SUB = tl.constexpr(32)  # A8W4: x2 rows unpacked per dot (one int8 fractal / mma k-step deep)
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
    (B_INT4_N's rows, int4 or int8 x1 (A8W4), come from ``_load_int4_n_rows`` there, a few rows per dot).
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
    elif SCALE_MODE == SCALE_I64_GROUP:  # acc is already the float sum of the scaled k-group partials
        v = acc
        if OFFSET_MODE == OFFSET_TENSOR:
            v = v + tl.load(offset_ptr + rn, mask=n_mask, other=0)[None, :]
        if HAS_PERTOKEN:
            v = v * tl.load(pertoken_ptr + rm, mask=m_mask, other=0)[:, None]
        tl.store(out_ptrs, v.to(out_base.dtype.element_ty), mask=mask)
    else:
        scale, raw = _load_scale(scale_ptr, rn, n_mask, SCALE_MODE)
        v = acc.to(tl.float32) * scale[None, :]
        if HAS_PERTOKEN:
            v = v * tl.load(pertoken_ptr + rm, mask=m_mask, other=0)[:, None]
        if BIAS_MODE == BIAS_FLOAT:
            v = v + tl.load(bias_base + rn, mask=n_mask, other=0).to(tl.float32)[None, :]
        if REQUANT:
            # NaN -> 0, as the hardware's saturating float -> int conversion gives (Ascend Cast, PTX cvt); then
            # clamp first keeps rint in its exact range; the rest is int32: a float min/max costs Ascend's
            # vector unit NaN checks on the whole tile
            v = tl.where(v == v, v, 0.0)
            t = _rint(tl.where(v > -257.0, tl.where(v < 256.0, v, 256.0), -257.0)).to(tl.int32)
            t = tl.minimum(tl.maximum(t, -256), 255)
            if OFFSET_MODE == OFFSET_TENSOR:
                off = tl.load(offset_ptr + rn, mask=n_mask, other=0)
                off = tl.where(off == off, off, 0.0)
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
def _qmm_kernel(a_ptr, b_ptr, out_ptr, scale_ptr, offset_ptr, pertoken_ptr, bias_ptr, bv_ptr, bo_ptr, ws_ptr, cnt_ptr,
                M, N, K, n_batch, D1, D2, D3,
                sa0, sa1, sa2, sa3, sam, sak, sb0, sb1, sb2, sb3, sbk, sbn,
                s_bias, nz_k1, n_splits, k_per_split,
                A_FORMAT: tl.constexpr, B_FORMAT: tl.constexpr, SCALE_MODE: tl.constexpr,
                OFFSET_MODE: tl.constexpr, HAS_PERTOKEN: tl.constexpr, BIAS_MODE: tl.constexpr,
                REQUANT: tl.constexpr, A_K_UNIT: tl.constexpr, B_K_UNIT: tl.constexpr, B_N_UNIT: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                GROUP_M: tl.constexpr, GROUP_K: tl.constexpr = 0, SPLITTABLE: tl.constexpr = False):
    """out[b] (M, N) = epilogue(x1[b] @ x2[b]) for the flattened broadcast batch b < n_batch = D0*D1*D2*D3.

    Batch strides sa*/sb* are 0 along broadcast dims; s_bias is bias's stride per flattened batch (0 for 1-D bias).
    Offsets inside one matrix are 32-bit (the launcher checks); batch offsets are 64-bit.
    *_UNIT: that stride is 1, made a compile-time constant so loads vectorize along it.
    Split-K (SPLITTABLE, the decode variants; n_splits > 1, see _split_k): item = tile * n_splits + split covers
    K rows [split * k_per_split, .. + k_per_split); it stores its int32 partial in ws_ptr (n_splits (BLOCK_M,
    BLOCK_N) slots per tile) and counts its arrival in cnt_ptr[tile]; the last to arrive sums the slots in split
    order, runs the epilogue once and puts the counter back to 0.
    SCALE_I64_GROUP (A8W4, int8 x1 and int4 x2): each k-group of GROUP_K rows (a multiple of BLOCK_K) has its own
    scale row; its exact int32 sum of (x1 - 8) . x2 is scaled and added to a float32 accumulator.
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
    for item in range(pid, n_batch * per_batch * n_splits, tl.num_programs(0)):
        tile = item // n_splits
        split = item % n_splits
        k_lo = split * k_per_split
        k_hi = tl.minimum(K, k_lo + k_per_split)  # the loads mask at k_hi as they do at K
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
        rn = n0 + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        if SCALE_MODE == SCALE_I64_GROUP:
            facc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            colsum = tl.zeros((BLOCK_N,), dtype=tl.int32)  # sum of x2 over the group's rows so far
        for k0 in range(k_lo, k_hi, BLOCK_K):
            if A_FORMAT == A_INT4:
                # x1 packed along k: nibble j of its word w is element k0 + 8w + j, and the order of K inside a
                # dot does not matter, so the dot splits by nibble against x2's rows k0 + 8w + j (no interleave)
                rw = k0 // 8 + tl.arange(0, BLOCK_K // 8)
                a_mask = (rm < M)[:, None] & (rw < k_hi // 8)[None, :]
                aw = tl.load(a_base + rm[:, None] * sam + rw[None, :] * sak, mask=a_mask, other=0)
                if B_FORMAT == B_INT4_K:  # x2's word w holds the same k as x1's
                    bw = _load_b_tile(b_base, bv_ptr, bo_ptr, k0, n0, k_hi, N, sbk, sbn, nz_k1, B_FORMAT, B_K_UNIT,
                                      BLOCK_K, BLOCK_N)
                for j in tl.static_range(8):
                    if B_FORMAT == B_INT4_K:
                        bj = _nibble(bw, j)
                    else:
                        bj = _load_int4_n_rows(b_base, k0 + 8 * tl.arange(0, BLOCK_K // 8) + j, n0, k_hi, N, sbk,
                                               sbn, BLOCK_N)
                    acc = tl.dot(_nibble(aw, j), bj, acc)
            elif SCALE_MODE == SCALE_I64_GROUP:
                # A8W4: one dot per A8W4_SUB contiguous rows, so only a (A8W4_SUB, BLOCK_N) slab of x2 is unpacked
                # at a time (as B_INT4_N rows are for int4 x1): unpacking a whole (BLOCK_K, BLOCK_N) tile costs
                # Ascend's vector unit far more UB than the slabs
                for j in tl.static_range(BLOCK_K // A8W4_SUB):
                    rk = k0 + tl.arange(0, A8W4_SUB) + j * A8W4_SUB
                    a = tl.load(a_base + rm[:, None] * sam + rk[None, :] * sak,
                                mask=(rm < M)[:, None] & (rk < k_hi)[None, :], other=0)
                    bj = _load_int4_n_rows(b_base, rk, n0, k_hi, N, sbk, sbn, BLOCK_N)
                    acc = tl.dot(a, bj, acc)
                    # (x1 - 8) . x2 = x1 . x2 - 8 colsum(x2): the -8 of the device's int4 split of x1
                    colsum += tl.sum(bj.to(tl.int32), axis=0)
                if (k0 + BLOCK_K) % GROUP_K == 0:  # the group's last K step: scale and add its sum
                    s, _ = _load_scale(scale_ptr + (k0 // GROUP_K) * N, rn, rn < N, SCALE_I64)
                    facc += (acc - 8 * colsum[None, :]).to(tl.float32) * s[None, :]
                    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
                    colsum = tl.zeros((BLOCK_N,), dtype=tl.int32)
            else:
                a = _load_a_tile(a_base, rm, k0, M, k_hi, sam, sak, BLOCK_K)
                bt = _load_b_tile(b_base, bv_ptr, bo_ptr, k0, n0, k_hi, N, sbk, sbn, nz_k1, B_FORMAT, B_K_UNIT,
                                  BLOCK_K, BLOCK_N)
                acc = tl.dot(a, bt, acc)
        out_base = out_ptr + b.to(tl.int64) * M * N
        bias_base = bias_ptr + b.to(tl.int64) * s_bias
        if SCALE_MODE == SCALE_I64_GROUP:
            acc = facc
        if not SPLITTABLE:
            _epilogue(acc, rm, rn, M, N, out_base, bias_base, scale_ptr, offset_ptr, pertoken_ptr,
                      SCALE_MODE, OFFSET_MODE, HAS_PERTOKEN, BIAS_MODE, REQUANT)
        elif n_splits == 1:
            _epilogue(acc, rm, rn, M, N, out_base, bias_base, scale_ptr, offset_ptr, pertoken_ptr,
                      SCALE_MODE, OFFSET_MODE, HAS_PERTOKEN, BIAS_MODE, REQUANT)
        else:
            # the sum comes back from the workspace, own partial included: bishengir cannot add UB tiles to the
            # cube's accumulator (hivm.hir.load from L0C)
            slots = tl.multiple_of(ws_ptr + tile.to(tl.int64) * n_splits * (BLOCK_M * BLOCK_N), 16)  # a fresh tensor
            in_slot = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
            valid = (rm < M)[:, None] & (rn < N)[None, :]
            tl.store(slots + split * (BLOCK_M * BLOCK_N) + in_slot, acc, mask=valid)
            tl.debug_barrier()  # all of this program's partial is stored before its arrival counts (release)
            if tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel") == n_splits - 1:
                total = tl.load(slots + in_slot, mask=valid, other=0)
                for s in range(1, n_splits):
                    total += tl.load(slots + s * (BLOCK_M * BLOCK_N) + in_slot, mask=valid, other=0)
                tl.atomic_xchg(cnt_ptr + tile, 0)
                _epilogue(total, rm, rn, M, N, out_base, bias_base, scale_ptr, offset_ptr, pertoken_ptr,
                          SCALE_MODE, OFFSET_MODE, HAS_PERTOKEN, BIAS_MODE, REQUANT)


# ---------------------------------------------------------------- config spaces
# A config is BLOCK_M x BLOCK_N output tile, BLOCK_K deep, GROUP_M m-tiles per L2 group.
# Ascend (A2/A3 cube): A tile (BLOCK_M, BLOCK_K) int8 and B tile (BLOCK_K, BLOCK_N) int8 each fit half of
# L0A / L0B (ping-pong), the int32 accumulator fits L0C, double-buffered A+B fit L1, the fp32 epilogue tile
# fits half the UB; tiles are whole 16x32 int8 fractals (BLOCK_M % 16, BLOCK_K % 32, BLOCK_N % 32).
# CUDA: stages x (A + B) bytes fit shared memory; the int32 accumulator stays under ~128 registers per thread.

def _is_decode(variant: Variant) -> bool:
    return variant.label.endswith("-decode")


def _is_a8w4(variant: Variant) -> bool:
    return variant.constexprs["SCALE_MODE"] == SCALE_I64_GROUP.value


def _min_block_k(target: Target, variant: Variant) -> int:
    if variant.constexprs["A_FORMAT"] == A_INT4.value:  # its dots are BLOCK_K/8 deep: at least one int8 fractal
        return 256                                     # (Ascend) / one int8 mma k-step (CUDA)
    if _is_a8w4(variant):
        return A8W4_K_STEP
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
    if _is_a8w4(variant):
        # x2 unpacked A8W4_SUB rows per dot (K loop): 128 KiB whatever the tile (the int32 -> int8 cast's 64 KiB
        # scratch, the (32, BLOCK_N / 8, 8) slab padded to 32 bytes per row of 8), 400 bytes per column (the
        # slab, its column sums, the group's scale row) and 24 per output element (int32 group sum, float32
        # accumulator, epilogue); BLOCK_K adds nothing once multi-buffering is off. Fitted on Ascend910B2:
        # fits 16x32, 32x32, 64x32 (BLOCK_K 64 or 256), 16x64 (64, 128, 256); overflows 128x32, 32x64, 64x64,
        # 16x128 (205-337 KB)
        return 128 * 1024 + 400 * bn + 24 * bm * bn
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
                if bk < min_bk or (_is_a8w4(variant) and variant.constexprs["GROUP_K"] % bk):
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
    default = _default(target, variant)
    if _is_decode(variant) and not _is_a8w4(variant) and default in configs:
        # the tuner may also fix the default tile's split (SPLIT_K absent: the launcher chooses it per shape)
        configs += [{**default, "SPLIT_K": s} for s in _split_k.SPLIT_K_CHOICES]
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
        return {"BLOCK_M": 16 if decode else 64, "BLOCK_N": 256 if decode else 128,
                "BLOCK_K": 256 if _is_a8w4(variant) else max(min_bk, 128), "GROUP_M": 8}
    if variant.constexprs["B_FORMAT"] == B_SPARSE.value and target.backend == "cuda":
        # from the cuda check: no spills with the decode's bits/cumsum/indices next to the accumulator
        return {"BLOCK_M": 16 if decode else 32, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
                "num_stages": 2}
    if target.is_ascend and _is_a8w4(variant):  # the largest tiles bishengir fits (Ascend910B2, see _ascend_ub)
        bm, bn, bk = (16, 64, 256) if decode else (64, 32, 256)
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}
    if target.is_ascend:  # verified by the ascend check on Ascend910B2 and Ascend910_9391 (UB bytes planned there)
        bm, bn, bk = _ASCEND_DEFAULT[variant.constexprs["B_FORMAT"]][decode]
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}
    # CUDA: chosen from the cuda check (no spills; wgmma on sm_90 where Triton can use it).
    if _is_a8w4(variant) and target.name == "sm_90":  # int32 group sum + float32 accumulator: 64x128 spills
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    if variant.constexprs["A_FORMAT"] == A_INT4.value:  # 4 warps spill 8 bytes on sm_90 (i4-k)
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 256, "GROUP_M": 8, "num_warps": 8, "num_stages": 2}
    if target.name == "sm_90":  # wgmma needs a 64-row warpgroup tile; for decode the extra rows are masked
        return {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    return {"BLOCK_M": 16 if decode else 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
            "num_stages": 3}


_ARG_TYPES = {"M": "i32", "N": "i32", "K": "i32", "n_batch": "i32", "D1": "i32", "D2": "i32", "D3": "i32",
              **{f"s{x}{i}": "i32" for x in "ab" for i in range(4)},
              "sam": "i32", "sak": "i32", "sbk": "i32", "sbn": "i32", "s_bias": "i32", "nz_k1": "i32",
              "n_splits": "i32", "k_per_split": "i32"}
_PTR = {torch.int8: "*i8", torch.int32: "*i32", torch.int64: "*i64", torch.float16: "*fp16",
        torch.bfloat16: "*bf16", torch.float32: "*fp32"}


def _variant(label, a_fmt, b_fmt, out, scale, bias=None, offset=False, pertoken=False, group_k=0) -> Variant:
    """A typical launch: x1 contiguous; x2 (k, n) row-major, (k/8, n) a transposed view for B_INT4_K,
    or k-contiguous for labels with '-t' (a transposed int8 x2). group_k: A8W4's k-group (int64 group scales)."""
    x = torch.int32 if a_fmt is A_INT4 else torch.int8
    scale_mode = (SCALE_I64_GROUP if group_k else SCALE_NONE if out == torch.int32
                  else SCALE_I64 if scale == torch.int64 else SCALE_BF16 if scale == torch.bfloat16
                  else SCALE_F32_TRUNC if ref.scale_is_truncated(scale, pertoken, out) else SCALE_F32)
    offset_mode = (OFFSET_TENSOR if offset else OFFSET_FROM_SCALE if out == torch.int8 and scale == torch.int64
                   else OFFSET_NONE)
    types = {"a_ptr": _PTR[x], "b_ptr": _PTR[torch.int32 if b_fmt in (B_INT4_N, B_INT4_K) else x],
             "out_ptr": _PTR[out], "scale_ptr": _PTR[scale], "offset_ptr": "*fp32", "pertoken_ptr": "*fp32",
             "bias_ptr": _PTR[bias or torch.int32],
             "bv_ptr": "*i8", "bo_ptr": "*i32", "ws_ptr": "*i32", "cnt_ptr": "*i32", **_ARG_TYPES}
    bias_mode = BIAS_NONE if bias is None else BIAS_INT if bias == torch.int32 else BIAS_FLOAT
    modes = {"A_FORMAT": a_fmt, "B_FORMAT": b_fmt, "SCALE_MODE": scale_mode, "OFFSET_MODE": offset_mode,
             "BIAS_MODE": bias_mode}
    k_unit = b_fmt is B_INT4_K or "-t" in label
    return Variant(label, types, {**{k: v.value for k, v in modes.items()}, "HAS_PERTOKEN": pertoken,
                                  "REQUANT": out == torch.int8, "A_K_UNIT": True, "B_K_UNIT": k_unit,
                                  "B_N_UNIT": b_fmt is not B_NZ and not k_unit, "GROUP_K": group_k})


# The launcher picks its config by operand format ("i8-nd", "i8-nd-t" for a k-contiguous x2, "i8-nz", "i4-n",
# "i4-k", "a8w4" (compiled for g = 256; other k-groups share its config), each with "-decode" for m <= 16);
# the other variants cover every epilogue branch in the checks and share i8-nd's config.
_VARIANTS = []
for _fmt, _a, _b, _out, _scale, _kw in (
        ("i8-nd", A_INT8, B_ND, torch.float16, torch.int64, {"bias": torch.int32}),
        ("i8-nd-t", A_INT8, B_ND, torch.int8, torch.float32, {"bias": torch.int32, "offset": True}),
        ("i8-nz", A_INT8, B_NZ, torch.float16, torch.float32, {"bias": torch.int32}),
        ("i4-n", A_INT4, B_INT4_N, torch.float16, torch.int64, {"bias": torch.int32}),
        ("i4-k", A_INT4, B_INT4_K, torch.bfloat16, torch.float32, {"pertoken": True}),
        ("a8w4", A_INT8, B_INT4_N, torch.float16, torch.int64, {"offset": True, "pertoken": True, "group_k": 256})):
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
# decode launches (m <= 16) may split K (_split_k): only their variants compile the split path, which costs the
# larger prefill tiles more UB than Ascend has (a second epilogue instance); A8W4 never splits (float group sums)
_VARIANTS = [Variant(v.label, v.types, {**v.constexprs, "SPLITTABLE": _is_decode(v) and not _is_a8w4(v)})
             for v in _VARIANTS]

GEMM = register_kernel(KernelSpec("quant_matmul.gemm", _qmm_kernel, _VARIANTS, _space, _default, uses_dot=True))


# ---------------------------------------------------------------- validation (shared by the kernel path and the fake)
_OUT_DTYPES = (torch.int8, torch.float16, torch.bfloat16, torch.int32)
_FORMAT_LABEL = {(A_INT8.value, B_ND.value): "i8-nd", (A_INT8.value, B_NZ.value): "i8-nz",
                 (A_INT4.value, B_INT4_N.value): "i4-n", (A_INT4.value, B_INT4_K.value): "i4-k",
                 (A_INT8.value, B_INT4_N.value): "a8w4"}


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


def _plan_a8w4(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, g) -> dict:
    """A8W4: x1 int8 (m, k), x2 int32 (k, n/8), scale int64 (k/g, n), offset/pertoken float32 (A2/A3 row)."""
    check_tensor(OP, "x1", x1, ndim=2)
    check_tensor(OP, "x2", x2, ndim=2)
    if x2_layout != "nd":
        raise ValueError(f"{OP}: x2_layout='nz' takes an int8 x2; an int4-packed x2 must be ND")
    out = output_dtype
    if out not in (torch.float16, torch.bfloat16):
        raise TypeError(f"{OP}: output_dtype must be float16 or bfloat16 for int8 x1 with int4 x2 (A8W4), "
                        f"got {output_dtype}")
    (m, k), n = x1.shape, 8 * x2.shape[1]
    if x2.shape[0] != k:
        raise ValueError(f"{OP}: K mismatch: int8 x1 {tuple(x1.shape)} has k = {k}, so the int4-packed x2 must "
                         f"be ({k}, n/8), got {tuple(x2.shape)}")
    if not g:
        raise ValueError(f"{OP}: int8 x1 with int4 x2 (A8W4) needs group_sizes=[0, 0, g] (the k-group of scale)")
    if g % A8W4_K_STEP or k % g:
        raise ValueError(f"{OP}: group_sizes' k-group g must be a multiple of {A8W4_K_STEP} (the kernel's K step) "
                         f"and divide k = {k}, got g = {g}")
    check_tensor(OP, "scale", scale, dtypes=(torch.int64,), ndim=2)
    if tuple(scale.shape) != (k // g, n):
        raise ValueError(f"{OP}: scale must have shape (k/g, n) = ({k // g}, {n}) for A8W4, got {tuple(scale.shape)}")
    if offset is not None:
        check_tensor(OP, "offset", offset, dtypes=(torch.float32,))
        _check_vector("offset", offset, (n,), f"n = {n} from x2")
    if pertoken_scale is not None:
        check_tensor(OP, "pertoken_scale", pertoken_scale, dtypes=(torch.float32,))
        _check_vector("pertoken_scale", pertoken_scale, (m,), f"m = {m} from x1")
    if bias is not None:
        raise ValueError(f"{OP}: bias must be None for int8 x1 with int4 x2 (A8W4)")
    return {"m": m, "k": k, "n": n, "batch": (), "out_shape": (m, n), "out_dtype": out, "A_FORMAT": A_INT8.value,
            "B_FORMAT": B_INT4_N.value, "SCALE_MODE": SCALE_I64_GROUP.value,
            "OFFSET_MODE": (OFFSET_NONE if offset is None else OFFSET_TENSOR).value, "BIAS_MODE": BIAS_NONE.value,
            "HAS_PERTOKEN": pertoken_scale is not None, "REQUANT": False, "GROUP_K": g}


def _check_nd_x2_shape(x2_shape, x2, k: int, n: int) -> None:
    """x2_shape only says something for an NZ x2 (its unpadded n); for an ND x2 it may only repeat (k, n)."""
    if x2_shape is not None and tuple(x2_shape) != (k, n):
        raise ValueError(f"{OP}: x2_shape must be None or ({k}, {n}) for ND x2 {tuple(x2.shape)} (it gives the "
                         f"unpadded (k, n) of an NZ x2), got {tuple(x2_shape)}")


def _plan(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape, group_k=0) -> dict:
    """Validate every argument; return shapes and kernel modes. Errors name the argument."""
    check_tensor(OP, "x1", x1, dtypes=(torch.int8, torch.int32))
    check_tensor(OP, "x2", x2, dtypes=(torch.int8, torch.int32))
    check_common(OP, {"x1": x1, "x2": x2, "scale": scale, "offset": offset, "pertoken_scale": pertoken_scale,
                      "bias": bias})
    if x1.dtype == torch.int8 and x2.dtype == torch.int32:
        plan = _plan_a8w4(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, group_k)
        _check_nd_x2_shape(x2_shape, x2, plan["k"], plan["n"])
        return plan
    if group_k:
        raise ValueError(f"{OP}: group_sizes (k-group {group_k}) is only for int8 x1 with int4-packed int32 x2 "
                         f"(A8W4), got x1 {_name(x1.dtype)} and x2 {_name(x2.dtype)}")
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
        if x2.shape[0] == k:  # k = 0: a (0, c) x2 reads as (k, n/8), as the reference does
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
                raise ValueError(f"{OP}: an NZ x2 must have shape (ceil(n/32), ceil(k/16), 16, 32), "
                                 f"got {tuple(x2.shape)}")
            if k1 != math.ceil(k / NZ_M0):
                raise ValueError(f"{OP}: K mismatch: x1's last dim is {k}, but NZ x2 {tuple(x2.shape)} holds "
                                 f"k <= {k1 * NZ_M0} in {k1} row fractals (needs ceil(k/16) = {math.ceil(k / NZ_M0)})")
            n = n1 * NZ_N0 if x2_shape is None or len(x2_shape) != 2 else x2_shape[1]
            if x2_shape is not None and (len(x2_shape) != 2 or x2_shape[0] != k or n <= 0
                                         or math.ceil(n / NZ_N0) != n1):
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
    if b_fmt is not B_NZ:
        _check_nd_x2_shape(x2_shape, x2, k, n)
    a_fmt = A_INT4 if int4 else A_INT8
    pertoken = pertoken_scale is not None
    scale_dtypes, bias_dtypes, pt_ok, pt_needed = _allowed(int4, out, pertoken)
    rows = f"{'int4' if int4 else 'int8'} inputs with {_name(out)} output"
    check_tensor(OP, "scale", scale, dtypes=(torch.int64, torch.float32, torch.bfloat16), ndim=1)
    if scale.dtype not in scale_dtypes:
        raise TypeError(f"{OP}: scale must have dtype {', '.join(map(_name, scale_dtypes))} for {rows}"
                        f"{' and pertoken_scale' if pertoken else ''}, got {_name(scale.dtype)}")
    _check_vector("scale", scale, (1, n), f"1 or n = {n} from x2")
    if offset is not None:
        if out != torch.int8:
            raise ValueError(f"{OP}: offset is only supported with int8 output, got output_dtype={_name(out)}")
        check_tensor(OP, "offset", offset, dtypes=(torch.float32,))
        _check_vector("offset", offset, (1, n), f"1 or n = {n} from x2")
    if pertoken:
        if not pt_ok:
            raise ValueError(f"{OP}: pertoken_scale is not supported with {_name(out)} output")
        check_tensor(OP, "pertoken_scale", pertoken_scale, dtypes=(torch.float32,))
        _check_vector("pertoken_scale", pertoken_scale, (m,), f"m = {m} from x1")
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
            **{key: v.value for key, v in modes.items()}, "HAS_PERTOKEN": pertoken, "REQUANT": out == torch.int8,
            "GROUP_K": 0}


# ---------------------------------------------------------------- launcher
_CONSTEXPRS = ("A_FORMAT", "B_FORMAT", "SCALE_MODE", "OFFSET_MODE", "HAS_PERTOKEN", "BIAS_MODE", "REQUANT",
               "GROUP_K")


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
                     output_dtype: Optional[torch.dtype], x2_layout: str, x2_shape: Optional[list[int]],
                     group_k: int) -> torch.Tensor:
    plan = _plan(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape, group_k)
    device = _backend.device_of(OP, x1=x1, x2=x2, scale=scale, offset=offset, pertoken_scale=pertoken_scale,
                                bias=bias)
    if not _backend.use_kernel(OP, device):
        return ref.quant_matmul(x1, x2, scale, offset, pertoken_scale, bias, plan["out_dtype"], x2_layout,
                                None if x2_layout == "nd" else (plan["k"], plan["n"]), group_k)
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
    meta, opts = split_config(pick_config(GEMM.name, target, config_label(plan, units["B_K_UNIT"]), m=m, k=k, n=n))
    scale = scale.contiguous() if group_k else _per_column(scale, n)
    if group_k:  # a K step never straddles two k-groups (BLOCK_K: a power of two >= 64; g: a multiple of 64)
        meta["BLOCK_K"] = math.gcd(meta["BLOCK_K"], group_k)
    splittable = m <= 16 and not group_k  # the decode variants (config_label)
    meta, n_items, split_args = _split_k.launch_args(device, meta, m, n, k, math.prod(batch), target.programs(True),
                                                     splittable)
    grid = _backend.persistent_grid(n_items, target, uses_dot=True)
    _backend.launch(GEMM.name, _qmm_kernel, grid, a_ptr=x1, b_ptr=x2, out_ptr=out, scale_ptr=scale,
                    offset_ptr=out if offset is None else _per_column(offset, n),
                    pertoken_ptr=out if pertoken_scale is None else pertoken_scale,
                    bias_ptr=out if bias is None else bias, bv_ptr=x2, bo_ptr=x2,
                    M=m, N=n, K=k, n_batch=math.prod(batch), D1=sizes[1], D2=sizes[2], D3=sizes[3],
                    **dict(zip(("sa0", "sa1", "sa2", "sa3"), sa)), sam=x1.stride(-2), sak=x1.stride(-1),
                    **dict(zip(("sb0", "sb1", "sb2", "sb3"), sb)), sbk=sbk, sbn=sbn, s_bias=s_bias, nz_k1=nz_k1,
                    **{c: plan[c] for c in _CONSTEXPRS}, **units, **split_args, SPLITTABLE=splittable, **meta,
                    **opts)
    return out


@_quant_matmul_op.register_fake
def _(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape, group_k):
    plan = _plan(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape, group_k)
    return x1.new_empty(plan["out_shape"], dtype=plan["out_dtype"])


def quant_matmul(x1: torch.Tensor, x2: torch.Tensor, scale: torch.Tensor, *, offset: Optional[torch.Tensor] = None,
                 pertoken_scale: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
                 output_dtype: Optional[torch.dtype] = None, x2_layout: str = "nd",
                 x2_shape: Optional[tuple] = None, group_sizes=None) -> torch.Tensor:
    """Quantized matmul with the dequant/requant fused: out = epilogue(x1 @ x2), int32 accumulation.

    x1: int8 (..., m, k), 2-D to 6-D, any strides; or int32 (m, k/8) holding 8 int4 each (element 0 in bits 0-3).
    x2: int8 (..., k, n), any strides (a transposed view is read in place), batch dims broadcast with x1's;
        int4: int32 (k, n/8) packed along n, or (k/8, n) packed along k (e.g. a transposed (n, k/8)); 2-D.
        x2_layout="nz": x2 is int8 FRACTAL_NZ (ceil(n/32), ceil(k/16), 16, 32) from atlas_kernels.nd_to_nz,
        read in place; x2_shape=(k, n) gives the unpadded n (default: the padded ceil(n/32)*32).
    scale: (1,) or (n,); int64 (trans_quant_param form), float32 or bfloat16.
    offset: float32 (1,) or (n,), int8 output only (overrides an offset encoded in an int64 scale).
    pertoken_scale: float32 (m,) or (m, 1).
    bias: (n,) or, for a 3-D output, (batch, 1, n); int32 (added before scaling), or bfloat16/float16/float32
        (added after scaling).
    output_dtype: None (int8), torch.int8, float16, bfloat16 or int32 (acc + bias, scale ignored).
    Returns (*broadcast batch, m, n). Valid dtype combinations are torch_npu's A2/A3 rows; others raise.
    A float32 scale counts with its top 19 bits only when there is no pertoken_scale and the output is fp16/int8
    (as torch_npu encodes it); with pertoken_scale, bf16 output or a bf16 scale it is used at full precision.

    A8W4 (group_sizes=[0, 0, g]): x1 int8 (m, k); x2 int32 (k, n/8) from convert_weight_to_int4pack;
    scale int64 (k/g, n), trans_quant_param of the per-group float32 scales; offset float32 (n,);
    pertoken_scale float32 (m,) or (m, 1); bias None; output_dtype float16 or bfloat16; g a multiple of 64
    dividing k. out[i, c] = (sum_j ((x1[i] - 8) . x2[j-th k-group, c]) * scale[j, c] + offset[c]) * pertoken[i],
    each group's sum exact in int32, the groups added in float32.
    """
    if isinstance(pertoken_scale, torch.Tensor) and pertoken_scale.dim() == 2 and pertoken_scale.shape[1] == 1:
        pertoken_scale = pertoken_scale.reshape(-1)
    return call_op(OP, torch.ops.atlas.quant_matmul, x1, x2, scale, offset, pertoken_scale, bias, output_dtype,
                   x2_layout, int_list(OP, "x2_shape", x2_shape, optional=True), _group_k(group_sizes))


def _group_k(group_sizes) -> int:
    """group_sizes [group_m, group_n, group_k] (torch_npu's int[]) -> group_k; 0 when None."""
    sizes = int_list(OP, "group_sizes", group_sizes, optional=True)
    if sizes is None:
        return 0
    if len(sizes) != 3 or sizes[0] not in (0, 1) or sizes[1] not in (0, 1) or sizes[2] < 0:
        raise ValueError(f"{OP}: group_sizes must be [0, 0, g] (per-group scales along k only on A2/A3), "
                         f"got {sizes}")
    return sizes[2]


def trans_quant_param(scale: torch.Tensor, offset: Optional[torch.Tensor] = None, round_mode: int = 0) -> torch.Tensor:
    """float32 scale (and offset) -> int64 quant param, the form quant_matmul's kernel decodes.

    scale: float32 (t,) or (1, t) (any shape); offset: float32, broadcast with scale.
    bits 0..31: float bits & 0xFFFFE000 (round_mode=1: mantissa rounded to 10 bits, half to even, instead);
    bits 37..45: clip(rint(offset), -256, 255) as a 9-bit two's complement; bit 46 set.
    """
    check_tensor("trans_quant_param", "scale", scale, dtypes=(torch.float32,))
    check_tensor("trans_quant_param", "offset", offset, dtypes=(torch.float32,), optional=True)
    round_mode = int_arg("trans_quant_param", "round_mode", round_mode)
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


def npu_quant_matmul(x1, x2, scale, *, offset=None, pertoken_scale=None, bias=None, output_dtype=None,
                     x1_dtype=None, x2_dtype=None, pertoken_scale_dtype=None, scale_dtype=None, group_sizes=None,
                     y_scale=None):
    """torch_npu spelling of quant_matmul (ND x2; for an NZ weight call quant_matmul(..., x2_layout='nz')).

    group_sizes=[0, 0, g]: the A8W4 path (see quant_matmul). x1_dtype, x2_dtype, pertoken_scale_dtype and
    scale_dtype reinterpret a tensor as a type of newer SoCs (fp8, hifloat8, mx scales), and y_scale quantizes
    the output there: None (or the tensor's own dtype) is accepted, anything else raises NotImplementedError.
    """
    for name, value, t in (("x1_dtype", x1_dtype, x1), ("x2_dtype", x2_dtype, x2), ("scale_dtype", scale_dtype, scale),
                           ("pertoken_scale_dtype", pertoken_scale_dtype, pertoken_scale)):
        if value is not None and not (isinstance(t, torch.Tensor) and value == t.dtype):
            raise NotImplementedError(f"npu_quant_matmul: {name}={value!r} is for newer SoCs (fp8/hifloat8/mx "
                                      f"formats); Atlas A2/A3 take None (the tensor's own dtype)")
    if y_scale is not None:
        raise NotImplementedError("npu_quant_matmul: y_scale (output quantization) is for newer SoCs; Atlas A2/A3 "
                                  "take None")
    return quant_matmul(x1, x2, scale, offset=offset, pertoken_scale=pertoken_scale, bias=bias,
                        output_dtype=output_dtype, group_sizes=group_sizes)


def npu_trans_quant_param(scale, offset=None, round_mode=0):
    """torch_npu spelling of trans_quant_param: round_mode (torch_npu's int?) None (= 0), or 0/1 as a Python or
    numpy integer or a 0-d integer tensor."""
    return trans_quant_param(scale, offset, 0 if round_mode is None else round_mode)



# ---------------------------------------------------------------- tuning harness
# Shapes {m, k, n}: m varies per call (power-of-two bucket), k and n are the weight's (exact). A launch takes the
# config of its operand format's label, with "-decode" for m <= 16; the sparse labels are matmul_compress_dequant's.
# The check-only epilogue variants share i8-nd's config and are not tuned.
from .autotune import Tuning, pow2_bucket  # noqa: E402
from .autotune.candidates import Work  # noqa: E402

_TUNED_FORMATS = ("i8-nd", "i8-nd-t", "i8-nz", "i4-n", "i4-k", "a8w4", "sparse")
_GEMM_SHAPES = ({"m": 16, "k": 4096, "n": 4096}, {"m": 16, "k": 4096, "n": 14336},
                {"m": 1024, "k": 4096, "n": 4096}, {"m": 1024, "k": 4096, "n": 14336})
_A8W4_GROUP = 256


def _gemm_bucket(shape: dict) -> tuple:
    return (pow2_bucket(shape["m"]), shape["k"], shape["n"])


def _gemm_covers(variant: Variant, shape: dict) -> bool:
    decode = variant.label.endswith("-decode")
    return variant.label.removesuffix("-decode") in _TUNED_FORMATS and decode == (shape["m"] <= 16)


def _gemm_work(target: Target, variant: Variant, shape: dict, config: dict) -> Work:
    """The GEMM's modelled work: output tiles (x SPLIT_K), each reading its A rows and B columns over its k
    range once. A tile dim larger than the (power-of-two padded) problem only adds padded work, so it counts
    as clamped; pipeline stages past the k-steps add nothing."""
    c = variant.constexprs
    m, k, n = shape["m"], shape["k"], shape["n"]
    split = max(1, min(config.get("SPLIT_K", 1), -(-k // config["BLOCK_K"])))  # parts past the k-steps are empty
    k_part = -(-k // split)
    bm = min(config["BLOCK_M"], max(16, pow2_bucket(m)))
    bn = min(config["BLOCK_N"], max(32, pow2_bucket(n)))
    bk = min(config["BLOCK_K"], max(32, pow2_bucket(k_part)))
    steps = -(-k_part // bk)
    tiles = -(-m // bm) * -(-n // bn) * split
    a_bytes = 0.5 if c["A_FORMAT"] == A_INT4.value else 1.0
    b_bytes = 0.5 if c["B_FORMAT"] in (B_INT4_N.value, B_INT4_K.value) else 1.0
    out_bytes = 4.0 if split > 1 else 2.0  # split-k partial sums are int32
    rows, cols = min(bm, m), min(bn, n)
    effective = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": min(config.get("GROUP_M", 1), -(-m // bm)),
                 **({"SPLIT_K": split} if "SPLIT_K" in config else {})}
    depth = 2.0  # Ascend: L1/L0 ping-pong
    if "num_stages" in config:  # CUDA: loads in flight per warp, and the warps that have a 16x8 mma tile to issue
        effective["num_stages"] = min(config["num_stages"], steps + 1)
        busy_warps = min(config.get("num_warps", 4), bm * bn // 128)
        depth = max(1, effective["num_stages"] - 1) * busy_warps / 4
    return Work(tiles=tiles, bytes_per_tile=rows * k_part * a_bytes + k_part * cols * b_bytes + rows * cols * out_bytes,
                ops_per_tile=2.0 * bm * bn * bk * steps, steps_per_tile=steps, depth=depth, effective=effective,
                unique_bytes=m * k * a_bytes + k * n * b_bytes + m * n * out_bytes)


def _tune_gemm(shape: dict, variant: Variant, device):
    """One launch of the variant's operand format at (m, k, n) with a typical epilogue, through the public op."""
    from .compress_matmul import compress_weight, matmul_compress_dequant
    from .int4_pack import convert_weight_to_int4pack, nd_to_nz
    fmt = variant.label.removesuffix("-decode")
    m, k, n = shape["m"], shape["k"], shape["n"]
    gen = torch.Generator().manual_seed(0)

    def ints(lo, hi, *size):
        return torch.randint(lo, hi, size, generator=gen, dtype=torch.int32)

    def scales(*size):
        return torch.rand(size, generator=gen) * 1e-3 + 1e-4

    bias, scale_n, offset, pertoken = ints(-1000, 1000, n), scales(n), scales(n), scales(m)
    if fmt == "sparse":
        x2, index, info = compress_weight(ints(-128, 128, n, k).to(torch.int8))
        x1, deq = ints(-128, 128, m, k).to(torch.int8), scale_n.view(torch.int32).to(torch.int64).reshape(1, n)
        args = [t.to(device) for t in (x1, x2, index, bias, deq)]
        return lambda: matmul_compress_dequant(*args, compress_info=info)
    if fmt in ("i4-n", "i4-k", "a8w4"):
        w = ints(-8, 8, n, k) if fmt == "i4-k" else ints(-8, 8, k, n)
        x2 = convert_weight_to_int4pack(w.to(device))
        x2 = x2.t() if fmt == "i4-k" else x2
        if fmt == "a8w4":
            x1, scale = ints(-128, 128, m, k).to(torch.int8).to(device), trans_quant_param(scales(k // _A8W4_GROUP, n))
            scale, offset, pertoken = scale.to(device), offset.to(device), pertoken.to(device)
            return lambda: quant_matmul(x1, x2, scale, offset=offset, pertoken_scale=pertoken,
                                        output_dtype=torch.float16, group_sizes=[0, 0, _A8W4_GROUP])
        x1 = convert_weight_to_int4pack(ints(-8, 8, m, k).to(device))
        if fmt == "i4-k":
            scale, pertoken = scale_n.to(device), pertoken.to(device)
            return lambda: quant_matmul(x1, x2, scale, pertoken_scale=pertoken, output_dtype=torch.bfloat16)
        scale, bias = trans_quant_param(scale_n).to(device), bias.to(device)
        return lambda: quant_matmul(x1, x2, scale, bias=bias, output_dtype=torch.float16)
    x1, w = ints(-128, 128, m, k).to(torch.int8).to(device), ints(-128, 128, k, n).to(torch.int8).to(device)
    bias, scale_n, offset = bias.to(device), scale_n.to(device), offset.to(device)
    if fmt == "i8-nd-t":  # a k-contiguous x2: a transposed (n, k) weight
        w = w.t().contiguous().t()
        return lambda: quant_matmul(x1, w, scale_n, offset=offset, bias=bias, output_dtype=torch.int8)
    if fmt == "i8-nz":
        nz = nd_to_nz(w)
        return lambda: quant_matmul(x1, nz, scale_n, bias=bias, output_dtype=torch.float16, x2_layout="nz",
                                    x2_shape=(k, n))
    scale = trans_quant_param(scale_n.cpu()).to(device)
    return lambda: quant_matmul(x1, w, scale, bias=bias, output_dtype=torch.float16)


GEMM.tuning = Tuning(("m", "k", "n"), _gemm_bucket, _tune_gemm, _GEMM_SHAPES, work=_gemm_work, covers=_gemm_covers)
