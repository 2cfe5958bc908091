"""Issue 12: the roofline arithmetic, the batch rule, the precision option, the store's
separation of bfloat16 features, the sharing of features between chapters 04 and 07,
and the runner's progress lines.

Fast and TensorFlow-free: the network is replaced by a cheap numpy function of the
image (``networks.build_model``, ``networks.feature_function`` and ``networks.preprocess`` monkeypatched), so
what is tested is the bookkeeping around it: which images are computed, how they are
keyed, what is reported.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import uslib.features as F
from uslib import extraction, networks, pipeline, precision, store, tfruntime
from uslib.augmentation import image_key, image_set
from uslib.config import ProfileError, load_profile, validate_parameters
from uslib.data import Dataset, Lesion, Scan
from uslib.robustness import robustness_manifest
from uslib.run import EventTail, format_progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import roofline as R  # noqa: E402

# --------------------------------------------------------------------------- #
# Roofline arithmetic (benchmarks/roofline.py)
# --------------------------------------------------------------------------- #

CPUINFO_SMT = """processor : 0
model name : Test CPU
cpu MHz : 3000.000
physical id : 0
core id : 0
flags : fpu sse avx avx2 fma avx512f avx512_bf16

processor : 1
model name : Test CPU
cpu MHz : 3000.000
physical id : 0
core id : 0
flags : fpu sse avx avx2 fma avx512f avx512_bf16

