"""load_msmodelslim on a small checkpoint written here in msModelSlim's ascendV1 layout: each loaded layer against
the two op calls vllm-ascend builds from the same fields (bit for bit), FLOAT tensors, and bad checkpoints.

The model is loaded on the ``device`` fixture (the interpreter on CPU, else the GPU/NPU) and the two calls run there
too, on the checkpoint's tensors moved to it."""
import json
import warnings

import pytest
import torch
from torch import nn

import atlas_kernels as ak
from atlas_kernels.nn import W4A8DynamicLinear, W8A8DynamicLinear, W8A8Linear, W8A8SCLinear, load_msmodelslim
from atlas_kernels.testing import kernel_ran

safetensors_torch = pytest.importorskip("safetensors.torch")

GEMM = "quant_matmul.gemm"
A8W4 = "quant_matmul.gemm_a8w4"  # the W4A8 layers' GEMM
K, N = 256, 128
LAYERS = {  # name -> (quant type, how the test writes it)
    "layers.0.self_attn.q_proj": ("W8A8", "int64 deq_scale (fp16 model)"),
    "layers.0.self_attn.k_proj": ("W8A8", "fp32 deq_scale (bf16 model)"),
    "layers.0.self_attn.v_proj": ("W8A8_DYNAMIC", "with bias"),
    "layers.0.self_attn.o_proj": ("W4A8_DYNAMIC", "1.0.0 packed, per channel, row scale_bias (out, 16)"),
    "layers.0.mlp.up_proj": ("W4A8_DYNAMIC", "1.0.0 packed, per channel, scale_bias (out, 1)"),
    "layers.0.mlp.gate_proj": ("W4A8_DYNAMIC", "older unpacked, per group 64 (weight_scale_second)"),
    "layers.0.mlp.down_proj": ("W8A8SC", "compressed"),
    "layers.0.mlp.float_proj": ("FLOAT", ""),
}


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Module()])
        block = self.layers[0]
        block.self_attn, block.mlp = nn.Module(), nn.Module()
        for name in LAYERS:
            parent, child = name.split(".")[2:]
            setattr(getattr(block, parent), child, nn.Linear(K, N, bias=child in ("v_proj", "up_proj", "float_proj")))
        block.norm = nn.LayerNorm(K)


def fp32_bits_int64(t):
    """msModelSlim's deqscale2int64: the float32 bits read as int32, widened (sign-extended) to int64."""
    return t.float().contiguous().view(torch.int32).to(torch.int64)


def pack_rows(w):
    """msModelSlim's w4a8_pack_int4, from its description: int4 (out, in) -> int8 (out/2, in), byte j of a column =
    (w[2j + 1] << 4) | (w[2j] & 0xF)."""
    w = w.to(torch.int32)
    return ((w[1::2] << 4) | (w[0::2] & 0xF)).to(torch.uint8).view(torch.int8)


def scale_bias(w, scale, row_parallel):
    """8 * sum_k w * scale per output channel; row-parallel layers keep 16 partial sums (msModelSlim's
    process_scale with tp 16)."""
    deq = w.double() * scale.double()
    parts = deq.reshape(w.shape[0], 16, -1).sum(-1) if row_parallel else deq.sum(-1, keepdim=True)
    return (8 * parts).float()


