"""The CPU run of bishengir's output (checks/ascend_run/) catches what the compile check cannot."""
import os
import subprocess

from test_checks import ROOT, ascend_python

# Runs in the triton-ascend env: an off-by-one store mask compiles for Ascend910B2 (the compile check passes)
# but the CPU run of the compiled IR writes one element too many; the correct mask matches byte for byte. The same
# for a tl.dot kernel, run at the HFusion level: its int32 product is exact, the wrong mask writes row M. And a kernel
# whose programs all store to one place fails: the second run, blocks in reverse order, leaves another value.
SCRIPT = '''
import torch, triton, triton.language as tl
from atlas_kernels.autotune import KernelSpec, Variant, get_target
from atlas_kernels.checks import Job, ascend, ascend_run

@triton.jit
def copy_kernel(x_ptr, y_ptr, n, OFF_BY_ONE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n + 1 if OFF_BY_ONE else offs < n
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=mask), mask=mask)

target = get_target("Ascend910B2")
n, block = 1000, 256
for wrong in (False, True):
    v = Variant("i32", {"x_ptr": "*i32", "y_ptr": "*i32", "n": "i32"}, {"OFF_BY_ONE": wrong})
    spec = KernelSpec("test.copy", copy_kernel, [v], lambda t, v: [{"BLOCK": block}], lambda t, v: {"BLOCK": block})
    linalg = ascend.lower(Job(spec, v, target, {"BLOCK": block}, True))
    compiled, detail, _ = ascend.compile_linalg(linalg, target.name)
    x = torch.arange(n + 24, dtype=torch.int32)
    y = torch.full((n + 24,), -1, dtype=torch.int32)
    ascend_run.CpuKernel(*ascend_run.build(linalg, target.name, target.ub_bytes))((triton.cdiv(n, block),), [x, y, n])
    expected = torch.cat([x[:n], torch.full((24,), -1, dtype=torch.int32)])
    changed = int((y[n:] != -1).sum())
    print(f"wrong={wrong} compiles={compiled} matches={torch.equal(y, expected)} changed_past_n={changed}")

# a tl.dot kernel runs at the HFusion level: its store mask one row too long writes row M
@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, OFF_BY_ONE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                  BK: tl.constexpr):
    pid = tl.program_id(0)
    n_tiles = tl.cdiv(N, BN)
    rm = (pid // n_tiles) * BM + tl.arange(0, BM)
    rn = (pid % n_tiles) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.int32)
    for k0 in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * K + (k0 + rk)[None, :], mask=(rm[:, None] < M) & (k0 + rk < K)[None, :],
                    other=0)
        b = tl.load(b_ptr + (k0 + rk)[:, None] * N + rn[None, :], mask=(k0 + rk < K)[:, None] & (rn < N)[None, :],
                    other=0)
        acc += tl.dot(a, b)
    rows = M + 1 if OFF_BY_ONE else M
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc, mask=(rm < rows)[:, None] & (rn < N)[None, :])

m, n, k, bm, bn, bk = 50, 40, 70, 32, 32, 32
g = torch.Generator().manual_seed(0)
a = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=g)
b = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=g)
for wrong in (False, True):
    v = Variant("i8", {"a_ptr": "*i8", "b_ptr": "*i8", "c_ptr": "*i32", "M": "i32", "N": "i32", "K": "i32"},
                {"OFF_BY_ONE": wrong})
    config = {"BM": bm, "BN": bn, "BK": bk}
    spec = KernelSpec("test.matmul", matmul_kernel, [v], lambda t, v: [config], lambda t, v: config, uses_dot=True)
    linalg = ascend.lower(Job(spec, v, target, config, True))
    compiled, detail, _ = ascend.compile_linalg(linalg, target.name)
    c = torch.full((m + 1, n), -1, dtype=torch.int32)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    ascend_run.CpuKernel(*ascend_run.build(linalg, target.name, target.ub_bytes, cube=True))(grid, [a, b, c, m, n, k])
    exact = torch.equal(c[:m], (a.long() @ b.long()).int())
    print(f"dot wrong={wrong} compiles={compiled} exact={exact} row_m_written={bool((c[m] != -1).any())}")

# every program stores its id to one place: on hardware the last to arrive wins; the reversed second run sees it
@triton.jit
def race_kernel(out_ptr, BLOCK: tl.constexpr):
    tl.store(out_ptr + tl.arange(0, BLOCK), tl.zeros((BLOCK,), tl.int32) + tl.program_id(0))

v = Variant("i32", {"out_ptr": "*i32"}, {})
spec = KernelSpec("test.race", race_kernel, [v], lambda t, v: [{"BLOCK": 64}], lambda t, v: {"BLOCK": 64})
linalg = ascend.lower(Job(spec, v, target, {"BLOCK": 64}, True))
try:
    ascend_run.CpuKernel(*ascend_run.build(linalg, target.name, target.ub_bytes))((4,), [torch.zeros(64, dtype=torch.int32)])
    print("race: not caught")
except ascend_run.LaunchError as e:
    print("race:", "caught" if "order the blocks run in" in str(e) else str(e))

# a construct the CPU path cannot run is refused by name: a float cumsum (its summation order is not known)
@triton.jit
def cumsum_kernel(a_ptr, b_ptr, c_ptr, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    a = tl.load(a_ptr + r[:, None] * BLOCK + r[None, :])
    acc = tl.dot(a, tl.load(b_ptr + r[:, None] * BLOCK + r[None, :]))
    tl.store(c_ptr + r[:, None] * BLOCK + r[None, :], tl.cumsum(acc, axis=1))

v = Variant("f16", {"a_ptr": "*fp16", "b_ptr": "*fp16", "c_ptr": "*fp32"}, {})
spec = KernelSpec("test.cumsum", cumsum_kernel, [v], lambda t, v: [{"BLOCK": 32}], lambda t, v: {"BLOCK": 32},
                  uses_dot=True)
try:
    ascend_run.build(ascend.lower(Job(spec, v, target, {"BLOCK": 32}, True)), target.name, target.ub_bytes, cube=True)
    print("cumsum: built")
except ascend_run.Unsupported as e:
    print("cumsum:", str(e))
'''


def test_off_by_one_masks_compile_but_the_cpu_run_catches_them(tmp_path):
    python = ascend_python()
    script = tmp_path / "off_by_one.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["ATLAS_KERNELS_CACHE_DIR"] = str(tmp_path / "cache")  # build from scratch: no stale library
    proc = subprocess.run([python, str(script)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines == ["wrong=False compiles=True matches=True changed_past_n=0",
                     "wrong=True compiles=True matches=False changed_past_n=1",
                     "dot wrong=False compiles=True exact=True row_m_written=False",
                     "dot wrong=True compiles=True exact=True row_m_written=True",
                     "race: caught",
                     "cumsum: hfusion.cumsum on f32: the order of a float sum is not known"], proc.stdout
