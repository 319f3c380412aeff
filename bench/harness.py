"""Benchmark harness: BenchCase (what each op contributes) and the runner behind bench/run.py.

Each op adds bench/cases/<op>.py with ``cases() -> list[BenchCase]``. Per case the
runner reports: correct vs the reference; on CPU (Triton interpreter) the
bytes every tl.load/tl.store moved against the minimum and against the unfused
torch reference; on a GPU or NPU the median time (triton.testing.do_bench),
GB/s and % of the device's peak, and the time of the reference, of
torch.compile(reference) and of any baselines the case names.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import math
import pathlib
import time
from typing import Any, Callable, Optional

import torch


def _default_check(out, ref) -> bool:
    outs, refs = (out, ref) if isinstance(out, (tuple, list)) else ((out,), (ref,))
    for o, r in zip(outs, refs):
        if not isinstance(o, torch.Tensor):
            continue
        if o.shape != r.shape or o.dtype != r.dtype:
            return False
        if o.is_floating_point():
            from atlas_kernels.testing import TOLERANCES
            rtol, atol = TOLERANCES[o.dtype]
            if not torch.allclose(o.float(), r.float(), rtol=rtol, atol=atol):
                return False
        elif not torch.equal(o, r):
            return False
    return True


@dataclasses.dataclass
class BenchCase:
    """One op on one shape.

    setup(device) -> dict of inputs; run(inputs) -> our output; reference(inputs) -> the
    pure-torch output; min_bytes(inputs, out) -> bytes if each input byte is read once and
    each output byte written once. flops(inputs) gives TOPS/TFLOPS where it means something;
    modelled(inputs, target) -> {label: seconds} for figures from a hardware model (always
    reported as modelled); baselines: {label: fn(inputs)} timed on a device only;
    extra(inputs, out, row) -> {column: value}: further measured columns (e.g. a compression ratio),
    given the row so far. schedule(target) -> what the launch would do on that target without running it
    (config, tiles, split_k, cores, cores_busy 0..1, bytes moved), for the modelled table (``modelled_rows``);
    modelled_only: in that table only (its setup is too slow to run, e.g. encoding a 70B layer on the host).
    """

    op: str
    shape: str
    setup: Callable[[torch.device], dict]
    run: Callable[[dict], Any]
    reference: Callable[[dict], Any]
    min_bytes: Callable[[dict, Any], int]
    check: Callable[[Any, Any], bool] = _default_check
    flops: Optional[Callable[[dict], float]] = None
    modelled: Optional[Callable[[dict, Any], dict]] = None
    baselines: dict = dataclasses.field(default_factory=dict)
    extra: Optional[Callable[[dict, Any, dict], dict]] = None
    quick: bool = False
    schedule: Optional[Callable[[Any], dict]] = None
    modelled_only: bool = False


CASES_DIR = pathlib.Path(__file__).parent / "cases"


def load_cases(ops: list | None = None, quick: bool = False) -> list:
    cases = []
    for path in sorted(CASES_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"bench_cases_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for case in module.cases():
            if ops and case.op not in ops and path.stem not in ops:
                continue
            if quick and not case.quick:
                continue
            cases.append(case)
    return cases


MODELLED_TARGETS = ("Ascend910B2", "Ascend910B4", "sm_90")


def modelled_rows(cases: list, targets=MODELLED_TARGETS) -> list:
    """One row per (case with a schedule, target): the launch's config, output tiles, split_k, cores, cores_busy
    and bytes moved (both launches of a split), and modelled times: the GEMM's bytes / (the target's bandwidth x
    cores_busy), plus a split's reduction (``reduce_us``: its bytes over the vector cores it keeps busy);
    ``unsplit_us`` the same launch without a split, and ``launch_budget_us`` = unsplit_us - modelled_us, the most
    the reduction's own launch may cost for the split to pay (that fixed cost is not modelled: it needs a device).
    Nothing runs; the bandwidths are unverified vendor figures, so the times are modelled, not measured."""
    from atlas_kernels.autotune import get_target
    rows = []
    for case in cases:
        if case.schedule is None:
            continue
        for tname in targets:
            target = get_target(tname)
            sched = case.schedule(target)
            config = ",".join(f"{k}={v}" for k, v in sched["config"].items())
            bw = target.mem_bandwidth
            reduce_us = (sched["reduce_bytes"] / (bw * sched["reduce_cores_busy"]) * 1e6 if sched["reduce_bytes"]
                         else 0.0)
            gemm_us = (sched["bytes"] - sched["reduce_bytes"]) / (bw * sched["cores_busy"]) * 1e6
            unsplit_us = sched["unsplit_bytes"] / (bw * sched["unsplit_cores_busy"]) * 1e6
            rows.append({"op": case.op, "case": case.shape, "target": tname, "config": config,
                         "tiles": sched["tiles"], "split_k": sched["split_k"], "cores": sched["cores"],
                         "cores_busy": round(sched["cores_busy"], 4), "bytes": sched["bytes"],
                         "reduce_us": round(reduce_us, 3), "modelled_us": round(gemm_us + reduce_us, 3),
                         "unsplit_us": round(unsplit_us, 3),
                         "launch_budget_us": round(unsplit_us - gemm_us - reduce_us, 3)})
    return rows


def _time_ms(fn) -> float:
    import triton.testing
    return triton.testing.do_bench(fn, return_mode="median")


def run_case(case: BenchCase, device: torch.device, target) -> dict:
    from atlas_kernels.testing.meter import TrafficMeter, reference_bytes
    row = {"op": case.op, "shape": case.shape}
    inputs = case.setup(device)
    start = time.time()
    if device.type == "cpu":
        with TrafficMeter() as meter:
            out = case.run(inputs)
    else:
        out = case.run(inputs)
    ref = case.reference(inputs)
    row["correct"] = bool(case.check(out, ref))
    floor = case.min_bytes(inputs, out)
    row["min_MB"] = floor / 1e6
    if device.type == "cpu":
        row["moved_MB"] = meter.total / 1e6
        row["moved/min"] = meter.total / floor if floor else math.nan
        ref_b, ref_ops = reference_bytes(case.reference, inputs)
        row["ref_MB"] = ref_b / 1e6
        row["ref/ours"] = ref_b / meter.total if meter.total else math.nan
        row["ref_aten_ops"] = ref_ops
        row["interp_s"] = time.time() - start
    else:
        ms = _time_ms(lambda: case.run(inputs))
        row["ms"] = ms
        row["GB/s"] = floor / ms / 1e6
        if target.mem_bandwidth:
            row["%peak_bw"] = 100 * floor / (ms * 1e-3) / target.mem_bandwidth
        if case.flops:
            tops = case.flops(inputs) / (ms * 1e-3) / 1e12
            row["TOPS"] = tops
            if target.peak_int8_ops:
                row["%peak_ops"] = 100 * tops * 1e12 / target.peak_int8_ops
        row["ref_ms"] = _time_ms(lambda: case.reference(inputs))
        try:
            compiled = torch.compile(case.reference)
            row["compiled_ref_ms"] = _time_ms(lambda: compiled(inputs))
        except Exception as e:  # noqa: BLE001 - a reference that does not compile is reported, not fatal
            row["compiled_ref_ms"] = f"failed: {type(e).__name__}"
        for label, fn in case.baselines.items():
            row[f"{label}_ms"] = _time_ms(lambda: fn(inputs))
    if case.extra:
        row.update(case.extra(inputs, out, row))
    row["plan"] = ascend_plan(case, inputs)
    if case.modelled:
        from atlas_kernels.autotune import ASCEND_TARGETS, get_target
        for tname in ASCEND_TARGETS:
            for label, seconds in case.modelled(inputs, get_target(tname)).items():
                row[f"modelled_{label}_us[{tname}]"] = seconds * 1e6
    return row


PLAN_TARGETS = ("Ascend910B2", "Ascend910B4", "Ascend910_9391", "Ascend910_9362")


def ascend_plan(case: BenchCase, inputs: dict) -> list:
    """What each launch of ``case`` would be on the Ascend targets, without running it.

    The op's launcher runs with the target forced to each SoC and its kernel launches recorded instead
    of made: kernel, the variant and config that pick_config chose, tiles (from persistent_grid) and
    grid. Planned UB comes from bishengir's stored verdicts (autotune/ascend_verdicts.json). Outputs of
    the skipped launches are never read.
    """
    from unittest import mock
    from atlas_kernels import _backend
    from atlas_kernels.autotune import KERNELS, get_target, store, verdicts

    rows = {}
    for tname in PLAN_TARGETS:
        target = get_target(tname)
        picked, tiles, seen = [], [], []
        resolve, grid_of = store.resolve, _backend.persistent_grid

        def record_resolve(kernel, t, variant, shape_key=()):
            choice = resolve(kernel, t, variant, shape_key)
            picked.append((kernel, variant, choice.config))
            return choice

        def record_grid(n_tiles, t, uses_dot=False):
            tiles.append(n_tiles)
            return grid_of(n_tiles, t, uses_dot)

        def record_launch(name, kernel, grid, *args, **kwargs):
            variant, config = next(((v, c) for k, v, c in reversed(picked) if k == name), (None, {}))
            seen.append((name, variant, config, tiles[-1] if tiles else None, grid[0]))

        with mock.patch.object(_backend, "target_for", lambda device: target), \
                mock.patch.object(store, "resolve", record_resolve), \
                mock.patch.object(_backend, "persistent_grid", record_grid), \
                mock.patch.object(_backend, "launch", record_launch):
            try:
                case.run(inputs)
            except Exception:  # noqa: BLE001 - a launcher reading its skipped kernel's output may fail after
                pass           # its launches were recorded; those are all we need
        for i, (name, variant, config, n_tiles, grid) in enumerate(seen):
            spec = KERNELS[name]
            row = rows.setdefault((i, name), {"op": case.op, "shape": case.shape, "kernel": f"{name}[{variant}]",
                                              "config": ",".join(f"{k}={v}" for k, v in config.items())})
            got = verdicts.verdict(name, variant, config, target) if variant else None
            if got and got.get("ok"):
                row["ub_planned"] = f"{got['ub'] / target.ub_bytes:.0%} of {target.ub_bytes // 1024} KiB"
            elif "ub_planned" not in row:
                row["ub_planned"] = "no verdict" if got is None else "FAILS: " + got.get("detail", "")[:40]
            cores = target.programs(spec.uses_dot)
            busy = f"{n_tiles}/{cores} ({min(n_tiles, cores) / cores:.0%})" if n_tiles is not None else f"grid {grid}"
            row[f"tiles/cores[{tname}]"] = busy
    return list(rows.values())


def format_table(rows: list) -> str:
    if not rows:
        return "(no cases)"
    # modelled_<label>_us[<target>] columns go to modelled_table; a plan column is too wide for a table
    cols = list(dict.fromkeys(k for r in rows for k in r
                              if not (k.startswith("modelled_") and k.endswith("]")) and not k.startswith("plan")))

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def modelled_table(rows: list) -> list:
    """Pivot the modelled_<label>_us[<target>] columns: one row per (case, label), one column per target."""
    table = {}
    for r in rows:
        for key, value in r.items():
            if key.startswith("modelled_"):
                label, target = key[len("modelled_"):].rstrip("]").split("[")
                table.setdefault((r["op"], r["shape"], label), {})[target] = value
    return [{"op": op, "shape": shape, "figure": label, **targets} for (op, shape, label), targets in table.items()]


def write_csv(rows: list, path: pathlib.Path) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r if k != "plan"))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_plot(rows: list, path: pathlib.Path, device_type: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['op']}\n{r['shape']}" for r in rows]
    if device_type == "cpu":
        series = [("moved/min", "bytes moved / minimum (lower is better, 1.0 = ideal)"),
                  ("ref/ours", "unfused reference bytes / ours (higher is better)")]
    else:
        series = [("%peak_bw", "% of peak memory bandwidth"), ("ms", "median time (ms)")]
    fig, axes = plt.subplots(len(series), 1, figsize=(max(8, 0.6 * len(rows) + 3), 4 * len(series)), squeeze=False)
    for ax, (key, title) in zip(axes[:, 0], series):
        values = [r.get(key) if isinstance(r.get(key), (int, float)) else 0 for r in rows]
        bars = ax.bar(range(len(rows)), values, color=["tab:green" if r.get("correct") else "tab:red" for r in rows])
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        if key == "moved/min":
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        positive = [v for v in values if v > 0]
        if key == "ref/ours" and positive and max(positive) > 10 * min(positive):
            ax.set_yscale("log")  # one fused op can save 200x where others save 15x
            ax.set_ylim(bottom=1)
        ax.set_title(title)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    fig.suptitle(f"atlas-kernels benchmark ({device_type}; red bar = output differs from the reference)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
