"""matmul_compress_dequant: the in-kernel decompressing GEMM against decompress + int8 matmul + dequant.

Op tests run the op on the ``device`` fixture (the interpreter on CPU, else the GPU/NPU) and compare on the host
against the reference computed from host copies of the same inputs."""
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import atlas_kernels as ak
from atlas_kernels import compress_matmul as cm
from atlas_kernels.autotune import override_config
from atlas_kernels.reference import compress_matmul as ref
from atlas_kernels.testing import assert_equal, kernel_ran  # floats too: kernel and reference round at the same points
from atlas_kernels.testing.meter import TrafficMeter, minimum_bytes

GEMM = "quant_matmul.gemm"
VECTORS = Path(__file__).parent / "data" / "compress"


def weight(n, k, seed=0, sparsity=0.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    return ak.pseudo_sparsify(w, sparsity) if sparsity else w


def activations(m, k, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=g)


def fp32_bits(scale: torch.Tensor) -> torch.Tensor:
    """The zero-extended form: fp32 bits in bits 0..31, upper bits 0 (ops-nn's and ATB's examples)."""
    return (scale.view(torch.int32).to(torch.int64) & 0xFFFFFFFF).to(torch.uint64)


def trans_quant_param(scale: torch.Tensor) -> torch.Tensor:
    """torch_npu's encoding, written from docs/ops.md §1: bits & 0xFFFFE000 | 1 << 46."""
    return (scale.view(torch.int32).to(torch.int64) & 0xFFFFE000) | (1 << 46)


def scales(n, seed=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, n, generator=g) * 2e-3 + 1e-4)


def on(device, *tensors):
    """The tensors on ``device`` (None stays None; a tensor already there, e.g. a strided view, is kept as is)."""
    return tuple(None if t is None else t.to(device) for t in tensors)


def check_op(x1, w, bias, deq_scale, sparsity_note="", device="cpu"):
    """Kernel fp16 output on ``device`` vs the host reference, and the kernel's int32 accumulator vs an exact int
    matmul. x1 may already be on ``device``; the output comes back on the host."""
    x2, idx, info = ak.compress_weight(w)
    d_x1, d_x2, d_idx, d_bias, d_deq = on(device, x1, x2, idx, bias, deq_scale)
    x1 = x1.cpu()
    with kernel_ran(GEMM):
        out = ak.matmul_compress_dequant(d_x1, d_x2, d_idx, d_bias, d_deq, compress_info=info).cpu()
        cw = ak.prepare_compressed_weight(d_x2, d_idx, info)
        acc = cm._gemm(d_x1, cw, None if bias is None else d_bias.reshape(-1), None).cpu()
    exact = ref.int_matmul(x1, w) + (0 if bias is None else bias.reshape(1, -1))
    assert_equal(acc, exact, msg=f"int32 {sparsity_note}")
    assert_equal(out, ref.matmul_compress_dequant(x1, x2, idx, bias, deq_scale, info), msg=sparsity_note)
    return out


@pytest.mark.parametrize("m, k, n", [(1, 256, 128), (16, 320, 128), (5, 100, 200), (17, 64, 300), (300, 96, 40)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8])
def test_matches_reference(device, m, k, n, sparsity):
    # k not a multiple of 64, n not a multiple of 16, m > 256: CANN's limits, lifted
    w = weight(n, k, seed=m + k, sparsity=sparsity)
    bias = torch.randint(-5000, 5000, (n,), dtype=torch.int32)
    check_op(activations(m, k), w, bias, fp32_bits(scales(n)), f"sparsity {sparsity}", device)


@pytest.mark.parametrize("form", ["zero-extended", "sign-extended", "trans_quant_param", "per-tensor", "int64-2d"])
def test_deq_scale_forms(device, form):
    m, k, n = 4, 64, 128
    s = scales(n)
    if form == "sign-extended":  # the aclnn doc's form; a negative scale sets every upper bit
        s[0, :8] = -s[0, :8]
        deq = s.view(torch.int32).to(torch.int64)
    elif form == "trans_quant_param":
        deq = trans_quant_param(s).to(torch.uint64)
        s = (s.view(torch.int32) & -8192).view(torch.float32)  # what the encoded form keeps
    elif form == "per-tensor":
        s = s[:, :1]
        deq = fp32_bits(s)
    elif form == "int64-2d":
        deq = fp32_bits(s).view(torch.int64)
    else:
        deq = fp32_bits(s)
    w = weight(n, k, seed=3, sparsity=0.5)
    x1 = activations(m, k)
    bias = torch.randint(-100, 100, (1, n), dtype=torch.int32)
    out = check_op(x1, w, bias, deq, device=device)
    expected = ((ref.int_matmul(x1, w) + bias).float() * s).half()
    assert_equal(out, expected)


