"""Byte-exact codec for the Atlas-310P lossless int8 weight-compression format.

This is the format that msModelSlim's ``weight_compression`` writes (CANN's
"weight unzip" bitstream, MODE_A: 4 engines, tight 8-byte index) and that
``aclnnMatmulCompressDequant`` / ``MatMulV2CompressDequant`` reads.  Both
LOW_SPARSE (W8A8S, engine header byte 0xA8) and HIGH_SPARSE (W16A16S, header
byte 0x88; pass the fp16 weight viewed as int8 (n, 2k)) are supported.
Spec: docs/compress_format.md (section numbers below refer to it).

Pipeline (compress):
  W (n, k) int8 -> zero-pad to (16*N1, 32*K1) -> FRACTAL_NZ with 16x32 fractals
  -> blocks of at most 8x8 fractals (smaller k-tail, *overlapping* n-tail)
  -> per block: histogram dictionary, 4 engine streams of 64-byte chunks,
     64-bit packets of prefix codes, end mark, or raw bypass
  -> 32-byte engine interleave -> blocks back to back in x2, one 8-byte index
     entry per block, compress_info = [8, 8, k, n, 1] (int64).

Dictionary scope (spec OPEN-1): this encoder builds ONE DICTIONARY PER BLOCK
(each block is its own CompressWeights call).  It is always decodable and is
byte-identical to msModelSlim whenever its grouping yields the same
histograms (single-block weights; weights whose equal-size blocks share one
histogram, e.g. the all-zero official vectors).  Tie order among equal counts follows libstdc++ ``std::sort``
(Appendix A), emulated exactly in ``dictionary_order``.

Speed: the encoder advances all engine streams of all blocks in lockstep, one
64-bit packet per step, with numpy over (streams, 64-byte window) arrays; the
decoder decodes every stored packet independently (codewords never straddle
packets) in lockstep over codeword slots, then resolves packet positions with
a cheap per-packet recurrence.  A 4096 x 4096 weight takes seconds.

Decoder checks: dtypes (TypeError); compress_info must be [8, 8, k, n, 1]
(flag 1 is the only known traversal order) with k * n < 2**31; index size (checked
before anything of the weight's size is allocated), flag/reserved bits,
block extents within x2, raw-block size, header bytes 0/1, codewords, packet
count, end mark, the header XOR checksums, and zero padding past (n, k) (a nonzero
byte there means compress_info is smaller than the stream's weight) (ValueError
naming the argument).
Trailing bytes after the last block are ignored.  Raw (bypass) blocks carry no
checksum, so corruption inside them cannot be detected.

Pseudo-sparsity (``sparsity`` > 0, lossy, opt-in): before compressing, exactly
m = ceil(sparsity * n * k) entries with the smallest |w| are set to 0 (|-128|
= 128).  Ties at the threshold magnitude are broken by row-major position
(lower flat index zeroed first), which equals a stable sort by |w|; the result
is deterministic and the zero fraction is >= sparsity.
"""
from __future__ import annotations

import math
import numbers
from fractions import Fraction
from typing import List, NamedTuple, Sequence, Tuple

import numpy as np
import torch

__all__ = [
    "compress_weight",
    "decompress_weight",
    "block_geometry",
    "Block",
    "nd_to_nz_fractals",
    "nz_fractals_to_nd",
    "pseudo_sparsify",
    "dictionary_order",
]

TILING = 8                 # tilingK = tilingN = 8 fractals per block side
FRAC_N, FRAC_K = 16, 32    # fractal shape (rows of n, columns of k)
FRAC_BYTES = FRAC_N * FRAC_K
ENGINES = 4
WINDOW = 64                # chunk size and packet window (maxRatio)
HEADER = 40                # engine header bytes
UNIT = 32                  # engine interleave unit
INDEX_UNIT = 128           # dataLen / offset unit of the index
MODES = {"low_sparse": 0, "high_sparse": 1}
HEADER_BYTE0 = (0xA8, 0x88)
DICT_SIZE = (36, 34)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_HEADER_SHARED = np.array([j not in (4, 5) for j in range(40)])  # header bytes all four engines of a block share
_MAX_BLOCKS_PER_CHUNK = 512   # bounds encoder memory (~17 MB of packets per chunk)
MAX_ELEMENTS = 2**31          # k * n bound: the decoder allocates the (padded) weight, the GEMM indexes it in int32

# ---------------------------------------------------------------------------
# Code tables (section 4.5).  Codes are written as stream-order bit strings;
# the packing value is the string reversed (first stream bit = lowest bit).
# ---------------------------------------------------------------------------
_RUN_CODES = (  # (run length, stream-order code), largest run first = greedy order
    ((2, "001"), (1, "000")),
    ((9, "101000"), (4, "011"), (3, "010"), (2, "001"), (1, "000")),
)
_DICT_CODES = (  # stream-order codes for ranks 1..D-1
    ["010", "011", "100"]
    + [f"{v:06b}" for v in range(40, 58)]
    + [f"{v:09b}" for v in range(464, 478)],
    ["100"]
    + [f"{v:06b}" for v in range(41, 58)]
    + [f"{v:09b}" for v in range(464, 479)],
)
_END_BITS = "111011111"
_END_V = int(_END_BITS[::-1], 2)  # 503


def _v(bits: str) -> int:
    return int(bits[::-1], 2)


def _esc_bits(b: int) -> str:
    return "1111" + f"{b:08b}"


