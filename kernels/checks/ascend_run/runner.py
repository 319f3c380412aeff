"""``python -m atlas_kernels.checks ascend-run``: every kernel's case (checks/cases.py) run on this CPU as on each
target, compared with the reference; one table."""
from __future__ import annotations

from .. import ascend
from ..cases import case_for
from .launch import LaunchError, on_cpu_as
from .mlir import Unsupported

def _bits(t):
    import torch
    return t.contiguous().view(torch.uint8) if t.dtype != torch.bool else t


def compare(name: str, got, expected, rule: str):
    """None if ``got`` passes ``rule`` against ``expected`` ("bytes": byte for byte; "close": the interpreter
    tests' testing.TOLERANCES for the dtype), else what differs."""
    import torch
    from ...testing import TOLERANCES
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return f"{name}: got {got.dtype}{tuple(got.shape)}, expected {expected.dtype}{tuple(expected.shape)}"
    diff = (_bits(got) != _bits(expected)).nonzero()
    if not len(diff):
        return None
    if rule == "bytes":
        return f"{name}: {len(diff)} bytes differ from the reference, first at byte index {tuple(diff[0].tolist())}"
    rtol, atol = TOLERANCES[expected.dtype]
    try:
        torch.testing.assert_close(got, expected, rtol=rtol, atol=atol)
    except AssertionError as e:
        return f"{name}: " + " ".join(str(e).split())
    return None


def run_job(job) -> tuple:
    """(status, detail, seconds): status is "match", "MISMATCH", "unsupported" or "error"."""
    import time
    import torch
    from ...autotune.select import override_config
    start = time.time()
    case = case_for(job.spec.name)
    if case is None:
        return "unsupported", "no CPU-run case for this kernel yet (checks/cases.py)", 0.0
    call, expected = case(job.spec.name, job.variant.label)
    try:
        with on_cpu_as(job.target, job.variant.label) as launcher, override_config(job.spec.name, job.config):
            got = call()
    except Unsupported as e:
        return "unsupported", str(e), time.time() - start
    except LaunchError as e:
        return "MISMATCH", str(e), time.time() - start
    except Exception as e:  # noqa: BLE001 - the adapter, bishengir, LLVM or gcc failed: report it, keep the others
        return "error", ascend._first_error(e), time.time() - start
    ran = [k for k in launcher.launched if k[0] == job.spec.name]
    if not ran or ran[0][1] != job.variant.label:
        return "error", f"the op launched {launcher.launched}, not {job.spec.name}[{job.variant.label}]", \
            time.time() - start
    if isinstance(got, torch.Tensor):
        got = [got]
    if not isinstance(expected, list):
        expected = [("out", expected, "bytes")]
    problems = [p for g, (n, e, rule) in zip(got, expected) if (p := compare(n, g, e, rule))]
    if len(got) != len(expected):
        problems.append(f"{len(got)} outputs, expected {len(expected)}")
    if problems:
        return "MISMATCH", "; ".join(problems), time.time() - start
    exact = all(torch.equal(_bits(g), _bits(e)) for g, (_, e, _) in zip(got, expected))
    return "match", "byte-exact" if exact else "within tolerance", time.time() - start


_JOBS: list = []


def _run_index(i: int) -> tuple:
    return run_job(_JOBS[i])  # jobs hold jit functions, which do not pickle: forked workers take them by index


def main(targets: list, prefix: str = "", quiet: bool = False, workers: int = 1, sample: int = 0,
         full: bool = False, run_jobs=None) -> int:
    """Every shipped config of every kernel with a case (names starting with one of the comma-separated
    ``prefix``es), plus ``sample`` other configs of each space (``full``: all of them), on each target, in
    ``workers`` forked processes (run_jobs(jobs, "ascend-run", workers): another way to run them, e.g. the local or
    ray executor's, autotune.runs.check_runner): print a table, return 0 if all match."""
    import concurrent.futures
    import multiprocessing
    from ..jobs import jobs, print_table
    _JOBS[:] = jobs(targets, full=full, prefix=tuple(prefix.split(",")), sample=sample)
    if not _JOBS:  # a --kernels filter that matches nothing must not read as a pass
        print(f"no registered kernel starts with {prefix!r} (--kernels takes comma-separated prefixes)")
        return 2
    rows, counts = [], {}
    if run_jobs is not None:
        results = run_jobs(_JOBS, "ascend-run", workers)
    else:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx) as pool:
            results = list(pool.map(_run_index, range(len(_JOBS)), chunksize=1))
    for job, (status, detail, secs) in zip(_JOBS, results):
        counts[status] = counts.get(status, 0) + 1
        level = (" (HFusion level)" if job.spec.uses_dot else "") + ("" if job.shipped else " (sampled config)")
        if not (quiet and status == "match"):
            rows.append([status, job.label, f"{secs:.1f}s", (detail + level)[:300]])
    _JOBS.clear()
    print_table(rows, ["status", "kernel[variant] target config", "time", "detail"])
    print("\nascend-run: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0 if set(counts) <= {"match"} else 1


def cli(args, run_jobs=None) -> int:
    """``python -m atlas_kernels.checks ascend-run`` (the shared --targets / --kernels / --sample / --full / --jobs /
    -q options)."""
    import atlas_kernels  # noqa: F401  (registers every kernel)
    from ... import _backend
    if _backend.TRITON_FLAVOUR != "triton-ascend":
        print("ascend-run needs triton-ascend (run it in the env that has it, e.g. .venv-ascend/bin/python)")
        return 2
    try:
        ascend.bishengir_compile()
    except ascend.ToolMissing as e:
        print(e)
        return 2
    return main((args.targets or "Ascend910B2,Ascend910_9391").split(","), args.kernels, args.quiet, args.jobs,
                args.sample or 0, args.full, run_jobs)
