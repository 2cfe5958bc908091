"""Generated reference pages of the book: chapter parameters and provenance.

Both pages are written into ``book/chapters/`` (git-ignored) by the runner
before the book is built: the parameter table is read from the notebooks'
``parameters`` cells and the profiles, the provenance page from the run's
``run.json``. Nothing on them is typed by hand.

At about 1,020 lines it is over the house's 900-line guide: it is one job,
the generated pages (parameters, provenance, benchmarks with their targets,
sweeps, the cluster page), and each page's writer shares the same table and
number helpers; splitting it by page would spread those helpers across
modules that only the runner reads.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from . import store
from .hygiene import path_replacements, replace_paths
from .store import atomic_path, load_json, read_run_record
from .tables import format_number
from .config import PROFILE_DIR, REPO_ROOT

__all__ = [
    "parameter_table",
    "parameters_page",
    "provenance_page",
    "benchmarks_page",
    "performance_rows",
    "performance_section",
    "sweep_page",
    "scaling_estimate",
    "cluster_estimate_fragment",
    "sweep_fragment",
    "PLACEHOLDER",
    "write_generated_pages",
]


#: Wording of a page that stands in for content it does not have; no page of the table of contents may
#: carry it (tests/test_book.py, tests/test_pages_content.py).
PLACEHOLDER = re.compile(
    r"no measurements|has not been run|No sweep has been run|No benchmark has been run|"
    r"fills in after|\bTODO\b|\bTBD\b|placeholder|coming soon|lorem ipsum",
    re.I,
)


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
    """One row per parameter of the profile schema (:class:`uslib.config.Profile`).

    Columns: ``parameter``, ``type``, ``allowed`` (values or range),
    ``default``, ``description``, ``required`` (every profile sets it),
    ``chapters`` (the notebooks whose ``parameters`` cell declares it, or
    ``runner``), then one column per profile in ``params/`` (``default.yaml``,
    ...) with its value (JSON). A profile that fails validation gets no column; its error is in
    ``table.attrs["invalid_profiles"]`` (name -> message).
    """
    import pandas as pd

    from .config import ProfileError, load_profile, parameter_specs
    from .config import NOTEBOOK_DIR, chapters, notebook_parameters

    declared: dict[str, list[str]] = {}
    for nb in chapters(notebook_dir or NOTEBOOK_DIR):
        for name in notebook_parameters(nb):
            declared.setdefault(name, []).append(nb.stem[:2])
    profiles, invalid = {}, {}
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        try:
            profiles[path.name] = load_profile(path)
        except ProfileError as e:
            invalid[path.name] = str(e)
    rows = []
    for name, spec in parameter_specs().items():
        row = {
            "parameter": name,
            "type": spec.type,
            "allowed": spec.allowed,
            "default": json.dumps(spec.default),
            "description": spec.description,
            "required": "yes" if spec.required else "",
            "chapters": "runner" if spec.runner_only else ", ".join(declared.get(name, [])),
        }
        for pname, values in profiles.items():
            row[pname] = json.dumps(values[name])
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs["invalid_profiles"] = invalid
    return table


def parameters_page(notebook_dir: Path | None = None) -> str:
    """Markdown: the profile schema and every profile's values, from :func:`parameter_table`."""
    table = parameter_table(notebook_dir)
    lines = [
        "# Chapter parameters",
        "",
        "Every parameter is declared once, in `uslib.config.Profile` (type, accepted values,",
        "default, meaning); this page was generated from that declaration, the notebooks'",
        "`parameters` cells and the profiles in `params/` when the book was built.",
        "`python -m uslib run --profile params/NAME.yaml` validates the whole profile before",
        "any chapter runs and passes each chapter the values it declares; a chapter run on its",
        "own uses the *default* column and checks its parameters in its first code cell. A",
        "string is never read as a boolean or a number, and an unknown name is an error. To",
        "re-run one chapter with a new value:",
        "",
        "```bash",
        ".venv/bin/papermill notebooks/05_cross_validation.ipynb out.ipynb -p svm_c 10",
        "```",
        "",
        "## Parameters",
        "",
        "One row per parameter of the schema. *Required*: every profile file sets it. *Chapters*:",
        "the notebooks (by number) whose `parameters` cell declares it; the runner alone reads",
        "the others.",
        "",
    ]
    cols = ["parameter", "type", "allowed", "default", "description", "required", "chapters"]
    n_chapters = len({c for v in table["chapters"] for c in str(v).split(", ") if c.isdigit()})
    lines += ["| parameter | meaning | type: accepted values | default |", "|---|---|---|---|"]
    for _, r in table.iterrows():
        used = str(r["chapters"])
        used = (
            "Read by the runner only."
            if used == "runner"
            else "Chapters: all."
            if n_chapters > 1 and len(used.split(", ")) == n_chapters
            else f"Chapters: {used}."
        )
        meaning = _md_escape(r["description"]).rstrip(".") + ". " + ("*Required.* " if r["required"] else "") + used
        kind = _md_escape(r["type"]) + (f": {_md_escape(r['allowed'])}" if r["allowed"] else "")
        lines.append(f"| `{_md_escape(r['parameter'])}` | {meaning} | {kind} | `{_md_escape(r['default'])}` |")
    lines.append("")
    profile_cols = [c for c in table.columns if c not in cols]
    if profile_cols:
        lines += [
            "## Profiles",
            "",
            "The value of every parameter in each profile (**bold**: differs from the default).",
            "",
        ]
        lines.append("| parameter | " + " | ".join(f"`{c}`" for c in profile_cols) + " |")
        lines.append("|" + "---|" * (len(profile_cols) + 1))
        for _, r in table.iterrows():
            cells = [
                f"**`{_md_escape(r[c])}`**" if r[c] != r["default"] else f"`{_md_escape(r[c])}`" for c in profile_cols
            ]
            lines.append(f"| `{r['parameter']}` | " + " | ".join(cells) + " |")
        lines.append("")
    for name, message in table.attrs.get("invalid_profiles", {}).items():
        lines += ["```{warning}", f"`params/{name}` is not a valid profile: {message}", "```", ""]
    return "\n".join(lines)


