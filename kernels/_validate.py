"""Argument checks shared by the op launchers: errors name the argument, what was given and what is allowed."""
from __future__ import annotations

import torch


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
        raise TypeError(f"{op}: {name} must have dtype {_dtype_names(dtypes)}, got {str(t.dtype).replace('torch.', '')}")
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
