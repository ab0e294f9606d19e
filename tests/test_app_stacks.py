"""The user's own app, served the way it was built: uvicorn's fast paths, its own logging, WSGI.

Real ``up`` processes. The app reports from inside which event loop and which HTTP protocol serve
it; a reload under load drops nothing and closes WebSockets with 1012 on uvloop with httptools
(what ``auto`` picks when installed) and on asyncio with h11 (forced); an app that configures
uvicorn's access log at import time keeps its handler; Flask and a Django project (WSGI and ASGI)
are served, reloaded on an edit and drained; a WSGI app without a2wsgi gets a clear error.
"""

from __future__ import annotations

import http.client
import json
import re
import textwrap
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.loadgen import Load
from tests.support import Running, free_port, http_get, make_project, supervisor, wait_until

STARLETTE_APP = """
    import asyncio, logging, os, sys
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    VERSION = 1

    # Set up at import time, as apps do: uvicorn's access log with the app's own handler and format.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("APP-ACCESS %(message)s"))
    logging.getLogger("uvicorn.access").addHandler(handler)


    def protocol_name():
        # The request cycle runs in uvicorn's run_asgi; its on_response is the connection protocol's.
        frame = sys._getframe()
        while frame is not None:
            cycle = frame.f_locals.get("self")
            if frame.f_code.co_name == "run_asgi" and hasattr(cycle, "on_response"):
                return type(cycle.on_response.__self__).__name__
            frame = frame.f_back
        return "unknown"


    async def stack(request):
        loop = type(asyncio.get_running_loop())
        return JSONResponse({"loop": f"{loop.__module__}.{loop.__name__}", "protocol": protocol_name(),
                             "version": VERSION, "pid": os.getpid()})


    async def home(request):
        return PlainTextResponse(f"{VERSION} {os.getpid()}")


    async def echo(websocket):
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:  # 1012 on the reload: the client reconnects elsewhere
            pass


    app = Starlette(routes=[Route("/", home), Route("/stack", stack), WebSocketRoute("/ws", echo)])
"""

FLASK_APP = """
    import os, time
    from flask import Flask

    VERSION = 1
    app = Flask(__name__)


    @app.route("/")
    def home():
        return f"{VERSION} {os.getpid()}"


    @app.route("/slow")
    def slow():
        time.sleep(1.5)  # a request the reload finds in flight
        return f"slow {VERSION} {os.getpid()}"
"""

DJANGO = {
    "mysite/__init__.py": "",
    "mysite/settings.py": """
        SECRET_KEY = "test-only-not-secret"
        DEBUG = True
        ALLOWED_HOSTS = ["*"]
        ROOT_URLCONF = "mysite.urls"
        INSTALLED_APPS = []
        MIDDLEWARE = []
        DATABASES = {}
    """,
    "mysite/urls.py": """
        from django.urls import path
        from mysite import views

        urlpatterns = [path("", views.home), path("slow", views.slow)]
    """,
    "mysite/views.py": """
        import os, time
        from django.http import HttpResponse

        VERSION = 1


        def home(request):
            return HttpResponse(f"{VERSION} {os.getpid()}")


        def slow(request):
            time.sleep(1.5)  # a request the reload finds in flight
            return HttpResponse(f"slow {VERSION} {os.getpid()}")
    """,
    "mysite/wsgi.py": """
        import os
        from django.core.wsgi import get_wsgi_application

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
        application = get_wsgi_application()
    """,
    "mysite/asgi.py": """
        import os
        from django.core.asgi import get_asgi_application

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
        application = get_asgi_application()
    """,
}


def project(root: Path, app: str, files: dict[str, str], app_extra: str = "") -> Path:
    return make_project(root, f"""
        [server]
        port = {free_port()}
        [app]
        app = "{app}"
        ready_timeout = 30
        {app_extra}
        [database]
        wait = false
        [status]
        enabled = false
        [reload]
        debounce = 0.05
        """, files=files)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def stack_of(url: str) -> dict[str, Any]:
    status, _, body = http_get(url + "/stack")
    assert status == 200, body
    return json.loads(body)  # type: ignore[no-any-return]


def set_version(path: Path, version: int) -> None:
    path.write_text(re.sub(r"VERSION = \d+", f"VERSION = {version}", path.read_text()))


