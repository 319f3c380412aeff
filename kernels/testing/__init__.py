"""Test helpers: prove which path ran, and compare outputs with one tolerance table per dtype."""
from __future__ import annotations

import contextlib

import torch

from .. import _backend

# One table per dtype (rtol, atol). Integer and bool outputs are always compared exactly.
TOLERANCES = {
    torch.float16: (1e-3, 1e-3),
    torch.bfloat16: (1.6e-2, 1e-2),
    torch.float32: (1.3e-6, 1e-5),
    torch.float64: (1e-7, 1e-7),
}


def assert_equal(actual: torch.Tensor, expected: torch.Tensor, *, msg: str = ""):
    """Equal element for element (torch.equal, a NaN matching a NaN): for floats that kernel and reference compute
    the same way, where any tolerance would hide an extra rounding or a fused multiply-add."""
    assert actual.shape == expected.shape, f"{msg} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{msg} dtype {actual.dtype} != {expected.dtype}"
    same = actual == expected
    if expected.is_floating_point():
        same |= torch.isnan(actual) & torch.isnan(expected)
    if not bool(same.all()):
        diff = (~same).nonzero()
        first = tuple(diff[0].tolist())
        raise AssertionError(f"{msg} {len(diff)} of {expected.numel()} elements differ; first at {first}: "
                             f"{actual[first].item()!r} != {expected[first].item()!r}")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype | None = None, msg: str = ""):
    """Exact for integer dtypes; torch.testing.assert_close with TOLERANCES[dtype] otherwise.

    dtype: the table row to use (default: expected.dtype), e.g. the input
    dtype when an fp32 result is compared after rounding.
    """
    assert actual.shape == expected.shape, f"{msg} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{msg} dtype {actual.dtype} != {expected.dtype}"
    if not expected.is_floating_point():
        if not torch.equal(actual, expected):
            diff = (actual != expected).nonzero()
            first = tuple(diff[0].tolist())
            raise AssertionError(f"{msg} {len(diff)} of {expected.numel()} elements differ; first at {first}: "
                                 f"{actual[first].item()} != {expected[first].item()}")
        return
    rtol, atol = TOLERANCES[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{msg} {m}")


@contextlib.contextmanager
def kernel_ran(*kernels: str):
    """Assert that each named kernel launched inside the block and no op fell back to its reference.

    Names are registry names ("int4_pack.pack") or prefixes ending in "." ("int4_pack.").
    """
    before_l, before_f = _backend.launches.copy(), _backend.fallbacks.copy()
    yield
    launched = _backend.launches - before_l
    fell_back = _backend.fallbacks - before_f
    assert not fell_back, f"reference fallback ran instead of a kernel: {dict(fell_back)} (is TRITON_INTERPRET=1 set?)"
    for name in kernels:
        hits = [k for k in launched if k == name or (name.endswith(".") and k.startswith(name))]
        assert hits, f"kernel {name} did not launch; launched: {dict(launched) or 'nothing'}"
