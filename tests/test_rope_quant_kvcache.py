"""dequant_rope_quant_kvcache: whole caches byte-exact against the reference, q/k/v bit for bit.

Both sides do the same fp32 operations in the same order and round once to
cos's dtype, so q/k/v are compared bit for bit on random inputs (dyadic exact
cases are in tests/test_exact.py); every cache comparison is of the WHOLE
cache, so bytes that must stay untouched are checked too.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import atlas_kernels as ak
from atlas_kernels import _backend
from atlas_kernels.autotune import override_config
from atlas_kernels.reference import rope_quant_kvcache as ref
from atlas_kernels.testing import assert_close, kernel_ran

KERNEL = "dequant_rope_quant_kvcache.fused"


def make_inputs(b=2, s=3, nq=4, nkv=2, d=64, x_dtype=torch.int32, cos_dtype=torch.float16, cache_mode="contiguous",
                c1=None, c2=None, bias_dtype=None, act=False, offsets=False, three_d=True, seed=0):
    """Random inputs and caches full of random bytes (so an untouched byte is recognisable)."""
    g = torch.Generator().manual_seed(seed)
    s = s if three_d else 1
    h = (nq + 2 * nkv) * d
    lead = (b, s) if three_d else (b,)
    if x_dtype == torch.int32:
        x = torch.randint(-3000, 3000, (*lead, h), dtype=torch.int32, generator=g)
    else:
        x = (torch.randn((*lead, h), generator=g) * 2).to(x_dtype)
    cs_shape = (b, s, 1, d) if three_d else (b, d)
    angle = torch.rand(cs_shape, generator=g) * 6.3
    cos, sin = angle.cos().to(cos_dtype), angle.sin().to(cos_dtype)
    if cache_mode == "page":
        c1, c2 = c1 or 3, c2 or 4
        slots = torch.randperm(c1 * c2, generator=g)[: b * s]
        indices = slots.to(torch.int32)
    else:
        c1, c2 = c1 or b + 1, c2 or s + 5
        indices = torch.randint(0, c2 - s + 1, (b,), dtype=torch.int32, generator=g)
    k_cache = torch.randint(-128, 128, (c1, c2, nkv, d), dtype=torch.int8, generator=g)
    v_cache = torch.randint(-128, 128, (c1, c2, nkv, d), dtype=torch.int8, generator=g)
    kw = {}
    if x_dtype == torch.int32:
        kw["weight_scale"] = torch.rand(h, generator=g) * 2e-3 + 1e-4
        if act:
            kw["activation_scale"] = torch.rand(b * s, generator=g) + 0.5
        if bias_dtype == torch.int32:
            kw["bias"] = torch.randint(-200, 200, (h,), dtype=torch.int32, generator=g)
        elif bias_dtype is not None:
            kw["bias"] = torch.randn(h, generator=g).to(bias_dtype)
    if offsets:
        kw["offset_k"] = torch.randn(nkv, d, generator=g) * 3
        kw["offset_v"] = torch.randn(nkv * d, generator=g) * 3
    scale_k = torch.rand(nkv, d, generator=g) * 0.05 + 0.01
    scale_v = torch.rand(nkv * d, generator=g) * 0.05 + 0.01
    args = (x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v, [nq * d, nkv * d, nkv * d])
    return args, {**kw, "cache_mode": cache_mode}


def assert_bits_equal(actual, expected, name):
    """Bit for bit: the kernel and the reference do the same fp32 operations in the same order (no FMA) and
    round once to cos's dtype, to nearest even, so q/k/v agree exactly on any input, not only dyadic ones."""
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    bits = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32}[expected.dtype]
    differ = actual.view(bits) != expected.view(bits)
    if differ.any():
        i = differ.nonzero()[0].tolist()
        raise AssertionError(f"{name}: {int(differ.sum())} of {differ.numel()} elements differ in their bits; first "
                             f"at {i}: {actual[tuple(i)].item()!r} vs the reference's {expected[tuple(i)].item()!r}")


