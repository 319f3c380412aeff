"""NSA compression (torch_npu.npu_nsa_compress and npu_nsa_compress_grad), forward and deterministic backward.

out[c, n, :] = sum_{j<l} weight[j, n] * input[start_b + i*d + j, n, :] over the windows of packed
variable-length sequences (docs/ops.md §3). Variable length goes through a flat work list built
on the host from actual_seq_len (host data, no device sync): one item per block of consecutive
windows of one sequence. A program reads the item's token span once, in chunks of CHUNK tokens
(CHUNK divides l and d), and keeps the windows that overlap the current chunk in SLOTS register
accumulators (window c lives in slot c % SLOTS), so overlapping windows (l > d) never re-read memory.

Backward without atomics: each item owns the tokens [c0*d, (c0+W)*d) of its sequence (the last one
up to the sequence end) and gathers dinput for them from the grad rows of every window covering
them; dweight partials go to a workspace [items, D blocks, l, N] (one slot per tile, so the result
does not depend on the grid) and a second kernel sums them in a fixed order. Two runs are bitwise equal.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import triton
import triton.language as tl

from . import _backend
from ._validate import call_op, check_common, check_tensor, int_arg
from .autotune import KernelSpec, Target, Variant, pick_config, register_kernel, split_config
from .reference import nsa_compress as ref

OP = "nsa_compress"
GRAD_OP = "nsa_compress_grad"
DTYPES = (torch.float16, torch.bfloat16)
MAX_BLOCK = 256          # l limit (CANN: 128); register/UB use grows with l/d
MAX_CHUNK = 32           # tokens per chunk load: larger chunks only add registers
ITEM_COLS = 8            # work list row: see _work_list


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, out_ptr, work_ptr, n_items, N, D, l, d, stride_xt, stride_xn,
                CHUNK: tl.constexpr, SLOTS: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[T', N, D] (contiguous) from x[T, N, D] (D contiguous) and w[l, N] (contiguous).

    One tile = (work item, head, D block). Window c covers chunks c*b .. c*b + a - 1 and accumulates
    in row c % SLOTS of acc [SLOTS, BLOCK_D].
    """
    pid = tl.program_id(0)
    a = l // CHUNK
    b = d // CHUNK
    n_db = tl.cdiv(D, BLOCK_D)
    rows = tl.arange(0, CHUNK)
    # a full-shape slot index: masks built from it need no broadcast (Ascend: a [SLOTS, 1] mask
    # broadcast along D makes bishengir pad every element to 32 bytes)
    slot = tl.arange(0, SLOTS)[:, None] + 0 * tl.arange(0, BLOCK_D)[None, :]
    col = 0 * rows[:, None] + tl.arange(0, BLOCK_D)[None, :]  # [CHUNK, BLOCK_D], full-shape as well
    for tile in range(pid, n_items * N * n_db, tl.num_programs(0)):
        item = tile // (N * n_db)
        n = (tile // n_db) % N
        d0 = (tile % n_db) * BLOCK_D
        cols = d0 + tl.arange(0, BLOCK_D)
        row = work_ptr + item * 8
        ts = tl.load(row)
        o_seq = tl.load(row + 1)
        c_lo = tl.load(row + 2)
        c_hi = tl.load(row + 3)
        k_lo = c_lo * b
        k_hi = tl.where(c_hi > c_lo, (c_hi - 1) * b + a, k_lo)
        x_tile = x_ptr + n * stride_xn + d0 + rows[:, None] * stride_xt + col  # int32 offsets inside a chunk
        acc = tl.zeros((SLOTS, BLOCK_D), dtype=tl.float32)
        for k in range(k_lo, k_hi):
            x = tl.load(x_tile + (ts + k * CHUNK).to(tl.int64) * stride_xt, mask=col < D - d0, other=0.0)
            x = x.to(tl.float32)
            c_new = tl.minimum(k // b, c_hi - 1)  # the newest window that covers chunk k
            for s in tl.static_range(SLOTS):
                c = c_new - (c_new - s + SLOTS) % SLOTS  # the window in slot s
                phase = k - c * b  # chunk index inside that window
                if (c >= c_lo) & (phase < a):
                    wk = tl.load(w_ptr + (phase * CHUNK + rows) * N + n).to(tl.float32)
                    acc += tl.where(slot == s, tl.sum(wk[:, None] * x, axis=0)[None, :], 0.0)
            r = k - a + 1
            ends = (r >= 0) & (r % b == 0) & (r // b >= c_lo)  # window r / b ends with this chunk
            done = (slot == (r // b) % SLOTS) & ends
            if ends:
                dst = out_ptr + ((o_seq + r // b).to(tl.int64) * N + n) * D + cols
                tl.store(dst, tl.sum(tl.where(done, acc, 0.0), axis=0).to(out_ptr.dtype.element_ty), mask=cols < D)
            # the reset stays outside the branch: bishengir 1.2's PlanMemory gives the buffer of an accumulator
            # reassigned under an scf.if to the next iteration's first temporary (docs/ascend_planmemory_bug.md)
            acc = tl.where(done, 0.0, acc)


@triton.jit
def _bwd_kernel(x_ptr, w_ptr, g_ptr, dx_ptr, ws_ptr, work_ptr, n_items, N, D, l, d,
                stride_xt, stride_xn, stride_gt, stride_gn,
                CHUNK: tl.constexpr, SLOTS: tl.constexpr, PHASES: tl.constexpr, BLOCK_D: tl.constexpr):
    """dx[T, N, D] (contiguous) for the item's own tokens and ws[item, D block, l, N] fp32 partials of dweight.

    x and g have a contiguous D. The grad row of window c sits in row c % SLOTS of gslot [SLOTS, BLOCK_D]
    while the window is live; dweight contributions are binned by chunk phase in dw [PHASES, CHUNK].
    """
    pid = tl.program_id(0)
    a = l // CHUNK
    b = d // CHUNK
    n_db = tl.cdiv(D, BLOCK_D)
    rows = tl.arange(0, CHUNK)
    slot = tl.arange(0, SLOTS)[:, None] + 0 * tl.arange(0, BLOCK_D)[None, :]  # full-shape: see _fwd_kernel
    col = 0 * rows[:, None] + tl.arange(0, BLOCK_D)[None, :]
    tok = rows[:, None] + 0 * col
    j = tl.arange(0, PHASES)[:, None] * CHUNK + rows[None, :]  # position in the window of each dw entry
    for tile in range(pid, n_items * N * n_db, tl.num_programs(0)):
        item = tile // (N * n_db)
        n = (tile // n_db) % N
        dblk = tile % n_db
        d0 = dblk * BLOCK_D
        cols = d0 + tl.arange(0, BLOCK_D)
        row = work_ptr + item * 8
        ts = tl.load(row)
        o_seq = tl.load(row + 1)
        c_lo = tl.load(row + 4)
        c_hi = tl.load(row + 5)
        p_lo = tl.load(row + 6)  # a multiple of d, hence of CHUNK
        p_hi = tl.load(row + 7)
        x_tile = x_ptr + n * stride_xn + d0 + tok * stride_xt + col
        dx_tile = dx_ptr + n * D + d0 + tok * (N * D) + col
        g_row = g_ptr + n * stride_gn + cols
        gslot = tl.zeros((SLOTS, BLOCK_D), dtype=tl.float32)
        dw = tl.zeros((PHASES, CHUNK), dtype=tl.float32)
        for c in range(c_lo, tl.minimum(p_lo // d, c_hi)):  # windows that start before the owned tokens
            g = tl.load(g_row + (o_seq + c).to(tl.int64) * stride_gt, mask=cols < D, other=0.0).to(tl.float32)
            gslot = tl.where(slot == c % SLOTS, g[None, :], gslot)
        for k in range(p_lo // CHUNK, tl.cdiv(p_hi, CHUNK)):
            starts = (k % b == 0) & (k // b < c_hi)  # window k / b starts here
            g_new = tl.load(g_row + (o_seq + k // b).to(tl.int64) * stride_gt, mask=cols < tl.where(starts, D, 0),
                            other=0.0).to(tl.float32)
            # unconditional, as the forward's reset (see there)
            gslot = tl.where((slot == (k // b) % SLOTS) & starts, g_new[None, :], gslot)
            t0 = (ts + k * CHUNK).to(tl.int64)
            own = (tok < p_hi - k * CHUNK) & (col < D - d0)
            x = tl.load(x_tile + t0 * stride_xt, mask=own, other=0.0).to(tl.float32)
            dx = tl.zeros((CHUNK, BLOCK_D), dtype=tl.float32)
            c_new = tl.minimum(k // b, c_hi - 1)
            for s in tl.static_range(SLOTS):
                c = c_new - (c_new - s + SLOTS) % SLOTS
                phase = k - c * b
                live = (c >= c_lo) & (phase < a)
                g = tl.sum(tl.where(slot == s, gslot, 0.0), axis=0)
                if live:
                    wk = tl.load(w_ptr + (phase * CHUNK + rows) * N + n).to(tl.float32)
                    dx += wk[:, None] * g[None, :]
                v = tl.sum(x * g[None, :], axis=1)
                # dw is carried across k: updated outside the branch, as the forward's reset (see there)
                dw += tl.where(live & (j >= phase * CHUNK) & (j < phase * CHUNK + CHUNK), v[None, :], 0.0)
            tl.store(dx_tile + t0 * (N * D), dx.to(dx_ptr.dtype.element_ty), mask=own)
        tl.store(ws_ptr + ((item * n_db + dblk) * l + j) * N + n, dw, mask=j < l)


@triton.jit
def _dw_reduce_kernel(ws_ptr, dw_ptr, R, C, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    """dw[C] = sum over the R rows of ws[R, C] (fp32), always in the same order."""
    pid = tl.program_id(0)
    for tile in range(pid, tl.cdiv(C, BLOCK_C), tl.num_programs(0)):
        cols = tile * BLOCK_C + tl.arange(0, BLOCK_C)
        acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
        for r0 in range(0, R, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            acc += tl.load(ws_ptr + r.to(tl.int64)[:, None] * C + cols[None, :],
                           mask=(r < R)[:, None] & (cols < C)[None, :], other=0.0)
        tl.store(dw_ptr + cols, tl.sum(acc, axis=0).to(dw_ptr.dtype.element_ty), mask=cols < C)


# ---------------------------------------------------------------- geometry and config spaces
_TY = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def geometry(block: int, stride: int) -> dict:
    """Constexprs for (l, d): CHUNK (power of two dividing both), SLOTS (live windows), PHASES (chunks per window)."""
    g = math.gcd(block, stride)
    chunk = min(g & -g, MAX_CHUNK)
    a, b = block // chunk, stride // chunk
    return {"CHUNK": chunk, "SLOTS": triton.next_power_of_2(-(-a // b)), "PHASES": triton.next_power_of_2(a)}


def _variant(kind: str, dtype: str, geo: dict) -> Variant:
    label = f"{dtype}-c{geo['CHUNK']}s{geo['SLOTS']}p{geo['PHASES']}"
    common = {"work_ptr": "*i32", "n_items": "i32", "N": "i32", "D": "i32", "l": "i32", "d": "i32",
              "stride_xt": "i32", "stride_xn": "i32"}
    if kind == "fwd":
        types = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", **common}
        return Variant(label, types, {"CHUNK": geo["CHUNK"], "SLOTS": geo["SLOTS"]})
    types = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "g_ptr": f"*{dtype}", "dx_ptr": f"*{dtype}",
             "ws_ptr": "*fp32", **common, "stride_gt": "i32", "stride_gn": "i32"}
    return Variant(label, types, dict(geo))


# Checked geometries: the benchmark's (32, 16) and (64, 32), the widest overlap (128, 16), l == d (128, 128).
_CHECKED = [geometry(32, 16), geometry(64, 32), geometry(128, 16), geometry(128, 128)]


# UB bytes per column of BLOCK_D that bishengir plans with multi-buffering on (Ascend910B2), keyed by the
# kernel's geometry constexprs (CHUNK, SLOTS[, PHASES]; the forward has no PHASES), measured at the
# Ascend default (128 columns; the backward at 64 where 128 is predicted not to fit). Not linear in
# BLOCK_D: fwd c16s2 plans 21/37/68/130 KB at 32/64/128/256 columns, fwd c16s8 85/150/86/163 KB,
# bwd c32s2 overflows at 32 columns and fits at 64 (119 KB) and 128 (155 KB); a smaller tile costs
# more per column. The stored compiler verdicts have the last word on the space.
_UB_PER_COL = {
    ("fwd", 16, 1): 288, ("fwd", 32, 1): 560, ("fwd", 16, 2): 528, ("fwd", 32, 2): 944,
    ("fwd", 16, 4): 997, ("fwd", 32, 4): 698, ("fwd", 16, 8): 670, ("fwd", 32, 8): 995,
    ("bwd", 16, 1, 1): 485, ("bwd", 16, 1, 4): 654, ("bwd", 16, 1, 8): 847, ("bwd", 16, 1, 16): 1233,
    ("bwd", 32, 1, 1): 949, ("bwd", 32, 1, 2): 1094, ("bwd", 32, 1, 4): 1286, ("bwd", 32, 1, 8): 2426,
    ("bwd", 16, 2, 2): 880, ("bwd", 16, 2, 4): 1006, ("bwd", 16, 2, 8): 1263, ("bwd", 16, 2, 16): 1221,
    ("bwd", 32, 2, 2): 1214, ("bwd", 32, 2, 4): 2371, ("bwd", 32, 2, 8): 2430,
    ("bwd", 16, 4, 4): 923, ("bwd", 16, 4, 8): 1080, ("bwd", 16, 4, 16): 2459,
    ("bwd", 32, 4, 4): 2148, ("bwd", 32, 4, 8): 3039, ("bwd", 16, 8, 8): 1522, ("bwd", 16, 8, 16): 2989,
    ("fwd", 16, 16): 1525, ("bwd", 32, 8, 8): 11848,  # l > 128: bwd c32s8p8 plans 534 KB at 32 columns
}
# not measured: bwd c16s16p16 (l >= 144, d = 16; bishengir ran > 4 min at 16 columns)
_UB_PER_COL_UNKNOWN = {"fwd": 1600, "bwd": 16384}


def _ub_bytes(kind: str, variant: Variant, block_d: int) -> int:
    """Planned UB bytes of one tile on Ascend, from the measured rate of this geometry."""
    return _UB_PER_COL.get((kind, *variant.constexprs.values()), _UB_PER_COL_UNKNOWN[kind]) * block_d


def _tile_bytes(kind: str, variant: Variant, block_d: int) -> int:
    """fp32 bytes of one chunk step's values (the CUDA register model): products SLOTS x CHUNK x BLOCK_D and more."""
    c = variant.constexprs
    chunk, slots = c["CHUNK"], c["SLOTS"]
    per = slots * chunk * block_d * 4 + chunk * block_d * (2 + 4) + slots * block_d * 4 + slots * chunk * 12
    if kind == "bwd":
        per += chunk * block_d * 4 + c["PHASES"] * chunk * 4 + slots * c["PHASES"] * chunk * 4
    return per


def _space(kind: str):
    def space(target: Target, variant: Variant) -> list:
        configs = []
        for block_d in (16, 32, 64, 128, 256):
            for windows in (16, 32, 64):
                if target.is_ascend:
                    if _ub_bytes(kind, variant, block_d) <= target.ub_bytes:
                        configs.append({"BLOCK_D": block_d, "WINDOWS": windows})
                    continue
                per = _tile_bytes(kind, variant, block_d)
                for warps in (2, 4, 8):
                    # fp32 values per thread in one chunk step; above ~128 the shipped configs spill
                    if per // 4 // (32 * warps) <= 128 and block_d * 4 >= 32 * warps // 8:
                        configs.append({"BLOCK_D": block_d, "WINDOWS": windows, "num_warps": warps})
        return configs
    return space


def _default(kind: str):
    def default(target: Target, variant: Variant) -> dict:
        if target.backend == "cpu":  # interpreter: whole rows of D, long spans (few numpy round trips)
            return {"BLOCK_D": 128, "WINDOWS": 64}
        space = _space(kind)(target, variant)
        if target.is_ascend:
            # the widest D block up to a whole D = 128 row that fits (256 columns would halve the tiles
            # per core at D = 128); 32 windows keep the span overlap at (l-d)/(32 d)
            fits = [c for c in space if c["WINDOWS"] == 32 and c["BLOCK_D"] <= 128]
            return max(fits, key=lambda c: c["BLOCK_D"]) if fits else {"BLOCK_D": 16, "WINDOWS": 32}
        # fp32 values per thread per chunk step, by the cuda check: the forward spilled at 96 (sm_80,
        # 4 warps); the backward spilled at 4 warps on sm_90 from 75 on (c16s2p2, 128 columns), so it
        # takes the most warps and the forward the fewest
        limit = 64 if kind == "fwd" else 128
        fits = [c for c in space if c["WINDOWS"] == 32 and c["BLOCK_D"] <= 128
                and _tile_bytes(kind, variant, c["BLOCK_D"]) // 4 // (32 * c["num_warps"]) <= limit]
        return max(fits, key=lambda c: (c["BLOCK_D"], c["num_warps"] * (1 if kind == "bwd" else -1)))
    return default


def _reduce_space(target: Target, variant: Variant) -> list:
    configs = []
    for br in (4, 8, 16, 32):
        for bc in (64, 128, 256, 512, 1024):
            if target.is_ascend:
                if 2 * br * bc * 4 * 2 <= target.ub_bytes:
                    configs.append({"BLOCK_R": br, "BLOCK_C": bc})
            elif br * bc // 128 <= 64:
                configs.append({"BLOCK_R": br, "BLOCK_C": bc, "num_warps": 4})
    return configs


def _reduce_default(target: Target, variant: Variant) -> dict:
    if target.backend == "cpu":
        return {"BLOCK_R": 32, "BLOCK_C": 1024}
    if target.is_ascend:  # the largest tile that fits the UB, widest along the contiguous dim
        return max(_reduce_space(target, variant), key=lambda c: (c["BLOCK_R"] * c["BLOCK_C"], c["BLOCK_C"]))
    return {"BLOCK_R": 8, "BLOCK_C": 256, "num_warps": 4}


FWD = register_kernel(KernelSpec("nsa_compress.fwd", _fwd_kernel,
                                 [_variant("fwd", t, g) for t in _TY.values() for g in _CHECKED],
                                 _space("fwd"), _default("fwd")))
BWD = register_kernel(KernelSpec("nsa_compress.bwd", _bwd_kernel,
                                 [_variant("bwd", t, g) for t in _TY.values() for g in _CHECKED],
                                 _space("bwd"), _default("bwd")))
DW_REDUCE = register_kernel(KernelSpec(
    "nsa_compress.dw_reduce", _dw_reduce_kernel,
    [Variant(t, {"ws_ptr": "*fp32", "dw_ptr": f"*{t}", "R": "i32", "C": "i32"}) for t in _TY.values()],
    _reduce_space, _reduce_default))


def _pick(spec: KernelSpec, target: Target, kind: str, dtype: torch.dtype, geo: dict, shape: dict) -> tuple:
    """(constexprs, launch options, windows per item) for this geometry at ``shape`` ({"T", "N", "D"}).

    Geometries outside the checked list join the spec's variants on first use, so they get the
    same derived default (and override_config works for them).
    """
    variant = _variant(kind, _TY[dtype], geo)
    if all(v.label != variant.label for v in spec.variants):
        spec.variants.append(variant)
    meta, opts = split_config(pick_config(spec.name, target, variant.label, **shape))
    meta = dict(meta)
    windows = meta.pop("WINDOWS")
    return meta, opts, windows


# ---------------------------------------------------------------- host work list
@functools.lru_cache(maxsize=64)
def _work_rows(ends: tuple, block: int, stride: int, windows: int) -> tuple:
    """Work items, one per block of `windows` consecutive windows of one sequence (host only).

    Row: (token start of the sequence, output row of its window 0,
          forward windows [c0, c1), windows touching the owned tokens [bw_lo, bw_hi),
          owned tokens [p_lo, p_hi) relative to the sequence start; the last block owns up to the end).
    A sequence without windows gets one item that only writes dinput zeros.
    """
    rows, out_row = [], 0
    for start, length in ref.sequence_bounds(ends):
        nwin = ref.num_windows(length, block, stride)
        for c0 in range(0, max(nwin, 1) if length else 0, windows):
            c1 = min(c0 + windows, nwin)
            p_lo = c0 * stride
            p_hi = length if c0 + windows >= nwin else (c0 + windows) * stride
            bw_lo = max(0, (p_lo - block) // stride + 1)
            bw_hi = min(nwin, -(-p_hi // stride))
            rows.append((start, out_row, c0, c1, bw_lo, bw_hi, p_lo, p_hi))
        out_row += nwin
    return tuple(rows), out_row


def _work_list(ends: tuple, block: int, stride: int, windows: int, device: torch.device) -> torch.Tensor:
    rows, _ = _work_rows(ends, block, stride, windows)
    table = torch.tensor(rows, dtype=torch.int32).reshape(-1, ITEM_COLS)
    if device.type == "cpu":
        return table
    if device.type == "cuda":
        table = table.pin_memory()
    return table.to(device, non_blocking=True)


# ---------------------------------------------------------------- validation
def _seq_ends(op: str, actual_seq_len) -> list:
    """actual_seq_len as a list of Python ints (host data: list or tuple of ints, 1-D integer numpy array or
    CPU tensor, as torch_npu's int[] takes them)."""
    if isinstance(actual_seq_len, np.ndarray):
        if actual_seq_len.ndim != 1 or actual_seq_len.dtype.kind not in "iu":
            raise TypeError(f"{op}: actual_seq_len must be a 1-D integer array, got {actual_seq_len.dtype} "
                            f"with shape {actual_seq_len.shape}")
        return [int(v) for v in actual_seq_len.tolist()]
    if actual_seq_len is None:
        raise ValueError(f"{op}: actual_seq_len is required (inclusive prefix sums of the sequence lengths)")
    if isinstance(actual_seq_len, torch.Tensor):
        if actual_seq_len.device.type != "cpu":
            raise TypeError(f"{op}: actual_seq_len must be host data (list, tuple or CPU tensor), got a tensor on "
                            f"{actual_seq_len.device}; reading it would sync the device")
        if actual_seq_len.dtype.is_floating_point or actual_seq_len.dim() != 1:
            raise TypeError(f"{op}: actual_seq_len must be a 1-D integer tensor, got {actual_seq_len.dtype} "
                            f"with shape {tuple(actual_seq_len.shape)}")
        return [int(v) for v in actual_seq_len.tolist()]
    if not isinstance(actual_seq_len, (list, tuple)) or not all(_is_int(v) for v in actual_seq_len):
        raise TypeError(f"{op}: actual_seq_len must be a list or tuple of ints, got {actual_seq_len!r}")
    return [int(v) for v in actual_seq_len]


def _is_int(v) -> bool:
    """A Python or numpy integer (torch_npu's int takes both), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_ints(op: str, block, stride) -> tuple:
    """(block, stride) as Python ints (torch_npu's int: a Python or numpy integer or a 0-d integer tensor)."""
    return int_arg(op, "compress_block_size", block), int_arg(op, "compress_stride", stride)


def _check(op: str, input, weight, block, stride, ends, grad=None) -> int:
    """Validate the arguments; return T' (number of windows)."""
    check_tensor(op, "input", input, dtypes=DTYPES, ndim=3)
    check_tensor(op, "weight", weight, dtypes=DTYPES, ndim=2)
    check_common(op, {"grad": grad, "input": input, "weight": weight})
    if weight.dtype != input.dtype:
        raise TypeError(f"{op}: weight must have the dtype of input ({str(input.dtype)[6:]}), "
                        f"got {str(weight.dtype)[6:]}")
    _check_ints(op, block, stride)
    for name, v in (("compress_block_size", block), ("compress_stride", stride)):
        if v < 16 or v % 16:
            raise ValueError(f"{op}: {name} must be a positive multiple of 16 (the kernel reads 16-token chunks), "
                             f"got {v}")
    if block > MAX_BLOCK:
        raise ValueError(f"{op}: compress_block_size must be <= {MAX_BLOCK}, got {block}")
    if stride > block:
        raise ValueError(f"{op}: compress_stride ({stride}) must not exceed compress_block_size ({block})")
    T, N, D = input.shape
    if N < 1 or D < 1:
        raise ValueError(f"{op}: input must have N >= 1 heads and D >= 1, got shape {tuple(input.shape)}")
    if tuple(weight.shape) != (block, N):
        raise ValueError(f"{op}: weight must have shape (compress_block_size, N) = ({block}, {N}), "
                         f"got {tuple(weight.shape)}")
    if not ends:
        raise ValueError(f"{op}: actual_seq_len must not be empty")
    prev = 0
    for i, e in enumerate(ends):
        if e < prev:
            raise ValueError(f"{op}: actual_seq_len must be non-decreasing and >= 0 (prefix sums); "
                             f"actual_seq_len[{i}] = {e} < {prev}")
        prev = e
    if ends[-1] != T:
        raise ValueError(f"{op}: actual_seq_len must end at T = input.shape[0] = {T}, got {ends[-1]}")
    n_out = sum(ref.num_windows(length, block, stride) for _, length in ref.sequence_bounds(ends))
    if grad is not None:
        check_tensor(op, "grad", grad, dtypes=DTYPES, ndim=3)
        if grad.dtype != input.dtype:
            raise TypeError(f"{op}: grad must have the dtype of input ({str(input.dtype)[6:]}), "
                            f"got {str(grad.dtype)[6:]}")
        if tuple(grad.shape) != (n_out, N, D):
            raise ValueError(f"{op}: grad must have shape (T', N, D) = ({n_out}, {N}, {D}), got {tuple(grad.shape)}")
    return n_out


# ---------------------------------------------------------------- ops
def _unit_last(t: torch.Tensor) -> torch.Tensor:
    """t itself when its last dim is contiguous (any T and N strides), else a contiguous copy.

    The kernels take D-stride 1 as given: a runtime D stride makes bishengir pad every element of
    a tile to 32 bytes, which overflows the UB at useful tile sizes.
    """
    return t if t.stride(-1) == 1 or t.shape[-1] == 1 else t.contiguous()


def _grid(n_tiles: int, target: Target) -> tuple:
    if target.is_ascend or target.backend == "cpu":
        return _backend.persistent_grid(n_tiles, target)
    # CUDA: a chunk loop is a chain of dependent loads; several programs per SM hide its latency
    return (max(1, min(n_tiles, 8 * target.programs(False))),)


@torch.library.custom_op("atlas::nsa_compress", mutates_args=())
def _fwd_op(input: torch.Tensor, weight: torch.Tensor, compress_block_size: int, compress_stride: int,
            actual_seq_len: list[int]) -> torch.Tensor:
    n_out = _check(OP, input, weight, compress_block_size, compress_stride, actual_seq_len)
    device = _backend.device_of(OP, input=input, weight=weight)
    if not _backend.use_kernel(OP, device):
        return ref.nsa_compress(input, weight, compress_block_size, compress_stride, actual_seq_len)
    T, N, D = input.shape
    out = torch.empty((n_out, N, D), dtype=input.dtype, device=device)
    if n_out == 0:
        return out
    target = _backend.target_for(device)
    geo = geometry(compress_block_size, compress_stride)
    meta, opts, windows = _pick(FWD, target, "fwd", input.dtype, geo, {"T": T, "N": N, "D": D})
    work = _work_list(tuple(actual_seq_len), compress_block_size, compress_stride, windows, device)
    n_tiles = work.shape[0] * N * triton.cdiv(D, meta["BLOCK_D"])
    x = _unit_last(input)
    _backend.launch(FWD.name, _fwd_kernel, _grid(n_tiles, target), x, weight.contiguous(), out, work,
                    work.shape[0], N, D, compress_block_size, compress_stride, *x.stride()[:2],
                    CHUNK=geo["CHUNK"], SLOTS=geo["SLOTS"], **meta, **opts)
    return out


@_fwd_op.register_fake
def _(input, weight, compress_block_size, compress_stride, actual_seq_len):
    n_out = _check(OP, input, weight, compress_block_size, compress_stride, actual_seq_len)
    return input.new_empty((n_out, *input.shape[1:]))


@torch.library.custom_op("atlas::nsa_compress_grad", mutates_args=())
def _grad_op(grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, compress_block_size: int,
             compress_stride: int, actual_seq_len: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    _check(GRAD_OP, input, weight, compress_block_size, compress_stride, actual_seq_len, grad)
    device = _backend.device_of(GRAD_OP, grad=grad, input=input, weight=weight)
    if not _backend.use_kernel(GRAD_OP, device):
        return ref.nsa_compress_grad(grad, input, weight, compress_block_size, compress_stride, actual_seq_len)
    T, N, D = input.shape
    target = _backend.target_for(device)
    geo = geometry(compress_block_size, compress_stride)
    meta, opts, windows = _pick(BWD, target, "bwd", input.dtype, geo, {"T": T, "N": N, "D": D})
    work = _work_list(tuple(actual_seq_len), compress_block_size, compress_stride, windows, device)
    n_items, n_db = work.shape[0], triton.cdiv(D, meta["BLOCK_D"])
    dinput = torch.empty_like(input, memory_format=torch.contiguous_format)
    ws = torch.empty((n_items, n_db, compress_block_size, N), dtype=torch.float32, device=device)
    dweight = torch.empty((compress_block_size, N), dtype=weight.dtype, device=device)
    n_tiles = n_items * N * n_db
    if n_tiles:
        x, g = _unit_last(input), _unit_last(grad)
        _backend.launch(BWD.name, _bwd_kernel, _grid(n_tiles, target), x, weight.contiguous(), g, dinput,
                        ws, work, n_items, N, D, compress_block_size, compress_stride, *x.stride()[:2],
                        *g.stride()[:2], **geo, **meta, **opts)
    rmeta, ropts = split_config(pick_config(DW_REDUCE.name, target, _TY[input.dtype], T=T, N=N, D=D))
    n_cols = compress_block_size * N
    _backend.launch(DW_REDUCE.name, _dw_reduce_kernel,
                    _backend.persistent_grid(triton.cdiv(n_cols, rmeta["BLOCK_C"]), target),
                    ws, dweight, n_items * n_db, n_cols, **rmeta, **ropts)
    return dinput, dweight


@_grad_op.register_fake
def _(grad, input, weight, compress_block_size, compress_stride, actual_seq_len):
    _check(GRAD_OP, input, weight, compress_block_size, compress_stride, actual_seq_len, grad)
    return torch.empty_like(input, memory_format=torch.contiguous_format), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    input, weight, block, stride, ends = inputs
    ctx.save_for_backward(input, weight)
    ctx.geometry = (block, stride, ends)


def _backward(ctx, grad):
    input, weight = ctx.saved_tensors
    block, stride, ends = ctx.geometry
    dinput, dweight = torch.ops.atlas.nsa_compress_grad(grad, input, weight, block, stride, ends)
    return dinput, dweight, None, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


# actual_seq_len as a tensor (flash-linear-attention's cu_seqlens pattern): the ops read its values when they run,
# so torch.compile traces one graph for all lengths (T' is a data-dependent size there), where a list is a
# constant of the graph and every new list recompiles
@torch.library.custom_op("atlas::nsa_compress_varlen", mutates_args=())
def _fwd_varlen_op(input: torch.Tensor, weight: torch.Tensor, compress_block_size: int, compress_stride: int,
                   actual_seq_len: torch.Tensor) -> torch.Tensor:
    ends = _seq_ends(OP, actual_seq_len.cpu())
    return _fwd_op(input, weight, compress_block_size, compress_stride, ends)


@_fwd_varlen_op.register_fake
def _(input, weight, compress_block_size, compress_stride, actual_seq_len):
    check_tensor(OP, "input", input, dtypes=DTYPES, ndim=3)
    return input.new_empty((torch.library.get_ctx().new_dynamic_size(), *input.shape[1:]))


@torch.library.custom_op("atlas::nsa_compress_grad_varlen", mutates_args=())
def _grad_varlen_op(grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, compress_block_size: int,
                    compress_stride: int, actual_seq_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ends = _seq_ends(GRAD_OP, actual_seq_len.cpu())
    return _grad_op(grad, input, weight, compress_block_size, compress_stride, ends)


@_grad_varlen_op.register_fake
def _(grad, input, weight, compress_block_size, compress_stride, actual_seq_len):
    return torch.empty_like(input, memory_format=torch.contiguous_format), torch.empty_like(weight)


def _setup_varlen_context(ctx, inputs, output):
    input, weight, block, stride, lengths = inputs
    ctx.save_for_backward(input, weight, lengths)
    ctx.geometry = (block, stride)


def _backward_varlen(ctx, grad):
    input, weight, lengths = ctx.saved_tensors
    dinput, dweight = torch.ops.atlas.nsa_compress_grad_varlen(grad, input, weight, *ctx.geometry, lengths)
    return dinput, dweight, None, None, None


_fwd_varlen_op.register_autograd(_backward_varlen, setup_context=_setup_varlen_context)


def _lengths_tensor(op: str, actual_seq_len: torch.Tensor) -> torch.Tensor:
    if actual_seq_len.dtype.is_floating_point or actual_seq_len.dtype == torch.bool or actual_seq_len.dim() != 1:
        raise TypeError(f"{op}: actual_seq_len must be a 1-D integer tensor, got {actual_seq_len.dtype} "
                        f"with shape {tuple(actual_seq_len.shape)}")
    if actual_seq_len.device.type == "meta":
        raise TypeError(f"{op}: actual_seq_len must hold values (host data or a tensor on a real device), got a "
                        f"meta tensor")
    return actual_seq_len


def nsa_compress(input: torch.Tensor, weight: torch.Tensor, compress_block_size: int, compress_stride: int, *,
                 actual_seq_len) -> torch.Tensor:
    """NSA key/value compression: weighted pooling over sliding windows of packed sequences (differentiable).

    input: fp16/bf16 [T, N, D] (TND, sequences packed along T; any T and N strides are read in place,
        a non-contiguous D is copied once). weight: [l, N], same dtype.
    compress_block_size l, compress_stride d: multiples of 16, 16 <= d <= l <= 256.
    actual_seq_len: inclusive prefix sums of the sequence lengths, non-decreasing, ending at T (a leading 0
        adds an empty sequence): a list or tuple of ints or a 1-D integer numpy array (torch.compile
        specialises on these values), or a 1-D integer tensor (read when the op runs: one graph for all
        lengths under torch.compile; a device tensor costs one sync).
    Returns [T', N, D] in input's dtype, T' = sum_b max(0, (len_b - l) // d + 1); fp32 accumulation.
    Gradients for input and weight are computed without atomics (bitwise reproducible).
    """
    block, stride = _check_ints(OP, compress_block_size, compress_stride)  # before the schema's own int cast
    if isinstance(actual_seq_len, torch.Tensor):
        return torch.ops.atlas.nsa_compress_varlen(input, weight, block, stride, _lengths_tensor(OP, actual_seq_len))
    return call_op(OP, torch.ops.atlas.nsa_compress, input, weight, block, stride, _seq_ends(OP, actual_seq_len))


def npu_nsa_compress(input: torch.Tensor, weight: torch.Tensor, compress_block_size: int, compress_stride: int, *,
                     actual_seq_len=None) -> torch.Tensor:
    """torch_npu spelling of nsa_compress (actual_seq_len is required, as in CANN)."""
    return nsa_compress(input, weight, compress_block_size, compress_stride, actual_seq_len=actual_seq_len)


def npu_nsa_compress_grad(grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, compress_block_size: int,
                          compress_stride: int, *, actual_seq_len=None) -> tuple:
    """torch_npu spelling of the backward: (dinput [T, N, D], dweight [l, N]) in the input dtype."""
    block, stride = _check_ints(GRAD_OP, compress_block_size, compress_stride)
    if isinstance(actual_seq_len, torch.Tensor):
        return torch.ops.atlas.nsa_compress_grad_varlen(grad, input, weight, block, stride,
                                                        _lengths_tensor(GRAD_OP, actual_seq_len))
    return call_op(GRAD_OP, torch.ops.atlas.nsa_compress_grad, grad, input, weight, block, stride,
                   _seq_ends(GRAD_OP, actual_seq_len))


# ---------------------------------------------------------------- tuning harness
# Shapes {T, N, D}: one sequence of T tokens (power-of-two bucket), N heads and D exact. A variant is a
# geometry class; it is tuned at the first checked (l, d) of that class. dw_reduce is tuned inside the
# backward at (l, d) = (32, 16).
from .autotune import Tuning, pow2_bucket  # noqa: E402
from .autotune.candidates import Work, tiled_work  # noqa: E402

_NSA_PAIRS = ((32, 16), (64, 32), (128, 16), (128, 128))
_NSA_SHAPES = ({"T": 8192, "N": 4, "D": 128}, {"T": 65536, "N": 4, "D": 128})
_ELEM = {"fp16": 2, "bf16": 2}


def _nsa_bucket(shape: dict) -> tuple:
    return (pow2_bucket(shape["T"]), shape["N"], shape["D"])


def _nsa_pair(kind: str, variant: Variant):
    """(l, d) of the first checked geometry with this variant's label, or None."""
    dtype = variant.label.split("-")[0]
    return next((p for p in _NSA_PAIRS if _variant(kind, dtype, geometry(*p)).label == variant.label), None)


def _nsa_work(kind: str):
    def work(target: Target, variant: Variant, shape: dict, config: dict) -> Work:
        """Tiles of (WINDOWS windows, head, BLOCK_D columns); each streams the tokens its windows span in CHUNK
        steps (backward: reads x and grad, writes dinput and its dweight partials)."""
        l, d = _nsa_pair(kind, variant)
        T, N, D = shape["T"], shape["N"], shape["D"]
        n_win = max(1, (T - l) // d + 1)
        windows = min(config["WINDOWS"], pow2_bucket(n_win))
        block_d = min(config["BLOCK_D"], pow2_bucket(D))
        span = (windows - 1) * d + l
        cols = min(block_d, D)
        per_token = (3 if kind == "bwd" else 1) * 2 * cols
        out = windows * cols * 2 if kind == "fwd" else l * 4
        tiles = -(-n_win // windows) * N * -(-D // block_d)
        depth = config["num_warps"] / 4 if "num_warps" in config else 2.0
        return Work(tiles=tiles, bytes_per_tile=span * per_token + out + l * 2,
                    steps_per_tile=-(-span // variant.constexprs["CHUNK"]), depth=depth,
                    effective={"WINDOWS": windows, "BLOCK_D": block_d})
    return work


def _reduce_work(target: Target, variant: Variant, shape: dict, config: dict) -> Work:
    """Column tiles of the (work items x D blocks, l x N) fp32 partials, summed down the rows in BLOCK_R steps."""
    n_win = max(1, (shape["T"] - 32) // 16 + 1)
    rows = -(-n_win // 32) * -(-shape["D"] // 128)  # the backward's derived tiling, roughly
    return tiled_work(config, {"BLOCK_C": 32 * shape["N"]}, 4, steps={"BLOCK_R": rows})


def _nsa_inputs(shape: dict, dtype: str, l: int, device):
    gen = torch.Generator().manual_seed(0)
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    x = torch.randn((shape["T"], shape["N"], shape["D"]), generator=gen).to(dt).to(device)
    w = torch.randn((l, shape["N"]), generator=gen).to(dt).to(device)
    return x, w


def _tune_fwd(shape: dict, variant: Variant, device):
    l, d = _nsa_pair("fwd", variant)
    x, w = _nsa_inputs(shape, variant.label.split("-")[0], l, device)
    return lambda: nsa_compress(x, w, l, d, actual_seq_len=[shape["T"]])


def _grad_call(shape: dict, dtype: str, l: int, d: int, device):
    x, w = _nsa_inputs(shape, dtype, l, device)
    n_out = max(0, (shape["T"] - l) // d + 1)
    g = torch.randn((n_out, shape["N"], shape["D"]), generator=torch.Generator().manual_seed(1)).to(x.dtype).to(device)
    return lambda: npu_nsa_compress_grad(g, x, w, l, d, actual_seq_len=[shape["T"]])


def _tune_bwd(shape: dict, variant: Variant, device):
    l, d = _nsa_pair("bwd", variant)
    return _grad_call(shape, variant.label.split("-")[0], l, d, device)


def _tune_reduce(shape: dict, variant: Variant, device):
    return _grad_call(shape, variant.label, 32, 16, device)


FWD.tuning = Tuning(("T", "N", "D"), _nsa_bucket, _tune_fwd, _NSA_SHAPES, work=_nsa_work("fwd"),
                    covers=lambda v, s: _nsa_pair("fwd", v) is not None)
BWD.tuning = Tuning(("T", "N", "D"), _nsa_bucket, _tune_bwd, _NSA_SHAPES, work=_nsa_work("bwd"),
                    covers=lambda v, s: _nsa_pair("bwd", v) is not None)
DW_REDUCE.tuning = Tuning(("T", "N", "D"), _nsa_bucket, _tune_reduce, _NSA_SHAPES, work=_reduce_work)
