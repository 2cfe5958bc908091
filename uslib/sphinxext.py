"""Sphinx extension of the book (``_config.yml``: ``sphinx.extra_extensions``).

What Jupyter Book v1 does not do by itself, in one place:

* **Maths offline.** The MathJax 3 files come from the pinned PyPI package
  ``django-static-mathjax`` (MathJax 3.2.2, no Django needed to read the
  files) and are copied into ``_build/html/_static/mathjax/``;
  ``mathjax_path`` in ``_config.yml`` names the script relative to
  ``_static``, so every page loads it relatively and no CDN is asked.
* **Launch links to tracked files.** Binder and Colab buttons of an executed
  chapter (``book/chapters/NN_name``, git-ignored) are pointed at the source
  notebook ``notebooks/NN_name.ipynb``; a page without a source notebook
  gets no launch button.
* **One copy of each page script.** sphinx-thebe registers its inline
  configuration script twice under Jupyter Book (a console error,
  "Identifier 'THEBE_JS_URL' has already been declared", on every page);
  identical scripts are kept once.
* **Numbers from the book itself.** The MyST substitution ``n_chapters``
  counts the chapters of the table of contents (``{{ n_chapters }}`` in a
  page), so no page types the count.
* **Author-year bibliography labels** (``bibtex_default_style:
  uslib_authoryear``), matching the author-year citations in the text. Names
  are decoded from TeX (``Wr{\\'o}blewska`` -> ``Wróblewska``) by pybtex's own
  LaTeX reader (:meth:`pybtex.richtext.Text.from_latex`, which uses the
  ``latexcodec`` package pybtex depends on), so no table of accents is kept
  here; titles keep the case they have in ``references.bib`` (pybtex's
  ``unsrt`` style would lowercase "Ultrasonic B-scanning" to "b-scanning");
  a ``doi`` field is linked to https://doi.org/ by that style.
"""

from __future__ import annotations

import functools

import re
import shutil
from pathlib import Path
from typing import Any

from .config import NOTEBOOK_DIR, REPO_ROOT

__all__ = [
    "MATHJAX_DIST",
    "MATHJAX_STATIC",
    "mathjax_source",
    "copy_mathjax",
    "toc_chapters",
    "in_words",
    "source_notebook",
    "launch_url_to_source",
    "bib_label",
    "latex_to_text",
    "register_bibliography_style",
    "setup",
]

#: The PyPI distribution that carries the MathJax files.
MATHJAX_DIST = "django-static-mathjax"
#: Folder under ``_static`` of the built book that receives them.
MATHJAX_STATIC = "mathjax"

# Parts of MathJax's es5 tree the book does not load: the other combined bundles, SVG output and the
# Node entry point (about 15 of its 24 MB). Everything tex-mml-chtml.js may load on demand stays:
# TeX extensions, CHTML fonts, the menu, the accessibility and speech components.
_MATHJAX_SKIP = re.compile(
    r"^(tex-chtml\.js|tex-chtml-full\.js|tex-chtml-full-speech\.js|tex-svg\.js|tex-svg-full\.js|tex-mml-svg\.js"
    r"|mml-chtml\.js|mml-svg\.js|node-main\.js|output/svg\.js|output/svg/.*)$"
)

#: An executed chapter's page name: ``book/chapters/NN_name``.
_CHAPTER_PAGE = re.compile(r"book/chapters/(\d\d_[A-Za-z0-9_]+)$")


