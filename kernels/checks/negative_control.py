"""A kernel that must NOT pass the Ascend lowering check: it calls a CUDA-only libdevice function."""
import triton
import triton.language as tl

from ..autotune import KernelSpec, Variant


@triton.jit
def cuda_only_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs, tl.extra.cuda.libdevice.rint(x), mask=offs < n)


NEGATIVE_CONTROL = KernelSpec(
    name="negative_control.cuda_only", fn=cuda_only_kernel,
    variants=[Variant("fp32", {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32"})],
    space=lambda t, v: [{"BLOCK": 256}], default=lambda t, v: {"BLOCK": 256})
