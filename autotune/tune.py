"""Measuring configs on a device, and the dry run that compiles/lowers every config without one."""
from __future__ import annotations

import dataclasses
import datetime
import itertools
import math
import re
import sys
import time

from .candidates import CANDIDATE_LIMIT, candidates
from .registry import KERNELS
from .select import override_config
from .targets import get_target


# ---------------------------------------------------------------- arguments

def select_kernels(op: str) -> list:
    """Kernel specs for ``--op``: "all", an op ("int4_pack") or one kernel ("int4_pack.pack")."""
    if op == "all":
        return [KERNELS[n] for n in sorted(KERNELS)]
    specs = [KERNELS[n] for n in sorted(KERNELS) if n == op or n.startswith(op + ".")]
    if not specs:
        ops = sorted({n.split(".")[0] for n in KERNELS})
        raise ValueError(f"--op: no kernel named {op!r} or in op {op!r}; ops: {', '.join(ops)}; kernels: "
                         f"{', '.join(sorted(KERNELS))}")
    return specs


def _values(dim: str, text: str) -> list:
    m = re.fullmatch(r"(\d+)\.\.(\d+)", text)
    if m:  # powers of two from lo to hi
        lo, hi = int(m[1]), int(m[2])
        if lo < 1 or hi < lo:
            raise ValueError(f"--shapes: bad range {dim}={text} (want lo..hi with 1 <= lo <= hi)")
        return [1 << e for e in range(math.ceil(math.log2(lo)), int(math.log2(hi)) + 1)]
    try:
        return [int(v) for v in text.split("|")]
    except ValueError:
        raise ValueError(f"--shapes: {dim}={text!r} is not an int, a|b|c or lo..hi") from None


def parse_shapes(text: str) -> list:
    """'R=1..64,C=4096;R=7,C=8' -> [{'R': 1, 'C': 4096}, ...].

    Shapes are separated by ';', dims by ','; a value is an int, alternatives
    a|b|c, or lo..hi (the powers of two in [lo, hi]); each shape is the product.
    """
    shapes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        dims = {}
        for item in part.split(","):
            name, eq, value = item.strip().partition("=")
            if not eq or not name:
                raise ValueError(f"--shapes: {item!r} is not dim=value")
            dims[name.strip()] = _values(name.strip(), value.strip())
        for combo in itertools.product(*dims.values()):
            shapes.append(dict(zip(dims, combo)))
    if not shapes:
        raise ValueError("--shapes: no shape given")
    return shapes


