"""Patient-level cross-validation, the reconstruction matrix and its statistics.

This module turns a feature matrix ``features`` of shape ``(n_images, d)``,
aligned row by row with an image-set manifest (columns ``image``, ``lesion``,
``patient``, ``label``, ``birads``, ``scan``, ``margin_mm``,
``dynamic_range_db``), into out-of-fold lesion probabilities for every
train/test setting of Byra et al. (2018), Section II.D, and into the numbers
of their Tables I–III and Figure 4.

The work is split by job, and this module re-exports the names the
chapters use (``evaluation.patient_folds``, ``evaluation.roc_auc``, ...):

* :mod:`uslib.classifier`: the linear SVM with its Platt calibration;
* :mod:`uslib.folds`: the lesion table, patient-level folds and their checks;
* :mod:`uslib.crossval`: the one cross-validation loop,
  :func:`~uslib.crossval.cross_validated_probabilities`, which takes named
  training sets and a test set (each a list of dynamic ranges, an image mask,
  or every image), the folds and the run's
  :class:`~uslib.cvsettings.CVSettings`, and returns the out-of-fold
  P(malignant) of every test image per training set;
  :func:`reconstruction_matrix` and :mod:`uslib.robustness` (generalisation
  curves, hand-crafted lesion-level baselines) are built on it;
* :mod:`uslib.statistics`: AUC, DeLong, bootstrap, Holm, Bland–Altman;
* here: the Train×Test matrix (:func:`reconstruction_matrix`, :class:`MatrixResult`),
  its summaries and its files (:func:`save_results`, :func:`load_results`).

Protocol decisions (the paper is silent or ambiguous; each is a parameter)
--------------------------------------------------------------------------
Folds
    5 folds over *lesions*, stratified by the lesion label and grouped by
    patient (:class:`sklearn.model_selection.StratifiedGroupKFold`,
    ``shuffle=True``, seeded), so that no patient has lesions on both sides of
    a split ("patient specific stratified 5-fold cross-validation").
    :func:`check_folds` guards every split.
Standardisation (``standardize=True``)
    A :class:`~sklearn.preprocessing.StandardScaler` is fitted on the training
    images of each (fold, training set) and applied to its test images. The
    paper does not say; a linear SVM with a fixed ``C = 1`` is not scale
    invariant, and feature scales differ by orders of magnitude between
    backbones (InceptionV3 average pool vs VGG19 ``fc1``) and with
    randomly initialised weights, so without it ``C = 1`` would mean a
    different regularisation for each network.
Classifier
    Linear SVM, ``C = 1``, class weights inversely proportional to the class
    frequencies in the training images (``class_weight="balanced"``). The
    paper's γ = 0.001 has no effect on a linear kernel. Per-image
    probabilities come from libsvm's Platt scaling (an internal 5-fold CV on
    the training images), as :class:`sklearn.svm.SVC` with
    ``kernel="linear", probability=True`` gives them. :class:`LinearSVM`
    computes exactly that model via the linear Gram matrix (``kernel=
    "precomputed"``, one BLAS product in float64): the same probabilities
    (measured: ≤ 1e-15 apart for float64 features, ≤ 1e-6 for float32), 6×
    to 50× faster on 2 cores for 230 to 3,600 training images of 2,048 to
    4,096 features (e.g. 3,614 × 4,096: 3 s instead of 148 s). scikit-learn 1.9 deprecates ``SVC(probability=True)`` (removal
    planned for 1.11); ``calibration="cv-sigmoid"`` gives the recommended
    replacement (:class:`~sklearn.calibration.CalibratedClassifierCV`, sigmoid,
    ``ensemble=False``, stratified shuffled 5-fold), which differs only in the
    internal CV split. In both, the internal calibration folds split images,
    not lesions, so images of one lesion fall on both sides; this is what the
    paper's software did too.
Calibration (``calibration="grouped"``, the default)
    libsvm's image-level Platt split puts near-duplicate images of one lesion
    (two scans × three margins × three dynamic ranges) on both sides of its
    internal calibration folds, so the sigmoid is fitted to decision values
    of images whose twins were in the training set: the probabilities come
    out over-confident (many lesions near 0 or 1) at the same AUC. By
    default the decision function is therefore cross-validated *by patient*
    within the training images (:class:`~sklearn.model_selection.StratifiedGroupKFold`,
    5 folds or fewer, seeded; a patient with two lesions never has one on
    each side) and Platt's sigmoid (:func:`uslib.platt.platt_fit`, with the
    target smoothing of Lin, Lin & Weng 2007) is fitted to those
    out-of-fold decision values; the SVM itself is then fitted on all
    training images. A fold whose free Platt slope would *reverse* the
    ranking is replaced by the constrained fit (flat at the base rate, the
    SVM's order kept) and reported in :attr:`MatrixResult.platt`
    (``platt.csv``). ``calibration="image"`` gives the paper's libsvm
    behaviour (the sensitivity run; its slope is checked and reported, not
    constrained). The ranking of the test images within one fold is the
    same under both as long as no slope reverses; pooled AUCs differ
    slightly because each fold has its own sigmoid.
Lesion weighting (``lesion_weighting=False`` by default, as in the paper)
    Every training image counts once, so a lesion with more images weighs
    more, and TrainALL (three images per scan and margin) has about three
    times the effective C of single-range training at the same ``C``. With
    ``lesion_weighting=True`` each training image gets the sample weight
    1 / (its lesion's number of training images), so every lesion has the
    same total weight (libsvm multiplies C by the weight) whatever its image
    count and whatever the training set; the Platt fit is weighted alike.
Lesion probability
    The arithmetic mean of P(malignant) over that lesion's test images whose
    dynamic range is in the test set (6 images per dynamic range: two scans ×
    three margins; 18 for TestALL).
AUC
    From the pooled out-of-fold lesion probabilities of all folds (one ROC per
    setting, as in Figure 5), not the mean of per-fold AUCs.
Operating point
    The ROC point with the smallest Euclidean distance to (0, 1); ties go to
    the first such point in order of decreasing threshold; a lesion is called
    malignant when its probability is ≥ the threshold. Table III gives it by
    two rules (column ``rule``): ``"paper"`` chooses the threshold on the
    pooled out-of-fold probabilities and reports accuracy on those same
    probabilities (the paper's rule: the test lesions choose their own
    threshold, which is optimistic); ``"nested"`` chooses, in each outer
    fold, the threshold on the *training* lesions only — on their inner
    out-of-fold probabilities from a patient-grouped CV within the training
    lesions (:func:`nested_thresholds`; ``inner_splits`` = 3 folds by default,
    to bound its cost) — and applies it to the fold's test lesions
    (:func:`nested_operating_point`). The nested rule is the honest
    estimate of the accuracy a fixed threshold would have on new lesions.
Confidence intervals
    DeLong's variance (fast algorithm of Sun & Xu 2014) and a plain Wald
    interval AUC ± z σ clipped to [0, 1] (no logit transform: simple and
    close to nominal at AUC 0.7–0.9 with ~100 lesions; it degenerates to
    [1, 1] at AUC = 1). ``ci="bootstrap"`` gives a class-stratified
    percentile bootstrap over lesions instead.
Bland–Altman
    Per-lesion probability of the lowest-range classifier minus that of the
    highest-range one (Train40dB − Train60dB) on the same test images, for
    every test set. The paper's Figure 4 does not say which test images;
    the book shows TestALL (every test image of a lesion, scored by both).
Paired tests
    Two families of DeLong paired tests on the same lesions (column ``kind``):
    ``matched_vs_mismatched`` — for each single-range training set, its
    matched test set against each mismatched one (the paper's main claim,
    that a reconstruction mismatch costs AUC); ``trainall_vs_single`` —
    TrainALL against each single-range training set on each test set.
    ``p_holm`` is Holm-adjusted within each family (and backbone); each
    difference also has a class-stratified paired bootstrap interval over
    lesions (``diff_ci_low``/``diff_ci_high``). :func:`mismatch_drop` gives
    the mean matched→mismatched drop with its bootstrap interval.
Repeats
    ``n_repeats`` runs with seeds ``cv_seed, cv_seed + 1, ...`` (new folds and new
    SVM seed each). ``auc``/CI/Table III/Bland–Altman come from the first
    run; ``auc_mean`` and ``auc_sd`` (ddof = 1) summarise all runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .classifier import LinearSVM, platt_probability, platt_scaling
from .crossval import CVProbabilities, cross_validate, cross_validated_probabilities, nested_thresholds, score_fold
from .cvsettings import CVSettings
from .folds import Design, LeakageError, check_folds, lesion_table, patient_folds, resolve_folds, set_name
from .statistics import (
    auc_contrast_ci,
    bland_altman,
    bootstrap_ci,
    closest_to_corner,
    delong_ci,
    delong_components,
    delong_paired_test,
    delong_variance,
    holm,
    nested_operating_point,
    operating_point,
    roc_auc,
    roc_curve,
)
from .store import atomic_path, save_json, load_json
from .platt import fold_report
from .uncertainty import called_malignant, table3_intervals

#: The names of :mod:`uslib.classifier`, :mod:`uslib.folds` and :mod:`uslib.statistics` that the
#: chapters use as ``evaluation.<name>`` stay importable from here (re-exported in ``__all__``).
__all__ = [
    "LeakageError",
    "platt_scaling",
    "platt_probability",
    "LinearSVM",
    "set_name",
    "lesion_table",
    "patient_folds",
    "check_folds",
    "resolve_folds",
    "Design",
    "score_fold",
    "CVProbabilities",
    "cross_validated_probabilities",
    "cross_validate",
    "MatrixResult",
    "reconstruction_matrix",
    "roc_auc",
    "roc_curve",
    "closest_to_corner",
    "operating_point",
    "nested_thresholds",
    "nested_operating_point",
    "delong_components",
    "delong_variance",
    "delong_ci",
    "delong_paired_test",
    "bootstrap_ci",
    "auc_contrast_ci",
    "mismatch_drop",
    "sensitivity_summary",
    "bland_altman",
    "save_results",
    "load_results",
]

#: Files written by :func:`save_results`.
RESULT_FILES = (
    "matrix.csv",
    "predictions.csv",
    "table3.csv",
    "bland_altman.csv",
    "paired_tests.csv",
    "platt.csv",
    "metrics.json",
)

#: Columns of :attr:`MatrixResult.platt` (:func:`uslib.platt.fold_report` with its keys).
PLATT_COLUMNS = (
    "backbone",
    "repeat",
    "fold",
    "train",
    "platt_a",
    "platt_b",
    "a_free",
    "b_free",
    "reversing",
    "constrained",
    "n",
    "n_positive",
)
#: Families of :attr:`MatrixResult.paired_tests` (column ``kind``); Holm's adjustment is within each.
PAIRED_KINDS = ("matched_vs_mismatched", "trainall_vs_single")
#: Columns of :attr:`MatrixResult.paired_tests`.
PAIRED_COLUMNS = (
    "backbone",
    "kind",
    "train_a",
    "test_a",
    "train_b",
    "test_b",
    "auc_a",
    "auc_b",
    "diff",
    "se",
    "z",
    "p",
    "p_holm",
    "diff_ci_low",
    "diff_ci_high",
)


def _pooled_metrics(calls: list[pd.DataFrame], *, n_boot: int, alpha: float, seed: int) -> dict:
    """Table III's metrics averaged over the repeats that made calls, with their intervals.

    ``calls``: one frame per repeat (``repeat``, ``lesion``, ``patient``,
    ``label``, ``called``). ``accuracy_first_repeat``: the accuracy of the
    first of those repeats alone (a count of correct lesions over the
    lesions, for an exact binomial interval). No repeat: every metric and
    interval NaN, ``metric_ci_repeats`` 0.
    """
    names = ("accuracy", "sensitivity", "specificity")
    if not calls:
        nan = float("nan")
        out = {f"{m}{x}": nan for m in names for x in ("", "_ci_low", "_ci_high")}
        return {**out, "metric_ci_repeats": 0, "accuracy_first_repeat": nan}
    t3i = table3_intervals(pd.concat(calls, ignore_index=True), n_boot=n_boot, alpha=alpha, seed=seed)
    t3i = t3i.set_index("metric")
    acc = t3i.loc["accuracy"]
    out = {"metric_ci_repeats": int(t3i["n_repeats"].iloc[0]), "accuracy_first_repeat": float(acc["k"] / acc["n"])}
    for m in names:
        out[m] = float(t3i.loc[m, "estimate"])
        out[f"{m}_ci_low"] = float(t3i.loc[m, "ci_low"])
        out[f"{m}_ci_high"] = float(t3i.loc[m, "ci_high"])
    return out


#: Columns of :attr:`MatrixResult.table3`, one row per rule.
TABLE3_COLUMNS = (
    "backbone",
    "rule",
    "train",
    "test",
    "auc",
    "ci_low",
    "ci_high",
    "accuracy",
    "sensitivity",
    "specificity",
    "threshold",
    "n_lesions",
    "n_malignant",
    "n_benign",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "sensitivity_ci_low",
    "sensitivity_ci_high",
    "specificity_ci_low",
    "specificity_ci_high",
    "metric_ci_repeats",
    "accuracy_first_repeat",
)

_STR_COLUMNS = {
    "backbone": str,
    "rule": str,
    "kind": str,
    "test_a": str,
    "test_b": str,
    "train": str,
    "test": str,
    "lesion": str,
    "patient": str,
    "train_a": str,
    "train_b": str,
    "a": str,
    "b": str,
}


# --------------------------------------------------------------------------- #
# Summaries of a matrix
# --------------------------------------------------------------------------- #


def mismatch_drop(result: "MatrixResult", *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """The mean matched→mismatched AUC drop of single-range training, with a bootstrap interval.

    Mean over every single-range training set r and every other single range
    r' of AUC(Train r, Test r) − AUC(Train r, Test r'), on the first repeat's
    out-of-fold lesion probabilities; the interval resamples lesions (within
    class) once for all the AUCs (:func:`auc_contrast_ci`).

    Parameters
    ----------
    result : MatrixResult
    n_boot, alpha, seed
        The bootstrap.

    Returns
    -------
    dict
        ``mean_drop``, ``ci_low``, ``ci_high``, ``n_pairs``, ``n_lesions``.
    """
    ranges = [float(r) for r in result.params["ranges"]]
    p = result.predictions
    p = p[p["repeat"] == p["repeat"].min()]
    scores, weights, y = [], [], None
    for r in ranges:
        train = set_name("Train", (r,))
        for t in ranges:
            g = p[(p["train"] == train) & (p["test"] == set_name("Test", (t,)))]
            if y is None:
                y, lesions = g["label"].to_numpy(), g["lesion"].to_numpy()
            elif not np.array_equal(g["lesion"].to_numpy(), lesions):  # pragma: no cover
                raise RuntimeError("mismatch_drop: lesion order differs between settings")
            scores.append(g["probability"].to_numpy())
            weights.append(len(ranges) - 1 if t == r else -1.0)
    n_pairs = len(ranges) * (len(ranges) - 1)
    est, lo, hi = auc_contrast_ci(y, scores, np.asarray(weights) / n_pairs, n_boot=n_boot, alpha=alpha, seed=seed)
    return {"mean_drop": est, "ci_low": lo, "ci_high": hi, "n_pairs": n_pairs, "n_lesions": int(len(y))}


def sensitivity_summary(result: "MatrixResult", *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict:
    """The two headline numbers of one run, each with an interval, for a sensitivity table.

    Parameters
    ----------
    result : MatrixResult
    n_boot, alpha, seed
        The bootstrap of :func:`mismatch_drop`.

    Returns
    -------
    dict
        ``auc``, ``auc_ci_low``, ``auc_ci_high``: TrainALL on TestALL (first
        repeat, the run's CI); ``mean_drop``, ``drop_ci_low``,
        ``drop_ci_high``: :func:`mismatch_drop`; and the run's
        ``standardize``, ``calibration``, ``lesion_weighting``.
    """
    ranges = [float(r) for r in result.params["ranges"]]
    t = result.table.set_index(["train", "test"])
    row = t.loc[(set_name("Train", ranges, all_ranges=ranges), set_name("Test", ranges, all_ranges=ranges))]
    drop = mismatch_drop(result, n_boot=n_boot, alpha=alpha, seed=seed)
    return {
        "auc": float(row["auc"]),
        "auc_ci_low": float(row["ci_low"]),
        "auc_ci_high": float(row["ci_high"]),
        "mean_drop": drop["mean_drop"],
        "drop_ci_low": drop["ci_low"],
        "drop_ci_high": drop["ci_high"],
        **{k: result.params.get(k) for k in ("standardize", "calibration", "lesion_weighting")},
    }


# --------------------------------------------------------------------------- #
# The reconstruction matrix (Tables I–III, Figure 4)
# --------------------------------------------------------------------------- #


@dataclass
class MatrixResult:
    """Train × test AUC matrix of one backbone and everything derived from it.

    Attributes
    ----------
    backbone : str
    table : DataFrame
        Tidy, one row per (train, test): ``backbone``, ``train``, ``test``,
        ``auc``, ``ci_low``, ``ci_high``, ``n_lesions`` and, with repeats,
        ``auc_mean``, ``auc_sd``, ``n_repeats``.
    predictions : DataFrame
        Out-of-fold lesion probabilities: ``backbone``, ``repeat``, ``train``,
        ``test``, ``lesion``, ``patient``, ``label``, ``fold``,
        ``probability``, ``n_images``.
    table3 : DataFrame
        TrainALL × TestALL, one row per ``rule`` (``"paper"``: threshold
        closest to (0, 1) on the pooled out-of-fold probabilities themselves;
        ``"nested"``: per outer fold, threshold chosen on the training lesions'
        inner out-of-fold probabilities, the honest estimate): ``auc``, CI,
        ``accuracy``, ``sensitivity``, ``specificity`` (each averaged over the
        repeats: every repeat has its own folds, and for the nested rule its
        own inner cross-validations), their
        ``{accuracy,sensitivity,specificity}_ci_low/_ci_high`` (percentile
        bootstrap over patients, every repeat of a drawn lesion together,
        :func:`uslib.uncertainty.table3_intervals`), ``metric_ci_repeats``
        (the repeats pooled), ``accuracy_first_repeat`` (the first repeat's
        accuracy alone) and ``threshold`` (the first repeat's; nested: the
        median over its folds).
    bland_altman : DataFrame
        Lowest- minus highest-range training (``a`` − ``b``) per test set.
    paired_tests : DataFrame
        DeLong paired tests, one row per comparison of setting a
        (``train_a``, ``test_a``) with setting b (``train_b``, ``test_b``) on
        the same lesions; ``kind`` ``"matched_vs_mismatched"`` (one training
        set, its matched test set against a mismatched one) or
        ``"trainall_vs_single"`` (TrainALL against a single range on one test
        set); ``diff`` = AUC a − AUC b with a paired bootstrap interval
        (``diff_ci_low``/``diff_ci_high``), ``p`` and ``p_holm`` (Holm within
        the kind). Columns :data:`PAIRED_COLUMNS`.
    folds : list of (train_idx, test_idx)
        Lesion-index folds of the first repeat (indices into ``lesions``).
    platt : DataFrame
        Every fold's checked Platt fit (:func:`uslib.platt.fold_report`):
        ``backbone``, ``repeat``, ``fold``, ``train`` and the columns
        :data:`PLATT_COLUMNS` (``platt_a``/``platt_b``: the map in use, ``a``
        and ``b`` of :func:`uslib.platt.fold_report`); one row per repeat,
        fold and training set.
    lesions : DataFrame
        :func:`lesion_table` of the manifest.
    params : dict
        The settings of the run.
    """

    backbone: str
    table: pd.DataFrame
    predictions: pd.DataFrame
    table3: pd.DataFrame
    bland_altman: pd.DataFrame
    paired_tests: pd.DataFrame
    folds: list
    lesions: pd.DataFrame
    params: dict = field(default_factory=dict)
    platt: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(PLATT_COLUMNS)))

    def matrix(self, value: str = "auc") -> pd.DataFrame:
        """Wide train × test table of ``value`` (the layout of Tables I and II)."""
        wide = self.table.pivot(index="train", columns="test", values=value)
        return wide.loc[pd.unique(self.table["train"]), pd.unique(self.table["test"])]

    def to_json(self) -> dict:
        """A JSON-ready summary (for ``metrics.json``); NaN becomes ``None``."""
        lesions = self.lesions["lesion"].tolist()
        return _jsonable(
            {
                "backbone": self.backbone,
                "params": self.params,
                "matrix": self.table.to_dict("records"),
                "table3": self.table3.to_dict("records"),
                "bland_altman": self.bland_altman.to_dict("records"),
                "paired_tests": self.paired_tests.to_dict("records"),
                "lesions": lesions,
                "folds": [{"fold": k, "test": [lesions[i] for i in te]} for k, (_, te) in enumerate(self.folds)],
            }
        )


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _ci(y, s, *, ci: str | None, alpha: float, n_boot: int, seed: int) -> tuple[float, float, float]:
    if ci == "delong":
        return delong_ci(y, s, alpha=alpha)
    if ci == "bootstrap":
        return bootstrap_ci(y, s, n_boot=n_boot, alpha=alpha, seed=seed)
    if ci is None:
        return roc_auc(y, s), float("nan"), float("nan")
    raise ValueError(f"ci must be 'delong', 'bootstrap' or None, got {ci!r}")


def reconstruction_matrix(
    features,
    manifest: pd.DataFrame,
    *,
    backbone: str,
    ranges: Sequence[float] = (40, 50, 60),
    settings: CVSettings = CVSettings(),
    nested_threshold: bool = True,
    inner_splits: int = 3,
    ci: str | None = "delong",
    alpha: float = 0.05,
    n_boot: int = 2000,
    folds=None,
    estimator=None,
    progress: bool = False,
) -> MatrixResult:
    """Train{r}dB/TrainALL × Test{r}dB/TestALL evaluation of one backbone.

    In each fold, one classifier per training set (each single range and all
    ranges together) is fitted once and scores every test image of every
    range once; the lesion probabilities of each test set are then the means
    over that set's images. See the module notes for the protocol.

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
        Row-aligned with ``manifest``.
    manifest : DataFrame
        The image-set manifest.
    backbone : str
        Label stored with the results, e.g. ``"inception_v3"``.
    ranges : sequence of float
        Dynamic ranges (dB), giving ``len(ranges) + 1`` train and test sets.
    settings : CVSettings
        Patient-level folds (:func:`patient_folds`, ``n_splits``); repeat r
        of ``n_repeats`` uses ``cv_seed + r`` for the folds and the SVM
        (:meth:`CVSettings.repeat`); more than one repeat adds
        ``auc_mean``/``auc_sd`` to ``table``. The classifier: see
        :func:`cross_validate`.
    estimator
        See :func:`cross_validate`.
    ci : {"delong", "bootstrap", None}
        Confidence interval of each AUC (first repeat), level 1 − ``alpha``.
    nested_threshold : bool
        Add Table III's ``"nested"`` row (costs an inner cross-validation of
        TrainALL per fold of every repeat); without it ``table3`` has the ``"paper"`` row only.
    inner_splits : int
        Folds of that inner cross-validation (:func:`nested_thresholds`).
    n_boot : int
        Bootstrap resamples (the AUC CIs when ``ci="bootstrap"``, and the
        intervals of the paired differences).
    folds : sequence of (train_idx, test_idx), optional
        Lesion folds to use (only with ``n_repeats=1``).
    progress : bool
        Show a tqdm bar over folds.

    Returns
    -------
    MatrixResult
    """
    ranges = tuple(float(r) for r in ranges)
    if len(ranges) < 2:
        raise ValueError(f"reconstruction_matrix: need at least two dynamic ranges, got {ranges}")
    n_repeats, seed = settings.n_repeats, settings.cv_seed
    if folds is not None and n_repeats != 1:
        raise ValueError("reconstruction_matrix: explicit folds need n_repeats=1")
    design = Design.build(features, manifest)
    missing = [r for r in ranges if not design.select((r,)).any()]
    if missing:
        raise ValueError(f"manifest: no image with dynamic_range_db {missing}")
    sets = [(r,) for r in ranges] + [ranges]
    train_sets = {set_name("Train", s, all_ranges=ranges): s for s in sets}
    test_sets = {set_name("Test", s, all_ranges=ranges): s for s in sets}
    train_all, test_all = set_name("Train", ranges, all_ranges=ranges), set_name("Test", ranges, all_ranges=ranges)
    lesions = design.lesions

    pred_frames, platt_fits, folds_by_repeat = [], [], []
    for rep in range(n_repeats):
        cv = cross_validated_probabilities(
            features,
            manifest,
            train_sets=train_sets,
            test_set=ranges,
            folds=folds,
            settings=settings.repeat(rep),
            estimator=estimator,
            progress=f"{backbone} repeat {rep}" if progress else False,
        )
        folds_by_repeat.append(cv.folds)
        platt_fits += [({"backbone": backbone, "repeat": rep, **key}, fit) for key, fit in cv.platt]
        for tname, tranges in test_sets.items():
            for trname in train_sets:
                mean, counts = cv.lesion_probabilities(trname, tranges)
                keep = counts > 0
                pred_frames.append(
                    pd.DataFrame(
                        {
                            "backbone": backbone,
                            "repeat": rep,
                            "train": trname,
                            "test": tname,
                            "lesion": lesions["lesion"][keep].to_numpy(),
                            "patient": lesions["patient"][keep].to_numpy(),
                            "label": lesions["label"][keep].to_numpy(),
                            "fold": cv.fold[keep],
                            "probability": mean[keep],
                            "n_images": counts[keep],
                        }
                    )
                )
    predictions = pd.concat(pred_frames, ignore_index=True)
    predictions["train"] = pd.Categorical(predictions["train"], categories=list(train_sets))
    predictions["test"] = pd.Categorical(predictions["test"], categories=list(test_sets))
    predictions = (
        predictions.sort_values(["repeat", "train", "test"], kind="stable")
        .astype({"train": str, "test": str})
        .reset_index(drop=True)
    )
    groups = {key: g for key, g in predictions.groupby(["repeat", "train", "test"], sort=False)}

    rows = []
    for trname in train_sets:
        for tname in test_sets:
            g = groups[(0, trname, tname)]
            auc, lo, hi = _ci(
                g["label"].to_numpy(), g["probability"].to_numpy(), ci=ci, alpha=alpha, n_boot=n_boot, seed=seed
            )
            row = {
                "backbone": backbone,
                "train": trname,
                "test": tname,
                "auc": auc,
                "ci_low": lo,
                "ci_high": hi,
                "n_lesions": len(g),
            }
            if n_repeats > 1:
                aucs = [
                    roc_auc(groups[(r, trname, tname)]["label"], groups[(r, trname, tname)]["probability"])
                    for r in range(n_repeats)
                ]
                row.update(auc_mean=float(np.mean(aucs)), auc_sd=float(np.std(aucs, ddof=1)), n_repeats=n_repeats)
            rows.append(row)
    table = pd.DataFrame(rows)

    g = groups[(0, train_all, test_all)]
    y, s = g["label"].to_numpy(), g["probability"].to_numpy()
    auc, lo, hi = _ci(y, s, ci=ci, alpha=alpha, n_boot=n_boot, seed=seed)
    common = {
        "backbone": backbone,
        "train": train_all,
        "test": test_all,
        "auc": auc,
        "ci_low": lo,
        "ci_high": hi,
        "n_lesions": len(y),
        "n_malignant": int(y.sum()),
        "n_benign": int((1 - y).sum()),
    }
    # Both rules' accuracy, sensitivity and specificity are averaged over the repeats, with intervals that
    # resample lesions by patient, every repeat of a drawn lesion together (table3_intervals); the
    # threshold shown is the first repeat's. The nested rule costs one inner cross-validation per outer
    # fold of every repeat.
    paper_calls = []
    for rep in range(n_repeats):
        gr = groups[(rep, train_all, test_all)]
        p = gr["probability"].to_numpy()
        paper_calls.append(gr.assign(repeat=rep, called=p >= operating_point(gr["label"].to_numpy(), p)["threshold"]))
    paper = {**common, "rule": "paper", **operating_point(y, s)}
    rows3 = [{**paper, **_pooled_metrics(paper_calls, n_boot=n_boot, alpha=alpha, seed=seed)}]
    if nested_threshold:
        nested_calls, first_thresholds = [], None
        for rep in range(n_repeats):
            thresholds = nested_thresholds(
                features,
                manifest,
                folds_by_repeat[rep],
                train_set=ranges,
                test_set=ranges,
                settings=settings.repeat(rep).replace(n_splits=inner_splits),
                estimator=estimator,
            )
            if rep == 0:
                first_thresholds = thresholds
            if np.isnan(np.asarray(thresholds, dtype=float)).all():  # no fold could learn a threshold: no calls
                continue
            gr = groups[(rep, train_all, test_all)]
            called = called_malignant(gr["probability"].to_numpy(), gr["fold"].to_numpy(), thresholds)
            nested_calls.append(gr.assign(repeat=rep, called=called))
        nested = {**common, "rule": "nested", **nested_operating_point(y, s, g["fold"].to_numpy(), first_thresholds)}
        rows3.append({**nested, **_pooled_metrics(nested_calls, n_boot=n_boot, alpha=alpha, seed=seed)})
    table3 = pd.DataFrame(rows3).reindex(columns=list(TABLE3_COLUMNS))

    lo_name, hi_name = set_name("Train", (min(ranges),)), set_name("Train", (max(ranges),))
    ba_rows, pt_rows = [], []

    def paired_row(kind, train_a, test_a, train_b, test_b):
        ga, gb = groups[(0, train_a, test_a)], groups[(0, train_b, test_b)]
        if not np.array_equal(ga["lesion"].to_numpy(), gb["lesion"].to_numpy()):  # pragma: no cover
            raise RuntimeError("paired test: lesion order differs between settings")
        ya, sa, sb = ga["label"].to_numpy(), ga["probability"].to_numpy(), gb["probability"].to_numpy()
        _, dlo, dhi = auc_contrast_ci(ya, [sa, sb], [1.0, -1.0], n_boot=n_boot, alpha=alpha, seed=seed)
        return {
            "backbone": backbone,
            "kind": kind,
            "train_a": train_a,
            "test_a": test_a,
            "train_b": train_b,
            "test_b": test_b,
            **delong_paired_test(ya, sa, sb),
            "diff_ci_low": dlo,
            "diff_ci_high": dhi,
        }

    singles = [(set_name("Train", (r,)), set_name("Test", (r,))) for r in ranges]
    for trname, matched in singles:
        for _, other in singles:
            if other != matched:
                pt_rows.append(paired_row("matched_vs_mismatched", trname, matched, trname, other))
    for tname in test_sets:
        ga, gb = groups[(0, lo_name, tname)], groups[(0, hi_name, tname)]
        if not np.array_equal(ga["lesion"].to_numpy(), gb["lesion"].to_numpy()):  # pragma: no cover
            raise RuntimeError("Bland–Altman: lesion order differs between training sets")
        ba_rows.append(
            {
                "backbone": backbone,
                "a": lo_name,
                "b": hi_name,
                "test": tname,
                **bland_altman(ga["probability"].to_numpy(), gb["probability"].to_numpy()),
            }
        )
        for trname in train_sets:
            if trname != train_all:
                pt_rows.append(paired_row("trainall_vs_single", train_all, tname, trname, tname))
    paired = pd.DataFrame(pt_rows)
    paired["p_holm"] = np.nan
    for kind in PAIRED_KINDS:
        sel = (paired["kind"] == kind).to_numpy()
        paired.loc[sel, "p_holm"] = holm(paired.loc[sel, "p"].to_numpy())
    paired = paired[list(PAIRED_COLUMNS)]

    params = {
        "ranges": list(ranges),
        "n_splits": settings.n_splits,
        "seed": seed,
        "svm_c": settings.svm_c,
        "class_weight": settings.class_weight,
        "standardize": settings.standardize,
        "calibration": settings.calibration,
        "lesion_weighting": settings.lesion_weighting,
        "nested_threshold": nested_threshold,
        "inner_splits": inner_splits if nested_threshold else None,
        "n_repeats": n_repeats,
        "ci": ci,
        "alpha": alpha,
        "n_boot": n_boot,
        "estimator": "LinearSVM" if estimator is None else repr(estimator),
        "n_images": int(len(design.X)),
        "n_features": int(design.X.shape[1]),
        "n_lesions": int(len(lesions)),
        "n_patients": int(lesions["patient"].nunique()),
    }
    return MatrixResult(
        backbone=backbone,
        table=table,
        predictions=predictions,
        table3=table3,
        bland_altman=pd.DataFrame(ba_rows),
        paired_tests=paired,
        folds=folds_by_repeat[0],
        lesions=lesions,
        params=params,
        platt=fold_report(platt_fits)
        .rename(columns={"a": "platt_a", "b": "platt_b"})
        .reindex(columns=list(PLATT_COLUMNS)),
    )


# --------------------------------------------------------------------------- #
# Persistence
# --------------------------------------------------------------------------- #


_FRAMES = (
    ("matrix.csv", "table"),
    ("predictions.csv", "predictions"),
    ("table3.csv", "table3"),
    ("bland_altman.csv", "bland_altman"),
    ("paired_tests.csv", "paired_tests"),
    ("platt.csv", "platt"),
)
_INT_COLUMNS = ("repeat", "fold", "label", "n_images", "n_lesions", "n_repeats", "n", "n_malignant", "n_benign")


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def save_results(results, run_dir: str | os.PathLike) -> dict[str, Path]:
    """Write one or several :class:`MatrixResult` s into ``run_dir``.

    Files: ``matrix.csv``, ``predictions.csv``, ``table3.csv``,
    ``bland_altman.csv``, ``paired_tests.csv``, ``platt.csv`` (all backbones stacked, a
    ``backbone`` column) and ``metrics.json`` (``{"backbones": [...],
    "results": {backbone: MatrixResult.to_json()}}``), each written
    atomically; ``metrics.json`` is written last.

    Returns
    -------
    dict file name -> Path
    """
    if isinstance(results, MatrixResult):
        results = [results]
    results = list(results)
    names = [r.backbone for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"save_results: duplicate backbones {names}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for fname, attr in _FRAMES:
        path = run_dir / fname
        _write_csv(pd.concat([getattr(r, attr) for r in results], ignore_index=True), path)
        out[fname] = path
    columns = {r.backbone: {attr: list(getattr(r, attr).columns) for _, attr in _FRAMES} for r in results}
    out["metrics.json"] = save_json(
        run_dir / "metrics.json",
        {"backbones": names, "columns": columns, "results": {r.backbone: r.to_json() for r in results}},
    )
    return out


def load_results(run_dir: str | os.PathLike) -> list[MatrixResult]:
    """Read what :func:`save_results` wrote, in the saved backbone order."""
    run_dir = Path(run_dir)
    missing = [f for f in RESULT_FILES if not (run_dir / f).exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: missing result file(s) {missing}")
    meta = load_json(run_dir / "metrics.json")
    frames = {f: pd.read_csv(run_dir / f, dtype=_STR_COLUMNS) for f in RESULT_FILES if f.endswith(".csv")}
    out = []
    for b in meta["backbones"]:
        js = meta["results"][b]
        pick = {}
        for fname, attr in _FRAMES:
            df = frames[fname]
            df = df.loc[df["backbone"] == b, meta["columns"][b][attr]].reset_index(drop=True)
            ints = [c for c in _INT_COLUMNS if c in df.columns and df[c].notna().all()]
            pick[fname] = df.astype({c: int for c in ints})
        lesion_keys = js["lesions"]
        pos = {k: i for i, k in enumerate(lesion_keys)}
        preds = pick["predictions.csv"]
        first = preds[(preds["repeat"] == 0)].drop_duplicates("lesion").set_index("lesion")
        lesions = pd.DataFrame(
            {
                "lesion": lesion_keys,
                "patient": [first.loc[k, "patient"] for k in lesion_keys],
                "label": [int(first.loc[k, "label"]) for k in lesion_keys],
            }
        )
        all_idx = np.arange(len(lesion_keys))
        folds = []
        for f in js["folds"]:
            te = np.sort(np.array([pos[k] for k in f["test"]], dtype=int))
            folds.append((np.setdiff1d(all_idx, te), te))
        params = dict(js["params"])
        out.append(
            MatrixResult(
                backbone=b,
                table=pick["matrix.csv"],
                predictions=preds,
                table3=pick["table3.csv"],
                bland_altman=pick["bland_altman.csv"],
                paired_tests=pick["paired_tests.csv"],
                folds=folds,
                lesions=lesions,
                params=params,
                platt=pick["platt.csv"],
            )
        )
    return out
