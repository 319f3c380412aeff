"""What one GEMM launch does, as data: the operand formats and epilogue modes (``Modes``), derived once from the
dtypes, and the validated shapes (``GemmPlan``) an op hands to ``launch``."""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from ..reference import quant_matmul as ref
from .formats import AFormat, BFormat, BiasMode, OffsetMode, ScaleMode


@dataclasses.dataclass(frozen=True)
class Modes:
    """The kernel's constexpr switches (``constexprs()`` names them as the kernels do)."""

    a_format: AFormat
    b_format: BFormat
    scale_mode: ScaleMode
    offset_mode: OffsetMode
    bias_mode: BiasMode
    has_pertoken: bool
    requant: bool

    def constexprs(self) -> dict:
        return {"A_FORMAT": int(self.a_format), "B_FORMAT": int(self.b_format), "SCALE_MODE": int(self.scale_mode),
                "OFFSET_MODE": int(self.offset_mode), "BIAS_MODE": int(self.bias_mode),
                "HAS_PERTOKEN": self.has_pertoken, "REQUANT": self.requant}


def modes(a_format: AFormat, b_format: BFormat, out: torch.dtype, scale: Optional[torch.dtype],
          bias: Optional[torch.dtype], offset: bool, pertoken: bool, group_k: int = 0) -> Modes:
    """The modes of a launch from its dtypes: out the output dtype, scale / bias the dtypes of those tensors
    (None: absent), offset / pertoken whether those are given, group_k A8W4's k-group (0: none).

    The scale is decoded as the op's torch_npu counterpart does (see epilogue.py); a SPARSE x2 (matmul_compress_
    dequant) takes its float32 scale at full precision."""
    if group_k:
        scale_mode = ScaleMode.I64_GROUP
    elif out == torch.int32:
        scale_mode = ScaleMode.NONE
    elif scale == torch.int64:
        scale_mode = ScaleMode.I64
    elif scale == torch.bfloat16:
        scale_mode = ScaleMode.BF16
    elif b_format != BFormat.SPARSE and ref.scale_is_truncated(scale, pertoken, out):
        scale_mode = ScaleMode.F32_TRUNC
    else:
        scale_mode = ScaleMode.F32
    offset_mode = (OffsetMode.TENSOR if offset else OffsetMode.FROM_SCALE if out == torch.int8 and scale == torch.int64
                   else OffsetMode.NONE)
    bias_mode = BiasMode.NONE if bias is None else BiasMode.INT if bias == torch.int32 else BiasMode.FLOAT
    return Modes(a_format, b_format, scale_mode, offset_mode, bias_mode, pertoken, out == torch.int8)


@dataclasses.dataclass(frozen=True)
class GemmPlan:
    """A validated call: out (*batch, m, n) of out_dtype = epilogue(x1 @ x2). group_k: A8W4's k-group (0: none)."""

    m: int
    k: int
    n: int
    batch: tuple
    out_dtype: torch.dtype
    modes: Modes
    group_k: int = 0

    @property
    def out_shape(self) -> tuple:
        return (*self.batch, self.m, self.n)


# the operand names of the launched variants (GemmVariant.operands), by (A format, B format)
_OPERANDS = {(AFormat.INT8, BFormat.ND): "i8-nd", (AFormat.INT8, BFormat.NZ): "i8-nz",
             (AFormat.INT4, BFormat.INT4_N): "i4-n", (AFormat.INT4, BFormat.INT4_K): "i4-k",
             (AFormat.INT8, BFormat.INT4_N): "a8w4", (AFormat.INT8, BFormat.SPARSE): "sparse"}


def operands(m: Modes, b_k_unit: bool) -> str:
    """The operands of a launch, as the launched variants name them: a k-contiguous int8 x2 is "i8-nd-t", a
    sparse GEMM without a scale (int32 output) "sparse-int32"."""
    name = _OPERANDS[m.a_format, m.b_format]
    if m.b_format == BFormat.ND and b_k_unit:
        return "i8-nd-t"
    if m.b_format == BFormat.SPARSE and m.scale_mode == ScaleMode.NONE:
        return "sparse-int32"
    return name
