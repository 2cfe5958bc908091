"""precision: int8 (issue 24): refused where it cannot run, cached apart, faithful to float32.

The bookkeeping runs with a fake network (no TensorFlow); the fidelity tests
quantize a small random Keras network with OpenVINO and NNCF (the ``int8``
extra, also in ``test``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from uslib import features as F
from uslib import int8, networks, precision, store
from uslib.augmentation import image_set
from uslib.config import ProfileError, load_profile, validate_parameters
from uslib.data import Dataset, Lesion, Scan

VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})


# --------------------------------------------------------------------------- #
# Refusals
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("flag", int8.INT8_CPU_FLAGS)
def test_int8_runs_on_each_vnni_flag(monkeypatch, flag):
    monkeypatch.setattr(int8, "missing_packages", lambda: [])
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: frozenset({"avx2", flag}))
    assert F.check_precision("int8") == "int8"


def test_int8_refused_without_vnni(monkeypatch, tmp_path):
    monkeypatch.setattr(
        precision, "cpu_flags", lambda *a, **k: frozenset({"sse", "avx2", "fma", "avx512f", "avx512_bf16"})
    )
    assert F.check_precision("float32") == "float32"
    with pytest.raises(F.PrecisionUnsupportedError, match="AVX512_VNNI, AVX_VNNI, AMX_INT8 .*set `precision: float32`"):
        F.check_precision("int8")
    from uslib.check import preflight

    report = preflight(load_profile("tiny", overrides={"precision": "int8"}, check_folds=False), bench_dir=tmp_path)
    assert any(p.startswith("precision: precision 'int8' needs an int8 dot-product") for p in report.problems)


def test_int8_refused_without_its_packages_says_how_to_install_them(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: VNNI)
    monkeypatch.setattr(int8, "missing_packages", lambda: ["openvino", "nncf"])
    with pytest.raises(F.PrecisionUnsupportedError, match=r"needs openvino and nncf .*pip install 'uslib\[int8\]'"):
        F.check_precision("int8")


def test_strict_profiles_refuse_int8_unless_allowed():
    p = load_profile("default")
    assert p["precision"] == "float32" and p["allow_int8"] is False
    assert validate_parameters({"precision": "int8"})["precision"] == "int8"
    with pytest.raises(ProfileError, match="allow_int8"):
        load_profile("paper", overrides={"precision": "int8"}, check_folds=False)
    assert (
        load_profile("paper", overrides={"precision": "int8", "allow_int8": True}, check_folds=False)["precision"]
        == "int8"
    )
    with pytest.raises(ProfileError, match="allow_int8"):
        load_profile("tiny", overrides={"precision": "int8", "strict_weights": True})
    # allow_bfloat16 does not allow int8
    with pytest.raises(ProfileError, match="allow_int8"):
        load_profile("paper", overrides={"precision": "int8", "allow_bfloat16": True}, check_folds=False)


# --------------------------------------------------------------------------- #
# Calibration subset and cache (fake network)
# --------------------------------------------------------------------------- #


def _scan(rng, shift=0):
    rf = (rng.standard_normal((300, 510)) * 800).astype(np.int16)
    roi = np.zeros((300, 510), bool)
    roi[100 + shift : 170 + shift, 200:290] = True
    return Scan(rf, roi)


@pytest.fixture(scope="module")
def ds():
    rng = np.random.default_rng(0)
    return Dataset(
        [
            Lesion("1ab", "1ab", "ab", 0, "3", (_scan(rng),)),
            Lesion("2cd", "2cd", "cd", 1, "4a", (_scan(rng, shift=30),)),
        ],
        source="hand-made test data",
        synthetic=True,
    )


def test_calibration_subset_is_fixed_by_the_data_not_the_manifest(ds):
    content = F.image_content_keys(ds)
    a = int8.calibration_manifest(ds, content, 75, n_images=5)
    b = int8.calibration_manifest(ds, content, 75, n_images=5)
    assert len(a) == 5 and a["calibration_key"].tolist() == b["calibration_key"].tolist()
    assert a["calibration_key"].is_monotonic_increasing
    assert len(int8.calibration_manifest(ds, content, 75, n_images=100)) == len(image_set(ds))  # fewer when small
    other = int8.calibration_manifest(ds, {k: v + "x" for k, v in content.items()}, 75, n_images=5)
    assert int8.cache_tag(a["calibration_key"]) != int8.cache_tag(other["calibration_key"])
    with pytest.raises(ValueError, match="n_images"):
        int8.calibration_manifest(ds, content, 75, n_images=0)


@pytest.fixture
def fake_int8(monkeypatch):
    """A fake network (image mean) in float32 and a fake 'quantized' one (mean + 1) in int8."""
    calls = {"builds": 0, "quantized": [], "calibration": []}

    def build(bb, info):
        calls["builds"] += 1
        return ("model", bb.name), replace(info, values_sha256="0" * 16)

    def feature_function(model, bb):
        return lambda x: np.repeat(
            np.asarray(x, np.float64).mean(axis=(1, 2, 3))[:, None], F.BACKBONES[bb.name].n_features, axis=1
        ).astype(np.float32)

    def load_or_quantize(folder, model, input_shape, calibration):
        calls["quantized"].append(folder.name)
        calls["calibration"].append(calibration().shape)
        return lambda x: feature_function(model, F.BACKBONES["inception_v3"])(x) + 1.0

    monkeypatch.setattr(networks, "build_model", build)
    monkeypatch.setattr(networks, "feature_function", feature_function)
    monkeypatch.setattr(networks, "preprocess", lambda images, bb: np.asarray(images, np.float32))
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: VNNI)
    monkeypatch.setattr(int8, "load_or_quantize", load_or_quantize)
    monkeypatch.delenv(store.EVENTS_ENV, raising=False)
    return calls


def _extract(ds, man, cache, **kw):
    return F.extract_features(
        ds, man, "inception_v3", cache_dir=cache, weights=None, progress=False, allow_download=False, **kw
    )


def test_int8_features_are_cached_apart_and_keyed_by_the_calibration_subset(ds, fake_int8, tmp_path, monkeypatch):
    man = image_set(ds, dynamic_ranges_db=(40, 60), margins_mm=(2,))
    f32 = _extract(ds, man, tmp_path)
    i8 = _extract(ds, man, tmp_path, precision="int8")
    assert (f32.n_computed, i8.n_computed, i8.n_cached) == (len(man), len(man), 0)
    np.testing.assert_allclose(i8.features, f32.features + 1.0)  # the int8 network, not float32's cache
    folders = sorted(p.name for p in tmp_path.iterdir())
    tag = int8.cache_tag(int8.calibration_manifest(ds, F.image_content_keys(ds), 299)["calibration_key"])
    assert folders == [folders[0], f"{folders[0]}-{tag}"]
    # calibrated once, on the data set's full grid (18 images here: fewer than CALIBRATION_IMAGES)
    assert fake_int8["quantized"] == [folders[1]] and fake_int8["calibration"] == [(18, 299, 299, 3)]
    keys = lambda p: {k for c in (tmp_path / p).glob("chunk-*.npz") for k in store.load_npz(c)["keys"].tolist()}  # noqa: E731
    assert not keys(folders[0]) & keys(folders[1])
    # a rerun reads both caches; another manifest of the same data reuses the same calibration
    assert _extract(ds, man, tmp_path).n_cached == len(man)
    assert _extract(ds, man, tmp_path, precision="int8").n_cached == len(man)
    more = _extract(ds, image_set(ds, dynamic_ranges_db=(40, 50, 60), margins_mm=(2,)), tmp_path, precision="int8")
    assert (more.n_cached, more.n_computed) == (len(man), 2)
    assert len(set(fake_int8["quantized"])) == 1
    # another calibration subset (here: a smaller one) is another cache
    monkeypatch.setattr(int8, "CALIBRATION_IMAGES", 4)
    monkeypatch.setattr(int8.calibration_manifest, "__defaults__", (4,))
    again = _extract(ds, man, tmp_path, precision="int8")
    assert again.n_computed == len(man) and len(list(tmp_path.iterdir())) == 3


def test_int8_refused_before_building_on_a_cpu_without_vnni(ds, fake_int8, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: frozenset({"avx2", "avx512_bf16"}))
    with pytest.raises(F.PrecisionUnsupportedError, match="AVX512_VNNI"):
        _extract(ds, image_set(ds, dynamic_ranges_db=(40, 60), margins_mm=(2,)), tmp_path, precision="int8")
    assert fake_int8["builds"] == 0 and fake_int8["quantized"] == []
    assert not list(tmp_path.glob("*/chunk-*.npz"))


# --------------------------------------------------------------------------- #
# OpenVINO and NNCF on a small random network
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def tiny_net():
    pytest.importorskip("openvino", reason="the int8 extra (pip install 'uslib[int8]') is not installed")
    pytest.importorskip("nncf", reason="the int8 extra (pip install 'uslib[int8]') is not installed")
    F.import_tensorflow()
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(16, 3, activation="relu")(inp)
    h = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(64, 3, activation="relu")(h)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(h))
    rng = np.random.default_rng(0)
    # images with structure (smooth blobs) rather than white noise, preprocessed to [-1, 1] as InceptionV3's
    x = rng.uniform(-1, 1, (40, 8, 8, 3)).repeat(4, axis=1).repeat(4, axis=2).astype(np.float32)
    return model, x, model(x).numpy()


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_openvino_float32_is_float32_and_matches_tensorflow(tiny_net):
    model, x, ref = tiny_net
    compiled = int8.compile_model(int8.convert(model, (32, 32, 3)))
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")
    assert int8.runtime_precisions(compiled)["Convolution"] <= {"f32"}  # not bf16, even on AMX CPUs
    np.testing.assert_allclose(int8.compiled_function(compiled)(x), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_quantized_network_agrees_with_float32_and_is_kept_beside_its_features(tiny_net, tmp_path, capsys):
    model, x, ref = tiny_net
    calibrated = []

    def calibration():
        calibrated.append(1)
        return x[:16]

    capsys.readouterr()
    run = int8.load_or_quantize(tmp_path, model, (32, 32, 3), calibration)
    printed = capsys.readouterr()
    assert "Statistics collection" not in printed.out + printed.err  # NNCF's progress bars stay off the page
    got = run(x)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert _cosines(got, ref).min() >= 0.99  # stated fidelity of int8 on this network
    assert not np.array_equal(got, ref)  # it is another arithmetic
    assert (tmp_path / int8.MODEL_FILE).is_file() and calibrated == [1]
    # the kept model is read back, not calibrated again, and gives the same features
    np.testing.assert_array_equal(int8.load_or_quantize(tmp_path, model, (32, 32, 3), calibration)(x), got)
    assert calibrated == [1]
    # a damaged kept model is made again
    (tmp_path / int8.MODEL_FILE).with_suffix(".bin").write_bytes(b"garbage")
    with pytest.warns(store.DamagedArtefactWarning):
        np.testing.assert_array_equal(int8.load_or_quantize(tmp_path, model, (32, 32, 3), calibration)(x), got)
    assert calibrated == [1, 1]
    import openvino as ov

    compiled = int8.compile_model(ov.Core().read_model(str(tmp_path / int8.MODEL_FILE)))
    assert {"i8", "u8"} & int8.runtime_precisions(compiled)["Convolution"]  # the convolutions run in int8


# --------------------------------------------------------------------------- #
# The benchmark's figures on the Benchmarks page
# --------------------------------------------------------------------------- #


def test_benchmarks_page_shows_int8_beside_its_targets(tmp_path):
    from uslib import pages
    from uslib.store import save_json

    assert pages.int8_rows(None)[0]["status"] == "not measured"
    figures = {
        "vgg19": {
            "int8 vs float32, the book's images": {
                "min cosine": 0.9985,
                "1st percentile cosine": 0.9991,
                "images": 720,
            },
            "AUC changes summary": {
                "settings": 9,
                "change within float32's CI": 9,
                "paired 95 % interval holds 0": 8,
                "largest |change|": {"setting": "Train40/Test60", "int8 - float32": -0.031, "float32 CI width": 0.2},
            },
            "throughput": {
                "batch size": 32,
                "TF float32 img/s (median of rounds)": 4.0,
                "OpenVINO int8 img/s (median of rounds)": 12.0,
                "OpenVINO f32 / TF float32 (median of paired rounds)": 1.1,
                "int8 speed-up over TF float32 (median of paired rounds)": 3.0,
                "extract_features float32 cold [img/s] (build, render, cache included)": 3.2,
                "end to end / network only (float32, same process)": 0.8,
            },
        }
    }
    rows = {r["target"]: r for r in pages.int8_rows(figures)}
    assert rows["vgg19: int8 speed-up ≥ 2.5 (batch 32)"]["status"] == "met"
    assert rows["vgg19: int8 speed-up ≥ 2.5 (batch 32)"]["figure"].startswith("3.00× (12.0 vs 4.0 img/s")
    assert rows["vgg19: int8 min per-image cosine ≥ 0.99"]["status"] == "met"
    auc = rows["vgg19: no Train×Test AUC moves by more than its paired CI (int8)"]
    assert auc["status"] == "NOT met" and auc["figure"].startswith("8 of 9 paired intervals hold 0; 9 of 9")
    assert "-0.0310 (Train40/Test60)" in auc["figure"]
    assert rows["vgg19: extract_features end to end ≥ 90% of network only"]["status"] == "NOT met"
    save_json(tmp_path / "int8.json", {"name": "int8", "figures": figures})
    page = pages.benchmarks_page(bench_dir=tmp_path)
    assert (
        "| vgg19: int8 min per-image cosine ≥ 0.99 | 0.99850 (1st percentile 0.99910, 720 images) | **met** |" in page
    )
    assert "`int8.json`" in page
