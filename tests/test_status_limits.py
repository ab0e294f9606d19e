"""Descriptors under attack: idle and slow-loris connections to the status API, the connection cap,
the open-file limit and the accept-error log, against a real supervisor over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import resource
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from supervisor.child.accept_errors import ACCEPT_ERROR, AcceptErrorLog
from tests.support import Running, app_project, http_get, supervisor, wait_until

UP = ["up", "--no-reload"]


def project(root: Path, **status: object) -> Path:
    extra = "".join(f"{key} = {value}\n" for key, value in status.items())
    return app_project(root, port=0, status_port=0, extra=extra)


def api_url(run: Running) -> str:
    return run.wait_for_output(r"status: API and dashboard on (http://\S+) ").group(1)


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@contextlib.contextmanager
def idle_connections(url: str, count: int) -> Iterator[list[socket.socket]]:
    socks = []
    try:
        for _ in range(count):
            socks.append(socket.create_connection(address(url), timeout=5))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def closed_by_server(sock: socket.socket, timeout: float, trickle: Callable[[], None] = lambda: None) -> float:
    """Seconds until the server closes ``sock`` (EOF or reset), calling ``trickle`` meanwhile."""
    started = time.monotonic()
    sock.settimeout(0.25)
    while time.monotonic() - started < timeout:
        try:
            trickle()
            if sock.recv(1024) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - started
    raise AssertionError(f"the server kept the connection open for {timeout}s")


@pytest.mark.timeout(60)
def test_idle_and_slow_loris_connections_are_closed_at_the_header_deadline(tmp_path: Path) -> None:
    """uvicorn starts no timer before a first request: such connections used to stay forever."""
    with supervisor(UP, project(tmp_path, header_timeout=1.0)) as run:
        url = api_url(run)
        with idle_connections(url, 1) as [idle]:
            assert closed_by_server(idle, 15) < 8, run.output
        with idle_connections(url, 1) as [slow]:
            slow.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            sent = iter(b"X-Slow: " + b"a" * 200)

            def trickle() -> None:  # one header byte every 0.25 s keeps the connection busy
                with contextlib.suppress(StopIteration, OSError):
                    slow.send(bytes([next(sent)]))
            assert closed_by_server(slow, 15, trickle) < 8, run.output
        with idle_connections(url, 1) as [kept]:  # idle after a response: the same deadline
            kept.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert closed_by_server(kept, 15) < 8, run.output
        assert http_get(url + "/livez")[0] == 200
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_a_flood_of_idle_connections_is_capped_and_probes_still_answer(tmp_path: Path) -> None:
    with supervisor(UP, project(tmp_path, max_connections=16, header_timeout=60)) as run:
        url = api_url(run)
        run.wait_url()
        me = psutil.Process(run.pid)
        before = me.num_fds()
        with idle_connections(url, 300):
            # Every connection was accepted (closing older idle ones), none is held beyond the cap.
            held = wait_until(lambda: (n := me.num_fds()) <= before + 16 + 4 and n, 20,
                              "the supervisor's descriptors to settle under the cap", lambda: run.output)
            status, _, body = http_get(url + "/livez", timeout=10)
            assert status == 200, body
            assert held <= before + 20, (before, held)
        worker = run.worker_pids()[0]
        psutil.Process(worker).kill()  # a crash now must still find descriptors to restart with
        run.wait_for_output(rf"web\.0: started worker pid (?!{worker}\b)\d+", timeout=30)
        assert http_get(url + "/livez")[0] == 200
        assert "internal error" not in run.output
        assert run.stop() == 0


def limited(soft: int, hard: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return preexec


@pytest.mark.timeout(60)
def test_up_raises_the_soft_open_file_limit_to_the_hard_one(tmp_path: Path) -> None:
    with supervisor(UP, project(tmp_path), preexec_fn=limited(256, 4096)) as run:
        run.wait_url()
        assert psutil.Process(run.pid).rlimit(psutil.RLIMIT_NOFILE) == (4096, 4096)
        worker = run.worker_pids()[0]
        assert psutil.Process(worker).rlimit(psutil.RLIMIT_NOFILE) == (4096, 4096)
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_accept_errors_are_logged_once_per_interval_without_tracebacks(tmp_path: Path) -> None:
    """With descriptors exhausted, asyncio logged a traceback per connection in the backlog,
    tens of thousands within seconds."""
    root = project(tmp_path, max_connections=10000, header_timeout=120)
    with supervisor(UP, root, preexec_fn=limited(64, 64)) as run:
        url = api_url(run)
        run.wait_url()
        with idle_connections(url, 80):  # within what is accepted plus the backlog (64)
            run.wait_for_output("cannot accept connections: Too many open files", timeout=20)
            lines_then = len(run.lines)
            time.sleep(3)  # measuring a rate: how much is logged in a fixed time
            later = run.lines[lines_then:]
        accept_lines = [line for line in run.lines if "accept connections" in line or ACCEPT_ERROR in line]
        assert len(accept_lines) == 1, "\n".join(accept_lines[:20])
        assert len(later) < 5, "\n".join(later[:20])
        assert "Traceback" not in run.output
        # Descriptors free again: the API answers.
        assert wait_until(lambda: http_get(url + "/livez")[0] == 200, 20, "the API to answer again",
                          lambda: run.output)
        assert run.stop() == 0


def test_accept_error_log_counts_what_it_does_not_print(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    handler = AcceptErrorLog(interval=10, clock=lambda: now[0], log=logging.getLogger("t"))
    loop = asyncio.new_event_loop()
    try:
        context = {"message": ACCEPT_ERROR, "exception": OSError(24, "Too many open files")}
        caplog.set_level(logging.ERROR, "t")
        for t in (0.0, 0.1, 5.0, 9.9, 10.0, 10.5):
            now[0] = t
            handler(loop, context)
    finally:
        loop.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all(r.exc_info is None for r in caplog.records)
    assert re.search(r"Too many open files \(1 time", messages[0])
    assert re.search(r"Too many open files \(4 time", messages[1])