def provenance_page(run_dir: str | os.PathLike) -> str:
    """Markdown summary of ``<run_dir>/run.json``."""
    run_dir = Path(run_dir)
    path = store.record_path(run_dir)
    rec = read_run_record(run_dir)
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
        f"| run id | `{rec.get('run_id')}` |",
        f"| profile | `{rec.get('profile')}` |",
        f"| status | {rec.get('status')} |",
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
        lines += [
            "## Network weights used",
            "",
            "| backbone | kind | source | md5 | fingerprint | note |",
            "|---|---|---|---|---|---|",
        ]
        for name, w in weights.items():
            md5 = f"`{w['md5']}`" if w.get("md5") else "—"
            lines.append(
                f"| {name} | **{w.get('kind')}** | {_md_escape(w.get('source'))} | {md5} | `{w.get('fingerprint')}` | "
                f"{_md_escape(w.get('message', ''))} |"
            )
        lines.append("")
    lines += _stage_timings(rec, "Stage timings")
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
    (
        "features",
        "compiled batched extraction at the default batch rule, per network",
        "share of roofline ≥ 0.85 (the machine's: the largest of sgemm, tf.matmul and tf.nn.conv2d, paired per "
        "round); bfloat16 speed-up ≥ 1.3 with min cosine ≥ 0.99 where the CPU has bf16",
    ),
    (
        "bfloat16_auc",
        "default book's TrainALL/TestALL AUC, bfloat16 against float32, per network",
        "the change reported beside float32's 95 % CI",
    ),
    (
        "int8",
        "OpenVINO + NNCF int8 against TensorFlow float32 on the default book's images, per network "
        "(benchmarks/bench_int8.py)",
        "speed-up ≥ 2.5 at the default batch sizes; min per-image cosine ≥ 0.99; no Train×Test AUC moves by more "
        "than its paired CI; extract_features end to end ≥ 0.90 of the network-only rate",
    ),
    (
        "paper_protocol",
        "python -m uslib run on a 100-lesion OASBUD-schema file, paper protocol, both networks",
        "≤ 15 min float32, ≤ 10 min bfloat16, ≤ 10 min int8 on 2 cores",
    ),
    ("evaluation", "Train × Test matrix, both backbones, default profile", "< 60 s on 2 cores"),
    (
        "book",
        "make book on params/default.yaml (benchmarks/bench_book.py: chapters one after another, side by "
        "side, and a baseline commit, alternated)",
        "< 15 min cold, < 3 min warm (excluding installation); no slower than the baseline",
    ),
    (
        "book_int8",
        "make book on params/default.yaml with precision: int8 (benchmarks/bench_book.py --precision int8)",
        "≤ 4 min cold, ≤ 15 s warm (nothing changed) on 2 cores",
    ),
]


def _stage_timings(rec: dict, title: str) -> list[str]:
    """A ``##`` table of the run's chapter timings (``stages``), with their sum; [] when none ran.

    Only the chapters of the run this book shows are listed: the book build and
    the command's end-to-end time (``stage_seconds.book_build``, ``.total``)
    are written to ``run.json`` after the pages are generated, so a figure
    there belongs to an earlier invocation and is not shown.
    """
    stages = {k: v for k, v in (rec.get("stages") or {}).items() if isinstance(v, dict) and "seconds" in v}
    if not stages:
        stages = {
            k: {"seconds": v} for k, v in (rec.get("stage_seconds") or {}).items() if k not in ("total", "book_build")
        }
    if not stages:
        return []
    lines = [
        f"## {title}",
        "",
        f"Seconds each chapter of run `{rec.get('run_id')}` took (a chapter that found its results cached "
        "takes little time, so a warm rerun reads differently from a cold one; these are records of this "
        "run, not benchmarks).",
        "",
        "| chapter | status | seconds |",
        "|---|---|---|",
    ]
    lines += [
        f"| {_md_escape(k)} | {_md_escape(v.get('status', ''))} | {float(v['seconds']):.1f} |"
        for k, v in stages.items()
    ]
    lines += [f"| all chapters | | {sum(float(v['seconds']) for v in stages.values()):.1f} |", ""]
    steps = {
        k: v
        for k, v in (rec.get("stage_seconds") or {}).items()
        if k not in stages and k not in ("total", "book_build") and isinstance(v, (int, float))
    }
    if steps:
        lines += [
            "Steps inside the chapters, as `run.json` records them (`stage_seconds`: a step a chapter found "
            "cached is not timed again, and a step that two chapters run, such as feature extraction in 04 "
            "and 07, keeps the time of the later one):",
            "",
            "| step | seconds |",
            "|---|---|",
        ]
        lines += [f"| {_md_escape(k)} | {format_number(float(v), 1)} |" for k, v in sorted(steps.items())]
        lines.append("")
    return lines


