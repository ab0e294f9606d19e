"""What a worker template preloads: learned from what running workers import, never written by hand.

A worker reports its ``sys.modules`` (name and file) on its report pipe, once it serves and again
when it starts to drain (by then it has answered requests, and lazily imported modules such as a
database driver have shown up). :func:`learn` splits that report into the modules whose files lie
inside the project (the watched paths, the project and app directories: never preloaded, or an
edit could be served stale) and the rest, in import order: the standard library and third-party
packages the template imports once so that each fork need not. Pure functions, and the
:class:`Learner` that keeps what they found; no I/O (the report's encoding is
:mod:`supervisor.child.report`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Modules that are not the app's imports: the interpreter's entry points.
_NEVER = frozenset({"__main__", "__mp_main__"})


@dataclass(frozen=True)
class Learned:
    """A worker's modules, split: ``outside`` the project (in import order) and the ``project``'s own."""

    outside: tuple[str, ...]
    project: frozenset[str]


def within(path: str, roots: Iterable[str]) -> bool:
    """True when ``path`` is one of ``roots`` or lies below one (paths already absolute and normalised)."""
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def learn(modules: Mapping[str, str | None], roots: Iterable[Path]) -> Learned:
    """Split a worker's module report (name -> file, None for built-in and frozen modules).

    A module is the project's when its file lies under one of ``roots``, or when its package is
    the project's (a submodule has no file of its own only in odd cases, but must not escape).
    """
    root_texts = [os.path.normpath(str(root)) for root in roots]
    outside: list[str] = []
    project: set[str] = set()
    for name, file in modules.items():
        if name in _NEVER:
            continue
        parent = name.rpartition(".")[0]
        if (file is not None and within(os.path.normpath(file), root_texts)) or (parent and parent in project):
            project.add(name)
        else:
            outside.append(name)
    return Learned(tuple(outside), frozenset(project))


def excluded(name: str, unsafe: Collection[str]) -> bool:
    """True for an unsafe module and for its submodules (importing those imports it)."""
    return any(name == bad or name.startswith(bad + ".") for bad in unsafe)


def preload_list(order: Sequence[str], unsafe: Collection[str]) -> list[str]:
    """The modules a template imports, in the order the workers imported them."""
    return [name for name in order if not excluded(name, unsafe)]


def missing(learned: Learned, loaded: Collection[str], failed: Collection[str],
            unsafe: Collection[str]) -> list[str]:
    """Modules a worker imported from outside the project that the template has not loaded,
    leaving out those it could not import and those kept out as unsafe: a non-empty answer means
    the template is worth rebuilding."""
    return [name for name in learned.outside
            if name not in loaded and name not in failed and not excluded(name, unsafe)]


class Learner:
    """What the workers' reports taught so far: every module from outside the project, in the
    order the workers first imported it, the project's own modules, and those kept out as unsafe.

    ``entry()``: modules every worker runs that a report may not name (the worker module, which a
    spawned worker runs as ``__main__``); asked once, at the first report.
    """

    def __init__(self, entry: Callable[[], Mapping[str, str | None]]) -> None:
        self._entry_of = entry
        self._entry: Mapping[str, str | None] | None = None
        self.order: list[str] = []
        self._seen: set[str] = set()
        self.project: set[str] = set()
        self.unsafe: dict[str, str] = {}  # module -> why it stays out of the template

    def take(self, modules: Mapping[str, str | None], roots: Iterable[Path]) -> tuple[Learned, list[str]]:
        """One worker's report, split; and the modules from outside the project new to the list."""
        if self._entry is None:
            self._entry = self._entry_of()
        learned = learn({**self._entry, **modules}, roots)
        self.project |= learned.project
        fresh = [name for name in learned.outside if name not in self._seen]
        self._seen.update(fresh)
        self.order.extend(fresh)
        return learned, fresh

    def preload(self) -> list[str]:
        """What the next template imports."""
        return preload_list(self.order, self.unsafe)

    def missing(self, learned: Learned, loaded: Collection[str], failed: Collection[str]) -> list[str]:
        """:func:`missing`, leaving out what is kept out as unsafe."""
        return missing(learned, loaded, failed, self.unsafe)
