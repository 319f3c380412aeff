"""python -m atlas_kernels.autotune {tune,show,diff}: measure configs, show what a launch uses, compare stores.

  tune --op OP [--shapes SPEC] [--budget TIME]   time each shape's candidate list on this device, merge the best
  tune --op OP --dry-run [--target T1,T2]        compile (CUDA) or lower (Ascend) those candidates, no device needed
  (--full-space: every config of every space instead of the candidate lists)
  show --op OP [--target T] [--shape SPEC]       the config each kernel would use, and where it comes from
  diff A B [--target T]                          compare two stores (a file, a directory, user, shipped, derived)

Exit status: 0 ok, 1 a check failed / the stores differ, 2 wrong environment or arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

# ---------------------------------------------------------------- helpers


def _fmt_config(config: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())


def _table(rows: list, columns: list) -> None:
    from ..checks.jobs import print_table
    print_table(rows, columns)


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def _without_interpreter(argv) -> int | None:
    """Under TRITON_INTERPRET=1 @triton.jit gives interpreter wrappers; compiling needs real JITFunctions.

    Re-run the command without it: exec (from the command line) or a child (when called as main(argv)).
    """
    if not _interpreter_on():
        return None
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "atlas_kernels.autotune", *(sys.argv[1:] if argv is None else argv)]
    if argv is None:
        os.execve(sys.executable, cmd, env)
    return subprocess.run(cmd, env=env).returncode


def _other_python(check: str) -> tuple:
    """(interpreter, how it was found) for the env of the other Triton flavour, or (None, why not)."""
    env_var, venv = ("ATLAS_ASCEND_PYTHON", ".venv-ascend") if check == "ascend" else ("ATLAS_TRITON_PYTHON", ".venv")
    if os.environ.get(env_var):
        return os.environ[env_var], f"{os.environ[env_var]} (${env_var})"
    import atlas_kernels
    roots = [pathlib.Path.cwd(), pathlib.Path(atlas_kernels.__file__).resolve().parents[1]]
    for root in roots:
        py = root / venv / "bin" / "python"
        if py.exists():
            return str(py), str(py)
    flavour = "triton-ascend" if check == "ascend" else "upstream triton"
    return None, (f"the {check} check needs {flavour}, which is not installed here; set {env_var} to a Python that "
                  f"has it (or create {venv}/ next to the package)")


def _delegate(check: str, targets: list, args) -> tuple:
    """Run the dry run for ``targets`` in the other flavour's env; (rows, None) or ([], why it was skipped)."""
    python, found = _other_python(check)
    if python is None:
        return [], found
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        cmd = [python, "-m", "atlas_kernels.autotune", "tune", "--dry-run", "--op", args.op, "--target",
               ",".join(targets), "--jobs", str(args.jobs), "--json", out,
               *(["--shapes", args.shapes] if args.shapes else []), *(["--full-space"] if args.full_space else []),
               *(["--executor", args.executor] if args.executor else []),
               *(["--address", args.address] if args.address else []),
               *(["--timeout", str(args.timeout)] if args.timeout else [])]
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        print(f"{check} targets {','.join(targets)}: running in {found}", file=sys.stderr)
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode not in (0, 1) or not os.path.exists(out):
            tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
            return [], f"{found} exited with status {proc.returncode}" + (f": {tail}" if tail else "")
        with open(out) as f:
            return json.load(f), None


# ---------------------------------------------------------------- tune --dry-run

DRY_RUN_TARGETS = "Ascend910B2,sm_90"


