"""Ascend compile check: both halves of the Ascend compiler, everything before CANN's machine-code step.

1. triton-ascend's adapter lowers TTIR -> Linalg (``triton-adapter-opt``, in the triton-ascend wheel);
2. ``bishengir-compile`` (PyPI ``ascendnpu-ir``) runs HFusion and HIVM with the options triton-ascend
   3.2.0 passes for A2/A3, which is where the UB, L1 and L0 are planned. It stops at CANN's ``hivmc``
   with "External hivmc run fails": that line means every stage before machine code passed.

A job passes only then, and only if that final HIVM IR (``--save-temps`` keeps it) holds no cross-core lock
(``sync_block_lock``: bishengir's way of making an atomic whose result is read safe; it serialises the vector
cores, see docs/ascend_split_k_lock.md) unless the variant says why it needs one (``Variant.needs_lock``). Its
stats are the on-chip bytes PlanMemory gave each address space (``hivm.hir.pointer_cast`` offsets plus buffer
sizes) and the lock count.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings

from ..autotune import verdicts
from .jobs import Job, Result, signature

# what triton-ascend 3.2.0's linalg_to_bin_enable_npu_compile_A2_A3 passes (NPUOptions defaults on A2/A3)
BISHENG_OPTIONS = ("--enable-auto-multi-buffer=true", "--enable-auto-bind-sub-block=true",
                   "--enable-hfusion-compile=true", "--enable-hivm-compile=true",
                   "--enable-triton-kernel-compile=true")
REACHED_HIVMC = "External hivmc run fails"
SPACES = {"ub": "ub", "cbuf": "l1", "cc": "l0c", "ca": "l0a", "cb": "l0b"}  # HIVM address space -> our name
_BITS = {"i1": 1, "i8": 8, "i16": 16, "i32": 32, "i64": 64, "f16": 16, "bf16": 16, "f32": 32, "f64": 64}
_CONST = re.compile(r"(%[\w.$-]+) = arith\.constant (-?\d+) : i64")
_CAST = re.compile(r"hivm\.hir\.pointer_cast\(([^)]*)\)[^:\n]*:\s*memref<((?:\d+x)*)([a-z]+\d+)[^\n]*?"
                   r"#hivm\.address_space<(\w+)>")
_LOCK = "call @sync_block_lock("  # how the final HIVM takes the cross-core lock (its release: sync_block_unlock)
_OVERFLOW = re.compile(r"(ub|cbuf|l1|cc|l0c)\w* overflow, requires (\d+) bits while (\d+) bits available", re.I)


CHECK_STALE = True  # off while --write-verdicts remakes them
STALE = "stale verdict"
REGENERATE = "regenerate with: python -m atlas_kernels.checks ascend --write-verdicts"


class ToolMissing(RuntimeError):
    """bishengir-compile is not installed: the check cannot run (exit 2, not a kernel failure)."""


def bishengir_compile() -> str:
    """Path of bishengir-compile: $ATLAS_BISHENGIR_COMPILE, the ascendnpu-ir wheel, or $PATH."""
    path = os.environ.get("ATLAS_BISHENGIR_COMPILE")
    if not path:
        try:
            import ascendnpuir
            path = os.path.join(os.path.dirname(ascendnpuir.__file__), "bin", "bishengir-compile")
        except ImportError:
            path = shutil.which("bishengir-compile") or ""
    if not path or not os.path.exists(path):
        raise ToolMissing("bishengir-compile not found: pip install ascendnpu-ir==1.2.0 in the triton-ascend env "
                          "(or set ATLAS_BISHENGIR_COMPILE)")
    return path


def planned_bytes(hivm: str) -> dict:
    """{space: bytes} that PlanMemory placed in each on-chip address space: max(offset + size) of its buffers."""
    consts = {name: int(v) for name, v in _CONST.findall(hivm)}
    peak: dict = {}
    for args, dims, ty, space in _CAST.findall(hivm):
        if space not in SPACES or ty not in _BITS:
            continue
        elems = 1
        for d in dims.rstrip("x").split("x") if dims else ():
            elems *= int(d)
        size = -(-elems * _BITS[ty] // 8)
        for arg in filter(None, (a.strip() for a in args.split(","))):
            if arg not in consts:
                raise ValueError(f"pointer_cast offset {arg} is not an i64 constant in the HIVM IR")
            peak[SPACES[space]] = max(peak.get(SPACES[space], 0), consts[arg] + size)
    return peak


def _cache_dir() -> str:
    root = os.environ.get("ATLAS_KERNELS_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                      "atlas_kernels")
    return os.path.join(root, "bisheng")


def _cached(key: str):
    path = os.path.join(_cache_dir(), key + ".json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            got = json.load(f)
        return got["ok"], got["detail"], got["stats"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"ignoring unreadable bishengir verdict cache {path}: {e}")
        return None


def _store(key: str, verdict: tuple) -> None:
    os.makedirs(_cache_dir(), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=_cache_dir(), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(dict(zip(("ok", "detail", "stats"), verdict)), f)
    os.replace(tmp, os.path.join(_cache_dir(), key + ".json"))


def compile_linalg(linalg: str, soc: str, timeout: float = 120) -> tuple:
    """(ok, detail, stats) of bishengir-compile on one Linalg module for SoC ``soc``.

    stats: planned bytes per on-chip space (ub, l1, l0c, ...) and the cross-core locks taken ("locks"), or
    {"ub_required": N} on an overflow.
    Verdicts are cached by a hash of the compiler, its options, the target and the Linalg.
    """
    tool = bishengir_compile()
    key = hashlib.sha256("\0".join(["locks", str(os.path.getsize(tool)), *BISHENG_OPTIONS, soc, linalg]).encode()
                         ).hexdigest()
    hit = _cached(key)
    if hit is not None:
        return hit
    with tempfile.TemporaryDirectory(prefix="atlas-bisheng-") as tmp:
        src = os.path.join(tmp, "kernel.ttadapter.mlir")
        with open(src, "w") as f:
            f.write(linalg)
        cmd = [tool, src, f"--target={soc}", *BISHENG_OPTIONS, f"--save-temps={tmp}/temps",
               "-o", os.path.join(tmp, "kernel")]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"bishengir-compile timed out after {timeout:.0f}s", {}  # not cached: may be load
        out = proc.stdout + proc.stderr
        hivm_path = os.path.join(tmp, "temps", "module.hivm.opt.mlir")
        if REACHED_HIVMC in out and os.path.exists(hivm_path):
            with open(hivm_path) as f:
                hivm = f.read()
            verdict = (True, "", {**planned_bytes(hivm), "locks": hivm.count(_LOCK)})
        else:
            over = _OVERFLOW.search(out)
            if over:
                space, need, have = over.group(1).lower(), int(over.group(2)), int(over.group(3))
                verdict = (False, f"{space} overflow: needs {need // 8} bytes, {have // 8} available",
                           {f"{SPACES.get(space, space)}_required": need // 8})
            elif proc.returncode < 0 or "Stack dump" in out or "PLEASE submit a bug report" in out:
                verdict = (False, f"bishengir-compile crashed (status {proc.returncode})", {})
            else:
                errors = [ln.strip() for ln in out.splitlines() if "error" in ln.lower() and "hivmc" not in ln]
                verdict = (False, "bishengir-compile: " + (errors[0] if errors else out.strip()[-200:]), {})
    _store(key, verdict)
    return verdict


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


def _first_error(e: Exception) -> str:
    stderr = getattr(e, "stderr", b"") or b""
    msg = (stderr.decode(errors="replace") if isinstance(stderr, bytes) else str(stderr)) or str(e)
    lines = msg.strip().splitlines()
    first = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
    return f"{type(e).__name__}: {first}"[:300]


VERDICT_REUSED = "verdict reused"
LOCKED = "cross-core lock(s) (sync_block_lock) in the final HIVM"


def run(job: Job, quick: bool = False) -> Result:
    """Lower ``job`` to Linalg and run bishengir-compile on it.

    quick (the tuner's dry run): a stored verdict (autotune/verdicts.py) whose Linalg hash matches this
    lowering stands for bishengir's answer (it was made from this very Linalg); bishengir runs only where
    the verdict is missing or stale. stats["how"] says which happened."""
    try:
        linalg = lower(job)
    except Exception as e:  # noqa: BLE001 - report any lowering failure
        return Result(job, False, "Linalg lowering: " + _first_error(e), {"how": "lowered"})
    digest = verdicts.linalg_hash(linalg)
    if quick:
        stored = verdicts.verdict(job.spec.name, job.variant.label, job.config, job.target)
        if stored is not None and stored.get("linalg") == digest:
            stats = {k: v for k, v in stored.items() if k != "ok"}
            stats.update({"ub_size": job.target.ub_bytes, "how": VERDICT_REUSED})
            detail = "" if stored.get("ok") else "stored bishengir verdict: fails"
            return Result(job, bool(stored.get("ok")), detail, stats)
    ok, detail, stats = compile_linalg(linalg, job.target.name)
    stats = {**stats, "ub_size": job.target.ub_bytes, "linalg": digest, "how": "compiled (bishengir)"}
    if ok and stats.get("ub", 0) > job.target.ub_bytes:  # PlanMemory never does this; say so if it ever does
        return Result(job, False, f"planned UB {stats['ub']} bytes exceeds the target's {job.target.ub_bytes}", stats)
    if ok and stats.get("locks") and not getattr(job.variant, "needs_lock", ""):
        return Result(job, False, f"{stats['locks']} {LOCKED}: bishengir serialises the vector cores around an "
                                  f"atomic whose result is read (docs/ascend_split_k_lock.md)", stats)
    stored = verdicts.verdict(job.spec.name, job.variant.label, job.config, job.target) if CHECK_STALE else None
    if stored is not None and stored.get("linalg") != stats["linalg"]:
        return Result(job, False, f"{STALE}: the stored verdict ({'compiles' if stored.get('ok') else 'fails'}) was "
                                  f"made from another version of this kernel; {REGENERATE}", stats)
    return Result(job, ok, detail, stats)
