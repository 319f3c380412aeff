"""Cases: each kernel's op on small test inputs, with the reference's output, for the runners that execute a
kernel's compiled form off the device (``ascend-run``).

A case module ``cases_<op>.py`` beside this file exposes ``case(kernel_name, label) -> (call, expected)``:
``call()`` launches the kernel variant ``label`` of ``kernel_name`` through the public op and returns its
output (a tensor or a list of them); ``expected`` is the reference's tensor, or a list of (name, tensor, rule)
with rule "bytes" (byte for byte) or "close" (testing.TOLERANCES of the dtype). Case modules are imported when
a kernel of theirs is run.

A new op's case file plugs in with one line in CASES.
"""
from __future__ import annotations

import importlib
from typing import Callable, Optional

# kernel name, or a prefix ending in ".", -> the case module (one line per op)
CASES = {
    "int4_pack.": "cases_int4_pack",
    "dequant_rope_quant_kvcache.": "cases_rope_quant_kvcache",
    "nsa_compress.": "cases_nsa_compress",
    "quant_matmul.": "cases_quant_matmul",
    "dynamic_quant.": "cases_dynamic_quant",
    "quantize.": "cases_dynamic_quant",
    "add_rms_norm_quant.": "cases_add_rms_norm_quant",
}


def case_for(kernel_name: str) -> Optional[Callable]:
    """The ``case`` function of the kernel's case module (an exact name before the longest prefix), or None."""
    keys = [k for k in CASES if k == kernel_name or (k.endswith(".") and kernel_name.startswith(k))]
    if not keys:
        return None
    key = max(keys, key=lambda k: (k == kernel_name, len(k)))
    return importlib.import_module(f".{CASES[key]}", __package__).case


# a variant's Triton pointer types and the torch dtypes they hold
POINTER_TYPES = {"torch.int32": "*i32", "torch.uint8": "*u8", "torch.int8": "*i8", "torch.int16": "*i16",
                 "torch.int64": "*i64", "torch.float16": "*fp16", "torch.bfloat16": "*bf16", "torch.float32": "*fp32"}


def torch_dtype(pointer_type: str):
    """'*fp16' -> torch.float16: the element dtype of a variant's pointer type (the inverse of POINTER_TYPES)."""
    import torch
    return getattr(torch, next(t for t, p in POINTER_TYPES.items() if p == pointer_type).removeprefix("torch."))
