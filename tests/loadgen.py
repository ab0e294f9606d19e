"""A small closed-loop HTTP load generator for availability checks (tests and bench).

Each client thread keeps one keep-alive connection (reopened when the server says
``Connection: close``, as any HTTP/1.1 client does; or a new one per request) and never retries: every refused, reset or
non-200 request counts as a failure. Loopback only, and bounded by ``stop()`` or ``max_seconds``.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    bodies: set[str] = field(default_factory=set)
    longest_gap: float = 0.0  # longest time with no successful response, across all clients


class Load:
    def __init__(self, host: str, port: int, path: str = "/", clients: int = 4,
                 max_seconds: float = 120.0, fresh_connections: bool = False) -> None:
        self.host, self.port, self.path = host, port, path
        self.clients = clients
        # True: a new connection for every request, so none stays pinned to one worker.
        self.fresh = fresh_connections
        self.max_seconds = max_seconds
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_ok = 0.0
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def start(self) -> Load:
        self._last_ok = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        with self._lock:
            now = time.monotonic()
            self.result.longest_gap = max(self.result.longest_gap, 0.0 if self.result.ok else now - self._last_ok)
            return self.result

    def latest_bodies(self) -> set[str]:
        with self._lock:
            return set(self.result.bodies)

    def _record(self, body: str | None, error: str | None) -> None:
        now = time.monotonic()
        with self._lock:
            if error is None:
                self.result.ok += 1
                self.result.bodies.add(body or "")
                self.result.longest_gap = max(self.result.longest_gap, now - self._last_ok)
                self._last_ok = now
            else:
                self.result.failures.append(error)

    def _client(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                conn.request("GET", self.path)
                resp = conn.getresponse()
                body = resp.read().decode()
                if resp.status == 200:
                    self._record(body, None)
                else:
                    self._record(None, f"HTTP {resp.status}")
                if self.fresh:
                    conn.close()
            except (OSError, http.client.HTTPException) as exc:
                self._record(None, f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        conn.close()
