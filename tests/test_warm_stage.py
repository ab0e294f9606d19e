"""The project stage's pure parts, with scripted inputs: the reverse-dependency closure, the import
recorder, the registry rules, the choice of stage, whom a failure blames, and the slot's retry."""

from __future__ import annotations

import importlib
import sys
import types
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from supervisor.child.importgraph import Recorder, changed_modules, closure, drop, targets
from supervisor.child.registries import registries, registry_reason
from supervisor.config.toml import RestartSection
from supervisor.slots import lifecycle as L
from supervisor.warm.stage import Choice, Lessons, ProjectGraph, blame, learn_blame, plan_fork

# app -> (routes.a -> util, models.user -> models.base), routes.b; the packages' __init__ import nothing
IMPORTS = {
    "app": {"routes", "routes.a", "routes.b"},
    "routes.a": {"routes", "util", "models", "models.user"},
    "models.user": {"models", "models.base"},
    "routes.b": {"routes"},
}
MODULES = frozenset({"app", "routes", "routes.a", "routes.b", "util", "models", "models.base", "models.user"})


def test_a_leaf_drops_itself_and_every_module_importing_it_transitively() -> None:
    assert closure({"routes.b"}, IMPORTS, MODULES) == {"routes.b", "app"}


def test_a_middle_or_shared_module_drops_all_its_importers_and_keeps_the_rest() -> None:
    assert closure({"models.base"}, IMPORTS, MODULES) == {"models.base", "models.user", "routes.a", "app"}
    assert closure({"util"}, IMPORTS, MODULES) == {"util", "routes.a", "app"}
    assert closure({"app"}, IMPORTS, MODULES) == {"app"}  # the root: nothing imports it


def test_a_dropped_package_takes_its_submodules_and_their_importers() -> None:
    # A fresh package would lack its kept submodules as attributes (``import routes.b; routes.b.x``).
    dropped = closure({"models"}, IMPORTS, MODULES)
    assert {"models", "models.base", "models.user", "routes.a", "app"} == dropped
    assert "util" not in dropped and "routes.b" not in dropped


def test_a_circular_pair_goes_together_and_the_walk_ends() -> None:
    imports = {"x": {"y"}, "y": {"x"}, "top": {"x"}}
    assert closure({"y"}, imports, {"x", "y", "top", "other"}) == {"x", "y", "top"}


def test_a_deleted_module_is_dropped_with_its_importers_and_an_unknown_name_drops_nothing_else() -> None:
    assert closure({"routes.b"}, IMPORTS, MODULES - {"routes.b"}) == {"app"}
    assert closure({"brand.new"}, IMPORTS, MODULES) == set()


