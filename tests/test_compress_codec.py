"""Tests for compress_codec (Atlas-310P lossless int8 weight compression).

Spec: docs/compress_format.md.  The official vectors live in VECTOR_DIR.
A slow scalar encoder written straight from the spec (section 4.6 read
literally, bit strings and all) checks the vectorised encoder byte for byte,
independently of the decoder.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas_kernels.compress_codec import (
    block_geometry,
    compress_weight,
    decompress_weight,
    dictionary_order,
    nd_to_nz_fractals,
    nz_fractals_to_nd,
    pseudo_sparsify,
)

VECTOR_DIR = Path(__file__).parent / "data" / "compress"
HYP = settings(max_examples=30, deadline=None,
               suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------
# Helpers written from the spec, independent of the module under test
# ---------------------------------------------------------------------------
def _entries(index: torch.Tensor):
    """Parse the tight index: list of (dataLen bytes, specialFlag, flags, offset bytes)."""
    raw = index.numpy().view(np.uint8).reshape(-1, 8)
    out = []
    for e in raw:
        u16 = int(e[0]) | int(e[1]) << 8
        off = int.from_bytes(bytes(e[4:8]), "little")
        out.append(((u16 & 0x1FF) * 128, u16 >> 15, (u16 >> 9) & 0x3F, off * 128, bytes(e[2:4])))
    return out


def _engines(block: bytes):
    """De-interleave a block's bytes into its 4 engine streams (32-byte units)."""
    units = [block[i:i + 32] for i in range(0, len(block), 32)]
    return [b"".join(units[e::4]) for e in range(4)]


