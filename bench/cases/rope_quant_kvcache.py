"""Benchmark cases for dequant_rope_quant_kvcache: W8A8 decode and prefill steps of GQA models.

x int32 with weight_scale, activation_scale, int32 bias and k/v offsets (the full
dequant path), cos fp16, kv_output off. The caches hold exactly the rows written
(contiguous: C1 = B, C2 = S; page: blocks of 128 slots, random unique slots), so the
reference's index_put_ is charged for little more than the rows it writes. The
reference writes into clones of pristine caches, so the check compares our whole
caches with caches that only the reference wrote.
"""
import torch

import atlas_kernels as ak
from atlas_kernels.reference import rope_quant_kvcache as ref
from atlas_kernels.testing.meter import tensor_bytes
from harness import BenchCase

MODELS = [(32, 8, 128), (64, 8, 128), (28, 4, 128)]  # (Nq, Nkv, D)
SHAPES = [(b, 1) for b in (1, 8, 64, 256)] + [(1, 2048), (1, 8192)]  # (B, S)
BLOCK = 128  # page size in slots
_PARAMS = ("weight_scale", "activation_scale", "bias", "offset_k", "offset_v")


def _setup(b, s, nq, nkv, d, cache_mode):
    def setup(device):
        g = torch.Generator().manual_seed(0)
        t, h = b * s, (nq + 2 * nkv) * d
        angle = torch.rand(b, s, 1, d, generator=g) * 6.3
        if cache_mode == "page":
            c1, c2 = -(-t // BLOCK), BLOCK
            indices = torch.randperm(c1 * c2, generator=g)[:t].to(torch.int32)
        else:
            c1, c2 = b, s
            indices = torch.zeros(b, dtype=torch.int32)
        x = {
            "x": torch.randint(-3000, 3000, (b, s, h), dtype=torch.int32, generator=g),
            "cos": angle.cos().half(), "sin": angle.sin().half(),
            "k0": torch.randint(-128, 128, (c1, c2, nkv, d), dtype=torch.int8, generator=g),
            "v0": torch.randint(-128, 128, (c1, c2, nkv, d), dtype=torch.int8, generator=g),
            "indices": indices,
            "scale_k": torch.rand(nkv, d, generator=g) * 0.05 + 0.01,
            "scale_v": torch.rand(nkv, d, generator=g) * 0.05 + 0.01,
            "weight_scale": torch.rand(h, generator=g) * 2e-3 + 1e-4,
            "activation_scale": torch.rand(t, generator=g) + 0.5,
            "bias": torch.randint(-200, 200, (h,), dtype=torch.int32, generator=g),
            "offset_k": torch.randn(nkv, d, generator=g),
            "offset_v": torch.randn(nkv, d, generator=g),
        }
        x = {k: v.to(device) for k, v in x.items()}
        x["k_cache"], x["v_cache"] = x["k0"].clone(), x["v0"].clone()
        x["splits"] = [nq * d, nkv * d, nkv * d]
        x["cache_mode"] = cache_mode
        return x
    return setup


def _call(fn, x, k_cache, v_cache):
    return fn(x["x"], x["cos"], x["sin"], k_cache, v_cache, x["indices"], x["scale_k"], x["scale_v"], x["splits"],
              cache_mode=x["cache_mode"], **{k: x[k] for k in _PARAMS})


def _min_bytes(x, out):
    rows = x["indices"].numel() if x["cache_mode"] == "contiguous" else int((x["indices"] >= 0).sum())
    if x["cache_mode"] == "contiguous":
        rows *= x["x"].shape[1]
    row_bytes = x["k0"][0, 0].numel()
    inputs = [x[k] for k in ("x", "cos", "sin", "indices", "scale_k", "scale_v", *_PARAMS)]
    return tensor_bytes(inputs) + tensor_bytes(out[:3]) + 2 * rows * row_bytes


def cases():
    out = []
    for nq, nkv, d in MODELS:
        for b, s in SHAPES:
            for mode in ("contiguous", "page"):
                out.append(BenchCase(
                    op="dequant_rope_quant_kvcache", shape=f"B{b} S{s} Nq{nq} Nkv{nkv} D{d} {mode}",
                    setup=_setup(b, s, nq, nkv, d, mode),
                    run=lambda x: _call(ak.dequant_rope_quant_kvcache, x, x["k_cache"], x["v_cache"]),
                    reference=lambda x: _call(ref.dequant_rope_quant_kvcache, x, x["k0"].clone(), x["v0"].clone()),
                    min_bytes=_min_bytes,
                    quick=(nq, nkv, d, b, s) == (32, 8, 128, 64, 1)))
    return out
