"""Run profiles: their schema, validation, and paths.

At about 1,030 lines it is over the house's 900-line guide on purpose: it
is the one declaration of every profile parameter (type, accepted values,
default, description), and the validation that must read the whole
declaration at once (cross-parameter rules, bounds, paths, parameter cells);
split, the parameters page and the runner would read a schema spread over
several modules.

A profile (``params/*.yaml``) is a flat mapping of notebook parameter names
to values. :class:`Profile` declares every parameter once: its type, the
values it accepts, its default and what it means. The same declaration
validates

* a profile file, before any chapter runs (:func:`load_profile`, called by
  ``python -m uslib run``);
* the parameters of a chapter run on its own with papermill, in the cell
  right after its ``parameters`` cell (:func:`chapter_parameters`);

and is what the generated parameters page shows (:func:`parameter_specs`).
Validation is strict: a string is never read as a boolean or a number
(``standardize: "no"`` is an error, not ``True``), an unknown name is an
error with a did-you-mean, a key given twice in a YAML file is an error, and
every problem is reported at once, each naming the parameter and its value.

The runner passes each chapter the parameters it declares in its
``parameters`` cell; a chapter run on its own uses the literal defaults of
that cell, which equal the schema's defaults and ``params/default.yaml``.
Relative paths in a profile are resolved against the repository root, so a
chapter gives the same result whatever the working directory.

Examples
--------
>>> validate_parameters({"n_splits": 3, "svm_c": 10})
{'n_splits': 3, 'svm_c': 10}
>>> validate_parameters({"n_splits": "five", "standardise": False})
Traceback (most recent call last):
...
uslib.config.ProfileError: parameters: n_splits: expected an integer, got 'five'; standardise: unknown parameter \
(did you mean 'standardize'?), got False
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .cvsettings import CVSettings
from .store import REPO_ROOT, resolve_path, run_path as run_dir  # noqa: F401  (re-exported)

__all__ = [
    "REPO_ROOT",
    "PROFILE_DIR",
    "REQUIRED",
    "RUNNER_ONLY",
    "ProfileError",
    "Profile",
    "ParameterSpec",
    "parameter_specs",
    "validate_parameters",
    "load_profile",
    "chapter_parameters",
    "cv_settings",
    "check_folds_feasible",
    "resolve_path",
    "run_dir",
    "NOTEBOOK_DIR",
    "CHAPTER_DIR",
    "chapters",
    "notebook_parameters",
]

PROFILE_DIR = REPO_ROOT / "params"
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
#: Where the runner writes the executed chapters and the generated pages.
CHAPTER_DIR = REPO_ROOT / "book" / "chapters"

#: A Dask scheduler address: protocol, host, port (``tcp://10.0.0.5:8786``, ``tls://head:8786``).
_SCHEDULER_ADDRESS = re.compile(r"(tcp|tls|ucx|ws|wss|inproc)://[^\s:/]+(:\d{1,5})(/[^\s]*)?|inproc://[^\s]+")

_MAX_SEED = 2**32 - 1  # numpy SeedSequence and scikit-learn's random_state both take [0, 2**32)


class ProfileError(ValueError):
    """A profile or a chapter's parameters are missing, malformed or invalid.

    Parameters
    ----------
    source : str
        What the values came from, e.g. ``"profile params/tiny.yaml"`` or
        ``"chapter 05_cross_validation"``; alone, the whole message.
    problems : str or list of str, optional
        One per problem, each starting with the parameter's name; the message
        is ``"<source>: <problem>; <problem>"`` (one line).

    Examples
    --------
    >>> e = ProfileError("profile x.yaml", ["n_splits: expected an integer, got 'five'"])
    >>> str(e), e.problems
    ("profile x.yaml: n_splits: expected an integer, got 'five'", ["n_splits: expected an integer, got 'five'"])
    """

    def __init__(self, source: str, problems: Iterable[str] | str | None = None):
        self.source = str(source)
        self.problems = [] if problems is None else [problems] if isinstance(problems, str) else list(problems)
        super().__init__(f"{self.source}: " + "; ".join(self.problems) if self.problems else self.source)


# --------------------------------------------------------------------------- #
# The schema
# --------------------------------------------------------------------------- #

DynamicRangeDb = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: Upper bounds on sizes: far above any real run, low enough that a typo (an extra three zeros) is
#: refused at once instead of simulating, allocating or checking folds for minutes.
MAX_N_LESIONS = 5000  # OASBUD has 100 lesions; a phantom lesion is ~6.5 MB on disk
MAX_BATCH_SIZE = 4096  # images per forward pass
MAX_MARGIN_MM = 100.0  # an OASBUD scan is ~50 mm deep
MAX_SKIP_SAMPLES = 100_000  # an OASBUD RF matrix has ~2000 rows
MarginMm = Annotated[float, Field(gt=0, le=MAX_MARGIN_MM, allow_inf_nan=False)]
Backbone = Literal["inception_v3", "vgg19"]


def _param(
    default: Any,
    description: str,
    *,
    required: bool = False,
    runner_only: bool = False,
    unique: bool = False,
    rule: str | None = None,
    **constraints: Any,
) -> Any:
    """A schema field: ``Field`` plus this project's marks (kept in the JSON schema).

    ``required``: every profile file must set it; ``runner_only``: read by the
    runner, declared by no chapter; ``unique``: a list without repeats;
    ``rule``: a cross-parameter rule, in words (checked by :meth:`Profile.cross_problems`).
    """
    extra: dict[str, Any] = {}
    if required:
        extra["x-required-in-profile"] = True
    if runner_only:
        extra["x-runner-only"] = True
    if unique:
        extra["uniqueItems"] = True
    if rule:
        extra["x-rule"] = rule
    return Field(default, description=description, json_schema_extra=extra or None, **constraints)


class Profile(BaseModel):
    """Every parameter of a run: type, accepted values, default, meaning.

    Strict: no string is read as a boolean or a number, no boolean as a
    number (an integer is accepted where a number belongs); unknown names are
    refused. Cross-parameter rules are in :meth:`cross_problems`.

    Examples
    --------
    >>> Profile().n_splits
    5
    >>> Profile.model_fields["svm_c"].description
    'SVM regularisation C'
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # Run
    profile: str = _param(
        "default", "name of the profile, recorded in run.json", required=True, runner_only=True, min_length=1
    )
    run_dir: str = _param(
        "runs/default", "run directory (relative to the repository root unless absolute)", required=True, min_length=1
    )
    # Data
    data_source: Literal["phantom", "oasbud"] = _param(
        "phantom", "where the lesions come from: the synthetic phantom or the OASBUD file", required=True
    )
    oasbud_path: str | None = _param(
        None,
        'path to OASBUD.mat when data_source is oasbud ("download" fetches it)',
        rule="required when data_source is oasbud",
        min_length=1,
    )
    patients_csv: str | None = _param(None, "optional CSV (id,patient) overriding the patient rule", min_length=1)
    skip_samples: int = _param(20, "non-echo rows dropped at the top of every RF matrix", ge=0, le=MAX_SKIP_SAMPLES)
    n_lesions: int = _param(40, "phantom only: number of lesions", required=True, ge=1, le=MAX_N_LESIONS)
    data_seed: int = _param(0, "phantom only: seed of the simulation", required=True, ge=0, le=_MAX_SEED)
    # Images
    dynamic_ranges_db: list[DynamicRangeDb] = _param(
        [40, 50, 60],
        "dynamic ranges (compression thresholds) of the B-mode images, dB",
        required=True,
        unique=True,
        min_length=2,
    )
    margins_mm: list[MarginMm] = _param(
        [2, 5, 10], "bands of tissue kept around the ROI when cropping, mm", required=True, unique=True, min_length=1
    )
    # Features
    backbones: list[Backbone] = _param(
        ["inception_v3", "vgg19"], "CNNs used as feature extractors", required=True, unique=True, min_length=1
    )
    weights: Literal["imagenet", "random"] = _param(
        "imagenet", "network weights: ImageNet, or a seeded random initialisation", required=True
    )
    weights_path: str | None = _param(None, "local weights file or folder (offline clusters)", min_length=1)
    strict_weights: bool = _param(False, "true: fail when ImageNet weights cannot be had (no random fallback)")
    allow_download: bool = _param(
        True,
        "the runner may download what is missing: OASBUD.mat to oasbud_path (checked by SHA-256) and "
        "ImageNet weights into the Keras cache (checked by MD5)",
    )
    weights_seed: int = _param(0, "seed of the random-initialisation fallback", ge=0, le=_MAX_SEED)
    batch_size: int | None = _param(
        None,
        "images per forward pass; null: each network's rule (InceptionV3 64, VGG19 32: "
        "uslib.features.DEFAULT_BATCH_SIZE, chosen for throughput on CPUs)",
        ge=1,
        le=MAX_BATCH_SIZE,
    )
    precision: Literal["float32", "bfloat16", "int8"] = _param(
        "float32",
        "arithmetic of the networks: float32, or bfloat16 (opt-in: faster on CPUs with AVX512_BF16 or "
        "AMX, features differ slightly and are cached apart; refused where the CPU has no native bfloat16), or "
        "int8 (opt-in: OpenVINO + NNCF post-training quantization calibrated on a fixed subset of the run's "
        "images, on CPUs with AVX512_VNNI, AVX_VNNI or AMX_INT8; needs pip install 'uslib[int8]'; cached apart)",
        rule="bfloat16 with strict_weights true (the paper's protocol) needs allow_bfloat16 true; "
        "int8 with strict_weights true needs allow_int8 true",
    )
    allow_bfloat16: bool = _param(
        False,
        "true: a profile with strict_weights true (the paper's protocol) may set precision bfloat16; "
        "without it such a profile is refused, so the paper's figures are never silently computed in "
        "reduced precision",
        runner_only=True,
    )
    allow_int8: bool = _param(
        False,
        "true: a profile with strict_weights true (the paper's protocol) may set precision int8; "
        "without it such a profile is refused, so the paper's figures are never silently computed "
        "with a quantized network",
        runner_only=True,
    )
    # Cross-validation
    n_splits: int = _param(
        5,
        "folds of the patient-level stratified cross-validation",
        required=True,
        ge=2,
        rule="patient-level folds must be feasible: at most the number of patients, both classes in every training set",
    )
    cv_seed: int = _param(
        0, "seed of the fold assignment (repeat r uses cv_seed + r)", required=True, ge=0, le=_MAX_SEED
    )
    svm_c: float = _param(1.0, "SVM regularisation C", required=True, gt=0, allow_inf_nan=False)
    standardize: bool = _param(True, "z-score features on the training images of each fold")
    calibration: Literal["grouped", "image"] = _param(
        "grouped",
        "Platt calibration of the SVM: on decision values cross-validated by lesion (grouped) or "
        "libsvm's image-level split (image, the paper's software)",
    )
    lesion_weighting: bool = _param(
        False, "give every training lesion the same total SVM sample weight, whatever its number of images"
    )
    n_repeats: int = _param(5, "repetitions of the CV over seeds cv_seed, cv_seed+1, ...", ge=1)
    # Robustness chapter (beyond the paper)
    unseen_ranges_db: list[DynamicRangeDb] = _param(
        [30, 35, 45, 55, 65, 70, 80],
        "test dynamic ranges no paper training set contains, dB",
        unique=True,
        rule="none of dynamic_ranges_db",
        min_length=1,
    )
    robustness_margins_mm: list[MarginMm] = _param(
        [5], "margin of every image of the robustness chapter, mm", unique=True, min_length=1
    )
    continuous_range_db: list[DynamicRangeDb] = _param(
        [35, 65],
        "TrainContinuous: each crop at one dynamic range drawn from [low, high], dB",
        rule="low < high",
        min_length=2,
        max_length=2,
    )
    # Figures
    lesion_index: int = _param(
        0, "which lesion the figures show (0-based)", ge=0, rule="less than n_lesions for the phantom"
    )
    # Execution
    scheduler: str | None = _param(
        None,
        "where feature extraction and sweeps run: null in this process; local: a Dask LocalCluster "
        "sized to this machine; or a Dask scheduler address such as tcp://host:8786",
        rule="null, local, or <protocol>://<host>:<port>",
        min_length=1,
    )
    scheduler_timeout_s: float = _param(
        10,
        "seconds to wait for a scheduler address to answer before the run stops, s",
        runner_only=True,
        gt=0,
        le=600,
        allow_inf_nan=False,
    )
    cache_dir: str | None = _param(
        None,
        "folder of the content-keyed caches (data set file, CNN features) shared between runs; null: the run directory",
        min_length=1,
    )
    cell_timeout_s: float = _param(
        3600,
        "longest one notebook cell may run before the runner stops, s",
        runner_only=True,
        gt=0,
        allow_inf_nan=False,
    )

    @field_validator("dynamic_ranges_db", "margins_mm", "backbones", "unseen_ranges_db", "robustness_margins_mm")
    @classmethod
    def _no_repeats(cls, value: list) -> list:
        seen, repeated = set(), []
        for v in value:
            if v in seen and v not in repeated:
                repeated.append(v)
            seen.add(v)
        if repeated:
            raise ValueError(f"repeats {_fmt_list(repeated)}")
        return value

    @field_validator("scheduler")
    @classmethod
    def _scheduler_address(cls, value: str | None) -> str | None:
        if value is None or value == "local" or _SCHEDULER_ADDRESS.fullmatch(value):
            return value
        hint = " (did you mean 'local'?)" if difflib.get_close_matches(value, ["local"], n=1) else ""
        raise ValueError(f"expected null, 'local' or a scheduler address such as 'tcp://host:8786'{hint}")

    @field_validator("continuous_range_db")
    @classmethod
    def _low_below_high(cls, value: list) -> list:
        if value[0] >= value[1]:
            raise ValueError("expected [low, high] with low < high")
        return value

    def cv_settings(self) -> CVSettings:
        """The cross-validation and classifier settings of this profile, as one object.

        Every field of :class:`~uslib.cvsettings.CVSettings` that is a
        parameter here takes its value from here (by name); the others keep
        the object's defaults.

        Examples
        --------
        >>> Profile(svm_c=10).cv_settings().svm_c
        10.0
        """
        fields = type(self).model_fields
        return CVSettings(**{n: getattr(self, n) for n in CVSettings.field_names() if n in fields})

    def cross_problems(self, names: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """Rules between parameters, as ``(name, problem)`` pairs.

        Parameters
        ----------
        names : iterable of str, optional
            The parameters actually given (a chapter declares a subset); a rule
            is checked only when all its parameters are given. Default: all.

        Returns
        -------
        list of (str, str)
            Empty when every rule holds. The fold feasibility of ``n_splits``
            is not checked here (it needs the data set's patients, see
            :func:`check_folds_feasible`).
        """
        given = set(type(self).model_fields) if names is None else set(names)

        def has(*keys: str) -> bool:
            return given.issuperset(keys)

        out = []
        if has("data_source", "oasbud_path") and self.data_source == "oasbud" and self.oasbud_path is None:
            out.append(("oasbud_path", "data_source 'oasbud' needs a path to OASBUD.mat (or 'download')"))
        if has("dynamic_ranges_db", "unseen_ranges_db"):
            both = sorted(set(map(float, self.dynamic_ranges_db)) & set(map(float, self.unseen_ranges_db)))
            if both:
                out.append(("unseen_ranges_db", f"repeats {_fmt_list(both)} of dynamic_ranges_db"))
        if (
            has("precision", "strict_weights", "allow_bfloat16")
            and self.precision == "bfloat16"
            and self.strict_weights
            and not self.allow_bfloat16
        ):
            out.append(
                (
                    "precision",
                    "bfloat16 departs from the paper's float32 arithmetic, and this profile "
                    "follows the paper's protocol (strict_weights true): set allow_bfloat16: "
                    "true in the profile to ask for it explicitly",
                )
            )
        if (
            has("precision", "strict_weights", "allow_int8")
            and self.precision == "int8"
            and self.strict_weights
            and not self.allow_int8
        ):
            out.append(
                (
                    "precision",
                    "int8 departs from the paper's float32 arithmetic (a quantized network), and "
                    "this profile follows the paper's protocol (strict_weights true): set "
                    "allow_int8: true in the profile to ask for it explicitly",
                )
            )
        if (
            has("data_source", "n_lesions", "lesion_index")
            and self.data_source == "phantom"
            and self.lesion_index >= self.n_lesions
        ):
            out.append(("lesion_index", f"must be less than n_lesions ({self.n_lesions})"))
        return out


#: Parameters every profile file must set.
REQUIRED = tuple(n for n, f in Profile.model_fields.items() if (f.json_schema_extra or {}).get("x-required-in-profile"))
#: Parameters read by the runner only (no chapter declares them).
RUNNER_ONLY = tuple(n for n, f in Profile.model_fields.items() if (f.json_schema_extra or {}).get("x-runner-only"))


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of :class:`Profile`, in words (for pages and tests).

    Attributes
    ----------
    name, type, allowed, description : str
        ``type`` e.g. ``"list of numbers"``; ``allowed`` e.g. ``"each > 0; at least 2; no repeats"``.
    default : object
        The schema's default (equal to ``params/default.yaml`` and the chapters' literals).
    required : bool
        Every profile file must set it.
    runner_only : bool
        Read by the runner; no chapter declares it.
    """

    name: str
    type: str
    allowed: str
    default: Any
    description: str
    required: bool
    runner_only: bool


def parameter_specs() -> dict[str, ParameterSpec]:
    """The schema in words: name -> :class:`ParameterSpec`, in declaration order.

    Examples
    --------
    >>> s = parameter_specs()["data_source"]
    >>> s.type, s.allowed, s.default
    ('string', 'phantom | oasbud', 'phantom')
    >>> parameter_specs()["dynamic_ranges_db"].allowed
    'each > 0; at least 2 values; no repeats'
    """
    props = Profile.model_json_schema()["properties"]
    out = {}
    for name, field in Profile.model_fields.items():
        s = props[name]
        extra = field.json_schema_extra or {}
        allowed = _allowed_text(s)
        if extra.get("x-rule"):
            allowed = f"{allowed}; {extra['x-rule']}" if allowed else extra["x-rule"]
        out[name] = ParameterSpec(
            name=name,
            type=_type_text(s),
            allowed=allowed,
            default=field.default,
            description=field.description or "",
            required=bool(extra.get("x-required-in-profile")),
            runner_only=bool(extra.get("x-runner-only")),
        )
    return out


def _type_text(s: Mapping[str, Any]) -> str:
    if "anyOf" in s:
        return " or ".join(_type_text(x) for x in s["anyOf"])
    t = s.get("type")
    if t == "array":
        item = _type_text(s.get("items", {}))
        return f"list of {item}s"
    return {"integer": "integer", "number": "number", "boolean": "boolean", "string": "string", "null": "null"}.get(
        t, str(t)
    )


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _allowed_text(s: Mapping[str, Any]) -> str:
    if "anyOf" in s:
        return "; ".join(a for a in (_allowed_text(x) for x in s["anyOf"]) if a)
    if "enum" in s:
        return " | ".join(str(v) for v in s["enum"])
    if s.get("type") == "boolean":
        return "true | false"
    parts = []
    for key, sym in (("exclusiveMinimum", ">"), ("minimum", "≥"), ("exclusiveMaximum", "<"), ("maximum", "≤")):
        if key in s:
            parts.append(f"{sym} {_num(s[key])}")
    if s.get("minLength"):
        parts.append("non-empty")
    if s.get("type") == "array":
        item = _allowed_text(s.get("items", {}))
        if item:
            parts.append(f"each {item}")
        lo, hi = s.get("minItems"), s.get("maxItems")
        if lo is not None and lo == hi:
            parts.append(f"exactly {lo} values")
        elif lo:
            parts.append(f"at least {lo} value{'s' if lo > 1 else ''}")
        if s.get("uniqueItems"):
            parts.append("no repeats")
    return ", ".join(parts) if s.get("type") != "array" else "; ".join(parts)


# --------------------------------------------------------------------------- #
# Validation
# --------------------------------------------------------------------------- #

_TYPE_PHRASES = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "finite_number": "expected a finite number",
    "string_too_short": "expected a non-empty string",
}


def _fmt_list(values: Iterable[Any]) -> str:
    return "[" + ", ".join(_num(v) if isinstance(v, float) else repr(v) for v in values) + "]"


def _phrase(err: Mapping[str, Any], name: str) -> str:
    """The problem of one pydantic error, in words (without the name and value)."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _TYPE_PHRASES:
        return _TYPE_PHRASES[kind]
    if kind == "literal_error":
        choices = _choices(name)
        hint = difflib.get_close_matches(str(err.get("input")), choices, n=1)
        text = "expected one of " + ", ".join(repr(c) for c in choices)
        return text + (f" (did you mean {hint[0]!r}?)" if hint else "")
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        sym = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"expected a value {sym} {_num(bound) if isinstance(bound, float) else bound}"
    if kind == "too_short":
        n = ctx.get("min_length")
        return f"expected at least {n} value{'s' if n != 1 else ''}"
    if kind == "too_long":
        n = ctx.get("max_length")
        return f"expected at most {n} value{'s' if n != 1 else ''}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


