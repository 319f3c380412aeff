"""Split-K for GEMMs with fewer output tiles than cores (decode): the schedule, its modelled cost, and the
arrival counters the kernel reduces through.

A launch with ``n_splits`` > 1 cuts the K loop of every output tile into ``n_splits`` ranges of whole
K_UNIT rows (not BLOCK_K steps: a range's last step is masked at its end like the last step of K, so the
ranges can be as even as the weight bytes they stream); work item ``i = tile * n_splits + s`` is range ``s``
of ``tile``, and the persistent grid of min(items, cores) programs takes items round robin (program p: items
p, p + grid, ...). Each item stores
its int32 partial tile in a workspace and adds 1 to its tile's arrival counter; the item that arrives
last sums the partials in split order and runs the epilogue once, then puts the counter back to 0, so the
counters stay zero between launches (no memset launch, no host sync; CUDA graphs replay it as is).
int32 sums are exact in any order, so the output is bit-identical to the unsplit launch.
"""
from __future__ import annotations

import functools

import torch

MAX_SPLIT_K = 16
K_UNIT = 64  # split boundaries are multiples of this: whole int8 fractals, whole packed int4 words
SPLIT_K_CHOICES = (1, 2, 4, 8)  # the tuner's values of the config key SPLIT_K (absent or 0: the launcher's)


