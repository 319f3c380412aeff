"""The A8W4 GEMM kernel: ``quant_matmul.gemm_a8w4`` (int8 x1, int4 x2 packed along n, per-k-group int64 scales).

Each k-group of GROUP_K rows (a multiple of BLOCK_K) has its own scale row. Its exact int32 sum of (x1 - 8) . x2
is scaled and added to a float32 accumulator (``_add_group``), so this kernel has two accumulators where
``kernel._qmm_kernel`` has one. A split launch (SPLIT) cuts K at whole k-groups and stores each group's int32 sum
instead; ``kernel_reduce`` scales and adds them in group order with the same ``_add_group``, so split and unsplit
outputs are bit-identical. It shares the loaders (``_load_int4_n_rows``) and the scale decode (``_load_scale``) with
that kernel.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .epilogue import _add_group, _epilogue_grouped, _load_scale
from .formats import A8W4_SUB, SCALE_I64
from .kernel import _store_partial
from .loaders import _load_int4_n_rows


@triton.jit
def _a8w4_kernel(a_ptr, b_ptr, out_ptr, scale_ptr, offset_ptr, pertoken_ptr, ws_ptr, M, N, K, sam, sak, sbk, sbn,
                 n_splits, k_per_split,
                 OFFSET_MODE: tl.constexpr, HAS_PERTOKEN: tl.constexpr, A_K_UNIT: tl.constexpr,
                 B_N_UNIT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 GROUP_M: tl.constexpr, GROUP_K: tl.constexpr, SPLIT: tl.constexpr = False):
    """out (M, N) = (sum_g ((x1 - 8) . x2[group g]) * scale[g] + offset) * pertoken, per (BLOCK_M, BLOCK_N) tile.

    x1 int8 (M, K) at a_ptr; x2 int32 (K, N/8) at b_ptr, 8 int4 per word along n; scale_ptr int64 quant params
    (K/GROUP_K, N), row-major. Offsets are 32-bit (the launch checks). *_UNIT: that stride is 1.
    SPLIT: item = tile * n_splits + split covers K rows [split * k_per_split, .. + k_per_split) (k_per_split a
    multiple of GROUP_K) and stores group g's int32 sum in workspace slot g (ws_ptr, (K/GROUP_K, 1, M, N)).
    """
    tl.static_assert(GROUP_K % BLOCK_K == 0, "a K step never straddles two k-groups")
    if A_K_UNIT:
        sak = 1
    if B_N_UNIT:
        sbn = 1
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    n_items = tiles_m * tiles_n
    if SPLIT:
        n_items = n_items * n_splits
    for item in range(tl.program_id(0), n_items, tl.num_programs(0)):
        if SPLIT:
            t = item // n_splits
            k_lo = (item % n_splits) * k_per_split
            k_hi = tl.minimum(K, k_lo + k_per_split)
        else:
            t = item
            k_lo = 0
            k_hi = K
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
        for k0 in range(k_lo, k_hi, BLOCK_K):
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
            if (k0 + BLOCK_K) % GROUP_K == 0:  # the group's last K step: scale and add its sum, or store it
                if SPLIT:
                    _store_partial(ws_ptr, acc - 8 * colsum[None, :], k0 // GROUP_K, 0, rm, rn, M, N, 1)
                else:
                    s, _ = _load_scale(scale_ptr + (k0 // GROUP_K) * N, rn, rn < N, SCALE_I64)
                    facc = _add_group(facc, acc - 8 * colsum[None, :], s)
                acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
                colsum = tl.zeros((BLOCK_N,), dtype=tl.int32)
        if not SPLIT:
            _epilogue_grouped(facc, rm, rn, M, N, out_ptr, offset_ptr, pertoken_ptr, OFFSET_MODE, HAS_PERTOKEN)
