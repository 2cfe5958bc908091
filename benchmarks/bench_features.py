"""Feature-extraction throughput against the machine's roofline, float32 and bfloat16.

For each backbone (random weights, seed 0: the same arithmetic as ImageNet
weights; synthetic images):

* **roofline**: the largest of numpy's float32 sgemm (2048², measured in a
  child process with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` unset, its
  BLAS kernel reported by threadpoolctl), ``tf.matmul`` (4096²) and a large
  ``tf.nn.conv2d`` (3x3, NHWC, the best of VGG19's four convolution shapes,
  so the networks' convolutions should not beat it; the matmuls alone were
  beaten), measured again in every timed round;
  each round's network rate is divided by *that round's* roofline (paired),
  so a slow phase of a shared host hits both
  sides of the ratio. The 1-minute load average of every round is recorded.
  The theoretical peak (cores x clock x FLOP/cycle of the ISA in
  /proc/cpuinfo) is printed beside it, with its derivation
  (``benchmarks/roofline.py``);
* **compiled** :func:`uslib.features.feature_function` at each batch size of
  ``--batch-size`` (the default rule, :func:`uslib.features.default_batch_size`,
  among them), float32;
* **bfloat16** (where the CPU has AVX512_BF16 or AMX): the same network with
  :func:`uslib.features.with_precision` at the default batch size, its
  speed-up over float32 paired per round, and its fidelity: the minimum over
  the images of the cosine similarity between its features and float32's;
* **end to end**: :func:`uslib.features.extract_features` into an empty
  cache at the default batch size (building the network, rendering,
  preprocessing and caching included): the ``extract_features cold [img/s]``
  figure ``python -m uslib check`` uses for its time estimate.

FLOPs per image are counted layer by layer (2 x multiply-accumulates of every
Conv2D and Dense layer). A share over 100 % of the roofline means the
measurement is wrong and is reported as such, not printed as a result.
Where the time goes (on by default, ``--no-layers`` skips it): each layer
timed alone on inputs of its shape at the default batch, summed per layer
type (seconds, GFLOP/s, share of a roofline measured just before), beside
the best share any batch size reached ("best reachable").

Run on a quiet machine (about 8 minutes on 2 cores):
``.venv/bin/python benchmarks/bench_features.py``; ``--quick`` for a smoke
run (fewer images, one round). Writes ``runs/benchmarks/features.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import roofline as R  # noqa: E402
import uslib.features as F  # noqa: E402
from uslib.augmentation import image_set, iter_images  # noqa: E402
from uslib.data import OASBUD_ACQUISITION, Dataset, Lesion, Scan  # noqa: E402

#: Images per timed pass: enough for two batches of the largest default batch.
DEFAULT_N = {"inception_v3": 128, "vgg19": 64}
#: Targets of issue 12, shown beside the figures.
TARGETS = {"share of roofline": 0.85, "bfloat16 speed-up": 1.3, "bfloat16 min cosine": 0.99}


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
    return float(sum(layer_flops(layer) for layer in model.layers))


def layer_flops(layer) -> float:
    import keras

    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        c_in = layer.input.shape[-1]
        _, h, w, c_out = layer.output.shape
        return 2.0 * kh * kw * (c_in // layer.groups) * c_out * h * w
    if isinstance(layer, keras.layers.Dense):
        return 2.0 * layer.input.shape[-1] * layer.units
    return 0.0


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine similarity of two feature matrices (1.0 for two zero rows).

    Examples
    --------
    >>> cosine_min(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]))
    0.7071067811865475
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.einsum("ij,ij->i", a, b) / np.maximum(na * nb, 1e-300)
    cos[both_zero] = 1.0
    return float(cos.min())


def paired(rates: list[float], roofs: list[float], gflop: float) -> list[float]:
    """Per-round share of that round's roofline."""
    return [r * gflop / f for r, f in zip(rates, roofs)]


