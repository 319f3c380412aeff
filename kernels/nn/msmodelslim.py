"""load_msmodelslim: build a model's quantized Linear layers from msModelSlim's ascendV1 export.

The export (msmodelslim core/quant_service/modelslim_v1/save/ascendv1.py; the older llm_ptq saver writes the
same names) is a directory with ``quant_model_description.json`` ({tensor name: quant type}, plus "version",
"model_quant_type", "group_size", ...) and ``*.safetensors`` files. A Linear ``<prefix>`` is described by the
type of ``<prefix>.weight``; its fields, read as vllm-ascend's linear methods read them:

| type         | fields (shapes for a Linear in -> out)                                                         |
|--------------|------------------------------------------------------------------------------------------------|
| W8A8         | weight int8 (out, in); input_scale, input_offset (1,); quant_bias int32 (out,);                |
|              | deq_scale (out,) float32 (bf16 models) or int64 (fp16 models: fp32 bits sign-extended)         |
| W8A8_DYNAMIC | weight int8 (out, in); weight_scale (out, 1); weight_offset (out, 1) (zeros); bias (FLOAT)      |
| W4A8_DYNAMIC | weight int8 (out/2, in) (version 1.0.0: two int4 per byte along out, low nibble = even row) or  |
|              | (out, in) (older: one int4 value per byte); weight_scale (out, 1); per group also              |
|              | weight_scale_second (out, in/g) (scale = weight_scale * weight_scale_second); weight_offset     |
|              | (_second) (zeros); scale_bias (out, 1) or (out, 16) (8 * sum_k w * scale, split in 16 for row-  |
|              | parallel layers: summed here; computed when absent); bias (FLOAT)                              |
| W8A8SC       | weight int8 (c,) compressed; index int8; info int64 [8, 8, in, out, 1]; quant_bias, deq_scale,  |
|              | input_scale, input_offset as W8A8                                                              |
| FLOAT        | the model's own tensors (weight, bias, norms, embeddings): copied into the model                 |

A static layer's float ``bias`` is folded into quant_bias by the exporter
(quant_bias = rint(bias / deq_scale - input_offset * sum_k w)) and is not read again.
"""
from __future__ import annotations

import glob
import json
import os
import warnings

import torch
from torch import nn

from .linear import W4A8DynamicLinear, W8A8DynamicLinear, W8A8Linear, W8A8SCLinear
from .quantize import _replace

DESCRIPTION = "quant_model_description.json"
QUANT_TYPES = ("W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC", "W8A8SC")
_FLOAT = (torch.float32, torch.float16, torch.bfloat16)
OP = "load_msmodelslim"


class _Checkpoint:
    """The description and a name -> file map over the safetensors files; tensors are read on demand."""

    def __init__(self, directory):
        try:
            from safetensors import safe_open
        except ImportError:
            raise ImportError(f"{OP} reads safetensors files: pip install safetensors "
                              f"(or 'atlas-kernels[models]')") from None
        self._open = safe_open
        self.directory = os.fspath(directory)
        path = os.path.join(self.directory, DESCRIPTION)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{OP}: {path} not found (msModelSlim writes the quant description there)")
        with open(path) as f:
            self.description = json.load(f)
        if not isinstance(self.description, dict):
            raise ValueError(f"{OP}: {path} must hold a JSON object {{tensor name: quant type}}")
        self.files = sorted(glob.glob(os.path.join(self.directory, "*.safetensors")))
        if not self.files:
            raise FileNotFoundError(f"{OP}: no *.safetensors file in {self.directory}")
        self.where: dict = {}
        for file in self.files:
            with safe_open(file, framework="pt") as f:
                for key in f.keys():
                    self.where.setdefault(key, file)

    def type_of(self, name: str):
        t = self.description.get(name)
        return t if isinstance(t, str) else None

    def has(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str, layer: str, dtypes=None, shapes=None) -> torch.Tensor:
        """The tensor ``name``; errors name it, its file and what was expected. shapes: allowed shapes."""
        if name not in self.where:
            raise ValueError(f"{OP}: tensor {name!r} (needed by layer {layer!r}) is not in any safetensors file of "
                             f"{self.directory}: {', '.join(os.path.basename(f) for f in self.files)}")
        file = self.where[name]
        with self._open(file, framework="pt") as f:
            t = f.get_tensor(name)
        where = f"{OP}: tensor {name!r} in {os.path.basename(file)}"
        if dtypes is not None and t.dtype not in dtypes:
            raise TypeError(f"{where} must have dtype {', '.join(str(d) for d in dtypes)}, got {t.dtype}")
        if shapes is not None and tuple(t.shape) not in [tuple(s) for s in shapes]:
            raise ValueError(f"{where} must have shape {' or '.join(str(tuple(s)) for s in shapes)}, "
                             f"got {tuple(t.shape)}")
        return t

    def zeros(self, name: str, layer: str, shapes):
        """An optional offset field that must be all zero (symmetric weights)."""
        if self.has(name):
            t = self.get(name, layer, _FLOAT, shapes)
            if bool(t.ne(0).any()):
                raise ValueError(f"{OP}: tensor {name!r} in {os.path.basename(self.where[name])} is nonzero: "
                                 f"asymmetric weights are not supported (msModelSlim exports symmetric ones)")


