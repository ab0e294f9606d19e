"""Who imported whom among the project's modules, and what an edit makes stale: the import graph.

The project-stage template (:mod:`supervisor.child.projectstage`) imports the project's own
modules under a :class:`Recorder`, which notes every import a module makes: ``builtins.__import__``
(the ``import`` statement; ``globals["__name__"]`` of the caller is the importer, relative names
resolved with :func:`importlib.util.resolve_name`, and ``from pkg import sub`` is an edge to
``pkg.sub``) and :func:`importlib.import_module` (the caller's frame). Whatever module body is
executing on the stack imports it too: a helper called at module level imports on its behalf.

When files change, a worker forked from that template drops from ``sys.modules`` the modules of
those files and every module that imports them, directly or not (:func:`closure`), then imports
the app: the unchanged modules are reused, the changed ones and their importers run fresh.
A dropped package takes its submodules with it: the import system binds a submodule to its
package only when it loads it, so a fresh package would lack its kept submodules as attributes.

Pure functions and the recorder, standard library only; it runs in the template and the workers.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import os
import sys
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import FrameType, ModuleType
from typing import Any

Signature = tuple[int, int, int] | None  # (mtime_ns, size, inode) of a file; None: it does not exist


def signature(path: str) -> Signature:
    """What identifies a file's version: its modification time, size and inode (an editor that
    saves by rename changes the inode even within one clock tick)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def resolve(name: str, level: int, globals_: Mapping[str, Any] | None) -> str | None:
    """The absolute name an ``import`` statement asked for; None if it cannot be resolved."""
    if level == 0:
        return name
    package = (globals_ or {}).get("__package__") or (globals_ or {}).get("__name__")
    if not isinstance(package, str):
        return None
    try:
        return importlib.util.resolve_name("." * level + name, package)
    except (ImportError, ValueError):
        return None


def targets(name: str, fromlist: Iterable[str] | None, loaded: Mapping[str, object]) -> list[str]:
    """What importing ``name`` (absolute) with ``fromlist`` binds the importer to: the module, its
    parent packages (``import a.b`` binds ``a``), and each ``from name import sub`` submodule."""
    parts = name.split(".")
    found = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for item in fromlist or ():
        if item == "*":
            found += [other for other in loaded if other.startswith(name + ".") and "." not in other[len(name) + 1:]]
        elif f"{name}.{item}" in loaded:
            found.append(f"{name}.{item}")
    return found


class Recorder:
    """Records imports while active: ``edges[importer]`` is the set of modules it imported, and
    ``missing[importer]`` the names it tried to import and could not (``try: import x``)."""

    def __init__(self) -> None:
        self.edges: dict[str, set[str]] = {}
        self.missing: dict[str, set[str]] = {}

    def _note(self, importers: Iterable[str], found: Iterable[str]) -> None:
        found = list(found)
        for importer in importers:
            self.edges.setdefault(importer, set()).update(other for other in found if other != importer)

    def _importers(self, direct: str | None, frame: FrameType | None) -> set[str]:
        """The direct caller's module, and each module body executing on the stack."""
        names = {direct} if direct else set()
        while frame is not None:
            if frame.f_code.co_name == "<module>":
                name = frame.f_globals.get("__name__")
                if isinstance(name, str):
                    names.add(name)
            frame = frame.f_back
        return names

    @contextmanager
    def active(self) -> Iterator[Recorder]:
        """Wrap ``builtins.__import__`` and ``importlib.import_module`` until the block ends."""
        original_import = builtins.__import__
        original_import_module = importlib.import_module

        def recording_import(name: str, globals: Mapping[str, Any] | None = None,  # its signature
                             locals: Mapping[str, Any] | None = None, fromlist: Sequence[str] | None = (),
                             level: int = 0) -> ModuleType:
            importer = (globals or {}).get("__name__")
            absolute = resolve(name, level, globals)
            try:
                module = original_import(name, globals, locals, fromlist, level)
            except ImportError:
                if absolute is not None and isinstance(importer, str):
                    self.missing.setdefault(importer, set()).add(absolute)
                raise
            if absolute is not None:
                who = self._importers(importer if isinstance(importer, str) else None, sys._getframe(1))
                self._note(who, targets(absolute, fromlist, sys.modules))
            return module

        def recording_import_module(name: str, package: str | None = None) -> ModuleType:
            caller = sys._getframe(1)
            direct = caller.f_globals.get("__name__")
            try:
                module = original_import_module(name, package)
            except ImportError:
                if isinstance(direct, str) and not name.startswith("."):
                    self.missing.setdefault(direct, set()).add(name)
                raise
            absolute = module.__name__
            self._note(self._importers(direct if isinstance(direct, str) else None, caller),
                       targets(absolute, (), sys.modules))
            return module

        builtins.__import__ = recording_import
        importlib.import_module = recording_import_module
        try:
            yield self
        finally:
            builtins.__import__ = original_import
            importlib.import_module = original_import_module

    def graph(self, project: Collection[str]) -> dict[str, set[str]]:
        """The edges between ``project`` modules only (what each imports of the project)."""
        return {importer: {name for name in imported if name in project}
                for importer, imported in self.edges.items() if importer in project}


