"""Build a shared library from a kernel's Linalg: bishengir-compile up to the level the CPU runs, our rewrite,
bishengir-opt's upstream lowering, triton-ascend's LLVM to an x86 object, gcc; cached by content."""
from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

from .. import ascend
from .hfusion import _expand_hfusion, rewrite_hfusion
from .hivm import rewrite
from .mlir import Unsupported, last_dump

RUNNER_VERSION = "2"
CONVERT = ("--execution-engine-convert-hivm-to-upstream", "--execution-engine-convert-hfusion-to-upstream")
LOWERING = ("--annotation-lowering", "--expand-strided-metadata",
            "--convert-linalg-to-loops", "--canonicalize", "--convert-scf-to-cf", "--lower-affine", "--arith-expand",
            "--convert-vector-to-llvm", "--convert-math-to-llvm", "--finalize-memref-to-llvm=use-generic-functions",
            "--convert-func-to-llvm", "--convert-cf-to-llvm", "--convert-index-to-llvm", "--convert-arith-to-llvm",
            "--reconcile-unrealized-casts")
# the module is taken just before this pass: after the HIVM pipeline (vector kernels), or after HFusion (cube kernels)
HIVM_LEVEL, HFUSION_LEVEL = "convert-hivm-to-std", "convert-hfusion-to-hivm"
DUMP = ("--mlir-print-ir-module-scope", "--mlir-print-local-scope", "--mlir-disable-threading")
BUFFERIZE = ("--empty-tensor-to-alloc-tensor",
             "--one-shot-bufferize=bufferize-function-boundaries=1 allow-return-allocs-from-loops=1",
             "--convert-bufferization-to-memref")
RT_C = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rt.c")  # the C runtime the library links


# ---------------------------------------------------------------- compile to a shared library
def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(ascend.bishengir_compile()), name)


def hivm_module(linalg: str, soc: str, timeout: float = 300, before: str = HIVM_LEVEL) -> str:
    """The module bishengir-compile (the compile check's options) has just before pass ``before``."""
    with tempfile.TemporaryDirectory(prefix="atlas-run-") as tmp:
        src = os.path.join(tmp, "kernel.ttadapter.mlir")
        with open(src, "w") as f:
            f.write(linalg)
        cmd = [ascend.bishengir_compile(), src, f"--target={soc}", *ascend.BISHENG_OPTIONS,
               f"--mlir-print-ir-before={before}", *DUMP, "-o", os.path.join(tmp, "kernel")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return last_dump(proc.stdout + proc.stderr, before)


_OP_NAME = re.compile(r"^\s*(?:%[^=]+= )?\"?([a-z_]+\.[\w.]+)", re.M)


def _opt(module: str, passes: tuple, workdir: str, what: str) -> str:
    """``bishengir-opt`` with ``passes`` on the module text; Unsupported with its first error if it fails."""
    src = os.path.join(workdir, "in.mlir")
    with open(src, "w") as f:
        f.write(module)
    proc = subprocess.run([_tool("bishengir-opt"), src, *passes], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        err = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[-300:])
        raise Unsupported(f"bishengir-opt could not {what}: {err.strip()[:400]}")
    return proc.stdout


def _no_ops_left(module: str, prefixes: tuple, what: str) -> None:
    left = sorted({op for op in _OP_NAME.findall(module) if op.startswith(prefixes)})
    if left:
        raise Unsupported(f"{what}: {', '.join(left)}")


def to_llvm_dialect(module: str, workdir: str) -> str:
    """HIVM-level module (rewritten) -> LLVM dialect."""
    module = _opt(module, CONVERT, workdir, "convert the HIVM ops to upstream MLIR")
    # convert-linalg-to-loops would quietly lower a leftover hfusion structured op by its region
    _no_ops_left(module, ("hivm.", "hfusion.", "hacc."), "no CPU lowering for")
    return _lower(module, workdir)


def hfusion_to_llvm_dialect(module: str, workdir: str) -> str:
    """HFusion-level module (rewritten) -> LLVM dialect: bufferize, then every HFusion op as ours."""
    module = _expand_hfusion(_opt(module, BUFFERIZE, workdir, "bufferize the HFusion-level module"))
    _no_ops_left(module, ("hivm.", "hfusion.", "hacc.", "tensor.", "bufferization."), "no CPU lowering for")
    return _lower(module, workdir)


def _lower(module: str, workdir: str) -> str:
    module = _opt(module, LOWERING, workdir, "lower the patched module to LLVM")
    left = sorted({op for op in _OP_NAME.findall(module) if not op.startswith(("llvm.", "builtin."))})
    if left:
        raise Unsupported(f"ops left after lowering to LLVM: {', '.join(left)}")
    return module


def shared_object(llvm_mlir: str, path: str) -> None:
    """LLVM-dialect module -> x86-64 shared library at ``path`` (triton-ascend's bundled LLVM, then gcc)."""
    from triton._C.libtriton import ir, llvm
    work = f"{path}.{os.getpid()}.d"  # parallel workers may build the same library
    os.makedirs(work, exist_ok=True)
    mlir_path = os.path.join(work, "kernel.llvm.mlir")
    with open(mlir_path, "w") as f:
        f.write(llvm_mlir)
    context = ir.context()
    ir.load_dialects(context)
    module = ir.parse_mlir_module(mlir_path, context)
    llvm_module = llvm.to_module(module, llvm.context())
    llvm.init_targets()
    obj = llvm.translate_to_asm(str(llvm_module), "x86_64-unknown-linux-gnu", "x86-64", "", [], False, True)
    obj_path = os.path.join(work, "kernel.o")
    with open(obj_path, "wb") as f:
        f.write(obj if isinstance(obj, bytes) else obj.encode("latin1"))
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", work + ".so", obj_path, RT_C], check=True,
                   capture_output=True)
    os.replace(work + ".so", path)
    shutil.rmtree(work, ignore_errors=True)


