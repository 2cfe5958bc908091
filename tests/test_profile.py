"""The profile schema: one declaration, validated before anything runs.

Every hole users found in the old loose reading of profiles fails here with
the parameter named: a mistyped key, a string where a boolean or number
belongs, an empty list, a key given twice, more folds than patients.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from uslib.config import (
    PROFILE_DIR,
    REPO_ROOT,
    REQUIRED,
    RUNNER_ONLY,
    Profile,
    ProfileError,
    chapter_parameters,
    check_folds_feasible,
    load_profile,
    parameter_specs,
    validate_parameters,
)
from uslib.phantom import patient_assignment

TINY = (PROFILE_DIR / "tiny.yaml").read_text()


def _profile(tmp_path: Path, replace: dict[str, str] | None = None, append: str = "", name: str = "x.yaml") -> Path:
    """params/tiny.yaml with whole lines ``key: ...`` replaced (value text as written in YAML)."""
    text = TINY
    for key, value in (replace or {}).items():
        text, n = re.subn(rf"^{key}:.*$", f"{key}: {value}", text, flags=re.M)
        assert n == 1, key
    path = tmp_path / name
    path.write_text(text + append)
    return path


def _error(path_or_name, **kwargs) -> ProfileError:
    with pytest.raises(ProfileError) as info:
        load_profile(path_or_name, **kwargs)
    return info.value


# --------------------------------------------------------------------------- #
# The shipped profiles
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", ["default", "tiny", "paper"])
def test_shipped_profiles_validate_and_set_every_key_they_must(name):
    raw = yaml.safe_load((PROFILE_DIR / f"{name}.yaml").read_text())
    assert set(raw) <= set(Profile.model_fields), "every key of a profile is declared"
    assert set(REQUIRED) <= set(raw)
    params = load_profile(name)
    assert set(params) == set(Profile.model_fields)
    assert {k: params[k] for k in raw} == raw, "values come back as written (an int stays an int)"


def test_schema_defaults_equal_the_default_profile():
    raw = yaml.safe_load((PROFILE_DIR / "default.yaml").read_text())
    specs = parameter_specs()
    for name, value in raw.items():
        assert specs[name].default == value, name


def test_every_parameter_has_a_type_and_a_one_line_description():
    for name, spec in parameter_specs().items():
        assert spec.description and "\n" not in spec.description, name
        assert spec.type, name


def test_backbones_of_the_schema_are_the_library_s():
    from uslib.features import BACKBONES

    declared = Profile.model_json_schema()["properties"]["backbones"]["items"]["enum"]
    assert sorted(declared) == sorted(BACKBONES)


# --------------------------------------------------------------------------- #
# The holes users found
# --------------------------------------------------------------------------- #


def test_a_mistyped_optional_key_is_an_error_with_a_did_you_mean(tmp_path):
    path = _profile(tmp_path, append="standardise: false\n")
    e = _error(path)
    assert "standardise: unknown parameter (did you mean 'standardize'?)" in str(e)
    assert str(e).startswith(f"profile {path}: ")


@pytest.mark.parametrize(
    "key, text, shown",
    [("standardize", '"no"', "'no'"), ("allow_download", '"false"', "'false'"), ("strict_weights", "1", "1")],
)
def test_a_string_or_number_is_never_read_as_a_boolean(tmp_path, key, text, shown):
    e = _error(_profile(tmp_path, {key: text}))
    assert f"{key}: expected true or false, got {shown}" in str(e)


def test_a_string_where_an_integer_belongs_is_named_with_the_file(tmp_path):
    path = _profile(tmp_path, {"n_splits": '"five"'})
    assert str(_error(path)) == f"profile {path}: n_splits: expected an integer, got 'five'"


def test_shipped_profile_path_is_shown_relative_to_the_repository():
    e = _error("tiny", overrides={"n_splits": "five"})
    assert str(e) == "profile params/tiny.yaml: n_splits: expected an integer, got 'five'"


@pytest.mark.parametrize(
    "key, text, expect",
    [
        ("n_lesions", "true", "n_lesions: expected an integer, got True"),
        ("svm_c", "true", "svm_c: expected a number, got True"),
        ("svm_c", '"10"', "svm_c: expected a number, got '10'"),
        ("n_splits", "5.0", "n_splits: expected an integer, got 5.0"),
        ("svm_c", ".nan", "svm_c: expected a finite number, got nan"),
    ],
)
def test_no_boolean_or_string_is_read_as_a_number(tmp_path, key, text, expect):
    assert expect in str(_error(_profile(tmp_path, {key: text})))


def test_an_integer_is_accepted_where_a_number_belongs_and_kept_as_is(tmp_path):
    params = load_profile(_profile(tmp_path, {"svm_c": "10", "dynamic_ranges_db": "[40, 55.5]"}))
    assert params["svm_c"] == 10 and isinstance(params["svm_c"], int)
    assert params["dynamic_ranges_db"] == [40, 55.5]


@pytest.mark.parametrize(
    "key, text, expect",
    [
        ("dynamic_ranges_db", "[]", "dynamic_ranges_db: expected at least 2 values, got []"),
        ("dynamic_ranges_db", "[40]", "dynamic_ranges_db: expected at least 2 values, got [40]"),
        ("dynamic_ranges_db", "[40, 0]", "dynamic_ranges_db[1]: expected a value > 0, got 0"),
        ("dynamic_ranges_db", "[40, 50, 40]", "dynamic_ranges_db: repeats [40], got [40, 50, 40]"),
        ("dynamic_ranges_db", "40", "dynamic_ranges_db: expected a list, got 40"),
        ("margins_mm", "[]", "margins_mm: expected at least 1 value, got []"),
        ("margins_mm", "[-2]", "margins_mm[0]: expected a value > 0, got -2"),
        ("margins_mm", "[0]", "margins_mm[0]: expected a value > 0, got 0"),
        ("backbones", "[vgg19, vgg19]", "backbones: repeats ['vgg19'], got ['vgg19', 'vgg19']"),
        ("backbones", "[resnet50]", "backbones[0]: expected one of 'inception_v3', 'vgg19', got 'resnet50'"),
        ("n_splits", "1", "n_splits: expected a value >= 2, got 1"),
        ("n_repeats", "0", "n_repeats: expected a value >= 1, got 0"),
        ("svm_c", "0", "svm_c: expected a value > 0, got 0"),
        ("batch_size", "0", "batch_size: expected a value >= 1, got 0"),
        ("data_seed", "-1", "data_seed: expected a value >= 0, got -1"),
        (
            "data_source",
            "oasbd",
            "data_source: expected one of 'phantom', 'oasbud' (did you mean 'oasbud'?), got 'oasbd'",
        ),
        ("weights", "none", "weights: expected one of 'imagenet', 'random', got 'none'"),
        ("continuous_range_db", "[65, 35]", "continuous_range_db: expected [low, high] with low < high, got [65, 35]"),
        ("continuous_range_db", "[35, 50, 65]", "continuous_range_db: expected at most 2 values, got [35, 50, 65]"),
        ("unseen_ranges_db", "[30, 40]", "unseen_ranges_db: repeats [40] of dynamic_ranges_db, got [30, 40]"),
        ("oasbud_path", '""', "oasbud_path: expected a non-empty string, got ''"),
        ("cell_timeout_s", "-1", "cell_timeout_s: expected a value > 0, got -1"),
    ],
)
def test_values_out_of_range_are_named_with_their_value(tmp_path, key, text, expect):
    assert expect in str(_error(_profile(tmp_path, {key: text})))


def test_oasbud_needs_a_path(tmp_path):
    e = _error(_profile(tmp_path, {"data_source": "oasbud"}))
    assert "oasbud_path: data_source 'oasbud' needs a path to OASBUD.mat (or 'download'), got None" in str(e)


def test_lesion_index_must_name_a_phantom_lesion(tmp_path):
    e = _error(_profile(tmp_path, append="lesion_index: 12\n"))
    assert "lesion_index: must be less than n_lesions (12), got 12" in str(e)


def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path):
    path = _profile(tmp_path, append="svm_c: 10\n")
    first = next(i for i, line in enumerate(TINY.splitlines(), 1) if line.startswith("svm_c:"))
    last = len(TINY.splitlines()) + 1
    assert str(_error(path)) == f"profile {path}: svm_c: given twice (lines {first} and {last})"


def test_every_problem_of_a_profile_is_reported_at_once(tmp_path):
    path = _profile(
        tmp_path,
        {"n_splits": '"five"', "dynamic_ranges_db": "[]", "standardize": "maybe"},
        append="standardise: false\n",
    )
    e = _error(path)
    assert len(e.problems) == 4
    for key in ("n_splits", "dynamic_ranges_db", "standardize", "standardise"):
        assert any(p.startswith(f"{key}:") for p in e.problems), key
    assert "\n" not in str(e)


def test_missing_required_parameters_and_malformed_files(tmp_path):
    path = tmp_path / "short.yaml"
    path.write_text("profile: short\nrun_dir: runs/short\n")
    e = _error(path)
    assert "n_splits: missing parameter" in str(e) and "data_source: missing parameter" in str(e)
    path.write_text("- a\n- b\n")
    assert "expected a mapping" in str(_error(path))
    path.write_text("svm_c: [1\n")
    assert "not valid YAML" in str(_error(path))
    path.write_text(TINY + "3: x\n")
    assert "3: parameter names must be strings" in str(_error(path))
    assert "no such file" in str(_error(tmp_path / "nope.yaml"))


def test_optional_parameters_may_be_left_out_and_take_the_schema_default(tmp_path):
    text = "\n".join(line for line in TINY.splitlines() if not line.startswith(("standardize:", "n_repeats:")))
    path = tmp_path / "short.yaml"
    path.write_text(text)
    params = load_profile(path)
    assert params["standardize"] is True and params["n_repeats"] == 5


def test_overrides_are_merged_then_validated_as_a_whole(tmp_path):
    params = load_profile("tiny", overrides={"run_dir": tmp_path / "run", "svm_c": 10})
    assert params["run_dir"] == str(tmp_path / "run") and params["svm_c"] == 10
    assert "standardize: expected true or false, got 'no'" in str(_error("tiny", overrides={"standardize": "no"}))
    assert "did you mean 'svm_c'" in str(_error("tiny", overrides={"svm_C": 10}))
    # a rule between a file's value and an override's
    assert "unseen_ranges_db: repeats [80]" in str(_error("tiny", overrides={"dynamic_ranges_db": [40, 80]}))


# --------------------------------------------------------------------------- #
# Folds against patients
# --------------------------------------------------------------------------- #


def test_phantom_patient_assignment_is_the_one_simulate_dataset_uses(tmp_path):
    from uslib.oasbud import load_oasbud, save_oasbud
    from uslib.phantom import simulate_dataset

    ds = simulate_dataset(6, seed=3, depth_range_mm=(25.0, 25.0))
    labels, patients = patient_assignment(6, seed=3)
    assert [les.patient for les in ds] == patients.tolist()
    assert [les.label for les in ds] == labels.tolist()
    assert len(set(patients.tolist())) == 5, "one patient with two lesions"
    # and what the pipeline sees after the round trip through the OASBUD loader
    back = load_oasbud(save_oasbud(ds, tmp_path / "p.mat"), skip_samples=0)
    assert [les.patient for les in back] == patients.tolist()


def test_n_splits_above_the_phantom_s_patients_fails_before_anything_runs(tmp_path):
    labels, patients = patient_assignment(12, seed=0)
    n_patients = len(set(patients.tolist()))
    e = _error(_profile(tmp_path, {"n_splits": str(n_patients + 1)}))
    assert f"has only {n_patients} patients" in str(e)
    assert str(e).endswith(f"got {n_patients + 1}") and "n_splits: " in str(e)
    e = _error(_profile(tmp_path, {"n_lesions": "6"}))  # 5 patients, 2 of them with a malignant lesion
    assert "n_splits:" in str(e) and "n_lesions 6" in str(e)


def test_a_passed_fold_check_is_not_repeated_for_the_same_values(monkeypatch):
    """The runner's check is inherited by its chapter kernels (the environment); other values are checked."""
    import uslib.phantom
    from uslib.config import FOLDS_CHECKED_ENV

    monkeypatch.delenv(FOLDS_CHECKED_ENV, raising=False)
    values = {"data_source": "phantom", "n_lesions": 12, "data_seed": 0, "n_splits": 3, "cv_seed": 0, "n_repeats": 2}
    validate_parameters(values)
    assert FOLDS_CHECKED_ENV in __import__("os").environ
    calls = []
    real = uslib.phantom.patient_assignment
    monkeypatch.setattr(uslib.phantom, "patient_assignment", lambda *a, **k: calls.append(a) or real(*a, **k))
    validate_parameters(values)
    assert calls == [], "the same values were checked again"
    validate_parameters({k: v for k, v in values.items() if k != "n_repeats"})  # one seed: already checked
    assert calls == [], "a chapter without n_repeats (one seed) was checked again"
    with pytest.raises(ProfileError, match="n_splits"):
        validate_parameters({**values, "n_splits": 40})
    assert calls, "other values must be checked in full"