def _bias(ck: _Checkpoint, p: str, lin: nn.Linear, n: int):
    if ck.has(p + ".bias"):
        return ck.get(p + ".bias", p, _FLOAT, [(n,)])
    if lin.bias is not None:
        ck.get(p + ".bias", p)  # raises: the model's layer has a bias the checkpoint lacks
    return None


def _static_fields(ck: _Checkpoint, p: str, n: int) -> dict:
    return {"deq_scale": ck.get(p + ".deq_scale", p, (torch.float32, torch.int64), [(n,), (1, n), (n, 1)]),
            "quant_bias": ck.get(p + ".quant_bias", p, (torch.int32,), [(n,), (1, n), (n, 1)]),
            "input_scale": ck.get(p + ".input_scale", p, _FLOAT, [(1,), ()]),
            "input_offset": ck.get(p + ".input_offset", p, _FLOAT + (torch.int8, torch.int32), [(1,), ()])}


def _unpack_rows(packed: torch.Tensor) -> torch.Tensor:
    """int8 (out/2, in) with rows 2j (low nibble) and 2j + 1 (high nibble) of an int4 (out, in) -> int8 (out, in)."""
    b = packed.to(torch.int32)
    low = ((b & 0xF) ^ 8) - 8
    high = b >> 4  # arithmetic shift of the signed byte: the sign-extended high nibble
    return torch.stack([low, high], dim=1).reshape(2 * packed.shape[0], packed.shape[1]).to(torch.int8)


