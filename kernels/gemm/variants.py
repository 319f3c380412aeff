"""The GEMM kernels' variants: one compile-time specialisation each, described by data.

A variant's label is a store key (tuned configs, Ascend verdicts, users' stores) and is never parsed: what a
variant is for is in its fields. ``operands`` names the operand formats the launch picks a config by ("i8-nd",
"i8-nd-t" for a k-contiguous x2, "i8-nz", "i4-n", "i4-k", "a8w4" (compiled for g = 256; other k-groups share its
config), "sparse", "sparse-int32"); ``decode`` marks the m <= 16 variant of those operands; ``split`` the decode
variant's split-K path (SPLIT: compiled only into launches that split, on the decode variant's config);
``launched``: the launch takes its config (the others cover the remaining epilogue branches or the split path in
the checks and share a launched variant's config); ``tuned``: the tuner measures it. ``REDUCE_VARIANTS``: the
split-K reduction's, one per epilogue a split launch can have.
"""
from __future__ import annotations

import dataclasses

import torch

from ..autotune.registry import Variant
from .formats import AFormat, BFormat, BiasMode, OffsetMode, ScaleMode
from .plan import Modes, modes

_PTR = {torch.int8: "*i8", torch.int32: "*i32", torch.int64: "*i64", torch.float16: "*fp16",
        torch.bfloat16: "*bf16", torch.float32: "*fp32"}
_GEMM_ARGS = {"M": "i32", "N": "i32", "K": "i32", "n_batch": "i32", "D1": "i32", "D2": "i32", "D3": "i32",
              **{f"s{x}{i}": "i32" for x in "ab" for i in range(4)},
              "sam": "i32", "sak": "i32", "sbk": "i32", "sbn": "i32", "s_bias": "i32", "nz_k1": "i32",
              "n_splits": "i32", "k_per_split": "i32"}
_A8W4_ARGS = {"M": "i32", "N": "i32", "K": "i32", "sam": "i32", "sak": "i32", "sbk": "i32", "sbn": "i32",
              "n_splits": "i32", "k_per_split": "i32"}
_REDUCE_ARGS = {"M": "i32", "N": "i32", "n_batch": "i32", "n_slots": "i32", "s_bias": "i32"}


# A split launch runs no epilogue: it takes these epilogue constexprs and passes the workspace for the pointers only
# the epilogue reads, so each operand format compiles one split kernel whatever the output, scale and bias
SPLIT_EPILOGUE = {"SCALE_MODE": int(ScaleMode.NONE), "OFFSET_MODE": int(OffsetMode.NONE), "HAS_PERTOKEN": False,
                  "BIAS_MODE": int(BiasMode.NONE), "REQUANT": False}
SPLIT_POINTERS = {p: "*i32" for p in ("out_ptr", "scale_ptr", "offset_ptr", "pertoken_ptr", "bias_ptr")}


@dataclasses.dataclass(frozen=True)
class GemmVariant(Variant):
    operands: str = ""
    a_format: AFormat = AFormat.INT8
    b_format: BFormat = BFormat.ND
    decode: bool = False
    split: bool = False
    grouped: bool = False  # per-k-group scales: the A8W4 kernel
    launched: bool = False
    tuned: bool = False


def _types(m: Modes, out, scale, bias) -> dict:
    x = torch.int32 if m.a_format == AFormat.INT4 else torch.int8
    b = "*u8" if m.b_format == BFormat.SPARSE else _PTR[torch.int32 if m.b_format in (BFormat.INT4_N, BFormat.INT4_K)
                                                       else x]
    return {"a_ptr": _PTR[x], "b_ptr": b, "out_ptr": _PTR[out], "scale_ptr": _PTR[scale], "offset_ptr": "*fp32",
            "pertoken_ptr": "*fp32", "bias_ptr": _PTR[bias or torch.int32]}


