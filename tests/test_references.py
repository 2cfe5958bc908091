"""The bibliography as a reader sees it: labels decoded from TeX, titles in their own case, DOIs linked.

Formats every entry of ``book/references.bib`` with the book's pybtex style
(``uslib_authoryear``, registered by :mod:`uslib.sphinxext`), as the HTML
build does; no Sphinx build is needed.
"""

from __future__ import annotations

import re

import pytest
from pybtex.database import parse_file, parse_string
from pybtex.plugin import find_plugin

from uslib.config import REPO_ROOT
from uslib.sphinxext import bib_label, latex_to_text, register_bibliography_style

BIB = REPO_ROOT / "book" / "references.bib"
TEX = re.compile(r"[\\{}]")


@pytest.fixture(scope="module")
def formatted():
    register_bibliography_style()
    style = find_plugin("pybtex.style.formatting", "uslib_authoryear")()
    bib = parse_file(str(BIB), "bibtex")
    return {e.key: (e.label, e.text.render_as("html")) for e in style.format_bibliography(bib)}, bib


@pytest.mark.parametrize(
    "tex, text",
    [
        (r"Piotrzkowska-Wr{\'o}blewska", "Piotrzkowska-Wróblewska"),
        (r"Micha{\l}", "Michał"),
        (r"Fran{\c{c}}ois", "François"),
        (r"Schr{\"o}der", "Schröder"),
        (r"J{\o}rgen", "Jørgen"),
        ("{DeLong}", "DeLong"),
    ],
)
def test_tex_accents_are_decoded(tex, text):
    assert latex_to_text(tex) == text


def test_labels_are_author_year_and_free_of_tex(formatted):
    entries, _ = formatted
    for key, (label, _) in entries.items():
        assert not TEX.search(label), f"{key}: raw TeX in the label {label!r}"
    assert entries["piotrzkowska2017oasbud"][0].startswith("Piotrzkowska-Wróblewska et al., 2017")  # a/b: two in 2017
    assert entries["bland1986"][0] == "Bland and Altman, 1986"
    one = parse_string("@article{k, author={Szabo, Thomas}, title={T}, year={2014}}", "bibtex").entries["k"]
    assert bib_label(one) == "Szabo, 2014"


def test_titles_keep_their_case(formatted):
    entries, bib = formatted
    html = entries["bamber1980"][1]
    assert "Ultrasonic B-scanning" in html, html
    for key, (_, text) in entries.items():
        title = latex_to_text(bib.entries[key].fields["title"])
        assert title in re.sub(r"<[^>]+>", "", text).replace("&amp;", "&"), f"{key}: title changed: {text[:200]}"
        assert not TEX.search(re.sub(r"<[^>]+>", "", text)), f"{key}: raw TeX in {text[:200]}"


def test_dois_are_well_formed_and_linked(formatted):
    entries, bib = formatted
    with_doi = {k: e.fields["doi"] for k, e in bib.entries.items() if "doi" in e.fields}
    assert len(with_doi) >= 20
    for key, doi in with_doi.items():
        assert re.fullmatch(r"10\.\d{4,9}/\S+", doi), f"{key}: {doi!r} is not a DOI"
        assert f'href="https://doi.org/{doi}"' in entries[key][1], f"{key}: DOI not linked"
    assert len(set(with_doi.values())) == len(with_doi), "two entries share a DOI"
    assert with_doi["piotrzkowska2017oasbud"] == "10.1002/mp.12538"
