"""ascend-run cases for kernels/dynamic_quant.py: each variant's own dtypes and features vs the reference.

A launch takes a registered variant only when its constexprs match, so each case builds inputs that give the
variant's ASYM / INT4 / SMOOTH / ONE_PASS (ONE_PASS: K = 200 fits every BLOCK_K of the Ascend space, K = 2056
exceeds them all). Every output (y, scale, offset) is compared byte for byte.
"""
from __future__ import annotations

import importlib


def _dynamic_case(label: str):
    import torch
    op = importlib.import_module("..dynamic_quant", __package__)  # the package's `dynamic_quant` is the op
    from ..reference import dynamic_quant as ref
    from .cases import torch_dtype as _torch_dtype
    v = op.KERNEL.variant(label)
    c, ty = v.constexprs, v.types
    g = torch.Generator().manual_seed(0)
    dtype = _torch_dtype(ty["x_ptr"])
    rows, k = (13, 200) if c["ONE_PASS"] else (5, 2056)
    x = (torch.randn((rows, k), generator=g) * 4).to(dtype)
    x[1] = 0  # an all-zero row
    kw = {}
    if c["SMOOTH"] == op.SMOOTH_VECTOR:
        kw["smooth_scales"] = (torch.rand(k, generator=g) + 0.5).to(_torch_dtype(ty["smooth_ptr"]))
    elif c["SMOOTH"] == op.SMOOTH_GROUPED:  # an empty expert, and rows past the last end (not smoothed)
        kw["smooth_scales"] = (torch.rand((3, k), generator=g) + 0.5).to(_torch_dtype(ty["smooth_ptr"]))
        kw["group_index"] = torch.tensor([3, 3, rows - 2], dtype=_torch_dtype(ty["group_ptr"]))
    dst = "int4" if c["INT4"] else "int8"
    dst_type = torch.quint4x2 if c["INT4"] else torch.int8
    if c["ASYM"]:
        expected = ref.dynamic_quant_asymmetric(x, kw.get("smooth_scales"), kw.get("group_index"), dst)
        names = ("y", "scale", "offset")
        return (lambda: op.dynamic_quant_asymmetric(x, dst_type=dst_type, **kw),
                [(n, e, "bytes") for n, e in zip(names, expected)])
    expected = ref.dynamic_quant(x, kw.get("smooth_scales"), kw.get("group_index"), dst)
    return (lambda: op.dynamic_quant(x, dst_type=dst_type, **kw),
            [(n, e, "bytes") for n, e in zip(("y", "scale"), expected)])


def _quantize_case(label: str):
    import torch
    op = importlib.import_module("..dynamic_quant", __package__)  # the package's `dynamic_quant` is the op
    from ..reference import dynamic_quant as ref
    from .cases import torch_dtype as _torch_dtype
    v = op.QKERNEL.variant(label)
    c, ty = v.constexprs, v.types
    g = torch.Generator().manual_seed(0)
    if c["INT4"]:  # per channel along a middle axis: channel (i // 16) % 5
        shape, axis, ax, dtype = (3, 5, 16), 1, 1, torch.quint4x2
    else:  # vllm-ascend's static W8A8 call: per-channel scale and offset along the last dim
        shape, axis, ax, dtype = (6, 40), -1, 1, torch.qint8
    x = (torch.randn(shape, generator=g) * 3).to(_torch_dtype(ty["x_ptr"]))
    ch = shape[ax]
    scales = (torch.rand(ch, generator=g) + 0.25).to(_torch_dtype(ty["scale_ptr"]))
    zp_dtype = _torch_dtype(ty["zp_ptr"])
    zp = (torch.randint(-4, 4, (ch,), generator=g)).to(zp_dtype) if c["HAS_ZP"] else None
    dst = "int4" if c["INT4"] else "int8"
    expected = ref.quantize(x, scales, zp, dst, ax, c["DIV"])
    return lambda: op.quantize(x, scales, zp, dtype, axis, c["DIV"]), [("y", expected, "bytes")]


def case(kernel_name: str, label: str):
    """(call, expected) for one variant of dynamic_quant.rowwise or quantize.static."""
    if kernel_name == "dynamic_quant.rowwise":
        return _dynamic_case(label)
    if kernel_name == "quantize.static":
        return _quantize_case(label)
    raise KeyError(f"no ascend-run case for {kernel_name}")