def to_device(args, kw, device):
    """Copies of a call's arguments with every tensor on ``device`` (the caller's tensors stay as they were)."""
    def move(t):
        return t.to(device, copy=True) if isinstance(t, torch.Tensor) else t
    return [move(a) for a in args], {k: move(v) for k, v in kw.items()}


def run_both(args, kw, kernels=(KERNEL,), device="cpu"):
    """(ours on ``device``, reference on the host) on separate copies of the caches; ours runs inside kernel_ran.
    Our outputs come back on the host."""
    mine, kw_mine = to_device(args, kw, device)
    theirs = list(args)
    theirs[3], theirs[4] = args[3].clone(), args[4].clone()
    before = _backend.launches[KERNEL]
    with kernel_ran(*kernels):
        out = ak.dequant_rope_quant_kvcache(*mine, **kw_mine)
    assert _backend.launches[KERNEL] - before == 1, "one kernel launch per call"
    kw_ref = {k: v for k, v in kw.items() if k not in ("check_indices",)}
    expected = ref.dequant_rope_quant_kvcache(*theirs, **kw_ref)
    assert out[3] is mine[3] and out[4] is mine[4], "the caches are returned, updated in place"
    return [o.cpu() for o in out], expected


def assert_matches(out, expected, cos_dtype):
    for name, o, e in zip(("q", "k", "v"), out[:3], expected[:3]):
        assert o.dtype == e.dtype == cos_dtype, (name, o.dtype, e.dtype)
        assert_bits_equal(o, e, name)
    assert_close(out[3], expected[3], msg="k_cache (whole cache)")
    assert_close(out[4], expected[4], msg="v_cache (whole cache)")


@pytest.mark.parametrize("cache_mode", ["contiguous", "page"])
@pytest.mark.parametrize("x_dtype, cos_dtype, bias_dtype, act, offsets", [
    (torch.int32, torch.float16, torch.int32, True, True),
    (torch.int32, torch.bfloat16, torch.float32, False, True),
    (torch.int32, torch.float16, torch.float16, True, False),
    (torch.int32, torch.bfloat16, torch.bfloat16, False, False),
    (torch.int32, torch.float16, None, False, False),
    (torch.float16, torch.float16, None, False, True),
    (torch.bfloat16, torch.bfloat16, None, False, False),
])
def test_matches_reference(device, x_dtype, cos_dtype, bias_dtype, act, offsets, cache_mode):
    args, kw = make_inputs(x_dtype=x_dtype, cos_dtype=cos_dtype, bias_dtype=bias_dtype, act=act, offsets=offsets,
                           cache_mode=cache_mode)
    out, expected = run_both(args, {**kw, "kv_output": True}, device=device)
    assert out[0].shape == (2, 3, 4, 64) and out[1].shape == out[2].shape == (2, 3, 2, 64)
    assert out[0].dtype == out[1].dtype == cos_dtype
    assert_matches(out, expected, cos_dtype)
    assert not torch.equal(out[3], args[3]), "the k cache was written"


@pytest.mark.parametrize("cache_mode", ["contiguous", "page"])
@pytest.mark.parametrize("kv_output", [False, True])
@pytest.mark.parametrize("d", [64, 128])
def test_two_dim_x_and_kv_output(device, cache_mode, kv_output, d):
    args, kw = make_inputs(b=3, nq=2, nkv=1, d=d, three_d=False, cache_mode=cache_mode, act=True,
                           bias_dtype=torch.int32, offsets=True)
    out, expected = run_both(args, {**kw, "kv_output": kv_output}, device=device)
    assert out[0].shape == (3, 2, d)
    assert out[1].shape == ((3, 1, d) if kv_output else (0,))
    assert_matches(out, expected, torch.float16)