def test_no_bias_and_strided_x1(device):
    m, k, n = 6, 96, 130
    w = weight(n, k, seed=4, sparsity=0.5)
    # strided rows, a transposed view: the views are taken on the device
    for x1 in (activations(2 * m, k).to(device)[::2], activations(k, m).to(device).t()):
        check_op(x1, w, None, fp32_bits(scales(n)), device=device)


@given(m=st.integers(1, 40), k=st.integers(1, 200), n=st.integers(1, 300),
       sparsity=st.sampled_from([0.0, 0.3, 0.5, 0.9]), bias=st.booleans(),
       block=st.sampled_from([(16, 128, 32), (32, 256, 64), (64, 128, 128)]), seed=st.integers(0, 2**16))
def test_hypothesis(device, m, k, n, sparsity, bias, block, seed):
    w = weight(n, k, seed, sparsity)
    x1 = activations(m, k, seed + 1)
    b = torch.randint(-1000, 1000, (n,), dtype=torch.int32) if bias else None
    cfg = {"BLOCK_M": block[0], "BLOCK_N": block[1], "BLOCK_K": block[2], "GROUP_M": 2}
    with override_config(GEMM, cfg):
        check_op(x1, w, b, fp32_bits(scales(n, seed)), device=device)


@pytest.mark.host  # the layout is built on the host and read back here; no launch
def test_transcoded_layout_is_lossless_and_compact():
    w = weight(200, 96, seed=5, sparsity=0.5)
    cw = cm.transcode(w)
    # decode the layout on the host, straight from its definition
    k, n = cw.k, cw.n
    bits = ((cw.mask.to(torch.int32)[:, :, None] >> torch.arange(8)) & 1).reshape(k, -1)[:, :n].bool()
    b = torch.zeros(k, n, dtype=torch.int8)
    b[bits] = cw.values[:cw.nnz]
    assert torch.equal(b, w.t())
    for r, c in [(0, 0), (5, 1), (95, 1)]:
        assert cw.offsets[r, c] == int(bits[:r].sum() + bits[r, :c * cm.CHUNK].sum())
    assert cw.nbytes == cw.nnz + k * cw.mask.shape[1] + 4 * k * cw.offsets.shape[1]
    assert cw.ratio < 0.75


def test_official_vectors_through_the_op(device):
    """CANN's own compressed bytes (all-zero W) as the op sees them in torch_npu's and ops-nn's examples."""
    x2 = torch.from_numpy(np.fromfile(VECTORS / "opplugin_k256_n128_weight.bin", np.int8))
    idx = torch.tensor([51, -128, 0, 0, 0, 0, 0, 0], dtype=torch.int8)
    bias = torch.arange(128, dtype=torch.int32).reshape(1, 128)
    deq = trans_quant_param(torch.ones(1, 128)).to(torch.uint64)
    with kernel_ran(GEMM):
        out = ak.npu_matmul_compress_dequant(*on(device, torch.ones(16, 256, dtype=torch.int8), x2, idx, bias, deq))
    assert_equal(out.cpu(), bias.expand(16, 128).half())
    x2 = torch.from_numpy(np.fromfile(VECTORS / "opsnn_k320_n128_weight.bin", np.int8))
    idx = torch.from_numpy(np.fromfile(VECTORS / "opsnn_k320_n128_index.bin", np.int8))
    with kernel_ran(GEMM):
        out = ak.matmul_compress_dequant(*on(device, torch.ones(16, 320, dtype=torch.int8), x2, idx,
                                             torch.zeros(128, dtype=torch.int32),
                                             torch.full((1, 128), 0x3F800000, dtype=torch.int64)),
                                         compress_info=[8, 8, 320, 128, 1])
    assert_equal(out.cpu(), torch.zeros(16, 128, dtype=torch.float16))


