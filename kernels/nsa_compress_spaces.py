"""nsa_compress's kernel geometry (CHUNK, SLOTS, PHASES from (l, d)), its variants, and the config spaces and derived
defaults per target (the Ascend UB model measured per geometry, the CUDA registers bound).
"""
from __future__ import annotations

import math

import torch
import triton

from .autotune import Target, Variant

MAX_CHUNK = 32           # tokens per chunk load: larger chunks only add registers

_TY = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def geometry(block: int, stride: int) -> dict:
    """Constexprs for (l, d): CHUNK (power of two dividing both), SLOTS (live windows), PHASES (chunks per window)."""
    g = math.gcd(block, stride)
    chunk = min(g & -g, MAX_CHUNK)
    a, b = block // chunk, stride // chunk
    return {"CHUNK": chunk, "SLOTS": triton.next_power_of_2(-(-a // b)), "PHASES": triton.next_power_of_2(a)}


def _variant(kind: str, dtype: str, geo: dict) -> Variant:
    label = f"{dtype}-c{geo['CHUNK']}s{geo['SLOTS']}p{geo['PHASES']}"
    common = {"work_ptr": "*i32", "n_items": "i32", "N": "i32", "D": "i32", "l": "i32", "d": "i32",
              "stride_xt": "i32", "stride_xn": "i32"}
    if kind == "fwd":
        types = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", **common}
        return Variant(label, types, {"CHUNK": geo["CHUNK"], "SLOTS": geo["SLOTS"]})
    types = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "g_ptr": f"*{dtype}", "dx_ptr": f"*{dtype}",
             "ws_ptr": "*fp32", **common, "stride_gt": "i32", "stride_gn": "i32"}
    return Variant(label, types, dict(geo))


# Checked geometries: the benchmark's (32, 16) and (64, 32), the widest overlap (128, 16), l == d (128, 128).
_CHECKED = [geometry(32, 16), geometry(64, 32), geometry(128, 16), geometry(128, 128)]


# UB bytes per column of BLOCK_D that bishengir plans with multi-buffering on (Ascend910B2), keyed by the
# kernel's geometry constexprs (CHUNK, SLOTS[, PHASES]; the forward has no PHASES), measured at the
# Ascend default (128 columns; the backward at 64 where 128 is predicted not to fit). Not linear in
# BLOCK_D: fwd c16s2 plans 21/37/68/130 KB at 32/64/128/256 columns, fwd c16s8 85/150/86/163 KB,
# bwd c32s2 overflows at 32 columns and fits at 64 (119 KB) and 128 (155 KB); a smaller tile costs
# more per column. The stored compiler verdicts have the last word on the space.
_UB_PER_COL = {
    ("fwd", 16, 1): 288, ("fwd", 32, 1): 560, ("fwd", 16, 2): 528, ("fwd", 32, 2): 944,
    ("fwd", 16, 4): 997, ("fwd", 32, 4): 698, ("fwd", 16, 8): 670, ("fwd", 32, 8): 995,
    ("bwd", 16, 1, 1): 485, ("bwd", 16, 1, 4): 654, ("bwd", 16, 1, 8): 847, ("bwd", 16, 1, 16): 1233,
    ("bwd", 32, 1, 1): 949, ("bwd", 32, 1, 2): 1094, ("bwd", 32, 1, 4): 1286, ("bwd", 32, 1, 8): 2426,
    ("bwd", 16, 2, 2): 880, ("bwd", 16, 2, 4): 1006, ("bwd", 16, 2, 8): 1263, ("bwd", 16, 2, 16): 1221,
    ("bwd", 32, 2, 2): 1214, ("bwd", 32, 2, 4): 2371, ("bwd", 32, 2, 8): 2430,
    ("bwd", 16, 4, 4): 923, ("bwd", 16, 4, 8): 1080, ("bwd", 16, 4, 16): 2459,
    ("bwd", 32, 4, 4): 2148, ("bwd", 32, 4, 8): 3039, ("bwd", 16, 8, 8): 1522, ("bwd", 16, 8, 16): 2989,
    ("fwd", 16, 16): 1525, ("bwd", 32, 8, 8): 11848,  # l > 128: bwd c32s8p8 plans 534 KB at 32 columns
}
# not measured: bwd c16s16p16 (l >= 144, d = 16; bishengir ran > 4 min at 16 columns)
_UB_PER_COL_UNKNOWN = {"fwd": 1600, "bwd": 16384}


def _ub_bytes(kind: str, variant: Variant, block_d: int) -> int:
    """Planned UB bytes of one tile on Ascend, from the measured rate of this geometry."""
    return _UB_PER_COL.get((kind, *variant.constexprs.values()), _UB_PER_COL_UNKNOWN[kind]) * block_d


def _tile_bytes(kind: str, variant: Variant, block_d: int) -> int:
    """fp32 bytes of one chunk step's values (the CUDA register model): products SLOTS x CHUNK x BLOCK_D and more."""
    c = variant.constexprs
    chunk, slots = c["CHUNK"], c["SLOTS"]
    per = slots * chunk * block_d * 4 + chunk * block_d * (2 + 4) + slots * block_d * 4 + slots * chunk * 12
    if kind == "bwd":
        per += chunk * block_d * 4 + c["PHASES"] * chunk * 4 + slots * c["PHASES"] * chunk * 4
    return per


def _space(kind: str):
    def space(target: Target, variant: Variant) -> list:
        configs = []
        for block_d in (16, 32, 64, 128, 256):
            for windows in (16, 32, 64):
                if target.is_ascend:
                    if _ub_bytes(kind, variant, block_d) <= target.ub_bytes:
                        configs.append({"BLOCK_D": block_d, "WINDOWS": windows})
                    continue
                per = _tile_bytes(kind, variant, block_d)
                for warps in (2, 4, 8):
                    # fp32 values per thread in one chunk step; above ~128 the shipped configs spill
                    if per // 4 // (32 * warps) <= 128 and block_d * 4 >= 32 * warps // 8:
                        configs.append({"BLOCK_D": block_d, "WINDOWS": windows, "num_warps": warps})
        return configs
    return space


def _default(kind: str):
    def default(target: Target, variant: Variant) -> dict:
        if target.backend == "cpu":  # interpreter: whole rows of D, long spans (few numpy round trips)
            return {"BLOCK_D": 128, "WINDOWS": 64}
        space = _space(kind)(target, variant)
        if target.is_ascend:
            # the widest D block up to a whole D = 128 row that fits (256 columns would halve the tiles
            # per core at D = 128); 32 windows keep the span overlap at (l-d)/(32 d)
            fits = [c for c in space if c["WINDOWS"] == 32 and c["BLOCK_D"] <= 128]
            return max(fits, key=lambda c: c["BLOCK_D"]) if fits else {"BLOCK_D": 16, "WINDOWS": 32}
        # fp32 values per thread per chunk step, by the cuda check: the forward spilled at 96 (sm_80,
        # 4 warps); the backward spilled at 4 warps on sm_90 from 75 on (c16s2p2, 128 columns), so it
        # takes the most warps and the forward the fewest
        limit = 64 if kind == "fwd" else 128
        fits = [c for c in space if c["WINDOWS"] == 32 and c["BLOCK_D"] <= 128
                and _tile_bytes(kind, variant, c["BLOCK_D"]) // 4 // (32 * c["num_warps"]) <= limit]
        return max(fits, key=lambda c: (c["BLOCK_D"], c["num_warps"] * (1 if kind == "bwd" else -1)))
    return default


def _reduce_space(target: Target, variant: Variant) -> list:
    configs = []
    for br in (4, 8, 16, 32):
        for bc in (64, 128, 256, 512, 1024):
            if target.is_ascend:
                if 2 * br * bc * 4 * 2 <= target.ub_bytes:
                    configs.append({"BLOCK_R": br, "BLOCK_C": bc})
            elif br * bc // 128 <= 64:
                configs.append({"BLOCK_R": br, "BLOCK_C": bc, "num_warps": 4})
    return configs


def _reduce_default(target: Target, variant: Variant) -> dict:
    if target.backend == "cpu":
        return {"BLOCK_R": 32, "BLOCK_C": 1024}
    if target.is_ascend:  # the largest tile that fits the UB, widest along the contiguous dim
        return max(_reduce_space(target, variant), key=lambda c: (c["BLOCK_R"] * c["BLOCK_C"], c["BLOCK_C"]))
    return {"BLOCK_R": 8, "BLOCK_C": 256, "num_warps": 4}