def _choices(name: str) -> list[str]:
    s = Profile.model_json_schema()["properties"].get(name, {})
    s = s.get("items", s)
    return list(s.get("enum", []))


def _unknown(name: Any, value: Any) -> str:
    hint = difflib.get_close_matches(str(name), list(Profile.model_fields), n=1)
    return f"{name}: unknown parameter" + (f" (did you mean {hint[0]!r}?)" if hint else "") + f", got {value!r}"


def _problems(values: Mapping[str, Any]) -> list[str]:
    """Type and range problems of ``values`` (a subset of the schema's names), in words."""
    try:
        Profile.model_validate({**_defaults(), **values})
    except ValidationError as e:
        out = []
        for err in e.errors(include_url=False):
            loc = err["loc"]
            name = str(loc[0]) if loc else "?"
            if err["type"] == "extra_forbidden":
                out.append(_unknown(name, err["input"]))
                continue
            if len(loc) > 1:
                where, got = f"{name}[{loc[1]}]", err["input"]
            else:
                where, got = name, values.get(name, err["input"])
            out.append(f"{where}: {_phrase(err, name)}, got {got!r}")
        return out
    return []


def _defaults() -> dict[str, Any]:
    return {n: f.default for n, f in Profile.model_fields.items()}


def cv_settings(values: Mapping[str, Any]) -> CVSettings:
    """The :class:`~uslib.cvsettings.CVSettings` of validated parameter values.

    ``values`` is any subset of the schema (a chapter's parameters, a whole
    profile); missing parameters take the schema's defaults.

    Examples
    --------
    >>> cv_settings({"n_splits": 3, "svm_c": 10, "run_dir": "runs/x"})
    CVSettings(n_splits=3, cv_seed=0, n_repeats=5, svm_c=10.0, class_weight='balanced', standardize=True, \
calibration='grouped', lesion_weighting=False)
    """
    fields = Profile.model_fields
    return Profile.model_validate({**_defaults(), **{k: v for k, v in values.items() if k in fields}}).cv_settings()


