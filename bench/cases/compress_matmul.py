"""Benchmark cases for matmul_compress_dequant: Llama-7B-sized weights at 0/50/80% pseudo-sparsity.

Columns beyond the harness's: cann_ratio (msModelSlim's x2 bytes / dense int8 W), ratio (the kernel's
transcoded layout / dense W: what device memory holds and the GEMM reads), and the dense int8 GEMM
(quant_matmul on the decompressed weight, same m) for comparison: on CPU dense_MB / moved_vs_dense from
the traffic meter, on a device dense_quant_matmul_ms. min_bytes counts the transcoded layout as the input.
Decode cases of real models' layers at 50% (quant_matmul's DECODE_LAYERS, m = 1, 4, 16) are in the modelled
table; only Llama-3-8B's run (encoding a larger layer on the host takes many minutes).
"""
import functools
import importlib.util
import pathlib

import torch

import atlas_kernels as ak
from atlas_kernels.gemm.dispatch import gemm_schedule, launched_variant
from atlas_kernels.autotune import pick_config
from atlas_kernels.compress_matmul import CHUNK, GEMM
from atlas_kernels.reference import compress_matmul as ref
from atlas_kernels.testing.meter import TrafficMeter, minimum_bytes
from harness import BenchCase

WEIGHTS = [(4096, 4096), (4096, 11008)]  # W (n, k)
SPARSITY = [0.0, 0.5, 0.8]
M = [1, 16, 256]


@functools.lru_cache(maxsize=2)
def _compressed(n, k, sparsity):
    """(dense W after pseudo-sparsity, x2, compress_index, compress_info) on the host; seeded."""
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    x2, idx, info = ak.compress_weight(w, sparsity=sparsity)
    return ak.decompress_weight(x2, idx, info), x2, idx, info.tolist()


def _setup(m, n, k, sparsity):
    def setup(device):
        w, x2, idx, info = _compressed(n, k, sparsity)
        g = torch.Generator().manual_seed(1)
        x1 = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=g)
        bias = torch.randint(-1000, 1000, (n,), dtype=torch.int32, generator=g)
        scale = torch.rand(1, n, generator=g) * 1e-3
        deq = (scale.view(torch.int32).to(torch.int64) & 0xFFFFE000) | (1 << 46)  # trans_quant_param's form
        inputs = {"x1": x1, "x2": x2, "idx": idx, "bias": bias, "deq": deq, "w": w}
        inputs = {key: t.to(device) for key, t in inputs.items()}
        inputs["info"] = info
        # load time: decode + transcode once (cached per x2), as model code would at weight loading
        inputs["cw"] = ak.prepare_compressed_weight(inputs["x2"], inputs["idx"], info)
        return inputs
    return setup


def _run(x):
    return ak.matmul_compress_dequant(x["x1"], x["x2"], x["idx"], x["bias"], x["deq"], compress_info=x["info"])


def _dense(x):
    return ak.quant_matmul(x["x1"], x["w"].t(), x["deq"].reshape(-1), bias=x["bias"], output_dtype=torch.float16)


def _reference(x):
    return ref.matmul_compress_dequant(x["x1"], x["x2"], x["idx"], x["bias"], x["deq"], x["info"])


def _min_bytes(x, out):
    cw = x["cw"]
    return minimum_bytes([x["x1"], cw.mask, cw.values, cw.offsets, x["bias"], x["deq"]], out)


def _extra(x, out, row):
    n, k = x["w"].shape
    extra = {"cann_ratio": x["x2"].numel() / (n * k), "ratio": x["cw"].nbytes / (n * k)}
    if "moved_MB" in row:  # CPU: the interpreter's traffic meter
        with TrafficMeter() as dense:
            _dense(x)
        extra["dense_MB"] = dense.total / 1e6
        extra["moved_vs_dense"] = row["moved_MB"] / extra["dense_MB"]
    return extra


def _schedule(m, n, k, sparsity):
    """The GEMM launch on a target without running it, on the transcoded layout of a weight with that fraction of
    zeros: mask bits, int32 offsets per CHUNK columns, the nonzeros; fp32 scale and int32 bias per column."""
    def schedule(target):
        variant = launched_variant("sparse", m)
        config = pick_config(GEMM.name, target, variant.label)
        chunks = -(-n // CHUNK)
        layout = k * chunks * (CHUNK // 8 + 4) + round((1 - sparsity) * k * n)
        return {"config": config, **gemm_schedule(variant, m, n, k, 1, config, target, 1, layout, 2, 8)}
    return schedule


def _decode_layers() -> dict:
    path = pathlib.Path(__file__).with_name("quant_matmul.py")
    spec = importlib.util.spec_from_file_location("bench_cases_quant_matmul_layers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DECODE_LAYERS, module.DECODE_MS


def cases():
    out = []
    layers, decode_ms = _decode_layers()
    for model, named in layers.items():
        for name, (k, n) in named.items():
            for m in decode_ms:
                out.append(BenchCase(
                    op="matmul_compress_dequant", shape=f"{model} {name} m{m} W{n}x{k} sparsity50%",
                    setup=_setup(m, n, k, 0.5), run=_run, reference=_reference, min_bytes=_min_bytes,
                    flops=lambda x: 2 * x["x1"].shape[0] * x["w"].numel(),
                    baselines={"dense_quant_matmul": _dense}, extra=_extra, schedule=_schedule(m, n, k, 0.5),
                    modelled_only=model != "Llama-3-8B"))
    for n, k in WEIGHTS:
        for sparsity in SPARSITY:
            for m in M:
                out.append(BenchCase(
                    op="matmul_compress_dequant", shape=f"m{m} W{n}x{k} sparsity{sparsity:.0%}",
                    setup=_setup(m, n, k, sparsity), run=_run, reference=_reference, min_bytes=_min_bytes,
                    flops=lambda x: 2 * x["x1"].shape[0] * x["w"].numel(),
                    baselines={"dense_quant_matmul": _dense}, extra=_extra, schedule=_schedule(m, n, k, sparsity),
                    quick=(n, k, sparsity, m) == (4096, 4096, 0.5, 16)))
    return out