def reload_under_load(run: Running, url: str, source: Path, version: int = 2) -> Load:
    """Edit ``source`` to ``version`` while four keep-alive clients load the app; return the load,
    stopped once the new version answers and the reload is done."""
    load = Load("127.0.0.1", port_of(url), clients=4).start()
    wait_until(lambda: load.result.ok > 20, 20, "traffic flowing", lambda: run.output)
    done = run.output.count("reload: done")
    set_version(source, version)
    wait_until(lambda: any(b.startswith(f"{version} ") for b in load.latest_bodies()), 30,
               f"version {version} serving", lambda: run.output)
    wait_until(lambda: run.output.count("reload: done") > done, 30, "the reload done", lambda: run.output)
    load.stop()
    return load


def slow_request(url: str, results: list[tuple[int, bytes]]) -> threading.Thread:
    """GET /slow in a thread (it takes 1.5 s): the request a reload finds in flight."""
    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port_of(url), timeout=30)
        try:
            conn.request("GET", "/slow")
            response = conn.getresponse()
            results.append((response.status, response.read()))
        finally:
            conn.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


STACKS = [
    pytest.param("", "uvloop.Loop", "CleanHttpToolsProtocol", id="auto-uvloop-httptools"),
    pytest.param('loop = "asyncio"\nhttp = "h11"', "asyncio.unix_events._UnixSelectorEventLoop", "CleanH11Protocol",
                 id="forced-asyncio-h11"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("app_extra", "loop", "protocol"), STACKS)
def test_the_worker_runs_the_chosen_stack_and_a_reload_drops_nothing_and_closes_websockets_with_1012(
        tmp_path: Path, app_extra: str, loop: str, protocol: str) -> None:
    pytest.importorskip("uvloop", reason="uvloop and httptools (uvicorn[standard]) are in the test extra")
    pytest.importorskip("httptools", reason="uvloop and httptools (uvicorn[standard]) are in the test extra")
    root = project(tmp_path, "app:app", {"app.py": STARLETTE_APP}, app_extra)
    with supervisor(["up"], root) as run:
        url = run.wait_url()
        before = stack_of(url)
        assert (before["loop"], before["protocol"]) == (loop, protocol), before
        with connect(f"ws://127.0.0.1:{port_of(url)}/ws", open_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=10) == "hello"

            load = reload_under_load(run, url, root / "app.py")
            assert load.result.failures == [], f"{load.result.failures[:5]}\n{run.output}"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, closed.value
        after = stack_of(url)
        assert after["version"] == 2 and after["pid"] != before["pid"]
        assert (after["loop"], after["protocol"]) == (loop, protocol), after
        assert run.stop() == 0
    assert "Traceback" not in run.output, run.output


@pytest.mark.timeout(90)
def test_an_app_that_sets_up_uvicorns_access_log_at_import_keeps_its_handler_and_format(tmp_path: Path) -> None:
    root = project(tmp_path, "app:app", {"app.py": STARLETTE_APP})
    with supervisor(["up", "--no-reload"], root) as run:
        url = run.wait_url()
        assert http_get(url + "/")[0] == 200
        # The app's handler, its format: the access line as the app's import set it up.
        run.wait_for_output(r'APP-ACCESS 127\.0\.0\.1:\d+ - "GET / HTTP/1\.1" 200')
        assert run.stop() == 0


# The app's version in a module of its own: an edit there re-runs both in a project-stage fork.
TWO_MODULES = {"app.py": STARLETTE_APP.replace("VERSION = 1", "from other import VERSION"), "other.py": "VERSION = 1\n"}


STAGE_READY = r"template: project stage pid \d+ ready"


def forked_with_the_app_imported(run: Running, url: str, other: Path) -> int:
    """Two edits of ``other``: the first reload builds the project stage, the second forks from it.
    Returns the pid of that worker."""
    for version in (2, 3):
        other.write_text(f"VERSION = {version}\n")
        wait_until(lambda: stack_of(url)["version"] == version, 30, f"version {version}",  # noqa: B023
                   lambda: run.output)
        if version == 2:  # the project stage is built once a reloaded worker serves: wait for it
            run.wait_for_output(STAGE_READY, 60)
    forked: int = stack_of(url)["pid"]
    assert "supervisor.child.forkserver" in psutil.Process(forked).cmdline(), run.output
    return forked


@pytest.mark.timeout(90)
def test_workers_forked_with_the_app_imported_keep_the_handler_its_import_added(tmp_path: Path) -> None:
    """With reload on, a worker may fork from a template that imported the project already (the
    project stage): uvicorn's logging is set up there before the import, not again after it."""
    root = project(tmp_path, "app:app", TWO_MODULES)
    with supervisor(["up"], root) as run:
        url = run.wait_url()
        forked = forked_with_the_app_imported(run, url, root / "other.py")
        assert http_get(url + "/")[0] == 200
        line = rf'web\.0\s+{forked}\s*\| APP-ACCESS 127\.0\.0\.1:\d+ - "GET / HTTP/1\.1" 200'
        run.wait_for_output(line)
        assert run.stop() == 0
    # Once, as in a fresh process: the template's import added the handler, the fork's re-run of
    # app.py added it again, and the fork took the template's back.
    assert len(re.findall(line, run.output)) == 1, run.output


@pytest.mark.timeout(120)
def test_a_log_setting_changed_while_up_reaches_the_workers_forked_with_the_app_imported(tmp_path: Path) -> None:
    """The project-stage template set uvicorn's logging up before importing the project: a worker
    forked from it keeps that setup, so a changed log setting needs another template."""
    root = project(tmp_path, "app:app", {**TWO_MODULES, "conf/log.json": json.dumps(LOG_CONFIG)})
    with supervisor(["up"], root) as run:
        url = run.wait_url()
        forked = forked_with_the_app_imported(run, url, root / "other.py")
        toml = root / "supervisor.toml"
        setting = 'ready_timeout = 30\nlog_config = "conf/log.json"'
        toml.write_text(toml.read_text().replace("ready_timeout = 30", setting, 1))
        wait_until(lambda: stack_of(url)["pid"] != forked, 30, "a worker with the new setting", lambda: run.output)
        worker = stack_of(url)["pid"]
        run.wait_for_output(rf"web\.0\s+{worker}\s*\| MINE INFO \[uvicorn\.access\] 127\.0\.0\.1:\d+ - \"GET /stack")
        assert run.stop() == 0


@pytest.mark.timeout(120)
def test_a_log_config_file_edited_in_place_reaches_the_next_worker_forked_with_the_app_imported(tmp_path: Path) -> None:
    """The file is not watched (no reload of its own): the next reload's worker reads it, as a fresh
    process would, not the project stage that read it before the edit."""
    root = project(tmp_path, "app:app", {**TWO_MODULES, "conf/log.json": json.dumps(LOG_CONFIG)},
                   'log_config = "conf/log.json"')
    with supervisor(["up"], root) as run:
        url = run.wait_url()
        run.wait_for_output(STAGE_READY, 60)  # built once the first worker serves, then after each reload
        (root / "other.py").write_text("VERSION = 2\n")
        wait_until(lambda: stack_of(url)["version"] == 2, 30, "version 2", lambda: run.output)
        wait_until(lambda: len(re.findall(STAGE_READY, run.output)) >= 2, 60, "the project stage rebuilt",
                   lambda: run.output)
        (root / "conf/log.json").write_text(json.dumps(LOG_CONFIG).replace("MINE", "EDITED"))
        (root / "other.py").write_text("VERSION = 3\n")
        wait_until(lambda: stack_of(url)["version"] == 3, 30, "version 3", lambda: run.output)
        worker = stack_of(url)["pid"]
        run.wait_for_output(rf"web\.0\s+{worker}\s*\| EDITED INFO \[uvicorn\.access\] 127\.0\.0\.1:\d+ - \"GET /stack")
        assert run.stop() == 0


LOG_CONFIG = {
    "version": 1, "disable_existing_loggers": False,
    "formatters": {"mine": {"format": "MINE %(levelname)s [%(name)s] %(message)s"}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "mine", "stream": "ext://sys.stdout"}},
    "loggers": {"uvicorn": {"handlers": ["out"], "level": "INFO", "propagate": False},
                "uvicorn.access": {"handlers": ["out"], "level": "INFO", "propagate": False}},
}


