"""The paper's published numbers, transcribed from Byra et al. (2018).

Only the results pages use these, always labelled as the paper's, beside the
compendium's own computation. Source: arXiv:1804.02119, Tables I–III (AUC of
linear SVMs on InceptionV3 / VGG19 features, 251 lesions of the extended
OASBUD set, patient-level 5-fold cross-validation).
"""

from __future__ import annotations

__all__ = ["TABLE_I", "TABLE_II", "TABLE_III", "N_LESIONS", "N_MALIGNANT", "N_LESIONS_PUBLIC", "matrix_table", "table3"]

#: Lesions in the paper's (extended, non-public) data set.
N_LESIONS = 251
N_MALIGNANT = 94
#: Lesions in the public OASBUD release (Zenodo record 545928): 52 malignant, 48 benign.
N_LESIONS_PUBLIC = 100

_TESTS = ("Test40dB", "Test50dB", "Test60dB")

#: Table I: InceptionV3, AUC by training set (rows) and test set (columns).
TABLE_I = {
    "Train40dB": (0.843, 0.772, 0.729),
    "Train50dB": (0.731, 0.813, 0.811),
    "Train60dB": (0.711, 0.759, 0.801),
    "TrainALL": (0.854, 0.826, 0.828),
}

#: Table II: VGG19, AUC by training set (rows) and test set (columns).
TABLE_II = {
    "Train40dB": (0.844, 0.762, 0.752),
    "Train50dB": (0.636, 0.757, 0.756),
    "Train60dB": (0.701, 0.726, 0.791),
    "TrainALL": (0.824, 0.773, 0.799),
}

#: Table III: TrainALL evaluated on TestALL.
TABLE_III = {
    "inception_v3": {"auc": 0.857, "accuracy": 0.781, "sensitivity": 0.777, "specificity": 0.783},
    "vgg19": {"auc": 0.822, "accuracy": 0.828, "sensitivity": 0.702, "specificity": 0.781},
}


def matrix_table(backbone: str):
    """The paper's AUC matrix of a backbone as a tidy DataFrame (backbone, train, test, auc).

    Examples
    --------
    >>> t = matrix_table("vgg19")
    >>> float(t.query("train == 'TrainALL' and test == 'Test40dB'").auc.iloc[0])
    0.824
    """
    import pandas as pd

    table = {"inception_v3": TABLE_I, "vgg19": TABLE_II}[backbone]
    rows = [
        {"backbone": backbone, "train": tr, "test": te, "auc": auc}
        for tr, aucs in table.items()
        for te, auc in zip(_TESTS, aucs)
    ]
    return pd.DataFrame(rows)


def table3():
    """The paper's Table III as a DataFrame indexed by backbone."""
    import pandas as pd

    return pd.DataFrame(TABLE_III).T.rename_axis("backbone")
