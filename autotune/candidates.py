"""Tuning candidate lists: each kernel's space ranked by a modelled cost for one shape, cut to CANDIDATE_LIMIT.

A kernel's tuning harness (Tuning.work) describes what one config does at one shape as a Work: how many
tiles, the bytes and ops of one tile, the pipelined steps per tile and how deep the pipeline is. The
model below turns that into modelled seconds from the target's hardware facts (cores, memory bandwidth,
peak rate): waves of tiles over the cores; each tile takes its steps, each step the slowest of its memory
time, its compute time and the load latency its pipeline depth does not hide. Like Triton's prune_configs_by
(perf_model + top_k): the ranking only decides which configs get timed; the measured time decides which one
wins. All figures are modelled.
"""
from __future__ import annotations

import dataclasses
import json
import math

from .registry import KernelSpec, Variant
from .targets import Target

CANDIDATE_LIMIT = 50
SLACK = 1.5  # configs modelled more than this factor slower than the best are not timed ...
MIN_RANKED = 4  # ... except that the best-modelled few always are (the model is coarse)

# Modelled, not measured: exposed latency of one pipelined step (a global-memory load round trip) and the
# fixed cost of one tile (prologue, epilogue, loop set-up), per backend.
STEP_LATENCY_S = {"npu": 2e-6, "cuda": 0.6e-6, "cpu": 1e-6}
TILE_OVERHEAD_S = {"npu": 1e-6, "cuda": 0.2e-6, "cpu": 1e-6}
L2_SPEEDUP = 4.0  # modelled: a re-read that hits L2 costs a quarter of an HBM read
_FALLBACK_BANDWIDTH = 1e11  # targets without a figure (the interpreter): only the ranking's shape matters


@dataclasses.dataclass(frozen=True)
class Work:
    """What one config does at one shape (Tuning.work's answer).

    tiles: programs' worth of work (output tiles, work items).
    bytes_per_tile: global-memory bytes one tile reads and writes.
    ops_per_tile: multiply-adds x 2 (matrix unit work); 0 for vector kernels.
    steps_per_tile: sequential loop steps (k-steps of a GEMM, chunks of a scan).
    depth: loads in flight per step (pipeline stages, x warps / 4 on CUDA); hides step latency.
    effective: the config as this shape uses it (e.g. BLOCK_K clamped to K, stages past the k-steps
        dropped): configs with the same effective config are one candidate (the first in space order).
    int8: the dot runs at the int8 rate (else fp16).
    unique_bytes: bytes the whole launch must move at least (each input read once, the output written);
        when they fit in L2, tile bytes beyond them are re-reads served from L2. 0: no L2 reuse modelled.
    """

    tiles: int
    bytes_per_tile: float
    ops_per_tile: float = 0.0
    steps_per_tile: int = 1
    depth: float = 1.0
    effective: dict = dataclasses.field(default_factory=dict)
    int8: bool = True
    unique_bytes: float = 0.0


def modelled_seconds(target: Target, uses_dot: bool, work: Work) -> float:
    """Modelled run time of one launch (tiles in waves over the target's cores)."""
    cores = max(1, target.programs(uses_dot))
    bandwidth = (target.mem_bandwidth or _FALLBACK_BANDWIDTH) / cores
    peak = target.peak_int8_ops if work.int8 else target.peak_fp16_flops
    compute = work.ops_per_tile / (peak / cores) if peak and uses_dot else 0.0
    tile_bytes = work.bytes_per_tile
    if 0 < work.unique_bytes <= target.l2_bytes:
        first = min(tile_bytes, work.unique_bytes / max(1, work.tiles))
        tile_bytes = first + (tile_bytes - first) / L2_SPEEDUP
    memory = tile_bytes / bandwidth
    steps = max(1, work.steps_per_tile)
    # a step waits for its loads unless the pipeline keeps enough of them in flight behind its own work
    step = max(memory / steps, compute / steps, STEP_LATENCY_S[target.backend] / max(1.0, work.depth))
    waves = math.ceil(max(1, work.tiles) / cores)
    return waves * (steps * step + TILE_OVERHEAD_S[target.backend])


def _key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def ranked(spec: KernelSpec, target: Target, variant: Variant, shape: dict) -> list:
    """[(modelled seconds, config)] of the whole space at ``shape``, best first, one per effective config.

    Keys a kernel's model does not know (say a new SPLIT_K) stay in the effective config, so configs that
    differ in them are never merged; ties keep space order.
    """
    space = spec.space(target, variant)
    work_of = spec.tuning.work if spec.tuning is not None else None
    if work_of is None:
        return [(0.0, c) for c in space]
    seen, out = set(), []
    for index, config in enumerate(space):
        work = work_of(target, variant, shape, config)
        key = _key({**config, **work.effective})
        if key in seen:
            continue
        seen.add(key)
        out.append((modelled_seconds(target, spec.uses_dot, work), index, config))
    out.sort(key=lambda t: (t[0], t[1]))
    return [(s, c) for s, _, c in out]


def candidates(spec: KernelSpec, target: Target, variant: Variant, shape: dict | None,
               limit: int = CANDIDATE_LIMIT) -> list:
    """The configs the tuner times for one (variant, shape): the derived default, then the best-modelled
    configs of the space (on Ascend: those with a compiler verdict): the MIN_RANKED best and any other within
    SLACK of the best, ``limit`` in all.

    shape None: the whole space in its own order (no model).
    """
    default = spec.default(target, variant)
    if shape is None or spec.tuning is None:
        rest = [c for c in spec.space(target, variant) if c != default]
    else:
        order = ranked(spec, target, variant, shape)
        best = order[0][0] if order else 0.0
        rest = [c for i, (s, c) in enumerate(order) if (i < MIN_RANKED or s <= SLACK * best) and c != default]
    return [default] + rest[:max(0, limit - 1)]


def tiled_work(config: dict, extents: dict, bytes_per_elem: float, outer: int = 1, steps: dict | None = None,
               extra_bytes_per_tile: float = 0.0) -> Work:
    """Work of a kernel that tiles a grid of independent elements (copies, relayouts, element-wise ops).

    extents: {config key: the extent that key tiles} (e.g. {"BLOCK_R": R, "BLOCK_P": P}); a key whose
        block exceeds the power-of-two padded extent counts as clamped (only padding would grow).
    bytes_per_elem: bytes read and written per element of a tile. outer: independent repeats (batch).
    steps: {config key: extent} tiled by a loop inside one tile instead of by the grid.
    """
    steps = steps or {}
    effective, tiles, elems, n_steps = {}, outer, 1, 1
    for key, extent in {**extents, **steps}.items():
        block = min(config[key], max(1, 1 << (max(1, extent) - 1).bit_length()))
        effective[key] = block
        count = -(-max(1, extent) // block)
        elems *= min(block, extent) * (count if key in steps else 1)
        if key in steps:
            n_steps *= count
        else:
            tiles *= count
    depth = config["num_warps"] / 4 if "num_warps" in config else 2.0
    return Work(tiles=tiles, bytes_per_tile=elems * bytes_per_elem + extra_bytes_per_tile, steps_per_tile=n_steps,
                depth=depth, effective=effective)
