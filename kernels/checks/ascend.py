"""Ascend lowering check: TTIR -> Linalg through triton-ascend's adapter (triton-adapter-opt), no CANN needed."""
from __future__ import annotations

import re

from . import Job, Result, signature

_ALLOC = re.compile(r"memref\.alloc\(\)[^:]*:\s*memref<([0-9x]+)x(i1|i8|i16|i32|i64|f16|bf16|f32|f64)")
_BITS = {"i1": 8, "i8": 8, "i16": 16, "i32": 32, "i64": 64, "f16": 16, "bf16": 16, "f32": 32, "f64": 64}


def alloc_bytes(linalg: str) -> int:
    """Bytes of on-chip buffers (memref.alloc) in the lowered IR: a rough UB footprint."""
    total = 0
    for dims, ty in _ALLOC.findall(linalg):
        n = 1
        for d in dims.split("x"):
            n *= int(d)
        total += n * _BITS[ty] // 8
    return total


def lower(job: Job) -> str:
    """The Linalg IR of one job; raises whatever the adapter raises."""
    from triton._C.libtriton import ir
    from triton.backends.ascend.compiler import AscendBackend
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource

    sig, constexprs = signature(job.spec, job.variant, job.config)
    target = GPUTarget("npu", job.target.name, 0)
    backend = AscendBackend(target)
    src = ASTSource(job.spec.fn, sig, constexprs)
    options = backend.parse_options({})
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    module = src.make_ir(options, backend.get_codegen_implementation(), backend.get_module_map(), context)
    stages = {}
    backend.add_stages(stages, options)
    metadata = {"hash": src.hash(), "target": target, "enable_nd2nz_on_vector": False,
                "enable_select_analysis": False, "compile_on_910_95": False, "force_simt_template": False}
    module = stages["ttir"](module, metadata)
    return stages["ttadapter"](module, metadata)


def run(job: Job) -> Result:
    try:
        linalg = lower(job)
    except Exception as e:  # noqa: BLE001 - report any lowering failure
        stderr = getattr(e, "stderr", b"") or b""
        msg = (stderr.decode(errors="replace") if isinstance(stderr, bytes) else str(stderr)) or str(e)
        first = next((line for line in msg.splitlines() if "error" in line.lower()), msg.strip().splitlines()[-1:] or [""])
        return Result(job, False, f"{type(e).__name__}: {first if isinstance(first, str) else first[0]}"[:300])
    ub = alloc_bytes(linalg)
    return Result(job, True, stats={"alloc_bytes": ub, "ub_bytes": job.target.ub_bytes})
