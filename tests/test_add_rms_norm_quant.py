"""npu_add_rms_norm_dynamic_quant and npu_add_rms_norm_quant (kernels/add_rms_norm_quant.py) against the reference.

What is exact and what is not:
- x_out = x1 + x2 rounded to the input dtype: exact always (one fp32 add, one rounding).
- The int8 outputs (and the dynamic scales) are exact whenever the kernel's fp32 normalised values equal the
  reference's. They do whenever the row's sum of squares is exact in fp32 (dyadic inputs: small integers times
  powers of two), since every other step is one IEEE fp32 operation in the same order on both sides (sqrt and
  division correctly rounded: tl.sqrt_rn / tl.div_rn). Most tests use such inputs and compare with torch.equal.
- With arbitrary inputs the sum of squares is added in a different order (the kernel's reduction tree vs
  torch's), so rstd, y and the row max may differ by a few fp32 ulps: test_random_inputs_within_ulps states
  the bound (scales within 4 ulps; int8 values off by at most 1, and only where y * 127 / rowmax lies within
  a few ulps of a rounding tie).
"""
import contextlib
import importlib

import pytest
import torch

import atlas_kernels as ak
from atlas_kernels.autotune import override_config
from atlas_kernels.reference import add_rms_norm_quant as ref
from atlas_kernels.testing import kernel_ran

mod = importlib.import_module("atlas_kernels.add_rms_norm_quant")
KERNEL = mod.KERNEL.name
FLOAT16S = [torch.float16, torch.bfloat16]
# tile: the whole row in one tile (the interpreter's default); loop: rows walked in 32-column chunks
LAYOUTS = {"tile": None, "loop": {"BLOCK_N": 32, "ROWS": 2}}


