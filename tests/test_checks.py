"""The hardware-free checks themselves: they pass on our kernels and fail on a CUDA-only kernel."""
import os
import pathlib
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
        pytest.skip("no triton-ascend env: set ATLAS_ASCEND_PYTHON or create .venv-ascend (see README)")
    return path


def run_check(python, *args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([python, "-m", "atlas_kernels.checks", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


def test_ascend_check_rejects_the_cuda_only_negative_control():
    r = run_check(ascend_python(), "ascend", "--kernels", "negative_control", "--include-negative-control")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "negative_control.cuda_only" in r.stdout
    assert "0 passed, 2 failed" in r.stdout


def test_ascend_check_lowers_a_real_kernel():
    r = run_check(ascend_python(), "ascend", "--kernels", "int4_pack.pack", "--sample", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "self-test: the CUDA-only negative control fails to lower" in r.stdout
    assert " 0 failed" in r.stdout


def test_cuda_check_compiles_and_reports_resources():
    r = run_check(sys.executable, "cuda", "--kernels", "int4_pack.pack", "--sample", "0", "--targets", "sm_90")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "regs=" in r.stdout and "stack=0" in r.stdout
    assert "4 passed, 0 failed" in r.stdout


def test_cuda_check_fails_a_shipped_config_that_spills():
    # one warp holding a 64x256 tile of packed words (8 nibble loads each) cannot stay in registers
    code = ("import atlas_kernels\n"
            "from atlas_kernels.checks import Job, cuda\n"
            "from atlas_kernels.autotune import KERNELS, get_target\n"
            "s = KERNELS['int4_pack.pack']\n"
            "cfg = {'BLOCK_R': 64, 'BLOCK_P': 256, 'num_warps': 1}\n"
            "r = cuda.run(Job(s, s.variants[0], get_target('sm_90'), cfg, shipped=True))\n"
            "print(r.ok, r.detail)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.stdout.startswith("False shipped config spills"), out.stdout + out.stderr