def round_shares(rates: list[float], roofs: list[float], gflop: float) -> tuple[list[float], list[int]]:
    """Per-round shares of the roofline, each against its own round's roofline unless that one is beaten.

    A round's roofline (short best-of-3 runs) can be measured in a slower
    phase of a shared host than the network's longer timed pass that follows
    it; the network then "beats" it although the machine reached a higher
    roofline in another round. Such a round's roofline was an underestimate
    of the machine's ceiling, so that round is divided by the best roofline
    of all rounds instead (its index is returned, to be reported). A share
    still over 1 against the best roofline is a wrong measurement (the
    caller refuses it). Before this, one such round made the share of every
    batch size None (VGG19, whose convolutions run close to the roofline).

    Examples
    --------
    >>> round_shares([22.0, 15.0, 15.0], [200.0, 250.0, 200.0], 10.0)
    ([0.88, 0.6, 0.75], [0])
    >>> round_shares([22.0, 15.0], [200.0, 200.0], 10.0)[0]
    [1.1, 0.75]
    """
    best = max(roofs)
    shares, replaced = [], []
    for i, (r, f) in enumerate(zip(rates, roofs)):
        s = r * gflop / f
        if s > 1.0 and best > f:
            s = r * gflop / best
            replaced.append(i)
        shares.append(round(s, 6))
    return shares, replaced


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _one_layer(layer):
    def call(*a):
        return (
            layer(list(a) if len(a) > 1 else a[0], training=False)
            if _takes_training(layer)
            else layer(list(a) if len(a) > 1 else a[0])
        )

    return call


def _takes_training(layer) -> bool:
    import inspect

    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def layer_profile(model, batch: int, repeats: int = 2) -> dict[str, dict]:
    """Each layer timed alone on random inputs of its shape, summed per layer type.

    Alone, a layer is not fused with its neighbours as in the whole graph
    (oneDNN fuses Conv2D + batch norm + ReLU), so the shares of the
    element-wise layers are upper bounds.
    """
    import keras

    tf = F.import_tensorflow()
    tf.get_logger().setLevel("ERROR")  # one tf.function per layer: its retracing warnings are expected
    out: dict[str, dict] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        ins = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        xs = [tf.random.uniform((batch, *t.shape[1:]), dtype=layer.compute_dtype or "float32") for t in ins]
        fn = tf.function(_one_layer(layer))
        fn(*xs)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            y = fn(*xs)
            (y[0] if isinstance(y, (list, tuple)) else y).numpy()
            best = min(best, time.perf_counter() - t0)
        kind = type(layer).__name__
        d = out.setdefault(kind, {"layers": 0, "seconds": 0.0, "GFLOP": 0.0})
        d["layers"] += 1
        d["seconds"] += best
        d["GFLOP"] += layer_flops(layer) * batch / 1e9
    return out


def bench_backbone(name: str, n_images: int, batch_sizes: list[int], repeats: int, bf16: bool, layers: bool) -> dict:
    bb = F.BACKBONES[name]
    default_bs = F.default_batch_size(name)
    batch_sizes = sorted(set(batch_sizes) | {default_bs})
    ds = synthetic_dataset(n_images)
    man = image_set(ds).iloc[:n_images]
    x = F.preprocess(np.concatenate([b for _, b in iter_images(ds, man, size_px=bb.size_px, batch_size=32)]), bb)
    n = len(x)

    t0 = time.perf_counter()
    model, _ = F.load_backbone(name, weights=None, seed=0)
    t_build = time.perf_counter() - t0
    gflop = count_flops(model) / 1e9
    run = F.feature_function(model, bb)
    run16 = None
    if bf16:
        run16 = F.feature_function(F.with_precision(model, bb, "bfloat16"), bb)

    def rate(fn, bs: int) -> float:
        t0 = time.perf_counter()
        for i in range(0, n, bs):
            fn(x[i : i + bs])
        return n / (time.perf_counter() - t0)

    for bs in batch_sizes:  # trace and warm every shape
        run(x[:bs])
    if run16 is not None:
        run16(x[:default_bs])

    rates: dict[int, list[float]] = {bs: [] for bs in batch_sizes}
    rates16: list[float] = []
    rounds: list[dict] = []
    for r in range(repeats):
        roof = R.measure_roofline()
        for bs in batch_sizes:
            rates[bs].append(rate(run, bs))
        if run16 is not None:
            rates16.append(rate(run16, default_bs))
        rounds.append({**roof.to_dict(), "load_1min_end": os.getloadavg()[0]})
        print(
            f"   round {r + 1}: roofline {roof.gflops:.0f} GFLOP/s ({roof.source}; numpy {roof.numpy_gflops:.0f}, "
            f"tf.matmul {roof.tf_gflops:.0f}, tf.nn.conv2d {roof.conv_gflops:.0f}), load {roof.load_1min:.2f}; "
            + ", ".join(f"b={bs} {rates[bs][-1]:.2f} img/s" for bs in batch_sizes)
            + (f", bf16 b={default_bs} {rates16[-1]:.2f} img/s" if rates16 else ""),
            flush=True,
        )
    roofs = [d["gflops"] for d in rounds]

    fidelity = None
    if run16 is not None:
        f32 = np.concatenate([run(x[i : i + default_bs]) for i in range(0, n, default_bs)])
        f16 = np.concatenate([run16(x[i : i + default_bs]) for i in range(0, n, default_bs)])
        fidelity = cosine_min(f32, f16)

    prof, prof_roof = None, None
    if layers:
        prof_roof = R.measure_roofline()  # paired with the layer profile that follows
        prof = layer_profile(model, default_bs)
    del model, run, run16

    with tempfile.TemporaryDirectory() as tmp:
        fs = F.extract_features(ds, man, bb.name, cache_dir=tmp, weights=None, progress=False)
    return dict(
        name=name,
        n=n,
        gflop=gflop,
        default_bs=default_bs,
        batch_sizes=batch_sizes,
        rates=rates,
        rates16=rates16,
        rounds=roofs,
        round_records=rounds,
        t_build=t_build,
        fidelity=fidelity,
        e2e=(fs.n_computed / fs.seconds, fs.seconds),
        rss=peak_rss_gib(),
        layers=prof,
        layers_roofline=None if prof_roof is None else prof_roof.to_dict(),
    )


