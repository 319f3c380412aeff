"""nsa_compress's tuning harnesses (forward, backward, dweight reduction): shapes, store buckets, the modelled work
of a config (the tuner's cost model) and a launch of a variant on random inputs through the op.

Shapes {T, N, D}: one sequence of T tokens (power-of-two bucket), N heads and D exact. A variant is a
geometry class; it is tuned at the first checked (l, d) of that class. dw_reduce is tuned inside the
backward at (l, d) = (32, 16).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

from .autotune import Target, Tuning, Variant, pow2_bucket
from .autotune.candidates import Work, tiled_work
from .nsa_compress_spaces import _variant, geometry

_NSA_PAIRS = ((32, 16), (64, 32), (128, 16), (128, 128))
_NSA_SHAPES = ({"T": 8192, "N": 4, "D": 128}, {"T": 65536, "N": 4, "D": 128})


def _nsa_bucket(shape: dict) -> tuple:
    return (pow2_bucket(shape["T"]), shape["N"], shape["D"])


def _nsa_pair(kind: str, variant: Variant):
    """(l, d) of the first checked geometry with this variant's label, or None."""
    dtype = variant.label.split("-")[0]
    return next((p for p in _NSA_PAIRS if _variant(kind, dtype, geometry(*p)).label == variant.label), None)


def _nsa_work(kind: str):
    def work(target: Target, variant: Variant, shape: dict, config: dict) -> Work:
        """Tiles of (WINDOWS windows, head, BLOCK_D columns); each streams the tokens its windows span in CHUNK
        steps (backward: reads x and grad, writes dinput and its dweight partials)."""
        l, d = _nsa_pair(kind, variant)
        T, N, D = shape["T"], shape["N"], shape["D"]
        n_win = max(1, (T - l) // d + 1)
        windows = min(config["WINDOWS"], pow2_bucket(n_win))
        block_d = min(config["BLOCK_D"], pow2_bucket(D))
        span = (windows - 1) * d + l
        cols = min(block_d, D)
        per_token = (3 if kind == "bwd" else 1) * 2 * cols
        out = windows * cols * 2 if kind == "fwd" else l * 4
        tiles = -(-n_win // windows) * N * -(-D // block_d)
        depth = config["num_warps"] / 4 if "num_warps" in config else 2.0
        return Work(tiles=tiles, bytes_per_tile=span * per_token + out + l * 2,
                    steps_per_tile=-(-span // variant.constexprs["CHUNK"]), depth=depth,
                    effective={"WINDOWS": windows, "BLOCK_D": block_d})
    return work


def _reduce_work(target: Target, variant: Variant, shape: dict, config: dict) -> Work:
    """Column tiles of the (work items x D blocks, l x N) fp32 partials, summed down the rows in BLOCK_R steps."""
    n_win = max(1, (shape["T"] - 32) // 16 + 1)
    rows = -(-n_win // 32) * -(-shape["D"] // 128)  # the backward's derived tiling, roughly
    return tiled_work(config, {"BLOCK_C": 32 * shape["N"]}, 4, steps={"BLOCK_R": rows})


def _nsa_inputs(shape: dict, dtype: str, l: int, device):
    gen = torch.Generator().manual_seed(0)
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    x = torch.randn((shape["T"], shape["N"], shape["D"]), generator=gen).to(dt).to(device)
    w = torch.randn((l, shape["N"]), generator=gen).to(dt).to(device)
    return x, w


def _tune_fwd(nsa_compress: Callable, shape: dict, variant: Variant, device):
    l, d = _nsa_pair("fwd", variant)
    x, w = _nsa_inputs(shape, variant.label.split("-")[0], l, device)
    return lambda: nsa_compress(x, w, l, d, actual_seq_len=[shape["T"]])


def _grad_call(npu_nsa_compress_grad: Callable, shape: dict, dtype: str, l: int, d: int, device):
    x, w = _nsa_inputs(shape, dtype, l, device)
    n_out = max(0, (shape["T"] - l) // d + 1)
    g = torch.randn((n_out, shape["N"], shape["D"]), generator=torch.Generator().manual_seed(1)).to(x.dtype).to(device)
    return lambda: npu_nsa_compress_grad(g, x, w, l, d, actual_seq_len=[shape["T"]])


def _tune_bwd(npu_nsa_compress_grad: Callable, shape: dict, variant: Variant, device):
    l, d = _nsa_pair("bwd", variant)
    return _grad_call(npu_nsa_compress_grad, shape, variant.label.split("-")[0], l, d, device)


def _tune_reduce(npu_nsa_compress_grad: Callable, shape: dict, variant: Variant, device):
    return _grad_call(npu_nsa_compress_grad, shape, variant.label, 32, 16, device)


def tunings(nsa_compress: Callable, npu_nsa_compress_grad: Callable) -> tuple:
    """The Tunings of nsa_compress.fwd, .bwd and .dw_reduce; their launches go through the ops given."""
    grad = npu_nsa_compress_grad
    return (Tuning(("T", "N", "D"), _nsa_bucket, functools.partial(_tune_fwd, nsa_compress), _NSA_SHAPES,
                   work=_nsa_work("fwd"), covers=lambda v, s: _nsa_pair("fwd", v) is not None),
            Tuning(("T", "N", "D"), _nsa_bucket, functools.partial(_tune_bwd, grad), _NSA_SHAPES,
                   work=_nsa_work("bwd"), covers=lambda v, s: _nsa_pair("bwd", v) is not None),
            Tuning(("T", "N", "D"), _nsa_bucket, functools.partial(_tune_reduce, grad), _NSA_SHAPES,
                   work=_reduce_work))
