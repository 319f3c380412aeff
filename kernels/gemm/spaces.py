"""Config spaces and derived defaults of the GEMM kernels, per target, from the hardware's sizes.

A config is a BLOCK_M x BLOCK_N output tile, BLOCK_K deep, GROUP_M m-tiles per L2 group (plus SPLIT_K for the
decode variants, num_warps / num_stages on CUDA). Ascend tiles are whole 16x32 int8 fractals fitting L0A/L0B
(ping-pong), L0C (int32 acc), L1 and the UB that bishengir plans for the epilogue and for any decoder that runs in
the vector unit (``_ascend_ub``); decode (m <= 16) uses BLOCK_M = 16 so every weight byte is read once. CUDA
defaults come from the cuda check (no spills; wgmma on sm_90).
"""
from __future__ import annotations

from ..autotune.targets import Target
from .formats import A8W4_K_STEP, SPARSE_CHUNK, AFormat, BFormat, ScaleMode
from .split_k import SPLIT_K_CHOICES
from .variants import GemmVariant


# A config is BLOCK_M x BLOCK_N output tile, BLOCK_K deep, GROUP_M m-tiles per L2 group.
# Ascend (A2/A3 cube): A tile (BLOCK_M, BLOCK_K) int8 and B tile (BLOCK_K, BLOCK_N) int8 each fit half of
# L0A / L0B (ping-pong), the int32 accumulator fits L0C, double-buffered A+B fit L1, the fp32 epilogue tile
# fits half the UB; tiles are whole 16x32 int8 fractals (BLOCK_M % 16, BLOCK_K % 32, BLOCK_N % 32).
# CUDA: stages x (A + B) bytes fit shared memory; the int32 accumulator stays under ~128 registers per thread.

def _is_a8w4(variant: GemmVariant) -> bool:
    return variant.grouped


def _min_block_k(target: Target, variant: GemmVariant) -> int:
    if variant.a_format == AFormat.INT4:  # its dots are BLOCK_K/8 deep: at least one int8 fractal
        return 256                                     # (Ascend) / one int8 mma k-step (CUDA)
    if _is_a8w4(variant):
        return A8W4_K_STEP
    if target.is_ascend and variant.b_format != BFormat.SPARSE:
        return 64  # only the sparse decoder, in the vector unit, needs a k-step as shallow as one fractal
    return 32


def _ascend_ub(variant: GemmVariant, bm: int, bn: int, bk: int) -> int:
    """UB bytes bishengir plans for a tile, fitted to its numbers on Ascend910B2 (multi-buffering off where it
    retries without it). The epilogue costs per output element (a 16-row tile costs like 64 rows: each vector
    core gets 8 padded rows); ND and NZ loads go to L1 and cost no UB; the int4 and sparse decoders run in the
    vector unit and cost per decoded element."""
    if _is_a8w4(variant):
        # x2 unpacked A8W4_SUB rows per dot (K loop): 128 KiB whatever the tile (the int32 -> int8 cast's 64 KiB
        # scratch, the (32, BLOCK_N / 8, 8) slab padded to 32 bytes per row of 8), 400 bytes per column (the
        # slab, its column sums, the group's scale row) and 24 per output element (int32 group sum, float32
        # accumulator, epilogue); BLOCK_K adds nothing once multi-buffering is off. Fitted on Ascend910B2:
        # fits 16x32, 32x32, 64x32 (BLOCK_K 64 or 256), 16x64 (64, 128, 256); overflows 128x32, 32x64, 64x64,
        # 16x128 (205-337 KB)
        return 128 * 1024 + 400 * bn + 24 * bm * bn
    c = variant.constexprs
    out = max(bm, 64) * bn
    epilogue = 11 * out if c["REQUANT"] else 2 * out if c["SCALE_MODE"] == ScaleMode.NONE else 5 * out // 2
    b_fmt = variant.b_format
    if b_fmt == BFormat.INT4_N:  # x2's (BLOCK_K/8, BLOCK_N) rows of one nibble, unpacked along n
        return epilogue + 36 * bn * bk // 8
    if b_fmt == BFormat.INT4_K:
        return epilogue + 17 * (bm + bn) * bk // 8
    if b_fmt == BFormat.SPARSE:  # mask bits, their cumsum, gather indices and values per weight element
        return epilogue + 21 * bk * bn
    return epilogue


def _ascend_fits(target: Target, variant: GemmVariant, bm: int, bn: int, bk: int) -> bool:
    # NZ x2 is staged in L1 as whole column fractals: bk * (1024 + 2 bm) bytes planned on Ascend910B2
    l1 = bk * (1024 + 2 * bm) if variant.b_format == BFormat.NZ else 2 * (bm * bk + bk * bn)
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


