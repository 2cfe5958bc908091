"""Parameter sweeps: the affected chapters once per point of a grid, sharing the caches.

``python -m uslib sweep --profile P --set svm_c=0.1,1,10 [--set n_splits=5,10 ...]``
runs, for every point of the grid (the Cartesian product of the ``--set``
values), the chapters that declare a swept parameter, each point in its own
run directory ``<run_dir>/sweep/<param=value,...>/`` (:func:`uslib.store.sweep_point_dir`)
whose data set and features are the parent run's (profile key ``cache_dir``:
both are keyed by content, so sharing them is safe).

Which chapters run
    A chapter is given only the parameters its ``parameters`` cell declares,
    and everything it shows is get-or-compute from those. So a chapter that
    declares none of the swept parameters would show the same page at every
    point, and one that is downstream of a swept parameter declares it (its
    cache keys need it). A sweep over ``svm_c`` runs 05, 06 and 07; over
    ``n_repeats``, 05 and 06.
Features once, before the points
    The features every point needs (the image set and, when the robustness
    chapter runs, its images) are extracted first, on the cluster when the
    profile's ``scheduler`` names one; the points then find them cached. A
    sweep over ``svm_c`` on a run whose features exist extracts nothing.
Validated first
    Every point is a whole profile, validated (:func:`uslib.config.load_profile`)
    before anything runs; a bad value names the point and the parameter.
Points as Dask tasks
    With a ``scheduler``, each point runs as one task on the cluster (its
    chapters in-process there); without, one after another here.
The summary
    ``<run_dir>/sweep/summary.csv``: the AUC with its DeLong CI of every
    backbone and Train/Test setting at every point, shown on the book's cluster
    page (:func:`uslib.pages.sweep_fragment`, from :func:`uslib.pages.sweep_page`).
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from . import scheduler, store
from .config import NOTEBOOK_DIR, ProfileError, Profile, chapters, cv_settings, load_profile, notebook_parameters

__all__ = [
    "NOT_SWEPT",
    "SUMMARY_VALUES",
    "SweepPlan",
    "parse_set",
    "grid",
    "point_label",
    "affected_chapters",
    "plan_sweep",
    "prepare_features",
    "run_point",
    "point_summary",
    "run_sweep",
]

#: The values :func:`point_summary` reports per backbone and Train/Test setting (the last two only
#: with repeats: the spread over ``n_repeats`` runs).
SUMMARY_VALUES = ("auc", "ci_low", "ci_high", "auc_mean", "auc_sd")

#: Parameters a sweep may not vary: where and how a run runs, not what it computes.
NOT_SWEPT = ("profile", "run_dir", "cache_dir", "scheduler", "cell_timeout_s")


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: ``"1,[40,60],3"`` -> ``["1", "[40,60]", "3"]``."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def parse_set(text: str) -> tuple[str, list[Any]]:
    """``"name=v1,v2,..."`` -> ``(name, [v1, v2, ...])``, each value read as YAML.

    Raises
    ------
    ProfileError
        If there is no ``=``, no value, an empty value or a repeated value.

    Examples
    --------
    >>> parse_set("svm_c=0.1,1,10")
    ('svm_c', [0.1, 1, 10])
    >>> parse_set("dynamic_ranges_db=[40,60],[40,50,60]")
    ('dynamic_ranges_db', [[40, 60], [40, 50, 60]])
    """
    name, sep, values = str(text).partition("=")
    name = name.strip()
    if not sep or not name or not values.strip():
        raise ProfileError("sweep", f"--set {text!r}: expected name=value[,value...]")
    items = _split_top_level(values)
    if any(not v for v in items):
        raise ProfileError("sweep", f"{name}: empty value in {values!r}")
    try:
        parsed = [yaml.safe_load(v) for v in items]
    except yaml.YAMLError as exc:
        raise ProfileError("sweep", f"{name}: cannot read {values!r} ({exc})") from None
    if len({json.dumps(v) for v in parsed}) != len(parsed):
        raise ProfileError("sweep", f"{name}: a value is given twice in {values!r}")
    return name, parsed


def grid(sets: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the swept values, the first parameter varying slowest.

    Examples
    --------
    >>> grid({"svm_c": [1, 10], "n_splits": [3, 5]})
    [{'svm_c': 1, 'n_splits': 3}, {'svm_c': 1, 'n_splits': 5}, {'svm_c': 10, 'n_splits': 3}, \
{'svm_c': 10, 'n_splits': 5}]
    """
    names = list(sets)
    return [dict(zip(names, combo)) for combo in itertools.product(*(sets[n] for n in names))]


