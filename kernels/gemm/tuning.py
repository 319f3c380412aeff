"""The GEMM kernels' tuning harness, less the launch: shapes, store buckets, which variant a shape tunes and the
modelled work of a config (the tuner's cost model). The op files add how to launch a variant (``make_call``).

Shapes {m, k, n}: m varies per call (power-of-two bucket), k and n are the weight's (exact). A launch of m <= 16
takes its operands' decode variant; the check-only epilogue variants share i8-nd's config and are not tuned.
"""
from __future__ import annotations

from typing import Callable

from ..autotune.registry import Tuning, pow2_bucket
from ..autotune.candidates import Work, tiled_work
from ..autotune.targets import Target
from .formats import AFormat, BFormat
from .variants import GemmVariant

SHAPES = ({"m": 16, "k": 4096, "n": 4096}, {"m": 16, "k": 4096, "n": 14336},
          {"m": 1024, "k": 4096, "n": 4096}, {"m": 1024, "k": 4096, "n": 14336})
A8W4_GROUP = 256  # the k-group the A8W4 variants are compiled and tuned for


def seeded_draws(seed: int = 0) -> tuple:
    """(ints(lo, hi, *size), scales(*size)): the harness's random int32 and scale tensors, drawn in call order from
    one seeded generator, so every launch of a shape gets the same inputs."""
    import torch
    gen = torch.Generator().manual_seed(seed)

    def ints(lo, hi, *size):
        return torch.randint(lo, hi, size, generator=gen, dtype=torch.int32)

    def scales(*size):
        return torch.rand(size, generator=gen) * 1e-3 + 1e-4
    return ints, scales


def _gemm_bucket(shape: dict) -> tuple:
    return (pow2_bucket(shape["m"]), shape["k"], shape["n"])


def _gemm_covers(variant: GemmVariant, shape: dict) -> bool:
    return variant.tuned and variant.decode == (shape["m"] <= 16)


def _gemm_work(target: Target, variant: GemmVariant, shape: dict, config: dict) -> Work:
    """The GEMM's modelled work: output tiles (x SPLIT_K), each reading its A rows and B columns over its k
    range once. A tile dim larger than the (power-of-two padded) problem only adds padded work, so it counts
    as clamped; pipeline stages past the k-steps add nothing."""
    m, k, n = shape["m"], shape["k"], shape["n"]
    split = max(1, min(config.get("SPLIT_K", 1), -(-k // config["BLOCK_K"])))  # parts past the k-steps are empty
    k_part = -(-k // split)
    bm = min(config["BLOCK_M"], max(16, pow2_bucket(m)))
    bn = min(config["BLOCK_N"], max(32, pow2_bucket(n)))
    bk = min(config["BLOCK_K"], max(32, pow2_bucket(k_part)))
    steps = -(-k_part // bk)
    tiles = -(-m // bm) * -(-n // bn) * split
    a_bytes = 0.5 if variant.a_format == AFormat.INT4 else 1.0
    b_bytes = 0.5 if variant.b_format in (BFormat.INT4_N, BFormat.INT4_K) else 1.0
    out_bytes = 4.0 if split > 1 else 2.0  # split-k partial sums are int32
    rows, cols = min(bm, m), min(bn, n)
    effective = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": min(config.get("GROUP_M", 1), -(-m // bm)),
                 **({"SPLIT_K": split} if "SPLIT_K" in config else {})}
    depth = 2.0  # Ascend: L1/L0 ping-pong
    if "num_stages" in config:  # CUDA: loads in flight per warp, and the warps that have a 16x8 mma tile to issue
        effective["num_stages"] = min(config["num_stages"], steps + 1)
        busy_warps = min(config.get("num_warps", 4), bm * bn // 128)
        depth = max(1, effective["num_stages"] - 1) * busy_warps / 4
    return Work(tiles=tiles, bytes_per_tile=rows * k_part * a_bytes + k_part * cols * b_bytes + rows * cols * out_bytes,
                ops_per_tile=2.0 * bm * bn * bk * steps, steps_per_tile=steps, depth=depth, effective=effective,
                unique_bytes=m * k * a_bytes + k * n * b_bytes + m * n * out_bytes)


def tuning(make_call: Callable) -> Tuning:
    """The GEMM's Tuning with ``make_call(shape, variant, device)`` (registry.Tuning) launching the variant's
    operands through its op."""
    return Tuning(("m", "k", "n"), _gemm_bucket, make_call, SHAPES, work=_gemm_work, covers=_gemm_covers)


# the reduction runs after split launches only: decode shapes whose tiles are fewer than the cores
REDUCE_SHAPES = ({"m": 1, "k": 4096, "n": 1024}, {"m": 16, "k": 4096, "n": 4096})


def _reduce_covers(variant: GemmVariant, shape: dict) -> bool:
    return variant.launched and shape["m"] <= 16


def _reduce_work(target: Target, variant: GemmVariant, shape: dict, config: dict) -> Work:
    """The reduction's modelled work: (BLOCK_M, BLOCK_N) tiles of the output, each reading its int32 slots (a split
    of 4, or A8W4's k-groups) and writing the output."""
    slots = shape["k"] // A8W4_GROUP if variant.grouped else 4
    return tiled_work(config, {"BLOCK_M": shape["m"], "BLOCK_N": shape["n"]}, 4 * slots + 2)


def reduce_tuning(make_call: Callable) -> Tuning:
    """The split-K reduction's Tuning: ``make_call`` as the GEMM's (it reads the variant's operands), on shapes
    that split."""
    return Tuning(("m", "k", "n"), _gemm_bucket, make_call, REDUCE_SHAPES, work=_reduce_work, covers=_reduce_covers)