def test_round_half_to_even_and_saturation(device):
    # cos = 1, sin = 0 make RoPE the identity; scale 1 (k) and 0.5 (v) put the values exactly on ties
    ties = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -128.5, 300.0, -300.0, 3.25])
    expect_k = [0, 2, 2, 0, -2, -2, 126, 127, -128, 127, -128, 3]
    expect_v = [1, 3, 5, -1, -3, -5, 127, 127, -128, 127, -128, 6]  # ties / 0.5 are integers: no rounding
    d, nkv = 64, 1
    row = torch.zeros(d)
    row[: len(ties)] = ties
    x = torch.cat([row, row, row]).reshape(1, 1, 3 * d).to(torch.float16).to(device)  # q, k, v heads all = row
    cos = torch.ones(1, 1, 1, d, dtype=torch.float16, device=device)
    sin = torch.zeros(1, 1, 1, d, dtype=torch.float16, device=device)
    kc = torch.full((1, 2, nkv, d), 99, dtype=torch.int8, device=device)
    vc = kc.clone()
    idx = torch.tensor([1], dtype=torch.int32, device=device)
    with kernel_ran(KERNEL):
        ak.dequant_rope_quant_kvcache(x, cos, sin, kc, vc, idx, torch.ones(nkv, d, device=device),
                                      torch.full((nkv, d), 0.5, device=device), [d, d, d])
    assert kc[0, 1, 0, : len(ties)].tolist() == expect_k
    v_half = [2 * t for t in ties.tolist()]
    assert vc[0, 1, 0, : len(ties)].tolist() == [max(-128, min(127, int(v))) for v in v_half] == expect_v
    assert (kc[0, 0] == 99).all() and (vc[0, 0] == 99).all(), "row 0 must stay untouched"


def test_ties_through_dequant_and_offset(device):
    # int32 x * weight_scale 0.5 -> k = x / 2 lands on .5; offset 0.5 shifts v onto ties as well
    d = 64
    xs = torch.tensor([1, 3, 5, -1, -3, -5, 7, 9], dtype=torch.int32)
    row = torch.zeros(d, dtype=torch.int32)
    row[:8] = xs
    x = torch.cat([row, row, row]).reshape(1, 3 * d).to(device)
    cos = torch.ones(1, d, dtype=torch.bfloat16, device=device)
    sin = torch.zeros(1, d, dtype=torch.bfloat16, device=device)
    kc = torch.zeros((1, 1, 1, d), dtype=torch.int8, device=device)
    vc = kc.clone()
    ones = torch.ones(d, device=device)
    with kernel_ran(KERNEL):
        ak.dequant_rope_quant_kvcache(x, cos, sin, kc, vc, torch.tensor([0], device=device), ones, ones, [d, d, d],
                                      weight_scale=torch.full((3 * d,), 0.5, device=device),
                                      offset_v=torch.full((d,), 0.5, device=device), cache_mode="page")
    assert kc[0, 0, 0, :8].tolist() == [0, 2, 2, 0, -2, -2, 4, 4]   # 0.5 1.5 2.5 -0.5 -1.5 -2.5 3.5 4.5
    assert vc[0, 0, 0, :8].tolist() == [1, 2, 3, 0, -1, -2, 4, 5]   # 1.0 2.0 3.0 0.0 -1.0 -2.0 4.0 5.0


@pytest.mark.filterwarnings("ignore:(divide by zero|invalid value):RuntimeWarning")  # numpy, in the interpreter
def test_nan_and_inf_quantise_as_the_hardware_does(device):
    # Ascend's Cast and PTX's cvt turn NaN into 0 and saturate +-Inf; cos = 1, sin = 0 make RoPE the identity
    # except that Inf * 0 = NaN: k channel j + D/2 takes x[j] * sin, so an Inf at j makes channel j + D/2 NaN
    d, nkv, half = 64, 1, 32
    inf, nan = float("inf"), float("nan")
    row = torch.zeros(d)
    row[:4] = torch.tensor([nan, inf, -inf, 5.0])
    x = torch.cat([row, row, row]).reshape(1, 1, 3 * d).to(torch.float16)
    cos, sin = torch.ones(1, 1, 1, d, dtype=torch.float16), torch.zeros(1, 1, 1, d, dtype=torch.float16)
    kc = torch.full((1, 1, nkv, d), 99, dtype=torch.int8)
    vc = kc.clone()
    scale_v = torch.ones(nkv, d)
    scale_v[0, 4:6] = 0.0  # 0 / 0 = NaN and 5 / 0 = Inf reach the conversion without a NaN input
    x[0, 0, 2 * d + 5] = 5.0
    args = (x, cos, sin, kc, vc, torch.tensor([0], dtype=torch.int32), torch.ones(nkv, d), scale_v, [d, d, d])
    out, expected = run_both(args, {}, device=device)
    assert out[3][0, 0, 0, :4].tolist() == [0, 127, -128, 5]
    assert out[3][0, 0, 0, half:half + 4].tolist() == [0, 0, 0, 0]  # NaN, Inf * 0, -Inf * 0, 5 * 0
    assert out[4][0, 0, 0, :6].tolist() == [0, 127, -128, 5, 0, 127]
    assert_close(out[3], expected[3], msg="k_cache (whole cache)")
    assert_close(out[4], expected[4], msg="v_cache (whole cache)")


