"""Recovery figures of the supervisor core (no peer: these are ours alone).

    python bench/recovery_bench.py [--runs 10]

* a worker SIGKILLed -> a new worker answering on the same port (restart policy with
  ``initial_delay = 0.05``);
* the default ``[restart]`` policy under an OOM-killer-like pattern: the serving worker SIGKILLed
  every 3 s, ten times: how many recovered by themselves, each recovery against a cold start
  (``up`` to first answer), and whether a request sent right after each kill got an answer;
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

from tests.support import app_project, gone, http_get, http_json, port_is_free, supervisor, wait_until  # noqa: E402

UP = ["up", "--no-reload"]


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


def without_restart_section(root: Path) -> Path:
    """The project with the default ``[restart]`` policy, as a user would have it."""
    toml = root / "supervisor.toml"
    toml.write_text(re.sub(r"\[restart\][^\[]*", "", toml.read_text()))
    return root


def cold_start(root: Path) -> float:
    started = time.monotonic()
    with supervisor(UP, root) as run:
        url = run.wait_url(60)
        wait_until(lambda: http_json(url + "/pid", timeout=1)[0] == 200, 20, "an answer", interval=0.002)
        elapsed = time.monotonic() - started
        run.stop()
    return elapsed


def repeated_kills(root: Path, kills: int = 10, spacing: float = 3.0) -> tuple[list[float], int, int]:
    """(recovery times, recovered count, requests right after a kill that got no answer in 2 s)."""
    times, unanswered = [], 0
    with supervisor(UP, root) as run:
        url = run.wait_url(60)
        for _ in range(kills):
            old = http_json(url + "/pid")[1]["pid"]
            killed_at = time.monotonic()
            psutil.Process(old).send_signal(signal.SIGKILL)
            try:
                http_get(url + "/pid", timeout=2.0)  # 200 from the new worker or the supervisor's 503
            except OSError:
                unanswered += 1
            try:
                wait_until(lambda: http_json(url + "/pid", timeout=1)[1].get("pid") not in (None, old),  # noqa: B023
                           20, "a new worker", interval=0.005)
            except AssertionError:
                break
            times.append(time.monotonic() - killed_at)
            time.sleep(max(0.0, killed_at + spacing - time.monotonic()))  # pacing the kills, as an OOM killer would
        run.stop()
    return times, len(times), unanswered


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
        colds = [cold_start(without_restart_section(app_project(base / f"cold{i}"))) for i in range(args.runs)]
        kills, recovered, unanswered = repeated_kills(without_restart_section(app_project(base / "kills")))
        killed = [supervisor_killed(app_project(base / f"killed{i}")) for i in range(args.runs)]
        stopped = [graceful_stop(app_project(base / f"stop{i}")) for i in range(args.runs)]
    print(f"{'':48}{'median ms':>10}{'max ms':>10}")
    for label, times in (("worker SIGKILLed -> new worker answering", restart),
                         ("supervisor SIGKILLed -> workers gone, port free", killed),
                         ("idle SIGTERM -> supervisor exited", stopped)):
        print(f"{label:48}{statistics.median(times) * 1000:>10.0f}{max(times) * 1000:>10.0f}")
    cold = statistics.median(colds)
    print("\ndefault [restart] policy, serving worker SIGKILLed every 3 s, 10 times:")
    print(f"  recovered by itself: {recovered}/10; requests right after a kill left unanswered: {unanswered}")
    print(f"  cold start (up -> first answer) median {cold * 1000:.0f} ms; recovery median "
          f"{statistics.median(kills) * 1000:.0f} ms, max {max(kills) * 1000:.0f} ms "
          f"(target: each <= cold start + 100 ms: {'met' if max(kills) <= cold + 0.1 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
