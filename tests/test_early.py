"""The first worker forked from the supervisor at start: it serves, it is watched, and an edit made
while it was starting (before the file watches were in place) still reloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from supervisor.reload.browser_events import PATH
from supervisor.workers.early import LIVERELOAD_PATH
from tests.support import REPO, base_env, free_port, http_get, make_project, supervisor, wait_until

APP = """
    import json, os
    import layer
    if not os.path.exists("edited.txt"):
        # An edit landing right after this worker read layer.py, long before the supervisor's
        # file watches exist: exactly once, the first time the app is imported.
        open("edited.txt", "w").close()
        with open("layer.py", "w") as source:
            source.write("VERSION = 2\\n")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = json.dumps({"version": layer.VERSION, "pid": os.getpid()}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
"""


def project(root: Path, extra: str = "") -> Path:
    return make_project(root, f"""
        [server]
        port = {free_port()}
        [app]
        app = "app:app"
        [database]
        wait = false
        [status]
        port = 0
        {extra}
        """, files={"app.py": APP, "layer.py": "VERSION = 1\n"})


def answer(url: str) -> dict[str, int]:
    status, _, raw = http_get(url + "/", timeout=10)
    assert status == 200, raw
    return json.loads(raw)  # type: ignore[no-any-return]


def env() -> dict[str, str]:
    environ = base_env(PYTHONPATH=str(REPO))
    environ.pop("PYTHONDONTWRITEBYTECODE", None)
    return environ


def test_the_live_reload_path_is_the_status_apis() -> None:
    assert LIVERELOAD_PATH == PATH


@pytest.mark.timeout(90)
def test_the_first_worker_is_forked_from_the_supervisor_and_an_edit_made_meanwhile_reloads(tmp_path: Path) -> None:
    root = project(tmp_path)
    with supervisor(["up"], root, env()) as sup:
        url = sup.wait_url()
        first = int(sup.wait_for_output(r"web\.0: started worker pid (\d+)").group(1))
        child = psutil.Process(first)
        assert child.ppid() == sup.pid and child.cmdline() == psutil.Process(sup.pid).cmdline()
        assert os.getsid(first) == first  # a session of its own, as every worker
        sup.wait_for_output(r"reload: .*layer\.py changed while the first worker was starting; reloading it")
        body = wait_until(lambda: (b := answer(url))["version"] == 2 and b, 30, "the edited version",
                          lambda: sup.output)
        assert body["pid"] != first
        assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_without_a_template_the_first_worker_is_a_fresh_interpreter(tmp_path: Path) -> None:
    root = project(tmp_path, extra="[reload]\ntemplate = false")
    (root / "edited.txt").touch()  # no edit at start in this one
    with supervisor(["up"], root, env()) as sup:
        url = sup.wait_url()
        pid = answer(url)["pid"]
        assert "supervisor.workers.worker" in psutil.Process(pid).cmdline()
        assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_a_database_to_wait_for_keeps_the_first_worker_after_it(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / "edited.txt").touch()
    port = free_port()  # nothing listens: the wait goes on, and no worker may start meanwhile
    (root / "supervisor.toml").write_text((root / "supervisor.toml").read_text().replace(
        "wait = false", "wait = true\ninitial_delay = 0.05\nmax_delay = 0.1\ndeadline = 60"))
    environ = {**env(), "DATABASE_URL": f"postgresql://app:pw@127.0.0.1:{port}/app"}
    with supervisor(["up"], root, environ) as sup:
        sup.wait_for_output(r"database: attempt 2:")
        assert sup.worker_pids() == [], sup.output


@pytest.mark.timeout(60)
def test_a_first_worker_never_claimed_is_ended_with_what_it_started(tmp_path: Path) -> None:
    """In a fresh interpreter (it forks the process it runs in): fork a first worker, see it serve,
    then end it unclaimed, as a supervisor stopping before its first slot started would."""
    import subprocess
    import sys
    import textwrap

    from tests.support import APPS

    script = textwrap.dedent(f"""
        import ctypes, http.client, json, os, sys, time
        from pathlib import Path
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER, as the supervisor is
        from supervisor.workers.early import fork_first_worker
        from supervisor.workers.ports import bind_listener
        from supervisor.workers.process import WorkerSpec

        sock = bind_listener("127.0.0.1", 0)
        port = sock.getsockname()[1]
        spec = WorkerSpec(app="rawapp:app", factory=False, listen_fd=sock.fileno(), cwd=Path({str(APPS)!r}),
                          environ=dict(os.environ))
        first = fork_first_worker(spec, closing=[])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # queued until it serves
        conn.request("GET", "/spawn?seconds=60&session=1")
        body = json.loads(conn.getresponse().read())
        first.close()

        def ended(pid):
            try:
                with open(f"/proc/{{pid}}/stat") as stat:
                    return stat.read().rpartition(")")[2].split()[0] == "Z"
            except FileNotFoundError:
                return True

        deadline = time.monotonic() + 10  # SIGKILL is delivered, not waited for
        while not all(map(ended, (first.pid, body["pid"]))) and time.monotonic() < deadline:
            time.sleep(0.01)
        print(json.dumps({{"worker": first.pid, "gone": [ended(first.pid), ended(body["pid"])]}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], env=env(), capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["gone"] == [True, True], (result, done.stderr)