def test_the_fold_check_agrees_with_the_cross_validation():
    from uslib.evaluation import check_folds, patient_folds

    for n_lesions in (6, 8, 12):
        labels, patients = patient_assignment(n_lesions, seed=1)
        for n_splits in range(2, 9):
            try:
                for s in range(3):
                    check_folds(patient_folds(labels, patients, n_splits=n_splits, seed=s), patients, labels)
                works = True
            except ValueError:
                works = False
            try:
                validate_parameters(
                    {
                        "data_source": "phantom",
                        "n_lesions": n_lesions,
                        "data_seed": 1,
                        "n_splits": n_splits,
                        "cv_seed": 0,
                        "n_repeats": 3,
                    }
                )
                accepted = True
            except ProfileError as e:
                assert "n_splits" in str(e)
                accepted = False
            assert accepted == works, (n_lesions, n_splits)


def test_check_folds_feasible_for_data_known_only_after_loading():
    labels = [0, 0, 1, 1, 0, 1, 0, 1]
    patients = ["a", "a", "b", "b", "c", "d", "e", "f"]  # 6 patients, 3 benign, 3 malignant
    check_folds_feasible(3, labels, patients)
    with pytest.raises(ProfileError, match=r"^profile params/paper\.yaml: n_splits: .*6 patients.*got 7$"):
        check_folds_feasible(7, labels, patients, source="profile params/paper.yaml")
    with pytest.raises(ProfileError, match=r"n_splits: .*no number of folds works.*got 2$"):
        check_folds_feasible(2, [0, 0, 1], ["a", "b", "c"])  # one malignant patient: some training set lacks it
    with pytest.raises(ValueError, match="equal length"):
        check_folds_feasible(2, [0, 1], ["a"])


