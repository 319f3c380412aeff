"""Hardware registry: what each target has, and which target the current device is.

On-chip sizes of the Ascend SoCs come from CANN's platform_config ini files.
Peak rates and memory bandwidth are public vendor figures that we have not
measured; they are marked ``unverified`` and only feed modelled numbers.
"""
from __future__ import annotations

import dataclasses
import functools

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


class UnsupportedTargetError(RuntimeError):
    """The device exists but no Triton backend can run on it (e.g. Atlas 310P)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One device kind. Sizes in bytes, rates in ops/s and bytes/s."""

    name: str                 # SoC name ("Ascend910B2"), "sm_90", "interpreter"
    family: str               # "A2", "A3", "inference", "cuda", "cpu"
    backend: str              # "npu", "cuda" or "cpu"
    cube_cores: int           # Ascend AI (cube) cores; CUDA SMs; 1 on the interpreter
    vector_cores: int         # Ascend vector cores; CUDA SMs; 1 on the interpreter
    ub_bytes: int = 0         # Ascend unified buffer per vector core
    l1_bytes: int = 0         # Ascend L1 per cube core
    l0a_bytes: int = 0
    l0b_bytes: int = 0
    l0c_bytes: int = 0
    l2_bytes: int = 0
    smem_bytes: int = 0       # CUDA: max shared memory per block
    regs_per_sm: int = 0      # CUDA: 32-bit registers per SM
    memory_bytes: int = 0
    peak_int8_ops: float | None = None
    peak_fp16_flops: float | None = None
    mem_bandwidth: float | None = None
    peak_source: str = "unverified public vendor figures"
    supported: bool = True    # False: triton-ascend has no backend for it
    max_grid: int = 2**31 - 1

    @property
    def is_ascend(self) -> bool:
        return self.backend == "npu"

    def programs(self, uses_dot: bool) -> int:
        """Grid size for a persistent kernel: one program per physical core.

        On Ascend, kernels with tl.dot run on the AI (cube) cores, the others
        on the vector cores. On CUDA this is the SM count; the launcher may
        oversubscribe it.
        """
        return self.cube_cores if uses_dot else self.vector_cores


def _ascend(name, family, cores, l2, memory, int8, fp16, bw, ub=192 * KiB, l1=512 * KiB, l0c=128 * KiB, supported=True):
    return Target(name=name, family=family, backend="npu", cube_cores=cores[0], vector_cores=cores[1],
                  ub_bytes=ub, l1_bytes=l1, l0a_bytes=64 * KiB, l0b_bytes=64 * KiB, l0c_bytes=l0c,
                  l2_bytes=l2, memory_bytes=memory, peak_int8_ops=int8, peak_fp16_flops=fp16,
                  mem_bandwidth=bw, supported=supported, max_grid=65535)


TARGETS: dict[str, Target] = {t.name: t for t in [
    _ascend("Ascend910B1", "A2", (24, 48), 192 * MiB, 64 * GiB, 828e12, 414e12, 1.6e12),
    _ascend("Ascend910B2", "A2", (24, 48), 192 * MiB, 64 * GiB, 752e12, 376e12, 1.6e12),
    _ascend("Ascend910B3", "A2", (20, 40), 192 * MiB, 64 * GiB, 626e12, 313e12, 1.6e12),
    _ascend("Ascend910B4", "A2", (20, 40), 96 * MiB, 32 * GiB, 560e12, 280e12, 0.8e12),
    _ascend("Ascend910_9391", "A3", (24, 48), 192 * MiB, 64 * GiB, 752e12, 376e12, 1.6e12),
    _ascend("Ascend910_9392", "A3", (24, 48), 192 * MiB, 64 * GiB, 752e12, 376e12, 1.6e12),
    _ascend("Ascend910_9362", "A3", (20, 40), 168 * MiB, 64 * GiB, 626e12, 313e12, 1.6e12),
    _ascend("Ascend310P1", "inference", (10, 8), 16 * MiB, 24 * GiB, None, None, None,
            ub=256 * KiB, l1=1 * MiB, l0c=256 * KiB, supported=False),
    _ascend("Ascend310P3", "inference", (8, 7), 16 * MiB, 24 * GiB, 140e12, 70e12, 204.8e9,
            ub=256 * KiB, l1=1 * MiB, l0c=256 * KiB, supported=False),
    Target("sm_80", "cuda", "cuda", cube_cores=108, vector_cores=108, smem_bytes=163 * KiB,
           regs_per_sm=65536, l2_bytes=40 * MiB, memory_bytes=80 * GiB, peak_int8_ops=624e12,
           peak_fp16_flops=312e12, mem_bandwidth=2.039e12, peak_source="A100 SXM 80GB datasheet (dense), unverified"),
    Target("sm_90", "cuda", "cuda", cube_cores=132, vector_cores=132, smem_bytes=227 * KiB,
           regs_per_sm=65536, l2_bytes=50 * MiB, memory_bytes=80 * GiB, peak_int8_ops=1979e12,
           peak_fp16_flops=989e12, mem_bandwidth=3.35e12, peak_source="H100 SXM datasheet (dense), unverified"),
    Target("interpreter", "cpu", "cpu", cube_cores=4, vector_cores=4, peak_source="n/a"),
]}

ASCEND_TARGETS = [n for n, t in TARGETS.items() if t.is_ascend and t.supported]
CUDA_TARGETS = ["sm_80", "sm_90"]


def get_target(name: str | Target) -> Target:
    """Look a target up by name ("Ascend910B2", "sm_90", "interpreter")."""
    if isinstance(name, Target):
        return name
    try:
        target = TARGETS[name]
    except KeyError:
        raise ValueError(f"target: unknown target {name!r}; known: {', '.join(TARGETS)}") from None
    if not target.supported:
        raise UnsupportedTargetError(
            f"target {name} (Atlas inference series) is not supported: triton-ascend does not support "
            f"the Ascend 310P; use an Atlas A2 (Ascend910B*) or A3 (Ascend910_93*) device")
    return target


def _npu_soc_name(index: int) -> str:
    import torch_npu  # noqa: F401  (lazy: needs CANN)
    import torch
    return torch.npu.get_device_name(index)


@functools.lru_cache(maxsize=None)
def _cuda_target(index: int) -> Target:
    import torch
    major, minor = torch.cuda.get_device_capability(index)
    props = torch.cuda.get_device_properties(index)
    base = TARGETS["sm_90" if major >= 9 else "sm_80"]
    # Keep the registry's on-chip limits but use the real SM count and memory.
    return dataclasses.replace(base, name=f"sm_{major}{minor}", cube_cores=props.multi_processor_count,
                               vector_cores=props.multi_processor_count, memory_bytes=props.total_memory)


def detect_target(device=None) -> Target:
    """The target of ``device`` (a torch.device, string or tensor); CPU is the interpreter."""
    import torch
    if isinstance(device, torch.Tensor):
        device = device.device
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cpu":
        return TARGETS["interpreter"]
    if device.type == "cuda":
        return _cuda_target(device.index or 0)
    if device.type == "npu":
        soc = _npu_soc_name(device.index or 0)
        for name in TARGETS:
            if soc.startswith(name):
                return get_target(name)
        raise UnsupportedTargetError(f"device: unknown Ascend SoC {soc!r}; known: {', '.join(ASCEND_TARGETS)}")
    raise UnsupportedTargetError(f"device: no atlas-kernels backend for device type {device.type!r}")
