"""Benchmark cases for quant_matmul: Llama-style projections, decode (m <= 16) to prefill, int8 and int4, and the
decode layers of real models (DECODE_LAYERS, m = 1, 4, 16; the full set and the modelled table, not --quick).

Per case: the meter's bytes vs the minimum (CPU); the modelled time on each A2/A3 target from its peak int8
rate, bandwidth and our shipped config (labelled modelled by the harness); on a GPU the median time against
torch._int_mm followed by the dequant in torch (the harness adds torch.compile of the reference), with TOPS,
and for decode (m <= 16) against the same launch unsplit (``unsplit_ms``: what split-K's two launches gain).
"""
import importlib
import math

import torch

import atlas_kernels as ak
from atlas_kernels.gemm.dispatch import gemm_schedule, launched_variant
from atlas_kernels import _backend
from atlas_kernels.autotune import override_config, pick_config
from atlas_kernels.reference import int4_pack as ref_pack
from atlas_kernels.reference import quant_matmul as ref
from atlas_kernels.testing.meter import minimum_bytes
from harness import BenchCase

qm = importlib.import_module("atlas_kernels.quant_matmul")

MS = [1, 16, 128, 1024, 4096]
KN = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)]
QUICK = {(1, 4096, 4096, "int8"), (16, 4096, 4096, "int8"), (16, 4096, 4096, "int4")}
# (k, n) of each model's decode GEMMs: q/k/v fused, o_proj, gate_up (or down in Llama-3-8B), down; Llama-3-8B's
# GQA k or v projection alone as the narrowest
DECODE_LAYERS = {
    "Llama-3-8B": {"qkv": (4096, 6144), "o": (4096, 4096), "down": (14336, 4096), "kv": (4096, 1024)},
    "Qwen2.5-7B": {"qkv": (3584, 4608), "o": (3584, 3584), "gate_up": (3584, 37888), "down": (18944, 3584)},
    "Llama-3-70B": {"qkv": (8192, 10240), "o": (8192, 8192), "gate_up": (8192, 57344), "down": (28672, 8192)},
}
DECODE_MS = (1, 4, 16)


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


def _schedule(m, k, n, fmt):
    """The launch on a target without running it: the config pick_config gives, and the split and bytes the
    launcher derives from it (x1 re-read per n-tile; fp16 output; int64 scale and int32 bias per column)."""
    def schedule(target):
        variant = launched_variant("i8-nd" if fmt == "int8" else "i4-k", m)
        config = pick_config(qm.GEMM.name, target, variant.label)
        elem = 1 if fmt == "int8" else 0.5
        return {"config": config, **gemm_schedule(variant, m, n, k, 1, config, target, elem, k * n * elem, 2, 12)}
    return schedule


def _modelled(m, k, n, fmt):
    """Roofline of our launch on an Ascend target: the busiest core's share of the output tiles at the peak int8
    rate (padded tiles included) against the bytes the launch moves at the memory bandwidth x cores busy."""
    def model(inputs, target):
        sched = _schedule(m, k, n, fmt)(target)
        cfg = sched["config"]
        bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
        padded_ops = 2 * sched["tiles"] * bm * bn * math.ceil(k / bk) * bk
        compute = padded_ops / (target.peak_int8_ops * sched["cores_busy"])
        memory = sched["bytes"] / (target.mem_bandwidth * sched["cores_busy"])
        return {"compute": compute, "memory": memory, "time": max(compute, memory)}
    return model


def _unsplit(run, operands, m, k, n):
    """{"unsplit": run with SPLIT_K = 1 on the launch's own config} for a decode shape, else {}: timed on a device
    next to the (possibly split) launch, it measures what the split and its reduction launch gain there."""
    if m > 16:
        return {}
    variant = launched_variant(operands, m)
    kernel = qm.GEMM_A8W4.name if operands == "a8w4" else qm.GEMM.name

    def unsplit(x):
        config = pick_config(kernel, _backend.target_for(x["x1"].device), variant.label, m=m, k=k, n=n)
        with override_config(kernel, {**config, "SPLIT_K": 1}):
            return run(x)
    return {"unsplit": unsplit}


