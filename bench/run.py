"""Run every registered op's benchmark cases on whatever device is present.

    python bench/run.py --quick          # CPU: Triton interpreter + traffic meter (small subset)
    python bench/run.py                  # every case; on a GPU/NPU: timings too
    python bench/run.py --ops quant_matmul --device cuda --out bench/results
    python bench/run.py --modelled       # only the modelled table (nothing runs; seconds): modelled.csv
    python bench/run.py --ops quant_matmul --match Llama-3-8B --match "m=1 " --as-target sm_90  # CPU, sm_90's launches

Prints a table and writes results.csv and results.png under --out.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys


def _pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch
    if torch.cuda.is_available():
        return "cuda"
    try:
        import torch_npu  # noqa: F401  (lazy: needs CANN)
        if torch.npu.is_available():
            return "npu"
    except Exception:  # noqa: BLE001 - no NPU stack here
        pass
    return "cpu"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small subset (what CI runs on CPU)")
    parser.add_argument("--ops", help="comma-separated op names or case files (default: all)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "npu"])
    parser.add_argument("--out", default="bench/results", help="folder for results.csv and results.png")
    parser.add_argument("--match", action="append", help="only cases whose shape contains this text (repeatable)")
    parser.add_argument("--modelled", action="store_true",
                        help="print and write (modelled.csv) only the modelled table: each case's launch on "
                             "Ascend910B2, Ascend910B4 and sm_90 from its schedule; runs nothing")
    parser.add_argument("--as-target", help="CPU only: launches pick their config and split as on this target "
                                            "(the interpreter runs them, so the meter counts that target's bytes)")
    args = parser.parse_args(argv)

    device_type = "cpu" if args.modelled else _pick_device(args.device)
    if device_type == "cpu":
        # the kernels must be decorated in interpreter mode: set before triton is imported
        os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import torch
    import atlas_kernels  # noqa: F401
    from atlas_kernels.autotune import detect_target
    from harness import format_table, load_cases, modelled_rows, modelled_table, run_case, write_csv, write_plot

    device = torch.device(device_type)
    target = detect_target(device)
    cases = load_cases(args.ops.split(",") if args.ops else None, quick=args.quick)
    if args.match:
        cases = [c for c in cases if all(text in c.shape for text in args.match)]
    out = pathlib.Path(args.out)
    if args.modelled:
        rows = modelled_rows(cases)
        print("modelled (nothing ran: bytes moved by each launch's tiling and split, over the target's unverified "
              "vendor bandwidth x cores busy):")
        print(format_table(rows))
        out.mkdir(parents=True, exist_ok=True)
        write_csv(rows, out / "modelled.csv")
        print(f"\nwrote {out / 'modelled.csv'}")
        return 0
    cases = [c for c in cases if not c.modelled_only]
    if args.as_target:
        if device_type != "cpu":
            parser.error("--as-target is for the interpreter (CPU) only")
        from atlas_kernels import _backend
        from atlas_kernels.autotune import get_target
        as_target = get_target(args.as_target)
        _backend.target_for = lambda device: as_target
    print(f"atlas-kernels bench: device={device_type} target={target.name} cases={len(cases)}"
          f"{f' (launches planned as on {args.as_target})' if args.as_target else ''}"
          f"{' (quick)' if args.quick else ''}", flush=True)
    rows = []
    for i, case in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] {case.op} {case.shape}", flush=True)
        rows.append(run_case(case, device, target))
    print()
    print(format_table(rows))
    modelled = modelled_table(rows)
    if modelled:
        print("\nmodelled, in microseconds (from each target's unverified peak figures; not measured):")
        print(format_table(modelled))
    plan = [p for r in rows for p in r["plan"]]
    if plan:
        print("\nAscend launch plan: the config each launch picks on A2/A3, the UB that bishengir planned for it "
              "(stored verdicts) and output tiles per core (modelled: no NPU ran these):")
        print(format_table(plan))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "results.csv")
    write_plot(rows, out / "results.png", device_type)
    print(f"\nwrote {out / 'results.csv'} and {out / 'results.png'}")
    bad = [r for r in rows if not r["correct"]]
    if bad:
        print(f"{len(bad)} case(s) differ from the reference")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
