"""The hardware-free checks themselves: they pass on our kernels and fail on a CUDA-only kernel."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def ascend_python():
    """The interpreter of the env that has triton-ascend (ATLAS_ASCEND_PYTHON or .venv-ascend)."""
    path = os.environ.get("ATLAS_ASCEND_PYTHON") or str(ROOT / ".venv-ascend" / "bin" / "python")
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the triton-ascend env ({path} missing)")
        pytest.skip("no triton-ascend env: set ATLAS_ASCEND_PYTHON or create .venv-ascend (see docs/design.md)")
    return path


def run_check(python, *args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([python, "-m", "atlas_kernels.checks", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


def test_ascend_check_rejects_both_negative_controls():
    # one fails in the Linalg adapter (a CUDA-only call), the other only in bishengir's UB planning
    r = run_check(ascend_python(), "ascend", "--kernels", "negative_control", "--include-negative-control",
                  "--targets", "Ascend910B2")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    cuda_only = next(ln for ln in lines if "negative_control.cuda_only" in ln)
    overflow = next(ln for ln in lines if "negative_control.ub_overflow" in ln)
    assert cuda_only.startswith("FAIL") and "Linalg lowering" in cuda_only
    assert overflow.startswith("FAIL") and "ub overflow: needs 524288 bytes, 196608 available" in overflow
    assert "0 passed, 2 failed" in r.stdout


def test_ascend_check_compiles_a_real_kernel_through_bishengir():
    r = run_check(ascend_python(), "ascend", "--kernels", "int4_pack.unpack", "--sample", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "self-test: the CUDA-only control fails to lower, the 65536-element add overflows the UB" in r.stdout
    assert "the last-arrival kernel takes 1 cross-core lock" in r.stdout  # the lock refusal can fail a job
    assert " 0 failed" in r.stdout and "cross-core locks (sync_block_lock): 0 in 0 of" in r.stdout
    planned = [int(v) for v in re.findall(r"\bub=(\d+)", r.stdout)]
    assert planned and all(0 < ub <= 196608 for ub in planned), r.stdout


def test_planned_bytes_reads_pointer_casts_of_the_hivm_ir():
    from atlas_kernels.checks.ascend import planned_bytes
    hivm = """
    %c0_i64 = arith.constant 0 : i64
    %c4096_i64 = arith.constant 4096 : i64
    %c100_i64 = arith.constant 100 : i64
    %0 = hivm.hir.pointer_cast(%c0_i64) : memref<16x64xf32, #hivm.address_space<ub>>
    %1 = hivm.hir.pointer_cast(%c4096_i64, %c0_i64) : memref<8x16x256xi1, #hivm.address_space<ub>>
    %2 = hivm.hir.pointer_cast(%c100_i64) : memref<32x32xi32, strided<[32, 1]>, #hivm.address_space<cc>>
    %3 = hivm.hir.pointer_cast(%c0_i64) : memref<4xi64, #hivm.address_space<gm>>
    """
    assert planned_bytes(hivm) == {"ub": 4096 + 4096, "l0c": 100 + 4096}


def test_cuda_check_compiles_and_reports_resources():
    r = run_check(sys.executable, "cuda", "--kernels", "int4_pack.pack", "--sample", "0", "--targets", "sm_90")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "regs=" in r.stdout and "stack=0" in r.stdout
    assert "8 passed, 0 failed" in r.stdout  # 4 packings x (unit column stride, strided)


def test_cuda_check_fails_a_shipped_config_that_spills():
    code = ("import atlas_kernels\n"
            "from atlas_kernels.checks import Job, cuda\n"
            "from atlas_kernels.checks.negative_control import SPILL_CONTROL as s\n"
            "from atlas_kernels.autotune import get_target\n"
            "t, v = get_target('sm_90'), s.variants[0]\n"
            "r = cuda.run(Job(s, v, t, s.default(t, v), shipped=True))\n"
            "print(r.ok, r.detail)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.startswith("False shipped config spills"), out.stdout + out.stderr


def test_ascend_check_flags_a_verdict_made_from_another_version_of_the_kernel():
    # the stored verdict for the shipped unpack config, with the Linalg hash of some other kernel
    code = ("import atlas_kernels\n"
            "from atlas_kernels.autotune import KERNELS, get_target, verdicts\n"
            "from atlas_kernels.checks import Job, ascend\n"
            "s, t = KERNELS['int4_pack.unpack'], get_target('Ascend910B2')\n"
            "v = s.variants[0]\n"
            "job = Job(s, v, t, s.default(t, v), shipped=True)\n"
            "print('fresh', ascend.run(job).ok)\n"
            "data = verdicts.load()\n"
            "data['kernels'][s.name][v.label][verdicts.config_key(job.config)]['linalg'] = '0' * 16\n"
            "r = ascend.run(job)\n"
            "print('tampered', r.ok, r.detail)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([ascend_python(), "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    assert "fresh True" in out.stdout, out.stdout + out.stderr
    assert "tampered False stale verdict" in out.stdout, out.stdout + out.stderr