@pytest.mark.parametrize("x_dtype", [torch.int32, torch.bfloat16])
@pytest.mark.parametrize("nq, nkv, d", [(1, 1, 16), (3, 1, 32), (2, 2, 16), (5, 1, 2), (1, 1, 40)])
def test_small_heads_and_any_h(device, nq, nkv, d, x_dtype):
    # H = (Nq + 2*Nkv) * D need not be a multiple of 64 (CANN's limit): 48, 160, 96, 14, 120
    args, kw = make_inputs(b=2, s=2, nq=nq, nkv=nkv, d=d, x_dtype=x_dtype, cos_dtype=torch.bfloat16,
                           cache_mode="page", bias_dtype=torch.int32, act=True, offsets=True, seed=d)
    out, expected = run_both(args, {**kw, "kv_output": True}, device=device)
    assert out[0].shape == (2, 2, nq, d) and out[1].shape == (2, 2, nkv, d)
    assert_matches(out, expected, torch.bfloat16)
    assert not torch.equal(out[3], args[3]), "the k cache was written"


def test_page_mode_skips_negative_slots(device):
    args, kw = make_inputs(b=3, s=2, cache_mode="page", c1=4, c2=4, seed=5)
    idx = args[5].clone()
    idx[[1, 4]] = -1
    args = (*args[:5], idx, *args[6:])
    out, expected = run_both(args, {**kw, "kv_output": True}, device=device)
    assert_matches(out, expected, torch.float16)
    flat_before = args[3].reshape(-1, 2, 64)
    flat_after = out[3].reshape(-1, 2, 64)
    written = set(idx[idx >= 0].tolist())
    for slot in range(16):
        if slot not in written:
            assert torch.equal(flat_after[slot], flat_before[slot]), f"slot {slot} was not written to"


@pytest.mark.parametrize("bad", [[0, 12, 3, 5], [0, 999, 3, 2**31 - 1]])
def test_page_slots_beyond_the_cache_never_write(device, bad):
    args, kw = make_inputs(b=2, s=2, cache_mode="page", c1=3, c2=4, seed=2)
    idx = torch.tensor(bad, dtype=torch.int32)
    args = (*args[:5], idx, *args[6:])
    out, expected = run_both(args, kw, device=device)
    assert_matches(out, expected, torch.float16)
    with pytest.raises(ValueError, match=rf"indices\[1\] = {bad[1]} is outside the cache's 12 slots"):
        mine, kw_mine = to_device(args, kw, device)
        ak.dequant_rope_quant_kvcache(*mine, **kw_mine, check_indices=True)


