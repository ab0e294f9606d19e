"""``python -m supervisor up`` as a real process: real workers, sockets, signals and HTTP.

The apps under ``tests/apps`` are served through ``[app] app`` and ``app_dir``; the file watcher,
status API and database wait are switched off so each test exercises only the core.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from supervisor.config.settings import resolve_settings
from supervisor.contract import Command, Plugin, Scale, Signalled
from supervisor.listen.ports import bind_port
from supervisor.runner import Runner
from supervisor.spawn.process import LineSink, WorkerProcess, WorkerSpec, spawn_worker
from tests.dbsupport import alembic
from tests.support import (
    Running,
    app_project,
    base_env,
    free_port,
    gone,
    http_get,
    http_json,
    port_is_free,
    supervisor,
    wait_until,
)

UP = ["up", "--no-reload"]


def slot_pids(run: Running) -> dict[int, int]:
    """The latest pid the supervisor reported as serving, per slot."""
    found = re.findall(r"web\.(\d+): worker pid (\d+) is serving", run.output)
    return {int(slot): int(pid) for slot, pid in found}


def kill_and_await_successor(run: Running, old: int) -> int:
    """SIGKILL slot 0's worker ``old``; return the pid of the worker that replaces it."""
    psutil.Process(old).send_signal(signal.SIGKILL)
    run.wait_for_output(rf"worker pid {old} killed by SIGKILL \(crash\) .*; restarting", 10)
    return wait_until(lambda: slot_pids(run).get(0) != old and slot_pids(run).get(0), 20,
                      "a new worker serving", lambda: run.output)


def zombie_children(run: Running) -> list[int]:
    return [c.pid for c in psutil.Process(run.pid).children()
            if c.status() == psutil.STATUS_ZOMBIE]


def heartbeat_pipe(pid: int) -> str:
    """The pipe a worker's heartbeat writes to (the descriptor its command line names)."""
    argv = psutil.Process(pid).cmdline()
    return os.readlink(f"/proc/{pid}/fd/{argv[argv.index('--heartbeat-fd') + 1]}")


def stray_pipes(pid: int) -> list[str]:
    """Pipes a worker holds besides its own stdout, stderr and heartbeat: leaked descriptors.

    A pipe whose both ends the worker holds is its event loop's own wake-up pipe (uvloop's libuv
    opens two), not one inherited from the supervisor or another worker."""
    fds = Path(f"/proc/{pid}/fd")
    own = heartbeat_pipe(pid)
    targets = {fd.name: os.readlink(fd) for fd in fds.iterdir()}
    counts = collections.Counter(targets.values())
    return [f"{name} -> {target}" for name, target in targets.items()
            if name not in ("1", "2") and target.startswith("pipe:") and target != own and counts[target] < 2]


def listening_sockets(pid: int) -> list[str]:
    """The listening TCP sockets ``pid`` holds, as ``socket:[inode]``: the same inode is the same socket."""
    return [os.readlink(f"/proc/{pid}/fd/{c.fd}") for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN]


def served_pids(url: str, want: set[int], run: Running, timeout: float = 20.0) -> set[int]:
    """Request ``/pid`` over fresh connections until every pid in ``want`` has answered."""
    seen: set[int] = set()

    def all_seen() -> bool:
        seen.add(http_json(url + "/pid")[1]["pid"])
        return want <= seen

    wait_until(all_seen, timeout, f"answers from pids {want} (seen {seen})", lambda: run.output,
               interval=0.01)
    return seen


