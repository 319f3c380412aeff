"""nsa_compress: forward and both gradients against the reference, determinism, lifted limits, errors, compile, meter.

Op tests run the op on the ``device`` fixture (the interpreter on CPU, else the GPU/NPU) and compare on the host
against the reference computed from the host inputs."""
import numpy as np
import pytest
import torch
import torch._dynamo.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import atlas_kernels as ak
from atlas_kernels.autotune import override_config
from atlas_kernels.reference import nsa_compress as ref
from atlas_kernels.testing import assert_close, kernel_ran

FWD, BWD, RED = "nsa_compress.fwd", "nsa_compress.bwd", "nsa_compress.dw_reduce"
# leading 0, a zero-length sequence, sequences shorter than a block, trailing partial windows
RAGGED = [0, 5, 40, 40, 137, 300]


def make(asl, n, d, block, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(asl[-1], n, d, generator=g).to(dtype)
    w = (torch.randn(block, n, generator=g) / block ** 0.5).to(dtype)
    return x, w


def run_autograd(x, w, block, stride, asl, grad_seed=1, device="cpu"):
    """Kernel output and (dinput, dweight) through autograd on ``device``, plus the reference triple; all on the host.
    x may already be a view on ``device`` (its strides are kept)."""
    xk, wk = x.to(device).clone().requires_grad_(), w.to(device).clone().requires_grad_()
    x = x.cpu()
    expected = ref.nsa_compress(x, w, block, stride, asl)
    # no windows: no forward launch; no tokens: no backward launch
    with kernel_ran(*[k for k, ran in ((FWD, expected.shape[0]), (BWD, x.shape[0]), (RED, True)) if ran]):
        out = ak.nsa_compress(xk, wk, block, stride, actual_seq_len=asl)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(x.dtype)
        out.backward(grad.to(device))
    dx, dw = ref.nsa_compress_grad(grad, x, w, block, stride, asl)
    return (out.detach().cpu(), xk.grad.cpu(), wk.grad.cpu()), (expected, dx, dw)


def check(actual, expected):
    for name, a, e in zip(("out", "dinput", "dweight"), actual, expected):
        assert_close(a, e, msg=name)


@pytest.mark.parametrize("block, stride, dtype", [
    (32, 16, torch.float16), (32, 16, torch.bfloat16), (64, 32, torch.float16), (64, 32, torch.bfloat16),
    (32, 32, torch.float16), (48, 32, torch.bfloat16), (128, 16, torch.float16), (80, 48, torch.float16),
])
def test_matches_reference_ragged(device, block, stride, dtype):
    x, w = make(RAGGED, 2, 32, block, dtype)
    actual, expected = run_autograd(x, w, block, stride, RAGGED, device=device)
    assert actual[0].shape[0] == sum(ref.num_windows(n, block, stride) for _, n in ref.sequence_bounds(RAGGED))
    check(actual, expected)


@pytest.mark.parametrize("asl", [[32], [31], [16, 47], [47, 48, 95]], ids=["one-block", "short", "partial", "mixed"])
def test_edge_sequences(device, asl):
    x, w = make(asl, 2, 16, 32, torch.float16)
    actual, expected = run_autograd(x, w, 32, 16, asl, device=device)
    check(actual, expected)
    if asl == [31]:
        assert actual[0].shape == (0, 2, 16) and not actual[1].any() and not actual[2].any()


def test_many_sequences_small_work_items_and_d_blocks(device):
    g = torch.Generator().manual_seed(5)
    lengths = torch.randint(0, 70, (24,), generator=g)
    asl = torch.cumsum(lengths, 0)            # a CPU tensor is accepted as host data
    x, w = make(asl.tolist(), 2, 32, 32, torch.bfloat16)
    # 2 windows per item: sequences split into many items, ownership edges everywhere; 2 D blocks of 16
    cfg = {"BLOCK_D": 16, "WINDOWS": 2}
    with override_config(FWD, cfg), override_config(BWD, cfg):
        actual, expected = run_autograd(x, w, 32, 16, asl, device=device)
    check(actual, expected)


@settings(max_examples=8)  # each example runs forward and backward in the interpreter: < 1 min in CI
@given(lengths=st.lists(st.integers(0, 90), min_size=1, max_size=5), geo=st.sampled_from([(32, 16), (48, 16), (32, 32), (64, 16)]),
       windows=st.integers(1, 4), block_d=st.sampled_from([16, 32]), leading_zero=st.booleans(), seed=st.integers(0, 99))
def test_hypothesis_ragged(device, lengths, geo, windows, block_d, leading_zero, seed):
    block, stride = geo
    asl = ([0] if leading_zero else []) + torch.cumsum(torch.tensor(lengths), 0).tolist()
    x, w = make(asl, 2, 16, block, torch.float16, seed)
    cfg = {"BLOCK_D": block_d, "WINDOWS": windows}
    with override_config(FWD, cfg), override_config(BWD, cfg):
        actual, expected = run_autograd(x, w, block, stride, tuple(asl), device=device)
    check(actual, expected)


@pytest.mark.parametrize("n, d, block, stride", [
    (128, 16, 32, 16),    # CANN's largest N
    (2, 256, 32, 16),     # CANN's largest D
    (130, 16, 32, 16),    # lifted: N > 128
    (1, 272, 32, 16),     # lifted: D > 256
    (2, 40, 32, 16),      # lifted: D not a multiple of 16
    (1, 16, 256, 64),     # lifted: l > 128
    (2, 16, 64, 64),      # lifted for the grad: d == l
], ids=["N128", "D256", "N130", "D272", "D40", "l256", "d-eq-l"])
def test_limits(device, n, d, block, stride):
    # one sequence of two windows and a partial one (tiny T: the interpreter runs one tile per head)
    asl = [0, block + stride + 7] if n > 64 else [block + 2 * stride + 5, 2 * block + stride + 9]
    x, w = make(asl, n, d, block, torch.bfloat16)
    actual, expected = run_autograd(x, w, block, stride, asl, device=device)
    check(actual, expected)


def test_strided_input_is_read_in_place(device):
    from atlas_kernels.nsa_compress import _unit_last
    x, w = make(RAGGED, 2, 64, 32, torch.float16)
    x = x.to(device)  # the views are taken on the device
    xs = x[:, :, ::2]                       # D stride 2: copied once (the kernels take a contiguous D)
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)[:, :, :32]  # T stride != N*D: read in place
    assert _unit_last(xt) is xt and _unit_last(xs).is_contiguous()
    for view in (xs, xt):
        actual, expected = run_autograd(view, w, 32, 16, RAGGED, device=device)
        check(actual, expected)