@pytest.mark.parametrize("starts", [[-1, 2], [0, 4], [5, 1]])
def test_contiguous_start_outside_the_cache_never_writes(device, starts):
    args, kw = make_inputs(b=2, s=3, cache_mode="contiguous", c1=2, c2=6, seed=3)  # valid starts: 0..3
    idx = torch.tensor(starts, dtype=torch.int32)
    args = (*args[:5], idx, *args[6:])
    out, expected = run_both(args, kw, device=device)
    assert_matches(out, expected, torch.float16)
    bad = next(i for i, s in enumerate(starts) if not 0 <= s <= 3)
    assert torch.equal(out[3][bad], args[3][bad]), "the bad batch row's cache stays untouched"
    with pytest.raises(ValueError, match=rf"indices\[{bad}\] = {starts[bad]} is outside \[0, C2 - S\] = \[0, 3\]"):
        mine, kw_mine = to_device(args, kw, device)
        ak.dequant_rope_quant_kvcache(*mine, **kw_mine, check_indices=True)


def test_check_indices_rejects_repeated_page_slots(device):
    args, kw = make_inputs(b=2, s=2, cache_mode="page", c1=3, c2=4)
    args, kw = to_device(args, kw, device)
    args = (*args[:5], torch.tensor([3, -1, 7, 3], dtype=torch.int32, device=device), *args[6:])
    with pytest.raises(ValueError, match=r"indices\[3\] = 3 repeats indices\[0\]"):
        ak.dequant_rope_quant_kvcache(*args, **kw, check_indices=True)
    ok = (*args[:5], torch.tensor([3, -1, 7, -1], device=device), *args[6:])
    with kernel_ran(KERNEL):
        ak.dequant_rope_quant_kvcache(*ok, **kw, check_indices=True)  # -1 twice is padding, not a repeat


def test_strided_cache_views_write_only_their_rows(device):
    # the caches are views (every other block, heads 1:3 of 4) into bigger buffers: compare the whole buffers
    args, kw = make_inputs(b=2, s=2, nkv=2, cache_mode="page", c1=3, c2=4, seed=9)
    g = torch.Generator().manual_seed(1)
    big_k = torch.randint(-128, 128, (6, 4, 4, 64), dtype=torch.int8, generator=g)
    big_v = torch.randint(-128, 128, (6, 4, 4, 64), dtype=torch.int8, generator=g)
    exp_k, exp_v = big_k.clone(), big_v.clone()
    mine, kw_mine = to_device(args, kw, device)
    big_k, big_v = big_k.to(device), big_v.to(device)
    with kernel_ran(KERNEL):
        ak.dequant_rope_quant_kvcache(*mine[:3], big_k[::2, :, 1:3], big_v[::2, :, 1:3], *mine[5:], **kw_mine)
    ref.dequant_rope_quant_kvcache(*args[:3], exp_k[::2, :, 1:3], exp_v[::2, :, 1:3], *args[5:], **kw)
    assert_close(big_k.cpu(), exp_k, msg="k buffer")
    assert_close(big_v.cpu(), exp_v, msg="v buffer")


# each example launches the interpreter over up to b*s*(nq+2nkv) programs: 10 keep the test under a minute in CI
@settings(max_examples=min(10, settings.default.max_examples))
@given(b=st.integers(1, 3), s=st.integers(1, 4), nq=st.integers(1, 5), nkv=st.integers(1, 3),
       d=st.sampled_from([2, 16, 32, 40, 64, 96, 128]), x_dtype=st.sampled_from([torch.int32, torch.float16]),
       cache_mode=st.sampled_from(["contiguous", "page"]), kv_output=st.booleans(),
       config=st.sampled_from([(1, 1), (2, 2), (4, 4), (64, 8)]), seed=st.integers(0, 2**16))
def test_hypothesis(device, b, s, nq, nkv, d, x_dtype, cache_mode, kv_output, config, seed):
    c1, c2 = (b * s, 2) if cache_mode == "page" else (b, s + 2)
    args, kw = make_inputs(b=b, s=s, nq=nq, nkv=nkv, d=d, x_dtype=x_dtype, cache_mode=cache_mode, c1=c1, c2=c2,
                           act=True, bias_dtype=torch.float32, offsets=bool(seed % 2), seed=seed)
    if cache_mode == "page" and seed % 3 == 0:
        args[5][0] = -1
    with override_config(KERNEL, {"BLOCK_T": config[0], "HEADS": config[1]}):
        out, expected = run_both(args, {**kw, "kv_output": kv_output}, device=device)
    assert_matches(out, expected, torch.float16)