def _w4a8(ck: _Checkpoint, p: str, lin: nn.Linear, n: int, k: int) -> W4A8DynamicLinear:
    weight = ck.get(p + ".weight", p, (torch.int8,), [(n // 2, k), (n, k)])
    if weight.shape[0] != n:  # version 1.0.0: two int4 per byte along out
        weight = _unpack_rows(weight)
    scale = ck.get(p + ".weight_scale", p, _FLOAT, [(n, 1), (n,)]).float().reshape(n, 1)
    ck.zeros(p + ".weight_offset", p, [(n, 1), (n,)])
    group_size = None
    if ck.has(p + ".weight_scale_second"):
        second = ck.get(p + ".weight_scale_second", p, _FLOAT)
        if second.dim() != 2 or second.shape[0] != n or second.shape[1] == 0 or k % second.shape[1]:
            raise ValueError(f"{OP}: tensor {p + '.weight_scale_second'!r} must have shape ({n}, in/g) with g "
                             f"dividing in = {k}, got {tuple(second.shape)}")
        ck.zeros(p + ".weight_offset_second", p, [tuple(second.shape)])
        group_size = k // second.shape[1]
        scale = scale * second.float()
    scale_bias = None
    if ck.has(p + ".scale_bias"):
        sb = ck.get(p + ".scale_bias", p, _FLOAT)
        if sb.dim() not in (1, 2) or sb.shape[0] != n or sb.numel() % n:
            raise ValueError(f"{OP}: tensor {p + '.scale_bias'!r} must have shape ({n},), ({n}, 1) or ({n}, 16) "
                             f"(row-parallel parts, summed), got {tuple(sb.shape)}")
        scale_bias = sb.float().reshape(n, -1).sum(dim=1)
    try:
        return W4A8DynamicLinear(weight, scale, group_size, _bias(ck, p, lin, n), scale_bias)
    except ValueError as e:
        raise ValueError(f"{OP}: layer {p!r} (W4A8_DYNAMIC): {e}") from None


def _build(ck: _Checkpoint, p: str, kind: str, lin: nn.Linear) -> nn.Module:
    n, k = lin.out_features, lin.in_features
    if kind == "W8A8_DYNAMIC":
        weight = ck.get(p + ".weight", p, (torch.int8,), [(n, k)])
        scale = ck.get(p + ".weight_scale", p, _FLOAT, [(n, 1), (n,)])
        ck.zeros(p + ".weight_offset", p, [(n, 1), (n,)])
        return W8A8DynamicLinear(weight, scale, _bias(ck, p, lin, n))
    if kind == "W8A8":
        weight = ck.get(p + ".weight", p, (torch.int8,), [(n, k)])
        return W8A8Linear(weight, **_static_fields(ck, p, n))
    if kind == "W8A8SC":
        weight = ck.get(p + ".weight", p, (torch.int8,))
        index = ck.get(p + ".index", p, (torch.int8,))
        info = ck.get(p + ".info", p, (torch.int64, torch.int32), [(5,)])
        if info.tolist() != [8, 8, k, n, 1]:
            raise ValueError(f"{OP}: tensor {p + '.info'!r} must be [8, 8, in, out, 1] = [8, 8, {k}, {n}, 1] for "
                             f"layer {p!r}, got {info.tolist()}")
        if weight.dim() != 1 or index.dim() != 1:
            raise ValueError(f"{OP}: tensors {p + '.weight'!r} and {p + '.index'!r} of a W8A8SC layer must be 1-D "
                             f"(the compressed stream), got {tuple(weight.shape)} and {tuple(index.shape)}")
        return W8A8SCLinear(weight, index, info, **_static_fields(ck, p, n))
    return _w4a8(ck, p, lin, n, k)


def _copy(ck: _Checkpoint, name: str, target: torch.Tensor):
    t = ck.get(name, name, shapes=[tuple(target.shape)])
    with torch.no_grad():
        target.copy_(t)


def load_msmodelslim(model: nn.Module, directory) -> nn.Module:
    """Load msModelSlim's export in ``directory`` into ``model`` (in place); returns the model.

    Each nn.Linear whose ``<name>.weight`` is described W8A8, W8A8_DYNAMIC, W4A8_DYNAMIC or W8A8SC is replaced
    by W8A8Linear, W8A8DynamicLinear, W4A8DynamicLinear or W8A8SCLinear built from its fields, on the Linear's
    device; FLOAT tensors are copied into the model's parameters and buffers of the same name. Unknown quant
    types raise ValueError naming the layer; a missing tensor raises naming it and the files searched; Linears
    the description does not mention, and FLOAT tensors the model does not have, are left alone (one warning).
    """
    ck = _Checkpoint(directory)
    undescribed, consumed = [], set()
    for name, lin in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
        kind = ck.type_of(f"{name}.weight")
        if kind is None:
            undescribed.append(name)
            continue
        if kind == "FLOAT":
            continue  # loaded with the other FLOAT tensors below
        if kind not in QUANT_TYPES:
            raise ValueError(f"{OP}: layer {name!r} has quant type {kind!r}; supported: FLOAT, "
                             f"{', '.join(QUANT_TYPES)}")
        new = _build(ck, name, kind, lin).to(lin.weight.device)
        model = _replace(model, name, new)
        consumed.update(key for key in ck.where if key.startswith(name + "."))
    state = dict(model.named_parameters())
    state.update(model.named_buffers())
    missing, unused = [], []
    for key in ck.where:
        if key in consumed:
            continue
        if ck.type_of(key) != "FLOAT":
            unused.append(key)  # e.g. quantized MoE experts or KV-cache scales: no nn.Linear of that name
        elif key in state:
            _copy(ck, key, state[key])
        else:
            missing.append(key)
    if undescribed or missing or unused:
        warnings.warn(f"{OP}: left alone: {_few(undescribed)} nn.Linear not in {DESCRIPTION}; {_few(missing)} "
                      f"FLOAT tensors with no parameter or buffer of that name in the model; {_few(unused)} "
                      f"quantized tensors with no nn.Linear to load them into", RuntimeWarning, stacklevel=2)
    return model


def _few(names: list) -> str:
    return f"{len(names)} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})" if names else "0"
