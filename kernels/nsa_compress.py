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

Beside this file: nsa_compress_validate.py (argument checks), nsa_compress_spaces.py (geometry, variants,
config spaces) and nsa_compress_tuning.py (the tuning harnesses).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import _backend
from ._validate import call_op, check_tensor
from .autotune import KernelSpec, Target, Variant, pick_config, register_kernel, split_config
from .nsa_compress_spaces import (_CHECKED, _TY, MAX_CHUNK, _default, _reduce_default, _reduce_space,  # noqa: F401
                                  _space, _variant, geometry)
from .nsa_compress_tuning import tunings
from .nsa_compress_validate import (DTYPES, MAX_BLOCK, _check, _check_ints, _lengths_tensor,  # noqa: F401
                                    _seq_ends)
from .reference import nsa_compress as ref

OP = "nsa_compress"
GRAD_OP = "nsa_compress_grad"
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


# ---------------------------------------------------------------- registry
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


FWD.tuning, BWD.tuning, DW_REDUCE.tuning = tunings(nsa_compress, npu_nsa_compress_grad)