def test_npu_spelling_takes_quant_mode_as_int(device):
    args, kw = make_inputs(cache_mode="page", bias_dtype=torch.int32, act=True)
    theirs = list(args)
    theirs[3], theirs[4] = args[3].clone(), args[4].clone()
    mine, kw_mine = to_device(args, kw, device)
    with kernel_ran(KERNEL):
        out = ak.npu_dequant_rope_quant_kvcache(*mine, **kw_mine, quant_mode=0, input_layout="BSND", kv_output=True)
    assert_matches([o.cpu() for o in out], ref.dequant_rope_quant_kvcache(*theirs, **kw, kv_output=True),
                   torch.float16)
    with pytest.raises(ValueError, match="quant_mode must be 0"):
        ak.npu_dequant_rope_quant_kvcache(*mine, **kw_mine, quant_mode=1)


def test_torch_compile_fullgraph_traces_the_in_place_update(device):
    args, kw = make_inputs(cache_mode="page", bias_dtype=torch.float32, act=True, offsets=True)
    mine, kw_mine = to_device(args, kw, device)

    def step(x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v):
        q, _, _, kc, vc = ak.dequant_rope_quant_kvcache(x, cos, sin, k_cache, v_cache, indices, scale_k, scale_v,
                                                        args[8], **kw_mine)
        return q * 2, kc, vc

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    with kernel_ran(KERNEL):
        q2, kc, vc = compiled(*mine[:8])
    expected = ref.dequant_rope_quant_kvcache(*args[:3], args[3].clone(), args[4].clone(), *args[5:], **kw)
    assert_bits_equal(q2.cpu(), expected[0] * 2, "q * 2")
    assert_close(mine[3].cpu(), expected[3], msg="k_cache mutated in place under torch.compile")
    assert_close(mine[4].cpu(), expected[4], msg="v_cache mutated in place under torch.compile")


def _bad(**changes):
    """Call the op with make_inputs' arguments, some replaced: size_splits, cos, k_cache, ... by name."""
    args, kw = make_inputs(**changes.pop("make", {}))
    names = ["x", "cos", "sin", "k_cache", "v_cache", "indices", "scale_k", "scale_v", "size_splits"]
    named = dict(zip(names, args))
    for k, v in changes.items():
        (named if k in named else kw)[k] = v
    return lambda: ak.dequant_rope_quant_kvcache(*named.values(), **kw)


I8 = torch.int8


