"""quant_matmul: int8/int4 GEMM with the whole dequant/requant fused into the epilogue (torch_npu.npu_quant_matmul).

This file is the op: validation with clear errors, the torch.library custom op and its fake, the public function,
the torch_npu spellings and the GEMM's tuning launches. The GEMM itself (kernels, operand formats, epilogue,
split-K, config spaces, the launch) is the ``gemm`` package: ``_plan`` turns the arguments into a
``gemm.GemmPlan`` and ``gemm.launch`` runs it (``quant_matmul.gemm``; A8W4 on ``quant_matmul.gemm_a8w4``).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import _backend, compress_matmul
from ._validate import call_op, check_choice, check_common, check_tensor, int_arg, int_list
from .gemm import GEMM, GEMM_A8W4, GEMM_REDUCE, AFormat, BFormat, GemmPlan, GemmVariant, launch, modes
from .gemm.formats import A8W4_K_STEP, NZ_M0, NZ_N0
from .gemm.tuning import A8W4_GROUP, reduce_tuning, seeded_draws, tuning
from .int4_pack import convert_weight_to_int4pack, nd_to_nz
from .reference import quant_matmul as ref

OP = "quant_matmul"
MAX_DIMS = 6


# ---------------------------------------------------------------- validation (shared by the kernel path and the fake)
_OUT_DTYPES = (torch.int8, torch.float16, torch.bfloat16, torch.int32)


def _name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _allowed(int4: bool, out: torch.dtype, pertoken: bool) -> tuple:
    """(scale dtypes, bias dtypes, pertoken allowed, pertoken required) of the valid A2/A3 dtype rows."""
    i64, f32, bf16, f16, i32 = torch.int64, torch.float32, torch.bfloat16, torch.float16, torch.int32
    if int4:
        if out == f16:
            return ((f32,) if pertoken else (i64, f32)), (i32,), True, False
        return (f32,), (i32,), True, True  # bf16
    if out == torch.int8:
        return (i64, f32), (i32,), False, False
    if out == f16:
        return ((f32,), (i32, f16, f32), True, False) if pertoken else ((i64, f32), (i32,), True, False)
    if out == bf16:
        return (f32, bf16), (i32, bf16, f32), True, False
    return (f32, bf16), (i32,), False, False  # int32


def _check_vector(name: str, t: torch.Tensor, lengths: tuple, what: str):
    if t.dim() != 1 or t.shape[0] not in lengths:
        want = " or ".join(f"({n},)" for n in dict.fromkeys(lengths))
        raise ValueError(f"{OP}: {name} must have shape {want} ({what}), got {tuple(t.shape)}")


def _plan_a8w4(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, g) -> GemmPlan:
    """A8W4: x1 int8 (m, k), x2 int32 (k, n/8), scale int64 (k/g, n), offset/pertoken float32 (A2/A3 row)."""
    check_tensor(OP, "x1", x1, ndim=2)
    check_tensor(OP, "x2", x2, ndim=2)
    if x2_layout != "nd":
        raise ValueError(f"{OP}: x2_layout='nz' takes an int8 x2; an int4-packed x2 must be ND")
    out = output_dtype
    if out not in (torch.float16, torch.bfloat16):
        raise TypeError(f"{OP}: output_dtype must be float16 or bfloat16 for int8 x1 with int4 x2 (A8W4), "
                        f"got {output_dtype}")
    (m, k), n = x1.shape, 8 * x2.shape[1]
    if x2.shape[0] != k:
        raise ValueError(f"{OP}: K mismatch: int8 x1 {tuple(x1.shape)} has k = {k}, so the int4-packed x2 must "
                         f"be ({k}, n/8), got {tuple(x2.shape)}")
    if not g:
        raise ValueError(f"{OP}: int8 x1 with int4 x2 (A8W4) needs group_sizes=[0, 0, g] (the k-group of scale)")
    if g % A8W4_K_STEP or k % g:
        raise ValueError(f"{OP}: group_sizes' k-group g must be a multiple of {A8W4_K_STEP} (the kernel's K step) "
                         f"and divide k = {k}, got g = {g}")
    check_tensor(OP, "scale", scale, dtypes=(torch.int64,), ndim=2)
    if tuple(scale.shape) != (k // g, n):
        raise ValueError(f"{OP}: scale must have shape (k/g, n) = ({k // g}, {n}) for A8W4, got {tuple(scale.shape)}")
    if offset is not None:
        check_tensor(OP, "offset", offset, dtypes=(torch.float32,))
        _check_vector("offset", offset, (n,), f"n = {n} from x2")
    if pertoken_scale is not None:
        check_tensor(OP, "pertoken_scale", pertoken_scale, dtypes=(torch.float32,))
        _check_vector("pertoken_scale", pertoken_scale, (m,), f"m = {m} from x1")
    if bias is not None:
        raise ValueError(f"{OP}: bias must be None for int8 x1 with int4 x2 (A8W4)")
    return GemmPlan(m, k, n, (), out, modes(AFormat.INT8, BFormat.INT4_N, out, torch.int64, None, offset is not None,
                                            pertoken_scale is not None, g), g)


def _check_nd_x2_shape(x2_shape, x2, k: int, n: int) -> None:
    """x2_shape only says something for an NZ x2 (its unpadded n); for an ND x2 it may only repeat (k, n)."""
    if x2_shape is not None and tuple(x2_shape) != (k, n):
        raise ValueError(f"{OP}: x2_shape must be None or ({k}, {n}) for ND x2 {tuple(x2.shape)} (it gives the "
                         f"unpadded (k, n) of an NZ x2), got {tuple(x2_shape)}")


def _plan(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape, group_k=0) -> GemmPlan:
    """Validate every argument; return shapes and kernel modes. Errors name the argument."""
    check_tensor(OP, "x1", x1, dtypes=(torch.int8, torch.int32))
    check_tensor(OP, "x2", x2, dtypes=(torch.int8, torch.int32))
    check_common(OP, {"x1": x1, "x2": x2, "scale": scale, "offset": offset, "pertoken_scale": pertoken_scale,
                      "bias": bias})
    if x1.dtype == torch.int8 and x2.dtype == torch.int32:
        plan = _plan_a8w4(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, group_k)
        _check_nd_x2_shape(x2_shape, x2, plan.k, plan.n)
        return plan
    if group_k:
        raise ValueError(f"{OP}: group_sizes (k-group {group_k}) is only for int8 x1 with int4-packed int32 x2 "
                         f"(A8W4), got x1 {_name(x1.dtype)} and x2 {_name(x2.dtype)}")
    if x2.dtype != x1.dtype:
        raise TypeError(f"{OP}: x2 must have the dtype of x1 (int8 x int8, or int32 x int32 for packed int4), "
                        f"got x1 {_name(x1.dtype)} and x2 {_name(x2.dtype)}")
    check_choice(OP, "x2_layout", x2_layout, ("nd", "nz"))
    out = torch.int8 if output_dtype is None else output_dtype
    if out not in _OUT_DTYPES:
        raise TypeError(f"{OP}: output_dtype must be None (int8), int8, float16, bfloat16 or int32, got {output_dtype}")
    int4 = x1.dtype == torch.int32
    batch: tuple = ()
    if int4:
        check_tensor(OP, "x1", x1, ndim=2)
        check_tensor(OP, "x2", x2, ndim=2)
        if x2_layout != "nd":
            raise ValueError(f"{OP}: x2_layout='nz' takes an int8 x2; packed int4 x2 must be ND")
        if out not in (torch.float16, torch.bfloat16):
            raise TypeError(f"{OP}: output_dtype must be float16 or bfloat16 for packed int4 inputs, got {_name(out)}")
        m, k = x1.shape[0], 8 * x1.shape[1]
        if x2.shape[0] == k:  # k = 0: a (0, c) x2 reads as (k, n/8), as the reference does
            b_fmt, n = BFormat.INT4_N, 8 * x2.shape[1]
        elif 8 * x2.shape[0] == k:
            b_fmt, n = BFormat.INT4_K, x2.shape[1]
        else:
            raise ValueError(f"{OP}: K mismatch: x1 {tuple(x1.shape)} packs k = {k}, so x2 must be ({k}, n/8) or "
                             f"({k // 8}, n), got {tuple(x2.shape)}")
    else:
        check_tensor(OP, "x1", x1, ndim=(2, MAX_DIMS))
        m, k = x1.shape[-2:]
        if x2_layout == "nz":
            check_tensor(OP, "x2", x2, ndim=4)
            n1, k1, m0, n0 = x2.shape
            if (m0, n0) != (NZ_M0, NZ_N0):
                raise ValueError(f"{OP}: an NZ x2 must have shape (ceil(n/32), ceil(k/16), 16, 32), "
                                 f"got {tuple(x2.shape)}")
            if k1 != math.ceil(k / NZ_M0):
                raise ValueError(f"{OP}: K mismatch: x1's last dim is {k}, but NZ x2 {tuple(x2.shape)} holds "
                                 f"k <= {k1 * NZ_M0} in {k1} row fractals (needs ceil(k/16) = {math.ceil(k / NZ_M0)})")
            n = n1 * NZ_N0 if x2_shape is None or len(x2_shape) != 2 else x2_shape[1]
            if x2_shape is not None and (len(x2_shape) != 2 or x2_shape[0] != k or n <= 0
                                         or math.ceil(n / NZ_N0) != n1):
                raise ValueError(f"{OP}: x2_shape must be ({k}, n) with ceil(n/32) = {n1} for NZ x2 "
                                 f"{tuple(x2.shape)}, got {tuple(x2_shape)}")
            b_fmt, batch = BFormat.NZ, tuple(x1.shape[:-2])
        else:
            check_tensor(OP, "x2", x2, ndim=(2, MAX_DIMS))
            if x2.shape[-2] != k:
                raise ValueError(f"{OP}: K mismatch: x1 {tuple(x1.shape)} has k = {k} in its last dim but x2 "
                                 f"{tuple(x2.shape)} has {x2.shape[-2]} in its second-to-last dim")
            n = x2.shape[-1]
            try:
                batch = tuple(torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2]))
            except RuntimeError:
                raise ValueError(f"{OP}: batch dims of x1 {tuple(x1.shape[:-2])} and x2 {tuple(x2.shape[:-2])} "
                                 f"do not broadcast (each pair must be equal or 1)") from None
            b_fmt = BFormat.ND
    if b_fmt is not BFormat.NZ:
        _check_nd_x2_shape(x2_shape, x2, k, n)
    a_fmt = AFormat.INT4 if int4 else AFormat.INT8
    pertoken = pertoken_scale is not None
    scale_dtypes, bias_dtypes, pt_ok, pt_needed = _allowed(int4, out, pertoken)
    rows = f"{'int4' if int4 else 'int8'} inputs with {_name(out)} output"
    check_tensor(OP, "scale", scale, dtypes=(torch.int64, torch.float32, torch.bfloat16), ndim=1)
    if scale.dtype not in scale_dtypes:
        raise TypeError(f"{OP}: scale must have dtype {', '.join(map(_name, scale_dtypes))} for {rows}"
                        f"{' and pertoken_scale' if pertoken else ''}, got {_name(scale.dtype)}")
    _check_vector("scale", scale, (1, n), f"1 or n = {n} from x2")
    if offset is not None:
        if out != torch.int8:
            raise ValueError(f"{OP}: offset is only supported with int8 output, got output_dtype={_name(out)}")
        check_tensor(OP, "offset", offset, dtypes=(torch.float32,))
        _check_vector("offset", offset, (1, n), f"1 or n = {n} from x2")
    if pertoken:
        if not pt_ok:
            raise ValueError(f"{OP}: pertoken_scale is not supported with {_name(out)} output")
        check_tensor(OP, "pertoken_scale", pertoken_scale, dtypes=(torch.float32,))
        _check_vector("pertoken_scale", pertoken_scale, (m,), f"m = {m} from x1")
    elif pt_needed:
        raise ValueError(f"{OP}: {rows} needs pertoken_scale")
    out_shape = (*batch, m, n)
    if bias is not None:
        check_tensor(OP, "bias", bias, dtypes=(torch.int32, torch.bfloat16, torch.float16, torch.float32))
        if bias.dtype not in bias_dtypes:
            raise TypeError(f"{OP}: bias must have dtype {', '.join(map(_name, bias_dtypes))} for {rows}"
                            f"{' and pertoken_scale' if pertoken else ''}, got {_name(bias.dtype)}")
        ok = tuple(bias.shape) == (n,) or (len(out_shape) == 3 and bias.dim() == 3
                                            and bias.shape[0] in (1, out_shape[0]) and tuple(bias.shape[1:]) == (1, n))
        if not ok:
            three_d = f" or ({out_shape[0]}, 1, {n})" if len(out_shape) == 3 else ""
            raise ValueError(f"{OP}: bias must have shape ({n},){three_d} (the 3-D form only for a 3-D output), "
                             f"got {tuple(bias.shape)}")
    return GemmPlan(m, k, n, batch, out, modes(a_fmt, b_fmt, out, scale.dtype, None if bias is None else bias.dtype,
                                              offset is not None, pertoken))


# ---------------------------------------------------------------- the op
@torch.library.custom_op("atlas::quant_matmul", mutates_args=())
def _quant_matmul_op(x1: torch.Tensor, x2: torch.Tensor, scale: torch.Tensor, offset: Optional[torch.Tensor],
                     pertoken_scale: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                     output_dtype: Optional[torch.dtype], x2_layout: str, x2_shape: Optional[list[int]],
                     group_k: int) -> torch.Tensor:
    plan = _plan(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape, group_k)
    device = _backend.device_of(OP, x1=x1, x2=x2, scale=scale, offset=offset, pertoken_scale=pertoken_scale,
                                bias=bias)
    if not _backend.use_kernel(OP, device):
        return ref.quant_matmul(x1, x2, scale, offset, pertoken_scale, bias, plan.out_dtype, x2_layout,
                                None if x2_layout == "nd" else (plan.k, plan.n), group_k)
    return launch(OP, plan, x1, x2, scale, offset=offset, pertoken_scale=pertoken_scale, bias=bias)


@_quant_matmul_op.register_fake
def _(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape, group_k):
    plan = _plan(x1, x2, scale, offset, pertoken_scale, bias, output_dtype, x2_layout, x2_shape, group_k)
    return x1.new_empty(plan.out_shape, dtype=plan.out_dtype)


def quant_matmul(x1: torch.Tensor, x2: torch.Tensor, scale: torch.Tensor, *, offset: Optional[torch.Tensor] = None,
                 pertoken_scale: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
                 output_dtype: Optional[torch.dtype] = None, x2_layout: str = "nd",
                 x2_shape: Optional[tuple] = None, group_sizes=None) -> torch.Tensor:
    """Quantized matmul with the dequant/requant fused: out = epilogue(x1 @ x2), int32 accumulation.

    x1: int8 (..., m, k), 2-D to 6-D, any strides; or int32 (m, k/8) holding 8 int4 each (element 0 in bits 0-3).
    x2: int8 (..., k, n), any strides (a transposed view is read in place), batch dims broadcast with x1's;
        int4: int32 (k, n/8) packed along n, or (k/8, n) packed along k (e.g. a transposed (n, k/8)); 2-D.
        x2_layout="nz": x2 is int8 FRACTAL_NZ (ceil(n/32), ceil(k/16), 16, 32) from atlas_kernels.nd_to_nz,
        read in place; x2_shape=(k, n) gives the unpadded n (default: the padded ceil(n/32)*32).
    scale: (1,) or (n,); int64 (trans_quant_param form), float32 or bfloat16.
    offset: float32 (1,) or (n,), int8 output only (overrides an offset encoded in an int64 scale).
    pertoken_scale: float32 (m,) or (m, 1).
    bias: (n,) or, for a 3-D output, (batch, 1, n); int32 (added before scaling), or bfloat16/float16/float32
        (added after scaling).
    output_dtype: None (int8), torch.int8, float16, bfloat16 or int32 (acc + bias, scale ignored).
    Returns (*broadcast batch, m, n). Valid dtype combinations are torch_npu's A2/A3 rows; others raise.
    A float32 scale counts with its top 19 bits only when there is no pertoken_scale and the output is fp16/int8
    (as torch_npu encodes it); with pertoken_scale, bf16 output or a bf16 scale it is used at full precision.

    A8W4 (group_sizes=[0, 0, g]): x1 int8 (m, k); x2 int32 (k, n/8) from convert_weight_to_int4pack;
    scale int64 (k/g, n), trans_quant_param of the per-group float32 scales; offset float32 (n,);
    pertoken_scale float32 (m,) or (m, 1); bias None; output_dtype float16 or bfloat16; g a multiple of 64
    dividing k. out[i, c] = (sum_j ((x1[i] - 8) . x2[j-th k-group, c]) * scale[j, c] + offset[c]) * pertoken[i],
    each group's sum exact in int32, the groups added in float32.
    """
    if isinstance(pertoken_scale, torch.Tensor) and pertoken_scale.dim() == 2 and pertoken_scale.shape[1] == 1:
        pertoken_scale = pertoken_scale.reshape(-1)
    return call_op(OP, torch.ops.atlas.quant_matmul, x1, x2, scale, offset, pertoken_scale, bias, output_dtype,
                   x2_layout, int_list(OP, "x2_shape", x2_shape, optional=True), _group_k(group_sizes))


def _group_k(group_sizes) -> int:
    """group_sizes [group_m, group_n, group_k] (torch_npu's int[]) -> group_k; 0 when None."""
    sizes = int_list(OP, "group_sizes", group_sizes, optional=True)
    if sizes is None:
        return 0
    if len(sizes) != 3 or sizes[0] not in (0, 1) or sizes[1] not in (0, 1) or sizes[2] < 0:
        raise ValueError(f"{OP}: group_sizes must be [0, 0, g] (per-group scales along k only on A2/A3), "
                         f"got {sizes}")
    return sizes[2]


def trans_quant_param(scale: torch.Tensor, offset: Optional[torch.Tensor] = None, round_mode: int = 0) -> torch.Tensor:
    """float32 scale (and offset) -> int64 quant param, the form quant_matmul's kernel decodes.

    scale: float32 (t,) or (1, t) (any shape); offset: float32, broadcast with scale.
    bits 0..31: float bits & 0xFFFFE000 (round_mode=1: mantissa rounded to 10 bits, half to even, instead);
    bits 37..45: clip(rint(offset), -256, 255) as a 9-bit two's complement; bit 46 set.
    """
    check_tensor("trans_quant_param", "scale", scale, dtypes=(torch.float32,))
    check_tensor("trans_quant_param", "offset", offset, dtypes=(torch.float32,), optional=True)
    round_mode = int_arg("trans_quant_param", "round_mode", round_mode)
    check_choice("trans_quant_param", "round_mode", round_mode, (0, 1))
    if offset is not None:
        try:
            shape = torch.broadcast_shapes(scale.shape, offset.shape)
        except RuntimeError:
            raise ValueError(f"trans_quant_param: offset {tuple(offset.shape)} does not broadcast with scale "
                             f"{tuple(scale.shape)}") from None
        scale, offset = scale.expand(shape), offset.expand(shape)
    return ref.trans_quant_param(scale, offset, round_mode)


def decode_quant_param(param: torch.Tensor) -> tuple:
    """int64 quant param -> (float32 scale, int32 offset): the inverse of trans_quant_param (19-bit scale)."""
    check_tensor("decode_quant_param", "param", param, dtypes=(torch.int64,))
    return ref.decode_quant_param(param)


def npu_quant_matmul(x1, x2, scale, *, offset=None, pertoken_scale=None, bias=None, output_dtype=None,
                     x1_dtype=None, x2_dtype=None, pertoken_scale_dtype=None, scale_dtype=None, group_sizes=None,
                     y_scale=None):
    """torch_npu spelling of quant_matmul (ND x2; for an NZ weight call quant_matmul(..., x2_layout='nz')).

    group_sizes=[0, 0, g]: the A8W4 path (see quant_matmul). x1_dtype, x2_dtype, pertoken_scale_dtype and
    scale_dtype reinterpret a tensor as a type of newer SoCs (fp8, hifloat8, mx scales), and y_scale quantizes
    the output there: None (or the tensor's own dtype) is accepted, anything else raises NotImplementedError.
    """
    for name, value, t in (("x1_dtype", x1_dtype, x1), ("x2_dtype", x2_dtype, x2), ("scale_dtype", scale_dtype, scale),
                           ("pertoken_scale_dtype", pertoken_scale_dtype, pertoken_scale)):
        if value is not None and not (isinstance(t, torch.Tensor) and value == t.dtype):
            raise NotImplementedError(f"npu_quant_matmul: {name}={value!r} is for newer SoCs (fp8/hifloat8/mx "
                                      f"formats); Atlas A2/A3 take None (the tensor's own dtype)")
    if y_scale is not None:
        raise NotImplementedError("npu_quant_matmul: y_scale (output quantization) is for newer SoCs; Atlas A2/A3 "
                                  "take None")
    return quant_matmul(x1, x2, scale, offset=offset, pertoken_scale=pertoken_scale, bias=bias,
                        output_dtype=output_dtype, group_sizes=group_sizes)


def npu_trans_quant_param(scale, offset=None, round_mode=0):
    """torch_npu spelling of trans_quant_param: round_mode (torch_npu's int?) None (= 0), or 0/1 as a Python or
    numpy integer or a 0-d integer tensor."""
    return trans_quant_param(scale, offset, 0 if round_mode is None else round_mode)


# ---------------------------------------------------------------- tuning harness: one launch per variant's operands
def _tune_gemm(shape: dict, variant: GemmVariant, device):
    """One launch of the variant's operand format at (m, k, n) with a typical epilogue, through the public op."""
    fmt = variant.operands
    m, k, n = shape["m"], shape["k"], shape["n"]
    ints, scales = seeded_draws()
    bias, scale_n, offset, pertoken = ints(-1000, 1000, n), scales(n), scales(n), scales(m)
    if fmt == "sparse":
        return compress_matmul.tune_call(shape, device)
    if fmt in ("i4-n", "i4-k", "a8w4"):
        w = ints(-8, 8, n, k) if fmt == "i4-k" else ints(-8, 8, k, n)
        x2 = convert_weight_to_int4pack(w.to(device))
        x2 = x2.t() if fmt == "i4-k" else x2
        if fmt == "a8w4":
            x1, scale = ints(-128, 128, m, k).to(torch.int8).to(device), trans_quant_param(scales(k // A8W4_GROUP, n))
            scale, offset, pertoken = scale.to(device), offset.to(device), pertoken.to(device)
            return lambda: quant_matmul(x1, x2, scale, offset=offset, pertoken_scale=pertoken,
                                        output_dtype=torch.float16, group_sizes=[0, 0, A8W4_GROUP])
        x1 = convert_weight_to_int4pack(ints(-8, 8, m, k).to(device))
        if fmt == "i4-k":
            scale, pertoken = scale_n.to(device), pertoken.to(device)
            return lambda: quant_matmul(x1, x2, scale, pertoken_scale=pertoken, output_dtype=torch.bfloat16)
        scale, bias = trans_quant_param(scale_n).to(device), bias.to(device)
        return lambda: quant_matmul(x1, x2, scale, bias=bias, output_dtype=torch.float16)
    x1, w = ints(-128, 128, m, k).to(torch.int8).to(device), ints(-128, 128, k, n).to(torch.int8).to(device)
    bias, scale_n, offset = bias.to(device), scale_n.to(device), offset.to(device)
    if fmt == "i8-nd-t":  # a k-contiguous x2: a transposed (n, k) weight
        w = w.t().contiguous().t()
        return lambda: quant_matmul(x1, w, scale_n, offset=offset, bias=bias, output_dtype=torch.int8)
    if fmt == "i8-nz":
        nz = nd_to_nz(w)
        return lambda: quant_matmul(x1, nz, scale_n, bias=bias, output_dtype=torch.float16, x2_layout="nz",
                                    x2_shape=(k, n))
    scale = trans_quant_param(scale_n.cpu()).to(device)
    return lambda: quant_matmul(x1, w, scale, bias=bias, output_dtype=torch.float16)


GEMM.tuning = GEMM_A8W4.tuning = tuning(_tune_gemm)
GEMM_REDUCE.tuning = reduce_tuning(_tune_gemm)