def gemm_variant(label, operands, a_fmt, b_fmt, out, scale, bias=None, offset=False, pertoken=False,
                 decode=False, split=False, launched=True, tuned=True) -> GemmVariant:
    """A typical launch of the int32-accumulator kernel: x1 contiguous; x2 (k, n) row-major, (k/8, n) a transposed
    view for INT4_K, k-contiguous for the "i8-nd-t" operands (a transposed int8 x2), the mask for SPARSE."""
    m = modes(a_fmt, b_fmt, out, scale, bias, offset, pertoken)
    k_unit = b_fmt == BFormat.INT4_K or operands == "i8-nd-t"
    n_unit = b_fmt not in (BFormat.NZ, BFormat.SPARSE) and not k_unit
    types = {**_types(m, out, scale, bias), "bv_ptr": "*i8", "bo_ptr": "*i32", "ws_ptr": "*i32", **_GEMM_ARGS}
    constexprs = m.constexprs()
    if split:
        types.update(SPLIT_POINTERS)
        constexprs.update(SPLIT_EPILOGUE)
    return GemmVariant(label, types, {**constexprs, "A_K_UNIT": True, "B_K_UNIT": k_unit, "B_N_UNIT": n_unit,
                                      "SPLIT": split},
                       operands=operands, a_format=a_fmt, b_format=b_fmt, decode=decode, split=split,
                       launched=launched and not split, tuned=tuned and not split)


def a8w4_variant(label, out, decode, split=False, group_k=256) -> GemmVariant:
    """A typical A8W4 launch: x1 int8 (m, k) contiguous, x2 int32 (k, n/8), int64 group scales, offset and
    pertoken scale."""
    m = modes(AFormat.INT8, BFormat.INT4_N, out, torch.int64, None, True, True, group_k)
    types = {**_types(m, out, torch.int64, None), "ws_ptr": "*i32", **_A8W4_ARGS}
    del types["bias_ptr"]
    epilogue = {"OFFSET_MODE": int(m.offset_mode), "HAS_PERTOKEN": True}
    if split:
        types.update({p: t for p, t in SPLIT_POINTERS.items() if p in types})
        epilogue = {k: SPLIT_EPILOGUE[k] for k in epilogue}
    return GemmVariant(label, types, {**epilogue, "A_K_UNIT": True, "B_N_UNIT": True, "GROUP_K": group_k,
                                      "SPLIT": split},
                       operands="a8w4", a_format=AFormat.INT8, b_format=BFormat.INT4_N, decode=decode, split=split,
                       grouped=True, launched=not split, tuned=not split)


def reduce_variant(gemm: GemmVariant) -> GemmVariant:
    """The split-K reduction of ``gemm``'s launches: its epilogue's constexprs (A8W4's: I64_GROUP scales, no bias,
    no requant) and pointer types, labelled like ``gemm`` (a launch finds it by constexprs: ``reduce_variant_for``)."""
    c = gemm.constexprs
    grouped = gemm.grouped
    types = {"ws_ptr": "*i32", **{p: gemm.types[p] for p in ("out_ptr", "scale_ptr", "offset_ptr", "pertoken_ptr")},
             "bias_ptr": gemm.types.get("bias_ptr", "*i32"), **_REDUCE_ARGS}
    modes_ = {"SCALE_MODE": int(ScaleMode.I64_GROUP) if grouped else c["SCALE_MODE"], "OFFSET_MODE": c["OFFSET_MODE"],
              "HAS_PERTOKEN": c["HAS_PERTOKEN"], "BIAS_MODE": 0 if grouped else c["BIAS_MODE"],
              "REQUANT": False if grouped else c["REQUANT"]}
    return GemmVariant(gemm.label, types, modes_, operands=gemm.operands, a_format=gemm.a_format,
                       b_format=gemm.b_format, decode=True, grouped=grouped, launched=gemm.launched)