@pytest.mark.parametrize("call, exc, match", [
    (_bad(size_splits=[256, 128, 64]), ValueError, r"size_splits must be .* summing to the last dim of x \(H = 512\)"),
    (_bad(size_splits=[128, 128, 128, 128]), ValueError, "size_splits must be 3"),
    (_bad(size_splits=[192, 160, 160]), ValueError, r"size_splits must be \[Nq\*D, Nkv\*D, Nkv\*D\] with Nkv = 2"),
    (_bad(x=torch.zeros(2, 3, 512)), TypeError, "x must have dtype int32, float16, bfloat16"),
    (_bad(x=torch.zeros(6, 512, 1, dtype=torch.int32).reshape(2, 3, 512, 1)), ValueError, "x must have 2 to 3 dims"),
    (_bad(sin=torch.zeros(2, 3, 1, 64, dtype=torch.bfloat16)), TypeError, "sin must have the dtype of cos"),
    (_bad(cos=torch.zeros(2, 3, 1, 64)), TypeError, "cos must have dtype float16, bfloat16"),
    (_bad(cos=torch.zeros(2, 3, 64, dtype=torch.float16)), ValueError, r"cos must have shape \[2, 3, 1, 64\]"),
    (_bad(k_cache=torch.zeros(3, 8, 2, 64)), TypeError, "k_cache must have dtype int8"),
    (_bad(v_cache=torch.zeros(3, 8, 128, dtype=I8)), ValueError, "v_cache must have 4 dims"),
    (_bad(v_cache=torch.zeros(3, 9, 2, 64, dtype=I8)), ValueError, "v_cache must have the shape of k_cache"),
    (_bad(k_cache=torch.zeros(3, 8, 64, 2, dtype=I8).transpose(2, 3)), ValueError,
     "k_cache must be contiguous in its last dim"),
    (_bad(indices=torch.zeros(2, dtype=torch.int16)), TypeError, "indices must have dtype int32, int64"),
    (_bad(indices=torch.zeros(2, 1, dtype=torch.int32)), ValueError, "indices must have 1 dims"),
    (_bad(indices=torch.zeros(6, dtype=torch.int32)), ValueError, r"indices must have shape \[2\] \(from x's batch and sequence sizes\), got \[6\]"),
    (_bad(indices=torch.zeros(2, dtype=torch.int32), cache_mode="page"), ValueError, r"indices must have shape \[6\]"),
    (_bad(k_cache=torch.zeros(1, 8, 2, 64, dtype=I8), v_cache=torch.zeros(1, 8, 2, 64, dtype=I8)), ValueError,
     r"k_cache.shape\[0\] must be >= B = 2"),
    (_bad(scale_k=torch.ones(2, 64, dtype=torch.float16)), TypeError, "scale_k must have dtype float32"),
    (_bad(scale_v=torch.ones(64)), ValueError, r"scale_v must have shape \[2, 64\] or \[128\]"),
    (_bad(offset_k=torch.ones(3, 64)), ValueError, "offset_k must have shape"),
    (_bad(weight_scale=None), TypeError, "weight_scale .*is required"),
    (_bad(weight_scale=torch.ones(64)), ValueError, r"weight_scale must have shape \[512\]"),
    (_bad(activation_scale=torch.ones(2)), ValueError, r"activation_scale must have shape \[6\]"),
    (_bad(bias=torch.ones(512, dtype=torch.int64)), TypeError, "bias must have dtype"),
    (_bad(quant_mode="dynamic"), ValueError, "quant_mode must be one of 'static'"),
    (_bad(input_layout="BNSD"), ValueError, "input_layout must be one of 'BSND'"),
    (_bad(cache_mode="paged"), ValueError, "cache_mode must be one of 'contiguous', 'page'"),
    (_bad(make={"d": 320, "nq": 1, "nkv": 1}), ValueError,
     "head dim D = k_cache.shape.3. must be even and at most 256"),
])
@pytest.mark.host  # host tensors: every error is raised while validating, before any launch
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.interpreter("the traffic meter counts the interpreter's loads and stores")
def test_meter_decode_b64_single_pass():
    """Decode B = 64, (Nq, Nkv, D) = (32, 8, 128): <= 1.05x the minimum bytes, >= 3x fewer than unfused torch."""
    from atlas_kernels.testing.meter import TrafficMeter, minimum_bytes, reference_bytes
    # caches exactly as large as the rows written, so the reference's index_put_ is not charged for a big cache
    args, kw = make_inputs(b=64, s=1, nq=32, nkv=8, d=128, three_d=False, cache_mode="contiguous", c1=64, c2=1,
                           bias_dtype=torch.int32, act=True, offsets=True)
    args[5].zero_()
    theirs = list(args)
    theirs[3], theirs[4] = args[3].clone(), args[4].clone()
    with TrafficMeter() as m, kernel_ran(KERNEL):
        q, _, _, kc, vc = ak.dequant_rope_quant_kvcache(*args, **kw)
    inputs = [t for t in (*args[:3], args[5], args[6], args[7], *kw.values()) if isinstance(t, torch.Tensor)]
    floor = minimum_bytes(inputs, [q, kc, vc])  # the caches hold exactly the written rows
    ref_b, _ = reference_bytes(ref.dequant_rope_quant_kvcache, *theirs, **kw)
    assert m.total <= 1.05 * floor, (m.total, floor)
    assert ref_b >= 3 * m.total, (ref_b, m.total)
    assert m.loaded >= args[0].numel() * 4, "every x byte is read"


