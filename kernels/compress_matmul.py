"""matmul_compress_dequant: int8 GEMM on a losslessly compressed weight, decompressed inside the kernel.

``out (m, n) fp16 = fp16((x1 @ W^T + bias) * deq_scale)`` where W (n, k) int8 arrives in msModelSlim's
compressed form (x2, compress_index, compress_info) -- CANN's Atlas-310P "weight unzip" format, see
``compress_codec`` (``compress_weight`` / ``decompress_weight`` are re-exported here).

How the weight is served. CANN's bitstream is sequential per engine (prefix codes over 64-byte chunks
dealt to 4 engines), which a tile-parallel kernel cannot decode at the tile it needs. So the op
transcodes it once, losslessly, at load time into a bitmap-sparse layout of B = W^T (k, n):

  mask    uint8 (k, NQ)   bit j of byte q of row r: B[r, 8q + j] != 0   (NQ = ceil(n/CHUNK) * CHUNK/8)
  values  int8  (nnz,)    the nonzeros of B in row-major order
  offsets int32 (k, NC)   index in ``values`` of row r's first nonzero at column >= c*CHUNK (NC = ceil(n/CHUNK))

The transcode runs on the host (decompress_weight, then packing) and is cached per x2 tensor (identity,
in-place version, compress_index identity and version, compress_info, device), so model code that calls
the op every step pays it once; ``prepare_compressed_weight`` does it up front and reports sizes.
Device memory then holds only this layout: the dense weight is never written there. Its size is
0.125 (mask) + 4/CHUNK (offsets) + the nonzero fraction bytes per weight: at 50% pseudo-sparsity about
0.66 of dense int8, at 80% about 0.36, at 0% about 1.16 (larger than dense: compression only pays with
zeros -- which is also true of CANN's format, whose ratio the bench reports next to ours).

The GEMM is quant_matmul's kernel (atlas_kernels.gemm: same tiling, K loop and epilogue) with the SPARSE B format:
the prologue of every (BLOCK_K, BLOCK_N) weight tile loads the tile's mask bytes, expands them to bits,
turns them into value indices with one cumsum along n plus the row's offset, and gathers only the
nonzeros (masked loads: zero lanes move no bytes). No scratch memory.

deq_scale (docs/compress_format.md §7): uint64 or int64, (1, n) or (1, 1) (also (n,) / (1,)). Bits 0..31
are the fp32 scale, used as is at full fp32 precision, in all three forms sources use: zero-extended fp32
bits, sign-extended fp32 bits, and trans_quant_param's form (bits 0..31 = the float truncated to 19 bits,
bit 46 set, 9-bit offset in 37..45). Bits 32..63 are ignored: the fp16 output has no requant offset.
"""
from __future__ import annotations

import weakref
from typing import Optional

import torch
from torch.utils.weak import WeakIdKeyDictionary

from . import _backend
from ._validate import call_op, check_common, check_tensor, int_arg, int_list
from .compress_codec import MAX_ELEMENTS, compress_weight, decompress_weight, pseudo_sparsify  # noqa: F401
from .gemm import GEMM, AFormat, BFormat, GemmPlan, launch, modes  # noqa: F401  (GEMM: the bench reads it here)
from .gemm.formats import SPARSE_CHUNK
from .gemm.tuning import seeded_draws
from .reference import compress_matmul as ref

OP = "matmul_compress_dequant"
CHUNK = SPARSE_CHUNK.value  # columns per offsets entry; the GEMM's BLOCK_N is a multiple of it


# ---------------------------------------------------------------- load-time transcoding
class CompressedWeight:
    """A compressed weight in the kernel's bitmap-sparse layout (see the module docstring).

    mask uint8 (k, NQ), values int8 (max(nnz, 1),), offsets int32 (k, NC), all on one device.
    ``nbytes`` is what the GEMM keeps in device memory; ``cann_nbytes`` the size of the msModelSlim form.
    """

    def __init__(self, mask: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor, k: int, n: int, nnz: int,
                 cann_nbytes: int):
        self.mask, self.values, self.offsets = mask, values, offsets
        self.k, self.n, self.nnz, self.cann_nbytes = k, n, nnz, cann_nbytes

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.mask, self.values, self.offsets))

    @property
    def ratio(self) -> float:
        """nbytes / bytes of the dense int8 weight."""
        return self.nbytes / (self.k * self.n)

    def __repr__(self) -> str:
        return (f"CompressedWeight(k={self.k}, n={self.n}, nnz={self.nnz}, nbytes={self.nbytes} "
                f"({self.ratio:.3f} of dense), cann_nbytes={self.cann_nbytes})")


