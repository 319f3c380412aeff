"""Kernels that must NOT pass the Ascend compile check (its self-tests).

- ``cuda_only``: calls a CUDA-only libdevice function; the TTIR -> Linalg adapter rejects it.
- ``ub_overflow``: a plain vector add whose 65536-element fp32 tiles (256 KiB each) cannot fit the 192 KiB UB;
  only bishengir's memory planning rejects it.
- ``cross_core_lock``: a cube kernel that reads the result of an atomic (the last program to arrive stores); bishengir
  makes that safe with a cross-core lock (``sync_block_lock``) around the vector loop, which the check refuses.
- ``spill`` (CUDA): one warp holding an 8192-element fp32 tile across a reduction needs 256 registers per
  thread, over the 255 a thread can have, so ptxas spills; it compiles in seconds.
"""
import triton
import triton.language as tl

from ..autotune.registry import KernelSpec, Variant


@triton.jit
def cuda_only_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs, tl.extra.cuda.libdevice.rint(x), mask=offs < n)


@triton.jit
def scale_by_max_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    tl.store(out_ptr + offs, x * tl.max(x, axis=0))  # every element stays live across the reduction


@triton.jit
def vector_add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask), mask=mask)


@triton.jit
def last_arrival_kernel(a_ptr, b_ptr, out_ptr, cnt_ptr, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    tile = r[:, None] * BLOCK + r[None, :]
    acc = tl.dot(tl.load(a_ptr + tile), tl.load(b_ptr + tile))
    if tl.atomic_add(cnt_ptr, 1) == tl.num_programs(0) - 1:
        tl.store(out_ptr + tile, acc)


NEGATIVE_CONTROL = KernelSpec(
    name="negative_control.cuda_only", fn=cuda_only_kernel,
    variants=[Variant("fp32", {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32"})],
    space=lambda t, v: [{"BLOCK": 256}], default=lambda t, v: {"BLOCK": 256})

_ADD = Variant("fp32", {"x_ptr": "*fp32", "y_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32"})
UB_OVERFLOW_CONTROL = KernelSpec(
    name="negative_control.ub_overflow", fn=vector_add_kernel, variants=[_ADD],
    space=lambda t, v: [{"BLOCK": 65536}], default=lambda t, v: {"BLOCK": 65536})
# its positive twin: the same kernel at 1024 elements compiles (the self-test checks both)
UB_FITS_CONTROL = KernelSpec(
    name="negative_control.ub_fits", fn=vector_add_kernel, variants=[_ADD],
    space=lambda t, v: [{"BLOCK": 1024}], default=lambda t, v: {"BLOCK": 1024})

SPILL_CONTROL = KernelSpec(
    name="negative_control.spill", fn=scale_by_max_kernel,
    variants=[Variant("fp32", {"x_ptr": "*fp32", "out_ptr": "*fp32"})],
    space=lambda t, v: [{"BLOCK": 8192, "num_warps": 1}], default=lambda t, v: {"BLOCK": 8192, "num_warps": 1})

LOCK_CONTROL = KernelSpec(
    name="negative_control.cross_core_lock", fn=last_arrival_kernel,
    variants=[Variant("i8", {"a_ptr": "*i8", "b_ptr": "*i8", "out_ptr": "*i32", "cnt_ptr": "*i32"})],
    space=lambda t, v: [{"BLOCK": 32}], default=lambda t, v: {"BLOCK": 32}, uses_dot=True)
