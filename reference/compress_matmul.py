"""Reference matmul_compress_dequant (docs/ops.md §2): decompress, int8 matmul, dequant."""
from __future__ import annotations

from typing import Optional

import torch

from atlas_kernels.compress_codec import decompress_weight


def deq_scale_to_float(deq_scale: torch.Tensor) -> torch.Tensor:
    """uint64/int64 deq_scale -> float32 of the same shape: the fp32 bits in bits 0..31.

    Bits 32..63 (trans_quant_param's offset and bit 46, or a sign extension) are ignored.
    """
    return (deq_scale.view(torch.int64) & 0xFFFFFFFF).to(torch.int32).view(torch.float32)


def matmul_compress_dequant(x1: torch.Tensor, x2: torch.Tensor, compress_index: torch.Tensor,
                            bias: Optional[torch.Tensor], deq_scale: torch.Tensor, compress_info) -> torch.Tensor:
    """fp16 (m, n) = fp16((x1 @ W^T + bias) * scale), W = decompress_weight(x2, compress_index, compress_info)."""
    w = decompress_weight(x2.cpu(), compress_index.cpu(), compress_info).to(x1.device)
    acc = int_matmul(x1, w)
    if bias is not None:
        acc = acc + bias.reshape(1, -1)
    scale = deq_scale_to_float(deq_scale).reshape(1, -1)
    return (acc.to(torch.float32) * scale).to(torch.float16)


def int_matmul(x1: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """int32 (m, n) = x1 (m, k) int8 @ w (n, k)^T int8, exact (int64 accumulation, then int32)."""
    return (x1.to(torch.int64) @ w.to(torch.int64).t()).to(torch.int32)