#: Environment variable noting the phantom fold check last passed in this process
#: (or its parent, e.g. the runner of a chapter's kernel): see :func:`validate_parameters`.
FOLDS_CHECKED_ENV = "USLIB_FOLDS_CHECKED"


def validate_parameters(
    values: Mapping[str, Any],
    *,
    source: str = "parameters",
    names: Iterable[str] | None = None,
    check_folds: bool = True,
) -> dict[str, Any]:
    """Check parameter values against :class:`Profile`; return them unchanged.

    Parameters
    ----------
    values : mapping
        Parameter name -> value; any subset of the schema's names. Path-like
        values become strings; everything else is returned as given (an
        integer stays an integer, so cache keys match a chapter run alone).
    source : str
        What the values came from; the first words of the error message.
    names : iterable of str, optional
        The parameters the cross-parameter rules may use (default: the keys
        of ``values``). With ``data_source`` ``"phantom"`` and ``n_splits``,
        ``n_lesions``, ``data_seed`` and ``cv_seed`` among them, the folds are
        checked on the phantom's patients (seeds ``cv_seed`` …
        ``cv_seed + n_repeats - 1``).
    check_folds : bool, default True
        Run that fold check (it imports the phantom and scikit-learn, a few
        seconds; the pre-flight check skips it to answer at once).

    Returns
    -------
    dict

    Raises
    ------
    ProfileError
        Listing every problem, each naming the parameter and its value.

    Examples
    --------
    >>> validate_parameters({"dynamic_ranges_db": []}, source="profile x.yaml")
    Traceback (most recent call last):
    ...
    uslib.config.ProfileError: profile x.yaml: dynamic_ranges_db: expected at least 2 values, got []
    """
    values = {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in values.items()}
    bad_names = [k for k in values if not isinstance(k, str)]
    if bad_names:
        raise ProfileError(source, [f"{k!r}: parameter names must be strings" for k in bad_names])
    problems = _problems(values)
    if not problems:
        given = set(values) if names is None else set(names)
        model = Profile.model_validate({**_defaults(), **values})
        problems = [f"{n}: {p}, got {values.get(n)!r}" for n, p in model.cross_problems(given)]
        if (
            not problems
            and check_folds
            and model.data_source == "phantom"
            and given.issuperset({"data_source", "n_lesions", "data_seed", "n_splits", "cv_seed"})
        ):
            n_repeats = model.n_repeats if "n_repeats" in given else 1
            # The check costs a second or two (the phantom's patients, scikit-learn's
            # folds for every seed). Once passed it is noted in the environment, which
            # the runner's chapter kernels inherit: they skip the same check of the
            # same values (fewer repeats are seeds already checked), and check any
            # other values in full.
            base = (
                f"n_lesions={model.n_lesions} data_seed={model.data_seed} n_splits={model.n_splits} "
                f"cv_seed={model.cv_seed} n_repeats="
            )
            token = f"{base}{n_repeats}"
            noted = os.environ.get(FOLDS_CHECKED_ENV, "")
            done = noted.startswith(base) and noted[len(base) :].isdigit() and int(noted[len(base) :]) >= n_repeats
            if not done:
                from .phantom import patient_assignment

                labels, patients = patient_assignment(model.n_lesions, seed=model.data_seed)
                try:
                    check_folds_feasible(
                        model.n_splits,
                        labels,
                        patients,
                        seeds=range(model.cv_seed, model.cv_seed + n_repeats),
                        data=f"the phantom (n_lesions {model.n_lesions}, data_seed {model.data_seed})",
                    )
                    os.environ[FOLDS_CHECKED_ENV] = token
                except ProfileError as e:
                    problems = e.problems
    if problems:
        raise ProfileError(source, problems)
    return values


