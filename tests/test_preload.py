"""What a template preloads, learned from worker reports: pure functions, scripted reports."""

from __future__ import annotations

import json
import types
from pathlib import Path

from supervisor.child.report import decode_report, encode_report, module_file
from supervisor.warm.preload import Learned, Learner, excluded, learn, missing, preload_list, within

ROOT = Path("/srv/project")
SITE = "/usr/lib/python3/site-packages"


def test_modules_under_the_project_are_the_projects_and_the_rest_keep_their_import_order() -> None:
    report = {
        "os": None,  # frozen or built in
        "starlette": f"{SITE}/starlette/__init__.py",
        "app": "/srv/project/app.py",
        "starlette.routing": f"{SITE}/starlette/routing.py",
        "webapp": "/srv/project/src/webapp/__init__.py",
        "webapp.models": "/srv/project/src/webapp/models.py",
        "__main__": "/srv/project/run.py",
        "sqlalchemy": f"{SITE}/sqlalchemy/__init__.py",
    }
    learned = learn(report, [ROOT])
    assert learned.outside == ("os", "starlette", "starlette.routing", "sqlalchemy")
    assert learned.project == {"app", "webapp", "webapp.models"}


def test_a_submodule_of_a_project_package_is_the_projects_even_without_a_file() -> None:
    learned = learn({"webapp": "/srv/project/webapp/__init__.py", "webapp.generated": None}, [ROOT])
    assert learned.project == {"webapp", "webapp.generated"}
    assert learned.outside == ()


def test_a_sibling_directory_with_a_common_prefix_is_not_inside_the_project() -> None:
    assert within("/srv/project/app.py", ["/srv/project"])
    assert within("/srv/project", ["/srv/project"])
    assert not within("/srv/project-libs/lib.py", ["/srv/project"])
    learned = learn({"lib": "/srv/project-libs/lib.py"}, [ROOT])
    assert learned.outside == ("lib",)


def test_every_root_counts_the_app_directory_too() -> None:
    learned = learn({"rawapp": "/opt/apps/rawapp.py", "h11": f"{SITE}/h11/__init__.py"},
                    [ROOT, Path("/opt/apps")])
    assert learned.project == {"rawapp"}


def test_an_unsafe_module_is_left_out_with_its_submodules_but_not_its_parent() -> None:
    order = ["pkg", "pkg.threads", "pkg.threads.pool", "pkg.threadsafe", "other"]
    assert preload_list(order, {"pkg.threads"}) == ["pkg", "pkg.threadsafe", "other"]
    assert excluded("pkg.threads.pool", {"pkg.threads"})
    assert not excluded("pkg", {"pkg.threads"})


def test_missing_names_what_the_template_lacks_except_what_it_cannot_or_must_not_load() -> None:
    learned = Learned(("os", "starlette", "extlib", "broken", "threadmod.sub"), frozenset({"app"}))
    assert missing(learned, loaded={"os", "starlette"}, failed={"broken"}, unsafe={"threadmod"}) == ["extlib"]
    assert missing(learned, loaded={"os", "starlette", "extlib"}, failed={"broken"}, unsafe={"threadmod"}) == []


def test_a_report_round_trips_and_a_cut_or_foreign_line_is_ignored(tmp_path: Path) -> None:
    module = types.ModuleType("fake")
    module.__file__ = str(tmp_path / "fake.py")
    namespace = types.ModuleType("ns")
    namespace.__path__ = [str(tmp_path / "ns")]
    line = encode_report({"fake": module, "ns": namespace, "builtin": types.ModuleType("builtin")})
    assert line.startswith(b"\n") and line.endswith(b"\n")
    assert decode_report(line.strip()) == {"fake": str(tmp_path / "fake.py"), "ns": str(tmp_path / "ns"),
                                           "builtin": None}
    assert decode_report(line.strip()[:-5]) is None
    assert decode_report(b"") is None
    assert decode_report(json.dumps({"other": 1}).encode()) is None
    assert decode_report(b"[1, 2]") is None


def test_module_file_is_absolute_and_none_without_a_location() -> None:
    module = types.ModuleType("rel")
    module.__file__ = "rel.py"
    assert module_file(module) is not None and Path(str(module_file(module))).is_absolute()
    assert module_file(types.ModuleType("nothing")) is None


def test_the_learner_keeps_first_import_order_across_reports_and_says_what_is_new() -> None:
    asked: list[int] = []

    def entry() -> dict[str, str | None]:
        asked.append(1)
        return {"supervisor.child.worker": f"{SITE}/supervisor/child/worker.py"}

    learner = Learner(entry)
    learned, fresh = learner.take({"os": None, "app": f"{ROOT}/app.py", "starlette": f"{SITE}/starlette.py"}, [ROOT])
    assert fresh == ["supervisor.child.worker", "os", "starlette"] and learned.project == {"app"}
    learned, fresh = learner.take({"json": None, "os": None, "models": f"{ROOT}/models.py"}, [ROOT])
    assert fresh == ["json"] and learned.outside == ("supervisor.child.worker", "json", "os")
    assert learner.order == ["supervisor.child.worker", "os", "starlette", "json"]
    assert learner.project == {"app", "models"} and asked == [1]  # the entry is asked once
    learner.unsafe["starlette"] = "a thread was still running after importing it"
    assert learner.preload() == ["supervisor.child.worker", "os", "json"]
    assert learner.missing(learned, loaded={"os"}, failed={"json"}) == ["supervisor.child.worker"]