# ---------------------------------------------------------------- argument forms of torch_npu's binding
_SPLIT_FORMS = {
    "tuple": tuple, "numpy": np.array, "numpy-int32": lambda v: np.array(v, dtype=np.int32),
    "numpy-ints": lambda v: [np.int64(i) for i in v], "tensor": torch.tensor,
    "tensor-int32": lambda v: torch.tensor(v, dtype=torch.int32),
}


def _npu_call(args, kw, size_splits, device, **extra):
    """npu_dequant_rope_quant_kvcache on copies of the tensors on ``device``, inside kernel_ran; outputs on the host."""
    mine, kw_mine = to_device(args, kw, device)
    mine[8] = size_splits
    with kernel_ran(KERNEL):
        return [o.cpu() for o in ak.npu_dequant_rope_quant_kvcache(*mine, **kw_mine, **extra)]


def _assert_same(out, expected):
    for name, o, e in zip(("q", "k", "v", "k_cache", "v_cache"), out, expected):
        assert o.dtype == e.dtype and torch.equal(o, e), name


@pytest.mark.parametrize("form", sorted(_SPLIT_FORMS))
def test_npu_spelling_size_splits_forms_match_the_list_form(device, form):
    """size_splits (int[]) as a tuple, a numpy integer array, a list of numpy ints or an integer host tensor gives
    the list form's q/k/v and caches, through the kernel."""
    args, kw = make_inputs(cache_mode="page", bias_dtype=torch.int32, act=True, offsets=True)
    expected = _npu_call(args, kw, list(args[8]), device, kv_output=True)
    out = _npu_call(args, kw, _SPLIT_FORMS[form](list(args[8])), device, kv_output=True)
    _assert_same(out, expected)
    assert not torch.equal(expected[3], args[3]), "the cache was written"


@pytest.mark.parametrize("quant_mode, kv_output", [
    (np.int64(0), True), (np.int32(0), np.bool_(True)), (torch.tensor(0), np.bool_(False)), (0, False)])
def test_npu_spelling_scalar_forms(device, quant_mode, kv_output):
    """quant_mode (int): a Python or numpy integer or a 0-d integer tensor; kv_output (bool): a Python or numpy
    bool. The result is the plain-Python call's."""
    args, kw = make_inputs(cache_mode="contiguous", bias_dtype=torch.float32)
    expected = _npu_call(args, kw, list(args[8]), device, quant_mode=0, kv_output=bool(kv_output))
    out = _npu_call(args, kw, list(args[8]), device, quant_mode=quant_mode, kv_output=kv_output)
    _assert_same(out, expected)
    assert out[1].numel() == (expected[1].numel() if kv_output else 0)


@pytest.mark.parametrize("extra, exc, match", [
    ({"size_splits": np.array([256.0, 128.0, 128.0])}, TypeError, "size_splits must be a sequence of ints"),
    ({"size_splits": torch.tensor([256.0, 128.0, 128.0])}, TypeError, "size_splits must be a sequence of ints"),
    ({"size_splits": [256, 128, True]}, TypeError, "size_splits must be a sequence of ints"),
    ({"size_splits": 512}, TypeError, "size_splits must be a sequence of ints"),
    ({"quant_mode": 0.0}, TypeError, "quant_mode must be an int"),
    ({"quant_mode": torch.tensor([0])}, TypeError, "quant_mode must be an int"),
    ({"quant_mode": np.int64(1)}, ValueError, "quant_mode must be 0"),
    ({"kv_output": 1}, TypeError, "kv_output must be a bool"),
    ({"kv_output": torch.tensor(True)}, TypeError, "kv_output must be a bool"),
])
@pytest.mark.host  # host tensors: every error is raised while validating the arguments, before any launch
def test_npu_spelling_argument_form_errors(extra, exc, match):
    args, kw = make_inputs(cache_mode="contiguous")
    args = list(args)
    if "size_splits" in extra:
        args[8] = extra.pop("size_splits")
    with pytest.raises(exc, match=match):
        ak.npu_dequant_rope_quant_kvcache(*args, **kw, **extra)