def benchmarks_page(run_dir: str | os.PathLike | None = None, bench_dir: Path | None = None) -> str:
    """Markdown: the targets, this build's own stage timings, and ``runs/benchmarks/*.json``.

    Without benchmark files the page says so plainly, and how to produce them.
    """
    bench_dir = bench_dir or (REPO_ROOT / "runs" / "benchmarks")
    files = sorted(bench_dir.glob("*.json")) if bench_dir.exists() else []
    intro = (
        "The measurements on this page were made on the machine that built this book, each with the "
        "command that produced it; `make bench` refreshes them."
        if files
        else "This page shows the targets and how long each chapter and each step of the run this book was "
        "built from took (*This build*). The benchmarks (`make bench`: `benchmarks/run_all.py`, each script "
        "writing `runs/benchmarks/<name>.json`) add their measurements here when the book is rebuilt "
        "after them (`python -m uslib build --profile P`)."
    )
    lines = [
        "# Benchmarks",
        "",
        "Speed and memory of the pipeline's stages against the project's targets. The tests never",
        "assert timings. " + intro,
        "",
        "## Targets",
        "",
        "| benchmark | what | target |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {w} | {t} |" for n, w, t in TARGETS]
    lines.append("")
    lines += performance_section(bench_dir)
    if run_dir is not None and store.record_path(run_dir).exists():
        lines += _stage_timings(read_run_record(run_dir), "This build")
    if not files:
        return "\n".join(lines)
    for f in files:
        rec = load_json(f)
        lines += [
            f"## {rec.get('name', f.stem)}",
            "",
            f"Measured {rec.get('measured')} on {_md_escape(rec.get('machine', {}).get('platform'))}, "
            f"{rec.get('machine', {}).get('cpu_count')} CPUs, with `{_md_escape(rec.get('command'))}`.",
            "",
        ]
        if rec.get("notes"):
            lines += [_md_escape(rec["notes"]), ""]
        lines += ["| figure | value |", "|---|---|"]
        lines += [
            f"| {_md_escape(k)} | {_fmt(v)} |"
            for k, v in _flatten(rec.get("figures", {})).items()
            if LAYERS_KEY not in k
        ]  # the per-layer tables are under "Where the time goes"
        lines.append("")
    return "\n".join(lines)


#: Targets of issue 12 (performance), checked by :func:`performance_rows`.
SHARE_TARGET, BF16_SPEEDUP_TARGET, BF16_COSINE_TARGET = 0.85, 1.3, 0.99
PAPER_MINUTES_TARGET = {"float32": 15.0, "bfloat16": 10.0, "int8": 10.0}
#: Issue 24's targets for the default book with ``precision: int8`` (``benchmarks/bench_book.py --precision int8``).
INT8_BOOK_COLD_S, INT8_BOOK_WARM_S = 240.0, 15.0
#: Targets of issue 24 (int8), checked by :func:`int8_rows`.
INT8_SPEEDUP_TARGET, INT8_COSINE_TARGET, END_TO_END_TARGET = 2.5, 0.99, 0.90
#: Key of the per-layer-type table in ``features.json`` (``benchmarks/bench_features.py``).
LAYERS_KEY = "time per layer type (each layer alone, default batch)"


def _load_figures(bench_dir: Path, name: str) -> dict | None:
    path = bench_dir / f"{name}.json"
    if not path.exists():
        return None
    try:
        return load_json(path).get("figures") or None
    except (ValueError, OSError, AttributeError):
        return None


def _share_why(rep: dict) -> str:
    """Why a network's share misses the target, from its own report (best batch, per-layer-type profile)."""
    parts = []
    best = rep.get("best reachable share (best batch size, median of paired rounds)")
    if best is not None:
        parts.append(f"best reachable: {best:.3f} at batch {rep.get('best batch size measured')}")
    layers = rep.get(LAYERS_KEY) or {}
    conv = layers.get("Conv2D")
    if conv:
        s = conv.get("share of roofline")
        parts.append(
            f"its Conv2D layers, timed alone, take {conv['share of time']:.0%} of the time at "
            f"{conv['GFLOP/s']:.0f} GFLOP/s" + (f" ({s:.1%} of the roofline)" if s is not None else "")
        )
        net = rep.get("share of roofline")
        if s is not None and net is not None and net >= 0.95 * s:
            parts.append(
                f"the whole network (fused) runs at {net:.1%}, close to its convolutions alone: the "
                "convolutions themselves, not the layers between them, set the ceiling"
            )
        rest = 1.0 - sum(d.get("share of time", 0.0) for d in layers.values() if d.get("GFLOP/s", 0) > 0)
        if rest > 0.005:
            parts.append(
                f"layers without FLOPs (batch norm, activations, pooling, concatenation) take "
                f"{rest:.0%} (alone, unfused: an upper bound)"
            )
    elif not layers:
        parts.append("no per-layer profile measured (bench_features.py --no-layers)")
    for prob in rep.get("problems", []):
        if "MEASUREMENT WRONG" in prob:
            parts.append(prob)
            break
    return "; ".join(parts)


