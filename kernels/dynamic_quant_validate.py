"""dynamic_quant's and quantize's argument checks: TypeError/ValueError naming the argument, what was given and
what is allowed; torch_npu's dtype arguments mapped to output kinds.
"""
from __future__ import annotations

import torch

from ._validate import check_common, check_tensor

OP = "dynamic_quant"
QOP = "quantize"

_X_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_SMOOTH_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_GROUP_DTYPES = (torch.int32, torch.int64)
_DST = {torch.int8: "int8", torch.qint8: "int8", torch.quint4x2: "int4"}
_QUANTIZE_DST = {torch.qint8: "int8", torch.int8: "int8", torch.quint8: "uint8", torch.uint8: "uint8",
                 torch.quint4x2: "int4"}
_SCALE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_ZP_DTYPES = (torch.int8, torch.uint8, torch.int32, torch.float32, torch.float16, torch.bfloat16)


def _dst_name(op: str, dst_type, table: dict, name: str = "dst_type") -> str:
    if dst_type is None and table is _DST:
        return "int8"  # torch_npu: None means int8
    if not isinstance(dst_type, torch.dtype):
        raise TypeError(f"{op}: {name} must be a torch.dtype, got {type(dst_type).__name__} {dst_type!r}")
    if dst_type not in table:
        allowed = ", ".join(str(d) for d in table)
        raise ValueError(f"{op}: {name} must be one of {allowed}, got {dst_type}")
    return table[dst_type]


def _validate_dynamic(x, smooth_scales, group_index, dst: str):
    """Check the arguments of dynamic_quant; return (rows R, K)."""
    check_tensor(OP, "x", x, dtypes=_X_DTYPES, ndim=(1, 8))
    check_common(OP, {"x": x, "smooth_scales": smooth_scales, "group_index": group_index})
    k = x.shape[-1]
    if k == 0:
        raise ValueError(f"{OP}: the last dim of x (the quantized row) must not be empty, got shape {tuple(x.shape)}")
    if dst not in ("int8", "int4"):
        raise ValueError(f"{OP}: dst must be 'int8' or 'int4', got {dst!r}")
    if dst == "int4" and k % 8:
        raise ValueError(f"{OP}: int4 output (dst_type=torch.quint4x2) packs 8 values per int32, so the last dim "
                         f"of x must be a multiple of 8, got {k}")
    check_tensor(OP, "smooth_scales", smooth_scales, dtypes=_SMOOTH_DTYPES, optional=True)
    check_tensor(OP, "group_index", group_index, dtypes=_GROUP_DTYPES, ndim=1, optional=True)
    if group_index is not None:
        if smooth_scales is None:
            raise ValueError(f"{OP}: group_index selects rows of smooth_scales, so smooth_scales is required with it")
        if smooth_scales.dim() != 2 or smooth_scales.shape[1] != k or smooth_scales.shape[0] != group_index.shape[0]:
            raise ValueError(f"{OP}: with group_index of shape {tuple(group_index.shape)}, smooth_scales must have "
                             f"shape (E, K) = ({group_index.shape[0]}, {k}) (E from group_index, K from x), "
                             f"got {tuple(smooth_scales.shape)}")
        if group_index.shape[0] == 0:
            raise ValueError(f"{OP}: group_index must hold at least one expert, got shape (0,)")
    elif smooth_scales is not None and (smooth_scales.dim() != 1 or smooth_scales.shape[0] != k):
        raise ValueError(f"{OP}: smooth_scales must have shape (K,) = ({k},) (x's last dim; (E, K) needs "
                         f"group_index), got {tuple(smooth_scales.shape)}")
    return x.numel() // k, k



def _quant_axis(x, axis: int, div_mode: bool) -> int:
    """The dim of x that scales run along, as a non-negative index (torch_npu's rules, see docs/ops.md)."""
    nd = x.dim()
    if div_mode:
        if not -nd <= axis < nd:
            raise ValueError(f"{QOP}: axis must be in [{-nd}, {nd}) for {nd}-d input, got {axis}")
        return axis % nd
    # div_mode=False (AscendQuantV3): -2 is the second-to-last dim, any axis > -2 the last dim
    if axis < -2 or (axis == -2 and nd < 2):
        raise ValueError(f"{QOP}: with div_mode=False, axis must be -2 (second-to-last dim, input with 2+ dims) or "
                         f"> -2 (last dim), got {axis} for {nd}-d input")
    return nd - 2 if axis == -2 else nd - 1


def _validate_quantize(x, scales, zero_points, dst: str, axis: int, div_mode: bool) -> int:
    check_tensor(QOP, "input", x, dtypes=_X_DTYPES, ndim=(1, 8))
    check_common(QOP, {"input": x, "scales": scales, "zero_points": zero_points})
    check_tensor(QOP, "scales", scales, dtypes=_SCALE_DTYPES)
    check_tensor(QOP, "zero_points", zero_points, dtypes=_ZP_DTYPES, optional=True)
    ax = _quant_axis(x, axis, div_mode)
    c = x.shape[ax]
    for name, t in (("scales", scales), ("zero_points", zero_points)):
        if t is None:
            continue
        if t.numel() not in (1, c) or t.dim() > x.dim():
            raise ValueError(f"{QOP}: {name} must hold 1 value (per tensor) or input.shape[{ax}] = {c} values "
                             f"(per channel along axis {axis}), got shape {tuple(t.shape)}")
    if zero_points is not None and zero_points.numel() != scales.numel():
        raise ValueError(f"{QOP}: zero_points must have as many values as scales ({scales.numel()}), "
                         f"got shape {tuple(zero_points.shape)}")
    if dst == "int4" and x.shape[-1] % 8:
        raise ValueError(f"{QOP}: dtype=torch.quint4x2 packs 8 values per int32, so the last dim of input must be "
                         f"a multiple of 8, got {x.shape[-1]}")
    return ax