# Encoder per-byte packed code: V (bits 0..11) | length << 12 | is_zero_symbol << 16.
_ESC_PACKED = np.array([_v(_esc_bits(b)) | (12 << 12) for b in range(256)], np.int32)
_RANK_PACKED = tuple(
    np.array([0] + [_v(c) | (len(c) << 12) for c in codes], np.int32) for codes in _DICT_CODES
)


def _run_table(mode: int) -> np.ndarray:
    """Greedy run codes by (run length, offset in run), for the lockstep encoder.

    Entry (zlen * 65 + rel + 1): packed V | length << 12 of the run code that
    ends at offset rel of a zlen-long run of Z (window-limited), else 0.
    """
    tab = np.zeros(66 * 65, np.int32)
    for zlen in range(1, WINDOW + 1):
        end, left = 0, zlen
        while left:
            run, code = next((r, c) for r, c in _RUN_CODES[mode] if r <= left)
            end, left = end + run, left - run
            tab[zlen * 65 + end] = _v(code) | (len(code) << 12)
    return tab


_RUN_TABLE = (_run_table(0), _run_table(1))

# Decoder: 12-bit LSB-first lookahead -> (kind, length, bytes produced, arg).
_K_INVALID, _K_RUN, _K_DICT, _K_ESC, _K_END = 0, 1, 2, 3, 4


def _decode_tables():
    kind = np.zeros(2 * 4096, np.int8)
    length = np.full(2 * 4096, 12, np.int8)
    count = np.zeros(2 * 4096, np.int8)
    arg = np.zeros(2 * 4096, np.uint8)
    for m in (0, 1):
        codes = [(c, _K_RUN, run, 0) for run, c in _RUN_CODES[m]]
        codes += [(c, _K_DICT, 1, r) for r, c in enumerate(_DICT_CODES[m], 1)]
        codes += [(_END_BITS, _K_END, 0, 0)]
        codes += [(_esc_bits(b), _K_ESC, 1, b) for b in range(256)]
        for bits, kd, cnt, a in codes:
            ln = len(bits)
            xs = m * 4096 + _v(bits) + (np.arange(1 << (12 - ln)) << ln)
            if (kind[xs] != _K_INVALID).any():  # pragma: no cover - table sanity
                raise AssertionError("code table is not prefix-free")
            kind[xs], length[xs], count[xs], arg[xs] = kd, ln, cnt, a
    return kind, length, count, arg


_DEC_KIND, _DEC_LEN, _DEC_COUNT, _DEC_ARG = _decode_tables()
# Packed: kind | length << 3 | bytes produced << 7 | arg (rank or literal) << 11.
_DEC_TABLE = (_DEC_KIND.astype(np.int32) | (_DEC_LEN.astype(np.int32) << 3)
              | (_DEC_COUNT.astype(np.int32) << 7) | (_DEC_ARG.astype(np.int32) << 11))


# ---------------------------------------------------------------------------
# Geometry and layout
# ---------------------------------------------------------------------------
class Block(NamedTuple):
    """One compression block, in storage order (entry e = nb * KB + kb).

    Fractal coordinates: k-fractal a covers W[:, 32a:32a+32], n-fractal b covers
    W[16b:16b+16, :].  The block holds fractals (k_start+i, n_start+j) for
    i < k_width, j < n_width, i outer.  ``n_skip`` leading n-fractal columns are
    also held by the previous n-block (overlapping n-tail, section 3).
    """

    entry: int
    kb: int
    nb: int
    k_start: int
    k_width: int
    n_start: int
    n_width: int
    n_skip: int

    @property
    def size(self) -> int:
        """Uncompressed block size S in bytes (multiple of 512, <= 32768)."""
        return self.k_width * self.n_width * FRAC_BYTES


