"""The interpreter against the hardware: every cast and arithmetic path the kernels use (docs/correctness.md).

Expected values are what GPUs/NPUs (and torch) compute: round to nearest even for float downcasts,
truncation toward zero for in-range float -> int, arithmetic right shifts, C division.
The tests of those semantics take the ``device`` fixture: in a native run they hold the GPU/NPU to the same
expected values. The tests of the interpreter's cast correction itself are marked ``interpreter``.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from triton.runtime import interpreter as interp

import atlas_kernels as ak
from atlas_kernels import _backend

CASTS = "audits the interpreter's cast correction"


@triton.jit
def _cast_kernel(x_ptr, y_ptr, n, ROUNDING: tl.constexpr, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    m = o < n
    x = tl.load(x_ptr + o, mask=m)
    if ROUNDING == "":
        y = x.to(y_ptr.dtype.element_ty)
    else:
        y = x.to(y_ptr.dtype.element_ty, fp_downcast_rounding=ROUNDING)
    tl.store(y_ptr + o, y, mask=m)


def cast(x: torch.Tensor, dtype: torch.dtype, rounding: str = "", ours: bool = True, device=None) -> torch.Tensor:
    """x (1-D) cast to dtype inside a Triton kernel on ``device`` (default: x's), launched as atlas_kernels launches
    its kernels (``ours``) or directly, as another library would. The result comes back on the host."""
    x = x.to(device) if device is not None else x
    y = torch.empty(x.shape, dtype=dtype, device=x.device)
    args = (x, y, x.numel())
    kwargs = dict(ROUNDING=rounding, BLOCK=triton.next_power_of_2(max(x.numel(), 16)))
    if ours:
        _backend.launch("test_numerics.cast", _cast_kernel, (1,), *args, **kwargs)
        _backend.launches.pop("test_numerics.cast")
    else:
        _cast_kernel[(1,)](*args, **kwargs)
    return y.cpu()


def bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, every NaN mapped to one value (NaN payloads are not compared)."""
    b = t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).to(torch.int64)
    return torch.where(torch.isnan(t), -1, b)


def assert_bits_equal(got: torch.Tensor, want: torch.Tensor):
    bad = (bits(got) != bits(want)).nonzero().flatten()
    assert bad.numel() == 0, f"{bad.numel()} differ, first at {bad[:5].tolist()}: {got[bad[:5]]} vs {want[bad[:5]]}"


# fp32 values that hit every rounding case of a 16-bit float: ties (both parities), just above/below a tie,
# carries into the exponent, subnormals of float32 and of the target, overflow, inf, NaN, signed zeros
EDGES = torch.tensor([
    137.50000298, 1.99999994, 1.01171875, 1.00390625, 1.0078125 + 2**-8, 1.00390625 + 2**-20, 1.00390625 - 2**-20,
    -1.01171875, 255.5, 65504.0, 65519.996, 65520.0, 3.3895e38, 3.4e38, 3.4028235e38, float("inf"), float("-inf"),
    float("nan"), -float("nan"), 0.0, -0.0, 1e-40, -1e-40, 2**-133, 2**-134, 3 * 2**-135, 1.4e-45, 2**-24, 2**-25,
    3 * 2**-26, 6.1e-5, 5.96e-8, -5.96e-8, 2**-149 * 0x7FFFFF,
], dtype=torch.float32)


def random_fp32(n=4096, seed=0):
    """Random float32 bit patterns (all exponents, NaNs included)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-2**31, 2**31, (n,), generator=g, dtype=torch.int64).to(torch.int32).view(torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp32_downcast_rounds_to_nearest_even(device, dtype):
    x = torch.cat([EDGES, random_fp32()])
    assert_bits_equal(cast(x, dtype, device=device), x.to(dtype))
    assert_bits_equal(cast(x, dtype, "rtne", device=device), x.to(dtype))


def test_issue_examples(device):
    y = cast(torch.tensor([125 * 1.1, 1.99999994, 1.01171875], dtype=torch.float32), torch.bfloat16, device=device)
    assert y.float().tolist() == [138.0, 2.0, 1.015625]


@pytest.fixture
def uncorrected_interpreter(monkeypatch):
    """Triton's own interpreter casts, as shipped."""
    cast_impl, fp_to_fp = interp.InterpreterBuilder._atlas_kernels_triton_casts
    monkeypatch.setattr(interp.InterpreterBuilder, "cast_impl", cast_impl)
    monkeypatch.setattr(interp.InterpreterBuilder, "create_fp_to_fp", fp_to_fp)


