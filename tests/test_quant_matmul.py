"""quant_matmul: the fused kernel against the reference for every dtype row, layout and broadcast; errors; meter.

Op tests take the ``device`` fixture: inputs are built on the host, launched on ``device`` (the interpreter on CPU,
else the GPU/NPU) and the output is compared on the host with the pure-torch reference. The byte counts of the
traffic meter exist only in the interpreter: a test that also checks results asserts them on the CPU run only."""

import contextlib

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import atlas_kernels as ak
from atlas_kernels.autotune import override_config
from atlas_kernels.reference import int4_pack as ref_pack
from atlas_kernels.reference import quant_matmul as ref
from atlas_kernels.testing import assert_equal, kernel_ran  # floats too: kernel and reference round at the same points

KERNEL = "quant_matmul.gemm"
A8W4 = "quant_matmul.gemm_a8w4"  # the group-scaled kernel (int8 x1, int4 x2, per-k-group scales)
I64, F32, BF16, F16, I32, I8 = torch.int64, torch.float32, torch.bfloat16, torch.float16, torch.int32, torch.int8


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def int8(*shape, seed=0):
    return torch.randint(-128, 128, shape, dtype=I8, generator=gen(seed))


def make_args(m, n, scale_dtype, bias_dtype=None, offset=False, pertoken=False, scale_len=None, seed=1):
    """scale/offset/pertoken/bias sized so that outputs land in a useful range (int8 output: within +-300)."""
    g = gen(seed)
    scale = torch.rand(scale_len or n, generator=g) * 2e-3 + 1e-4
    if scale_dtype == I64:
        scale = ak.trans_quant_param(scale, torch.randn(scale.shape, generator=g) * 20 if offset == "embedded" else None)
    else:
        scale = scale.to(scale_dtype)
    kw = {}
    if offset is True:
        kw["offset"] = torch.randn(n, generator=g) * 20
    if pertoken:
        kw["pertoken_scale"] = torch.rand(m, generator=g) + 0.5
    if bias_dtype == I32:
        kw["bias"] = torch.randint(-20000, 20000, (n,), dtype=I32, generator=g)
    elif bias_dtype is not None:
        kw["bias"] = (torch.randn(n, generator=g) * 10).to(bias_dtype)
    return scale, kw


def on(device, *tensors):
    """The tensors on ``device`` (None stays None; a tensor already there, e.g. a strided view, is kept as is)."""
    return tuple(None if t is None else t.to(device) for t in tensors)


def metered(device):
    """A TrafficMeter in the interpreter (it counts the interpreter's loads and stores); natively a null context
    that yields None, and the byte assertions are left to the CPU run."""
    from atlas_kernels.testing.meter import TrafficMeter
    return TrafficMeter() if device.type == "cpu" else contextlib.nullcontext()


def check(x1, x2, scale, out_dtype, msg="", device="cpu", **kw):
    """The kernel on ``device`` (operands moved there; x1/x2 may already be there) against the host reference;
    returns the output on the host."""
    d_kw = {name: None if t is None else t.to(device) for name, t in kw.items()}
    with kernel_ran(KERNEL):
        out = ak.quant_matmul(*on(device, x1, x2, scale), output_dtype=out_dtype, **d_kw).cpu()
    expected = ref.quant_matmul(x1.cpu(), x2.cpu(), scale, output_dtype=out_dtype, **kw)
    assert_equal(out, expected, msg=msg)
    return out


# Every valid int8 row of the spec: (output, scale dtypes, bias dtypes, offset allowed, pertoken)
ROWS = ([(F16, s, b, False, False) for s in (I64, F32) for b in (None, I32)]
        + [(I8, s, b, o, False) for s in (I64, F32) for b in (None, I32) for o in (False, True)]
        + [(I8, I64, I32, "embedded", False)]
        + [(BF16, s, b, False, p) for s in (F32, BF16) for b in (None, I32, BF16, F32) for p in (False, True)]
        + [(F16, F32, b, False, True) for b in (None, I32, F16, F32)]
        + [(I32, s, b, False, False) for s in (F32, BF16) for b in (None, I32)])


@pytest.mark.parametrize("out_dtype, scale_dtype, bias_dtype, offset, pertoken", ROWS,
                         ids=lambda v: str(v).replace("torch.", ""))
def test_every_dtype_row(device, out_dtype, scale_dtype, bias_dtype, offset, pertoken):
    m, k, n = 19, 70, 40
    x1, x2 = int8(m, k, seed=2), int8(k, n, seed=3)
    scale, kw = make_args(m, n, scale_dtype, bias_dtype, offset, pertoken)
    out = check(x1, x2, scale, out_dtype, device=device, **kw)
    if out_dtype == I8:
        assert out.min() == -128 or out.max() == 127 or out.unique().numel() > 30, "requant range not exercised"


@pytest.mark.parametrize("scale_len", [1, 40])
def test_scalar_and_per_channel_scale(device, scale_len):
    x1, x2 = int8(5, 64), int8(64, 40, seed=1)
    scale, kw = make_args(5, 40, F32, I32, offset=False, scale_len=scale_len)
    check(x1, x2, scale, F16, device=device, **kw)
    check(x1, x2, scale.to(BF16), BF16, device=device, **kw)


