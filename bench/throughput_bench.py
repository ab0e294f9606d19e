"""Steady-state throughput: one worker under this supervisor beside plain uvicorn and `uvicorn --reload`.

    python bench/throughput_bench.py [--clients 16] [--seconds 5]

Same raw ASGI app, one worker each, keep-alive clients on loopback; reports requests per second
and the ratio to plain uvicorn. The supervisor hands its worker a real TCP socket, so TCP_NODELAY
is set on every connection; `uvicorn --reload` passes the socket as if it were a Unix socket and
small responses wait on Nagle's algorithm.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import APP, running, wait_version  # noqa: E402
from tests.loadgen import Load  # noqa: E402
from tests.support import free_port  # noqa: E402


def commands(port: int) -> dict[str, list[str]]:
    uvicorn = [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--log-level", "warning",
               "--no-access-log"]
    return {
        "uvicorn": uvicorn,
        "uvicorn --reload": [*uvicorn, "--reload"],
        "supervisor": [sys.executable, "-m", "supervisor", "up", "--port", str(port), "--no-reload"],
    }


def measure(argv: list[str], port: int, clients: int, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "app.py").write_text(APP)
        # Quiet workers: access logs would measure the log relay, not the server.
        (work / "supervisor.toml").write_text('[app]\napp = "app:app"\n[supervisor]\nlog_level = "warning"\n'
                                              '[status]\nenabled = false\n[database]\nwait = false\n')
        with running(argv, work):
            wait_version(port, 1)
            load = Load("127.0.0.1", port, clients=clients, max_seconds=seconds + 30).start()
            started = time.monotonic()
            time.sleep(seconds)  # the measurement window
            result = load.stop()
            elapsed = time.monotonic() - started
            if result.failures:
                raise RuntimeError(f"{len(result.failures)} failed requests: {result.failures[:3]}")
            return result.ok / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    port = free_port()
    rates = {name: measure(argv, port, args.clients, args.seconds) for name, argv in commands(port).items()}
    base = rates["uvicorn"]
    print(f"{args.clients} keep-alive clients, {args.seconds:g} s each, one worker\n")
    print(f"{'':20}{'requests/s':>12}{'vs uvicorn':>12}")
    for name, rate in rates.items():
        print(f"{name:20}{rate:>12.0f}{rate / base:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
