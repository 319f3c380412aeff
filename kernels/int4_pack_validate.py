"""int4_pack's argument checks and output shapes: TypeError/ValueError naming the argument, what was given and what
is allowed; the bound on the kernels' 32-bit offsets inside a tile.
"""
from __future__ import annotations

import math

import torch

from ._validate import check_choice, check_tensor
from .reference import int4_pack as ref

OP = "convert_weight_to_int4pack"
M0 = ref.M0
_PACKED_DTYPES = {torch.int32: 8, torch.uint8: 2}


def _check_tile_offsets(op: str, arg: str, *spans: int) -> None:
    """The kernels address a tile's elements with int32 offsets from its int64 corner: spans must fit."""
    if max(spans) >= 2**31:
        raise ValueError(f"{op}: {arg} is too large for 32-bit offsets inside a tile "
                         f"(a tile spans {max(spans)} elements)")


def _nz_span(block_r: int, block_p: int, m1: int, n0: int) -> int:
    """Elements one NZ tile of _nz_ptrs spans: its column groups lie M1 * 16 * N0 apart."""
    return (-(-block_p // n0)) * m1 * M0 * n0 + block_r * n0


def _first_bad(weight: torch.Tensor) -> str:
    bad = ((weight < -8) | (weight > 7)).nonzero()[0].tolist()
    return f"weight[{', '.join(map(str, bad))}] = {int(weight[tuple(bad)])}"


def _pack_shape(weight: torch.Tensor, out_dtype: torch.dtype, layout: str) -> tuple:
    """Validate convert_weight_to_int4pack's arguments; return (per, packed cols, n0, m1, n1, out shape)."""
    check_tensor(OP, "weight", weight, dtypes=(torch.int32,), ndim=2)
    if out_dtype not in _PACKED_DTYPES:
        raise TypeError(f"{OP}: out_dtype must be torch.int32 or torch.uint8, got {out_dtype}")
    check_choice(OP, "layout", layout, ("nd", "nz"))
    per = _PACKED_DTYPES[out_dtype]
    rows, cols = weight.shape
    if cols % per:
        raise ValueError(f"{OP}: the last dim of weight must be a multiple of {per} for {out_dtype} output, "
                         f"got shape {tuple(weight.shape)}")
    p = cols // per
    n0 = ref.FRACTAL_BYTES // torch.empty((), dtype=out_dtype).element_size()
    m1, n1 = math.ceil(rows / M0), math.ceil(p / n0)
    return per, p, n0, m1, n1, ((n1, m1, M0, n0) if layout == "nz" else (rows, p))


def _unpack_shape(packed: torch.Tensor, layout: str, shape) -> tuple:
    """Validate unpack_int4's arguments; return (per, n0, m1, rows, packed cols)."""
    op = "unpack_int4"
    check_tensor(op, "packed", packed, dtypes=tuple(_PACKED_DTYPES))
    check_choice(op, "layout", layout, ("nd", "nz"))
    per = _PACKED_DTYPES[packed.dtype]
    n0 = ref.FRACTAL_BYTES // packed.element_size()
    if layout == "nd":
        check_tensor(op, "packed", packed, ndim=2)
        (rows, p), m1 = packed.shape, 0
    else:
        check_tensor(op, "packed", packed, ndim=4)
        n1, m1, m0, n0_given = packed.shape
        if (m0, n0_given) != (M0, n0):
            raise ValueError(f"{op}: an NZ {packed.dtype} tensor must have shape (N1, M1, {M0}, {n0}), "
                             f"got {tuple(packed.shape)}")
        rows, p = m1 * M0, n1 * n0
    if shape is not None:
        if len(shape) != 2:
            raise ValueError(f"{op}: shape must be (R, C), got {tuple(shape)}")
        r, c = shape
        fits = c % per == 0 and 0 <= r <= rows and 0 <= c // per <= p
        if not fits or (layout == "nd" and (r, c // per) != (rows, p)):
            raise ValueError(f"{op}: shape {tuple(shape)} does not fit packed of shape {tuple(packed.shape)} "
                             f"({layout}, {per} values per element)")
        rows, p = r, c // per
    return per, n0, m1, rows, p


_RELAYOUT_DTYPES = (torch.int8, torch.uint8, torch.float16, torch.bfloat16, torch.int32)


def _nd_to_nz_shape(x: torch.Tensor) -> tuple:
    check_tensor("nd_to_nz", "x", x, dtypes=_RELAYOUT_DTYPES, ndim=(2, 8))
    *batch, m, n = x.shape
    n0 = ref.nz_n0(x.dtype)
    return (*batch, math.ceil(n / n0), math.ceil(m / M0), M0, n0)


def _nz_to_nd_shape(x: torch.Tensor, shape) -> tuple:
    op = "nz_to_nd"
    check_tensor(op, "x", x, dtypes=_RELAYOUT_DTYPES, ndim=(4, 10))
    *batch, n1, m1, m0, n0 = x.shape
    if (m0, n0) != (M0, ref.nz_n0(x.dtype)):
        raise ValueError(f"{op}: x must end in ({M0}, {ref.nz_n0(x.dtype)}) for {x.dtype}, got {tuple(x.shape)}")
    if shape is not None and len(shape) != 2:
        raise ValueError(f"{op}: shape must be (M, N), got {tuple(shape)}")
    m, n = shape if shape is not None else (m1 * M0, n1 * n0)
    if not (0 <= m <= m1 * M0 and 0 <= n <= n1 * n0):
        raise ValueError(f"{op}: shape {tuple(shape)} does not fit x of shape {tuple(x.shape)} "
                         f"(at most ({m1 * M0}, {n1 * n0}))")
    return (*batch, m, n)
