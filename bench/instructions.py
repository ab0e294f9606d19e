"""Instructions per request, counted by callgrind: our worker against plain uvicorn, stack by stack.

Requests per second on a shared 2-core machine move by several percent from one run to the next,
plain uvicorn against itself included: a 3% overhead is inside that noise. Instruction counts are
not: ``valgrind --tool=callgrind`` counts what the CPU executes, whatever else the machine does.
Each server runs under callgrind, serves ``WARMUP`` requests, has its counters zeroed, serves
``REQUESTS`` more (on one keep-alive connection, or each on a fresh one), and dumps: the count over ``REQUESTS`` is the
figure. Our worker is started by hand with the arguments and descriptors the supervisor gives it
(:class:`~supervisor.child.args.WorkerArgs`): under the supervisor, valgrind would trace the
supervisor and its template too.

Needs Debian's ``valgrind`` package; under a minute per server.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.apps import BenchApp
from bench.procs import bench_env, started
from bench.tools import PY
from supervisor.child.args import WorkerArgs

WARMUP = 300
REQUESTS = 2000
START_TIMEOUT = 180.0  # seconds: an interpreter under valgrind starts 50 times slower
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n"
CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)", re.I | re.M)


def missing() -> str | None:
    return None if shutil.which("valgrind") and shutil.which("callgrind_control") else \
        "valgrind is not installed (apt-get install valgrind)"


def requests(port: int, count: int, fresh: bool = False) -> None:
    """``count`` requests, each answer read whole before the next: on one keep-alive connection, or
    (``fresh``) each on a connection of its own."""
    if fresh:
        for _ in range(count):
            requests(port, 1)
        return
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        for _ in range(count):
            conn.sendall(REQUEST)
            answer = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                answer += chunk
                head, separator, body = answer.partition(b"\r\n\r\n")
                length = CONTENT_LENGTH.search(head) if separator else None
                if length and len(body) >= int(length.group(1)):
                    break


def _answers(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            requests(port, 1)
            return True
        except OSError:
            time.sleep(0.5)  # poll interval: the server is still starting under valgrind
    return False


def count(tool: str, app: BenchApp, stack: tuple[str, str], base: Path, fresh: bool = False) -> float:
    """Instructions per request of ``tool`` ("uvicorn" or "ours") serving ``app`` on ``stack``
    (loop, http), kept alive or each on a ``fresh`` connection."""
    workdir = Path(tempfile.mkdtemp(dir=base, prefix=f"instructions-{tool}-"))
    app.prepare(workdir)
    out = workdir / "callgrind.out"
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    loop, http = stack
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    ready_r, ready_w = os.pipe()
    pass_fds: tuple[int, ...] = ()  # ours: the listening socket and the ready pipe, as the supervisor hands them
    if tool == "uvicorn":  # binding the port itself, as it is run (its --fd takes the socket for AF_UNIX)
        listener.close()
        argv = [PY, "-m", "uvicorn", app.target, "--host", "127.0.0.1", "--port", str(port), "--log-level",
                "warning", "--loop", loop, "--http", http]
    else:
        args = WorkerArgs(app=app.target, log_level="warning", loop=loop, http=http, parent_pid=os.getpid(),
                          listen_fd=listener.fileno(), ready_fd=ready_w)
        argv = [PY, "-m", "supervisor.child.worker", *args.to_argv()]
        pass_fds = (listener.fileno(), ready_w)
    env = bench_env({"PYTHONHASHSEED": "0", **app.env})
    try:
        with started([*valgrind, *argv], workdir, workdir.with_suffix(".log"), env, pass_fds=pass_fds) as run:
            listener.close()
            os.close(ready_w)
            if not _answers(port, time.monotonic() + START_TIMEOUT):
                raise RuntimeError(f"{tool} did not answer under valgrind:\n{run.output()[-1500:]}")
            requests(port, WARMUP, fresh)
            subprocess.run(["callgrind_control", "--zero", str(run.pid)], capture_output=True, timeout=60, check=True)
            requests(port, REQUESTS, fresh)
            subprocess.run(["callgrind_control", "--dump", str(run.pid)], capture_output=True, timeout=60, check=True)
        dumps = sorted(workdir.glob("callgrind.out.*"))  # the numbered ones are --dump's; the last is the exit
        summary = re.search(r"^summary:\s+(\d+)", dumps[0].read_text(), re.M) if dumps else None
        if summary is None:
            raise RuntimeError(f"no callgrind dump for {tool} in {workdir}")
        return int(summary.group(1)) / REQUESTS
    finally:
        os.close(ready_r)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":  # python -m bench.instructions: the uvloop+httptools pair on the small app
    from bench.apps import STARLETTE

    with tempfile.TemporaryDirectory() as tmp:
        for fresh in (False, True):
            figures = {tool: count(tool, STARLETTE, ("uvloop", "httptools"), Path(tmp), fresh)
                       for tool in ("uvicorn", "ours")}
            print("fresh" if fresh else "keep-alive", figures, f"ratio {figures['uvicorn'] / figures['ours']:.3f}")
    sys.exit(0)
