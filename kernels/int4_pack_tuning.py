"""int4_pack's tuning harnesses (pack, unpack and the two relayouts): shapes, store buckets, the modelled work of a
config (the tuner's cost model) and a launch of a variant on random inputs through the op.

Weights are model constants: the row count is bucketed to a power of two, the packed width is exact.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

from .autotune import Target, Tuning, Variant, pow2_bucket
from .autotune.candidates import tiled_work


def _weight_bucket(shape: dict) -> tuple:
    return (pow2_bucket(shape["R"]), shape["C"])


def _relayout_bucket(shape: dict) -> tuple:
    return (shape["B"], pow2_bucket(shape["M"]), shape["N"])


_WEIGHT_SHAPES = ({"R": 4096, "C": 4096}, {"R": 4096, "C": 14336}, {"R": 14336, "C": 4096})
_RELAYOUT_SHAPES = ({"B": 1, "M": 4096, "N": 4096}, {"B": 1, "M": 4096, "N": 14336})


def _packed_args(variant: Variant) -> tuple:
    """(out_dtype, layout) of a pack/unpack variant."""
    dtype = torch.int32 if variant.constexprs["PER"] == 8 else torch.uint8
    return dtype, ("nz" if variant.constexprs["NZ"] else "nd")


def _tune_pack(convert_weight_to_int4pack: Callable, shape: dict, variant: Variant, device):
    w = torch.randint(-8, 8, (shape["R"], shape["C"]), dtype=torch.int32, device=device)
    out_dtype, layout = _packed_args(variant)
    return lambda: convert_weight_to_int4pack(w, out_dtype=out_dtype, layout=layout)


def _tune_unpack(convert_weight_to_int4pack: Callable, unpack_int4: Callable, shape: dict, variant: Variant, device):
    out_dtype, layout = _packed_args(variant)
    w = torch.randint(-8, 8, (shape["R"], shape["C"]), dtype=torch.int32, device=device)
    packed = convert_weight_to_int4pack(w, out_dtype=out_dtype, layout=layout)
    return lambda: unpack_int4(packed, layout=layout, shape=(shape["R"], shape["C"]))


def _relayout_input(shape: dict, variant: Variant, device) -> torch.Tensor:
    dtype = {8: torch.int8, 16: torch.float16, 32: torch.int32}[256 // variant.constexprs["N0"]]
    return torch.randint(-128, 128, (shape["B"], shape["M"], shape["N"]), device=device).to(dtype)


def _tune_nd_to_nz(nd_to_nz: Callable, shape: dict, variant: Variant, device):
    x = _relayout_input(shape, variant, device)
    return lambda: nd_to_nz(x)


def _tune_nz_to_nd(nd_to_nz: Callable, nz_to_nd: Callable, shape: dict, variant: Variant, device):
    nz = nd_to_nz(_relayout_input(shape, variant, device))
    return lambda: nz_to_nd(nz, (shape["M"], shape["N"]))


def _pack_work(target: Target, variant: Variant, shape: dict, config: dict):
    """Modelled work of pack/unpack: (BLOCK_R, BLOCK_P) tiles of packed words, each PER int32 values and a word."""
    per = variant.constexprs["PER"]
    return tiled_work(config, {"BLOCK_R": shape["R"], "BLOCK_P": shape["C"] // per}, 4 * per + (4 if per == 8 else 1))


def _relayout_work(target: Target, variant: Variant, shape: dict, config: dict):
    """Modelled work of the relayouts: (BLOCK_M, BLOCK_N) tiles of each batch matrix, read once and written once."""
    elem = 32 // variant.constexprs["N0"]
    return tiled_work(config, {"BLOCK_M": shape["M"], "BLOCK_N": shape["N"]}, 2 * elem, outer=shape["B"])


def tunings(convert_weight_to_int4pack: Callable, unpack_int4: Callable, nd_to_nz: Callable,
            nz_to_nd: Callable) -> tuple:
    """The Tunings of int4_pack.pack, .unpack, .nd_to_nz and .nz_to_nd; their launches go through the ops given."""
    partial = functools.partial
    return (Tuning(("R", "C"), _weight_bucket, partial(_tune_pack, convert_weight_to_int4pack), _WEIGHT_SHAPES,
                   _pack_work),
            Tuning(("R", "C"), _weight_bucket, partial(_tune_unpack, convert_weight_to_int4pack, unpack_int4),
                   _WEIGHT_SHAPES, _pack_work),
            Tuning(("B", "M", "N"), _relayout_bucket, partial(_tune_nd_to_nz, nd_to_nz), _RELAYOUT_SHAPES,
                   _relayout_work),
            Tuning(("B", "M", "N"), _relayout_bucket, partial(_tune_nz_to_nd, nd_to_nz, nz_to_nd), _RELAYOUT_SHAPES,
                   _relayout_work))