def dyadic(shape, bits, exp, seed, dtype=torch.float32):
    """Integers in [-2**bits, 2**bits) times 2**exp: exact in fp16/bf16 for bits < 8."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-2**bits, 2**bits, shape, generator=g).double() * 2.0**exp).to(dtype)


def positive(shape, seed, dtype, exp=-3):
    """Dyadic values in [1, 2) * 2**exp (gamma, smooth scales, quant scales: never 0)."""
    return ((8 + dyadic(shape, 3, 0, seed).abs()) * 2.0**(exp - 3)).to(dtype)


def layout(name):
    cfg = LAYOUTS[name]
    return override_config(KERNEL, cfg) if cfg else contextlib.nullcontext()


def assert_equal(got, want, msg):
    assert got.shape == want.shape and got.dtype == want.dtype, \
        f"{msg}: {got.dtype}{tuple(got.shape)} != {want.dtype}{tuple(want.shape)}"
    got = got.cpu()
    if not torch.equal(got, want):
        bad = (got != want).nonzero()
        first = tuple(bad[0].tolist())
        raise AssertionError(f"{msg}: {len(bad)} of {want.numel()} differ, first at {first}: {got[first]} != "
                             f"{want[first]}")


# ------------------------------------------------------------------------------------------ dynamic form
DYNAMIC_CASES = [  # (smooth1, smooth2, beta, output_mask)
    (False, False, False, None),
    (True, False, True, None),
    (True, True, False, None),
    (True, True, True, [True, True]),
    (False, False, False, [False, True]),
    (False, True, True, [True, True]),
]


@pytest.mark.parametrize("lay", list(LAYOUTS))
@pytest.mark.parametrize("dtype", FLOAT16S)
@pytest.mark.parametrize("smooth1, smooth2, beta, mask", DYNAMIC_CASES)
def test_dynamic_matches_reference(device, lay, dtype, smooth1, smooth2, beta, mask):
    shape, n = (3, 5, 100), 100  # ragged: 15 rows, 100 columns (4 chunks in the loop layout)
    x1, x2 = dyadic(shape, 5, -2, 1, dtype), dyadic(shape, 5, -2, 2, dtype)
    gamma = positive((n,), 3, dtype, -5)  # |y| < 1: a padding column counted in the row max would show
    kw = {"smooth_scale1": positive((n,), 4, dtype, 0) if smooth1 else None,
          "smooth_scale2": positive((n,), 5, dtype, 1) if smooth2 else None,
          "beta": dyadic((n,), 4, -4, 6, dtype) if beta else None}
    out1, out2 = mod._output_mask("t", mask, kw["smooth_scale1"], kw["smooth_scale2"])
    want = ref.add_rms_norm_dynamic_quant(x1, x2, gamma, kw["smooth_scale1"], kw["smooth_scale2"], kw["beta"], 1e-6,
                                          out1, out2)
    on = {k: (v.to(device) if v is not None else None) for k, v in kw.items()}
    with kernel_ran(KERNEL), layout(lay):
        got = ak.npu_add_rms_norm_dynamic_quant(x1.to(device), x2.to(device), gamma.to(device), output_mask=mask,
                                                **on)
    for name, g, w in zip(("y1", "y2", "x_out", "scale1", "scale2"), got, want):
        assert_equal(g, w, name)
    assert got[1].shape == (shape if out2 else ())
    assert (got[0].abs() == 127).any() or not out1  # the row max maps to +-127


def test_dynamic_unfused_sequence_bit_exact(device):
    """The fused op == add, RMSNorm and per-row dynamic quant written out step by step (N a power of two, so the
    mean's 1/N is exact and mean(x*x) equals sum(x*x) * (1/N))."""
    dtype, n = torch.float16, 256
    x1, x2 = dyadic((7, n), 5, -2, 11, dtype), dyadic((7, n), 5, -2, 12, dtype)
    gamma = positive((n,), 13, dtype)
    with kernel_ran(KERNEL):
        y1, y2, x_out, s1, s2 = ak.npu_add_rms_norm_dynamic_quant(x1.to(device), x2.to(device), gamma.to(device))
    x = x1.float() + x2.float()
    # sqrt and division in fp64, rounded to fp32: correctly rounded (torch's fp32 CPU sqrt is not)
    rms = torch.sqrt(((x * x).mean(-1, keepdim=True) + torch.tensor(1e-6)).double()).float()
    y = x * (1.0 / rms.double()).float() * gamma.float()
    rowmax = y.abs().amax(-1, keepdim=True)
    q = torch.round(y * (127.0 / rowmax.double()).float()).clamp(-128, 127).to(torch.int8)
    assert_equal(x_out, x1 + x2, "x_out")
    assert_equal(y1, q, "y1")
    assert_equal(s1, (rowmax * torch.tensor(1 / 127, dtype=torch.float32)).reshape(7), "scale1")
    assert y2.shape == () and s2.shape == ()


def test_dynamic_zero_row(device):
    """A zero row quantises to 0 with scale 0 (its multiplier is 0, not 127 / 0)."""
    x = torch.zeros((3, 24), dtype=torch.bfloat16)
    x[1] = dyadic((24,), 5, -2, 14, torch.bfloat16)
    with kernel_ran(KERNEL):
        y1, _, _, s1, _ = ak.npu_add_rms_norm_dynamic_quant(x.to(device), x.to(device), torch.ones(24).to(x).to(device))
    assert_equal(y1[0], torch.zeros(24, dtype=torch.int8), "zero row")
    assert_equal(y1[2], torch.zeros(24, dtype=torch.int8), "zero row")
    assert s1[0] == 0 and s1[2] == 0 and s1[1] > 0


def test_dynamic_ties_round_half_to_even(device):
    """|x| = 2 and epsilon 0 give rstd = 1/2 exactly: y = +-gamma, rowmax 2, multiplier 63.5."""
    x1 = torch.tensor([[1.0, -1, 1, -1, 1, -1, 1, 1]], dtype=torch.float16)
    gamma = torch.tensor([2.0, 1.0, 0.5, 0.25, 1.5, 0.75, 0.125, 1.75], dtype=torch.float16)
    with kernel_ran(KERNEL):
        y1, _, x_out, s1, _ = ak.npu_add_rms_norm_dynamic_quant(x1.to(device), x1.to(device), gamma.to(device),
                                                                epsilon=0.0)
    # y * 63.5 = 127, -63.5, 31.75, -15.875, 95.25, -47.625, 7.9375, 111.125
    assert y1.tolist() == [[127, -64, 32, -16, 95, -48, 8, 111]]  # -63.5 -> -64: half to even
    assert_equal(s1, torch.tensor([2.0]) * torch.tensor(1 / 127, dtype=torch.float32), "scale1")
    assert_equal(x_out, x1 + x1, "x_out")


# ------------------------------------------------------------------------------------------ static form
STATIC_CASES = [  # (zero_points1, scales2, zero_points2, beta, div_mode)
    (True, False, False, False, True),
    (False, True, True, True, True),
    (True, True, False, False, False),
    (True, False, False, True, False),
]


@pytest.mark.parametrize("lay", list(LAYOUTS))
@pytest.mark.parametrize("dtype", FLOAT16S)
@pytest.mark.parametrize("zp1, sc2, zp2, beta, div_mode", STATIC_CASES)
def test_static_matches_reference(device, lay, dtype, zp1, sc2, zp2, beta, div_mode):
    shape, n = (13, 72), 72
    x1, x2 = dyadic(shape, 5, -2, 21, dtype), dyadic(shape, 5, -2, 22, dtype)
    gamma = positive((n,), 23, dtype)
    sdt, zdt = (torch.float32, torch.int32) if dtype == torch.float16 else (torch.bfloat16, torch.bfloat16)
    scale_exp = -9 if div_mode else 8  # some values saturate
    args = [x1, x2, gamma, positive((n,), 24, sdt, scale_exp),
            dyadic((n,), 4, 0, 25).to(zdt) if zp1 else None,
            dyadic((n,), 4, -4, 26, dtype) if beta else None,
            positive((n,), 27, sdt, scale_exp - 1) if sc2 else None,
            dyadic((n,), 4, 0, 28).to(zdt) if zp2 else None]
    want = ref.add_rms_norm_quant(*args, 1e-6, div_mode)
    with kernel_ran(KERNEL), layout(lay):
        got = ak.npu_add_rms_norm_quant(*(a.to(device) if a is not None else None for a in args), div_mode=div_mode)
    for name, g, w in zip(("y1", "y2", "x_out"), got, want):
        assert_equal(g, w, name)
    assert ((got[0] == 127) | (got[0] == -128)).any()  # scales chosen so that some values saturate
    if not sc2:
        assert not got[1].any()


def test_static_multi_dim_gamma_and_rounding_order(device):
    """gamma [4, 16] normalises x1's last two dims together; fp16 follows the CANN kernel's fp16 gamma product."""
    dtype = torch.float16
    x1, x2 = dyadic((2, 3, 4, 16), 5, -2, 31, dtype), dyadic((2, 3, 4, 16), 5, -2, 32, dtype)
    gamma = positive((4, 16), 33, dtype)
    scales = positive((4, 16), 34, torch.float32, -7)
    with kernel_ran(KERNEL):
        y1, y2, x_out = ak.npu_add_rms_norm_quant(x1.to(device), x2.to(device), gamma.to(device), scales.to(device))
    want = ref.add_rms_norm_quant(x1, x2, gamma, scales)
    for name, g, w in zip(("y1", "y2", "x_out"), (y1, y2, x_out), want):
        assert_equal(g, w, name)
    # the per-row norm over 64 elements, with fp16 gamma rounding, written out
    x = (x1.float() + x2.float()).to(dtype).float().reshape(6, 64)
    ms = (x * x).sum(-1, keepdim=True) * (torch.tensor(1.0) / 64) + torch.tensor(1e-6)
    rstd = (1.0 / torch.sqrt(ms.double())).float()  # fp64: one rounding each for sqrt and 1/ is as good as fp32's
    y = ((x * rstd).half().float() * gamma.reshape(64).float()).half().float()
    q = torch.round((y.double() / scales.reshape(64).double()).float())
    assert_equal(y1, q.clamp(-128, 127).to(torch.int8).reshape(x1.shape), "y1")


@pytest.mark.parametrize("dtype", FLOAT16S)
def test_static_normalises_the_rounded_sum(device, dtype):
    """The static CANN kernel normalises x_out (the sum rounded to fp16, or to bf16 when beta is given), not the
    fp32 sum: x2 is tiny, so x1 + x2 rounds, and only the rounded sum has an exact sum of squares."""
    n = 64
    x1 = dyadic((16, n), 5, -2, 71, dtype)
    x2 = dyadic((16, n), 3, -12, 72, dtype)
    gamma, scales = positive((n,), 73, dtype), positive((n,), 74, torch.float32, -9).to(
        torch.float32 if dtype == torch.float16 else torch.bfloat16)
    beta = dyadic((n,), 4, -4, 75, dtype) if dtype == torch.bfloat16 else None
    assert not torch.equal((x1.float() + x2.float()).to(dtype).float(), x1.float() + x2.float())
    with kernel_ran(KERNEL):
        got = ak.npu_add_rms_norm_quant(x1.to(device), x2.to(device), gamma.to(device), scales.to(device),
                                        beta=None if beta is None else beta.to(device))
    for name, g, w in zip(("y1", "y2", "x_out"), got, ref.add_rms_norm_quant(x1, x2, gamma, scales, None, beta)):
        assert_equal(g, w, name)


def test_static_ties_round_half_to_even(device):
    """|x| = 2 and epsilon 0 give rstd = 1/2 exactly, so y = +-gamma and y / 0.5 lands on x.5 ties."""
    n = 8
    x1 = torch.tensor([[1.0, -1, 1, -1, 1, -1, 1, 1]], dtype=torch.bfloat16)
    gamma = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.25, 70.0, 0.0, 0.5], dtype=torch.bfloat16)
    scales = torch.full((n,), 0.5, dtype=torch.bfloat16)
    zp = torch.zeros((n,), dtype=torch.bfloat16)
    with kernel_ran(KERNEL):
        y1, _, _ = ak.npu_add_rms_norm_quant(x1.to(device), x1.to(device), gamma.to(device), scales.to(device),
                                             zp.to(device), epsilon=0.0)
    # y / 0.5 = 0.5, -1.5, 2.5, -3.5, 4.5, -140 (saturates), 0, 1
    assert y1.tolist() == [[0, -2, 2, -4, 4, -128, 0, 1]]