def parse_budget(text: str | None) -> float | None:
    """'90', '90s', '20m', '1.5h' -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9.]+)\s*([smh]?)\s*", text)
    if not m:
        raise ValueError(f"--budget: {text!r} is not a time such as 90s, 20m or 2h")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


# ---------------------------------------------------------------- progress

def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


class Progress:
    """A progress bar with an estimate of the time left, on stderr (no dependencies).

    On a terminal it redraws one line; otherwise it prints a line every 10%.
    """

    def __init__(self, total: int, label: str, stream=None):
        self.total, self.label, self.done, self.failed = max(total, 0), label, 0, 0
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_draw = 0.0
        self._last_decile = -1
        self._rate_from = None

    def line(self, note: str = "") -> str:
        elapsed = time.monotonic() - self.start
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * 24) + "-" * (24 - int(frac * 24))
        if self._rate_from is not None and self.done > self._rate_from[1]:  # the pace since the first result
            t0, d0 = self._rate_from  # (workers' start-up is no part of the time a config takes)
            left = f"~{_clock((time.monotonic() - t0) / (self.done - d0) * (self.total - self.done))} left"
        else:
            left = "? left"
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.label} [{bar}] {self.done}/{self.total} {frac:4.0%}{failed} {_clock(elapsed)} elapsed, "
                f"{left} {note}")

    def step(self, n: int = 1, note: str = "", failed: bool = False) -> None:
        if self._rate_from is None:
            self._rate_from = (time.monotonic(), self.done + n)
        self.done += n
        self.failed += failed
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw > 0.1 or self.done >= self.total:
                self._last_draw = now
                self.stream.write("\r\033[K" + self.line(note)[:160])
                self.stream.flush()
        else:
            decile = int(10 * self.done / self.total) if self.total else 10
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self.line(note) + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


# ---------------------------------------------------------------- dry run

CHECK_OF = {"npu": "ascend", "cuda": "cuda"}


def tuning_shapes(spec, shapes=None) -> list:
    """The shapes ``spec`` is tuned at: those of ``shapes`` with its dims (None: its Tuning.shapes)."""
    if spec.tuning is None:
        return []
    return [s for s in (shapes if shapes is not None else spec.tuning.shapes) if set(s) == set(spec.tuning.dims)]


def tuned_groups(spec, shapes=None) -> list:
    """[(variant, shape)] the tuner measures: each tuning shape with every variant a launch of it takes."""
    return [(v, s) for v in spec.variants for s in tuning_shapes(spec, shapes) if spec.tuning.covers(v, s)]


def dry_run_jobs(specs, target_name: str, shapes=None, full_space: bool = False) -> list:
    """The configs the tuner would time on one target, as check jobs (the derived default marked shipped).

    Per variant: the union of its candidate lists over the tuning shapes (``shapes`` or each kernel's own);
    variants no shape takes are left out. full_space, or a kernel without a tuning harness: every config
    of every variant's space.
    """
    from ..checks.jobs import Job
    target = get_target(target_name)
    out = []
    for spec in specs:
        if full_space or spec.tuning is None:
            per_variant = {v.label: (v, candidates(spec, target, v, None, limit=10**9)) for v in spec.variants}
        else:
            per_variant = {}
            for v, shape in tuned_groups(spec, shapes):
                _, configs = per_variant.setdefault(v.label, (v, []))
                configs.extend(c for c in candidates(spec, target, v, shape) if c not in configs)
        for variant, configs in per_variant.values():
            out.extend(Job(spec, variant, target, c, i == 0) for i, c in enumerate(configs))
    return out


def compile_key(job) -> str:
    """What a check compiles for ``job``: the kernel, its signature, constexprs and launch options. Config keys
    that are no kernel argument (SPLIT_K: the launcher's) leave it unchanged."""
    import json

    from ..checks.jobs import signature
    from .registry import split_config
    sig, constexprs = signature(job.spec, job.variant, job.config)
    return json.dumps([job.spec.name, job.target.name, sig, constexprs, split_config(job.config)[1]], sort_keys=True,
                      default=str)


def run_checks(jobs: list, check: str, workers: int, progress: Progress | None = None, quick: bool = False,
               run=None) -> list:
    """[(ok, detail, stats)] per job (atlas_kernels.checks.run_checks, with a progress bar; quick: see there).

    Jobs that compile the same kernel (compile_key) are checked once, as the shipped job if one of them is;
    the others share its result, with stats["how"] = "same kernel as <config>"."""
    if run is None:  # the forked pool; autotune.runs.check_runner gives the local / ray executors' equivalent
        from ..checks.pool import run_checks as run
    first, todo = {}, []
    for i, job in enumerate(jobs):
        key = compile_key(job)
        if key not in first:
            first[key] = len(todo)
            todo.append(job)
        elif job.shipped and not todo[first[key]].shipped:
            todo[first[key]] = dataclasses.replace(todo[first[key]], config=job.config, shipped=True)
    if progress:
        progress.total = len(todo)
    results = run(todo, check, workers, on_result=(lambda job: progress.step(note=job.spec.name)) if progress else None,
                  quick=quick)
    out = []
    for job in jobs:
        rep = todo[first[compile_key(job)]]
        ok, detail, stats = results[first[compile_key(job)]]
        if rep.config != job.config:
            stats = {**stats, "how": "same kernel as " + " ".join(f"{k}={v}" for k, v in rep.config.items())}
        out.append((ok, detail, stats))
    return out


def result_rows(jobs: list, results: list, check: str) -> list:
    return [{"kernel": j.spec.name, "variant": j.variant.label, "target": j.target.name, "check": check,
             "config": j.config, "default": j.shipped, "ok": ok, "detail": detail, "stats": stats}
            for j, (ok, detail, stats) in zip(jobs, results)]


def summarize(rows: list) -> list:
    """Per (kernel, target): [kernel, target, check, configs, passed, failed, defaults ok]."""
    table = {}
    for r in rows:
        t = table.setdefault((r["kernel"], r["target"]), {"check": r["check"], "n": 0, "ok": 0, "dflt": 0, "dok": 0})
        t["n"] += 1
        t["ok"] += r["ok"]
        if r["default"]:
            t["dflt"] += 1
            t["dok"] += r["ok"]
    return [[k, tg, t["check"], t["n"], t["ok"], t["n"] - t["ok"], f"{t['dok']}/{t['dflt']}"]
            for (k, tg), t in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0]))]


# ---------------------------------------------------------------- measuring

@dataclasses.dataclass
class GroupResult:
    """One (kernel, variant, shape) measured over its config space."""

    kernel: str
    variant: str
    shape: dict
    times: list          # [(config, ms or None, note)]
    default: dict
    complete: bool
    candidates: int = 0  # configs in the list it measured (complete: all of them timed or failed)
    seconds_per_config: float = 0.0  # the slowest config's wall time (compile, check, timing)

    @property
    def best(self):
        timed = [(ms, c) for c, ms, _ in self.times if ms is not None]
        return min(timed, key=lambda t: t[0]) if timed else None

    @property
    def default_ms(self):
        return next((ms for c, ms, _ in self.times if c == self.default), None)


def _same(a, b) -> bool:
    import torch
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.is_floating_point():
            from ..testing import TOLERANCES
            rtol, atol = TOLERANCES.get(a.dtype, (1e-5, 1e-5))
            return torch.allclose(a.float(), b.float(), rtol=rtol, atol=atol, equal_nan=True)
        return torch.equal(a, b)
    return a == b


