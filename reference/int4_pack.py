"""Reference int4 packing and FRACTAL_NZ relayout (docs/ops.md §5)."""
from __future__ import annotations

import math

import torch

M0 = 16          # rows per NZ fractal
FRACTAL_BYTES = 32  # bytes per fractal row


def nz_n0(dtype: torch.dtype) -> int:
    """Elements per fractal row: 32 bytes' worth (int8 32, fp16/bf16 16, packed int32 8, packed-int4 uint8 32)."""
    return FRACTAL_BYTES // torch.empty((), dtype=dtype).element_size()


def nd_to_nz(x: torch.Tensor) -> torch.Tensor:
    """(..., M, N) -> (..., ceil(N/N0), ceil(M/16), 16, N0), zero padded."""
    *batch, m, n = x.shape
    n0 = nz_n0(x.dtype)
    m1, n1 = math.ceil(m / M0), math.ceil(n / n0)
    padded = x.new_zeros(*batch, m1 * M0, n1 * n0)
    padded[..., :m, :n] = x
    return padded.reshape(*batch, m1, M0, n1, n0).movedim(-2, -4).contiguous()


def nz_to_nd(x: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """(..., N1, M1, 16, N0) -> (..., m, n): the inverse of nd_to_nz."""
    *batch, n1, m1, m0, n0 = x.shape
    nd = x.movedim(-4, -2).reshape(*batch, m1 * m0, n1 * n0)
    return nd[..., :m, :n].contiguous()


def pack_int4(weight: torch.Tensor, out_dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """int32 (R, C) values in [-8, 7] -> int32 (R, C/8) or uint8 (R, C/2); element 0 in the low nibble."""
    per = 8 if out_dtype == torch.int32 else 2
    nibbles = (weight.to(torch.int64) & 0xF).reshape(*weight.shape[:-1], weight.shape[-1] // per, per)
    shifts = torch.arange(per, device=weight.device, dtype=torch.int64) * 4
    packed = (nibbles << shifts).sum(-1)
    if out_dtype == torch.int32:
        return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)
    return packed.to(torch.uint8)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """int32 (R, C/8) or uint8 (R, C/2) -> int32 (R, C), sign-extended."""
    per = 8 if packed.dtype == torch.int32 else 2
    shifts = torch.arange(per, device=packed.device, dtype=torch.int64) * 4
    nibbles = (packed.to(torch.int64).unsqueeze(-1) >> shifts) & 0xF
    values = torch.where(nibbles >= 8, nibbles - 16, nibbles)
    return values.reshape(*packed.shape[:-1], packed.shape[-1] * per).to(torch.int32)


def convert_weight_to_int4pack(weight: torch.Tensor, out_dtype: torch.dtype = torch.int32,
                               layout: str = "nd") -> torch.Tensor:
    packed = pack_int4(weight, out_dtype)
    return nd_to_nz(packed) if layout == "nz" else packed