# ------------------------------------------------------------------------------------------ arbitrary inputs
@pytest.mark.parametrize("n", [576, 4100])
def test_random_inputs_within_ulps(device, n):
    g = torch.Generator().manual_seed(n)
    dtype = torch.bfloat16
    x1 = torch.randn((9, n), generator=g).to(dtype)
    x2 = torch.randn((9, n), generator=g).to(dtype)
    gamma = (torch.rand(n, generator=g) + 0.5).to(dtype)
    smooth = (torch.rand(n, generator=g) + 0.5).to(dtype)
    with kernel_ran(KERNEL):
        y1, _, x_out, s1, _ = ak.npu_add_rms_norm_dynamic_quant(x1.to(device), x2.to(device), gamma.to(device),
                                                                smooth_scale1=smooth.to(device))
    w1, _, w_out, ws1, _ = ref.add_rms_norm_dynamic_quant(x1, x2, gamma, smooth)
    assert_equal(x_out, w_out, "x_out")
    ulps = (s1.cpu().view(torch.int32) - ws1.view(torch.int32)).abs().max()
    assert ulps <= 4, f"scale1 differs by {ulps} ulps"
    diff = (y1.cpu().int() - w1.int()).abs()
    assert diff.max() <= 1 and diff.float().mean() < 1e-3, f"y1: max diff {diff.max()}, {int(diff.sum())} off"


