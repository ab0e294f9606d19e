"""Development reload against real processes: zero dropped requests, broken edits keep serving."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.loadgen import Load
from tests.support import (
    REPO,
    Running,
    base_env,
    free_port,
    gone,
    http_get,
    make_project,
    scaled,
    supervisor,
    wait_until,
)

# Copied into each test project and edited there: answers "<VERSION> <pid> <GREETING>".
APP = (REPO / "tests" / "apps" / "versioned.py").read_text()


def project(tmp_path: Path, workers: int = 1, stop_timeout: float = 10.0, dotenv: str = "GREETING=hello\n",
            extra: str = "") -> Path:
    return make_project(tmp_path, f"""
        [supervisor]
        stop_timeout = {stop_timeout}
        [server]
        port = {free_port()}
        [app]
        app = "app:app"
        workers = {workers}
        [reload]
        debounce = 0.05
        {extra}
        """, dotenv=dotenv, files={"app.py": APP})


def url_of(sup: Running) -> str:
    """The webapp URL from the first log line, before any worker has served."""
    return "http://" + sup.wait_for_output(r"listening on (\S+:\d+)").group(1)


def set_version(app: Path, version: int) -> None:
    app.write_text(re.sub(r"VERSION = \d+", f"VERSION = {version}", app.read_text()))


def body(url: str) -> str:
    status, _, raw = http_get(url + "/")
    assert status == 200
    return raw.decode()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_reloads_under_load_drop_no_request(tmp_path: Path, workers: int) -> None:
    root = project(tmp_path, workers=workers)
    with supervisor(["up"], root) as sup:
        url = sup.wait_url()
        wait_until(lambda: len(sup.worker_pids()) == workers, 30, "all workers", lambda: sup.output)
        load = Load("127.0.0.1", int(url.rsplit(":", 1)[1]), clients=4).start()
        wait_until(lambda: load.result.ok > 20, 20, "traffic flowing", lambda: sup.output)
        for version in range(2, 7):
            set_version(root / "app.py", version)
            prefix, reloads = f"{version} ", version - 1
            wait_until(lambda: any(b.startswith(prefix) for b in load.latest_bodies()),  # noqa: B023
                       30, f"version {version} serving", lambda: sup.output)
            wait_until(lambda: sup.output.count("reload: done") >= reloads,  # noqa: B023
                       30, f"reload {reloads} finished", lambda: sup.output)
        result = load.stop()
        assert result.failures == [], f"{len(result.failures)} failed requests: {result.failures[:5]}\n{sup.output}"
        serving = set(re.findall(r"worker pid (\d+) is serving", sup.output))
        assert len(serving) == 6 * workers, f"expected {6 * workers} worker pids, saw {sorted(serving)}"
        if workers == 1:  # every version was answered by its own process
            assert len({b.split()[1] for b in result.bodies}) == 6
        assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_syntax_error_keeps_old_version_serving(tmp_path: Path) -> None:
    root = project(tmp_path)
    app = root / "app.py"
    with supervisor(["up"], root) as sup:
        url = sup.wait_url()
        first = body(url)
        good = app.read_text()
        app.write_text(good + "\nVERSION = (\n")
        sup.wait_for_output(r"reload failed: a new worker failed to start; still serving the previous version")
        assert "SyntaxError" in sup.output
        assert body(url) == first, "the previous version must keep answering"
        app.write_text(good.replace("VERSION = 1", "VERSION = 2"))
        wait_until(lambda: body(url).startswith("2 "), 30, "the fixed version", lambda: sup.output)
        assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_streaming_response_does_not_block_reload_past_stop_deadline(tmp_path: Path) -> None:
    import http.client

    root = project(tmp_path, stop_timeout=2.0)
    with supervisor(["up"], root) as sup:
        url = sup.wait_url()
        old_pid = int(body(url).split()[1])
        port = int(url.rsplit(":", 1)[1])
        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        stream.request("GET", "/stream")
        response = stream.getresponse()
        assert response.read(5) == b"tick\n"
        set_version(root / "app.py", 2)
        wait_until(lambda: body(url).startswith("2 "), 30, "the new version", lambda: sup.output)
        # The old worker holds the stream open; it must be killed at the 2 s stop deadline.
        wait_until(lambda: gone(old_pid), 2.0 + 5.0, "the draining worker to be gone", lambda: sup.output)
        sup.wait_for_output(rf"worker pid {old_pid} stopped", timeout=5)
        stream.close()
        set_version(root / "app.py", 3)
        wait_until(lambda: body(url).startswith("3 "), 30, "a further reload", lambda: sup.output)
        assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_env_edit_changes_worker_environment_and_invalid_edit_keeps_worker(tmp_path: Path) -> None:
    root = project(tmp_path, extra="""
        [env.GREETING]
        type = "string"
        required = false
        [env.LIMIT]
        type = "integer"
        required = false
        """)
    env_file = root / ".env"
    with supervisor(["up"], root) as sup:
        url = sup.wait_url()
        assert body(url).endswith(" hello")
        env_file.write_text("GREETING=bonjour\n")
        wait_until(lambda: body(url).endswith(" bonjour"), 30, "the new greeting", lambda: sup.output)
        # The replaced worker accepts until its drain begins; wait for it to be gone.
        sup.wait_for_output(r"stopped: .*\(reload\)")
        serving = body(url)
        env_file.write_text("GREETING=broken\nLIMIT=many\n")
        sup.wait_for_output(r"reload failed: invalid configuration")
        assert re.search(r"\.env:2 LIMIT: 'many' is not an integer", sup.output), sup.output
        assert body(url) == serving, "an invalid .env must leave the running worker alone"
        env_file.write_text("LIMIT=3\n")  # GREETING removed from .env: gone in the new worker
        wait_until(lambda: body(url).endswith(" -"), 30, "GREETING to be unset", lambda: sup.output)
        assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_crash_looped_slot_in_development_waits_for_a_change(tmp_path: Path) -> None:
    root = project(tmp_path, extra="""
        [restart]
        initial_delay = 0.05
        crash_loop_failures = 2
        """)
    app = root / "app.py"
    good = app.read_text()
    app.write_text("raise RuntimeError('boom at import')\n")
    with supervisor(["up"], root) as sup:
        sup.wait_for_output(r"FATAL: crashed 2 times")
        sup.wait_for_output(r"waiting for a change")
        assert sup.proc.poll() is None, "development mode keeps the supervisor up"
        assert "boom at import" in sup.output
        # Meanwhile requests are answered at once with a 503 that says why, not left hanging.
        status, headers, raw = http_get(url_of(sup), timeout=5)
        assert status == 503 and headers["connection"] == "close"
        assert "boom at import" in raw.decode()
        # A change that is still broken is tried, and reported as a failed reload.
        app.write_text("raise RuntimeError('still broken')\n")
        sup.wait_for_output(r"reload failed: a new worker failed to start")
        assert "still broken" in sup.output
        app.write_text(good)
        url = sup.wait_url()
        wait_until(lambda: http_get(url + "/")[0] == 200, 30, "the fixed app, not the 503",
                   lambda: sup.output)
        assert body(url).startswith("1 ")
        assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_polling_mode_and_sighup_reread(tmp_path: Path) -> None:
    root = project(tmp_path)
    env = base_env(SUPERVISOR_RELOAD_POLL="true")
    with supervisor(["up"], root, env) as sup:
        url = sup.wait_url()
        assert "(polling)" in sup.output
        # watchfiles' poller compares modification times in whole seconds: edit in a later second.
        created = int((root / "app.py").stat().st_mtime)
        wait_until(lambda: int(time.time()) > created, 2, "the next second")
        set_version(root / "app.py", 2)
        wait_until(lambda: body(url).startswith("2 "), 30, "a polled change", lambda: sup.output)
        assert sup.stop() == 0
    # With reload off, .env changes apply on SIGHUP only.
    with supervisor(["up", "--no-reload"], root) as sup:
        url = sup.wait_url()
        assert "reload: watching" not in sup.output
        (root / ".env").write_text("GREETING=after-hup\n")
        sup.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: body(url).endswith(" after-hup"), 30, "SIGHUP to apply .env", lambda: sup.output)
        assert sup.stop() == 0


@pytest.mark.timeout(90)
def test_a_nul_byte_arriving_by_reload_changes_nothing(tmp_path: Path) -> None:
    """It used to be applied while the reload was reported failed; the next crash then failed to
    spawn a worker and stopped the supervisor."""
    root = project(tmp_path)
    with supervisor(["up"], root) as sup:
        url = sup.wait_url()
        serving = body(url)
        (root / ".env").write_text("GREETING=bad\x00value\n")
        sup.wait_for_output(r"reload failed: invalid configuration")
        assert re.search(r"\.env:1: holds a NUL byte", sup.output), sup.output
        assert body(url) == serving
        worker = int(serving.split()[1])
        psutil.Process(worker).kill()
        wait_until(lambda: (b := body(url)).endswith(" hello") and b.split()[1] != str(worker), 30,
                   "a new worker with the previous settings", lambda: sup.output)
        assert "internal error" not in sup.output and "Traceback" not in sup.output
        assert sup.stop() == 0


NOISY = """
import sys, time
from pathlib import Path