# --------------------------------------------------------------------------- #
# Chapters run on their own
# --------------------------------------------------------------------------- #


def _chapter_namespace(stem: str) -> dict:
    from uslib.run import notebook_parameters
    import ast

    declared = notebook_parameters(REPO_ROOT / "notebooks" / f"{stem}.ipynb")
    return {name: ast.literal_eval(info["default"]) for name, info in declared.items()}


def test_a_chapter_checks_the_parameters_it_declares():
    ns = _chapter_namespace("05_cross_validation")
    assert chapter_parameters({**ns, "np": np, "In": []}, "05_cross_validation") == ns
    with pytest.raises(ProfileError) as info:
        chapter_parameters({**ns, "standardize": "no"}, "05_cross_validation")
    assert str(info.value) == "chapter 05_cross_validation: standardize: expected true or false, got 'no'"


def test_a_chapter_checks_only_its_own_parameters():
    ns = _chapter_namespace("01_data")
    # the robustness chapter's parameters are not 01's business, nor are its folds
    assert chapter_parameters({**ns, "unseen_ranges_db": [], "n_lesions": 6}, "01_data") == {**ns, "n_lesions": 6}
    with pytest.raises(ProfileError, match=r"chapter 05_cross_validation: n_splits: .*n_lesions 6.*got 5$"):
        chapter_parameters({**_chapter_namespace("05_cross_validation"), "n_lesions": 6}, "05_cross_validation")
    ns.pop("data_seed")
    with pytest.raises(ProfileError, match="data_seed: not defined"):
        chapter_parameters(ns, "01_data")