def dry_run(args) -> int:
    from .._backend import TRITON_FLAVOUR
    from .executor import options_of
    from .runs import check_runner
    from .targets import get_target
    from .tune import CHECK_OF, Progress, dry_run_jobs, parse_shapes, result_rows, run_checks, select_kernels, summarize

    specs = select_kernels(args.op)
    shapes = parse_shapes(args.shapes) if args.shapes else None
    targets = (args.target or DRY_RUN_TARGETS).split(",")
    checks = {}
    for name in targets:
        t = get_target(name)
        if t.backend not in CHECK_OF:
            raise ValueError(f"--target: {name} is the CPU interpreter; nothing compiles for it (pick an Ascend SoC "
                             f"or sm_80/sm_90)")
        checks[name] = CHECK_OF[t.backend]
    mine = "ascend" if TRITON_FLAVOUR == "triton-ascend" else "cuda"
    local = [t for t in targets if checks[t] == mine]
    foreign = [t for t in targets if checks[t] != mine]

    start = time.time()
    rows, skipped = [], {}
    for name in local:
        jobs = dry_run_jobs(specs, name, shapes, args.full_space)
        progress = Progress(len(jobs), f"{name} {mine}")
        results = run_checks(jobs, mine, args.jobs, progress, quick=not args.full_space,
                             run=check_runner(options_of(args)))
        progress.close()
        rows += result_rows(jobs, results, mine)
    if foreign:
        other = "cuda" if mine == "ascend" else "ascend"
        got, why = _delegate(other, foreign, args)
        rows += got
        if why:
            skipped.update({t: why for t in foreign})
    elapsed = time.time() - start

    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    what = ("every config of every space" if args.full_space else
            f"the candidate lists at {args.shapes if shapes else 'the tuning shapes'}")
    print(f"dry run: {what}, {len(specs)} kernels ({args.op})")
    _table(summarize(rows), ["kernel", "target", "check", "configs", "passed", "failed", "defaults ok"])
    failed = [r for r in rows if not r["ok"]]
    for r in failed[:20]:
        tag = " (derived default)" if r["default"] else ""
        print(f"FAIL {r['kernel']}[{r['variant']}] {r['target']} {_fmt_config(r['config'])}{tag}: {r['detail']}")
    if len(failed) > 20:
        print(f"... and {len(failed) - 20} more failures (--json FILE lists all)")
    from ..checks.pool import RETRY_NOTE
    for r in rows:
        if r["ok"] and r["detail"].startswith(RETRY_NOTE):
            print(f"RETRIED {r['kernel']}[{r['variant']}] {r['target']} {_fmt_config(r['config'])}: {r['detail']}")
    print()
    for name in targets:
        mine_rows = [r for r in rows if r["target"] == name]
        if name in skipped:
            print(f"{name}: SKIPPED ({checks[name]} check): {skipped[name]}")
            continue
        n_ok = sum(r["ok"] for r in mine_rows)
        retried = sum(r["ok"] and r["detail"].startswith(RETRY_NOTE) for r in mine_rows)
        check = "Ascend compile" if checks[name] == "ascend" else "CUDA compile"
        hows = {}
        for r in mine_rows:
            how = (r.get("stats") or {}).get("how", "checked")
            how = "same kernel as another candidate" if how.startswith("same kernel as") else how
            hows[how] = hows.get(how, 0) + 1
        print(f"{name} ({check}): {len(mine_rows)} configs, {n_ok} passed"
              + (f" ({retried} on a retry)" if retried else "") + f", {len(mine_rows) - n_ok} failed"
              + (f"; {', '.join(f'{n} {how}' for how, n in sorted(hows.items()))}" if hows else ""))
    print(f"({elapsed:.1f}s)")
    if skipped:
        return 2
    return 1 if failed else 0


# ---------------------------------------------------------------- tune (measure)

def _device(name: str | None):
    import torch
    if name:
        return torch.device(name)
    try:
        import torch_npu  # noqa: F401
        if torch.npu.is_available():
            return torch.device("npu", 0)
    except ImportError:
        pass
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def timing_refusal(device) -> str | None:
    """Why configs cannot be timed on ``device`` (None: they can)."""
    from .runs import TIMER_ENV
    if os.environ.get(TIMER_ENV):
        print(f"tune: ${TIMER_ENV} is set: times come from the config alone (a test timer), nothing is timed",
              file=sys.stderr)
        return None
    if _interpreter_on() or device.type == "cpu":
        why = "TRITON_INTERPRET=1 is set" if _interpreter_on() else "no CUDA GPU or Ascend NPU is available"
        return (f"tune: refusing to time configs: {why}, and times in Triton's CPU interpreter say nothing about a "
                f"GPU or NPU. Run on the device you tune for, or use --dry-run to compile/lower every config.")
    return None


def _visible(kind: str) -> int:
    import torch
    if kind == "npu":
        return torch.npu.device_count()
    return torch.cuda.device_count() if kind == "cuda" else 1