def performance_rows(features: dict | None, bf16_auc: dict | None = None, paper: dict | None = None) -> list[dict]:
    """Each performance target of issue 12 beside its measured figure: ``target``, ``figure``, ``status``, ``why``.

    ``status`` is ``met``, ``NOT met``, ``not measured`` or ``reported``
    (a figure the issue asks to see, without a threshold). Pure: reads the
    ``figures`` of ``features.json``, ``bfloat16_auc.json`` and
    ``paper_protocol.json`` (None where absent).
    """
    rows: list[dict] = []
    networks = [k for k, v in (features or {}).items() if isinstance(v, dict) and "share of roofline" in v]
    roof = (features or {}).get("roofline [GFLOP/s] (best of all rounds)")
    src = (features or {}).get("roofline source")
    if not networks:
        rows.append(
            {
                "target": f"share of roofline ≥ {SHARE_TARGET} per network",
                "figure": "—",
                "status": "not measured",
                "why": "run benchmarks/bench_features.py",
            }
        )
    for n in networks:
        rep = features[n]
        share = rep.get("share of roofline")
        fig = (
            f"{share:.3f} (each round against its own roofline; best roofline {roof:.0f} GFLOP/s, {src})"
            if share is not None and roof
            else "not reported (over 100 % of the roofline: the measurement is wrong)"
        )
        status = ("met" if share >= SHARE_TARGET else "NOT met") if share is not None else "not measured"
        rows.append(
            {
                "target": f"{n}: share of roofline ≥ {SHARE_TARGET}",
                "figure": fig,
                "status": status,
                "why": "" if status == "met" else _share_why(rep),
                "short": f"{share:.3f}" if share is not None else "not reported",
            }
        )
        if "bfloat16 speed-up (median of paired rounds)" in rep:
            sp, cos = rep["bfloat16 speed-up (median of paired rounds)"], rep.get("bfloat16 min cosine vs float32")
            rows.append(
                {
                    "target": f"{n}: bfloat16 speed-up ≥ {BF16_SPEEDUP_TARGET}",
                    "figure": f"{sp:.2f}×",
                    "status": "met" if sp >= BF16_SPEEDUP_TARGET else "NOT met",
                    "why": "",
                }
            )
            if cos is not None:
                rows.append(
                    {
                        "target": f"{n}: bfloat16 min cosine ≥ {BF16_COSINE_TARGET}",
                        "figure": f"{cos:.5f}",
                        "status": "met" if cos >= BF16_COSINE_TARGET else "NOT met",
                        "why": "",
                    }
                )
        elif features.get("bfloat16", "").startswith("not measured"):
            rows.append(
                {
                    "target": f"{n}: bfloat16 speed-up and fidelity",
                    "figure": "—",
                    "status": "not measured",
                    "why": features["bfloat16"],
                }
            )
    for n, v in (bf16_auc or {}).items():
        ch = v.get("bfloat16 TrainALL/TestALL AUC change") if isinstance(v, dict) else None
        if not ch:
            continue
        lo, hi = ch["float32 95 % CI"]
        blo, bhi = ch["bfloat16 95 % CI"]
        plo, phi = ch["paired 95 % interval of the change"]
        rows.append(
            {
                "target": f"{n}: bfloat16 change of the default book's TrainALL/TestALL AUC, beside its CI",
                "figure": f"{ch['bfloat16 - float32']:+.4f} (float32 {ch['float32 AUC']:.3f} [{lo:.3f}, {hi:.3f}], "
                f"bfloat16 {ch['bfloat16 AUC']:.3f} [{blo:.3f}, {bhi:.3f}]; paired 95 % interval "
                f"[{plo:+.4f}, {phi:+.4f}])",
                "status": "reported",
                "why": (
                    "within float32's CI"
                    if ch.get("change within float32's CI (|change| < half its width)")
                    else "larger than half of float32's CI width"
                ),
            }
        )
    if bf16_auc is None:
        rows.append(
            {
                "target": "bfloat16 change of the default book's TrainALL/TestALL AUC",
                "figure": "—",
                "status": "not measured",
                "why": "run benchmarks/bench_bfloat16_auc.py",
            }
        )
    for prec, limit in PAPER_MINUTES_TARGET.items():
        r = (paper or {}).get(prec)
        if not isinstance(r, dict) or "wall minutes" not in r:
            rows.append(
                {
                    "target": f"paper protocol, {prec}: ≤ {limit:.0f} min",
                    "figure": "—",
                    "status": "not measured",
                    "why": "run benchmarks/bench_paper.py --precision " + prec,
                }
            )
            continue
        mins = float(r["wall minutes"])
        why = ""
        st = r.get("stage seconds") or {}
        if mins > limit and st:
            feat = sum(float(st.get(k, 0)) for k in ("04_features", "07_robustness"))
            tot = float(st.get("total") or r.get("wall seconds") or 0)
            if tot:
                why = f"chapters 04 and 07 (feature extraction) took {feat:.0f} s of {tot:.0f} s"
        bound = _arithmetic_bound(features, r) if mins > limit and prec == "float32" else ""
        if bound:
            why = f"{why}; {bound}" if why else bound
        rows.append(
            {
                "target": f"paper protocol, {prec}: ≤ {limit:.0f} min",
                "figure": f"{mins:.1f} min",
                "short": f"{mins:.1f} min",
                "status": "met" if mins <= limit else "NOT met",
                "why": why,
            }
        )
    return rows