def _case(m, k, n, fmt, layer=""):
    def run(x):
        return ak.quant_matmul(x["x1"], x["x2"], x["scale"], bias=x["bias"], output_dtype=torch.float16)
    return BenchCase(
        op="quant_matmul", shape=f"{layer}m={m} k={k} n={n} {fmt} fp16-out",
        setup=_setup(m, k, n, fmt), run=run,
        reference=lambda x: ref.quant_matmul(x["x1"], x["x2"], x["scale"], bias=x["bias"],
                                             output_dtype=torch.float16),
        min_bytes=lambda x, out: minimum_bytes([x["x1"], x["x2"], x["scale"], x["bias"]], out),
        flops=lambda x: 2 * m * k * n,
        modelled=_modelled(m, k, n, fmt),
        baselines={"int_mm+dequant": _int_mm_then_dequant, **_unsplit(run, "i8-nd" if fmt == "int8" else "i4-k",
                                                                      m, k, n)},
        schedule=_schedule(m, k, n, fmt),
        quick=not layer and (m, k, n, fmt) in QUICK)


# A8W4 (int8 x1, int4 x2 with per-group int64 scales, issue 13): torch_npu's call at m = 1, k = 8192, n = 1024,
# g = 256 in the full set, and a small shape in the quick set (the interpreter runs it in CI)
A8W4 = [(1, 8192, 1024, 256)]
A8W4_QUICK = [(1, 256, 128, 256)]


def _a8w4_setup(m, k, n, g):
    def setup(device):
        gn = torch.Generator().manual_seed(0)
        x1 = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=gn)
        x2 = ref_pack.pack_int4(torch.randint(-8, 8, (k, n), dtype=torch.int32, generator=gn))  # (k, n/8)
        scale = ak.trans_quant_param(torch.rand(k // g * n, generator=gn) * 1e-3 + 1e-5).reshape(k // g, n)
        offset = torch.randn(n, generator=gn)
        pertoken = torch.rand(m, 1, generator=gn) + 0.5
        return {key: v.to(device) for key, v in
                {"x1": x1, "x2": x2, "scale": scale, "offset": offset, "pertoken": pertoken}.items()}
    return setup


def _a8w4_schedule(m, k, n, g):
    """x1 int8 re-read per n-tile, the packed weight (k * n / 2 bytes) once per m-tile; per column the k/g int64
    scales and the float32 offset; fp16 output. A decode launch splits at whole k-groups."""
    def schedule(target):
        variant = launched_variant("a8w4", m)
        config = pick_config(qm.GEMM_A8W4.name, target, variant.label)
        return {"config": config, **gemm_schedule(variant, m, n, k, 1, config, target, 1, k * n // 2, 2,
                                                  8 * (k // g) + 4, group_k=g)}
    return schedule


def _a8w4_case(m, k, n, g, quick):
    def run(x):
        return ak.npu_quant_matmul(x["x1"], x["x2"], x["scale"], offset=x["offset"], pertoken_scale=x["pertoken"],
                                   bias=None, output_dtype=torch.float16, group_sizes=[0, 0, g])
    return BenchCase(
        op="quant_matmul", shape=f"m={m} k={k} n={n} a8w4 g={g} fp16-out",
        setup=_a8w4_setup(m, k, n, g), run=run,
        reference=lambda x: ref.quant_matmul(x["x1"], x["x2"], x["scale"], x["offset"], x["pertoken"], None,
                                             torch.float16, group_k=g),
        min_bytes=lambda x, out: minimum_bytes([x["x1"], x["x2"], x["scale"], x["offset"], x["pertoken"]], out),
        flops=lambda x: 2 * m * k * n,
        baselines=_unsplit(run, "a8w4", m, k, n),
        schedule=_a8w4_schedule(m, k, n, g),
        quick=quick)


def cases():
    a8w4 = [_a8w4_case(*shape, quick=False) for shape in A8W4] + [_a8w4_case(*shape, quick=True)
                                                                 for shape in A8W4_QUICK]
    decode = [_case(m, k, n, fmt, f"{model} {name} ")
              for model, layers in DECODE_LAYERS.items() for name, (k, n) in layers.items()
              for fmt in ("int8", "int4") for m in DECODE_MS]
    return [_case(m, k, n, fmt) for fmt in ("int8", "int4") for k, n in KN for m in MS] + decode + a8w4
