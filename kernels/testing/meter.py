"""Memory-traffic meter: bytes every tl.load / tl.store moves in Triton's interpreter.

    with TrafficMeter() as m:
        op(...)
    m.loaded, m.stored          # bytes of masked-in elements x element size

reference_bytes(fn, ...) counts the bytes in and out of every aten op the
unfused torch reference runs (views excluded), and minimum_bytes(...) is each
input byte read once plus each output byte written once.
Needs TRITON_INTERPRET=1 set before atlas_kernels / triton were imported.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _element_bytes(ptrs) -> int:
    return ptrs.get_element_ty().primitive_bitwidth // 8


@dataclasses.dataclass
class TrafficMeter:
    """Counts interpreter loads and stores while active (patches InterpreterBuilder)."""

    loaded: int = 0
    stored: int = 0
    loads: int = 0
    stores: int = 0

    @property
    def total(self) -> int:
        return self.loaded + self.stored

    def __enter__(self):
        from triton.runtime.interpreter import InterpreterBuilder
        from .. import _backend
        if not _backend.INTERPRETER:
            raise RuntimeError("TrafficMeter needs Triton's interpreter: set TRITON_INTERPRET=1 before importing")
        self._builder = InterpreterBuilder
        self._orig = (InterpreterBuilder.create_masked_load, InterpreterBuilder.create_masked_store)
        orig_load, orig_store = self._orig
        meter = self

        def create_masked_load(builder, ptrs, mask, other, cache_policy, is_volatile):
            n = int(np.broadcast_to(mask.data, ptrs.data.shape).sum())
            meter.loaded += n * _element_bytes(ptrs)
            meter.loads += 1
            return orig_load(builder, ptrs, mask, other, cache_policy, is_volatile)

        def create_masked_store(builder, ptrs, value, mask, cache_policy):
            n = int(np.broadcast_to(mask.data, ptrs.data.shape).sum())
            meter.stored += n * _element_bytes(ptrs)
            meter.stores += 1
            return orig_store(builder, ptrs, value, mask, cache_policy)

        InterpreterBuilder.create_masked_load = create_masked_load
        InterpreterBuilder.create_masked_store = create_masked_store
        return self

    def __exit__(self, *exc):
        self._builder.create_masked_load, self._builder.create_masked_store = self._orig
        return False


def tensor_bytes(*tensors) -> int:
    """Bytes of the given tensors (None and non-tensors ignored); stride-0 dims counted once."""
    total = 0
    for t in tree_flatten(list(tensors))[0]:
        if isinstance(t, torch.Tensor):
            total += min(t.numel() * t.element_size(), t.untyped_storage().nbytes())
    return total


def minimum_bytes(inputs, outputs) -> int:
    """Each input byte read once, each output byte written once."""
    return tensor_bytes(inputs) + tensor_bytes(outputs)


class _AtenTraffic(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.bytes = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        returns = func._schema.returns
        is_view = bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
        if not is_view:
            self.ops += 1
            self.bytes += tensor_bytes(tree_flatten((args, kwargs))[0]) + tensor_bytes(tree_flatten(out)[0])
        return out


def reference_bytes(fn, *args, **kwargs) -> tuple[int, int]:
    """(bytes, aten ops) of running ``fn`` eagerly: inputs and outputs of every non-view aten op."""
    with _AtenTraffic() as mode:
        fn(*args, **kwargs)
    return mode.bytes, mode.ops