def int8_rows(int8: dict | None) -> list[dict]:
    """Each int8 target of issue 24 beside its figure (rows as :func:`performance_rows`), from ``int8.json``.

    Per network: the int8 speed-up over TensorFlow float32, the minimum (and
    1st percentile) per-image cosine on the book's images, how many
    Train×Test AUCs moved by less than half of float32's CI and whose paired
    interval holds 0, and the end-to-end rate of ``extract_features`` against
    the network alone.
    """
    networks = [k for k, v in (int8 or {}).items() if isinstance(v, dict) and "throughput" in v]
    if not networks:
        return [
            {
                "target": f"int8 speed-up ≥ {INT8_SPEEDUP_TARGET} and min cosine ≥ {INT8_COSINE_TARGET}",
                "figure": "—",
                "status": "not measured",
                "why": "run benchmarks/bench_int8.py",
            }
        ]
    rows: list[dict] = []
    for n in networks:
        rep, th = int8[n], int8[n]["throughput"]
        sp = th.get("int8 speed-up over TF float32 (median of paired rounds)")
        if sp is not None:
            rows.append(
                {
                    "target": f"{n}: int8 speed-up ≥ {INT8_SPEEDUP_TARGET} (batch {th.get('batch size')})",
                    "figure": f"{sp:.2f}× ({th.get('OpenVINO int8 img/s (median of rounds)')} vs "
                    f"{th.get('TF float32 img/s (median of rounds)')} img/s; OpenVINO f32 "
                    f"{th.get('OpenVINO f32 / TF float32 (median of paired rounds)')}× of TF)",
                    "short": f"{sp:.2f}×",
                    "status": "met" if sp >= INT8_SPEEDUP_TARGET else "NOT met",
                    "why": "",
                }
            )
        fid = rep.get("int8 vs float32, the book's images") or {}
        if "min cosine" in fid:
            cos = fid["min cosine"]
            rows.append(
                {
                    "target": f"{n}: int8 min per-image cosine ≥ {INT8_COSINE_TARGET}",
                    "figure": f"{cos:.5f} (1st percentile {fid.get('1st percentile cosine', float('nan')):.5f}, "
                    f"{fid.get('images')} images)",
                    "short": f"{cos:.5f}",
                    "status": "met" if cos >= INT8_COSINE_TARGET else "NOT met",
                    "why": "",
                }
            )
        summ = rep.get("AUC changes summary")
        if summ:
            big = summ.get("largest |change|") or {}
            ok = summ["paired 95 % interval holds 0"] == summ["settings"]
            within = summ.get("change within float32's CI")
            rows.append(
                {
                    "target": f"{n}: no Train×Test AUC moves by more than its paired CI (int8)",
                    "figure": f"{summ['paired 95 % interval holds 0']} of {summ['settings']} paired intervals "
                    f"hold 0; {within} of "
                    f"{summ['settings']} changes within float32's CI; largest "
                    f"{big.get('int8 - float32', float('nan')):+.4f} ({big.get('setting')})",
                    "short": f"{summ['paired 95 % interval holds 0']}/{summ['settings']}",
                    "status": "met" if ok else "NOT met",
                    "why": "",
                }
            )
        e2e = th.get("end to end / network only (float32, same process)")
        if e2e is not None:
            rows.append(
                {
                    "target": f"{n}: extract_features end to end ≥ {END_TO_END_TARGET:.0%} of network only",
                    "figure": f"{e2e:.3f} "
                    f"({th.get('extract_features float32 cold [img/s] (build, render, cache included)')}"
                    f" vs {th.get('TF float32 img/s (median of rounds)')} img/s)",
                    "short": f"{e2e:.3f}",
                    "status": "met" if e2e >= END_TO_END_TARGET else "NOT met",
                    "why": "",
                }
            )
    return rows


def int8_book_rows(book: dict | None) -> list[dict]:
    """The default book with ``precision: int8``, cold and warm, against issue 24's targets (``book_int8.json``).

    ``book`` is the figures of ``benchmarks/bench_book.py --precision int8``:
    one entry per variant with ``cold [s] (median)`` and ``warm [s]
    (median)``; the first variant that has them is read.

    Examples
    --------
    >>> rows = int8_book_rows({"abc (default jobs)": {"cold [s] (median)": 300.0, "warm [s] (median)": 12.0}})
    >>> [(r["short"], r["status"]) for r in rows]
    [('300 s', 'NOT met'), ('12.0 s', 'met')]
    >>> int8_book_rows(None)[0]["status"]
    'not measured'
    """
    fig = next((v for v in (book or {}).values() if isinstance(v, dict) and "cold [s] (median)" in v), None)
    if fig is None:
        return [
            {
                "target": f"default book, int8: ≤ {INT8_BOOK_COLD_S / 60:.0f} min cold, ≤ {INT8_BOOK_WARM_S:.0f} s warm",
                "figure": "—",
                "status": "not measured",
                "why": "run benchmarks/bench_book.py --precision int8 --no-sequential",
            }
        ]
    rows = []
    for what, key, limit in (
        ("cold", "cold [s] (median)", INT8_BOOK_COLD_S),
        ("warm (nothing changed)", "warm [s] (median)", INT8_BOOK_WARM_S),
    ):
        v = fig.get(key)
        if v is None:
            continue
        v = float(v)
        short = f"{v:.0f} s" if v >= 100 else f"{v:.1f} s"
        rows.append(
            {
                "target": f"default book, int8, {what}: ≤ {limit:.0f} s",
                "figure": short,
                "short": short,
                "status": "met" if v <= limit else "NOT met",
                "why": "",
            }
        )
    return rows


def _arithmetic_bound(features: dict | None, paper_run: dict) -> str:
    """The least time the networks' float32 arithmetic of a paper-protocol run needs on this machine ('' if unknown).

    Images per network x the FLOPs per image of every network, at the
    measured roofline and at the theoretical peak: when even the peak gives
    more than the target, no code change can meet it here.

    Examples
    --------
    >>> f = {"roofline [GFLOP/s] (best of all rounds)": 200.0, "theoretical peak float32 [GFLOP/s]": 300.0,
    ...      "a": {"FLOPs per image [G]": 10.0}, "b": {"FLOPs per image [G]": 40.0}}
    >>> print(_arithmetic_bound(f, {"images per network (distinct, chapters 04 and 07)": 6000}))
    the networks' arithmetic alone, 6000 images × 50.0 GFLOP = 300 TFLOP, needs 25.0 min at this machine's roofline (200 GFLOP/s) and 16.7 min at its theoretical float32 peak (300 GFLOP/s)
    """
    features = features or {}
    images = paper_run.get("images per network (distinct, chapters 04 and 07)")
    per_image = [v.get("FLOPs per image [G]") for v in features.values() if isinstance(v, dict)]
    roof = features.get("roofline [GFLOP/s] (best of all rounds)")
    peak = features.get("theoretical peak float32 [GFLOP/s]")
    if not images or not per_image or None in per_image or not roof or not peak:
        return ""
    gflop = float(images) * sum(per_image)
    return (
        f"the networks' arithmetic alone, {int(images)} images × {sum(per_image):.1f} GFLOP = {gflop / 1e3:.0f} "
        f"TFLOP, needs {gflop / roof / 60:.1f} min at this machine's roofline ({roof:.0f} GFLOP/s) and "
        f"{gflop / peak / 60:.1f} min at its theoretical float32 peak ({peak:.0f} GFLOP/s)"
    )


