"""Where the tests run: natively on a GPU or NPU when one is present, else in Triton's CPU interpreter.

TRITON_INTERPRET is read when kernels are decorated, so the choice is made here, before anything
imports triton: ATLAS_KERNELS_TEST_DEVICE=cpu|cuda|npu forces it; by default cuda or npu when usable.
On a native device only tests that take the ``device`` fixture run (the rest build CPU tensors and need
the interpreter: run them with ATLAS_KERNELS_TEST_DEVICE=cpu).
"""
import collections
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
                                     suppress_health_check=[hypothesis.HealthCheck.too_slow,
                                                            # the `device` fixture is one constant per run
                                                            hypothesis.HealthCheck.function_scoped_fixture])
hypothesis.settings.register_profile("thorough", deadline=None, max_examples=300,
                                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def device():
    """The torch device op tests build their tensors on: cpu (interpreter), cuda or npu."""
    import torch
    return torch.device(TEST_DEVICE)


# Test modules that launch no op on a device (the host codec, the tuned-config store and tuner, the compile checks,
# the docs) or that measure the interpreter itself: a native run skips them, the CPU run covers them.
HOST_MODULES = {"test_ascend_run", "test_autotune", "test_backend", "test_checks", "test_checks_cuda",
                "test_compress_codec", "test_executor", "test_imports", "test_meter", "test_readme", "test_verdicts"}


def pytest_configure(config):
    config.addinivalue_line("markers", "interpreter(reason): needs Triton's CPU interpreter (skipped in a native run)")
    config.addinivalue_line("markers", "host: launches no op on a device (skipped in a native run; the CPU run covers it)")


def native_skip_reason(item) -> str | None:
    """Why a native (GPU/NPU) run skips ``item``; None if it runs there (it takes the ``device`` fixture)."""
    if "device" in getattr(item, "fixturenames", ()):
        return None
    marker = item.get_closest_marker("interpreter")
    if marker is not None:
        return f"needs Triton's interpreter: {marker.args[0] if marker.args else 'CPU only'}"
    if item.module.__name__.rpartition(".")[2] in HOST_MODULES or item.get_closest_marker("host") is not None:
        return "host-only (no op launch on a device): the CPU run covers it"
    return "CPU-tensor op test, not on the device fixture yet: run it with ATLAS_KERNELS_TEST_DEVICE=cpu"


def pytest_collection_modifyitems(config, items):
    if os.environ.get("ATLAS_KERNELS_NATIVE_PREVIEW"):  # make device DRY=1: what a native run would skip
        config._atlas_native_preview = collections.Counter(
            (native_skip_reason(item) or "runs natively", item.module.__name__.rpartition(".")[2]) for item in items)
    if TEST_DEVICE == "cpu":
        return
    for item in items:
        reason = native_skip_reason(item)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"{reason} (this run is native on {TEST_DEVICE})"))


def pytest_report_collectionfinish(config, start_path, items):
    preview = getattr(config, "_atlas_native_preview", None)
    if not preview:
        return []
    lines = ["native-run preview (ATLAS_KERNELS_NATIVE_PREVIEW): tests per outcome and module"]
    for reason in sorted({r for r, _ in preview}):
        per_module = {m: c for (r, m), c in preview.items() if r == reason}
        lines.append(f"  {sum(per_module.values()):5d}  {reason}")
        lines += [f"         {c:5d} {m}" for m, c in sorted(per_module.items())]
    return lines
