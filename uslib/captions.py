"""What a chapter page says about where its numbers come from: warning boxes and figure stamps.

A results page computed from the synthetic phantom, from randomly
initialised networks or from weights that are not the published ImageNet
file says so at the top (:func:`status_banner`, a MyST box the chapter
glues under its title) and on every figure (:func:`figure_caveat`, the stamp
:func:`uslib.plots.label_synthetic` draws). Pure functions of the data set's
``synthetic`` flag and the feature sets' weights records.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["run_status", "weights_note", "status_banner", "figure_caveat"]


def run_status(dataset, feature_sets: Sequence = ()) -> dict[str, Any]:
    """What a results page must warn about: synthetic data, random or non-ImageNet weights."""
    kinds = {fs.backbone: fs.weights.get("kind") for fs in feature_sets}
    return {
        "synthetic": bool(dataset.synthetic),
        "random_weights": sorted(b for b, k in kinds.items() if k == "random"),
        "custom_weights": sorted(b for b, k in kinds.items() if k not in ("random", "imagenet")),
    }


def weights_note(feature_sets: Sequence = ()) -> str:
    """A MyST note naming the published ImageNet weights a page's features come from ('' if none).

    One line per backbone whose weights are the published Keras ImageNet file
    (``kind == "imagenet"``: its MD5 equals the published one), e.g.
    "inception_v3: ImageNet weights (md5 bcbd…f63)". Accepts feature sets
    (``.backbone``, ``.weights``) or ``(backbone, weights dict)`` pairs.

    Examples
    --------
    >>> info = {"kind": "imagenet", "md5": "bcbd6486424b2319ff4ef7d526e38f63"}
    >>> print(weights_note([("inception_v3", info)]))
    :::{note}
    **inception_v3**: ImageNet weights (md5 bcbd6486424b2319ff4ef7d526e38f63), the published Keras file.
    :::
    <BLANKLINE>
    >>> weights_note([("vgg19", {"kind": "random"})])
    ''
    """
    lines = []
    for backbone, info in _weights_items(feature_sets):
        if info.get("kind") == "imagenet":
            md5 = info.get("md5") or "not recorded"
            lines.append(f"**{backbone}**: ImageNet weights (md5 {md5}), the published Keras file.")
    if not lines:
        return ""
    return ":::{note}\n" + "\n\n".join(lines) + "\n:::\n"


def _weights_items(feature_sets: Sequence) -> list[tuple[str, dict]]:
    out = []
    for fs in feature_sets:
        if isinstance(fs, tuple):
            out.append((str(fs[0]), dict(fs[1])))
        else:
            out.append((fs.backbone, dict(fs.weights)))
    return out


def status_banner(dataset, feature_sets: Sequence = ()) -> str:
    """The boxes at the top of a results page: warnings, and the ImageNet weights used.

    A MyST warning box for synthetic data, random weights or weights that are
    not the published ImageNet file (none when there is nothing to warn
    about), followed by :func:`weights_note` (which names the MD5 of each
    published ImageNet file used). So a run on the real data with the real
    weights shows no warning, only "ImageNet weights (md5 …)".

    Display it with ``IPython.display.Markdown``; the book renders Markdown
    outputs as MyST. ``feature_sets`` may be feature sets or
    ``(backbone, weights dict)`` pairs.

    Examples
    --------
    >>> from uslib.data import Dataset
    >>> "Synthetic data" in status_banner(Dataset([], synthetic=True))
    True
    >>> status_banner(Dataset([], synthetic=False))
    ''
    """
    items = _weights_items(feature_sets)
    st = run_status(dataset, [_Weights(b, w) for b, w in items])
    parts = []
    if st["synthetic"]:
        parts.append(
            "**Synthetic data.** These results come from the simulated phantom "
            "(`uslib.phantom`), not from patients. They show what the pipeline does, "
            "not how it performs on breast lesions."
        )
    if st["random_weights"]:
        names = ", ".join(st["random_weights"])
        parts.append(
            f"**Random weights.** No ImageNet weights were available for {names}: the features come "
            "from a seeded random initialisation and are *not* transfer learning."
        )
    if st["custom_weights"]:
        md5s = {b: w.get("md5") for b, w in items}
        names = ", ".join(f"{b} (md5 {md5s.get(b) or 'not recorded'})" for b in st["custom_weights"])
        parts.append(
            f"**Non-ImageNet weights.** {names} used a weights file that is not the published "
            "Keras ImageNet file (its checksum differs); see the Provenance page."
        )
    warning = ":::{warning}\n" + "\n\n".join(parts) + "\n:::\n" if parts else ""
    note = weights_note(items)
    return warning + ("\n" if warning and note else "") + note


class _Weights:
    """A (backbone, weights dict) pair in the shape :func:`run_status` reads."""

    def __init__(self, backbone: str, weights: dict):
        self.backbone, self.weights = backbone, weights


def figure_caveat(dataset, feature_sets: Sequence = ()) -> str:
    """The stamp for a figure whose content is not what the paper measured ('' when none is due).

    ``"SYNTHETIC DATA"``, ``"RANDOM WEIGHTS"``, ``"NON-IMAGENET WEIGHTS"``,
    joined by `` · `` (for :func:`uslib.plots.label_synthetic`).

    Examples
    --------
    >>> from uslib.data import Dataset
    >>> figure_caveat(Dataset([], synthetic=True), [("vgg19", {"kind": "custom"})])
    'SYNTHETIC DATA · NON-IMAGENET WEIGHTS'
    >>> figure_caveat(Dataset([], synthetic=False), [("vgg19", {"kind": "imagenet"})])
    ''
    """
    st = run_status(dataset, [_Weights(b, w) for b, w in _weights_items(feature_sets)])
    parts = (
        (["SYNTHETIC DATA"] if st["synthetic"] else [])
        + (["RANDOM WEIGHTS"] if st["random_weights"] else [])
        + (["NON-IMAGENET WEIGHTS"] if st["custom_weights"] else [])
    )
    return " · ".join(parts)
