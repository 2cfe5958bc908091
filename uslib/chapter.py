"""A chapter's set-up in one call: its checked parameters and, on first use, its data, images and features.

Every chapter starts the same way: check the parameters of its
``parameters`` cell against the profile schema, set the figure and table
defaults, load the data set, list its images and read their CNN features.
:func:`setup` does the first two at once and returns a :class:`Chapter`
whose attributes do the rest on first use (and keep it), each through the
get-or-compute steps of :mod:`uslib.pipeline` with the chapter's parameters,
so a chapter's own code is the lesson::

    from uslib import chapter
    ch = chapter.setup(globals(), "05_cross_validation")
    ...
    results = {b: pipeline.get_matrix(ch.run_dir, fs, ch.manifest, settings=ch.cv, ...)
               for b, fs in ch.features.items()}

A parameter the chapter does not declare takes the schema's default
(:class:`uslib.config.Profile`), as it does when the runner passes the
chapter only what it declares.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from . import config
from .cvsettings import CVSettings

__all__ = ["Chapter", "setup", "FIGURE_DEFAULTS", "TABLE_PRECISION"]

#: Matplotlib settings of every chapter's figures.
FIGURE_DEFAULTS = {"figure.dpi": 110, "savefig.dpi": 110, "figure.max_open_warning": 0}
#: Decimals pandas shows in a chapter's tables.
TABLE_PRECISION = 3


class Chapter:
    """A chapter's parameters and, computed on first use, what it reads.

    Parameters
    ----------
    name : str
        The notebook's name without suffix, e.g. ``"05_cross_validation"``.
    params : mapping
        The chapter's checked parameters (:func:`uslib.config.chapter_parameters`).

    Examples
    --------
    >>> ch = Chapter("no_such_chapter", {"run_dir": "runs/x", "svm_c": 10})
    >>> ch.cv.svm_c, ch.param("n_splits"), ch.run_dir.name
    (10.0, 5, 'x')
    """

    def __init__(self, name: str, params: Mapping[str, Any]):
        self.name = str(name)
        self.params = dict(params)

    def __repr__(self) -> str:
        return f"Chapter({self.name!r}, run_dir={str(self.run_dir)!r})"

    def param(self, name: str) -> Any:
        """The chapter's value of ``name``, or the schema's default when it does not declare it."""
        if name in self.params:
            return self.params[name]
        return config.Profile.model_fields[name].default

    @cached_property
    def run_dir(self) -> Path:
        """The run directory, resolved against the repository root."""
        return config.resolve_path(self.param("run_dir"))

    @cached_property
    def cv(self) -> CVSettings:
        """The cross-validation and classifier settings (:func:`uslib.config.cv_settings`)."""
        return config.cv_settings(self.params)

    @cached_property
    def dataset(self):
        """The data set (:func:`uslib.pipeline.get_dataset`)."""
        from . import pipeline

        p = self.param
        return pipeline.get_dataset(
            self.run_dir,
            data_source=p("data_source"),
            oasbud_path=p("oasbud_path"),
            n_lesions=p("n_lesions"),
            data_seed=p("data_seed"),
            skip_samples=p("skip_samples"),
            patients_csv=p("patients_csv"),
            cache_dir=p("cache_dir"),
        )

    @cached_property
    def manifest(self):
        """The image set of the paper's protocol (:func:`uslib.pipeline.get_manifest`)."""
        from . import pipeline

        return pipeline.get_manifest(
            self.dataset, dynamic_ranges_db=self.param("dynamic_ranges_db"), margins_mm=self.param("margins_mm")
        )

    def features_for(self, manifest, backbones=None) -> dict:
        """Backbone -> features of any ``manifest`` (default: the profile's backbones), like :attr:`features`.

        For images beyond the chapter's own set, such as the data-set-wide
        ``A_max`` images of the sensitivity table (:func:`uslib.pipeline.amax_manifest`).
        """
        return self._features(manifest, backbones)

    def _features(self, manifest, backbones=None) -> dict:
        from . import pipeline

        p = self.param
        return {
            b: pipeline.get_features(
                self.run_dir,
                self.dataset,
                manifest,
                b,
                weights=p("weights"),
                weights_path=p("weights_path"),
                strict_weights=p("strict_weights"),
                weights_seed=p("weights_seed"),
                batch_size=p("batch_size"),
                precision=p("precision"),
                progress=False,
                allow_download=False,
                cache_dir=p("cache_dir"),
                scheduler=self.params.get("scheduler"),
            )
            for b in (p("backbones") if backbones is None else backbones)
        }

    @cached_property
    def features(self) -> dict:
        """Backbone -> features of :attr:`manifest` (:func:`uslib.pipeline.get_features`; no download)."""
        return self._features(self.manifest)

    @cached_property
    def robustness_manifest(self) -> tuple:
        """``(manifest, continuous_mask)`` of the robustness chapter (:func:`uslib.pipeline.get_robustness_manifest`)."""
        from . import pipeline

        p = self.param
        return pipeline.get_robustness_manifest(
            self.dataset,
            train_ranges_db=p("dynamic_ranges_db"),
            unseen_ranges_db=p("unseen_ranges_db"),
            margins_mm=p("robustness_margins_mm"),
            continuous_range_db=p("continuous_range_db"),
            seed=p("cv_seed"),
        )

    @cached_property
    def robustness_features(self) -> dict:
        """Backbone -> features of the robustness chapter's images (on the profile's ``scheduler``)."""
        return self._features(self.robustness_manifest[0])


def setup(namespace: Mapping[str, Any], chapter: str) -> Chapter:
    """Check a chapter's parameters, set the figure and table defaults, return its :class:`Chapter`.

    Call it in the cell right after the ``parameters`` cell with the
    notebook's ``globals()``: a wrong parameter stops the chapter there,
    named (:func:`uslib.config.chapter_parameters`). Nothing is loaded yet;
    the data set, images and features come on first use of the attributes.

    Raises
    ------
    uslib.config.ProfileError
        A parameter that fails the schema.
    """
    params = config.chapter_parameters(namespace, chapter)
    import matplotlib.pyplot as plt
    import pandas as pd

    plt.rcParams.update(FIGURE_DEFAULTS)
    pd.set_option("display.precision", TABLE_PRECISION)
    return Chapter(chapter, params)