I8, F16, BF16, F32, I32, I64 = torch.int8, torch.float16, torch.bfloat16, torch.float32, torch.int32, torch.int64
GEMM_VARIANTS = []
for _ops, _a, _b, _out, _scale, _kw in (
        ("i8-nd", AFormat.INT8, BFormat.ND, F16, I64, {"bias": I32}),
        ("i8-nd-t", AFormat.INT8, BFormat.ND, I8, F32, {"bias": I32, "offset": True}),
        ("i8-nz", AFormat.INT8, BFormat.NZ, F16, F32, {"bias": I32}),
        ("i4-n", AFormat.INT4, BFormat.INT4_N, F16, I64, {"bias": I32}),
        ("i4-k", AFormat.INT4, BFormat.INT4_K, BF16, F32, {"pertoken": True})):
    GEMM_VARIANTS.append(gemm_variant(_ops, _ops, _a, _b, _out, _scale, **_kw))
    GEMM_VARIANTS.append(gemm_variant(f"{_ops}-decode", _ops, _a, _b, _out, _scale, decode=True, **_kw))
    GEMM_VARIANTS.append(gemm_variant(f"{_ops}-decode-split", _ops, _a, _b, _out, _scale, decode=True, split=True,
                                      **_kw))
_CHECK_ONLY = {"launched": False, "tuned": False}
GEMM_VARIANTS += [
    gemm_variant("i8-nd-int8out-offset", "i8-nd", AFormat.INT8, BFormat.ND, I8, F32, I32, offset=True, **_CHECK_ONLY),
    gemm_variant("i8-nd-int8out-i64", "i8-nd", AFormat.INT8, BFormat.ND, I8, I64, **_CHECK_ONLY),
    gemm_variant("i8-nd-int32out", "i8-nd", AFormat.INT8, BFormat.ND, I32, F32, I32, **_CHECK_ONLY),
    gemm_variant("i8-nd-bf16-pertoken", "i8-nd", AFormat.INT8, BFormat.ND, BF16, BF16, BF16, pertoken=True,
                 **_CHECK_ONLY),
    gemm_variant("i8-nd-bf16-f32bias", "i8-nd", AFormat.INT8, BFormat.ND, BF16, F32, F32, **_CHECK_ONLY),
    gemm_variant("i8-nd-fp16-pertoken", "i8-nd", AFormat.INT8, BFormat.ND, F16, F32, F16, pertoken=True,
                 **_CHECK_ONLY),
    # matmul_compress_dequant's launches: SPARSE x2 (uint8 mask), fp32 scale at full precision, int32 bias
    gemm_variant("sparse", "sparse", AFormat.INT8, BFormat.SPARSE, F16, F32, I32),
    gemm_variant("sparse-decode", "sparse", AFormat.INT8, BFormat.SPARSE, F16, F32, I32, decode=True),
    gemm_variant("sparse-decode-split", "sparse", AFormat.INT8, BFormat.SPARSE, F16, F32, I32, decode=True,
                 split=True),
    gemm_variant("sparse-int32", "sparse-int32", AFormat.INT8, BFormat.SPARSE, I32, F32, I32, tuned=False),
]
A8W4_VARIANTS = [a8w4_variant("a8w4", F16, False), a8w4_variant("a8w4-decode", F16, True),
                 a8w4_variant("a8w4-decode-split", F16, True, split=True)]
# one per epilogue a split launch can run: the prefill variants of the operands that have a decode variant (the
# launched ones and the check-only epilogues, which launch on i8-nd's configs), without repeats (i4-n's epilogue is
# i8-nd's)
_SPLITTING = {v.operands for v in GEMM_VARIANTS + A8W4_VARIANTS if v.split}
REDUCE_VARIANTS = []
for _v in GEMM_VARIANTS + A8W4_VARIANTS:
    _r = reduce_variant(_v)
    if not _v.decode and _v.operands in _SPLITTING and all((_r.constexprs, _r.types) != (r.constexprs, r.types)
                                                           for r in REDUCE_VARIANTS):
        REDUCE_VARIANTS.append(_r)


def reduce_variant_for(constexprs: dict) -> GemmVariant:
    """The reduction variant whose epilogue a launch with these constexprs runs (its config applies): the first
    with the same epilogue modes, else the first (i8-nd's; every epilogue shares the reduction's tiles)."""
    return next((r for r in REDUCE_VARIANTS if all(constexprs.get(k) == c for k, c in r.constexprs.items())),
                REDUCE_VARIANTS[0])


def launch_variants(variants: list) -> dict:
    """{(operands, decode): variant} of the variants whose config a launch takes."""
    return {(v.operands, v.decode): v for v in variants if v.launched}