def _cache_dir() -> str:
    return os.path.join(os.path.dirname(ascend._cache_dir()), "ascend_run")


def build(linalg: str, soc: str, target_ub: int, cube: bool = False) -> tuple:
    """(path of the shared library, Abi) for one Linalg module on ``soc``; cached by content. ``cube``: a kernel
    with tl.dot, run at the HFusion level."""
    import pickle
    me = b""
    for source in sorted(glob.glob(os.path.join(os.path.dirname(RT_C), "*.py"))) + [RT_C]:  # the runner, its C runtime
        with open(source, "rb") as f:
            me += f.read()
    tool = str(os.path.getsize(ascend.bishengir_compile())).encode()
    key = hashlib.sha256(b"\0".join([RUNNER_VERSION.encode(), me, tool, soc.encode(), linalg.encode(),
                                     str(cube).encode()]))
    key = key.hexdigest()[:32]
    os.makedirs(_cache_dir(), exist_ok=True)
    so, abi_path = (os.path.join(_cache_dir(), key + ext) for ext in (".so", ".abi"))
    if os.path.exists(so) and os.path.exists(abi_path):
        with open(abi_path, "rb") as f:
            return so, pickle.load(f)
    with tempfile.TemporaryDirectory(prefix="atlas-run-") as tmp:
        if cube:
            module, abi = rewrite_hfusion(hivm_module(linalg, soc, before=HFUSION_LEVEL))
            shared_object(hfusion_to_llvm_dialect(module, tmp), so)
        else:
            module, abi = rewrite(hivm_module(linalg, soc), {"ub": target_ub})
            shared_object(to_llvm_dialect(module, tmp), so)
    with open(f"{abi_path}.{os.getpid()}.tmp", "wb") as f:
        pickle.dump(abi, f)
    os.replace(f"{abi_path}.{os.getpid()}.tmp", abi_path)
    return so, abi
