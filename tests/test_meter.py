"""The traffic meter counts exactly what kernels move, and the reference counter what aten moves."""
import torch

import atlas_kernels as ak
from atlas_kernels.testing.meter import TrafficMeter, minimum_bytes, reference_bytes, tensor_bytes


def test_meter_counts_a_relayout_exactly():
    x = torch.randn(48, 96).to(torch.float16)  # NZ (6, 3, 16, 16): no padding
    with TrafficMeter() as m:
        out = ak.nd_to_nz(x)
    assert m.loaded == x.numel() * 2
    assert m.stored == out.numel() * 2
    assert m.total == minimum_bytes(x, out)


def test_meter_counts_masked_elements_only():
    x = torch.randn(17, 5).to(torch.float16)  # padded to (1, 2, 16, 16) in NZ
    with TrafficMeter() as m:
        out = ak.nd_to_nz(x)
    assert m.loaded == 17 * 5 * 2  # masked-off padding is not read
    assert m.stored == out.numel() * 2  # but the zero padding is written


def test_meter_is_inactive_outside_the_block():
    x = torch.zeros(32, 32, dtype=torch.int8)
    with TrafficMeter() as m:
        pass
    ak.nd_to_nz(x)
    assert m.total == 0


def test_reference_bytes_skips_views_and_counts_the_rest():
    a = torch.ones(64, 64)
    nbytes, ops = reference_bytes(lambda t: (t.t() + 1).sum(), a)
    # add: read 16 KiB, write 16 KiB; sum: read 16 KiB, write 4 B; the transpose is a view
    assert ops == 2
    assert nbytes == 3 * tensor_bytes(a) + 4
