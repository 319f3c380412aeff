"""Split-K for GEMMs with fewer output tiles than cores (decode): the schedule, its workspace, its modelled cost.

A split launch cuts the K loop of every output tile into ``n_splits`` ranges of whole units (K_UNIT rows, or
A8W4's k-groups; not BLOCK_K steps: a range's last step is masked at its end like the last step of K, so the
ranges can be as even as the weight bytes they stream); work item ``i = tile * n_splits + s`` is range ``s`` of
``tile``, and the persistent grid of min(items, cores) programs takes items round robin (program p: items p,
p + grid, ...). Each item stores its int32 partial (A8W4: each k-group's int32 sum) in a workspace, and a second,
small launch (``kernel_reduce``) sums the slots in order and runs the epilogue. int32 sums are exact in any order
and A8W4's group sums are scaled and added in group order as the unsplit kernel does, so the output is
bit-identical to the unsplit launch. Only launches that split compile the split path (SPLIT).
"""
from __future__ import annotations

import functools

MAX_SPLIT_K = 16
MAX_WORKSPACE_BYTES = 32 << 20  # a split launch's int32 partials; a larger one is not split (decode's are < 3 MiB)
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
    """The split count of a launch: a config's SPLIT_K (>= 1) while the tiles are fewer than the cores (a store
    key has no batch: a split tuned for one decode shape must not multiply a batched launch's partials), else
    ``choose``; never an empty split. ``choose`` splits only while 1 split leaves < 90% of the cores busy, so
    only while tiles < 9 x cores."""
    if config_split and tiles < cores:
        return steps_per_split(k_units, min(config_split, MAX_SPLIT_K))[1]
    return choose(tiles, k_units, cores)


def plan(config: dict, m: int, n: int, k: int, n_batch: int, cores: int, splittable: bool = True,
         group_k: int = 0) -> tuple:
    """(output tiles, n_splits, k_per_split) of a tiled GEMM launch with ``config`` (its SPLIT_K: absent or 0 =
    chosen here) on ``cores`` cores; splits are whole K_UNIT rows, or whole k-groups of ``group_k`` rows (A8W4).
    splittable=False (not a decode launch): no split."""
    unit = group_k or K_UNIT
    tiles = n_batch * -(-m // config["BLOCK_M"]) * -(-n // config["BLOCK_N"])
    k_units = max(1, -(-k // unit))
    n_splits = resolve(config.get("SPLIT_K", 0), tiles, k_units, cores) if splittable else 1
    if n_splits > 1 and 4 * n_batch * m * n * workspace_slots(n_splits, k, group_k) > MAX_WORKSPACE_BYTES:
        n_splits = 1
    return tiles, n_splits, steps_per_split(k_units, n_splits)[0] * unit if n_splits > 1 else k


def workspace_slots(n_splits: int, k: int, group_k: int = 0) -> int:
    """Slots of int32 (n_batch, m, n) a split launch stores: one per split; A8W4 one per k-group. ``plan`` keeps
    the workspace, 4 x slots x n_batch x m x n bytes, under MAX_WORKSPACE_BYTES (it does not split beyond)."""
    return k // group_k if group_k else n_splits
