"""CUDA compile check: triton.compile for an explicit GPUTarget (no GPU needed), resources from cuobjdump."""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

from ..autotune import split_config
from . import Job, Result, signature

_RES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def _cuobjdump() -> str:
    import triton.backends.nvidia as nvidia
    return os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")


def compile_job(job: Job, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource

    sig, constexprs = signature(job.spec, job.variant, job.config)
    _, opts = split_config(job.config)
    src = ASTSource(job.spec.fn, sig, constexprs=constexprs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=opts)


def resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([_cuobjdump(), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = _RES.search(out)
    if not m:
        raise RuntimeError(f"cuobjdump printed no resource line:\n{out}")
    reg, stack, shared, local = map(int, m.groups())
    return {"regs": reg, "stack": stack, "shared": shared, "local": local}


def run(job: Job) -> Result:
    arch = int(job.target.name.split("_")[1])
    try:
        kernel = compile_job(job, arch)
        stats = resources(kernel.asm["cubin"])
    except Exception as e:  # noqa: BLE001 - report any compile failure
        lines = [line for line in str(e).splitlines() if line.strip()]
        return Result(job, False, f"{type(e).__name__}: {lines[-1] if lines else ''}"[:300])
    ptx = kernel.asm["ptx"]
    stats["wgmma"] = ptx.count("wgmma.mma_async")
    stats["mma"] = len(re.findall(r"\bmma\.sync", ptx))
    stats["shared_dyn"] = kernel.metadata.shared
    spills = stats["stack"] > 0 or stats["local"] > 0
    if spills and job.shipped:
        return Result(job, False, f"shipped config spills: STACK={stats['stack']}", stats)
    return Result(job, True, "spills (not shipped)" if spills else "", stats)
