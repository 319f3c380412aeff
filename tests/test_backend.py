"""Backend selection, info(), targets, and the errors a user meets first."""
import os
import subprocess
import sys

import pytest
import torch

import atlas_kernels as ak
from atlas_kernels.autotune import TARGETS, UnsupportedTargetError, detect_target, get_target


def run_python(code, interpret=False):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_info_reports_interpreter_and_flavour():
    facts = ak.info()
    assert facts["interpreter"] is True
    assert facts["triton_flavour"] == "triton"
    assert facts["target"] == "interpreter"
    assert facts["backend"] == "cpu"


def test_cli_info():
    r = subprocess.run([sys.executable, "-m", "atlas_kernels", "info", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '"triton_flavour": "triton"' in r.stdout and '"interpreter": true' in r.stdout


def test_cpu_without_interpreter_falls_back_and_warns_once():
    r = run_python(
        "import warnings, torch, atlas_kernels as ak\n"
        "from atlas_kernels import _backend\n"
        "w = torch.randint(-8, 8, (4, 16), dtype=torch.int32)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    a = ak.convert_weight_to_int4pack(w); b = ak.convert_weight_to_int4pack(w)\n"
        "print(len([c for c in caught if 'TRITON_INTERPRET' in str(c.message)]), dict(_backend.fallbacks),"
        " dict(_backend.launches))\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1 {'convert_weight_to_int4pack': 2} {}"


def test_missing_triton_gives_a_clear_import_error():
    r = run_python("import sys\nsys.modules['triton'] = None\nimport atlas_kernels\n")
    assert r.returncode != 0
    assert "atlas_kernels needs Triton" in r.stderr and "atlas-kernels[cpu]" in r.stderr


def test_targets_registry():
    assert detect_target(torch.device("cpu")).name == "interpreter"
    for name in ("Ascend910B2", "Ascend910_9391", "sm_80", "sm_90"):
        assert get_target(name).name == name
    a2 = get_target("Ascend910B4")
    assert (a2.cube_cores, a2.vector_cores, a2.ub_bytes, a2.l2_bytes) == (20, 40, 192 * 1024, 96 * 1024 ** 2)
    assert all(t.max_grid == 65535 for t in TARGETS.values() if t.is_ascend)


def test_310p_is_a_clear_error():
    with pytest.raises(UnsupportedTargetError, match="triton-ascend does not support the Ascend 310P"):
        get_target("Ascend310P3")
    with pytest.raises(ValueError, match="unknown target"):
        get_target("Ascend999")


def test_mixed_devices_are_rejected():
    from atlas_kernels._backend import device_of
    with pytest.raises(ValueError, match="x2 is on meta but x1 is on cpu"):
        device_of("op", x1=torch.zeros(1), x2=torch.zeros(1, device="meta"))
