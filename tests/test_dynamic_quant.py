"""dynamic_quant / dynamic_quant_asymmetric / quantize (torch_npu.npu_dynamic_quant, npu_dynamic_quant_asymmetric,
npu_quantize) against reference/dynamic_quant.py: integer outputs bit for bit, scales and offsets bit for bit."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import atlas_kernels as ak
from atlas_kernels.autotune import override_config
from atlas_kernels.reference import dynamic_quant as ref
from atlas_kernels.testing import kernel_ran

DQ = "dynamic_quant.rowwise"
Q = "quantize.static"
DST = {"int8": torch.int8, "int4": torch.quint4x2}


def same_floats(got, want, name):
    """Bit for bit, except that any NaN matches any NaN (its payload is the hardware's business)."""
    assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, want.shape, got.dtype, want.dtype)
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan), f"{name}: NaN positions differ"
    g, w = got[~nan].view(torch.int32), want[~nan].view(torch.int32)
    bad = (g != w).nonzero().flatten()
    assert bad.numel() == 0, f"{name}: {bad.numel()} differ, e.g. {got[~nan][bad[:3]]} vs {want[~nan][bad[:3]]}"


def run_dynamic(x, asym, dst, **kw):
    op = ak.npu_dynamic_quant_asymmetric if asym else ak.npu_dynamic_quant
    with kernel_ran(DQ):
        got = op(x, dst_type=DST[dst], **kw)
    fn = ref.dynamic_quant_asymmetric if asym else ref.dynamic_quant
    want = fn(x.cpu(), *(None if t is None else t.cpu() for t in (kw.get("smooth_scales"), kw.get("group_index"))),
              dst)
    assert torch.equal(got[0].cpu(), want[0]), f"y differs in {(got[0].cpu() != want[0]).sum()} places"
    for name, g, w in zip(("scale", "offset"), got[1:], want[1:]):
        same_floats(g.cpu(), w, name)
    return got


