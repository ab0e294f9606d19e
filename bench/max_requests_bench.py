"""How many requests a worker serves before ``max_requests`` recycles it, under a fast client.

    python bench/max_requests_bench.py [--max-requests 1000] [--workers 1] [--clients 8] [--seconds 10]

The supervisor serves tests/apps/hangapp.py; ``--clients`` keep-alive clients ask ``/pid`` as fast
as they can for ``--seconds``, and count the answers per worker pid. Each worker that was
recycled during the run (every pid but the ones still serving at the end) served that many
requests; the figure to read is how far past ``max_requests`` that is. Failed requests are counted
too (there should be none).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import running  # noqa: E402
from bench.health_bench import answering  # noqa: E402
from tests.support import APPS, free_port  # noqa: E402

TOML = """[app]
app = "hangapp:app"
app_dir = "{apps}"
workers = {workers}
max_requests = {max_requests}
[supervisor]
log_level = "warning"
[status]
enabled = false
[database]
wait = false
"""


class Counting:
    """Keep-alive clients counting answers per worker pid, in order of first appearance."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.served: collections.Counter[int] = collections.Counter()
        self.failed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def run(self, seconds: float) -> None:
        for t in self._threads:
            t.start()
        time.sleep(seconds)  # the measurement window
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/pid")
                resp = conn.getresponse()
                pid = int(json.loads(resp.read())["pid"]) if resp.status == 200 else None
            except (OSError, http.client.HTTPException, ValueError):
                pid = None
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self._lock:
                if pid is None:
                    self.failed += 1
                else:
                    self.served[pid] += 1
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-requests", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "supervisor.toml").write_text(TOML.format(apps=APPS, workers=args.workers,
                                                          max_requests=args.max_requests))
        argv = [sys.executable, "-m", "supervisor", "up", "--port", str(port), "--no-reload"]
        with running(argv, work):
            answering(port)
            counting = Counting(port, args.clients)
            counting.run(args.seconds)
    # Counter keeps insertion order: the last ``workers`` pids were still serving at the end.
    # answering() itself was served by the first worker: one request more than the clients saw.
    pids = list(counting.served)
    retired = [counting.served[pid] + (1 if i == 0 else 0) for i, pid in enumerate(pids[:-args.workers])]
    total = sum(counting.served.values())
    print(f"max_requests = {args.max_requests}, {args.workers} worker(s), {args.clients} keep-alive clients, "
          f"{args.seconds:g} s: {total} requests ({total / args.seconds:.0f}/s), {counting.failed} failed")
    if not retired:
        print("no worker was recycled")
        return 0
    print(f"recycled workers: {len(retired)}; requests served by each: min {min(retired)}, "
          f"median {statistics.median(retired):g}, max {max(retired)} "
          f"(past max_requests by up to {max(retired) - args.max_requests})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
