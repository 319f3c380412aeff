"""The A8W4 GEMM kernel: ``quant_matmul.gemm_a8w4`` (int8 x1, int4 x2 packed along n, per-k-group int64 scales).

Each k-group of GROUP_K rows (a multiple of BLOCK_K) has its own scale row. Its exact int32 sum of (x1 - 8) . x2
is scaled and added to a float32 accumulator, so this kernel has two accumulators where ``kernel._qmm_kernel``
has one, and never splits K (the float group sums would make the split order matter). It shares the loaders
(``_load_int4_n_rows``) and the scale decode (``_load_scale``) with that kernel.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .epilogue import _epilogue_grouped, _load_scale
from .formats import A8W4_SUB, SCALE_I64
from .loaders import _load_int4_n_rows


@triton.jit
def _a8w4_kernel(a_ptr, b_ptr, out_ptr, scale_ptr, offset_ptr, pertoken_ptr, M, N, K, sam, sak, sbk, sbn,
                 OFFSET_MODE: tl.constexpr, HAS_PERTOKEN: tl.constexpr, A_K_UNIT: tl.constexpr,
                 B_N_UNIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 GROUP_M: tl.constexpr, GROUP_K: tl.constexpr):
    """out (M, N) = (sum_g ((x1 - 8) . x2[group g]) * scale[g] + offset) * pertoken, per (BLOCK_M, BLOCK_N) tile.

    x1 int8 (M, K) at a_ptr; x2 int32 (K, N/8) at b_ptr, 8 int4 per word along n; scale_ptr int64 quant params
    (K/GROUP_K, N), row-major. Offsets are 32-bit (the launch checks). *_UNIT: that stride is 1.
    """
    if A_K_UNIT:
        sak = 1
    if B_N_UNIT:
        sbn = 1
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    for t in range(tl.program_id(0), tiles_m * tiles_n, tl.num_programs(0)):
        first_m = (t // per_group) * GROUP_M
        group = tl.minimum(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (t % per_group) % group
        pid_n = (t % per_group) // group
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        n0 = pid_n * BLOCK_N
        rn = n0 + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)  # the current k-group's exact sum
        facc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        colsum = tl.zeros((BLOCK_N,), dtype=tl.int32)  # sum of x2 over the group's rows so far
        for k0 in range(0, K, BLOCK_K):
            # one dot per A8W4_SUB contiguous rows, so only a (A8W4_SUB, BLOCK_N) slab of x2 is unpacked at a
            # time: unpacking a whole (BLOCK_K, BLOCK_N) tile costs Ascend's vector unit far more UB than the slabs
            for j in tl.static_range(BLOCK_K // A8W4_SUB):
                rk = k0 + tl.arange(0, A8W4_SUB) + j * A8W4_SUB
                a = tl.load(a_ptr + rm[:, None] * sam + rk[None, :] * sak,
                            mask=(rm < M)[:, None] & (rk < K)[None, :], other=0)
                bj = _load_int4_n_rows(b_ptr, rk, n0, K, N, sbk, sbn, BLOCK_N)
                acc = tl.dot(a, bj, acc)
                # (x1 - 8) . x2 = x1 . x2 - 8 colsum(x2): the -8 of the device's int4 split of x1
                colsum += tl.sum(bj.to(tl.int32), axis=0)
            if (k0 + BLOCK_K) % GROUP_K == 0:  # the group's last K step: scale and add its sum
                s, _ = _load_scale(scale_ptr + (k0 // GROUP_K) * N, rn, rn < N, SCALE_I64)
                facc += (acc - 8 * colsum[None, :]).to(tl.float32) * s[None, :]
                acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
                colsum = tl.zeros((BLOCK_N,), dtype=tl.int32)
        _epilogue_grouped(facc, rm, rn, M, N, out_ptr, offset_ptr, pertoken_ptr, OFFSET_MODE, HAS_PERTOKEN)
