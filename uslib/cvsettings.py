"""The cross-validation and classifier settings, as one frozen object.

Every function that cross-validates or fits the classifier takes one
:class:`CVSettings` instead of a handful of loose keyword arguments: the
pipeline passes it whole from the validated profile
(:meth:`uslib.config.Profile.cv_settings`) through the cache keys
(:meth:`CVSettings.key`) to the fold loop and the classifier. Adding a
setting touches the profile schema (:class:`uslib.config.Profile`), this
class and the code that uses the setting, nothing in between; a field whose
name is a profile parameter is filled from the profile automatically.

The module imports nothing from ``uslib``, so the schema, the stages and the
pipeline can all depend on it.

Examples
--------
>>> s = CVSettings(n_splits=3, svm_c=10)
>>> s.svm_c, s.calibration
(10.0, 'grouped')
>>> s.replace(cv_seed=2).seeds
range(2, 7)
>>> CVSettings(calibration="isotonic")
Traceback (most recent call last):
...
ValueError: calibration: expected one of ('grouped', 'image'), got 'isotonic'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["CALIBRATIONS", "CVSettings"]

#: Accepted values of :attr:`CVSettings.calibration`.
CALIBRATIONS = ("grouped", "image")


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not (hasattr(value, "__index__")):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: expected a value >= {minimum}, got {value!r}")
    return value


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    return bool(value)


@dataclass(frozen=True)
class CVSettings:
    """How the patient-level cross-validation runs and the classifier is fitted.

    The defaults equal the profile schema's (:class:`uslib.config.Profile`;
    a test keeps them in step). Values are normalised on construction
    (``svm_c`` a float, ``n_splits`` an int, ...), so two settings that mean
    the same compare and hash equal.

    Attributes
    ----------
    n_splits : int
        Folds of the patient-level stratified cross-validation (>= 2).
    cv_seed : int
        Seed of the fold assignment and of the classifier's internal
        calibration split; repeat r uses ``cv_seed + r`` (:meth:`repeat`).
    n_repeats : int
        Repetitions of the cross-validation over seeds ``cv_seed``,
        ``cv_seed + 1``, ... (>= 1).
    svm_c : float
        Soft-margin penalty C of the linear SVM (> 0).
    class_weight : {"balanced", None}
        Class weights of the SVM (the paper: inversely proportional to the
        class frequencies). Not a profile parameter.
    standardize : bool
        z-score the features on the training images of each fold.
    calibration : {"grouped", "image"}
        Platt calibration on decision values cross-validated by lesion, or
        libsvm's image-level split (the paper's software).
    lesion_weighting : bool
        Give every training lesion the same total sample weight, whatever
        its number of images.
    """

    n_splits: int = 5
    cv_seed: int = 0
    n_repeats: int = 5
    svm_c: float = 1.0
    class_weight: str | None = "balanced"
    standardize: bool = True
    calibration: str = "grouped"
    lesion_weighting: bool = False

    def __post_init__(self):
        norm = {
            "n_splits": _integer("n_splits", self.n_splits, 2),
            "cv_seed": _integer("cv_seed", self.cv_seed, 0),
            "n_repeats": _integer("n_repeats", self.n_repeats, 1),
            "standardize": _boolean("standardize", self.standardize),
            "lesion_weighting": _boolean("lesion_weighting", self.lesion_weighting),
        }
        c = self.svm_c
        if isinstance(c, bool) or not isinstance(c, (int, float)) and not hasattr(c, "__float__"):
            raise ValueError(f"svm_c: expected a number, got {c!r}")
        if not float(c) > 0 or float(c) == float("inf"):
            raise ValueError(f"svm_c: expected a finite value > 0, got {c!r}")
        norm["svm_c"] = float(c)
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration: expected one of {CALIBRATIONS}, got {self.calibration!r}")
        norm["calibration"] = str(self.calibration)
        if self.class_weight not in ("balanced", None):
            raise ValueError(f"class_weight: expected 'balanced' or None, got {self.class_weight!r}")
        for name, value in norm.items():
            object.__setattr__(self, name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The settings' names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "CVSettings":
        """A copy with ``changes`` (validated like a new object).

        Examples
        --------
        >>> CVSettings().replace(lesion_weighting=True).lesion_weighting
        True
        """
        return dataclasses.replace(self, **changes)

    def repeat(self, r: int) -> "CVSettings":
        """The settings of repeat ``r``: seed ``cv_seed + r``, one repeat.

        Examples
        --------
        >>> CVSettings(cv_seed=3).repeat(2).cv_seed
        5
        """
        return self.replace(cv_seed=self.cv_seed + int(r), n_repeats=1)

    @property
    def seeds(self) -> range:
        """The fold seeds of the repeats: ``cv_seed`` … ``cv_seed + n_repeats - 1``."""
        return range(self.cv_seed, self.cv_seed + self.n_repeats)

    def key(self) -> dict[str, Any]:
        """Every setting by name (JSON-ready): what a cache key covers.

        Examples
        --------
        >>> CVSettings().key()["svm_c"]
        1.0
        """
        return dataclasses.asdict(self)
