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


def main() -> int:
    failed = []
    for script, *args in SCRIPTS:
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