def point_label(point: Mapping[str, Any]) -> str:
    """The folder name of a point: ``name=value`` pairs joined by commas (values as compact JSON).

    Examples
    --------
    >>> point_label({"svm_c": 0.1, "dynamic_ranges_db": [40, 60]})
    'svm_c=0.1,dynamic_ranges_db=[40,60]'
    """
    return ",".join(f"{k}={json.dumps(v, separators=(',', ':'))}".replace("/", "_") for k, v in point.items())


def affected_chapters(names: Iterable[str], notebook_dir: str | os.PathLike = NOTEBOOK_DIR) -> list[Path]:
    """The chapters that declare any of ``names`` in their ``parameters`` cell, in book order."""
    names = set(names)
    return [nb for nb in chapters(Path(notebook_dir)) if names & set(notebook_parameters(nb))]


@dataclass
class SweepPlan:
    """A validated sweep: the parent profile, the points and the chapters each runs.

    Attributes
    ----------
    profile : str
        The parent profile (name or path).
    parent : dict
        Its validated parameters.
    sets : dict
        Swept parameter -> values.
    points : list of (str, dict)
        Each point's label and its whole validated profile (own ``run_dir``,
        the parent's caches as ``cache_dir``, ``scheduler`` null: a point
        runs its chapters in one process).
    chapters : list of Path
        The chapters every point runs.
    notebook_dir : Path
    """

    profile: str
    parent: dict
    sets: dict
    points: list = field(default_factory=list)
    chapters: list = field(default_factory=list)
    notebook_dir: Path = NOTEBOOK_DIR

    @property
    def run_dir(self) -> Path:
        return store.run_path(self.parent["run_dir"])

    @property
    def cache_dir(self) -> Path:
        return store.cache_root(self.parent["run_dir"], self.parent.get("cache_dir"))


def plan_sweep(
    profile: str | os.PathLike,
    sets: Mapping[str, Sequence[Any]] | Sequence[str],
    *,
    overrides: Mapping[str, Any] | None = None,
    notebook_dir: str | os.PathLike = NOTEBOOK_DIR,
) -> SweepPlan:
    """Validate a sweep before anything runs.

    Parameters
    ----------
    profile : str or path
        The parent profile.
    sets : mapping or sequence of str
        Swept parameter -> values, or ``--set`` texts (:func:`parse_set`).
    overrides : mapping, optional
        Values replacing the parent profile's (e.g. its ``run_dir``).
    notebook_dir : path
        Where the chapters are.

    Raises
    ------
    ProfileError
        An unknown or unsweepable parameter, a parameter no chapter declares,
        or any point that fails validation (every problem, each naming its point).
    """
    if not isinstance(sets, Mapping):
        parsed: dict[str, list] = {}
        for text in sets:
            name, values = parse_set(text)
            if name in parsed:
                raise ProfileError("sweep", f"{name}: --set given twice")
            parsed[name] = values
        sets = parsed
    sets = {str(k): list(v) for k, v in sets.items()}
    if not sets:
        raise ProfileError("sweep", "nothing to sweep: give --set name=value,value...")
    parent = load_profile(profile, overrides=overrides)
    problems = []
    for name in sets:
        if name not in Profile.model_fields:
            problems.append(f"{name}: unknown parameter")
        elif name in NOT_SWEPT:
            problems.append(f"{name}: says where or how a run runs, not what it computes; it cannot be swept")
    if problems:
        raise ProfileError("sweep", problems)
    chs = affected_chapters(sets, notebook_dir)
    if not chs:
        raise ProfileError("sweep", f"no chapter declares {', '.join(sets)}: nothing would change")
    parent_dir = store.run_path(parent["run_dir"])
    shared = str(store.cache_root(parent_dir, parent.get("cache_dir")))
    plan = SweepPlan(profile=str(profile), parent=parent, sets=sets, chapters=chs, notebook_dir=Path(notebook_dir))
    for point in grid(sets):
        label = point_label(point)
        run_dir = str(store.sweep_point_dir(parent_dir, label))
        try:
            params = load_profile(
                profile,
                overrides={
                    **dict(overrides or {}),
                    **point,
                    "run_dir": run_dir,
                    "cache_dir": shared,
                    "scheduler": None,
                },
            )
        except ProfileError as e:
            problems += [f"point {label}: {p}" for p in e.problems]
            continue
        plan.points.append((label, params))
    if problems:
        raise ProfileError("sweep", problems)
    return plan