def check_folds_feasible(
    n_splits: int,
    labels,
    patients,
    *,
    seeds: Iterable[int] = (0,),
    data: str = "the data set",
    source: str = "parameters",
) -> None:
    """Raise :class:`ProfileError` unless ``n_splits`` patient-level folds can be made.

    Checks what the cross-validation needs of its folds
    (:func:`uslib.folds.patient_folds` and
    :func:`uslib.folds.check_folds`): ``2 <= n_splits <=`` the number of
    patients, and, for every seed, folds with both classes in every training
    set. Call it once the data set is loaded (for OASBUD the patients are
    known only then); it costs milliseconds once scikit-learn is imported.

    Parameters
    ----------
    n_splits : int
        Folds of the cross-validation.
    labels : array_like, shape (n_lesions,)
        0 benign, 1 malignant.
    patients : array_like, shape (n_lesions,)
        Patient key of each lesion.
    seeds : iterable of int
        Seeds of the fold assignment to check (``cv_seed`` … ``cv_seed + n_repeats - 1``).
    data : str
        The data set, in words, for the message.
    source : str
        What ``n_splits`` came from (e.g. ``"profile params/paper.yaml"``).

    Raises
    ------
    ProfileError
        Naming ``n_splits``, its value, and the largest feasible value.

    Examples
    --------
    >>> labels, patients = [0, 0, 1, 1] * 3, list("aabbccddeeff")   # 6 patients, 3 of each class
    >>> check_folds_feasible(6, labels, patients)
    >>> check_folds_feasible(7, labels, patients)
    Traceback (most recent call last):
    ...
    uslib.config.ProfileError: parameters: n_splits: the data set has only 6 patients \
(3 with a benign lesion, 3 with a malignant one), at most 6 folds work, got 7
    """
    import numpy as np

    labels = np.asarray(labels)
    patients = np.asarray(patients).astype(str)
    if labels.ndim != 1 or labels.shape != patients.shape:
        raise ValueError(
            f"check_folds_feasible: labels {labels.shape} and patients {patients.shape} must be 1-D and of equal length"
        )
    seeds = [int(s) for s in seeds]
    n_patients = len(np.unique(patients))
    per_class = [len(np.unique(patients[labels == c])) for c in (0, 1)]

    def feasible(k: int) -> bool:
        if not 2 <= k <= n_patients:
            return False
        from .folds import check_folds, patient_folds

        try:
            for s in seeds:
                check_folds(patient_folds(labels, patients, n_splits=k, seed=s), patients, labels)
        except ValueError:
            return False
        return True

    if feasible(int(n_splits)):
        return
    best = next((k for k in range(min(int(n_splits) - 1, n_patients), 1, -1) if feasible(k)), None)
    counts = f"{per_class[0]} with a benign lesion, {per_class[1]} with a malignant one"
    hint = f"at most {best} folds work" if best else "no number of folds works (each class needs 2 patients or more)"
    if n_splits > n_patients:
        what = f"{data} has only {n_patients} patients ({counts})"
    else:
        what = f"{data} ({n_patients} patients: {counts}) cannot give every training set both classes"
    raise ProfileError(source, f"n_splits: {what}, {hint}, got {n_splits!r}")


