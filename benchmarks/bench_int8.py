"""int8 (OpenVINO + NNCF) against float32 (TensorFlow) on the default book's images: speed and fidelity.

For the profile's data and settings (``params/default.yaml`` by default: the
phantom, the weights this machine gets, both backbones, the same
cross-validation), per backbone:

* **fidelity**: the features of every image of the book's manifest in
  float32 and in int8, through :func:`uslib.pipeline.get_features`
  (``precision=``) exactly as chapter 04 calls it; the per-image cosine
  similarity of int8 to float32 (minimum, 1st percentile, median);
* **the change of every Train x Test AUC**: the matrix of each precision
  through :func:`uslib.pipeline.get_matrix` (as chapter 05), and for every
  Train/Test setting the change int8 - float32 beside float32's DeLong CI and
  DeLong's paired 95 % interval of the change
  (:func:`bench_bfloat16_auc.auc_change`, first repetition);
* **throughput**, on the first ``--n-images`` images of the manifest
  (already rendered and preprocessed, so the network alone), at the
  backbone's default batch size, in paired rounds: TensorFlow float32
  (:func:`uslib.features.feature_function`), OpenVINO int8 (the quantized
  model the features were computed with, :func:`uslib.int8.load_or_quantize`)
  and OpenVINO float32 (inference precision f32, :data:`uslib.int8.F32_CONFIG`);
  each speed-up is the median over rounds of the ratio measured in the same
  round;
* **end to end vs network only**: :func:`uslib.features.extract_features`
  (float32, into an empty cache: network build, rendering, preprocessing
  and caching included) on the same images, against the TensorFlow float32
  network-only rate of the same process.

Usage (tens of minutes on 2 shared cores for the default profile; int8 needs
AVX512_VNNI, AVX_VNNI or AMX_INT8 and ``pip install 'uslib[int8]'``)::

    .venv/bin/python benchmarks/bench_int8.py [--profile default] \\
        [--run-dir runs/bench-int8] [--reuse-from runs/default] [--n-lesions N]

With the ImageNet weights in the Keras cache (or ``weights_path``), the same
command measures them: the profile's weights are used as the book uses them.
``--reuse-from DIR`` copies DIR's phantom and float32 feature caches first
(:func:`bench_bfloat16_auc.reuse_caches`). ``--n-lesions`` measures a smaller
phantom (a deterministic subset of the data: the first N lesions of the
same seed) and says so in the report. Writes ``runs/benchmarks/int8.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

#: Targets of issue 24, shown beside the figures.
TARGETS = {"int8 speed-up": 2.5, "int8 min cosine": 0.99, "end to end / network only": 0.90}
#: Images timed per pass (two batches of the default batch size).
DEFAULT_N = {"inception_v3": 128, "vgg19": 64}
#: Key of the fidelity on the book's images in each network's report.
FIDELITY_KEY = "int8 vs float32, the book's images"


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two feature matrices (1.0 for two zero rows).

    Examples
    --------
    >>> cosine_rows(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [1.0, 0.0]])).round(4).tolist()
    [1.0, 0.7071]
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.einsum("ij,ij->i", a, b) / np.maximum(na * nb, 1e-300)
    cos[(na == 0) & (nb == 0)] = 1.0
    return cos


def cosine_summary(a: np.ndarray, b: np.ndarray) -> dict:
    """Minimum, 1st percentile and median of the per-image cosine similarity."""
    c = cosine_rows(a, b)
    return {
        "min cosine": round(float(c.min()), 6),
        "1st percentile cosine": round(float(np.percentile(c, 1)), 6),
        "median cosine": round(float(np.median(c)), 6),
        "images": int(len(c)),
    }


def relabel(change: dict, new: str = "int8") -> dict:
    """:func:`bench_bfloat16_auc.auc_change`'s record with "bfloat16" renamed (it compares any two results)."""
    return {k.replace("bfloat16", new): v for k, v in change.items()}


def every_setting_change(res_a, res_b) -> dict:
    """The AUC change (b - a) of every Train/Test setting of two Train x Test results, with paired CIs."""
    from bench_bfloat16_auc import auc_change

    out = {}
    for t in res_a.table.itertuples(index=False):
        out[f"{t.train}/{t.test}"] = relabel(
            auc_change(res_a.table, res_b.table, res_a.predictions, res_b.predictions, train=t.train, test=t.test)
        )
    return out


