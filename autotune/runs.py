"""What the executors run: timing one config (``tune``) and checking one config (``checks``), and the drivers.

Worker side: ``time_config``, ``check_job`` and ``ascend_run_job`` take a picklable payload (names, never
KernelSpec objects: those hold jit functions) and rebuild the kernel from the registry.

Driver side: ``tune_groups`` turns (kernel, variant, shape) groups into one task per candidate config,
hands them to an executor as workers free up (so ``--budget`` decides late), journals every outcome and
folds them back into GroupResults; ``check_jobs`` does the same for the compile and CPU-run checks. Only
the driver writes the tuned-config store and the verdict file.

Test-only hook: ``ATLAS_TUNE_TIMER=config-hash`` makes every worker report a time derived from the config
alone (``config_hash_ms``) instead of timing it, so a run on CPU workers is deterministic and its store can
be compared across executors; the tuner then lets the CPU stand in for a device.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time

from .executor import EXECUTORS, Executor, InlineExecutor, Journal, LocalExecutor, Options, Task, cpu_slots

TIME_FN = "atlas_kernels.autotune.runs:time_config"
CHECK_FN = "atlas_kernels.autotune.runs:check_job"
ASCEND_RUN_FN = "atlas_kernels.autotune.runs:ascend_run_job"
TIMER_ENV = "ATLAS_TUNE_TIMER"
TUNE_TIMEOUT_S = 600.0
CHECK_TIMEOUT_S = 900.0   # bishengir alone may take 120 s, the CPU run's build longer
_YARDSTICKS = 4           # groups whose default output a worker keeps


def _fmt(d: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in d.items())


def config_hash_ms(config: dict) -> float:
    """A time in [1, 2) ms that depends on the config alone (the same in every process)."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).digest()
    return 1.0 + int.from_bytes(digest[:4], "big") / 2 ** 32


# ---------------------------------------------------------------- worker side: tune

_GROUPS: dict = {}  # group key -> {"call", "yard": (output,) or None, "failed": set of indices}


def time_config(payload: dict, ctx: dict) -> dict:
    """{"ms", "note"} of one config of one (kernel, variant, shape) on this worker's device.

    As tune.measure: the yardstick is the output of the first config of the candidate list that runs (the
    derived default, unless it fails); a config whose output differs is recorded, never timed."""
    import os

    import torch

    from . import tune
    from .registry import KERNELS
    from .select import override_config
    spec = KERNELS[payload["kernel"]]
    variant = spec.variant(payload["variant"])
    configs, config = payload["configs"], payload["config"]
    gkey = json.dumps([payload["run"], spec.name, variant.label, payload["shape"]], sort_keys=True)
    group = _GROUPS.pop(gkey, None)
    if group is None:
        group = {"call": spec.tuning.make_call(payload["shape"], variant, torch.device(ctx["device"])),
                 "yard": None, "failed": set()}
    _GROUPS[gkey] = group  # most recent last: the oldest is dropped
    while len(_GROUPS) > _YARDSTICKS:
        _GROUPS.pop(next(iter(_GROUPS)))

    def run(c=config):
        with override_config(spec.name, c):
            return group["call"]()
    mine = configs.index(config)
    for i, c in enumerate(configs[:mine]):
        if group["yard"] is not None:
            break
        if i not in group["failed"]:
            try:
                group["yard"] = (run(c),)
            except Exception:  # noqa: BLE001 - a failing config is no yardstick; its own task reports it
                group["failed"].add(i)
    out = run()
    if group["yard"] is None:
        group["yard"] = (out,)  # every config before it failed: it is the first that ran
    if not tune._same(out, group["yard"][0]):
        return {"ms": None, "note": "output differs from the default config's"}
    if os.environ.get(TIMER_ENV):
        return {"ms": config_hash_ms(config), "note": ""}
    return {"ms": tune.do_bench_median(run), "note": ""}


# ---------------------------------------------------------------- driver side: tune

@dataclasses.dataclass
class Group:
    spec: object
    variant: object
    shape: dict
    configs: list


def tune_key(target: str, g: Group, config: dict) -> str:
    return json.dumps({"target": target, "kernel": g.spec.name, "variant": g.variant.label, "shape": g.shape,
                       "config": config}, sort_keys=True)


def _note(rec: dict) -> tuple:
    """(ms, note) of a journal record / outcome."""
    if rec["status"] == "ok":
        return rec["value"]["ms"], rec["value"]["note"]
    return None, f"{rec['status']}: {rec['detail']}"