def _spec_blocks(w: np.ndarray):
    """(S-byte block, kw, nw) per block in storage order, straight from spec 2/3."""
    n, k = w.shape
    k1, n1 = -(-k // 32), -(-n // 16)
    wp = np.zeros((16 * n1, 32 * k1), np.uint8)
    wp[:n, :k] = w.view(np.uint8)
    kb_n, nb_n = -(-k1 // 8), -(-n1 // 8)
    out = []
    for nb in range(nb_n):
        ns, nw = (0, n1) if n1 <= 8 else (min(8 * nb, n1 - 8), 8)
        for kb in range(kb_n):
            ks, kw = 8 * kb, min(8, k1 - 8 * kb)
            parts = [wp[16 * b:16 * b + 16, 32 * a:32 * a + 32].tobytes()
                     for a in range(ks, ks + kw) for b in range(ns, ns + nw)]
            out.append((b"".join(parts), kw, nw))
    return out


def _engine_inputs(block: bytes):
    chunks = [block[i:i + 64] for i in range(0, len(block), 64)]
    return [b"".join(chunks[e::4]) for e in range(4)]


_RUNS = {0: [(2, "001"), (1, "000")],
         1: [(9, "101000"), (4, "011"), (3, "010"), (2, "001"), (1, "000")]}
_CODES = {0: ["010", "011", "100"] + [format(v, "06b") for v in range(40, 58)]
          + [format(v, "09b") for v in range(464, 478)],
          1: ["100"] + [format(v, "06b") for v in range(41, 58)]
          + [format(v, "09b") for v in range(464, 479)]}
_END = "111011111"


def _bits_to_bytes(bits: str) -> bytes:
    return bytes(sum(int(bits[j + t]) << t for t in range(8) if j + t < len(bits))
                 for j in range(0, len(bits), 8))


def _ref_engine(stream: bytes, d, mode):
    """Scalar reference encoder for one engine: (packet bytes, branch) or (None, branch)."""
    code = {v: c for v, c in zip(d[1:], _CODES[mode])}
    s4 = len(stream)
    packets, p = [], 0
    while p < s4:
        if 40 + 8 * len(packets) >= s4:
            return None, "bypass"
        w = min(64, s4 - p)
        st_ = {"bits": "", "consumed": 0, "z": 0}

        def emit(c):
            if len(st_["bits"]) + len(c) > 64:
                return False
            st_["bits"] += c
            return True

        def flush():
            while st_["z"]:
                for run, c in _RUNS[mode]:
                    if run > st_["z"]:
                        continue
                    if emit(c):
                        st_["z"] -= run
                        st_["consumed"] += run
                        break
                    if run != 9:
                        return False
                else:
                    return False
            return True

        full = False
        for i in range(w):
            v = stream[p + i]
            if v == d[0]:
                st_["z"] += 1
                if i == w - 1 and not flush():
                    full = True
                    break
                continue
            if st_["z"] and not flush():
                full = True
                break
            if not emit(code.get(v, "1111" + format(v, "08b"))):
                full = True
                break
            st_["consumed"] += 1
        bits = st_["bits"]
        packets.append(bits + "1" * (64 - len(bits)) if full else bits)
        p += st_["consumed"]
    last = packets.pop()
    body = b"".join(_bits_to_bytes(b.ljust(64, "0")) for b in packets)
    if len(last) + 9 <= 64:
        return body + _bits_to_bytes(last + _END), "end-in-packet"
    if 40 + 8 * (len(packets) + 1) < s4:
        return body + _bits_to_bytes(last.ljust(64, "1")) + bytes([0xF7, 0x01]), "end-F701"
    return None, "bypass-end"


def _ref_compress(w: np.ndarray, mode: int, branches=None):
    """Reference (x2, index) bytes for an int8 (n, k) array."""
    x2, index = b"", b""
    for block, kw, nw in _spec_blocks(w):
        s4 = len(block) // 4
        counts = np.bincount(np.frombuffer(block, np.uint8), minlength=256)
        d = dictionary_order(counts)[:36 if mode == 0 else 34]
        ins = _engine_inputs(block)
        res = [_ref_engine(s, d, mode) for s in ins]
        if branches is not None:
            branches.update(r[1] for r in res)
        if any(r[0] is None for r in res):
            streams, flag = ins, 0
        else:
            streams, flag = [], 1
            for s, (body, _) in zip(ins, res):
                hdr = [0xA8 if mode == 0 else 0x88, s4 // 128]
                hdr += [d[0], d[1]] if mode == 0 else [0, 0]
                hdr += [np.bitwise_xor.reduce(np.frombuffer(s[1::2], np.uint8)),
                        np.bitwise_xor.reduce(np.frombuffer(s[0::2], np.uint8))]
                hdr += list(d[2:36]) if mode == 0 else list(d[0:34])
                streams.append(bytes(int(h) for h in hdr) + body)
        length = -(-max(map(len, streams)) // 32) * 32
        streams = [s.ljust(length, b"\0") for s in streams]
        blk = b"".join(streams[e][u:u + 32] for u in range(0, length, 32) for e in range(4))
        u16 = len(blk) // 128 | flag << 15
        index += u16.to_bytes(2, "little") + b"\0\0" + (len(x2) // 128).to_bytes(4, "little")
        x2 += blk
    return x2, index


def _weight(kind: str, n: int, k: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    if kind == "random":
        w = rng.integers(-128, 128, (n, k))
    elif kind == "sparse":
        w = rng.integers(-128, 128, (n, k)) * (rng.random((n, k)) < rng.uniform(0.02, 0.4))
    elif kind == "gauss":
        w = np.clip(np.round(rng.normal(0, rng.uniform(0.3, 25), (n, k))), -128, 127)
    elif kind == "skewed":   # most frequent byte is 5, not 0
        w = np.where(rng.random((n, k)) < rng.uniform(0.6, 0.98), 5,
                     rng.integers(-128, 128, (n, k)))
    else:                    # "tiny": few distinct small values, lots of zeros
        w = np.where(rng.random((n, k)) < 0.9, 0, rng.integers(-3, 4, (n, k)))
    return torch.from_numpy(w.astype(np.int8))


MODE_NAMES = ("low_sparse", "high_sparse")
KINDS = ("random", "sparse", "gauss", "skewed", "tiny")


# ---------------------------------------------------------------------------
# Official vectors
# ---------------------------------------------------------------------------
VECTORS = [
    ("opplugin_k256_n128_weight.bin", None, 128, 256, "low_sparse",
     bytes.fromhex("3380000000000000")),
    ("opsnn_k320_n128_weight.bin", "opsnn_k320_n128_index.bin", 128, 320, "low_sparse", None),
    ("opsnn_fp16_64x64_high_weight.bin", "opsnn_fp16_64x64_high_index.bin", 64, 128,
     "high_sparse", None),
]


@pytest.mark.parametrize("wfile,ifile,n,k,mode,index", VECTORS)
def test_official_vectors(wfile, ifile, n, k, mode, index):
    expected = (VECTOR_DIR / wfile).read_bytes()
    if index is None:
        index = (VECTOR_DIR / ifile).read_bytes()
    if mode == "high_sparse":  # W16A16S: fp16 (64, 64) zeros viewed as int8 (64, 128)
        w = torch.zeros(64, 64, dtype=torch.float16).view(torch.int8)
    else:
        w = torch.zeros(n, k, dtype=torch.int8)
    assert tuple(w.shape) == (n, k)
    x2, idx, info = compress_weight(w, mode=mode)
    assert x2.dtype == torch.int8 and idx.dtype == torch.int8 and info.dtype == torch.int64
    assert x2.numpy().tobytes() == expected
    assert idx.numpy().tobytes() == index
    assert info.tolist() == [8, 8, k, n, 1]
    x2f = torch.from_numpy(np.frombuffer(expected, np.int8).copy())
    idxf = torch.from_numpy(np.frombuffer(index, np.int8).copy())
    out = decompress_weight(x2f, idxf, info)
    assert out.dtype == torch.int8 and tuple(out.shape) == (n, k)
    assert not out.any()


def test_vector_a_structure():
    """Spec 9(a), checked field by field: header, 195 full packets, tail 'bc 0f'."""
    x2, idx, _ = compress_weight(torch.zeros(128, 256, dtype=torch.int8))
    for eng in _engines(x2.numpy().tobytes()):
        assert eng[:40] == bytes.fromhex("a84000af0000a1aeadacabaaa9a8a7a6a5a4a3a2bfb0b1b2"
                                         "b3b4b5b6b7b8b9babbbcbdbec0908182")
        assert eng[40:40 + 195 * 8] == bytes.fromhex("24499224499224c9") * 195
        assert eng[1600:1602] == b"\xbc\x0f" and not any(eng[1602:])
        assert len(eng) == 1632


def test_dictionary_all_zero():
    order = dictionary_order([32768] + [0] * 255)
    assert bytes(order[:36]) == bytes.fromhex(
        "00afa1aeadacabaaa9a8a7a6a5a4a3a2bfb0b1b2b3b4b5b6b7b8b9babbbcbdbec0908182")


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ for std::sort")
def test_dictionary_matches_libstdcxx_sort(tmp_path):
    src = tmp_path / "s.cpp"
    src.write_text(r"""
#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>
int main(){ long c[256]; for(;;){ for(int i=0;i<256;i++) if(scanf("%ld",&c[i])!=1) return 0;
  std::vector<std::pair<int,long>> a; for(int i=0;i<256;i++) a.push_back({i,c[i]});
  std::sort(a.begin(),a.end(),[](const std::pair<int,long>&x,const std::pair<int,long>&y){
    return x.second>y.second;});
  for(auto&p:a) printf("%d ",p.first); printf("\n"); } }
""")
    exe = tmp_path / "s"
    subprocess.run(["g++", "-O1", "-o", str(exe), str(src)], check=True)
    rng = np.random.default_rng(7)
    cases = [rng.integers(0, hi, 256) for hi in (2, 3, 5, 50, 400) for _ in range(40)]
    cases += [np.arange(256), np.arange(256)[::-1], np.arange(256) % 3]
    out = subprocess.run([str(exe)], input="\n".join(" ".join(map(str, c)) for c in cases),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    for c, line in zip(cases, out):
        assert dictionary_order(c) == [int(v) for v in line.split()]


# ---------------------------------------------------------------------------
# Encoder vs. the scalar reference (independent of the decoder)
# ---------------------------------------------------------------------------
@HYP
@given(n=st.integers(1, 150), k=st.integers(1, 64), kind=st.sampled_from(KINDS),
       mode=st.sampled_from((0, 1)), seed=st.integers(0, 2**32 - 1))
def test_encoder_matches_scalar_reference(n, k, kind, mode, seed):
    w = _weight(kind, n, k, seed)
    x2, idx, _ = compress_weight(w, mode=MODE_NAMES[mode])
    rx2, ridx = _ref_compress(w.numpy(), mode)
    assert idx.numpy().tobytes() == ridx
    assert x2.numpy().tobytes() == rx2


def test_end_mark_branches_and_bypass_covered():
    """Over fixed seeds, every end-mark branch and both bypass causes occur, and the
    vectorised encoder agrees with the reference on all of them."""
    seen = set()
    for seed in range(12):
        for mode in (0, 1):
            w = _weight(("sparse", "gauss", "skewed", "tiny")[seed % 4], 64, 64, seed)
            x2, idx, _ = compress_weight(w, mode=MODE_NAMES[mode])
            rx2, ridx = _ref_compress(w.numpy(), mode, seen)
            assert (x2.numpy().tobytes(), idx.numpy().tobytes()) == (rx2, ridx)
    seen_random = set()
    _ref_compress(_weight("random", 128, 256, 1).numpy(), 0, seen_random)
    assert seen_random == {"bypass"}            # uniform bytes: too many packets
    for mode in (0, 1):
        for size in (512, 1024):
            w = _crafted_block(size, mode).reshape(size // 32, 32).view(np.int8)
            _ref_compress(w, mode, seen)
    assert {"end-in-packet", "end-F701", "bypass-end"} <= seen


def _crafted_block(size: int, mode: int) -> np.ndarray:
    """A block (k = 32, so block bytes = W row-major) whose engine 0 ends with a
    non-full 60-bit packet of 5 escapes, so the end mark does not fit in it.

    LOW: engine 0 = zeros then 45 escapes.  With S = 512: 83 zeros go in packets
    of 42 and 41 (+ 1-run), the escapes in 9 packets of 5: 11 packets, the most
    allowed (40 + 8*11 = 128 = S/4), so the block must bypass.  HIGH: 79 zeros
    and 49 escapes (64 zeros, then 15 zeros + 4 escapes, then 9 x 5).  With
    S = 1024 the extra leading zeros leave room: the end mark becomes F7 01.
    """
    s4 = size // 4
    n_esc = 45 if mode == 0 else 49
    eng0 = np.zeros(s4, np.uint8)
    eng0[s4 - n_esc:] = np.arange(36, 36 + n_esc)   # count 1 each: not in the dictionary
    block = np.zeros(size, np.uint8)
    for j in range(s4 // 64):                    # engine 0 = chunks 0, 4, 8, ...
        block[256 * j:256 * j + 64] = eng0[64 * j:64 * j + 64]
    fill = np.repeat(np.arange(1, 36), 2)        # 35 values of count 2 = the dictionary
    block[64:128], block[128:134] = fill[:64], fill[64:]
    return block


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_crafted_end_branches(mode):
    m = MODE_NAMES.index(mode)
    # Bypass forced by the end mark: block stored raw, specialFlag 0.
    blk = _crafted_block(512, m)
    w = torch.from_numpy(blk.reshape(16, 32).view(np.int8))
    x2, idx, info = compress_weight(w, mode=mode)
    (dlen, flag, _, off, _), = _entries(idx)
    assert flag == 0 and dlen == 512 and off == 0
    assert _engines(x2.numpy().tobytes()) == _engine_inputs(blk.tobytes())
    seen = set()
    assert (x2.numpy().tobytes(), idx.numpy().tobytes()) == _ref_compress(w.numpy(), m, seen)
    assert "bypass-end" in seen
    assert torch.equal(decompress_weight(x2, idx, info), w)
    # F7 01 branch: 14 packets, the last one full to 63/60 bits, end mark alone.
    blk = _crafted_block(1024, m)
    w = torch.from_numpy(blk.reshape(32, 32).view(np.int8))
    x2, idx, info = compress_weight(w, mode=mode)
    assert _entries(idx)[0][1] == 1
    eng0 = _engines(x2.numpy().tobytes())[0]
    seen = set()
    _ref_compress(w.numpy(), m, seen)
    assert "end-F701" in seen
    n_pk = (len(eng0.rstrip(b"\0")) - 40 - 2) // 8
    assert eng0[40 + 8 * n_pk:40 + 8 * n_pk + 2] == b"\xf7\x01"
    assert torch.equal(decompress_weight(x2, idx, info), w)


# ---------------------------------------------------------------------------
# Hand-worked packet, header and index fields
# ---------------------------------------------------------------------------
def test_hand_worked_packet_low():
    """One fractal (n=16, k=32); engine 0 = rows 0,1 then rows 8,9 of W.

    Engine 0 input: 5 5 0 0 0 7 then 122 zeros.  Dictionary: 0, 5 (count 3), 7 (count 2).
    Packet 1: 5->010, 5->010, run 3 -> 001 000, 7->011, then 16 two-runs (63 bits)
    before the 17th fails: full, 1 fill bit, 38 bytes consumed.
    """
    w = np.zeros((16, 32), np.int8)
    w[0, :6] = [5, 5, 0, 0, 0, 7]
    w[2, 0], w[2, 2] = 5, 7                     # rows 2..3 = engine 1
    x2, idx, _ = compress_weight(torch.from_numpy(w))
    eng = _engines(x2.numpy().tobytes())
    e0 = eng[0]
    assert e0[0] == 0xA8 and e0[1] == 1         # S/512 = 1
    assert (e0[2], e0[3], e0[6]) == (0, 5, 7)   # dict[0], dict[1], dict[2]
    assert e0[4] == 5 ^ 7 and e0[5] == 5        # XOR of odd / even positions
    assert eng[1][4] == 0 and eng[1][5] == 5 ^ 7   # both at even positions
    word = 2 | 2 << 3 | 4 << 6 | 0 << 9 | 6 << 12
    for i in range(16):
        word |= 4 << (15 + 3 * i)
    word |= 1 << 63
    assert e0[40:48] == word.to_bytes(8, "little")
    # then 42 + 42 zeros in two full packets, 6 zeros = 3 two-runs + end mark (18 bits)
    assert e0[48:64] == bytes.fromhex("24499224499224c9") * 2
    assert e0[64:67] == (4 | 4 << 3 | 4 << 6 | 503 << 9).to_bytes(3, "little")
    assert not any(e0[67:])
    (dlen, flag, flags, off, rsv), = _entries(idx)
    assert (dlen, flag, flags, off, rsv) == (len(x2), 1, 0, 0, b"\0\0")


def test_hand_worked_packet_high():
    """HIGH: a 9-run that no longer fits at bit 60 becomes a 4-run (packet full at 63)."""
    eng0 = np.zeros(128, np.uint8)
    eng0[0:5] = np.arange(36, 41)               # 5 escapes = 60 bits
    w = np.zeros(512, np.uint8)
    w[0:64], w[256:320] = eng0[:64], eng0[64:]
    w[64:134] = np.repeat(np.arange(1, 36), 2)  # dictionary = 0 + values 1..35 (34 kept)
    x2, idx, _ = compress_weight(torch.from_numpy(w.reshape(16, 32).view(np.int8)),
                                 mode="high_sparse")
    e0 = _engines(x2.numpy().tobytes())[0]
    assert e0[0] == 0x88 and e0[1] == 1 and e0[2] == e0[3] == 0 and e0[6] == 0
    word = 0
    for i, v in enumerate(range(36, 41)):
        word |= (0xF | int(format(v, "08b")[::-1], 2) << 4) << (12 * i)
    word |= 6 << 60 | 1 << 63                   # 4-run (011) then one fill bit
    assert e0[40:48] == word.to_bytes(8, "little")


@HYP
@given(n=st.integers(1, 300), k=st.integers(1, 600), kind=st.sampled_from(KINDS),
       mode=st.sampled_from(MODE_NAMES), seed=st.integers(0, 2**32 - 1))
def test_index_and_headers(n, k, kind, mode, seed):
    w = _weight(kind, n, k, seed)
    x2, idx, info = compress_weight(w, mode=mode)
    blocks = _spec_blocks(w.numpy())
    ents = _entries(idx)
    assert len(ents) == len(blocks) == len(block_geometry(k, n))
    pos = 0
    for (dlen, flag, flags, off, rsv), (block, kw, nw), g in zip(ents, blocks, block_geometry(k, n)):
        assert (g.k_width, g.n_width, g.size) == (kw, nw, len(block))
        assert flags == 0 and rsv == b"\0\0" and off == pos and dlen % 128 == 0
        data = x2.numpy().tobytes()[off:off + dlen]
        ins = _engine_inputs(block)
        if flag == 0:
            assert dlen == len(block) and _engines(data) == ins
        else:
            for eng, s in zip(_engines(data), ins):
                assert eng[0] == (0xA8 if mode == "low_sparse" else 0x88)
                assert eng[1] == len(block) // 512
                assert eng[4] == np.bitwise_xor.reduce(np.frombuffer(s[1::2], np.uint8))
                assert eng[5] == np.bitwise_xor.reduce(np.frombuffer(s[0::2], np.uint8))
                if mode == "high_sparse":
                    assert eng[2] == eng[3] == 0
            assert dlen <= len(block)
        pos += dlen
    assert pos == x2.numel()
    assert info.tolist() == [8, 8, k, n, 1]


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------
@HYP
@given(n=st.integers(1, 300), k=st.integers(1, 600), kind=st.sampled_from(KINDS),
       mode=st.sampled_from(MODE_NAMES), seed=st.integers(0, 2**32 - 1))
def test_round_trip(n, k, kind, mode, seed):
    w = _weight(kind, n, k, seed)
    x2, idx, info = compress_weight(w, mode=mode)
    assert torch.equal(decompress_weight(x2, idx, info), w)


@pytest.mark.parametrize("mode", MODE_NAMES)
@pytest.mark.parametrize("n,k", [(200, 300), (136, 257), (1, 1), (15, 31), (17, 33),
                                 (300, 96), (72, 512)])
def test_round_trip_ragged(n, k, mode):
    for kind in KINDS:
        w = _weight(kind, n, k, n * 1000 + k)
        x2, idx, info = compress_weight(w, mode=mode)
        assert torch.equal(decompress_weight(x2, idx, info), w)


def test_block_geometry_overlapping_tail():
    g = block_geometry(300, 200)                # K1 = 10, N1 = 13
    assert [(b.entry, b.kb, b.nb) for b in g] == [(0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 1, 1)]
    assert [(b.k_start, b.k_width) for b in g] == [(0, 8), (8, 2)] * 2
    assert [(b.n_start, b.n_width, b.n_skip) for b in g] == [(0, 8, 0)] * 2 + [(5, 8, 3)] * 2
    assert [b.size for b in g] == [32768, 8192, 32768, 8192]
    g = block_geometry(32, 100)                 # N1 = 7 <= 8: one narrow block
    assert [(b.n_start, b.n_width, b.size) for b in g] == [(0, 7, 3584)]


def test_nz_helpers():
    w = np.arange(50 * 70).reshape(50, 70).astype(np.uint8)
    nz = nd_to_nz_fractals(w)
    assert nz.shape == (3, 4, 16, 32)
    assert nz[2, 1, 3, 5] == w[16 + 3, 64 + 5] and nz[2, 3, 15, 31] == 0
    assert np.array_equal(nz_fractals_to_nd(nz, 50, 70), w)


def test_uniform_block_bypasses():
    w = _weight("random", 128, 256, 3)          # one full 32 KB block
    for mode in MODE_NAMES:
        x2, idx, info = compress_weight(w, mode=mode)
        (dlen, flag, _, _, _), = _entries(idx)
        assert flag == 0 and dlen == 32768 and x2.numel() == 32768
        assert torch.equal(decompress_weight(x2, idx, info), w)


def test_escapes_round_trip():
    """Mostly zeros plus 100 distinct-ish values: many bytes outside the dictionary."""
    rng = np.random.default_rng(5)
    w = np.zeros((128, 256), np.int8)
    pos = rng.choice(w.size, 3000, replace=False)
    w.reshape(-1)[pos] = rng.integers(-128, 128, pos.size)
    wt = torch.from_numpy(w)
    for mode in MODE_NAMES:
        x2, idx, info = compress_weight(wt, mode=mode)
        assert _entries(idx)[0][1] == 1
        eng = _engines(x2.numpy().tobytes())[0]
        nd = 36 if mode == "low_sparse" else 34
        used = set(np.unique(w.view(np.uint8)).tolist())
        assert len(used) > nd                   # so escapes are needed
        assert torch.equal(decompress_weight(x2, idx, info), wt)
        assert eng[0] in (0xA8, 0x88)


# ---------------------------------------------------------------------------
# Pseudo-sparsity
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("sp", [0.1, 0.5, 0.7, 0.9])
def test_pseudo_sparsity(sp):
    g = torch.Generator().manual_seed(11)
    w = torch.round(torch.randn(256, 512, generator=g) * 20).clamp(-128, 127).to(torch.int8)
    x2_0, idx_0, _ = compress_weight(w)
    x2, idx, info = compress_weight(w, sparsity=sp)
    out = decompress_weight(x2, idx, info)
    assert float((out == 0).float().mean()) >= sp
    assert torch.equal(out, pseudo_sparsify(w, sp))
    kept = out != 0
    assert torch.equal(out[kept], w[kept])      # only zeroing, never changing values
    thr = w[~kept].abs().max()
    assert (w[kept].to(torch.int16).abs() >= thr).all()
    size, size_0 = x2.numel() + idx.numel(), x2_0.numel() + idx_0.numel()
    assert size < size_0 if sp >= 0.5 else size <= size_0


def test_pseudo_sparsity_ties_deterministic():
    w = torch.ones(4, 8, dtype=torch.int8)
    w[0, 0] = -128
    out = pseudo_sparsify(w, 0.5)               # 16 zeros; ties -> lower row-major index first
    expected = torch.ones(4, 8, dtype=torch.int8)
    expected.view(-1)[1:17] = 0                 # |-128| = 128 is the largest: kept
    expected[0, 0] = -128
    assert torch.equal(out, expected) and int((out == 0).sum()) == 16
    assert torch.equal(out, pseudo_sparsify(w, 0.5))
    with pytest.raises(ValueError, match="sparsity"):
        compress_weight(w, sparsity=1.0)
    with pytest.raises(ValueError, match="sparsity"):
        compress_weight(w, sparsity=-0.1)


# ---------------------------------------------------------------------------
# Corrupt input
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def packed():
    w = _weight("sparse", 200, 300, 9)          # 4 blocks incl. k-tail and n-overlap
    x2, idx, info = compress_weight(w)
    assert all(e[1] == 1 for e in _entries(idx))
    return w, x2, idx, info


def _set_entry(idx, e, dlen_units=None, off_units=None, u16=None):
    raw = idx.numpy().view(np.uint8).copy().reshape(-1, 8)
    if u16 is not None:
        raw[e, 0:2] = np.frombuffer(int(u16).to_bytes(2, "little"), np.uint8)
    if dlen_units is not None:
        v = (int(raw[e, 0]) | int(raw[e, 1]) << 8) & ~0x1FF | dlen_units
        raw[e, 0:2] = np.frombuffer(v.to_bytes(2, "little"), np.uint8)
    if off_units is not None:
        raw[e, 4:8] = np.frombuffer(int(off_units).to_bytes(4, "little"), np.uint8)
    return torch.from_numpy(raw.reshape(-1).view(np.int8))


def test_corrupt_truncated_x2(packed):
    _, x2, idx, info = packed
    with pytest.raises(ValueError, match="x2"):
        decompress_weight(x2[:-128], idx, info)
    with pytest.raises(ValueError, match="x2"):
        decompress_weight(x2[:0], idx, info)


def test_corrupt_index_past_end(packed):
    _, x2, idx, info = packed
    with pytest.raises(ValueError, match="compress_index"):
        decompress_weight(x2, _set_entry(idx, 1, off_units=x2.numel() // 128), info)
    with pytest.raises(ValueError, match="compress_index"):
        decompress_weight(x2, _set_entry(idx, 3, dlen_units=511), info)
    with pytest.raises(ValueError, match="compress_index"):
        decompress_weight(x2, _set_entry(idx, 0, dlen_units=0), info)
    with pytest.raises(ValueError, match="compress_index"):
        decompress_weight(x2, _set_entry(idx, 0, u16=0x8000 | 0x0200 | 5), info)


def test_corrupt_index_count(packed):
    _, x2, idx, info = packed
    with pytest.raises(ValueError, match="compress_index"):
        decompress_weight(x2, idx[:-8], info)
    with pytest.raises(ValueError, match="compress_info"):
        decompress_weight(x2, idx, torch.tensor([8, 8, 300, 100, 1]))


def test_corrupt_headers(packed):
    _, x2, idx, info = packed
    bad = x2.clone()
    bad[0] = 0
    with pytest.raises(ValueError, match="header byte 0"):
        decompress_weight(bad, idx, info)
    bad = x2.clone()
    bad[32 + 1] ^= 1                            # engine 1, header byte 1
    with pytest.raises(ValueError, match="header byte 1"):
        decompress_weight(bad, idx, info)
    bad = x2.clone()
    bad[4] ^= 0x10                              # checksum byte
    with pytest.raises(ValueError, match="x2"):
        decompress_weight(bad, idx, info)


def test_corrupt_short_block():
    x2, idx, info = compress_weight(torch.zeros(128, 256, dtype=torch.int8))
    with pytest.raises(ValueError, match="x2"):   # loses the last packet of every engine
        decompress_weight(x2[:-128], _set_entry(idx, 0, dlen_units=50), info)


@pytest.mark.parametrize("info", [[8, 8, 300], [8, 4, 300, 200, 1], [16, 8, 300, 200, 1],
                                  [8, 8, 0, 200, 1], [8, 8, 300, -1, 1], [8, 8, 300, 200, 0]])
def test_corrupt_info(packed, info):
    _, x2, idx, _ = packed
    with pytest.raises(ValueError, match="compress_info"):
        decompress_weight(x2, idx, torch.tensor(info, dtype=torch.int64))


def test_wrong_dtypes(packed):
    w, x2, idx, info = packed
    with pytest.raises(TypeError, match="x2"):
        decompress_weight(x2.to(torch.uint8), idx, info)
    with pytest.raises(TypeError, match="compress_index"):
        decompress_weight(x2, idx.to(torch.int32), info)
    with pytest.raises(TypeError, match="compress_info"):
        decompress_weight(x2, idx, info.to(torch.float32))
    with pytest.raises(TypeError, match="x2"):
        decompress_weight(x2.numpy(), idx, info)
    with pytest.raises(TypeError, match="weight"):
        compress_weight(w.to(torch.int16))
    with pytest.raises(ValueError, match="mode"):
        compress_weight(w, mode="medium")
