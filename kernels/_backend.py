"""Backend selection: which Triton is installed, and where an op call runs.

The backend comes from the input tensors' device, never from a global switch:
npu -> triton-ascend, cuda -> upstream Triton, cpu -> Triton's interpreter
when TRITON_INTERPRET=1 was set before import, else the pure-torch reference
(with a one-time warning).
"""
from __future__ import annotations

import collections
import importlib.metadata
import importlib.util
import os
import warnings

try:
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a Triton-free env by hand
    raise ImportError(
        "atlas_kernels needs Triton, which is not installed. Install one flavour:\n"
        "  pip install 'atlas-kernels[cpu]'   # upstream triton: CPU interpreter (TRITON_INTERPRET=1) and NVIDIA GPUs\n"
        "  pip install 'atlas-kernels[npu]'   # triton-ascend + torch_npu for Atlas A2/A3 NPUs (needs CANN)\n"
        "(upstream triton and triton-ascend both install the `triton` module: keep them in separate envs)"
    ) from e

import torch

from .autotune import Target, detect_target

TRITON_FLAVOUR = "triton-ascend" if importlib.util.find_spec("triton.backends.ascend") else "triton"


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


TRITON_VERSION = _dist_version(TRITON_FLAVOUR) or getattr(triton, "__version__", "unknown")
# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when atlas_kernels is imported.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")

# Counts of kernel launches and reference fallbacks; tests read them to prove which path ran.
launches: collections.Counter = collections.Counter()
fallbacks: collections.Counter = collections.Counter()
_warned: set = set()


def device_of(op: str, **tensors: torch.Tensor) -> torch.device:
    """The one device all given tensors live on; ValueError naming the odd one out."""
    device = None
    first = None
    for name, t in tensors.items():
        if t is None:
            continue
        if device is None:
            device, first = t.device, name
        elif t.device != device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first} is on {device}; put all inputs on one device")
    return device if device is not None else torch.device("cpu")


def use_kernel(op: str, device: torch.device) -> bool:
    """True when ``op`` should launch its Triton kernel on ``device``.

    False (after one warning per op) on CPU without the interpreter: the
    caller then runs the reference.
    """
    if device.type == "cpu":
        if INTERPRETER:
            return True
        fallbacks[op] += 1
        if op not in _warned:
            _warned.add(op)
            warnings.warn(f"atlas_kernels.{op}: CPU tensors and TRITON_INTERPRET=1 was not set before importing "
                          f"atlas_kernels; running the pure-torch reference instead of the Triton kernel",
                          RuntimeWarning, stacklevel=3)
        return False
    if device.type == "npu" and TRITON_FLAVOUR != "triton-ascend":
        raise RuntimeError(f"atlas_kernels.{op}: NPU tensors need triton-ascend, but upstream triton is installed "
                           f"(pip install 'atlas-kernels[npu]' in its own environment)")
    if device.type == "cuda" and TRITON_FLAVOUR != "triton":
        raise RuntimeError(f"atlas_kernels.{op}: CUDA tensors need upstream triton, but triton-ascend is installed")
    if device.type not in ("npu", "cuda"):
        raise ValueError(f"atlas_kernels.{op}: no backend for device type {device.type!r}")
    return True


def target_for(device: torch.device) -> Target:
    return detect_target(device)


def launch(name: str, kernel, grid, *args, **kwargs):
    """Launch a kernel and count it (tests assert on ``launches``)."""
    launches[name] += 1
    return kernel[grid](*args, **kwargs)


def persistent_grid(n_tiles: int, target: Target, uses_dot: bool = False) -> tuple:
    """Grid for a persistent kernel: at most one program per core, at least one."""
    return (max(1, min(n_tiles, target.programs(uses_dot), target.max_grid)),)


def info() -> dict:
    """Backend facts for bug reports: Triton flavour and version, interpreter, devices, target."""
    devices = ["cpu"]
    target = "interpreter" if INTERPRETER else "none (CPU falls back to the torch reference)"
    if torch.cuda.is_available():
        devices.append(f"cuda ({torch.cuda.get_device_name(0)})")
        target = detect_target(torch.device("cuda", 0)).name
    if _dist_version("torch_npu") is not None:
        try:
            import torch_npu  # noqa: F401
            if torch.npu.is_available():
                devices.append("npu")
                target = detect_target(torch.device("npu", 0)).name
        except Exception as e:  # CANN missing or broken: report, don't fail
            devices.append(f"npu unavailable ({type(e).__name__}: {e})")
    backend = "npu" if "npu" in devices else "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "backend": backend,
        "target": target,
        "triton_flavour": TRITON_FLAVOUR,
        "triton_version": TRITON_VERSION,
        "interpreter": INTERPRETER,
        "torch_version": torch.__version__,
        "devices": devices,
    }
