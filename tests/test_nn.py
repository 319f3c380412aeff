"""atlas_kernels.nn: each quantized Linear against the two op calls it replaces (bit for bit), against float
references (stated tolerances), quantize(), torch.compile, bad input."""
import os
import pathlib
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import atlas_kernels as ak
from atlas_kernels.nn import (W4A8DynamicLinear, W8A8DynamicLinear, W8A8Linear, W8A8SCLinear, calibrate,
                              quantize)
from atlas_kernels.testing import kernel_ran

GEMM = "quant_matmul.gemm"
A8W4 = "quant_matmul.gemm_a8w4"  # the W4A8 modules' GEMM (int8 x int4 with per-group scales)
K, N = 256, 128


def linear(k=K, n=N, bias=True, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        lin.weight[0, :5] = torch.tensor([0.5, -0.5, 1.5, -2.5, 0.0]) * lin.weight.abs().max() / 63.5  # ties
    return lin


def inputs(dtype, shape=(2, 3, K), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


def sym_quant(w, qmax, g=None):
    """Written from the formula: scale = max|w| / qmax per channel (per k-group), q = clamp(rint(w / scale))."""
    n, k = w.shape
    g = g or k
    wg = w.detach().float().reshape(n, k // g, g)
    scale = wg.abs().amax(-1) / qmax
    q = torch.clamp(torch.round(wg / scale[..., None]), -qmax - 1, qmax).to(torch.int8).reshape(n, k)
    return q, scale


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


# ---------------------------------------------------------------- each module == the two calls it replaces
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_w8a8_dynamic_matches_two_calls(dtype, device):
    lin, x = linear().to(device), inputs(dtype).to(device)
    m = W8A8DynamicLinear.from_float(lin)
    qw, sw = sym_quant(lin.weight, 127)
    assert m.weight.device == x.device
    assert torch.equal(m.weight, qw.t().contiguous()) and torch.equal(m.weight_scale, sw.reshape(N))
    with kernel_ran(GEMM):
        out = m(x)
        q, s = ak.npu_dynamic_quant(x.reshape(-1, K))
        expect = ak.npu_quant_matmul(q, qw.t().contiguous(), sw.reshape(N), pertoken_scale=s,
                                     bias=lin.bias.detach().float(), output_dtype=dtype)
    assert out.shape == (2, 3, N) and out.dtype == dtype
    assert torch.equal(out.reshape(-1, N), expect)


def test_w8a8_dynamic_forward_int32(device):
    lin, x = linear().to(device), inputs(torch.bfloat16).to(device)
    m = W8A8DynamicLinear.from_float(lin)
    with kernel_ran(GEMM):
        acc, pertoken = m.forward_int32(x)
    q, s = ak.npu_dynamic_quant(x.reshape(-1, K))
    exact = (q.double() @ sym_quant(lin.weight, 127)[0].double().t()).to(torch.int32)  # exact: |acc| < 2**53
    assert acc.shape == (2, 3, N) and acc.dtype == torch.int32 and pertoken.shape == (2, 3)
    assert torch.equal(acc.reshape(-1, N), exact) and torch.equal(pertoken.reshape(-1), s)
    # the fused-dequant consumer's formula gives forward()'s output
    deq = (acc.float() * m.weight_scale * pertoken[..., None] + m.bias).to(torch.bfloat16)
    assert torch.equal(deq, m(x))


@pytest.mark.parametrize("dtype, offset", [(torch.float16, 0.0), (torch.bfloat16, 3.0)])
def test_w8a8_static_matches_two_calls(dtype, offset, device):
    lin, x = linear().to(device), inputs(dtype).to(device)
    act_max = float(x.float().abs().max())
    input_scale = torch.tensor([act_max / 127], device=device)
    if offset:  # given scale and offset
        m = W8A8Linear.from_float(lin, input_scale=input_scale, input_offset=offset)
    else:
        m = W8A8Linear.from_float(lin, act_max=act_max)
    qw, sw = sym_quant(lin.weight, 127)
    deq = input_scale * sw.reshape(N)
    quant_bias = torch.round(lin.bias.detach() / deq - offset * qw.float().sum(1)).to(torch.int32)
    assert torch.equal(m.quant_bias, quant_bias) and torch.equal(m.deq_scale, deq)
    with kernel_ran(GEMM):
        out = m(x)
        q = ak.npu_quantize(x.reshape(-1, K), 1 / input_scale, torch.tensor([offset], device=device), torch.qint8,
                            -1, False)
        expect = ak.npu_quant_matmul(q, qw.t().contiguous(), deq, bias=quant_bias, output_dtype=dtype)
    assert torch.equal(out.reshape(-1, N), expect)


def test_w8a8_static_int64_deq_scale(device):
    """fp16 checkpoints carry deq_scale as the fp32 bits sign-extended to int64 (msModelSlim)."""
    lin, x = linear(), inputs(torch.float16).to(device)
    qw, sw = sym_quant(lin.weight, 127)
    input_scale = torch.tensor([0.03])
    deq64 = (input_scale * sw.reshape(N)).view(torch.int32).to(torch.int64)
    qbias = torch.randint(-3000, 3000, (N,), dtype=torch.int32)
    m = W8A8Linear(qw, deq64, qbias, input_scale, torch.tensor([-2.0])).to(device)
    qw, deq64, qbias, input_scale = (t.to(device) for t in (qw, deq64, qbias, input_scale))
    with kernel_ran(GEMM):
        out = m(x)
        q = ak.npu_quantize(x.reshape(-1, K), 1 / input_scale, torch.tensor([-2.0], device=device), torch.qint8,
                            -1, False)
        expect = ak.npu_quant_matmul(q, qw.t().contiguous(), deq64, bias=qbias, output_dtype=torch.float16)
    assert torch.equal(out.reshape(-1, N), expect)


@pytest.mark.parametrize("group_size", [64, None])
def test_w4a8_dynamic_matches_two_calls(group_size, device):
    lin, x = linear().to(device), inputs(torch.bfloat16).to(device)
    m = W4A8DynamicLinear.from_float(lin, group_size)
    g = group_size or K
    _, s0 = sym_quant(lin.weight, 7, g)
    s = s0.half().float()  # vllm-ascend's round trip through fp16 = the 10-bit mantissa the kernel keeps
    qw = torch.clamp(torch.round(lin.weight.detach().reshape(N, K // g, g) / s[..., None]), -8, 7)
    qw = qw.to(torch.int8).reshape(N, K)
    packed = ak.convert_weight_to_int4pack(qw.t().contiguous().to(torch.int32))
    param = ak.trans_quant_param(s.t().contiguous())
    offset = (8 * (qw.double().reshape(N, K // g, g).sum(-1) * s.double()).sum(-1)).float()
    assert torch.equal(m.weight, packed) and torch.equal(m.weight_scale, param)
    assert torch.equal(m.scale_bias, offset)
    with kernel_ran(A8W4):
        out = m(x)
        q, pt = ak.npu_dynamic_quant(x.reshape(-1, K))
        expect = ak.quant_matmul(q, packed, param, offset=offset, pertoken_scale=pt, output_dtype=torch.bfloat16,
                                 group_sizes=[0, 0, g]) + lin.bias.detach().to(torch.bfloat16)
    assert torch.equal(out.reshape(-1, N), expect)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_w8a8sc_matches_two_calls(dtype, device):
    lin, x = linear().to(device), inputs(dtype).to(device)
    act_max = float(x.float().abs().max())
    m = W8A8SCLinear.from_float(lin, act_max=act_max)
    qw, sw = sym_quant(lin.weight, 127)
    input_scale = torch.tensor([act_max / 127], device=device)
    deq = input_scale * sw.reshape(N)
    qbias = torch.round(lin.bias.detach() / deq).to(torch.int32)
    x2, index, info = ak.compress_weight(qw)
    x2, index = x2.to(device), index.to(device)
    assert torch.equal(m.weight, x2) and torch.equal(m.index, index) and info.tolist() == [8, 8, K, N, 1]
    with kernel_ran(GEMM):
        out = m(x)
        q = ak.npu_quantize(x.reshape(-1, K), 1 / input_scale, torch.tensor([0.0], device=device), torch.qint8,
                            -1, False)
        expect = ak.npu_matmul_compress_dequant(q, x2, index, qbias, deq.view(torch.int32).to(torch.int64))
    assert out.dtype == dtype and torch.equal(out.reshape(-1, N), expect.to(dtype))


# ---------------------------------------------------------------- float references
def _ulp_close(out, ref, ulps=1):
    """|out - ref| <= ulps units in the last place of out's dtype at |ref| (plus the smallest normal)."""
    info = torch.finfo(out.dtype)
    ulp = torch.maximum(ref.abs().double(), torch.tensor(info.tiny, dtype=torch.float64)) * info.eps
    diff = (out.double() - ref.double()).abs()
    assert bool((diff <= ulps * ulp).all()), f"max diff {(diff / ulp).max().item():.2f} ulp"


def test_dequantized_reference_within_one_ulp(device):
    """The GEMM + epilogue against float64 math on the same quantized operands: the kernel's fp32 epilogue rounds
    a few times at 2**-24 before the one rounding to bf16, the reference rounds once: at most 1 ulp apart."""
    lin, x = linear().to(device), inputs(torch.bfloat16).to(device)
    m = W8A8DynamicLinear.from_float(lin)
    q, s = (t.cpu() for t in ak.npu_dynamic_quant(x.reshape(-1, K)))  # float64 math on the host
    ref = ((q.double() @ m.weight.cpu().double()) * m.weight_scale.cpu().double() * s.double()[:, None]
           + m.bias.cpu().double())
    with kernel_ran(GEMM):
        out = m(x).cpu()
    _ulp_close(out.reshape(-1, N), ref)
    m4 = W4A8DynamicLinear.from_float(linear(bias=False).to(device), 64)
    sc, _ = ak.decode_quant_param(m4.weight_scale.cpu())  # (K/64, N)
    w = ak.unpack_int4(m4.weight).cpu().double().reshape(K // 64, 64, N) * sc.double()[:, None, :]
    ref4 = (q.double() @ w.reshape(K, N)) * s.double()[:, None]
    with kernel_ran(A8W4):
        out4 = m4(x).reshape(-1, N).cpu()
    # A8W4 adds the groups' (q - 8) . w * scale and then the +8 compensation (scale_bias) in float32: each of
    # those roundings is 2**-24 of the terms' magnitude T, which can exceed the result's, so the bound is
    # 1 ulp of bf16 at the result plus (groups + 2) * 2**-24 * T
    t = ((q.double() - 8).abs() @ w.abs().reshape(K, N) + m4.scale_bias.cpu().double().abs()) * s.double()[:, None]
    info = torch.finfo(torch.bfloat16)
    bound = ref4.abs() * info.eps + (K // 64 + 2) * 2**-24 * t
    assert bool(((out4.double() - ref4).abs() <= bound).all())


@pytest.mark.parametrize("make, bound, gemm", [
    (lambda lin, a: W8A8DynamicLinear.from_float(lin), 0.02, GEMM),  # measured values: docs/models.md
    (lambda lin, a: W8A8Linear.from_float(lin, act_max=a), 0.03, GEMM),  # per-tensor activations
    (lambda lin, a: W4A8DynamicLinear.from_float(lin, 64), 0.10, A8W4),  # int4 weights
])
def test_against_float_linear(make, bound, gemm, device):
    """Quantization error against the float layer, relative Frobenius norm (random Gaussian-ish inputs)."""
    lin, x = linear(), inputs(torch.bfloat16)
    ref = nn.functional.linear(x.double(), lin.weight.double(), lin.bias.double())  # on the host, before .to
    with kernel_ran(gemm):
        out = make(lin.to(device), float(x.float().abs().max()))(x.to(device)).cpu()
    assert rel_err(out, ref) < bound


# ---------------------------------------------------------------- quantize()
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(K, N)
        self.mlp = nn.Sequential(nn.Linear(N, K), nn.ReLU(), nn.Linear(K, N, bias=False))
        self.norm = nn.LayerNorm(N)
        self.lm_head = nn.Linear(N, 64)

    def forward(self, x):
        return self.lm_head(self.norm(self.mlp(self.q_proj(x))))


def test_quantize_replaces_and_skips(device):
    torch.manual_seed(0)
    model = Block().to(torch.bfloat16).to(device)
    same = quantize(model, "w8a8_dynamic", skip=["lm_head"])
    assert same is model
    assert isinstance(model.q_proj, W8A8DynamicLinear) and isinstance(model.mlp[0], W8A8DynamicLinear)
    assert isinstance(model.mlp[2], W8A8DynamicLinear) and model.mlp[2].bias is None
    assert type(model.lm_head) is nn.Linear and isinstance(model.norm, nn.LayerNorm)
    with kernel_ran(GEMM):
        assert model(inputs(torch.bfloat16, (4, K)).to(device)).shape == (4, 64)


def test_quantize_w4a8_and_w8a8_sc(device):
    torch.manual_seed(0)
    model = Block().to(device)
    quantize(model, "w4a8_dynamic", group_size=64, skip=["mlp.*", "lm_head"])
    assert isinstance(model.q_proj, W4A8DynamicLinear) and model.q_proj.group_size == 64
    assert type(model.mlp[0]) is nn.Linear and type(model.lm_head) is nn.Linear
    model = Block().to(device)
    x = inputs(torch.float32, (4, K)).to(device)
    act_max = calibrate(model, x, skip="lm_head")
    assert set(act_max) == {"q_proj", "mlp.0", "mlp.2"}
    assert act_max["q_proj"] == float(x.abs().max())
    quantize(model, "w8a8_sc", act_max=act_max, skip=["lm_head"])
    assert isinstance(model.mlp[2], W8A8SCLinear)
    assert torch.equal(model.q_proj.input_scale.cpu(), torch.tensor([float(x.abs().max()) / 127]))


def test_quantize_errors_leave_model_float(device):
    model = Block().to(device)
    with pytest.raises(ValueError, match="scheme must be one of 'w8a8_dynamic', 'w4a8_dynamic', 'w8a8_sc'"):
        quantize(model, "w4a4")
    with pytest.raises(ValueError, match=r"layer 'q_proj'.*group_size 96 must be a multiple of 64.*skip=\['q_proj'\]"):
        quantize(model, "w4a8_dynamic", group_size=96)
    with pytest.raises(ValueError, match=r"layer 'lm_head'.*group_size 256.*divide in_features = 128"):
        quantize(model, "w4a8_dynamic", group_size=256, skip=["mlp.*"])
    with pytest.raises(ValueError, match=r"needs act_max\['q_proj'\]"):
        quantize(model, "w8a8_sc")
    with pytest.raises(ValueError, match="group_size is for scheme 'w4a8_dynamic' only"):
        quantize(model, "w8a8_dynamic", group_size=64)
    assert all(type(m) is nn.Linear for m in (model.q_proj, model.mlp[0], model.mlp[2], model.lm_head))


def test_quantize_odd_out_features_named(device):
    model = nn.Sequential(nn.Linear(K, 100)).to(device)
    with pytest.raises(ValueError, match=r"layer '0'.*out_features must be a multiple of 8.*got 100"):
        quantize(model, "w4a8_dynamic")


# ---------------------------------------------------------------- torch.compile, state_dict, bad input
def test_torch_compile_fullgraph(device):
    lin, x = linear().to(device), inputs(torch.bfloat16).to(device)
    m = W8A8DynamicLinear.from_float(lin)
    m4 = W4A8DynamicLinear.from_float(lin, 64)
    eager, eager4 = m(x), m4(x)
    torch._dynamo.reset()
    with kernel_ran(GEMM):
        out = torch.compile(m, fullgraph=True)(x)
        out4 = torch.compile(m4, fullgraph=True, backend="aot_eager")(x)
        acc, _ = torch.compile(m.forward_int32, fullgraph=True, backend="aot_eager")(x)
    assert torch.equal(out, eager) and torch.equal(out4, eager4)
    assert torch.equal(acc, m.forward_int32(x)[0])


def test_torch_compile_static_modules(device, monkeypatch):
    """The static modules under fullgraph=True (aot_eager: inductor's CPU codegen of the reciprocal takes a
    minute here); the compressed weight is still transcoded only once (the op's cache sees the same buffer)."""
    from atlas_kernels import compress_matmul
    transcodes = []
    decompress = compress_matmul.decompress_weight
    monkeypatch.setattr(compress_matmul, "decompress_weight", lambda *a: transcodes.append(1) or decompress(*a))
    lin, x = linear().to(device), inputs(torch.float16).to(device)
    sc, st = W8A8SCLinear.from_float(lin, act_max=4.0), W8A8Linear.from_float(lin, act_max=4.0)
    eager_sc, eager_st = sc(x), st(x)
    torch._dynamo.reset()
    with kernel_ran(GEMM):
        out_sc = torch.compile(sc, fullgraph=True, backend="aot_eager")(x)
        out_st = torch.compile(st, fullgraph=True, backend="aot_eager")(x)
    assert torch.equal(out_sc, eager_sc) and torch.equal(out_st, eager_st)
    assert len(transcodes) == 1


def test_state_dict_round_trip(device):
    x = inputs(torch.bfloat16).to(device)
    a = W4A8DynamicLinear.from_float(linear(seed=0).to(device), 64)
    b = W4A8DynamicLinear.from_float(linear(seed=5).to(device), 64)
    assert set(a.state_dict()) == {"weight", "weight_scale", "scale_bias", "bias"}
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_bad_input(device):
    m = W8A8DynamicLinear.from_float(linear().to(device))
    with pytest.raises(TypeError, match=r"W8A8DynamicLinear: input must be float16 or bfloat16.*got torch.float32"):
        m(inputs(torch.float32).to(device))
    with pytest.raises(ValueError, match=r"input must have shape \(\.\.\., 256\), got \(2, 3, 128\)"):
        m(inputs(torch.bfloat16, (2, 3, 128)).to(device))
    with pytest.raises(TypeError, match="weight must be an int8 .out_features, in_features. tensor, got torch.float32"):
        W8A8DynamicLinear(torch.zeros(N, K), torch.ones(N))
    with pytest.raises(ValueError, match=r"weight_scale must have shape \(128,\)"):
        W8A8DynamicLinear(torch.zeros(N, K, dtype=torch.int8), torch.ones(N + 1))
    with pytest.raises(ValueError, match=r"weight values must be int4, in \[-8, 7\]"):
        W4A8DynamicLinear(torch.full((N, K), 9, dtype=torch.int8), torch.ones(N))
    m64 = W8A8Linear(torch.zeros(N, K, dtype=torch.int8), torch.ones(N, dtype=torch.int64),
                     torch.zeros(N, dtype=torch.int32), 1.0, 0.0).to(device)
    with pytest.raises(TypeError, match="deq_scale is int64 .an fp16 checkpoint's form., which takes float16 input"):
        m64(inputs(torch.bfloat16).to(device))
    with pytest.raises(ValueError, match="give input_scale .and input_offset., or act_max"):
        W8A8Linear.from_float(linear().to(device))
    with pytest.raises(ValueError, match=r"info must be \[8, 8, in_features, out_features, 1\]"):
        W8A8SCLinear(torch.zeros(4, dtype=torch.int8), torch.zeros(8, dtype=torch.int8), [8, 8, K, N, 0],
                     torch.zeros(N, dtype=torch.int64), torch.zeros(N, dtype=torch.int32), 1.0, 0.0)


# ---------------------------------------------------------------- docs/models.md's example
def _doc_examples():
    text = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    section = text.split("## atlas_kernels.nn", 1)[1].split("\n## ", 1)[0]
    pattern = re.compile(r"```python\n(.*?)```\n(?:\nprints\n\n```\n(.*?)```\n)?", re.S)
    return [(code, out) for code, out in pattern.findall(section) if "TRITON_INTERPRET" in code]


@pytest.mark.interpreter("docs/models.md's example sets TRITON_INTERPRET=1 and runs on the CPU, in a subprocess")
def test_docs_example_runs():
    examples = _doc_examples()
    assert examples
    for code, expected in examples:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "TRITON_DEFAULT_FP_FUSION": "1"})
        assert r.returncode == 0, r.stderr
        assert r.stdout == expected
