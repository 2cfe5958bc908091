"""Generated reference pages of the book: chapter parameters and provenance.

Both pages are written into ``book/chapters/`` (git-ignored) by the runner
before the book is built: the parameter table is read from the notebooks'
``parameters`` cells and the profiles, the provenance page from the run's
``run.json``. Nothing on them is typed by hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .store import atomic_path, load_json
from .config import PROFILE_DIR, REPO_ROOT

__all__ = [
    "parameter_table",
    "parameters_page",
    "provenance_page",
    "benchmarks_page",
    "write_generated_pages",
]


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _kv_table(title: str, items, header: tuple[str, str] = ("item", "value")) -> list[str]:
    """Lines of a two-column Markdown table under a ``##`` heading ([] when ``items`` is empty)."""
    items = list(items)
    if not items:
        return []
    lines = [f"## {title}", "", f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {_md_escape(k)} | {_md_escape(v)} |" for k, v in items]
    return lines + [""]


def parameter_table(notebook_dir: Path | None = None) -> "pandas.DataFrame":  # noqa: F821
    """One row per (chapter, parameter): default, type, comment and profile values."""
    import pandas as pd
    import yaml

    from .run import NOTEBOOK_DIR, chapters, notebook_parameters

    profiles = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(PROFILE_DIR.glob("*.yaml"))}
    rows = []
    for nb in chapters(notebook_dir or NOTEBOOK_DIR):
        for name, info in notebook_parameters(nb).items():
            row = {
                "chapter": nb.stem,
                "parameter": name,
                "default": info["default"],
                "type": info["type"],
                "meaning": info["help"],
            }
            for pname, prof in profiles.items():
                row[pname] = json.dumps(prof[name]) if name in prof else "—"
            rows.append(row)
    return pd.DataFrame(rows)


def parameters_page(notebook_dir: Path | None = None) -> str:
    table = parameter_table(notebook_dir)
    lines = [
        "# Chapter parameters",
        "",
        "Read from the `parameters` cell of every notebook in `notebooks/` and from the",
        "profiles in `params/` when the book was built. A chapter run on its own uses the",
        "*default* column; `python -m uslib run --profile params/NAME.yaml` passes the profile's",
        "values. To re-run one chapter with a new value:",
        "",
        "```bash",
        ".venv/bin/papermill notebooks/05_cross_validation.ipynb out.ipynb -p svm_c 10",
        "```",
        "",
    ]
    for chapter, sub in table.groupby("chapter", sort=True):
        lines += [f"## `{chapter}`", ""]
        cols = [c for c in sub.columns if c != "chapter"]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for _, r in sub.iterrows():
            cells = []
            for c in cols:
                v = r[c]
                cells.append(f"`{_md_escape(v)}`" if c in ("parameter", "default") else _md_escape(v))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def provenance_page(run_dir: str | os.PathLike) -> str:
    """Markdown summary of ``<run_dir>/run.json``."""
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    rec = load_json(path) if path.exists() else {}
    prov = rec.get("provenance", {})
    lines = [
        "# Provenance",
        "",
        f"Generated from `{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}` "
        "when the book was built: what ran, on what, with which inputs.",
        "",
        "## Run",
        "",
        "| item | value |",
        "|---|---|",
        f"| profile | `{rec.get('profile')}` |",
        f"| started (UTC) | {rec.get('started')} |",
        f"| finished (UTC) | {rec.get('finished')} |",
        f"| git commit | `{prov.get('git_commit')}` |",
        f"| uslib | {prov.get('uslib')} |",
        f"| Python | {prov.get('python')} |",
        f"| platform | {_md_escape(prov.get('platform'))} |",
        f"| CPUs | {prov.get('cpu_count')} |",
        "",
    ]
    lines += _kv_table("Data set", rec.get("dataset", {}).items())
    weights = rec.get("weights", {})
    if weights:
        lines += ["## Network weights used", "", "| backbone | kind | source | fingerprint | note |", "|---|---|---|---|---|"]
        for name, w in weights.items():
            lines.append(
                f"| {name} | **{w.get('kind')}** | {_md_escape(w.get('source'))} | `{w.get('fingerprint')}` | "
                f"{_md_escape(w.get('message', ''))} |"
            )
        lines.append("")
    lines += _kv_table("Stage timings", rec.get("stage_seconds", {}).items(), ("stage", "seconds"))
    lines += _kv_table("Package versions", sorted(prov.get("packages", {}).items()), ("package", "version"))
    params = rec.get("parameters", {})
    if params:
        lines += ["## Parameters of this run", "", "```yaml"]
        lines += [f"{k}: {json.dumps(v)}" for k, v in params.items()]
        lines += ["```", ""]
    return "\n".join(lines)