def measure_cli(args) -> int:
    from . import store
    from .candidates import CANDIDATE_LIMIT, candidates
    from .executor import ExecutorError, Journal, device_slots, options_of
    from .runs import make
    from .runs import TUNE_TIMEOUT_S, Group, failures, tune_groups
    from .targets import detect_target, get_target
    from .tune import Progress, entry_of, parse_budget, parse_shapes, select_kernels, tuned_groups

    options = options_of(args)
    if options.kind == "ray" and args.target:  # the devices are the cluster's: this machine need have none
        target = get_target(args.target)
        kind = target.backend
        refusal = timing_refusal(__import__("torch").device("cpu")) if kind == "cpu" else None
    else:
        device = _device(args.device)
        refusal = timing_refusal(device)
        kind = device.type
    if refusal:
        print(refusal)
        return 2
    if not (options.kind == "ray" and args.target):
        target = detect_target(device)
        if args.target and args.target != target.name:
            print(f"tune: --target {args.target} but this device is {target.name}; configs are measured on this "
                  f"device only (--dry-run checks other targets; --executor ray --target T times on a cluster's)")
            return 2
    budget = parse_budget(args.budget)
    given = parse_shapes(args.shapes) if args.shapes else None
    groups, skipped = [], []
    for spec in select_kernels(args.op):
        if spec.tuning is None:
            skipped.append(f"{spec.name}: no tuning harness (KernelSpec.tuning); --dry-run still checks it")
            continue
        mine = tuned_groups(spec, given)
        if not mine:
            skipped.append(f"{spec.name}: no shape with dims {','.join(spec.tuning.dims)} given")
            continue
        groups += [Group(spec, v, s, candidates(spec, target, v, None if args.full_space else s,
                                                limit=10**9 if args.full_space else CANDIDATE_LIMIT))
                   for v, s in mine]
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not groups:
        print("tune: nothing to measure")
        return 2
    out_dir = pathlib.Path(args.store) if args.store else store.user_dir()
    index = getattr(device, "index", None) if options.kind != "ray" and args.device else None
    devices = options.devices or ([index] if index is not None else list(range(_visible(kind))))
    try:
        journal = Journal(args.journal or store.store_file(out_dir, target.name).with_suffix(".journal.jsonl"),
                          args.resume)
    except OSError as e:  # the journal lives next to the store: neither can be written, nothing is measured
        print(f"tune: cannot write tuned-config store {out_dir} (its journal: {e})", file=sys.stderr)
        return 1
    resources = {"npu": {"NPU": 1}, "cuda": {"GPU": 1}}.get(kind, {"CPU": 1})
    progress = Progress(0, f"tune {target.name}")
    try:
        with make(options, device_slots(kind, devices), {"target": target.name}, resources=resources,
                  device=str(device) if options.kind != "ray" or not args.target else "cpu") as executor:
            results = tune_groups(groups, target, executor, journal=journal, budget=budget, progress=progress,
                                  timeout=options.timeout or TUNE_TIMEOUT_S)
            workers, refused, restarts = executor.workers, executor.refused, executor.restarts
    except ExecutorError as e:
        progress.close()
        print(f"tune: {e}; what finished is in {journal.path} (--resume continues)")
        return 2
    finally:
        journal.close()
    progress.close()
    name = workers[0]["device_name"] if workers else "?"
    rows, unwritten, cut = [], 0, 0
    for g, res in zip(groups, results):
        best = res.best
        if best is None or (not res.complete and len([t for _, t, _ in res.times if t is not None]) < 2):
            unwritten += 1
            continue
        cut += not res.complete
        try:
            store.merge_into(out_dir, target.name, [entry_of(res, g.spec, name)])
        except store.StoreError as e:  # every later group would fail the same way: stop, say so, exit nonzero
            print(f"tune: {e}; {len(rows)} entries were written before this", file=sys.stderr)
            return 1
        d_ms = res.default_ms
        failed = sum(ms is None for _, ms, _ in res.times)
        rows.append([g.spec.name, g.variant.label, _fmt_config(g.shape), _fmt_config(best[1]), f"{best[0]:.4f}",
                     "-" if d_ms is None else f"{d_ms:.4f}", "-" if d_ms is None else f"{d_ms / best[0]:.2f}x",
                     f"{len(res.times)}/{failed}"])
    _table(rows, ["kernel", "variant", "shape", "best config", "best ms", "default ms", "speedup", "configs/failed"])
    print(f"\nwrote {len(rows)} entries to {store.store_file(out_dir, target.name)}")
    if cut:
        print(f"{cut} (kernel, variant, shape) groups cut short by --budget {args.budget}: the best of the "
              f"candidates timed (in model order) was written")
    if unwritten:
        print(f"{unwritten} (kernel, variant, shape) groups with fewer than two configs timed within --budget "
              f"{args.budget} (or none correct): not written")
    bad = failures(results)
    for kernel, variant, shape, config, note in bad:
        print(f"FAILED {kernel}[{variant}] {_fmt_config(shape)} {_fmt_config(config)}: {note}")
    hosts = sorted({w.get("host", "?") + (f"/node {w['node']}" if w.get("node") else "") for w in workers})
    where = (f"{len({w['slot'] for w in workers})} workers on {', '.join(hosts)}" if workers else
             "no worker started (nothing left to run)")
    print(f"{len(bad)} configs failed; executor {executor.name}: {where}, "
          f"{restarts} restarts" + (f", {len(refused)} refused ({'; '.join(f'{w}: {r}' for w, r in refused)})"
                                    if refused else "") + f"; journal {journal.path}")
    return 0


