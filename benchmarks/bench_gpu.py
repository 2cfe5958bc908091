"""InceptionV3 and VGG19 feature extraction on a GPU: images/s and the share of the GPU's peak.

The same networks as :mod:`uslib.features` (``keras.applications``:
InceptionV3 to its global average pool at 299 px, VGG19 to ``fc1`` at 224 px),
random weights (the arithmetic of ImageNet weights), random inputs already on
the device, float32 and bfloat16 (Keras dtype policy ``"bfloat16"``), batch
sizes 32-256.

Self-contained on purpose: it imports neither TensorFlow nor ``uslib`` (the
GPU machine it was written for has JAX and no TensorFlow), only Keras 3,
numpy and the backend. With TensorFlow absent it runs Keras on JAX
(``KERAS_BACKEND=jax``, set here unless the environment sets it);
``--backend tensorflow`` is the CPU smoke test used where JAX is not
installed.

Timing: each (network, precision, batch) is compiled once (``jax.jit`` of
``model.stateless_call``, or ``tf.function``), run once to warm up, then
timed for at least ``--min-seconds`` (whole batches, waiting for the device);
the best of ``--repeats`` such passes is reported. FLOPs per image are 2 x
the multiply-accumulates of every Conv2D and Dense layer (as
``benchmarks/bench_features.py`` counts them). The peaks are NVIDIA's dense
(no sparsity) figures for the device found (``--peak`` overrides): H100 SXM
66.9 TFLOP/s float32 on CUDA cores, 494.7 TF32 and 989.4 bfloat16 on tensor
cores. Float32 is compared with both the float32 and the TF32 peak, since
XLA may run float32 convolutions on tensor cores in TF32 (JAX's default
matmul precision on GPUs allows it); bfloat16 with the bfloat16 peak.

Writes ``$OUT/bench_gpu.json`` when ``OUT`` is set (the device tool), else
``runs/benchmarks/gpu.json``, after every measurement, so a run cut short
still returns what it measured.

Run (on the GPU machine, with the wheels of ``keras==3.15.1``, ``namex``,
``optree`` and ``typing_extensions`` carried): see README, "A GPU".
Smoke test here: ``.venv/bin/python benchmarks/bench_gpu.py --backend tensorflow --tiny``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

#: NVIDIA's dense peaks, TFLOP/s: (float32 CUDA cores, TF32 tensor cores, bfloat16 tensor cores).
GPU_PEAKS_TFLOPS: dict[str, tuple[float, float, float]] = {
    "H100 SXM": (66.9, 494.7, 989.4),  # also H100 80GB HBM3 (SXM5)
    "H100 PCIe": (51.2, 378.0, 756.0),
    "H100 NVL": (60.0, 417.5, 835.0),
    "H200": (66.9, 494.7, 989.4),
    "A100": (19.5, 156.0, 312.0),
    "L4": (30.3, 60.0, 121.0),
}

NETWORKS = {
    "inception_v3": dict(constructor="InceptionV3", size_px=299, include_top=False, pooling="avg", layer=None),
    "vgg19": dict(constructor="VGG19", size_px=224, include_top=True, pooling=None, layer="fc1"),
}


def peaks_for(device_kind: str) -> tuple[str, tuple[float, float, float]] | tuple[None, None]:
    """The peak table's entry for a device name (``jax.devices()[0].device_kind``).

    Examples
    --------
    >>> peaks_for("NVIDIA H100 80GB HBM3")
    ('H100 SXM', (66.9, 494.7, 989.4))
    >>> peaks_for("NVIDIA H100 PCIe")[0], peaks_for("NVIDIA H200")[0], peaks_for("cpu")
    ('H100 PCIe', 'H200', (None, None))
    """
    k = device_kind.upper()
    if "H200" in k:
        return "H200", GPU_PEAKS_TFLOPS["H200"]
    if "H100" in k:
        if "PCIE" in k:
            return "H100 PCIe", GPU_PEAKS_TFLOPS["H100 PCIe"]
        if "NVL" in k:
            return "H100 NVL", GPU_PEAKS_TFLOPS["H100 NVL"]
        return "H100 SXM", GPU_PEAKS_TFLOPS["H100 SXM"]
    for name in ("A100", "L4"):
        if name in k:
            return name, GPU_PEAKS_TFLOPS[name]
    return None, None


def choose_backend(requested: str | None) -> str:
    """``requested``, else the environment's KERAS_BACKEND, else jax when TensorFlow is absent."""
    if requested:
        return requested
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    return "tensorflow" if importlib.util.find_spec("tensorflow") else "jax"


