"""Backend selection: which Triton is installed, and where an op call runs.

The backend comes from the input tensors' device, never from a global switch:
npu -> triton-ascend, cuda -> upstream Triton, cpu -> Triton's interpreter
when TRITON_INTERPRET=1 was set before import, else the pure-torch reference
(with a one-time warning).

Under the interpreter, float -> bfloat16 casts in our launches are corrected to round to
nearest even, as GPUs and NPUs do (``_install_interpreter_casts``; docs/correctness.md).
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import importlib.metadata
import importlib.util
import itertools
import os
import warnings

import numpy as np

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

from .autotune.targets import Target, detect_target

TRITON_FLAVOUR = "triton-ascend" if importlib.util.find_spec("triton.backends.ascend") else "triton"


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


TRITON_VERSION = _dist_version(TRITON_FLAVOUR) or getattr(triton, "__version__", "unknown")
# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when atlas_kernels is imported.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")



def _f32_to_bf16_bits(x: np.ndarray, toward_zero: bool = False) -> np.ndarray:
    """float32 array -> bfloat16 bits (uint16), round to nearest even (or toward zero), as GPUs and NPUs do.

    Overflow rounds to inf, float32 subnormals round like normals (bfloat16 has float32's exponent
    range), a NaN stays a quiet NaN with its sign.
    """
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    if toward_zero:
        rounded = bits >> np.uint32(16)
    else:
        with np.errstate(over="ignore"):  # NaN bits may wrap; they are replaced below
            rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, (bits >> np.uint32(16)) | np.uint32(0x0040), rounded).astype(np.uint16).reshape(np.shape(x))


def _toward_zero(x: np.ndarray, dtype) -> np.ndarray:
    """x (float64 or float32) rounded toward zero to ``dtype`` (numpy float16 or float32)."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf and NaN are expected here
        y = x.astype(dtype)
        over = np.abs(y.astype(np.float64)) > np.abs(x.astype(np.float64))
        return np.where(over, np.nextafter(y, dtype(0)), y).astype(dtype)


