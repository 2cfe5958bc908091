"""Run every benchmark once (``make bench``); each writes runs/benchmarks/<name>.json.

Minutes on 2 cores. These are measurements, not tests: nothing here fails on
a slow machine.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRIPTS = [
    ["bench_phantom.py", "--n-lesions", "100"],
    ["bench_reconstruction.py", "--repeat", "5"],
    ["bench_features.py"],
    ["bench_bfloat16_auc.py", "--reuse-from", "runs/default"],
    ["bench_int8.py", "--reuse-from", "runs/default"],
    ["bench_evaluation.py"],
    ["bench_distributed.py"],
]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="run_all.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="benchmarks, in order: " + "; ".join(" ".join(s) for s in SCRIPTS),
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these benchmarks (e.g. bench_features or bench_features.py)"
    )
    args = parser.parse_args(argv)
    wanted = {n if n.endswith(".py") else f"{n}.py" for n in args.only} if args.only else None
    unknown = sorted(wanted - {s[0] for s in SCRIPTS}) if wanted else []
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)}")
    failed = []
    for script, *args in SCRIPTS:
        if wanted is not None and script not in wanted:
            continue
        path = HERE / script
        if not path.exists():
            print(f"[bench] {script}: not present, skipped")
            continue
        print(f"[bench] {script} {' '.join(args)}", flush=True)
        rc = subprocess.call([sys.executable, str(path), *args], cwd=HERE.parent)
        if rc:
            failed.append(script)
    if failed:
        print(f"[bench] failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