@pytest.mark.interpreter("reorders programs through an interpreter hook (InterpreterBuilder.create_get_program_id)")
def test_gradients_are_bitwise_deterministic(monkeypatch):
    """The backward's bits do not depend on the grid or on the order its programs run: dweight partials sit in
    per-tile slots and are reduced in a fixed order. Two plain runs in the (sequential) interpreter could not differ,
    so the runs here change what a GPU/NPU schedule would: the grid size, and programs running last to first.
    Mutations caught: dweight accumulated with atomic adds in arrival order, partial slots indexed by program
    instead of tile, a reduction whose order follows the grid."""
    from triton.runtime import interpreter as interp

    from atlas_kernels import _backend
    x, w = make(RAGGED, 3, 32, 64, torch.float16)
    g = torch.randn(ref.nsa_compress(x, w, 64, 16, RAGGED).shape).to(torch.float16)

    def grads():
        with kernel_ran(BWD, RED):
            return ak.npu_nsa_compress_grad(g, x, w, 64, 16, actual_seq_len=RAGGED)

    first = grads()
    with monkeypatch.context() as m:  # program p runs as p' = grid - 1 - p: the last program's work first
        m.setattr(interp.InterpreterBuilder, "create_get_program_id", lambda self, axis: interp.TensorHandle(
            np.array([self.grid_dim[axis] - 1 - self.grid_idx[axis]], dtype=np.int32), interp.tl.int32))
        reversed_order = grads()
    for programs in (1, 3):
        with monkeypatch.context() as m:
            m.setattr(_backend, "persistent_grid", lambda n_tiles, target, uses_dot=False: (programs,))
            other_grid = grads()
        assert torch.equal(first[0], other_grid[0]) and torch.equal(first[1], other_grid[1]), programs
    assert torch.equal(first[0], reversed_order[0]) and torch.equal(first[1], reversed_order[1])
    assert_close(first[0], ref.nsa_compress_grad(g, x, w, 64, 16, RAGGED)[0])