def _uses(chs: Sequence[Path], *names: str) -> bool:
    return any(set(names) <= set(notebook_parameters(nb)) for nb in chs)


def prepare_features(plan: SweepPlan, client=None) -> int:
    """Extract, once, every feature the points will read; return the number of images computed.

    The image set (:func:`uslib.pipeline.get_manifest`; the summary reads
    it) and, when a chapter that runs declares ``robustness_margins_mm``,
    the robustness chapter's images (:func:`uslib.pipeline.get_robustness_manifest`),
    for every backbone, at every point whose data or images differ, into the
    shared feature store; on ``client``'s cluster when given.
    """
    from . import pipeline

    done, n = set(), 0
    robust = _uses(plan.chapters, "robustness_margins_mm", "backbones")
    for label, p in plan.points:
        need = {
            k: p[k]
            for k in (
                "data_source",
                "oasbud_path",
                "n_lesions",
                "data_seed",
                "skip_samples",
                "patients_csv",
                "dynamic_ranges_db",
                "margins_mm",
                "backbones",
                "weights",
                "weights_path",
                "strict_weights",
                "weights_seed",
                "batch_size",
                "precision",
            )
        }
        if robust:
            need.update(
                {k: p[k] for k in ("unseen_ranges_db", "robustness_margins_mm", "continuous_range_db", "cv_seed")}
            )
        memo = store.key(need)
        if memo in done:
            continue
        done.add(memo)
        ds = pipeline.get_dataset(
            p["run_dir"],
            data_source=p["data_source"],
            oasbud_path=p["oasbud_path"],
            n_lesions=p["n_lesions"],
            data_seed=p["data_seed"],
            skip_samples=p["skip_samples"],
            patients_csv=p["patients_csv"],
            cache_dir=p["cache_dir"],
        )
        manifests = [pipeline.get_manifest(ds, dynamic_ranges_db=p["dynamic_ranges_db"], margins_mm=p["margins_mm"])]
        if robust:
            manifests.append(
                pipeline.get_robustness_manifest(
                    ds,
                    train_ranges_db=p["dynamic_ranges_db"],
                    unseen_ranges_db=p["unseen_ranges_db"],
                    margins_mm=p["robustness_margins_mm"],
                    continuous_range_db=p["continuous_range_db"],
                    seed=p["cv_seed"],
                )[0]
            )
        for manifest in manifests:
            for b in p["backbones"]:
                fs = pipeline.get_features(
                    p["run_dir"],
                    ds,
                    manifest,
                    b,
                    weights=p["weights"],
                    weights_path=p["weights_path"],
                    strict_weights=p["strict_weights"],
                    weights_seed=p["weights_seed"],
                    batch_size=p["batch_size"],
                    precision=p["precision"],
                    progress=False,
                    allow_download=p["allow_download"],
                    cache_dir=p["cache_dir"],
                    scheduler=client,
                )
                n += fs.n_computed
    return n


def run_point(
    profile: str,
    params: Mapping[str, Any],
    chapter_names: Sequence[str],
    swept: Mapping[str, Any],
    *,
    notebook_dir: str | os.PathLike = NOTEBOOK_DIR,
):
    """Run one point's chapters (in this process: a Dask task, or the sweep's own) and summarise it.

    Returns
    -------
    pandas.DataFrame
        :func:`point_summary` of the point (read from the point's results,
        which its chapters computed).
    """
    from .run import run_profile

    rdir = store.run_path(params["run_dir"])
    print(f"[uslib] sweep point {point_label(swept)}: {rdir}", flush=True)
    run_profile(
        profile,
        only=[Path(c).stem for c in chapter_names],
        overrides=dict(params),
        output_dir=store.sweep_chapter_dir(rdir),
        notebook_dir=notebook_dir,
    )
    return point_summary(params, swept)