@pytest.mark.timeout(90)
def test_a_log_config_file_formats_the_workers_uvicorn_lines(tmp_path: Path) -> None:
    log_config = LOG_CONFIG
    app = STARLETTE_APP.replace("logging.getLogger(\"uvicorn.access\").addHandler(handler)", "")
    root = project(tmp_path, "app:app", {"app.py": app, "conf/log.json": json.dumps(log_config)},
                   'log_config = "conf/log.json"')
    with supervisor(["up", "--no-reload"], root) as run:
        url = run.wait_url()
        run.wait_for_output(r"MINE INFO \[uvicorn\.error\] Application startup complete")
        assert http_get(url + "/")[0] == 200
        run.wait_for_output(r'MINE INFO \[uvicorn\.access\] 127\.0\.0\.1:\d+ - "GET / HTTP/1\.1" 200')
        assert run.stop() == 0

    # up --log-config, relative to where it runs, over [app] log_config.
    (tmp_path / "other.json").write_text(json.dumps(log_config).replace("MINE", "OTHER"))
    with supervisor(["up", "--no-reload", "--log-config", str(tmp_path / "other.json")], root) as run:
        run.wait_url()
        run.wait_for_output(r"OTHER INFO \[uvicorn\.error\] Application startup complete")
        assert "MINE " not in run.output
        assert run.stop() == 0