@pytest.mark.host  # the reference alone, no kernel
def test_reference_gradcheck_float64():
    asl = [0, 20, 20, 57]
    x = torch.randn(57, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ref.nsa_compress(a, b, 16, 8, asl), (x, w))
    # the closed-form reference grad agrees with autograd through the reference forward
    out = ref.nsa_compress(x, w, 16, 8, asl)
    g = torch.randn_like(out)
    dx, dw = torch.autograd.grad(out, (x, w), g)
    rx, rw = ref.nsa_compress_grad(g, x.detach(), w.detach(), 16, 8, asl)
    torch.testing.assert_close(rx, dx)
    torch.testing.assert_close(rw, dw)


def test_npu_spellings(device):
    x, w = make(RAGGED, 2, 16, 32, torch.float16)
    with kernel_ran(FWD):
        out = ak.npu_nsa_compress(x.to(device), w.to(device), 32, 16, actual_seq_len=tuple(RAGGED)).cpu()
    assert_close(out, ref.nsa_compress(x, w, 32, 16, RAGGED))
    g = torch.randn(out.shape).to(torch.float16)
    with kernel_ran(BWD, RED):
        dx, dw = ak.npu_nsa_compress_grad(g.to(device), x.to(device), w.to(device), 32, 16,
                                          actual_seq_len=torch.tensor(RAGGED))
    ex, ew = ref.nsa_compress_grad(g, x, w, 32, 16, RAGGED)
    assert_close(dx.cpu(), ex)
    assert_close(dw.cpu(), ew)


def test_torch_compile_fullgraph_forward_and_backward(device):
    x, w = make(RAGGED, 2, 16, 32, torch.float16)

    def f(a, b):
        return ak.nsa_compress(a, b, 32, 16, actual_seq_len=RAGGED).float().square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    xk, wk = x.to(device).clone().requires_grad_(), w.to(device).clone().requires_grad_()
    with kernel_ran(FWD, BWD, RED):
        compiled(xk, wk).backward()
    xr, wr = x.float().requires_grad_(), w.float().requires_grad_()
    ref.nsa_compress(xr, wr, 32, 16, RAGGED).square().sum().backward()
    assert_close(xk.grad.cpu().float(), xr.grad, dtype=torch.float16)
    assert_close(wk.grad.cpu().float(), wr.grad, dtype=torch.bfloat16)  # fp16 output rounding of a long sum


def test_argument_forms_of_torch_npus_binding(device):
    """int[] as a list, tuple, numpy integer array or host tensor; int as a Python or numpy integer."""
    x, w = make(RAGGED, 2, 16, 32, torch.float16)
    expected = ref.nsa_compress(x, w, 32, 16, RAGGED)
    dx_, dw_ = x.to(device), w.to(device)
    # list, tuple and int64 tensor: test_npu_spellings, test_matches_reference_ragged
    for lengths in (np.array(RAGGED, dtype=np.int32), [np.int64(v) for v in RAGGED],
                    torch.tensor(RAGGED, dtype=torch.int32)):
        with kernel_ran(FWD):
            out = ak.npu_nsa_compress(dx_, dw_, np.int64(32), np.int32(16), actual_seq_len=lengths)
        assert_close(out.cpu(), expected, msg=type(lengths).__name__)
    g = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2)).to(torch.float16)
    ex, ew = ref.nsa_compress_grad(g, x, w, 32, 16, RAGGED)
    with kernel_ran(BWD, RED):
        dx, dw = ak.npu_nsa_compress_grad(g.to(device), dx_, dw_, 32, 16, actual_seq_len=np.array(RAGGED))
    assert_close(dx.cpu(), ex)
    assert_close(dw.cpu(), ew)


