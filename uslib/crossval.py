"""The cross-validation loop: out-of-fold probabilities of every test image, per training set.

One loop does every cross-validation of the package: :func:`cross_validated_probabilities`
takes named training sets and a test set (each a list of dynamic ranges, an
image mask, or every image), the patient-level folds
(:func:`uslib.folds.resolve_folds`) and the run's
:class:`~uslib.cvsettings.CVSettings`, and returns the out-of-fold
P(malignant) of every test image per training set (:class:`CVProbabilities`).
:func:`cross_validate` (one setting), :func:`nested_thresholds` (Table III's
nested rule), :func:`uslib.evaluation.reconstruction_matrix` and
:mod:`uslib.robustness` are built on it. The protocol it implements is
described in :mod:`uslib.evaluation`.

The loop runs with one BLAS thread (:data:`FOLD_BLAS_THREADS`, through
threadpoolctl): a fold's matrices (a few hundred images by at most 2,048
features) are too small for a second OpenBLAS thread to pay. On 2 cores a
second thread left the loop's wall time unchanged and doubled its CPU
seconds (its idle threads spin), which the chapter running beside it then
lacks. One thread also makes the probabilities independent of the
machine's core count: OpenBLAS splits a product differently with more
threads, which moved the default book's probabilities by up to 4.6e-9.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from .classifier import fit_estimator, make_estimator, p_malignant
from .cvsettings import CVSettings
from .folds import Design, describe_selection, lesion_table, patient_folds, resolve_folds
from .statistics import operating_point, roc_auc  # noqa: F401  (roc_auc: the doctest's)

#: BLAS threads of the fold loop (see the module's docstring); ``None`` leaves the process's setting.
FOLD_BLAS_THREADS: int | None = 1

__all__ = ["score_fold", "CVProbabilities", "cross_validated_probabilities", "cross_validate", "nested_thresholds"]


# --------------------------------------------------------------------------- #
# The cross-validation loop
# --------------------------------------------------------------------------- #


def _lesion_weights(code: np.ndarray) -> np.ndarray:
    """1 / (number of rows of the same lesion) for each row: every lesion sums to 1."""
    counts = np.bincount(code)
    return 1.0 / counts[code]


def _fold_loop(
    design: Design,
    folds,
    *,
    train_sets: Mapping[str, object],
    train_rows: Mapping[str, np.ndarray],
    test_rows: np.ndarray,
    make,
    progress: bool | str = False,
    lesion_weighting: bool = False,
) -> tuple[dict, np.ndarray]:
    """The fold loop itself: per fold, fit one classifier per training set, score the test images once.

    ``train_rows``/``test_rows`` are image masks (:meth:`Design.select`);
    ``train_sets`` gives the selections as specified, for error messages.
    ``folds`` are used as given (the callers check them). Returns P(malignant)
    per training set and image (NaN where not scored) and each lesion's fold
    (-1 if never tested), and each fit's checked Platt map (``(keys, PlattFit)``).
    The loop runs with :data:`FOLD_BLAS_THREADS` BLAS threads.
    """
    y_img = design.image_labels
    n_les = len(design.lesions)
    probs = {name: np.full(design.n_images, np.nan) for name in train_sets}
    fold_of = np.full(n_les, -1)
    fits = []
    # calibration folds split by patient: a patient's two lesions never on both sides of a Platt split
    patient_code = pd.factorize(design.lesions["patient"])[0]
    fold_iter = folds
    if progress:
        from tqdm.auto import tqdm

        fold_iter = tqdm(folds, desc=progress if isinstance(progress, str) else None, leave=False)
    with threadpool_limits(limits=FOLD_BLAS_THREADS, user_api="blas"):
        for k, (tr, te) in enumerate(fold_iter):
            fold_of[te] = k
            train_l = np.zeros(n_les, bool)
            train_l[np.asarray(tr, dtype=int)] = True
            test_l = np.zeros(n_les, bool)
            test_l[np.asarray(te, dtype=int)] = True
            scored = np.flatnonzero(test_l[design.code] & test_rows)
            for name, sel in train_rows.items():
                rows = np.flatnonzero(train_l[design.code] & sel)
                if rows.size == 0:
                    raise ValueError(f"fold {k}, {name}: no training images{describe_selection(train_sets[name])}")
                if len(np.unique(y_img[rows])) < 2:
                    raise ValueError(
                        f"fold {k}, {name}: training images hold only class {np.unique(y_img[rows]).tolist()}"
                    )
                if scored.size:
                    weight = _lesion_weights(design.code[rows]) if lesion_weighting else None
                    est = fit_estimator(make(), design.X[rows], y_img[rows], patient_code[design.code[rows]], weight)
                    probs[name][scored] = p_malignant(est, design.X[scored])
                    last = est[-1] if hasattr(est, "steps") else est
                    if getattr(last, "platt_fit_", None) is not None:
                        fits.append(({"fold": k, "train": name}, last.platt_fit_))
    return probs, fold_of, fits


def score_fold(
    features,
    manifest: pd.DataFrame,
    train_lesions,
    test_lesions,
    *,
    train_sets: Mapping[str, Sequence[float]],
    test_ranges: Sequence[float],
    settings: CVSettings = CVSettings(),
    estimator=None,
) -> dict[str, np.ndarray]:
    """Fit one classifier per training set on one fold; score the fold's test images once.

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
    manifest : DataFrame
        The image-set manifest, row-aligned with ``features``.
    train_lesions, test_lesions : array_like of int
        Lesion indices into :func:`lesion_table` ``(manifest)``.
    train_sets : mapping name -> dynamic ranges (dB) or image mask
        E.g. ``{"Train40dB": (40,), "TrainALL": (40, 50, 60)}``; see
        :meth:`Design.select`.
    test_ranges : sequence of float, or image mask
        The test images to score (the union of all test sets).
    settings, estimator
        See :func:`cross_validate` (``n_splits`` and ``n_repeats`` are not used).

    Returns
    -------
    dict name -> ndarray, shape (n_images,)
        P(malignant) for the scored test images, NaN elsewhere.

    See Also
    --------
    cross_validated_probabilities : the same over all folds.
    """
    design = Design.build(features, manifest)
    make = lambda: make_estimator(estimator, settings)  # noqa: E731
    probs, _, _ = _fold_loop(
        design,
        [(train_lesions, test_lesions)],
        train_sets=train_sets,
        train_rows={n: design.select(s) for n, s in train_sets.items()},
        test_rows=design.select(test_ranges),
        make=make,
        lesion_weighting=settings.lesion_weighting,
    )
    return probs


@dataclass(eq=False)
class CVProbabilities:
    """Out-of-fold probabilities of :func:`cross_validated_probabilities`.

    Attributes
    ----------
    probabilities : dict name -> ndarray, shape (n_images,)
        For each training set, P(malignant) of every test-set image, from the
        classifier of the fold in which its lesion was tested; NaN for images
        outside the test set.
    fold : ndarray of int, shape (n_lesions,)
        The fold in which each lesion (row of ``design.lesions``) was tested.
    folds : list of (train_idx, test_idx)
        The lesion folds used (sorted, checked).
    design : Design
        The checked features and manifest.
    platt : list of (dict, uslib.platt.PlattFit)
        Each fold's checked Platt fit per training set (keys ``fold``,
        ``train``), for :func:`uslib.platt.fold_report`; empty for
        estimators without one.
    """

    probabilities: dict
    fold: np.ndarray
    folds: list
    design: Design
    platt: list = field(default_factory=list)

    def lesion_probabilities(self, train_set, test_set=None) -> tuple[np.ndarray, np.ndarray]:
        """Mean P(malignant) per lesion over its scored images in ``test_set``.

        Parameters
        ----------
        train_set : str
            A key of ``probabilities``.
        test_set : None, sequence of float, or array_like of bool
            The images to average (see :meth:`Design.select`); default every
            scored image.

        Returns
        -------
        probability : ndarray of float, shape (n_lesions,)
            NaN for a lesion without such an image.
        n_images : ndarray of int, shape (n_lesions,)
            How many images each mean is over.
        """
        d = self.design
        p_img = self.probabilities[train_set]
        use = d.select(test_set) & np.isfinite(p_img)
        n_les = len(d.lesions)
        counts = np.bincount(d.code[use], minlength=n_les)
        sums = np.bincount(d.code[use], weights=p_img[use], minlength=n_les)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts, counts


def cross_validated_probabilities(
    features,
    manifest: pd.DataFrame,
    *,
    train_sets: Mapping[str, object],
    test_set=None,
    folds=None,
    settings: CVSettings = CVSettings(),
    estimator=None,
    progress: bool | str = False,
) -> CVProbabilities:
    """The cross-validation loop: out-of-fold P(malignant) of every test image, per training set.

    In each patient-level fold, one classifier per training set is fitted on
    the training lesions' images of that set and scores the test lesions'
    images of ``test_set`` once. Every train/test evaluation of this package
    (:func:`cross_validate`, :func:`reconstruction_matrix`,
    :func:`uslib.robustness.generalisation_curves`,
    :func:`uslib.robustness.handcrafted_baselines`) runs through this loop.

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
        Row-aligned with ``manifest``; one row per image (or per lesion for
        lesion-level features).
    manifest : DataFrame
        Columns ``lesion``, ``patient``, ``label``; ``dynamic_range_db`` when
        a set is given as dynamic ranges.
    train_sets : mapping name -> selection
        Each training set's images: a sequence of dynamic ranges (dB), a
        boolean mask of shape (n_images,), or ``None`` for every image (see
        :meth:`Design.select`). E.g. ``{"Train40dB": (40,), "TrainALL": (40,
        50, 60)}``.
    test_set : selection, optional
        The images to score (the union of all test sets); default every image.
    folds : sequence of (train_idx, test_idx), optional
        Lesion folds (indices into :func:`lesion_table` ``(manifest)``);
        default :func:`patient_folds` with ``settings.n_splits`` and
        ``settings.cv_seed``. See :func:`resolve_folds`.
    settings : CVSettings
        The folds (when not given), the seed of the classifier's internal
        calibration split and the classifier (``n_repeats`` is not used:
        one pass). See :func:`cross_validate`.
    estimator
        See :func:`cross_validate`.
    progress : bool or str
        Show a tqdm bar over the folds (a str is its description).

    Returns
    -------
    CVProbabilities
        ``probabilities`` per training set and image, ``fold`` per lesion,
        the ``folds`` and the ``design``; lesion means with
        :meth:`CVProbabilities.lesion_probabilities`.

    Raises
    ------
    ValueError
        Bad inputs (see :meth:`Design.build`), no training set, or a fold's
        training set without images or with one class only.
    LeakageError
        If given ``folds`` let a patient leak into its test set.

    Examples
    --------
    Twelve patients with one lesion each, two images per lesion, and a
    feature that separates the classes perfectly:

    >>> m = pd.DataFrame({"lesion": np.repeat([f"l{i}" for i in range(12)], 2),
    ...                   "patient": np.repeat([f"p{i}" for i in range(12)], 2),
    ...                   "label": np.repeat([0, 1] * 6, 2), "dynamic_range_db": [40.0, 60.0] * 12})
    >>> X = m[["label"]].to_numpy(float) + np.tile([0.0, 0.1], 12)[:, None]
    >>> cv = cross_validated_probabilities(X, m, train_sets={"Train40dB": (40,)}, settings=CVSettings(n_splits=3))
    >>> p, n = cv.lesion_probabilities("Train40dB", (60,))
    >>> roc_auc(cv.design.lesions["label"], p), n.tolist() == [1] * 12, np.bincount(cv.fold).tolist()
    (1.0, True, [4, 4, 4])
    """
    design = Design.build(features, manifest)
    if not train_sets:
        raise ValueError("train_sets is empty")
    train_rows = {name: design.select(spec) for name, spec in train_sets.items()}
    test_rows = design.select(test_set)
    folds = resolve_folds(design.lesions, folds, n_splits=settings.n_splits, seed=settings.cv_seed)
    make = lambda: make_estimator(estimator, settings)  # noqa: E731
    probs, fold_of, fits = _fold_loop(
        design,
        folds,
        train_sets=train_sets,
        train_rows=train_rows,
        test_rows=test_rows,
        make=make,
        progress=progress,
        lesion_weighting=settings.lesion_weighting,
    )
    return CVProbabilities(probabilities=probs, fold=fold_of, folds=folds, design=design, platt=fits)


def cross_validate(
    features,
    manifest: pd.DataFrame,
    *,
    train_ranges: Sequence[float],
    test_ranges: Sequence[float],
    settings: CVSettings = CVSettings(),
    folds=None,
    estimator=None,
) -> pd.DataFrame:
    """Out-of-fold lesion probabilities for one train/test setting.

    In each patient-level fold, a classifier is trained on the training
    lesions' images whose ``dynamic_range_db`` is in ``train_ranges`` and
    scores the test lesions' images in ``test_ranges``; a lesion's
    probability is the mean P(malignant) of those images
    (:func:`cross_validated_probabilities` with one training set).

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
        Row-aligned with ``manifest``.
    manifest : DataFrame
        Columns ``lesion``, ``patient``, ``label``, ``dynamic_range_db`` at least.
    train_ranges, test_ranges : sequence of float
        Dynamic ranges in dB, e.g. ``(40,)`` or ``(40, 50, 60)``.
    settings : CVSettings
        ``n_splits`` and ``cv_seed``: the folds from :func:`patient_folds`
        (ignored when ``folds`` is given; the seed also seeds the SVM's
        calibration split). ``svm_c``: SVM penalty C (paper: 1).
        ``class_weight``: paper: inversely proportional to the class
        frequencies ("balanced"). ``standardize``: fit a StandardScaler on
        each fold's training images (see the module notes).
        ``calibration``: Platt calibration of the default :class:`LinearSVM`,
        on decision values cross-validated by patient (``"grouped"``) or
        libsvm's image-level split (``"image"``, the paper's software).
        ``lesion_weighting``: give each training lesion the same total sample
        weight, whatever its number of images (a custom ``estimator`` must
        accept ``sample_weight`` in ``fit``). ``n_repeats`` is not used.
    folds : sequence of (train_idx, test_idx), optional
        Lesion-index folds to use instead; checked with :func:`check_folds`.
    estimator : sklearn classifier, optional
        Replaces the default :class:`LinearSVM` (cloned per fit; preceded by
        a StandardScaler when ``standardize``). It must have ``predict_proba``
        and the classes 0/1.

    Returns
    -------
    DataFrame
        One row per lesion (:func:`lesion_table` order): ``lesion``,
        ``patient``, ``label``, ``fold``, ``probability``, ``n_images``.
    """
    cv = cross_validated_probabilities(
        features,
        manifest,
        train_sets={"train": train_ranges},
        test_set=test_ranges,
        folds=folds,
        settings=settings,
        estimator=estimator,
    )
    mean, counts = cv.lesion_probabilities("train", test_ranges)
    lesions = cv.design.lesions
    if (counts == 0).any():
        bad = lesions["lesion"][counts == 0].iloc[0]
        raise ValueError(f"lesion {bad!r} has no image with dynamic range in {list(test_ranges)} dB")
    out = lesions.copy()
    out["fold"] = cv.fold
    out["probability"] = mean
    out["n_images"] = counts
    return out


def _subset_selection(design: Design, spec, rows: np.ndarray) -> np.ndarray:
    """An image selection of ``design`` restricted to ``rows`` (a mask of the sub-design's images)."""
    return design.select(spec)[rows]


def _inner_folds(lesions: pd.DataFrame, *, n_splits: int, seed: int):
    """Patient-grouped folds within a training set, with as many splits as are feasible (or None)."""
    labels = lesions["label"].to_numpy()
    patients = lesions["patient"].astype(str).to_numpy()
    most = min(int(n_splits), len(np.unique(patients)), int(labels.sum()), int((1 - labels).sum()))
    for k in range(most, 1, -1):
        try:
            return resolve_folds(lesions, patient_folds(labels, patients, n_splits=k, seed=seed))
        except ValueError:  # a grouped split left one class out of a training set: fewer splits
            continue
    return None


def nested_thresholds(
    features,
    manifest: pd.DataFrame,
    folds,
    *,
    train_set=None,
    test_set=None,
    settings: CVSettings = CVSettings(),
    estimator=None,
) -> np.ndarray:
    """Per outer fold, the closest-to-(0, 1) threshold chosen on the training lesions alone.

    For each outer fold, the training lesions are cross-validated on their own
    (patient-grouped, label-stratified :func:`patient_folds` with
    ``settings.n_splits`` folds, fewer where the training lesions do not
    allow that many, seeded by ``settings.cv_seed``) through
    :func:`cross_validated_probabilities`;
    the threshold is the :func:`operating_point` of their inner out-of-fold
    lesion probabilities. No test lesion of the outer fold is seen.

    Parameters
    ----------
    features : ndarray, shape (n_images, d)
    manifest : DataFrame
        Row-aligned with ``features``.
    folds : sequence of (train_idx, test_idx)
        The outer lesion folds (indices into :func:`lesion_table`).
    train_set, test_set : selection
        The training images and the images averaged into a lesion
        probability (see :meth:`Design.select`); default every image.
    settings : CVSettings
        The inner cross-validation (``n_splits``, ``cv_seed``) and the
        classifier, as for :func:`cross_validated_probabilities`.
    estimator
        As for :func:`cross_validated_probabilities`.

    Returns
    -------
    ndarray of float, shape (n_folds,)
        The threshold of each outer fold (NaN where the training lesions
        cannot be cross-validated, e.g. one lesion of a class).
    """
    design = Design.build(features, manifest)
    folds = resolve_folds(design.lesions, folds)
    out = np.full(len(folds), np.nan)
    for k, split in enumerate(folds):
        train_lesions = np.asarray(split[0], dtype=int)
        rows = np.isin(design.code, train_lesions)
        code = design.code[rows]
        sub = pd.DataFrame(
            {
                "lesion": design.lesions["lesion"].to_numpy()[code],
                "patient": design.lesions["patient"].to_numpy()[code],
                "label": design.lesions["label"].to_numpy()[code],
            }
        )
        inner = _inner_folds(lesion_table(sub), n_splits=settings.n_splits, seed=settings.cv_seed)
        if inner is None:
            continue
        tr_sel, te_sel = _subset_selection(design, train_set, rows), _subset_selection(design, test_set, rows)
        cv = cross_validated_probabilities(
            design.X[rows],
            sub,
            train_sets={"inner": tr_sel},
            test_set=te_sel,
            folds=inner,
            settings=settings,
            estimator=estimator,
        )
        p, n = cv.lesion_probabilities("inner", te_sel)
        y = cv.design.lesions["label"].to_numpy()[n > 0]
        if len(np.unique(y)) == 2:
            out[k] = operating_point(y, p[n > 0])["threshold"]
    return out
