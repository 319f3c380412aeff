"""Right device, right stream: every launch runs on its tensors' device and that device's current stream
(_backend.launch enters ``device_guard``), and split-K (two launches through a workspace) stays exact under CUDA
graph capture/replay, on two streams and on a second device.

The guard tests run anywhere (fake CUDA tensors and a recorded ``torch.cuda.device``); the CUDA tests take the
``device`` fixture and skip, with the reason, where there is no CUDA device (or only one, for two devices)."""
import contextlib
import pathlib
import re

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import atlas_kernels as ak
from atlas_kernels import _backend
from atlas_kernels.autotune import override_config
from atlas_kernels.reference import quant_matmul as ref
from atlas_kernels.testing import kernel_ran

KERNEL = "quant_matmul.gemm"
REDUCE = "quant_matmul.gemm_reduce"
SPLIT_TILE = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 64, "GROUP_M": 8, "SPLIT_K": 4}
ROOT = pathlib.Path(__file__).resolve().parents[1]


class _Recorder:
    """Stands in for torch.cuda.device: records the device each launch enters and what ran inside it."""

    def __init__(self):
        self.entered, self.depth = [], 0

    def __call__(self, device):
        @contextlib.contextmanager
        def ctx():
            self.entered.append(torch.device(device))
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
        return ctx()


class _FakeKernel:
    """kernel[grid](*args, **kwargs) that records whether it ran inside the recorded guard."""

    def __init__(self, recorder):
        self.recorder, self.ran_inside = recorder, []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.ran_inside.append(self.recorder.depth > 0)
        return run


def _fake(device: str, *shape):
    with FakeTensorMode():
        return torch.empty(*shape, device=device)


@pytest.mark.parametrize("where", ["positional", "keyword"])
@pytest.mark.host
def test_launch_enters_the_tensors_device(monkeypatch, where):
    """A launch with tensors on cuda:1 enters cuda:1 (whatever the current device), and the kernel runs inside."""
    recorder = _Recorder()
    monkeypatch.setattr(torch.cuda, "device", recorder)
    kernel = _FakeKernel(recorder)
    x, y = _fake("cuda:1", 4), _fake("cuda:1", 4)
    if where == "positional":
        _backend.launch("test.fake", kernel, (1,), x, y, 4, BLOCK=4)
    else:
        _backend.launch("test.fake", kernel, (1,), n=4, x_ptr=x, y_ptr=y)
    assert recorder.entered == [torch.device("cuda", 1)]
    assert kernel.ran_inside == [True]
    assert recorder.depth == 0


@pytest.mark.interpreter("runs an op on CPU tensors to show the CPU path enters no device context")
def test_launch_on_cpu_enters_no_guard(monkeypatch):
    """CPU tensors (the interpreter): no device context at all."""
    def no_guard(device):
        raise AssertionError(f"device_guard entered for {device}")
    monkeypatch.setattr(_backend, "device_guard", no_guard)
    x1 = torch.randint(-128, 128, (2, 32), dtype=torch.int8)
    x2 = torch.randint(-128, 128, (32, 16), dtype=torch.int8)
    with kernel_ran(KERNEL):
        out = ak.quant_matmul(x1, x2, torch.ones(1), output_dtype=torch.int32)
    assert torch.equal(out, x1.int() @ x2.int())


@pytest.mark.host
def test_device_guard_per_device_type(monkeypatch):
    recorder = _Recorder()
    monkeypatch.setattr(torch.cuda, "device", recorder)
    with _backend.device_guard(torch.device("cuda", 3)):
        assert recorder.depth == 1
    assert recorder.entered == [torch.device("cuda", 3)]
    assert isinstance(_backend.device_guard(torch.device("cpu")), contextlib.nullcontext)


@pytest.mark.host
def test_every_kernel_launch_goes_through_backend_launch():
    """The guard lives in _backend.launch: no op module may launch a kernel itself (``kernel[grid](...)``)."""
    direct = re.compile(r"\b_?\w*kernel\s*\[[^\]]+\]\s*\(")
    offenders = []
    for path in sorted((ROOT / "kernels").rglob("*.py")):
        if path.name == "_backend.py" or "checks" in path.parts:
            continue
        offenders += [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
                      if direct.search(line)]
    assert not offenders, f"kernels launched outside _backend.launch (no device guard): {offenders}"


# ---------------------------------------------------------------- on a CUDA device
def _needs_cuda(device):
    if device.type != "cuda":
        pytest.skip(f"needs a CUDA device (CUDA graphs and streams); this run is on {device.type}")


def _decode_call(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randint(-128, 128, (2, 1024), dtype=torch.int8, generator=g)
    x2 = torch.randint(-128, 128, (1024, 64), dtype=torch.int8, generator=g)
    want = ref.quant_matmul(x1, x2, torch.ones(1), output_dtype=torch.int32)
    return x1.to(device), x2.to(device), want


def test_split_k_under_cuda_graph_capture_and_replay(device):
    _needs_cuda(device)
    x1, x2, want = _decode_call(device)
    scale = torch.ones(1, device=device)
    with override_config(KERNEL, SPLIT_TILE), kernel_ran(KERNEL, REDUCE):
        ak.quant_matmul(x1, x2, scale, output_dtype=torch.int32)  # compile outside the capture
        torch.cuda.synchronize(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = ak.quant_matmul(x1, x2, scale, output_dtype=torch.int32)
    for seed in (1, 2, 3):  # replay with new inputs copied in place: both launches read them again
        a, b, want = _decode_call(device, seed)
        x1.copy_(a)
        x2.copy_(b)
        graph.replay()
        torch.cuda.synchronize(device)
        assert torch.equal(out.cpu(), want)


def test_split_k_on_two_streams(device):
    _needs_cuda(device)
    calls = [_decode_call(device, seed) for seed in (4, 5)]
    streams = [torch.cuda.Stream(device), torch.cuda.Stream(device)]
    outs = []
    with override_config(KERNEL, SPLIT_TILE), kernel_ran(KERNEL, REDUCE):
        for _ in range(3):
            for (x1, x2, _), stream in zip(calls, streams):
                stream.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(stream):
                    outs.append((ak.quant_matmul(x1, x2, torch.ones(1, device=device), output_dtype=torch.int32),
                                 stream))
    torch.cuda.synchronize(device)
    for i, (out, _) in enumerate(outs):
        assert torch.equal(out.cpu(), calls[i % 2][2])


def test_split_k_on_a_second_device(device):
    _needs_cuda(device)
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs two CUDA devices, this machine has {torch.cuda.device_count()}")
    x1, x2, want = _decode_call("cpu", 6)
    second = torch.device("cuda", 1)
    with torch.cuda.device(0), override_config(KERNEL, SPLIT_TILE), kernel_ran(KERNEL, REDUCE):
        out = ak.quant_matmul(x1.to(second), x2.to(second), torch.ones(1, device=second), output_dtype=torch.int32)
        assert torch.cuda.current_device() == 0, "the launch must leave the current device as it was"
    assert out.device == second
    torch.cuda.synchronize(second)
    assert torch.equal(out.cpu(), want)
