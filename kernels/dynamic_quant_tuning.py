"""dynamic_quant's and quantize's tuning harnesses: shapes, store buckets, the modelled work of a config (the
tuner's cost model) and a launch of a variant on random inputs through the op.

dynamic_quant shapes {R, K}: R tokens (power-of-two bucket), K the hidden size (exact). quantize: {N} elements
(power-of-two bucket). A launch takes the config of its label (see _launch_dynamic / _launch_quantize).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

from .autotune import Target, Tuning, Variant, pow2_bucket
from .autotune.candidates import Work, tiled_work

_DQ_SHAPES = ({"R": 16, "K": 4096}, {"R": 1024, "K": 4096}, {"R": 256, "K": 7168})
_Q_SHAPES = ({"N": 16 * 4096}, {"N": 1024 * 4096})


def _dq_work(target: Target, variant: Variant, shape: dict, config: dict) -> Work:
    """(BLOCK_M rows, BLOCK_K columns) tiles; two passes read x twice unless the row fits one tile."""
    x_bytes = 2 * (1 if shape["K"] <= config["BLOCK_K"] else 2)
    y_bytes = 0.5 if variant.constexprs["INT4"] else 1
    return tiled_work(config, {"BLOCK_M": shape["R"]}, x_bytes + y_bytes, steps={"BLOCK_K": shape["K"]})


def _q_work(target: Target, variant: Variant, shape: dict, config: dict) -> Work:
    return tiled_work(config, {"BLOCK": shape["N"]}, 2 + (0.5 if variant.constexprs["INT4"] else 1))


def _tune_dq(dynamic_quant: Callable, dynamic_quant_asymmetric: Callable, shape: dict, variant: Variant, device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((shape["R"], shape["K"]), generator=gen).to(torch.float16).to(device)
    dst = torch.quint4x2 if variant.constexprs["INT4"] else torch.int8
    op = dynamic_quant_asymmetric if variant.constexprs["ASYM"] else dynamic_quant
    return lambda: op(x, dst_type=dst)


def _tune_q(quantize: Callable, shape: dict, variant: Variant, device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((shape["N"] // 4096, 4096), generator=gen).to(torch.float16).to(device)
    scales = (torch.rand(4096, generator=gen) + 0.5).to(torch.float16).to(device)
    dst = torch.quint4x2 if variant.constexprs["INT4"] else torch.qint8
    return lambda: quantize(x, scales, None, dst, -1, False)


def tunings(dynamic_quant: Callable, dynamic_quant_asymmetric: Callable, quantize: Callable) -> tuple:
    """(dynamic_quant.rowwise's Tuning, quantize.static's); their launches go through the ops given."""
    return (Tuning(("R", "K"), lambda s: (pow2_bucket(s["R"]), s["K"]),
                   functools.partial(_tune_dq, dynamic_quant, dynamic_quant_asymmetric), _DQ_SHAPES, work=_dq_work),
            Tuning(("N",), lambda s: (pow2_bucket(s["N"]),), functools.partial(_tune_q, quantize), _Q_SHAPES,
                   work=_q_work))
