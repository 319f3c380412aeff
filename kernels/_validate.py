"""Argument checks shared by the op launchers: errors name the argument, what was given and what is allowed."""
from __future__ import annotations

import operator

import torch

from ._backend import device_of


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


def check_tensor(op: str, name: str, t, *, dtypes=None, ndim=None, optional: bool = False):
    """TypeError if ``t`` is not a tensor of one of ``dtypes``; ValueError if its rank is not ``ndim``.

    ndim: an int, or a (min, max) pair inclusive.
    """
    if t is None:
        if optional:
            return
        raise TypeError(f"{op}: {name} is required (got None)")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        got = str(t.dtype).replace("torch.", "")
        raise TypeError(f"{op}: {name} must have dtype {_dtype_names(dtypes)}, got {got}")
    if ndim is not None:
        lo, hi = (ndim, ndim) if isinstance(ndim, int) else ndim
        if not lo <= t.dim() <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise ValueError(f"{op}: {name} must have {want} dims, got shape {tuple(t.shape)}")


def check_choice(op: str, name: str, value, allowed):
    if value not in allowed:
        raise ValueError(f"{op}: {name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def check_multiple(op: str, name: str, value: int, multiple: int, what: str):
    if value % multiple:
        raise ValueError(f"{op}: {what} of {name} must be a multiple of {multiple}, got {value}")


def _overlap_check_possible(t: torch.Tensor) -> bool:
    """Real memory to compare (no meta or fake tensor, no empty tensor)."""
    if t.device.type == "meta" or t.numel() == 0:
        return False
    from torch._subclasses.fake_tensor import is_fake
    return not is_fake(t)


def _has_internal_overlap(t: torch.Tensor) -> bool:
    """True unless the strides prove every element distinct (sorted by |stride|, each one steps past the span
    of the smaller dims), as torch requires of in-place outputs; a stride-0 expand is the common case."""
    span = 0
    for stride, size in sorted((abs(st), sz) for sz, st in zip(t.shape, t.stride()) if sz > 1):
        if stride <= span:
            return True
        span += stride * (size - 1)
    return False


def _byte_range(t: torch.Tensor) -> tuple:
    start = t.storage_offset() * t.element_size()
    lo = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()) if stride < 0)
    hi = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()) if stride > 0)
    return start + lo * t.element_size(), start + (hi + 1) * t.element_size()


def check_common(op: str, tensors: dict, outputs=()) -> torch.device:
    """The checks every op runs first, before its fake and its kernel; returns the one device.

    tensors: {name: tensor or None} of every tensor argument. outputs: names of those the op writes in place.
    ValueError when the tensors are on different devices (meta included: a meta tensor next to CPU tensors
    would otherwise run the fake and return uninitialised memory), when an output has internally overlapping
    elements (e.g. a stride-0 expand), or when an output shares memory with any other argument.
    """
    device = device_of(op, **{name: t for name, t in tensors.items() if isinstance(t, torch.Tensor)})
    for out in outputs:
        t = tensors[out]
        if not isinstance(t, torch.Tensor) or not _overlap_check_possible(t):
            continue
        if _has_internal_overlap(t):
            raise ValueError(f"{op}: {out} is written in place but has internally overlapping elements "
                             f"(shape {tuple(t.shape)}, strides {t.stride()}, e.g. an expand); pass a tensor "
                             f"whose elements are distinct memory")
        lo, hi = _byte_range(t)
        ptr = t.untyped_storage().data_ptr()
        for name, other in tensors.items():
            if name == out or not isinstance(other, torch.Tensor) or not _overlap_check_possible(other):
                continue
            if other.untyped_storage().data_ptr() != ptr:
                continue
            o_lo, o_hi = _byte_range(other)
            if o_lo < hi and lo < o_hi:
                raise ValueError(f"{op}: {out} is written in place but shares memory with {name}; pass "
                                 f"separate tensors")
    return device