def test_scale_truncated_exactly_where_torch_npu_truncates(device):
    # scale bits 0x3F801FFF = 1 + 2**-10 - 2**-23: torch_npu keeps 1.0; acc = 1000 -> 1000 (truncated) or 1001 (fp16
    # of 1000.98, full precision)
    scale = torch.tensor([0x3F801FFF], dtype=torch.int32).view(F32)
    x1 = torch.ones(3, 40, dtype=I8)
    x2 = torch.full((40, 8), 25, dtype=I8)
    d_x1, d_x2, d_scale, d_ones, d_encoded = on(device, x1, x2, scale, torch.ones(3), ak.trans_quant_param(scale))
    with kernel_ran(KERNEL):
        truncated = ak.quant_matmul(d_x1, d_x2, d_scale, output_dtype=F16).cpu()
        full = ak.quant_matmul(d_x1, d_x2, d_scale, output_dtype=F16, pertoken_scale=d_ones).cpu()
        encoded = ak.quant_matmul(d_x1, d_x2, d_encoded, output_dtype=F16).cpu()
    assert (truncated == 1000).all() and (encoded == 1000).all()
    assert (full == 1001).all()
    assert_equal(truncated, ref.quant_matmul(x1, x2, scale, output_dtype=F16))
    # int8 output truncates too: acc 100 * (0.125 + low bits) -> rint(12.5) = 12 truncated, 13 at full precision
    scale8 = torch.tensor([0x3E001FFF], dtype=torch.int32).view(F32)
    x2b = torch.full((40, 8), 5, dtype=I8)
    x1b = torch.full((3, 40), 1, dtype=I8)
    x1b[:, 20:] = 0  # acc = 100
    with kernel_ran(KERNEL):
        out8 = ak.quant_matmul(*on(device, x1b, x2b, scale8)).cpu()
    assert (out8 == 12).all(), out8
    assert float(100 * scale8) > 12.5


def test_int8_requant_rounds_half_to_even_and_saturates(device):
    # scale 0.5 on acc = -9..9 gives every tie -4.5..4.5; offsets with ties; big values saturate at +-128/127
    acc = torch.arange(-9, 10)
    x1 = torch.zeros(len(acc), 2, dtype=I8)
    x1[:, 0] = acc.to(I8)
    x2 = torch.tensor([[1, 100, -100, 1], [0, 0, 0, 1]], dtype=I8)
    scale = torch.tensor([0.5], dtype=F32)
    for offset in (None, torch.tensor([2.5, 0.0, 0.0, -3.5]), torch.tensor([300.0, -1000.0, 100.0, 0.5])):
        with kernel_ran(KERNEL):
            out = ak.quant_matmul(*on(device, x1, x2, scale), offset=None if offset is None else offset.to(device))
        expected = ref.quant_matmul(x1, x2, scale, offset=offset)
        assert_equal(out.cpu(), expected)
    with kernel_ran(KERNEL):
        ties = ak.quant_matmul(*on(device, x1, x2, scale)).cpu()[::2, 0]  # acc -9, -7, ..., 9 -> -4.5, -3.5, ..., 4.5
    assert ties.tolist() == [-4, -4, -2, -2, 0, 0, 2, 2, 4, 4]


def test_int64_scale_offset_is_decoded_in_the_kernel(device):
    m, k, n = 8, 64, 48
    x1, x2 = int8(m, k), int8(k, n, seed=5)
    scale, kw = make_args(m, n, I64, I32, offset="embedded")
    out = check(x1, x2, scale, I8, device=device, **kw)
    without = ref.quant_matmul(x1, x2, ak.trans_quant_param(ak.decode_quant_param(scale)[0]), output_dtype=I8, **kw)
    assert not torch.equal(out, without), "the embedded offset must change the result"
    # an offset tensor overrides the embedded one
    check(x1, x2, scale, I8, device=device, offset=torch.full((n,), -7.0), **kw)


@pytest.mark.host  # trans_quant_param is torch arithmetic on the host: no kernel
def test_trans_quant_param_bits():
    scale = torch.tensor([1 / 3, -2.0, 1e-3, 0x3F801FFF], dtype=F32)
    scale[3] = torch.tensor([0x3F801FFF], dtype=torch.int32).view(F32)
    offset = torch.tensor([-1.0, 255.7, -300.0, 2.5])
    q = ak.trans_quant_param(scale, offset)
    bits = scale.view(torch.int32).to(I64) & 0xFFFFFFFF
    assert q.dtype == I64
    assert torch.equal(q & 0xFFFFFFFF, bits & 0xFFFFE000)
    assert ((q >> 46) & 1).all()
    assert ((q >> 37) & 0x1FF).tolist() == [0x1FF, 255, 0x100, 2]  # -1, clip(256)=255, clip(-300)=-256, rint(2.5)=2
    s, off = ak.decode_quant_param(q)
    assert off.tolist() == [-1, 255, -256, 2]
    assert torch.equal(s, ref.truncate_scale(scale))
    # round_mode=1 rounds the mantissa to 10 bits (0x3F801FFF -> 0x3F802000; 1/3 = 0x3EAAAAAB -> 0x3EAAA000)
    r = ak.npu_trans_quant_param(scale, round_mode=1) & 0xFFFFFFFF
    assert r[3].item() == 0x3F802000 and r[0].item() == 0x3EAAA000
    assert ak.trans_quant_param(torch.ones(1, 5), torch.zeros(5)).shape == (1, 5)
    assert ak.trans_quant_param(torch.ones(5)).tolist() == [(1 << 46) | 0x3F800000] * 5


