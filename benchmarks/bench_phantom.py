"""Throughput and physics figures of the synthetic phantom (:mod:`uslib.phantom`).

Simulates ``--n-lesions`` lesions (two 30–50 mm scans each, seeded) and prints

* the wall time to simulate the data set and the time per lesion;
* peak resident memory of the process (``resource.getrusage``), and the
  size of the int16 RF + bool ROI arrays it holds;
* the background envelope SNR (mean/std, Rayleigh = 1.913) and speckle size
  (FWHM of the intensity autocovariance; design targets 0.094 mm axial,
  0.32 mm lateral) of a homogeneous patch simulated with the same PSF, at the focus;
* a class-separability check: AUC of one image feature (lesion/surround
  envelope contrast, in dB) and of the latent suspiciousness itself.

Run: ``.venv/bin/python benchmarks/bench_phantom.py [--n-lesions 100] [--seed 0]``.
Wall-clock figures on a noisy host; the data are synthetic.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from uslib import phantom as ph  # noqa: E402
from uslib.qus import envelope_snr  # noqa: E402
from uslib.reconstruction import envelope  # noqa: E402


def _auc(score, label) -> float:
    score, label = np.asarray(score, float), np.asarray(label, int)
    pos, neg = score[label == 1], score[label == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def _contrast_db(scan) -> float:
    from scipy import ndimage, signal

    roi = scan.roi
    rows, cols = np.nonzero(roi.any(1))[0], np.nonzero(roi.any(0))[0]
    z0, z1 = max(rows[0] - 120, 20), rows[-1] + 120
    x0, x1 = max(cols[0] - 30, 0), cols[-1] + 30
    env = np.abs(signal.hilbert(scan.rf[z0:z1, x0:x1].astype(float), axis=0))
    r = roi[z0:z1, x0:x1]
    ring = ndimage.binary_dilation(r, iterations=25) & ~r
    return float(20 * np.log10(env[r].mean() / env[ring].mean()))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-lesions", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-report", action="store_true", help="do not write runs/benchmarks/phantom.json")
    args = ap.parse_args(argv)

    rss0 = _rss_mib()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    ds, cues = ph.simulate_dataset(args.n_lesions, seed=args.seed, return_models=True)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    rss1 = _rss_mib()
    n_bytes = sum(sc.rf.nbytes + sc.roi.nbytes for les in ds for sc in les.scans)
    depths = [(sc.rf.shape[0] - 20) * sc.acquisition.dz_mm for les in ds for sc in les.scans]
    n_pat = len(set(ds.patients))
    print(
        f"data set: {len(ds)} lesions ({int(ds.labels.sum())} malignant), {n_pat} patients, "
        f"{2 * len(ds)} scans of {min(depths):.1f}–{max(depths):.1f} mm; synthetic; seed {args.seed}"
    )
    print(
        f"simulate_dataset: {wall:.2f} s wall ({wall / len(ds) * 1e3:.0f} ms per lesion), "
        f"{cpu:.2f} s CPU, {os.cpu_count()} cores"
    )
    print(f"peak RSS: {rss1:.0f} MiB (before simulation {rss0:.0f} MiB); arrays held {n_bytes / 2**20:.0f} MiB")

    snrs, sizes = [], []
    for s in range(4):
        rf = ph.simulate_speckle((1024, 510), seed=1000 + s)
        snrs.append(envelope_snr(envelope(rf)))
        sizes.append(ph.speckle_size_mm(ph.simulate_speckle((256, 510), seed=2000 + s)))
    snr = float(np.mean(snrs))
    axial, lateral = (float(v) for v in np.mean(sizes, axis=0))
    print(f"background envelope SNR (homogeneous patch, same PSF): {snr:.3f} ± {np.std(snrs):.3f} (Rayleigh 1.913)")
    print(f"speckle size at the focus: axial {axial:.3f} mm, lateral {lateral:.3f} mm (targets 0.094, 0.32)")

    t1 = time.perf_counter()
    feature = [-np.mean([_contrast_db(sc) for sc in les.scans]) for les in ds]
    auc_contrast = _auc(feature, ds.labels)
    auc_u = _auc(cues["suspicion"], ds.labels)
    print(
        f"AUC of lesion/surround contrast: {auc_contrast:.3f}; of the latent suspiciousness u: {auc_u:.3f} "
        f"({time.perf_counter() - t1:.1f} s)"
    )

    figures = {
        "n_lesions": len(ds),
        "seed": args.seed,
        "simulate_s": round(wall, 3),
        "per_lesion_ms": round(wall / len(ds) * 1e3, 1),
        "cpu_s": round(cpu, 3),
        "peak_rss_mib": round(rss1, 1),
        "arrays_mib": round(n_bytes / 2**20, 1),
        "background_snr": round(snr, 4),
        "speckle_axial_mm": round(axial, 4),
        "speckle_lateral_mm": round(lateral, 4),
        "auc_contrast": round(auc_contrast, 3),
        "auc_suspicion": round(auc_u, 3),
    }
    if not args.no_report:
        try:
            from _report import write_report
        except ImportError:  # pragma: no cover - the report helper belongs to another module
            return
        write_report("phantom", figures, notes="synthetic phantom; wall-clock on a shared host")


if __name__ == "__main__":
    main()
