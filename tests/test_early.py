"""The first worker started early: the process ``up`` forks before importing the supervisor
(supervisor.warm.zygote) made into the first worker, or a fork of the supervisor. It serves, it
is watched, an edit made while it was starting (before the file watches were in place) still
reloads, and when it is not used, nothing of it is left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from supervisor.reload.browser_events import PATH
from supervisor.warm.early import LIVERELOAD_PATH
from tests.support import REPO, base_env, free_port, gone, http_get, make_project, run_cli, supervisor, wait_until

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
    with supervisor(["up", "--log-level", "debug"], root, env()) as sup:
        url = sup.wait_url()
        first = int(sup.wait_for_output(r"web\.0: started worker pid (\d+)").group(1))
        sup.wait_for_output(rf"first worker \(pid {first}\) is the process forked when up started")
        child = psutil.Process(first)
        assert child.ppid() == sup.pid and child.cmdline() == psutil.Process(sup.pid).cmdline()
        assert os.getsid(first) == first  # a session of its own, as every worker
        # The supervisor raised its open-file limit after forking it: the worker has it too.
        assert child.rlimit(psutil.RLIMIT_NOFILE) == psutil.Process(sup.pid).rlimit(psutil.RLIMIT_NOFILE)
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
        assert "supervisor.child.worker" in psutil.Process(pid).cmdline()
        # The process forked at start for a first worker was not used, and is gone.
        own = psutil.Process(sup.pid).cmdline()
        assert [c.pid for c in psutil.Process(sup.pid).children() if c.cmdline() == own] == []
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
        from supervisor.warm.early import fork_first_worker
        from supervisor.listen.ports import bind_listener
        from supervisor.spawn.process import WorkerSpec

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


@pytest.mark.timeout(60)
def test_a_configuration_error_leaves_no_process_behind(tmp_path: Path) -> None:
    root = project(tmp_path, extra="[restart]\nmax_restarts = -1")
    done = run_cli(["up"], root, env())  # returns once its output pipes close: nothing holds them
    assert done.returncode == 2, done.stderr
    assert "max_restarts" in done.stderr and "Traceback" not in done.stderr
    left = [proc.pid for proc in psutil.process_iter(["cwd", "cmdline"])
            if proc.info["cwd"] == str(root) and "supervisor" in " ".join(proc.info["cmdline"] or [])]
    assert left == []


ZYGOTE_SCRIPT = """
import os, signal, sys
from supervisor.warm.zygote import start_zygote
zygote = start_zygote()
print(zygote.pid, flush=True)
if sys.argv[1] == "interrupt":
    os.kill(zygote.pid, signal.SIGINT)  # a Ctrl-C in the terminal, as early as it can come
    zygote.sock.close()  # then the supervisor's end closes, as when it stops before using it
    _, status = os.waitpid(zygote.pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
else:
    sys.stdin.read()  # until the test kills this process
"""


@pytest.mark.timeout(60)
def test_the_process_forked_at_start_ignores_ctrl_c_and_ends_when_the_supervisor_goes(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", ZYGOTE_SCRIPT, "interrupt"], env=env(), capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 0 and done.stdout.split()[1] == "0", (done.stdout, done.stderr)
    assert done.stderr == ""  # no KeyboardInterrupt traceback

    # The supervisor SIGKILLed before it used the child: the child sees its end close, and ends.
    proc = subprocess.Popen([sys.executable, "-c", ZYGOTE_SCRIPT, "wait"], env=env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        proc.kill()
        proc.wait(10)
        wait_until(lambda: gone(pid), 30, "the process forked at start to end with its supervisor")
    finally:
        proc.kill()
        proc.wait(10)