def test_what_an_import_statement_binds_the_importer_to() -> None:
    loaded = {"pkg": 1, "pkg.sub": 1, "pkg.sub.deep": 1, "pkg.other": 1}
    assert targets("pkg.sub", None, loaded) == ["pkg", "pkg.sub"]
    assert targets("pkg", ["sub", "name"], loaded) == ["pkg", "pkg.sub"]
    assert sorted(targets("pkg", ["*"], loaded)) == ["pkg", "pkg.other", "pkg.sub"]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_recorder_notes_statements_relative_imports_from_imports_and_import_module(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {
        "rg_pkg/__init__.py": "",
        "rg_pkg/leaf.py": "X = 1\n",
        "rg_pkg/mid.py": "from . import leaf\n",
        "rg_pkg/top.py": "import importlib\nfrom rg_pkg.mid import leaf as _l\n"
                         "dyn = importlib.import_module('rg_pkg.dyn')\n"
                         "try:\n    import rg_missing\nexcept ImportError:\n    pass\n",
        "rg_pkg/dyn.py": "",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    recorder = Recorder()
    try:
        with recorder.active():
            importlib.import_module("rg_pkg.top")
        graph = recorder.graph({name for name in sys.modules if name.startswith("rg_pkg")})
    finally:
        for name in [name for name in sys.modules if name.startswith("rg_pkg")]:
            del sys.modules[name]
    assert "rg_pkg.leaf" in graph["rg_pkg.mid"]
    assert {"rg_pkg.mid", "rg_pkg.dyn"} <= graph["rg_pkg.top"]
    assert "rg_missing" in recorder.missing["rg_pkg.top"]
    assert closure({"rg_pkg.leaf"}, graph, set(graph) | {"rg_pkg.leaf"}) >= {"rg_pkg.mid", "rg_pkg.top"}


def test_drop_unbinds_a_submodule_from_its_kept_package() -> None:
    package, child = types.ModuleType("p"), types.ModuleType("p.c")
    package.c = child  # type: ignore[attr-defined]
    table: dict[str, Any] = {"p": package, "p.c": child}
    assert drop({"p.c", "absent"}, table) == ["p.c"]
    assert table == {"p": package} and not hasattr(package, "c")


def test_a_file_whose_signature_changed_or_vanished_makes_its_readers_stale() -> None:
    now = {"/p/a.py": (2, 10, 1), "/p/b.py": (1, 10, 1), "/p/data.yaml": (5, 1, 1)}
    files: dict[str, Any] = {"/p/a.py": ([1, 10, 1], ["a"]), "/p/b.py": ([1, 10, 1], ["b"]),
                             "/p/gone.py": ([1, 1, 1], ["gone"]), "/p/data.yaml": ([5, 1, 1], ["conf"]),
                             "/p/busy.py": ([-1, -1, -1], ["busy"])}
    assert changed_modules(files, lambda path: now.get(path)) == {"a": "/p/a.py", "gone": "/p/gone.py",
                                                                 "busy": "/p/busy.py"}


# ----- registries ------------------------------------------------------------------------------------

def module(name: str, **values: object) -> types.ModuleType:
    mod = types.ModuleType(name)
    for key, value in values.items():
        if isinstance(value, (type, types.FunctionType)):
            value.__module__ = name
        setattr(mod, key, value)
    return mod


def fake_sqlalchemy(kind: str) -> object:
    cls = type(kind, (), {})
    cls.__module__ = "sqlalchemy.sql.schema"
    return cls()


def test_a_sqlalchemy_metadata_or_declarative_base_is_a_registry_but_importing_one_is_not() -> None:
    base = module("models.base", metadata=fake_sqlalchemy("MetaData"))
    found = registry_reason("models.base", base, {"models.base"}, set(), set())
    assert found is not None and "MetaData" in found.reason and found.fillers is None  # who fills it: unknown
    declarative = module("db", Base=type("Base", (), {"registry": fake_sqlalchemy("registry")}))
    mapped = type("User", (), {})
    mapped.__module__ = "models.user"
    declarative.Base.registry.mappers = [types.SimpleNamespace(class_=mapped)]
    found = registry_reason("db", declarative, {"db", "models.user"}, set(), set())
    assert found is not None and "declarative base" in found.reason and found.fillers == {"models.user"}
    user = module("models.user", metadata=base.metadata)
    assert registry_reason("models.user", user, {"models.base", "models.user"}, {"models.base"},
                           {id(base.metadata)}) is None


def test_a_class_with_init_subclass_is_a_registry() -> None:
    def hook(cls: type) -> None: ...
    plugins = module("plugins", Plugin=type("Plugin", (), {"__init_subclass__": classmethod(hook)}))
    found = registry_reason("plugins", plugins, {"plugins"}, set(), set())
    assert found is not None and "__init_subclass__" in found.reason


def test_a_container_filled_by_a_module_that_imports_this_one_is_a_registry() -> None:
    def handler() -> None: ...
    handler.__module__ = "handlers.a"
    hub = module("hub", HANDLERS={"a": handler}, ORDER=deque([handler]))
    found = registry_reason("hub", hub, {"hub", "handlers.a"}, set(), set())
    assert found is not None and "HANDLERS" in found.reason and "handlers.a." in found.reason
    assert found.fillers == {"handlers.a"}
    # What it imports itself is its own business: no registry.
    assert registry_reason("hub", hub, {"hub", "handlers.a"}, {"handlers.a"}, set()) is None


def test_an_object_holding_routes_from_an_importer_is_found_through_its_attributes() -> None:
    def endpoint() -> None: ...
    endpoint.__module__ = "routes.items"
    route = types.SimpleNamespace(path="/items", endpoint=endpoint)
    deps = module("deps", router=types.SimpleNamespace(routes=[route]))
    found = registry_reason("deps", deps, {"deps", "routes.items"}, set(), set())
    assert found is not None and "router.routes[0].endpoint" in found.reason and "routes.items." in found.reason


def test_registries_checks_every_project_module_against_its_own_imports() -> None:
    def handler() -> None: ...
    handler.__module__ = "handlers.a"
    hub = module("hub", HANDLERS=[handler])
    handlers = module("handlers.a", handler=handler, hub=hub)
    assert set(registries({"hub": hub, "handlers.a": handlers}, {"handlers.a": {"hub"}})) == {"hub"}


# ----- the choice of stage, and blame ------------------------------------------------------------------

def graph(**overrides: Any) -> ProjectGraph:
    files = {f"/p/{name.replace('.', '/')}.py": ((1, 1, 1), frozenset({name})) for name in MODULES}
    fields: dict[str, Any] = {"modules": MODULES, "imports": {k: frozenset(v) for k, v in IMPORTS.items()},
                              "files": files, "registries": {}, "failed": {}}
    fields.update(overrides)
    return ProjectGraph(**fields)


def stat_with(*changed: str) -> Any:
    return lambda path: (2, 1, 1) if any(path == f"/p/{c.replace('.', '/')}.py" for c in changed) else (1, 1, 1)


def test_nothing_changed_forks_with_everything_warm_and_an_edit_drops_its_closure() -> None:
    assert plan_fork(graph(), Lessons(), stat_with()) == Choice("project", "8 of 8 project modules kept warm")
    choice = plan_fork(graph(), Lessons(), stat_with("routes.b"))
    assert choice.stage == "project" and choice.drop == {"routes.b", "app"}
    assert "re-run for routes.b" in choice.why


def test_learned_cold_modules_are_always_dropped() -> None:
    choice = plan_fork(graph(), Lessons(cold={"util": "failed"}), stat_with())
    assert choice.drop == {"util", "routes.a", "app"} and "kept cold" in choice.why


def test_a_registry_is_kept_warm_until_one_of_its_fillers_reruns() -> None:
    base = {"registries": {"models.base": "a declarative base"}, "fillers": {"models.base": frozenset({"models.user"})}}
    assert plan_fork(graph(**base), Lessons(), stat_with("routes.b")).drop == {"routes.b", "app"}
    # util re-runs routes.a, not models.user: the models stay warm with their base.
    assert "models.base" not in plan_fork(graph(**base), Lessons(), stat_with("util")).drop
    choice = plan_fork(graph(**base), Lessons(), stat_with("models.user"))
    assert choice.drop == {"models.base", "models.user", "routes.a", "app"}


def test_a_registry_with_unknown_fillers_reruns_with_any_importer_and_an_empty_set_always() -> None:
    unknown = {"registries": {"util": "MetaData"}, "fillers": {"util": None}}
    assert "util" in plan_fork(graph(**unknown), Lessons(), stat_with("routes.a")).drop
    assert "util" in plan_fork(graph(**unknown), Lessons(), stat_with("routes.b")).drop  # via app
    assert plan_fork(graph(**unknown), Lessons(), stat_with()).drop == frozenset()  # a crash restart
    always = {"registries": {"routes.b": "imports a refused library"}, "fillers": {"routes.b": frozenset()}}
    assert plan_fork(graph(**always), Lessons(), stat_with()).drop == {"routes.b", "app"}


def test_a_module_whose_warm_rerun_failed_sends_its_reloads_to_the_third_party_template() -> None:
    choice = plan_fork(graph(), Lessons(no_warm_rerun={"routes.b": "clashed"}), stat_with("routes.b"))
    assert choice.stage == "third-party" and "routes.b" in choice.why
    assert plan_fork(graph(), Lessons(no_warm_rerun={"routes.b": "x"}), stat_with("util")).stage == "project"


def test_blame_takes_the_named_culprits_else_what_the_rerun_met_else_the_rerun_itself() -> None:
    choice = plan_fork(graph(), Lessons(), stat_with("routes.a"))
    named = blame(choice, graph(), ["models.user", "app"], "ValueError: twice")  # app was re-run: not blamed
    assert set(named.cold) == {"models.user"} and "twice" in named.cold["models.user"]
    met = blame(choice, graph(), [], "")
    assert set(met.cold) == {"util", "models", "models.user", "routes", "routes.b"} and not met.no_warm_rerun
    leaf = plan_fork(graph(), Lessons(), stat_with("routes.b"))
    alone = blame(leaf, graph(imports={"app": frozenset({"routes.b"})}), [], "")
    assert set(alone.no_warm_rerun) == {"routes.b"} and not alone.cold
    lessons = Lessons()
    assert learn_blame(lessons, named) == ["models.user"] and learn_blame(lessons, named) == []


# ----- the slot: a withdrawn start is started again at once, uncounted ------------------------------------

def machine() -> L.SlotMachine:
    return L.SlotMachine(0, RestartSection(), 5.0, clock=lambda: 0.0, wall=lambda: 0.0, rand=lambda: 0.5)


def test_a_withdrawn_successor_is_replaced_at_once_and_the_replacement_still_owes_its_outcome() -> None:
    slot = machine()
    slot.handle(L.Begin())
    slot.handle(L.Spawned(1, deque()))
    slot.handle(L.Ready(1))
    assert slot.handle(L.Replace(L.ExitReason.RELOAD)) == [L.Spawn()]
    slot.handle(L.Spawned(2, deque()))
    actions = slot.handle(L.Withdrawn(2, 75, "failed on the project-stage template"))
    assert actions[-1] == L.Spawn() and not any(isinstance(a, L.Replaced) for a in actions)
    slot.handle(L.Spawned(3, deque()))
    assert L.Replaced(True) in slot.handle(L.Ready(3))
    assert slot.status.pid == 3 and slot.status.restarts == 1 and slot.tracker.attempt == 0


def test_a_withdrawn_first_worker_is_started_again_and_a_served_one_is_an_ordinary_exit() -> None:
    slot = machine()
    slot.handle(L.Begin())
    slot.handle(L.Spawned(1, deque()))
    assert slot.handle(L.Withdrawn(1, 75, "again"))[-1] == L.Spawn()
    slot.handle(L.Spawned(2, deque()))
    assert slot.status.restarts == 0
    slot.handle(L.Ready(2))
    actions = slot.handle(L.Withdrawn(2, 0, "served already"))  # the spawner never says so; were it to
    assert any(isinstance(action, L.Sleep) for action in actions) and L.Spawn() not in actions


# ----- the spawner's project stage: withdrawn forks, the retry, and what it teaches ---------------------

class FakeProjectTemplate:
    """A built project-stage template: ``fork`` records the drop list it was given."""

    def __init__(self, project: ProjectGraph, key: object) -> None:
        self.key = key
        self.built_info = types.SimpleNamespace(project=project)
        self.drops: list[frozenset[str]] = []

    def dependencies_changed(self, dirs: object) -> None:
        return None

    def fork(self, spec: object, on_line: object, drop: frozenset[str]) -> tuple[Any, int]:
        self.drops.append(frozenset(drop))
        return types.SimpleNamespace(pid=100 + len(self.drops)), -1


def stage_with(project: ProjectGraph, *changed: str) -> tuple[Any, FakeProjectTemplate, Any]:
    from supervisor.spawn.process import WorkerSpec
    from supervisor.warm.project import ProjectStage
    from supervisor.warm.template import template_key

    spec = WorkerSpec(app="app:app", factory=False, listen_fd=0, cwd=Path("/p"), environ={})
    stage = ProjectStage(stat=stat_with(*changed))
    template = FakeProjectTemplate(project, template_key(spec))
    stage.template = template  # type: ignore[assignment]
    return stage, template, spec


def test_a_withdrawn_fork_sends_the_next_start_to_the_third_party_template_and_its_success_teaches() -> None:
    stage, template, spec = stage_with(graph(), "routes.b")
    proc, _, choice = stage.fork(spec, print, [])
    assert choice.stage == "project" and template.drops == [{"routes.b", "app"}]
    assert stage.retry(999) is None  # not one of its forks: an ordinary failed start
    assert stage.retry(proc.pid) is not None
    stage.report(proc.pid, {"culprits": ["util"], "error": "ValueError: twice"})
    assert stage.fork(spec, print, []) is None  # the next start is the third-party template's
    assert "ValueError: twice" in (stage.fallback_reason() or "")
    stage.started(500)
    stage.served(500)
    assert stage.lessons.cold == {"util": "a fork that kept it warm failed: ValueError: twice"}
    proc, _, choice = stage.fork(spec, print, [])
    assert "util" in template.drops[-1] and choice.stage == "project"


def test_a_retry_that_fails_too_teaches_nothing() -> None:
    stage, _, spec = stage_with(graph(), "routes.b")
    proc, _, _ = stage.fork(spec, print, [])
    stage.retry(proc.pid)
    stage.report(proc.pid, {"culprits": ["util"], "error": "SyntaxError"})
    stage.started(500)
    stage.ended(500, served=False)  # the edit itself is broken
    assert stage.lessons.cold == {} and stage.fallback_reason() is None
    assert isinstance(stage.fork(spec, print, []), tuple)
