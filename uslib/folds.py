"""Patient-level folds over lesions, and the checked features/manifest they index.

The lesion table of an image-set manifest (:func:`lesion_table`), the
patient-grouped, label-stratified folds (:func:`patient_folds`), the guard
every split passes (:func:`check_folds`; :func:`uslib.config.check_folds_feasible` asks them
whether a number of folds is feasible for a data set), and :class:`Design`,
the checked features and manifest the fold loop of :mod:`uslib.evaluation`
selects its training and test images from.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

__all__ = [
    "REQUIRED_COLUMNS",
    "LeakageError",
    "set_name",
    "lesion_table",
    "patient_folds",
    "check_folds",
    "describe_selection",
    "Design",
    "resolve_folds",
]

#: Manifest columns the cross-validation reads.
REQUIRED_COLUMNS = ("lesion", "patient", "label", "dynamic_range_db")


class LeakageError(ValueError):
    """A cross-validation split lets a patient or lesion leak into its test set."""


def set_name(kind: str, ranges: Sequence[float], *, all_ranges: Sequence[float] | None = None) -> str:
    """Name of a train/test image set: ``"Train40dB"``, ``"TestALL"``, ``"Train40+50dB"``.

    Parameters
    ----------
    kind : {"Train", "Test"}
    ranges : sequence of float
        Dynamic ranges in dB of the set.
    all_ranges : sequence of float, optional
        The full set of ranges; a set holding all of them is called ``ALL``.

    Examples
    --------
    >>> set_name("Train", (40,)), set_name("Test", (40, 50, 60), all_ranges=(40, 50, 60))
    ('Train40dB', 'TestALL')
    """
    ranges = sorted(float(r) for r in ranges)
    if all_ranges is not None and len(ranges) > 1 and ranges == sorted(float(r) for r in all_ranges):
        return f"{kind}ALL"
    return kind + "+".join(f"{r:g}" for r in ranges) + "dB"


def _validate(features, manifest: pd.DataFrame, *, columns: Sequence[str] = REQUIRED_COLUMNS) -> np.ndarray:
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest: missing column(s) {missing}")
    X = np.asarray(features)
    if X.ndim != 2:
        raise ValueError(f"features: expected (n_images, d), got shape {X.shape}")
    if len(X) != len(manifest):
        raise ValueError(f"features: {len(X)} rows but the manifest has {len(manifest)} images")
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"features: non-finite values in image row(s) {rows}")
    return X


def lesion_table(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per lesion (order of first appearance): ``lesion``, ``patient``, ``label``.

    Raises
    ------
    ValueError
        If a lesion has images with different patients or labels, or a label
        is not 0 (benign) / 1 (malignant).

    Examples
    --------
    >>> m = pd.DataFrame({"lesion": ["a", "a", "b"], "patient": ["p", "p", "q"],
    ...                   "label": [1, 1, 0], "dynamic_range_db": [40, 50, 40]})
    >>> lesion_table(m).to_dict("list")
    {'lesion': ['a', 'b'], 'patient': ['p', 'q'], 'label': [1, 0]}
    """
    for c in ("lesion", "patient", "label"):
        if c not in manifest.columns:
            raise ValueError(f"manifest: missing column {c!r}")
    m = manifest[["lesion", "patient", "label"]].astype({"lesion": str, "patient": str})
    for c in ("patient", "label"):
        n = m.groupby("lesion", sort=False)[c].nunique()
        if (n > 1).any():
            raise ValueError(f"manifest: lesion {n[n > 1].index[0]!r} has more than one {c}")
    labels = pd.unique(m["label"])
    if not set(np.asarray(labels).tolist()) <= {0, 1}:
        raise ValueError(f"manifest: label must be 0 (benign) or 1 (malignant), got {sorted(labels)}")
    t = m.drop_duplicates("lesion").reset_index(drop=True)
    return pd.DataFrame(
        {
            "lesion": list(t["lesion"]),
            "patient": list(t["patient"]),
            "label": np.asarray(t["label"], dtype=int).tolist(),
        }
    )


