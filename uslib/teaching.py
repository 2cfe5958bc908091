"""Generated pages for readers and teachers: the key takeaways and the teacher's guide's facts.

Both are written by :func:`uslib.pages.write_generated_pages` into
``book/chapters/`` beside the other generated pages. Nothing here types a
result: the takeaways page quotes the chapters' own glued values across
documents (myst-nb 1.4's ``{glue:text}`` role with ``doc::key:format``,
resolved when the book is built, so the page always shows the run the
chapters come from), and the teacher's facts come from ``run.json`` and
from :data:`uslib.features.BACKBONES` (the ImageNet weights' file sizes).

myst-nb pastes only plain text across documents (``{glue:md}`` and
``glue:figure`` read the current notebook only), so the warning box of this
page is written here from ``run.json``, with the same wording rules as the
chapters' (synthetic data, random or non-ImageNet weights).
"""

from __future__ import annotations

import os

from . import store
from .store import read_run_record
from .tables import format_number

__all__ = ["TAKEAWAYS", "takeaways_page", "run_caveat", "teaching_fragment"]

#: One entry per chapter: (notebook stem, title, sentence with ``{glue:text}`` references to that chapter's keys).
#: Every key is glued unconditionally by its chapter, so the page builds on every profile.
TAKEAWAYS: tuple[tuple[str, str, str], ...] = (
    (
        "01_data",
        "Data",
        "The data set holds {glue:text}`01_data.ipynb::n_lesions_total:d` lesions "
        "({glue:text}`01_data.ipynb::n_malignant:d` malignant) of {glue:text}`01_data.ipynb::n_patients:d` patients; "
        "every number after it depends on that size. {glue:text}`01_data.ipynb::roi_contrast_sentence:s`",
    ),
    (
        "02_reconstruction",
        "Reconstruction",
        "The envelope of one scan spans {glue:text}`02_reconstruction.ipynb::env_span_db:.0f` dB, more than any "
        "display shows: the dynamic range decides what is left. From {glue:text}`02_reconstruction.ipynb::dr_first:g` "
        "to {glue:text}`02_reconstruction.ipynb::dr_last:g` dB the black share of the image goes from "
        "{glue:text}`02_reconstruction.ipynb::black_frac_first:.1%` to "
        "{glue:text}`02_reconstruction.ipynb::black_frac_last:.1%`, and the mean grey level inside the lesion from "
        "{glue:text}`02_reconstruction.ipynb::roi_mean_first:.0f` to {glue:text}`02_reconstruction.ipynb::roi_mean_last:.0f`: "
        "the same lesion, different images.",
    ),
    (
        "03_augmentation",
        "Augmentation",
        "Each lesion gives {glue:text}`03_augmentation.ipynb::images_per_lesion:d` images (scans × dynamic ranges × "
        "margins), {glue:text}`03_augmentation.ipynb::n_images:d` in all; a crop of the first lesion is "
        "{glue:text}`03_augmentation.ipynb::crop_size_text:s` before it is resized for the networks.",
    ),
    (
        "04_features",
        "Features",
        "{glue:text}`04_features.ipynb::feature_provenance:s` The features of one lesion move most between "
        "{glue:text}`04_features.ipynb::shift_pair:s` ({glue:text}`04_features.ipynb::shift_backbone:s`: "
        "{glue:text}`04_features.ipynb::shift_max:.2f` times the spread between lesions): the reconstruction "
        "reaches the classifier.",
    ),
    (
        "05_cross_validation",
        "Cross-validation",
        "Folds hold whole patients, {glue:text}`05_cross_validation.ipynb::fold_min:d` to "
        "{glue:text}`05_cross_validation.ipynb::fold_max:d` test lesions each, checked for leakage; the "
        "Train × Test matrices hold {glue:text}`05_cross_validation.ipynb::n_cells:d` AUCs.",
    ),
    (
        "06_results",
        "Results",
        "Of {glue:text}`06_results.ipynb::n_paired:d` paired comparisons, training on all dynamic ranges has the "
        "higher AUC in {glue:text}`06_results.ipynb::n_trainall_better:d` "
        "({glue:text}`06_results.ipynb::n_significant:d` significant after Holm's correction); its mean AUC over "
        "single-range test sets is {glue:text}`06_results.ipynb::trainall_mean:.3f` against "
        "{glue:text}`06_results.ipynb::single_mean:.3f` for single-range training. "
        "{glue:text}`06_results.ipynb::below_chance_sentence_06:s` {glue:text}`06_results.ipynb::control_sentence:s`",
    ),
    (
        "07_robustness",
        "Robustness",
        "Beyond the paper, the classifiers were tested at dynamic ranges never trained on "
        "({glue:text}`07_robustness.ipynb::unseen_outside:s` outside the training span), beside baselines that do "
        "not depend on compression. {glue:text}`07_robustness.ipynb::below_chance_sentence_07:s`",
    ),
)