def served_reloaded_and_drained(run: Running, url: str, source: Path) -> None:
    """The WSGI or Django app answers, a reload under load drops nothing, and the request in
    flight on the old worker when it drains is answered by it, with the old version."""
    status, _, body = http_get(url + "/")
    assert status == 200 and body.startswith(b"1 "), body
    old_pid = body.split()[1]
    slow: list[tuple[int, bytes]] = []
    in_flight = slow_request(url, slow)
    load = reload_under_load(run, url, source)
    in_flight.join(timeout=30)
    assert load.result.failures == [], f"{load.result.failures[:5]}\n{run.output}"
    assert slow == [(200, b"slow 1 " + old_pid)], (slow, run.output)
    status, _, body = http_get(url + "/")
    assert status == 200 and body.startswith(b"2 ") and body.split()[1] != old_pid, body


@pytest.mark.timeout(120)
@pytest.mark.parametrize("interface", ["auto", "wsgi"])
def test_a_flask_app_is_served_reloaded_on_edit_and_drained(tmp_path: Path, interface: str) -> None:
    pytest.importorskip("flask", reason="Flask is in the test extra")
    root = project(tmp_path, "app:app", {"app.py": FLASK_APP}, f'interface = "{interface}"')
    with supervisor(["up"], root) as run:
        url = run.wait_url()
        served_reloaded_and_drained(run, url, root / "app.py")
        assert run.stop() == 0
    assert "Traceback" not in run.output, run.output


@pytest.mark.timeout(120)
@pytest.mark.parametrize("app", ["mysite.wsgi:application", "mysite.asgi:application"])
def test_a_django_project_is_served_reloaded_on_edit_and_drained(tmp_path: Path, app: str) -> None:
    pytest.importorskip("django", reason="Django is in the test extra")
    files = {name: textwrap.dedent(text) for name, text in DJANGO.items()}
    root = project(tmp_path, app, files)
    with supervisor(["up"], root) as run:
        url = run.wait_url()
        served_reloaded_and_drained(run, url, root / "mysite" / "views.py")
        assert run.stop() == 0
    assert "Traceback" not in run.output, run.output


@pytest.mark.timeout(90)
def test_a_wsgi_app_without_a2wsgi_is_a_clear_error_naming_the_package(tmp_path: Path) -> None:
    pytest.importorskip("flask", reason="Flask is in the test extra")
    # a2wsgi as an environment without it has it: importing it fails.
    blocked = "raise ModuleNotFoundError(\"No module named 'a2wsgi'\", name='a2wsgi')\n"
    root = project(tmp_path, "app:app", {"app.py": FLASK_APP, "a2wsgi.py": blocked})
    with supervisor(["up", "--no-reload"], root) as run:
        run.wait_for_output(r"'app:app' is a WSGI app, served through a2wsgi, which is not installed.*"
                            r"pip install a2wsgi", timeout=60)
        run.stop()
    assert "Traceback" not in run.output, run.output