def count_flops(model) -> float:
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            _, h, w, c_out = layer.output.shape
            total += 2.0 * kh * kw * (layer.input.shape[-1] // layer.groups) * c_out * h * w
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * layer.input.shape[-1] * layer.units
    return total


def build(name: str, dtype: str, size_px: int | None = None):
    import keras

    spec = NETWORKS[name]
    size = size_px or spec["size_px"]
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        keras.utils.set_random_seed(0)
        ctor = getattr(keras.applications, spec["constructor"])
        base = ctor(weights=None, include_top=spec["include_top"], pooling=spec["pooling"], input_shape=(size, size, 3))
        model = base if spec["layer"] is None else keras.Model(base.input, base.get_layer(spec["layer"]).output)
    finally:
        keras.config.set_dtype_policy(old)
    return model


def compiled(model, backend: str):
    """A compiled forward pass ``f(x) -> float32 features`` that waits for the device."""
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]

        @jax.jit
        def fwd(tv, ntv, x):
            y, _ = model.stateless_call(tv, ntv, x, training=False)
            return y.astype(jnp.float32)

        def run(x):
            return fwd(tv, ntv, x).block_until_ready()

        return run
    if backend == "tensorflow":
        import tensorflow as tf

        fn = tf.function(lambda x: tf.cast(model(x, training=False), tf.float32), jit_compile=False)

        def run(x):
            return fn(x).numpy()

        return run
    raise ValueError(f"backend {backend!r} not supported here (jax or tensorflow)")


def device_array(x, backend: str):
    if backend == "jax":
        import jax

        return jax.device_put(x)
    import tensorflow as tf

    return tf.constant(x)


def time_rate(run, x, batch: int, min_seconds: float, repeats: int) -> float:
    run(x)  # compile + warm-up
    run(x)
    best = 0.0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            run(x)
            n += batch
            dt = time.perf_counter() - t0
            if dt >= min_seconds and n >= 3 * batch:
                break
        best = max(best, n / dt)
    return best