def patient_folds(labels, patients, *, n_splits: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped, label-stratified folds over lesions.

    Parameters
    ----------
    labels : array_like, shape (n_lesions,)
        0 benign, 1 malignant.
    patients : array_like, shape (n_lesions,)
        Patient key of each lesion; all lesions of a patient share a fold.
    n_splits : int
    seed : int
        Seed of the shuffle (:class:`~sklearn.model_selection.StratifiedGroupKFold`).

    Returns
    -------
    list of (train_idx, test_idx)
        Sorted integer lesion indices; every lesion is tested exactly once.

    Examples
    --------
    >>> folds = patient_folds([0, 1] * 6, list("aabbccddeeff"), n_splits=3)
    >>> [len(test) for _, test in folds]
    [4, 4, 4]
    """
    labels = np.asarray(labels)
    patients = np.asarray(patients).astype(str)
    if labels.ndim != 1 or labels.shape != patients.shape:
        raise ValueError(f"patient_folds: labels {labels.shape} and patients {patients.shape} must be 1-D and equal")
    n_patients = len(np.unique(patients))
    if n_splits < 2 or n_patients < n_splits:
        raise ValueError(f"patient_folds: n_splits={n_splits} needs 2 <= n_splits <= n_patients ({n_patients})")
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        folds = [(np.sort(tr), np.sort(te)) for tr, te in cv.split(np.zeros(len(labels)), labels, patients)]
    check_folds(folds, patients)
    return folds


def check_folds(folds, patients, labels=None) -> None:
    """Raise :class:`LeakageError` unless ``folds`` is a clean patient-level split.

    Checks that no patient (hence no lesion) is on both sides of any fold and
    that every lesion is tested exactly once. With ``labels``, also that every
    training set holds both classes (``ValueError`` otherwise).

    Parameters
    ----------
    folds : sequence of (train_idx, test_idx)
        Lesion indices.
    patients : array_like, shape (n_lesions,)
    labels : array_like, shape (n_lesions,), optional

    Examples
    --------
    >>> check_folds([([0], [1, 2]), ([1, 2], [0])], ["a", "b", "b"])
    >>> check_folds([([0, 1], [2]), ([2], [0, 1])], ["a", "b", "b"])
    Traceback (most recent call last):
    ...
    uslib.folds.LeakageError: fold 0: patient 'b' is in the training set (lesions [1]) and the test set (lesions [2])
    """
    patients = np.asarray(patients).astype(str)
    n = len(patients)
    tested = np.zeros(n, dtype=int)
    first_fold = np.full(n, -1)
    for k, (train, test) in enumerate(folds):
        train = np.asarray(train, dtype=int)
        test = np.asarray(test, dtype=int)
        for name, idx in (("train", train), ("test", test)):
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise LeakageError(f"fold {k}: {name} index out of range for {n} lesions")
        both = np.intersect1d(patients[train], patients[test])
        if both.size:
            p = str(both[0])
            raise LeakageError(
                f"fold {k}: patient {p!r} is in the training set (lesions {train[patients[train] == p].tolist()}) "
                f"and the test set (lesions {test[patients[test] == p].tolist()})"
            )
        for i in test:
            if tested[i]:
                raise LeakageError(
                    f"lesion {i} (patient {str(patients[i])!r}) is tested twice: folds {first_fold[i]} and {k}"
                )
            tested[i] = 1
            first_fold[i] = k
        if labels is not None:
            y = np.asarray(labels)[train]
            if len(np.unique(y)) < 2:
                raise ValueError(f"fold {k}: the training lesions hold only class {np.unique(y).tolist()}")
    never = np.flatnonzero(tested == 0)
    if never.size:
        raise LeakageError(f"lesion(s) {never[:5].tolist()} (patient {str(patients[never[0]])!r}) never tested")


def _in_ranges(dynamic_range_db: np.ndarray, ranges: Sequence[float]) -> np.ndarray:
    ranges = np.atleast_1d(np.asarray(ranges, dtype=float))
    return np.isclose(dynamic_range_db[:, None], ranges[None, :], rtol=0, atol=1e-6).any(axis=1)


def _is_mask(images) -> bool:
    return images is not None and np.asarray(images).dtype == bool


def describe_selection(images) -> str:
    """How a selection of images is named in error messages."""
    if images is None:
        return ""
    if _is_mask(images):
        return " in the given image mask"
    return f" with dynamic range in {list(images)} dB"


@dataclass(frozen=True, eq=False)
class Design:
    """A feature matrix and its manifest, checked and indexed once.

    Build it with :meth:`Design.build`; select images with :meth:`select`.

    Attributes
    ----------
    X : ndarray, shape (n_images, d)
        The features, as given (not copied).
    lesions : DataFrame
        :func:`lesion_table` of the manifest: ``lesion``, ``patient``,
        ``label``, one row per lesion in order of first appearance.
    code : ndarray of int, shape (n_images,)
        Row of ``lesions`` that each image belongs to.
    dynamic_range_db : ndarray of float, shape (n_images,), or None
        Dynamic range of each image, dB; ``None`` when the manifest has no
        ``dynamic_range_db`` column (e.g. one row of lesion-level features
        per lesion), in which case images can be selected by mask only.

    Examples
    --------
    >>> m = pd.DataFrame({"lesion": ["a", "a", "b"], "patient": ["p", "p", "q"],
    ...                   "label": [1, 1, 0], "dynamic_range_db": [40, 50, 40]})
    >>> d = Design.build(np.zeros((3, 2)), m)
    >>> d.code.tolist(), d.image_labels.tolist(), d.select((40,)).tolist()
    ([0, 0, 1], [1, 1, 0], [True, False, True])
    """

    X: np.ndarray
    lesions: pd.DataFrame
    code: np.ndarray
    dynamic_range_db: np.ndarray | None

    @classmethod
    def build(cls, features, manifest: pd.DataFrame) -> "Design":
        """Check ``features`` against ``manifest`` and index the images by lesion.

        Parameters
        ----------
        features : array_like, shape (n_images, d)
            Finite values, row-aligned with ``manifest``.
        manifest : DataFrame
            Columns ``lesion``, ``patient``, ``label`` and, to select images by
            dynamic range, ``dynamic_range_db``.

        Raises
        ------
        ValueError
            If a column is missing, the shapes disagree, a feature is not
            finite, or a lesion has two patients or labels.
        """
        X = _validate(features, manifest, columns=("lesion", "patient", "label"))
        lesions = lesion_table(manifest)
        code = pd.Index(lesions["lesion"]).get_indexer(manifest["lesion"].astype(str))
        dr = np.asarray(manifest["dynamic_range_db"], dtype=float) if "dynamic_range_db" in manifest.columns else None
        return cls(X, lesions, code, dr)

    @property
    def n_images(self) -> int:
        """Number of images (rows of ``X``)."""
        return len(self.X)

    @property
    def image_labels(self) -> np.ndarray:
        """Label of each image (its lesion's), shape (n_images,)."""
        return self.lesions["label"].to_numpy()[self.code]

    def select(self, images=None) -> np.ndarray:
        """Boolean mask of a selection of images, shape (n_images,).

        Parameters
        ----------
        images : None, sequence of float, or array_like of bool
            ``None``: every image. A sequence of numbers: the dynamic ranges
            (dB, matched to 1e-6 dB) whose images are selected. A boolean
            array of shape (n_images,): that mask itself.
        """
        n = self.n_images
        if images is None:
            return np.ones(n, bool)
        if _is_mask(images):
            mask = np.asarray(images)
            if mask.shape != (n,):
                raise ValueError(f"image mask: expected shape ({n},), got {mask.shape}")
            return mask
        if self.dynamic_range_db is None:
            raise ValueError(
                "manifest: missing column(s) ['dynamic_range_db'] (needed to select images by dynamic range)"
            )
        return _in_ranges(self.dynamic_range_db, images)


def resolve_folds(
    lesions: pd.DataFrame, folds=None, *, n_splits: int = 5, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The lesion folds of a cross-validation: given ones checked, or new ones.

    Parameters
    ----------
    lesions : DataFrame
        :func:`lesion_table` of the manifest (``patient`` and ``label`` are used).
    folds : sequence of (train_idx, test_idx), optional
        Lesion indices (rows of ``lesions``); sorted and checked. Default:
        :func:`patient_folds` with ``n_splits`` and ``seed``.
    n_splits, seed : int
        For :func:`patient_folds` when ``folds`` is not given.

    Returns
    -------
    list of (train_idx, test_idx)
        Sorted integer arrays that passed :func:`check_folds` with the labels
        (no patient on both sides, every lesion tested once, both classes in
        every training set).

    Examples
    --------
    >>> les = pd.DataFrame({"lesion": list("abcd"), "patient": list("ppqr"), "label": [0, 1, 0, 1]})
    >>> [te.tolist() for _, te in resolve_folds(les, [([3, 2], [0, 1]), ([0, 1], [2, 3])])]
    [[0, 1], [2, 3]]
    """
    patients = lesions["patient"].to_numpy()
    labels = lesions["label"].to_numpy()
    if folds is None:
        folds = patient_folds(labels, patients, n_splits=n_splits, seed=seed)
    else:
        folds = [(np.sort(np.asarray(tr, dtype=int)), np.sort(np.asarray(te, dtype=int))) for tr, te in folds]
    check_folds(folds, patients, labels)
    return folds