def reverse(imports: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    """``importers[m]``: the modules that import ``m``, from ``imports[m]``: what ``m`` imports."""
    importers: dict[str, set[str]] = {}
    for importer, imported in imports.items():
        for name in imported:
            importers.setdefault(name, set()).add(importer)
    return importers


def forward(imports: Mapping[str, Iterable[str]], start: str) -> set[str]:
    """``start`` and every module it imports, directly or not."""
    seen = {start}
    queue = deque([start])
    while queue:
        for other in imports.get(queue.popleft(), ()):
            if other not in seen:
                seen.add(other)
                queue.append(other)
    return seen


def closure(seeds: Iterable[str], imports: Mapping[str, Iterable[str]], modules: Collection[str]) -> set[str]:
    """The modules to drop when ``seeds`` changed: the seeds, every module that imports one of
    them directly or not (a circular pair goes together), and every submodule of a dropped
    package; only names in ``modules`` (what the template holds) are returned."""
    importers = reverse(imports)
    children: dict[str, list[str]] = {}
    for name in modules:
        parent = name.rpartition(".")[0]
        if parent:
            children.setdefault(parent, []).append(name)
    dropped: set[str] = set()
    queue = deque(seeds)
    while queue:
        name = queue.popleft()
        if name in dropped:
            continue
        dropped.add(name)
        queue.extend(importers.get(name, ()))
        queue.extend(children.get(name, ()))
    return dropped & set(modules)


def drop(names: Iterable[str], modules: dict[str, ModuleType] | None = None) -> list[str]:
    """Remove ``names`` from ``sys.modules`` (or ``modules``), and each from its kept parent
    package's attributes (else ``from pkg import sub`` would hand out the old one). Returns
    the names that were there."""
    table: dict[str, Any] = sys.modules if modules is None else modules
    gone = []
    for name in sorted(names, key=lambda n: n.count("."), reverse=True):
        module = table.pop(name, None)
        if module is None:
            continue
        gone.append(name)
        parent_name, _, child = name.rpartition(".")
        parent = table.get(parent_name) if parent_name else None
        if parent is not None and getattr(parent, child, None) is module:
            try:
                delattr(parent, child)
            except (AttributeError, TypeError):
                pass
    importlib.invalidate_caches()
    return gone


def changed_modules(files: Mapping[str, tuple[Signature | list[int] | None, Collection[str]]],
                    stat: Callable[[str], Signature] = signature) -> dict[str, str]:
    """Which modules are stale: ``files`` maps each file (a module's source, a data file read at
    import, a directory listed) to its signature when the template read it and the modules that
    read it. Returns module -> the file that changed (deleted, edited or added to)."""
    stale: dict[str, str] = {}
    for path, (recorded, users) in files.items():
        now = stat(path)
        before = tuple(recorded) if recorded is not None else None
        if now != before:
            for name in users:
                stale.setdefault(name, path)
    return stale
