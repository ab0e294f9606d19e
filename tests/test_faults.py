"""Fault injection against the real supervisor: kills, a database stopped hard, descriptors and disk
running out, a frozen worker, hostile clients. Marked ``faults`` (``python -m pytest -m faults``).

Each test names the fault and asserts what must hold through it: every crash recovered, no zombie
and no orphan, the supervisor's descriptors and memory flat, the port free, no state change without
the token, and never a traceback or an internal error. Real processes, sockets and HTTP on
loopback; every wait polls an observable effect with a deadline (scaled by ``TIMEOUT_SCALE``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.dbsupport import SECRET, auth, webapp_project
from tests.loadgen import Load, LoadResult
from tests.pgserver import APP_PASSWORD, PgServer
from tests.support import (
    Running,
    app_project,
    base_env,
    free_port,
    gone,
    http_get,
    http_json,
    port_is_free,
    scaled,
    supervisor,
    wait_until,
)
from tests.test_status_limits import closed_by_server
from tests.test_status_process import post, status, status_url

pytestmark = pytest.mark.faults

UP = ["up", "--no-reload"]
MIN_UPTIME = 0.3
CRASH_LOOP = r"crash.loop|crashed \d+ times"  # the FATAL line, in whatever words


def project(root: Path, *, port: int | None = None, workers: int = 1, server_extra: str = "",
            extra: str = "", crash_loop_failures: int = 3, initial_delay: float = 0.05,
            max_delay: float = 0.2, stop_timeout: float = 10.0) -> Path:
    """A rawapp project with the status API on any free port and a short ``min_uptime``."""
    root = app_project(root, port=port if port is not None else free_port(), workers=workers,
                       server_extra=server_extra, extra=extra, status_port=0, stop_timeout=stop_timeout)
    toml = root / "supervisor.toml"
    text = toml.read_text()
    for key, value in (("crash_loop_failures", crash_loop_failures), ("initial_delay", initial_delay),
                       ("max_delay", max_delay)):
        text = re.sub(rf"^{key} = \S+$", f"{key} = {value}", text, count=1, flags=re.M)
    toml.write_text(text.replace("[restart]\n", f"[restart]\nmin_uptime = {MIN_UPTIME}\n", 1))
    return root


def app_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def zombies(run: Running) -> list[int]:
    """The supervisor's children that exited and were not reaped."""
    try:
        return [c.pid for c in psutil.Process(run.pid).children() if c.status() == psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def slot(api: str, index: int = 0) -> dict[str, Any]:
    return status(api)["workers"][index]  # type: ignore[no-any-return]


def serving(api: str, run: Running, not_pid: int | None = None, index: int = 0) -> dict[str, Any]:
    """The slot once a worker other than ``not_pid`` runs in it and answers."""
    def check() -> dict[str, Any] | None:
        worker = slot(api, index)
        return worker if worker["state"] == "running" and worker["pid"] not in (None, not_pid) else None
    return wait_until(check, 30, f"a running worker other than {not_pid}", lambda: run.output)


def healthy(api: str, run: Running, pid: int) -> None:
    """Wait until worker ``pid`` has served past ``min_uptime``: its exit is then a crash of a
    healthy worker (restart at once), not a failed start (backoff, counted toward a crash loop)."""
    def check() -> bool:
        worker = slot(api)
        return (worker["pid"] == pid and worker["ready_at"] is not None
                and time.time() - worker["ready_at"] > MIN_UPTIME + 0.1)
    wait_until(check, 30, f"worker {pid} to serve past min_uptime", lambda: run.output)


def assert_clean(output: str) -> None:
    assert "Traceback" not in output, output
    assert not re.search(r"internal error", output, re.I), output


@contextlib.contextmanager
def load(port: int, clients: int = 2, path: str = "/pid") -> Iterator[Load]:
    """Keep-alive clients on the app port for the block (bounded by the deadline in any case)."""
    running = Load("127.0.0.1", port, path, clients=clients, max_seconds=scaled(300)).start()
    try:
        yield running
    finally:
        running.stop()


# ----- worker kills ----------------------------------------------------------------------------

KILLS = 50
WARM_UP = 5  # kills before the baseline: the first restarts allocate what later ones reuse


@pytest.mark.timeout(300)
def test_fifty_worker_kills_under_load_are_each_recovered_with_flat_descriptors_and_memory(
        tmp_path: Path) -> None:
    root = project(tmp_path)
    with supervisor(UP, root) as run:
        url = run.wait_url()
        api = status_url(root, run)
        me = psutil.Process(run.pid)
        pid = serving(api, run)["pid"]
        with load(app_port(url)) as clients:
            baseline: tuple[int, int] | None = None
            for kill in range(1, KILLS + 1):
                healthy(api, run, pid)
                os.kill(pid, signal.SIGKILL)
                new = serving(api, run, not_pid=pid)["pid"]
                wait_until(lambda: http_json(url + "/pid")[1]["pid"] == new, 20,  # noqa: B023
                           f"worker {new} to answer after kill {kill}", lambda: run.output)
                wait_until(lambda: not zombies(run), 10, f"no zombie after kill {kill}", lambda: run.output)
                assert wait_until(lambda: gone(pid), 10, f"killed worker {pid} reaped",  # noqa: B023
                                  lambda: run.output)
                if kill == WARM_UP:
                    baseline = (me.num_fds(), me.memory_info().rss)
                pid = new
            served: LoadResult = clients.result
        assert baseline is not None
        fds, rss = me.num_fds(), me.memory_info().rss
        doc = slot(api)
        assert doc["restarts"] == KILLS, doc
        assert served.ok > KILLS, "the clients got answers between the kills"
        # Flat: no descriptor per restart, no memory per restart (45 restarts after the baseline).
        assert fds <= baseline[0] + 2, (baseline, fds)
        assert rss - baseline[1] < 3 * 2**20, f"RSS grew by {(rss - baseline[1]) / 2**20:.1f} MiB"
        assert not re.search(CRASH_LOOP, run.output, re.I), run.output

        # A burst: each new worker killed as soon as it exists, so none serves min_uptime.
        killed = {pid}
        os.kill(pid, signal.SIGKILL)

        def burst() -> bool:
            if slot(api)["state"] == "fatal":
                return True
            for child in run.worker_pids():
                if child not in killed:
                    killed.add(child)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
            return False
        wait_until(burst, 30, "the crash loop to engage", lambda: run.output, interval=0.01)
        assert len(killed) <= 3 + 1, killed  # three failed starts (and a straggler)
        run.wait_for_output(CRASH_LOOP)
        # Nothing serves: the supervisor answers on the app port itself, and reaped every worker.
        assert wait_until(lambda: http_get(url + "/pid")[0] == 503, 10, "the supervisor's 503",
                          lambda: run.output)
        wait_until(lambda: not zombies(run) and all(gone(p) for p in killed), 10, "every killed worker reaped",
                   lambda: run.output)
        assert run.stop() == 0
    assert_clean(run.output)


# ----- supervisor kills ------------------------------------------------------------------------

SUPERVISOR_KILLS = 20


def descendants(pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(240)
def test_twenty_supervisor_kills_leave_no_worker_and_the_port_free_each_time(tmp_path: Path) -> None:
    """Each start takes the same port with ``strict_port``: a port still held would be exit 4."""
    port = free_port()
    root = project(tmp_path, port=port, server_extra="strict_port = true")
    for kill in range(1, SUPERVISOR_KILLS + 1):
        with supervisor(UP, root) as run:
            url = run.wait_url()
            assert http_json(url + "/pid")[0] == 200
            family = descendants(run.pid)  # the workers and anything they started
            assert family, run.output
            run.proc.send_signal(signal.SIGKILL)
            assert run.wait_exit() == -signal.SIGKILL
            # PR_SET_PDEATHSIG: at once, not at some later poll; the deadline is the bound.
            wait_until(lambda: all(gone(p) for p in family), 2.0,  # noqa: B023
                       f"every worker to die with the supervisor (kill {kill})", lambda: run.output)
            assert wait_until(lambda: port_is_free(port), 2.0, f"the port to be free (kill {kill})",
                              lambda: run.output)
        assert_clean(run.output)


@pytest.mark.xfail(strict=False, reason="a plain child a worker starts (its own process group, not detached) "
                                        "outlives a SIGKILLed supervisor: only the worker has PR_SET_PDEATHSIG")
@pytest.mark.timeout(60)
def test_a_child_of_a_worker_dies_with_a_sigkilled_supervisor(tmp_path: Path) -> None:
    with supervisor(UP, project(tmp_path)) as run:
        url = run.wait_url()
        child = http_json(url + "/spawn?seconds=30")[1]["pid"]
        try:
            run.proc.send_signal(signal.SIGKILL)
            run.wait_exit()
            wait_until(lambda: gone(child), 3.0, f"the worker's child {child} to end", lambda: run.output)
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(child).kill()  # ours: the app started it for this test


# ----- the database stopped hard ---------------------------------------------------------------

OUTAGE = 10.0  # seconds the database stays down


@pytest.mark.timeout(180)
def test_postgresql_stopped_hard_under_load_turns_readiness_503_and_back_without_a_restart(
        tmp_path: Path, pg: PgServer) -> None:
    database = pg.create_database("faults_outage")
    root = webapp_project(tmp_path, probe_interval=0.3)
    toml = root / "supervisor.toml"
    toml.write_text(toml.read_text().replace("[status]\nenabled = false", "[status]\nport = 0"))
    env = base_env(BETTER_AUTH_SECRET=SECRET, DATABASE_URL=pg.url(database=database))
    with supervisor(UP, root, env) as run:
        url = run.wait_url(60)
        api = status_url(root, run)
        pid = slot(api)["pid"]

        def probes() -> tuple[int, int]:
            return http_get(api + "/readyz")[0], http_get(url + "/health")[0]
        assert wait_until(lambda: probes() == (200, 200), 30, "ready with the database", lambda: run.output)
        with load(app_port(url), path="/") as clients:  # the index needs no database
            pg.stop("immediate")  # a crash: no shutdown checkpoint, clients cut off
            stopped = time.monotonic()
            wait_until(lambda: probes() == (503, 503), 20, "/readyz and /health to turn 503", lambda: run.output)
            while time.monotonic() - stopped < OUTAGE:  # the outage: the supervisor must live through it
                assert run.proc.poll() is None, run.output
                assert http_get(api + "/livez")[0] == 200
                assert probes() == (503, 503), run.output
                time.sleep(0.5)  # pacing the checks over the outage, not synchronisation
            pg.start()
            wait_until(lambda: probes() == (200, 200), 30, "/readyz and /health back to 200", lambda: run.output)
            served = clients.result
        assert served.ok > 0 and not served.failures, served.failures[:5]
        worker = slot(api)
        assert (worker["pid"], worker["restarts"], worker["state"]) == (pid, 0, "running"), worker
        assert status(api)["database"]["state"] == "ok", run.output
        assert run.stop() == 0
    assert_clean(run.output)
    assert APP_PASSWORD not in run.output


# ----- descriptors run out ---------------------------------------------------------------------


def limited_files(limit: int) -> Any:
    """A ``preexec_fn``: soft and hard RLIMIT_NOFILE at ``limit``, so ``up`` cannot raise it."""
    def preexec() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return preexec


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that never send a byte (the backlog takes what is not accepted)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        yield socks
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.timeout(120)
def test_descriptors_exhausted_in_the_worker_and_in_the_supervisor_are_survived(tmp_path: Path) -> None:
    # The supervisor's own restart policy, as a user has it: failed starts back off for seconds.
    root = project(tmp_path, extra="max_connections = 10000\nheader_timeout = 120\n", crash_loop_failures=5,
                   initial_delay=0.5, max_delay=5)
    # asyncio's loop: out of descriptors, uvloop's libuv closes new connections and logs nothing
    # (the one guarantee it does not keep, see the README); "auto" picks it when installed.
    toml = root / "supervisor.toml"
    toml.write_text(toml.read_text().replace("[app]\n", '[app]\nloop = "asyncio"\n', 1))
    with supervisor(UP, root, preexec_fn=limited_files(64)) as run:
        url = run.wait_url()
        api = status_url(root, run)
        pid = serving(api, run)["pid"]
        worker_error = rf"web\.0\s+{pid}\s*\|.*cannot accept connections: Too many open files"
        # The worker out of descriptors: idle connections it accepted until accept failed.
        with idle_connections(app_port(url), 100):
            run.wait_for_output(worker_error)
            assert slot(api)["pid"] == pid  # the supervisor still answers and nothing restarted
        wait_until(lambda: http_json(url + "/pid", timeout=2)[1]["pid"] == pid, 20,
                   "the worker to answer once its descriptors are free", lambda: run.output)
        assert len(re.findall(worker_error, run.output)) == 1, "reported once per interval, not per attempt"

        # The supervisor out of descriptors when its worker crashes: the restart waits and retries.
        with idle_connections(app_port(api), 100):
            run.wait_for_output(r"supervisor: cannot accept connections: Too many open files")
            os.kill(pid, signal.SIGKILL)
            run.wait_for_output(r"could not be started: Too many open files; restarting in")
        new = serving(api, run, not_pid=pid)["pid"]
        assert http_json(url + "/pid")[1]["pid"] == new
        assert slot(api)["state"] == "running"
        assert run.stop() == 0
    assert_clean(run.output)


# ----- the runtime directory full or unwritable ------------------------------------------------


@contextlib.contextmanager
def full_runtime_dir(path: Path) -> Iterator[str]:
    """``path`` as a directory nothing more can be written to; yields the error writes will meet.

    A 64 KiB tmpfs filled to the last byte where we may mount one (root), else (a user) a
    directory without write permission. Unmounted at the end.
    """
    path.mkdir(mode=0o700)
    if os.geteuid() != 0:
        path.chmod(0o500)
        try:
            yield "Permission denied"
        finally:
            path.chmod(0o700)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}), and root writes anyway")
    try:
        with contextlib.suppress(OSError), open(path / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        with pytest.raises(OSError):  # full: not even a new, empty file's first block
            (path / "probe").write_text("x" * 4096)
        yield "No space left on device"
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.mark.timeout(90)
def test_a_full_runtime_directory_is_logged_and_serving_and_restarts_go_on(tmp_path: Path) -> None:
    root = project(tmp_path / "project")
    with full_runtime_dir(root / ".supervisor") as error, supervisor(UP, root) as run:
        url = run.wait_url()
        run.wait_for_output(rf"status: cannot write the state and token files in \S+: {error}")
        api = run.wait_for_output(r"status: API and dashboard on (http://\S+)").group(1)
        assert http_get(api + "/livez")[0] == 200
        pid = http_json(url + "/pid")[1]["pid"]
        healthy(api, run, pid)
        os.kill(pid, signal.SIGKILL)
        new = serving(api, run, not_pid=pid)["pid"]
        assert http_json(url + "/pid")[1]["pid"] == new
        assert run.stop() == 0
    assert_clean(run.output)


# ----- a frozen worker -------------------------------------------------------------------------


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        return http_get(url + "/pid", timeout=timeout)[0] == 200
    except OSError:  # a timeout: accepted by the kernel, never answered
        return False


@pytest.mark.timeout(90)
def test_a_sigstopped_worker_without_hang_detection_is_kept_and_a_stop_is_bounded(tmp_path: Path) -> None:
    """Development mode leaves ``[app] hang_timeout`` off: the supervisor stays responsive, keeps
    the frozen worker (same pid, no restart), gets it back on SIGCONT, and a stop is bounded by
    stop_timeout (SIGKILL reaches a stopped process; SIGTERM waits for SIGCONT)."""
    root = project(tmp_path, stop_timeout=2.0)
    with supervisor(UP, root) as run:
        url = run.wait_url()
        api = status_url(root, run)
        pid = serving(api, run)["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            assert not answers(url), "a stopped worker cannot answer"
            worker = slot(api)  # the supervisor itself answers at once
            assert (worker["pid"], worker["restarts"]) == (pid, 0), worker
        finally:
            os.kill(pid, signal.SIGCONT)
        assert wait_until(lambda: answers(url), 10, "the worker to answer after SIGCONT", lambda: run.output)
        assert slot(api)["pid"] == pid

        os.kill(pid, signal.SIGSTOP)  # frozen at the stop: bounded by stop_timeout, then SIGKILL
        started = time.monotonic()
        assert run.stop() == 0
        assert time.monotonic() - started < 2.0 + scaled(5), run.output
        assert wait_until(lambda: gone(pid), 5, "the frozen worker to be gone", lambda: run.output)
    assert_clean(run.output)


HANG_TIMEOUT = 2.0  # the shortest allowed: two heartbeats of the default interval (1 s)


@pytest.mark.timeout(90)
def test_a_sigstopped_worker_is_found_hung_replaced_and_killed(tmp_path: Path) -> None:
    root = project(tmp_path, stop_timeout=2.0)
    toml = root / "supervisor.toml"
    toml.write_text(toml.read_text().replace("[app]\n", f"[app]\nhang_timeout = {HANG_TIMEOUT}\n", 1))
    with supervisor(UP, root) as run:
        url = run.wait_url()
        api = status_url(root, run)
        pid = serving(api, run)["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            new = serving(api, run, not_pid=pid)["pid"]
            assert wait_until(lambda: http_json(url + "/pid", timeout=1)[1]["pid"] == new, 20,
                              "the replacement to answer", lambda: run.output)
            assert wait_until(lambda: gone(pid), 10, "the stopped worker killed", lambda: run.output)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        assert re.search(rf"\b{pid}\b.*\bhung\b|\bhung\b.*\b{pid}\b", run.output), run.output  # logged, with its pid
        assert run.stop() == 0
    assert not re.search(r"internal error", run.output, re.I), run.output  # the dumped stacks are expected


# ----- hostile clients -------------------------------------------------------------------------


def exchange(port: int, data: bytes | list[bytes], timeout: float = 5.0) -> int | None:
    """Send ``data`` (a list: in pieces) on a fresh connection; the status code the server answered,
    or None if it closed (or reset) the connection without an answer. Fails if the server neither
    answers nor closes within ``timeout``."""
    with socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout)) as sock:
        received = b""
        try:
            for piece in data if isinstance(data, list) else [data]:
                sock.sendall(piece)
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received:
                    break
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed on us mid-send: the server refused to read more
        except TimeoutError:
            raise AssertionError(f"neither an answer nor a close within {timeout}s for {data!r:.120}") from None
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", received)
    return int(match.group(1)) if match else None


def refused(code: int | None) -> bool:
    """A hostile request's acceptable outcomes: a 4xx, or the connection closed."""
    return code is None or 400 <= code < 500


def request(method: str, path: str, host: str, headers: dict[str, str] | None = None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    if body and "Content-Length" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


MALFORMED = [
    b"\x00\xff\xfe garbage \r\n\r\n",
    b"GET /\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"a" * 200_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n",
]
# Odd or outsized, but harmless to a lenient parser: any answer, or a close, as long as one comes.
TOLERATED = [
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(5000)) + b"\r\n",
]


def slow_loris(port: int, path: str, limit: float) -> float:
    """Seconds until the server closes a connection that trickles header bytes (a byte every 0.25 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        sent = iter(b"X-Slow: " + b"a" * 400)

        def trickle() -> None:
            with contextlib.suppress(StopIteration, OSError):
                sock.send(bytes([next(sent)]))
        return closed_by_server(sock, limit, trickle)


@pytest.mark.timeout(120)
def test_hostile_clients_of_the_status_api_get_4xx_or_a_close_and_change_nothing(tmp_path: Path) -> None:
    root = project(tmp_path, extra="max_connections = 16\nheader_timeout = 2\n")
    with supervisor(UP, root) as run:
        run.wait_url()
        api = status_url(root, run)
        port, host = app_port(api), api.removeprefix("http://")
        pid = serving(api, run)["pid"]
        token = (root / ".supervisor" / "status.token").read_text().strip()
        me = psutil.Process(run.pid)
        fds = me.num_fds()

        wrong = ["", "Bearer", "Bearer ", f"Bearer {token[:-1]}", f"Bearer {token}x", f"bearer{token}",
                 "Bearer " + "x" * 20_000, f"Basic {token}", "Bearer \u00e9\u00e8", token, f"Bearer {token} extra"]
        for path in ("/restart", "/stop"):
            for value in wrong:
                headers = {"Authorization": value} if value else {}
                code = exchange(port, request("POST", path, host, headers))  # latin-1 on the wire
                assert refused(code), (path, value[:40], code)
            # A body that claims a gigabyte, and sends megabytes of it, without the token.
            huge = request("POST", path, host, {"Content-Length": str(2**30)})
            assert refused(exchange(port, [huge, *([b"x" * 2**20] * 8)])), path
            assert refused(exchange(port, request("POST", path, host, {"Content-Type": "application/json"},
                                                  b'{"not": json')))
        for data in MALFORMED:
            assert refused(exchange(port, data)), data[:60]
        for data in TOLERATED:
            exchange(port, data)
        # Slow loris: a header byte at a time, closed at the header deadline (2 s).
        assert slow_loris(port, "/status", scaled(30)) < 2 + scaled(5), run.output
        with idle_connections(port, 200):  # far past max_connections: older idle ones are closed
            assert wait_until(lambda: http_get(api + "/livez")[0] == 200, 10, "a probe through the flood",
                              lambda: run.output)
        # Nothing changed: same worker, no restart, still running; descriptors back where they were.
        doc = status(api)
        assert doc["supervisor"]["state"] == "running", doc["supervisor"]
        assert (doc["workers"][0]["pid"], doc["workers"][0]["restarts"]) == (pid, 0), doc["workers"][0]
        wait_until(lambda: me.num_fds() <= fds + 2, 10, "the supervisor's descriptors back to their count",
                   lambda: run.output)
        # The right token still works.
        assert post(api, "/restart", {"Authorization": f"Bearer {token}"}) == 202
        serving(api, run, not_pid=pid)
        assert run.stop() == 0
    assert_clean(run.output)
    assert token not in run.output


@pytest.mark.timeout(120)
def test_hostile_clients_of_the_app_port_get_4xx_or_a_close_and_the_worker_keeps_serving(tmp_path: Path) -> None:
    """The example webapp (SQLite) behind its worker: body caps, tokens and h11's parser hold."""
    root = webapp_project(tmp_path)
    toml = root / "supervisor.toml"
    toml.write_text(toml.read_text().replace("[status]\nenabled = false", "[status]\nport = 0"))
    with supervisor(UP, root, base_env(BETTER_AUTH_SECRET=SECRET)) as run:
        url = run.wait_url(60)
        api = status_url(root, run)
        port, host = app_port(url), url.removeprefix("http://")
        pid = serving(api, run)["pid"]
        user = auth("hostile")["Authorization"]
        json_type = {"Content-Type": "application/json"}

        wrong = ("", "Bearer", "Bearer x.y.z", f"{user}x", "Bearer " + "x" * 20_000, user.replace("Bearer", "Basic"))
        for value in wrong:
            headers = {**json_type, **({"Authorization": value} if value else {})}
            code = exchange(port, request("POST", "/notes", host, headers, b'{"title": "t"}'))
            assert refused(code), (value[:40], code)
        # Bodies: a gigabyte announced (413 before reading), one streamed in chunks past the cap,
        # and JSON that does not parse.
        huge = request("POST", "/notes", host, {**json_type, "Authorization": user, "Content-Length": str(2**30)})
        assert refused(exchange(port, [huge, *([b"x" * 2**20] * 4)]))
        chunked = request("POST", "/notes", host, {**json_type, "Authorization": user,
                                                   "Transfer-Encoding": "chunked"})
        chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
        assert refused(exchange(port, [chunked, *([chunk] * 4)]))
        for body in (b'{"title": ', b"\xff\xfe", b"[]", b'{"title": "' + b"x" * 5000 + b'"}'):
            assert refused(exchange(port, request("POST", "/notes", host, {**json_type, "Authorization": user}, body)))
        for data in MALFORMED:
            assert refused(exchange(port, data)), data[:60]
        for data in TOLERATED:
            exchange(port, data)

        # Idle connections by the hundred and a slow loris: others are still served meanwhile.
        with idle_connections(port, 300), socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for byte in b"X-Slow: aaaa":
                slow.send(bytes([byte]))
                assert http_get(url + "/", timeout=5)[0] == 200
        assert http_get(url + "/health")[0] == 200
        worker = slot(api)
        assert (worker["pid"], worker["restarts"], worker["state"]) == (pid, 0, "running"), worker
        assert run.stop() == 0
    assert_clean(run.output)