def _space(target: Target, variant: GemmVariant) -> list:
    configs = []
    sparse = variant.b_format == BFormat.SPARSE
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
                    if (variant.b_format == BFormat.INT4_N and target.name == "sm_90" and bm >= 64
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
    if variant.decode and not variant.split and default in configs:
        # the tuner may also fix the default tile's split (SPLIT_K absent: the launcher chooses it per shape)
        configs += [{**default, "SPLIT_K": s} for s in SPLIT_K_CHOICES]
    return configs


# Ascend (prefill, decode) tiles per B format, BLOCK_M x BLOCK_N x BLOCK_K. Every epilogue fits the ND tiles
# (an int8 output needs the most UB: 11 bytes per output element). The int4 and sparse decoders run in the
# vector unit, so their tiles are as large as the UB allows.
_ASCEND_DEFAULT = {
    BFormat.ND: ((128, 128, 256), (16, 256, 128)),
    BFormat.NZ: ((128, 128, 256), (16, 256, 128)),
    BFormat.INT4_K: ((128, 128, 256), (16, 128, 256)),
    BFormat.INT4_N: ((128, 128, 256), (16, 128, 256)),
    BFormat.SPARSE: ((128, 128, 32), (16, 128, 64)),
}


def _default(target: Target, variant: GemmVariant) -> dict:
    """Derived defaults. Decode variants (m <= 16): BLOCK_M covers all rows, so each weight byte is read once,
    and a wide BLOCK_N keeps x1's re-reads (once per n-tile) small against the weight."""
    decode = variant.decode
    min_bk = _min_block_k(target, variant)
    if target.backend == "cpu":  # interpreter: large tiles mean fewer numpy round trips
        return {"BLOCK_M": 16 if decode else 64, "BLOCK_N": 256 if decode else 128,
                "BLOCK_K": 256 if _is_a8w4(variant) else max(min_bk, 128), "GROUP_M": 8}
    if variant.b_format == BFormat.SPARSE and target.backend == "cuda":
        # from the cuda check: no spills with the decode's bits/cumsum/indices next to the accumulator
        return {"BLOCK_M": 16 if decode else 32, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
                "num_stages": 2}
    if target.is_ascend and _is_a8w4(variant):  # the largest tiles bishengir fits (Ascend910B2, see _ascend_ub)
        bm, bn, bk = (16, 64, 256) if decode else (64, 32, 256)
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}
    if target.is_ascend:  # verified by the ascend check on Ascend910B2 and Ascend910_9391 (UB bytes planned there)
        bm, bn, bk = _ASCEND_DEFAULT[variant.b_format][decode]
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}
    # CUDA: chosen from the cuda check (no spills; wgmma on sm_90 where Triton can use it).
    if _is_a8w4(variant) and target.name == "sm_90":  # int32 group sum + float32 accumulator: 64x128 spills
        if decode:  # all rows of a decode launch in one tile (mma.sync: wgmma needs 64 rows); 4 warps spill split
            return {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    if variant.a_format == AFormat.INT4:  # 4 warps spill 8 bytes on sm_90 (i4-k)
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 256, "GROUP_M": 8, "num_warps": 8, "num_stages": 2}
    if target.name == "sm_90":  # wgmma needs a 64-row warpgroup tile; for decode the extra rows are masked
        return {"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
    return {"BLOCK_M": 16 if decode else 64, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8,
            "num_stages": 3}


def _reduce_space(target: Target, variant: GemmVariant) -> list:
    """The split-K reduction's tiles: 16 rows (it serves m <= 16), a BLOCK_N of int32 slots per load (the launch
    narrows it, down to 32, while its tiles are fewer than the vector cores: ``dispatch.reduce_config``)."""
    warps = ({"num_warps": 4},) if target.backend == "cuda" else ({},)
    return [{"BLOCK_M": 16, "BLOCK_N": bn, **w} for bn in (32, 64, 128, 256) for w in warps]


def _reduce_default(target: Target, variant: GemmVariant) -> dict:
    """On Ascend 16 x 128: a 16-row tile costs the UB like 64 rows (8 padded rows per vector core, see
    ``_ascend_ub``), and an int8 output's epilogue 11 bytes per element of those."""
    return {"BLOCK_M": 16, "BLOCK_N": 128 if target.is_ascend else 256,
            **({"num_warps": 4} if target.backend == "cuda" else {})}