@pytest.mark.interpreter(CASTS)
def test_uncorrected_interpreter_truncates_bf16(uncorrected_interpreter):
    """What the correction fixes (if Triton fixes it upstream, this fails: drop the correction)."""
    x = torch.tensor([125 * 1.1, 1.99999994, 1.01171875, 1e-40, 3.4e38], dtype=torch.float32)
    assert cast(x, torch.bfloat16).float().tolist()[:3] == [137.0, 1.9921875, 1.0078125]
    assert cast(x, torch.bfloat16, "rtne").float().tolist()[:3] == [137.0, 1.9921875, 1.0078125]
    assert bits(cast(x, torch.bfloat16))[3:].tolist() != bits(x.to(torch.bfloat16))[3:].tolist()


def _issue_quant_matmul(device="cpu"):
    """int8 operands whose accumulator is 125, 145, 165, 185; fp32 scale 1.1; bf16 out."""
    x1 = torch.tensor([[1, 1]], dtype=torch.int8, device=device)
    x2 = torch.tensor([[100, 120, 70, 90], [25, 25, 95, 95]], dtype=torch.int8, device=device)
    return ak.quant_matmul(x1, x2, torch.tensor([1.1], device=device), output_dtype=torch.bfloat16)


def test_quant_matmul_bf16_issue_case(device):
    before = _backend.launches["quant_matmul.gemm"]
    assert _issue_quant_matmul(device).float().tolist() == [[138.0, 160.0, 182.0, 204.0]]
    assert _backend.launches["quant_matmul.gemm"] == before + 1


@pytest.mark.interpreter(CASTS)
def test_quant_matmul_bf16_issue_case_fails_uncorrected(uncorrected_interpreter):
    assert _issue_quant_matmul().float().tolist() == [[137.0, 159.0, 181.0, 203.0]]


def test_fp32_downcast_toward_zero(device):
    x = torch.cat([EDGES, random_fp32(1024, seed=1)])
    fin = ~torch.isnan(x)
    want_bf16 = torch.where(fin, x.view(torch.int32) >> 16, -1).to(torch.int16)
    got = cast(x, torch.bfloat16, "rtz", device=device)
    assert torch.equal(torch.where(fin, got.view(torch.int16), -1), want_bf16)
    assert torch.isnan(got[~fin]).all()
    with np.errstate(over="ignore", invalid="ignore"):  # toward zero: the nearest, or its neighbour toward zero
        nearest = x.numpy().astype(np.float16)
        want16 = np.where(np.abs(nearest.astype(np.float64)) > np.abs(x.numpy()), np.nextafter(nearest, np.float16(0)),
                          nearest)
    assert_bits_equal(cast(x, torch.float16, "rtz", device=device), torch.from_numpy(want16))


@pytest.mark.parametrize("dst", [torch.float32, torch.float64, torch.int32, torch.float16])
def test_bf16_upcasts_and_to_int(device, dst):
    x = torch.cat([EDGES, random_fp32(1024, seed=2)]).to(torch.bfloat16)
    if dst == torch.int32:
        x = x[(x.float().abs() < 2**31) & ~torch.isnan(x)]
    if dst.is_floating_point:
        assert_bits_equal(cast(x, dst, device=device), x.to(dst))
    else:
        assert torch.equal(cast(x, dst, device=device), x.to(dst))


