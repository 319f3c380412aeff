"""Hardware-free verification of every registered kernel.

- ``ascend``: lower TTIR -> Linalg with triton-ascend's adapter (no CANN needed),
  for Atlas A2/A3 targets. Run it in the env that has triton-ascend.
- ``cuda``: compile for sm_90 / sm_80 with upstream Triton (no GPU needed) and
  read registers, spills and shared memory from the cubin.

Both walk KERNELS (atlas_kernels.autotune.registry): every variant of every
kernel, with the target's shipped (default) config and a sample of its
config space (``--full``: the whole space).

Commands: ``python -m atlas_kernels.checks {ascend,ascend-run,cuda}`` (see __main__.py). Nothing here is imported
by ``import atlas_kernels``: the checks are tools for kernel authors and CI, not part of the runtime.

  jobs.py             Job (kernel, variant, target, config), Result, the job list, the printed table
  pool.py             forked workers, one retry per failure
  ascend.py           the Ascend compile check (adapter + bishengir), verdicts
  cuda.py             the CUDA compile check
  ascend_run/         the Ascend CPU run (bishengir's output executed here), see its __init__
  cases.py            the ops on test inputs vs their references, per kernel (used by ascend-run); one
                      cases_<op>.py file per op
  negative_control.py kernels that must fail the checks
"""
from .jobs import Job, Result, jobs, print_table, shipped_configs, signature  # noqa: F401
from .pool import RETRY_NOTE, run_checks  # noqa: F401