def tune_groups(groups: list, target, executor, *, journal: Journal | None = None, budget: float | None = None,
                progress=None, timeout: float | None = TUNE_TIMEOUT_S) -> list:
    """A GroupResult per group, from one task per candidate config run on ``executor``.

    budget (seconds): each group in turn gets an equal share of what is left; a config is not started when
    the slowest one so far would end past its group's share (as tune.measure). The journal's finished
    configs are not run again."""
    from .tune import GroupResult
    run_id = f"{time.time():.6f}"
    done = {} if journal is None else dict(journal.done)
    end = None if budget is None else time.monotonic() + budget
    slowest = [0.0]

    def tasks():
        for gi, g in enumerate(groups):
            deadline = None if end is None else time.monotonic() + (end - time.monotonic()) / (len(groups) - gi)
            for config in g.configs:
                key = tune_key(target.name, g, config)
                if key in done:
                    continue
                if deadline is not None and time.monotonic() + slowest[0] > deadline:
                    break
                payload = {"run": run_id, "kernel": g.spec.name, "variant": g.variant.label, "shape": g.shape,
                           "config": config, "configs": g.configs, "target": target.name}
                yield Task(key, TIME_FN, payload, f"{g.spec.name}[{g.variant.label}] {_fmt(g.shape)} {_fmt(config)}")

    if progress is not None:
        progress.total = sum(len(g.configs) for g in groups)
        resumed = sum(tune_key(target.name, g, c) in done for g in groups for c in g.configs)
        if resumed:
            progress.step(resumed, note="from the journal")
    for outcome in executor.run(tasks(), timeout=timeout):
        rec = journal.append(outcome) if journal is not None else {
            "key": outcome.task.key, "status": outcome.status, "value": outcome.value, "detail": outcome.detail,
            "seconds": outcome.seconds}
        done[outcome.task.key] = rec
        slowest[0] = max(slowest[0], outcome.seconds)
        if progress is not None:
            progress.step(note=outcome.task.label, failed=not outcome.ok or outcome.value.get("ms") is None)
    results = []
    for g in groups:
        recs = [(c, done.get(tune_key(target.name, g, c))) for c in g.configs]
        times = [(c, *_note(r)) for c, r in recs if r is not None]
        secs = max([r.get("seconds", 0.0) for _, r in recs if r is not None], default=0.0)
        results.append(GroupResult(g.spec.name, g.variant.label, dict(g.shape), times, g.configs[0],
                                   len(times) == len(g.configs), len(g.configs), secs))
    return results


def failures(results: list) -> list:
    """[(kernel, variant, shape, config, note)] of every config that failed, timed out, crashed or differed."""
    return [(r.kernel, r.variant, r.shape, c, note) for r in results for c, ms, note in r.times if ms is None]


# ---------------------------------------------------------------- worker side: checks

def job_ref(job) -> dict:
    return {"kernel": job.spec.name, "variant": job.variant.label, "target": job.target.name,
            "config": job.config, "shipped": job.shipped}


def job_of(ref: dict):
    from ..checks import Job
    from ..checks import negative_control
    from .registry import KERNELS
    from .targets import get_target
    controls = {s.name: s for s in vars(negative_control).values() if hasattr(s, "variants") and hasattr(s, "fn")}
    spec = KERNELS.get(ref["kernel"]) or controls[ref["kernel"]]
    return Job(spec, spec.variant(ref["variant"]), get_target(ref["target"]), ref["config"], ref["shipped"])


def check_job(payload: dict, ctx: dict) -> list:
    """[ok, detail, stats] of the ascend or cuda compile check of one job; a failure is tried once more, as
    checks.run_checks does (triton-ascend's adapter sometimes crashes on a config that lowers when run again)."""
    from ..checks import RETRY_NOTE
    job = job_of(payload["job"])
    if payload["check"] == "ascend":
        from ..checks import ascend
        ascend.CHECK_STALE = payload.get("check_stale", True)
        run = ascend.run
    else:
        from ..checks.cuda import run
    r = run(job, quick=payload.get("quick", False))
    if not r.ok and r.stats.get("how") != "verdict reused" and not r.detail.startswith("stale verdict"):
        again = run(job, quick=payload.get("quick", False))
        if again.ok:
            return [True, RETRY_NOTE + r.detail, again.stats]
    return [r.ok, r.detail, r.stats]


