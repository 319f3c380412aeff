"""int4_pack's config spaces and derived defaults per target: the Ascend UB model with the shipped Ascend tiles,
and the CUDA registers bound.
"""
from __future__ import annotations

from .autotune import Target, Variant, split_config

# Ascend: the UB model is bytes of UB that bishengir plans per tile element (a weight value for pack,
# an unpacked value for unpack, an element for the relayouts), with its multi-buffering on, fitted to
# its planned bytes on Ascend910B2. An overflow is a compile failure; a tile that only fits once
# bishengir turns multi-buffering off is left out. A last dim that is not known to be contiguous
# ("-strided" variants) costs a 32-byte UB block per element.


def _ub_bytes_per_elem(kind: str, variant: Variant) -> int:
    c = variant.constexprs
    if kind == "relayout":
        elem_bytes = 32 // c["N0"]
        return 128 if c.get("STRIDED") else 4 * elem_bytes  # 8bit 512x16: 32 KiB; 32bit 512x16: 128 KiB
    if kind == "pack":
        if c["STRIDED"]:
            return 128 if c["PER"] == 8 else 368  # int32 8x16 (1024 values): 128 KiB; uint8 16x16: 184 KiB
        return 24 if c["PER"] == 8 else 44  # int32 16x64: 128 KiB, 8x128: 188 KiB; uint8 16x64: 88 KiB
    return 14 if c["PER"] == 8 else 46  # unpack int32 16x64: 106 KiB; uint8 16x128: 180 KiB


# Shipped Ascend tiles (BLOCK_R, BLOCK_P), each checked to compile with multi-buffering on for
# Ascend910B2 and Ascend910_9391. NZ tiles keep BLOCK_P <= N0 where that costs nothing: one column group.
_ASCEND_DEFAULTS = {
    "pack": {"int32-nd": (16, 64), "int32-nz": (128, 8), "uint8-nd": (16, 128), "uint8-nz": (64, 32),
             "int32-nd-strided": (8, 16), "int32-nz-strided": (16, 8), "uint8-nd-strided": (16, 16),
             "uint8-nz-strided": (16, 16)},
    "unpack": {"int32-nd": (16, 64), "int32-nz": (64, 16), "uint8-nd": (16, 128), "uint8-nz": (64, 32)},
    "relayout": {"8bit": (128, 256), "16bit": (64, 256), "32bit": (64, 128),
                 "8bit-strided": (32, 32), "16bit-strided": (32, 32), "32bit-strided": (32, 32)},
}


def _space(kind: str):
    def space(target: Target, variant: Variant) -> list:
        per = variant.constexprs.get("PER", 1)
        configs = []
        if target.is_ascend:
            per_elem = _ub_bytes_per_elem(kind, variant)
            largest = 1 << (target.ub_bytes // per_elem).bit_length() - 1
            # the NZ permute of uint8 tiles wider than N0 costs more than the model: 16x64 needs 228 KiB
            max_bp = variant.constexprs["N0"] if kind == "pack" and per == 2 and variant.constexprs["NZ"] else 256
            for br in (8, 16, 32, 64, 128, 256, 512):
                for bp in (8, 16, 32, 64, 128, 256):
                    # the four largest power-of-two tile sizes that fit the model
                    if largest // 8 <= br * bp * per <= largest and bp <= max_bp:
                        configs.append({"BLOCK_R": br, "BLOCK_P": bp})
            return configs
        for br in (8, 16, 32, 64):
            for bp in (8, 16, 32, 64, 128, 256):
                elems = br * bp
                for warps in (2, 4, 8):
                    # at most 64 loaded values per thread keeps these copy kernels out of spills
                    if elems * per // (32 * warps) > 64 or elems // (32 * warps) < 1:
                        continue
                    configs.append({"BLOCK_R": br, "BLOCK_P": bp, "num_warps": warps})
        return configs
    return space


def _default(kind: str):
    def default(target: Target, variant: Variant) -> dict:
        if target.backend == "cpu":  # interpreter: large tiles mean fewer numpy round trips
            return {"BLOCK_R": 64, "BLOCK_P": 256}
        if target.is_ascend:
            br, bp = _ASCEND_DEFAULTS[kind][variant.label]
            return {"BLOCK_R": br, "BLOCK_P": bp}
        per = variant.constexprs.get("PER", 1)
        bp = 64 if per > 1 else 128
        if variant.constexprs.get("STRIDED") and per > 1:
            bp = 32  # strided int32 16x64 spills on sm_90 (per-element addresses)
        return {"BLOCK_R": 16 if per > 1 else 32, "BLOCK_P": bp, "num_warps": 4}
    return default


def _rename(config: dict, names: tuple) -> dict:
    """Relayout kernels call their tile BLOCK_M x BLOCK_N; configs are stored as BLOCK_R x BLOCK_P."""
    meta, opts = split_config(config)
    return {names[0]: meta["BLOCK_R"], names[1]: meta["BLOCK_P"], **opts}