#: The project's speed and memory targets (from its issues), shown beside the measurements.
TARGETS = [
    ("phantom", "simulate 100 lesions", "< 60 s on 2 cores"),
    ("reconstruction", "one 2000×510 scan at 40/50/60 dB", "reported (envelope computed once per scan)"),
    ("features", "compiled batched extraction vs one-image model.predict", "≥ 2× naive, ≥ 50 % of the matmul roofline, peak RSS < 4 GiB"),
    ("evaluation", "Train × Test matrix, both backbones, default profile", "< 60 s on 2 cores"),
    ("book", "make book on params/default.yaml", "< 15 min cold, < 3 min warm (excluding installation)"),
]


def benchmarks_page(run_dir: str | os.PathLike | None = None, bench_dir: Path | None = None) -> str:
    """Markdown: the targets, this build's own stage timings, and ``runs/benchmarks/*.json``."""
    bench_dir = bench_dir or (REPO_ROOT / "runs" / "benchmarks")
    lines = [
        "# Benchmarks",
        "",
        "Speed and memory of the pipeline's stages against the project's targets. The tests",
        "never assert timings; the figures below are measurements on the machine that built",
        "this book, each with the command that produced it. `make bench` refreshes them.",
        "",
        "## Targets",
        "",
        "| benchmark | what | target |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {w} | {t} |" for n, w, t in TARGETS]
    lines.append("")
    if run_dir is not None and (Path(run_dir) / "run.json").exists():
        rec = load_json(Path(run_dir) / "run.json")
        st = rec.get("stage_seconds", {})
        if st:
            table = _kv_table("This build", st.items(), ("stage", "seconds"))
            note = (f"Stage timings of the run this book shows (profile `{rec.get('profile')}`; a stage that "
                    "found its results cached is fast, so a warm rebuild reads differently from a cold one):")
            lines += table[:2] + [note, ""] + table[2:]
    files = sorted(bench_dir.glob("*.json")) if bench_dir.exists() else []
    if not files:
        lines += ["```{note}", "No benchmark script has been run on this machine yet: run `make bench`, then rebuild the book.", "```", ""]
        return "\n".join(lines)
    for f in files:
        rec = load_json(f)
        lines += [f"## {rec.get('name', f.stem)}", "",
                  f"Measured {rec.get('measured')} on {_md_escape(rec.get('machine', {}).get('platform'))}, "
                  f"{rec.get('machine', {}).get('cpu_count')} CPUs, with `{_md_escape(rec.get('command'))}`.", ""]
        if rec.get("notes"):
            lines += [_md_escape(rec["notes"]), ""]
        lines += ["| figure | value |", "|---|---|"]
        lines += [f"| {_md_escape(k)} | {_fmt(v)} |" for k, v in _flatten(rec.get("figures", {})).items()]
        lines.append("")
    return "\n".join(lines)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, name + " / "))
        else:
            out[name] = v
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return _md_escape(v)


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_generated_pages(run_dir: str | os.PathLike, out_dir: Path | None = None) -> list[Path]:
    """Write ``parameters.md``, ``provenance.md`` and ``benchmarks.md`` into ``book/chapters/``."""
    out_dir = out_dir or (REPO_ROOT / "book" / "chapters")
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = {
        "parameters.md": parameters_page(),
        "provenance.md": provenance_page(run_dir),
        "benchmarks.md": benchmarks_page(run_dir),
    }
    written = []
    for name, text in pages.items():
        _write(out_dir / name, text)
        written.append(out_dir / name)
    return written
