"""bfloat16 fidelity on the default book: the change of the TrainALL/TestALL AUC, beside its CI.

For the default profile's data and settings (``params/default.yaml``: the
phantom, the weights it gets on this machine, both backbones, the same
cross-validation), the features of every image are computed in float32 and
in bfloat16 through :func:`uslib.pipeline.get_features` (``precision=``) and
the Train x Test matrix of each through :func:`uslib.pipeline.get_matrix`,
exactly as chapter 05 calls them. Per backbone it writes:

* the TrainALL/TestALL AUC in float32 and in bfloat16, each with its DeLong
  95 % CI (first repetition of the cross-validation, as chapter 05's table),
  and their mean over the repetitions;
* the difference (bfloat16 - float32) beside the width of float32's CI, and
  DeLong's paired test of the two AUCs on the same lesions (the difference's
  standard error, its 95 % interval and p);
* the smallest per-image cosine similarity of the two feature matrices (the
  book's own images, not the throughput bench's random ones).

Usage (a few minutes on 2 cores; bfloat16 needs AVX512_BF16 or AMX)::

    .venv/bin/python benchmarks/bench_bfloat16_auc.py \\
        [--run-dir runs/bench-bfloat16-auc] [--reuse-from runs/default]

``--reuse-from DIR`` copies DIR's phantom file and float32 feature caches
into this bench's own run directory first (DIR is only read): the caches are
keyed by content, so what matches is reused and nothing else. Writes
``runs/benchmarks/bfloat16_auc.json`` (its own file: ``bench_features.py``
rewrites ``features.json`` whole); the Benchmarks page reads both.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: The setting whose AUC the issue asks about.
TRAIN, TEST = "TrainALL", "TestALL"


def auc_change(table_a, table_b, pred_a, pred_b, *, train: str = TRAIN, test: str = TEST) -> dict:
    """The change of one setting's AUC from result a (float32) to result b (bfloat16).

    Parameters
    ----------
    table_a, table_b : DataFrame
        :attr:`uslib.evaluation.MatrixResult.table` of each (``train``,
        ``test``, ``auc``, ``ci_low``, ``ci_high``; ``auc_mean`` with repeats).
    pred_a, pred_b : DataFrame
        Their ``predictions`` (``repeat``, ``train``, ``test``, ``lesion``,
        ``label``, ``probability``): the first repetition's lesion
        probabilities of the setting are compared with DeLong's paired test.

    Returns
    -------
    dict
        ``float32 AUC``, ``float32 95 % CI``, ``bfloat16 AUC``, ``bfloat16 95 % CI``,
        ``bfloat16 - float32``, ``float32 CI width``, ``change within float32's CI``
        (|change| below half the width), the paired test's ``paired SE``,
        ``paired 95 % interval of the change`` and ``paired p``, and the means
        over repetitions where present.
    """
    from uslib.evaluation import delong_paired_test

    def row(t):
        r = t[(t.train == train) & (t.test == test)]
        if len(r) != 1:
            raise ValueError(f"expected one {train}/{test} row, found {len(r)}")
        return r.iloc[0]

    def probs(p):
        p = p[(p.repeat == p.repeat.min()) & (p.train == train) & (p.test == test)]
        return p.set_index("lesion").sort_index()

    ra, rb = row(table_a), row(table_b)
    pa, pb = probs(pred_a), probs(pred_b)
    if list(pa.index) != list(pb.index) or not (pa.label.values == pb.label.values).all():
        raise ValueError("the two results are not on the same lesions")
    test_ = delong_paired_test(pa.label.values, pb.probability.values, pa.probability.values)
    diff = float(rb.auc - ra.auc)
    width = float(ra.ci_high - ra.ci_low)
    out = {
        "float32 AUC": round(float(ra.auc), 4),
        "float32 95 % CI": [round(float(ra.ci_low), 4), round(float(ra.ci_high), 4)],
        "bfloat16 AUC": round(float(rb.auc), 4),
        "bfloat16 95 % CI": [round(float(rb.ci_low), 4), round(float(rb.ci_high), 4)],
        "bfloat16 - float32": round(diff, 4),
        "float32 CI width": round(width, 4),
        "change within float32's CI (|change| < half its width)": bool(abs(diff) < width / 2),
        "paired SE of the change (DeLong)": round(test_["se"], 4),
        "paired 95 % interval of the change": [
            round(diff - 1.96 * test_["se"], 4),
            round(diff + 1.96 * test_["se"], 4),
        ],
        "paired p (DeLong)": None if math.isnan(test_["p"]) else round(test_["p"], 4),
        "lesions": len(pa),
    }
    if "auc_mean" in table_a.columns and "auc_mean" in table_b.columns:
        out["float32 AUC, mean over repeats"] = round(float(ra.auc_mean), 4)
        out["bfloat16 AUC, mean over repeats"] = round(float(rb.auc_mean), 4)
        out["bfloat16 - float32, mean over repeats"] = round(float(rb.auc_mean - ra.auc_mean), 4)
    return out


def reuse_caches(src: Path, dst: Path, *, n_lesions: int, seed: int) -> list[str]:
    """Copy ``src``'s phantom folder and float32 feature folders into ``dst`` (``src`` is only read)."""
    from uslib import store

    copied = []
    if not Path(src).is_dir():
        return copied
    data_src = store.phantom_path(src, n_lesions=n_lesions, seed=seed, key_="x").parent
    data_dst = store.phantom_path(dst, n_lesions=n_lesions, seed=seed, key_="x").parent
    if data_src.is_dir():
        shutil.copytree(data_src, data_dst, dirs_exist_ok=True)
        copied.append(str(data_src))
    feat_src = src / store.features_root(dst).name
    if feat_src.is_dir():
        for d in sorted(feat_src.iterdir()):
            if d.is_dir() and not d.name.endswith("-bfloat16"):
                shutil.copytree(d, store.features_root(dst) / d.name, dirs_exist_ok=True)
                copied.append(str(d))
    return copied


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default", help="parameter profile (default: params/default.yaml)")
    ap.add_argument("--run-dir", default="runs/bench-bfloat16-auc", help="this bench's own run directory")
    ap.add_argument(
        "--reuse-from",
        default=None,
        help="a run directory of the same profile whose phantom and float32 features are copied first",
    )
    ap.add_argument("--backbones", nargs="+", default=None, help="default: the profile's")
    ap.add_argument("--no-report", action="store_true", help="do not write runs/benchmarks/bfloat16_auc.json")
    args = ap.parse_args(argv)

    from bench_features import cosine_min

    import uslib.features as F
    from uslib import pipeline
    from uslib import config
    from uslib.config import load_profile, resolve_path

    ok, why = F.bfloat16_support()
    if not ok:
        print(f"bfloat16 not measured: {why}")
        return 0
    p = load_profile(args.profile)
    run_dir = resolve_path(args.run_dir)
    backbones = args.backbones or list(p["backbones"])
    if args.reuse_from:
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
        "images per network": len(manifest),
        "lesions": len(ds),
        "data": "synthetic phantom" if ds.synthetic else "real data",
        "bfloat16 support": why,
        "setting": f"{TRAIN}/{TEST}",
    }
    for b in backbones:
        res, fsets = {}, {}
        for prec in ("float32", "bfloat16"):
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
                f"({fs.seconds:.0f} s); weights {fs.weights.get('kind')}",
                flush=True,
            )
            fsets[prec] = fs
            res[prec] = pipeline.get_matrix(
                run_dir, fs, manifest, ranges=p["dynamic_ranges_db"], settings=config.cv_settings(p)
            )
        ch = auc_change(
            res["float32"].table, res["bfloat16"].table, res["float32"].predictions, res["bfloat16"].predictions
        )
        ch["bfloat16 min cosine vs float32 (the book's images)"] = round(
            cosine_min(fsets["float32"].features, fsets["bfloat16"].features), 5
        )
        ch["weights"] = fsets["float32"].weights.get("kind")
        ch["features computed now (float32, bfloat16)"] = [fsets["float32"].n_computed, fsets["bfloat16"].n_computed]
        report[b] = {f"bfloat16 {TRAIN}/{TEST} AUC change": ch}
        print(f"{b}: " + ", ".join(f"{k} {v}" for k, v in ch.items()), flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["load average at start and end (1 min)"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    if not args.no_report:
        from _report import write_report

        write_report(
            "bfloat16_auc",
            report,
            notes=(
                "the default profile's data and settings; "
                + ("synthetic phantom; " if ds.synthetic else "")
                + "weights as this machine gets them (random initialisation where ImageNet weights are absent); "
                "AUC of TrainALL/TestALL with DeLong 95 % CI, first repetition; the change beside float32's CI"
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