# ---------------------------------------------------------------- show

def _provenance(entry, path) -> str:
    from .store import stale
    p = entry.provenance
    if p.get("source") == "measured":
        text = (f"measured on {p.get('device')} {p.get('date')}, {p.get('median_ms')} ms "
                f"(default {p.get('default_ms')} ms), {p.get('triton')}, atlas-kernels {p.get('library')}")
    else:
        text = f"derived ({p.get('model', 'hardware model')})"
    notes = stale(entry)
    return f"{text}; {path}" + (f"  [STALE: measured with {'; '.join(notes)}]" if notes else "")


def show(args) -> int:
    from . import store
    from .targets import detect_target, get_target
    from .tune import parse_shapes, select_kernels

    target = get_target(args.target) if args.target else detect_target(_device(None))
    shapes = parse_shapes(args.shape) if args.shape else [None]
    rows = []
    for spec in select_kernels(args.op):
        for variant in spec.variants:
            if args.variant and variant.label != args.variant:
                continue
            for shape in shapes:
                if shape is not None and (spec.tuning is None or set(shape) != set(spec.tuning.dims)):
                    continue
                key = tuple(spec.tuning.bucket(shape)) if shape is not None else ()
                choice = store.resolve(spec.name, target, variant.label, key)
                where = (_provenance(choice.entry, choice.path) if choice.entry is not None
                         else "derived default (KernelSpec.default, hardware model)")
                rows.append([spec.name, variant.label, _fmt_config(shape) if shape else "any",
                             str(list(key)) if key else "-", _fmt_config(choice.config), choice.source, where])
    print(f"target {target.name}; lookup order: " + ", ".join(
        f"{src} {store.store_file(d, target.name)}{'' if store.store_file(d, target.name).exists() else ' (none)'}"
        for src, d in store.lookup_dirs()) + ", derived default")
    _table(rows, ["kernel", "variant", "shape", "bucket", "config", "source", "provenance"])
    if not rows:
        print(f"no kernel of --op {args.op} has a variant {args.variant!r} or tuning dims matching --shape")
        return 2
    return 0


# ---------------------------------------------------------------- diff

def _side(spec: str, target: str | None) -> dict:
    """{target: {key: Entry}} of one diff operand (None for 'derived': filled from the other side)."""
    from . import store
    if spec == "derived":
        return None
    if spec in ("user", "shipped"):
        path = store.user_dir() if spec == "user" else store.SHIPPED_DIR
    else:
        path = pathlib.Path(spec)
        if not path.exists():
            raise ValueError(f"diff: {spec} does not exist (give a store file, a directory, user, shipped or derived)")
    files = [path] if path.is_file() else sorted(path.glob("*.json")) if path.is_dir() else []
    if target:
        files = [f for f in files if f.stem == target] if path.is_dir() else files
    out = {}
    for f in files:
        out[f.stem] = {e.key: e for e in store.read(f)}
    return out


