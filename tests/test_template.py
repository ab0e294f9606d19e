"""Workers forked from a warm template, against real processes: never stale, learned, safe, replaceable.

Each test project has its app in the project directory (watched, so never preloaded) and its
"third-party" modules in a ``site`` directory on ``PYTHONPATH`` (outside the project, so the
template learns to preload them). Whether a worker was forked shows in its command line: a fork
keeps the template's (``supervisor.child.forkserver``), a fresh interpreter has the worker's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.loadgen import Load
from tests.pgserver import PgServer
from tests.support import REPO, Running, base_env, free_port, gone, http_get, make_project, supervisor, wait_until

APP = """
    import json, os, random
    from layer_a import version, extras

    SEED_DRAW = random.getrandbits(64)  # drawn at import: identical in every fork unless reseeded

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = json.dumps({"version": version(), "pid": os.getpid(), "draw": SEED_DRAW, **extras()}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
"""
LAYERS = {
    "layer_a.py": "from layer_b import version\n\ndef extras():\n    return {}\n",
    "layer_b.py": "import layer_c\n\ndef version():\n    return layer_c.VERSION\n",
    "layer_c.py": "VERSION = 10\n",
}


def template_project(tmp_path: Path, site: dict[str, str] | None = None, workers: int = 1,
                     files: dict[str, str] | None = None, extra: str = "") -> tuple[Path, dict[str, str]]:
    """The project and the environment to run it in (``site`` modules on PYTHONPATH)."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    for name, text in (site or {}).items():
        (site_dir / name).write_text(textwrap.dedent(text))
    root = make_project(tmp_path / "project", f"""
        [server]
        port = {free_port()}
        [app]
        app = "app:app"
        workers = {workers}
        ready_timeout = 30
        [database]
        wait = false
        [status]
        enabled = false
        [reload]
        debounce = 0.05
        {extra}
        """, files={"app.py": APP, **LAYERS, **(files or {})})
    env = base_env(PYTHONPATH=os.pathsep.join([str(REPO), str(site_dir)]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # workers write .pyc files, as on a developer's machine
    return root, env


def answer(url: str) -> dict[str, int]:
    status, _, raw = http_get(url + "/", timeout=10)
    assert status == 200, raw
    return json.loads(raw)  # type: ignore[no-any-return]


def forked(pid: int) -> bool:
    return "supervisor.child.forkserver" in " ".join(psutil.Process(pid).cmdline())


def template_pid(sup: Running, after: int = 0) -> int:
    """The pid of a template that became ready, the first one logged after ``after`` such lines."""
    def found() -> int | None:
        pids = re.findall(r"template: pid (\d+) ready in", sup.output)
        return int(pids[after]) if len(pids) > after else None
    return wait_until(found, 60, "a template ready", lambda: sup.output)


def templates(sup: Running) -> list[psutil.Process]:
    """The supervisor's template processes alive now: forked-server children in its session."""
    found = []
    for child in psutil.Process(sup.pid).children():
        try:
            if forked(child.pid) and os.getsid(child.pid) != child.pid:
                found.append(child)
        except (psutil.Error, OSError):
            continue
    return found


def connections(proc: psutil.Process) -> list[Any]:
    """Its connections; none once it has exited (a replaced template ends at any moment)."""
    try:
        return list(proc.net_connections())
    except (psutil.NoSuchProcess, FileNotFoundError):
        return []


def set_version(root: Path, version: int) -> None:
    (root / "layer_c.py").write_text(f"VERSION = {version}\n")


def new_worker_answer(url: str, seen: set[int], sup: Running) -> dict[str, int]:
    """Poll (a fresh connection each time) until a worker not seen before answers."""
    def fresh() -> dict[str, int] | None:
        body = answer(url)
        return body if body["pid"] not in seen else None
    return wait_until(fresh, 30, "a new worker", lambda: sup.output, interval=0.01)


@pytest.mark.timeout(240)
def test_fifty_edits_through_a_module_imported_indirectly_are_each_served_by_a_fork_never_stale(
        tmp_path: Path) -> None:
    root, env = template_project(tmp_path)
    with supervisor(["up"], root, env) as sup:
        url = sup.wait_url()
        first = answer(url)
        assert first["version"] == 10 and not forked(first["pid"])  # the first starts fresh
        template_pid(sup)
        seen = {first["pid"]}
        forks = 0
        for version in range(11, 61):  # the same length each time: the .pyc check cannot tell them apart
            set_version(root, version)
            body = new_worker_answer(url, seen, sup)
            assert body["version"] == version, f"a new worker served version {body['version']}, not {version}"
            seen.add(body["pid"])
            forks += forked(body["pid"])
            # Once the previous worker has stopped, every answer comes from the new code.
            sup.wait_for_output(rf"(?s)worker pid {body['pid']} is serving.*stopped: drained", timeout=30)
            assert all(answer(url)["version"] == version for _ in range(3))
        assert forks == 50, f"only {forks} of 50 reloads forked from the template\n{sup.output}"
        assert sup.stop() == 0


@pytest.mark.timeout(120)
def test_a_new_third_party_import_is_served_and_the_template_is_rebuilt_with_it(tmp_path: Path) -> None:
    root, env = template_project(tmp_path, site={"extlib.py": "NAME = 'extlib'\n"})
    with supervisor(["up"], root, env) as sup:
        url = sup.wait_url()
        template_pid(sup)
        (root / "layer_a.py").write_text(
            "import extlib\nfrom layer_b import version\n\ndef extras():\n    return {'lib': extlib.NAME}\n")
        wait_until(lambda: answer(url).get("lib") == "extlib", 30, "the edit using extlib", lambda: sup.output)
        sup.wait_for_output(r"a worker imported 1 module\(s\) the template lacks \(extlib\); rebuilding it")
        rebuilt = template_pid(sup, after=1)
        set_version(root, 11)
        body = wait_until(lambda: (b := answer(url))["version"] == 11 and b, 30, "version 11", lambda: sup.output)
        assert body["lib"] == "extlib" and forked(body["pid"])
        assert psutil.Process(body["pid"]).ppid() == sup.pid  # the supervisor's own child
        assert psutil.Process(rebuilt).is_running()
        assert sup.output.count("the template lacks") == 1, sup.output
        assert sup.stop() == 0


@pytest.mark.timeout(120)
def test_a_sigkilled_template_costs_no_request_and_the_log_says_what_happens_next(tmp_path: Path) -> None:
    root, env = template_project(tmp_path)
    with supervisor(["up"], root, env) as sup:
        url = sup.wait_url()
        killed = template_pid(sup)
        load = Load("127.0.0.1", int(url.rsplit(":", 1)[1]), clients=8).start()
        wait_until(lambda: load.result.ok > 20, 20, "traffic flowing", lambda: sup.output)
        os.kill(killed, signal.SIGKILL)
        sup.wait_for_output(rf"template: pid {killed} exited \(killed by signal 9\); rebuilding it in the "
                            r"background \(workers start as fresh interpreters meanwhile\)")
        set_version(root, 11)
        wait_until(lambda: any('"version": 11' in b for b in load.latest_bodies()), 30, "version 11",
                   lambda: sup.output)
        template_pid(sup, after=1)
        set_version(root, 12)
        wait_until(lambda: any('"version": 12' in b for b in load.latest_bodies()), 30, "version 12",
                   lambda: sup.output)
        result = load.stop()
        assert result.failures == [], f"{len(result.failures)} failed: {result.failures[:3]}\n{sup.output}"
        assert gone(killed)
        assert sup.stop() == 0


@pytest.mark.timeout(120)
def test_a_module_that_starts_a_thread_at_import_is_kept_out_and_the_worker_still_works(tmp_path: Path) -> None:
    site = {"threadlib.py": """
        import threading, time
        STARTED = threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="threadlib-poller")
        STARTED.start()
    """}
    layer_a = ("import threading, threadlib\nfrom layer_b import version\n\n"
               "def extras():\n    return {'threads': threading.active_count()}\n")
    root, env = template_project(tmp_path, site=site, files={"layer_a.py": layer_a})
    with supervisor(["up"], root, env) as sup:
        url = sup.wait_url()
        sup.wait_for_output(r"template: kept threadlib out of the template: a thread was still running after "
                            r"importing it \(threadlib-poller\); workers import it themselves", timeout=60)
        template_pid(sup)
        set_version(root, 11)
        body = wait_until(lambda: (b := answer(url))["version"] == 11 and b, 30, "version 11", lambda: sup.output)
        assert forked(body["pid"]) and body["threads"] >= 2  # its own thread, started by its own import
        assert sup.stop() == 0


@pytest.mark.timeout(120)
def test_forked_workers_draw_distinct_random_seeds_and_inherit_no_database_connection(
        tmp_path: Path, pg: PgServer) -> None:
    # A library that connects to the database at import: unsafe to preload, so each worker makes its own.
    site = {"dbatimport.py": f"""
        import socket
        CONNECTION = socket.create_connection(("127.0.0.1", {pg.port}))
    """}
    layer_a = ("import dbatimport\nfrom layer_b import version\n\n"
               "def extras():\n    return {'local_port': dbatimport.CONNECTION.getsockname()[1]}\n")
    root, env = template_project(tmp_path, site=site, workers=3, files={"layer_a.py": layer_a})
    with supervisor(["up"], root, env) as sup:
        url = sup.wait_url()
        sup.wait_for_output(r"template: kept dbatimport out of the template: it left an open socket", timeout=60)
        template_pid(sup)
        set_version(root, 11)
        sup.wait_for_output(r"reload: done", timeout=60)
        bodies: dict[int, dict[str, int]] = {}
        wait_until(lambda: len({pid for pid, b in bodies.items() if b["version"] == 11}) == 3
                   or bodies.update({(b := answer(url))["pid"]: b}), 30, "three new workers", lambda: sup.output)
        fresh = {pid: b for pid, b in bodies.items() if b["version"] == 11}
        assert all(forked(pid) for pid in fresh)
        assert len({b["draw"] for b in fresh.values()}) == 3, "forked workers share a random state"
        assert len({b["local_port"] for b in fresh.values()}) == 3, "forked workers share a connection"
        for template in templates(sup):  # the one in use and any being built
            assert not [c for c in connections(template) if c.raddr and c.raddr.port == pg.port]
        for pid, b in fresh.items():
            ours = [c for c in psutil.Process(pid).net_connections() if c.raddr and c.raddr.port == pg.port]
            assert [c.laddr.port for c in ours] == [b["local_port"]]
        assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_a_sigkilled_supervisor_takes_its_template_and_forked_workers_with_it(tmp_path: Path) -> None:
    root, env = template_project(tmp_path)
    with supervisor(["up"], root, env) as sup:
        url = sup.wait_url()
        template = template_pid(sup)
        set_version(root, 11)
        worker = wait_until(lambda: (b := answer(url))["version"] == 11 and b["pid"], 30, "version 11",
                            lambda: sup.output)
        assert forked(worker)
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait_exit()
        wait_until(lambda: gone(template) and gone(worker), 10, "the template and the worker gone",
                   lambda: sup.output)


@pytest.mark.timeout(90)
def test_template_false_starts_every_worker_as_a_fresh_interpreter_and_says_so(tmp_path: Path) -> None:
    root, env = template_project(tmp_path, extra="template = false")
    with supervisor(["up"], root, env) as sup:
        url = sup.wait_url()
        sup.wait_for_output(r"workers start as fresh interpreters \(\[reload\] template = false\)")
        set_version(root, 11)
        body = wait_until(lambda: (b := answer(url))["version"] == 11 and b, 30, "version 11", lambda: sup.output)
        assert not forked(body["pid"])
        assert "template: pid" not in sup.output
        assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_crash_restarts_and_rolling_restarts_fork_from_the_template_too(tmp_path: Path) -> None:
    root, env = template_project(tmp_path)
    with supervisor(["up"], root, env) as sup:
        url = sup.wait_url()
        template_pid(sup)
        crashed = answer(url)["pid"]
        os.kill(crashed, signal.SIGKILL)
        sup.wait_for_output(rf"worker pid {crashed} killed by SIGKILL")
        restarted = new_worker_answer(url, {crashed}, sup)["pid"]
        assert forked(restarted), sup.output
        os.kill(sup.pid, signal.SIGHUP)  # re-read the settings and roll
        rolled = new_worker_answer(url, {crashed, restarted}, sup)["pid"]
        assert forked(rolled), sup.output
        assert sup.stop() == 0


@pytest.mark.timeout(120)
def test_a_stop_while_the_first_template_is_built_ends_everything_promptly(tmp_path: Path) -> None:
    """SIGTERM the moment the first worker serves, when the template is being built: the
    supervisor exits 0 within its stop deadline and leaves no template behind."""
    for attempt in range(3):
        (tmp_path / str(attempt)).mkdir()
        root, env = template_project(tmp_path / str(attempt))
        with supervisor(["up"], root, env) as sup:
            sup.wait_url()
            assert sup.stop(timeout=15) == 0, sup.output
            marker = f"--parent-pid {sup.pid}"
            left = [p.pid for p in psutil.process_iter(["cmdline"])
                    if marker in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE]
            assert left == [], f"left behind: {left}\n{sup.output}"


@pytest.mark.timeout(90)
def test_a_package_installed_or_a_requirements_file_changed_rebuilds_the_template(tmp_path: Path) -> None:
    root, env = template_project(tmp_path)
    with supervisor(["up"], root, env) as sup:
        url = sup.wait_url()
        template_pid(sup)
        (tmp_path / "site" / "newlib-1.0.dist-info").mkdir()  # as pip would leave it
        set_version(root, 11)
        sup.wait_for_output(r"template: packages were installed or removed in \S*site; rebuilding it in the "
                            r"background \(workers start as fresh interpreters meanwhile\)")
        wait_until(lambda: answer(url)["version"] == 11, 30, "version 11", lambda: sup.output)
        template_pid(sup, after=1)
        (root / "requirements.txt").write_text("newlib==1.0\n")
        set_version(root, 12)
        sup.wait_for_output(r"template: requirements\.txt changed; rebuilding it in the background")
        wait_until(lambda: answer(url)["version"] == 12, 30, "version 12", lambda: sup.output)
        assert sup.stop() == 0