def ascend_run_job(payload: dict, ctx: dict) -> list:
    """[status, detail, seconds] of the Ascend CPU run of one job (checks/ascend_run/runner.py's run_job)."""
    from ..checks.ascend_run import run_job
    return list(run_job(job_of(payload["job"])))


def make(options: Options, slots: list, requires: dict, *, resources: dict | None = None, device: str = "cpu",
         preload=()) -> Executor:
    """The executor ``options`` ask for: inline runs in this process on ``device``; local spawns a worker per
    slot; ray starts an actor per slot asking ``resources`` ({"NPU": 1}, {"GPU": 1} or {"CPU": 1}) each."""
    kind = options.kind or ("local" if len(slots) > 1 else "inline")
    if kind == "inline":
        return InlineExecutor(device, requires)
    if kind == "local":
        return LocalExecutor(slots, requires, preload)
    if kind == "ray":
        from .executor_ray import RayExecutor  # Ray is optional: imported only when asked for
        resources = resources or {"CPU": 1}
        count = len(slots) if options.devices is not None or "CPU" in resources else None  # None: the cluster's
        return RayExecutor(count, requires, resources, options.address, preload)
    raise ValueError(f"--executor: {kind!r} is not one of {', '.join(EXECUTORS)}")


def check_runner(options: Options):
    """A run_checks-like callable (jobs, check, workers, on_result=None, quick=False) -> results that runs the
    jobs on ``options``' local or ray executor (check_jobs), or None for inline (the caller's forked pool)."""
    if options is None or options.kind not in ("local", "ray"):
        return None
    return lambda jobs, check, workers, on_result=None, quick=False: check_jobs(jobs, check, options, workers,
                                                                                 on_result, quick)


# ---------------------------------------------------------------- driver side: checks

def check_jobs(jobs: list, check: str, options: Options, workers: int, on_result=None, quick: bool = False) -> list:
    """One result per job, in order, from ``check``'s task run on ``options``' executor (local: ``workers``
    processes, one per core; ray: ``workers`` one-CPU actors). check: "ascend", "cuda" or "ascend-run".

    ascend/cuda: (ok, detail, stats) as checks.run_checks; ascend-run: (status, detail, seconds) as
    ascend_run.run_job. A job that timed out or whose worker died fails with that reason. When no worker can
    run at all (every one refused or dead while starting) it says why and exits with status 2: a job never run
    must not become a verdict."""
    import sys

    from .executor import ExecutorError
    from .._backend import TRITON_FLAVOUR
    stale = True
    if check == "ascend":
        from ..checks import ascend
        stale = ascend.CHECK_STALE
    fn = ASCEND_RUN_FN if check == "ascend-run" else CHECK_FN
    keys = [json.dumps([check, quick, stale, job_ref(j)], sort_keys=True) for j in jobs]
    tasks = [Task(k, fn, {"check": check, "job": job_ref(j), "quick": quick, "check_stale": stale}, j.label)
             for k, j in zip(keys, jobs)]
    journal = Journal(options.journal, options.resume) if options.journal else None
    done = {} if journal is None else journal.done
    by_key = {k: i for i, k in enumerate(keys)}
    if on_result is not None:
        for k in keys:
            if k in done:
                on_result(jobs[by_key[k]])
    timeout = options.timeout or CHECK_TIMEOUT_S
    try:
        with make(options, cpu_slots(workers), {"flavour": TRITON_FLAVOUR}, resources={"CPU": 1}) as ex:
            for o in ex.run([t for t in tasks if t.key not in done], timeout=timeout):
                done[o.task.key] = journal.append(o) if journal is not None else {
                    "status": o.status, "value": o.value, "detail": o.detail, "seconds": o.seconds}
                if on_result is not None:
                    on_result(jobs[by_key[o.task.key]])
            restarts = ex.restarts
    except ExecutorError as e:
        print(f"{check}: {e}" + (f"; what finished is in {journal.path} (--resume)" if journal else ""),
              file=sys.stderr)
        raise SystemExit(2) from e
    finally:
        if journal is not None:
            journal.close()
    if restarts:
        print(f"{check}: {restarts} worker restarts (timeouts or crashes, listed as failures)", file=sys.stderr)
    out = []
    for k in keys:
        rec = done[k]
        if rec["status"] == "ok":
            out.append(tuple(rec["value"]))
        elif check == "ascend-run":
            out.append(("error", f"{rec['status']}: {rec['detail']}", rec.get("seconds", 0.0)))
        else:
            out.append((False, f"{rec['status']}: {rec['detail']}", {}))
    return out
