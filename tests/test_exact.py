"""Bit-exact float outputs, and torch.library.opcheck for every custom op.

Inputs are dyadic (small integers times powers of two) so every fp32 intermediate is exact and the
only rounding is the final fp32 -> fp16/bf16 cast, many results landing on its ties. The expected
value is computed in float64 (exact), cast to fp32 (exact, asserted) and rounded by torch (nearest
even). Kernel and reference must both equal it bit for bit. Tensors live on the ``device`` fixture.
"""
import importlib

import pytest
import torch

import atlas_kernels as ak
import conftest
from atlas_kernels.reference import compress_matmul as cm_ref
from atlas_kernels.reference import nsa_compress as nsa_ref
from atlas_kernels.reference import quant_matmul as qmm_ref
from atlas_kernels.reference import rope_quant_kvcache as rope_ref
from atlas_kernels.testing import kernel_ran

# the modules (the package re-exports functions of the same names)
cm_mod, int4_mod, nsa_mod, qmm_mod, rope_mod, dq_mod, arnq_mod = (importlib.import_module(f"atlas_kernels.{m}") for m in (
    "compress_matmul", "int4_pack", "nsa_compress", "quant_matmul", "rope_quant_kvcache", "dynamic_quant",
    "add_rms_norm_quant"))

FLOAT16S = [torch.float16, torch.bfloat16]


def dyadic(shape, bits, exp, seed, dtype=torch.float32):
    """Integers in [-2**bits, 2**bits) times 2**exp: exact in ``dtype`` when bits < its mantissa width."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-2**bits, 2**bits, shape, generator=g).double() * 2.0**exp).to(dtype)


def rounded(exact: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """float64 value that fp32 holds exactly -> torch's nearest-even ``dtype``; the ties and inexact counts."""
    f32 = exact.float()
    assert torch.equal(f32.double(), exact), "test inputs must keep fp32 exact"
    out = f32.to(dtype)
    other = 2 * f32.double() - out.double()  # the neighbour on the other side, if f32 is a tie
    ties = (other.to(dtype).double() == other) & (other != out.double())
    return out, int(ties.sum()), int((out.double() != exact).sum())


def assert_bitwise(got, want, msg):
    got = got.cpu()
    assert got.dtype == want.dtype, f"{msg}: dtype {got.dtype} != {want.dtype}"
    diff = (got.view(torch.int16) != want.view(torch.int16)).nonzero()
    assert diff.numel() == 0, (f"{msg}: {diff.shape[0]} of {want.numel()} elements differ, first at "
                               f"{diff[0].tolist()}: {got[tuple(diff[0])]} != {want[tuple(diff[0])]}")


def check_exact(got, ref_out, exact, dtype, msg, rounds=True):
    """got (kernel) and ref_out (reference) both equal round(exact) bit for bit; rounding was exercised."""
    want, ties, inexact = rounded(exact, dtype)
    assert_bitwise(got, want, f"{msg} kernel")
    assert_bitwise(ref_out, want, f"{msg} reference")
    assert not rounds or (ties > 0 and inexact > 0), f"{msg}: no rounding exercised ({ties} ties, {inexact} inexact)"


# ------------------------------------------------------------------------------------------ quant_matmul
QMM_CASES = [  # (output dtype, scale form, pertoken, bias dtype): torch_npu's rows with a float output
    (torch.float16, "int64", False, torch.int32),
    (torch.float16, "float32", False, None),
    (torch.float16, "float32", True, torch.float16),
    (torch.bfloat16, "float32", False, torch.float32),
    (torch.bfloat16, "float32", False, None),
    (torch.bfloat16, "bfloat16", True, torch.bfloat16),
]


@pytest.mark.parametrize("out_dtype, scale_form, pertoken, bias_dtype", QMM_CASES)
def test_quant_matmul_exact(device, out_dtype, scale_form, pertoken, bias_dtype):
    m, k, n = 9, 8, 40
    x1 = dyadic((m, k), 4, 0, 1).to(torch.int8)
    x2 = dyadic((k, n), 4, 0, 2).to(torch.int8)
    acc = x1.double() @ x2.double()  # |acc| <= 2048
    scale = (16 + dyadic((n,), 3, 0, 3).abs()) * 2.0**-6  # 5 significant bits: trans_quant_param keeps them
    kw = {"output_dtype": out_dtype}
    v = acc
    if bias_dtype == torch.int32:
        kw["bias"] = dyadic((n,), 6, 0, 4).to(torch.int32)
        v = v + kw["bias"].double()
    v = v * scale.double()
    if pertoken:
        kw["pertoken_scale"] = (4 + dyadic((m,), 2, 0, 5).abs()) * 2.0**-2
        v = v * kw["pertoken_scale"].double()[:, None]
    if bias_dtype is not None and bias_dtype != torch.int32:
        kw["bias"] = dyadic((n,), 6, -2, 6, bias_dtype)
        v = v + kw["bias"].double()
    scale_arg = ak.trans_quant_param(scale) if scale_form == "int64" else scale.to(getattr(torch, scale_form))
    args = (x1, x2, scale_arg)
    with kernel_ran("quant_matmul.gemm"):
        out = ak.quant_matmul(*(a.to(device) for a in args), **{k_: (t.to(device) if torch.is_tensor(t) else t)
                                                                  for k_, t in kw.items()})
    ref_out = qmm_ref.quant_matmul(*args, kw.get("offset"), kw.get("pertoken_scale"), kw.get("bias"), out_dtype)
    check_exact(out, ref_out, v, out_dtype, f"quant_matmul {scale_form} pertoken={pertoken} bias={bias_dtype}")


