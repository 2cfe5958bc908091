"""Where benchmark figures go: ``runs/benchmarks/<name>.json``.

The book's *Benchmarks* page is generated from these files when the book is
built (``uslib.pages``), so the figures it shows are the ones last measured on
the machine that built it, with the command that measured them.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

from uslib.store import save_json
from uslib.config import REPO_ROOT

BENCH_DIR = REPO_ROOT / "runs" / "benchmarks"


def write_report(name: str, figures: dict, *, notes: str = "") -> Path:
    """Save one benchmark's figures with the command and the machine that produced them."""
    record = {
        "name": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count()},
        "figures": figures,
        "notes": notes,
    }
    path = save_json(BENCH_DIR / f"{name}.json", record)
    print(f"[bench] figures written to {path}")
    return path
