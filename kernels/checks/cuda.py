"""CUDA compile check: triton.compile for an explicit GPUTarget (no GPU needed), resources from cuobjdump.

Every job compiles twice:

- conservative: no argument specialization (a launch with unaligned pointers or odd sizes and strides gets
  this kernel); its stats keep the plain keys (``regs``, ``stack``, ``shared_dyn``, ``wgmma``, ...);
- launch-like: every pointer argument 16-byte aligned and every integer argument divisible by 16, the
  ``tt.divisibility`` attributes Triton's launcher (JITFunction.run -> ``_pack_args``) adds for such
  arguments: the kernel a typical launch really runs. Its stats carry the prefix ``launch_``.

A job fails when a compile fails, when either compile's shared memory (``metadata.shared``, what the
launcher checks only at launch) exceeds the target's limit, and, for a shipped config, when either compile
spills (STACK or LOCAL > 0) or when it is a job that must use wgmma (``WGMMA_REQUIRED``) and its sm_90
compile has none. Spills in a sampled config are reported without failing it.
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

from ..autotune.registry import split_config
from ..gemm import GEMM, GEMM_A8W4, BFormat
from .jobs import Job, Result, signature

_RES = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
_CP_ASYNC = re.compile(r"^\s*(?:@!?%p\d+\s+)?cp\.async\.c[ag]\.", re.M)  # one async global->shared copy each
_MMA_SYNC = re.compile(r"\bmma\.sync")
LAUNCH = "launch_"  # prefix of the launch-like compile's stats

# Jobs whose sm_90 compile must contain wgmma, as the README claims: (why, predicate on a shipped job).
WGMMA_REQUIRED = [
    ("docs/ops.md quant_matmul: every dense variant whose sm_90 default is a 64-row tile uses wgmma there (A8W4's "
     "decode tile has 16 rows, as the other formats' on Ascend: mma.sync)",
     lambda job: job.spec.name in (GEMM.name, GEMM_A8W4.name) and job.variant.b_format != BFormat.SPARSE
     and job.spec.default(job.target, job.variant)["BLOCK_M"] >= 64),
]


def must_use_wgmma(job: Job) -> str:
    """Why this job's compile must contain wgmma ("" if it need not): shipped sm_90 jobs WGMMA_REQUIRED names."""
    if not job.shipped or job.target.name != "sm_90":
        return ""
    return next((why for why, applies in WGMMA_REQUIRED if applies(job)), "")


def _cuobjdump() -> str:
    import triton.backends.nvidia as nvidia
    return os.path.join(os.path.dirname(nvidia.__file__), "bin", "cuobjdump")


def _is_int(ty: str) -> bool:
    return re.fullmatch(r"[iu](8|16|32|64)", ty) is not None


def launch_attrs(fn, sig: dict) -> dict:
    """The attributes Triton's launcher gives a launch where every pointer is 16-byte aligned and every
    integer is divisible by 16, built as JITFunction._pack_args builds them: native_specialize_impl gives
    each argument a descriptor ("D" for such a pointer or integer, "" where do_not_specialize_on_alignment
    holds and for constexprs, None for floats, bools and do_not_specialize arguments), and each string
    descriptor becomes backend.parse_attr(desc) under its argument's index: {(i,): [["tt.divisibility", 16]]}."""
    from triton.backends.compiler import BaseBackend

    attrs = {}
    for i, (param, (name, ty)) in enumerate(zip(fn.params, sig.items())):
        assert param.name == name, (param.name, name)
        if ty == "constexpr":
            desc = ""
        elif param.do_not_specialize or not (ty.startswith("*") or _is_int(ty)):
            desc = None
        else:
            desc = "" if param.do_not_specialize_on_alignment else "D"
        if desc is not None:
            attrs[(i,)] = BaseBackend.parse_attr(desc)
    return attrs


def compile_job(job: Job, arch: int, launch_like: bool = False):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource

    sig, constexprs = signature(job.spec, job.variant, job.config)
    _, opts = split_config(job.config)
    attrs = launch_attrs(job.spec.fn, sig) if launch_like else None
    src = ASTSource(job.spec.fn, sig, constexprs=constexprs, attrs=attrs)
    options = {"enable_fp_fusion": False, **opts}  # as _backend.launch compiles it
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


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


def kernel_stats(kernel) -> dict:
    """regs, stack, shared (static), local from the cubin; wgmma, mma and cp_async instructions in the PTX
    (cp_async: the cp.async.ca/.cg copies, not commit_group/wait_group); shared_dyn (metadata.shared: the
    shared memory a launch asks for, which the launcher checks against the device's limit)."""
    stats = resources(kernel.asm["cubin"])
    ptx = kernel.asm["ptx"]
    stats["wgmma"] = ptx.count("wgmma.mma_async")
    stats["mma"] = len(_MMA_SYNC.findall(ptx))
    stats["cp_async"] = len(_CP_ASYNC.findall(ptx))
    stats["shared_dyn"] = kernel.metadata.shared
    return stats


def _error(e: Exception) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"


def run(job: Job, quick: bool = False) -> Result:
    """Compile ``job`` both ways (quick: launch-like only, what a typical launch runs; the tuner's dry run).

    stats["how"] says which compiles ran."""
    arch = int(job.target.name.split("_")[1])
    compiles = ((LAUNCH, "launch-like"),) if quick else (("", "conservative"), (LAUNCH, "launch-like"))
    stats = {"how": "compiled (" + " + ".join(what for _, what in compiles) + ")"}
    for prefix, what in compiles:
        try:
            s = kernel_stats(compile_job(job, arch, prefix == LAUNCH))
        except Exception as e:  # noqa: BLE001 - report any compile failure
            return Result(job, False, ((what + " compile: " if prefix else "") + _error(e))[:300], stats)
        stats.update({prefix + k: v for k, v in s.items()})

    problems = []
    spilled = [f"{what}: STACK={stats[p + 'stack']} LOCAL={stats[p + 'local']}" for p, what in compiles
               if stats[p + "stack"] > 0 or stats[p + "local"] > 0]
    if spilled and job.shipped:
        problems.append(f"shipped config spills ({', '.join(spilled)})")
    over = [f"{what}: {stats[p + 'shared_dyn']}" for p, what in compiles
            if stats[p + "shared_dyn"] > job.target.smem_bytes]
    if over:  # Triton raises OutOfResources only at launch: such a config can never run
        problems.append(f"shared memory over {job.target.name}'s {job.target.smem_bytes} bytes ({', '.join(over)})")
    why = must_use_wgmma(job)
    without = [what for p, what in compiles if stats[p + "wgmma"] == 0] if why else []
    if without:
        problems.append(f"no wgmma in the {' or '.join(without)} compile ({why})")
    if problems:
        return Result(job, False, "; ".join(problems), stats)
    return Result(job, True, f"spills (not shipped: {', '.join(spilled)})" if spilled else "", stats)
