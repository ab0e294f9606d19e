"""Which template a worker starts from, what a project-stage fork drops, and whom a failure blames.

Three stages, fastest first: the **project-stage** template (the project's modules imported too:
a fork drops the stale ones and re-runs only those, see :mod:`supervisor.child.projectstage`),
the **third-party** template (libraries only: a fork imports the whole project), and a **fresh
interpreter**. Pure functions over the project-stage template's report (:class:`ProjectGraph`),
the files' signatures now, and what earlier failures taught (:class:`Lessons`); the spawner
(:mod:`supervisor.warm.spawner`) carries the choice out and says it in the status.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from supervisor.child.importgraph import Signature, changed_modules, closure, signature

Stage = Literal["project", "third-party", "fresh"]
STAGE_NAMES: Mapping[str, str] = {"project": "the project-stage template", "third-party": "the third-party template",
                                  "fresh": "a fresh interpreter"}


@dataclass(frozen=True)
class ProjectGraph:
    """What a project-stage template holds: its project modules, what each imports of the
    project, the files they read (signature then, readers), the registries found, the failures."""

    modules: frozenset[str]
    imports: Mapping[str, frozenset[str]]
    files: Mapping[str, tuple[Signature, frozenset[str]]]
    registries: Mapping[str, str]
    failed: Mapping[str, str]
    seconds: float = 0.0
    # registry -> the modules whose re-run makes it stale; None: any module importing it; empty: always
    fillers: Mapping[str, frozenset[str] | None] = field(default_factory=dict)

    @classmethod
    def from_report(cls, info: Mapping[str, Any]) -> ProjectGraph:
        files = {}
        for path, (sig, users) in dict(info.get("files", {})).items():
            files[str(path)] = (tuple(sig) if sig is not None else None, frozenset(users))
        return cls(frozenset(info.get("modules", ())),
                   {name: frozenset(imported) for name, imported in dict(info.get("imports", {})).items()},
                   files, dict(info.get("registries", {})), dict(info.get("failed", {})),
                   float(info.get("seconds", 0.0)),
                   {name: frozenset(found) if found is not None else None
                    for name, found in dict(info.get("fillers", {})).items()})


@dataclass
class Lessons:
    """What failed project-stage forks taught: modules never to keep warm (``cold``: they and
    their importers always run fresh), and modules whose re-run needs a third-party template
    (``no_warm_rerun``: the failure blamed nothing that was kept)."""

    cold: dict[str, str] = field(default_factory=dict)
    no_warm_rerun: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    stage: Stage
    why: str
    drop: frozenset[str] = frozenset()
    stale: Mapping[str, str] = field(default_factory=dict)  # module -> the file that changed


def plan_fork(graph: ProjectGraph, lessons: Lessons,
              stat: Callable[[str], Signature] = signature) -> Choice:
    """Fork from the project-stage template, dropping what is stale, unless a lesson says a
    warm re-run of one of those modules fails."""
    stale = changed_modules(graph.files, stat)
    seeds = set(stale) | (set(lessons.cold) & graph.modules) | \
        {name for name, fillers in graph.fillers.items() if fillers == frozenset()}
    dropped = frozenset(closure(seeds, graph.imports, graph.modules))
    while True:  # a registry one of whose fillers re-runs re-runs too, and so on
        more = {name for name in graph.registries if name not in dropped and refilled(name, dropped, graph)}
        if not more:
            break
        seeds |= more
        dropped = frozenset(closure(seeds, graph.imports, graph.modules))
    blocked = sorted(set(lessons.no_warm_rerun) & dropped)
    if blocked:
        return Choice("third-party", f"{blocked[0]} must re-run without the project's modules "
                                     f"({lessons.no_warm_rerun[blocked[0]]})", dropped, stale)
    kept = len(graph.modules) - len(dropped)
    changed = ", ".join(sorted(stale)[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
    why = f"{kept} of {len(graph.modules)} project modules kept warm" + \
        (f"; {len(dropped)} re-run for {changed}" if stale else f"; {len(dropped)} re-run (kept cold)"
         if dropped else "")
    return Choice("project", why, dropped, stale)


def refilled(registry: str, dropped: Collection[str], graph: ProjectGraph) -> bool:
    """Whether a module that fills ``registry`` re-runs (unknown fillers: any of its importers)."""
    fillers = graph.fillers.get(registry)
    if fillers is None:
        fillers = frozenset(closure({registry}, graph.imports, graph.modules) - {registry})
    return not fillers or bool(fillers & set(dropped))


def boundary(dropped: Collection[str], graph: ProjectGraph) -> set[str]:
    """The kept modules the re-run ones import directly: what fresh code met of the old."""
    return {other for name in dropped for other in graph.imports.get(name, ()) if other not in dropped}


@dataclass(frozen=True)
class Blame:
    """After a project-stage fork failed and its third-party retry served: the modules to learn
    as ``cold`` (or, when nothing kept is to blame, as needing a third-party re-run)."""

    cold: Mapping[str, str]
    no_warm_rerun: Mapping[str, str]


def blame(choice: Choice, graph: ProjectGraph, culprits: Collection[str], error: str) -> Blame:
    """Whom to blame: the kept modules the failing fork named (its traceback went through them,
    or held one of their objects); else every kept module the re-run ones import (some of
    them holds what clashed); else, nothing kept being involved, the re-run modules themselves."""
    why = f"a fork that kept it warm failed: {error}" if error else "a fork that kept it warm failed to start"
    named = [name for name in culprits if name in graph.modules and name not in choice.drop]
    if named:
        return Blame({name: why for name in named}, {})
    met = boundary(choice.drop, graph)
    if met:
        return Blame({name: why for name in sorted(met)}, {})
    seeds = choice.stale or {name: "" for name in choice.drop}
    return Blame({}, {name: why for name in seeds})


def learn_blame(lessons: Lessons, found: Blame) -> list[str]:
    """Take ``found`` in; return the modules it added, for the log."""
    added = [name for name in found.cold if name not in lessons.cold]
    added += [name for name in found.no_warm_rerun if name not in lessons.no_warm_rerun]
    lessons.cold.update(found.cold)
    lessons.no_warm_rerun.update(found.no_warm_rerun)
    return added