def test_broadcast_as_in_torch_npu_example(device):
    x1 = torch.randint(-1, 1, (1, 256, 768), dtype=I8, generator=gen(7))
    x2 = torch.randint(-1, 1, (31, 768, 16), dtype=I8, generator=gen(8))
    scale = torch.randn(16, generator=gen(9)).abs() * 0.05
    offset = torch.randn(16, generator=gen(10))
    bias = torch.randint(-1, 1, (31, 1, 16), dtype=I32, generator=gen(11))
    with override_config(KERNEL, {"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 256, "GROUP_M": 8}):
        out = check(x1, x2, scale, None, device=device, offset=offset, bias=bias)
    assert out.shape == (31, 256, 16) and out.dtype == I8


@pytest.mark.parametrize("s1, s2", [((2, 1, 3), (1, 4, 1)), ((3,), (2, 1, 1, 1)), ((1, 2, 1, 2), (2, 1, 2, 1)), ((), (3,))])
def test_batch_broadcast_2d_to_6d(device, s1, s2):
    m, k, n = 5, 40, 24
    x1, x2 = int8(*s1, m, k, seed=1), int8(*s2, k, n, seed=2)
    scale, kw = make_args(m, n, F32, BF16, pertoken=True)
    out = check(x1, x2, scale, BF16, device=device, **kw)
    assert out.shape == (*torch.broadcast_shapes(s1, s2), m, n)


def test_transposed_and_strided_x2_read_in_place(device):
    m, k, n = 16, 96, 64
    x1 = int8(m, k)
    base = int8(n, k, seed=4).to(device)
    scale, kw = make_args(m, n, I64, I32)
    with metered(device) as t_meter:
        check(x1, base.t(), scale, F16, device=device, **kw)
    with metered(device) as c_meter:
        check(x1, base.t().contiguous(), scale, F16, device=device, **kw)
    if t_meter is not None:  # the interpreter
        assert t_meter.total == c_meter.total, "a transposed x2 must be read in place, not copied"
    batched = int8(3, n, k, seed=6).to(device).transpose(-1, -2)
    check(int8(3, m, k), batched, scale, F16, device=device, **kw)
    check(x1.to(device)[:, ::2], int8(k, 2 * n, seed=7).to(device)[::2, ::2], scale, F16, device=device,
          **kw)  # non-unit strides on both


def test_nz_x2(device):
    m, k, n = 24, 100, 70
    x1, x2 = int8(m, k), int8(k, n, seed=9)
    nz = ak.nd_to_nz(x2.to(device))
    assert nz.shape == (3, 7, 16, 32)
    scale, kw = make_args(m, n, F32, I32)
    d_x1, d_scale, d_bias = on(device, x1, scale, kw["bias"])
    with kernel_ran(KERNEL):
        out = ak.quant_matmul(d_x1, nz, d_scale, output_dtype=F16, x2_layout="nz", x2_shape=(k, n), bias=d_bias).cpu()
        padded = ak.quant_matmul(d_x1, nz, d_scale[:1], output_dtype=I32, x2_layout="nz").cpu()
    assert_equal(out, ref.quant_matmul(x1, x2, scale, output_dtype=F16, **kw))
    assert padded.shape == (m, 96)
    assert_equal(padded[:, :n], ref.quant_matmul(x1, x2, scale, output_dtype=I32))
    assert (padded[:, n:] == 0).all()
    with kernel_ran(KERNEL):  # batched x1 against one NZ weight
        x1b = int8(2, 3, m, k, seed=3)
        out_b = ak.quant_matmul(x1b.to(device), nz, d_scale, output_dtype=F16, x2_layout="nz", x2_shape=(k, n),
                                bias=d_bias).cpu()
    assert_equal(out_b, ref.quant_matmul(x1b, x2, scale, output_dtype=F16, **kw))


def int4_operands(m, k, n, transposed, seed=0):
    """(x1 packed (m, k/8), x2 packed (k, n/8) or the (k/8, n) transposed view, unpacked x1, unpacked x2)."""
    a = torch.randint(-8, 8, (m, k), dtype=I32, generator=gen(seed))
    b = torch.randint(-8, 8, (k, n), dtype=I32, generator=gen(seed + 1))
    x2 = ref_pack.pack_int4(b.t().contiguous()).t() if transposed else ref_pack.pack_int4(b)
    return ref_pack.pack_int4(a), x2, a, b


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("m, k, n", [(1, 64, 32), (20, 264, 48), (33, 520, 40)])
def test_int4(device, m, k, n, transposed):
    x1, x2, a, b = int4_operands(m, k, n, transposed)
    assert x2.shape == ((k // 8, n) if transposed else (k, n // 8))
    scale, kw = make_args(m, n, I64, I32)
    out = check(x1, x2, scale, F16, device=device, **kw)
    # the unpacked values through the int8 path give the same result: the int4 prologue is exact
    assert_equal(out, ref.quant_matmul(a.to(I8), b.to(I8), scale, output_dtype=F16, **kw))
    scale_f, kw = make_args(m, n, F32, I32, pertoken=True)
    check(x1, x2, scale_f, BF16, device=device, **kw)
    check(x1, x2, scale_f, F16, device=device, **kw)
    check(x1, x2, scale_f, F16, device=device, pertoken_scale=kw["pertoken_scale"])


def test_k_not_a_multiple_of_any_block_and_m_1(device):
    for m, k, n in ((1, 33, 17), (1, 1, 1), (3, 257, 130), (70, 131, 5)):
        x1, x2 = int8(m, k, seed=k), int8(k, n, seed=n)
        scale, kw = make_args(m, n, F32, I32)
        check(x1, x2, scale, F16, msg=f"{(m, k, n)}", device=device, **kw)
        check(x1, x2, scale, I32, msg=f"{(m, k, n)}", device=device, bias=kw["bias"])


CONFIGS = [{"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 1},
           {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 2},
           {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 256, "GROUP_M": 8}]


@given(m=st.integers(1, 40), k=st.integers(1, 130), n=st.integers(1, 80), row=st.sampled_from(ROWS),
       layout=st.sampled_from(["nd", "transposed", "nz", "batched"]), cfg=st.sampled_from(CONFIGS),
       seed=st.integers(0, 2**16))
def test_hypothesis_shapes_modes_layouts(device, m, k, n, row, layout, cfg, seed):
    out_dtype, scale_dtype, bias_dtype, offset, pertoken = row
    x1 = int8(m, k, seed=seed)
    x2 = int8(n, k, seed=seed + 1).t() if layout == "transposed" else int8(k, n, seed=seed + 1)
    if layout == "batched":
        x1 = int8(2, 1, m, k, seed=seed)
        x2 = int8(3, k, n, seed=seed + 1)
    scale, kw = make_args(m, n, scale_dtype, bias_dtype, offset, pertoken, seed=seed)
    with override_config(KERNEL, cfg):
        if layout == "nz":
            d_kw = {name: t.to(device) for name, t in kw.items()}
            with kernel_ran(KERNEL):
                out = ak.quant_matmul(x1.to(device), ak.nd_to_nz(x2.to(device)), scale.to(device),
                                      output_dtype=out_dtype, x2_layout="nz", x2_shape=(k, n), **d_kw).cpu()
            assert_equal(out, ref.quant_matmul(x1, x2, scale, output_dtype=out_dtype, **kw))
        else:
            check(x1, x2, scale, out_dtype, device=device, **kw)


@given(m=st.integers(1, 24), kw_=st.integers(1, 40), n_w=st.integers(1, 12), transposed=st.booleans(),
       cfg=st.sampled_from([{"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 256, "GROUP_M": 1},
                            {"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 512, "GROUP_M": 4}]))
def test_hypothesis_int4(device, m, kw_, n_w, transposed, cfg):
    x1, x2, _, _ = int4_operands(m, 8 * kw_, 8 * n_w, transposed, seed=m + kw_)
    scale, kw = make_args(m, 8 * n_w, F32, I32)
    with override_config(KERNEL, cfg):
        check(x1, x2, scale, F16, device=device, **kw)


def test_npu_spellings_and_torch_compile(device):
    m, k, n = 8, 64, 32
    x1, x2 = int8(m, k), int8(k, n, seed=2)
    scale, kw = make_args(m, n, F32, I32)
    d_x1, d_x2, d_scale, d_bias = on(device, x1, x2, scale, kw["bias"])
    q = ak.npu_trans_quant_param(d_scale)
    with kernel_ran(KERNEL):
        out = ak.npu_quant_matmul(d_x1, d_x2, q, bias=d_bias, output_dtype=F16).cpu()
    assert_equal(out, ref.quant_matmul(x1, x2, scale, output_dtype=F16, **kw))

    def f(a, b, s, bias):
        return ak.quant_matmul(a, b, ak.trans_quant_param(s), bias=bias, output_dtype=F16).float() * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    with kernel_ran(KERNEL):
        got = compiled(d_x1, d_x2, d_scale, d_bias).cpu()
    assert_equal(got, ref.quant_matmul(x1, x2, scale, output_dtype=F16, **kw).float() * 2)


@pytest.mark.interpreter("the traffic meter counts the interpreter's loads and stores")
def test_decode_reads_each_weight_byte_once():
    from atlas_kernels.testing.meter import TrafficMeter, minimum_bytes
    k, n = 512, 2048
    x2 = int8(k, n, seed=1)
    for m in (1, 16):
        x1 = int8(m, k)
        scale, kw = make_args(m, n, I64, I32)
        with TrafficMeter() as meter, kernel_ran(KERNEL):
            out = ak.quant_matmul(x1, x2, scale, output_dtype=F16, **kw)
        floor = minimum_bytes([x1, x2, scale, kw["bias"]], out)
        assert meter.loaded >= k * n, "the weight must be read"
        assert meter.total <= 1.1 * floor, (m, meter.total, floor)


@pytest.mark.interpreter("the traffic meter counts the interpreter's loads and stores")
def test_int4_decode_reads_each_packed_word_once():
    from atlas_kernels.testing.meter import TrafficMeter, minimum_bytes
    for transposed in (False, True):
        x1, x2, _, _ = int4_operands(4, 1024, 1024, transposed)
        scale, kw = make_args(4, 1024, I64, I32)
        with TrafficMeter() as meter, kernel_ran(KERNEL):
            out = ak.quant_matmul(x1, x2, scale, output_dtype=F16, **kw)
        assert meter.total <= 1.1 * minimum_bytes([x1, x2, scale, kw["bias"]], out), (transposed, meter.total)


def _bad(**over):
    args = {"x1": int8(4, 32), "x2": int8(32, 8), "scale": torch.ones(8), "offset": None, "pertoken_scale": None,
            "bias": None, "output_dtype": F16}
    args.update(over)
    x1, x2, scale = args.pop("x1"), args.pop("x2"), args.pop("scale")
    return lambda: ak.quant_matmul(x1, x2, scale, **args)


@pytest.mark.parametrize("call, exc, match", [
    (_bad(offset=torch.zeros(8)), ValueError, "offset is only supported with int8 output"),
    (_bad(scale=torch.ones(8, dtype=I64), output_dtype=I32), TypeError, "scale must have dtype float32, bfloat16 for int8 inputs with int32"),
    (_bad(bias=torch.zeros(8, dtype=BF16), output_dtype=I8), TypeError, "bias must have dtype int32 for int8 inputs with int8"),
    (_bad(x2=int8(31, 8)), ValueError, "K mismatch"),
    (_bad(x1=int8(1, 1, 1, 1, 1, 4, 32)), ValueError, "x1 must have 2 to 6 dims"),
    (_bad(x2=int8(1, 1, 1, 1, 1, 32, 8)), ValueError, "x2 must have 2 to 6 dims"),
    (_bad(scale=torch.ones(3)), ValueError, r"scale must have shape \(1,\) or \(8,\)"),
    (_bad(scale=torch.ones(1, 8)), ValueError, "scale must have 1 dims"),
    (_bad(pertoken_scale=torch.ones(5)), ValueError, r"pertoken_scale must have shape \(4,\)"),
    (_bad(pertoken_scale=torch.ones(4), output_dtype=I8), ValueError, "pertoken_scale is not supported with int8"),
    (_bad(pertoken_scale=torch.ones(4, dtype=F16)), TypeError, "pertoken_scale must have dtype float32"),
    (_bad(x1=torch.zeros(4, 32, dtype=torch.uint8)), TypeError, "x1 must have dtype int8, int32"),
    (_bad(x1=torch.zeros(4, 4, dtype=I32), x2=int8(32, 8)), TypeError, "x2 must have the dtype of x1"),
    (_bad(x2=torch.zeros(32, 8, dtype=I32)), ValueError, r"needs group_sizes=\[0, 0, g\]"),
    (_bad(output_dtype=torch.float32), TypeError, "output_dtype must be"),
    (_bad(scale=torch.ones(8, dtype=BF16)), TypeError, "scale must have dtype int64, float32 for int8 inputs with float16"),
    (_bad(scale=torch.ones(8, dtype=F16)), TypeError, "scale must have dtype"),
    (_bad(bias=torch.zeros(8, dtype=F16), output_dtype=BF16), TypeError, "bias must have dtype int32, bfloat16, float32"),
    (_bad(bias=torch.zeros(8, dtype=F32)), TypeError, "bias must have dtype int32 for int8 inputs with float16"),
    (_bad(bias=torch.zeros(7, dtype=I32)), ValueError, r"bias must have shape \(8,\)"),
    (_bad(bias=torch.zeros(2, 1, 8, dtype=I32)), ValueError, "the 3-D form only for a 3-D output"),
    (_bad(x1=int8(2, 4, 32), bias=torch.zeros(3, 1, 8, dtype=I32)), ValueError, r"\(2, 1, 8\)"),
    (_bad(offset=torch.zeros(8, dtype=F16), output_dtype=I8), TypeError, "offset must have dtype float32"),
    (_bad(offset=torch.zeros(3), output_dtype=I8), ValueError, r"offset must have shape \(1,\) or \(8,\)"),
    (_bad(x1=int8(2, 4, 32), x2=int8(3, 32, 8)), ValueError, "do not broadcast"),
    (_bad(x1=torch.zeros(4, 4, dtype=I32), x2=torch.zeros(31, 1, dtype=I32)), ValueError, "K mismatch"),
    (_bad(x1=torch.zeros(4, 4, dtype=I32), x2=torch.zeros(4, 8, dtype=I32), output_dtype=I8), TypeError,
     "float16 or bfloat16 for packed int4"),
    (_bad(x1=torch.zeros(4, 4, dtype=I32), x2=torch.zeros(4, 8, dtype=I32), output_dtype=BF16), ValueError,
     "needs pertoken_scale"),
    (_bad(x1=torch.zeros(2, 4, 4, dtype=I32), x2=torch.zeros(4, 8, dtype=I32)), ValueError, "x1 must have 2 dims"),
    (_bad(x2=torch.zeros(1, 3, 16, 32, dtype=I8), x2_layout="nz"), ValueError, "K mismatch"),
    (_bad(x2=torch.zeros(1, 2, 16, 16, dtype=I8), x2_layout="nz"), ValueError, "NZ x2 must have shape"),
    (_bad(x2=torch.zeros(1, 2, 16, 32, dtype=I8), x2_layout="nz", x2_shape=(32, 40)), ValueError, "x2_shape"),
    (_bad(x2_layout="zn"), ValueError, "x2_layout"),
    (lambda: ak.trans_quant_param(torch.ones(3, dtype=F16)), TypeError, "scale must have dtype float32"),
    (lambda: ak.trans_quant_param(torch.ones(3), torch.ones(2)), ValueError, "offset"),
    (lambda: ak.trans_quant_param(torch.ones(3), round_mode=2), ValueError, "round_mode"),
    (lambda: ak.decode_quant_param(torch.ones(3)), TypeError, "param must have dtype int64"),
])
@pytest.mark.host  # host tensors: every error is raised while validating the arguments, before any launch
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- A8W4: int8 x1, int4 x2, per-group int64 scales
def a8w4_args(m, k, n, g, seed=0, dyadic=False):
    """torch_npu's A8W4 inputs: x1 int8 (m, k), x2 = int4pack of int4 (k, n), scale = trans_quant_param of the
    float32 (k/g, n) group scales, offset (n,), pertoken (m, 1). dyadic: powers of two, so every float is exact."""
    gn = gen(seed)
    x1 = torch.randint(-128, 128, (m, k), dtype=I8, generator=gn)
    x2 = ref_pack.pack_int4(torch.randint(-8, 8, (k, n), dtype=I32, generator=gn))  # = npu_convert_weight_to_int4pack
    if dyadic:
        s = 2.0 ** -torch.randint(8, 14, (k // g, n), generator=gn).float()
        offset = torch.randint(-64, 64, (n,), generator=gn).float() / 4
        pertoken = 2.0 ** -torch.randint(0, 3, (m, 1), generator=gn).float()
    else:
        s = torch.rand(k // g, n, generator=gn) * 1e-3 + 1e-5
        offset = torch.randn(n, generator=gn)
        pertoken = torch.rand(m, 1, generator=gn) + 0.5
    scale = ak.npu_trans_quant_param(s.flatten()).reshape(k // g, n)
    return x1, x2, scale, offset, pertoken


def a8w4_expected(x1, x2, scale, offset, pertoken, out_dtype, g):
    return ref.quant_matmul(x1, x2, scale, offset, pertoken, None, out_dtype, group_k=g)


@pytest.mark.parametrize("out_dtype", [F16, BF16])
def test_a8w4_torch_npu_call_decode(device, out_dtype):
    """The issue's call at m = 1, k = 8192, n = 1024, g = 256; each packed weight byte is read once (the meter: on
    the CPU run)."""
    from atlas_kernels.testing.meter import minimum_bytes
    m, k, n, g = 1, 8192, 1024, 256
    x1, x2, scale, offset, pertoken = a8w4_args(m, k, n, g, seed=3)
    d_x1, d_x2, d_scale, d_offset, d_pertoken = on(device, x1, x2, scale, offset, pertoken)
    with metered(device) as meter, kernel_ran(A8W4):
        out = ak.npu_quant_matmul(d_x1, d_x2, d_scale, offset=d_offset, pertoken_scale=d_pertoken, bias=None,
                                  output_dtype=out_dtype, group_sizes=[0, 0, g]).cpu()
    assert_equal(out, a8w4_expected(x1, x2, scale, offset, pertoken, out_dtype, g))
    assert out.abs().max() > 1, "degenerate output"
    if meter is not None:  # the interpreter
        floor = minimum_bytes([x1, x2, scale, offset, pertoken], out)
        assert meter.loaded >= k * n // 2, "the weight must be read"
        assert meter.total <= 1.10 * floor, (meter.total, floor)


@pytest.mark.parametrize("m, k, n, g, cfg", [
    (5, 192, 40, 64, None),                                                          # n inside one tile
    (20, 256, 136, 128, {"BLOCK_M": 16, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 2}),  # several tiles, 2 steps/group
    (17, 768, 96, 256, {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 512, "GROUP_M": 8}),  # BLOCK_K cut down to g
])
def test_a8w4_group_sums_exact_on_dyadic_inputs(device, m, k, n, g, cfg):
    """Power-of-two scales: the float result is exact, so kernel and reference agree bit for bit (which needs
    every group's int32 sum, the -8 term and the scale row of each group right)."""
    x1, x2, scale, offset, pertoken = a8w4_args(m, k, n, g, seed=m, dyadic=True)
    d_x1, d_x2, d_scale, d_offset, d_pertoken = on(device, x1, x2, scale, offset, pertoken)
    for out_dtype in (F16, BF16):
        with override_config(A8W4, cfg) if cfg else contextlib.nullcontext(), kernel_ran(A8W4):
            out = ak.quant_matmul(d_x1, d_x2, d_scale, offset=d_offset, pertoken_scale=d_pertoken,
                                  output_dtype=out_dtype, group_sizes=[0, 0, g]).cpu()
        assert torch.equal(out, a8w4_expected(x1, x2, scale, offset, pertoken, out_dtype, g)), (out_dtype, cfg)
    # the int32 group sums themselves, through a unit scale per group and 1 offset
    one = ak.trans_quant_param(torch.ones(k // g * n)).reshape(k // g, n)
    with kernel_ran(A8W4):
        got = ak.quant_matmul(d_x1, d_x2, one.to(device), output_dtype=BF16, group_sizes=(0, 0, g)).cpu().float()
    sums = ref.a8w4_group_sums(x1, x2, g).sum(0).float().to(BF16).float()
    assert torch.equal(got, sums)


def test_a8w4_without_offset_and_pertoken_random_scales(device):
    x1, x2, scale, _, _ = a8w4_args(9, 256, 48, 128, seed=5)
    with kernel_ran(A8W4):
        out = ak.quant_matmul(*on(device, x1, x2, scale), output_dtype=F16, group_sizes=[0, 0, 128]).cpu()
    assert_equal(out, a8w4_expected(x1, x2, scale, None, None, F16, 128))


@pytest.mark.parametrize("form", ["list", "tuple", "numpy", "tensor", "numpy-ints"])
def test_a8w4_group_sizes_and_pertoken_forms(device, form):
    """torch_npu's int[] takes a list, a tuple, a numpy integer array or an integer host tensor (it stays on the
    host); pertoken_scale (m, 1) and (m,) give the same result."""
    m, k, n, g = 3, 128, 32, 64
    x1, x2, scale, offset, pertoken = a8w4_args(m, k, n, g, seed=7)
    sizes = {"list": [0, 0, g], "tuple": (0, 0, g), "numpy": np.array([0, 0, g]),
             "tensor": torch.tensor([0, 0, g]), "numpy-ints": [np.int64(0), np.int32(0), np.int64(g)]}[form]
    expected = a8w4_expected(x1, x2, scale, offset, pertoken, F16, g)
    d_x1, d_x2, d_scale, d_offset, d_pertoken = on(device, x1, x2, scale, offset, pertoken)
    for pt in (d_pertoken, d_pertoken.reshape(m)):
        with kernel_ran(A8W4):
            out = ak.npu_quant_matmul(d_x1, d_x2, d_scale, offset=d_offset, pertoken_scale=pt, output_dtype=F16,
                                      group_sizes=sizes).cpu()
        assert_equal(out, expected)


def test_a8w4_under_torch_compile(device):
    x1, x2, scale, offset, pertoken = a8w4_args(4, 128, 32, 64, seed=8)
    f = torch.compile(lambda *a: ak.npu_quant_matmul(*a[:3], offset=a[3], pertoken_scale=a[4], output_dtype=BF16,
                                                     group_sizes=[0, 0, 64]), fullgraph=True, backend="aot_eager")
    with kernel_ran(A8W4):
        out = f(*on(device, x1, x2, scale, offset, pertoken)).cpu()
    assert_equal(out, a8w4_expected(x1, x2, scale, offset, pertoken, BF16, 64))


def _a8w4_bad(g=64, **over):
    x1, x2, scale, offset, pertoken = a8w4_args(4, 128, 32, 64)
    args = {"x1": x1, "x2": x2, "scale": scale, "offset": offset, "pertoken_scale": pertoken, "output_dtype": F16,
            "group_sizes": [0, 0, g]}
    args.update(over)
    return lambda: ak.npu_quant_matmul(args.pop("x1"), args.pop("x2"), args.pop("scale"), **args)


@pytest.mark.parametrize("call, exc, match", [
    (_a8w4_bad(g=96), ValueError, "multiple of 64"),
    (_a8w4_bad(g=256), ValueError, "divide k = 128"),
    (_a8w4_bad(group_sizes=None), ValueError, "needs group_sizes"),
    (_a8w4_bad(group_sizes=[0, 0]), ValueError, r"group_sizes must be \[0, 0, g\]"),
    (_a8w4_bad(group_sizes=[0, 4, 64]), ValueError, r"group_sizes must be \[0, 0, g\]"),
    (_a8w4_bad(group_sizes=[0, 0, 64.0]), TypeError, "group_sizes"),
    (_a8w4_bad(group_sizes=np.array([0.0, 0.0, 64.0])), TypeError, "group_sizes"),
    (_a8w4_bad(scale=torch.ones(2, 32, dtype=I64)[:1]), ValueError, r"scale must have shape \(k/g, n\) = \(2, 32\)"),
    (_a8w4_bad(scale=torch.ones(2, 32)), TypeError, "scale must have dtype int64"),
    (_a8w4_bad(output_dtype=I8), TypeError, "output_dtype must be float16 or bfloat16"),
    (_a8w4_bad(bias=torch.zeros(32, dtype=I32)), ValueError, "bias must be None"),
    (_a8w4_bad(offset=torch.zeros(31)), ValueError, r"offset must have shape \(32,\)"),
    (_a8w4_bad(pertoken_scale=torch.ones(5, 1)), ValueError, "pertoken_scale"),
    (_a8w4_bad(x2=torch.zeros(64, 4, dtype=I32)), ValueError, "K mismatch"),
    (_a8w4_bad(x1=int8(4, 128), x2=int8(128, 32)), ValueError, "group_sizes .* only for int8 x1 with int4"),
    (_a8w4_bad(x1_dtype=torch.float8_e4m3fn), NotImplementedError, "x1_dtype"),
    (_a8w4_bad(x2_dtype=torch.float8_e4m3fn), NotImplementedError, "x2_dtype"),
    (_a8w4_bad(scale_dtype=torch.float8_e8m0fnu), NotImplementedError, "scale_dtype"),
    (_a8w4_bad(pertoken_scale_dtype=torch.float8_e8m0fnu), NotImplementedError, "pertoken_scale_dtype"),
    (_a8w4_bad(y_scale=torch.ones(1, dtype=I64)), NotImplementedError, "y_scale"),
])
@pytest.mark.host  # host tensors: every error is raised while validating the arguments, before any launch
def test_a8w4_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_npu_quant_matmul_takes_every_keyword_of_torch_npu(device):
    x1, x2, scale, offset, pertoken = a8w4_args(2, 64, 16, 64)
    d_x1, d_x2, d_scale, d_offset, d_pertoken = on(device, x1, x2, scale, offset, pertoken)
    with kernel_ran(A8W4):
        out = ak.npu_quant_matmul(d_x1, d_x2, d_scale, offset=d_offset, pertoken_scale=d_pertoken, bias=None,
                                  output_dtype=F16, x1_dtype=I8, x2_dtype=I32, pertoken_scale_dtype=F32,
                                  scale_dtype=I64, group_sizes=[0, 0, 64], y_scale=None).cpu()
    assert_equal(out, a8w4_expected(x1, x2, scale, offset, pertoken, F16, 64))


@pytest.mark.parametrize("kernel", [KERNEL, A8W4])
@pytest.mark.host  # the config spaces and hardware models: no launch
def test_config_spaces_respect_the_hardware(kernel):
    from atlas_kernels.autotune import ASCEND_TARGETS, KERNELS, get_target
    spec = KERNELS[kernel]
    for name in ASCEND_TARGETS:
        t = get_target(name)
        for v in spec.variants:
            space = spec.candidates(t, v)  # the UB model's proposals, before stored compiler verdicts narrow them
            assert spec.default(t, v) in space, (name, v.label)
            assert len(space) <= 60, (name, v.label, len(space))
            for c in space:
                bm, bn, bk = c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"]
                assert bm % 16 == 0 and bk % 32 == 0 and bn % 32 == 0, c  # whole 16x32 int8 fractals
                assert 2 * bm * bk <= t.l0a_bytes and 2 * bk * bn <= t.l0b_bytes and 4 * bm * bn <= t.l0c_bytes
                assert 2 * (bm * bk + bk * bn) <= t.l1_bytes
            if v.decode:
                assert spec.default(t, v)["BLOCK_M"] == 16, "decode: one m-tile, so the weight is read once"
    for name in ("sm_80", "sm_90"):
        t = get_target(name)
        for v in spec.variants:
            assert spec.default(t, v) in spec.space(t, v), (name, v.label)
            for c in spec.space(t, v):
                assert c.get("num_stages", 1) * (c["BLOCK_M"] + c["BLOCK_N"]) * c["BLOCK_K"] <= t.smem_bytes
    sm90 = get_target("sm_90")
    for v in spec.variants:
        if v.label.startswith("i4-n"):  # wgmma tiles; an unpacked int4 B operand failed at BLOCK_N = 32
            assert spec.default(sm90, v)["BLOCK_M"] >= 64, v.label
            assert all(c["BLOCK_N"] >= 64 for c in spec.space(sm90, v) if c["BLOCK_M"] >= 64), v.label


# ---------------------------------------------------------------- argument forms of torch_npu's binding
@pytest.mark.parametrize("round_mode", [np.int64(1), np.int32(1), torch.tensor(1), None],
                         ids=["np-int64", "np-int32", "tensor-0d", "none"])
def test_npu_trans_quant_param_round_mode_forms(device, round_mode):
    """round_mode (torch_npu's int?): a Python or numpy integer or a 0-d integer tensor, positional or keyword;
    None is 0. trans_quant_param runs on the host (no kernel): the param it makes drives the GEMM kernel to the
    Python-int call's result."""
    scale = torch.rand(32, generator=gen(4)) * 2e-3 + 1e-4
    plain = ak.npu_trans_quant_param(scale, None, 0 if round_mode is None else 1)
    for got in (ak.npu_trans_quant_param(scale, None, round_mode), ak.npu_trans_quant_param(scale, round_mode=round_mode)):
        assert torch.equal(got, plain)
    x1, x2 = on(device, int8(4, 64), int8(64, 32, seed=2))
    with kernel_ran(KERNEL):
        out = ak.npu_quant_matmul(x1, x2, ak.npu_trans_quant_param(scale, None, round_mode).to(device),
                                  output_dtype=F16).cpu()
    with kernel_ran(KERNEL):
        assert torch.equal(out, ak.npu_quant_matmul(x1, x2, plain.to(device), output_dtype=F16).cpu())


@pytest.mark.parametrize("bad, exc", [(1.0, TypeError), (True, TypeError), (torch.tensor([1]), TypeError),
                                      (torch.tensor(1.0), TypeError), (np.int64(2), ValueError)])
@pytest.mark.host  # trans_quant_param's argument check: no kernel
def test_npu_trans_quant_param_round_mode_errors(bad, exc):
    with pytest.raises(exc, match="round_mode"):
        ak.npu_trans_quant_param(torch.ones(4), round_mode=bad)


def test_npu_quant_matmul_pertoken_column_form_on_the_int8_rows(device):
    """pertoken_scale (m, 1) gives the (m,) result on the int8 x int8 rows too (bf16 and fp16 output)."""
    m, k, n = 6, 64, 32
    x1, x2 = on(device, int8(m, k), int8(k, n, seed=2))
    scale, kw = make_args(m, n, F32, I32, pertoken=True)
    scale, kw = scale.to(device), {name: t.to(device) for name, t in kw.items()}
    for out_dtype in (BF16, F16):
        with kernel_ran(KERNEL):
            flat = ak.npu_quant_matmul(x1, x2, scale, output_dtype=out_dtype, **kw).cpu()
        with kernel_ran(KERNEL):
            col = ak.npu_quant_matmul(x1, x2, scale, output_dtype=out_dtype,
                                      **{**kw, "pertoken_scale": kw["pertoken_scale"].reshape(m, 1)}).cpu()
        assert torch.equal(col, flat), out_dtype
    with pytest.raises(ValueError, match="pertoken_scale"):
        ak.npu_quant_matmul(x1, x2, scale, output_dtype=BF16, pertoken_scale=torch.ones(m, 2, device=device))
    with pytest.raises(TypeError, match="positional"):
        ak.npu_quant_matmul(x1, x2, scale, None, None, None, BF16)  # keyword-only after scale, as in torch_npu
