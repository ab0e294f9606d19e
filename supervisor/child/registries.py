"""Modules never to keep warm: those whose globals hold a registry that other modules fill.

A worker forked from the project-stage template keeps the unchanged modules and re-runs the
changed ones. A module that owns a registry breaks that: the re-run modules register again into
the kept registry, beside their old entries (a SQLAlchemy ``MetaData`` then holds the table
twice and refuses it; a list of handlers holds the old and the new one). Such a module, found
here when the template imports the project, is kept warm only while none of the modules that
fill it re-runs (its *fillers*: the modules whose classes or functions it holds, the mapped
classes' modules; unknown, every module that imports it): once one does, it re-runs too, and
with it all its importers. The rules, each on the module's own globals (not names it imported):

* a SQLAlchemy ``MetaData`` or ``registry``, or a declarative base class (its own ``registry``
  or ``metadata``);
* a class that defines ``__init_subclass__`` (subclasses announce themselves to it);
* a foreign reference: a container or object reachable from its globals holding a function or
  class of a project module that it does not import (that module put it there: a decorator
  registry, routes added to a router defined here, a pydantic model whose forward reference
  was resolved against a module that imports this one).

Standard library only (it runs in the template); objects are recognised by their type's module
and name, never by importing the library.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType
from typing import Any

from supervisor.child.importgraph import forward

# Objects looked at per module before the walk gives up on it (a big module's globals are wide).
BUDGET = 2000
DEPTH = 5
_SQLALCHEMY_REGISTRIES = frozenset({"MetaData", "registry"})


def _sqlalchemy_kind(value: object) -> str | None:
    kind = type(value)
    if kind.__module__.startswith("sqlalchemy") and kind.__name__ in _SQLALCHEMY_REGISTRIES:
        return f"a SQLAlchemy {kind.__name__}"
    return None


def _owned(value: object, name: str, imported: Collection[int]) -> bool:
    """Defined by module ``name``: a class or function of its own, or an object no module it
    imports has among its globals (``from base import metadata`` is not this module's)."""
    if isinstance(value, (type, FunctionType)):
        return getattr(value, "__module__", None) == name
    return not isinstance(value, ModuleType) and id(value) not in imported


def _children(value: object) -> list[tuple[str, object]]:
    """What the walk looks into: container items, an object's attributes, a class's own dict."""
    if isinstance(value, dict):
        return [(f"[{key!r}]", item) for key, item in list(value.items())[:200]] + \
               [(f"<key {key!r}>", key) for key in list(value)[:200] if isinstance(key, type)]
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        return [(f"[{index}]", item) for index, item in enumerate(list(value)[:200])]
    if isinstance(value, (str, bytes, int, float, complex, bool, ModuleType, FunctionType, BuiltinFunctionType,
                          MethodType)) or value is None:
        return []
    found: list[tuple[str, object]] = []
    attrs = getattr(value, "__dict__", None)
    if isinstance(attrs, Mapping):
        found += [(f".{key}", item) for key, item in list(attrs.items())[:200]
                  if not (isinstance(key, str) and key.startswith("__") and key.endswith("__"))
                  or key in ("__pydantic_fields__", "__dataclass_fields__")]
    for cls in type(value).__mro__ if not isinstance(value, type) else ():
        for slot in getattr(cls, "__slots__", ()) or ():
            if isinstance(slot, str) and not slot.startswith("__"):
                try:
                    found.append((f".{slot}", object.__getattribute__(value, slot)))
                except AttributeError:
                    continue
    return found


@dataclass(frozen=True)
class Registry:
    """Why a module holds a registry, and who fills it: the modules whose re-run makes it
    stale (None: not known, so any module that imports it, directly or not)."""

    reason: str
    fillers: frozenset[str] | None


def foreign_references(name: str, module: ModuleType, project: Collection[str], depends: Collection[str],
                       imported: Collection[int], *, every: bool = False) -> tuple[str | None, set[str]]:
    """Where module ``name``'s globals hold a function or class of a project module outside
    ``depends`` (the modules it imports, directly or not): the first path (None if nowhere) and,
    with ``every``, all such modules (else the first one's)."""
    seen: set[int] = set()
    queue: deque[tuple[str, object, int]] = deque(
        (key, value, 0) for key, value in vars(module).items()
        if not key.startswith("__") and _owned(value, name, imported))
    budget = BUDGET * (10 if every else 1)
    first: str | None = None
    origins: set[str] = set()
    while queue and budget > 0:
        path, value, depth = queue.popleft()
        if id(value) in seen:
            continue
        seen.add(id(value))
        budget -= 1
        origin = getattr(value, "__module__", None) if isinstance(value, (type, FunctionType)) else None
        if isinstance(origin, str) and origin != name and origin in project and origin not in depends:
            origins.add(origin)
            if first is None:
                first = f"{path} holds {origin}.{getattr(value, '__qualname__', '?')}, put there by a module " \
                        "that imports it"
            if not every:
                break
        if isinstance(value, type) and value.__module__ != name:
            continue  # another module's class: its attributes are that module's business
        if depth < DEPTH:
            queue.extend((path + step, child, depth + 1) for step, child in _children(value))
    return first, origins


def _mapped_modules(registry: object, project: Collection[str]) -> set[str]:
    """The modules of the classes a SQLAlchemy ``registry`` maps (its ``mappers``)."""
    found = set()
    for mapper in list(getattr(registry, "mappers", ()) or ()):
        origin = getattr(getattr(mapper, "class_", None), "__module__", None)
        if isinstance(origin, str) and origin in project:
            found.add(origin)
    return found


def registry_reason(name: str, module: ModuleType, project: Collection[str], depends: Collection[str],
                    imported_ids: Collection[int]) -> Registry | None:
    """Whether module ``name`` holds a registry (see the module's docstring), or None.
    ``depends``: the project modules it imports (directly or not); ``imported_ids``: ids of the
    globals of those modules."""
    def filled_by(extra: Collection[str] = ()) -> frozenset[str] | None:
        _, origins = foreign_references(name, module, project, depends, imported_ids, every=True)
        found = (origins | set(extra)) - {name}
        return frozenset(found) if found else None

    for key, value in vars(module).items():
        if key.startswith("__") or not _owned(value, name, imported_ids):
            continue
        kind = _sqlalchemy_kind(value)
        if kind is not None:
            return Registry(f"{key} is {kind}, which the modules that import it fill",
                            filled_by(_mapped_modules(value, project)))
        if isinstance(value, type):
            own: dict[str, Any] = dict(vars(value))
            for attr in ("registry", "metadata"):
                if attr in own and _sqlalchemy_kind(own[attr]) is not None:
                    mapped = _mapped_modules(own.get("registry"), project)
                    return Registry(f"{key} is a SQLAlchemy declarative base (its {attr} is filled by the models)",
                                    filled_by(mapped))
            if "__init_subclass__" in own:
                return Registry(f"class {key} defines __init_subclass__ (its subclasses announce themselves to it)",
                                filled_by())
    first, _ = foreign_references(name, module, project, depends, imported_ids)
    return Registry(first, filled_by()) if first is not None else None


def registries(modules: Mapping[str, ModuleType], imports: Mapping[str, Collection[str]]) -> dict[str, Registry]:
    """Every module of ``modules`` (the project's, by name) that holds a registry."""
    project = set(modules)
    found: dict[str, Registry] = {}
    for name, module in modules.items():
        depends = forward(imports, name) - {name}
        imported_ids = {id(value) for other in depends if other in modules
                        for value in vars(modules[other]).values()}
        try:
            registry = registry_reason(name, module, project, depends, imported_ids)
        except Exception as exc:  # an object that breaks on inspection: keep it cold
            registry = Registry(f"it could not be inspected ({type(exc).__name__}: {exc})", None)
        if registry is not None:
            found[name] = registry
    return found