@pytest.mark.parametrize("src", [torch.int32, torch.int64, torch.float64, torch.float16])
def test_to_bf16_rounds_once(device, src):
    """int and float64 sources round straight to bf16 (no double rounding through fp32)."""
    if src == torch.float16:
        x = torch.cat([EDGES, random_fp32(1024, seed=3)]).to(torch.float16)
        want = x.to(torch.bfloat16)
    elif src == torch.float64:
        # 1 + 2**-8 + 2**-40 is above the bf16 tie, but fp32 would round it onto the tie
        x = torch.tensor([1 + 2**-8 + 2**-40, 1 + 2**-8 - 2**-40, 1e300, -1e-300, 2.5, float("nan")], dtype=src)
        want = torch.tensor([1 + 2**-7, 1.0, float("inf"), -0.0, 2.5, float("nan")]).to(torch.bfloat16)
    else:
        x = torch.tensor([0, 1, -1, 257, 259, 2**24 + 2**16 + 1, -(2**31), 2**31 - 1], dtype=src)
        want = torch.tensor([0, 1, -1, 256, 260, 2**24 + 2**17, -(2**31), 2**31]).to(torch.bfloat16)
    assert_bits_equal(cast(x, torch.bfloat16, device=device), want)


def test_float_to_int_truncates_toward_zero(device):
    """In range: truncation toward zero, as LLVM fptosi and the hardware. Out of range or NaN the hardware
    saturates (NaN -> 0) and numpy does not; the kernels clamp before every float -> int cast."""
    x = torch.tensor([2.7, -2.7, 2.5, -2.5, 0.5, -0.5, 127.9, -128.9, 1e9, -1e9], dtype=torch.float32)
    assert cast(x, torch.int32, device=device).tolist() == [2, -2, 2, -2, 0, 0, 127, -128, 1000000000, -1000000000]
    assert cast(x[:8], torch.int8, device=device).tolist() == [2, -2, 2, -2, 0, 0, 127, -128]


