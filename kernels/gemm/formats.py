"""What a GEMM launch reads and how its epilogue treats the sum: the operand formats and epilogue modes.

Python code uses the enums; the kernels read the same numbers as ``tl.constexpr`` module constants (a jitted
function may only read constexpr globals), so each constant below is its enum member's value.

  AFormat   INT8      x1 int8, any strides, batch dims broadcast through stride 0
            INT4      x1 int32 (m, k/8), 8 int4 per word, element 0 in bits 0-3
  BFormat   ND        x2 int8 (k, n), any strides (a transposed view is read in place)
            NZ        x2 int8 FRACTAL_NZ (ceil(n/32), ceil(k/16), 16, 32) from atlas_kernels.nd_to_nz
            INT4_N    x2 int32 (k, n/8), packed along n
            INT4_K    x2 int32 (k/8, n), packed along k (e.g. the transpose of a contiguous (n, k/8))
            SPARSE    x2 = compress_matmul's bitmap-sparse weight (mask at b_ptr, nonzeros at bv_ptr, row offsets
                      at bo_ptr), decoded per tile in the prologue (matmul_compress_dequant)
  ScaleMode NONE (int32 output), I64 (trans_quant_param form), F32_TRUNC (top 19 bits, as torch_npu encodes
            it), F32, BF16; I64_GROUP: A8W4's int64 quant params (k/GROUP_K, n), one row per k-group (the
            group-scaled kernel, ``kernel_a8w4``)
  OffsetMode NONE, TENSOR (float32 (n,)), FROM_SCALE (the 9-bit offset of an int64 quant param)
  BiasMode  NONE, INT (int32, added before scaling), FLOAT (added after scaling)
"""
from __future__ import annotations

import enum

import triton.language as tl


class AFormat(enum.IntEnum):
    INT8 = 0
    INT4 = 1


class BFormat(enum.IntEnum):
    ND = 0
    NZ = 1
    INT4_N = 2
    INT4_K = 3
    SPARSE = 4


class ScaleMode(enum.IntEnum):
    NONE = 0
    I64 = 1
    F32_TRUNC = 2
    F32 = 3
    BF16 = 4
    I64_GROUP = 5


class OffsetMode(enum.IntEnum):
    NONE = 0
    TENSOR = 1
    FROM_SCALE = 2


class BiasMode(enum.IntEnum):
    NONE = 0
    INT = 1
    FLOAT = 2


# the kernels' view of the enums
A_INT8 = tl.constexpr(AFormat.INT8.value)
A_INT4 = tl.constexpr(AFormat.INT4.value)
B_ND = tl.constexpr(BFormat.ND.value)
B_NZ = tl.constexpr(BFormat.NZ.value)
B_INT4_N = tl.constexpr(BFormat.INT4_N.value)
B_INT4_K = tl.constexpr(BFormat.INT4_K.value)
B_SPARSE = tl.constexpr(BFormat.SPARSE.value)
SCALE_NONE = tl.constexpr(ScaleMode.NONE.value)
SCALE_I64 = tl.constexpr(ScaleMode.I64.value)
SCALE_F32_TRUNC = tl.constexpr(ScaleMode.F32_TRUNC.value)
SCALE_F32 = tl.constexpr(ScaleMode.F32.value)
SCALE_BF16 = tl.constexpr(ScaleMode.BF16.value)
SCALE_I64_GROUP = tl.constexpr(ScaleMode.I64_GROUP.value)
OFFSET_NONE = tl.constexpr(OffsetMode.NONE.value)
OFFSET_TENSOR = tl.constexpr(OffsetMode.TENSOR.value)
OFFSET_FROM_SCALE = tl.constexpr(OffsetMode.FROM_SCALE.value)
BIAS_NONE = tl.constexpr(BiasMode.NONE.value)
BIAS_INT = tl.constexpr(BiasMode.INT.value)
BIAS_FLOAT = tl.constexpr(BiasMode.FLOAT.value)

SPARSE_CHUNK = tl.constexpr(128)  # SPARSE: columns per row offset; BLOCK_N is a multiple of it
NZ_M0, NZ_N0 = 16, 32  # int8 FRACTAL_NZ: 16 rows (k) x 32 columns (n) per fractal
A8W4_K_STEP = 64  # A8W4's k-group is a multiple of this, so some BLOCK_K of every config space divides it
A8W4_SUB = tl.constexpr(32)  # A8W4: x2 rows unpacked per dot (one int8 fractal / mma k-step deep)