# ------------------------------------------------------------------------------------------ sizes
@pytest.mark.parametrize("shape", [(1, 1), (2, 1, 17), (0, 64), (4, 0, 8), (33, 300)])
def test_ragged_and_empty_sizes(device, shape):
    dtype, n = torch.bfloat16, shape[-1]
    x1, x2 = dyadic(shape, 5, -2, 41, dtype), dyadic(shape, 5, -2, 42, dtype)
    gamma, scales = positive((n,), 43, dtype), positive((n,), 44, torch.float32, -5)
    rows = x1.numel() // n
    with kernel_ran(KERNEL) if rows else contextlib.nullcontext():
        got_d = ak.npu_add_rms_norm_dynamic_quant(x1.to(device), x2.to(device), gamma.to(device))
    with kernel_ran(KERNEL) if rows else contextlib.nullcontext():
        got_s = ak.npu_add_rms_norm_quant(x1.to(device), x2.to(device), gamma.to(device), scales.to(device))
    want_d = ref.add_rms_norm_dynamic_quant(x1, x2, gamma)
    want_s = ref.add_rms_norm_quant(x1, x2, gamma, scales)
    for name, g, w in zip(("y1", "y2", "x_out", "scale1", "scale2"), got_d, want_d):
        assert_equal(g, w, f"dynamic {name}")
    for name, g, w in zip(("y1", "y2", "x_out"), got_s, want_s):
        assert_equal(g, w, f"static {name}")


