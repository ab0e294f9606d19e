"""Long-lived connections across a real reload: WebSockets get 1012, event streams end and reconnect.

The real webapp's ``/live/echo`` and ``/live/events`` under ``up``; SIGHUP rolls the workers.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.dbsupport import webapp_project
from tests.support import Running, supervisor, wait_until

STOP_TIMEOUT = 10.0


class EventSourceClient:
    """What a browser's ``EventSource`` does, for the parts under test: parse events, and when the
    stream ends, reconnect after the ``retry`` delay the server last set (the browser default: 3 s)."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.retry_ms = 3000
        self.reconnects = 0
        self._open()

    def _open(self) -> None:
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        self.conn.request("GET", self.path, headers={"Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200

    def next_event(self) -> tuple[str, dict[str, Any], float]:
        """(event name, data, seconds spent reconnecting first)."""
        waited = 0.0
        name, data = "message", ""
        while True:
            raw = self.response.readline()
            if not raw:  # the stream ended: reconnect as EventSource does
                self.conn.close()
                started = time.monotonic()
                time.sleep(self.retry_ms / 1000)  # the reconnection delay under test, not synchronisation
                self._open()
                self.reconnects += 1
                waited += time.monotonic() - started
                continue
            line = raw.decode().rstrip("\r\n")
            if line.startswith("retry:"):
                self.retry_ms = int(line[6:].strip())
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif line == "" and data:
                return name, json.loads(data), waited

    def close(self) -> None:
        self.conn.close()


def old_worker_stopped(run: Running, pid: int) -> re.Match[str] | None:
    return re.search(rf"worker pid {pid} stopped: (.*)", run.output)


@pytest.mark.timeout(120)
def test_websocket_gets_1012_and_event_stream_reconnects_to_the_new_worker(tmp_path: Path) -> None:
    root = webapp_project(tmp_path / "project", extra=f"""
        [supervisor]
        stop_timeout = {STOP_TIMEOUT}
    """)
    with supervisor(["up", "--no-reload"], root) as run:
        url = run.wait_url()
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with connect(f"ws://{host}:{port}/live/echo", open_timeout=10) as ws:
            old_pid = json.loads(ws.recv(timeout=10))["hello"]
            ws.send("ping")
            assert ws.recv(timeout=10) == "ping"
            events = EventSourceClient(host, int(port), "/live/events")
            name, data, _ = events.next_event()
            assert (name, data["pid"]) == ("hello", old_pid)

            reload_at = time.monotonic()
            run.proc.send_signal(signal.SIGHUP)
            # The old worker closes the socket with 1012 (service restart) once its successor serves.
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012, closed.value
        # A client reconnecting as told reaches the new worker.
        with connect(f"ws://{host}:{port}/live/echo", open_timeout=10) as again:
            new_pid = json.loads(again.recv(timeout=10))["hello"]
            assert new_pid != old_pid
            again.send("pong")
            assert again.recv(timeout=10) == "pong"

        # The event stream ended cleanly with a short retry; EventSource's reconnect gets the new worker.
        while True:
            name, data, waited = events.next_event()
            if name == "hello":
                break
            assert name == "tick" and data["pid"] == old_pid
        assert events.reconnects == 1 and data["pid"] == new_pid, run.output
        assert events.retry_ms <= 500 and waited < 2.0, (events.retry_ms, waited)
        events.close()

        # Neither held the old worker: it drained and exited well before the drain deadline.
        stopped = wait_until(lambda: old_worker_stopped(run, old_pid), STOP_TIMEOUT, "the old worker to exit",
                             lambda: run.output)
        assert "drained and exited on SIGTERM" in stopped.group(1), run.output
        assert time.monotonic() - reload_at < STOP_TIMEOUT / 2, run.output
        assert "Exception in ASGI application" not in run.output, run.output
        assert run.stop() == 0
