"""`python -m atlas_kernels info`: backend, target, Triton flavour and version, interpreter on/off."""
import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="atlas-kernels", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info_p = sub.add_parser("info", help="print backend facts")
    info_p.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if args.command == "info":
        import atlas_kernels
        facts = atlas_kernels.info()
        if args.json:
            print(json.dumps(facts, indent=2))
        else:
            width = max(map(len, facts))
            for key, value in facts.items():
                print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