def test_non_contiguous_inputs(device):
    x1 = dyadic((24, 10), 5, -2, 45, torch.float16).t()  # [10, 24], strides (1, 10)
    x2 = dyadic((10, 24), 5, -2, 46, torch.float16)
    gamma = positive((24,), 47, torch.float16)
    with kernel_ran(KERNEL):
        got = ak.npu_add_rms_norm_dynamic_quant(x1.to(device), x2.to(device), gamma.to(device))
    for name, g, w in zip(("y1", "y2", "x_out", "scale1", "scale2"), got, ref.add_rms_norm_dynamic_quant(x1, x2,
                                                                                                       gamma)):
        assert_equal(g, w, name)


# ------------------------------------------------------------------------------------------ memory traffic
@pytest.mark.interpreter("the traffic meter counts the interpreter's loads and stores")
def test_meter_decode_reads_every_byte_once():
    """Decode (R, N) = (64, 4096), dynamic with a smooth scale. Tile layout: the minimum bytes (x1, x2 read once,
    x_out, y1, scale1 written once) plus gamma and smooth once per program (persistent programs), >= 3x fewer
    than the unfused reference. Loop layout: x1 and x2 read once per pass (3), gamma and smooth once per tile in
    passes 2 and 3."""
    from atlas_kernels import _backend
    from atlas_kernels.testing.meter import TrafficMeter, minimum_bytes, reference_bytes
    r, n = 64, 4096
    x1, x2 = dyadic((r, n), 5, -2, 61, torch.float16), dyadic((r, n), 5, -2, 62, torch.float16)
    gamma, smooth = positive((n,), 63, torch.float16), positive((n,), 64, torch.float16, 0)
    with TrafficMeter() as m, kernel_ran(KERNEL):
        y1, _, x_out, s1, _ = ak.npu_add_rms_norm_dynamic_quant(x1, x2, gamma, smooth_scale1=smooth)
    floor = minimum_bytes([x1, x2, gamma, smooth], [y1, x_out, s1])
    programs = min(r // 2, _backend.target_for(x1.device).programs(False))  # 2 rows of 4096 per 8192-wide tile
    assert m.total == floor + (programs - 1) * 2 * n * 2, (m.total, floor, programs)
    ref_b, _ = reference_bytes(ref.add_rms_norm_dynamic_quant, x1, x2, gamma, smooth)
    assert ref_b >= 3 * m.total, (ref_b, m.total)
    rows = 8
    with TrafficMeter() as m, kernel_ran(KERNEL), override_config(KERNEL, {"BLOCK_N": 1024, "ROWS": rows}):
        ak.npu_add_rms_norm_dynamic_quant(x1, x2, gamma, smooth_scale1=smooth)
    x_bytes = 2 * r * n * 2
    assert m.loaded == 3 * x_bytes + 2 * (r // rows) * 2 * n * 2, m.loaded
    assert m.stored == floor - x_bytes - 2 * n * 2, m.stored


# ------------------------------------------------------------------------------------------ bad input
def _ones_on(device):
    """The tensor maker the BAD calls take as ``_t``: ones on ``device``."""
    return lambda shape, dtype=torch.float16: torch.ones(shape, dtype=dtype, device=device)


BAD = [
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((4, 8), torch.float32), _t((4, 8)), _t(8)), TypeError,
     r"x1 must have dtype float16, bfloat16, got float32"),
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((4, 8)), _t((4, 7)), _t(8)), ValueError,
     r"x2 must have the shape of x1 \[4, 8\], got \[4, 7\]"),
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((8,)), _t((8,)), _t(8)), ValueError, r"x1 must have 2 to 8 dims"),
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((4, 8)), _t((4, 8)), _t(7)), ValueError,
     r"gamma must have shape \[8\] \(from x1's last dim\), got \[7\]"),
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((4, 8)), _t((4, 8)), _t(8, torch.bfloat16)), TypeError,
     r"gamma must have dtype float16, got bfloat16"),
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((4, 8)), _t((4, 8)), _t(8), smooth_scale1=_t(4)), ValueError,
     r"smooth_scale1 must have shape \[8\]"),
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((4, 8)), _t((4, 8)), _t(8), output_mask=[False, False]),
     ValueError, r"output_mask \[False, False\] asks for no output"),
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((4, 8)), _t((4, 8)), _t(8), smooth_scale2=_t(8),
                                               output_mask=[True, False]), ValueError,
     r"smooth_scale2 is given but output_mask\[1\] is False"),
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((4, 8)), _t((4, 8)), _t(8), output_mask=[1, 0]), TypeError,
     r"output_mask must be None or a list of 2 bools"),
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((4, 8)), _t((4, 8)), _t(8), y_dtype=torch.quint4x2), ValueError,
     r"y_dtype must be None or torch.int8"),
    (lambda _t: ak.npu_add_rms_norm_dynamic_quant(_t((4, 8)), _t((4, 8)), _t(8), epsilon="1e-6"), TypeError,
     r"epsilon must be a float"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8)), _t(8), _t(8)), TypeError,
     r"scales1 must have dtype float32, bfloat16, got float16"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8)), _t(8), _t(8, torch.float32),
                                       _t(8, torch.int8)), TypeError, r"zero_points1 must have dtype int32"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8)), _t((2, 8)), _t((2, 8), torch.float32)), ValueError,
     r"gamma's shape must equal x1's trailing dims"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8)), _t(8), _t(4, torch.float32)), ValueError,
     r"scales1 must have shape \[8\] \(from gamma\), got \[4\]"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8)), _t(8), _t(8, torch.float32),
                                       scales2=_t(8, torch.bfloat16)), TypeError,
     r"scales2 must have dtype float32, got bfloat16"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8)), _t(8), _t(8, torch.float32), beta=_t(4)),
     ValueError, r"beta must have shape \[8\]"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8)), _t(8), _t(8, torch.float32), axis=0), ValueError,
     r"axis must be -1"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8)), _t(8), _t(8, torch.float32), div_mode=1), TypeError,
     r"div_mode must be a bool"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8)), _t(8), _t(8, torch.float32), dst_type=torch.quint4x2),
     ValueError, r"dst_type must be None or torch.int8"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8), torch.bfloat16), _t(8), _t(8, torch.float32)),
     TypeError, r"x2 must have dtype float16, got bfloat16"),
    (lambda _t: ak.npu_add_rms_norm_quant(_t((4, 8)), _t((4, 8)).to("meta"), _t(8), _t(8, torch.float32)),
     ValueError, r"x2 is on meta but x1 is on cpu"),
]


