"""The worker's side of the health checks: a heartbeat from the app's own event loop, the request
quota (counted by :mod:`supervisor.child.gate`), and a stack dump on demand. Runs inside
``python -m supervisor.child.worker``.

The heartbeat is a callback scheduled on the event loop that serves the app, not a thread: a
thread would keep answering while a blocking call holds the loop, and the worker would look alive
while it serves no one (uvicorn's multiprocess health check has that flaw). Each beat writes one
fixed-size record (how late this beat ran, requests begun so far, the worker's request quota and
how far it is through it) to a pipe the supervisor reads; writes never block, so a supervisor that
stops reading costs beats, never the app.

With ``max_requests`` the worker keeps its own quota (:class:`RequestQuota`), since a count read
once a heartbeat is far too late for a worker serving thousands of requests a second: it beats
out of turn as it nears the quota, so that the supervisor starts its replacement then, and again
once the quota is begun, when it stops taking requests (see ``ReportingServer.quota_reached``).

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
import math
import os
import random
import signal
import struct
from collections.abc import Callable
from types import FrameType
from typing import NamedTuple

# Loop lag in seconds, requests begun, the request quota (0: none), its stage; < PIPE_BUF, so
# written whole.
BEAT = struct.Struct("<dQIB")
# Stages of the request quota, as a beat carries them.
COUNTING, NEARING, REACHED = 0, 1, 2
NEAR_FRACTION = 0.9  # of the quota, when the replacement is asked for
STACKS_SIGNAL = signal.SIGUSR2
END_MARK = "--- end of stacks ---"

class Beat(NamedTuple):
    loop_lag: float
    requests: int
    quota: int = 0
    stage: int = COUNTING


class RequestQuota:
    """How far a worker is through its request quota: pure.

    ``limit`` is ``max_requests`` plus a jitter drawn once (so that workers started together are
    not all replaced together); 0 is no quota. The stage moves to :data:`NEARING` at
    :data:`NEAR_FRACTION` of it and to :data:`REACHED` when the last request of it begins.

    >>> quota = RequestQuota(10)
    >>> [quota.stage(n) for n in (1, 8, 9, 10, 11)]
    [0, 0, 1, 2, 2]
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.near_at = max(1, min(limit, int(limit * NEAR_FRACTION)))

    @classmethod
    def draw(cls, max_requests: int, jitter: int, rand: Callable[[], float] = random.random) -> RequestQuota:
        if max_requests <= 0:
            return cls(0)
        return cls(max_requests + min(jitter, int(rand() * (jitter + 1))))

    def stage(self, requests: int) -> int:
        if not self.limit or requests < self.near_at:
            return COUNTING
        return REACHED if requests >= self.limit else NEARING

    def next_change(self, stage: int) -> float:
        """The request count at which the stage may move on from ``stage`` (infinite: never), so
        that a counter compares one number per request instead of working the stage out.

        >>> quota = RequestQuota(10)
        >>> [quota.next_change(stage) for stage in (COUNTING, NEARING, REACHED)]
        [9, 10, inf]
        >>> RequestQuota(0).next_change(COUNTING)
        inf
        """
        if not self.limit or stage == REACHED:
            return math.inf
        return self.near_at if stage == COUNTING else self.limit


class Heartbeat:
    """Writes a beat to ``fd`` every ``interval`` seconds from the loop it is started on."""

    def __init__(self, fd: int, interval: float, requests: Callable[[], int],
                 quota: Callable[[], tuple[int, int]] = lambda: (0, COUNTING)) -> None:
        self.fd = fd
        self.interval = interval
        self.requests = requests
        self.quota = quota  # (the request quota, its stage)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._gone = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        os.set_blocking(self.fd, False)
        self._loop = loop
        self._due = loop.time() + self.interval
        loop.call_at(self._due, self._beat)

    def _beat(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._write(max(0.0, now - self._due))
        if self._gone:
            return
        self._due = now + self.interval
        self._loop.call_at(self._due, self._beat)

    def beat_now(self) -> None:
        """A beat out of turn (the quota's stage changed); the regular ones go on as scheduled.
        It ran on time: it is not late for any beat."""
        if self._loop is not None:
            self._write(0.0)

    def _write(self, lag: float) -> None:
        if self._gone:
            return
        quota, stage = self.quota()
        try:
            os.write(self.fd, BEAT.pack(lag, self.requests(), quota, stage))
        except BlockingIOError:
            pass  # the pipe is full (a stopped supervisor): this beat is lost, the next may pass
        except OSError:
            self._gone = True  # the supervisor is gone (EPIPE): nobody listens any more


class BeatReader:
    """The supervisor's side: whole beats out of the bytes read from the pipe."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[Beat]:
        data = self._rest + data
        whole = len(data) - len(data) % BEAT.size
        self._rest = data[whole:]
        return [Beat(*BEAT.unpack_from(data, offset)) for offset in range(0, whole, BEAT.size)]


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
