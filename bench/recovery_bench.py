"""Recovery figures of the supervisor core (no peer: these are ours alone).

    python bench/recovery_bench.py [--runs 10]

* a worker SIGKILLed -> a new worker answering on the same port (restart policy with
  ``initial_delay = 0.05``);
* the supervisor SIGKILLed -> its workers gone and the port free (PR_SET_PDEATHSIG);
* an idle supervisor SIGTERMed -> exited (graceful stop).
Loopback only; every process it starts is stopped by the test helpers.
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from supervisor.ports import bind_listener  # noqa: E402
from tests.support import app_project, http_json, supervisor, wait_until  # noqa: E402

UP = ["up", "--no-reload"]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def port_is_free(port: int) -> bool:
    with bind_listener("127.0.0.1", port):
        return True


def worker_restart(root: Path, runs: int) -> list[float]:
    times = []
    with supervisor(UP, root) as run:
        url = run.wait_url()
        for _ in range(runs):
            old = http_json(url + "/pid")[1]["pid"]
            started = time.monotonic()
            psutil.Process(old).send_signal(signal.SIGKILL)
            wait_until(lambda: http_json(url + "/pid", timeout=1)[1]["pid"] != old,  # noqa: B023
                       20, "a new worker", interval=0.005)
            times.append(time.monotonic() - started)
        run.stop()
    return times


def supervisor_killed(root: Path) -> float:
    port = int(re.search(r"port = (\d+)", (root / "supervisor.toml").read_text()).group(1))  # type: ignore[union-attr]
    with supervisor(UP, root) as run:
        run.wait_url()
        workers = run.worker_pids()
        run.proc.send_signal(signal.SIGKILL)
        run.wait_exit()
        started = time.monotonic()
        wait_until(lambda: all(gone(p) for p in workers) and port_is_free(port), 5, "workers gone",
                   interval=0.002)
        return time.monotonic() - started


def graceful_stop(root: Path) -> float:
    with supervisor(UP, root) as run:
        run.wait_url()
        started = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        if run.wait_exit() != 0:
            raise RuntimeError("a graceful stop did not exit 0")
        return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = app_project(base / "restart")
        toml = root / "supervisor.toml"  # every kill is a crash: never let them add up to a loop
        toml.write_text(toml.read_text().replace("crash_loop_failures = 3", "crash_loop_failures = 1000"))
        restart = worker_restart(root, args.runs)
        killed = [supervisor_killed(app_project(base / f"killed{i}")) for i in range(args.runs)]
        stopped = [graceful_stop(app_project(base / f"stop{i}")) for i in range(args.runs)]
    print(f"{'':48}{'median ms':>10}{'max ms':>10}")
    for label, times in (("worker SIGKILLed -> new worker answering", restart),
                         ("supervisor SIGKILLed -> workers gone, port free", killed),
                         ("idle SIGTERM -> supervisor exited", stopped)):
        print(f"{label:48}{statistics.median(times) * 1000:>10.0f}{max(times) * 1000:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