# ------------------------------------------------------------------------------------------ matmul_compress_dequant
@pytest.mark.parametrize("with_bias", [False, True])
def test_matmul_compress_dequant_exact(device, with_bias):
    """fp16 is the op's only output dtype (aclnnMatmulCompressDequant)."""
    m, k, n = 7, 64, 48
    x1 = dyadic((m, k), 4, 0, 11).to(torch.int8)
    w = dyadic((n, k), 4, 0, 12).to(torch.int8)
    w[:, ::3] = 0
    x2, idx, info = ak.compress_weight(w)
    scale = (16 + dyadic((1, n), 3, 0, 13).abs()) * 2.0**-8
    deq = (scale.view(torch.int32).to(torch.int64) & 0xFFFFFFFF).to(torch.uint64)
    bias = dyadic((n,), 8, 0, 14).to(torch.int32) if with_bias else None
    exact = (x1.double() @ w.double().t() + (0 if bias is None else bias.double())) * scale.double()
    with kernel_ran("quant_matmul.gemm"):
        out = ak.matmul_compress_dequant(x1.to(device), x2.to(device), idx.to(device),
                                         None if bias is None else bias.to(device), deq.to(device),
                                         compress_info=info)
    check_exact(out, cm_ref.matmul_compress_dequant(x1, x2, idx, bias, deq, info), exact, torch.float16,
                f"matmul_compress_dequant bias={with_bias}")


# ------------------------------------------------------------------------------------------ nsa_compress
@pytest.mark.parametrize("dtype", FLOAT16S)
@pytest.mark.parametrize("block, stride", [(32, 16), (48, 32)])
def test_nsa_compress_forward_backward_exact(device, dtype, block, stride):
    asl = [70, 150]
    n, d = 2, 24
    x = dyadic((asl[-1], n, d), 7, 0, 21, dtype)        # integers: exact in bf16 (8 bits) and fp16
    w = dyadic((block, n), 6, -6, 22, dtype)
    windows = nsa_ref._window_index(asl, block, stride, "cpu")  # [T', l] token of each window position
    exact = torch.einsum("cjnd,jn->cnd", x.double()[windows], w.double())
    g = dyadic(tuple(exact.shape), 6, -6, 23, dtype)
    dx = torch.zeros(x.shape, dtype=torch.float64).index_add_(
        0, windows.reshape(-1), torch.einsum("cnd,jn->cjnd", g.double(), w.double()).reshape(-1, n, d))
    dw = torch.einsum("cnd,cjnd->jn", g.double(), x.double()[windows])
    xk, wk = x.to(device).requires_grad_(), w.to(device).requires_grad_()
    with kernel_ran("nsa_compress.fwd", "nsa_compress.bwd", "nsa_compress.dw_reduce"):
        out = ak.nsa_compress(xk, wk, block, stride, actual_seq_len=asl)
        out.backward(g.to(device))
    ref_dx, ref_dw = nsa_ref.nsa_compress_grad(g, x, w, block, stride, asl)
    check_exact(out.detach(), nsa_ref.nsa_compress(x, w, block, stride, asl), exact, dtype, "nsa_compress out")
    check_exact(xk.grad, ref_dx, dx, dtype, "nsa_compress dinput")
    check_exact(wk.grad, ref_dw, dw, dtype, "nsa_compress dweight")