log = Path(sys.argv[1])
count = 0
while True:  # an app's log, rewritten every 10 ms while it serves
    count += 1
    with log.open("a") as out:
        out.write(f"request {count}\\n")
    Path(sys.argv[2]).write_text(str(count))
    time.sleep(0.01)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("poll", ["false", "true"])
def test_a_log_rewritten_every_10_ms_inside_the_tree_holds_no_reload_back(tmp_path: Path, poll: str) -> None:
    """The log written by the app, and the supervisor's own debug log (``up 2>> logs/dev.log``),
    both inside the watched tree: an edit's batch closes after its quiet period, not at the cap,
    and the debug lines about ignored changes do not feed themselves."""
    root = project(tmp_path / "project")
    (root / "logs").mkdir()
    dev_log, writes = root / "logs" / "dev.log", tmp_path / "writes"
    env = base_env(SUPERVISOR_RELOAD_POLL=poll)
    with dev_log.open("ab") as out:
        sup = subprocess.Popen([sys.executable, "-m", "supervisor", "up", "--log-level", "debug"], cwd=root,
                               env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    noisy = subprocess.Popen([sys.executable, "-c", NOISY, str(root / "logs" / "app.log"), str(writes)])

    def output() -> str:
        return dev_log.read_text(errors="replace")

    def written() -> int:
        return int(writes.read_text() or 0) if writes.exists() else 0

    def ignored_lines() -> int:
        return len(re.findall(r"reload: ignored a change to", output()))

    try:
        url = wait_until(lambda: re.search(r"Serving on (http://\S+)", output()), 30, "serving", output).group(1)
        wait_until(lambda: re.search(r"reload: ignored a change to (.*, )?logs/app\.log \(matches '\*\.log'",
                                     output()), 30, "the app's log seen and ignored", output)
        # No loop: while the app writes its log 100 more times, hardly any line about ignored
        # changes (one per file at most, when it starts changing after a rest).
        before, start = ignored_lines(), written()
        wait_until(lambda: written() >= start + 100, 30, "100 more writes of the app's log", output)
        assert ignored_lines() - before <= 2, output()
        if poll == "true":  # the poller compares modification times in whole seconds
            created = int((root / "app.py").stat().st_mtime)
            wait_until(lambda: int(time.time()) > created, 2, "the next second")
        set_version(root / "app.py", 2)
        wait_until(lambda: body(url).startswith("2 "), 30, "the edit served", output)
        wait_until(lambda: "reload: done" in output(), 30, "the reload finished", output)
        text = output()
        assert re.search(r"reload: file change: app\.py\n", text), text
        # The batch closed once app.py had been quiet for the debounce, despite the log's writes.
        closed = re.findall(r"reload: a batch of \d+ changed file\(s\) closed .*\((.*)\)", text)
        assert closed and all(reason.startswith("quiet for") for reason in closed), text
        assert noisy.poll() is None
    finally:
        noisy.kill()
        noisy.wait()
        if sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(scaled(20))
            except subprocess.TimeoutExpired:
                os.killpg(sup.pid, signal.SIGKILL)
                sup.wait(scaled(5))
    assert sup.returncode == 0, output()