def changes_within(changes: dict) -> dict:
    """How many settings' changes lie inside float32's CI (|change| < half its width) and whose paired
    interval holds 0."""
    inside = [k for k, v in changes.items() if v["change within float32's CI (|change| < half its width)"]]
    zero = [
        k
        for k, v in changes.items()
        if v["paired 95 % interval of the change"][0] <= 0 <= v["paired 95 % interval of the change"][1]
    ]
    largest = max(changes.items(), key=lambda kv: abs(kv[1]["int8 - float32"]))
    return {
        "settings": len(changes),
        "change within float32's CI": len(inside),
        "paired 95 % interval holds 0": len(zero),
        "largest |change|": {
            "setting": largest[0],
            "int8 - float32": largest[1]["int8 - float32"],
            "float32 CI width": largest[1]["float32 CI width"],
        },
    }


def rate(fn, x: np.ndarray, batch: int) -> float:
    """Images per second of ``fn`` over ``x`` in batches of ``batch``."""
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        fn(x[i : i + batch])
    return len(x) / (time.perf_counter() - t0)


def throughput(name: str, p: dict, ds, manifest, int8_folder: Path, n_images: int, repeats: int) -> dict:
    """Paired rounds of TF float32, OpenVINO int8 and OpenVINO f32 at the default batch; end to end vs network."""
    import uslib.features as F
    from uslib import int8
    from uslib.augmentation import iter_images

    bb = F.BACKBONES[name]
    bs = F.default_batch_size(name, p["batch_size"])
    sub = manifest.iloc[:n_images]
    x = F.preprocess(np.concatenate([b for _, b in iter_images(ds, sub, size_px=bb.size_px, batch_size=32)]), bb)
    model, info = F.load_backbone(
        name,
        weights=p["weights"],
        weights_path=p["weights_path"],
        strict=False,
        seed=p["weights_seed"],
        allow_download=False,
    )
    tf32 = F.feature_function(model, bb)
    cal = int8.calibration_manifest(ds, F.image_content_keys(ds), bb.size_px)
    calibrated = []

    def calibration():
        calibrated.append(len(cal))
        return F.preprocess(np.concatenate([b for _, b in iter_images(ds, cal, size_px=bb.size_px)]), bb)

    t0 = time.perf_counter()
    q8 = int8.load_or_quantize(int8_folder, model, bb.input_shape, calibration)
    t_q = time.perf_counter() - t0
    t0 = time.perf_counter()
    ov32 = int8.compiled_function(int8.compile_model(int8.convert(model, bb.input_shape)))
    t_c = time.perf_counter() - t0
    for fn in (tf32, q8, ov32):  # warm every path at the timed shape
        fn(x[:bs])
    rounds = []
    for r in range(repeats):
        row = {
            "tf float32": rate(tf32, x, bs),
            "openvino int8": rate(q8, x, bs),
            "openvino f32": rate(ov32, x, bs),
            "load 1 min": os.getloadavg()[0],
        }
        rounds.append(row)
        print(f"   {name} round {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    fid = cosine_summary(
        np.concatenate([tf32(x[i : i + bs]) for i in range(0, len(x), bs)]),
        np.concatenate([q8(x[i : i + bs]) for i in range(0, len(x), bs)]),
    )
    f32_gap = cosine_summary(
        np.concatenate([tf32(x[i : i + bs]) for i in range(0, len(x), bs)]),
        np.concatenate([ov32(x[i : i + bs]) for i in range(0, len(x), bs)]),
    )
    del model, tf32, q8, ov32
    with tempfile.TemporaryDirectory() as tmp:  # end to end, float32, cold cache, same process
        fs = F.extract_features(
            ds,
            sub,
            name,
            cache_dir=tmp,
            weights=p["weights"],
            weights_path=p["weights_path"],
            seed=p["weights_seed"],
            batch_size=p["batch_size"],
            progress=False,
            allow_download=False,
        )
    net = statistics.median(r["tf float32"] for r in rounds)
    e2e = fs.n_computed / fs.seconds
    speed8 = statistics.median(r["openvino int8"] / r["tf float32"] for r in rounds)
    speed32 = statistics.median(r["openvino f32"] / r["tf float32"] for r in rounds)
    return {
        "images timed": int(len(x)),
        "batch size": bs,
        "rounds": repeats,
        "weights": info.kind,
        "TF float32 img/s (median of rounds)": round(net, 2),
        "OpenVINO int8 img/s (median of rounds)": round(statistics.median(r["openvino int8"] for r in rounds), 2),
        "OpenVINO f32 img/s (median of rounds)": round(statistics.median(r["openvino f32"] for r in rounds), 2),
        "int8 speed-up over TF float32 (median of paired rounds)": round(speed8, 3),
        "OpenVINO f32 / TF float32 (median of paired rounds)": round(speed32, 3),
        "int8 speed-up target met": bool(speed8 >= TARGETS["int8 speed-up"]),
        "int8 vs TF float32 on the timed images": fid,
        "OpenVINO f32 vs TF float32 on the timed images": f32_gap,
        "int8 model: quantized now (calibration images) or read from the feature folder": f"quantized now ({calibrated[0]} images)"
        if calibrated
        else "read from the feature folder",
        "int8 model ready [s]": round(t_q, 1),
        "OpenVINO f32 convert + compile [s]": round(t_c, 1),
        "extract_features float32 cold [img/s] (build, render, cache included)": round(e2e, 2),
        "end to end / network only (float32, same process)": round(e2e / net, 3),
        "end-to-end target met": bool(e2e / net >= TARGETS["end to end / network only"]),
        "per round": [{k: round(v, 2) for k, v in r.items()} for r in rounds],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default", help="parameter profile (default: params/default.yaml)")
    ap.add_argument("--run-dir", default="runs/bench-int8", help="this bench's own run directory")
    ap.add_argument(
        "--reuse-from",
        default=None,
        help="a run directory of the same profile whose phantom and float32 features are copied first",
    )
    ap.add_argument("--backbones", nargs="+", default=None, help="default: the profile's")
    ap.add_argument("--n-lesions", type=int, default=None, help="phantom only: fewer lesions than the profile")
    ap.add_argument(
        "--n-images",
        type=int,
        nargs="+",
        default=None,
        help="images per timed pass, one value for all backbones or one per backbone "
        "(default 128 InceptionV3, 64 VGG19)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="paired throughput rounds")
    ap.add_argument("--no-auc", action="store_true", help="skip the Train x Test matrices")
    ap.add_argument("--no-report", action="store_true", help="do not write runs/benchmarks/int8.json")
    args = ap.parse_args(argv)

    import roofline as R

    import uslib.features as F
    from uslib import config, int8, pipeline, store
    from uslib.config import load_profile, resolve_path

    info = R.cpu_info()
    flags = sorted(f for f in info.flags if "vnni" in f or f.startswith(("amx", "avx512_bf16", "avx512f")))
    print(f"CPU {info.model}, {info.physical_cores} cores usable, flags {' '.join(flags)}", flush=True)
    print("load average (1/5/15 min) at start: %.2f %.2f %.2f -- other processes share these CPUs" % os.getloadavg())
    try:
        F.check_precision("int8")
    except F.PrecisionUnsupportedError as exc:
        print(f"int8 not measured: {exc}")
        return 0
    overrides = {"n_lesions": args.n_lesions} if args.n_lesions else None
    p = load_profile(args.profile, overrides=overrides)
    run_dir = resolve_path(args.run_dir)
    backbones = args.backbones or list(p["backbones"])
    n_images = dict(DEFAULT_N)
    if args.n_images:
        if len(args.n_images) not in (1, len(backbones)):
            ap.error(f"--n-images: give one value or one per backbone ({len(backbones)})")
        n_images.update(zip(backbones, args.n_images * len(backbones) if len(args.n_images) == 1 else args.n_images))
    if args.reuse_from:
        from bench_bfloat16_auc import reuse_caches

        copied = reuse_caches(
            resolve_path(args.reuse_from), run_dir, n_lesions=int(p["n_lesions"]), seed=int(p["data_seed"])
        )
        print(f"copied from {args.reuse_from}: {len(copied)} folders", flush=True)
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    ds = pipeline.get_dataset(
        run_dir,
        data_source=p["data_source"],
        oasbud_path=p["oasbud_path"],
        n_lesions=p["n_lesions"],
        data_seed=p["data_seed"],
        skip_samples=p["skip_samples"],
        patients_csv=p["patients_csv"],
    )
    manifest = pipeline.get_manifest(ds, dynamic_ranges_db=p["dynamic_ranges_db"], margins_mm=p["margins_mm"])
    report: dict = {
        "profile": args.profile,
        "run dir": args.run_dir,
        "lesions": len(ds),
        "images per network": len(manifest),
        "subset": (
            f"the first {args.n_lesions} lesions of the profile's phantom (n_lesions override)"
            if args.n_lesions
            else "the profile's whole data set"
        ),
        "data": "synthetic phantom" if ds.synthetic else "real data",
        "CPU": info.model,
        "CPU flags (int8/bf16)": flags,
        "cores usable": info.physical_cores,
        "versions": int8.package_versions(),
        "calibration images (at most)": int8.CALIBRATION_IMAGES,
    }
    for b in backbones:
        bb = F.BACKBONES[b]
        fsets, res = {}, {}
        for prec in ("float32", "int8"):
            fs = pipeline.get_features(
                run_dir,
                ds,
                manifest,
                b,
                weights=p["weights"],
                weights_path=p["weights_path"],
                strict_weights=p["strict_weights"],
                weights_seed=p["weights_seed"],
                batch_size=p["batch_size"],
                precision=prec,
                progress=False,
                allow_download=False,
            )
            print(
                f"{b} {prec}: {fs.n_cached} features from the cache, {fs.n_computed} computed "
                f"({fs.seconds:.0f} s, {fs.n_computed / max(fs.seconds, 1e-9):.2f} img/s end to end); "
                f"weights {fs.weights.get('kind')}",
                flush=True,
            )
            fsets[prec] = fs
            if not args.no_auc:
                res[prec] = pipeline.get_matrix(
                    run_dir, fs, manifest, ranges=p["dynamic_ranges_db"], settings=config.cv_settings(p)
                )
        rep: dict = {
            "weights": fsets["float32"].weights.get("kind"),
            FIDELITY_KEY: cosine_summary(fsets["float32"].features, fsets["int8"].features),
        }
        rep["int8 min cosine target met"] = bool(rep[FIDELITY_KEY]["min cosine"] >= TARGETS["int8 min cosine"])
        for prec in ("float32", "int8"):
            if fsets[prec].n_computed:
                rep[f"extract_features {prec} [img/s] (book's images, cold)"] = round(
                    fsets[prec].n_computed / fsets[prec].seconds, 2
                )
        if res:
            changes = every_setting_change(res["float32"], res["int8"])
            rep["Train x Test AUC change (int8 - float32)"] = changes
            rep["AUC changes summary"] = changes_within(changes)
        tag = int8.cache_tag(int8.calibration_manifest(ds, F.image_content_keys(ds), bb.size_px)["calibration_key"])
        folder = store.feature_dir(
            store.features_root(run_dir),
            b,  # where get_features put them (no cache_dir)
            fsets["int8"].weights["fingerprint"],
            tag,
        )
        rep["throughput"] = throughput(b, p, ds, manifest, folder, n_images[b], args.repeats)
        report[b] = rep
        print(
            f"{b}: {rep[FIDELITY_KEY]}; "
            + (f"AUC changes {rep['AUC changes summary']}; " if res else "")
            + ", ".join(f"{k} {v}" for k, v in rep["throughput"].items() if k != "per round"),
            flush=True,
        )
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["load average at start and end (1 min)"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    if not args.no_report:
        from _report import write_report

        write_report(
            "int8",
            report,
            notes=(
                f"{report['subset']}; "
                + ("synthetic phantom; " if ds.synthetic else "")
                + "weights as this machine gets them (random initialisation where ImageNet weights are absent); "
                "OpenVINO + NNCF post-training int8 against TensorFlow float32 in one process; every Train/Test AUC "
                "with DeLong 95 % CI (first repetition) and the paired interval of its change; "
                "targets (issue 24): int8 >= 2.5x TF float32, min cosine >= 0.99, end to end >= 0.90 of network only"
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