def cosine_min(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)
    return float((np.einsum("ij,ij->i", a, b) / den).min())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--backend",
        choices=["jax", "tensorflow"],
        default=None,
        help="Keras backend (default: jax when TensorFlow is absent)",
    )
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["float32", "bfloat16"])
    ap.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per pass, at least")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="seconds for all measurements, shared equally by the networks; no new one starts after",
    )
    ap.add_argument(
        "--peak",
        type=float,
        nargs=3,
        metavar=("FP32", "TF32", "BF16"),
        default=None,
        help="peak TFLOP/s to compare with, overriding the table",
    )
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: 75 px images, batch 2, short passes")
    args = ap.parse_args(argv)

    backend = choose_backend(args.backend)
    os.environ["KERAS_BACKEND"] = backend
    import numpy as np
    import keras

    t_start = time.perf_counter()
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        kind, platform_name = dev.device_kind, dev.platform
        versions = {"jax": jax.__version__}
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        kind = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu"
        platform_name = "gpu" if gpus else "cpu"
        versions = {"tensorflow": tf.__version__}
    peak_name, peaks = peaks_for(kind)
    if args.peak:
        peak_name, peaks = "given with --peak", tuple(args.peak)
    if args.tiny:
        args.batch_sizes, args.min_seconds, args.repeats = [2], 0.0, 1
    out_dir = (
        Path(os.environ["OUT"])
        if os.environ.get("OUT")
        else Path(__file__).resolve().parents[1] / "runs" / "benchmarks"
    )
    out_path = out_dir / ("bench_gpu.json" if os.environ.get("OUT") else "gpu.json")
    record = {
        "name": "gpu",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "device": kind, "device platform": platform_name},
        "figures": {
            "backend": f"keras {keras.__version__} on {backend}",
            **versions,
            "peak table entry": peak_name,
            "peak [TFLOP/s] (float32, tf32, bfloat16; dense)": list(peaks) if peaks else None,
            "weights": "random (same arithmetic as ImageNet weights); inputs random, on the device",
        },
        "notes": "float32 is compared with the float32 and the TF32 peak (XLA may use TF32 tensor cores for "
        "float32 convolutions); bfloat16 with the bfloat16 peak",
    }

    def save():
        out_dir.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(record, indent=1))

    print(
        f"[gpu] keras {keras.__version__} on {backend}, device {kind} ({platform_name}), "
        f"peaks {peaks} TFLOP/s ({peak_name})",
        flush=True,
    )
    for i_net, name in enumerate(args.networks):
        deadline = t_start + args.budget_s * (i_net + 1) / len(args.networks)  # each network its share
        size = 75 if args.tiny else None
        ref = None
        fig = record["figures"].setdefault(name, {})
        for dtype in args.dtypes:
            if time.perf_counter() > deadline:
                fig[f"{dtype}: skipped"] = f"time budget of {args.budget_s:.0f} s spent"
                continue
            model = build(name, dtype, size)
            if dtype == "bfloat16" and "float32" in args.dtypes:
                # same weights as float32, so the features can be compared
                ref_model = build(name, "float32", size)
                model.set_weights(ref_model.get_weights())
            else:
                ref_model = None
            gflop = count_flops(model) / 1e9
            fig["FLOPs per image [G]"] = round(gflop, 3)
            run = compiled(model, backend)
            s = size or NETWORKS[name]["size_px"]
            rng = np.random.default_rng(0)
            for bs in args.batch_sizes:
                if time.perf_counter() > deadline:
                    fig[f"{dtype} batch {bs}"] = f"skipped: time budget of {args.budget_s:.0f} s spent"
                    continue
                x = device_array(rng.uniform(-1, 1, (bs, s, s, 3)).astype(np.float32), backend)
                t0 = time.perf_counter()
                rate = time_rate(run, x, bs, args.min_seconds, args.repeats)
                tflops = rate * gflop / 1e3
                entry = {
                    "img/s": round(rate, 1),
                    "TFLOP/s": round(tflops, 2),
                    "seconds incl. compile": round(time.perf_counter() - t0, 1),
                }
                if peaks:
                    if dtype == "float32":
                        entry["share of float32 peak"] = round(tflops / peaks[0], 3)
                        entry["share of TF32 peak"] = round(tflops / peaks[1], 3)
                    else:
                        entry["share of bfloat16 peak"] = round(tflops / peaks[2], 3)
                fig[f"{dtype} batch {bs}"] = entry
                print(f"[gpu] {name} {dtype} batch {bs}: {entry}", flush=True)
                save()
            if ref_model is not None:
                xs = device_array(np.random.default_rng(1).uniform(-1, 1, (8, s, s, 3)).astype(np.float32), backend)
                ref = np.asarray(compiled(ref_model, backend)(xs))
                fig["bfloat16 min cosine vs float32 (8 images)"] = round(cosine_min(np.asarray(run(xs)), ref), 5)
                del ref_model
            del model, run
            save()
    record["figures"]["seconds in all"] = round(time.perf_counter() - t_start, 1)
    save()
    print(f"[gpu] written {out_path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
