"""Readiness and liveness checks for programs: HTTP, TCP, a log line, a command.

Each check is one attempt that answers True or False within its timeout; :func:`wait_ready`
repeats it until it passes or the program's start deadline (the machine's ready timeout) ends it,
and :func:`watch_liveness` keeps checking a ready program and reports when it stops passing.
Loopback only: the program is on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable

from supervisor.programs.spec import Probe


async def check_http(port: int, path: str, timeout: float) -> bool:
    """A GET that answers with a 2xx or 3xx status."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
                status = await reader.readline()
            finally:
                writer.close()
        parts = status.split()
        return len(parts) >= 2 and parts[1][:1] in (b"2", b"3")
    except (OSError, TimeoutError, ValueError):
        return False


async def check_tcp(port: int, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        return True
    except (OSError, TimeoutError):
        return False


async def check_exec(argv: tuple[str, ...], timeout: float) -> bool:
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
    except OSError:
        return False
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait() == 0
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return False


class LogWatch:
    """Remembers whether any output line so far matched ``pattern`` (fed by the process's relay)."""

    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern)
        self.seen = asyncio.Event()

    def __call__(self, line: str) -> None:
        if not self.seen.is_set() and self.regex.search(line):
            self.seen.set()


def one_check(probe: Probe, port: int | None, log: LogWatch | None) -> Callable[[], Awaitable[bool]]:
    """The probe as a function doing one attempt."""
    per_try = min(probe.timeout, max(probe.interval * 4, 1.0))

    async def attempt() -> bool:
        if probe.kind == "log":
            return log is not None and log.seen.is_set()
        if probe.kind == "tcp":
            return await check_tcp(int(probe.target), per_try)  # type: ignore[arg-type]
        if probe.kind == "http":
            return port is not None and await check_http(port, str(probe.target), per_try)
        return await check_exec(tuple(probe.target), per_try)  # type: ignore[arg-type]

    return attempt


async def wait_ready(attempt: Callable[[], Awaitable[bool]], interval: float,
                     sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> bool:
    """Repeat ``attempt`` every ``interval`` until it passes (the caller bounds the whole wait)."""
    while not await attempt():
        await sleep(interval)
    return True


async def watch_liveness(attempt: Callable[[], Awaitable[bool]], interval: float, failures: int,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> int:
    """Check every ``interval``; return once ``failures`` checks in a row have failed."""
    failed = 0
    while failed < failures:
        await sleep(interval)
        failed = 0 if await attempt() else failed + 1
    return failed
