"""Operand loaders: each returns the int8 tile of x1 or x2 that the K loop feeds to ``tl.dot``.

Extension point: a new B-operand format (e.g. a decompressing weight loader) is one more ``BFormat`` member and one
more branch in ``_load_b_tile``, which must return the (BLOCK_K, BLOCK_N) int8 tile of x2 rows k0.., columns n0..
(zero outside k < K, n < N); the K loop, the tiling and the epilogue stay as they are.

What keeps a tile's UB small on Ascend (bishengir's numbers, Ascend910B2): a k-contiguous x2 is loaded as the
(BLOCK_N, BLOCK_K) rows it is stored in and transposed for the dot (free: the cube loads it that way); an NZ x2 tile
is one 3-D load of whole column fractals, not a per-element gather (187 KiB -> 34 KiB). Packed int4 x1 is never
unpacked: the dot splits by nibble (see the K loop); interleaving its nibbles in the vector unit cost about 80 bytes
of UB per element (1 MiB at 64x128x128). An int4 x2 packed along n (B_INT4_N) is unpacked at most 32 rows per dot
(A8W4_SUB; 8 strided rows per nibble for int4 x1): a whole (BLOCK_K, BLOCK_N) unpack made every A8W4 tile overflow
the UB (283 KB at 16x32x64).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .formats import B_INT4_K, B_NZ, B_SPARSE, SPARSE_CHUNK


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


