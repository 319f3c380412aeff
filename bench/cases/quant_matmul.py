"""Benchmark cases for quant_matmul: Llama-style projections, decode (m <= 16) to prefill, int8 and int4.

Per case: the meter's bytes vs the minimum (CPU); the modelled time on each A2/A3 target from its peak int8
rate, bandwidth and our shipped config (labelled modelled by the harness); on a GPU the median time against
torch._int_mm followed by the dequant in torch (the harness adds torch.compile of the reference), with TOPS.
"""
import importlib
import math

import torch

import atlas_kernels as ak
from atlas_kernels.autotune import KERNELS
from atlas_kernels.reference import int4_pack as ref_pack
from atlas_kernels.reference import quant_matmul as ref
from atlas_kernels.testing.meter import minimum_bytes
from harness import BenchCase

qm = importlib.import_module("atlas_kernels.quant_matmul")

MS = [1, 16, 128, 1024, 4096]
KN = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)]
QUICK = {(1, 4096, 4096, "int8"), (16, 4096, 4096, "int8"), (16, 4096, 4096, "int4")}


def _setup(m, k, n, fmt):
    def setup(device):
        g = torch.Generator().manual_seed(0)
        scale = ak.trans_quant_param(torch.rand(n, generator=g) * 1e-3 + 1e-4)
        bias = torch.randint(-1000, 1000, (n,), dtype=torch.int32, generator=g)
        if fmt == "int8":
            x1 = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=g)
            w = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=g)
            x2 = w
        else:  # x1 (m, k/8); x2 the (k/8, n) view of a contiguous (n, k/8) packed weight
            x1_vals = torch.randint(-8, 8, (m, k), dtype=torch.int32, generator=g)
            w = torch.randint(-8, 8, (k, n), dtype=torch.int32, generator=g)
            x1 = ref_pack.pack_int4(x1_vals)
            x2 = ref_pack.pack_int4(w.t().contiguous()).t()
            w = w.to(torch.int8)
            x1_vals = x1_vals.to(torch.int8)
        out = {"x1": x1, "x2": x2, "scale": scale, "bias": bias}
        if device.type != "cpu":  # int8 operands for the cuBLAS baseline (unpacked for int4)
            out["a8"] = x1 if fmt == "int8" else x1_vals
            out["w8"] = w
        return {key: v.to(device) for key, v in out.items()}  # .to keeps x2's transposed strides
    return setup


def _int_mm_then_dequant(x):
    """cuBLAS int8 GEMM (torch._int_mm needs m > 16: rows are padded) + the dequant as separate torch ops."""
    a = x["a8"]
    m = a.shape[0]
    if m <= 16:
        a = torch.nn.functional.pad(a, (0, 0, 0, 17 - m))
    acc = torch._int_mm(a, x["w8"])[:m]
    s, _ = ref.decode_quant_param(x["scale"])
    return ((acc + x["bias"]).float() * s).half()


def _modelled(m, k, n, fmt):
    """Roofline of our tiling on an Ascend target: waves of output tiles on the AI cores at the peak int8
    rate (padded tiles included) against the bytes our tiling moves (x1 once per n-tile, x2 once per m-tile)
    at the memory bandwidth."""
    def model(inputs, target):
        spec = KERNELS[qm.GEMM.name]
        label = ("i8-nd" if fmt == "int8" else "i4-k") + ("-decode" if m <= 16 else "")
        cfg = spec.default(target, spec.variant(label))
        bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
        tiles_m, tiles_n = math.ceil(m / bm), math.ceil(n / bn)
        waves = math.ceil(tiles_m * tiles_n / target.cube_cores)
        ops_per_core = target.peak_int8_ops / target.cube_cores
        compute = waves * 2 * bm * bn * math.ceil(k / bk) * bk / ops_per_core
        elem = 1 if fmt == "int8" else 0.5
        moved = (m * k * tiles_n + k * n * tiles_m) * elem + m * n * 2 + n * 12
        memory = moved / target.mem_bandwidth
        return {"compute": compute, "memory": memory, "time": max(compute, memory)}
    return model


def _case(m, k, n, fmt):
    return BenchCase(
        op="quant_matmul", shape=f"m={m} k={k} n={n} {fmt} fp16-out",
        setup=_setup(m, k, n, fmt),
        run=lambda x: ak.quant_matmul(x["x1"], x["x2"], x["scale"], bias=x["bias"], output_dtype=torch.float16),
        reference=lambda x: ref.quant_matmul(x["x1"], x["x2"], x["scale"], bias=x["bias"],
                                             output_dtype=torch.float16),
        min_bytes=lambda x, out: minimum_bytes([x["x1"], x["x2"], x["scale"], x["bias"]], out),
        flops=lambda x: 2 * m * k * n,
        modelled=_modelled(m, k, n, fmt),
        baselines={"int_mm+dequant": _int_mm_then_dequant},
        quick=(m, k, n, fmt) in QUICK)


def cases():
    return [_case(m, k, n, fmt) for fmt in ("int8", "int4") for k, n in KN for m in MS]
