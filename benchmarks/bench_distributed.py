"""Feature extraction in this process against a Dask LocalCluster of 2 single-threaded workers.

On the tiny profile's phantom (12 lesions; 3 dynamic ranges, 5 mm margin: 72
images), InceptionV3 with seeded random weights (the arithmetic of ImageNet
weights), batches of 16, each pass into an empty feature cache:

* **in-process**: :func:`uslib.pipeline.get_features` without a scheduler,
  cold (building the network and tracing included), then again into another
  empty cache with the network built anew (the in-process path builds it per
  call);
* **LocalCluster, cold workers**: the same call with ``scheduler=client``
  on a fresh ``LocalCluster(n_workers=2, threads_per_worker=1)``; each worker
  reads the data file, builds the network once and traces it;
* **LocalCluster, warm workers**: again into an empty cache: the workers
  keep their networks, so this is the steady state of a long run.

Per-partition figures come from the task records
(:attr:`uslib.features.FeatureSet.tasks`): model build time per worker,
rendering and inference time, the worker-side remainder (reading, checks),
and the bytes sent (manifest rows, or a whole lesion when the data file is not
readable by the workers) and returned (features) per image. The scheduling
overhead per task is the round trip of a no-op task. The figures feed the
scaling estimate of the book's *Running on a cluster* page.

Run: ``.venv/bin/python benchmarks/bench_distributed.py [--n-lesions 12] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _noop(x):
    return x


def _summary(tasks: list[dict], images: int, seconds: float) -> dict:
    built = [t["build_seconds"] for t in tasks if t["build_seconds"] > 0]
    rest = [t["task_seconds"] - t["build_seconds"] - t["render_seconds"] - t["inference_seconds"] for t in tasks]
    return {
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 3),
        "partitions": len(tasks),
        "workers_used": len({t["worker"] for t in tasks}),
        "model_builds": len(built),
        "model_build_s_per_worker": round(statistics.mean(built), 2) if built else 0.0,
        "inference_s_per_image": round(sum(t["inference_seconds"] for t in tasks) / images, 4),
        "render_s_per_image": round(sum(t["render_seconds"] for t in tasks) / images, 4),
        "worker_other_s_per_partition": round(statistics.mean(rest), 4),
        "bytes_in_per_image": round(sum(t["bytes_in"] for t in tasks) / images, 1),
        "bytes_out_per_image": round(sum(t["bytes_out"] for t in tasks) / images, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-lesions", type=int, default=12)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backbone", default="inception_v3")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()

    from uslib import pipeline, scheduler
    from uslib.features import extract_features, load_backbone

    tmp = tempfile.mkdtemp(prefix="bench-distributed-")
    run_dir = os.path.join(tmp, "run")
    ds = pipeline.get_dataset(run_dir, n_lesions=args.n_lesions, data_seed=0)
    manifest = pipeline.get_manifest(ds, dynamic_ranges_db=[40, 50, 60], margins_mm=[5])
    n = len(manifest)
    data_file = (pipeline.run_record(run_dir)["dataset"]["file"], 20)
    kw = dict(weights="random", progress=False, allow_download=False, batch_size=16)
    print(f"[bench] {n} images of {args.n_lesions} lesions, {args.backbone}, random weights", flush=True)

    import keras  # noqa: F401  (imported before timing: the build time below excludes the import)

    t0 = time.perf_counter()
    load_backbone(args.backbone, weights="random")
    build_in_process = time.perf_counter() - t0

    timings = {}
    for name in ("in_process_1", "in_process_2"):
        t0 = time.perf_counter()
        fs = extract_features(ds, manifest, args.backbone, cache_dir=os.path.join(tmp, name), **kw)
        timings[name] = time.perf_counter() - t0
        assert fs.n_computed == n
        print(f"[bench] {name}: {timings[name]:.1f} s ({n / timings[name]:.2f} img/s)", flush=True)
    reference = fs.features

    t0 = time.perf_counter()
    with scheduler.cluster("local", n_workers=args.workers, quiet=True) as client:
        client.wait_for_workers(args.workers)
        cluster_start = time.perf_counter() - t0
        lat = []
        for i in range(50):
            t1 = time.perf_counter()
            client.submit(_noop, i, pure=False).result()
            lat.append(time.perf_counter() - t1)
        passes = {}
        for name in ("cluster_cold", "cluster_warm"):
            t0 = time.perf_counter()
            fs = extract_features(
                ds, manifest, args.backbone, cache_dir=os.path.join(tmp, name), client=client, data_file=data_file, **kw
            )
            seconds = time.perf_counter() - t0
            assert fs.n_computed == n
            passes[name] = _summary(fs.tasks, n, seconds)
            passes[name]["max_rel_diff_vs_in_process"] = float(
                abs(fs.features - reference).max() / abs(reference).max()
            )
            print(f"[bench] {name}: {seconds:.1f} s ({n / seconds:.2f} img/s)", flush=True)
        t0 = time.perf_counter()
        fs = extract_features(
            ds, manifest, args.backbone, cache_dir=os.path.join(tmp, "scattered"), client=client, data_file=None, **kw
        )
        scattered = _summary(fs.tasks, n, time.perf_counter() - t0)

    warm_rate = passes["cluster_warm"]["images_per_s"]
    in_rate = n / timings["in_process_2"]
    figures = {
        "setup": {
            "images": n,
            "lesions": args.n_lesions,
            "partitions": args.n_lesions,
            "backbone": args.backbone,
            "workers": args.workers,
            "threads_per_worker": 1,
            "batch_size": 16,
            "cpu_count": os.cpu_count(),
        },
        "in_process": {
            "images_per_s_cold": round(n / timings["in_process_1"], 3),
            "images_per_s": round(in_rate, 3),
            "seconds": round(timings["in_process_2"], 2),
            "model_build_s": round(build_in_process, 2),
        },
        "local_cluster": {
            "start_s": round(cluster_start, 2),
            "task_round_trip_s": round(statistics.median(lat), 5),
            "cold_workers": passes["cluster_cold"],
            "warm_workers": passes["cluster_warm"],
            "scattered_lesions": {
                k: scattered[k] for k in ("images_per_s", "bytes_in_per_image", "bytes_out_per_image")
            },
        },
        "speedup_warm_cluster_vs_in_process": round(warm_rate / in_rate, 3),
    }
    if not args.no_report:
        from _report import write_report

        write_report(
            "distributed",
            figures,
            notes=(
                f"{args.workers} single-threaded worker processes against one process using every core "
                f"({os.cpu_count()}); on 2 cores a speed-up of at most 1x is expected: the cluster adds "
                "a network build and trace per worker and per-task overhead, and divides the same cores."
            ),
        )
    import json

    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
