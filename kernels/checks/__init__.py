"""Hardware-free verification of every registered kernel.

- ``ascend``: lower TTIR -> Linalg with triton-ascend's adapter (no CANN needed),
  for Atlas A2/A3 targets. Run it in the env that has triton-ascend.
- ``cuda``: compile for sm_90 / sm_80 with upstream Triton (no GPU needed) and
  read registers, spills and shared memory from the cubin.

Both walk KERNELS (atlas_kernels.autotune.registry): every variant of every
kernel, with the target's shipped (default) config and a sample of its
config space (``--full``: the whole space).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import random

from ..autotune import KERNELS, KernelSpec, Target, Variant, get_target, split_config


@dataclasses.dataclass
class Job:
    spec: KernelSpec
    variant: Variant
    target: Target
    config: dict
    shipped: bool

    @property
    def label(self) -> str:
        meta, opts = split_config(self.config)
        cfg = ",".join(f"{k}={v}" for k, v in {**meta, **opts}.items())
        return f"{self.spec.name}[{self.variant.label}] {self.target.name} {cfg}"


@dataclasses.dataclass
class Result:
    job: Job
    ok: bool
    detail: str = ""
    stats: dict = dataclasses.field(default_factory=dict)


def signature(spec: KernelSpec, variant: Variant, config: dict) -> tuple[dict, dict]:
    """(signature with every argument in order, constexpr values) for ASTSource."""
    meta, _ = split_config(config)
    constexprs = {**variant.constexprs, **meta}
    sig = {}
    for name in spec.fn.arg_names:
        if name in variant.types:
            sig[name] = variant.types[name]
        elif name in constexprs:
            sig[name] = "constexpr"
        else:
            raise KeyError(f"{spec.name}[{variant.label}]: no type or constexpr value for argument {name!r}")
    return sig, {k: v for k, v in constexprs.items() if k in sig}


def shipped_configs(spec: KernelSpec, variant: Variant, target: Target) -> list:
    """The derived default and every entry of the shipped store for this kernel variant (what launches use)."""
    from ..autotune import store
    configs = [spec.default(target, variant)]
    for entry in store.read(store.store_file(store.SHIPPED_DIR, target.name), target.name):
        if entry.kernel == spec.name and entry.variant == variant.label and entry.config not in configs:
            configs.append(entry.config)
    return configs


def jobs(target_names, full: bool = False, prefix: "str | tuple" = "", sample: int = 2, extra_specs=(),
         candidates: bool = False) -> list:
    """Every (kernel, variant, target, config) to check: shipped configs plus a sample of each space.

    candidates: every candidate of each space (``KernelSpec.candidates``, before the Ascend verdicts).
    """
    out = []
    specs = [s for n, s in sorted(KERNELS.items()) if n.startswith(prefix)] + list(extra_specs)
    for tname in target_names:
        target = get_target(tname)
        for spec in specs:
            for variant in spec.variants:
                shipped = shipped_configs(spec, variant, target)
                out.extend(Job(spec, variant, target, c, True) for c in shipped)
                space = (spec.candidates or spec.space) if candidates else spec.space
                space = [c for c in space(target, variant) if c not in shipped]
                if not (full or candidates):
                    rng = random.Random(f"{spec.name}/{variant.label}/{tname}")
                    space = rng.sample(space, min(sample, len(space)))
                out.extend(Job(spec, variant, target, c, False) for c in space)
    return out


def print_table(rows: list, columns: list) -> None:
    widths = [max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


_TODO: list = []
_RUN = None
RETRY_NOTE = "passed on retry; first attempt: "


def _run_index(i: int) -> tuple:
    # Jobs hold jit functions and lambdas, which do not pickle: forked workers take them by index.
    r = _RUN(_TODO[i])
    return r.ok, r.detail, r.stats


def run_checks(jobs: list, check: str, workers: int, on_result=None, quick: bool = False, executor=None) -> list:
    """[(ok, detail, stats)] per job: the "ascend" lowering or the "cuda" compile check, in forked workers.

    A failed job runs once more: triton-ascend's adapter occasionally crashes on a
    config that lowers fine when run again. A job that passes on the retry is ok,
    with RETRY_NOTE and the first failure in its detail. on_result(job) is called
    as each first attempt finishes (progress bars). quick: the tuner's dry run (CUDA: the launch-like
    compile only; Ascend: a stored verdict whose Linalg hash matches stands for bishengir), see each run().
    executor (autotune.executor.Options): its local and ray backends run the jobs in ``workers`` long-lived
    workers, each job with a timeout, a crash failing that job only (autotune/runs.py).
    """
    global _RUN
    if executor is not None and executor.kind in ("local", "ray"):
        from ..autotune.runs import check_jobs
        return check_jobs(jobs, check, executor, workers, on_result, quick)
    if check == "ascend":
        from .ascend import run
    else:
        from .cuda import run
    _TODO[:] = jobs
    _RUN = functools.partial(run, quick=True) if quick else run
    results = []
    try:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as pool:
            for job, r in zip(jobs, pool.map(_run_index, range(len(jobs)), chunksize=1)):
                results.append(r)
                if on_result:
                    on_result(job)
            # a stored verdict reused, or one found stale, is no adapter crash: no retry
            failed = [i for i, r in enumerate(results) if not r[0] and r[2].get("how") != "verdict reused"
                      and not r[1].startswith("stale verdict")]
            for i, again in zip(failed, pool.map(_run_index, failed, chunksize=1)):
                if again[0]:
                    results[i] = (True, RETRY_NOTE + results[i][1], again[2])
    finally:
        _TODO.clear()
    return results
