"""uslib: helper library of the ultrasound reconstruction compendium.

A companion to Byra et al. (2018), *Impact of ultrasound image reconstruction
method on breast lesion classification with neural transfer learning*
(arXiv:1804.02119). One module per stage of the pipeline:

``data`` / ``phantom``  → ``reconstruction`` → ``augmentation`` →
``features`` → ``evaluation`` (built on ``cvsettings``, ``folds``, ``classifier``,
``crossval`` and ``statistics``) → ``plots``; beyond the paper ``qus``,
``morphology``, ``featurespace`` and ``robustness``; ``chapter`` sets a chapter
up, ``captions`` says what its numbers come from; ``run`` executes the book.
"""

__version__ = "0.3.2"
