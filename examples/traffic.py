"""Bytes one decode step of one SmolLM2 decoder layer moves, per scheme (`python examples/smollm2.py traffic`).

One new token with ``context`` tokens already in the int8 KV cache, decoder layer 0 (every layer has the same
shapes). Three counts:
  kernels   bytes the Triton kernels load and store (atlas_kernels.testing.meter.TrafficMeter, interpreter):
            activation quant, the GEMMs, dequant_rope_quant_kvcache
  glue      bytes in and out of the torch ops around them (RMSNorm, attention over the dequantized int8
            cache, SiLU * up, residual adds), counted per aten op as reference_bytes does; the atlas ops
            themselves are left to the meter
  unfused   the whole layer with the ops' pure-torch fallback (reference_bytes: every aten op's inputs and
            outputs), i.e. what the same layer costs without the kernels
against the minimum: every weight byte once (as the kernels store it: int8 / packed int4 / compressed stream, with
its scales, plus the two RMSNorm weights), the KV cache read once (context + 1 tokens, K and V, int8, and their
scales), the new token's K and V written once, and the layer's input and output (bf16).
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import smollm2
from llama import Llama, rope_tables


class GlueBytes(TorchDispatchMode):
    """Bytes in and out of every non-view aten op, atlas ops excluded (their traffic is the meter's)."""

    def __init__(self):
        super().__init__()
        self.bytes = 0
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from atlas_kernels.testing.meter import tensor_bytes
        out = func(*args, **(kwargs or {}))
        returns = func._schema.returns
        is_view = bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
        if func.namespace != "atlas" and not is_view:
            self.ops += 1
            self.bytes += tensor_bytes(tree_flatten((args, kwargs))[0]) + tensor_bytes(tree_flatten(out)[0])
        return out


@contextlib.contextmanager
def torch_fallback():
    """The ops' pure-torch reference path (as without TRITON_INTERPRET) while inside."""
    from atlas_kernels import _backend
    saved = _backend.INTERPRETER
    _backend.INTERPRETER = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _backend.INTERPRETER = saved


def layer_traffic(scheme: str, context: int, cfg, weights, tok) -> dict:
    from atlas_kernels.testing.meter import TrafficMeter, reference_bytes, tensor_bytes
    model = Llama(cfg, weights)
    ids = tok.encode(smollm2.read_text("calib_text.txt"))
    scales, act_max = smollm2.calibrate(model, ids[:256], scheme)
    model = smollm2.quantize(model, scheme, act_max, skip=("lm_head",))
    cache = model.new_cache(1, context + 1, "int8", scales)
    prompt = tok.encode(smollm2.read_text("eval_text.txt"))[:context + 1]
    model(torch.tensor([prompt[:context]]), cache)  # fills the cache (not counted)
    layer = model.layers[0]
    x = model.embed(torch.tensor([prompt[context:context + 1]]))  # [1, 1, hidden] bf16
    cos, sin = rope_tables(torch.tensor([context]), model.head_dim, cfg["rope_theta"])
    cos, sin = cos[None], sin[None]
    step = (x, cos, sin, cache, 0)  # writes the token's K/V at cache.pos = context each time
    with TrafficMeter() as meter, GlueBytes() as glue:
        out = layer(*step)
    with torch_fallback():
        unfused, unfused_ops = reference_bytes(layer, *step)
    nkv, d = cfg["n_kv_heads"], model.head_dim
    weight_bytes = tensor_bytes(*layer.parameters(), *[b for b in layer.buffers() if b is not None])
    kv_bytes = 2 * (context + 1) * nkv * d + tensor_bytes(scales["k"][0], scales["v"][0]) + 2 * nkv * d
    minimum = weight_bytes + kv_bytes + tensor_bytes(x, out)
    kernels = meter.loaded + meter.stored
    return {"scheme": scheme, "kernels": kernels, "glue": glue.bytes,
            "glue_ops": glue.ops, "total": kernels + glue.bytes, "minimum": minimum, "weights": weight_bytes,
            "kv": kv_bytes, "unfused": unfused, "unfused_ops": unfused_ops}


def traffic_table(context: int, schemes) -> list:
    cfg, weights, tok = smollm2.load(1)
    rows = []
    for scheme in schemes:
        smollm2.log(f"traffic: {scheme}")
        rows.append(layer_traffic(scheme, context, cfg, weights, tok))
    kib = 1024
    print(f"\nOne decode step (1 token, {context} in the int8 KV cache) of decoder layer 0, bytes (KiB); "
          f"kernels in Triton's interpreter; lm_head not included")
    print("| scheme | kernels | torch glue | total | minimum (weights + KV + x) | total / min | "
          "unfused torch path | unfused / min |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['scheme']} | {r['kernels'] / kib:.1f} | {r['glue'] / kib:.1f} ({r['glue_ops']} ops) | "
              f"{r['total'] / kib:.1f} | {r['minimum'] / kib:.1f} ({r['weights'] / kib:.1f} + {r['kv'] / kib:.1f}"
              f" + x) | {r['total'] / r['minimum']:.2f}x | {r['unfused'] / kib:.1f} ({r['unfused_ops']} ops) | "
              f"{r['unfused'] / r['minimum']:.2f}x |")
    return rows
