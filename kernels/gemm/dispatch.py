"""The one GEMM launch: a validated ``GemmPlan`` and its tensors in, the output written by the right kernel.

Both ops (quant_matmul, matmul_compress_dequant) call ``launch``; it picks the kernel (the A8W4 kernel for a
grouped plan), the variant whose config applies (``variants.launch_variants``: by operands and decode), the
config, the split-K schedule and the persistent grid, and passes each kernel the arguments it takes; a launch that
splits K is followed by the reduction (``kernel_reduce``). No host sync. ``gemm_schedule`` says what a launch
would do on a target without running it (the modelled benchmark table).
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
from .specs import GEMM, GEMM_A8W4, GEMM_REDUCE
from .variants import SPLIT_EPILOGUE, SPLIT_POINTERS, GemmVariant, launch_variants, reduce_variant, reduce_variant_for


# (operands, decode) -> the variant whose config a launch takes, per kernel
_LAUNCHED = {spec.name: launch_variants(spec.variants) for spec in (GEMM, GEMM_A8W4)}


def _spec(plan: GemmPlan):
    return GEMM_A8W4 if plan.group_k else GEMM


def launched_variant(operands: str, m: int) -> GemmVariant:
    """The registry variant whose config a launch of ``operands`` (GemmVariant.operands) with m rows takes: the
    decode variant for m <= 16 where one exists (sparse-int32 has none)."""
    table = _LAUNCHED[GEMM_A8W4.name if operands == "a8w4" else GEMM.name]
    return table.get((operands, m <= 16)) or table[operands, False]


def config_variant(plan: GemmPlan, b_k_unit: bool) -> GemmVariant:
    """The registry variant whose config a call uses (``launched_variant`` of its operands)."""
    return launched_variant(operands(plan.modes, b_k_unit), plan.m)


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
    n_batch = math.prod(batch)
    _, n_splits, k_per_split = split_k.plan(meta, m, n, k, n_batch, target.programs(True), variant.decode,
                                            plan.group_k)
    meta.pop("SPLIT_K", None)
    split = n_splits > 1
    ws = out
    if split:  # split_k.plan kept it under MAX_WORKSPACE_BYTES, so the kernels' int32 offsets into it hold
        slots = split_k.workspace_slots(n_splits, k, plan.group_k)
        ws = torch.empty(slots * n_batch * m * n, dtype=torch.int32, device=device)
    n_items = n_batch * -(-m // meta["BLOCK_M"]) * -(-n // meta["BLOCK_N"]) * n_splits
    sizes = [1] * (4 - len(batch)) + list(batch)
    args = {"a_ptr": x1, "b_ptr": x2, "out_ptr": out, "scale_ptr": out,
            "offset_ptr": out if offset is None else _per_column(offset, n),
            "pertoken_ptr": out if pertoken_scale is None else pertoken_scale.contiguous(),
            "bias_ptr": out if bias is None else bias, "bv_ptr": x2 if values is None else values,
            "bo_ptr": x2 if row_offsets is None else row_offsets, "ws_ptr": ws,
            "M": m, "N": n, "K": k, "n_batch": n_batch, "D1": sizes[1], "D2": sizes[2], "D3": sizes[3],
            **dict(zip(("sa0", "sa1", "sa2", "sa3"), _batch_strides(x1, batch))), "sam": x1.stride(-2),
            "sak": x1.stride(-1), **dict(zip(("sb0", "sb1", "sb2", "sb3"), sb)), "sbk": sbk, "sbn": sbn,
            "s_bias": s_bias, "nz_k1": nz_k1, "n_splits": n_splits, "k_per_split": k_per_split,
            **plan.modes.constexprs(), **units, "SPLIT": split, "GROUP_K": plan.group_k, **meta}
    if scale is not None:
        args["scale_ptr"] = scale.contiguous() if plan.group_k else _per_column(scale, n)
    gemm_args = {**args, **SPLIT_EPILOGUE, **{p: ws for p in SPLIT_POINTERS}} if split else args
    _backend.launch(spec.name, spec.fn, _backend.persistent_grid(n_items, target, uses_dot=True),
                    **_taken(spec, gemm_args), **opts)
    if split:
        _reduce(target, args, slots)
    return out


def _taken(spec, args: dict) -> dict:
    """The entries of ``args`` that ``spec``'s kernel takes."""
    taken = set(spec.fn.arg_names)
    return {name: v for name, v in args.items() if name in taken}