def test_lengths_tensor_compiles_once_for_every_length_list(device):
    """A lengths tensor is read when the op runs: three different length lists, forward and backward, one
    compile (a list is a graph constant: each new list recompiles)."""
    counter = torch._dynamo.testing.CompileCounter()

    def f(a, b, lengths):
        return ak.nsa_compress(a, b, 32, 16, actual_seq_len=lengths).float().square().sum()

    compiled = torch.compile(f, backend=counter, fullgraph=True)
    torch._dynamo.reset()
    for asl in (RAGGED, [0, 64, 64, 100, 200, 300], [17, 90, 91, 250, 260, 300]):  # same T and count: same shapes
        x, w = make(asl, 2, 16, 32, torch.float16, seed=asl[1])
        xk, wk = x.to(device).clone().requires_grad_(), w.to(device).clone().requires_grad_()
        with kernel_ran(FWD, BWD, RED):
            compiled(xk, wk, torch.tensor(asl)).backward()  # the lengths stay host data
        xr, wr = x.float().requires_grad_(), w.float().requires_grad_()
        ref.nsa_compress(xr, wr, 32, 16, asl).square().sum().backward()
        assert_close(xk.grad.cpu().float(), xr.grad, dtype=torch.float16)
        assert_close(wk.grad.cpu().float(), wr.grad, dtype=torch.bfloat16)
    assert counter.frame_count == 1, counter.frame_count


X = torch.zeros(64, 2, 16, dtype=torch.float16)
W = torch.zeros(32, 2, dtype=torch.float16)


@pytest.mark.parametrize("call, exc, match", [
    (lambda X, W: ak.nsa_compress(X, W, 32, 48, actual_seq_len=[64]), ValueError, r"compress_stride \(48\) must not exceed"),
    (lambda X, W: ak.nsa_compress(X, W[:24], 24, 16, actual_seq_len=[64]), ValueError, "compress_block_size must be a positive multiple of 16"),
    (lambda X, W: ak.nsa_compress(X, W, 32, 8, actual_seq_len=[64]), ValueError, "compress_stride must be a positive multiple of 16"),
    (lambda X, W: ak.nsa_compress(X, W, 32, 16.0, actual_seq_len=[64]), TypeError, "compress_stride must be an int"),
    (lambda X, W: ak.nsa_compress(X, torch.zeros(512, 2, dtype=torch.float16, device=X.device), 512, 16, actual_seq_len=[64]), ValueError, "<= 256"),
    (lambda X, W: ak.nsa_compress(X, W, 32, 16, actual_seq_len=[40, 30, 64]), ValueError, r"non-decreasing.*actual_seq_len\[1\] = 30"),
    (lambda X, W: ak.nsa_compress(X, W, 32, 16, actual_seq_len=[40, 60]), ValueError, "must end at T = input.shape\\[0\\] = 64"),
    (lambda X, W: ak.nsa_compress(X, W, 32, 16, actual_seq_len=[]), ValueError, "must not be empty"),
    (lambda X, W: ak.npu_nsa_compress(X, W, 32, 16), ValueError, "actual_seq_len is required"),
    (lambda X, W: ak.nsa_compress(X, W, 32, 16, actual_seq_len=[64.0]), TypeError, "list or tuple of ints"),
    (lambda X, W: ak.nsa_compress(X, W, 32, 16, actual_seq_len=torch.tensor([64], device="meta")), TypeError, "meta tensor"),
    (lambda X, W: ak.nsa_compress(X, W, 32, 16, actual_seq_len=np.array([64.0])), TypeError, "1-D integer array"),
    (lambda X, W: ak.nsa_compress(X, W, 32, 16, actual_seq_len=torch.tensor([[64]])), TypeError, "1-D integer tensor"),
    (lambda X, W: ak.nsa_compress(X, W.bfloat16(), 32, 16, actual_seq_len=[64]), TypeError, "weight must have the dtype of input"),
    (lambda X, W: ak.nsa_compress(X.float(), W.float(), 32, 16, actual_seq_len=[64]), TypeError, "input must have dtype float16, bfloat16"),
    (lambda X, W: ak.nsa_compress(X[0], W, 32, 16, actual_seq_len=[2]), ValueError, "input must have 3 dims"),
    (lambda X, W: ak.nsa_compress(X, W[:, :1], 32, 16, actual_seq_len=[64]), ValueError, r"weight must have shape \(compress_block_size, N\) = \(32, 2\)"),
    (lambda X, W: ak.nsa_compress(X, W[None], 32, 16, actual_seq_len=[64]), ValueError, "weight must have 2 dims"),
    (lambda X, W: ak.npu_nsa_compress_grad(torch.zeros(2, 2, 16, dtype=torch.float16, device=X.device), X, W, 32, 16, actual_seq_len=[64]),
     ValueError, r"grad must have shape \(T', N, D\) = \(3, 2, 16\)"),
    (lambda X, W: ak.npu_nsa_compress_grad(torch.zeros(3, 2, 16, dtype=torch.bfloat16, device=X.device), X, W, 32, 16, actual_seq_len=[64]),
     TypeError, "grad must have the dtype of input"),
])
def test_bad_input_names_the_argument(device, call, exc, match):
    with pytest.raises(exc, match=match):
        call(X.to(device), W.to(device))