def _to_f32_odd(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounded to odd, so that a second rounding to bfloat16 rounds once (no double rounding)."""
    y = _toward_zero(x, np.float32)
    with np.errstate(invalid="ignore"):
        inexact = (y.astype(np.float64) != x) & ~np.isnan(x)
    return (y.view(np.uint32) | inexact.astype(np.uint32)).view(np.float32)


# Which interpreted launches get corrected casts (_install_interpreter_casts): "ours" (default) only kernels launched
# through `launch` below, "all" every interpreted kernel in the process, "off" none (Triton's own casts everywhere).
INTERPRETER_CASTS_MODES = ("ours", "all", "off")
INTERPRETER_CASTS = os.environ.get("ATLAS_KERNELS_INTERPRETER_CASTS", "ours").strip().lower() or "ours"
if INTERPRETER_CASTS not in INTERPRETER_CASTS_MODES:
    raise ValueError(f"ATLAS_KERNELS_INTERPRETER_CASTS={INTERPRETER_CASTS!r}; allowed: "
                     f"{', '.join(INTERPRETER_CASTS_MODES)} (default ours)")
# Triton versions whose InterpreterBuilder.cast_impl / create_fp_to_fp the correction was written and tested against
# (their signatures and callers); on any other version Triton is left alone, with a warning.
INTERPRETER_CASTS_TESTED = ("3.9.",)
# True while `launch` runs a kernel in this thread / async context: the corrected casts apply there (mode "ours").
_in_launch: contextvars.ContextVar[bool] = contextvars.ContextVar("atlas_kernels_launch", default=False)


def _corrected_here() -> bool:
    return INTERPRETER_CASTS == "all" or _in_launch.get()


def _install_interpreter_casts(version: str | None = None, builder=None) -> bool:
    """Make Triton's interpreter round float -> bfloat16 to nearest even inside atlas launches, as the hardware does.

    Triton 3.9's interpreter converts fp32 -> bf16 by dropping mantissa bits, also with
    fp_downcast_rounding="rtne", turns fp32 subnormals into wrong values and large values into
    bf16's max instead of inf, and reads bf16 -> int / fp64 as the raw uint16 bits. This wraps
    ``InterpreterBuilder.cast_impl`` and ``create_fp_to_fp``: inside a kernel launched by ``launch``
    (``ATLAS_KERNELS_INTERPRETER_CASTS=ours``, the default; ``all``: every interpreted kernel) a
    conversion that involves bfloat16 (or float -> fp16 with an explicit rounding mode) takes our
    code, anything else calls Triton's originals, so other libraries' interpreted kernels keep
    Triton's casts. The scope is a ContextVar, so concurrent threads do not see each other's launches.

    Installed only on the Triton versions in ``INTERPRETER_CASTS_TESTED`` and only if a self-check
    (a known value and a tie cast in a tiny kernel through the patched path, compared with torch)
    passes; otherwise Triton's methods are put back and a warning says why. Returns whether the
    correction is active (tests/test_numerics.py fails loudly when it is not).
    """
    version = TRITON_VERSION if version is None else version
    if INTERPRETER_CASTS == "off":
        return False
    try:
        from triton.runtime import interpreter as interp
        from triton._C.libtriton import ir
    except ImportError:  # pragma: no cover - interpreter layout changed
        return _casts_not_installed("triton.runtime.interpreter has no InterpreterBuilder")
    builder = builder or getattr(interp, "InterpreterBuilder", None)
    if builder is None or not hasattr(builder, "cast_impl") or not hasattr(builder, "create_fp_to_fp"):
        return _casts_not_installed("Triton's InterpreterBuilder has no cast_impl / create_fp_to_fp")
    if getattr(builder.cast_impl, "_atlas_kernels_rtne", False):
        return True
    if not version.startswith(INTERPRETER_CASTS_TESTED):
        return _casts_not_installed(f"triton {version} is not a version the correction was tested on "
                                    f"({', '.join(v + 'x' for v in INTERPRETER_CASTS_TESTED)})")
    triton_cast_impl, triton_fp_to_fp = builder.cast_impl, builder.create_fp_to_fp
    Handle = interp.TensorHandle

    def cast_impl(self, src, dst_type):
        if not _corrected_here():
            return triton_cast_impl(self, src, dst_type)
        src_ty, dst_ty = src.dtype.scalar, dst_type.scalar
        if src_ty == tl.bfloat16 and dst_ty != tl.bfloat16:
            f32 = (np.asarray(src.data).astype(np.uint32) << np.uint32(16)).view(np.float32)
            if dst_ty == tl.float32:
                return Handle(f32, tl.float32)
            return triton_cast_impl(self, Handle(f32, tl.float32), dst_type)
        if dst_ty == tl.bfloat16 and src_ty != tl.bfloat16:
            data = np.asarray(src.data)
            exact_in_f32 = src_ty in (tl.float32, tl.float16)
            f32 = data.astype(np.float32) if exact_in_f32 else _to_f32_odd(data.astype(np.float64))
            return Handle(_f32_to_bf16_bits(f32), tl.bfloat16)
        return triton_cast_impl(self, src, dst_type)

    def create_fp_to_fp(self, src, dst_type, rounding_mode):
        if not _corrected_here():
            return triton_fp_to_fp(self, src, dst_type, rounding_mode)
        src_ty, dst_ty = src.dtype.scalar, dst_type.scalar
        down = src_ty in (tl.float32, tl.float64) and dst_ty in (tl.bfloat16, tl.float16)
        if down and rounding_mode in (ir.ROUNDING_MODE.RTNE, ir.ROUNDING_MODE.RTZ):
            data = np.asarray(src.data)
            if rounding_mode == ir.ROUNDING_MODE.RTNE:
                return cast_impl(self, src, dst_type)
            if dst_ty == tl.float16:
                return Handle(_toward_zero(data, np.float16), tl.float16)
            return Handle(_f32_to_bf16_bits(_toward_zero(data, np.float32), toward_zero=True), tl.bfloat16)
        return triton_fp_to_fp(self, src, dst_type, rounding_mode)

    cast_impl._atlas_kernels_rtne = True
    builder.cast_impl, builder.create_fp_to_fp = cast_impl, create_fp_to_fp
    builder._atlas_kernels_triton_casts = (triton_cast_impl, triton_fp_to_fp)  # tests put these back to see the bug
    problem = _casts_self_check()
    if problem:
        builder.cast_impl, builder.create_fp_to_fp = triton_cast_impl, triton_fp_to_fp
        del builder._atlas_kernels_triton_casts
        return _casts_not_installed(f"the self-check failed: {problem}")
    return True


def _casts_not_installed(why: str) -> bool:
    warnings.warn(f"atlas_kernels: Triton's interpreter keeps its own float -> bfloat16 casts ({why}), so bf16 "
                  f"outputs computed on CPU may differ from the hardware's by an ulp (set "
                  f"ATLAS_KERNELS_INTERPRETER_CASTS=off to silence this)", RuntimeWarning, stacklevel=3)
    return False


# values whose bf16 rounding the truncating cast gets wrong: above a tie (137.50000298 -> 138), ties to even
# (1.01171875 -> 1.015625, 1.00390625 -> 1.0), overflow to inf, a float32 subnormal
_SELF_CHECK = (137.50000298, 1.01171875, 1.00390625, 3.4e38, 1e-40, -2.5e-39, 0.0, -7.0)


@triton.jit
def _casts_self_check_kernel(x_ptr, y_ptr, z_ptr, N: tl.constexpr):
    o = tl.arange(0, N)
    x = tl.load(x_ptr + o)
    tl.store(y_ptr + o, x.to(tl.bfloat16))
    tl.store(z_ptr + o, x.to(tl.bfloat16, fp_downcast_rounding="rtne"))


def _casts_self_check() -> str | None:
    """None if the patched path casts like torch in a kernel launched as ours are; else what went wrong."""
    x = torch.tensor(_SELF_CHECK, dtype=torch.float32)
    want = x.to(torch.bfloat16).view(torch.int16)
    y, z = torch.empty_like(want), torch.empty_like(want)
    token = _in_launch.set(True)
    try:
        _casts_self_check_kernel[(1,)](x, y.view(torch.bfloat16), z.view(torch.bfloat16), N=len(_SELF_CHECK))
    except Exception as e:  # noqa: BLE001  (a changed interpreter may fail in any way: report it, keep Triton's)
        return f"{type(e).__name__}: {e}"
    finally:
        _in_launch.reset(token)
    for got, how in ((y, "x.to(bf16)"), (z, "rtne")):
        if not torch.equal(got, want):
            return f"{how} of {_SELF_CHECK} gave bits {got.tolist()}, torch {want.tolist()}"
    return None


INTERPRETER_CASTS_CORRECTED = INTERPRETER and TRITON_FLAVOUR == "triton" and _install_interpreter_casts()

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


def device_guard(device: torch.device):
    """Context in which Triton launches on ``device``: ``torch.cuda.device`` / ``torch.npu.device`` (Triton
    launches on the current device's current stream, not on its arguments' device); a no-op on CPU."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    if device.type == "npu":
        return torch.npu.device(device)
    return contextlib.nullcontext()


def launch_stream(device: torch.device):
    """Raw handle of the stream a launch on ``device`` runs on (that device's current stream; 0 on CPU)."""
    if device.type == "cuda":
        return torch.cuda.current_stream(device).cuda_stream
    if device.type == "npu":
        return torch.npu.current_stream(device).npu_stream
    return 0


def _on_tensor_device(fn):
    """Run ``fn`` (the launch path) inside ``device_guard`` of the first tensor among its arguments, so a model
    split over cuda:0 and cuda:1 launches each layer on its own device and that device's current stream."""
    @functools.wraps(fn)
    def guarded(name, kernel, grid, *args, **kwargs):
        for t in itertools.chain(args, kwargs.values()):
            if isinstance(t, torch.Tensor):
                if t.device.type == "cpu":
                    break
                with device_guard(t.device):
                    return fn(name, kernel, grid, *args, **kwargs)
        return fn(name, kernel, grid, *args, **kwargs)
    return guarded


@_on_tensor_device
def launch(name: str, kernel, grid, *args, **kwargs):
    """Launch a kernel and count it (tests assert on ``launches``).

    Runs on the device of its first tensor argument and that device's current stream (``_on_tensor_device``).

    FP contraction is off (``enable_fp_fusion=False``): a GPU would otherwise fuse ``a * b + c``
    into one FMA (one rounding), which the interpreter and the torch references never do (two), so
    float outputs could differ by an ulp between CPU and GPU. The interpreter ignores the option.
    Under the interpreter the kernel runs with the corrected bf16 casts (``_install_interpreter_casts``).
    """
    launches[name] += 1
    kwargs.setdefault("enable_fp_fusion", False)
    if not INTERPRETER_CASTS_CORRECTED:
        return kernel[grid](*args, **kwargs)
    token = _in_launch.set(True)  # the interpreter runs the kernel inside this call: our casts apply to it only
    try:
        return kernel[grid](*args, **kwargs)
    finally:
        _in_launch.reset(token)


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
        except Exception as e:  # noqa: BLE001  (CANN missing or broken: report, don't fail)
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