def do_bench_median(fn) -> float:
    """Median milliseconds of ``fn`` (triton.testing.do_bench)."""
    import triton.testing
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def measure(spec, variant, shape: dict, device, target, timer=None, deadline: float | None = None,
            progress: Progress | None = None, full_space: bool = False, estimate: float = 0.0) -> GroupResult:
    """Time the candidate list (full_space: the whole space) of one variant at one shape on ``device``.

    The derived default runs first; its output is the yardstick: a config whose
    output differs is recorded as wrong, never picked. Stops early (complete=False)
    before a config that would end past ``deadline`` (time.monotonic()), going by the
    slowest config so far (at first ``estimate`` seconds). timer(fn) -> ms; default
    do_bench_median.
    """
    timer = timer or do_bench_median
    configs = candidates(spec, target, variant, None if full_space else shape,
                         limit=10**9 if full_space else CANDIDATE_LIMIT)
    times, expected, complete, slowest = [], None, True, estimate
    if deadline is not None and time.monotonic() + slowest > deadline:
        return GroupResult(spec.name, variant.label, dict(shape), times, configs[0], False, len(configs), slowest)
    call = spec.tuning.make_call(shape, variant, device)
    for config in configs:
        if deadline is not None and time.monotonic() + slowest > deadline:
            complete = False
            break
        started = time.monotonic()

        def run(config=config):
            with override_config(spec.name, config):
                return call()
        try:
            out = run()
            if expected is None:  # the default's output, or the first that ran if the default failed
                expected = out
            if not _same(out, expected):
                times.append((config, None, "output differs from the default config's"))
            else:
                times.append((config, timer(run), ""))
        except Exception as e:  # noqa: BLE001 - a config that fails to compile or run is skipped, not fatal
            times.append((config, None, f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[-1]}"[:200]))
        slowest = max(slowest, time.monotonic() - started)
        if progress:
            progress.step(note=f"{spec.name}[{variant.label}]")
    return GroupResult(spec.name, variant.label, dict(shape), times, configs[0], complete, len(configs), slowest)


def device_name(device) -> str:
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "npu":
        return torch.npu.get_device_name(device)
    return str(device)


def entry_of(result: GroupResult, spec, device) -> "object":
    from .store import Entry, current_versions
    ms, config = result.best
    prov = {"source": "measured", "device": device if isinstance(device, str) else device_name(device),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **current_versions(), "median_ms": round(ms, 6),
            "default_ms": None if result.default_ms is None else round(result.default_ms, 6),
            "configs": sum(t is not None for _, t, _ in result.times), "candidates": result.candidates}
    return Entry(spec.name, result.variant, tuple(spec.tuning.bucket(result.shape)), dict(config), prov,
                 dict(result.shape))


# ---------------------------------------------------------------- warmup

def warmup(op: str = "all", shapes=None, device=None, *, variants=None, tune: bool = False) -> list:
    """Compile kernels ahead of time (e.g. before capturing a CUDA/NPU graph); optionally tune them first.

    op: "all", an op ("int4_pack") or a kernel ("int4_pack.pack").
    shapes: list of shape dicts (each kernel takes those whose dims match its
        KernelSpec.tuning.dims, with the variants a launch of that shape takes;
        default: its tuning shapes). Use the shapes the
        model will run: Triton specialises on sizes (e.g. divisible by 16).
    device: torch device (default: cuda:0 if available, else cpu).
    variants: dtype/mode keys to warm (default: all).
    tune: time each shape's candidate list first and merge the best into the user
        store (where the lookup finds it); refused on the CPU interpreter.
    Each kernel then launches once per (variant, shape) with the config a plain
    call picks, so its binary is compiled and cached. Returns one dict per launch:
    kernel, variant, shape, config, source ("user"/"shipped"/"derived"), seconds.
    """
    import torch

    from . import store
    from .targets import detect_target

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    target = detect_target(device)
    if tune and target.backend == "cpu":
        raise ValueError("warmup: tune=True needs a CUDA GPU or an Ascend NPU; timing in the CPU interpreter is "
                         "meaningless (tune=False just compiles)")
    report, skipped = [], []
    for spec in select_kernels(op):
        if spec.tuning is None:
            skipped.append(spec.name)
            continue
        for variant, shape in tuned_groups(spec, shapes):
            if variants is not None and variant.label not in variants:
                continue
            if tune:
                result = measure(spec, variant, shape, device, target)
                if result.best is not None:
                    store.merge_into(store.user_dir(), target.name, [entry_of(result, spec, device)])
            start = time.perf_counter()
            spec.tuning.make_call(shape, variant, device)()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            choice = store.resolve(spec.name, target, variant.label, tuple(spec.tuning.bucket(shape)))
            report.append({"kernel": spec.name, "variant": variant.label, "shape": dict(shape),
                           "config": choice.config, "source": choice.source,
                           "seconds": time.perf_counter() - start})
    if skipped:
        import warnings
        warnings.warn(f"warmup: {', '.join(skipped)} have no tuning harness (KernelSpec.tuning) and were not "
                      f"warmed; run them once on real inputs instead", RuntimeWarning, stacklevel=2)
    return report
