"""nsa_compress's argument checks: TypeError/ValueError naming the argument, what was given and what is allowed;
actual_seq_len read as torch_npu's int[] takes it (or as a tensor, for the varlen ops).
"""
from __future__ import annotations

import numpy as np
import torch

from ._validate import check_common, check_tensor, int_arg
from .reference import nsa_compress as ref

DTYPES = (torch.float16, torch.bfloat16)
MAX_BLOCK = 256          # l limit (CANN: 128); register/UB use grows with l/d


def _seq_ends(op: str, actual_seq_len) -> list:
    """actual_seq_len as a list of Python ints (host data: list or tuple of ints, 1-D integer numpy array or
    CPU tensor, as torch_npu's int[] takes them)."""
    if isinstance(actual_seq_len, np.ndarray):
        if actual_seq_len.ndim != 1 or actual_seq_len.dtype.kind not in "iu":
            raise TypeError(f"{op}: actual_seq_len must be a 1-D integer array, got {actual_seq_len.dtype} "
                            f"with shape {actual_seq_len.shape}")
        return [int(v) for v in actual_seq_len.tolist()]
    if actual_seq_len is None:
        raise ValueError(f"{op}: actual_seq_len is required (inclusive prefix sums of the sequence lengths)")
    if isinstance(actual_seq_len, torch.Tensor):
        if actual_seq_len.device.type != "cpu":
            raise TypeError(f"{op}: actual_seq_len must be host data (list, tuple or CPU tensor), got a tensor on "
                            f"{actual_seq_len.device}; reading it would sync the device")
        if actual_seq_len.dtype.is_floating_point or actual_seq_len.dim() != 1:
            raise TypeError(f"{op}: actual_seq_len must be a 1-D integer tensor, got {actual_seq_len.dtype} "
                            f"with shape {tuple(actual_seq_len.shape)}")
        return [int(v) for v in actual_seq_len.tolist()]
    if not isinstance(actual_seq_len, (list, tuple)) or not all(_is_int(v) for v in actual_seq_len):
        raise TypeError(f"{op}: actual_seq_len must be a list or tuple of ints, got {actual_seq_len!r}")
    return [int(v) for v in actual_seq_len]


def _is_int(v) -> bool:
    """A Python or numpy integer (torch_npu's int takes both), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_ints(op: str, block, stride) -> tuple:
    """(block, stride) as Python ints (torch_npu's int: a Python or numpy integer or a 0-d integer tensor)."""
    return int_arg(op, "compress_block_size", block), int_arg(op, "compress_stride", stride)


def _check(op: str, input, weight, block, stride, ends, grad=None) -> int:
    """Validate the arguments; return T' (number of windows)."""
    check_tensor(op, "input", input, dtypes=DTYPES, ndim=3)
    check_tensor(op, "weight", weight, dtypes=DTYPES, ndim=2)
    check_common(op, {"grad": grad, "input": input, "weight": weight})
    if weight.dtype != input.dtype:
        raise TypeError(f"{op}: weight must have the dtype of input ({str(input.dtype)[6:]}), "
                        f"got {str(weight.dtype)[6:]}")
    _check_ints(op, block, stride)
    for name, v in (("compress_block_size", block), ("compress_stride", stride)):
        if v < 16 or v % 16:
            raise ValueError(f"{op}: {name} must be a positive multiple of 16 (the kernel reads 16-token chunks), "
                             f"got {v}")
    if block > MAX_BLOCK:
        raise ValueError(f"{op}: compress_block_size must be <= {MAX_BLOCK}, got {block}")
    if stride > block:
        raise ValueError(f"{op}: compress_stride ({stride}) must not exceed compress_block_size ({block})")
    T, N, D = input.shape
    if N < 1 or D < 1:
        raise ValueError(f"{op}: input must have N >= 1 heads and D >= 1, got shape {tuple(input.shape)}")
    if tuple(weight.shape) != (block, N):
        raise ValueError(f"{op}: weight must have shape (compress_block_size, N) = ({block}, {N}), "
                         f"got {tuple(weight.shape)}")
    if not ends:
        raise ValueError(f"{op}: actual_seq_len must not be empty")
    prev = 0
    for i, e in enumerate(ends):
        if e < prev:
            raise ValueError(f"{op}: actual_seq_len must be non-decreasing and >= 0 (prefix sums); "
                             f"actual_seq_len[{i}] = {e} < {prev}")
        prev = e
    if ends[-1] != T:
        raise ValueError(f"{op}: actual_seq_len must end at T = input.shape[0] = {T}, got {ends[-1]}")
    n_out = sum(ref.num_windows(length, block, stride) for _, length in ref.sequence_bounds(ends))
    if grad is not None:
        check_tensor(op, "grad", grad, dtypes=DTYPES, ndim=3)
        if grad.dtype != input.dtype:
            raise TypeError(f"{op}: grad must have the dtype of input ({str(input.dtype)[6:]}), "
                            f"got {str(grad.dtype)[6:]}")
        if tuple(grad.shape) != (n_out, N, D):
            raise ValueError(f"{op}: grad must have shape (T', N, D) = ({n_out}, {N}, {D}), got {tuple(grad.shape)}")
    return n_out


def _lengths_tensor(op: str, actual_seq_len: torch.Tensor) -> torch.Tensor:
    if actual_seq_len.dtype.is_floating_point or actual_seq_len.dtype == torch.bool or actual_seq_len.dim() != 1:
        raise TypeError(f"{op}: actual_seq_len must be a 1-D integer tensor, got {actual_seq_len.dtype} "
                        f"with shape {tuple(actual_seq_len.shape)}")
    if actual_seq_len.device.type == "meta":
        raise TypeError(f"{op}: actual_seq_len must hold values (host data or a tensor on a real device), got a "
                        f"meta tensor")
    return actual_seq_len
