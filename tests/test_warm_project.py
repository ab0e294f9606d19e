"""The project-stage template against real processes: a reload re-runs only the stale modules, and
the worker it gives serves exactly what a fresh process serves.

Each project is a small Starlette app in a tmp dir: a package with a leaf, a middle and a shared
module, a circular pair and a settings module. ``GET /`` answers a digest of everything the app
is made of (its routes, what each module computes, the settings); after each edit it is compared
with what a freshly started ``up`` (fresh interpreters only, ``template = false``) serves from a
copy of the same tree. Which template started the worker shows in ``/status`` (``reload.template``).
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    Running,
    base_env,
    free_port,
    http_get,
    http_json,
    make_project,
    run_cli,
    supervisor,
    wait_until,
)

APP = """
    import json, os
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from pkg import cyc_a, leaf, settings
    from pkg.extra import EXTRA

    ROOT = 1

    def digest():
        return {"routes": sorted(r.path for r in app.routes), "leaf": leaf.leaf(), "cyc": cyc_a.both(),
                "settings": settings.NAME, "root": ROOT, "extra": EXTRA}

    async def home(request):
        return JSONResponse({"pid": os.getpid(), "digest": digest()})

    app = Starlette(routes=[Route("/", home), *leaf.ROUTES])
"""
FILES = {
    "pkg/__init__.py": "",
    "pkg/util.py": 'SUFFIX = "u1"\n\ndef tag(text):\n    return f"{text}-{SUFFIX}"\n',
    "pkg/mid.py": "from pkg.util import tag\n\nMID = 1\n\ndef mid():\n    return tag(f'mid{MID}')\n",
    "pkg/leaf.py": textwrap.dedent("""
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route
        from pkg.mid import mid

        LEAF = 1

        def leaf():
            return {"leaf": LEAF, "mid": mid()}

        async def ping(request):
            return PlainTextResponse("pong")

        ROUTES = [Route("/ping", ping)]
    """),
    "pkg/cyc_a.py": "from pkg import cyc_b\n\nA = 1\n\ndef both():\n    return A + cyc_b.B\n",
    "pkg/cyc_b.py": "from pkg import cyc_a\n\nB = 10\n\ndef back():\n    return cyc_a.A\n",
    "pkg/settings.py": 'import os\n\nNAME = os.environ.get("APP_NAME", "unset")\n',
    "pkg/extra.py": "EXTRA = 'none'\n",
}
READY = r"template: project stage pid \d+ ready"


def config(status_port: int, *, template: bool = True) -> str:
    return f"""
        [server]
        port = {free_port()}
        [app]
        app = "app:app"
        ready_timeout = 30
        [database]
        wait = false
        [status]
        port = {status_port}
        [reload]
        debounce = 0.05
        browser = false
        template = {"true" if template else "false"}
        """


def project(root: Path, files: dict[str, str] | None = None) -> tuple[Path, int]:
    """A project (and its status API port) serving ``app:app``."""
    status_port = free_port()
    make_project(root, config(status_port), files={"app.py": APP, **FILES, **(files or {})})
    return root, status_port


def env() -> dict[str, str]:
    environ = base_env(APP_NAME="warm")
    environ.pop("PYTHONDONTWRITEBYTECODE", None)  # workers write .pyc files, as on a developer's machine
    return environ


def answer(url: str) -> dict[str, Any]:
    status, _, raw = http_get(url + "/", timeout=10)
    assert status == 200, raw
    return json.loads(raw)  # type: ignore[no-any-return]


def template_status(status_port: int) -> dict[str, Any]:
    _, doc = http_json(f"http://127.0.0.1:{status_port}/status", timeout=10)
    return doc["reload"]["template"]  # type: ignore[no-any-return]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def reloaded(sup: Running, url: str, seen: set[int], check: Any) -> dict[str, Any]:
    """The answer of a worker not seen before, once it satisfies ``check``."""
    def fresh() -> dict[str, Any] | None:
        body = answer(url)
        return body if body["pid"] not in seen and check(body["digest"]) else None
    body = wait_until(fresh, 30, "a new worker serving the edit", lambda: sup.output, interval=0.02)
    seen.add(body["pid"])
    return body


def fresh_digest(tree: Path, tmp: Path) -> dict[str, Any]:
    """What a freshly started ``up`` (fresh interpreters, no template) serves from a copy of ``tree``."""
    copy = tmp / f"fresh-{free_port()}"
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns("__pycache__", ".supervisor*"))
    make_project(copy, config(free_port(), template=False))
    with supervisor(["up"], copy, env()) as fresh:
        digest = answer(fresh.wait_url(60))["digest"]
        assert fresh.stop() == 0
    return digest  # type: ignore[no-any-return]


def start(sup: Running) -> tuple[str, set[int]]:
    url = sup.wait_url(60)
    sup.wait_for_output(READY, timeout=60)
    return url, {answer(url)["pid"]}


@pytest.mark.timeout(240)
def test_edits_to_a_leaf_a_middle_module_a_circular_pair_and_the_root_reuse_the_rest_and_match_a_fresh_process(
        tmp_path: Path) -> None:
    root, status_port = project(tmp_path / "project")
    with supervisor(["up"], root, env()) as sup:
        url, seen = start(sup)
        edit(root / "pkg/leaf.py", "LEAF = 1", "LEAF = 2")
        reloaded(sup, url, seen, lambda d: d["leaf"]["leaf"] == 2)
        stage = template_status(status_port)
        # leaf and app re-run; util, mid, the pair, settings and the package kept.
        assert stage["stage"] == "project" and "2 re-run for pkg.leaf" in stage["why"], sup.output

        edit(root / "pkg/util.py", '"u1"', '"u2"')  # shared: mid, leaf and app import it, directly or not
        body = reloaded(sup, url, seen, lambda d: d["leaf"]["mid"] == "mid1-u2")
        stage = template_status(status_port)
        assert stage["stage"] == "project" and "pkg.util" in stage["why"].partition("re-run for")[2], sup.output

        edit(root / "pkg/cyc_b.py", "B = 10", "B = 20")  # its pair re-runs with it
        reloaded(sup, url, seen, lambda d: d["cyc"] == 21)
        edit(root / "app.py", "ROOT = 1", "ROOT = 2")
        body = reloaded(sup, url, seen, lambda d: d["root"] == 2)
        assert template_status(status_port)["stage"] == "project"
        status, _, pong = http_get(url + "/ping")
        assert (status, pong) == (200, b"pong")
        shown = run_cli(["status"], root, env())
        assert "project-stage template" in shown.stdout, shown.stdout + shown.stderr
        assert sup.stop() == 0
    assert body["digest"] == fresh_digest(root, tmp_path)
    assert body["digest"]["settings"] == "warm"


@pytest.mark.timeout(240)
def test_a_module_added_then_deleted_is_imported_then_gone_as_in_a_fresh_process(tmp_path: Path) -> None:
    root, status_port = project(tmp_path / "project")
    with supervisor(["up"], root, env()) as sup:
        url, seen = start(sup)
        (root / "pkg/added.py").write_text("NEW = 'added'\n")
        (root / "pkg/extra.py").write_text("from pkg.added import NEW\n\nEXTRA = NEW\n")
        body = reloaded(sup, url, seen, lambda d: d["extra"] == "added")
        assert template_status(status_port)["stage"] == "project", sup.output
        assert body["digest"] == fresh_digest(root, tmp_path)

        sup.wait_for_output(READY + r"[\s\S]*" + READY, timeout=60)  # rebuilt for the tree with the new module
        (root / "pkg/extra.py").write_text("EXTRA = 'gone'\n")
        (root / "pkg/added.py").unlink()
        body = reloaded(sup, url, seen, lambda d: d["extra"] == "gone")
        assert template_status(status_port)["stage"] == "project", sup.output
        assert sup.stop() == 0
    assert body["digest"] == fresh_digest(root, tmp_path)


# A registry the rules cannot see (it holds names, not functions): a handler registered twice
# raises, so a fork that keeps the registry warm and re-runs the handler fails to import.
HIDDEN_REGISTRY = {
    "pkg/names.py": "SEEN = set()\n\ndef register(name):\n    if name in SEEN:\n"
                    "        raise ValueError(f'{name} registered twice')\n    SEEN.add(name)\n    return name\n",
    "pkg/extra.py": "from pkg.names import register\n\nEXTRA = register('handler') + '-1'\n",
}


@pytest.mark.timeout(240)
def test_a_registry_the_rules_miss_fails_one_fork_falls_back_at_once_and_is_never_kept_warm_again(
        tmp_path: Path) -> None:
    root, status_port = project(tmp_path / "project", HIDDEN_REGISTRY)
    with supervisor(["up"], root, env()) as sup:
        url, seen = start(sup)
        edit(root / "pkg/extra.py", "'-1'", "'-2'")
        body = reloaded(sup, url, seen, lambda d: d["extra"] == "handler-2")
        stage = template_status(status_port)
        assert stage["stage"] == "third-party" and "project-stage fork" in stage["why"], sup.output
        assert "registered twice" in stage["why"]
        sup.wait_for_output(r"never keeping (\S+, )*pkg\.names( warm|,)", timeout=30)
        assert "reload failed" not in sup.output

        edit(root / "pkg/extra.py", "'-2'", "'-3'")
        body = reloaded(sup, url, seen, lambda d: d["extra"] == "handler-3")
        stage = template_status(status_port)
        assert stage["stage"] == "project", sup.output  # names re-runs with its importers now
        assert len(re.findall(r"worker pid \d+ failed on the project-stage template", sup.output)) == 1, sup.output
        assert sup.stop() == 0
    assert body["digest"] == fresh_digest(root, tmp_path)


SEEN_REGISTRY = {
    "pkg/hub.py": "HANDLERS = []\n\ndef register(fn):\n    HANDLERS.append(fn)\n    return fn\n",
    "pkg/extra.py": "from pkg.hub import HANDLERS, register\n\n@register\ndef handler():\n    return 1\n\n"
                    "EXTRA = f'{len(HANDLERS)} handler(s)'\n",
}


@pytest.mark.timeout(240)
def test_a_registry_the_rules_see_reruns_with_the_module_that_fills_it_so_its_entries_are_never_doubled(
        tmp_path: Path) -> None:
    root, status_port = project(tmp_path / "project", SEEN_REGISTRY)
    with supervisor(["up", "--log-level", "debug"], root, env()) as sup:
        url, seen = start(sup)
        sup.wait_for_output(r"pkg\.hub re-runs whenever a module that fills it does: HANDLERS\[0\] holds pkg\.extra\.",
                            timeout=30)
        edit(root / "pkg/extra.py", "return 1", "return 2")
        body = reloaded(sup, url, seen, lambda d: True)
        assert body["digest"]["extra"] == "1 handler(s)"
        assert template_status(status_port)["stage"] == "project", sup.output
        assert "failed on the project-stage template" not in sup.output
        assert sup.stop() == 0
    assert body["digest"] == fresh_digest(root, tmp_path)


# The app's startup checks what the modules registered: a warm fork re-runs extra.py, which
# registers again into the kept list, and the startup refuses the double entry (a fresh process
# registers once).
STARTUP_CHECK = {
    "pkg/names.py": "NAMES = []\n",
    "pkg/extra.py": "from pkg.names import NAMES\n\nNAMES.append('handler')\nEXTRA = 'x-1'\n",
    "app.py": textwrap.dedent(APP).replace("from pkg.extra import EXTRA", "from pkg.extra import EXTRA\n"
                                           "from pkg.names import NAMES\nfrom contextlib import asynccontextmanager")
    .replace('app = Starlette(routes=[Route("/", home), *leaf.ROUTES])', textwrap.dedent("""
        @asynccontextmanager
        async def lifespan(app):
            if len(NAMES) != len(set(NAMES)):
                raise RuntimeError(f"registered twice: {NAMES}")
            yield

        app = Starlette(routes=[Route("/", home), *leaf.ROUTES], lifespan=lifespan)
    """)),
}


@pytest.mark.timeout(240)
def test_an_app_whose_startup_fails_only_in_a_warm_fork_falls_back_at_once_and_learns(tmp_path: Path) -> None:
    root, status_port = project(tmp_path / "project", STARTUP_CHECK)
    with supervisor(["up"], root, env()) as sup:
        url, seen = start(sup)
        edit(root / "pkg/extra.py", "x-1", "x-2")
        body = reloaded(sup, url, seen, lambda d: d["extra"] == "x-2")
        stage = template_status(status_port)
        assert stage["stage"] == "third-party" and "project-stage fork" in stage["why"], sup.output
        sup.wait_for_output(r"never keeping (\S+, )*pkg\.names( warm|,)", timeout=30)
        assert "reload failed" not in sup.output

        edit(root / "pkg/extra.py", "x-2", "x-3")
        body = reloaded(sup, url, seen, lambda d: d["extra"] == "x-3")
        assert template_status(status_port)["stage"] == "project", sup.output
        assert len(re.findall(r"worker pid \d+ failed on the project-stage template", sup.output)) == 1, sup.output
        assert sup.stop() == 0
    assert body["digest"] == fresh_digest(root, tmp_path)