#: Key of the per-layer-type table in each backbone's report (read by the Benchmarks page).
LAYERS_KEY = "time per layer type (each layer alone, default batch)"


def layer_table(layers: dict, roofline_gflops: float | None = None) -> dict:
    """Per layer type, slowest first: seconds, share of time, GFLOP, GFLOP/s and share of the roofline.

    ``layers`` maps a layer type to ``{"layers", "seconds", "GFLOP"}`` (as
    :func:`layer_profile` returns). A type without FLOPs (pooling, batch
    norm, activations, concatenation) has GFLOP/s 0 and no share; a share
    over 100 % of the roofline is refused (None) with the reason, as for the
    networks.

    Examples
    --------
    >>> t = layer_table({"Conv2D": {"layers": 2, "seconds": 3.0, "GFLOP": 600.0},
    ...                  "ReLU": {"layers": 2, "seconds": 1.0, "GFLOP": 0.0}}, 250.0)
    >>> t["Conv2D"]["share of time"], t["Conv2D"]["GFLOP/s"], t["Conv2D"]["share of roofline"]
    (0.75, 200.0, 0.8)
    >>> list(t), t["ReLU"]["share of roofline"]
    (['Conv2D', 'ReLU'], None)
    """
    tot = sum(d["seconds"] for d in layers.values()) or 1.0
    out = {}
    for k, d in sorted(layers.items(), key=lambda kv: -kv[1]["seconds"]):
        g = d["GFLOP"] / d["seconds"] if d["seconds"] > 0 else 0.0
        row = {
            "layers": d["layers"],
            "seconds": round(d["seconds"], 3),
            "share of time": round(d["seconds"] / tot, 3),
            "GFLOP": round(d["GFLOP"], 1),
            "GFLOP/s": round(g, 1),
            "share of roofline": None,
        }
        if g > 0 and roofline_gflops:
            share, why = R.share_or_problem(g, roofline_gflops)
            row["share of roofline"] = share
            if why:
                row["problem"] = why
        out[k] = row
    return out


