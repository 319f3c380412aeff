"""Run a built kernel on this CPU (``CpuKernel``: guarded GM copies, poisoned on-chip pools, two runs) and stand in
for ``_backend.launch`` so the ops run their kernels that way (``Launcher``, ``on_cpu_as``)."""
from __future__ import annotations

import contextlib
import ctypes

from ..cases import POINTER_TYPES
from .build import build
from .hivm import Abi
from .mlir import Unsupported

SUB_BLOCKS = 2  # vector cores per AI core on A2/A3 (what bishengir's sub-block binding splits a block over)
POISON = (0x00, 0xFF)
GUARD = 4096


# ---------------------------------------------------------------- run
class LaunchError(RuntimeError):
    """The CPU run of a launch misbehaved: a store outside a tensor, or output that depends on poison."""


_DESC = 5  # fields of a lowered 1-D memref: allocated, aligned, offset, size, stride


def _desc(ptr: int, nbytes: int) -> list:
    return [ctypes.c_void_p(ptr), ctypes.c_void_p(ptr), ctypes.c_int64(0), ctypes.c_int64(nbytes),
            ctypes.c_int64(1)]


_SCALAR = {"i32": ctypes.c_int32, "i64": ctypes.c_int64, "f32": ctypes.c_float}


class CpuKernel:
    """A built kernel: call it with the Triton arguments (tensors, scalars) and the grid."""

    def __init__(self, so: str, abi: Abi, pool_bytes: int = 0):
        self.abi = abi
        lib = ctypes.CDLL(so)
        self.fn = getattr(lib, abi.name)
        self.fn.restype = None
        self.poison = ctypes.c_uint8.in_dll(lib, "atlas_poison")

    def __call__(self, grid: tuple, args: list) -> None:
        import numpy as np
        import torch
        grid = tuple(grid) + (1,) * (3 - len(grid))
        user = [(k, t) for k, t in self.abi.args if k in ("tensor", "scalar")]
        pid = [0, 0, 0] if self.abi.program_ids else []  # HFusion level: the program id follows the grid
        if len(user) != len(args) + 3 + len(pid):
            raise Unsupported(f"{self.abi.name}: the lowered entry takes {len(user)} tensor/scalar arguments, "
                              f"expected {len(args)} plus 3 grid sizes" + (" and 3 program ids" if pid else ""))
        # one guarded copy per storage: stores outside it land in the guards
        storages, views = {}, []
        for (kind, ty), a in zip(user, args):
            if kind == "tensor":
                if not isinstance(a, torch.Tensor):
                    raise Unsupported(f"{self.abi.name}: a pointer argument got {type(a).__name__}")
                st = a.untyped_storage()
                key = st.data_ptr()
                if key not in storages:
                    raw = torch.empty(0, dtype=torch.uint8).set_(st).numpy()
                    buf = np.full(GUARD + raw.size + GUARD, 0xA5, np.uint8)
                    buf[GUARD:GUARD + raw.size] = raw
                    storages[key] = (raw, buf, buf.copy())
                views.append((key, a.storage_offset() * a.element_size()))
        def run(poison: int, reverse: bool) -> list:
            """GM outputs of the launch with on-chip memory poisoned ``poison``, blocks in (reverse) order."""
            for raw, buf, initial in storages.values():
                buf[:] = initial
            work = {k: np.zeros(1 << 16, np.uint8) for k in ("lock", "workspace")}
            pools = [np.full(max(n, 1), poison, np.uint8) for _, n in self.abi.pools]
            flat, it = [], iter(views)
            vals = iter(list(args) + list(grid) + pid)
            for kind, ty in self.abi.args:
                if kind == "ffts":
                    flat.append(ctypes.c_int64(0))
                elif kind in work:
                    flat += _desc(work[kind].ctypes.data, work[kind].size)
                elif kind == "tensor":
                    next(vals)
                    key, off = next(it)
                    buf = storages[key][1]
                    flat += _desc(buf.ctypes.data + GUARD + off, buf.size - GUARD - off)
                else:
                    flat.append(_SCALAR[ty](next(vals)))
            n_blocks = grid[0] * grid[1] * grid[2]
            subs = SUB_BLOCKS if self.abi.uses_sub_block else 1
            self.poison.value = poison  # local buffers (memref.alloc) start as this byte
            order = [(blk, sub) for blk in range(n_blocks) for sub in range(1 if pid else subs)]
            for blk, sub in reversed(order) if reverse else order:
                if pid:
                    ids = (blk % grid[0], blk // grid[0] % grid[1], blk // (grid[0] * grid[1]))
                    self.fn(*flat[:-3], *(ctypes.c_int32(v) for v in ids))
                    continue
                for p in pools:
                    p[:] = poison
                self.fn(*flat, *sum((_desc(p.ctypes.data, p.size) for p in pools), []),
                        *(ctypes.c_int64(v) for v in (blk, n_blocks, sub, subs)))
            for raw, buf, initial in storages.values():
                if (buf[:GUARD] != 0xA5).any() or (buf[-GUARD:] != 0xA5).any():
                    raise LaunchError(f"{self.abi.name}: a store landed outside a tensor's storage")
            return [buf[GUARD:-GUARD].copy() for _, buf, _ in storages.values()]

        def differ(xs, ys) -> int:
            return sum(int((x != y).sum()) for x, y in zip(xs, ys))

        # blocks in order with poison 0x00, then in reverse with 0xFF; a third run tells which change mattered
        results = [run(POISON[0], False), run(POISON[1], True)]
        if differ(*results):
            if differ(results[0], run(POISON[1], False)):
                raise LaunchError(f"{self.abi.name}: GM output differs between on-chip memory poisoned 0x00 and 0xFF "
                                  f"({differ(*results)} bytes): the kernel reads on-chip memory it never wrote")
            raise LaunchError(f"{self.abi.name}: GM output depends on the order the blocks run in "
                              f"({differ(*results)} bytes)")
        for (raw, _, _), out in zip(storages.values(), results[-1]):
            raw[:] = out


class Launcher:
    """Stands in for ``_backend.launch``: builds (cached) and runs each launch on the CPU for ``target``."""

    def __init__(self, target, prefer: str = ""):
        self.target = target
        self.prefer = prefer  # the variant label to take when several compile the same kernel
        self.launched = []   # (kernel name, variant label, config) per launch
        self._built = {}

    def __call__(self, name, kernel, grid, *args, **kwargs):
        import torch
        from ...autotune.registry import KERNELS, split_config
        from ..ascend import lower
        from ..jobs import Job
        spec = KERNELS[name]
        values = dict(zip([p.name for p in kernel.params], args))
        values.update(kwargs)
        runtime = [values[p.name] for p in kernel.params if not p.is_constexpr]
        constexpr = {p.name: values[p.name] if p.name in values else p.default for p in kernel.params
                     if p.is_constexpr and (p.name in values or p.has_default)}
        # the variant with these constexprs; among several, the one whose pointer types match (a launcher may pass
        # any tensor for a pointer its constexprs leave unused), the one being checked if it is among them
        matches = [v for v in spec.variants if all(constexpr.get(k) == c for k, c in v.constexprs.items())]
        typed = [v for v in matches if all(POINTER_TYPES.get(str(values[n].dtype)) == t for n, t in v.types.items()
                                           if isinstance(values.get(n), torch.Tensor))]
        candidates = typed or matches
        preferred = [v for v in candidates if v.label == self.prefer]
        variant = (preferred or candidates)[0] if preferred or typed or len(matches) == 1 else None
        if variant is None:
            got = {k: c for k, c in constexpr.items() if k in spec.variants[0].constexprs}
            raise Unsupported(f"{name}: no registered variant matches this launch ({got})")
        config = {k: c for k, c in constexpr.items() if k not in variant.constexprs}
        config.update({k: kwargs[k] for k in split_config(kwargs)[1]})
        key = (name, variant.label, tuple(sorted(config.items())))
        if key not in self._built:
            linalg = lower(Job(spec, variant, self.target, dict(split_config(config)[0]), True))
            self._built[key] = CpuKernel(*build(linalg, self.target.name, self.target.ub_bytes, spec.uses_dot))
        self.launched.append(key)
        self._built[key](grid, runtime)


# ---------------------------------------------------------------- ops on the CPU as if on the target


@contextlib.contextmanager
def on_cpu_as(target, prefer: str = ""):
    """Inside the block, ops given CPU tensors launch their kernels through a ``Launcher`` for ``target``."""
    from ... import _backend
    launcher = Launcher(target, prefer)
    saved = _backend.use_kernel, _backend.target_for, _backend.launch
    _backend.use_kernel = lambda op, device: True
    _backend.target_for = lambda device: target
    _backend.launch = launcher
    try:
        yield launcher
    finally:
        _backend.use_kernel, _backend.target_for, _backend.launch = saved
