"""Reference NSA compression (docs/ops.md §3): weighted pooling over sliding windows of packed sequences."""
from __future__ import annotations

import torch


def sequence_bounds(actual_seq_len) -> list:
    """[(start, length)] per sequence from inclusive prefix sums (no leading 0 needed; a 0 adds an empty one)."""
    bounds, prev = [], 0
    for end in actual_seq_len:
        bounds.append((prev, int(end) - prev))
        prev = int(end)
    return bounds


def num_windows(length: int, block: int, stride: int) -> int:
    """Windows of ``block`` tokens every ``stride`` tokens inside one sequence; a trailing partial one is dropped."""
    return (length - block) // stride + 1 if length >= block else 0


def _window_index(actual_seq_len, block: int, stride: int, device) -> torch.Tensor:
    """int64 [T', block]: the token index of every (window, position) pair."""
    rows = []
    for start, length in sequence_bounds(actual_seq_len):
        n = num_windows(length, block, stride)
        if n:
            rows.append(start + torch.arange(n)[:, None] * stride + torch.arange(block)[None, :])
    if not rows:
        return torch.empty((0, block), dtype=torch.long, device=device)
    return torch.cat(rows).to(device)


def nsa_compress(input: torch.Tensor, weight: torch.Tensor, compress_block_size: int, compress_stride: int,
                 actual_seq_len) -> torch.Tensor:
    """[T, N, D] x [l, N] -> [T', N, D]: out[c, n] = sum_j weight[j, n] * input[start + i*d + j, n] (fp32 accumulation).

    Differentiable (autograd through gather and einsum), also in float64 for gradcheck.
    """
    idx = _window_index(actual_seq_len, compress_block_size, compress_stride, input.device)
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    windows = input.to(acc)[idx]                     # [T', l, N, D]
    out = torch.einsum("cjnd,jn->cnd", windows, weight.to(acc))
    return out.to(input.dtype)


def nsa_compress_grad(grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, compress_block_size: int,
                      compress_stride: int, actual_seq_len) -> tuple:
    """(dinput [T, N, D], dweight [l, N]) in the input dtypes, accumulated in fp32 (float64 stays float64)."""
    acc = torch.float64 if input.dtype == torch.float64 else torch.float32
    idx = _window_index(actual_seq_len, compress_block_size, compress_stride, input.device)
    g = grad.to(acc)
    dinput = torch.zeros(input.shape, dtype=acc, device=input.device)
    contrib = torch.einsum("cnd,jn->cjnd", g, weight.to(acc))   # [T', l, N, D]
    dinput.index_add_(0, idx.reshape(-1), contrib.reshape(-1, *input.shape[1:]))
    dweight = torch.einsum("cnd,cjnd->jn", g, input.to(acc)[idx])
    return dinput.to(input.dtype), dweight.to(weight.dtype)