def _derive(other: dict) -> dict:
    from .registry import KERNELS
    from .targets import get_target
    out = {}
    for tname, entries in other.items():
        target = get_target(tname)
        out[tname] = {}
        for key, e in entries.items():
            spec = KERNELS.get(e.kernel)
            if spec is not None and any(v.label == e.variant for v in spec.variants):
                from .store import Entry
                out[tname][key] = Entry(e.kernel, e.variant, e.bucket, spec.default(target, spec.variant(e.variant)),
                                        {"source": "derived"})
    return out


def diff(args) -> int:
    a, b = _side(args.a, args.target), _side(args.b, args.target)
    if a is None and b is None:
        raise ValueError("diff: at most one side may be 'derived'")
    a = _derive(b) if a is None else a
    b = _derive(a) if b is None else b
    same = differ = only_a = only_b = 0
    for tname in sorted(set(a) | set(b)):
        ea, eb = a.get(tname, {}), b.get(tname, {})
        for key in sorted(set(ea) | set(eb), key=lambda k: (k[0], k[1], [str(x) for x in k[2]])):
            label = f"{tname} {key[0]}[{key[1]}] bucket {list(key[2])}"
            if key not in eb:
                only_a += 1
                print(f"< {label}: {_fmt_config(ea[key].config)}")
            elif key not in ea:
                only_b += 1
                print(f"> {label}: {_fmt_config(eb[key].config)}")
            elif ea[key].config != eb[key].config:
                differ += 1
                print(f"! {label}: {_fmt_config(ea[key].config)} | {_fmt_config(eb[key].config)}")
            else:
                same += 1
    print(f"{same} same, {differ} differ, {only_a} only in {args.a}, {only_b} only in {args.b}")
    return 0 if differ == only_a == only_b == 0 else 1


# ---------------------------------------------------------------- main

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atlas_kernels.autotune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tune", help="measure (or with --dry-run, compile/lower) each shape's candidate configs")
    p.add_argument("--op", required=True, help="'all', an op (int4_pack) or a kernel (int4_pack.pack)")
    p.add_argument("--shapes", help="e.g. 'R=1..4096,C=4096;R=7,C=8' (default: each kernel's tuning shapes)")
    p.add_argument("--budget", help="stop measuring after this long (90s, 20m, 2h); finished shapes are kept")
    p.add_argument("--dry-run", action="store_true", help="compile (sm_*) or lower (Ascend) the candidates; no timing")
    p.add_argument("--full-space", action="store_true",
                   help="every config of every space, not the cost model's candidate list (up to "
                        "50 configs per variant and shape)")
    p.add_argument("--target", help=f"comma-separated targets (dry run default: {DRY_RUN_TARGETS}; "
                                    f"measuring: this device's)")
    p.add_argument("--device", help="device to measure on (default: npu:0, else cuda:0)")
    p.add_argument("--store", help="directory to merge results into (default: the user store)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="dry run: parallel worker processes")
    p.add_argument("--json", help="dry run: write every config's result to this file")
    from .executor import add_arguments
    add_arguments(p, journal=False)
    p.add_argument("--journal", help="JSONL file each measurement is appended to as it arrives (default: "
                                     "<store>/<target>.journal.jsonl)")
    p.add_argument("--resume", action="store_true", help="skip the configs the journal already holds")
    p = sub.add_parser("show", help="the config each kernel would use, and where it comes from")
    p.add_argument("--op", required=True)
    p.add_argument("--target", help="target name (default: this device's)")
    p.add_argument("--variant", help="only this variant (dtype/mode key)")
    p.add_argument("--shape", help="shape(s) as in tune --shapes (default: the shape-less lookup)")
    p = sub.add_parser("diff", help="compare two stores")
    p.add_argument("a", help="store file, store directory, 'user', 'shipped' or 'derived'")
    p.add_argument("b")
    p.add_argument("--target", help="only this target's file")
    args = parser.parse_args(argv)
    if args.command == "tune" and args.dry_run:
        rc = _without_interpreter(argv)
        if rc is not None:
            return rc
    import atlas_kernels  # noqa: F401  (registers every kernel)
    from .targets import UnsupportedTargetError
    try:
        if args.command == "tune":
            return dry_run(args) if args.dry_run else measure_cli(args)
        return show(args) if args.command == "show" else diff(args)
    except (ValueError, UnsupportedTargetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
