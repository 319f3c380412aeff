"""The Atlas-310P weight-compression format's shared parts (docs/compress_format.md, section numbers below refer
to it): its constants, the prefix codes both directions use (section 4.5), the block geometry and the NZ fractal
layout (section 3), and the dictionary order (Appendix A). The encoder (compress_codec_encode) and the decoder
(compress_codec_decode) build their own lookup tables from the codes here.
"""
from __future__ import annotations

from typing import List, NamedTuple, Sequence, Tuple

import numpy as np
import torch

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


def block_count(k: int, n: int) -> int:
    """Number of blocks (= index entries) of an (n, k) weight, without building them."""
    k1, n1 = _fractal_counts(k, n)
    return -(-k1 // TILING) * -(-n1 // TILING)


def _not_meta(t: torch.Tensor, name: str) -> None:
    if t.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (shape only, no data); the codec reads and writes the bytes on "
                         f"the host: pass a CPU, CUDA or NPU tensor")


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


