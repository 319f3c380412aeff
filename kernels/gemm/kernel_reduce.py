"""The split-K reduction: ``quant_matmul.gemm_reduce``, the second launch of a split GEMM.

A split launch of either GEMM kernel (SPLIT) leaves int32 partials in a (slots, n_batch, M, N) workspace instead of
running its epilogue. This kernel sums them in slot order and runs the same epilogue: for the int32-accumulator
kernel the slots are K splits and the sum is exact in any order; for A8W4 (GROUPED) they are k-groups, each scaled
by its row of quant params and added to a float32 accumulator in group order, as the unsplit kernel does. No atomics
and no arrival counters: on Ascend an atomic whose result is read costs a cross-core lock around every vector core's
whole loop (docs/ascend_split_k_lock.md). It runs on the vector cores (no tl.dot).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .epilogue import _add_group, _epilogue, _epilogue_grouped, _load_scale
from .formats import SCALE_I64, SCALE_I64_GROUP


@triton.jit
def _split_reduce_kernel(ws_ptr, out_ptr, scale_ptr, offset_ptr, pertoken_ptr, bias_ptr, M, N, n_batch, n_slots,
                         s_bias, SCALE_MODE: tl.constexpr, OFFSET_MODE: tl.constexpr, HAS_PERTOKEN: tl.constexpr,
                         BIAS_MODE: tl.constexpr, REQUANT: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr):
    """out[b] (M, N) = epilogue(sum over slots of ws[slot, b]) per (BLOCK_M, BLOCK_N) tile, b < n_batch.

    ws_ptr int32 (n_slots, n_batch, M, N). SCALE_MODE == I64_GROUP (A8W4): slot g is k-group g's sum, scaled by
    scale_ptr's row g (int64 quant params (n_slots, N)); then A8W4's epilogue. Otherwise the int32 epilogue of
    the kernel that split (scale, offset, pertoken, bias with batch stride s_bias).
    """
    tl.static_assert(SCALE_MODE != SCALE_I64_GROUP or not REQUANT, "A8W4's outputs are float")
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_batch = tl.cdiv(M, BLOCK_M) * tiles_n
    for t in range(tl.program_id(0), n_batch * per_batch, tl.num_programs(0)):
        b = t // per_batch
        rm = (t % per_batch) // tiles_n * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = (t % per_batch) % tiles_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = rn < N
        mask = (rm < M)[:, None] & n_mask[None, :]
        offs = b * M * N + rm[:, None] * N + rn[None, :]
        slot_size = n_batch * M * N  # split_k.plan caps the whole workspace (MAX_WORKSPACE_BYTES): int32 offsets
        out_base = out_ptr + b.to(tl.int64) * M * N
        if SCALE_MODE == SCALE_I64_GROUP:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for g in range(n_slots):
                s, _ = _load_scale(scale_ptr + g * N, rn, n_mask, SCALE_I64)
                acc = _add_group(acc, tl.load(ws_ptr + g * slot_size + offs, mask=mask, other=0), s)
            _epilogue_grouped(acc, rm, rn, M, N, out_base, offset_ptr, pertoken_ptr, OFFSET_MODE, HAS_PERTOKEN)
        else:
            acc = tl.load(ws_ptr + offs, mask=mask, other=0)
            for s in range(1, n_slots):
                acc += tl.load(ws_ptr + s * slot_size + offs, mask=mask, other=0)
            _epilogue(acc, rm, rn, M, N, out_base, bias_ptr + b.to(tl.int64) * s_bias, scale_ptr, offset_ptr,
                      pertoken_ptr, SCALE_MODE, OFFSET_MODE, HAS_PERTOKEN, BIAS_MODE, REQUANT)