# --------------------------------------------------------------------------- #
# Profiles and chapters
# --------------------------------------------------------------------------- #


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one YAML mapping; ``str()`` names it and both lines."""

    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"{key}: given twice (lines {first_line} and {line})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML SafeLoader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # unhashable: the base class says so
                    continue
                if first != key_node.start_mark.line + 1:
                    raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 reads 1e-3, 1E5 and 1e300 as numbers; PyYAML (YAML 1.1) wants a dot and a signed exponent
# (1.0e-3, 1.0e+5), and would hand the schema the string '1e-3'. The loader resolves both as numbers.
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _profile_text(p: Path, source: str) -> str:
    """The text of a profile file: UTF-8 (a byte-order mark allowed), else one line saying what it is."""
    try:
        raw = p.read_bytes()
    except IsADirectoryError:
        raise ProfileError(source, "is a folder, not a YAML file") from None
    except OSError as e:
        raise ProfileError(source, f"cannot be read ({e.strerror or type(e).__name__})") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        what = "UTF-16 or UTF-32 text" if raw.startswith((b"\xff\xfe", b"\xfe\xff")) else "a binary file"
        raise ProfileError(source, f"not a UTF-8 text file (it looks like {what}): save it as UTF-8 YAML")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ProfileError(
            source, f"not a UTF-8 text file (byte {e.start} is {raw[e.start : e.start + 1]!r}): save it as UTF-8 YAML"
        ) from None


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _profile_path(profile: str | os.PathLike) -> Path:
    p = Path(profile)
    if not p.suffix:
        p = PROFILE_DIR / f"{profile}.yaml"
    elif not p.is_absolute() and not p.exists():
        p = REPO_ROOT / p
    return p


def load_profile(
    profile: str | os.PathLike, overrides: Mapping[str, Any] | None = None, *, check_folds: bool = True
) -> dict[str, Any]:
    """Read and validate a YAML profile.

    Parameters
    ----------
    profile : str or path
        A path to a YAML file, or the name of one in ``params/``
        (``"default"``, ``"tiny"``, ``"paper"``).
    overrides : mapping, optional
        Values that replace the file's (e.g. another ``run_dir``), merged
        before validation.
    check_folds : bool, default True
        Check that the phantom's patients support ``n_splits``
        (:func:`validate_parameters`); False skips that check's seconds.

    Returns
    -------
    dict
        Every parameter of :class:`Profile`: the file's values and the
        overrides as given, the schema's defaults for the rest.

    Raises
    ------
    ProfileError
        If the file does not exist, is not valid YAML, gives a key twice, is
        not a mapping, lacks a :data:`REQUIRED` parameter, or a value fails the
        schema (all problems in one message, each naming the parameter and its
        value). Nothing heavier than numpy and scikit-learn is imported.

    Examples
    --------
    >>> load_profile("tiny")["n_lesions"]
    12
    >>> load_profile("tiny", overrides={"n_splits": 40})
    Traceback (most recent call last):
    ...
    uslib.config.ProfileError: profile params/tiny.yaml: n_splits: the phantom (n_lesions 12, data_seed 0) has only \
