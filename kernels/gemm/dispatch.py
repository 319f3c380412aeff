"""The one GEMM launch: a validated ``GemmPlan`` and its tensors in, the output written by the right kernel.

Both ops (quant_matmul, matmul_compress_dequant) call ``launch``; it picks the kernel (the A8W4 kernel for a
grouped plan), the variant whose config applies (``variants.launch_variants``: by operands and decode), the
config, the split-K schedule and the persistent grid, and passes each kernel the arguments it takes. No host sync.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .. import _backend
from ..autotune.registry import split_config
from ..autotune.select import pick_config
from . import split_k
from .formats import SPARSE_CHUNK, BFormat
from .plan import GemmPlan, operands
from .specs import GEMM, GEMM_A8W4
from .variants import GemmVariant, launch_variants


# (operands, decode) -> the variant whose config a launch takes, per kernel
_LAUNCHED = {spec.name: launch_variants(spec.variants) for spec in (GEMM, GEMM_A8W4)}


def _spec(plan: GemmPlan):
    return GEMM_A8W4 if plan.group_k else GEMM


def config_variant(plan: GemmPlan, b_k_unit: bool) -> GemmVariant:
    """The registry variant whose config a call uses: its operands, the decode variant for m <= 16 where one
    exists (sparse-int32 has none)."""
    table = _LAUNCHED[_spec(plan).name]
    ops = operands(plan.modes, b_k_unit)
    return table.get((ops, plan.m <= 16)) or table[ops, False]


def check_32bit(op: str, name: str, t: torch.Tensor, dims: int = 2):
    """The kernels index inside one matrix with 32-bit offsets."""
    span = sum((size - 1) * abs(stride) for size, stride in zip(t.shape[-dims:], t.stride()[-dims:]))
    if span >= 2**31:
        raise ValueError(f"{op}: {name} {tuple(t.shape)} spans {span} elements in its last {dims} dims; the kernel "
                         f"indexes one matrix with 32-bit offsets (< 2**31)")


def _batch_strides(t: torch.Tensor, batch: tuple) -> list:
    """4 batch strides of ``t`` expanded to ``batch`` (0 along broadcast and padding dims)."""
    strides = list(t.expand(*batch, *t.shape[-2:]).stride()[:-2]) if batch else []
    return [0] * (4 - len(strides)) + strides


def _per_column(t: torch.Tensor, n: int) -> torch.Tensor:
    """A (1,) or (n,) vector as a contiguous (n,): the kernel loads it with unit stride (on Ascend a runtime
    stride turns the whole epilogue into one element per 32-byte block: 8x the UB)."""
    return t.expand(n).contiguous()


def launch(op: str, plan: GemmPlan, x1: torch.Tensor, x2: torch.Tensor, scale: Optional[torch.Tensor] = None, *,
           offset: Optional[torch.Tensor] = None, pertoken_scale: Optional[torch.Tensor] = None,
           bias: Optional[torch.Tensor] = None, values: Optional[torch.Tensor] = None,
           row_offsets: Optional[torch.Tensor] = None) -> torch.Tensor:
    """out = epilogue(x1 @ x2) as ``plan`` says, on x1's device. op: the calling op's name (for errors).

    x2 as the plan's B format reads it (SPARSE: the mask, with ``values`` and ``row_offsets`` beside it);
    scale (1,) or (n,) (A8W4: (k/g, n)), None for int32 output; offset float32 (1,) or (n,); pertoken_scale (m,);
    bias (n,) or (batch, 1, n)."""
    m, n, k, batch = plan.m, plan.n, plan.k, plan.batch
    device = x1.device
    out = torch.empty(plan.out_shape, dtype=plan.out_dtype, device=device)
    if out.numel() == 0:
        return out
    b_fmt = plan.modes.b_format
    if b_fmt == BFormat.NZ:
        sb, sbk, sbn, nz_k1 = [0, 0, 0, 0], 0, 0, x2.shape[1]
    elif b_fmt == BFormat.SPARSE:  # mask bytes per row; the decoder needs no column stride
        sb, sbk, sbn, nz_k1 = [0, 0, 0, 0], x2.stride(-2), 0, 0
    else:
        sb, sbk, sbn, nz_k1 = _batch_strides(x2, batch), x2.stride(-2), x2.stride(-1), 0
    s_bias = 0
    if bias is not None:
        bias = bias.contiguous()
        s_bias = n if bias.dim() == 3 and bias.shape[0] != 1 else 0
    check_32bit(op, "x1", x1)
    check_32bit(op, "x2", x2, 4 if b_fmt == BFormat.NZ else 2)
    check_32bit(op, "out", out)
    b_k_unit = sbk == 1 and x2.shape[-2] > 1
    units = {"A_K_UNIT": x1.stride(-1) == 1, "B_K_UNIT": b_k_unit, "B_N_UNIT": sbn == 1 and not b_k_unit}
    variant = config_variant(plan, b_k_unit)
    spec = _spec(plan)
    target = _backend.target_for(device)
    meta, opts = split_config(pick_config(spec.name, target, variant.label, m=m, k=k, n=n))
    if b_fmt == BFormat.SPARSE and meta["BLOCK_N"] % SPARSE_CHUNK.value:
        raise ValueError(f"{op}: config BLOCK_N = {meta['BLOCK_N']} is not a multiple of {SPARSE_CHUNK.value}")
    if plan.group_k:  # a K step never straddles two k-groups (BLOCK_K: a power of two >= 64; g: a multiple of 64)
        meta["BLOCK_K"] = math.gcd(meta["BLOCK_K"], plan.group_k)
    splittable = bool(variant.constexprs.get("SPLITTABLE", False))
    n_batch = math.prod(batch)
    meta, n_items, split_args = split_k.launch_args(device, meta, m, n, k, n_batch, target.programs(True), splittable)
    sizes = [1] * (4 - len(batch)) + list(batch)
    args = {"a_ptr": x1, "b_ptr": x2, "out_ptr": out, "scale_ptr": out,
            "offset_ptr": out if offset is None else _per_column(offset, n),
            "pertoken_ptr": out if pertoken_scale is None else pertoken_scale.contiguous(),
            "bias_ptr": out if bias is None else bias, "bv_ptr": x2 if values is None else values,
            "bo_ptr": x2 if row_offsets is None else row_offsets,
            "M": m, "N": n, "K": k, "n_batch": n_batch, "D1": sizes[1], "D2": sizes[2], "D3": sizes[3],
            **dict(zip(("sa0", "sa1", "sa2", "sa3"), _batch_strides(x1, batch))), "sam": x1.stride(-2),
            "sak": x1.stride(-1), **dict(zip(("sb0", "sb1", "sb2", "sb3"), sb)), "sbk": sbk, "sbn": sbn,
            "s_bias": s_bias, "nz_k1": nz_k1, **plan.modes.constexprs(), **units, **split_args,
            "SPLITTABLE": splittable, "GROUP_K": plan.group_k, **meta}
    if scale is not None:
        args["scale_ptr"] = scale.contiguous() if plan.group_k else _per_column(scale, n)
    taken = set(spec.fn.arg_names)
    _backend.launch(spec.name, spec.fn, _backend.persistent_grid(n_items, target, uses_dot=True),
                    **{name: v for name, v in args.items() if name in taken}, **opts)
    return out
