"""add_rms_norm_quant's and add_rms_norm_dynamic_quant's argument checks: TypeError/ValueError naming the
argument, what was given and what is allowed; torch_npu's scalar and list arguments (y_dtype / dst_type, epsilon,
output_mask) read as torch_npu reads them.
"""
from __future__ import annotations

import numpy as np
import torch

from ._validate import check_common, check_tensor

_X_DTYPES = (torch.float16, torch.bfloat16)
_SCALE_DTYPES = (torch.float32, torch.bfloat16)
_ZP_DTYPES = (torch.int32, torch.bfloat16, torch.float32)


def _like(op: str, name: str, t, like: torch.Tensor, like_name: str, shape, optional: bool = True):
    """t (optional) must have like's dtype and the given shape."""
    check_tensor(op, name, t, dtypes=(like.dtype,), optional=optional)
    if t is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {list(shape)} (from {like_name}), got {list(t.shape)}")


def _check_x(op: str, x1, x2, ndim):
    check_tensor(op, "x1", x1, dtypes=_X_DTYPES, ndim=ndim)
    check_tensor(op, "x2", x2, dtypes=(x1.dtype,))
    if x2.shape != x1.shape:
        raise ValueError(f"{op}: x2 must have the shape of x1 {list(x1.shape)}, got {list(x2.shape)}")


def _validate_dynamic(x1, x2, gamma, smooth_scale1, smooth_scale2, beta) -> tuple:
    """(rows, N) of a dynamic call; errors name the argument."""
    op = "npu_add_rms_norm_dynamic_quant"
    check_common(op, {"x1": x1, "x2": x2, "gamma": gamma, "smooth_scale1": smooth_scale1,
                      "smooth_scale2": smooth_scale2, "beta": beta})
    _check_x(op, x1, x2, (2, 8))
    n = x1.shape[-1]
    _like(op, "gamma", gamma, x1, "x1's last dim", [n], optional=False)
    for name, t in (("smooth_scale1", smooth_scale1), ("smooth_scale2", smooth_scale2), ("beta", beta)):
        _like(op, name, t, x1, "x1's last dim", [n])
    return x1.numel() // n if n else 0, n


def _validate_static(x1, x2, gamma, scales1, zero_points1, beta, scales2, zero_points2) -> tuple:
    """(rows, N): the norm runs over x1's trailing gamma.dim() dims (N = gamma.numel())."""
    op = "npu_add_rms_norm_quant"
    check_common(op, {"x1": x1, "x2": x2, "gamma": gamma, "scales1": scales1, "zero_points1": zero_points1,
                      "beta": beta, "scales2": scales2, "zero_points2": zero_points2})
    _check_x(op, x1, x2, (1, 8))
    check_tensor(op, "gamma", gamma, dtypes=(x1.dtype,), ndim=(1, x1.dim()))
    if tuple(x1.shape[x1.dim() - gamma.dim():]) != tuple(gamma.shape):
        raise ValueError(f"{op}: gamma's shape must equal x1's trailing dims (the normalised ones), got gamma "
                         f"{list(gamma.shape)} for x1 {list(x1.shape)}")
    shape = list(gamma.shape)
    check_tensor(op, "scales1", scales1, dtypes=_SCALE_DTYPES)
    _like(op, "scales1", scales1, scales1, "gamma", shape)
    _like(op, "scales2", scales2, scales1, "gamma", shape)
    check_tensor(op, "zero_points1", zero_points1, dtypes=_ZP_DTYPES, optional=True)
    if zero_points1 is not None:
        _like(op, "zero_points1", zero_points1, zero_points1, "gamma", shape)
    check_tensor(op, "zero_points2", zero_points2, dtypes=_ZP_DTYPES, optional=True)
    if zero_points2 is not None:
        _like(op, "zero_points2", zero_points2, zero_points1 if zero_points1 is not None else zero_points2,
              "gamma", shape)
    _like(op, "beta", beta, x1, "gamma", shape)
    n = gamma.numel()
    return x1.numel() // n if n else 0, n



def _int8_dtype(op: str, name: str, value):
    """torch_npu's int? output dtype: None, torch.int8 or its ScalarType code 1 (only int8 is produced here)."""
    if value is None or value is torch.int8 or (isinstance(value, int) and not isinstance(value, bool) and value == 1):
        return
    raise ValueError(f"{op}: {name} must be None or torch.int8 (int8 output; int4 / torch.quint4x2 output is not "
                     f"supported), got {value!r}")


def _float_arg(op: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: {name} must be a float, got {type(value).__name__} {value!r}"[:300])
    return float(value)


def _output_mask(op: str, output_mask, smooth_scale1, smooth_scale2) -> tuple:
    """(out1, out2) as torch_npu derives them from output_mask (None or [] = y1, plus y2 when both smooth scales)."""
    if output_mask is None or (isinstance(output_mask, (list, tuple)) and len(output_mask) == 0):
        return True, smooth_scale1 is not None and smooth_scale2 is not None
    if not isinstance(output_mask, (list, tuple)) or len(output_mask) != 2 or \
            not all(isinstance(b, (bool, np.bool_)) for b in output_mask):
        raise TypeError(f"{op}: output_mask must be None or a list of 2 bools, got {output_mask!r}"[:300])
    out1, out2 = bool(output_mask[0]), bool(output_mask[1])
    if not (out1 or out2):
        raise ValueError(f"{op}: output_mask [False, False] asks for no output; at least one must be True")
    for i, (name, s, on) in enumerate((("smooth_scale1", smooth_scale1, out1),
                                       ("smooth_scale2", smooth_scale2, out2))):
        if s is not None and not on:
            raise ValueError(f"{op}: {name} is given but output_mask[{i}] is False; torch_npu requires the "
                             f"matching output to be on")
    return out1, out2
