"""Tests of uslib.features: weights policy, preprocessing, batched inference, cache.

Hermetic: every test runs with an empty temporary KERAS_HOME and
``allow_download=False`` (or a stubbed download), so nothing touches the
network and no ImageNet weights are needed; networks are randomly initialised.
Model builds are memoised per (backbone, weights fingerprint) for the session
through a wrapper around ``uslib.features._build`` that also counts calls.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

import uslib.features as F
from uslib import featurecache, networks, store
from uslib import weights as W
from uslib.augmentation import image_key, image_set, iter_images
from uslib.data import Dataset, Lesion, Scan

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

_REAL_BUILD = networks.build_model
_MODELS: dict = {}


def _memo_build(bb, info):
    """The real ``build_model``, memoised per (backbone, kind, fingerprint) for the session."""
    k = (bb.name, info.kind, info.fingerprint)
    if k not in _MODELS:
        _MODELS[k] = _REAL_BUILD(bb, info)
    model, built = _MODELS[k]
    return model, replace(info, values_sha256=built.values_sha256)


def _scan(rng, shift=0):
    rf = (rng.standard_normal((300, 510)) * 800).astype(np.int16)
    roi = np.zeros((300, 510), bool)
    roi[100 + shift : 170 + shift, 200:290] = True
    return Scan(rf, roi)


def _dataset(seed=0):
    rng = np.random.default_rng(seed)
    return Dataset(
        [
            Lesion("1ab", "1ab", "ab", 0, "3", (_scan(rng),)),
            Lesion("2cd", "2cd", "cd", 1, "4a", (_scan(rng, shift=30),)),
        ],
        source="hand-made test data",
        synthetic=True,
    )


@pytest.fixture(scope="module")
def ds():
    return _dataset()


@pytest.fixture(scope="module")
def manifest(ds):
    return image_set(ds, dynamic_ranges_db=(40, 60), margins_mm=(2,))  # 4 rows


@pytest.fixture(autouse=True)
def hermetic(tmp_path, monkeypatch):
    """Empty Keras cache, no Keras import-time home, memoised model builds."""
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(W, "_keras_cache_dirs", lambda: [F.keras_cache_dir()])
    calls = []

    def build(bb, info):
        calls.append((bb.name, info.fingerprint))
        return _memo_build(bb, info)

    monkeypatch.setattr(networks, "build_model", build)
    return calls


def _extract(ds, man, cache_dir, backbone="inception_v3", **kw):
    kw.setdefault("weights", None)
    kw.setdefault("progress", False)
    kw.setdefault("allow_download", False)
    return F.extract_features(ds, man, backbone, cache_dir=cache_dir, **kw)


@pytest.fixture(scope="module")
def baseline(ds, manifest, tmp_path_factory):
    """Uninterrupted inception_v3 run (random init, seed 0, batch 2)."""
    cache_dir = tmp_path_factory.mktemp("baseline")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(networks, "build_model", _memo_build)
        fs = _extract(ds, manifest, cache_dir, batch_size=2)
    return fs, cache_dir


def _close(a, b):
    scale = float(np.abs(b).max())
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale)


# --- registry and preprocessing ---------------------------------------------


def test_registry():
    inc, vgg = F.BACKBONES["inception_v3"], F.BACKBONES["vgg19"]
    assert (inc.size_px, inc.n_features, inc.pooling) == (299, 2048, "avg")
    assert (vgg.size_px, vgg.n_features, vgg.feature_layer, vgg.include_top) == (224, 4096, "fc1", True)
    assert inc.weights_file == "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert vgg.weights_file == "vgg19_weights_tf_dim_ordering_tf_kernels.h5"
    for bb in (inc, vgg):
        assert bb.weights_url.startswith("https://storage.googleapis.com/tensorflow/keras-applications/")
        assert bb.weights_url.endswith(bb.weights_file)
    with pytest.raises(KeyError, match="resnet"):
        F.load_backbone("resnet50", weights=None)


@pytest.mark.parametrize("name", ["inception_v3", "vgg19"])
def test_preprocess_matches_keras_and_formula(name):
    import importlib

    bb = F.BACKBONES[name]
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    x_before = x.copy()
    got = F.preprocess(x, name)
    np.testing.assert_array_equal(x, x_before)  # input untouched
    assert got.dtype == np.float32 and got.shape == x.shape
    keras_fn = importlib.import_module(f"keras.applications.{bb.module}").preprocess_input
    np.testing.assert_array_equal(got, keras_fn(x.copy()))
    if name == "inception_v3":
        expected = x / 127.5 - 1.0
    else:  # caffe mode: RGB -> BGR, minus the ImageNet means
        expected = x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5)


# --- weights policy -----------------------------------------------------------


def test_random_fallback_is_labelled_and_warns():
    with pytest.warns(F.WeightsWarning, match="random initialisation"):
        info = F.resolve_weights("inception_v3", weights="imagenet", seed=3, allow_download=False)
    assert info.kind == "random" and info.source == "random-init seed=3" and info.seed == 3
    assert "NOT ImageNet" in info.message
    other = F.resolve_weights("inception_v3", weights="random", seed=4)
    vgg = F.resolve_weights("vgg19", weights=None, seed=3)
    assert len({info.fingerprint, other.fingerprint, vgg.fingerprint}) == 3
    assert F.resolve_weights("inception_v3", weights=None, seed=3).fingerprint == info.fingerprint


def test_strict_raises_with_instructions():
    bb = F.BACKBONES["vgg19"]
    with pytest.raises(F.WeightsUnavailableError) as err:
        F.resolve_weights("vgg19", strict=True, allow_download=False)
    msg = str(err.value)
    assert bb.weights_file in msg
    assert str(F.keras_cache_dir() / "models") in msg
    assert bb.weights_url in msg
    assert "weights_path" in msg


def test_download_failure_is_caught(monkeypatch, tmp_path):
    """A download that cannot connect (a loopback port nobody listens on) is named, then strict or fallback."""
    import socket

    with socket.socket() as sock:  # a free port, closed again: connections to it are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("USLIB_WEIGHTS_BASE_URL", f"http://127.0.0.1:{port}/mirror")
    bb = F.BACKBONES["inception_v3"]
    url, md5 = F.weights_source(bb)
    assert url == f"http://127.0.0.1:{port}/mirror/inception_v3/{bb.weights_file}" and md5 == bb.weights_md5
    with pytest.raises(F.WeightsUnavailableError, match="download from http://127.0.0.1") as err:
        F.resolve_weights("inception_v3", strict=True)
    assert "failed" in str(err.value)
    assert not (tmp_path / "keras" / "models" / bb.weights_file).exists()
    with pytest.warns(F.WeightsWarning):
        assert F.resolve_weights("inception_v3").kind == "random"


def test_bad_weights_argument():
    with pytest.raises(ValueError, match="weights"):
        F.resolve_weights("inception_v3", weights="imagenet21k")


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A weights file under the expected name, saved from the seed-7 random model."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    bb = F.BACKBONES["inception_v3"]
    model, rand = _memo_build(bb, F.resolve_weights(bb, weights=None, seed=7))
    folder = tmp_path_factory.mktemp("weights")
    path = folder / bb.weights_file
    with h5py.File(path, "w") as fh:
        legacy_h5_format.save_weights_to_hdf5_group(fh, model)
    return path, model, rand


@pytest.mark.slow  # builds InceptionV3 twice from a weights file (5-8 s)
def test_local_weights_path_is_used(weights_file):
    path, rand_model, rand = weights_file
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    for given in (path.parent, path):  # a folder or the file itself
        info = F.resolve_weights("inception_v3", weights_path=given, strict=True, allow_download=False)
        assert info.kind == "custom"  # not the published file: md5 differs
        assert info.source == f"weights_path: {path}" and info.path == str(path)
        assert info.fingerprint == sha[:16]
    model, info = F.load_backbone("inception_v3", weights_path=path.parent, strict=True, allow_download=False)
    assert info.values_sha256 == rand.values_sha256
    x = F.preprocess(np.random.default_rng(2).uniform(0, 255, (1, 299, 299, 3)), "inception_v3")
    np.testing.assert_array_equal(model.predict_on_batch(x), rand_model.predict_on_batch(x))


def test_keras_cache_first_and_md5_classifies(weights_file, monkeypatch):
    path, _, _ = weights_file
    bb = F.BACKBONES["inception_v3"]
    cached = F.keras_cache_dir() / "models" / bb.weights_file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    info = F.resolve_weights("inception_v3", weights_path=path, strict=True, allow_download=False)
    assert info.source == f"keras cache: {cached}"
    # the same bytes with the published checksum would count as ImageNet weights
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setitem(F.BACKBONES, "inception_v3", replace(bb, weights_md5=md5))
    assert F.resolve_weights("inception_v3", strict=True, allow_download=False).kind == "imagenet"


def test_missing_weights_path_is_reported():
    with pytest.warns(F.WeightsWarning, match="does not exist"):
        F.resolve_weights("inception_v3", weights_path="/nonexistent/folder", allow_download=False)


# --- inference ---------------------------------------------------------------


def test_compiled_path_matches_predict(ds, manifest, baseline):
    fs, _ = baseline
    bb = F.BACKBONES["inception_v3"]
    model, _ = networks.build_model(bb, F.resolve_weights(bb, weights=None))
    ((pos, batch),) = list(iter_images(ds, manifest.iloc[:3], size_px=bb.size_px, batch_size=3))
    x = F.preprocess(batch, bb)
    got = F.feature_function(model, bb)(x)
    assert got.dtype == np.float32 and got.shape == (3, 2048)
    _close(got, model(x, training=False).numpy())
    _close(fs.features[:3], got)


def test_inception_features(baseline, manifest):
    fs, cache_dir = baseline
    assert fs.features.shape == (len(manifest), 2048) and fs.features.dtype == np.float32
    assert np.isfinite(fs.features).all() and (fs.features >= 0).all()  # average of ReLU outputs
    assert fs.n_computed == len(manifest) and fs.n_cached == 0
    assert fs.weights["kind"] == "random" and fs.backbone == "inception_v3"
    assert not np.allclose(fs.features[0], fs.features[1])  # 40 dB vs 60 dB image differ
    side = store.load_json(cache_dir / f"inception_v3-{fs.weights['fingerprint']}" / "weights.json")
    assert side["kind"] == "random" and side["values_sha256"] == fs.weights["values_sha256"]


def test_vgg19_features(ds, manifest, tmp_path):
    fs = _extract(ds, manifest.iloc[:2], tmp_path, backbone="vgg19", batch_size=2)
    assert fs.features.shape == (2, 4096) and fs.features.dtype == np.float32
    assert np.isfinite(fs.features).all() and (fs.features >= 0).all()  # fc1 is ReLU
    assert fs.features.any()


# --- cache ---------------------------------------------------------------------


def test_cache_hit_does_not_build(ds, manifest, baseline, hermetic):
    fs, cache_dir = baseline
    again = _extract(ds, manifest, cache_dir, batch_size=2)
    assert hermetic == []  # no model built
    assert again.n_computed == 0 and again.n_cached == len(manifest)
    np.testing.assert_array_equal(again.features, fs.features)
    assert again.weights["values_sha256"] == fs.weights["values_sha256"]
    # reordered and duplicated rows come back aligned with the manifest
    man2 = manifest.iloc[[3, 0, 0, 2]]
    np.testing.assert_array_equal(_extract(ds, man2, cache_dir).features, fs.features[[3, 0, 0, 2]])


def test_chunks_are_plain_arrays(baseline):
    fs, cache_dir = baseline
    chunks = sorted((cache_dir / f"inception_v3-{fs.weights['fingerprint']}").glob("chunk-*.npz"))
    assert len(chunks) == 2  # 4 images, batches of 2
    z = store.load_npz(chunks[0])
    assert z["keys"].dtype.kind == "U" and z["features"].dtype == np.float32
    assert z["features"].shape == (2, 2048)


def test_new_dynamic_range_computes_only_new_images(ds, manifest, baseline, tmp_path):
    fs, cache_dir = baseline
    import shutil

    shutil.copytree(cache_dir, tmp_path / "c")
    man3 = image_set(ds, dynamic_ranges_db=(40, 50, 60), margins_mm=(2,))
    got = _extract(ds, man3, tmp_path / "c", batch_size=4)
    assert got.n_computed == 2 and got.n_cached == 4
    old = man3["dynamic_range_db"] != 50
    keys3 = [image_key(r) for r in man3[old].itertuples()]
    assert keys3 == [image_key(r) for r in manifest.itertuples()]
    _close(got.features[old.to_numpy()], fs.features)


@pytest.mark.slow  # three extractions with real networks (5-7 s)
def test_other_seed_or_data_recomputes(ds, manifest, baseline, tmp_path):
    fs, cache_dir = baseline
    import shutil

    shutil.copytree(cache_dir, tmp_path / "c")
    other = _extract(ds, manifest, tmp_path / "c", seed=1, batch_size=4)
    assert other.n_computed == 4 and other.weights["fingerprint"] != fs.weights["fingerprint"]
    assert not np.allclose(other.features, fs.features)
    ds2 = _dataset()
    ds2[0].scans[0].rf[150, 250] += 1  # one RF sample changed -> new data set fingerprint
    assert ds2.fingerprint != ds.fingerprint
    assert _extract(ds2, manifest.iloc[:2], tmp_path / "c", batch_size=4).n_computed == 2


def test_resume_after_interruption(ds, manifest, baseline, tmp_path, monkeypatch):
    fs, _ = baseline
    real_write = featurecache.write_chunk
    written = []

    def write_then_crash(folder, keys, feats):
        if written:
            raise KeyboardInterrupt("simulated interruption")
        written.append(real_write(folder, keys, feats))
        return written[-1]

    monkeypatch.setattr(featurecache, "write_chunk", write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        _extract(ds, manifest, tmp_path, batch_size=2)
    import threading

    assert not [t.name for t in threading.enumerate() if t.name.startswith("uslib-prefetch")]  # helper closed
    monkeypatch.setattr(featurecache, "write_chunk", real_write)
    folder = written[0].parent
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary leftovers
    resumed = _extract(ds, manifest, tmp_path, batch_size=2)
    assert resumed.n_computed == 2 and resumed.n_cached == 2
    _close(resumed.features, fs.features)


def test_unreadable_chunk_is_recomputed(ds, manifest, baseline, tmp_path):
    fs, cache_dir = baseline
    import shutil

    shutil.copytree(cache_dir, tmp_path / "c")
    chunk = sorted((tmp_path / "c").glob("inception_v3-*/chunk-*.npz"))[0]
    chunk.write_bytes(b"not an npz")
    with pytest.warns(store.DamagedArtefactWarning, match=chunk.name):
        got = _extract(ds, manifest, tmp_path / "c", batch_size=2)
    assert got.n_computed == 2
    _close(got.features, fs.features)


def test_one_flipped_byte_in_a_chunk_payload_is_named_and_recomputed(ds, manifest, baseline, tmp_path):
    fs, cache_dir = baseline
    import shutil

    shutil.copytree(cache_dir, tmp_path / "c")
    chunk = sorted((tmp_path / "c").glob("inception_v3-*/chunk-*.npz"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the float32 features: the zip CRC no longer matches
    chunk.write_bytes(bytes(data))
    with pytest.warns(store.DamagedArtefactWarning, match=f"{chunk.name}.*CRC"):
        got = _extract(ds, manifest, tmp_path / "c", batch_size=2)
    assert got.n_computed == 2 and got.n_cached == len(set(map(str, manifest["image"]))) - 2
    _close(got.features, fs.features)
    again = _extract(ds, manifest, tmp_path / "c", batch_size=2)  # repaired: nothing left to compute
    assert again.n_computed == 0


def test_truncated_weights_sidecar_is_named_and_rewritten(ds, manifest, baseline, tmp_path):
    fs, cache_dir = baseline
    import shutil

    shutil.copytree(cache_dir, tmp_path / "c")
    side = next((tmp_path / "c").glob("inception_v3-*/weights.json"))
    side.write_text(side.read_text()[:20])
    with pytest.warns(store.DamagedArtefactWarning, match="weights.json"):
        got = _extract(ds, manifest, tmp_path / "c", batch_size=2)
    assert got.n_computed == 0
    assert store.load_json(side)["backbone"] == "inception_v3"


def test_irreproducible_random_init_is_detected(ds, manifest, baseline, tmp_path):
    fs, cache_dir = baseline
    import shutil

    shutil.copytree(cache_dir, tmp_path / "c")
    folder = tmp_path / "c" / f"inception_v3-{fs.weights['fingerprint']}"
    side = store.load_json(folder / "weights.json")
    store.save_json(folder / "weights.json", {**side, "values_sha256": "0" * 16})
    man3 = image_set(ds, dynamic_ranges_db=(40, 50, 60), margins_mm=(2,))
    with pytest.raises(RuntimeError, match="not reproducible"):
        _extract(ds, man3, tmp_path / "c")


def test_bad_batch_size(ds, manifest, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        _extract(ds, manifest, tmp_path, batch_size=0)


def test_unloadable_weights_file_raises(tmp_path):
    bb = F.BACKBONES["inception_v3"]
    bad = tmp_path / bb.weights_file
    bad.write_bytes(b"not an HDF5 file")
    info = F.resolve_weights(bb, weights_path=tmp_path, strict=True, allow_download=False)
    assert info.kind == "custom" and "not the published ImageNet file" in info.message
    with pytest.raises(F.WeightsUnavailableError, match="could not load weights from"):
        F.load_backbone(bb.name, weights_path=tmp_path, strict=True, allow_download=False)


def test_weights_path_of_other_backbone_is_not_used(tmp_path):
    inc, vgg = F.BACKBONES["inception_v3"], F.BACKBONES["vgg19"]
    (tmp_path / inc.weights_file).write_bytes(b"inception stand-in")
    with pytest.warns(F.WeightsWarning, match="is the inception_v3 file"):
        info = F.resolve_weights("vgg19", weights_path=tmp_path / inc.weights_file, allow_download=False)
    assert info.kind == "random"
    (tmp_path / vgg.weights_file).write_bytes(b"vgg stand-in")
    info = F.resolve_weights("vgg19", weights_path=tmp_path / inc.weights_file, allow_download=False)
    assert info.source == f"weights_path: {tmp_path / vgg.weights_file}" and info.kind == "custom"


def test_a_code_edit_in_the_features_stage_recomputes_the_features(ds, manifest, baseline, tmp_path, monkeypatch):
    fs, cache_dir = baseline
    import shutil

    shutil.copytree(cache_dir, tmp_path / "c")
    assert _extract(ds, manifest, tmp_path / "c", batch_size=2).n_computed == 0
    pkg = tmp_path / "uslib"
    shutil.copytree(store.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "augmentation.py").write_text((pkg / "augmentation.py").read_text() + "\n\nEDITED = True\n")
    monkeypatch.setattr(store, "PACKAGE_DIR", pkg)
    got = _extract(ds, manifest, tmp_path / "c", batch_size=2)
    assert got.n_computed == len(manifest) and got.n_cached == 0
    _close(got.features, fs.features)  # same code path in fact: the same numbers, recomputed


# --- prefetching the next batch -----------------------------------------------


def test_prefetched_keeps_items_and_order():
    assert list(F.prefetched(iter("abcd"))) == ["a", "b", "c", "d"]
    assert list(F.prefetched(range(5), lambda i: -i)) == [0, -1, -2, -3, -4]
    assert list(F.prefetched([])) == []


def test_prefetched_prepares_the_next_item_while_the_caller_works():
    import threading

    second_started = threading.Event()

    def transform(i):
        if i == 1:
            second_started.set()
        return i

    got = []
    for item in F.prefetched(range(3), transform):
        if item == 0:  # the caller is busy with item 0: item 1 must be under way without it
            assert second_started.wait(10), "item 1 was not prepared while the caller held item 0"
        got.append(item)
    assert got == [0, 1, 2]


def test_prefetched_raises_where_the_failing_item_is_asked_for():
    def items():
        yield 1
        yield 2
        raise ValueError("lesion 'x' scan 0: roi: bad")

    it = F.prefetched(items())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(ValueError, match="lesion 'x'"):
        next(it)


def test_prefetched_starts_the_first_item_before_it_is_asked_for():
    import threading

    first_started = threading.Event()

    def transform(i):
        first_started.set()
        return i

    with F.prefetched(range(2), transform) as items:
        assert first_started.wait(10), "item 0 was not started when the iterator was made"
        assert list(items) == [0, 1]


def test_prefetched_stops_drawing_when_the_caller_stops():
    drawn = []

    def items():
        for i in range(100):
            drawn.append(i)
            yield i

    it = F.prefetched(items())
    assert next(it) == 0
    it.close()  # the caller leaves the loop (an error, a KeyboardInterrupt)
    assert drawn == [0, 1]  # one item prepared ahead, nothing more


def test_the_profile_schema_offers_exactly_the_library_s_precisions():
    from uslib.config import Profile

    assert Profile.model_json_schema()["properties"]["precision"]["enum"] == list(F.PRECISIONS)