def run_caveat(record: dict) -> str:
    """The warning of a page that quotes a run: which of synthetic data, random or non-ImageNet weights apply ('' if none).

    Examples
    --------
    >>> print(run_caveat({"dataset": {"synthetic": True}, "weights": {"vgg19": {"kind": "random"}}}))
    Synthetic data and random weights: the numbers on this page describe the simulated phantom and randomly initialised networks, not patients, not the paper's ImageNet features.
    >>> run_caveat({"dataset": {"synthetic": False}, "weights": {"vgg19": {"kind": "imagenet"}}})
    ''
    """
    synthetic = bool((record.get("dataset") or {}).get("synthetic"))
    kinds = {str((w or {}).get("kind")) for w in (record.get("weights") or {}).values()}
    parts, what = [], []
    if synthetic:
        parts.append("synthetic data")
        what.append("the simulated phantom")
    if "random" in kinds:
        parts.append("random weights")
        what.append("randomly initialised networks")
    if kinds - {"random", "imagenet", "None"}:
        parts.append("non-ImageNet weights")
        what.append("networks with weights other than ImageNet's")
    if not parts:
        return ""
    head = " and ".join(parts)
    nots = ", ".join(
        n
        for n, on in (("not patients", synthetic), ("not the paper's ImageNet features", len(parts) > int(synthetic)))
        if on
    )
    return f"{head[0].upper() + head[1:]}: the numbers on this page describe {' and '.join(what)}, {nots}."


def takeaways_page(run_dir: str | os.PathLike) -> str:
    """Markdown: what each chapter showed, in one sentence or two, quoting the chapters' glued values."""
    rec = read_run_record(run_dir) if store.record_path(run_dir).exists() else {}
    lines = [
        "# Key takeaways",
        "",
        "What each chapter of this run showed, with the numbers the chapters computed (quoted from them "
        "when the book was built; follow a chapter's title for the figures, tables and reasoning).",
        "",
    ]
    caveat = run_caveat(rec)
    if caveat:
        lines += ["```{warning}", caveat, "```", ""]
    for stem, title, text in TAKEAWAYS:
        lines += [f"## [{title}]({stem}.ipynb)", "", text, ""]
    lines += [
        "## What to take away",
        "",
        "The paper's claim is about a mechanism: a classifier learns the look of the images it was "
        "trained on, and the dynamic range changes that look. Chapters 02–04 show the mechanism on any "
        "data; whether it costs accuracy, and whether training on all ranges helps, is what chapters 06 "
        "and 07 measure, and on the default build's synthetic phantom and random weights their numbers "
        "test the pipeline, not the claim.",
        "",
    ]
    return "\n".join(lines)


def teaching_fragment(run_dir: str | os.PathLike) -> str:
    """Markdown included by ``book/teachers_guide.md``: this run's time per chapter and the weights' sizes."""
    from .features import BACKBONES

    rec = read_run_record(run_dir) if store.record_path(run_dir).exists() else {}
    stages = {k: v for k, v in (rec.get("stages") or {}).items() if isinstance(v, dict) and "seconds" in v}
    lines = []
    if stages:
        cpus = (rec.get("provenance") or {}).get("cpu_count")
        lines += [
            f"Time each chapter took in the run this book was built from (run `{rec.get('run_id')}`, "
            f"profile `{(rec.get('parameters') or {}).get('profile', rec.get('profile'))}`"
            + (f", {cpus} CPUs" if cpus else "")
            + "; the *Benchmarks* page has the details). A chapter "
            "that finds its results cached takes a fraction of this.",
            "",
            "| chapter | minutes |",
            "|---|---|",
        ]
        lines += [f"| {k} | {format_number(float(v['seconds']) / 60, 1)} |" for k, v in stages.items()]
        lines.append("")
    lines += [
        "The ImageNet weights each network needs (downloaded once into the Keras cache; without them "
        "the chapters use random weights and say so):",
        "",
        "| network | weights file | size |",
        "|---|---|---|",
    ]
    for name, bb in BACKBONES.items():
        size = f"{format_number(bb.weights_size_bytes / 1e6, 0)} MB" if bb.weights_size_bytes else "—"
        lines.append(f"| {name} | `{bb.weights_file}` | {size} |")
    lines.append("")
    return "\n".join(lines)
