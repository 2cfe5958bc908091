"""Wall time of the full Train × Test matrix for both backbones.

Random synthetic features sized like a profile (``--n-lesions 40`` ≈ the
default profile: 18 images per lesion, 2048-d and 4096-d), with a weak class
signal and a per-dynamic-range shift. Compares the library's default
``LinearSVM`` (precomputed linear kernel) with a literal
``SVC(kernel="linear", probability=True)`` unless ``--no-baseline``.

Run: ``.venv/bin/python benchmarks/bench_evaluation.py [--n-lesions 40] [--no-baseline]``.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.svm import SVC

from uslib.cvsettings import CVSettings
from uslib.evaluation import reconstruction_matrix


def synthetic_manifest(n_lesions: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows, les, pat = [], 0, 0
    while les < n_lesions:
        k = 2 if rng.random() < 0.25 and les + 2 <= n_lesions else 1
        for _ in range(k):
            lab = int(rng.random() < 0.4)
            for scan in range(2):
                for dr in (40.0, 50.0, 60.0):
                    for mm in (2.0, 5.0, 10.0):
                        rows.append(
                            dict(
                                lesion=f"{les}p{pat}",
                                patient=f"p{pat}",
                                label=lab,
                                birads="4a",
                                scan=scan,
                                margin_mm=mm,
                                dynamic_range_db=dr,
                            )
                        )
            les += 1
        pat += 1
    m = pd.DataFrame(rows)
    m.insert(0, "image", range(len(m)))
    return m


def synthetic_features(m: pd.DataFrame, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    code = pd.factorize(m["lesion"])[0]
    lesion_effect = rng.normal(size=(code.max() + 1, d))
    direction = rng.normal(size=d)
    shift = {r: rng.normal(size=d) for r in (40.0, 50.0, 60.0)}
    x = 0.8 * lesion_effect[code] + rng.normal(size=(len(m), d))
    x += 0.15 * np.outer(m["label"].to_numpy() - 0.5, direction)
    x += 0.5 * np.stack([shift[r] for r in m["dynamic_range_db"]])
    return np.maximum(x, 0).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-lesions", type=int, default=40)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore", FutureWarning)
    m = synthetic_manifest(args.n_lesions)
    feats = {"inception_v3": synthetic_features(m, 2048, 1), "vgg19": synthetic_features(m, 4096, 2)}
    print(f"{len(m)} images, {m.lesion.nunique()} lesions, {m.patient.nunique()} patients (synthetic features)")
    figures = {"n_images": len(m), "n_lesions": int(m.lesion.nunique())}
    variants = {"LinearSVM (default)": None}
    if not args.no_baseline:
        variants["SVC(kernel='linear', probability=True)"] = SVC(
            kernel="linear", C=1.0, class_weight="balanced", probability=True, random_state=0
        )
    for name, est in variants.items():
        t0 = time.perf_counter()
        for b, x in feats.items():
            t = time.perf_counter()
            reconstruction_matrix(x, m, backbone=b, settings=CVSettings(n_repeats=1), estimator=est)
            figures[f"{name} / {b} [s]"] = round(time.perf_counter() - t, 2)
        figures[f"{name} / both backbones [s]"] = round(time.perf_counter() - t0, 2)
        print(f"{name}: both backbones {figures[f'{name} / both backbones [s]']:.1f} s")
    figures["peak RSS [MiB]"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"peak RSS {figures['peak RSS [MiB]']} MiB")
    if not args.no_report:
        from _report import write_report

        write_report(
            "evaluation", figures, notes="target: whole matrix, both backbones, default size, < 60 s on 2 cores"
        )


if __name__ == "__main__":
    main()
