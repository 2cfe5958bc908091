"""Generated pages promise nothing they do not show (issue 22): checked on the generated markdown.

The default book has no benchmark files and no sweep: its Benchmarks page
shows this run's chapter and step timings, the cluster page's sweep and
benchmark sections say what they hold and how to produce it, and no page
of the table of contents carries placeholder wording (:data:`uslib.pages.PLACEHOLDER`).
"""

from __future__ import annotations

import re

import yaml

from uslib import pages, store
from uslib.config import REPO_ROOT


def _run(tmp_path):
    run_dir = tmp_path / "run"
    store.update_run_record(
        run_dir,
        run_id="r1",
        stages={
            "01_data": {"seconds": 12.5, "status": "finished"},
            "04_features": {"seconds": 220.77, "status": "finished"},
        },
        stage_seconds={
            "01_data": 12.5,
            "04_features": 220.77,
            "features_vgg19": 130.32,
            "load_dataset": 5.2,
            "total": 999.0,
        },
    )
    return run_dir


def test_placeholder_wording_is_recognised():
    assert pages.PLACEHOLDER.search("No sweep has been run for this run directory")
    assert pages.PLACEHOLDER.search("so this page has no measurements")
    assert not pages.PLACEHOLDER.search("Seconds each chapter of run r1 took")


def test_benchmarks_page_of_a_run_without_benchmarks_shows_its_timings(tmp_path):
    page = pages.benchmarks_page(_run(tmp_path), bench_dir=tmp_path / "no-benchmarks")
    assert not pages.PLACEHOLDER.search(page), pages.PLACEHOLDER.search(page)
    assert "## This build" in page and "| 04_features | finished | 220.8 |" in page
    assert "| features_vgg19 | 130.3 |" in page and "| load_dataset | 5.2 |" in page
    assert "| total |" not in page, "the end-to-end time belongs to an earlier invocation"


def test_cluster_fragments_without_sweep_or_benchmark_say_how_to_produce_them(tmp_path):
    sweep = pages.sweep_fragment(_run(tmp_path))
    bench = pages.cluster_estimate_fragment(tmp_path / "no-benchmarks")
    for text in (sweep, bench):
        assert not pages.PLACEHOLDER.search(text), text
    assert "python -m uslib sweep" in sweep and "summary.csv" in sweep
    assert "bench_distributed.py" in bench


def test_no_hand_written_page_of_the_toc_is_a_placeholder_or_points_the_wrong_way():
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    hand_written = [
        REPO_ROOT / f"{f}.md" for f in files if (REPO_ROOT / f"{f}.md").is_file() and not f.startswith("book/chapters/")
    ]
    assert hand_written
    for page in hand_written:
        text = page.read_text()
        assert not pages.PLACEHOLDER.search(text), f"{page.name}: {pages.PLACEHOLDER.search(text).group(0)!r}"
        assert not re.search(r"(figures?|table|benchmark) below", text, re.I) or page.name != "cluster.md", page.name
    assert "book/chapters/sweep" not in files, "the sweep's tables are on the cluster page"
