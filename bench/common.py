"""Shared by the benchmarks: the app every tool serves, and running a tool as a process group."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The same raw ASGI app for every tool: answers "<VERSION> <pid> <GREETING>".
APP = (REPO / "tests" / "apps" / "versioned.py").read_text()


@contextlib.contextmanager
def running(argv: list[str], cwd: Path, log: Path | None = None,
            env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in its own session; stop its whole group at the end (SIGTERM, then SIGKILL).
    ``env``: the environment (default: ours, with this checkout on PYTHONPATH)."""
    env = env if env is not None else {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def get(port: int, timeout: float = 2.0) -> str | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.read().decode() if resp.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_version(port: int, version: int, timeout: float = 30.0) -> float:
    """Poll until the app answers with ``version``; return the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = get(port)
        if body is not None and body.startswith(f"{version} "):
            return time.monotonic()
        time.sleep(0.002)  # poll interval
    raise RuntimeError(f"version {version} never appeared")