def layer_table_lines(features: dict | None) -> list[str]:
    """Markdown: per network, the time per layer type from ``features.json`` ([] when not measured)."""
    lines: list[str] = []
    for n, rep in (features or {}).items():
        layers = rep.get(LAYERS_KEY) if isinstance(rep, dict) else None
        if not layers:
            continue
        roof = rep.get("roofline paired with the layer profile [GFLOP/s]")
        lines += [
            f"### {n}",
            "",
            f"Each layer alone at the default batch ({rep.get('default batch size (features.default_batch_size)')}"
            f" images), summed per layer type"
            + (f"; roofline measured just before: {roof:.0f} GFLOP/s" if roof else "")
            + ".",
            "",
            "| layer type | layers | seconds | share of time | GFLOP/s | share of roofline |",
            "|---|---|---|---|---|---|",
        ]
        for k, d in sorted(layers.items(), key=lambda kv: -kv[1].get("seconds", 0.0)):  # slowest first
            s = d.get("share of roofline")
            lines.append(
                f"| {_md_escape(k)} | {d.get('layers')} | {d.get('seconds', float('nan')):.3f} | "
                f"{d.get('share of time', 0):.1%} | {d.get('GFLOP/s', 0):.1f} | "
                f"{'—' if s is None else f'{s:.1%}'} |"
            )
        lines.append("")
    return lines


def performance_section(bench_dir: Path) -> list[str]:
    """Markdown: issue 12's targets beside the figures, what is not met and why, and where the time goes."""
    features = _load_figures(bench_dir, "features")
    bf16 = _load_figures(bench_dir, "bfloat16_auc")
    paper = _load_figures(bench_dir, "paper_protocol")
    int8 = _load_figures(bench_dir, "int8")
    book_int8 = _load_figures(bench_dir, "book_int8")
    if features is None and bf16 is None and paper is None and int8 is None and book_int8 is None:
        return []
    rows = performance_rows(features, bf16, paper) + int8_rows(int8) + int8_book_rows(book_int8)
    lines = [
        "## Performance targets beside the figures",
        "",
        "Read from `runs/benchmarks/features.json`, `bfloat16_auc.json`, `int8.json`, `book_int8.json` and "
        "`paper_protocol.json` "
        "(random weights and synthetic images on this machine: the same arithmetic as ImageNet weights, so "
        "the timings hold; the AUCs are not the paper's).",
        "",
        "| target | figure | status | why |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {_md_escape(r['target'])} | {_md_escape(r['figure'])} | **{r['status']}** | {_md_escape(r['why'])} |"
        for r in rows
    ]
    lines.append("")
    missed = [r for r in rows if r["status"] == "NOT met"]
    unmeasured = [r for r in rows if r["status"] == "not measured"]
    if missed:
        lines += ["**Not met on this machine:**", ""]
        lines += [
            f"- {r['target']}: {r.get('short', r['figure'])}" + (f". Why: {r['why']}" if r["why"] else "") + "."
            for r in missed
        ]
        lines.append("")
    else:
        lines += ["Every measured target is met on this machine.", ""]
    if unmeasured:
        lines += ["Not measured here: " + "; ".join(r["target"] for r in unmeasured) + ".", ""]
    layer_lines = layer_table_lines(features)
    if layer_lines:
        lines += [
            "## Where the time goes",
            "",
            "Each layer of the network timed alone on inputs of its shape (`bench_features.py`), summed per "
            "layer type. Alone, a layer is not fused with its neighbours as in the whole graph (oneDNN fuses "
            "a convolution with its batch norm and activation), so the shares of layers without FLOPs are "
            "upper bounds.",
            "",
        ] + layer_lines
    return lines


