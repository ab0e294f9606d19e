"""Pure parts of the status feature: the state file, the API's port, the text the CLI prints."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from supervisor.cli import main
from supervisor.errors import EXIT_PORT, PortError
from supervisor.listen.ports import display_url
from supervisor.status import display
from supervisor.status.api import bind_status_socket, is_loopback
from supervisor.status.control import runtime_dir
from supervisor.status.statefile import (
    STATE_NAME,
    TOKEN_NAME,
    StateRecord,
    claim,
    is_alive,
    live_state,
    read_state,
    release,
)


def record(rd: Path, pid: int | None = None, started_at: float | None = None) -> StateRecord:
    return StateRecord(pid=pid or os.getpid(), started_at=started_at or time.time(),
                       status_url="http://127.0.0.1:8787", url="http://127.0.0.1:8000",
                       token_file=str(rd / TOKEN_NAME), version="0.1.0", project_dir=str(rd.parent))


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----- state file ------------------------------------------------------------------------------

@pytest.mark.timeout(10)
def test_claim_writes_state_and_a_private_token_and_release_removes_both(tmp_path: Path) -> None:
    rd = tmp_path / ".supervisor"
    mine = record(rd)
    assert claim(rd, mine, "tok-123") == ""
    assert json.loads((rd / STATE_NAME).read_text())["status_url"] == "http://127.0.0.1:8787"
    assert read_state(rd) == mine
    assert (rd / TOKEN_NAME).read_text().strip() == "tok-123"
    assert stat.S_IMODE((rd / TOKEN_NAME).stat().st_mode) == 0o600
    assert not [p for p in rd.iterdir() if p.name.endswith(".tmp")]
    release(rd, mine)
    assert not (rd / STATE_NAME).exists() and not (rd / TOKEN_NAME).exists()


@pytest.mark.timeout(10)
def test_state_file_of_an_exited_process_is_stale_and_replaced(tmp_path: Path, supervisor_pid: int) -> None:
    rd = tmp_path / ".supervisor"
    gone = record(rd, pid=dead_pid())
    claim(rd, gone, "old")
    found, why = live_state(rd)
    assert found is None and why == f"stale state file: pid {gone.pid} is no longer running"
    note = claim(rd, record(rd, pid=supervisor_pid), "new")
    assert note == f"replacing stale state file of pid {gone.pid}, which is no longer running"
    assert live_state(rd)[0] == record(rd, pid=supervisor_pid,
                                       started_at=read_state(rd).started_at)  # type: ignore[union-attr]


@pytest.mark.timeout(10)
def test_recycled_pid_is_not_trusted(tmp_path: Path, supervisor_pid: int) -> None:
    """The pid runs, but that process started after the record was written: someone else's."""
    created = psutil.Process(supervisor_pid).create_time()
    assert not is_alive(record(tmp_path, pid=supervisor_pid, started_at=created - 3600))
    assert is_alive(record(tmp_path, pid=supervisor_pid, started_at=created + 1))


@pytest.mark.timeout(10)
def test_unreadable_state_file_is_not_trusted(tmp_path: Path) -> None:
    rd = tmp_path / ".supervisor"
    rd.mkdir()
    (rd / STATE_NAME).write_text("{not json")
    assert live_state(rd) == (None, f"its state file is unusable: {rd / STATE_NAME} is not JSON")


@pytest.mark.timeout(10)
def test_release_leaves_a_file_another_supervisor_has_taken_over(tmp_path: Path) -> None:
    rd = tmp_path / ".supervisor"
    mine = record(rd, pid=dead_pid())
    claim(rd, mine, "a")
    other = record(rd)
    claim(rd, other, "b")
    release(rd, mine)
    assert read_state(rd) == other and (rd / TOKEN_NAME).read_text().strip() == "b"


@pytest.mark.timeout(10)
def test_runtime_dir_comes_from_config_and_survives_a_broken_one(tmp_path: Path) -> None:
    (tmp_path / "supervisor.toml").write_text('[supervisor]\nruntime_dir = "run/sup"\n')
    assert runtime_dir(tmp_path, None) == tmp_path.resolve() / "run/sup"
    (tmp_path / "supervisor.toml").write_text("[supervisor\nbroken")
    assert runtime_dir(tmp_path, None) == tmp_path.resolve() / ".supervisor"