_TYPE_NAMES = {"Tensor": "a torch.Tensor", "int": "an int", "bool": "a bool", "str": "a str", "float": "a float",
               "ScalarType": "a torch.dtype", "List[int]": "a list of ints"}


def _is_int(v) -> bool:
    return isinstance(v, (int, torch.SymInt)) and not isinstance(v, bool)


def int_list(op: str, name: str, value, optional: bool = False):
    """``value`` (a sequence of ints) as a list of Python ints; TypeError naming the argument otherwise."""
    if value is None and optional:
        return None
    if isinstance(value, torch.Tensor) and value.dim() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        return [int(v) for v in value.tolist()]
    try:
        if isinstance(value, (str, bytes, torch.Tensor)):
            raise TypeError
        out = [operator.index(v) for v in value]
        if any(isinstance(v, bool) for v in value):
            raise TypeError
        return out
    except TypeError:
        raise TypeError(f"{op}: {name} must be a sequence of ints{' or None' if optional else ''}, "
                        f"got {type(value).__name__} {value!r}"[:300]) from None


def _is_numpy_bool(value) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")


def int_arg(op: str, name: str, value, optional: bool = False):
    """An ``int`` argument as torch's binding takes it: a Python int, a numpy integer or a 0-d integer tensor
    (read on the host), as a Python int; None when ``optional``. TypeError naming the argument otherwise
    (bools, floats and tensors with more than one dimension included)."""
    if value is None and optional:
        return None
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 and not value.is_floating_point() and not value.is_complex() \
                and value.dtype != torch.bool and value.device.type != "meta":
            return int(value.item())
    elif not isinstance(value, bool) and not _is_numpy_bool(value):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{op}: {name} must be an int (a Python or numpy integer or a 0-d integer tensor)"
                    f"{' or None' if optional else ''}, got {type(value).__name__} {value!r}"[:300])


def bool_arg(op: str, name: str, value) -> bool:
    """A ``bool`` argument as torch's binding takes it: a Python or numpy bool; TypeError naming it otherwise."""
    if isinstance(value, bool) or _is_numpy_bool(value):
        return bool(value)
    raise TypeError(f"{op}: {name} must be a bool, got {type(value).__name__} {value!r}"[:300])


def _matches(kind: str, v) -> bool:
    if kind == "Tensor":
        return isinstance(v, torch.Tensor)
    if kind == "int":
        return _is_int(v)
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    if kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "ScalarType":
        return isinstance(v, torch.dtype)
    if kind == "List[int]":
        return isinstance(v, (list, tuple)) and all(_is_int(x) for x in v)
    return True


def _arg_spec(op: str) -> tuple:
    """((name, type, optional), ...) of custom op atlas::<op>'s schema."""
    spec = []
    for arg in getattr(torch.ops.atlas, op).default._schema.arguments:
        kind = arg.real_type.annotation_str
        optional = kind.startswith("Optional[")
        spec.append((arg.name, kind[len("Optional["):-1] if optional else kind, optional))
    return tuple(spec)


def call_op(op: str, packet, *args):
    """Call the custom op ``packet`` after checking each Python argument against its schema: a wrong type
    raises TypeError naming the argument (torch's own schema check raises RuntimeError without it).
    Skipped while torch.compile traces: the schema is not traceable, and the eager call checks the same."""
    if torch.compiler.is_compiling():
        return packet(*args)
    for (name, kind, optional), value in zip(_arg_spec(op), args):
        if value is None and optional:
            continue
        if not _matches(kind, value):
            want = _TYPE_NAMES.get(kind, kind) + (" or None" if optional else "")
            raise TypeError(f"{op}: {name} must be {want}, got {type(value).__name__} {value!r}"[:300])
        if kind == "int" and not -2**63 <= value < 2**63:
            raise ValueError(f"{op}: {name} = {value} is out of the int64 range")
        if kind == "List[int]" and any(not -2**63 <= x < 2**63 for x in value):
            raise ValueError(f"{op}: {name} has a value out of the int64 range: {list(value)}"[:300])
    return packet(*args)
