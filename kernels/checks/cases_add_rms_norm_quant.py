"""CPU-run case (``ascend-run``) for add_rms_norm_quant.fused: the op on test inputs vs the reference.

Registered in ascend_run.CASES; same contract as ascend_run._rope_case: ``case(kernel_name, label)`` returns
(call, [(output name, expected, rule)]), rule "bytes" (byte for byte) or "close" (testing.TOLERANCES).
"""
from __future__ import annotations

# Row lengths: a tile case's row fits the smallest tile config (64 columns); a loop case's row is longer than the
# largest loop chunk (256 columns), so whatever config the check forces, the launcher takes the variant's layout.
_TILE_N, _LOOP_N = 40, 300


def _dyadic(shape, bits, exp, g, dtype):
    import torch
    return (torch.randint(-2**bits, 2**bits, shape, generator=g).double() * 2.0**exp).to(dtype)


def _positive(shape, exp, g, dtype):
    """Dyadic values in [1, 2) * 2**exp."""
    import torch
    return ((8 + torch.randint(0, 8, shape, generator=g).double()) * 2.0**(exp - 3)).to(dtype)


def case(kernel_name: str, label: str):
    """(call, expected) for one variant of ``kernel_name``: the variant's dtypes and features (read off its
    constexprs and pointer types) on 13 rows of dyadic inputs (so the sum of squares is exact and every output,
    floats included, is compared byte for byte, as tests/test_add_rms_norm_quant.py does)."""
    import torch
    from .. import add_rms_norm_quant as op
    from ..autotune import KERNELS
    from ..reference import add_rms_norm_quant as ref
    from .cases import torch_dtype as _torch_dtype
    v = KERNELS[kernel_name].variant(label)
    c, ty = v.constexprs, v.types
    g = torch.Generator().manual_seed(0)
    dtype = _torch_dtype(ty["x1_ptr"])
    n = _TILE_N if c["ONE_TILE"] else _LOOP_N
    x1, x2 = _dyadic((13, n), 5, -2, g, dtype), _dyadic((13, n), 5, -2, g, dtype)
    gamma = _positive((n,), -3, g, dtype)
    beta = _dyadic((n,), 4, -4, g, dtype) if c["HAS_BETA"] else None
    if c["DYNAMIC"]:
        s1 = _positive((n,), 0, g, dtype) if c["HAS_S1"] else None
        s2 = _positive((n,), 1, g, dtype) if c["HAS_S2"] else None
        mask = [bool(c["OUT1"]), bool(c["OUT2"])]
        expected = ref.add_rms_norm_dynamic_quant(x1, x2, gamma, s1, s2, beta, 1e-6, *mask)

        def call():
            return op.npu_add_rms_norm_dynamic_quant(x1, x2, gamma, smooth_scale1=s1, smooth_scale2=s2, beta=beta,
                                                     output_mask=mask)
        names = ("y1", "y2", "x_out", "scale1", "scale2")
    else:
        sdt, zdt = _torch_dtype(ty["s1_ptr"]), _torch_dtype(ty["zp1_ptr"])
        exp = -9 if c["DIV_MODE"] else 8  # some values saturate
        args = [x1, x2, gamma, _positive((n,), exp, g, sdt),
                _dyadic((n,), 4, 0, g, zdt) if c["HAS_ZP1"] else None, beta,
                _positive((n,), exp - 1, g, sdt) if c["OUT2"] else None,
                _dyadic((n,), 4, 0, g, zdt) if c["HAS_ZP2"] else None]
        expected = ref.add_rms_norm_quant(*args, 1e-6, bool(c["DIV_MODE"]))

        def call():
            return op.npu_add_rms_norm_quant(*args, div_mode=bool(c["DIV_MODE"]))
        names = ("y1", "y2", "x_out")
    return call, [(name, e, "bytes") for name, e in zip(names, expected)]
