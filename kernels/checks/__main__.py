"""python -m atlas_kernels.checks {ascend,cuda} [options]: verify every registered kernel without hardware.

Exit status 0 when every job passed, 1 otherwise, 2 when the environment is wrong.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import print_table


def _reexec_without_interpreter() -> None:
    # @triton.jit returns interpreter wrappers under TRITON_INTERPRET=1; compiling needs the real JITFunction.
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        os.execve(sys.executable, [sys.executable, "-m", "atlas_kernels.checks", *sys.argv[1:]], env)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atlas_kernels.checks", description=__doc__)
    parser.add_argument("check", choices=["ascend", "cuda", "ascend-run"],
                        help="ascend-run: run bishengir's output for every kernel on this CPU (checks/ascend_run/)")
    parser.add_argument("--targets", help="comma-separated targets (default: Ascend910B2,Ascend910_9391 / sm_90,sm_80)")
    parser.add_argument("--kernels", default="", help="only kernels whose name starts with one of these "
                        "comma-separated prefixes")
    parser.add_argument("--full", action="store_true", help="every config of every space, not a sample")
    parser.add_argument("--sample", type=int, help="configs sampled per space besides the shipped ones (default: 2; "
                        "ascend-run: 0)")
    parser.add_argument("--include-negative-control", action="store_true",
                        help="also check the negative controls as ordinary jobs (they must fail)")
    parser.add_argument("--all-socs", action="store_true",
                        help="ascend: every supported A2/A3 SoC in the registry (default: Ascend910B2, Ascend910_9391)")
    parser.add_argument("--write-verdicts", action="store_true",
                        help="ascend: compile every candidate config on the first target and store the verdicts "
                             "(autotune/ascend_verdicts.json) that narrow the Ascend config spaces")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel worker processes")
    parser.add_argument("--json", help="write every result to this file")
    parser.add_argument("-q", "--quiet", action="store_true", help="print failures and the summary only")
    from ..autotune.executor import add_arguments, options_of
    add_arguments(parser, devices=False)  # --executor (here inline by default: the forked pool), --address, ...
    args = parser.parse_args(argv)
    _reexec_without_interpreter()
    from ..autotune.runs import check_runner
    executor_run = check_runner(options_of(args))  # None: inline, the forked pool
    if args.check == "ascend-run":
        from .ascend_run import cli
        return cli(args, executor_run)

    import atlas_kernels  # noqa: F401  (registers every kernel)
    from atlas_kernels import _backend
    from ..autotune import get_target
    from . import RETRY_NOTE, Job, Result, jobs, run_checks
    from ..autotune.targets import ASCEND_TARGETS
    from .ascend import LOCKED
    from .negative_control import LOCK_CONTROL, NEGATIVE_CONTROL, UB_FITS_CONTROL, UB_OVERFLOW_CONTROL

    if args.check == "ascend":
        if _backend.TRITON_FLAVOUR != "triton-ascend":
            print("the ascend check needs triton-ascend (run it in the env that has it, e.g. .venv-ascend/bin/python)")
            return 2
        from .ascend import ToolMissing, bishengir_compile
        try:
            bishengir_compile()
        except ToolMissing as e:
            print(e)
            return 2
        default_targets = ",".join(ASCEND_TARGETS) if args.all_socs else "Ascend910B2,Ascend910_9391"
    else:
        if _backend.TRITON_FLAVOUR != "triton":
            print("the cuda check needs upstream triton (not triton-ascend)")
            return 2
        default_targets = "sm_90,sm_80"
    targets = (args.targets or default_targets).split(",")
    extra = [NEGATIVE_CONTROL, UB_OVERFLOW_CONTROL] if args.include_negative_control else []
    if args.write_verdicts:
        if args.check != "ascend":
            print("--write-verdicts is for the ascend check")
            return 2
        targets = targets[:1]
    todo = jobs(targets, full=args.full, prefix=tuple(args.kernels.split(",")),
                sample=2 if args.sample is None else args.sample, extra_specs=extra, candidates=args.write_verdicts)
    if not todo:  # a --kernels filter that matches nothing must not read as a pass
        print(f"no registered kernel starts with {args.kernels!r} (--kernels takes comma-separated prefixes)")
        return 2

    if args.check == "ascend":  # the check must be able to fail: on a CUDA-only call and on a UB overflow
        target = get_target(targets[0])
        controls = [Job(s, s.variants[0], target, s.default(target, s.variants[0]), shipped=True)
                    for s in (NEGATIVE_CONTROL, UB_OVERFLOW_CONTROL, UB_FITS_CONTROL, LOCK_CONTROL)]
        cuda_only, overflow, fits, lock = [Result(j, *r) for j, r in zip(controls, run_checks(controls, "ascend", 1))]
        if cuda_only.ok:
            print("SELF-TEST FAILED: the CUDA-only negative control lowered; this check cannot catch CUDA-only calls")
            return 1
        if overflow.ok or "ub overflow" not in overflow.detail:
            print("SELF-TEST FAILED: a 65536-element fp32 add compiled or failed otherwise "
                  f"({overflow.detail or 'ok'}); this check cannot catch UB overflows")
            return 1
        if not fits.ok:
            print(f"SELF-TEST FAILED: a 1024-element fp32 add did not compile: {fits.detail}")
            return 1
        if lock.ok or LOCKED not in lock.detail:
            print("SELF-TEST FAILED: a kernel that reads an atomic's result passed "
                  f"({lock.detail or 'ok'}); this check cannot catch cross-core locks")
            return 1
        print("self-test: the CUDA-only control fails to lower, the 65536-element add overflows the UB "
              f"({overflow.detail}) and the last-arrival kernel takes {lock.stats.get('locks')} cross-core lock, as "
              f"they must; the 1024-element add compiles (UB {fits.stats.get('ub')} bytes)")

    start = time.time()
    if args.write_verdicts:
        from . import ascend
        ascend.CHECK_STALE = False  # the verdicts are being remade (forked workers inherit this)
    from ..autotune.tune import Progress
    progress = Progress(len(todo), f"{args.check} check")
    run = executor_run or run_checks
    results = [Result(job, *r) for job, r in zip(todo, run(todo, args.check, args.jobs, lambda job: progress.step()))]
    progress.close()
    elapsed = time.time() - start
    if args.write_verdicts:
        return _write_verdicts(results, elapsed)

    rows = []
    for r in results:
        if args.quiet and r.ok and not r.detail.startswith(RETRY_NOTE):
            continue
        stats = format_stats(r.stats)
        rows.append(["ok" if r.ok else "FAIL", "shipped" if r.job.shipped else "sampled", r.job.label, stats, r.detail])
    print_table(rows, ["status", "config", "kernel[variant] target config", "stats", "detail"])
    failed = [r for r in results if not r.ok]
    locked = ""
    if args.check == "ascend":
        compiled = [r for r in results if "locks" in r.stats]
        locked = (f"; cross-core locks (sync_block_lock): {sum(r.stats['locks'] for r in compiled)} in "
                  f"{sum(bool(r.stats['locks']) for r in compiled)} of {len(compiled)} compiled jobs")
    print(f"\n{args.check} check: {len(results) - len(failed)} passed, {len(failed)} failed "
          f"({len(todo)} jobs over {', '.join(targets)}, {elapsed:.1f}s){locked}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"kernel": r.job.spec.name, "variant": r.job.variant.label, "target": r.job.target.name,
                        "config": r.job.config, "shipped": r.job.shipped, "ok": r.ok, "detail": r.detail,
                        "stats": r.stats} for r in results], f, indent=1)
    return 1 if failed else 0


def format_stats(stats: dict) -> str:
    """One job's stats for the table: planned on-chip bytes against the UB, or the cuda check's counters
    as conservative/launch-like pairs."""
    shown = {k: v for k, v in stats.items() if k not in ("linalg", "ub_size", "how") and not k.startswith("launch_")
             and not (k == "locks" and not v)}
    # cuda: conservative/launch-like pairs
    text = " ".join(f"{k}={v}/{stats['launch_' + k]}" if "launch_" + k in stats else f"{k}={v}"
                    for k, v in shown.items() if k not in ("local", "shared"))
    if stats.get("ub_size") and ("ub" in stats or "ub_required" in stats):
        ub = stats.get("ub", stats.get("ub_required"))
        text += f" ({100 * ub / stats['ub_size']:.0f}% of UB)"
    return text


def _write_verdicts(results: list, elapsed: float) -> int:
    from ..autotune import verdicts
    from .ascend import BISHENG_OPTIONS
    from .. import _backend

    found: dict = {}
    for r in results:
        v = {"ok": r.ok, "linalg": r.stats.get("linalg")}
        if "ub" in r.stats or "ub_required" in r.stats:
            v["ub"] = r.stats.get("ub", r.stats.get("ub_required"))
        if r.stats.get("locks"):
            v["locks"] = r.stats["locks"]
        if not r.ok:
            v["detail"] = r.detail
        found.setdefault(r.job.spec.name, {}).setdefault(r.job.variant.label, {})[verdicts.config_key(r.job.config)] = v
    compiler = f"{_backend.TRITON_FLAVOUR} {_backend.TRITON_VERSION} + bishengir-compile {' '.join(BISHENG_OPTIONS)}"
    verdicts.write(found, results[0].job.target, compiler)
    rows = []
    for kernel, variants in sorted(found.items()):
        for variant, configs in variants.items():
            failed = [r for r in results if r.job.shipped and not r.ok and r.job.spec.name == kernel
                      and r.job.variant.label == variant]
            rows.append([kernel, variant, len(configs), sum(c["ok"] for c in configs.values()),
                         "FAIL: " + failed[0].detail if failed else "ok"])
    print_table(rows, ["kernel", "variant", "candidates", "compiled", "shipped"])
    bad = [r for r in results if r.job.shipped and not r.ok]
    print(f"\nwrote {verdicts.PATH} ({len(results)} configs on {results[0].job.target.name}, {elapsed:.0f}s); "
          f"{len(bad)} shipped configs fail")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
