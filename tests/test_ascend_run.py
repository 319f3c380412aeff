"""The CPU run of bishengir's output (checks/ascend_run.py) catches what the compile check cannot."""
import os
import subprocess

from test_checks import ROOT, ascend_python

# Runs in the triton-ascend env: an off-by-one store mask compiles for Ascend910B2 (the compile check passes)
# but the CPU run of the compiled IR writes one element too many; the correct mask matches byte for byte.
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
'''


def test_off_by_one_mask_compiles_but_the_cpu_run_catches_it(tmp_path):
    python = ascend_python()
    script = tmp_path / "off_by_one.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["ATLAS_KERNELS_CACHE_DIR"] = str(tmp_path / "cache")  # build from scratch: no stale library
    proc = subprocess.run([python, str(script)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines == ["wrong=False compiles=True matches=True changed_past_n=0",
                     "wrong=True compiles=True matches=False changed_past_n=1"], proc.stdout