@pytest.mark.parametrize("call, exc, match", BAD)
def test_bad_input_names_the_argument(device, call, exc, match):
    with pytest.raises(exc, match=match.replace("x1 is on cpu", f"x1 is on {torch.device(device).type}")):
        call(_ones_on(device))


# ------------------------------------------------------------------------------------------ torch.compile / opcheck
def _compile_args(device):
    n = 40
    x1, x2 = dyadic((6, n), 5, -2, 51, torch.float16), dyadic((6, n), 5, -2, 52, torch.float16)
    return [t.to(device) for t in (x1, x2, positive((n,), 53, torch.float16), positive((n,), 54, torch.float16, 0),
                                    positive((n,), 55, torch.float32, -6), dyadic((n,), 4, 0, 56).to(torch.int32))]


def test_torch_compile_fullgraph(device):
    x1, x2, gamma, smooth, scales, zp = _compile_args(device)

    def layer(x1, x2):
        y1, _, x_out, s1, _ = ak.npu_add_rms_norm_dynamic_quant(x1, x2, gamma, smooth_scale1=smooth)
        q1, q2, x_out2 = ak.npu_add_rms_norm_quant(x_out, x2, gamma, scales, zp, scales2=scales, div_mode=False)
        return y1, s1, q1, q2, x_out2

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    with kernel_ran(KERNEL):
        got = compiled(x1, x2)
    want = layer(x1, x2)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_opcheck(device):
    x1, x2, gamma, smooth, scales, zp = _compile_args(device)
    torch.library.opcheck(torch.ops.atlas.add_rms_norm_dynamic_quant, (x1, x2, gamma, smooth, None, gamma, 1e-6,
                                                                      True, True))
    torch.library.opcheck(torch.ops.atlas.add_rms_norm_dynamic_quant, (x1, x2, gamma, None, None, None, 1e-5,
                                                                      True, False))
    torch.library.opcheck(torch.ops.atlas.add_rms_norm_quant, (x1, x2, gamma, scales, zp, None, scales, None, 1e-6,
                                                              True))
    torch.library.opcheck(torch.ops.atlas.add_rms_norm_quant, (x1, x2, gamma, scales, None, gamma, None, None, 1e-6,
                                                              False))
