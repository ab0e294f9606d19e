"""HTTP clients for the benchmarks, in both shapes real clients have: one keep-alive connection
reused for every request (browsers, load balancers), or a fresh connection per request.

Loopback only. Every loop is bounded by a deadline; a client never retries a request: a refused,
reset or non-200 request is a failure, and the next request starts over.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KEEPALIVE, FRESH = "keep-alive", "fresh"
MODES = (KEEPALIVE, FRESH)


class Client:
    """GET requests to ``127.0.0.1:port``, over one kept connection or a new one each time."""

    def __init__(self, port: int, mode: str = KEEPALIVE, timeout: float = 5.0) -> None:
        self.port, self.mode, self.timeout = port, mode, timeout
        self._conn: http.client.HTTPConnection | None = None

    def get(self, path: str = "/") -> tuple[int, bytes] | None:
        """(status, body), or None when the request failed at the connection level."""
        conn = self._conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if self.mode == KEEPALIVE and not resp.will_close:
                self._conn = conn
            else:
                conn.close()
                self._conn = None
            return resp.status, body
        except (OSError, http.client.HTTPException):
            conn.close()
            self._conn = None
            return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def answer(port: int, path: str = "/", timeout: float = 2.0) -> dict[str, Any] | None:
    """The JSON a 200 response to a fresh GET carries, or None."""
    client = Client(port, FRESH, timeout)
    got = client.get(path)
    if got is None or got[0] != 200:
        return None
    try:
        value = json.loads(got[1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def wait_for(port: int, check: Callable[[dict[str, Any]], bool], timeout: float, mode: str = FRESH,
             path: str = "/", interval: float = 0.002) -> float | None:
    """Poll until a 200 answer's JSON passes ``check``; the monotonic time it did, None at the deadline."""
    client = Client(port, mode, timeout=2.0)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            got = client.get(path)
            if got is not None and got[0] == 200:
                try:
                    if check(json.loads(got[1])):
                        return time.monotonic()
                except ValueError:
                    pass
            time.sleep(interval)  # poll interval
        return None
    finally:
        client.close()


@dataclass
class LoadResult:
    mode: str
    ok: int = 0
    failed: int = 0
    longest_gap: float = 0.0  # longest time without any successful response, across all clients
    latencies: list[float] = field(default_factory=list)  # of the successful requests, seconds
    errors: dict[str, int] = field(default_factory=dict)


class Load:
    """``clients`` closed-loop threads sending GET ``path``, in ``mode``, until ``stop()`` or the deadline."""

    def __init__(self, port: int, mode: str, clients: int, path: str = "/", max_seconds: float = 300.0) -> None:
        self.port, self.mode, self.path = port, mode, path
        self.max_seconds = max_seconds
        self.result = LoadResult(mode)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_ok = 0.0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> Load:
        self._last_ok = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        with self._lock:
            self.result.longest_gap = max(self.result.longest_gap, time.monotonic() - self._last_ok)
            return self.result

    def _run(self) -> None:
        client = Client(self.port, self.mode, timeout=10.0)
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            began = time.monotonic()
            got = client.get(self.path)
            now = time.monotonic()
            with self._lock:
                if got is not None and got[0] == 200:
                    self.result.ok += 1
                    self.result.latencies.append(now - began)
                    self.result.longest_gap = max(self.result.longest_gap, now - self._last_ok)
                    self._last_ok = now
                else:
                    self.result.failed += 1
                    kind = "connection" if got is None else f"HTTP {got[0]}"
                    self.result.errors[kind] = self.result.errors.get(kind, 0) + 1
            if got is None:
                time.sleep(0.001)  # a refused connection returns at once: do not spin on it
        client.close()