def make_fields(seed=0):
    """{tensor name: tensor}, {tensor name: quant type}: one layer of each kind, msModelSlim's formulas."""
    g = torch.Generator().manual_seed(seed)
    tensors, desc = {}, {}

    def put(name, kind, t):
        tensors[name], desc[name] = t.contiguous(), kind

    def int8(*shape, lo=-127, hi=128):
        return torch.randint(lo, hi, shape, generator=g, dtype=torch.int8)

    for p, (kind, how) in LAYERS.items():
        if kind in ("W8A8", "W8A8SC"):
            w = int8(N, K)
            input_scale, input_offset = torch.tensor([0.02]), torch.tensor([3.0])
            weight_scale = torch.rand(N, generator=g) * 1e-3 + 1e-4
            bias = torch.randn(N, generator=g)
            deq = input_scale * weight_scale
            qbias = torch.round(bias / deq - w.float().sum(1) * input_offset).to(torch.int32)
            put(p + ".input_scale", kind, input_scale)
            put(p + ".input_offset", kind, input_offset)
            put(p + ".quant_bias", kind, qbias)
            put(p + ".deq_scale", kind, deq if "fp32" in how else fp32_bits_int64(deq))
            put(p + ".bias", "FLOAT", bias)  # folded into quant_bias; written anyway, as msModelSlim does
            if kind == "W8A8SC":
                x2, index, info = ak.compress_weight(w)
                put(p + ".weight", kind, x2)
                put(p + ".index", kind, index)
                put(p + ".info", kind, info)
            else:
                put(p + ".weight", kind, w)
        elif kind == "W8A8_DYNAMIC":
            put(p + ".weight", kind, int8(N, K))
            put(p + ".weight_scale", kind, (torch.rand(N, 1, generator=g) * 1e-3 + 1e-4))
            put(p + ".weight_offset", kind, torch.zeros(N, 1))
            put(p + ".bias", "FLOAT", torch.randn(N, generator=g))
        elif kind == "W4A8_DYNAMIC":
            w = int8(N, K, lo=-8, hi=8)
            scale = torch.rand(N, 1, generator=g) * 1e-2 + 1e-3
            put(p + ".weight_scale", kind, scale)
            put(p + ".weight_offset", kind, torch.zeros(N, 1))
            if "packed" in how:
                put(p + ".weight", kind, pack_rows(w))
                put(p + ".scale_bias", kind, scale_bias(w, scale, "(out, 16)" in how))
            else:
                second = torch.rand(N, K // 64, generator=g) + 0.5
                put(p + ".weight", kind, w)
                put(p + ".weight_scale_second", kind, second)
                put(p + ".weight_offset_second", kind, torch.zeros(N, K // 64))
            if p.endswith("up_proj"):
                put(p + ".bias", "FLOAT", torch.randn(N, generator=g))
        else:
            put(p + ".weight", "FLOAT", torch.randn(N, K, generator=g))
            put(p + ".bias", "FLOAT", torch.randn(N, generator=g))
    put("layers.0.norm.weight", "FLOAT", torch.rand(K, generator=g) + 0.5)
    put("layers.0.norm.bias", "FLOAT", torch.randn(K, generator=g))
    return tensors, desc


def write_checkpoint(path, tensors, desc, files=2):
    """quant_model_description.json and the tensors split over ``files`` safetensors files."""
    names = sorted(tensors)
    for i in range(files):
        part = {name: tensors[name] for name in names[i::files]}
        safetensors_torch.save_file(part, str(path / f"quant_model_weights-{i + 1:05d}-of-{files:05d}.safetensors"))
    (path / "quant_model_description.json").write_text(json.dumps(
        {"model_quant_type": "W8A8", "version": "1.0.0", "group_size": 0, "metadata": {}, **desc}))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tensors, desc = make_fields()
    return write_checkpoint(tmp_path_factory.mktemp("msmodelslim"), tensors, desc), tensors


@pytest.fixture(scope="module")
def _loaded_by_device(checkpoint):
    """Loads the checkpoint once per device (the ``device`` fixture is function-scoped, the load is not)."""
    path, _ = checkpoint
    models = {}

    def load(device):
        if device not in models:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                models[device] = load_msmodelslim(Model().to(device), path)
            assert not [w for w in seen if "load_msmodelslim" in str(w.message)]  # every tensor and Linear matched
        return models[device]
    return load


@pytest.fixture
def loaded(_loaded_by_device, device):
    """The checkpoint loaded into Model() on ``device``."""
    return _loaded_by_device(device)


def on(tensors, device):
    """The checkpoint's {name: tensor} with every tensor on ``device``."""
    return {name: t.to(device) for name, t in tensors.items()}


def x_rows(dtype, seed=3):
    return torch.randn(6, K, generator=torch.Generator().manual_seed(seed)).to(dtype)


def static_two_calls(t, p, x):
    """vllm-ascend's W8A8 apply: npu_quantize(x, 1/input_scale, input_offset, qint8, -1, False), then
    npu_quant_matmul(q, weight^T, deq_scale, bias=quant_bias, output_dtype=x.dtype)."""
    q = ak.npu_quantize(x, 1 / t[p + ".input_scale"], t[p + ".input_offset"], torch.qint8, -1, False)
    return q, ak.npu_quant_matmul(q, t[p + ".weight"].t().contiguous(), t[p + ".deq_scale"],
                                  bias=t[p + ".quant_bias"], output_dtype=x.dtype)


@pytest.mark.parametrize("p, dtype", [("layers.0.self_attn.q_proj", torch.float16),
                                      ("layers.0.self_attn.k_proj", torch.bfloat16)])
def test_w8a8_static(loaded, checkpoint, device, p, dtype):
    t = on(checkpoint[1], device)
    m = loaded.get_submodule(p)
    assert isinstance(m, W8A8Linear) and m.deq_scale.dtype == t[p + ".deq_scale"].dtype
    x = x_rows(dtype).to(device)
    with kernel_ran(GEMM):
        out = m(x)
        _, expect = static_two_calls(t, p, x)
    assert torch.equal(out, expect)


def test_w8a8_dynamic(loaded, checkpoint, device):
    p, t = "layers.0.self_attn.v_proj", on(checkpoint[1], device)
    m = loaded.get_submodule(p)
    assert isinstance(m, W8A8DynamicLinear)
    x = x_rows(torch.bfloat16).to(device)
    with kernel_ran(GEMM):
        out = m(x)
        q, s = ak.npu_dynamic_quant(x)
        expect = ak.npu_quant_matmul(q, t[p + ".weight"].t().contiguous(), t[p + ".weight_scale"].flatten(),
                                     pertoken_scale=s, bias=t[p + ".bias"], output_dtype=x.dtype)
    assert torch.equal(out, expect)


@pytest.mark.parametrize("p", ["layers.0.self_attn.o_proj", "layers.0.mlp.up_proj", "layers.0.mlp.gate_proj"])
def test_w4a8_dynamic(loaded, checkpoint, device, p):
    """Packed (1.0.0): vllm-ascend's weight.T viewed as int32 is already quant_matmul's (in, out/8) layout;
    unpacked: convert_weight_to_int4pack of weight.T. Scales: fp16 round trip (vllm-ascend) in the int64 form."""
    t = checkpoint[1]  # the expected fields are computed on the host, then moved
    m = loaded.get_submodule(p)
    assert isinstance(m, W4A8DynamicLinear)
    w = t[p + ".weight"]
    if w.shape[0] == N // 2:
        packed = w.t().contiguous().view(torch.int32).to(device)
        scale, g = t[p + ".weight_scale"].reshape(N, 1), K
        offset = t[p + ".scale_bias"].sum(1)
    else:
        packed = ak.convert_weight_to_int4pack(w.t().contiguous().to(torch.int32).to(device))
        scale, g = t[p + ".weight_scale"] * t[p + ".weight_scale_second"], 64
        s16 = scale.half().double().reshape(N, K // g)
        offset = (8 * (w.double().reshape(N, K // g, g).sum(-1) * s16).sum(-1)).float()
    param = ak.trans_quant_param(scale.half().float().t().contiguous()).to(device)
    offset = offset.to(device)
    assert m.group_size == g and torch.equal(m.weight, packed) and torch.equal(m.weight_scale, param)
    x = x_rows(torch.bfloat16).to(device)
    with kernel_ran(A8W4):
        out = m(x)
        q, s = ak.npu_dynamic_quant(x)
        expect = ak.quant_matmul(q, packed, param, offset=offset, pertoken_scale=s, output_dtype=x.dtype,
                                 group_sizes=[0, 0, g])
    if p + ".bias" in t:
        expect = expect + t[p + ".bias"].to(device).to(x.dtype)
    assert torch.equal(out, expect)


def test_w4a8_packed_and_unpacked_agree(tmp_path, loaded, device):
    """The same int4 weight written in the older unpacked layout loads to the same buffers as the packed one."""
    p = "layers.0.self_attn.o_proj"
    tensors, desc = make_fields()
    packed = tensors[p + ".weight"].to(torch.int32)
    unpacked = torch.stack([((packed & 0xF) ^ 8) - 8, packed >> 4], dim=1).reshape(N, K).to(torch.int8)
    assert torch.equal(pack_rows(unpacked), tensors[p + ".weight"])  # the same weight
    tensors[p + ".weight"] = unpacked
    other = load_msmodelslim(Model().to(device), write_checkpoint(tmp_path, tensors, desc, files=1)).get_submodule(p)
    for name in ("weight", "weight_scale", "scale_bias"):
        assert torch.equal(getattr(other, name), getattr(loaded.get_submodule(p), name)), name


def test_w8a8sc(loaded, checkpoint, device):
    p, t = "layers.0.mlp.down_proj", on(checkpoint[1], device)
    m = loaded.get_submodule(p)
    assert isinstance(m, W8A8SCLinear)
    x = x_rows(torch.float16).to(device)
    with kernel_ran(GEMM):
        out = m(x)
        q = ak.npu_quantize(x, 1 / t[p + ".input_scale"], t[p + ".input_offset"], torch.qint8, -1, False)
        expect = ak.npu_matmul_compress_dequant(q, t[p + ".weight"], t[p + ".index"], t[p + ".quant_bias"],
                                                t[p + ".deq_scale"])
    assert torch.equal(out, expect)


def test_float_tensors(loaded, checkpoint, device):
    t = checkpoint[1]
    lin = loaded.layers[0].mlp.float_proj
    assert type(lin) is nn.Linear and lin.weight.device.type == torch.device(device).type
    assert torch.equal(lin.weight.cpu(), t["layers.0.mlp.float_proj.weight"])
    assert torch.equal(lin.bias.cpu(), t["layers.0.mlp.float_proj.bias"])
    assert torch.equal(loaded.layers[0].norm.weight.cpu(), t["layers.0.norm.weight"])


def test_loads_on_the_models_device(checkpoint, device):
    path, t = checkpoint
    model = load_msmodelslim(Model().to(device), path)
    p = "layers.0.self_attn.v_proj"
    m = model.get_submodule(p)
    assert m.weight.device.type == device.type and model.layers[0].norm.weight.device.type == device.type
    x = x_rows(torch.bfloat16).to(device)
    with kernel_ran(GEMM):
        out = m(x)
        q, s = ak.npu_dynamic_quant(x)
        expect = ak.npu_quant_matmul(q, t[p + ".weight"].t().contiguous().to(device),
                                     t[p + ".weight_scale"].flatten().to(device), pertoken_scale=s,
                                     bias=t[p + ".bias"].to(device), output_dtype=x.dtype)
    assert torch.equal(out, expect)


# ---------------------------------------------------------------- bad checkpoints
def _write(tmp_path, edit):
    tensors, desc = make_fields()
    edit(tensors, desc)
    return write_checkpoint(tmp_path, tensors, desc, files=1)


def test_missing_tensor_named(tmp_path, device):
    path = _write(tmp_path, lambda t, d: t.pop("layers.0.self_attn.q_proj.deq_scale"))
    with pytest.raises(ValueError, match=r"tensor 'layers.0.self_attn.q_proj.deq_scale' .needed by layer "
                                         r"'layers.0.self_attn.q_proj'. is not in any safetensors file of .*"
                                         r"quant_model_weights-00001-of-00001.safetensors"):
        load_msmodelslim(Model().to(device), path)


def test_unknown_quant_type_named(tmp_path, device):
    path = _write(tmp_path, lambda t, d: d.update({"layers.0.mlp.up_proj.weight": "W4A4_DYNAMIC"}))
    with pytest.raises(ValueError, match="layer 'layers.0.mlp.up_proj' has quant type 'W4A4_DYNAMIC'; supported"):
        load_msmodelslim(Model().to(device), path)


def test_bad_shape_and_dtype_named(tmp_path, device):
    def shape(t, d):
        t["layers.0.self_attn.v_proj.weight_scale"] = torch.ones(N + 8, 1)

    def dtype(t, d):
        t["layers.0.self_attn.q_proj.quant_bias"] = t["layers.0.self_attn.q_proj.quant_bias"].float()

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"tensor 'layers.0.self_attn.v_proj.weight_scale' in quant_model_weights"
                                         r"-00001-of-00001.safetensors must have shape \(128, 1\) or \(128,\), "
                                         r"got \(136, 1\)"):
        load_msmodelslim(Model().to(device), _write(tmp_path / "a", shape))
    with pytest.raises(TypeError, match=r"'layers.0.self_attn.q_proj.quant_bias' in .* must have dtype torch.int32"):
        load_msmodelslim(Model().to(device), _write(tmp_path / "b", dtype))


def test_asymmetric_weight_offset_rejected(tmp_path, device):
    path = _write(tmp_path, lambda t, d: t["layers.0.self_attn.v_proj.weight_offset"].fill_(1.0))
    with pytest.raises(ValueError, match="weight_offset' in .* is nonzero: asymmetric weights are not supported"):
        load_msmodelslim(Model().to(device), path)


def test_leftovers_warn(tmp_path, checkpoint, device):
    model = Model().to(device)
    model.extra = nn.Linear(K, N).to(device)
    path = _write(tmp_path, lambda t, d: (t.update({"rotary.inv_freq": torch.ones(4)}),
                                          d.update({"rotary.inv_freq": "FLOAT"})))
    with pytest.warns(RuntimeWarning, match=r"left alone: 1 \(extra\) nn.Linear not in quant_model_description.json; "
                                            r"1 \(rotary.inv_freq\) FLOAT tensors"):
        load_msmodelslim(model, path)
    assert type(model.extra) is nn.Linear


def test_missing_files(tmp_path, device):
    with pytest.raises(FileNotFoundError, match="quant_model_description.json not found"):
        load_msmodelslim(Model().to(device), tmp_path)
    (tmp_path / "quant_model_description.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no \*.safetensors file in"):
        load_msmodelslim(Model().to(device), tmp_path)
