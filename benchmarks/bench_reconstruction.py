"""Throughput of B-mode reconstruction and image rendering.

Times, on one 2000 × 510 scan (a phantom scan when :mod:`uslib.phantom` is
available, else random int16 RF, labelled so):

* one envelope + three B-modes (40/50/60 dB) from it — what
  :func:`uslib.augmentation.iter_images` does per scan;
* three full :func:`uslib.reconstruction.bmode` calls — the naive way;
* rendering the 18 images of one two-scan lesion at 299 px with
  :func:`~uslib.augmentation.iter_images`, and with 18 independent
  :func:`~uslib.augmentation.render` calls.

Run: ``.venv/bin/python benchmarks/bench_reconstruction.py [--repeat 5] [--size-px 299]``.
Wall-clock figures; the host is noisy, so compare within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from uslib.augmentation import image_set, iter_images, render
from uslib.data import OASBUD_ACQUISITION, Dataset, Lesion, Scan
from uslib.reconstruction import bmode, bmode_from_envelope, envelope

DRS = (40.0, 50.0, 60.0)


def random_lesion(n_samples: int = 2000, n_lines: int = 510, seed: int = 0) -> tuple[Dataset, str]:
    rng = np.random.default_rng(seed)
    scans = []
    for _ in range(2):
        rf = rng.normal(0, 3000, size=(n_samples, n_lines)).round().astype(np.int16)
        roi = np.zeros((n_samples, n_lines), bool)
        roi[700:1100, 180:330] = True  # 7.7 mm × 11.2 mm
        scans.append(Scan(rf=rf, roi=roi, acquisition=OASBUD_ACQUISITION))
    les = Lesion("1rnd", "1rnd", "rnd", 0, "3", tuple(scans))
    return Dataset([les], source="random int16 RF (synthetic)", synthetic=True), "random int16 RF, synthetic"


def phantom_lesion(seed: int = 0) -> tuple[Dataset, str] | None:
    try:
        from uslib.phantom import simulate_dataset
    except ImportError:
        return None
    ds = simulate_dataset(1, seed=seed)
    return Dataset([ds[0]], source=ds.source, synthetic=True), "uslib.phantom scan, synthetic"


def timed(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size-px", type=int, default=299)
    ap.add_argument("--random", action="store_true", help="use random RF even if uslib.phantom exists")
    ap.add_argument("--no-report", action="store_true", help="do not write runs/benchmarks/reconstruction.json")
    args = ap.parse_args(argv)

    got = None if args.random else phantom_lesion()
    dataset, what = got if got is not None else random_lesion()
    rf = dataset[0].scans[0].rf
    print(f"data: {what}; scan {rf.shape[0]}×{rf.shape[1]} {rf.dtype}; repeat {args.repeat} (min / median)")

    def shared():
        env = envelope(rf)
        return [bmode_from_envelope(env, dr) for dr in DRS]

    def naive():
        return [bmode(rf, dr) for dr in DRS]

    assert all(np.array_equal(a, b) for a, b in zip(shared(), naive()))
    rows = [
        ("envelope only", lambda: envelope(rf)),
        ("one bmode (40 dB)", lambda: bmode(rf, 40)),
        ("envelope once + 3 B-modes", shared),
        ("3 × full bmode (naive)", naive),
    ]
    manifest = image_set(dataset)
    n_img = len(manifest)

    def stream():
        for _ in iter_images(dataset, manifest, size_px=args.size_px, batch_size=16):
            pass

    def one_by_one():
        for _, row in manifest.iterrows():
            render(dataset, row, size_px=args.size_px)

    rows += [
        (f"iter_images: {n_img} images at {args.size_px} px", stream),
        (f"render × {n_img} at {args.size_px} px", one_by_one),
    ]
    figures = {"data": what, "scan": f"{rf.shape[0]}x{rf.shape[1]}"}
    for name, fn in rows:
        tmin, tmed = timed(fn, args.repeat)
        print(f"{name:<36s} {1e3 * tmin:9.1f} ms {1e3 * tmed:9.1f} ms")
        figures[f"{name} [ms, median]"] = round(1e3 * tmed, 1)
    if not args.no_report:
        from _report import write_report

        write_report("reconstruction", figures, notes="wall clock, median of --repeat runs")


if __name__ == "__main__":
    main()