#: What a refusal must come before: the deep-learning frameworks and the notebook machinery.
HEAVY = ("tensorflow", "keras", "torch", "papermill", "jupyter_client", "nbclient")


def _cli(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``python -m uslib ARGS`` in a subprocess; also the heavy modules it had imported when it returned."""
    code = (
        "import sys\nfrom uslib.__main__ import main\nrc = main(sys.argv[1:])\n"
        f"print('imported:', ','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert last.startswith("imported:"), out.stdout + out.stderr
    return out, [m for m in last.removeprefix("imported:").strip().split(",") if m]


def test_validation_imports_no_deep_learning_framework():
    code = (
        "import sys; from uslib.config import load_profile; "
        "load_profile('default'); load_profile('tiny'); load_profile('paper'); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "replace, append, key",
    [
        ({"n_splits": '"five"'}, "", "n_splits"),
        ({"n_splits": "12"}, "", "n_splits"),
        ({"standardize": '"no"'}, "", "standardize"),
        ({}, "standardise: false\n", "standardise"),
        ({}, "svm_c: 3\n", "svm_c"),
        ({"n_lesions": "1000000"}, "", "n_lesions"),
    ],
)
def test_the_runner_refuses_a_bad_profile_at_once(tmp_path, replace, append, key):
    # "At once": before TensorFlow or the notebook machinery is imported, before run.json
    # exists, before the phantom is simulated (its run directory is never made).
    run_dir = tmp_path / "run"
    path = _profile(tmp_path, {**replace, "run_dir": str(run_dir)}, append=append, name="bad.yaml")
    out, heavy = _cli(["run", "--profile", str(path), "--no-build"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert heavy == [], f"imported {heavy} before refusing"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"uslib: error: profile {path}: {key}: "), out.stderr
    assert "Traceback" not in out.stderr and "running" not in out.stdout, "no chapter ran"
    assert not run_dir.exists(), "nothing written: no run.json, no simulated phantom"


# --------------------------------------------------------------------------- #
# The schema in words (the generated parameters page reads it)
# --------------------------------------------------------------------------- #


def test_parameter_specs_in_words():
    specs = parameter_specs()
    assert list(specs) == list(Profile.model_fields)
    assert specs["n_splits"].type == "integer" and specs["n_splits"].allowed.startswith("≥ 2")
    assert specs["svm_c"].allowed == "> 0"
    assert specs["standardize"].allowed == "true | false"
    assert specs["weights"].allowed == "imagenet | random"
    assert specs["oasbud_path"].type == "string or null"
    assert specs["margins_mm"].allowed == "each > 0, ≤ 100; at least 1 value; no repeats"
    assert specs["continuous_range_db"].allowed == "each > 0; exactly 2 values; low < high"
    assert set(RUNNER_ONLY) == {"profile", "cell_timeout_s", "allow_bfloat16", "scheduler_timeout_s", "allow_int8"}
    assert {n for n, s in specs.items() if s.required} == set(REQUIRED)


def test_parameters_page_shows_the_schema_and_each_profile():
    from uslib.pages import parameter_table, parameters_page

    table = parameter_table()
    assert list(table["parameter"]) == list(Profile.model_fields)
    for col in ("type", "allowed", "default", "description", "chapters", "default.yaml", "paper.yaml", "tiny.yaml"):
        assert col in table.columns, col
    row = table.set_index("parameter").loc["n_lesions"]
    assert row["tiny.yaml"] == "12" and row["default"] == "40" and row["chapters"].startswith("01")
    assert table.set_index("parameter").loc["cell_timeout_s", "chapters"] == "runner"
    page = parameters_page()
    assert (
        "| `data_source` | where the lesions come from: the synthetic phantom or the OASBUD file. *Required.* "
        'Chapters: all. | string: phantom \\| oasbud | `"phantom"` |' in page
    )
    assert "**`12`**" in page, "a profile's value that differs from the default is in bold"


# --------------------------------------------------------------------------- #
# Where the work runs: the scheduler key
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "value", [None, "local", "tcp://127.0.0.1:8786", "tcp://head.cluster:8786", "tls://10.0.0.5:8786"]
)
def test_scheduler_accepts_null_local_and_addresses(value):
    params = load_profile("tiny", overrides={"scheduler": value})
    assert params["scheduler"] == value


def test_shipped_profiles_run_in_process():
    for name in ("default", "tiny", "paper"):
        assert load_profile(name)["scheduler"] is None and load_profile(name)["cache_dir"] is None


@pytest.mark.parametrize(
    "text, shown, hint",
    [
        ("lcoal", "'lcoal'", True),
        ("tcp://head", "'tcp://head'", False),  # no port
        ("head:8786", "'head:8786'", False),  # no protocol
        ("local cluster", "'local cluster'", False),
    ],
)
def test_a_bad_scheduler_is_named_with_what_is_expected(tmp_path, text, shown, hint):
    path = _profile(tmp_path, {"scheduler": f'"{text}"'})
    message = str(_error(path))
    expected = (
        f"profile {path}: scheduler: expected null, 'local' or a scheduler address such as "
        f"'tcp://host:8786'" + (" (did you mean 'local'?)" if hint else "") + f", got {shown}"
    )
    assert message == expected


@pytest.mark.parametrize(
    "text, phrase",
    [("true", "expected a string, got True"), ("8786", "expected a string"), ('""', "expected a non-empty string")],
)
def test_a_scheduler_that_is_not_a_string_is_refused(tmp_path, text, phrase):
    assert f"scheduler: {phrase}" in str(_error(_profile(tmp_path, {"scheduler": text})))


def test_scheduler_is_documented_and_declared_by_the_feature_chapters():
    from uslib.run import notebook_parameters

    spec = parameter_specs()["scheduler"]
    assert spec.type == "string or null" and "local" in spec.description and not spec.runner_only
    for stem in ("04_features", "07_robustness"):
        assert "scheduler" in notebook_parameters(REPO_ROOT / "notebooks" / f"{stem}.ipynb"), stem


def test_parameters_page_lists_each_parameter_once_typed_from_the_schema():
    import re

    from uslib.config import parameter_specs
    from uslib.pages import parameters_page

    page = parameters_page()
    section = page.split("## Parameters")[1].split("## Profiles")[0]
    rows = [re.split(r"(?<!\\)\|", line)[1:-1] for line in section.splitlines() if line.startswith("| `")]
    assert [r[0].strip().strip("`") for r in rows] == list(Profile.model_fields), "each parameter once, in order"
    specs = parameter_specs()
    for cells in rows:
        name, kind = cells[0].strip().strip("`"), cells[2].strip()
        assert kind.startswith(specs[name].type) and "None" not in kind, (name, kind)
    assert not re.search("[\u2018\u2019\u201c\u201d]", page), "straight quotes only: values must paste as typed"


# --------------------------------------------------------------------------- #
# YAML 1.2 numbers, undecodable files, upper bounds
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "key, text, value",
    [
        ("svm_c", "1e-3", 1e-3),
        ("svm_c", "1E5", 1e5),
        ("svm_c", "1.5e3", 1500.0),
        ("svm_c", "1e300", 1e300),
        ("dynamic_ranges_db", "[40, 1e300]", [40, 1e300]),
    ],
)
def test_exponent_numbers_are_numbers_as_in_yaml_1_2(tmp_path, key, text, value):
    assert load_profile(_profile(tmp_path, {key: text}), check_folds=False)[key] == value


def test_an_exponent_number_too_large_for_a_float_is_refused_as_not_finite(tmp_path):
    path = _profile(tmp_path, {"svm_c": "1e400"})
    assert "svm_c: expected a finite number" in str(_error(path))


@pytest.mark.parametrize(
    "content, words",
    [
        ("n_splits: 3\n".encode("utf-16"), "UTF-16"),
        (bytes(range(256)) * 4, "binary"),
        (b"profile: caf\xe9\n", "byte 12"),
    ],
)
def test_an_undecodable_profile_gets_one_line(tmp_path, content, words):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    err = _error(path)
    assert str(err).startswith(f"profile {path}: not a UTF-8 text file") and words in str(err)
    assert "\n" not in str(err)
    run_dir = tmp_path / "run"
    out, heavy = _cli(["check", "--profile", str(path)], cwd=tmp_path)
    assert out.returncode == 2 and heavy == [] and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr and not run_dir.exists()


def test_a_utf8_profile_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + TINY.encode())
    assert load_profile(path)["n_lesions"] == load_profile("tiny")["n_lesions"]


def test_invalid_yaml_is_reported_on_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("n_splits: [1, 2\nsvm_c: 3\n")
    assert "\n" not in str(_error(path)) and "not valid YAML" in str(_error(path))


@pytest.mark.parametrize(
    "key, value",
    [
        ("n_lesions", "1000000"),
        ("batch_size", "100000000"),
        ("skip_samples", "1000000000"),
        ("margins_mm", "[2, 1e6]"),
        ("robustness_margins_mm", "[1e9]"),
    ],
)
def test_absurd_sizes_are_refused_naming_the_key(tmp_path, key, value):
    path = (
        _profile(tmp_path, {key: value})
        if re.search(rf"^{key}:", TINY, re.M)
        else _profile(tmp_path, append=f"{key}: {value}\n")
    )
    err = _error(path, check_folds=False)
    assert re.search(rf"{key}(\[\d\])?: expected a value <= \d+", str(err)), str(err)