def reduce_config(constexprs: dict, target, m: int, k: int, n: int, n_batch: int) -> tuple[dict, int]:
    """(config, tiles) of the reduction after a split launch with these epilogue constexprs: the config of its
    reduction variant (``variants.reduce_variant_for``), BLOCK_N halved (down to 32) while its tiles are fewer
    than the target's vector cores (decode has few rows: a wide tile would leave most of them idle)."""
    label = reduce_variant_for(constexprs).label
    config = dict(pick_config(GEMM_REDUCE.name, target, label, m=m, k=k, n=n))

    def tiles(bn):
        return n_batch * -(-m // config["BLOCK_M"]) * -(-n // bn)
    while config["BLOCK_N"] > 32 and tiles(config["BLOCK_N"]) < target.programs(False):
        config["BLOCK_N"] //= 2
    return config, tiles(config["BLOCK_N"])


def _reduce(target, args: dict, slots: int) -> None:
    """The split launch's second half: sum the workspace's ``slots`` and run the epilogue (``kernel_reduce``) with
    the launch's modes (A8W4's: SCALE_MODE I64_GROUP)."""
    config, n_tiles = reduce_config(args, target, args["M"], args["K"], args["N"], args["n_batch"])
    meta, opts = split_config(config)
    _backend.launch(GEMM_REDUCE.name, GEMM_REDUCE.fn, _backend.persistent_grid(n_tiles, target, uses_dot=False),
                    **_taken(GEMM_REDUCE, {**args, **meta, "n_slots": slots}), **opts)


def gemm_schedule(variant: GemmVariant, m: int, n: int, k: int, n_batch: int, config: dict, target, x1_bytes: float,
                  x2_bytes: float, out_bytes: int, column_bytes: int = 0, group_k: int = 0) -> dict:
    """What a launch of ``variant`` (``launched_variant``) with ``config`` does on ``target``, without running it:
    output tiles, split count, modelled cores busy and bytes moved.

    x1_bytes: bytes per x1 element (0.5 for packed int4); x2_bytes: bytes of one batch's whole weight, in
    whatever layout the kernel reads; out_bytes: bytes per output element; column_bytes: epilogue bytes read per
    output column and m-tile (scale, bias, ...). x1 rows are re-read once per n-tile and x2 once per m-tile
    (the kernel's tiling). group_k: A8W4's k-group. A decode variant's launch may split: that adds the reduction
    launch, ``reduce_bytes`` (its int32 slots read, the epilogue's columns, the output) on ``reduce_cores_busy``
    of the vector cores; ``bytes`` counts both launches. ``unsplit_bytes`` and ``unsplit_cores_busy``: the same
    launch without a split, for comparison.
    """
    cores = target.programs(True)
    unit = group_k or split_k.K_UNIT
    tiles, n_splits, _ = split_k.plan(config, m, n, k, n_batch, cores, variant.decode, group_k)
    tiles_m, tiles_n = -(-m // config["BLOCK_M"]), -(-n // config["BLOCK_N"])
    epilogue = n_batch * m * n * out_bytes + tiles_m * n * column_bytes
    moved = n_batch * (m * k * x1_bytes * tiles_n + x2_bytes * tiles_m) + epilogue
    units = max(1, -(-k // unit))
    sched = {"tiles": tiles, "split_k": n_splits, "cores": cores,
             "cores_busy": split_k.cores_busy(tiles, units, n_splits, cores),
             "reduce_bytes": 0, "reduce_cores_busy": 0.0,
             "unsplit_bytes": int(moved), "unsplit_cores_busy": split_k.cores_busy(tiles, units, 1, cores)}
    if n_splits > 1:
        partials = split_k.workspace_slots(n_splits, k, group_k) * 4 * n_batch * m * n
        _, r_tiles = reduce_config(reduce_variant(variant).constexprs, target, m, k, n, n_batch)
        moved += 2 * partials
        sched.update(reduce_bytes=int(partials + epilogue),
                     reduce_cores_busy=split_k.cores_busy(r_tiles, 1, 1, target.programs(False)))
    sched["bytes"] = int(moved)
    return sched
