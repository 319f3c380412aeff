"""add_rms_norm_quant.fused's tuning harness: shapes, store buckets, the modelled work of a config (the tuner's
cost model) and a launch of a variant on random inputs through the torch_npu spellings.

Shapes {R, N}: R tokens (power-of-two bucket), N the hidden size (exact). Tile variants are tuned at hidden
sizes a tile can hold, loop variants at the long ones.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import triton

from .autotune import Target, Tuning, Variant, pow2_bucket
from .autotune.candidates import Work

_SHAPES = ({"R": 16, "N": 576}, {"R": 256, "N": 576}, {"R": 16, "N": 4096}, {"R": 256, "N": 7168})


def _work(target: Target, variant: Variant, shape: dict, config: dict) -> Work:
    """One tile reads x1, x2 once (rows packed); the loop layout reads them once per pass, in chunks."""
    r, n = shape["R"], shape["N"]
    p2 = max(16, triton.next_power_of_2(n))
    dynamic = variant.constexprs["DYNAMIC"]
    out_bytes = 2 + 1 + (1 if variant.constexprs["OUT2"] else 0) + (8 / n if dynamic else 0)
    if p2 <= config["BLOCK_N"]:
        rows, reads, steps = min(config["BLOCK_N"] // p2, triton.next_power_of_2(r)), 1, 1
        effective = {"BLOCK_N": p2, "ROWS": rows}
    else:
        rows, reads = config["ROWS"], 3 if dynamic else 2
        steps = reads * triton.cdiv(n, config["BLOCK_N"])
        effective = {"BLOCK_N": config["BLOCK_N"], "ROWS": rows}
    if "num_warps" in config:
        effective["num_warps"] = config["num_warps"]
    return Work(tiles=triton.cdiv(r, rows), bytes_per_tile=rows * n * (4 * reads + out_bytes), steps_per_tile=steps,
                depth=config.get("num_warps", 8) / 4, effective=effective, unique_bytes=r * n * (4 + out_bytes))


def _tune_call(npu_add_rms_norm_dynamic_quant: Callable, npu_add_rms_norm_quant: Callable, shape: dict,
               variant: Variant, device):
    """The variant's form and dtype on random inputs; smooth_scale1 where the variant has it."""
    gen = torch.Generator().manual_seed(0)
    dtype = torch.float16 if variant.types["x1_ptr"] == "*fp16" else torch.bfloat16
    x1, x2 = (torch.randn((shape["R"], shape["N"]), generator=gen).to(dtype).to(device) for _ in range(2))
    gamma = (torch.rand(shape["N"], generator=gen) + 0.5).to(dtype).to(device)
    if variant.constexprs["DYNAMIC"]:
        smooth = gamma if variant.constexprs["HAS_S1"] else None
        return lambda: npu_add_rms_norm_dynamic_quant(x1, x2, gamma, smooth_scale1=smooth)
    scales = (torch.rand(shape["N"], generator=gen) * 0.01 + 0.01).to(device)
    return lambda: npu_add_rms_norm_quant(x1, x2, gamma, scales if dtype == torch.float16 else scales.to(dtype))



def tuning(npu_add_rms_norm_dynamic_quant: Callable, npu_add_rms_norm_quant: Callable) -> Tuning:
    """The fused kernel's Tuning; its launches go through the two ops given (dynamic and static form)."""
    return Tuning(("R", "N"), lambda s: (pow2_bucket(s["R"]), s["N"]),
                  functools.partial(_tune_call, npu_add_rms_norm_dynamic_quant, npu_add_rms_norm_quant), _SHAPES,
                  work=_work, covers=lambda v, s: (s["N"] <= 1024) == bool(v.constexprs["ONE_TILE"]))
