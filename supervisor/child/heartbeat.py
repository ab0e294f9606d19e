"""The worker's side of the health checks: a heartbeat from the app's own event loop, a request
count, and a stack dump on demand. Runs inside ``python -m supervisor.child.worker``.

The heartbeat is a callback scheduled on the event loop that serves the app, not a thread: a
thread would keep answering while a blocking call holds the loop, and the worker would look alive
while it serves no one (uvicorn's multiprocess health check has that flaw). Each beat writes one
fixed-size record (how late this beat ran, requests begun so far) to a pipe the supervisor reads;
writes never block, so a supervisor that stops reading costs beats, never the app.

The stack dump answers :data:`STACKS_SIGNAL` with every thread's stack (:mod:`faulthandler`,
written from the signal handler itself, so it works whatever the loop is doing), then, once the
main thread runs Python code again (a ``time.sleep`` is interrupted for that), the asyncio tasks'
stacks, and :data:`END_MARK`.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import os
import signal
import struct
from collections.abc import Callable
from types import FrameType
from typing import Any

BEAT = struct.Struct("<dQ")  # loop lag in seconds, requests begun; < PIPE_BUF, so written whole
STACKS_SIGNAL = signal.SIGUSR2
END_MARK = "--- end of stacks ---"

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Any]


class RequestCounter:
    """ASGI middleware: counts the HTTP requests and WebSocket sessions the worker begins."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            self.count += 1
        await self.app(scope, receive, send)


class Heartbeat:
    """Writes a beat to ``fd`` every ``interval`` seconds from the loop it is started on."""

    def __init__(self, fd: int, interval: float, requests: Callable[[], int]) -> None:
        self.fd = fd
        self.interval = interval
        self.requests = requests
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        os.set_blocking(self.fd, False)
        self._loop = loop
        self._due = loop.time() + self.interval
        loop.call_at(self._due, self._beat)

    def _beat(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        try:
            os.write(self.fd, BEAT.pack(max(0.0, now - self._due), self.requests()))
        except BlockingIOError:
            pass  # the pipe is full (a stopped supervisor): this beat is lost, the next may pass
        except OSError:
            return  # the supervisor is gone (EPIPE): nobody listens any more
        self._due = now + self.interval
        self._loop.call_at(self._due, self._beat)


class BeatReader:
    """The supervisor's side: whole beats out of the bytes read from the pipe."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[tuple[float, int]]:
        data = self._rest + data
        whole = len(data) - len(data) % BEAT.size
        self._rest = data[whole:]
        return [BEAT.unpack_from(data, offset) for offset in range(0, whole, BEAT.size)]


class StackDump:
    """Dump the stacks to ``<directory>/<pid>.txt`` on :data:`STACKS_SIGNAL`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.loop: asyncio.AbstractEventLoop | None = None  # set once serving: its tasks are dumped too
        self._fd = -1

    def install(self) -> bool:
        """Open the dump file and register the handlers; False when the file cannot be made."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd = os.open(os.path.join(self.directory, f"{os.getpid()}.txt"), flags, 0o600)
        except OSError:
            return False  # no runtime directory to write to: no dumps, the worker still serves
        # Python's handler first, so that faulthandler's C handler chains to it after the threads.
        signal.signal(STACKS_SIGNAL, self._dump_tasks)
        faulthandler.register(STACKS_SIGNAL, file=self._fd, all_threads=True, chain=True)
        return True

    def _dump_tasks(self, signum: int, frame: FrameType | None) -> None:
        out = io.StringIO()
        loop = self.loop
        if loop is not None:
            tasks = asyncio.all_tasks(loop)
            out.write(f"\nAsyncio tasks ({len(tasks)}):\n")
            for task in tasks:
                with contextlib.suppress(Exception):  # a task finishing meanwhile
                    task.print_stack(file=out)
        out.write(END_MARK + "\n")
        with contextlib.suppress(OSError):
            os.write(self._fd, out.getvalue().encode("utf-8", "replace"))
