"""Loop-carried accumulator updated under a runtime `if`: does bishengir's PlanMemory keep it alive?"""
import os

import torch
import triton
import triton.language as tl
from atlas_kernels.autotune import KernelSpec, Variant, get_target
from atlas_kernels.checks import Job, ascend, ascend_run

@triton.jit
def acc_kernel(x_ptr, out_ptr, n_steps, lo, GUARDED: tl.constexpr, RESET_IN_BRANCH: tl.constexpr, BLOCK: tl.constexpr):
    """out[r] = x[r] + x[r + 1]: window r (two steps long) accumulates in slot r % 2 of acc, as nsa_compress's
    forward does with SLOTS = 2; the store resets that slot."""
    cols = tl.arange(0, BLOCK)
    slot = tl.arange(0, 2)[:, None] + 0 * cols[None, :]
    acc = tl.zeros((2, BLOCK), dtype=tl.float32)
    for k in range(lo, n_steps):
        x = tl.load(x_ptr + k * BLOCK + cols)
        for s in tl.static_range(2):
            c = k - (k - s + 2) % 2  # the window in slot s
            if GUARDED:
                if c >= lo:
                    acc += tl.where(slot == s, x[None, :], 0.0)
            else:
                acc += tl.where((slot == s) & (c >= lo), x[None, :], 0.0)
        r = k - 1
        if RESET_IN_BRANCH:
            if r >= lo:
                done = slot == r % 2
                tl.store(out_ptr + r * BLOCK + cols, tl.sum(tl.where(done, acc, 0.0), axis=0))
                acc = tl.where(done, 0.0, acc)
        else:  # the reset outside the branch: acc leaves every iteration through the same op
            done = (slot == r % 2) & (r >= lo)
            if r >= lo:
                tl.store(out_ptr + r * BLOCK + cols, tl.sum(tl.where(done, acc, 0.0), axis=0))
            acc = tl.where(done, 0.0, acc)


target = get_target("Ascend910B2")
DUMP = os.environ.get("DUMP_HIVM")
block, steps = 128, 3
for guarded, reset_in_branch in ((True, True), (False, True), (True, False)):
    v = Variant("f32", {"x_ptr": "*fp32", "out_ptr": "*fp32", "n_steps": "i32", "lo": "i32"},
                {"GUARDED": guarded, "RESET_IN_BRANCH": reset_in_branch})
    spec = KernelSpec("repro.acc", acc_kernel, [v], lambda t, v: [{"BLOCK": block}], lambda t, v: {"BLOCK": block})
    linalg = ascend.lower(Job(spec, v, target, {"BLOCK": block}, True))
    compiled, _, _ = ascend.compile_linalg(linalg, target.name)
    if DUMP:  # the module after the HIVM pipeline (what the CPU run executes)
        with open(f"{DUMP}.guarded{int(guarded)}.reset{int(reset_in_branch)}.mlir", "w") as f:
            f.write(ascend_run.hivm_module(linalg, target.name))
    x = torch.arange(1, steps * block + 1, dtype=torch.float32)
    out = torch.zeros((steps - 1) * block, dtype=torch.float32)
    ascend_run.CpuKernel(*ascend_run.build(linalg, target.name, target.ub_bytes))((1,), [x, out, steps, 0])
    rows = x.view(steps, block)
    expected = (rows[:-1] + rows[1:]).flatten()
    print(f"guarded={guarded} reset_in_branch={reset_in_branch} compiles={compiled} "
          f"matches={torch.equal(out, expected)} out[0]={out[0].item()} expected[0]={expected[0].item()} "
          f"(2 * x[1][0] = {2 * x[block].item()})")
