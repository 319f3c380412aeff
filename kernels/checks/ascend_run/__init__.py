"""Run what bishengir produced for a kernel on this x86 CPU (``python -m atlas_kernels.checks ascend-run``).

For a vector kernel, the module is taken just before ``convert-hivm-to-std``, after the whole HIVM pipeline:
PlanMemory has placed every on-chip buffer (``hivm.hir.pointer_cast`` at a byte offset, reuse included),
multi-buffering and the sync flags are in. Then:

1. the entry function is rewritten: ``get_block_idx`` / ``get_sub_block_idx`` / ``..._num`` become i64
   arguments; each ``pointer_cast(%offset)`` into address space S becomes a ``memref.view`` of one byte pool
   per S at that offset (so buffers PlanMemory overlaps overlap here too). i1 buffers, which the hardware
   packs 8 to a byte and the CPU stores one per byte, get their own pool at 8x the offset;
2. ``bishengir-opt --execution-engine-convert-hivm-to-upstream`` and the upstream lowering passes turn it
   into the LLVM dialect, triton-ascend's bundled LLVM into an x86 object, gcc into a shared library;
3. each block (and each vector sub-block) is one ctypes call, with its own pools filled with a poison
   byte. Every launch runs twice: blocks in order with pools poisoned 0x00, then in reverse order with 0xFF.
   Outputs that differ read an uninitialised UB byte, or depend on the order of the blocks (a third run
   tells which). GM tensors are copied into buffers with guard bytes on both sides: a store
   outside a tensor's span fails the launch.

Kernels with ``tl.dot`` (the cube unit) cannot run at that level: ``nd2nz``, ``mmadL1``, ``fixpipe`` and the
cross-core sync have no CPU lowering. They run at the HFusion level instead: the module just before
``convert-hfusion-to-hivm``, where the matmul is still ``linalg.matmul`` and program ids are arguments. It is
bufferized (one-shot) and every HFusion op is expanded by us, as at the HIVM level: casts saturate float -> int
with NaN -> 0, atomics are plain read-modify-writes (blocks run one after another). (bishengir's own
``--linalg-generalize-named-ops`` is not used: its ``vnot`` is the identity in 1.2.0.) Local buffers start
filled with the poison byte, so the two runs still catch a read of memory never written. What this level
does not contain: UB/L1/L0 planning, the cube/vector split and its synchronisation, the HIVM lowering of
every op.

A construct these paths cannot run (cube ops at the HIVM level, multi-address buffers, a layout on a planned
buffer, an HFusion op without a CPU form) raises ``Unsupported`` naming it.

The modules, one job each:

  mlir.py      MLIR text utilities (brackets, memref types, functions, the last IR dump in a log), Unsupported
  hivm.py      the HIVM-level rewrite of the entry function (step 1 above)
  hivm_ops.py  HIVM ops the upstream conversion lacks, written out as upstream MLIR (EXPANSIONS)
  hfusion.py   the HFusion level: entry rewrite and HFusion ops written out (HFUSION_EXPANSIONS)
  build.py     bishengir-compile / bishengir-opt / LLVM / gcc -> a shared library, cached by content
  launch.py    CpuKernel (ctypes, guards, poison, two runs), Launcher and on_cpu_as (ops run through it)
  runner.py    the ``ascend-run`` command: each kernel's case (checks/cases.py) against its reference
  rt.c         the C runtime the libraries link
"""
from .build import build, hivm_module, shared_object  # noqa: F401
from .hfusion import rewrite_hfusion  # noqa: F401
from .hivm import Abi, rewrite  # noqa: F401
from .launch import CpuKernel, LaunchError, Launcher, on_cpu_as  # noqa: F401
from .mlir import Unsupported  # noqa: F401
from .runner import cli, compare, main, run_job  # noqa: F401
from ..cases import torch_dtype as _torch_dtype  # noqa: F401  (case files written against the old module)