def point_summary(params: Mapping[str, Any], swept: Mapping[str, Any]):
    """The AUCs of one point: the cross-validation chapter's matrices at the point's parameters.

    Each backbone's matrix is :func:`uslib.pipeline.get_matrix` with the
    point's :class:`~uslib.cvsettings.CVSettings` (every setting, as
    :func:`uslib.config.cv_settings` builds them for the chapter), so it is
    read from the point's results when its chapters computed them.

    Returns
    -------
    pandas.DataFrame
        One row per backbone and Train/Test setting: ``point``, the swept
        values, ``backbone``, ``train``, ``test``, ``auc``, ``ci_low``,
        ``ci_high`` (of the first repeat), and with ``n_repeats`` > 1
        ``auc_mean`` and ``auc_sd`` over the repeats (:data:`SUMMARY_VALUES`).
    """
    import pandas as pd

    from . import pipeline

    p = dict(params)
    rdir = store.run_path(p["run_dir"])
    ds = pipeline.get_dataset(
        rdir,
        data_source=p["data_source"],
        oasbud_path=p["oasbud_path"],
        n_lesions=p["n_lesions"],
        data_seed=p["data_seed"],
        skip_samples=p["skip_samples"],
        patients_csv=p["patients_csv"],
        cache_dir=p["cache_dir"],
    )
    manifest = pipeline.get_manifest(ds, dynamic_ranges_db=p["dynamic_ranges_db"], margins_mm=p["margins_mm"])
    settings = cv_settings(p)
    frames = []
    for b in p["backbones"]:
        fs = pipeline.get_features(
            rdir,
            ds,
            manifest,
            b,
            weights=p["weights"],
            weights_path=p["weights_path"],
            strict_weights=p["strict_weights"],
            weights_seed=p["weights_seed"],
            batch_size=p["batch_size"],
            precision=p["precision"],
            progress=False,
            allow_download=False,
            cache_dir=p["cache_dir"],
        )
        res = pipeline.get_matrix(rdir, fs, manifest, ranges=p["dynamic_ranges_db"], settings=settings)
        t = res.table[["train", "test", *SUMMARY_VALUES[:3], *[c for c in SUMMARY_VALUES[3:] if c in res.table]]].copy()
        t.insert(0, "backbone", b)
        frames.append(t)
    out = pd.concat(frames, ignore_index=True)
    out.insert(0, "point", point_label(swept))
    for i, (k, v) in enumerate(swept.items()):
        out.insert(1 + i, k, json.dumps(v) if isinstance(v, (list, dict)) else v)
    return out


def run_sweep(
    profile: str | os.PathLike,
    sets: Mapping[str, Sequence[Any]] | Sequence[str],
    *,
    overrides: Mapping[str, Any] | None = None,
    notebook_dir: str | os.PathLike = NOTEBOOK_DIR,
    client=None,
):
    """Validate, prepare the features once, run every point, write the summary.

    Parameters
    ----------
    profile, sets, overrides, notebook_dir
        See :func:`plan_sweep`.
    client : distributed.Client, optional
        Use this cluster instead of the one the profile's ``scheduler`` names.

    Returns
    -------
    pandas.DataFrame
        The summary, also written to ``<run_dir>/sweep/summary.csv``
        (:func:`uslib.store.sweep_summary_path`); its columns are those of
        :func:`point_summary`.
    """
    import contextlib
    import time

    import pandas as pd

    plan = plan_sweep(profile, sets, overrides=overrides, notebook_dir=notebook_dir)
    names = [str(c) for c in plan.chapters]
    print(
        f"[uslib] sweep of {', '.join(plan.sets)}: {len(plan.points)} points, chapters "
        f"{', '.join(c.stem for c in plan.chapters)}",
        flush=True,
    )
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(scheduler.cluster(plan.parent.get("scheduler")))
        n_computed = prepare_features(plan, client)
        print(f"[uslib] features ready ({n_computed} images computed) in {time.perf_counter() - t0:.1f} s", flush=True)
        swept = [{k: p[k] for k in plan.sets} for _, p in plan.points]
        if client is None:
            frames = [
                run_point(plan.profile, p, names, s, notebook_dir=plan.notebook_dir)
                for (_, p), s in zip(plan.points, swept)
            ]
        else:
            futures = [
                client.submit(
                    run_point,
                    plan.profile,
                    p,
                    names,
                    s,
                    notebook_dir=str(plan.notebook_dir),
                    key=f"uslib-sweep-{store.key(label, p)}",
                    pure=False,
                    retries=1,
                )
                for (label, p), s in zip(plan.points, swept)
            ]
            frames = client.gather(futures)
    summary = pd.concat(frames, ignore_index=True)
    store.save_csv(store.sweep_summary_path(plan.run_dir), summary)
    store.update_run_record(
        plan.run_dir,
        sweep={
            "sets": plan.sets,
            "points": [label for label, _ in plan.points],
            "chapters": [c.stem for c in plan.chapters],
            "features_computed": int(n_computed),
            "seconds": round(time.perf_counter() - t0, 2),
            "profile": plan.profile,
        },
    )
    print(
        f"[uslib] sweep done in {time.perf_counter() - t0:.1f} s: {store.sweep_summary_path(plan.run_dir)}", flush=True
    )
    return summary