@pytest.fixture
def taken() -> Iterator[int]:
    """A port this test process is listening on."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        yield squatter.getsockname()[1]


Outcome = list[tuple[int, bytes] | BaseException]


def request_in_background(url: str, results: Outcome) -> threading.Thread:
    """GET ``url`` in a thread that appends its (status, body), or its error, to ``results``."""
    def go() -> None:
        try:
            status, _, body = http_get(url, timeout=30)
            results.append((status, body))
        except BaseException as exc:  # reported by the test
            results.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(60)
def test_raw_asgi_app_is_served_at_the_announced_url(tmp_path: Path) -> None:
    port = free_port()
    with supervisor(UP, app_project(tmp_path, port=port)) as run:
        url = run.wait_url()
        assert url == f"http://127.0.0.1:{port}"
        status, body = http_json(url + "/pid")
        assert status == 200
        assert body["pid"] in run.worker_pids()
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_sigkilled_worker_is_restarted_on_the_same_port_and_answers(tmp_path: Path) -> None:
    with supervisor(UP, app_project(tmp_path)) as run:
        url = run.wait_url()
        old = http_json(url + "/pid")[1]["pid"]
        grandchild = http_json(url + "/spawn")[1]["pid"]
        new = kill_and_await_successor(run, old)
        status, body = http_json(url + "/pid")
        assert (status, body["pid"]) == (200, new)
        assert gone(old)
        assert run.output.count("Serving on") == 1  # same URL, announced once
        # What the dead worker left in its process group is killed too, and nothing is a zombie.
        wait_until(lambda: gone(grandchild), 5, "the worker's child to be killed", lambda: run.output)
        # The grandchild is gone when it is a zombie; the reaper collects it a moment later.
        wait_until(lambda: zombie_children(run) == [], 5, "no zombie children of the supervisor",
                   lambda: run.output)
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_crash_loop_is_fatal_and_up_exits_1_in_production(tmp_path: Path) -> None:
    with supervisor([*UP, "--mode", "production"], app_project(tmp_path, app="crashapp:app")) as run:
        assert run.wait_exit(45) == 1
        out = run.output
    assert "web.0: FATAL: crashed 3 times within 60s" in out, out
    # The fatal message carries the last lines the worker wrote to stderr.
    fatal = out[out.index("FATAL"):]
    assert "Last lines the worker wrote to stderr" in fatal
    assert "RuntimeError: CRASH-MARKER-7f3a the database schema is missing" in fatal
    assert "crash loop; stopping (production mode)" in out


@pytest.mark.timeout(60)
def test_crash_loop_in_development_waits_in_fatal_and_stops_cleanly(tmp_path: Path) -> None:
    with supervisor(UP, app_project(tmp_path, app="crashapp:app")) as run:
        run.wait_for_output(r"web\.0: FATAL: crashed 3 times", 45)
        run.wait_for_output(r"supervisor: starting -> fatal")
        assert run.proc.poll() is None  # still up, waiting for a fix
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_taken_preferred_port_serves_on_another_and_says_why(tmp_path: Path, taken: int) -> None:
    with supervisor(UP, app_project(tmp_path, port=taken)) as run:
        url = run.wait_url()
        moved = int(url.rsplit(":", 1)[1])
        assert taken < moved <= taken + 20
        note = run.wait_for_output(rf"port {taken} is held by (.*); using {moved} instead").group(1)
        assert note.endswith(f"(pid {psutil.Process().pid})")
        assert http_json(url + "/pid")[0] == 200
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_strict_port_taken_exits_4_with_a_clear_message(tmp_path: Path, taken: int) -> None:
    with supervisor(UP, app_project(tmp_path, port=taken, server_extra="strict_port = true")) as run:
        assert run.wait_exit() == 4
    assert f"error: port {taken} on 127.0.0.1 is held by" in run.output
    assert "strict_port is set" in run.output
    assert "Traceback" not in run.output


@pytest.mark.timeout(60)
def test_sigkilled_supervisor_leaves_no_worker_and_frees_the_port(tmp_path: Path) -> None:
    port = free_port()
    with supervisor(UP, app_project(tmp_path, port=port, workers=2)) as run:
        run.wait_url()
        workers = wait_until(lambda: len(run.worker_pids()) == 2 and run.worker_pids(), 20,
                             "two workers", lambda: run.output)
        run.proc.send_signal(signal.SIGKILL)
        assert run.wait_exit() == -signal.SIGKILL
        # The deadline is the bound: PR_SET_PDEATHSIG kills them at once, not at a later poll.
        wait_until(lambda: all(gone(pid) for pid in workers), 2.0, "workers to die with the supervisor",
                   lambda: run.output)
        assert wait_until(lambda: port_is_free(port), 2.0, "the port to be free", lambda: run.output)


@pytest.mark.timeout(60)
def test_sigterm_lets_an_in_flight_request_complete_and_exits_0(tmp_path: Path) -> None:
    in_flight: Outcome = []
    with supervisor(UP, app_project(tmp_path)) as run:
        url = run.wait_url()
        thread = request_in_background(url + "/slow?seconds=2", in_flight)
        run.wait_for_output("rawapp: slow request started")
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait_exit() == 0
        thread.join(10)
        [result] = in_flight
        assert not isinstance(result, BaseException), f"{result!r}\n{run.output}"
        assert result[0] == 200 and b'"slept": 2.0' in result[1]
        assert "drained and exited on SIGTERM (shutdown)" in run.output


@pytest.mark.timeout(60)
def test_second_sigint_stops_at_once(tmp_path: Path) -> None:
    in_flight: Outcome = []
    with supervisor(UP, app_project(tmp_path, stop_timeout=30)) as run:
        url = run.wait_url()
        worker = run.worker_pids()
        # A request that would hold a graceful stop for its whole 30 s deadline.
        request_in_background(url + "/slow?seconds=40", in_flight)
        run.wait_for_output("rawapp: slow request started")
        run.proc.send_signal(signal.SIGINT)
        run.wait_for_output("SIGINT received: stopping gracefully")
        run.proc.send_signal(signal.SIGINT)
        # Exiting within 10 s (kill, reap, interpreter teardown on a loaded machine) proves it did
        # not wait for the request or the 30 s graceful deadline.
        assert run.wait_exit(10) == 130
        assert "SIGINT again: stopping at once" in run.output
        wait_until(lambda: all(gone(pid) for pid in worker), 2.0, "the worker to be killed",
                   lambda: run.output)


@pytest.mark.timeout(90)
def test_two_workers_serve_from_one_socket_and_restart_independently(tmp_path: Path) -> None:
    with supervisor(UP, app_project(tmp_path, workers=2)) as run:
        url = run.wait_url()
        pids = wait_until(lambda: len(slot_pids(run)) == 2 and slot_pids(run), 30,
                          "both slots serving", lambda: run.output)
        assert sorted(pids.values()) == run.worker_pids()
        served_pids(url, set(pids.values()), run)
        # The supervisor's one listening socket, shared; no worker holds another's pipes or its
        # ready pipe.
        assert listening_sockets(pids[0]) == listening_sockets(pids[1]) == listening_sockets(run.pid)
        assert [stray_pipes(pid) for pid in pids.values()] == [[], []]
        assert heartbeat_pipe(pids[0]) != heartbeat_pipe(pids[1])

        psutil.Process(pids[0]).send_signal(signal.SIGKILL)
        after = wait_until(lambda: slot_pids(run)[0] != pids[0] and slot_pids(run), 20,
                           "slot 0 to be restarted", lambda: run.output)
        assert after[1] == pids[1]  # the other slot was left alone
        assert run.output.count("started worker pid") == 3
        served_pids(url, set(after.values()), run)
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_worker_connections_have_tcp_nodelay(tmp_path: Path) -> None:
    with supervisor(UP, app_project(tmp_path)) as run:
        url = run.wait_url()
        assert http_json(url + "/nodelay") == (200, {"nodelay": 1})
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_handler_exception_is_a_500_json_response_and_the_worker_stays(tmp_path: Path) -> None:
    # The webapp's own variables; its SQLite file goes to the test's directory.
    database = f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    dotenv = f"BETTER_AUTH_SECRET={'x' * 40}\nDATABASE_URL={database}\n"
    alembic("upgrade", "head", url=database)  # the schema, so /health says ok
    with supervisor(UP, app_project(tmp_path, app="failingwebapp:app", dotenv=dotenv)) as run:
        url = run.wait_url()
        before = http_json(url + "/health")[1]["pid"]
        status, headers, body = http_get(url + "/boom")
        assert status == 500
        assert headers["content-type"] == "application/json"
        assert body == b'{"error":"internal server error"}'
        status, health = http_json(url + "/health")
        assert (status, health["pid"], health["status"]) == (200, before, "ok")
        run.wait_for_output("the handler failed on purpose")  # the traceback reached the log
        assert "restarting" not in run.output
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_secret_printed_by_the_worker_is_redacted_in_the_relay(tmp_path: Path) -> None:
    secret = "tok-5f2e9c-never-print-this"
    root = app_project(tmp_path, dotenv=f"API_TOKEN={secret}\n")
    with supervisor(UP, root, env=base_env(RAWAPP_PRINT_VAR="API_TOKEN")) as run:
        run.wait_url()
        run.wait_for_output(r"rawapp: API_TOKEN is \*\*\*")
        assert run.stop() == 0
    assert secret not in run.output


PEM_BODY = ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7", "q2Zl9Kx0VbN4m3yT8hJw5sD1pRfL6cE2aU7iO0",
            "Xk4Pz8Yw3Nq1Bv6Tr9Lm2Sd5Gh7Jk0Fa4Ce8"]
PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(PEM_BODY) + "\n-----END PRIVATE KEY-----"
QUOTED = "tok\"quo'te-\u00fc-5f2e9c\\x-never"


@pytest.mark.timeout(60)
def test_every_printed_form_of_a_secret_is_masked_in_the_relay(tmp_path: Path) -> None:
    """A PEM key printed line by line, repr/JSON/bytes-escaped secrets, a secret split over two
    lines: each used to reach the log."""
    dotenv = ('TLS_KEY="' + PEM.replace("\n", "\\n") + '"\n'
              + 'API_TOKEN="' + QUOTED.replace("\\", "\\\\").replace('"', '\\"') + '"\n')
    root = app_project(tmp_path, dotenv=dotenv)
    with supervisor(UP, root, env=base_env(RAWAPP_PRINT_FORMS="TLS_KEY,API_TOKEN")) as run:
        run.wait_url()
        run.wait_for_output("rawapp: API_TOKEN printed")
        assert run.stop() == 0
    forms = {QUOTED, repr(QUOTED)[1:-1], json.dumps(QUOTED)[1:-1], repr(QUOTED.encode())[2:-1],
             QUOTED[:len(QUOTED) // 2], QUOTED[len(QUOTED) // 2:], *PEM_BODY,
             json.dumps(PEM)[1:-1], repr(PEM)[1:-1], PEM[:len(PEM) // 2].splitlines()[-1],
             PEM[len(PEM) // 2:].splitlines()[0]}
    leaked = [form for form in forms if form in run.output]
    assert not leaked, run.output
    assert run.output.count("***") >= 10, run.output


@pytest.mark.timeout(60)
def test_worker_that_misses_the_stop_deadline_is_killed_with_its_process_group(tmp_path: Path) -> None:
    in_flight: Outcome = []
    with supervisor(UP, app_project(tmp_path, stop_timeout=1.0)) as run:
        url = run.wait_url()
        worker = http_json(url + "/pid")[1]["pid"]
        grandchild = http_json(url + "/spawn")[1]["pid"]
        request_in_background(url + "/block?seconds=30", in_flight)  # the worker cannot drain
        run.wait_for_output("rawapp: blocking")
        started = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait_exit(15) == 0
        assert time.monotonic() - started < 8.0
        assert f"web.0: worker pid {worker} stopped: killed by SIGKILL (shutdown)" in run.output
        wait_until(lambda: gone(worker) and gone(grandchild), 2.0, "the process group to be gone",
                   lambda: run.output)


@pytest.mark.timeout(60)
def test_crash_is_restarted_even_while_a_daemon_child_holds_the_worker_output(tmp_path: Path) -> None:
    with supervisor(UP, app_project(tmp_path)) as run:
        url = run.wait_url()
        old = http_json(url + "/pid")[1]["pid"]
        # A child in a session of its own keeps the worker's stdout and stderr pipes open.
        daemon = http_json(url + "/spawn?session=1&seconds=60")[1]["pid"]
        try:
            new = kill_and_await_successor(run, old)
            assert http_json(url + "/pid") == (200, {"pid": new})
            assert run.stop() == 0
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):  # normally killed with its worker
                psutil.Process(daemon).kill()


def in_process_runner(root: Path, **kwargs: Any) -> Runner:
    settings = resolve_settings(root, base_env())
    return Runner(settings, bind_port("127.0.0.1", 0, 0, False), **kwargs)


@pytest.mark.timeout(30)
@pytest.mark.asyncio
async def test_unexpected_error_in_a_startup_step_stops_up_with_exit_1(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = in_process_runner(app_project(tmp_path))

    async def broken() -> None:
        raise RuntimeError("the probe itself crashed")

    assert await asyncio.wait_for(runner.run([Plugin("broken", startup=broken)]), 20) == 1
    assert "the probe itself crashed" in caplog.text


@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_a_worker_that_cannot_be_spawned_for_now_is_retried_with_backoff(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """EAGAIN or EMFILE at fork time is a failed start like any other, never an internal error."""
    failures = [BlockingIOError(11, "Resource temporarily unavailable"), OSError(24, "Too many open files")]

    def spawn_after_two_failures(spec: WorkerSpec, on_line: LineSink) -> WorkerProcess:
        if failures:
            raise failures.pop(0)
        return spawn_worker(spec, on_line)

    runner = in_process_runner(app_project(tmp_path), spawn=spawn_after_two_failures)

    async def scenario() -> int:
        running = asyncio.ensure_future(runner.run())
        while runner.ready_workers == 0 and not running.done():
            await asyncio.sleep(0.05)  # poll interval: waiting for the worker to serve
        runner.post(Command.STOP)
        return await running

    assert await asyncio.wait_for(scenario(), 45) == 0
    assert re.search(r"could not be started: Resource temporarily unavailable; restarting in", caplog.text)
    assert re.search(r"could not be started: Too many open files; restarting in", caplog.text)
    assert "internal error" not in caplog.text


@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_once_stopping_only_another_stop_request_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Reloads, restarts and scaling asked for during a graceful stop are ignored; a second stop
    request forces the stop (exit 130)."""
    caplog.set_level(logging.INFO, logger="supervisor")
    runner = in_process_runner(app_project(tmp_path))

    async def scenario() -> int:
        running = asyncio.ensure_future(runner.run())
        while runner.ready_workers == 0 and not running.done():
            await asyncio.sleep(0.05)  # poll interval: waiting for the worker to serve
        # Posted together, so the loop reads them in this order with the stop already under way.
        for message in (Command.STOP, Scale(3), Signalled(signal.SIGTTIN), Command.RESTART, Command.REREAD,
                        Signalled(signal.SIGHUP), Command.STOP):
            runner.post(message)
        return await running

    assert await asyncio.wait_for(scenario(), 45) == 130
    assert re.search(r"stop request received: stopping gracefully", caplog.text)
    assert re.search(r"stop request again: stopping at once", caplog.text)
    assert not re.search(r"re-reading configuration|-> \d+ worker|-> reloading", caplog.text), caplog.text


@pytest.mark.timeout(60)
def test_listening_socket_does_not_leak_into_the_apps_own_children(tmp_path: Path) -> None:
    port = free_port()
    with supervisor(UP, app_project(tmp_path, port=port)) as run:
        url = run.wait_url()
        # A helper the app starts the way os.system does, outliving the supervisor.
        helper = http_json(url + "/spawn?session=1&inherit=1")[1]["pid"]
        try:
            assert listening_sockets(helper) == []
            run.proc.send_signal(signal.SIGKILL)
            run.wait_exit()
            assert wait_until(lambda: port_is_free(port), 2.0, "the port to be free", lambda: run.output)
        finally:
            psutil.Process(helper).kill()
