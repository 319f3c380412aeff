"""ascend-run's cases for the GEMM kernels (quant_matmul.gemm, quant_matmul.gemm_a8w4, quant_matmul.gemm_reduce):
quant_matmul's and matmul_compress_dequant's launches."""
from __future__ import annotations

from .cases import torch_dtype


def case(kernel_name: str, label: str):
    """(call, expected) for one GEMM variant: its operand formats, dtypes and epilogue, read off the variant,
    through the public op on a ragged shape (m, k, n) = (37, 304, 200), or (5, 1024, 200) for decode variants;
    A8W4 with k = 512 (two 256-row groups). A decode variant's launch is kept unsplit (SPLIT_K = 1); its split
    variant's launch splits K (one output tile for 24 or more cores). The reduction's variants (labelled like the
    GEMM variant whose epilogue they run) are run by that variant's split launch at the decode shape. Integer
    outputs compare byte for byte, float ones by the interpreter tests' tolerances."""
    import torch
    from .. import compress_matmul as cm
    from ..autotune import KERNELS
    from ..compress_codec import compress_weight
    from ..gemm import AFormat, BFormat, BiasMode, OffsetMode
    from ..quant_matmul import quant_matmul
    from ..reference import compress_matmul as cref
    from ..reference import quant_matmul as ref
    from ..reference.int4_pack import convert_weight_to_int4pack, nd_to_nz  # inputs: no other kernel's launch
    from ..autotune.select import forced_config, override_config
    reduction = kernel_name == "quant_matmul.gemm_reduce"
    if reduction:  # the GEMM variant whose epilogue this reduction runs
        v = next(s.variant(label) for s in (KERNELS["quant_matmul.gemm"], KERNELS["quant_matmul.gemm_a8w4"])
                 if label in {x.label for x in s.variants})
    else:
        v = KERNELS[kernel_name].variant(label)
    if v.split:  # a split launch runs no epilogue: the case is its decode variant's call
        v = next(x for x in KERNELS[kernel_name].variants if x.operands == v.operands and x.decode and not x.split)
        unsplit = False
    else:
        unsplit = v.decode and not reduction
    c, ty = v.constexprs, v.types
    group_k = c.get("GROUP_K", 0)
    decode = v.decode or reduction

    def run(fn):
        """fn(), unsplit for a decode variant's case."""
        if not unsplit:
            return fn()
        with override_config(kernel_name, {**forced_config(kernel_name), "SPLIT_K": 1}):
            return fn()
    m, k, n = 5 if decode else 37, 1024 if decode else 304, 200
    k = 2 * group_k if group_k else k
    g = torch.Generator().manual_seed(0)

    def ints(lo, hi, *size):
        return torch.randint(lo, hi, size, generator=g, dtype=torch.int32)

    def scales(*size):
        return torch.rand(size, generator=g) * 2e-3 + 1e-4
    out = torch_dtype(ty["out_ptr"])
    bias = None
    bias_mode = c.get("BIAS_MODE", BiasMode.NONE)
    if bias_mode == BiasMode.INT:
        bias = ints(-20000, 20000, n)
    elif bias_mode == BiasMode.FLOAT:
        bias = (torch.randn(n, generator=g) * 10).to(torch_dtype(ty["bias_ptr"]))
    if v.b_format == BFormat.SPARSE:
        x1, w = ints(-128, 128, m, k).to(torch.int8), ints(-128, 128, n, k).to(torch.int8)
        x2, index, info = compress_weight(w)
        if out == torch.int32:
            cw = cm.prepare_compressed_weight(x2, index, info)
            return lambda: run(lambda: cm._gemm(x1, cw, bias, None)), [("out", cref.int_matmul(x1, w) + bias, "bytes")]
        deq = scales(n).view(torch.int32).to(torch.int64).reshape(1, n)
        return (lambda: run(lambda: cm.matmul_compress_dequant(x1, x2, index, bias, deq, compress_info=info)),
                [("out", cref.matmul_compress_dequant(x1, x2, index, bias, deq, info), "close")])
    x1 = (convert_weight_to_int4pack(ints(-8, 8, m, k)) if v.a_format == AFormat.INT4
          else ints(-128, 128, m, k).to(torch.int8))
    kw = {"output_dtype": out}
    if v.b_format == BFormat.INT4_N:
        x2 = convert_weight_to_int4pack(ints(-8, 8, k, n))
    elif v.b_format == BFormat.INT4_K:
        x2 = convert_weight_to_int4pack(ints(-8, 8, n, k)).t()
    else:
        x2 = ints(-128, 128, k, n).to(torch.int8)
        if v.b_format == BFormat.NZ:
            x2, kw["x2_layout"], kw["x2_shape"] = nd_to_nz(x2), "nz", (k, n)
        elif c["B_K_UNIT"]:
            x2 = x2.t().contiguous().t()
    offset = scales(n) * 1e4 if c["OFFSET_MODE"] != OffsetMode.NONE else None
    if group_k:
        scale = ref.trans_quant_param(scales(k // group_k, n))
    elif ty["scale_ptr"] == "*i64":
        scale = ref.trans_quant_param(scales(n), offset if c["OFFSET_MODE"] == OffsetMode.FROM_SCALE else None)
    else:
        scale = scales(n).to(torch_dtype(ty["scale_ptr"]))
    if c["OFFSET_MODE"] == OffsetMode.TENSOR:
        kw["offset"] = offset
    if c["HAS_PERTOKEN"]:
        kw["pertoken_scale"] = torch.rand(m, generator=g) + 0.5
    if bias is not None:
        kw["bias"] = bias
    expected = ref.quant_matmul(x1, x2, scale, group_k=group_k, **kw)
    if group_k:
        kw["group_sizes"] = [0, 0, group_k]
    rule = "close" if expected.is_floating_point() else "bytes"
    return lambda: run(lambda: quant_matmul(x1, x2, scale, **kw)), [("out", expected, rule)]