def summarise(r: dict) -> dict:
    """The report of one backbone: paired shares, bf16 speed-up and fidelity, with problems named."""
    gflop, dbs, roofs = r["gflop"], r["default_bs"], r["rounds"]
    rep: dict = {"FLOPs per image [G]": round(gflop, 2), "default batch size (features.default_batch_size)": dbs}
    problems = []
    best_bs, best_share = None, -1.0
    for bs in r["batch_sizes"]:
        shares, replaced = round_shares(r["rates"][bs], roofs, gflop)
        if replaced:
            problems.append(
                f"b={bs}: round(s) {', '.join(str(i + 1) for i in replaced)} beat their own roofline "
                "(measured in a slower phase of the host): divided by the best roofline of all rounds"
            )
        med = statistics.median(shares)
        if max(shares) > 1.0:  # cannot be: the roofline or the FLOP count is wrong
            problems.append(
                f"b={bs}: per-round shares {', '.join(f'{v:.0%}' for v in shares)}: "
                "MEASUREMENT WRONG (over 100 % of the roofline), not reported"
            )
            rep[f"batch {bs}: share of roofline (median of paired rounds)"] = None
            continue
        rep[f"batch {bs}: img/s (best round)"] = round(max(r["rates"][bs]), 2)
        rep[f"batch {bs}: share of roofline (median of paired rounds)"] = round(med, 3)
        if med > best_share:
            best_bs, best_share = bs, med
    dkey = f"batch {dbs}: share of roofline (median of paired rounds)"
    rep["share of roofline"] = rep.get(dkey)
    rep["target for the share"] = f">= {TARGETS['share of roofline']}"
    if rep["share of roofline"] is not None:
        rep["share target met"] = rep["share of roofline"] >= TARGETS["share of roofline"]
    rep["best batch size measured"] = best_bs
    rep["best reachable share (best batch size, median of paired rounds)"] = (
        round(best_share, 3) if best_bs is not None else None
    )
    if best_bs is not None and rep.get(dkey) is not None and best_share > rep[dkey] * 1.03:
        problems.append(
            f"batch {best_bs} beat the default {dbs} by more than 3 % "
            f"({best_share:.1%} vs {rep[dkey]:.1%}): consider changing features.DEFAULT_BATCH_SIZE"
        )
    rep["achieved at the default batch [GFLOP/s] (best round)"] = round(max(r["rates"][dbs]) * gflop, 1)
    if r["rates16"]:
        speedups = [a / b for a, b in zip(r["rates16"], r["rates"][dbs])]
        rep["bfloat16 img/s (best round)"] = round(max(r["rates16"]), 2)
        rep["bfloat16 speed-up (median of paired rounds)"] = round(statistics.median(speedups), 3)
        rep["bfloat16 min cosine vs float32"] = round(r["fidelity"], 5)
        rep["target for the bf16 speed-up"] = f">= {TARGETS['bfloat16 speed-up']}"
        rep["target for the bf16 min cosine"] = f">= {TARGETS['bfloat16 min cosine']}"
        rep["bf16 targets met"] = bool(
            statistics.median(speedups) >= TARGETS["bfloat16 speed-up"]
            and r["fidelity"] >= TARGETS["bfloat16 min cosine"]
        )
    rep["extract_features cold [img/s]"] = round(r["e2e"][0], 2)
    rep["peak RSS so far [GiB]"] = round(r["rss"], 2)
    rep["load average per round (1 min, start)"] = [round(d["load_1min"], 2) for d in r["round_records"]]
    rep["roofline per round [GFLOP/s] (source)"] = [
        f"{d['gflops']:.0f} ({d.get('source')})" for d in r["round_records"]
    ]
    if r["layers"]:
        roof = (r.get("layers_roofline") or {}).get("gflops")
        rep[LAYERS_KEY] = layer_table(r["layers"], roof)
        if roof:
            rep["roofline paired with the layer profile [GFLOP/s]"] = round(roof, 1)
    if problems:
        rep["problems"] = problems
    return rep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="+", default=list(F.BACKBONES), choices=list(F.BACKBONES))
    ap.add_argument("--n-images", type=int, default=None, help="images per pass (default 128 inception, 64 vgg)")
    ap.add_argument(
        "--batch-size",
        type=int,
        nargs="+",
        default=[16, 32, 64],
        help="batch sizes to time (the default rule's is always added)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds, each with its own roofline")
    ap.add_argument("--no-bf16", action="store_true", help="skip bfloat16 even where the CPU supports it")
    ap.add_argument("--layers", action="store_true", help="time each layer alone, per layer type (the default)")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer-type profile")
    ap.add_argument("--quick", action="store_true", help="smoke run: 16 images, batch 8, one round, no report")
    ap.add_argument("--no-report", action="store_true", help="do not write runs/benchmarks/features.json")
    args = ap.parse_args(argv)
    if args.quick:  # checks the script, measures nothing worth keeping: no report
        args.n_images, args.batch_size, args.repeats, args.no_report = args.n_images or 16, [8], 1, True
    layers = not args.no_layers and (args.layers or not args.quick)  # --quick skips it unless asked

    info = R.cpu_info()
    tf = F.import_tensorflow()
    bf16_ok, bf16_why = F.bfloat16_support()
    bf16 = bf16_ok and not args.no_bf16
    peak = R.theoretical_peak(info)
    peak16 = R.theoretical_peak(info, "bfloat16")
    print(
        f"CPU {info.model}, {info.physical_cores} cores usable, TF {tf.__version__}, numpy {np.__version__}, "
        f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS')}, "
        f"OpenBLAS variables in this environment: "
        f"{ {k: os.environ.get(k) for k in R.OPENBLAS_VARS} } (unset for the roofline's child process)"
    )
    print(f"theoretical peak float32: {peak['GFLOP/s']} GFLOP/s = {peak['derivation']}")
    print(f"theoretical peak bfloat16: {peak16['GFLOP/s']} GFLOP/s = {peak16['derivation']}")
    print(f"bfloat16: {'measured' if bf16 else 'skipped'} ({bf16_why})")
    print("load average (1/5/15 min) at start: %.2f %.2f %.2f -- other processes share these CPUs" % os.getloadavg())
    roof0 = R.measure_roofline()
    print(
        f"roofline at start: {roof0.gflops:.1f} GFLOP/s ({roof0.source}); numpy sgemm 2048² {roof0.numpy_gflops:.1f} "
        f"GFLOP/s with OpenBLAS kernel {roof0.kernel.get('internal_api')}/{roof0.kernel.get('architecture')}, "
        f"tf.matmul 4096² {roof0.tf_gflops:.1f} GFLOP/s, tf.nn.conv2d {roof0.conv_gflops:.1f} GFLOP/s "
        f"({roof0.conv_shape}); clock it implies at the peak FLOP/cycle: "
        f"{R.implied_ghz(roof0.gflops, info):.2f} GHz (cpu MHz says {info.mhz / 1000:.2f})"
    )
    print("weights: random initialisation (seed 0) -- same arithmetic as ImageNet weights; images synthetic")

    report: dict = {}
    results = []
    for name in args.backbones:
        n = args.n_images or DEFAULT_N[name]
        print(
            f"\n== {name}: {n} images per pass, batch sizes {sorted(set(args.batch_size) | {F.default_batch_size(name)})}, "
            f"{args.repeats} rounds",
            flush=True,
        )
        r = bench_backbone(name, n, args.batch_size, args.repeats, bf16, layers)
        results.append(r)
        rep = summarise(r)
        report[name] = rep
        for k, v in rep.items():
            print(f"   {k}: {v}")
    roof1 = R.measure_roofline()
    all_rounds = [roof0.to_dict(), roof1.to_dict()] + [d for r in results for d in r["round_records"]]
    all_roofs = [d["gflops"] for d in all_rounds]
    best_round = max(all_rounds, key=lambda d: d["gflops"])
    report = {
        "roofline [GFLOP/s] (best of all rounds)": round(max(all_roofs), 1),
        "roofline kernel (numpy sgemm, threadpoolctl)": f"{roof0.kernel.get('internal_api')} "
        f"{roof0.kernel.get('architecture')}",
        "roofline source": best_round["source"],
        "roofline source per round": [d["source"] for d in all_rounds],
        "roofline numpy sgemm 2048² [GFLOP/s] (start, end)": [
            round(roof0.numpy_gflops, 1),
            round(roof1.numpy_gflops, 1),
        ],
        "roofline tf.matmul 4096² [GFLOP/s] (start, end)": [round(roof0.tf_gflops, 1), round(roof1.tf_gflops, 1)],
        "roofline tf.nn.conv2d [GFLOP/s] (start, end)": [round(roof0.conv_gflops, 1), round(roof1.conv_gflops, 1)],
        "roofline tf.nn.conv2d shape (start)": roof0.conv_shape,
        "theoretical peak float32 [GFLOP/s]": peak["GFLOP/s"],
        "theoretical peak derivation": peak["derivation"],
        "clock implied by the roofline [GHz]": round(R.implied_ghz(max(all_roofs), info), 2),
        "bfloat16": "measured" if bf16 else f"not measured ({bf16_why})",
        "load average at start and end (1 min)": [round(roof0.load_1min, 2), round(roof1.load_1min, 2)],
        **report,
    }
    ok = all(
        report[n].get("share of roofline") is not None and report[n]["share of roofline"] >= 0.85
        for n in args.backbones
    )
    print(
        f"\nroofline {report['roofline [GFLOP/s] (best of all rounds)']} GFLOP/s; shares: "
        + ", ".join(f"{n} {report[n].get('share of roofline')}" for n in args.backbones)
        + f" -> target >= 0.85 {'met' if ok else 'NOT met'}"
    )
    print("load average at end: %.2f %.2f %.2f" % os.getloadavg())
    if not args.no_report:
        from _report import write_report

        write_report(
            "features",
            report,
            notes="random weights (same arithmetic as ImageNet), synthetic images; "
            "each share is a network rate divided by the roofline measured in the same round; "
            "targets (issue 12): share of roofline >= 0.85, bfloat16 speed-up >= 1.3 with min cosine >= 0.99",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
