"""The int32-accumulator GEMM kernel: ``quant_matmul.gemm`` (every format but A8W4, and matmul_compress_dequant).

One persistent, block-tiled kernel: every program loops over work items (batch, m-tile, n-tile, K split); per item,
int8 tiles (``loaders``) go through tl.dot into an int32 accumulator, and ``epilogue._epilogue`` applies the whole
dequant/requant; only the output is written to memory. Operand formats and epilogue modes are constexpr branches
(``formats``). A split launch (SPLIT, decode shapes with fewer tiles than cores, ``split_k``) stores int32 partials
instead and ``kernel_reduce`` sums them and runs the epilogue.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .epilogue import _epilogue
from .formats import A_INT4, B_INT4_K, B_INT4_N, OFFSET_FROM_SCALE, SCALE_I64, SCALE_I64_GROUP, SCALE_NONE
from .loaders import _load_a_tile, _load_b_tile, _load_int4_n_rows, _nibble


@triton.jit
def _store_partial(ws_ptr, acc, slot, b, rm, rn, M, N, n_batch):
    """Store an int32 (BLOCK_M, BLOCK_N) partial into workspace slot ``slot`` of batch ``b``: the workspace is
    (slots, n_batch, M, N) int32, the layout ``kernel_reduce`` reads (under 2**31 elements: split_k.plan caps it)."""
    base = ws_ptr + (slot * n_batch + b) * M * N
    tl.store(base + rm[:, None] * N + rn[None, :], acc, mask=(rm < M)[:, None] & (rn < N)[None, :])


@triton.jit
def _qmm_kernel(a_ptr, b_ptr, out_ptr, scale_ptr, offset_ptr, pertoken_ptr, bias_ptr, bv_ptr, bo_ptr, ws_ptr,
                M, N, K, n_batch, D1, D2, D3,
                sa0, sa1, sa2, sa3, sam, sak, sb0, sb1, sb2, sb3, sbk, sbn,
                s_bias, nz_k1, n_splits, k_per_split,
                A_FORMAT: tl.constexpr, B_FORMAT: tl.constexpr, SCALE_MODE: tl.constexpr,
                OFFSET_MODE: tl.constexpr, HAS_PERTOKEN: tl.constexpr, BIAS_MODE: tl.constexpr,
                REQUANT: tl.constexpr, A_K_UNIT: tl.constexpr, B_K_UNIT: tl.constexpr, B_N_UNIT: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                GROUP_M: tl.constexpr, SPLIT: tl.constexpr = False):
    """out[b] (M, N) = epilogue(x1[b] @ x2[b]) for the flattened broadcast batch b < n_batch = D0*D1*D2*D3.

    Batch strides sa*/sb* are 0 along broadcast dims; s_bias is bias's stride per flattened batch (0 for 1-D bias).
    Offsets inside one matrix are 32-bit (the launcher checks); batch offsets are 64-bit.
    *_UNIT: that stride is 1, made a compile-time constant so loads vectorize along it.
    SPLIT (see split_k.py): item = tile * n_splits + split covers K rows [split * k_per_split, .. + k_per_split)
    and stores its int32 partial in workspace slot ``split`` (ws_ptr, (n_splits, n_batch, M, N)); no epilogue
    here. Without SPLIT, n_splits, k_per_split and ws_ptr are not read.
    """
    tl.static_assert(SCALE_MODE != SCALE_I64_GROUP, "group scales are the A8W4 kernel's (float accumulator)")
    tl.static_assert(A_FORMAT != A_INT4 or (B_FORMAT == B_INT4_N or B_FORMAT == B_INT4_K),
                     "packed int4 x1 pairs only with a packed int4 x2")
    tl.static_assert(not REQUANT or SCALE_MODE != SCALE_NONE, "an int8 output needs a scale")
    tl.static_assert(OFFSET_MODE != OFFSET_FROM_SCALE or SCALE_MODE == SCALE_I64,
                     "the offset comes from an int64 quant param")
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
    n_items = n_batch * per_batch
    if SPLIT:
        n_items = n_items * n_splits
    for item in range(pid, n_items, tl.num_programs(0)):
        if SPLIT:
            tile = item // n_splits
            split = item % n_splits
            k_lo = split * k_per_split
            k_hi = tl.minimum(K, k_lo + k_per_split)  # the loads mask at k_hi as they do at K
        else:
            tile = item
            k_lo = 0
            k_hi = K
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
            else:
                a = _load_a_tile(a_base, rm, k0, M, k_hi, sam, sak, BLOCK_K)
                bt = _load_b_tile(b_base, bv_ptr, bo_ptr, k0, n0, k_hi, N, sbk, sbn, nz_k1, B_FORMAT, B_K_UNIT,
                                  BLOCK_K, BLOCK_N)
                acc = tl.dot(a, bt, acc)
        if SPLIT:
            _store_partial(ws_ptr, acc, split, b, rm, rn, M, N, n_batch)
        else:
            _epilogue(acc, rm, rn, M, N, out_ptr + b.to(tl.int64) * M * N, bias_ptr + b.to(tl.int64) * s_bias,
                      scale_ptr, offset_ptr, pertoken_ptr, SCALE_MODE, OFFSET_MODE, HAS_PERTOKEN, BIAS_MODE, REQUANT)
