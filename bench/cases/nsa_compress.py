"""Benchmark cases for NSA compression: packed batches of a few dozen mixed-length sequences, forward and backward."""
import torch

import atlas_kernels as ak
from atlas_kernels.reference import nsa_compress as ref
from atlas_kernels.testing.meter import minimum_bytes
from harness import BenchCase

N_SEQ = 32


def mixed_lengths(total: int, n_seq: int = N_SEQ, seed: int = 0) -> list:
    """actual_seq_len (prefix sums) of n_seq lengths summing to total: long and short ones, two below 32 tokens."""
    g = torch.Generator().manual_seed(seed)
    share = torch.rand(n_seq, generator=g) ** 2 + 0.02
    lengths = (share / share.sum() * total).long()
    lengths[:2] = torch.tensor([7, 20])
    lengths[-1] += total - lengths.sum()
    return torch.cumsum(lengths, 0).tolist()


def _setup(tokens, heads, dim, block, stride, backward):
    def setup(device):
        g = torch.Generator().manual_seed(0)
        asl = mixed_lengths(tokens)
        x = torch.randn(tokens, heads, dim, generator=g).to(torch.float16)
        w = (torch.randn(block, heads, generator=g) / block ** 0.5).to(torch.float16)
        inputs = {"x": x.to(device), "w": w.to(device), "asl": asl, "block": block, "stride": stride}
        if backward:
            n_out = sum(ref.num_windows(n, block, stride) for _, n in ref.sequence_bounds(asl))
            inputs["g"] = torch.randn(n_out, heads, dim, generator=g).to(torch.float16).to(device)
        return inputs
    return setup


def _fwd(x):
    return ak.nsa_compress(x["x"], x["w"], x["block"], x["stride"], actual_seq_len=x["asl"])


def _fwd_ref(x):
    return ref.nsa_compress(x["x"], x["w"], x["block"], x["stride"], x["asl"])


def _bwd(x):
    return ak.npu_nsa_compress_grad(x["g"], x["x"], x["w"], x["block"], x["stride"], actual_seq_len=x["asl"])


def _bwd_ref(x):
    return ref.nsa_compress_grad(x["g"], x["x"], x["w"], x["block"], x["stride"], x["asl"])


def _grad_check(out, expected) -> bool:
    """dinput by the tolerance table; dweight sums ~T'*D products per element, so fp32 summation order
    alone moves near-cancelling elements by more than the fp16 table: compare it relative to its max."""
    from atlas_kernels.testing import TOLERANCES
    (dx, dw), (ex, ew) = out, expected
    rtol, atol = TOLERANCES[dx.dtype]
    if dx.shape != ex.shape or dw.shape != ew.shape or dx.dtype != ex.dtype or dw.dtype != ew.dtype:
        return False
    scale = ew.float().abs().max().item()
    return (torch.allclose(dx.float(), ex.float(), rtol=rtol, atol=atol)
            and (dw.float() - ew.float()).abs().max().item() <= rtol * scale + atol)


def cases():
    out = []
    for tokens in (32768, 131072):
        for heads in (4, 16):
            for dim in (128, 192):
                for block, stride in ((32, 16), (64, 32)):
                    shape = f"T={tokens} N={heads} D={dim} l={block} d={stride} fp16"
                    quick = (tokens, heads, dim, block, stride) == (32768, 4, 128, 32, 16)
                    out.append(BenchCase(
                        op="nsa_compress", shape=shape,
                        setup=_setup(tokens, heads, dim, block, stride, False), run=_fwd, reference=_fwd_ref,
                        min_bytes=lambda x, o: minimum_bytes((x["x"], x["w"]), o), quick=quick))
                    out.append(BenchCase(
                        op="nsa_compress_grad", shape=shape,
                        setup=_setup(tokens, heads, dim, block, stride, True), run=_bwd, reference=_bwd_ref,
                        check=_grad_check,
                        min_bytes=lambda x, o: minimum_bytes((x["g"], x["x"], x["w"]), o), quick=quick))
    return out
