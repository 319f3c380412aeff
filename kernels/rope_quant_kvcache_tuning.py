"""dequant_rope_quant_kvcache's tuning harness: shapes, store buckets, the modelled work of a config (the tuner's
cost model) and a launch of a variant on random inputs through the op.

Shapes {T, NQ, NKV}: T tokens of a decode step (power-of-two bucket), NQ and NKV heads (exact). A launch takes
the config of (x kind, head dim); the variant's head dim is its label's.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

from .autotune import Target, Tuning, Variant, pow2_bucket
from .autotune.candidates import Work, tiled_work

_ROPE_SHAPES = ({"T": 16, "NQ": 32, "NKV": 8}, {"T": 256, "NQ": 32, "NKV": 8})


def _rope_bucket(shape: dict) -> tuple:
    return (pow2_bucket(shape["T"]), shape["NQ"], shape["NKV"])


def _rope_work(target: Target, variant: Variant, shape: dict, config: dict) -> Work:
    """(BLOCK_T tokens, HEADS heads) tiles of whole head rows: x in, q or the int8 cache row out, cos/sin per token."""
    d = 2 * variant.constexprs["BLOCK_D2"]
    x_bytes = 4 if variant.constexprs["DEQUANT"] else 2
    heads = shape["NQ"] + 2 * shape["NKV"]
    return tiled_work(config, {"BLOCK_T": shape["T"], "HEADS": heads}, d * (x_bytes + 2),
                      extra_bytes_per_tile=min(config["BLOCK_T"], shape["T"]) * d * 4)


def _tune_rope(op: Callable, shape: dict, variant: Variant, device):
    """A contiguous-cache decode step: x [T, (NQ + 2 NKV) D], token t written to cache row (t, 0)."""
    gen = torch.Generator().manual_seed(0)
    t, nq, nkv = shape["T"], shape["NQ"], shape["NKV"]
    d = 2 * variant.constexprs["BLOCK_D2"]
    h = (nq + 2 * nkv) * d
    dequant = variant.constexprs["DEQUANT"]
    x = (torch.randint(-2**20, 2**20, (t, h), generator=gen, dtype=torch.int32) if dequant
         else torch.randn((t, h), generator=gen).to(torch.float16))
    cos, sin = (torch.rand((t, d), generator=gen).to(torch.float16) for _ in range(2))
    k_cache, v_cache = (torch.zeros((t, 4, nkv, d), dtype=torch.int8) for _ in range(2))
    scale_k, scale_v = (torch.rand((nkv, d), generator=gen) * 0.1 + 0.01 for _ in range(2))
    extra = {"weight_scale": torch.rand(h, generator=gen) * 1e-4} if dequant else {}
    args = [a.to(device) for a in (x, cos, sin, k_cache, v_cache, torch.zeros(t, dtype=torch.int32), scale_k, scale_v)]
    extra = {k: v.to(device) for k, v in extra.items()}
    return lambda: op(*args, [nq * d, nkv * d, nkv * d], **extra)


def tuning(op: Callable) -> Tuning:
    """The fused kernel's Tuning; its launches go through ``op`` (dequant_rope_quant_kvcache)."""
    return Tuning(("T", "NQ", "NKV"), _rope_bucket, functools.partial(_tune_rope, op), _ROPE_SHAPES, work=_rope_work)