def _seed_style_call(m, k, n, device):
    """The torch_npu-style call of the seed example: msModelSlim output + npu_matmul_compress_dequant."""
    w = weight(n, k, seed=7, sparsity=0.5)
    x2, idx, info = ak.compress_weight(w)
    assert info.tolist() == [8, 8, k, n, 1]
    x1 = activations(m, k)
    bias = torch.randint(-1000, 1000, (1, n), dtype=torch.int32)
    deq = trans_quant_param(scales(n)).to(torch.uint64)
    with kernel_ran(GEMM):
        out = ak.npu_matmul_compress_dequant(*on(device, x1, x2, idx, bias, deq)).cpu()
    assert_equal(out, ref.matmul_compress_dequant(x1, x2, idx, bias, deq, info))


def test_seed_example_512x1024x1024(device):
    _seed_style_call(512, 1024, 1024, device)


@pytest.mark.interpreter("the traffic meter counts the interpreter's loads and stores")
def test_meter_each_compressed_byte_once_and_below_dense():
    """m <= 16 at 50% pseudo-sparsity: bytes moved <= 0.75x quant_matmul's on the dense weight, and <= 0.75x
    what any dense int8 GEMM must move at least; the exact count shows each compressed byte is read once."""
    m, k, n = 16, 1024, 1024
    w = weight(n, k, seed=8, sparsity=0.5)
    x2, idx, info = ak.compress_weight(w)
    x1, bias, deq = activations(m, k), torch.zeros(n, dtype=torch.int32), fp32_bits(scales(n))
    cw = ak.prepare_compressed_weight(x2, idx, info)
    bn = 256
    with override_config(GEMM, {"BLOCK_M": 16, "BLOCK_N": bn, "BLOCK_K": 128, "GROUP_M": 8}), kernel_ran(GEMM), \
            TrafficMeter() as meter:
        out = ak.matmul_compress_dequant(x1, x2, idx, bias, deq, compress_info=info)
    assert meter.stored == out.numel() * 2, "only the output is written: no dense weight, no scratch"
    n_tiles = -(-n // bn)
    # every nonzero and mask byte once; offsets and x1 once per n-tile; bias, scale (low words), output once
    expected = cw.nnz + cw.mask.numel() + n_tiles * k * (4 + m) + 4 * n + 4 * n + 2 * m * n
    assert meter.loaded + meter.stored == expected
    dense_floor = minimum_bytes([x1, w, bias, deq.view(torch.int32)[:, ::2]], out)
    assert meter.total <= 0.75 * dense_floor, meter.total / dense_floor
    with kernel_ran(GEMM), TrafficMeter() as dense:  # quant_matmul on the dense weight, same m
        dense_out = ak.quant_matmul(x1, w.t(), deq.view(torch.int32)[:, ::2].reshape(-1).view(torch.float32),
                                    bias=bias, output_dtype=torch.float16)
    assert meter.total <= 0.75 * dense.total, meter.total / dense.total
    assert dense_out.shape == out.shape


def test_empty_m(device):
    w = weight(40, 64, seed=13)
    x2, idx, info = ak.compress_weight(w)
    out = ak.matmul_compress_dequant(*on(device, activations(0, 64), x2, idx, None, fp32_bits(scales(40))),
                                     compress_info=info)
    assert out.shape == (0, 40) and out.dtype == torch.float16 and out.device.type == torch.device(device).type


def test_transcode_is_cached_per_x2(device, monkeypatch):
    # uniform random bytes do not compress: every block is stored raw, so two weights give equal-size x2
    w, w2 = weight(64, 128, seed=9), weight(64, 128, seed=10)
    x2, idx, info = ak.compress_weight(w)
    x2b, idx2, _ = ak.compress_weight(w2)
    assert x2b.numel() == x2.numel()
    calls = []
    real = cm.decompress_weight
    monkeypatch.setattr(cm, "decompress_weight", lambda *a: calls.append(1) or real(*a))
    x1, deq = activations(3, 128), fp32_bits(scales(64))
    d_x1, x2, idx, d_deq = on(device, x1, x2, idx, deq)
    with kernel_ran(GEMM):
        first = ak.matmul_compress_dequant(d_x1, x2, idx, None, d_deq, compress_info=info).cpu()
        ak.matmul_compress_dequant(d_x1, x2, idx, None, d_deq, compress_info=info)
    assert len(calls) == 1
    assert ak.prepare_compressed_weight(x2, idx, info) is ak.prepare_compressed_weight(x2, idx, info)
    assert_equal(first, (ref.int_matmul(x1, w).float() * ref.deq_scale_to_float(deq)).half())
    # an in-place update of x2 (a new weight loaded into the same buffer) is seen
    x2.copy_(x2b)
    idx.copy_(idx2)
    with kernel_ran(GEMM):
        second = ak.matmul_compress_dequant(d_x1, x2, idx, None, d_deq, compress_info=info).cpu()
    assert len(calls) == 2
    assert_equal(second, (ref.int_matmul(x1, w2).float() * ref.deq_scale_to_float(deq)).half())


def test_torch_compile_traces(device):
    w = weight(128, 64, seed=11, sparsity=0.5)
    x2, idx, info = ak.compress_weight(w)
    x1, bias, deq = activations(4, 64), torch.ones(128, dtype=torch.int32), fp32_bits(scales(128))
    info_list = info.tolist()
    d_x2, d_idx, d_bias, d_deq = on(device, x2, idx, bias, deq)

    def f(a):
        return ak.matmul_compress_dequant(a, d_x2, d_idx, d_bias, d_deq, compress_info=info_list) * 2

    with kernel_ran(GEMM):
        out = torch.compile(f, fullgraph=True, backend="aot_eager")(x1.to(device))
    assert_equal(out.cpu(), ref.matmul_compress_dequant(x1, x2, idx, bias, deq, info) * 2)


# ---------------------------------------------------------------- errors
def _good(m=4, k=256, n=128, device="cpu"):
    w = weight(n, k, seed=12, sparsity=0.5)
    x2, idx, info = ak.compress_weight(w)
    x1, x2, idx, bias, deq = on(device, activations(m, k), x2, idx, torch.zeros(n, dtype=torch.int32),
                                fp32_bits(scales(n)))
    return dict(x1=x1, x2=x2, compress_index=idx, bias=bias, deq_scale=deq, compress_info=info.tolist())


def _call(device="cpu", **kw):
    """The op on _good()'s arguments with ``kw`` replacing some; every tensor argument moved to ``device``."""
    args = _good(device=device)
    args.update({k: v.to(device) if isinstance(v, torch.Tensor) and k != "compress_info" else v
                 for k, v in kw.items()})
    extra = {k: args.pop(k) for k in ("offset_w", "offset_x") if k in args}
    return ak.matmul_compress_dequant(args.pop("x1"), args.pop("x2"), args.pop("compress_index"), args.pop("bias"),
                                      args.pop("deq_scale"), compress_info=args.pop("compress_info"), **extra)


def _corrupt_header():
    g = _good()
    x2 = g["x2"].clone()
    x2[0] = 0x11  # engine 0's header byte 0 must be 0xA8 or 0x88
    return x2


def _index_past_end():
    g = _good()
    idx = g["compress_index"].clone()
    idx[4] = 100  # block offset 100 * 128 bytes: beyond x2
    return idx


@pytest.mark.parametrize("kw, exc, match", [
    (lambda: {"x2": _good()["x2"][:-256]}, ValueError, "x2 is truncated"),
    (lambda: {"compress_index": _index_past_end()}, ValueError, "x2 is truncated or compress_index entry 0"),
    (lambda: {"x2": _corrupt_header()}, ValueError, "header"),
    (lambda: {"compress_info": [8, 8, 320, 128, 1]}, ValueError, "compress_info says k = 320 but x1 has k = 256"),
    (lambda: {"compress_info": [8, 8, 256, 256, 1]}, ValueError, "compress_index must have 16 bytes"),
    (lambda: {"compress_info": [16, 8, 256, 128, 1]}, ValueError, r"compress_info must be \[8, 8, k, n, 1\]"),
    (lambda: {"compress_index": _good()["compress_index"][:4]}, ValueError, "compress_index must have 8 bytes"),
    (lambda: {"offset_w": torch.zeros(128, dtype=torch.int8)}, ValueError, "offset_w must be None"),
    (lambda: {"offset_x": 3}, ValueError, "offset_x must be 0"),
    (lambda: {"x1": activations(4, 256).int()}, TypeError, "x1 must have dtype int8"),
    (lambda: {"x2": _good()["x2"].view(torch.uint8)}, TypeError, "x2 must have dtype int8"),
    (lambda: {"bias": torch.zeros(128)}, TypeError, "bias must have dtype int32"),
    (lambda: {"bias": torch.zeros(2, 128, dtype=torch.int32)}, ValueError, r"bias must have shape \(128,\)"),
    (lambda: {"deq_scale": torch.ones(1, 128)}, TypeError, "deq_scale must have dtype uint64, int64"),
    (lambda: {"deq_scale": torch.ones(1, 64, dtype=torch.int64)}, ValueError, r"deq_scale must have shape \(1, 128\)"),
])
def test_errors(device, kw, exc, match):
    with pytest.raises(exc, match=match):
        _call(device, **kw())


# ---------------------------------------------------------------- argument forms of torch_npu's binding
_INFO_FORMS = {
    "tuple": tuple, "numpy": np.array, "numpy-int32": lambda v: np.array(v, dtype=np.int32),
    "numpy-ints": lambda v: [np.int64(i) for i in v], "tensor": torch.tensor,
    "tensor-int32": lambda v: torch.tensor(v, dtype=torch.int32),
}


@pytest.mark.parametrize("form", sorted(_INFO_FORMS))
def test_compress_info_forms_match_the_list_form(device, form):
    """compress_info (int[]) as a tuple, a numpy integer array, a list of numpy ints or an integer host tensor
    gives the list form's result, through the kernel."""
    g = _good(device=device)
    args = (g["x1"], g["x2"], g["compress_index"], g["bias"], g["deq_scale"])
    with kernel_ran(GEMM):
        expected = ak.matmul_compress_dequant(*args, compress_info=g["compress_info"])
    with kernel_ran(GEMM):
        out = ak.matmul_compress_dequant(*args, compress_info=_INFO_FORMS[form](g["compress_info"]))
    assert torch.equal(out, expected)
    assert expected.abs().max() > 0, "degenerate output"


@pytest.mark.parametrize("offset_x", [None, 0, np.int64(0), np.int32(0), torch.tensor(0)],
                         ids=["none", "int", "np-int64", "np-int32", "tensor-0d"])
def test_npu_spelling_offset_x_forms(device, offset_x):
    """torch_npu's `int? offset_x`: None, or 0 as a Python or numpy integer or a 0-d integer tensor, positional
    or keyword (x1, x2, compress_index, bias, scale, offset_w, offset_x)."""
    g = _good(device=device)
    args = (g["x1"], g["x2"], g["compress_index"], g["bias"], g["deq_scale"])
    with kernel_ran(GEMM):
        expected = ak.npu_matmul_compress_dequant(*args)
    with kernel_ran(GEMM):
        by_keyword = ak.npu_matmul_compress_dequant(*args, offset_x=offset_x)
    with kernel_ran(GEMM):
        by_position = ak.npu_matmul_compress_dequant(*args, None, offset_x)
    assert torch.equal(by_keyword, expected) and torch.equal(by_position, expected)


@pytest.mark.parametrize("call, exc, match", [
    (lambda d: _call(d, compress_info=np.array([8.0, 8, 256, 128, 1])), TypeError, "compress_info must be a list of 5"),
    (lambda d: _call(d, compress_info=[8, 8, 256, 128, True]), TypeError, "compress_info must be a list of 5"),
    (lambda d: _call(d, compress_info=torch.tensor([8.0, 8, 256, 128, 1])), TypeError, "compress_info must be a list"),
    (lambda d: _call(d, offset_x=0.0), TypeError, "offset_x must be an int"),
    (lambda d: _call(d, offset_x=np.int64(2)), ValueError, "offset_x must be 0"),
    (lambda d: ak.npu_matmul_compress_dequant(*list(_good(device=d).values())[:5], offset_x=torch.tensor([0])), TypeError,
     "offset_x must be an int"),
    (lambda d: ak.npu_matmul_compress_dequant(*list(_good(device=d).values())[:5], offset_x=False), TypeError,
     "offset_x must be an int"),
    (lambda d: ak.npu_matmul_compress_dequant(*list(_good(device=d).values())[:5], offset_x=torch.tensor(3)), ValueError,
     "offset_x must be 0"),
])
def test_argument_form_errors_name_the_argument(device, call, exc, match):
    with pytest.raises(exc, match=match):
        call(device)
