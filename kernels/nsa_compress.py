"""NSA compression (torch_npu.npu_nsa_compress and npu_nsa_compress_grad), forward and deterministic backward.

out[c, n, :] = sum_{j<l} weight[j, n] * input[start_b + i*d + j, n, :] over the windows of packed
variable-length sequences (specs/ops.md §3). Variable length goes through a flat work list built
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

import torch
import triton
import triton.language as tl

from . import _backend
from ._validate import check_tensor
from .autotune import KernelSpec, Target, Variant, pick_config, register_kernel, split_config
from .reference import nsa_compress as ref

OP = "nsa_compress"
GRAD_OP = "nsa_compress_grad"
DTYPES = (torch.float16, torch.bfloat16)
MAX_BLOCK = 256          # l limit (CANN: 128); register/UB use grows with l/d
MAX_CHUNK = 32           # tokens per chunk load: larger chunks only add registers
ITEM_COLS = 8            # work list row: see _work_list


@triton.jit
def _live_windows(k, a, b, c_lo, c_hi, SLOTS: tl.constexpr):
    """Chunk phase (chunk index inside its window) of each slot's window at chunk k, and whether the slot is live.

    Window c (c_lo <= c < c_hi) covers chunks c*b .. c*b + a - 1 and lives in slot c % SLOTS.
    """
    slots = tl.arange(0, SLOTS)
    cmax = tl.minimum(k // b, c_hi - 1)
    cs = cmax - (cmax - slots + SLOTS) % SLOTS
    phase = k - cs * b
    live = (cs >= c_lo) & (phase < a)
    return phase, live


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, out_ptr, work_ptr, n_items, N, D, l, d, stride_xt, stride_xn, stride_xd,
                CHUNK: tl.constexpr, SLOTS: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[T', N, D] (contiguous) from x[T, N, D] (strided) and w[l, N] (contiguous).

    One tile = (work item, head, D block).
    """
    pid = tl.program_id(0)
    a = l // CHUNK
    b = d // CHUNK
    n_db = tl.cdiv(D, BLOCK_D)
    rows = tl.arange(0, CHUNK)
    slots = tl.arange(0, SLOTS)
    for tile in range(pid, n_items * N * n_db, tl.num_programs(0)):
        item = tile // (N * n_db)
        n = (tile // n_db) % N
        cols = (tile % n_db) * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = cols < D
        row = work_ptr + item * 8
        ts = tl.load(row)
        o_seq = tl.load(row + 1)
        c_lo = tl.load(row + 2)
        c_hi = tl.load(row + 3)
        k_lo = c_lo * b
        k_hi = tl.where(c_hi > c_lo, (c_hi - 1) * b + a, k_lo)
        x_row = x_ptr + ts.to(tl.int64) * stride_xt + n * stride_xn + cols * stride_xd
        acc = tl.zeros((SLOTS, BLOCK_D), dtype=tl.float32)
        for k in range(k_lo, k_hi):
            tok = (k * CHUNK + rows).to(tl.int64)
            x = tl.load(x_row[None, :] + tok[:, None] * stride_xt, mask=dmask[None, :], other=0.0).to(tl.float32)
            phase, live = _live_windows(k, a, b, c_lo, c_hi, SLOTS)
            wk = tl.load(w_ptr + (phase[:, None] * CHUNK + rows[None, :]) * N + n, mask=live[:, None], other=0.0)
            acc += tl.sum(wk.to(tl.float32)[:, :, None] * x[None, :, :], axis=1)
            # window (k - a + 1) / b ends with this chunk: write its slot and clear it
            # (vector-form masks throughout: the interpreter turns vector & scalar masks into int32)
            r = k - a + 1 + slots * 0
            done = (slots == (r // b) % SLOTS) & (r >= 0) & (r % b == 0) & (r // b >= c_lo)
            rd = k - a + 1 + cols * 0
            any_done = (rd >= 0) & (rd % b == 0) & (rd // b >= c_lo) & dmask
            dst = out_ptr + ((o_seq + (k - a + 1) // b).to(tl.int64) * N + n) * D + cols
            tl.store(dst, tl.sum(tl.where(done[:, None], acc, 0.0), axis=0).to(out_ptr.dtype.element_ty),
                     mask=any_done)
            acc = tl.where(done[:, None], 0.0, acc)


@triton.jit
def _bwd_kernel(x_ptr, w_ptr, g_ptr, dx_ptr, ws_ptr, work_ptr, n_items, N, D, l, d,
                stride_xt, stride_xn, stride_xd, stride_gt, stride_gn, stride_gd,
                CHUNK: tl.constexpr, SLOTS: tl.constexpr, PHASES: tl.constexpr, BLOCK_D: tl.constexpr):
    """dx[T, N, D] (contiguous) for the item's own tokens and ws[item, D block, l, N] fp32 partials of dweight.

    The grad row of window c is loaded when the window starts (chunk c*b) into slot c % SLOTS.
    dweight contributions are binned by chunk phase (position in the window / CHUNK) in registers.
    """
    pid = tl.program_id(0)
    a = l // CHUNK
    b = d // CHUNK
    n_db = tl.cdiv(D, BLOCK_D)
    rows = tl.arange(0, CHUNK)
    slots = tl.arange(0, SLOTS)
    phases = tl.arange(0, PHASES)
    for tile in range(pid, n_items * N * n_db, tl.num_programs(0)):
        item = tile // (N * n_db)
        n = (tile // n_db) % N
        dblk = tile % n_db
        cols = dblk * BLOCK_D + tl.arange(0, BLOCK_D)
        dmask = cols < D
        row = work_ptr + item * 8
        ts = tl.load(row)
        o_seq = tl.load(row + 1)
        c_lo = tl.load(row + 4)
        c_hi = tl.load(row + 5)
        p_lo = tl.load(row + 6)
        p_hi = tl.load(row + 7)
        x_row = x_ptr + ts.to(tl.int64) * stride_xt + n * stride_xn + cols * stride_xd
        dx_row = dx_ptr + (ts.to(tl.int64) * N + n) * D + cols
        gslot = tl.zeros((SLOTS, BLOCK_D), dtype=tl.float32)
        dw = tl.zeros((PHASES, CHUNK), dtype=tl.float32)
        for k in range(c_lo * b, tl.cdiv(p_hi, CHUNK)):
            # window k / b starts here: load its grad row into its slot (vector-form masks, see _fwd_kernel)
            kd = k + cols * 0
            starts = (kd % b == 0) & (kd // b >= c_lo) & (kd // b < c_hi)
            g_src = g_ptr + (o_seq + k // b).to(tl.int64) * stride_gt + n * stride_gn + cols * stride_gd
            g_new = tl.load(g_src, mask=dmask & starts, other=0.0).to(tl.float32)
            ks = k + slots * 0
            into = (slots == (ks // b) % SLOTS) & (ks % b == 0) & (ks // b >= c_lo) & (ks // b < c_hi)
            gslot = tl.where(into[:, None], g_new[None, :], gslot)
            phase, live = _live_windows(k, a, b, c_lo, c_hi, SLOTS)
            wk = tl.load(w_ptr + (phase[:, None] * CHUNK + rows[None, :]) * N + n, mask=live[:, None], other=0.0)
            tok = k * CHUNK + rows
            own = ((tok >= p_lo) & (tok < p_hi))[:, None] & dmask[None, :]
            dx = tl.sum(wk.to(tl.float32)[:, :, None] * gslot[:, None, :], axis=0)
            tl.store(dx_row[None, :] + tok.to(tl.int64)[:, None] * (N * D), dx.to(dx_ptr.dtype.element_ty), mask=own)
            x = tl.load(x_row[None, :] + tok.to(tl.int64)[:, None] * stride_xt, mask=own, other=0.0).to(tl.float32)
            v = tl.sum(gslot[:, None, :] * x[None, :, :], axis=2)
            hit = (phases[None, :] == phase[:, None]) & live[:, None]
            dw += tl.sum(tl.where(hit[:, :, None], v[:, None, :], 0.0), axis=0)
        j = phases[:, None] * CHUNK + rows[None, :]
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
              "stride_xt": "i32", "stride_xn": "i32", "stride_xd": "i32"}
    if kind == "fwd":
        types = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", **common}
        return Variant(label, types, {"CHUNK": geo["CHUNK"], "SLOTS": geo["SLOTS"]})
    types = {"x_ptr": f"*{dtype}", "w_ptr": f"*{dtype}", "g_ptr": f"*{dtype}", "dx_ptr": f"*{dtype}",
             "ws_ptr": "*fp32", **common, "stride_gt": "i32", "stride_gn": "i32", "stride_gd": "i32"}
    return Variant(label, types, dict(geo))


# Checked geometries: the benchmark's (32, 16) and (64, 32), the widest overlap (128, 16), l == d (128, 128).
_CHECKED = [geometry(32, 16), geometry(64, 32), geometry(128, 16), geometry(128, 128)]


def _tile_bytes(kind: str, variant: Variant, block_d: int) -> int:
    """On-chip bytes of one chunk step: fp32 products SLOTS x CHUNK x BLOCK_D plus chunk, slots and weights."""
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
                per = _tile_bytes(kind, variant, block_d)
                if target.is_ascend:
                    if 2 * per <= target.ub_bytes:  # double buffering: half the UB per step
                        configs.append({"BLOCK_D": block_d, "WINDOWS": windows})
                    continue
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
            # the widest D block that fits (contiguous loads); 32 windows keep the span overlap at (l-d)/(32 d)
            return max((c for c in space if c["WINDOWS"] == 32), key=lambda c: c["BLOCK_D"])
        # fp32 values per thread per chunk step, by the cuda check: the forward spilled at 96 (sm_80,
        # 4 warps), the backward at 8 warps even with few registers; fewer warps first
        limit = 64 if kind == "fwd" else 128
        fits = [c for c in space if c["WINDOWS"] == 32 and c["BLOCK_D"] <= 128
                and _tile_bytes(kind, variant, c["BLOCK_D"]) // 4 // (32 * c["num_warps"]) <= limit]
        return max(fits, key=lambda c: (c["BLOCK_D"], -c["num_warps"]))
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


def _pick(spec: KernelSpec, target: Target, kind: str, dtype: torch.dtype, geo: dict) -> tuple:
    """(constexprs, launch options, windows per item) for this geometry.

    Geometries outside the checked list join the spec's variants on first use, so they get the
    same derived default (and override_config works for them).
    """
    variant = _variant(kind, _TY[dtype], geo)
    if all(v.label != variant.label for v in spec.variants):
        spec.variants.append(variant)
    meta, opts = split_config(pick_config(spec.name, target, variant.label))
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
    """actual_seq_len as a list of Python ints (host data: list, tuple or CPU tensor)."""
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
    if not isinstance(actual_seq_len, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in actual_seq_len):
        raise TypeError(f"{op}: actual_seq_len must be a list or tuple of ints, got {actual_seq_len!r}")
    return list(actual_seq_len)


def _check_ints(op: str, block, stride):
    for name, v in (("compress_block_size", block), ("compress_stride", stride)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{op}: {name} must be an int, got {type(v).__name__}")


def _check(op: str, input, weight, block, stride, ends, grad=None) -> int:
    """Validate the arguments; return T' (number of windows)."""
    check_tensor(op, "input", input, dtypes=DTYPES, ndim=3)
    check_tensor(op, "weight", weight, dtypes=DTYPES, ndim=2)
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
    meta, opts, windows = _pick(FWD, target, "fwd", input.dtype, geo)
    work = _work_list(tuple(actual_seq_len), compress_block_size, compress_stride, windows, device)
    n_tiles = work.shape[0] * N * triton.cdiv(D, meta["BLOCK_D"])
    _backend.launch(FWD.name, _fwd_kernel, _grid(n_tiles, target), input, weight.contiguous(), out, work,
                    work.shape[0], N, D, compress_block_size, compress_stride, *input.stride(),
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
    meta, opts, windows = _pick(BWD, target, "bwd", input.dtype, geo)
    work = _work_list(tuple(actual_seq_len), compress_block_size, compress_stride, windows, device)
    n_items, n_db = work.shape[0], triton.cdiv(D, meta["BLOCK_D"])
    dinput = torch.empty_like(input, memory_format=torch.contiguous_format)
    ws = torch.empty((n_items, n_db, compress_block_size, N), dtype=torch.float32, device=device)
    dweight = torch.empty((compress_block_size, N), dtype=weight.dtype, device=device)
    n_tiles = n_items * N * n_db
    if n_tiles:
        _backend.launch(BWD.name, _bwd_kernel, _grid(n_tiles, target), input, weight.contiguous(), grad, dinput,
                        ws, work, n_items, N, D, compress_block_size, compress_stride, *input.stride(),
                        *grad.stride(), **geo, **meta, **opts)
    rmeta, ropts = split_config(pick_config(DW_REDUCE.name, target, _TY[input.dtype]))
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


def nsa_compress(input: torch.Tensor, weight: torch.Tensor, compress_block_size: int, compress_stride: int, *,
                 actual_seq_len) -> torch.Tensor:
    """NSA key/value compression: weighted pooling over sliding windows of packed sequences (differentiable).

    input: fp16/bf16 [T, N, D] (TND, sequences packed along T; any strides). weight: [l, N], same dtype.
    compress_block_size l, compress_stride d: multiples of 16, 16 <= d <= l <= 256.
    actual_seq_len: host data (list, tuple or CPU int tensor): inclusive prefix sums of the sequence
        lengths, non-decreasing, ending at T (a leading 0 adds an empty sequence).
    Returns [T', N, D] in input's dtype, T' = sum_b max(0, (len_b - l) // d + 1); fp32 accumulation.
    Gradients for input and weight are computed without atomics (bitwise reproducible).
    """
    ends = _seq_ends(OP, actual_seq_len)
    _check_ints(OP, compress_block_size, compress_stride)  # before the schema's own int cast
    return torch.ops.atlas.nsa_compress(input, weight, compress_block_size, compress_stride, ends)


def npu_nsa_compress(input: torch.Tensor, weight: torch.Tensor, compress_block_size: int, compress_stride: int, *,
                     actual_seq_len=None) -> torch.Tensor:
    """torch_npu spelling of nsa_compress (actual_seq_len is required, as in CANN)."""
    return nsa_compress(input, weight, compress_block_size, compress_stride, actual_seq_len=actual_seq_len)


def npu_nsa_compress_grad(grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, compress_block_size: int,
                          compress_stride: int, *, actual_seq_len=None) -> tuple:
    """torch_npu spelling of the backward: (dinput [T, N, D], dweight [l, N]) in the input dtype."""
    ends = _seq_ends(GRAD_OP, actual_seq_len)
    _check_ints(GRAD_OP, compress_block_size, compress_stride)
    return torch.ops.atlas.nsa_compress_grad(grad, input, weight, compress_block_size, compress_stride, ends)