processor : 2
model name : Test CPU
cpu MHz : 2000.000
physical id : 0
core id : 1
flags : fpu sse avx avx2 fma avx512f avx512_bf16
"""


def test_cpuinfo_counts_smt_siblings_once_and_takes_the_highest_clock():
    info = R.parse_cpuinfo(CPUINFO_SMT)
    assert (info.model, info.mhz, info.logical_cpus, info.physical_cores) == ("Test CPU", 3000.0, 3, 2)
    assert "avx512_bf16" in info.flags
    assert R.parse_cpuinfo(CPUINFO_SMT, usable_cpus=1).physical_cores == 1


def test_peak_is_cores_times_clock_times_flop_per_cycle():
    info = R.parse_cpuinfo(CPUINFO_SMT)
    # 2 cores x 3 GHz x (2 FLOP/FMA x 16 lanes x 2 pipes) = 384 GFLOP/s; bf16 doubles it
    assert R.theoretical_peak(info)["GFLOP/s"] == pytest.approx(384.0)
    assert R.theoretical_peak(info, "bfloat16")["GFLOP/s"] == pytest.approx(768.0)
    avx2 = replace(info, flags=frozenset({"avx", "avx2", "fma"}))
    assert R.theoretical_peak(avx2)["GFLOP/s"] == pytest.approx(2 * 3.0 * 32)
    assert R.theoretical_peak(avx2, "bfloat16")["GFLOP/s"] == pytest.approx(2 * 3.0 * 32)  # no native bf16
    assert R.implied_ghz(384.0, info) == pytest.approx(3.0)


def test_a_share_over_the_roofline_is_refused_not_printed():
    assert R.share_or_problem(231.5, 463.0) == (0.5, "")
    share, why = R.share_or_problem(309.0, 247.0)
    assert share is None and "MEASUREMENT WRONG" in why
    assert R.share_or_problem(1.0, 0.0)[0] is None


def test_the_roofline_child_runs_without_the_openblas_variables():
    env = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "PATH": "/usr/bin"}
    assert R.clean_env(env) == {"PATH": "/usr/bin"}
    out = R.numpy_sgemm_child(n=64, repeats=1, env={**dict(__import__("os").environ), **env})
    assert out["env"] == {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None}
    assert out["gflops"] > 0


def test_cosine_min_of_the_bench():
    import bench_features as B  # noqa: F401  (imports uslib.features only: no TensorFlow)

    a = np.array([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    assert B.cosine_min(a, a) == pytest.approx(1.0)
    assert B.cosine_min(a, np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])) == pytest.approx(2**-0.5)
    assert B.paired([10.0, 5.0], [100.0, 50.0], 2.0) == [0.2, 0.2]


def test_the_largest_candidate_is_the_roofline_and_names_itself():
    assert R.pick_roofline({"numpy": 195.0, "tf.matmul": 216.0, "tf.nn.conv2d": 231.0}) == ("tf.nn.conv2d", 231.0)
    assert R.pick_roofline({"numpy": 463.0, "tf.matmul": 216.0, "tf.nn.conv2d": 231.0}) == ("numpy", 463.0)
    # a failed candidate (None, NaN, 0, negative) is ignored; a tie goes to the one listed first
    assert R.pick_roofline({"numpy": None, "tf.matmul": float("nan"), "tf.nn.conv2d": 10.0}) == ("tf.nn.conv2d", 10.0)
    assert R.pick_roofline({"numpy": 5.0, "tf.matmul": 5.0, "tf.nn.conv2d": -1.0}) == ("numpy", 5.0)
    assert R.pick_roofline({"numpy": 0.0}) == ("none measured", 0.0)
    roof = R.Roofline(
        numpy_gflops=195.0, tf_gflops=216.0, kernel={}, load_1min=0.1, conv_gflops=231.0, conv_shape="3x3 256->256"
    )
    assert (roof.gflops, roof.source) == (231.0, "tf.nn.conv2d")
    d = roof.to_dict()
    assert d["source"] == "tf.nn.conv2d" and d["gflops"] == 231.0 and d["conv_shape"] == "3x3 256->256"
    assert R.Roofline(300.0, 216.0, {}, 0.0).source.startswith("numpy sgemm")  # no conv measured: as before
    # 2 N H W Cout Cin k^2, counted by hand for a 1x1 convolution of 1 pixel: one multiply-add per weight
    assert R.conv2d_flops(1, 1, 1, 3, 4, kernel=1) == 2 * 3 * 4
    assert R.conv2d_flops(8, 56, 56, 256, 256) == 2 * 8 * 56 * 56 * 256 * 256 * 9


def _bench_result(rates: dict, roofs: list[float], gflop: float = 10.0, dbs: int = 32) -> dict:
    """What bench_features.bench_backbone returns, for summarise (no TensorFlow)."""
    recs = [{"gflops": g, "load_1min": 0.5, "source": "tf.nn.conv2d"} for g in roofs]
    return dict(
        name="net",
        n=64,
        gflop=gflop,
        default_bs=dbs,
        batch_sizes=sorted(rates),
        rates=rates,
        rates16=[],
        rounds=roofs,
        round_records=recs,
        t_build=1.0,
        fidelity=None,
        e2e=(5.0, 1.0),
        rss=1.0,
        layers=None,
    )


def test_summary_flags_shares_over_the_roofline_and_reports_the_best_reachable():
    import bench_features as B

    # 10 GFLOP per image: 18 img/s is 180 GFLOP/s, 0.9 of a 200 GFLOP/s roofline
    rep = B.summarise(_bench_result({16: [16.0, 16.0, 16.0], 32: [18.0, 18.0, 18.0]}, [200.0, 200.0, 200.0]))
    assert rep["share of roofline"] == pytest.approx(0.9) and rep["share target met"] is True
    assert rep["best reachable share (best batch size, median of paired rounds)"] == pytest.approx(0.9)
    assert rep["best batch size measured"] == 32 and "problems" not in rep
    # one round over the roofline (22 img/s = 220 GFLOP/s > 200): that batch is refused, not printed
    rep = B.summarise(_bench_result({16: [16.0, 16.0, 16.0], 32: [22.0, 15.0, 15.0]}, [200.0, 200.0, 200.0]))
    assert rep["share of roofline"] is None and "share target met" not in rep
    assert any("b=32" in p and "MEASUREMENT WRONG" in p for p in rep["problems"])
    assert rep["best reachable share (best batch size, median of paired rounds)"] == pytest.approx(0.8)
    # the same rates against a roofline with the larger conv2d yardstick: a share again, paired per round
    rep = B.summarise(_bench_result({32: [22.0, 15.0, 15.0]}, [250.0, 200.0, 200.0]))
    assert rep["share of roofline"] == pytest.approx(0.75)  # median of 0.88, 0.75, 0.75
    # a round whose own roofline was measured low (beaten) is divided by the best roofline of all rounds,
    # and said so, instead of making the share of that batch size None (VGG19's share was None at every batch)
    rep = B.summarise(_bench_result({32: [22.0, 15.0, 15.0]}, [200.0, 250.0, 200.0]))
    assert rep["share of roofline"] == pytest.approx(0.75)  # median of 220/250, 150/250, 150/200
    assert any("round(s) 1 beat their own roofline" in p for p in rep["problems"])


def test_layer_table_per_type_seconds_rate_and_share():
    import bench_features as B

    t = B.layer_table(
        {
            "ReLU": {"layers": 3, "seconds": 1.0, "GFLOP": 0.0},
            "Conv2D": {"layers": 2, "seconds": 3.0, "GFLOP": 600.0},
            "Dense": {"layers": 1, "seconds": 1.0, "GFLOP": 300.0},
        },
        250.0,
    )
    assert list(t) == ["Conv2D", "ReLU", "Dense"]  # slowest first
    assert t["Conv2D"]["seconds"] == 3.0 and t["Conv2D"]["share of time"] == pytest.approx(0.6)
    assert t["Conv2D"]["GFLOP/s"] == pytest.approx(200.0) and t["Conv2D"]["share of roofline"] == pytest.approx(0.8)
    assert t["ReLU"]["share of roofline"] is None and t["ReLU"]["GFLOP/s"] == 0.0
    assert t["Dense"]["share of roofline"] is None and "MEASUREMENT WRONG" in t["Dense"]["problem"]  # 300 > 250


def _auc_result(probs, labels, auc, ci):
    import pandas as pd

    table = pd.DataFrame(
        [{"train": "TrainALL", "test": "TestALL", "auc": auc, "ci_low": ci[0], "ci_high": ci[1], "auc_mean": auc}]
    )
    pred = pd.DataFrame(
        {
            "repeat": 0,
            "train": "TrainALL",
            "test": "TestALL",
            "lesion": [f"l{i}" for i in range(len(labels))],
            "label": labels,
            "probability": probs,
        }
    )
    return table, pred


def test_bfloat16_auc_change_beside_the_ci():
    import bench_bfloat16_auc as A

    labels = [0, 0, 0, 1, 1, 1]
    ta, pa = _auc_result([0.1, 0.2, 0.6, 0.5, 0.8, 0.9], labels, 8 / 9, (0.6, 1.0))
    same = A.auc_change(ta, ta, pa, pa)
    assert same["bfloat16 - float32"] == 0 and same["paired SE of the change (DeLong)"] == 0
    assert same["paired p (DeLong)"] == 1.0 and same["change within float32's CI (|change| < half its width)"]
    assert same["float32 CI width"] == pytest.approx(0.4) and same["lesions"] == 6
    # bfloat16 ranks every malignant lesion above every benign one: AUC 1, a change of +1/9
    tb, pb = _auc_result([0.1, 0.2, 0.3, 0.5, 0.8, 0.9], labels, 1.0, (1.0, 1.0))
    ch = A.auc_change(ta, tb, pa, pb)
    assert ch["bfloat16 - float32"] == pytest.approx(1 / 9, abs=1e-4)
    assert ch["bfloat16 - float32, mean over repeats"] == pytest.approx(1 / 9, abs=1e-4)
    lo, hi = ch["paired 95 % interval of the change"]
    assert lo < ch["bfloat16 - float32"] < hi and ch["paired SE of the change (DeLong)"] > 0
    with pytest.raises(ValueError, match="same lesions"):
        A.auc_change(ta, tb, pa, pb.assign(lesion=[f"m{i}" for i in range(6)]))


def test_benchmarks_page_shows_figures_beside_targets_and_where_the_time_goes(tmp_path):
    from uslib import pages
    from uslib.store import save_json

    layers = {
        "BatchNormalization": {
            "layers": 94,
            "seconds": 0.5,
            "share of time": 0.2,
            "GFLOP": 0.0,
            "GFLOP/s": 0.0,
            "share of roofline": None,
        },  # as stored: sorted by name
        "Conv2D": {
            "layers": 94,
            "seconds": 2.0,
            "share of time": 0.8,
            "GFLOP": 300.0,
            "GFLOP/s": 150.0,
            "share of roofline": 0.6,
        },
    }
    features = {
        "roofline [GFLOP/s] (best of all rounds)": 250.0,
        "roofline source": "tf.nn.conv2d",
        "inception_v3": {
            "share of roofline": 0.7,
            "best batch size measured": 16,
            "best reachable share (best batch size, median of paired rounds)": 0.72,
            "default batch size (features.default_batch_size)": 64,
            "bfloat16 speed-up (median of paired rounds)": 1.6,
            "bfloat16 min cosine vs float32": 0.99998,
            pages.LAYERS_KEY: layers,
            "roofline paired with the layer profile [GFLOP/s]": 240.0,
        },
        "vgg19": {
            "share of roofline": 0.9,
            "bfloat16 speed-up (median of paired rounds)": 1.2,
            "bfloat16 min cosine vs float32": 0.999,
        },
    }
    rows = {r["target"]: r for r in pages.performance_rows(features)}
    assert rows["inception_v3: share of roofline ≥ 0.85"]["status"] == "NOT met"
    assert "best reachable: 0.720 at batch 16" in rows["inception_v3: share of roofline ≥ 0.85"]["why"]
    assert (
        "80% of the time at 150 GFLOP/s (60.0% of the roofline)"
        in rows["inception_v3: share of roofline ≥ 0.85"]["why"]
    )
    assert "the whole network (fused) runs at 70.0%" in rows["inception_v3: share of roofline ≥ 0.85"]["why"]
    assert "20%" in rows["inception_v3: share of roofline ≥ 0.85"]["why"]  # the FLOP-free layers
    assert rows["vgg19: share of roofline ≥ 0.85"]["status"] == "met"
    assert rows["vgg19: bfloat16 speed-up ≥ 1.3"]["status"] == "NOT met"
    assert rows["inception_v3: bfloat16 min cosine ≥ 0.99"]["status"] == "met"
    assert rows["paper protocol, float32: ≤ 15 min"]["status"] == "not measured"
    wrong = pages.performance_rows({"vgg19": {"share of roofline": None, "problems": ["b=32: MEASUREMENT WRONG"]}})
    assert wrong[0]["status"] == "not measured" and "MEASUREMENT WRONG" in wrong[0]["why"]

    save_json(tmp_path / "features.json", {"name": "features", "figures": features})
    save_json(
        tmp_path / "paper_protocol.json",
        {
            "name": "paper_protocol",
            "figures": {
                "float32": {
                    "wall minutes": 20.0,
                    "wall seconds": 1200.0,
                    "stage seconds": {"04_features": 300.0, "07_robustness": 700.0, "total": 1200.0},
                }
            },
        },
    )
    save_json(
        tmp_path / "bfloat16_auc.json",
        {
            "name": "bfloat16_auc",
            "figures": {
                "vgg19": {
                    "bfloat16 TrainALL/TestALL AUC change": {
                        "float32 AUC": 0.8,
                        "float32 95 % CI": [0.7, 0.9],
                        "bfloat16 AUC": 0.79,
                        "bfloat16 95 % CI": [0.69, 0.89],
                        "bfloat16 - float32": -0.01,
                        "paired 95 % interval of the change": [-0.02, 0.0],
                        "change within float32's CI (|change| < half its width)": True,
                    }
                }
            },
        },
    )
    page = pages.benchmarks_page(bench_dir=tmp_path)
    assert "## Performance targets beside the figures" in page and "## Where the time goes" in page
    assert (
        "| inception_v3: share of roofline ≥ 0.85 | 0.700 (each round against its own roofline; best roofline "
        "250 GFLOP/s, tf.nn.conv2d) | **NOT met** |"
    ) in page
    assert "| Conv2D | 94 | 2.000 | 80.0% | 150.0 | 60.0% |" in page
    assert (
        "- paper protocol, float32: ≤ 15 min: 20.0 min. Why: chapters 04 and 07 (feature extraction) took 1000 s"
        in page
    )
    assert page.index("| Conv2D | 94 |") < page.index("| BatchNormalization | 94 |")  # slowest first
    assert "-0.0100 (float32 0.800 [0.700, 0.900], bfloat16 0.790 [0.690, 0.890]" in page
    assert "**Not met on this machine:**" in page and "Not measured here: paper protocol, bfloat16" in page


# --------------------------------------------------------------------------- #
# Batch rule and precision
# --------------------------------------------------------------------------- #


def test_batch_rule_per_backbone_and_explicit_values_win():
    assert F.default_batch_size("inception_v3") == F.DEFAULT_BATCH_SIZE["inception_v3"] == 64
    assert F.default_batch_size("vgg19") == 32
    assert F.default_batch_size("vgg19", 8) == 8
    with pytest.raises(ValueError, match="batch_size"):
        F.default_batch_size("vgg19", 0)
    assert load_profile("default")["batch_size"] is None  # the rule is the default


def test_precision_schema_default_and_values():
    p = load_profile("default")
    assert p["precision"] == "float32" and p["allow_bfloat16"] is False
    with pytest.raises(ProfileError, match="precision: expected one of 'float32', 'bfloat16'"):
        validate_parameters({"precision": "float16"})
    assert load_profile("tiny", overrides={"precision": "bfloat16"})["precision"] == "bfloat16"


def test_paper_profile_refuses_bfloat16_unless_asked_explicitly():
    with pytest.raises(ProfileError, match="allow_bfloat16"):
        load_profile("paper", overrides={"precision": "bfloat16"}, check_folds=False)
    p = load_profile("paper", overrides={"precision": "bfloat16", "allow_bfloat16": True}, check_folds=False)
    assert p["precision"] == "bfloat16"
    # the rule is the paper's protocol (strict weights), not the file's name
    load_profile("tiny", overrides={"precision": "bfloat16", "strict_weights": False})
    with pytest.raises(ProfileError, match="allow_bfloat16"):
        load_profile("tiny", overrides={"precision": "bfloat16", "strict_weights": True})


def test_bfloat16_refused_where_the_cpu_lacks_it(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: frozenset({"sse", "avx2", "fma"}))
    assert F.check_precision("float32") == "float32"
    with pytest.raises(F.PrecisionUnsupportedError, match="AVX512_BF16 nor AMX_BF16.*precision: float32"):
        F.check_precision("bfloat16")
    from uslib.check import preflight

    report = preflight(load_profile("tiny", overrides={"precision": "bfloat16"}, check_folds=False), bench_dir=tmp_path)
    assert any(p.startswith("precision: bfloat16 needs native bfloat16") for p in report.problems)
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: frozenset({"avx512f", "avx512_bf16"}))
    assert F.check_precision("bfloat16") == "bfloat16"
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: frozenset({"amx_bf16"}))
    assert F.bfloat16_support()[0]


def test_cpu_flags_reader(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text("processor : 0\nflags : a b avx512_bf16\n\nprocessor : 1\nflags : a b avx512_bf16\n")
    assert F.cpu_flags(p) == frozenset({"a", "b", "avx512_bf16"})
    assert F.cpu_flags(tmp_path / "missing") == frozenset()


# --------------------------------------------------------------------------- #
# A fake network: the bookkeeping of extract_features without TensorFlow
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


@pytest.fixture
def fake_net(monkeypatch):
    """Replace the network by a function of the image mean; record builds, batches and precisions."""
    calls = {"builds": 0, "batches": [], "precisions": []}

    def build(bb, info):
        calls["builds"] += 1
        return ("model", bb.name), replace(info, values_sha256="0" * 16)

    def with_precision(model, bb, precision="float32"):
        F.check_precision(precision)
        calls["precisions"].append(precision)
        return model

    def feature_function(model, bb):
        def run(x):
            calls["batches"].append(len(x))
            m = np.asarray(x, np.float64).mean(axis=(1, 2, 3))
            return np.repeat(m[:, None], F.BACKBONES[bb.name].n_features, axis=1).astype(np.float32)

        return run

    monkeypatch.setattr(networks, "build_model", build)
    monkeypatch.setattr(extraction, "with_precision", with_precision)
    monkeypatch.setattr(networks, "feature_function", feature_function)
    monkeypatch.setattr(networks, "preprocess", lambda images, bb: np.asarray(images, np.float32))
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: frozenset({"avx512f", "avx512_bf16"}))
    monkeypatch.delenv(store.EVENTS_ENV, raising=False)
    return calls


def _extract(ds, man, cache, **kw):
    return F.extract_features(
        ds, man, "inception_v3", cache_dir=cache, weights=None, progress=False, allow_download=False, **kw
    )


def test_extract_uses_the_batch_rule_when_none_is_given(ds, fake_net, tmp_path, monkeypatch):
    monkeypatch.setitem(F.DEFAULT_BATCH_SIZE, "inception_v3", 5)
    man = image_set(ds)  # 2 lesions x 1 scan x 9 images
    _extract(ds, man, tmp_path, batch_size=None)
    assert fake_net["batches"] == [5, 5, 5, 3]


def test_bfloat16_features_are_cached_apart_from_float32(ds, fake_net, tmp_path):
    man = image_set(ds, dynamic_ranges_db=(40, 60), margins_mm=(2,))
    f32 = _extract(ds, man, tmp_path)
    b16 = _extract(ds, man, tmp_path, precision="bfloat16")
    assert (f32.n_computed, b16.n_computed, b16.n_cached) == (len(man), len(man), 0)
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and folders[1] == folders[0] + "-bfloat16"
    assert _extract(ds, man, tmp_path).n_cached == len(man)
    assert _extract(ds, man, tmp_path, precision="bfloat16").n_cached == len(man)
    assert fake_net["precisions"] == ["float32", "bfloat16"]
    keys = lambda p: {k for c in (tmp_path / p).glob("chunk-*.npz") for k in store.load_npz(c)["keys"].tolist()}  # noqa: E731
    assert not keys(folders[0]) & keys(folders[1])
    assert store.feature_dir(tmp_path, "vgg19", "ab") == tmp_path / "vgg19-ab"
    with pytest.raises(ValueError, match="precision"):
        _extract(ds, man, tmp_path, precision="float16")


def test_bfloat16_refused_before_building_on_a_cpu_without_it(ds, fake_net, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda *a, **k: frozenset({"avx2"}))
    man = image_set(ds, dynamic_ranges_db=(40, 60), margins_mm=(2,))
    with pytest.raises(F.PrecisionUnsupportedError):
        _extract(ds, man, tmp_path, precision="bfloat16")
    assert fake_net["builds"] == 0


def test_robustness_chapter_reads_the_main_sets_features_from_the_store(ds, fake_net, tmp_path):
    """Chapter 04's images inside chapter 07's manifest are not computed again (same pipeline calls)."""
    main = pipeline.get_manifest(ds, dynamic_ranges_db=[40, 50, 60], margins_mm=[2, 5, 10])
    rob, _ = robustness_manifest(
        ds,
        train_ranges_db=(40, 50, 60),
        unseen_ranges_db=(30, 80),
        margins_mm=(2, 5, 10),
        continuous_range_db=(35, 65),
        seed=0,
    )
    shared = {image_key(r) for r in main.itertuples(index=False)} & {image_key(r) for r in rob.itertuples(index=False)}
    assert len(shared) == len(main)  # every main image is also a robustness image
    kw = dict(weights="random", progress=False, allow_download=False)
    a = pipeline.get_features(tmp_path, ds, main, "inception_v3", **kw)
    b = pipeline.get_features(tmp_path, ds, rob, "inception_v3", **kw)
    assert a.n_computed == len(main)
    assert (b.n_cached, b.n_computed) == (len(shared), len(rob) - len(shared))
    pos = {image_key(r): i for i, r in enumerate(rob.itertuples(index=False))}
    for i, r in enumerate(main.itertuples(index=False)):  # the very same features
        np.testing.assert_array_equal(b.features[pos[image_key(r)]], a.features[i])


# --------------------------------------------------------------------------- #
# Progress on the runner's terminal
# --------------------------------------------------------------------------- #


def test_extract_reports_progress_to_the_events_file_only_under_the_runner(ds, fake_net, tmp_path, monkeypatch):
    man = image_set(ds)
    assert store.report_progress("x", 1, 2, seconds=1.0) is False  # no runner: nothing written
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv(store.EVENTS_ENV, str(events))
    _extract(ds, man, tmp_path / "cache", batch_size=4)
    got, _ = store.read_events(events)
    prog = [e for e in got if e.get("kind") == "progress"]
    assert [e["done"] for e in prog] == [0, 4, 8, 12, 16, 18]
    assert {e["total"] for e in prog} == {18} and prog[0]["stage"] == "inception_v3 features"
    got_b16 = len(prog)
    _extract(ds, man, tmp_path / "cache", batch_size=4, precision="bfloat16")
    prog, _ = store.read_events(events)
    assert prog[got_b16]["stage"] == "inception_v3 features (bfloat16)"


def test_progress_line_rate_and_time_left():
    e = {"stage": "vgg19 features", "done": 100, "total": 400, "seconds": 50.0, "unit": "img"}
    assert format_progress(e) == "vgg19 features: 100/400 img (25 %), 2.0 img/s, about 2 min 30 s left"
    assert format_progress({**e, "done": 400, "seconds": 200.0}).endswith("2.0 img/s, done in 3 min 20 s")


def test_event_tail_throttles_progress_and_prints_damage_at_once(tmp_path):
    events = tmp_path / "events.jsonl"
    now = [0.0]
    out = io.StringIO()
    tail = EventTail(events, prefix="[t]", every_s=10.0, stream=out, clock=lambda: now[0])

    def emit(done, t):
        now[0] = t
        with open(events, "a") as fh:
            fh.write(json.dumps({"kind": "progress", "stage": "s", "done": done, "total": 30, "seconds": t}) + "\n")

    emit(0, 0.0)
    assert tail.poll() == 1  # the first line of a stage
    emit(10, 5.0)
    assert tail.poll() == 0  # within 10 s of the last line
    emit(20, 11.0)
    with open(events, "a") as fh:
        fh.write(json.dumps({"path": "/x.npz", "reason": "bad CRC", "action": "recomputing"}) + "\n")
    assert tail.poll() == 2
    emit(30, 12.0)
    assert tail.poll() == 1  # the last line always
    lines = out.getvalue().splitlines()
    assert lines[0] == "[t] s: 0/30 img (0 %), starting"
    assert lines[1].startswith("[t] s: 20/30 img (67 %), 1.8 img/s")
    assert lines[2] == "[t] warning: damaged cache file /x.npz (bad CRC): recomputing"
    assert lines[3].startswith("[t] s: 30/30 img (100 %)") and "done in 12 s" in lines[3]


def test_event_tail_thread_prints_while_the_block_runs(tmp_path):
    events = tmp_path / "events.jsonl"
    out = io.StringIO()
    tail = EventTail(events, stream=out, interval_s=0.01)
    with tail.running():
        with open(events, "a") as fh:
            fh.write(json.dumps({"kind": "progress", "stage": "s", "done": 1, "total": 1, "seconds": 1.0}) + "\n")
    assert "s: 1/1 img (100 %)" in out.getvalue()


# --------------------------------------------------------------------------- #
# Terminal noise
# --------------------------------------------------------------------------- #


def test_kernels_use_ipc_not_tcp():
    from uslib import run

    km = run._kernel_manager_class()()
    assert km.transport == "ipc"
    assert len(km.ip) + len("-65535") < 100, "a Unix socket path must stay under ~107 bytes"


def test_quiet_stderr_drops_tensorflow_banner_only(capfd):
    import os

    with tfruntime._quiet_stderr():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. blah\n")
        os.write(2, b"a real error\n")
    err = capfd.readouterr().err
    assert "a real error" in err and "oneDNN custom operations" not in err


@pytest.mark.slow
def test_importing_tensorflow_through_uslib_prints_no_banner():
    code = "import uslib.features as F; tf = F.import_tensorflow(); print(float(tf.constant(1.0) + 1))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "2.0"
    assert "oneDNN custom operations" not in out.stderr and "absl::InitializeLog" not in out.stderr


def test_gpu_bench_peaks_and_backend_choice(monkeypatch):
    import bench_gpu as G

    assert G.peaks_for("NVIDIA H100 80GB HBM3") == ("H100 SXM", (66.9, 494.7, 989.4))
    assert G.peaks_for("NVIDIA H100 PCIe")[0] == "H100 PCIe" and G.peaks_for("cpu") == (None, None)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert G.choose_backend(None) == "jax" and G.choose_backend("tensorflow") == "tensorflow"
    monkeypatch.delenv("KERAS_BACKEND")
    monkeypatch.setattr(G.importlib.util, "find_spec", lambda name: None)  # no TensorFlow: JAX
    assert G.choose_backend(None) == "jax"
    assert "uslib" not in Path(G.__file__).read_text().split('"""', 2)[2].split("def ")[0]  # no uslib import


def test_book_bench_profile_copy_changes_only_the_run_directory(tmp_path):
    import yaml

    import bench_book as B

    from uslib.config import REPO_ROOT as REPO

    out = B.profile_copy(REPO, "params/default.yaml", tmp_path / "run", tmp_path / "p.yaml")
    original, copy = yaml.safe_load((REPO / "params" / "default.yaml").read_text()), yaml.safe_load(out.read_text())
    assert copy.pop("run_dir") == str(tmp_path / "run")
    original.pop("run_dir")
    assert copy == original
