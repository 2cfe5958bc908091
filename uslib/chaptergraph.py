"""The graph of chapters: what each reads, what it waits for, and which to start first.

Ordering and readiness come from the standard library's
:class:`graphlib.TopologicalSorter`: :func:`chapter_needs` closes the graph
over unselected chapters, :func:`lane_priority` weighs each chapter by the
longest chain waiting on it, and :func:`uslib.run.run_profile` asks a sorter
which chapters are ready as others finish. A cycle in :data:`CHAPTER_NEEDS`
raises :class:`graphlib.CycleError`.
"""

from __future__ import annotations

from graphlib import TopologicalSorter
from typing import Iterable, Mapping, Sequence

__all__ = ["CHAPTER_NEEDS", "TYPICAL_SECONDS", "chapter_needs", "lane_priority", "chapter_sorter"]

#: The chapters whose artefacts each chapter reads, and so waits for when chapters run side by side.
#: A chapter that is not listed waits for every chapter before it. The edges are about work, not
#: correctness: a chapter started early would compute the same keyed artefacts itself, twice.
CHAPTER_NEEDS: dict[str, tuple[str, ...]] = {
    "01_data": (),  # writes the data set (the phantom)
    "02_reconstruction": ("01_data",),
    "03_augmentation": ("01_data",),
    "04_features": (),  # writes both networks' features; the data set is
    # simulated under a lock, so 04 starts beside 01
    "05_cross_validation": ("04_features",),  # writes the Train x Test results
    "06_results": ("05_cross_validation",),
    "07_robustness": ("04_features",),  # reads 04's features for the main set's images
}


#: Seconds of each chapter in a cold run of the default profile on 2 cores (measured 2026-11-26), used to
#: order the chapters when the run directory has no previous run: only their order matters.
TYPICAL_SECONDS: dict[str, float] = {
    "01_data": 17,
    "02_reconstruction": 15,
    "03_augmentation": 5,
    "04_features": 210,
    "05_cross_validation": 20,
    "06_results": 9,
    "07_robustness": 200,
}


def chapter_needs(
    stems: Sequence[str], selected: Iterable[str] | None = None, needs: Mapping[str, Sequence[str]] = CHAPTER_NEEDS
) -> dict[str, tuple[str, ...]]:
    """For each selected chapter, the selected chapters it must wait for.

    ``stems`` are all chapters in file order; a chapter missing from
    ``needs`` waits for every chapter before it. Waiting is transitive, so a
    chapter also waits for what an unselected chapter in between waited for.
    Names in ``needs`` that are not chapters are ignored.

    Examples
    --------
    >>> chapter_needs(["01_a", "02_b", "03_c"], needs={"01_a": (), "02_b": ("01_a",), "03_c": ("01_a",)})
    {'01_a': (), '02_b': ('01_a',), '03_c': ('01_a',)}
    >>> chapter_needs(["01_a", "02_b", "03_c"], selected=["01_a", "03_c"], needs={"01_a": (), "03_c": ("02_b",)})
    {'01_a': (), '03_c': ('01_a',)}
    """
    stems = list(stems)
    known = set(stems)
    direct = {s: [n for n in (needs[s] if s in needs else stems[:i]) if n in known] for i, s in enumerate(stems)}
    closure: dict[str, set[str]] = {}
    for s in TopologicalSorter(direct).static_order():  # what a chapter needs comes first
        closure[s] = set().union(*({n} | closure[n] for n in direct[s]))
    chosen = stems if selected is None else [s for s in stems if s in set(selected)]
    return {s: tuple(n for n in chosen if n in closure[s]) for s in chosen}


def lane_priority(needs: Mapping[str, Sequence[str]], seconds: Mapping[str, float] | None = None) -> dict[str, float]:
    """Seconds from each chapter's start to the end of the longest chain of chapters waiting on it.

    ``seconds``: each chapter's time in the previous run (1 s when unknown).
    Of the chapters ready to start, the runner starts the one with the
    largest value first, so the long chain (features, then robustness) is
    never left waiting behind short chapters.

    Examples
    --------
    >>> lane_priority({"a": (), "b": ("a",), "c": ("a",)}, {"a": 1, "b": 10, "c": 2})
    {'a': 11.0, 'b': 10.0, 'c': 2.0}
    """
    seconds = seconds or {}
    after: dict[str, list[str]] = {s: [] for s in needs}
    for s, ns in needs.items():
        for n in ns:
            after.setdefault(n, []).append(s)
    out: dict[str, float] = {}
    for s in reversed(list(TopologicalSorter(needs).static_order())):  # dependants first
        if s in needs:
            own = float(seconds.get(s) or 1.0)
            out[s] = own + max((out[d] for d in after[s] if d in out), default=0.0)
    return {s: out[s] for s in needs}


def chapter_sorter(stems: Sequence[str], needs: Mapping[str, Sequence[str]]) -> TopologicalSorter:
    """A prepared :class:`graphlib.TopologicalSorter` of ``stems``, each after what it needs among them.

    ``get_ready()`` gives the chapters that may start, ``done(stem)`` marks
    one finished (its dependants become ready).

    Examples
    --------
    >>> ts = chapter_sorter(["a", "b"], {"a": (), "b": ("a",)})
    >>> ts.get_ready(), ts.done("a"), ts.get_ready()
    (('a',), None, ('b',))
    """
    known = set(stems)
    ts = TopologicalSorter({s: [n for n in needs.get(s, ()) if n in known] for s in stems})
    ts.prepare()
    return ts