def sweep_page(run_dir: str | os.PathLike) -> str:
    """Markdown: the run's last sweep (``<run_dir>/sweep/summary.csv``), or a note that none was run.

    One table per backbone: a row per Train/Test setting, a column per point
    of the grid, each cell the AUC with its 95 % DeLong CI.
    """
    lines = [
        "# Sweep",
        "",
        "A sweep re-runs the chapters that declare a swept parameter at every point of a grid,",
        "each point in its own run directory, sharing this run's data set and features",
        "(see *Running on a cluster*):",
        "",
        "```bash",
        "python -m uslib sweep --profile params/tiny.yaml --set svm_c=0.1,1,10 [--set n_splits=3,5]",
        "```",
        "",
    ]
    path = store.sweep_summary_path(run_dir)
    if not path.exists():
        lines += [
            "```{note}",
            "No sweep has been run for this run directory: this page fills in after "
            "`python -m uslib sweep` and a rebuild of the book.",
            "```",
            "",
        ]
        return "\n".join(lines)
    try:
        summary = store.load_csv(path, dtype={"point": str, "backbone": str, "train": str, "test": str})
    except store.DamagedArtefact as exc:
        lines += [
            "```{warning}",
            f"The sweep summary is damaged ({_md_escape(exc.reason)}): run the sweep again.",
            "```",
            "",
        ]
        return "\n".join(lines)
    sweep = read_run_record(run_dir).get("sweep", {})
    swept = list(sweep.get("sets", {})) or [
        c for c in summary.columns if c not in ("point", "backbone", "train", "test", "auc", "ci_low", "ci_high")
    ]
    rel = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    lines += [
        f"Generated from `{_md_escape(rel)}` when the book was built. Swept: "
        + ", ".join(f"`{s}`" for s in swept)
        + "; chapters run at each point: "
        + (", ".join(sweep.get("chapters", [])) or "(not recorded)")
        + f"; images whose features were computed for the sweep: {sweep.get('features_computed', 'n/a')}."
        + " AUC [95 % DeLong CI] per point.",
        "",
    ]
    points = list(dict.fromkeys(summary["point"]))
    for b, table in summary.groupby("backbone", sort=False):
        lines += [
            f"## {b}",
            "",
            "| train | test | " + " | ".join(f"`{_md_escape(pt)}`" for pt in points) + " |",
            "|---|---|" + "---|" * len(points),
        ]
        for (train, test), rows in table.groupby(["train", "test"], sort=False):
            cells = []
            for pt in points:
                r = rows[rows["point"] == pt]
                cells.append(
                    "" if r.empty else f"{r.auc.iloc[0]:.3f} [{r.ci_low.iloc[0]:.3f}, {r.ci_high.iloc[0]:.3f}]"
                )
            lines.append(f"| {train} | {test} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


#: Workloads of the scaling estimate: (name, lesions, images per lesion). The paper's extended set had
#: 251 lesions; 18 images per lesion are 2 scans × 3 dynamic ranges × 3 margins (the default profile).
SCALING_WORKLOADS = (("the paper's 251 lesions", 251, 18), ("a clinical collection of 5000 lesions", 5000, 18))
#: Cluster sizes of the scaling estimate, in nodes.
SCALING_NODES = (1, 2, 4, 8, 16, 32)


def scaling_estimate(bench: dict, *, nodes=SCALING_NODES, workloads=SCALING_WORKLOADS) -> list[dict]:
    """Feature extraction time on N nodes like the benchmark's, from ``runs/benchmarks/distributed.json``.

    Model: every worker warms up once (``warm-up``: the cold pass's extra
    time over the warm pass: reading the data, building and tracing the
    network), then the partitions (one per lesion) are shared out; each costs
    its images at the measured warm per-node rate plus a fixed overhead
    (a no-op task's round trip and the worker's own bookkeeping per
    partition). Nodes are assumed alike (same cores, same per-node rate) and
    the client's writes and the network are assumed not to be the
    bottleneck: the bytes returned are shown so that this can be checked.

    Returns
    -------
    list of dict
        One per (workload, nodes): ``workload``, ``nodes``, ``images``,
        ``seconds``, ``speedup`` (against one node), ``efficiency``,
        ``mbytes_returned``.
    """
    import math

    fig = bench["figures"]
    lc = fig["local_cluster"]
    warm, cold = lc["warm_workers"], lc["cold_workers"]
    workers = int(fig["setup"]["workers"])
    n_images = int(fig["setup"]["images"])
    node_rate = float(warm["images_per_s"])  # images/s of one node, workers warm, overhead included
    per_partition = float(lc["task_round_trip_s"]) + max(0.0, float(warm["worker_other_s_per_partition"]))
    warm_up = max(0.0, float(cold["seconds"]) - n_images / node_rate)
    bytes_out = float(warm["bytes_out_per_image"])
    out = []
    for name, lesions, per_lesion in workloads:
        images = lesions * per_lesion
        base = None
        for n in nodes:
            rounds = math.ceil(lesions / (n * workers))
            seconds = warm_up + images / (n * node_rate) + rounds * per_partition
            base = base or seconds
            out.append(
                {
                    "workload": name,
                    "nodes": n,
                    "images": images,
                    "seconds": seconds,
                    "speedup": base / seconds,
                    "efficiency": base / seconds / n,
                    "mbytes_returned": images * bytes_out / 1e6,
                }
            )
    return out


def cluster_estimate_fragment(bench_dir: Path | None = None) -> str:
    """Markdown included by ``book/cluster.md``: the measured figures and the scaling estimate.

    Every number is read from ``runs/benchmarks/distributed.json``
    (``benchmarks/bench_distributed.py``); without it the fragment says how
    to measure.
    """
    bench_dir = bench_dir or (REPO_ROOT / "runs" / "benchmarks")
    path = bench_dir / "distributed.json"
    if not path.exists():
        return "\n".join(
            [
                "The distributed benchmark measures, on the machine that runs it, the in-process and LocalCluster "
                "throughput of feature extraction, the cost of building a network on each worker, a task's round "
                "trip and the bytes moved per image, then estimates the time on 1 to 32 such nodes. To put its "
                "table and estimate here, run it and rebuild the book:",
                "",
                "```bash",
                ".venv/bin/python benchmarks/bench_distributed.py     # or: make bench",
                "python -m uslib build --profile params/default.yaml",
                "```",
                "",
            ]
        )
    bench = load_json(path)
    fig = bench["figures"]
    setup, ip, lc = fig["setup"], fig["in_process"], fig["local_cluster"]
    warm, cold = lc["warm_workers"], lc["cold_workers"]
    lines = [
        f"Measured {bench.get('measured')} on {_md_escape(bench.get('machine', {}).get('platform'))}, "
        f"{setup['cpu_count']} CPUs, with `{_md_escape(bench.get('command'))}`: {setup['images']} images of "
        f"{setup['lesions']} lesions ({setup['backbone']}, random weights, batches of {setup['batch_size']}), "
        f"{setup['workers']} worker processes of {setup['threads_per_worker']} thread.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| in-process throughput (network built) | {format_number(ip['images_per_s'], significant=3)} images/s |",
        f"| LocalCluster throughput, cold workers | {format_number(cold['images_per_s'], significant=3)} images/s |",
        f"| LocalCluster throughput, warm workers (per node) | {format_number(warm['images_per_s'], significant=3)} images/s |",
        f"| warm cluster against in-process | {format_number(fig['speedup_warm_cluster_vs_in_process'], significant=3)}× |",
        f"| largest feature difference, cluster against in-process (relative to the largest feature) | "
        f"{format_number(max(cold['max_rel_diff_vs_in_process'], warm['max_rel_diff_vs_in_process']), significant=3)} |",
        f"| model build per worker | {format_number(cold['model_build_s_per_worker'], significant=3)} s (in-process: {format_number(ip['model_build_s'], significant=3)} s) |",
        f"| inference per image on one worker thread | {format_number(warm['inference_s_per_image'], significant=3)} s |",
        f"| rendering per image (RF to network input) | {format_number(warm['render_s_per_image'], significant=3)} s |",
        f"| task round trip (no-op task) | {format_number(lc['task_round_trip_s'] * 1e3, significant=3)} ms |",
        f"| other worker time per partition (reading, checks) | {format_number(warm['worker_other_s_per_partition'], significant=3)} s |",
        f"| bytes sent per image (data file readable by the workers) | {format_number(warm['bytes_in_per_image'], significant=4)} |",
        f"| bytes sent per image (lesions sent with the tasks) | {format_number(lc['scattered_lesions']['bytes_in_per_image'], significant=4)} |",
        f"| bytes returned per image (features) | {format_number(warm['bytes_out_per_image'], significant=4)} |",
        f"| LocalCluster start | {format_number(lc['start_s'], significant=3)} s |",
        "",
        "Estimated time to extract one backbone's features on *N* nodes like this one "
        f"({setup['cpu_count']} cores, {setup['workers']} workers each), from the figures above "
        "(`uslib.pages.scaling_estimate`: warm-up once, then the images at the warm per-node rate, plus "
        "the per-partition overhead for every round of partitions):",
        "",
        "| workload | nodes | images | estimated time | speed-up | efficiency | features returned |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in scaling_estimate(bench):
        s = r["seconds"]
        when = f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s"
        lines.append(
            f"| {r['workload']} | {r['nodes']} | {r['images']} | {when} | {r['speedup']:.2f}× | "
            f"{r['efficiency']:.0%} | {r['mbytes_returned']:.0f} MB |"
        )
    lines += [
        "",
        "The estimate is only as good as its assumptions: nodes like the measured one, a client that keeps "
        "up with writing the returned features, and a network that moves them without delay. On nodes with "
        "more cores, scale the per-node throughput by the number of cores (one single-threaded worker per "
        "core).",
        "",
    ]
    return "\n".join(lines)


def sweep_fragment(run_dir: str | os.PathLike) -> str:
    """Markdown included by ``book/cluster.md``: the run's last sweep, one AUC table per backbone.

    Without a sweep of this run directory: how to run one (the tables of
    :func:`sweep_page` appear once it has run and the book is rebuilt).
    """
    if not store.sweep_summary_path(run_dir).exists():
        return "\n".join(
            [
                "A sweep re-runs the chapters that declare a swept parameter at every point of a grid, each point "
                "in its own run directory under `<run_dir>/sweep/`, sharing the run's data set and features "
                "(extracted once, on the cluster when there is one). Its AUC table (a row per Train/Test setting, a "
                "column per grid point, each AUC with its 95 % DeLong CI) is written to "
                "`<run_dir>/sweep/summary.csv` and shown in this section when the book is rebuilt:",
                "",
                "```bash",
                "python -m uslib sweep --profile params/tiny.yaml --set svm_c=0.1,1,10 [--set n_splits=3,5]",
                "python -m uslib build --profile params/tiny.yaml",
                "```",
                "",
            ]
        )
    page = sweep_page(run_dir)
    body = page.split("```bash", 1)[1].split("```", 1)[1]  # after the title, the introduction and its command
    return "\n".join(("#" + line) if line.startswith("## ") else line for line in body.splitlines()).strip() + "\n"


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
        return format_number(v)
    return _md_escape(v)


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_generated_pages(run_dir: str | os.PathLike, out_dir: Path | None = None) -> list[Path]:
    """Write ``parameters.md``, ``provenance.md``, ``benchmarks.md`` and ``sweep.md`` into ``book/chapters/``.

    Absolute paths of this machine are shown relative (:func:`uslib.hygiene.replace_paths`).
    """
    out_dir = out_dir or (REPO_ROOT / "book" / "chapters")
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = {
        "parameters.md": parameters_page(),
        "provenance.md": provenance_page(run_dir),
        "benchmarks.md": benchmarks_page(run_dir),
        "sweep.md": sweep_page(run_dir),
    }
    # not a page of its own (not in _toc.yml, so not built): included by book/cluster.md
    pages["cluster_estimate.md"] = cluster_estimate_fragment()
    pages["sweep_fragment.md"] = sweep_fragment(run_dir)
    from .teaching import takeaways_page, teaching_fragment

    pages["takeaways.md"] = takeaways_page(run_dir)
    pages["teaching_facts.md"] = teaching_fragment(run_dir)  # included by book/teachers_guide.md
    pairs = path_replacements(run_dir)  # no absolute path of this machine on a page
    written = []
    for name, text in pages.items():
        _write(out_dir / name, replace_paths(text, pairs)[0])
        written.append(out_dir / name)
    return written