def smooth_kw(mode, k, dtype, device, rows, gen, gi_dtype=torch.int32):
    if mode == "none":
        return {}
    if mode == "vector":
        return {"smooth_scales": (torch.rand(k, generator=gen) + 0.5).to(dtype).to(device)}
    # 4 experts: an empty one, and the last 2 rows past the last end (not smoothed)
    return {"smooth_scales": (torch.rand((4, k), generator=gen) + 0.5).to(dtype).to(device),
            "group_index": torch.tensor([2, 2, rows // 2, rows - 2], dtype=gi_dtype, device=device)}


@pytest.mark.parametrize("smooth", ["none", "vector", "grouped"])
@pytest.mark.parametrize("asym", [False, True])
@pytest.mark.parametrize("dst", ["int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dynamic_matches_reference(device, dtype, dst, asym, smooth):
    gen = torch.Generator().manual_seed(1)
    # one pass (K <= BLOCK_K) and two passes over a K that is not a multiple of BLOCK_K (nor a power of two)
    for rows, k, config in ((13, 200, {"BLOCK_M": 4, "BLOCK_K": 256}), (7, 552, {"BLOCK_M": 2, "BLOCK_K": 256})):
        x = (torch.randn((rows, k), generator=gen) * 3).to(dtype).to(device)
        x[3] = 0
        with override_config(DQ, config):
            run_dynamic(x, asym, dst, **smooth_kw(smooth, k, dtype, device, rows, gen))


@settings(max_examples=10)
@given(rows=st.integers(1, 20), words=st.integers(1, 60), dtype=st.sampled_from([torch.float16, torch.bfloat16]),
       dst=st.sampled_from(["int8", "int4"]), asym=st.booleans(), smooth=st.sampled_from(["none", "vector", "grouped"]),
       config=st.sampled_from([{"BLOCK_M": 4, "BLOCK_K": 256}, {"BLOCK_M": 8, "BLOCK_K": 512}]),
       seed=st.integers(0, 2**16))
def test_hypothesis(device, rows, words, dtype, dst, asym, smooth, config, seed):
    gen = torch.Generator().manual_seed(seed)
    k = 8 * words if dst == "int4" else 8 * words - seed % 7
    x = (torch.randn((rows, k), generator=gen) * 10 ** (seed % 5 - 2)).to(dtype).to(device)
    kw = smooth_kw(smooth, k, dtype, device, max(rows, 4), gen)
    if "group_index" in kw:
        kw["group_index"] = kw["group_index"].clamp(max=rows)
    with override_config(DQ, config):
        run_dynamic(x, asym, dst, **kw)


def test_shapes_3d_noncontiguous_empty_and_dst_none(device):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn((3, 5, 64), generator=gen).to(torch.float16).to(device)
    y, s = run_dynamic(x, False, "int8")
    assert y.shape == (3, 5, 64) and s.shape == (3, 5) and s.dtype == torch.float32
    y, s, o = run_dynamic(x.transpose(0, 1), True, "int4")  # non-contiguous
    assert y.shape == (5, 3, 8) and y.dtype == torch.int32 and o.shape == (5, 3)
    y0, s0 = ak.npu_dynamic_quant(x, dst_type=None)  # torch_npu: None means int8
    assert torch.equal(y0, ak.npu_dynamic_quant(x)[0]) and y0.dtype == torch.int8
    y, s = ak.npu_dynamic_quant(x[:0])
    assert y.shape == (0, 5, 64) and s.shape == (0, 5)


def test_symmetric_rounds_half_to_even_and_scale_is_rowmax_over_127(device):
    # rowmax 127: multiplier 127/127 = 1, so y is x rounded half to even
    row = torch.tensor([127.0, 2.5, 3.5, -2.5, 0.5, 1.5, -0.5, 126.5], dtype=torch.float16)
    with kernel_ran(DQ):
        y, s = ak.npu_dynamic_quant(row[None].to(device))
    assert y.cpu().tolist() == [[127, 2, 4, -2, 0, 2, 0, 126]]
    assert s.cpu().item() == (torch.tensor(127.0) * (torch.tensor(1.0) / torch.tensor(127.0))).item()
    # int4: rowmax 7 -> multiplier 1; packed element 0 in bits 0-3, checked by unpacking
    row4 = torch.tensor([7.0, 2.5, 3.5, -2.5, -7.0, 1.5, -0.5, 0.0], dtype=torch.bfloat16)
    with kernel_ran(DQ):
        y4, s4 = ak.npu_dynamic_quant(row4[None].to(device), dst_type=torch.quint4x2)
    assert ak.unpack_int4(y4).cpu().tolist() == [[7, 2, 4, -2, -7, 2, 0, 0]]
    assert torch.equal(y4.cpu(), ref.pack_int4(torch.tensor([[7, 2, 4, -2, -7, 2, 0, 0]])))


def test_int4_packing_unpacks_to_the_int_grid(device):
    """The packed words unpack (atlas_kernels.unpack_int4) to the reference's int4 values before packing."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((9, 96), generator=gen).to(torch.float16)
    rows = x.float()
    amax = rows.abs().amax(-1, keepdim=True)
    sym = torch.round((rows * (torch.tensor(7.0) / amax)).clamp(-8, 7)).to(torch.int32)
    mx, mn = rows.amax(-1, keepdim=True), rows.amin(-1, keepdim=True)
    scale = torch.clamp_min((mx - mn) / torch.tensor(15.0), 1e-12)
    asym = torch.round((rows * (torch.tensor(1.0) / scale) + (7 - mx / scale)).clamp(-8, 7)).to(torch.int32)
    for op, want in ((ak.npu_dynamic_quant, sym), (ak.npu_dynamic_quant_asymmetric, asym)):
        with kernel_ran(DQ):
            y4 = op(x.to(device), dst_type=torch.quint4x2)[0]
        assert y4.shape == (9, 12) and y4.dtype == torch.int32
        assert torch.equal(ak.unpack_int4(y4.cpu()), want)


def test_zero_rows(device):
    x = torch.zeros((3, 16), dtype=torch.float16, device=device)
    with kernel_ran(DQ):
        y, s = ak.npu_dynamic_quant(x)
        ya, sa, oa = ak.npu_dynamic_quant_asymmetric(x)
        y4, _, o4 = ak.npu_dynamic_quant_asymmetric(x, dst_type=torch.quint4x2)
    assert torch.equal(y.cpu(), torch.zeros((3, 16), dtype=torch.int8)) and torch.equal(s.cpu(), torch.zeros(3))
    # asymmetric: scale is clamped to 1e-12 and offset = 127 - 0 / scale, so a zero row maps to 127 (int4: 7)
    assert torch.equal(sa.cpu(), torch.full((3,), 1e-12)) and torch.equal(oa.cpu(), torch.full((3,), 127.0))
    assert torch.equal(ya.cpu(), torch.full((3, 16), 127, dtype=torch.int8))
    assert torch.equal(ak.unpack_int4(y4.cpu()), torch.full((3, 16), 7, dtype=torch.int32))
    assert torch.equal(o4.cpu(), torch.full((3,), 7.0))


def test_nan_and_inf_rows(device):
    x = torch.randn((4, 40), generator=torch.Generator().manual_seed(4)).to(torch.float16)
    x[1, 5] = float("nan")
    x[2, 7] = float("inf")
    for asym in (False, True):
        for dst in ("int8", "int4"):
            got = run_dynamic(x.to(device), asym, dst)
            y = got[0].cpu() if dst == "int8" else ak.unpack_int4(got[0].cpu())
            assert torch.equal(y[1], torch.zeros_like(y[1])), "a NaN row quantizes to 0"
            if not asym:
                assert torch.isnan(got[1][1]) and got[1][2].item() == float("inf")
                assert torch.equal(y[2], torch.zeros_like(y[2])), "an inf row: multiplier 0, inf * 0 = NaN -> 0"
            else:
                assert got[1][1].item() == pytest.approx(1e-12) and torch.isnan(got[2][1])
            assert y[0].abs().max() > 0 and y[3].abs().max() > 0, "the other rows are untouched"


def test_large_values_saturate_nothing_and_match(device):
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn((6, 64), generator=gen) * 1e4).clamp(-65504, 65504).to(torch.float16)
    x[0, 0] = 65504
    xb = (torch.randn((6, 64), generator=gen) * 1e36).to(torch.bfloat16)
    for t in (x, xb):
        for asym in (False, True):
            got = run_dynamic(t.to(device), asym, "int8")
            if not asym:
                assert got[0].abs().max().item() == 127


def test_group_index_picks_each_rows_expert(device):
    gen = torch.Generator().manual_seed(6)
    rows, k = 12, 48
    x = torch.randn((rows, k), generator=gen).to(torch.bfloat16)
    smooth = (torch.rand((3, k), generator=gen) + 0.5).to(torch.bfloat16)
    for gi_dtype in (torch.int32, torch.int64):
        ends = torch.tensor([4, 4, 10], dtype=gi_dtype)
        with kernel_ran(DQ):
            y, s = ak.npu_dynamic_quant(x.to(device), smooth_scales=smooth.to(device), group_index=ends.to(device))
        # rows [0, 4) use expert 0, expert 1 is empty, rows [4, 10) expert 2, rows 10 and 11 none
        for lo, hi, e in ((0, 4, 0), (4, 10, 2), (10, 12, None)):
            kw = {} if e is None else {"smooth_scales": smooth[e].to(device)}
            ye, se = ak.npu_dynamic_quant(x[lo:hi].to(device), **kw)
            assert torch.equal(y[lo:hi], ye) and torch.equal(s[lo:hi], se), (lo, hi, e)
        run_dynamic(x.to(device), True, "int4", smooth_scales=smooth.to(device), group_index=ends.to(device))


# ---------------------------------------------------------------- quantize
QDST = {torch.qint8: "int8", torch.quint8: "uint8", torch.quint4x2: "int4"}


def run_quantize(x, scales, zp, dtype, axis, div_mode, ax):
    with kernel_ran(Q):
        got = ak.npu_quantize(x, scales, zp, dtype, axis, div_mode)
    want = ref.quantize(x.cpu(), scales.cpu(), None if zp is None else zp.cpu(), QDST[dtype], ax, div_mode)
    assert torch.equal(got.cpu(), want), f"{(got.cpu() != want).sum()} of {want.numel()} differ"
    return got


@pytest.mark.parametrize("dtype", [torch.qint8, torch.quint8, torch.quint4x2])
@pytest.mark.parametrize("div_mode", [True, False])
@pytest.mark.parametrize("x_dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_quantize_matches_reference(device, x_dtype, div_mode, dtype):
    gen = torch.Generator().manual_seed(7)
    x = (torch.randn((3, 5, 24), generator=gen) * 20).to(x_dtype).to(device)
    axes = [(0, 0), (1, 1), (-1, 2)] if div_mode else [(-2, 1), (-1, 2), (3, 2)]
    for axis, ax in axes:
        c = x.shape[ax]
        scales = (torch.rand(c, generator=gen) + 0.1).to(device)
        zps = [None, torch.randint(-3, 4, (c,), generator=gen).to(torch.int32).to(device),
               torch.randint(-3, 4, (c,), generator=gen).to(x_dtype).to(device)]
        for zp in zps:
            run_quantize(x, scales.to(x_dtype) if not div_mode else scales, zp, dtype, axis, div_mode, ax)
        # per tensor: one scale, one zero point
        run_quantize(x, scales[:1], None if zps[1] is None else zps[1][:1], dtype, axis, div_mode, ax)


def test_quantize_vllm_ascend_static_w8a8_call(device):
    """npu_quantize(x, 1 / input_scale (expanded), input_offset, torch.qint8, -1, False)."""
    gen = torch.Generator().manual_seed(8)
    h = 72
    x = (torch.randn((5, h), generator=gen) * 4).to(torch.float16)
    input_scale = torch.tensor([0.0321], dtype=torch.float16)
    input_offset = torch.tensor([3.0], dtype=torch.float16)
    inv = (1 / input_scale).expand(h)
    off = input_offset.expand(h)
    with kernel_ran(Q):
        y = ak.npu_quantize(x.to(device), inv.to(device), off.to(device), torch.qint8, -1, False)
    want = torch.round(x.float() * inv.float() + off.float()).clamp(-128, 127).to(torch.int8)
    assert torch.equal(y.cpu(), want)


def test_quantize_rounding_saturation_and_nan(device):
    x = torch.tensor([[2.5, 3.5, -2.5, 300.0, -300.0, float("nan"), float("inf"), -0.5]], dtype=torch.float32)
    one = torch.ones(1)
    with kernel_ran(Q):
        y8 = ak.npu_quantize(x.to(device), one.to(device), None, torch.qint8, -1, True)
        yu = ak.npu_quantize(x.to(device), one.to(device), None, torch.quint8, -1, True)
        y4 = ak.npu_quantize(x.to(device), one.to(device), None, torch.quint4x2, -1, False)
    assert y8.cpu().tolist() == [[2, 4, -2, 127, -128, 0, 127, 0]]
    assert yu.dtype == torch.uint8 and yu.cpu().tolist() == [[2, 4, 0, 255, 0, 0, 255, 0]]
    assert ak.unpack_int4(y4.cpu()).tolist() == [[2, 4, -2, 7, -8, 0, 7, 0]]


# ---------------------------------------------------------------- errors, torch.compile, opcheck
X16 = torch.zeros((2, 16), dtype=torch.float16)


@pytest.mark.parametrize("call, exc, match", [
    (lambda d: ak.npu_dynamic_quant(X16.to(d).int()), TypeError, "x must have dtype"),
    (lambda d: ak.npu_dynamic_quant(X16.to(d), dst_type=torch.float16), ValueError, "dst_type must be one of"),
    (lambda d: ak.npu_dynamic_quant(X16.to(d), dst_type="int8"), TypeError, "dst_type must be a torch.dtype"),
    (lambda d: ak.npu_dynamic_quant(X16.to(d)[:, :12], dst_type=torch.quint4x2), ValueError, "multiple of 8, got 12"),
    (lambda d: ak.npu_dynamic_quant(X16.to(d)[:, :0]), ValueError, "must not be empty"),
    (lambda d: ak.npu_dynamic_quant(X16.to(d), smooth_scales=torch.ones(15, device=d)), ValueError, "smooth_scales must have shape"),
    (lambda d: ak.npu_dynamic_quant(X16.to(d), smooth_scales=torch.ones(16, dtype=torch.int32, device=d)), TypeError,
     "smooth_scales must have dtype"),
    (lambda d: ak.npu_dynamic_quant(X16.to(d), group_index=torch.tensor([2], device=d)), ValueError, "smooth_scales is required"),
    (lambda d: ak.npu_dynamic_quant(X16.to(d), smooth_scales=torch.ones(2, 16, device=d), group_index=torch.tensor([2.0], device=d)),
     TypeError, "group_index must have dtype"),
    (lambda d: ak.npu_dynamic_quant(X16.to(d), smooth_scales=torch.ones(3, 16, device=d), group_index=torch.tensor([1, 2], device=d)),
     ValueError, r"smooth_scales must have shape \(E, K\) = \(2, 16\)"),
    (lambda d: ak.npu_dynamic_quant_asymmetric(X16.to(d), smooth_scales=torch.ones(2, 16, device=d)), ValueError, "needs group_index"),
    (lambda d: ak.npu_quantize(X16.to(d), torch.ones(3, device=d), None, torch.qint8, -1, False), ValueError,
     "scales must hold 1 value"),
    (lambda d: ak.npu_quantize(X16.to(d), torch.ones(16, device=d), torch.ones(1, device=d), torch.qint8, -1, False), ValueError,
     "zero_points must have as many"),
    (lambda d: ak.npu_quantize(X16.to(d), torch.ones(1, device=d), None, torch.qint8, 2, True), ValueError, "axis must be in"),
    (lambda d: ak.npu_quantize(X16.to(d), torch.ones(1, device=d), None, torch.qint8, -3, False), ValueError, "axis must be -2"),
    (lambda d: ak.npu_quantize(X16.to(d), torch.ones(1, device=d), None, torch.float32, 1), ValueError, "dtype must be one of"),
    (lambda d: ak.npu_quantize(X16.to(d), torch.ones(1, device=d), None, torch.qint32, 1), ValueError, "dtype must be one of"),
    (lambda d: ak.npu_quantize(X16.to(d)[:, :12], torch.ones(1, device=d), None, torch.quint4x2, -1, False), ValueError,
     "multiple of 8"),
    (lambda d: ak.npu_quantize(X16.to(d), torch.ones(1, dtype=torch.int32, device=d), None, torch.qint8), TypeError,
     "scales must have dtype"),
    (lambda d: ak.npu_quantize(X16.to(d), torch.ones(1, device=d), None, torch.qint8, 1.0), TypeError, "axis must be an int"),
    (lambda d: ak.npu_quantize(X16.to(d), torch.ones(1, device=d), None, torch.qint8, 1, 1), TypeError, "div_mode must be a bool"),
])
def test_bad_input_names_the_argument(device, call, exc, match):
    with pytest.raises(exc, match=match):
        call(device)


def test_torch_compile_fullgraph(device):
    gen = torch.Generator().manual_seed(9)
    x = torch.randn((6, 32), generator=gen).to(torch.float16).to(device)
    smooth = (torch.rand(32, generator=gen) + 0.5).to(torch.float16).to(device)

    def step(x, smooth):
        y, s = ak.npu_dynamic_quant(x, smooth_scales=smooth)
        y4, s4, o4 = ak.npu_dynamic_quant_asymmetric(x, dst_type=torch.quint4x2)
        q = ak.npu_quantize(x, smooth, None, torch.qint8, -1, False)
        return y, s * 2, y4, o4, q

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    with kernel_ran(DQ, Q):
        got = compiled(x, smooth)
    for g, w in zip(got, step(x, smooth)):
        assert torch.equal(g, w)


def test_opcheck(device):
    gen = torch.Generator().manual_seed(10)
    x = torch.randn((5, 24), generator=gen).to(torch.bfloat16).to(device)
    smooth = (torch.rand((2, 24), generator=gen) + 0.5).to(torch.bfloat16).to(device)
    gi = torch.tensor([2, 5], dtype=torch.int32, device=device)
    torch.library.opcheck(torch.ops.atlas.dynamic_quant, (x, None, None, "int8", False))
    torch.library.opcheck(torch.ops.atlas.dynamic_quant, (x, smooth, gi, "int4", True))
    torch.library.opcheck(torch.ops.atlas.quantize, (x, smooth[0], None, "int8", -1, False))
    torch.library.opcheck(torch.ops.atlas.quantize, (x, smooth[0, :5].float(), gi[:1].expand(5).contiguous(),
                                                     "uint8", 0, True))


@pytest.mark.interpreter("the traffic meter counts the interpreter's loads and stores")
def test_meter_one_pass_reads_x_once_two_passes_twice():
    """Decode-like x (64, 1024) fp16 with smooth scales: one pass <= 1.05x the minimum bytes and >= 3x fewer
    than unfused torch; with BLOCK_K < K the second pass re-reads x (exactly one more x)."""
    from atlas_kernels.testing.meter import TrafficMeter, minimum_bytes, reference_bytes
    gen = torch.Generator().manual_seed(11)
    x = torch.randn((64, 1024), generator=gen).to(torch.float16)
    smooth = (torch.rand(1024, generator=gen) + 0.5).to(torch.float16)
    with override_config(DQ, {"BLOCK_M": 16, "BLOCK_K": 1024}), TrafficMeter() as one, kernel_ran(DQ):
        y, s = ak.npu_dynamic_quant(x, smooth_scales=smooth)
    floor = minimum_bytes([x, smooth], [y, s])
    assert one.total <= 1.05 * floor, (one.total, floor)
    ref_b, _ = reference_bytes(ref.dynamic_quant, x, smooth)
    assert ref_b >= 3 * one.total, (ref_b, one.total)
    with override_config(DQ, {"BLOCK_M": 16, "BLOCK_K": 256}), TrafficMeter() as two, kernel_ran(DQ):
        ak.npu_dynamic_quant(x, smooth_scales=smooth)
    # the second pass re-reads x, and the smooth row once more per block of 16 rows
    assert two.loaded - one.loaded == x.numel() * 2 + (64 // 16) * smooth.numel() * 2, (two.loaded, one.loaded)
    assert two.stored == one.stored