11 patients (6 with a benign lesion, 5 with a malignant one), at most 7 folds work, got 40
    """
    p = _profile_path(profile)
    if not p.exists():
        raise ProfileError(f"profile {str(profile)!r}", f"no such file ({p})")
    source = f"profile {_shown(p)}"
    try:
        params = yaml.load(_profile_text(p, source), Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ProfileError(source, str(e)) from None
    except yaml.YAMLError as e:
        raise ProfileError(source, "not valid YAML: " + " ".join(str(e).split())) from None
    if not isinstance(params, dict):
        raise ProfileError(source, "expected a mapping of parameter names to values")
    merged = {**params, **dict(overrides or {})}
    missing = [f"{k}: missing parameter (every profile sets it)" for k in REQUIRED if k not in merged]
    try:
        values = validate_parameters(merged, source=source, names=Profile.model_fields, check_folds=check_folds)
    except ProfileError as e:
        raise ProfileError(source, missing + e.problems) from None
    if missing:
        raise ProfileError(source, missing)
    return {**_defaults(), **values}


def _declared(chapter: str) -> list[str] | None:
    """Names assigned in the ``parameters`` cell of ``notebooks/<chapter>.ipynb`` (None: no such notebook)."""
    path = NOTEBOOK_DIR / f"{chapter}.ipynb"
    if not path.exists():
        return None
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return [
                t.id
                for node in tree.body
                if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(t, ast.Name)
            ]
    return []


def chapter_parameters(namespace: Mapping[str, Any], chapter: str) -> dict[str, Any]:
    """Validate a chapter's parameters where they live: in the notebook's namespace.

    Called in the cell right after a chapter's ``parameters`` cell (papermill
    puts the values passed with ``-p`` in between), so a chapter run on its
    own stops at once, naming the parameter, instead of failing later.

    Parameters
    ----------
    namespace : mapping
        The notebook's ``globals()``.
    chapter : str
        The notebook's name without suffix, e.g. ``"05_cross_validation"``;
        its ``parameters`` cell says which names to check (if the source
        notebook is not found, every schema name in ``namespace`` is checked).

    Returns
    -------
    dict
        The chapter's parameters, as given.

    Raises
    ------
    ProfileError
        Same schema and messages as :func:`load_profile`, e.g.
        ``chapter 05_cross_validation: standardize: expected true or false, got 'no'``.

    Examples
    --------
    >>> chapter_parameters({"run_dir": "runs/x", "n_lesions": 6, "data_seed": 0}, "no_such_chapter")
    {'run_dir': 'runs/x', 'n_lesions': 6, 'data_seed': 0}
    """
    source = f"chapter {chapter}"
    declared = _declared(chapter)
    if declared is None:
        declared = [n for n in Profile.model_fields if n in namespace]
    problems = [_unknown(n, namespace.get(n)) for n in declared if n not in Profile.model_fields]
    problems += [f"{n}: not defined" for n in declared if n in Profile.model_fields and n not in namespace]
    if problems:
        raise ProfileError(source, problems)
    return validate_parameters({n: namespace[n] for n in declared}, source=source)


# --------------------------------------------------------------------------- #
# Paths
# --------------------------------------------------------------------------- #


def chapters(notebook_dir: Path = NOTEBOOK_DIR) -> list[Path]:
    """The source notebooks, in book order (their file names sort in order)."""
    return sorted(p for p in Path(notebook_dir).glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Parameters declared in a notebook's ``parameters`` cell.

    Returns
    -------
    dict
        name -> {"default": literal text, "type": inferred type, "help": comment}.
    """
    import papermill as pm

    info = pm.inspect_notebook(str(path))
    return {
        name: {"default": p["default"], "type": p["inferred_type_name"], "help": p["help"]} for name, p in info.items()
    }