def transcode(weight: torch.Tensor, device=None, cann_nbytes: int = 0) -> CompressedWeight:
    """Pack a dense int8 weight W (n, k) (host) into the kernel layout of B = W^T on ``device``."""
    n, k = weight.shape
    nc = -(-n // CHUNK)
    if k * nc * CHUNK >= 2**31:  # value indices and mask offsets are int32
        raise ValueError(f"{OP}: a weight of k * n = {k} * {n} (n padded to {nc * CHUNK}) is too large; "
                         f"at most 2**31 - 1 elements are supported")
    b = weight.detach().cpu().t().contiguous()
    bits = torch.zeros(k, nc * CHUNK, dtype=torch.bool)
    bits[:, :n] = b != 0
    shifts = torch.arange(8, dtype=torch.int32)
    mask = (bits.reshape(k, nc * CHUNK // 8, 8).to(torch.int32) << shifts).sum(-1).to(torch.uint8)
    values = b[b != 0]
    nnz = values.numel()
    counts = bits.reshape(k * nc, CHUNK).sum(-1)
    offsets = (torch.cumsum(counts, 0) - counts).to(torch.int32).reshape(k, nc)
    if nnz == 0:
        values = torch.zeros(1, dtype=torch.int8)  # a valid pointer; never read
    device = torch.device(device) if device is not None else torch.device("cpu")
    return CompressedWeight(mask.to(device), values.to(device), offsets.to(device), k, n, nnz, cann_nbytes)


_CACHE: WeakIdKeyDictionary = WeakIdKeyDictionary()


def prepare_compressed_weight(x2: torch.Tensor, compress_index: torch.Tensor, compress_info) -> CompressedWeight:
    """Decode msModelSlim's (x2, compress_index, compress_info) on the host and transcode it for the GEMM.

    Validates the whole index and bitstream first (corrupt input -> ValueError), so the kernel only ever
    reads arrays built here. Cached per x2 tensor: a second call with the same, unmodified tensors
    returns the same object without any host work or sync. "Unmodified" is what torch can see: the key
    holds the tensors' identity, in-place version counters and data pointers, so x2.copy_(...) or
    x2.data = other re-transcodes, but a write through a numpy view or through x2.data[...] does not
    bump the version and the old weight is served: replace the tensors (or write with torch ops) instead.
    """
    for name, t in (("x2", x2), ("compress_index", compress_index)):
        check_tensor("prepare_compressed_weight", name, t, dtypes=(torch.int8,), ndim=1)
        if t.device.type == "meta":
            raise ValueError(f"prepare_compressed_weight: {name} is a meta tensor (shape only, no data); the "
                             f"weight is decoded from its bytes on the host: pass a CPU, CUDA or NPU tensor")
    info = _info_list(compress_info)
    key = (x2._version, compress_index._version, x2.data_ptr(), compress_index.data_ptr(), tuple(info), x2.device)
    hit = _CACHE.get(x2)
    if hit is not None and hit[0] == key and hit[1]() is compress_index:
        return hit[2]
    _check_stream(x2, compress_index, info)
    w = decompress_weight(x2.detach().cpu(), compress_index.detach().cpu(), info)
    cw = transcode(w, x2.device, cann_nbytes=x2.numel())
    _CACHE[x2] = (key, weakref.ref(compress_index), cw)
    return cw


# ---------------------------------------------------------------- validation (shared by the kernel path and the fake)
def _info_list(compress_info) -> list:
    if isinstance(compress_info, torch.Tensor):
        if compress_info.dtype not in (torch.int64, torch.int32) or compress_info.dim() != 1:
            raise TypeError(f"{OP}: compress_info must be a list of 5 ints or a 1-D int64 tensor, "
                            f"got a {compress_info.dtype} tensor of shape {tuple(compress_info.shape)}")
    try:  # torch_npu's int[]: a list or tuple of (numpy) ints, a 1-D integer numpy array or host tensor
        info = int_list(OP, "compress_info", compress_info)
    except TypeError:
        raise TypeError(f"{OP}: compress_info must be a list of 5 ints [8, 8, k, n, 1], got {compress_info!r}"[:300]) \
            from None
    if len(info) != 5 or info[0] != 8 or info[1] != 8 or info[2] <= 0 or info[3] <= 0 or info[4] != 1:
        raise ValueError(f"{OP}: compress_info must be [8, 8, k, n, 1] with k, n > 0 (msModelSlim's tilingK, "
                         f"tilingN, k, n, flag), got {info}"[:300])
    if info[2] * info[3] >= MAX_ELEMENTS:
        raise ValueError(f"{OP}: compress_info's k * n = {info[2]} * {info[3]} is too large "
                         f"(at most {MAX_ELEMENTS - 1})")
    return info


def _check_stream(x2, compress_index, info) -> None:
    check_tensor(OP, "x2", x2, dtypes=(torch.int8,), ndim=1)
    check_tensor(OP, "compress_index", compress_index, dtypes=(torch.int8,), ndim=1)
    k, n = info[2], info[3]
    blocks = -(-k // (32 * 8)) * -(-n // (16 * 8))  # blocks of 8 x 8 fractals of 16 (n) x 32 (k)
    if compress_index.numel() != 8 * blocks:
        raise ValueError(f"{OP}: compress_index must have {8 * blocks} bytes (8 per block; k={k}, "
                         f"n={n} make {blocks} blocks), got {compress_index.numel()}")


def _plan(x1, x2, compress_index, bias, deq_scale, offset_x, compress_info) -> tuple:
    """Validate every argument; return (m, k, n). Errors name the argument."""
    check_tensor(OP, "x1", x1, dtypes=(torch.int8,), ndim=2)
    check_common(OP, {"x1": x1, "x2": x2, "compress_index": compress_index, "bias": bias, "deq_scale": deq_scale})
    info = _info_list(compress_info)
    m, k = x1.shape
    _, _, k_info, n, _ = info
    if k_info != k:
        raise ValueError(f"{OP}: compress_info says k = {k_info} but x1 has k = {k} (shape {tuple(x1.shape)})")
    _check_stream(x2, compress_index, info)
    check_tensor(OP, "bias", bias, dtypes=(torch.int32,), ndim=(1, 2), optional=True)
    if bias is not None and tuple(bias.shape) not in ((n,), (1, n)):
        raise ValueError(f"{OP}: bias must have shape ({n},) or (1, {n}), got {tuple(bias.shape)}")
    check_tensor(OP, "deq_scale", deq_scale, dtypes=(torch.uint64, torch.int64), ndim=(1, 2))
    if tuple(deq_scale.shape) not in ((1, n), (1, 1), (n,), (1,)):
        raise ValueError(f"{OP}: deq_scale must have shape (1, {n}) or (1, 1) (or ({n},) / (1,)), "
                         f"got {tuple(deq_scale.shape)}")
    if offset_x != 0:
        raise ValueError(f"{OP}: offset_x must be 0 (CANN supports no activation offset), got {offset_x}")
    span = (m - 1) * abs(x1.stride(0)) + (k - 1) * abs(x1.stride(1)) if m else 0
    if span >= 2**31 or m * n >= 2**31:  # the GEMM indexes x1 and the output with 32-bit offsets
        raise ValueError(f"{OP}: x1 {tuple(x1.shape)} or the output ({m}, {n}) is too large for 32-bit offsets")
    return m, k, n


def _scale(deq_scale: torch.Tensor, n: int) -> torch.Tensor:
    """float32 (n,) from bits 0..31 of deq_scale, contiguous (the kernel reads the scale with unit stride)."""
    return deq_scale.reshape(-1).contiguous().view(torch.int32)[::2].view(torch.float32).expand(n).contiguous()


def _gemm(x1: torch.Tensor, cw: CompressedWeight, bias: Optional[torch.Tensor],
          deq_scale: Optional[torch.Tensor]) -> torch.Tensor:
    """quant_matmul's GEMM on the SPARSE weight. deq_scale None -> int32 (m, n) = x1 @ W^T + bias (exact);
    else fp16 (m, n) with the fp32 scale in bits 0..31 of deq_scale."""
    m, k = x1.shape
    n = cw.n
    out = torch.float16 if deq_scale is not None else torch.int32
    plan = GemmPlan(m, k, n, (), out, modes(AFormat.INT8, BFormat.SPARSE, out, torch.float32, None if bias is None
                                            else torch.int32, False, False))
    return launch(OP, plan, x1, cw.mask, None if deq_scale is None else _scale(deq_scale, n),
                  bias=None if bias is None else bias.reshape(n), values=cw.values, row_offsets=cw.offsets)


# ---------------------------------------------------------------- public op
@torch.library.custom_op("atlas::matmul_compress_dequant", mutates_args=())
def _op(x1: torch.Tensor, x2: torch.Tensor, compress_index: torch.Tensor, bias: Optional[torch.Tensor],
        deq_scale: torch.Tensor, offset_x: int, compress_info: list[int]) -> torch.Tensor:
    _plan(x1, x2, compress_index, bias, deq_scale, offset_x, compress_info)
    device = _backend.device_of(OP, x1=x1, x2=x2, compress_index=compress_index, bias=bias, deq_scale=deq_scale)
    if not _backend.use_kernel(OP, device):
        return ref.matmul_compress_dequant(x1, x2, compress_index, bias, deq_scale, compress_info)
    cw = prepare_compressed_weight(x2, compress_index, compress_info)
    return _gemm(x1, cw, bias, deq_scale)


@_op.register_fake
def _(x1, x2, compress_index, bias, deq_scale, offset_x, compress_info):
    m, _, n = _plan(x1, x2, compress_index, bias, deq_scale, offset_x, compress_info)
    return x1.new_empty((m, n), dtype=torch.float16)


def matmul_compress_dequant(x1: torch.Tensor, x2: torch.Tensor, compress_index: torch.Tensor,
                            bias: Optional[torch.Tensor], deq_scale: torch.Tensor, *,
                            offset_w: Optional[torch.Tensor] = None, offset_x: int = 0,
                            compress_info) -> torch.Tensor:
    """fp16 (m, n) = fp16((x1 @ W^T + bias) * deq_scale) with W held compressed (aclnnMatmulCompressDequant).

    x1: int8 (m, k), any m and k, any strides. x2, compress_index: 1-D int8 from compress_weight or
    msModelSlim. compress_info: [8, 8, k, n, 1] (list or int64 tensor). bias: int32 (n,) or (1, n), or
    None; added in int32 before scaling. deq_scale: uint64/int64 (1, n) or (1, 1): the fp32 scale in
    bits 0..31 (zero- or sign-extended fp32 bits, or trans_quant_param's form; bits 32..63 ignored).
    offset_w must be None and offset_x 0 (as in CANN). The first call per x2 decodes and transcodes
    the weight on the host (one sync; cached, see prepare_compressed_weight); later calls only launch.
    """
    if offset_w is not None:
        raise ValueError(f"{OP}: offset_w must be None (CANN supports no weight offset), got a "
                         f"{type(offset_w).__name__}")
    return call_op(OP, torch.ops.atlas.matmul_compress_dequant, x1, x2, compress_index, bias, deq_scale,
                   int_arg(OP, "offset_x", offset_x), _info_list(compress_info))


def npu_matmul_compress_dequant(x1: torch.Tensor, x2: torch.Tensor, compress_index: torch.Tensor,
                                bias: torch.Tensor, scale: torch.Tensor, offset_w: Optional[torch.Tensor] = None,
                                offset_x: Optional[int] = None) -> torch.Tensor:
    """torch_npu spelling (no compress_info argument): it is built as [8, 8, x1.shape[1], n, 1].

    n = bias.shape[-1]; torch_npu takes n from scale.size(1) instead, which is 1 for a (1, 1) scale.
    offset_x (torch_npu's int?): None, or 0 as a Python or numpy integer or a 0-d integer tensor.
    """
    check_tensor(OP, "x1", x1, dtypes=(torch.int8,), ndim=2)
    check_tensor(OP, "bias", bias, dtypes=(torch.int32,), ndim=(1, 2))
    offset_x = int_arg(OP, "offset_x", offset_x, optional=True)
    return matmul_compress_dequant(x1, x2, compress_index, bias, scale, offset_w=offset_w, offset_x=offset_x or 0,
                                   compress_info=[8, 8, x1.shape[-1] if x1.dim() else 0, bias.shape[-1], 1])


def tune_call(shape: dict, device):
    """The tuner's launch of the GEMM's sparse variants at {m, k, n} (a dense random weight, compressed), through
    the public op."""
    m, k, n = shape["m"], shape["k"], shape["n"]
    ints, scales = seeded_draws()
    bias, scale_n = ints(-1000, 1000, n), scales(n)
    scales(n), scales(m)  # the draws quant_matmul's harness makes for its other formats: the same inputs as before
    x2, index, info = compress_weight(ints(-128, 128, n, k).to(torch.int8))
    x1, deq = ints(-128, 128, m, k).to(torch.int8), scale_n.view(torch.int32).to(torch.int64).reshape(1, n)
    args = [t.to(device) for t in (x1, x2, index, bias, deq)]
    return lambda: matmul_compress_dequant(*args, compress_info=info)
