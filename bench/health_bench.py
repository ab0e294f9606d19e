"""Hung and worn-out workers: this supervisor beside uvicorn's own multiprocess manager.

    python bench/health_bench.py [--runs 5] [--seconds 10]

Same app (tests/apps/hangapp.py), two workers each, loopback only:

* **hang**: one worker's event loop blocked by a request (a synchronous ``time.sleep(60)``);
  seconds until a fresh worker answers in its place (the supervisor: ``hang_timeout = 2``,
  ``heartbeat_interval = 0.5``; uvicorn pings its workers from a thread, which still answers);
* **max_requests under load**: 8 keep-alive clients for ``--seconds``, ``max_requests = 1000``
  (uvicorn: ``--limit-max-requests 1000``): workers recycled, failed requests, requests per second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import running  # noqa: E402
from tests.loadgen import Load  # noqa: E402
from tests.support import APPS, free_port, http_get, http_json  # noqa: E402

TOML = """[app]
app = "hangapp:app"
app_dir = "{apps}"
workers = 2
{extra}
[supervisor]
log_level = "warning"
[status]
enabled = false
[database]
wait = false
"""


def commands(port: int, extra: str, uvicorn_extra: list[str], work: Path) -> dict[str, list[str]]:
    (work / "supervisor.toml").write_text(TOML.format(apps=APPS, extra=extra))
    return {
        "supervisor": [sys.executable, "-m", "supervisor", "up", "--port", str(port), "--no-reload"],
        "uvicorn --workers 2": [sys.executable, "-m", "uvicorn", "hangapp:app", "--app-dir", str(APPS), "--port",
                                str(port), "--workers", "2", "--log-level", "warning", "--no-access-log",
                                *uvicorn_extra],
    }


def answering(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http_get(f"http://127.0.0.1:{port}/pid", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)  # poll interval
    raise RuntimeError("the app never answered")


def pids(port: int, tries: int = 40) -> set[int]:
    """The worker pids answering fresh connections (one accepted by a blocked worker times out)."""
    seen: set[int] = set()
    for _ in range(tries):
        try:
            seen.add(int(http_json(f"http://127.0.0.1:{port}/pid", timeout=1)[1]["pid"]))
        except OSError:
            continue
    return seen


def hang(argv: list[str], port: int, work: Path, limit: float = 15.0) -> float | None:
    """Seconds from blocking one worker's loop until a worker that was not serving before answers."""
    with running(argv, work):
        answering(port)
        before: set[int] = set()
        deadline = time.monotonic() + 20
        while len(before) < 2 and time.monotonic() < deadline:
            before |= pids(port, 10)
        threading.Thread(target=lambda: _quietly(port), daemon=True).start()
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if pids(port, 10) - before:
                return time.monotonic() - started
            time.sleep(0.02)  # poll interval
        return None


def _quietly(port: int) -> None:
    try:
        http_get(f"http://127.0.0.1:{port}/block?seconds=60", timeout=70)
    except OSError:
        pass  # killed with its worker


def recycling(argv: list[str], port: int, work: Path, seconds: float) -> tuple[int, int, float]:
    """(workers recycled, failed requests, requests/s) under 8 keep-alive clients."""
    with running(argv, work):
        answering(port)
        load = Load("127.0.0.1", port, path="/pid", clients=8, max_seconds=seconds + 30).start()
        started = time.monotonic()
        time.sleep(seconds)  # the measurement window
        result = load.stop()
        elapsed = time.monotonic() - started
        return len(result.bodies) - 2, len(result.failures), result.ok / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"hang: seconds from a blocked event loop to a fresh worker answering (median of {args.runs})")
        tools = commands(port, "hang_timeout = 2\nheartbeat_interval = 0.5", [], work)
        for name, argv in tools.items():
            times = [hang(argv, port, work) for _ in range(args.runs)]
            found = [t for t in times if t is not None]
            shown = f"{statistics.median(found):.2f}" if len(found) == len(times) else \
                f"not replaced within 15 s in {len(times) - len(found)} of {len(times)} runs"
            print(f"  {name:22}{shown}")
        print(f"\nmax_requests = 1000 under 8 keep-alive clients for {args.seconds:g} s")
        print(f"  {'':22}{'recycled':>10}{'failed':>10}{'requests/s':>12}")
        tools = commands(port, "max_requests = 1000", ["--limit-max-requests", "1000"], work)
        for name, argv in tools.items():
            recycled, failed, rate = recycling(argv, port, work, args.seconds)
            print(f"  {name:22}{recycled:>10}{failed:>10}{rate:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