def _fractal_counts(k: int, n: int) -> Tuple[int, int]:
    return -(-k // FRAC_K), -(-n // FRAC_N)


def block_geometry(k: int, n: int) -> List[Block]:
    """Blocks of an (n, k) weight in storage order (n-block outer, k-block inner)."""
    if k <= 0 or n <= 0:
        raise ValueError(f"k and n must be positive, got k={k}, n={n}")
    k1, n1 = _fractal_counts(k, n)
    kbs, nbs = -(-k1 // TILING), -(-n1 // TILING)
    out = []
    for nb in range(nbs):
        if n1 <= TILING:
            n_start, n_width, skip = 0, n1, 0
        else:
            n_start = min(TILING * nb, n1 - TILING)
            n_width, skip = TILING, TILING * nb - n_start
        for kb in range(kbs):
            k_start = TILING * kb
            out.append(Block(nb * kbs + kb, kb, nb, k_start, min(TILING, k1 - k_start),
                             n_start, n_width, skip))
    return out


def nd_to_nz_fractals(w: np.ndarray) -> np.ndarray:
    """(n, k) uint8/int8 -> zero-padded NZ array (K1, N1, 16, 32), C-contiguous.

    NZ[a, b, r, c] = W[16b + r, 32a + c]; fractal (a, b) is 512 contiguous bytes.
    """
    n, k = w.shape
    k1, n1 = _fractal_counts(k, n)
    pad = np.zeros((n1 * FRAC_N, k1 * FRAC_K), w.dtype)
    pad[:n, :k] = w
    return np.ascontiguousarray(pad.reshape(n1, FRAC_N, k1, FRAC_K).transpose(2, 0, 1, 3))


def nz_fractals_to_nd(nz: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of nd_to_nz_fractals: (K1, N1, 16, 32) -> (n, k), padding dropped."""
    k1, n1 = nz.shape[:2]
    return np.ascontiguousarray(
        nz.transpose(1, 2, 0, 3).reshape(n1 * FRAC_N, k1 * FRAC_K)[:n, :k])


# ---------------------------------------------------------------------------
# Dictionary: libstdc++ std::sort emulation (Appendix A)
# ---------------------------------------------------------------------------
_ORDER_CACHE: dict = {}


def dictionary_order(counts: Sequence[int]) -> List[int]:
    """The 256 byte values as libstdc++ std::sort orders (value, count) pairs by
    count descending, starting from value order (comparator count(x) > count(y)).
    """
    key = bytes(np.asarray(counts, np.int64).tobytes())
    hit = _ORDER_CACHE.get(key)
    if hit is not None:
        return hit
    cnt = [int(c) for c in counts]
    a = list(range(256))

    def adjust_heap(first, hole, length, value):
        top = hole
        child = hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if cnt[a[first + child]] > cnt[a[first + child - 1]]:
                child -= 1
            a[first + hole] = a[first + child]
            hole = child
        if (length & 1) == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            a[first + hole] = a[first + child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and cnt[a[first + parent]] > cnt[value]:
            a[first + hole] = a[first + parent]
            hole = parent
            parent = (hole - 1) // 2
        a[first + hole] = value

    def heap_sort(lo, hi):
        length = hi - lo
        if length >= 2:
            parent = (length - 2) // 2
            while True:
                adjust_heap(lo, parent, length, a[lo + parent])
                if parent == 0:
                    break
                parent -= 1
        last = hi
        while last - lo > 1:
            last -= 1
            value = a[last]
            a[last] = a[lo]
            adjust_heap(lo, 0, last - lo, value)

    def introsort(lo, hi, depth):
        while hi - lo > 16:
            if depth == 0:
                heap_sort(lo, hi)
                return
            depth -= 1
            ia, ib, ic = lo + 1, lo + (hi - lo) // 2, hi - 1
            ca, cb, cc = cnt[a[ia]], cnt[a[ib]], cnt[a[ic]]
            if ca > cb:
                m = ib if cb > cc else (ic if ca > cc else ia)
            else:
                m = ia if ca > cc else (ic if cb > cc else ib)
            a[lo], a[m] = a[m], a[lo]
            pc = cnt[a[lo]]
            i, j = lo + 1, hi
            while True:
                while cnt[a[i]] > pc:
                    i += 1
                j -= 1
                while pc > cnt[a[j]]:
                    j -= 1
                if i >= j:
                    break
                a[i], a[j] = a[j], a[i]
                i += 1
            introsort(i, hi, depth)
            hi = i

    introsort(0, 256, 2 * 8)
    for i in range(1, 256):  # final insertion sort (guarded on the first 16)
        v = a[i]
        if i < 16 and cnt[v] > cnt[a[0]]:
            a[1:i + 1] = a[0:i]
            a[0] = v
            continue
        j = i
        while cnt[v] > cnt[a[j - 1]]:
            a[j] = a[j - 1]
            j -= 1
        a[j] = v
    if len(_ORDER_CACHE) > 4096:
        _ORDER_CACHE.clear()
    _ORDER_CACHE[key] = a
    return a


# ---------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------
def _parse_mode(mode: str) -> int:
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise ValueError(f"mode must be 'low_sparse' or 'high_sparse', got {mode!r}")
    return MODES[mode.lower()]


def _int8_1d(t, name: str) -> np.ndarray:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of dtype torch.int8, got {type(t).__name__}")
    if t.dtype != torch.int8:
        raise TypeError(f"{name} must have dtype torch.int8, got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    _not_meta(t, name)
    return t.detach().cpu().contiguous().numpy().view(np.uint8)


def _not_meta(t: torch.Tensor, name: str) -> None:
    if t.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (shape only, no data); the codec reads and writes the bytes on "
                         f"the host: pass a CPU, CUDA or NPU tensor")


def _parse_info(info) -> Tuple[int, int]:
    if isinstance(info, torch.Tensor):
        if info.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"compress_info must have dtype torch.int64, got {info.dtype}")
        _not_meta(info, "compress_info")
        vals = [int(v) for v in info.detach().cpu().reshape(-1).tolist()]
        shape_ok = info.dim() == 1
    elif isinstance(info, (list, tuple)):
        if not all(isinstance(v, (int, np.integer)) for v in info):
            raise TypeError("compress_info must contain integers")
        vals, shape_ok = [int(v) for v in info], True
    else:
        raise TypeError(f"compress_info must be an int64 torch.Tensor, got {type(info).__name__}")
    if not shape_ok or len(vals) != 5 or vals[0] != TILING or vals[1] != TILING \
            or vals[2] <= 0 or vals[3] <= 0 or vals[4] != 1:
        raise ValueError(f"compress_info must be [8, 8, k, n, 1] with k, n > 0, got {vals}")
    if vals[2] * vals[3] >= MAX_ELEMENTS:
        raise ValueError(f"compress_info: a weight of k * n = {vals[2]} * {vals[3]} elements is too large "
                         f"(at most {MAX_ELEMENTS - 1})")
    return vals[2], vals[3]


def block_count(k: int, n: int) -> int:
    """Number of blocks (= index entries) of an (n, k) weight, without building them."""
    k1, n1 = _fractal_counts(k, n)
    return -(-k1 // TILING) * -(-n1 // TILING)


# ---------------------------------------------------------------------------
# Pseudo-sparsity
# ---------------------------------------------------------------------------
def pseudo_sparsify(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero the ceil(sparsity * numel) smallest-|w| entries of an int8 tensor.

    Ties at the threshold magnitude: lower row-major index is zeroed first.
    Returns a new int8 tensor of the same shape; sparsity in [0, 1).
    """
    if not isinstance(weight, torch.Tensor) or weight.dtype != torch.int8:
        raise TypeError("weight must be an int8 torch.Tensor")
    w = weight.detach().cpu().contiguous().numpy().copy()
    _sparsify_inplace(w.reshape(-1), sparsity)
    return torch.from_numpy(w)


def _check_sparsity(sparsity) -> None:
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) \
            or not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")


def _sparsify_inplace(flat: np.ndarray, sparsity: float) -> None:
    _check_sparsity(sparsity)
    m = math.ceil(Fraction(float(sparsity)) * flat.size)
    if m == 0:
        return
    mag = np.abs(flat.view(np.int8).astype(np.int16))
    hist = np.bincount(mag, minlength=129)
    cum = np.cumsum(hist)
    t = int(np.searchsorted(cum, m))          # threshold magnitude
    below = int(cum[t - 1]) if t > 0 else 0
    flat[mag < t] = 0
    flat[np.flatnonzero(mag == t)[: m - below]] = 0


# ---------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------
def compress_weight(weight: torch.Tensor, *, mode: str = "low_sparse", sparsity: float = 0.0):
    """Compress an int8 weight (n, k) (n = output channels).

    Returns (x2, compress_index, compress_info):
      x2             1-D torch.int8, the blocks back to back;
      compress_index 1-D torch.int8, 8 bytes per block (tight index, section 5);
      compress_info  torch.int64 [8, 8, k, n, 1].
    For W16A16S pass the fp16 weight viewed as int8 (n, 2k) with mode="high_sparse".
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dtype != torch.int8:
        raise TypeError(f"weight must have dtype torch.int8, got {weight.dtype}")
    if weight.dim() != 2 or weight.shape[0] == 0 or weight.shape[1] == 0:
        raise ValueError(f"weight must be a non-empty 2-D (n, k) tensor, got {tuple(weight.shape)}")
    _not_meta(weight, "weight")
    m = _parse_mode(mode)
    _check_sparsity(sparsity)
    n, k = weight.shape
    w = weight.detach().cpu().contiguous().numpy().view(np.uint8)
    if sparsity > 0:
        w = w.copy()
        _sparsify_inplace(w.reshape(-1), sparsity)
    nz = nd_to_nz_fractals(w)
    blocks = block_geometry(k, n)

    encoded: list = [None] * len(blocks)  # per entry: (block bytes, compressed?)
    groups: dict = {}
    for blk in blocks:
        groups.setdefault((blk.k_width, blk.n_width), []).append(blk)
    for members in groups.values():
        for c0 in range(0, len(members), _MAX_BLOCKS_PER_CHUNK):
            chunk = members[c0:c0 + _MAX_BLOCKS_PER_CHUNK]
            data = np.stack([nz[b.k_start:b.k_start + b.k_width,
                                b.n_start:b.n_start + b.n_width].reshape(-1) for b in chunk])
            for blk, out in zip(chunk, _encode_blocks(data, m)):
                encoded[blk.entry] = out

    index = np.zeros((len(blocks), 8), np.uint8)
    offset = 0
    for e, (data, compressed) in enumerate(encoded):
        units = len(data) // INDEX_UNIT
        word = units | (0x8000 if compressed else 0)
        index[e, 0], index[e, 1] = word & 0xFF, word >> 8
        index[e, 4:8] = list((offset // INDEX_UNIT).to_bytes(4, "little"))
        offset += len(data)
    x2 = np.frombuffer(b"".join(d for d, _ in encoded), np.uint8).view(np.int8).copy()
    return (torch.from_numpy(x2),
            torch.from_numpy(index.reshape(-1).view(np.int8).copy()),
            torch.tensor([TILING, TILING, k, n, 1], dtype=torch.int64))


def _encode_blocks(data: np.ndarray, mode: int) -> List[Tuple[bytes, bool]]:
    """Compress B equal-size blocks. data: (B, S) uint8 block bytes (section 3 order).

    Returns one (interleaved block bytes, compressed?) per block.
    """
    nblk, size = data.shape
    s4 = size // ENGINES
    # Engine i gets 64-byte chunks i, i+4, ...: (B, 4, S/4).
    streams = np.ascontiguousarray(
        data.reshape(nblk, size // (ENGINES * WINDOW), ENGINES, WINDOW).transpose(0, 2, 1, 3)
    ).reshape(nblk, ENGINES, s4)

    counts = np.stack([np.bincount(row, minlength=256) for row in data])
    dsize = DICT_SIZE[mode]
    dicts = np.array([dictionary_order(c)[:dsize] for c in counts], np.uint8)

    tables = np.tile(_ESC_PACKED, (nblk, 1))
    rows = np.arange(nblk)[:, None]
    tables[rows, dicts[:, 1:]] = _RANK_PACKED[mode][None, 1:]
    tables[np.arange(nblk), dicts[:, 0]] = 1 << 16

    bypass, words, nbytes = _encode_streams(streams, tables, mode)

    headers = np.zeros((nblk, ENGINES, HEADER), np.uint8)
    headers[:, :, 0] = HEADER_BYTE0[mode]
    headers[:, :, 1] = s4 // 128
    headers[:, :, 4] = np.bitwise_xor.reduce(streams[:, :, 1::2], axis=2)
    headers[:, :, 5] = np.bitwise_xor.reduce(streams[:, :, 0::2], axis=2)
    if mode == 0:
        headers[:, :, 2:4] = dicts[:, None, 0:2]
        headers[:, :, 6:40] = dicts[:, None, 2:36]
    else:
        headers[:, :, 6:40] = dicts[:, None, 0:34]

    width = -(-(HEADER + 8 * words.shape[1]) // UNIT) * UNIT
    eng = np.zeros((nblk, ENGINES, width), np.uint8)
    eng[:, :, :HEADER] = headers
    eng[:, :, HEADER:HEADER + 8 * words.shape[1]] = \
        words.astype("<u8").view(np.uint8).reshape(nblk, ENGINES, -1)
    nbytes = nbytes.reshape(nblk, ENGINES)

    out = []
    for b in range(nblk):
        if bypass[b]:
            src, length = streams[b], s4
        else:
            src, length = eng[b], -(-int(nbytes[b].max()) // UNIT) * UNIT
        blk = src[:, :length].reshape(ENGINES, length // UNIT, UNIT).transpose(1, 0, 2)
        out.append((blk.tobytes(), not bypass[b]))
    return out


def _encode_streams(streams: np.ndarray, tables: np.ndarray, mode: int):
    """Packetise all engine streams in lockstep (sections 4.6-4.8).

    streams: (B, 4, s4) uint8; tables: (B, 256) int32 packed codes per byte.
    Returns bypass (B,) bool, words (4B, pmax+1) uint64 packets, nbytes (4B,)
    engine stream lengths (header included, before interleave padding).
    """
    nblk, _, s4 = streams.shape
    ns = nblk * ENGINES
    pmax = (s4 - HEADER) // 8          # packet P may be written only if 40 + 8P < s4
    width = s4 + WINDOW                # zero tail: packed code 0 = "no code, not Z"
    packed = np.zeros((ns, width), np.int32)
    packed[:, :s4] = tables[np.arange(nblk)[:, None], streams.reshape(nblk, -1)].reshape(ns, s4)

    # Cheap certain-bypass test: code bits are at least the non-Z code lengths
    # plus the best run-code rate (LOW 3 bits / 2 Z, HIGH 6 bits / 9 Z), and a
    # packet holds at most 63 code bits.
    zflag = (packed >> 16) & 1
    code_bits = ((packed >> 12) & 15).sum(axis=1)
    nz_count = zflag.sum(axis=1)
    lower = code_bits + ((2 * nz_count + 2) // 3 if mode else (3 * nz_count + 1) // 2)
    bypass = (-(-lower // 63) > pmax).reshape(nblk, ENGINES).any(axis=1)

    active = np.flatnonzero(~np.repeat(bypass, ENGINES))
    if active.size:
        # Z-run extent around each byte, window-independent (the zero tail of
        # every row ends runs): bits 17..23 = Z bytes before it in its run,
        # 24..30 = after it, both capped at 64.  A window then only clips them
        # to its own edges.
        sub = packed[active].reshape(-1)
        zf = ((sub >> 16) & 1).astype(bool)
        pos = np.arange(sub.size, dtype=np.int32)
        prev_brk = np.maximum.accumulate(np.where(zf, np.int32(-1), pos))
        next_brk = np.minimum.accumulate(np.where(zf, np.int32(sub.size), pos)[::-1])[::-1]
        before = np.minimum(pos - prev_brk - 1, WINDOW)
        after = np.minimum(next_brk - pos - 1, WINDOW)
        sub |= np.where(zf, (before << 17) | (after << 24), 0)
        packed[active] = sub.reshape(active.size, width)
        del zf, pos, prev_brk, next_brk, before, after, sub
    flat = packed.reshape(-1)

    run_tab = _RUN_TABLE[mode]
    words = np.zeros((ns, pmax + 1), np.uint64)
    p = np.zeros(ns, np.int64)
    npk = np.zeros(ns, np.int64)
    lastb = np.zeros(ns, np.int64)
    ar = np.arange(WINDOW, dtype=np.int32)
    room = WINDOW - 1 - ar
    while active.size:
        over = npk[active] >= pmax
        if over.any():
            bypass[active[over] // ENGINES] = True
            active = active[~bypass[active // ENGINES]]
            if not active.size:
                break
        pa = p[active]
        na = active.size
        c = flat[(active * width + pa)[:, None] + ar]          # (A, 64) int32
        z = (c >> 16) & 1
        rel = np.minimum((c >> 17) & 127, ar)                  # offset in the window's run
        zlen = rel + 1 + np.minimum((c >> 24) & 127, room)
        code = (c & 0xFFFF) | run_tab[(zlen * 65 + rel + 1) * z]
        ln = code >> 12
        cum = np.cumsum(ln, axis=1, dtype=np.int16)
        fit = (ln > 0) & (cum <= 64)
        # Every packet holds at least one code; work on the fitting codes only.
        fpos = np.flatnonzero(fit)
        row_start = np.zeros(na, np.int64)
        np.cumsum(np.bincount(fpos >> 6, minlength=na)[:-1], out=row_start[1:])
        last = fpos[np.append(row_start[1:], fpos.size) - 1]
        cum_f = cum.reshape(-1)[fpos]
        code_f = code.reshape(-1)[fpos]
        shift = (cum_f - (code_f >> 12)).astype(np.uint64)
        word = np.bitwise_or.reduceat((code_f & 0xFFF).astype(np.uint64) << shift, row_start)
        bits = cum.reshape(-1)[last].astype(np.int64)
        consumed = (last & 63) + 1
        full = cum[:, -1] > 64
        if mode == 1 and full.any():
            # A 9-run that does not fit at bit 60 is replaced by a 4-run (then full).
            rows = np.arange(na)
            ff = np.argmax((ln > 0) & (cum > 64), axis=1)
            sp = full & (bits == 60) & (z[rows, ff] == 1) & (ln[rows, ff] == 6)
            if sp.any():
                word[sp] |= np.uint64(_v("011") << 60)
                bits[sp] = 63
                consumed[sp] = ff[sp] - 4
        word |= np.where(full, _ONES << bits.astype(np.uint64), np.uint64(0))
        words[active, npk[active]] = word
        npk[active] += 1
        p[active] = pa + consumed
        lastb[active] = bits
        active = active[p[active] < s4]

    # End mark (section 4.7); the last packet is never full.
    nbytes = np.zeros(ns, np.int64)
    live = np.flatnonzero(~np.repeat(bypass, ENGINES))
    b = lastb[live]
    last = npk[live] - 1
    fits = b + 9 <= 64
    s1, s2 = live[fits], live[~fits]
    words[s1, last[fits]] |= np.uint64(_END_V) << b[fits].astype(np.uint64)
    nbytes[s1] = HEADER + 8 * last[fits] + (b[fits] + 9 + 7) // 8
    ok2 = HEADER + 8 * npk[s2] < s4
    bypass[s2[~ok2] // ENGINES] = True
    s2, b2 = s2[ok2], b[~fits][ok2]
    words[s2, npk[s2] - 1] |= _ONES << b2.astype(np.uint64)
    words[s2, npk[s2]] = np.uint64(_END_V)
    nbytes[s2] = HEADER + 8 * npk[s2] + 2
    return bypass, words, nbytes


# ---------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------
def decompress_weight(x2: torch.Tensor, compress_index: torch.Tensor, compress_info) -> torch.Tensor:
    """Exact inverse of compress_weight: returns the int8 weight (n, k).

    x2, compress_index: 1-D torch.int8; compress_info: int64 [8, 8, k, n, 1].
    Raises TypeError for wrong dtypes and ValueError (naming the argument) for
    malformed or corrupt input.
    """
    data = _int8_1d(x2, "x2")
    idx = _int8_1d(compress_index, "compress_index")
    k, n = _parse_info(compress_info)
    n_blocks = block_count(k, n)
    if idx.size != 8 * n_blocks:  # checked before anything of the weight's size is allocated
        raise ValueError(
            f"compress_index has {idx.size} bytes but compress_info (k={k}, n={n}) needs "
            f"{n_blocks} entries of 8 bytes ({8 * n_blocks} bytes)")
    blocks = block_geometry(k, n)
    ent = idx.reshape(-1, 8).astype(np.int64)
    u16 = ent[:, 0] | (ent[:, 1] << 8)
    data_len = (u16 & 0x1FF) * INDEX_UNIT
    special = u16 >> 15
    offset = (ent[:, 4] | (ent[:, 5] << 8) | (ent[:, 6] << 16) | (ent[:, 7] << 24)) * INDEX_UNIT

    k1, n1 = _fractal_counts(k, n)
    nz = np.zeros((k1, n1, FRAC_N, FRAC_K), np.uint8)
    raw_blocks, comp_streams = [], []
    for blk in blocks:
        e = blk.entry
        if (u16[e] & 0x7E00) or ent[e, 2] or ent[e, 3]:
            raise ValueError(f"compress_index entry {e}: unsupported flag/reserved bits {u16[e]:#06x}")
        if data_len[e] == 0:
            raise ValueError(f"compress_index entry {e}: dataLen is 0")
        end = offset[e] + data_len[e]
        if end > data.size:
            raise ValueError(
                f"x2 is truncated or compress_index entry {e} is corrupt: block needs x2 bytes "
                f"[{offset[e]}, {end}) but x2 has {data.size} bytes")
        length = data_len[e] // ENGINES
        eng = data[offset[e]:end].reshape(length // UNIT, ENGINES, UNIT).transpose(1, 0, 2) \
            .reshape(ENGINES, length)
        s4 = blk.size // ENGINES
        if not special[e]:
            if data_len[e] != blk.size:
                raise ValueError(f"compress_index entry {e}: raw block has dataLen "
                                 f"{data_len[e]} bytes, expected {blk.size}")
            raw_blocks.append((blk, eng))
        else:
            if length < HEADER + 8:
                raise ValueError(f"x2 block {e}: engine streams too short ({length} bytes)")
            comp_streams.append((blk, eng, s4))

    for blk, eng in raw_blocks:
        _place_block(nz, blk, eng)
    if comp_streams:
        for blk, streams in _decode_compressed(comp_streams):
            _place_block(nz, blk, streams)
    # the encoder zero-pads to whole fractals: a nonzero byte there means the stream holds a larger weight
    # than compress_info's (n, k) (same block and fractal counts, so no size check above could tell)
    padded = nz.transpose(1, 2, 0, 3).reshape(nz.shape[1] * FRAC_N, nz.shape[0] * FRAC_K)
    if padded[n:].any() or padded[:n, k:].any():
        raise ValueError(f"compress_info (k={k}, n={n}) disagrees with x2: the stream has nonzero weights "
                         f"beyond row {n} or column {k} (a larger weight's stream?)")
    w = nz_fractals_to_nd(nz, n, k)
    return torch.from_numpy(w.view(np.int8))


def _place_block(nz: np.ndarray, blk: Block, engines: np.ndarray) -> None:
    """Write a block's 4 engine input streams (4, >= S/4) back into NZ."""
    s4 = blk.size // ENGINES
    data = engines[:, :s4].reshape(ENGINES, s4 // WINDOW, WINDOW).transpose(1, 0, 2)
    frac = data.reshape(blk.k_width, blk.n_width, FRAC_N, FRAC_K)
    nz[blk.k_start:blk.k_start + blk.k_width,
       blk.n_start + blk.n_skip:blk.n_start + blk.n_width] = frac[:, blk.n_skip:]


def _decode_compressed(items):
    """Decode compressed blocks. items: list of (Block, engines (4, L) uint8, s4).

    Returns [(Block, (4, s4) uint8 engine input streams)].
    """
    ns = len(items) * ENGINES
    s4 = np.repeat(np.array([it[2] for it in items], np.int64), ENGINES)
    hdr = np.stack([it[1][:, :HEADER] for it in items]).reshape(ns, HEADER)
    nwords = np.repeat(np.array([(it[1].shape[1] - HEADER) // 8 for it in items], np.int64), ENGINES)
    mode = np.where(hdr[:, 0] == HEADER_BYTE0[1], 1, 0)
    bad = np.flatnonzero((hdr[:, 0] != HEADER_BYTE0[0]) & (hdr[:, 0] != HEADER_BYTE0[1]))
    if bad.size:
        s = bad[0]
        raise ValueError(f"x2 block {items[s // 4][0].entry} engine {s % 4}: bad header byte 0 "
                         f"{hdr[s, 0]:#04x} (expected 0xa8 or 0x88)")
    bad = np.flatnonzero(hdr[:, 1] != s4 // 128)
    if bad.size:
        s = bad[0]
        raise ValueError(f"x2 block {items[s // 4][0].entry} engine {s % 4}: bad header byte 1 "
                         f"{hdr[s, 1]:#04x} (expected S/512 = {s4[s] // 128:#04x})")
    # One dictionary per block, written into all four engine headers: they must agree byte for byte
    # (bytes 4-5 are each engine's own checksums).
    blk_hdr = hdr.reshape(-1, ENGINES, HEADER)
    differ = (blk_hdr != blk_hdr[:, :1]) & _HEADER_SHARED
    if differ.any():
        b, eng_i, j = (int(v[0]) for v in np.nonzero(differ))
        raise ValueError(f"x2 block {items[b][0].entry}: engine {eng_i}'s header byte {j} is "
                         f"{blk_hdr[b, eng_i, j]:#04x} but engine 0's is {blk_hdr[b, 0, j]:#04x} (the four engines "
                         f"carry one dictionary: corrupt data)")
    dicts = np.zeros((ns, 36), np.uint8)
    low = mode == 0
    dicts[low, 0:2] = hdr[low, 2:4]
    dicts[low, 2:36] = hdr[low, 6:40]
    dicts[~low, 0:34] = hdr[~low, 6:40]
    bad = np.flatnonzero(~low & ((hdr[:, 2] != 0) | (hdr[:, 3] != 0)))
    if bad.size:
        s = bad[0]
        raise ValueError(f"x2 block {items[s // 4][0].entry}: HIGH_SPARSE header bytes 2-3 must be 0, got "
                         f"{hdr[s, 2]:#04x} {hdr[s, 3]:#04x} (corrupt data)")
    repeat = np.array([np.unique(d[:DICT_SIZE[m]]).size != DICT_SIZE[m] for d, m in zip(dicts[::4], mode[::4])])
    if repeat.any():
        b = int(np.flatnonzero(repeat)[0])
        raise ValueError(f"x2 block {items[b][0].entry}: the header's dictionary repeats a byte value (a dictionary "
                         f"holds distinct values: corrupt data)")

    words = np.concatenate([
        np.ascontiguousarray(it[1][:, HEADER:HEADER + 8 * ((it[1].shape[1] - HEADER) // 8)])
        .view("<u8").reshape(-1) for it in items]).astype(np.uint64)
    wstart = np.concatenate([[0], np.cumsum(nwords)[:-1]])
    wstream = np.repeat(np.arange(ns), nwords)
    wmode = mode[wstream] * 4096

    # 1. Decode every packet on its own (codewords never cross packets), all
    #    packets in lockstep over codeword slots; finished packets drop out.
    nw = words.size
    produced = np.zeros(nw, np.int64)
    stop = np.zeros(nw, np.int8)        # 0 fill/incomplete, 1 end mark, 2 invalid code
    stop_bit = np.zeros(nw, np.int64)   # bit where decoding stopped (the end mark's or the fill's first bit)
    fill_ok = np.zeros(nw, bool)        # the bits from stop_bit on are all ones (a full packet's fill)
    zero_after = np.zeros(nw, bool)     # the first 64 bytes were produced exactly, and only zero bits follow
    lit_w, lit_off, lit_val = [], [], []
    ids = np.arange(nw)
    cur = words.copy()                  # unread bits, shifted down to bit 0
    rem = np.full(nw, 64, np.int16)     # bits left in the packet
    prod = np.zeros(nw, np.int16)
    tbase = wmode.astype(np.int64)      # decode table of the stream's mode
    dbase = wstream * 36                # row of the stream's dictionary in dflat
    dflat = dicts.reshape(-1)
    while ids.size:
        e = _DEC_TABLE[(cur & np.uint64(0xFFF)).astype(np.int64) + tbase]
        kind, ln = e & 7, (e >> 3) & 15
        ok = ln <= rem
        done = ~ok | (kind == _K_END) | (kind == _K_INVALID)
        if done.any():
            fin = ids[done]
            produced[fin] = prod[done]
            stop[fin] = np.where(ok[done], np.where(kind[done] == _K_END, 1, 2), 0)
            stop_bit[fin] = 64 - rem[done]
            left = rem[done].astype(np.uint64)
            fill_ok[fin] = (left == 0) | (cur[done] == _ONES >> (np.uint64(64) - np.maximum(left, np.uint64(1))))
        keep = ~done
        lit = keep & (kind >= _K_DICT)
        if lit.any():
            v = (e[lit] >> 11) & 255
            d = kind[lit] == _K_DICT
            v[d] = dflat[dbase[lit][d] + v[d]]
            lit_w.append(ids[lit])
            lit_off.append(prod[lit])
            lit_val.append(v.astype(np.uint8))
        ln = ln[keep]
        ids, rem, tbase, dbase = ids[keep], rem[keep] - ln, tbase[keep], dbase[keep]
        before = prod[keep]
        prod = before + ((e[keep] >> 7) & 15)
        cur = cur[keep] >> ln.astype(np.uint64)
        reached = (before < WINDOW) & (prod >= WINDOW)
        if reached.any():
            zero_after[ids[reached]] = (prod[reached] == WINDOW) & (cur[reached] == 0)

    # 2. Where each packet starts: p_{j+1} = p_j + min(64, S/4 - p_j, produced_j).
    pstart = np.zeros(nw, np.int64)
    consumed = np.zeros(nw, np.int64)
    lastword = np.zeros(ns, np.int64)
    p = np.zeros(ns, np.int64)
    act = np.arange(ns)
    j = 0
    while act.size:
        short = j >= nwords[act]
        if short.any():
            s = act[short][0]
            raise ValueError(f"x2 block {items[s // 4][0].entry} engine {s % 4}: engine stream "
                             f"ends before its {s4[s]} bytes are decoded (truncated or corrupt)")
        wi = wstart[act] + j
        pa = p[act]
        win = np.minimum(WINDOW, s4[act] - pa)
        c = np.minimum(win, produced[wi])
        bad = (c == 0) | ((stop[wi] == 2) & (produced[wi] < win))
        if bad.any():
            s = act[bad][0]
            raise ValueError(f"x2 block {items[s // 4][0].entry} engine {s % 4}: "
                             f"invalid code in packet {j}")
        # A full packet (fewer bytes than its window) ends in a fill of ones; a packet that covers its window
        # and is not the last holds zero bits after its codes; the last one holds its window's codes exactly,
        # then the end mark (or a fill before a short F7 01 packet).
        last = pa + c >= s4[act]
        full = produced[wi] < win
        bad = np.where(full, (stop[wi] != 0) | ~fill_ok[wi],
                       np.where(last, (produced[wi] != win) | ((stop[wi] == 0) & ~fill_ok[wi]) | (stop[wi] == 2),
                                ~zero_after[wi]))
        if bad.any():
            s = act[bad][0]
            raise ValueError(f"x2 block {items[s // 4][0].entry} engine {s % 4}: packet {j} does not end as the "
                             f"format writes it (fill bits, zero tail or end mark; corrupt data)")
        pstart[wi], consumed[wi] = pa, c
        p[act] = pa + c
        lastword[act] = wi
        act = act[p[act] < s4[act]]
        j += 1

    # The end mark closes the last packet or starts the next one (F7 01).
    lw = lastword
    nxt = np.minimum(lw + 1, nw - 1)
    has_end = (stop[lw] == 1) | ((stop[lw] == 0) & (lw + 1 < wstart + nwords)
                                 & (stop[nxt] == 1) & (produced[nxt] == 0))
    if not has_end.all():
        s = int(np.flatnonzero(~has_end)[0])
        raise ValueError(f"x2 block {items[s // 4][0].entry} engine {s % 4}: missing end mark")
    # Everything after the end mark is zero padding, and the block is no longer than its longest engine stream
    # rounded up to the 32-byte interleave unit.
    end_word = np.where(stop[lw] == 1, lw, nxt)
    end_bit = (HEADER + 8 * (end_word - wstart)) * 8 + stop_bit[end_word] + 9
    for i, it in enumerate(items):
        eng, length = it[1], it[1].shape[1]
        ends = end_bit[4 * i:4 * i + 4]
        for e in range(ENGINES):
            byte, bit = divmod(int(ends[e]), 8)
            if (byte < length and eng[e, byte] >> bit) or eng[e, byte + 1:].any():
                raise ValueError(f"x2 block {it[0].entry} engine {e}: nonzero bytes after the end mark (the "
                                 f"padding is zeros: corrupt data)")
        if -(-int(ends.max()) // (8 * UNIT)) * UNIT != length:
            raise ValueError(f"x2 block {it[0].entry}: dataLen {4 * length} bytes is not the length of its longest "
                             f"engine stream rounded up to {UNIT} bytes, times 4 (corrupt index or data)")

    # 3. Fill with the zero symbol, then scatter the literal bytes.
    out = np.repeat(dicts[:, 0], s4)
    obase = np.concatenate([[0], np.cumsum(s4)[:-1]])
    if lit_w:
        wdest = obase[wstream] + pstart          # output offset of each packet
        lw_, off = np.concatenate(lit_w), np.concatenate(lit_off)
        keep = off < consumed[lw_]               # drop codes past a packet's window
        out[(wdest[lw_] + off)[keep]] = np.concatenate(lit_val)[keep]

    res = []
    for i, it in enumerate(items):
        streams = np.stack([out[obase[4 * i + e]:obase[4 * i + e] + it[2]] for e in range(ENGINES)])
        odd = np.bitwise_xor.reduce(streams[:, 1::2], axis=1)
        even = np.bitwise_xor.reduce(streams[:, 0::2], axis=1)
        h = hdr[4 * i:4 * i + 4]
        if (odd != h[:, 4]).any() or (even != h[:, 5]).any():
            raise ValueError(f"x2 block {it[0].entry}: XOR checksum mismatch (corrupt data)")
        res.append((it[0], streams))
    return res
