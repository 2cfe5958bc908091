"""Throughput of CNN feature extraction: uslib.features against naive Keras use.

For each backbone, on the same randomly initialised network (seed 0; no
ImageNet weights are needed, the arithmetic is the same) and the same images
(rendered from random int16 RF scans, synthetic), in one process:

* **compiled**: :func:`uslib.features.feature_function` — ``model(x,
  training=False)`` in one ``tf.function``, batches of ``--batch-size``
  (several values may be given), after :func:`uslib.features.preprocess`;
* **naive**: ``model.predict`` on one image at a time (Keras defaults);
* **predict(all)**: ``model.predict`` on the whole array (Keras default batch 32);
* **naive, TF defaults**: the naive loop again in a child process started
  with ``TF_ENABLE_ONEDNN_OPTS=0`` (TensorFlow's default on AMD CPUs), same
  seed, same images -- what a plain Keras script gets here;
* **end-to-end**: :func:`uslib.features.extract_features` into an empty cache,
  cold (includes building the model, tracing, rendering, preprocessing and
  writing the cache) and then warm (fully cached).

Warm-up passes are excluded from the timed passes; each figure is the best of
``--repeats`` passes, compiled and naive passes interleaved so that the
host's slow phases hit both. FLOPs per image are counted layer by layer from
the Keras model (2 × multiply-accumulates of every Conv2D and Dense layer;
batch norm, activations, pooling and biases not counted). The roofline is the
best float32 matrix-multiply rate numpy reaches here (2048 × 2048, ``2 n³``
FLOPs per product), measured at the start, at the end and once per timed
round (the compiled rate is also shown paired with its round's roofline,
since other processes on the host can halve both). Peak RSS is ``ru_maxrss`` of this process, cumulative over
the backbones in the order run.

Run: ``.venv/bin/python benchmarks/bench_features.py [--backbones inception_v3 vgg19]
[--n-images 64] [--batch-size 8 16 32] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import uslib.features as F  # noqa: E402
from uslib.augmentation import image_set, iter_images  # noqa: E402
from uslib.data import OASBUD_ACQUISITION, Dataset, Lesion, Scan  # noqa: E402

DEFAULT_N = {"inception_v3": 64, "vgg19": 32}


def synthetic_dataset(n_images: int, *, n_samples: int = 1500, seed: int = 0) -> Dataset:
    """Random int16 RF scans with a rectangular ROI: 9 images per scan (3 DR x 3 margins)."""
    rng = np.random.default_rng(seed)
    n_lesions = max(1, -(-n_images // 18))
    lesions = []
    for i in range(n_lesions):
        scans = []
        for s in range(2):
            rf = rng.normal(0, 3000, size=(n_samples, 510)).round().astype(np.int16)
            roi = np.zeros(rf.shape, bool)
            z0 = 400 + 50 * s + 10 * i
            roi[z0 : z0 + 400, 150 + 5 * i : 330] = True
            scans.append(Scan(rf=rf, roi=roi, acquisition=OASBUD_ACQUISITION))
        key = f"{i + 1}rnd"
        lesions.append(Lesion(key, key, f"p{i}", i % 2, "3", tuple(scans)))
    return Dataset(lesions, source="random int16 RF (synthetic benchmark data)", synthetic=True)


def count_flops(model) -> float:
    """FLOPs per image: 2 x MACs of Conv2D and Dense layers (layer-by-layer count)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            _, h, w, c_out = layer.output.shape
            total += 2 * kh * kw * (c_in // layer.groups) * c_out * h * w
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return float(total)


def matmul_roofline(n: int = 2048, repeats: int = 7) -> float:
    """Best float32 n x n matmul rate of numpy, GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    a @ b  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def naive_rate(name: str, n_images: int, naive_images: int, repeats: int) -> float:
    """Naive loop (model.predict per image) on the benchmark's images, best of ``repeats``."""
    bb = F.BACKBONES[name]
    ds = synthetic_dataset(n_images)
    man = image_set(ds).iloc[:naive_images]
    x = F.preprocess(np.concatenate([b for _, b in iter_images(ds, man, size_px=bb.size_px, batch_size=32)]), bb)
    model, _ = F.load_backbone(name, weights=None, seed=0)
    model.predict(x[:1], verbose=0)  # warm-up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(len(x)):
            model.predict(x[i : i + 1], verbose=0)
        best = max(best, len(x) / (time.perf_counter() - t0))
    return best


def naive_rate_tf_defaults(name: str, n_images: int, naive_images: int, repeats: int) -> float | None:
    """:func:`naive_rate` in a child process with TF_ENABLE_ONEDNN_OPTS=0."""
    import subprocess

    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    cmd = [sys.executable, __file__, "--naive-only", name, "--n-images", str(n_images),
           "--naive-images", str(naive_images), "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("NAIVE_RATE "):
            return float(line.split()[1])
    print(out.stderr[-2000:], file=sys.stderr)
    return None


def bench_backbone(name: str, n_images: int, batch_sizes: list[int], repeats: int, naive_images: int) -> dict:
    bb = F.BACKBONES[name]
    ds = synthetic_dataset(n_images)
    man = image_set(ds).iloc[:n_images]
    t0 = time.perf_counter()
    images = np.concatenate([b for _, b in iter_images(ds, man, size_px=bb.size_px, batch_size=32)])
    t_render = time.perf_counter() - t0
    x = F.preprocess(images, bb)
    del images

    t0 = time.perf_counter()
    model, info = F.load_backbone(bb.name, weights=None, seed=0)
    t_build = time.perf_counter() - t0
    flops = count_flops(model)
    run = F.feature_function(model, bb)

    def compiled(bs: int) -> float:
        t0 = time.perf_counter()
        for i in range(0, len(x), bs):
            run(x[i : i + bs])
        return len(x) / (time.perf_counter() - t0)

    xn = x[:naive_images]

    def naive() -> float:
        t0 = time.perf_counter()
        for i in range(len(xn)):
            model.predict(xn[i : i + 1], verbose=0)
        return len(xn) / (time.perf_counter() - t0)

    def predict_all() -> float:
        t0 = time.perf_counter()
        model.predict(x, verbose=0)
        return len(x) / (time.perf_counter() - t0)

    # warm-up: trace the compiled function at every batch shape, and predict's own functions
    for bs in batch_sizes:
        run(x[:bs])
    model.predict(x[:1], verbose=0)
    model.predict(x[:32], verbose=0)

    rates: dict[str, list[float]] = {f"compiled b={bs}": [] for bs in batch_sizes}
    rates["naive predict(1 image)"] = []
    rates["predict(all, batch 32)"] = []
    roofs: list[float] = []
    for _ in range(repeats):  # interleaved, with the roofline re-measured each round
        roofs.append(matmul_roofline(repeats=3))
        for bs in batch_sizes:
            rates[f"compiled b={bs}"].append(compiled(bs))
        rates["naive predict(1 image)"].append(naive())
        rates["predict(all, batch 32)"].append(predict_all())
    best = {k: max(v) for k, v in rates.items()}

    # check the paths agree
    ref = model(x[:2], training=False).numpy()
    diff = float(np.abs(run(x[:2]) - ref).max() / max(np.abs(ref).max(), 1e-30))

    del model, run
    # end to end through extract_features (its own build, same seed -> same weights)
    e2e_bs = 16 if 16 in batch_sizes else batch_sizes[0]
    with tempfile.TemporaryDirectory() as tmp:
        fs = F.extract_features(ds, man, bb.name, cache_dir=tmp, weights=None, batch_size=e2e_bs, progress=False)
        fs2 = F.extract_features(ds, man, bb.name, cache_dir=tmp, weights=None, batch_size=e2e_bs, progress=False)
    return dict(
        name=name,
        n=len(x),
        naive_n=len(xn),
        flops=flops,
        rates=best,
        all_rates=rates,
        roofs=roofs,
        t_render=t_render,
        t_build=t_build,
        rel_diff=diff,
        e2e=(fs.n_computed / fs.seconds, fs.seconds, e2e_bs),
        e2e_cached=(fs2.n_cached, fs2.seconds),
        rss=peak_rss_gib(),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="+", default=list(F.BACKBONES), choices=list(F.BACKBONES))
    ap.add_argument("--n-images", type=int, default=None, help="images per backbone (default 64 inception, 32 vgg)")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[8, 16, 32], help="compiled-path batch sizes")
    ap.add_argument("--naive-images", type=int, default=None, help="images for the naive baseline (default n/2)")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes per path (best is reported)")
    ap.add_argument("--no-tf-defaults", action="store_true", help="skip the naive run with oneDNN off")
    ap.add_argument("--no-report", action="store_true", help="do not write runs/benchmarks/features.json")
    ap.add_argument("--naive-only", default=None, help=argparse.SUPPRESS)  # child-process mode
    args = ap.parse_args(argv)
    if args.naive_only:
        name = args.naive_only
        n = args.n_images or DEFAULT_N[name]
        print(f"NAIVE_RATE {naive_rate(name, n, args.naive_images or max(1, n // 2), args.repeats)}")
        return 0

    import tensorflow as tf

    print(f"TF {tf.__version__}, TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, "
          f"CPUs {os.cpu_count()}, Python {sys.version.split()[0]}, numpy {np.__version__}")
    print("load average (1/5/15 min) at start: %.2f %.2f %.2f -- other processes share these CPUs" % os.getloadavg())
    roof = matmul_roofline()
    print(f"roofline: numpy float32 2048x2048 matmul, best of 7: {roof:.1f} GFLOP/s (re-measured at the end)")
    print("weights: random initialisation (seed 0) -- same arithmetic as ImageNet weights; images synthetic")

    results = []
    for name in args.backbones:
        n = args.n_images or DEFAULT_N[name]
        naive_n = args.naive_images or max(1, n // 2)
        r = bench_backbone(name, n, args.batch_size, args.repeats, naive_n)
        if not args.no_tf_defaults:
            r["naive_tf_defaults"] = naive_rate_tf_defaults(name, n, naive_n, args.repeats)
        results.append(r)
    roof_end = matmul_roofline()
    print(f"roofline re-measured at the end: {roof_end:.1f} GFLOP/s; using the higher, {max(roof, roof_end):.1f}")
    roof = max(roof, roof_end)

    ok_all = True
    report = {"roofline numpy float32 matmul [GFLOP/s]": round(max(roof, roof_end), 1)}
    for r in results:
        name = r["name"]
        gf = r["flops"] / 1e9
        print(f"\n== {name}: {r['n']} images ({r['naive_n']} for naive), FLOPs/image {gf:.2f} G "
              f"(counted: 2 x MACs of Conv2D + Dense layers)")
        print(f"   render {r['t_render']:.1f} s, build {r['t_build']:.1f} s, compiled vs eager max rel diff {r['rel_diff']:.1e}")
        naive = r["rates"]["naive predict(1 image)"]
        for k, v in r["rates"].items():
            passes = ", ".join(f"{p:.2f}" for p in r["all_rates"][k])
            print(f"   {k:24s} {v:7.2f} img/s  {v * gf:7.1f} GFLOP/s  {v * gf / roof:5.1%} of roofline  "
                  f"x{v / naive:4.2f} naive   (passes: {passes})")
        best_k = max((k for k in r["rates"] if k.startswith("compiled")), key=r["rates"].get)
        b16_bs = 16 if "compiled b=16" in r["rates"] else int(best_k.split("=")[1])
        b16 = r["rates"][f"compiled b={b16_bs}"]
        if r.get("naive_tf_defaults"):
            v = r["naive_tf_defaults"]
            print(f"   {'naive, TF defaults':24s} {v:7.2f} img/s  {v * gf:7.1f} GFLOP/s  {v * gf / roof:5.1%} of roofline  "
                  f"(child process, TF_ENABLE_ONEDNN_OPTS=0; compiled b=16 is x{b16 / v:4.2f} this)")
        paired = [v * gf / rf for v, rf in zip(r["all_rates"][f"compiled b={b16_bs}"], r["roofs"])] if b16_bs else []
        print(f"   roofline per round: {', '.join(f'{v:.0f}' for v in r['roofs'])} GFLOP/s; compiled b={b16_bs} "
              f"paired with its round's roofline: {', '.join(f'{v:.0%}' for v in paired)}")
        e_rate, e_s, e_bs = r["e2e"]
        print(f"   extract_features cold (b={e_bs}, build+trace+render+cache incl.): {e_rate:.2f} img/s ({e_s:.1f} s); "
              f"fully cached rerun: {r['e2e_cached'][0]} images in {r['e2e_cached'][1]:.2f} s")
        print(f"   peak RSS so far: {r['rss']:.2f} GiB")
        ok = b16 / naive >= 2 and b16 * gf >= roof / 2 and r["rss"] < 4
        ok_all &= ok
        report[name] = {
            "FLOPs per image [G]": round(gf, 2),
            "compiled batch 16 [img/s]": round(b16, 2),
            "naive predict, one image [img/s]": round(naive, 2),
            "speed-up over naive": round(b16 / naive, 2),
            "achieved [GFLOP/s]": round(b16 * gf, 1),
            "share of roofline": round(b16 * gf / roof, 3),
            "extract_features cold [img/s]": round(e_rate, 2),
            "peak RSS so far [GiB]": round(r["rss"], 2),
            "targets (>=2x naive, >=50% roofline, RSS<4 GiB)": "met" if ok else "NOT met",
        }
        print(f"   target (default b=16: >=2x naive, >=50% roofline, RSS<4 GiB): "
              f"{b16 / naive:.2f}x, {b16 * gf / roof:.0%}, {r['rss']:.2f} GiB -> {'MET' if ok else 'NOT MET'}")
    print("load average at end: %.2f %.2f %.2f" % os.getloadavg())
    print(f"\nall targets {'met' if ok_all else 'NOT met'}")
    if not getattr(args, "no_report", False):
        from _report import write_report

        write_report("features", report, notes="random weights (same arithmetic as ImageNet), synthetic images; "
                     "the host is shared, compare figures within one run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