def steps_per_split(k_units: int, n_splits: int) -> tuple[int, int]:
    """(K_UNIT units per split, splits that get any): the last split takes the remainder."""
    n_splits = max(1, min(n_splits, k_units))
    per = -(-k_units // n_splits)
    return per, -(-k_units // per)


@functools.lru_cache(maxsize=4096)
def cores_busy(tiles: int, k_units: int, n_splits: int, cores: int) -> float:
    """Modelled fraction of core time spent streaming: all tiles' K units / (cores x the busiest program's units),
    with items dealt round robin as the persistent kernel does (decode is memory bound: cost per K row)."""
    per, n_splits = steps_per_split(k_units, n_splits)
    items = tiles * n_splits
    grid = min(items, cores)
    split_steps = [min(per, k_units - s * per) for s in range(n_splits)]
    loads = [0] * grid
    for i in range(items):
        loads[i % grid] += split_steps[i % n_splits]
    return tiles * k_units / (cores * max(loads))


BUSY_ENOUGH = 0.9


@functools.lru_cache(maxsize=4096)
def choose(tiles: int, k_units: int, cores: int) -> int:
    """The fewest splits that keep BUSY_ENOUGH of the cores busy (1 when the tiles alone do), else the split
    count with the most cores busy. Fewest: every split adds its int32 partials to the bytes moved."""
    best, best_busy = 1, 0.0
    for s in range(1, min(MAX_SPLIT_K, k_units) + 1):
        if steps_per_split(k_units, s)[1] != s:
            continue  # same as a smaller split count
        busy = cores_busy(tiles, k_units, s, cores)
        if busy >= BUSY_ENOUGH:
            return s
        if busy > best_busy + 1e-9:
            best, best_busy = s, busy
    return best


def resolve(config_split: int, tiles: int, k_units: int, cores: int) -> int:
    """The split count of a launch: the config's SPLIT_K if set (>= 1), else ``choose``; never an empty split."""
    if config_split:
        return steps_per_split(k_units, config_split)[1]
    return choose(tiles, k_units, cores)


_COUNTERS: dict = {}


def _stream_key(device: torch.device):
    """The stream the kernel will run on: _backend.launch enters ``device``, so it is that device's current
    stream (not the current device's)."""
    from .. import _backend
    return _backend.launch_stream(device)


def _capturing(device: torch.device) -> bool:
    """Whether the launch stream of ``device`` is being captured (asked with ``device`` current: the torch
    calls answer for the current device's stream)."""
    from .. import _backend
    if device.type == "cuda":
        with _backend.device_guard(device):
            return torch.cuda.is_current_stream_capturing()
    if device.type == "npu":
        capturing = getattr(torch.npu, "is_current_stream_capturing", None)
        with _backend.device_guard(device):
            return bool(capturing and capturing())
    return False


def arrival_counters(device: torch.device, n: int) -> torch.Tensor:
    """int32 zeros (>= n) for the tiles' arrival counters, one buffer per device and stream, kept zero by the
    kernel. While a CUDA/NPU graph is captured, a fresh buffer whose zeroing the graph records: a cached one
    made inside a capture would hold no zeros outside it."""
    if _capturing(device):
        return torch.zeros(n, dtype=torch.int32, device=device)
    key = (str(device), _stream_key(device))
    counters = _COUNTERS.get(key)
    if counters is None or counters.numel() < n:
        counters = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
        _COUNTERS[key] = counters
    return counters


def plan(config: dict, m: int, n: int, k: int, n_batch: int, cores: int, splittable: bool = True) -> tuple:
    """(output tiles, n_splits, k_per_split) of a tiled GEMM launch with ``config`` (its SPLIT_K: absent or 0 =
    chosen here) on ``cores`` cores. splittable=False (a kernel variant without the split path): no split."""
    tiles = n_batch * -(-m // config["BLOCK_M"]) * -(-n // config["BLOCK_N"])
    k_units = max(1, -(-k // K_UNIT))
    n_splits = resolve(config.get("SPLIT_K", 0), tiles, k_units, cores) if splittable else 1
    return tiles, n_splits, steps_per_split(k_units, n_splits)[0] * K_UNIT if n_splits > 1 else k


def launch_args(device: torch.device, config: dict, m: int, n: int, k: int, n_batch: int, cores: int,
                splittable: bool = True) -> tuple[dict, int, dict]:
    """(config without SPLIT_K, work items for the persistent grid, the kernel's split arguments ws_ptr, cnt_ptr,
    n_splits, k_per_split). splittable=False: one item per tile (the config's SPLIT_K is ignored).
    The int32 workspace holds each item's (BLOCK_M, BLOCK_N) partial; without a split both pointers are the
    cached counters (never read)."""
    meta = {key: v for key, v in config.items() if key != "SPLIT_K"}
    tiles, n_splits, k_per_split = plan(config, m, n, k, n_batch, cores, splittable)
    counters = arrival_counters(device, tiles if n_splits > 1 else 1)
    ws = (torch.empty(tiles * n_splits * config["BLOCK_M"] * config["BLOCK_N"], dtype=torch.int32, device=device)
          if n_splits > 1 else counters)
    return meta, tiles * n_splits, {"ws_ptr": ws, "cnt_ptr": counters, "n_splits": n_splits,
                                    "k_per_split": k_per_split}


def gemm_schedule(m: int, n: int, k: int, n_batch: int, config: dict, cores: int, x1_bytes: float, x2_bytes: float,
                  out_bytes: int, column_bytes: int = 0, splittable: bool = True) -> dict:
    """What a tiled GEMM launch does: output tiles, split count, modelled cores busy and bytes moved.

    x1_bytes: bytes per x1 element (0.5 for packed int4); x2_bytes: bytes of one batch's whole weight, in
    whatever layout the kernel reads; out_bytes: bytes per output element; column_bytes: epilogue bytes read per
    output column and m-tile (scale, bias, ...). x1 rows are re-read once per n-tile and x2 once per m-tile
    (the kernel's tiling); a split adds its int32 partials, written and read once. splittable: as in ``plan``.
    """
    tiles, n_splits, _ = plan(config, m, n, k, n_batch, cores, splittable)
    tiles_m, tiles_n = -(-m // config["BLOCK_M"]), -(-n // config["BLOCK_N"])
    moved = (n_batch * (m * k * x1_bytes * tiles_n + x2_bytes * tiles_m + m * n * out_bytes)
             + tiles_m * n * column_bytes)
    if n_splits > 1:
        moved += n_splits * 2 * 4 * n_batch * m * n
    return {"tiles": tiles, "split_k": n_splits, "cores": cores,
            "cores_busy": cores_busy(tiles, max(1, -(-k // K_UNIT)), n_splits, cores), "bytes": int(moved)}