@triton.jit
def _int_ops_kernel(a_ptr, b_ptr, out_ptr, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    a = tl.load(a_ptr + o)
    b = tl.load(b_ptr + o)
    tl.store(out_ptr + 0 * BLOCK + o, a >> 1)
    tl.store(out_ptr + 1 * BLOCK + o, (a << 28) >> 28)
    tl.store(out_ptr + 2 * BLOCK + o, a // b)
    tl.store(out_ptr + 3 * BLOCK + o, a % b)
    tl.store(out_ptr + 4 * BLOCK + o, a * 65536 * 65536)  # int32 wraps
    tl.store(out_ptr + 5 * BLOCK + o, ((a.to(tl.int64) * 65536 * 65536) >> 33).to(tl.int32))
    tl.store(out_ptr + 6 * BLOCK + o, (a.to(tl.uint32) >> 28).to(tl.int32))


def test_integer_shifts_division_int64(device):
    """Arithmetic >> on signed, logical on unsigned; // and % truncate (C); int32 wraps; int64 exact."""
    a = torch.tensor([-7, 7, -8, -1, 15, -16, 2**30 + 3, -(2**31)], dtype=torch.int32)
    b = torch.tensor([2, -2, 3, 5, -4, 16, 7, 3], dtype=torch.int32)
    out = torch.empty(7 * 8, dtype=torch.int32, device=device)
    _int_ops_kernel[(1,)](a.to(device), b.to(device), out, BLOCK=8)
    out = out.cpu().reshape(7, 8).tolist()
    al, bl = a.tolist(), b.tolist()
    assert out[0] == [x >> 1 for x in al]
    assert out[1] == [((x & 0xF) ^ 8) - 8 for x in al]  # the low nibble, sign-extended
    assert out[2] == [int(x / y) for x, y in zip(al, bl)]
    assert out[3] == [int(math.fmod(x, y)) for x, y in zip(al, bl)]
    assert out[4] == [0] * 8
    assert out[5] == [(x * 2**32) >> 33 for x in al]
    assert out[6] == [(x & 0xFFFFFFFF) >> 28 for x in al]


@triton.jit
def _float_ops_kernel(a_ptr, b_ptr, c_ptr, out_ptr, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    a = tl.load(a_ptr + o)
    b = tl.load(b_ptr + o)
    c = tl.load(c_ptr + o)
    tl.store(out_ptr + 0 * BLOCK + o, a * b + c)
    tl.store(out_ptr + 1 * BLOCK + o, tl.fma(a, b, c))
    tl.store(out_ptr + 2 * BLOCK + o, tl.div_rn(a, b))
    tl.store(out_ptr + 3 * BLOCK + o, a / b)
    tl.store(out_ptr + 4 * BLOCK + o, (c + 12582912.0) - 12582912.0)


def test_fma_division_rint(device):
    """a * b + c rounds twice (the interpreter never contracts; launch() turns contraction off on GPUs),
    tl.fma once; / and div_rn are IEEE division; (c + 1.5 * 2**23) - 1.5 * 2**23 rounds half to even."""
    g = torch.Generator().manual_seed(4)
    a = torch.rand(256, generator=g) + 1
    b = torch.rand(256, generator=g) + 1
    c = -(a.double() * b.double()).float()  # a * b + c is the product's rounding error, or 0 when rounded first
    c[:8] = torch.tensor([0.5, 1.5, 2.5, -2.5, 3.5, -0.5, 255.5, -127.5])
    out = torch.empty(5 * 256, dtype=torch.float32, device=device)
    # contraction off, as launch() launches: a GPU compiler would otherwise fuse a * b + c into one fma
    _float_ops_kernel[(1,)](a.to(device), b.to(device), c.to(device), out, BLOCK=256, enable_fp_fusion=False)
    mul_add, fma, div_rn, div, rint = out.cpu().reshape(5, 256)
    assert torch.equal(mul_add, a * b + c)
    want_fma = (a.double() * b.double() + c.double()).float()  # exact product in float64, one rounding
    assert torch.equal(fma, want_fma) and not torch.equal(fma, mul_add)
    assert torch.equal(div_rn, a / b) and torch.equal(div, a / b)
    assert torch.equal(rint[:8], torch.round(c[:8]))


@pytest.mark.host  # a stand-in kernel records the launch arguments; nothing runs on a device
def test_launch_turns_fp_contraction_off():
    seen = {}

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: seen.update(kwargs)

    _backend.launch("test_kernel", Kernel(), (1,), 1, BLOCK=16)
    assert seen == {"BLOCK": 16, "enable_fp_fusion": False}
    _backend.launches.pop("test_kernel")


@pytest.mark.interpreter(CASTS)
def test_correction_is_installed_once():
    assert _backend.INTERPRETER_CASTS_CORRECTED
    assert _backend._install_interpreter_casts()  # idempotent
    assert interp.InterpreterBuilder.cast_impl._atlas_kernels_rtne


# --- the correction's scope: our launches only (ATLAS_KERNELS_INTERPRETER_CASTS), tested Triton versions only

ISSUE = torch.tensor([137.50000298, 1.01171875, 1.00390625, 3.4e38], dtype=torch.float32)
TRUNCATED = [137.0, 1.0078125, 1.0, 3.3895313892515355e38]     # Triton 3.9's own cast drops the low bits
ROUNDED = [138.0, 1.015625, 1.0, float("inf")]                     # torch / the hardware: nearest even


@pytest.mark.interpreter(CASTS)
@pytest.mark.skipif(_backend.INTERPRETER_CASTS != "ours", reason="the default scope")
def test_other_kernels_keep_tritons_casts():
    """Importing atlas_kernels leaves another library's interpreted bf16 cast alone (mutation caught: patching
    Triton's casts process-wide, i.e. `_corrected_here` always true); our launches are still corrected."""
    assert cast(ISSUE, torch.bfloat16, ours=False).float().tolist() == TRUNCATED
    assert cast(ISSUE, torch.bfloat16, "rtne", ours=False).float().tolist() == TRUNCATED
    assert cast(ISSUE, torch.bfloat16).float().tolist() == ROUNDED
    assert cast(ISSUE, torch.bfloat16, "rtne").float().tolist() == ROUNDED


SCOPE_SCRIPT = """
import torch, triton, triton.language as tl
import atlas_kernels as ak
from atlas_kernels import _backend

@triton.jit
def other(x_ptr, y_ptr, N: tl.constexpr):  # another library's kernel, launched directly
    o = tl.arange(0, N)
    tl.store(y_ptr + o, tl.load(x_ptr + o).to(tl.bfloat16))

x = torch.tensor([137.50000298, 1.01171875], dtype=torch.float32)
y = torch.empty(2, dtype=torch.bfloat16)
other[(1,)](x, y, N=2)
ours = ak.quant_matmul(torch.tensor([[1, 1]], dtype=torch.int8), torch.tensor([[100], [25]], dtype=torch.int8),
                       torch.tensor([1.1]), output_dtype=torch.bfloat16)
print(_backend.INTERPRETER_CASTS_CORRECTED, y.float().tolist(), ours.float().tolist())
"""


@pytest.mark.parametrize("mode, want", [
    ("all", "True [138.0, 1.015625] [[138.0]]"),     # every interpreted kernel corrected
    ("off", "False [137.0, 1.0078125] [[137.0]]"),   # Triton's casts everywhere, ours included
    ("ours", "True [137.0, 1.0078125] [[138.0]]"),   # the default, spelled out
])
@pytest.mark.interpreter(CASTS + " (ATLAS_KERNELS_INTERPRETER_CASTS, in a subprocess)")
def test_interpreter_casts_modes(mode, want):
    """ATLAS_KERNELS_INTERPRETER_CASTS selects the scope (mutation caught: the variable ignored or misread)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "ATLAS_KERNELS_INTERPRETER_CASTS": mode}
    r = subprocess.run([sys.executable, "-c", SCOPE_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == want


@pytest.mark.interpreter(CASTS + " (ATLAS_KERNELS_INTERPRETER_CASTS, in a subprocess)")
def test_bad_interpreter_casts_mode_is_refused():
    env = {**os.environ, "TRITON_INTERPRET": "1", "ATLAS_KERNELS_INTERPRETER_CASTS": "yes"}
    r = subprocess.run([sys.executable, "-c", "import atlas_kernels"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode != 0 and "ATLAS_KERNELS_INTERPRETER_CASTS='yes'; allowed: ours, all, off" in r.stderr


@pytest.mark.interpreter(CASTS)
def test_untested_triton_version_is_left_alone():
    """On a Triton version the correction was not tested on nothing is patched (mutation caught: no version gate)."""
    class Builder:  # stands in for another version's InterpreterBuilder
        def cast_impl(self, src, dst_type):
            pass

        def create_fp_to_fp(self, src, dst_type, rounding_mode):
            pass

    methods = (Builder.cast_impl, Builder.create_fp_to_fp)
    with pytest.warns(RuntimeWarning, match=r"triton 3\.5\.0 is not a version the correction was tested on"):
        assert not _backend._install_interpreter_casts(version="3.5.0", builder=Builder)
    assert (Builder.cast_impl, Builder.create_fp_to_fp) == methods


@pytest.mark.interpreter(CASTS)
def test_failed_self_check_puts_tritons_casts_back(monkeypatch):
    """A correction that does not round like torch is taken out again, with a warning (mutation caught: the
    self-check not run, or its result ignored)."""
    builder = interp.InterpreterBuilder
    originals = builder._atlas_kernels_triton_casts
    monkeypatch.setattr(builder, "cast_impl", originals[0])  # as before atlas_kernels was imported
    monkeypatch.setattr(builder, "create_fp_to_fp", originals[1])
    monkeypatch.setattr(builder, "_atlas_kernels_triton_casts", originals)
    monkeypatch.setattr(_backend, "_f32_to_bf16_bits", lambda x, toward_zero=False:
                        (np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16))
    with pytest.warns(RuntimeWarning, match="the self-check failed: x.to.bf16. of"):
        assert not _backend._install_interpreter_casts()
    assert (builder.cast_impl, builder.create_fp_to_fp) == originals
    assert not hasattr(builder, "_atlas_kernels_triton_casts")
