"""ascend-run's cases for int4_pack's kernels (pack, unpack, nd_to_nz, nz_to_nd)."""
from __future__ import annotations


def case(kernel_name: str, label: str):
    """(call, expected) for one int4_pack kernel variant: small ragged shapes that leave partial tiles."""
    kind = kernel_name.split(".", 1)[1]
    import torch
    from .. import int4_pack as ops
    from ..reference import int4_pack as ref
    g = torch.Generator().manual_seed(0)
    if kind in ("pack", "unpack"):
        out_dtype = torch.int32 if label.startswith("int32") else torch.uint8
        layout = "nz" if "-nz" in label else "nd"
        rows, cols = 40, 200
        w = torch.randint(-8, 8, (rows, cols), dtype=torch.int32, generator=g)
        if kind == "pack":
            if label.endswith("strided"):
                w = w.t().contiguous().t()
            return (lambda: ops.convert_weight_to_int4pack(w, out_dtype=out_dtype, layout=layout),
                    ref.convert_weight_to_int4pack(w, out_dtype, layout))
        packed = ref.convert_weight_to_int4pack(w, out_dtype, layout)
        return lambda: ops.unpack_int4(packed, layout=layout, shape=(rows, cols)), w
    bits = int(label.split("bit")[0])
    dtype = {8: torch.int8, 16: torch.float16, 32: torch.int32}[bits]
    b, m, n = 2, 37, 75
    x = torch.randint(-128, 128, (b, m, n), generator=g).to(dtype)
    if label.endswith("strided"):
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "nd_to_nz":
        return lambda: ops.nd_to_nz(x), ref.nd_to_nz(x)
    nz = ref.nd_to_nz(x)
    return lambda: ops.nz_to_nd(nz, (m, n)), x
