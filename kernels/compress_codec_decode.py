"""Decoder of the Atlas-310P weight-compression format: ``decompress_weight``, the exact inverse of
compress_weight.

Speed: every stored packet is decoded on its own (codewords never straddle
packets), all of them in lockstep over codeword slots; then a cheap
per-packet recurrence resolves where each packet starts.

Checks: dtypes (TypeError); compress_info must be [8, 8, k, n, 1]
(flag 1 is the only known traversal order) with k * n < 2**31; index size (checked
before anything of the weight's size is allocated), flag/reserved bits,
block extents within x2, raw-block size, header bytes 0/1, codewords, packet
count, end mark, the header XOR checksums, and zero padding past (n, k) (a nonzero
byte there means compress_info is smaller than the stream's weight) (ValueError
naming the argument).
Trailing bytes after the last block are ignored.  Raw (bypass) blocks carry no
checksum, so corruption inside them cannot be detected.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from .compress_codec_format import (DICT_SIZE, ENGINES, FRAC_K, FRAC_N, HEADER, HEADER_BYTE0, INDEX_UNIT,
                                    MAX_ELEMENTS, TILING, UNIT, WINDOW, _DICT_CODES, _END_BITS, _ONES, _RUN_CODES,
                                    Block, _esc_bits, _fractal_counts, _not_meta, _v, block_count, block_geometry,
                                    nz_fractals_to_nd)

_HEADER_SHARED = np.array([j not in (4, 5) for j in range(40)])  # header bytes all four engines of a block share

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


def _int8_1d(t, name: str) -> np.ndarray:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of dtype torch.int8, got {type(t).__name__}")
    if t.dtype != torch.int8:
        raise TypeError(f"{name} must have dtype torch.int8, got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(t.shape)}")
    _not_meta(t, name)
    return t.detach().cpu().contiguous().numpy().view(np.uint8)


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