# ------------------------------------------------------------------------------------------ rope kvcache
@pytest.mark.parametrize("cos_dtype", FLOAT16S)
@pytest.mark.parametrize("x_kind", ["float", "int32"])
def test_dequant_rope_quant_kvcache_exact(device, cos_dtype, x_kind):
    b, s, nq, nkv, d = 2, 3, 2, 1, 64
    h = (nq + 2 * nkv) * d
    kw = {"kv_output": True}
    if x_kind == "float":
        x = dyadic((b, s, h), 7, 0, 31, cos_dtype)
        f = x.double()
    else:
        x = dyadic((b, s, h), 12, 0, 31).to(torch.int32)
        kw["weight_scale"] = (8 + dyadic((h,), 2, 0, 32).abs()) * 2.0**-9
        kw["activation_scale"] = (2 + dyadic((b * s,), 1, 0, 33).abs()) * 2.0**-1
        kw["bias"] = dyadic((h,), 6, -3, 34)
        f = (x.double() * kw["weight_scale"].double() * kw["activation_scale"].double().reshape(b, s, 1)
             + kw["bias"].double())
    cos = dyadic((b, s, 1, d), 4, -4, 35, cos_dtype)
    sin = dyadic((b, s, 1, d), 4, -4, 36, cos_dtype)
    k_cache = torch.zeros((b + 1, s + 2, nkv, d), dtype=torch.int8)
    v_cache = torch.zeros_like(k_cache)
    indices = torch.tensor([0, 2], dtype=torch.int32)
    scale_k = torch.full((nkv, d), 64.0)
    scale_v = torch.full((nkv * d,), 256.0)
    args = (x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, [nq * d, nkv * d, nkv * d])
    q_f, k_f, v_f = torch.split(f, [nq * d, nkv * d, nkv * d], dim=-1)

    def rope(t, heads):
        t = t.reshape(b, s, heads, d)
        rotated = torch.cat((-t[..., d // 2:], t[..., :d // 2]), dim=-1)
        return t * cos.double() + rotated * sin.double()

    exact = {"q": rope(q_f, nq), "k": rope(k_f, nkv), "v": v_f.reshape(b, s, nkv, d)}
    mine = [a.to(device) for a in args[:8]] + [args[8]]
    with kernel_ran("dequant_rope_quant_kvcache.fused"):
        out = ak.dequant_rope_quant_kvcache(*mine, **{k_: (t.to(device) if torch.is_tensor(t) else t)
                                                     for k_, t in kw.items()})
    ref_out = rope_ref.dequant_rope_quant_kvcache(*args, **kw)
    for i, name in enumerate("qkv"):
        # a float x's v is x itself: nothing to round
        check_exact(out[i], ref_out[i], exact[name], cos_dtype, f"rope {x_kind} {name}",
                    rounds=x_kind == "int32" or name != "v")
    assert torch.equal(out[3].cpu(), ref_out[3]) and torch.equal(out[4].cpu(), ref_out[4]), "cache bytes"


# ------------------------------------------------------------------------------------------ opcheck
def _capture(monkeypatch, module, call):
    """(custom op, args) of the one torch.ops.atlas call that ``call`` makes through module.call_op."""
    seen = []
    original = module.call_op
    monkeypatch.setattr(module, "call_op", lambda op, packet, *args: seen.append((packet, args))
                        or original(op, packet, *args))
    call()
    assert len(seen) == 1
    return seen[0]


def _opcheck_calls(device):
    i8 = lambda shape, seed: dyadic(shape, 4, 0, seed).to(torch.int8).to(device)  # noqa: E731
    w_nk = dyadic((32, 64), 4, 0, 41).to(torch.int8)
    x2, idx, info = ak.compress_weight(w_nk)
    int4 = dyadic((16, 32), 3, 0, 42).to(torch.int32).to(device)
    packed, nz = ak.convert_weight_to_int4pack(int4), ak.nd_to_nz(i8((20, 40), 51))  # built before the capture
    nsa_x = dyadic((48, 2, 8), 4, 0, 43, torch.float16).to(device)
    nsa_w = dyadic((32, 2), 4, -4, 44, torch.float16).to(device)
    b, s, nq, nkv, d = 1, 2, 1, 1, 16
    rope_args = (dyadic((b, s, (nq + 2 * nkv) * d), 4, 0, 45, torch.float16),
                 dyadic((b, s, 1, d), 3, -3, 46, torch.float16), dyadic((b, s, 1, d), 3, -3, 47, torch.float16),
                 torch.zeros((2, 4, nkv, d), dtype=torch.int8),
                 torch.zeros((2, 4, nkv, d), dtype=torch.int8), torch.tensor([1], dtype=torch.int32),
                 torch.full((nkv, d), 8.0), torch.full((nkv * d,), 8.0))
    return {
        "quant_matmul": (qmm_mod, lambda: ak.quant_matmul(i8((4, 32), 48), i8((32, 16), 49),
                                                          torch.full((16,), 0.5, device=device),
                                                          output_dtype=torch.bfloat16)),
        "matmul_compress_dequant": (cm_mod, lambda: ak.matmul_compress_dequant(
            i8((3, 64), 50), x2.to(device), idx.to(device), None,
            torch.full((1, 32), 2**30, dtype=torch.int64, device=device), compress_info=info)),
        "convert_weight_to_int4pack": (int4_mod, lambda: ak.convert_weight_to_int4pack(int4)),
        "unpack_int4": (int4_mod, lambda: ak.unpack_int4(packed)),
        "nd_to_nz": (int4_mod, lambda: ak.nd_to_nz(i8((20, 40), 51))),
        "nz_to_nd": (int4_mod, lambda: ak.nz_to_nd(nz, shape=(20, 40))),
        "nsa_compress": (nsa_mod, lambda: ak.nsa_compress(nsa_x, nsa_w, 32, 16, actual_seq_len=[48])),
        "nsa_compress_grad": (nsa_mod, lambda: nsa_mod.npu_nsa_compress_grad(
            dyadic((2, 2, 8), 3, -3, 52, torch.float16).to(device), nsa_x, nsa_w, 32, 16, actual_seq_len=[48])),
        "dequant_rope_quant_kvcache": (rope_mod, lambda: ak.dequant_rope_quant_kvcache(
            *(t.to(device) for t in rope_args), [nq * d, nkv * d, nkv * d], kv_output=True)),
        "dynamic_quant": (dq_mod, lambda: ak.npu_dynamic_quant(
            dyadic((6, 40), 5, -2, 61, torch.float16).to(device),
            smooth_scales=dyadic((40,), 3, -3, 62, torch.float16).to(device))),
        "quantize": (dq_mod, lambda: ak.npu_quantize(
            dyadic((6, 40), 5, -2, 63, torch.float16).to(device), torch.full((40,), 0.25, device=device),
            dyadic((40,), 3, 0, 64).to(torch.int32).to(device), torch.qint8, axis=-1)),
        "add_rms_norm_dynamic_quant": (arnq_mod, lambda: ak.npu_add_rms_norm_dynamic_quant(
            dyadic((6, 40), 5, -2, 53, torch.float16).to(device), dyadic((6, 40), 5, -2, 54, torch.float16).to(device),
            dyadic((40,), 3, -3, 55, torch.float16).to(device), beta=dyadic((40,), 3, -4, 56, torch.float16).to(device))),
        "add_rms_norm_quant": (arnq_mod, lambda: ak.npu_add_rms_norm_quant(
            dyadic((6, 40), 5, -2, 57, torch.float16).to(device), dyadic((6, 40), 5, -2, 58, torch.float16).to(device),
            dyadic((40,), 3, -3, 59, torch.float16).to(device), torch.full((40,), 0.125, device=device),
            dyadic((40,), 3, 0, 60).to(torch.int32).to(device))),
        # tensor actual_seq_len: called directly, not through call_op (module None: the lambda gives the args)
        "nsa_compress_varlen": (None, lambda: (nsa_x, nsa_w, 32, 16, torch.tensor([48]))),
        "nsa_compress_grad_varlen": (None, lambda: (dyadic((2, 2, 8), 3, -3, 52, torch.float16).to(device), nsa_x,
                                                    nsa_w, 32, 16, torch.tensor([48]))),
    }


def test_opcheck_covers_every_custom_op(device):
    registered = {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("atlas::")}
    assert registered == set(_opcheck_calls(device))


@pytest.mark.parametrize("name", ["quant_matmul", "matmul_compress_dequant", "convert_weight_to_int4pack",
                                  "unpack_int4", "nd_to_nz", "nz_to_nd", "nsa_compress", "nsa_compress_grad",
                                  "nsa_compress_varlen", "nsa_compress_grad_varlen", "dequant_rope_quant_kvcache",
                                  "dynamic_quant", "quantize", "add_rms_norm_dynamic_quant", "add_rms_norm_quant"])
def test_opcheck(device, monkeypatch, name):
    module, call = _opcheck_calls(device)[name]
    if module is None:
        packet, args = getattr(torch.ops.atlas, name), call()
    else:
        packet, args = _capture(monkeypatch, module, call)
    assert packet is getattr(torch.ops.atlas, name)
    torch.library.opcheck(packet, args)


# ------------------------------------------------------------------------------------------ device selection
@pytest.mark.host
def test_select_test_device():
    select = conftest.select_test_device
    assert select(None, False, False) == "cpu"
    assert select(None, True, False) == "cuda"
    assert select(None, True, True) == "npu"
    assert select("cpu", True, True) == "cpu"
    assert select("cuda", True, False) == "cuda"
    with pytest.raises(ValueError, match="no npu device"):
        select("npu", True, False)
    with pytest.raises(ValueError, match="one of cpu, cuda, npu"):
        select("gpu", True, False)


def test_device_fixture_matches_the_backend(device):
    """cpu runs the interpreter; a native device must not (TRITON_INTERPRET decided before triton's import)."""
    from atlas_kernels import _backend
    assert device.type == conftest.TEST_DEVICE
    assert _backend.INTERPRETER == (device.type == "cpu")
