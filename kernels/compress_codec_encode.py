"""Encoder of the Atlas-310P weight-compression format: ``compress_weight`` and ``pseudo_sparsify``.

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
64-bit packet per step, with numpy over (streams, 64-byte window) arrays.

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
from typing import List, Tuple

import numpy as np
import torch

from .compress_codec_format import (DICT_SIZE, ENGINES, HEADER, HEADER_BYTE0, INDEX_UNIT, MODES, TILING, UNIT, WINDOW,
                                    _DICT_CODES, _END_V, _ONES, _RUN_CODES, _esc_bits, _not_meta, _v, block_geometry,
                                    dictionary_order, nd_to_nz_fractals)

_MAX_BLOCKS_PER_CHUNK = 512   # bounds encoder memory (~17 MB of packets per chunk)

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


def _parse_mode(mode: str) -> int:
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise ValueError(f"mode must be 'low_sparse' or 'high_sparse', got {mode!r}")
    return MODES[mode.lower()]



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