@pytest.mark.timeout(10)
def test_status_without_a_supervisor_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--project-dir", str(tmp_path)]) == 3
    assert "no supervisor is running" in capsys.readouterr().err
    claim(tmp_path / ".supervisor", record(tmp_path / ".supervisor", pid=dead_pid()), "t")
    assert main(["status", "--project-dir", str(tmp_path), "--json"]) == 3
    assert "stale state file" in capsys.readouterr().err


@pytest.mark.timeout(10)
@pytest.mark.parametrize("command", ["status", "restart", "stop"])
def test_commands_exit_3_when_nothing_answers_at_url(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        assert main([command, "--url", f"http://127.0.0.1:{port}"]) == 3
    assert "no supervisor answers at" in capsys.readouterr().err


@contextlib.contextmanager
def foreign_server(status: int, body: bytes, content_type: str) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that answers every GET and POST with the same response:
    what ``--url`` reaches when it names some other service."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("command", ["status", "restart", "stop"])
@pytest.mark.parametrize("status,body,content_type,why", [
    (200, b"hello", "text/plain", "/status answered 200 with text/plain, not JSON"),
    (200, b'{"hello": "world"}', "application/json", '/status answered JSON without "url"'),
    (200, b'{"url": "x", "supervisor": {}}', "application/json", 'JSON without "supervisor.pid"'),
    (200, b"[1, 2]", "application/json", "JSON that is not an object"),
    (404, b"<h1>no</h1>", "text/html", "answered 404 Not Found"),
])
def test_commands_exit_3_when_url_is_not_a_status_api(command: str, status: int, body: bytes, content_type: str,
                                                       why: str, capsys: pytest.CaptureFixture[str]) -> None:
    with foreign_server(status, body, content_type) as url:
        assert main([command, "--url", url]) == 3
    err = capsys.readouterr().err
    assert f"error: {url} is not a supervisor status API: " in err and "--url the address `up` logs" in err
    if command == "stop":  # stop goes straight to POST /stop, which must answer 202 {"accepted": "stop"}
        assert "/stop answered " + ("404" if status == 404 else "200") in err
    else:
        assert why in err


# ----- the API's port --------------------------------------------------------------------------

@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A loopback port this test process listens on for the duration of the block."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.timeout(10)
def test_status_socket_is_tcp_so_asyncio_disables_nagle_per_connection() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto is TCP; with proto 0 every
    keep-alive request waited ~40 ms for a delayed ACK."""
    sock, note = bind_status_socket("127.0.0.1", 0, production=False)
    with sock:
        assert note == "" and sock.proto == socket.IPPROTO_TCP and not sock.get_inheritable()


@pytest.mark.timeout(10)
def test_taken_status_port_moves_in_development_and_says_who_holds_it() -> None:
    with held_port() as taken:
        sock, note = bind_status_socket("127.0.0.1", taken, production=False)
        with sock:
            assert sock.getsockname()[1] != taken and not sock.get_inheritable()
            assert sock.proto == socket.IPPROTO_TCP
            assert note.startswith(f"status API: port {taken} on 127.0.0.1 is held by ")
            assert f"using port {sock.getsockname()[1]} instead" in note


@pytest.mark.timeout(10)
def test_taken_status_port_fails_in_production_with_exit_4() -> None:
    with held_port() as taken:
        expected = f"status API: port {taken} on 127.0.0.1 is held by .*enabled = false"
        with pytest.raises(PortError, match=expected) as exc:
            bind_status_socket("127.0.0.1", taken, production=True)
    assert exc.value.exit_code == EXIT_PORT


@pytest.mark.timeout(10)
def test_loopback_detection_and_urls() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("10.0.0.1")
    assert display_url("0.0.0.0", 8787) == "http://127.0.0.1:8787"
    assert display_url("::1", 8787) == "http://[::1]:8787"
    # The webapp's URL (Supervisor.url) uses the same function: wildcards and brackets.
    assert display_url("::", 8000) == display_url("[::1]", 8000) == "http://[::1]:8000"
    assert display_url("", 8000) == "http://127.0.0.1:8000"


# ----- text --------------------------------------------------------------------------------------

@pytest.mark.timeout(10)
def test_durations_and_sizes_read_like_ps() -> None:
    assert [display.duration(s) for s in (None, 0, 59.9, 125, 3 * 3600 + 420, 2 * 86400 + 4 * 3600)] == [
        "-", "0s", "59s", "2m05s", "3h07m", "2d04h"]
    assert [display.size(b) for b in (None, 512, 2048, 28_971_008, 3 * 1024 ** 3)] == [
        "-", "512 B", "2.0 KiB", "27.6 MiB", "3.0 GiB"]


@pytest.mark.timeout(10)
def test_status_text_is_a_table_with_the_why() -> None:
    doc = {
        "supervisor": {"pid": 10, "state": "running", "mode": "production", "uptime": 65, "ready": False,
                       "ready_reason": "database is waiting", "started_at": 1000.0},
        "url": "http://127.0.0.1:8000",
        "workers": [
            {"slot": 0, "pid": 11, "state": "running", "uptime": 61, "restarts": 1, "memory_rss": 2048,
             "cpu_percent": 1.25, "loop_lag": 0.0042, "last_exit": {"description": "killed by SIGKILL (hung)"}},
            {"slot": 1, "pid": None, "state": "backoff", "retry_in": 1.5, "uptime": None, "restarts": 3,
             "memory_rss": None, "cpu_percent": None, "last_exit": {"description": "exit code 3 (crash)"}},
        ],
        "database": {"state": "waiting", "latency_ms": None, "attempts": 4, "last_error": "connection refused"},
        "reload": {"count": 2, "last_duration": 1.5, "last_files": ["app.py"], "last_error": None},
        "health": {"hang_timeout": 30.0, "recycled": {"hung": 1, "requests": 2, "rss": 0},
                   "last_hang": {"slot": 0, "pid": 9, "at": 1040.0, "silent_for": 31.04, "stacks": "...",
                                 "file": "/srv/.supervisor/last-hang.txt"}},
    }
    assert display.render_text(doc) == "\n".join([
        "supervisor pid 10 running (production), up 1m05s, not ready (database is waiting); "
        "app http://127.0.0.1:8000",
        "",
        "SLOT   PID  STATE                    UPTIME  RESTARTS  MEMORY   CPU   LOOP LAG  LAST EXIT",
        "web.0  11   running                  1m01s   1         2.0 KiB  1.2%  4 ms      killed by SIGKILL (hung)",
        "web.1  -    backoff (retry in 1.5s)  -       3         -        -     -         exit code 3 (crash)",
        "",
        "database: waiting, 4 attempt(s), last error: connection refused",
        "reloads: 2, last took 1.50s, last trigger: app.py",
        "recycled: 3 (hung 1, requests 2); last hang: web.0 pid 9, 25s ago, no heartbeat for 31.0s; "
        "stacks in /srv/.supervisor/last-hang.txt",
    ])
    del doc["health"]  # a supervisor of an earlier version: no health line
    assert display.render_text(doc).endswith("reloads: 2, last took 1.50s, last trigger: app.py")


@pytest.mark.asyncio
async def test_the_embedded_server_loop_waits_for_a_stop_instead_of_ticking() -> None:
    """uvicorn's own loop wakes every 0.1 s; the API's sleeps until told to stop, and the Date
    header it answers with is made when asked for."""
    import asyncio
    from email.utils import parsedate_to_datetime

    import uvicorn

    from supervisor.status.api import _EmbeddedServer

    server = _EmbeddedServer(uvicorn.Config(app=lambda *args: None, lifespan="off"))
    ticks: list[int] = []
    tick = server.on_tick

    async def counted(counter: int) -> bool:
        ticks.append(counter)
        return await tick(counter)

    server.on_tick = counted  # type: ignore[method-assign]
    loop = asyncio.ensure_future(server.main_loop())
    await asyncio.sleep(0.35)  # an observation window: uvicorn would have ticked three more times
    assert ticks == [0]
    (name, value), *_ = server.server_state.default_headers
    assert name == b"date" and abs(parsedate_to_datetime(value.decode()).timestamp() - time.time()) < 2
    server.should_exit = True
    await asyncio.wait_for(loop, 1)
    assert len(ticks) == 2
