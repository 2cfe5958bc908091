"""The cross-validation settings object: built from the profile, whole, with the schema's defaults."""

from __future__ import annotations

import dataclasses

import pytest

from uslib.config import Profile, cv_settings
from uslib.cvsettings import CVSettings


def test_every_setting_but_the_class_weight_is_a_profile_parameter_with_the_same_default():
    fields = Profile.model_fields
    assert [n for n in CVSettings.field_names() if n not in fields] == ["class_weight"]
    defaults = CVSettings()
    for name in CVSettings.field_names():
        if name in fields:
            assert getattr(defaults, name) == fields[name].default, name
    assert Profile().cv_settings() == defaults


def test_the_profile_fills_every_setting_by_name():
    values = {
        "n_splits": 3,
        "cv_seed": 7,
        "n_repeats": 2,
        "svm_c": 10,
        "standardize": False,
        "calibration": "image",
        "lesion_weighting": True,
    }
    s = Profile(**values).cv_settings()
    assert {n: getattr(s, n) for n in values} == {**values, "svm_c": 10.0}
    assert cv_settings({**values, "run_dir": "runs/x"}) == s  # other parameters are ignored
    assert cv_settings({}) == CVSettings()


def test_equal_meaning_is_equal_and_hashes_alike():
    a, b = CVSettings(svm_c=1), CVSettings(svm_c=1.0)
    assert a == b and hash(a) == hash(b) and isinstance(a.svm_c, float)
    assert a.key() == dataclasses.asdict(b) and set(a.key()) == set(CVSettings.field_names())
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.svm_c = 2.0


def test_replace_and_repeat():
    s = CVSettings(cv_seed=3, n_repeats=4)
    assert s.seeds == range(3, 7)
    assert s.repeat(2) == s.replace(cv_seed=5, n_repeats=1)
    assert s.replace(lesion_weighting=True).lesion_weighting and not s.lesion_weighting


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_splits": 1}, "n_splits: expected a value >= 2, got 1"),
        ({"n_splits": 2.5}, "n_splits: expected an integer, got 2.5"),
        ({"cv_seed": True}, "cv_seed: expected an integer, got True"),
        ({"n_repeats": 0}, "n_repeats: expected a value >= 1, got 0"),
        ({"svm_c": 0}, "svm_c: expected a finite value > 0, got 0"),
        ({"svm_c": "1"}, "svm_c: expected a number, got '1'"),
        ({"standardize": "no"}, "standardize: expected true or false, got 'no'"),
        ({"calibration": "libsvm"}, "calibration: expected one of ('grouped', 'image'), got 'libsvm'"),
        ({"class_weight": {0: 1}}, "class_weight: expected 'balanced' or None, got {0: 1}"),
    ],
)
def test_a_bad_setting_is_named(changes, message):
    with pytest.raises(ValueError) as info:
        CVSettings(**changes)
    assert str(info.value) == message
