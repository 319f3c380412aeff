"""Benchmark cases for int4 packing: weights from real models (Llama-style projections)."""
import torch

import atlas_kernels as ak
from atlas_kernels.reference import int4_pack as ref
from atlas_kernels.testing.meter import minimum_bytes
from harness import BenchCase

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)]


def _setup(rows, cols):
    def setup(device):
        g = torch.Generator().manual_seed(0)
        return {"w": torch.randint(-8, 8, (rows, cols), dtype=torch.int32, generator=g).to(device)}
    return setup


def cases():
    out = []
    for rows, cols in SHAPES:
        for layout in ("nd", "nz"):
            out.append(BenchCase(
                op="convert_weight_to_int4pack", shape=f"{rows}x{cols} int32->{layout}",
                setup=_setup(rows, cols),
                run=lambda x, layout=layout: ak.convert_weight_to_int4pack(x["w"], layout=layout),
                reference=lambda x, layout=layout: ref.convert_weight_to_int4pack(x["w"], torch.int32, layout),
                min_bytes=lambda x, out: minimum_bytes(x["w"], out),
                quick=(rows, cols) == (4096, 4096)))
    return out
