"""Run check jobs in forked worker processes, retrying a failure once."""
from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing

_TODO: list = []
_RUN = None
RETRY_NOTE = "passed on retry; first attempt: "


def _run_index(i: int) -> tuple:
    # Jobs hold jit functions and lambdas, which do not pickle: forked workers take them by index.
    r = _RUN(_TODO[i])
    return r.ok, r.detail, r.stats


def run_checks(jobs: list, check: str, workers: int, on_result=None, quick: bool = False) -> list:
    """[(ok, detail, stats)] per job: the "ascend" lowering or the "cuda" compile check, in forked workers.

    A failed job runs once more: triton-ascend's adapter occasionally crashes on a
    config that lowers fine when run again. A job that passes on the retry is ok,
    with RETRY_NOTE and the first failure in its detail. on_result(job) is called
    as each first attempt finishes (progress bars). quick: the tuner's dry run (CUDA: the launch-like
    compile only; Ascend: a stored verdict whose Linalg hash matches stands for bishengir), see each run().
    """
    global _RUN
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
