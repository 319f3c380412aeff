"""ascend-run's cases for nsa_compress's kernels (fwd, bwd, dw_reduce)."""
from __future__ import annotations


# nsa_compress variants name their geometry (CHUNK, SLOTS, PHASES); the (block, stride) the tests use for each
_NSA_GEOMETRIES = ((32, 16), (64, 32), (128, 16), (128, 128))
_NSA_SEQ_ENDS = [0, 5, 40, 40, 137, 300]  # tests/test_nsa_compress.py's RAGGED


def case(kernel_name: str, label: str):
    """(call, expected) for one nsa_compress kernel variant on tests/test_nsa_compress.py's ragged sequences
    (N = 2, D = 32), compared by the interpreter tests' rule (testing.TOLERANCES of the dtype). The backward
    and dw_reduce cases run the gradient op, which launches both; each compares dinput and dweight."""
    kind = kernel_name.split(".", 1)[1]
    import importlib
    import torch
    from ..reference import nsa_compress as ref
    op = importlib.import_module("..nsa_compress", __package__)  # the package's nsa_compress is the function
    dtype = torch.float16 if label.startswith("fp16") else torch.bfloat16
    if kind == "dw_reduce":  # a geometry whose backward (SLOTS = 1) matches, so the reduction is seen alone
        block, stride = _NSA_GEOMETRIES[3]
    else:
        block, stride = next((bl, st) for bl, st in _NSA_GEOMETRIES
                             if label.endswith("-c{CHUNK}s{SLOTS}p{PHASES}".format(**op.geometry(bl, st))))
    g = torch.Generator().manual_seed(0)
    asl = _NSA_SEQ_ENDS
    x = torch.randn(asl[-1], 2, 32, generator=g).to(dtype)
    w = (torch.randn(block, 2, generator=g) / block ** 0.5).to(dtype)
    if kind == "fwd":
        return (lambda: [torch.ops.atlas.nsa_compress(x, w, block, stride, asl)],
                [("out", ref.nsa_compress(x, w, block, stride, asl), "close")])
    n_out = sum(ref.num_windows(n, block, stride) for _, n in ref.sequence_bounds(asl))
    grad = torch.randn((n_out, 2, 32), generator=torch.Generator().manual_seed(1)).to(dtype)
    dx, dw = ref.nsa_compress_grad(grad, x, w, block, stride, asl)
    return (lambda: list(torch.ops.atlas.nsa_compress_grad(grad, x, w, block, stride, asl)),
            [("dinput", dx, "close"), ("dweight", dw, "close")])
