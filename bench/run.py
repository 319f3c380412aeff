"""Run every registered op's benchmark cases on whatever device is present.

    python bench/run.py --quick          # CPU: Triton interpreter + traffic meter (small subset)
    python bench/run.py                  # every case; on a GPU/NPU: timings too
    python bench/run.py --ops quant_matmul --device cuda --out bench/results

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
    args = parser.parse_args(argv)

    device_type = _pick_device(args.device)
    if device_type == "cpu":
        # the kernels must be decorated in interpreter mode: set before triton is imported
        os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    import torch
    import atlas_kernels  # noqa: F401
    from atlas_kernels.autotune import detect_target
    from harness import format_table, load_cases, modelled_table, run_case, write_csv, write_plot

    device = torch.device(device_type)
    target = detect_target(device)
    cases = load_cases(args.ops.split(",") if args.ops else None, quick=args.quick)
    print(f"atlas-kernels bench: device={device_type} target={target.name} cases={len(cases)}"
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
    out = pathlib.Path(args.out)
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