@pytest.mark.interpreter("the traffic meter counts the interpreter's loads and stores")
def test_meter_forward_reads_input_once_and_backward_near_minimum():
    from atlas_kernels.testing.meter import TrafficMeter, minimum_bytes
    asl = [700, 1500, 2048]
    x, w = make(asl, 2, 64, 32, torch.float16)
    with TrafficMeter() as m:
        out = ak.nsa_compress(x, w, 32, 16, actual_seq_len=asl)
    floor = minimum_bytes((x, w), out)
    assert m.loaded >= x.numel() * 2, "every input byte must be read"
    assert m.total <= 1.1 * floor, (m.total, floor)
    g = torch.randn(out.shape).to(torch.float16)
    with TrafficMeter() as m:
        dx, dw = ak.npu_nsa_compress_grad(g, x, w, 32, 16, actual_seq_len=asl)
    floor = minimum_bytes((g, x, w), (dx, dw))
    assert m.total <= 1.5 * floor, (m.total, floor)


_LEN_FORMS = {
    "tuple": tuple, "numpy-int64": np.array, "numpy-int32": lambda v: np.array(v, dtype=np.int32),
    "numpy-ints": lambda v: [np.int64(i) for i in v], "tensor-int64": torch.tensor,
    "tensor-int32": lambda v: torch.tensor(v, dtype=torch.int32),
}
_INT_FORMS = {"int": int, "numpy-int64": np.int64, "numpy-int32": np.int32, "tensor-0d": torch.tensor}


@pytest.mark.parametrize("lengths, ints", [(form, sorted(_INT_FORMS)[i % len(_INT_FORMS)])
                                           for i, form in enumerate(sorted(_LEN_FORMS))])  # each form once
def test_every_argument_form_matches_the_list_form(device, lengths, ints):
    """actual_seq_len (int[]) and compress_block_size / compress_stride (int) in each form torch_npu's binding
    takes give the plain list-and-int call's forward and backward, through the kernels."""
    x, w = make(RAGGED, 2, 16, 32, torch.float16)
    x, w = x.to(device), w.to(device)
    with kernel_ran(FWD):
        expected = ak.npu_nsa_compress(x, w, 32, 16, actual_seq_len=list(RAGGED))
    g = torch.randn(expected.shape, generator=torch.Generator().manual_seed(3)).to(torch.float16).to(device)
    with kernel_ran(BWD, RED):
        ex, ew = ak.npu_nsa_compress_grad(g, x, w, 32, 16, actual_seq_len=list(RAGGED))
    asl, block, stride = _LEN_FORMS[lengths](list(RAGGED)), _INT_FORMS[ints](32), _INT_FORMS[ints](16)
    with kernel_ran(FWD):
        out = ak.npu_nsa_compress(x, w, block, stride, actual_seq_len=asl)
    with kernel_ran(BWD, RED):
        dx, dw = ak.npu_nsa_compress_grad(g, x, w, block, stride, actual_seq_len=asl)
    assert torch.equal(out, expected) and torch.equal(dx, ex) and torch.equal(dw, ew)


@pytest.mark.parametrize("block, stride, match", [
    (torch.tensor([32]), 16, "compress_block_size must be an int"), (32, torch.tensor(16.0), "compress_stride"),
    (True, 16, "compress_block_size must be an int"), (32, np.float32(16), "compress_stride must be an int"),
])
def test_int_argument_forms_reject_the_rest(device, block, stride, match):
    x, w = X.to(device), W.to(device)
    with pytest.raises(TypeError, match=match):
        ak.npu_nsa_compress(x, w, block, stride, actual_seq_len=[64])
    with pytest.raises(TypeError, match=match):
        ak.npu_nsa_compress_grad(torch.zeros(3, 2, 16, dtype=torch.float16, device=device), x, w, block, stride,
                                 actual_seq_len=[64])
