"""Quantized Linear modules: each replaces the two torch_npu calls Ascend model code makes per quantized Linear.

module             activation quant (each call)                      GEMM (each call)
W8A8DynamicLinear  q, s = npu_dynamic_quant(x)                       npu_quant_matmul(q, w, weight_scale,
                                                                         pertoken_scale=s, bias=..)
W8A8Linear         q = npu_quantize(x, 1/input_scale, input_offset,  npu_quant_matmul(q, w, deq_scale,
                       torch.qint8, -1, False)  (static, per tensor)     bias=quant_bias)
W4A8DynamicLinear  q, s = npu_dynamic_quant(x)                       quant_matmul A8W4 (group_sizes=[0, 0, g])
W8A8SCLinear       q = npu_quantize(...) as W8A8Linear               npu_matmul_compress_dequant(q, w, index, ..)

Weights are held as buffers in the form the kernel reads, packed once at construction (so ``.to(device)`` and
``state_dict`` carry them): int8 (in, out) for the W8A8 GEMMs (vllm-ascend's transposed ND weight), int4 packed
int32 (in, out/8) with int64 per-group quant params for A8W4, msModelSlim's compressed stream for W8A8SC.
Inputs are (..., in_features) float16 or bfloat16; the output has the input's dtype. float32 input raises a
TypeError: the activation quant ops and the GEMM's outputs are fp16/bf16 on Ascend, so cast the model first.
Weight quantization (``from_float``): symmetric, per output channel (or per (channel, k-group) for W4A8),
scale = max|w| / qmax, q = clamp(rint(w / scale), qmin, qmax) with rint = round half to even.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

__all__ = ["W8A8DynamicLinear", "W8A8Linear", "W4A8DynamicLinear", "W8A8SCLinear", "quantize_weight"]

A8W4_K_STEP = 64  # quant_matmul's A8W4 k-group is a multiple of this (its K step)


def _ak():
    """atlas_kernels, imported at call time (this package is imported by atlas_kernels' own __init__ users)."""
    import atlas_kernels
    return atlas_kernels


def quantize_weight(weight: torch.Tensor, bits: int, group_size: Optional[int] = None, scale=None) -> tuple:
    """Symmetric quantization of a float weight (out, in).

    Returns (q int8 (out, in), scale float32 (out,) or (out, in/group_size)): scale = max|w| / (2**(bits-1) - 1)
    over the channel (or the channel's k-group), 1 where that is 0; q = clamp(rint(w / scale), -2**(bits-1),
    2**(bits-1) - 1), rint = round half to even. ``scale`` (same shape) overrides the computed one.
    """
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().to(torch.float32)
    n, k = w.shape
    g = group_size or k
    w = w.reshape(n, k // g, g)
    if scale is None:
        amax = w.abs().amax(dim=-1)
        scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    else:
        scale = scale.to(torch.float32).reshape(n, k // g)
    q = torch.clamp(torch.round(w / scale[..., None]), -qmax - 1, qmax).to(torch.int8).reshape(n, k)
    return q, (scale.reshape(n) if group_size is None else scale)


def _vector(name: str, t, n: int, dtypes: tuple, owner: str) -> torch.Tensor:
    """A per-output-channel field as a contiguous (n,) tensor; accepts (n,), (n, 1) or (1, n)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{owner}: {name} must have dtype {', '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if t.numel() != n or t.dim() > 2:
        raise ValueError(f"{owner}: {name} must have shape ({n},) (or ({n}, 1) / (1, {n})), got {tuple(t.shape)}")
    return t.detach().reshape(n).contiguous()


def _scalar(name: str, t, owner: str) -> torch.Tensor:
    """A per-tensor activation field (input_scale, input_offset) as float32 (1,)."""
    if not isinstance(t, torch.Tensor):
        t = torch.tensor([float(t)])
    if t.numel() != 1:
        raise ValueError(f"{owner}: {name} must be one value per tensor (shape (1,)), got {tuple(t.shape)}")
    return t.detach().reshape(1).to(torch.float32)


def _check_int8_weight(weight, owner: str) -> tuple:
    if not isinstance(weight, torch.Tensor) or weight.dtype != torch.int8 or weight.dim() != 2:
        got = f"{weight.dtype} {tuple(weight.shape)}" if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise TypeError(f"{owner}: weight must be an int8 (out_features, in_features) tensor, got {got}")
    return weight.shape


class _QuantLinear(nn.Module):
    """Shape/dtype checks and the (..., in) -> (rows, in) -> (..., out) reshapes shared by the modules."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name}: input must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in (torch.float16, torch.bfloat16):
            raise TypeError(f"{name}: input must be float16 or bfloat16 (the dtypes the activation quant takes and "
                            f"the GEMM writes), got {x.dtype}; cast the model, e.g. model.to(torch.bfloat16)")
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"{name}: input must have shape (..., {self.in_features}), got {tuple(x.shape)}")
        return x.reshape(-1, self.in_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


# ---------------------------------------------------------------- W8A8 dynamic
class W8A8DynamicLinear(_QuantLinear):
    """W8A8_DYNAMIC: per-token dynamic int8 activations, per-channel int8 weights.

    forward(x) = npu_quant_matmul(q, weight, weight_scale, pertoken_scale=s, bias=bias, output_dtype=x.dtype)
    with (q, s) = npu_dynamic_quant(x): acc * weight_scale * s + bias, acc the exact int32 x.W.
    Buffers: weight int8 (in, out) (the checkpoint's (out, in) transposed once), weight_scale float32 (out,),
    bias float32 (out,) or None (added after the scales, as vllm-ascend passes it).
    """

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, bias: Optional[torch.Tensor] = None):
        name = type(self).__name__
        n, k = _check_int8_weight(weight, name)
        super().__init__(k, n)
        self.register_buffer("weight", weight.detach().t().contiguous())
        self.register_buffer("weight_scale", _vector("weight_scale", weight_scale, n, _FLOATS, name)
                             .to(weight.device, torch.float32))
        self.register_buffer("bias", None if bias is None else _vector("bias", bias, n, _FLOATS, name)
                             .to(weight.device, torch.float32))

    @classmethod
    def from_float(cls, linear: nn.Linear) -> "W8A8DynamicLinear":
        q, scale = quantize_weight(linear.weight, 8)
        return cls(q, scale, linear.bias).to(linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ak = _ak()
        q, s = ak.npu_dynamic_quant(self._rows(x))
        out = ak.npu_quant_matmul(q, self.weight, self.weight_scale, pertoken_scale=s, bias=self.bias,
                                  output_dtype=x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def forward_int32(self, x: torch.Tensor) -> tuple:
        """(acc int32 (..., out), pertoken_scale float32 (...,)): the GEMM's int32 accumulator x_q . W and the
        per-token activation scale, for a consumer that fuses the dequant (acc * weight_scale * pertoken_scale
        [+ bias]); the bias is not in acc."""
        ak = _ak()
        q, s = ak.npu_dynamic_quant(self._rows(x))
        acc = ak.npu_quant_matmul(q, self.weight, self.weight_scale, output_dtype=torch.int32)
        return acc.reshape(*x.shape[:-1], self.out_features), s.reshape(x.shape[:-1])


_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------- W8A8 static
def _static_fields(linear: nn.Linear, q: torch.Tensor, weight_scale: torch.Tensor, input_scale, input_offset,
                   act_max, owner: str) -> tuple:
    """(input_scale, input_offset, deq_scale fp32, quant_bias int32) as msModelSlim exports them:
    deq_scale = input_scale * weight_scale, quant_bias = rint(bias / deq_scale - input_offset * sum_k q)."""
    if input_scale is None:
        if act_max is None:
            raise ValueError(f"{owner}.from_float: give input_scale (and input_offset), or act_max (the calibrated "
                             f"max |x| of this layer's input; then input_scale = act_max / 127, input_offset = 0)")
        input_scale = torch.as_tensor(act_max, dtype=torch.float32).reshape(1) / 127
        input_offset = 0.0
    input_scale = _scalar("input_scale", input_scale, owner).to(q.device)
    input_offset = _scalar("input_offset", input_offset, owner).to(q.device)
    if not bool(input_scale > 0):
        raise ValueError(f"{owner}.from_float: input_scale must be > 0, got {input_scale.item()}")
    deq_scale = input_scale * weight_scale
    bias = linear.bias.detach().float() if linear.bias is not None else torch.zeros(q.shape[0], device=q.device)
    correction = q.float().sum(dim=1) * input_offset
    quant_bias = torch.round(bias / deq_scale - correction).to(torch.int32)
    return input_scale, input_offset, deq_scale, quant_bias


class W8A8Linear(_QuantLinear):
    """W8A8 (static): per-tensor int8 activations with a calibrated scale/offset, per-channel int8 weights.

    forward(x) = npu_quant_matmul(npu_quantize(x, 1/input_scale, input_offset, torch.qint8, -1, False), weight,
    deq_scale, bias=quant_bias, output_dtype=x.dtype) = (acc + quant_bias) * deq_scale.
    Buffers: weight int8 (in, out), deq_scale (out,) float32 (bf16 checkpoints; full precision) or int64
    (fp16 checkpoints: the fp32 bits sign-extended; the kernel keeps its top 19 bits, as for an fp32 scale with
    fp16 output), quant_bias int32 (out,), input_scale / input_offset float32 (1,).
    An int64 deq_scale takes float16 input only (torch_npu's rows: int64 scale -> fp16 or int8 output).
    """

    def __init__(self, weight: torch.Tensor, deq_scale: torch.Tensor, quant_bias: torch.Tensor, input_scale,
                 input_offset):
        name = type(self).__name__
        n, k = _check_int8_weight(weight, name)
        super().__init__(k, n)
        self.register_buffer("weight", weight.detach().t().contiguous())
        _register_static(self, n, deq_scale, quant_bias, input_scale, input_offset)

    @classmethod
    def from_float(cls, linear: nn.Linear, *, input_scale=None, input_offset=0.0, act_max=None) -> "W8A8Linear":
        """Quantize ``linear``; the activation scale is ``input_scale`` (with ``input_offset``), or act_max / 127
        (symmetric, offset 0) from a calibrated ``act_max`` (see atlas_kernels.nn.calibrate)."""
        q, scale = quantize_weight(linear.weight, 8)
        input_scale, input_offset, deq, qbias = _static_fields(linear, q, scale, input_scale, input_offset,
                                                               act_max, cls.__name__)
        return cls(q, deq, qbias, input_scale, input_offset).to(linear.weight.device)

    def _quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        return _ak().npu_quantize(self._rows(x), torch.reciprocal(self.input_scale), self.input_offset,
                                  torch.qint8, -1, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deq_scale.dtype == torch.int64 and x.dtype != torch.float16:
            raise TypeError(f"{type(self).__name__}: this layer's deq_scale is int64 (an fp16 checkpoint's form), "
                            f"which takes float16 input only (torch_npu's rows), got {x.dtype}")
        out = _ak().npu_quant_matmul(self._quantize_input(x), self.weight, self.deq_scale, bias=self.quant_bias,
                                     output_dtype=x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def _register_static(module: nn.Module, n: int, deq_scale, quant_bias, input_scale, input_offset):
    """The static fields as buffers on the weight's device."""
    name, device = type(module).__name__, module.weight.device
    module.register_buffer("deq_scale", _vector("deq_scale", deq_scale, n, (torch.float32, torch.int64), name)
                           .to(device))
    module.register_buffer("quant_bias", _vector("quant_bias", quant_bias, n, (torch.int32,), name).to(device))
    module.register_buffer("input_scale", _scalar("input_scale", input_scale, name).to(device))
    module.register_buffer("input_offset", _scalar("input_offset", input_offset, name).to(device))


# ---------------------------------------------------------------- W4A8 dynamic
def a8w4_scale_param(scale: torch.Tensor) -> torch.Tensor:
    """float32 per-group scales (out, groups) -> quant_matmul's A8W4 int64 (groups, out): trans_quant_param with
    the mantissa rounded to 10 bits (round_mode=1; the same value as vllm-ascend's round trip through float16
    for scales in float16's normal range)."""
    return _ak().trans_quant_param(scale.to(torch.float32).t().contiguous(), round_mode=1)


def a8w4_offset(q: torch.Tensor, scale_param: torch.Tensor, group_size: int) -> torch.Tensor:
    """float32 (out,) = 8 * sum_k q[n, k] * s[k // g, n], s the decoded (19-bit) group scales: the term that undoes
    the -8 of quant_matmul's A8W4 ((x - 8) . w per group) when passed as its offset (msModelSlim's scale_bias)."""
    s, _ = _ak().decode_quant_param(scale_param.cpu())
    n, k = q.shape
    colsum = q.cpu().to(torch.float64).reshape(n, k // group_size, group_size).sum(-1)  # exact
    return (8 * (colsum * s.t().to(torch.float64)).sum(-1)).to(torch.float32)


class W4A8DynamicLinear(_QuantLinear):
    """W4A8_DYNAMIC: per-token dynamic int8 activations, int4 weights with a float scale per (channel, k-group).

    forward(x) = quant_matmul(q, weight, weight_scale, offset=scale_bias, pertoken_scale=s, output_dtype=x.dtype,
    group_sizes=[0, 0, g]) (+ bias), (q, s) = npu_dynamic_quant(x): quant_matmul's A8W4 path,
    (sum_j ((q - 8) . w_j) * scale_j + scale_bias) * s, where scale_bias = 8 * sum_k w * scale undoes the -8.
    Per-channel (group_size None): A8W4 with g = in_features (A2/A3 have no int8 x int4 per-channel row: the
    int4 rows of npu_quant_matmul take int4 activations), so in_features must be a multiple of 64.
    Buffers: weight int32 (in, out/8) (convert_weight_to_int4pack of the transposed int4 weight), weight_scale
    int64 (in/g, out) (trans_quant_param, round_mode=1), scale_bias float32 (out,), bias float32 (out,) or None:
    A8W4 takes no bias in the GEMM (it would be scaled by the per-token scale), so it is added to the output.
    """

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, group_size: Optional[int] = None,
                 bias: Optional[torch.Tensor] = None, scale_bias: Optional[torch.Tensor] = None):
        """weight: int8 (out, in), values in [-8, 7]; weight_scale: float32 (out, in/g), or (out,) / (out, 1) per
        channel; scale_bias: float32 (out,), computed (a8w4_offset) when None."""
        name = type(self).__name__
        n, k = _check_int8_weight(weight, name)
        super().__init__(k, n)
        g = check_w4a8_shape(name, k, n, group_size)
        self.group_size = g
        if not isinstance(weight_scale, torch.Tensor) or weight_scale.dtype not in _FLOATS:
            raise TypeError(f"{name}: weight_scale must be a float tensor, got {weight_scale!r}"[:200])
        if weight_scale.numel() != n * (k // g):
            raise ValueError(f"{name}: weight_scale must have shape ({n}, {k // g}) for group size {g}, got "
                             f"{tuple(weight_scale.shape)}")
        if bool(weight.min() < -8) or bool(weight.max() > 7):
            raise ValueError(f"{name}: weight values must be int4, in [-8, 7], got [{weight.min()}, {weight.max()}]")
        param = a8w4_scale_param(weight_scale.detach().reshape(n, k // g))
        if scale_bias is None:
            scale_bias = a8w4_offset(weight, param, g)
        packed = _ak().convert_weight_to_int4pack(weight.detach().t().contiguous().to(torch.int32))
        self.register_buffer("weight", packed)
        self.register_buffer("weight_scale", param.to(packed.device))
        self.register_buffer("scale_bias", _vector("scale_bias", scale_bias, n, _FLOATS, name)
                             .to(packed.device, torch.float32))
        self.register_buffer("bias", None if bias is None else _vector("bias", bias, n, _FLOATS, name)
                             .to(packed.device, torch.float32))

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: Optional[int] = None) -> "W4A8DynamicLinear":
        """Per-(channel, group) symmetric int4 (per channel when group_size is None); the weight is rounded with
        the scale the kernel uses (its 19-bit quant param), so q * scale is the GEMM's weight."""
        n, k = linear.weight.shape
        g = check_w4a8_shape(cls.__name__, k, n, group_size)
        _, scale = quantize_weight(linear.weight, 4, g)
        scale = _ak().decode_quant_param(a8w4_scale_param(scale))[0].t()  # what the kernel will use
        q, scale = quantize_weight(linear.weight, 4, g, scale=scale)
        return cls(q, scale, g, linear.bias).to(linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ak = _ak()
        q, s = ak.npu_dynamic_quant(self._rows(x))
        out = ak.quant_matmul(q, self.weight, self.weight_scale, offset=self.scale_bias, pertoken_scale=s,
                              output_dtype=x.dtype, group_sizes=[0, 0, self.group_size])
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


def check_w4a8_shape(owner: str, k: int, n: int, group_size: Optional[int]) -> int:
    """The k-group quant_matmul's A8W4 path takes for a (k -> n) layer; ValueError naming what does not fit."""
    g = k if group_size is None else group_size
    if not isinstance(g, int) or isinstance(g, bool) or g <= 0:
        raise ValueError(f"{owner}: group_size must be a positive int or None (per channel), got {group_size!r}")
    if n % 8:
        raise ValueError(f"{owner}: out_features must be a multiple of 8 (8 int4 per packed int32), got {n}")
    if k % g or g % A8W4_K_STEP:
        what = "in_features" if group_size is None else f"group_size {g}"
        raise ValueError(f"{owner}: {what} must be a multiple of {A8W4_K_STEP} and divide in_features = {k} "
                         f"(quant_matmul's A8W4 k-group), got {g}")
    return g


# ---------------------------------------------------------------- W8A8SC (compressed weight)
class W8A8SCLinear(_QuantLinear):
    """W8A8SC: static int8 activations (as W8A8Linear) x an int8 weight held in msModelSlim's compressed form.

    forward(x) = npu_matmul_compress_dequant(npu_quantize(x, 1/input_scale, input_offset, torch.qint8, -1, False),
    weight, index, quant_bias, deq_scale) = fp16((acc + quant_bias) * deq_scale), cast to x.dtype (the op writes
    float16 only: bfloat16 input gets the fp16 result rounded to bf16; |out| must fit float16).
    Buffers: weight int8 (c,) (compressed stream), index int8, info int64 [8, 8, in, out, 1], quant_bias int32
    (out,), deq_scale int64 (out,) (fp32 bits in bits 0..31, used at full fp32 precision), input_scale /
    input_offset float32 (1,). The op transcodes the stream for its GEMM once per weight tensor (cached);
    construction and every device move (``.to``) do it up front.
    """

    def __init__(self, weight: torch.Tensor, index: torch.Tensor, info, deq_scale: torch.Tensor,
                 quant_bias: torch.Tensor, input_scale, input_offset):
        name = type(self).__name__
        info = torch.as_tensor(info, dtype=torch.int64).reshape(-1)
        if info.numel() != 5 or info[0] != 8 or info[1] != 8 or info[4] != 1:
            raise ValueError(f"{name}: info must be [8, 8, in_features, out_features, 1], got {info.tolist()}")
        k, n = int(info[2]), int(info[3])
        super().__init__(k, n)
        for field, t in (("weight", weight), ("index", index)):
            if not isinstance(t, torch.Tensor) or t.dtype != torch.int8 or t.dim() != 1:
                raise TypeError(f"{name}: {field} must be a 1-D int8 tensor (msModelSlim's compressed form)")
        self.register_buffer("weight", weight.detach().contiguous())
        self.register_buffer("index", index.detach().contiguous())
        self.register_buffer("info", info.to(weight.device))
        _register_static(self, n, deq_scale, quant_bias, input_scale, input_offset)
        if self.deq_scale.dtype != torch.int64:  # the op takes the bits form
            self.deq_scale = self.deq_scale.view(torch.int32).to(torch.int64)
        self._prepare()

    @classmethod
    def from_float(cls, linear: nn.Linear, *, input_scale=None, input_offset=0.0, act_max=None) -> "W8A8SCLinear":
        """As W8A8Linear.from_float, then the int8 weight is compressed (atlas_kernels.compress_weight)."""
        q, scale = quantize_weight(linear.weight, 8)
        input_scale, input_offset, deq, qbias = _static_fields(linear, q, scale, input_scale, input_offset,
                                                               act_max, cls.__name__)
        x2, index, info = _ak().compress_weight(q)
        return cls(x2, index, info, deq.view(torch.int32).to(torch.int64), qbias, input_scale,
                   input_offset).to(linear.weight.device)

    def _prepare(self):
        if self.weight.device.type != "meta":
            _ak().prepare_compressed_weight(self.weight, self.index, self.info.tolist())

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._prepare()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ak = _ak()
        q = ak.npu_quantize(self._rows(x), torch.reciprocal(self.input_scale), self.input_offset, torch.qint8, -1,
                            False)
        out = ak.npu_matmul_compress_dequant(q, self.weight, self.index, self.quant_bias, self.deq_scale)
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
