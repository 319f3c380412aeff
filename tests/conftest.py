"""Where the tests run: natively on a GPU or NPU when one is present, else in Triton's CPU interpreter.

TRITON_INTERPRET is read when kernels are decorated, so the choice is made here, before anything
imports triton: ATLAS_KERNELS_TEST_DEVICE=cpu|cuda|npu forces it; by default cuda or npu when usable.
On a native device only tests that take the ``device`` fixture run (the rest build CPU tensors and need
the interpreter: run them with ATLAS_KERNELS_TEST_DEVICE=cpu).
"""
import importlib.util
import os

import pytest


def select_test_device(requested, cuda_available, npu_available) -> str:
    """'cpu' (the interpreter), 'cuda' or 'npu': ``requested`` (env value or None) if given, else a native device.

    ValueError for an unknown or unavailable request.
    """
    available = {"cpu": True, "cuda": cuda_available, "npu": npu_available}
    if requested:
        if requested not in available:
            raise ValueError(f"ATLAS_KERNELS_TEST_DEVICE must be one of cpu, cuda, npu, got {requested!r}")
        if not available[requested]:
            raise ValueError(f"ATLAS_KERNELS_TEST_DEVICE={requested} but no {requested} device is usable")
        return requested
    return "npu" if npu_available else "cuda" if cuda_available else "cpu"


def _npu_available() -> bool:
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        import torch_npu  # noqa: F401
        import torch
        return torch.npu.is_available()
    except Exception:  # noqa: BLE001  (CANN missing or broken)
        return False


def _cuda_available() -> bool:
    import torch  # torch does not import triton
    return torch.cuda.is_available()


TEST_DEVICE = select_test_device(os.environ.get("ATLAS_KERNELS_TEST_DEVICE"), _cuda_available(), _npu_available())
if TEST_DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
elif os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes"):
    raise pytest.UsageError(f"TRITON_INTERPRET is set but the tests run natively on {TEST_DEVICE}: unset it, "
                            f"or set ATLAS_KERNELS_TEST_DEVICE=cpu for the interpreter")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import hypothesis  # noqa: E402

hypothesis.settings.register_profile("default", deadline=None, max_examples=25, derandomize=True,
                                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.register_profile("thorough", deadline=None, max_examples=300)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def device():
    """The torch device op tests build their tensors on: cpu (interpreter), cuda or npu."""
    import torch
    return torch.device(TEST_DEVICE)


def pytest_collection_modifyitems(config, items):
    if TEST_DEVICE == "cpu":
        return
    skip = pytest.mark.skip(reason=f"CPU-tensor test: needs the interpreter (ATLAS_KERNELS_TEST_DEVICE=cpu); "
                                   f"this run is native on {TEST_DEVICE}")
    for item in items:
        if "device" not in getattr(item, "fixturenames", ()):
            item.add_marker(skip)