def mathjax_source() -> Path:
    """The ``es5`` folder of the installed MathJax (``django-static-mathjax``).

    Raises
    ------
    FileNotFoundError
        The package is not installed, naming the pin to install.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(MATHJAX_DIST)
    except metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(
            f"{MATHJAX_DIST} is not installed: the book serves MathJax from it (pip install -e . installs the pin)"
        ) from exc
    es5 = Path(dist.locate_file("mathjax/static/mathjax/es5"))
    if not (es5 / "tex-mml-chtml.js").is_file():
        raise FileNotFoundError(f"{es5} holds no tex-mml-chtml.js: is {MATHJAX_DIST} complete?")
    return es5


def copy_mathjax(target: str | Path) -> Path:
    """Copy the MathJax files the book needs into ``target`` (created); returns ``target``.

    The Apache-2.0 licence of MathJax goes with them (``LICENSE``).
    """
    src, target = mathjax_source(), Path(target)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src).as_posix()
        if path.is_dir() or _MATHJAX_SKIP.match(rel):
            continue
        out = target / rel
        if out.exists() and out.stat().st_size == path.stat().st_size:
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
    from importlib import metadata

    licence = [f for f in metadata.distribution(MATHJAX_DIST).files or [] if f.name == "LICENSE"]
    if licence:
        shutil.copyfile(Path(licence[0].locate()), target / "LICENSE")
    return target


def toc_chapters(toc_file: str | Path) -> list[str]:
    """The executed chapters (``book/chapters/NN_name``) listed in a Jupyter Book ``_toc.yml``, in order.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "_toc.yml"
    >>> _ = p.write_text("root: book/intro\\nparts:\\n- chapters:\\n  - file: book/chapters/01_data\\n"
    ...                  "  - file: book/chapters/parameters\\n")
    >>> toc_chapters(p)
    ['book/chapters/01_data']
    """
    import yaml

    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            f = node.get("file")
            if isinstance(f, str) and _CHAPTER_PAGE.fullmatch(f.removesuffix(".ipynb")):
                found.append(f.removesuffix(".ipynb"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(Path(toc_file).read_text()))
    return found


def source_notebook(pagename: str, notebook_dir: Path = NOTEBOOK_DIR) -> str | None:
    """The tracked source notebook of an executed chapter's page, relative to the repository root.

    ``book/chapters/02_reconstruction`` -> ``notebooks/02_reconstruction.ipynb``
    when that file exists; None for any other page.
    """
    m = _CHAPTER_PAGE.fullmatch(pagename)
    if not m:
        return None
    path = Path(notebook_dir) / f"{m.group(1)}.ipynb"
    if not path.is_file():
        return None
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return None


def launch_url_to_source(url: str, built: str, source: str) -> str:
    """Replace the built page's notebook path (``built``) in a launch URL by ``source``.

    Examples
    --------
    >>> launch_url_to_source("https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/book/chapters/01_data.ipynb",
    ...                      "book/chapters/01_data.ipynb", "notebooks/01_data.ipynb")
    'https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/notebooks/01_data.ipynb'
    """
    return re.sub(re.escape(built) + r"$", source, url)


# --------------------------------------------------------------------------- #
# Sphinx hooks
# --------------------------------------------------------------------------- #


def in_words(n: int) -> str:
    """A count as prose writes it: words up to ten, digits above.

    Examples
    --------
    >>> in_words(7), in_words(12)
    ('seven', '12')
    """
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    return words[n] if 0 <= n < len(words) else str(n)


def _count_chapters(app, config) -> None:
    toc = Path(getattr(config, "external_toc_path", None) or "_toc.yml")
    toc = toc if toc.is_absolute() else Path(app.srcdir) / toc
    subs = dict(getattr(config, "myst_substitutions", None) or {})
    subs.setdefault("n_chapters", in_words(len(toc_chapters(toc)) if toc.is_file() else 0))
    config.myst_substitutions = subs


def _one_copy_of_each_script(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for js in scripts:  # an inline script is registered once with filename None and once with ""
        attributes = getattr(js, "attributes", {}) or {}
        key = (str(getattr(js, "filename", js) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"] = kept


def _launch_buttons_to_sources(app, pagename, templatename, context, doctree) -> None:
    buttons = context.get("header_buttons")
    if not isinstance(buttons, list):
        return
    groups = [b for b in buttons if isinstance(b, dict) and b.get("label") == "launch-buttons"]
    if not groups:
        return
    source = source_notebook(pagename)
    for group in groups:
        if source is None:  # nothing tracked to open: no launch button rather than a dead link
            buttons.remove(group)
            continue
        for b in group.get("buttons", []):
            if b.get("type") == "link" and b.get("url"):
                b["url"] = launch_url_to_source(b["url"], f"{pagename}.ipynb", source)


def _install_mathjax_files(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    path = str(app.config.mathjax_path)
    if "://" in path or path.startswith("/"):
        return  # a CDN or an absolute path was configured: nothing to serve
    copy_mathjax(Path(app.outdir) / "_static" / MATHJAX_STATIC)


@functools.lru_cache(maxsize=1)
def _plain_text_backend():
    """pybtex's plain-text backend, made once.

    ``Text.render_as("text")`` looks the backend up among the installed
    packages' entry points on every call (about 30 ms each here); the
    labels of a book build call it a hundred times.
    """
    from pybtex.backends.plaintext import Backend

    return Backend()


@functools.lru_cache(maxsize=4096)
def latex_to_text(value: str) -> str:
    """A BibTeX field as plain text: TeX accents decoded, grouping braces dropped.

    Examples
    --------
    >>> latex_to_text(r"Piotrzkowska-Wr{\\'o}blewska"), latex_to_text(r"Micha{\\l}"), latex_to_text("{DeLong}")
    ('Piotrzkowska-Wróblewska', 'Michał', 'DeLong')
    """
    from pybtex.richtext import Text

    return Text.from_latex(value).render(_plain_text_backend())


def bib_label(entry) -> str:
    """The author-year label of a pybtex entry: ``Byra et al., 2018``; ``Bland and Altman, 1986``.

    Examples
    --------
    >>> from pybtex.database import parse_string
    >>> bib = parse_string(r"@article{k, author={Piotrzkowska-Wr{\\'o}blewska, Hanna and Byra, Micha{\\l}},"
    ...                    r" title={T}, year={2017}}", "bibtex")
    >>> bib_label(bib.entries["k"])
    'Piotrzkowska-Wróblewska and Byra, 2017'
    """
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [latex_to_text(" ".join(p.last_names)) for p in people]
    year = entry.fields.get("year", "n.d.")
    if not names:
        who = latex_to_text(entry.fields.get("title", entry.key))[:30]
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {year}"


def register_bibliography_style() -> None:
    """Register the ``uslib_authoryear`` pybtex style (labels and formatting) with pybtex."""
    from pybtex.plugin import register_plugin
    from pybtex.style.formatting.unsrt import Style as UnsrtStyle
    from pybtex.style.labels import BaseLabelStyle

    class AuthorYearLabels(BaseLabelStyle):
        """``Byra et al., 2018``; ``Bland and Altman, 1986``; a, b, ... when two labels coincide."""

        def format_labels(self, sorted_entries):
            labels = [self._label(e) for e in sorted_entries]
            counts: dict[str, int] = {}
            for lab in labels:
                counts[lab] = counts.get(lab, 0) + 1
            seen: dict[str, int] = {}
            for lab in labels:
                if counts[lab] > 1:
                    seen[lab] = seen.get(lab, 0) + 1
                    yield f"{lab}{'abcdefghijklmnopqrstuvwxyz'[seen[lab] - 1]}"
                else:
                    yield lab

        @staticmethod
        def _label(entry) -> str:
            return bib_label(entry)

    class AuthorYearStyle(UnsrtStyle):
        """pybtex's ``unsrt`` with author-year labels, and titles in the case ``references.bib`` gives them."""

        default_label_style = "uslib_authoryear"
        default_sorting_style = "author_year_title"

        def format_title(self, e, which_field, as_sentence=True):
            from pybtex.style.template import field, sentence

            title = field(which_field)  # as written: no .capitalize(), which lowercases all but the first letter
            return sentence[title] if as_sentence else title

    register_plugin("pybtex.style.labels", "uslib_authoryear", AuthorYearLabels, force=True)
    register_plugin("pybtex.style.formatting", "uslib_authoryear", AuthorYearStyle, force=True)


def setup(app):
    """Register the hooks (see the module docstring)."""
    register_bibliography_style()
    app.connect("config-inited", _count_chapters)
    app.connect("html-page-context", _launch_buttons_to_sources, priority=600)
    app.connect("html-page-context", _one_copy_of_each_script, priority=900)
    app.connect("build-finished", _install_mathjax_files)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
