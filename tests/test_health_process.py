"""Hung, bloated and worn workers against real processes: detected through the event loop,
explained, and replaced blue/green without failing other clients."""

from __future__ import annotations

import collections
import http.client
import json
import re
import signal
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.loadgen import Load
from tests.support import (
    APPS,
    Running,
    free_port,
    gone,
    http_get,
    http_json,
    make_project,
    supervisor,
    wait_until,
)

UP = ["up", "--no-reload"]


def serving(run: Running) -> dict[int, int]:
    """The latest pid the supervisor reported as serving, per slot."""
    return {int(slot): int(pid) for slot, pid in re.findall(r"web\.(\d+): worker pid (\d+) is serving", run.output)}


def status_url(run: Running) -> str:
    return run.wait_for_output(r"status: API and dashboard on (http://\S+)").group(1)


def project(tmp_path: Path, workers: int, app_extra: str, dotenv: str | None = None) -> Path:
    """tests/apps/hangapp.py served by ``workers`` workers, the status API on any free port, and
    ``app_extra`` (the settings under test) in ``[app]``."""
    return make_project(tmp_path, dotenv=dotenv, toml=f"""
        [server]
        port = {free_port()}
        [app]
        app = "hangapp:app"
        app_dir = "{APPS}"
        workers = {workers}
        ready_timeout = 30
        heartbeat_interval = 0.2
        {app_extra}
        [restart]
        initial_delay = 0.05
        max_delay = 0.2
        [database]
        wait = false
        [status]
        port = 0
    """)


def block_in_background(url: str, outcome: list[object]) -> threading.Thread:
    def go() -> None:
        try:
            outcome.append(http_get(url + "/block?seconds=120", timeout=60)[0])
        except Exception as exc:  # the expected outcome: the hung worker is killed
            outcome.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def blocked_pid(run: Running) -> int:
    return int(run.wait_for_output(r"web\.\d+\s+(\d+) \| hangapp: blocking").group(1))


@pytest.mark.timeout(120)
def test_a_loop_blocked_by_time_sleep_is_reported_hung_with_its_stack_and_replaced_while_others_are_served(
        tmp_path: Path) -> None:
    with supervisor(UP, project(tmp_path, 2, "hang_timeout = 2")) as run:
        url = run.wait_url()
        api = status_url(run)
        wait_until(lambda: len(serving(run)) == 2, 30, "both workers serving", lambda: run.output)
        outcome: list[object] = []
        blocker = block_in_background(url, outcome)
        hung = blocked_pid(run)
        slot = next(s for s, pid in serving(run).items() if pid == hung)
        # New connections from here on: the blocked worker cannot accept them, the other one must.
        load = Load("127.0.0.1", int(url.rsplit(":", 1)[1]), path="/pid", clients=3, fresh_connections=True).start()
        run.wait_for_output(rf"web\.{slot}: worker pid {hung} is hung: no heartbeat", 20)
        wait_until(lambda: serving(run)[slot] != hung, 30, "a replacement serving", lambda: run.output)
        run.wait_for_output(rf"worker pid {hung} stopped: killed by SIGKILL \(hung\)", 10)
        assert wait_until(lambda: gone(hung), 10, "the hung worker to be gone", lambda: run.output)
        successor = serving(run)[slot]
        wait_until(lambda: successor in {r["pid"] for r in [http_json(url + "/pid")[1] for _ in range(20)]}, 20,
                   "the replacement to answer", lambda: run.output)
        result = load.stop()
        blocker.join(20)
        assert result.failures == [], f"{len(result.failures)} failed: {result.failures[:5]}\n{run.output}"
        assert result.ok > 0
        assert outcome and isinstance(outcome[0], Exception), outcome  # its own request is lost by nature
        # The log and status name the blocking function; the dump is kept in the runtime directory.
        incident = run.output[run.output.index(f"worker pid {hung} is hung"):]
        assert re.search(r'hangapp\.py", line \d+ in blocking_sleep', incident), incident
        doc = http_json(api + "/status")[1]
        last = doc["health"]["last_hang"]
        assert (last["pid"], last["slot"]) == (hung, slot)
        assert "in blocking_sleep" in last["stacks"] and "Asyncio tasks" in last["stacks"]
        assert "in blocking_sleep" in Path(last["file"]).read_text()
        assert doc["health"]["recycled"] == {"hung": 1}
        wait_until(lambda: all(w["loop_lag"] is not None for w in http_json(api + "/status")[1]["workers"]), 10,
                   "every worker's loop lag", lambda: run.output)
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_a_sigstopped_worker_is_detected_replaced_and_killed(tmp_path: Path) -> None:
    with supervisor(UP, project(tmp_path, 1, "hang_timeout = 1.5")) as run:
        url = run.wait_url()
        stopped = serving(run)[0]
        psutil.Process(stopped).send_signal(signal.SIGSTOP)
        run.wait_for_output(rf"worker pid {stopped} is hung: .*\n.*the process is stopped", 20)
        wait_until(lambda: serving(run)[0] != stopped, 30, "a replacement serving", lambda: run.output)
        assert wait_until(lambda: gone(stopped), 10, "the stopped worker to be killed", lambda: run.output)
        assert http_json(url + "/pid")[1]["pid"] == serving(run)[0]
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_a_busy_healthy_thread_does_not_hide_a_blocked_loop(tmp_path: Path) -> None:
    """A ping answered by a thread would call this worker alive; the heartbeat comes from the loop."""
    ping = free_port()
    root = project(tmp_path, 1, "hang_timeout = 2", dotenv=f"HANGAPP_PING_PORT={ping}\n")
    with supervisor(UP, root) as run:
        url = run.wait_url()
        hung = serving(run)[0]
        outcome: list[object] = []
        block_in_background(url, outcome)
        assert blocked_pid(run) == hung

        def pong() -> str:
            with socket.create_connection(("127.0.0.1", ping), timeout=2) as conn:
                return conn.recv(100).decode()

        assert pong() == f"pong {hung}\n"  # the thread answers while the loop is blocked...
        run.wait_for_output(rf"worker pid {hung} is hung", 20)  # ...and the worker is found hung all the same
        assert psutil.Process(hung).num_threads() >= 3
        wait_until(lambda: serving(run)[0] != hung, 30, "a replacement serving", lambda: run.output)
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_a_start_slower_than_hang_timeout_but_within_ready_timeout_is_not_killed(tmp_path: Path) -> None:
    root = project(tmp_path, 1, "hang_timeout = 1", dotenv="HANGAPP_STARTUP_SECONDS=3\n")
    with supervisor(UP, root) as run:
        url = run.wait_url()
        api = status_url(run)
        pid = serving(run)[0]
        [worker] = http_json(api + "/status")[1]["workers"]
        assert worker["ready_at"] - worker["started_at"] >= 3.0  # it did start slowly

        def served_three_hang_timeouts() -> bool:
            assert http_json(url + "/pid")[1]["pid"] == pid
            return time.time() - float(worker["ready_at"]) >= 3.0

        wait_until(served_three_hang_timeouts, 20, "three hang timeouts of serving", lambda: run.output)
        assert "hung" not in run.output and run.output.count("started worker pid") == 1
        assert run.stop() == 0


# ----- recycling -------------------------------------------------------------------------------

def recycles(run: Running, reason: str) -> list[tuple[int, int]]:
    """(requests served, its drawn limit) of each worker recycled for ``reason``, from the log."""
    if reason != "requests":
        return [(0, 0)] * len(re.findall(rf"recycling it \({reason}\)", run.output))
    return [(int(served), int(limit)) for served, limit in
            re.findall(r"served (\d+) requests \(its limit: (\d+),.*recycling it \(requests\)", run.output)]


def at_most_one_replacement_at_a_time(output: str) -> None:
    """Between a "replacing worker" line and its successor serving, no other replacement starts."""
    under_way: str | None = None
    for line in output.splitlines():
        started = re.search(r"(web\.\d+): replacing worker pid \d+", line)
        if started:
            assert under_way is None, f"{started.group(1)} began while {under_way} was being replaced:\n{output}"
            under_way = started.group(1)
        elif under_way and re.search(rf"{re.escape(under_way)}: (worker pid \d+ is serving|new worker pid)", line):
            under_way = None


@pytest.mark.timeout(120)
def test_max_requests_recycles_under_load_one_slot_at_a_time_with_zero_failed_requests(tmp_path: Path) -> None:
    with supervisor(UP, project(tmp_path, 2, "max_requests = 50")) as run:
        url = run.wait_url()
        wait_until(lambda: len(serving(run)) == 2, 30, "both workers serving", lambda: run.output)
        load = Load("127.0.0.1", int(url.rsplit(":", 1)[1]), path="/pid", clients=4).start()
        wait_until(lambda: len(re.findall(r"stopped: drained and exited on SIGTERM \(requests\)", run.output)) >= 4,
                   60, "four workers recycled for their requests", lambda: run.output)
        result = load.stop()
        assert result.failures == [], f"{len(result.failures)} failed: {result.failures[:5]}\n{run.output}"
        assert all(served >= limit == 50 for served, limit in recycles(run, "requests")), recycles(run, "requests")
        at_most_one_replacement_at_a_time(run.output)
        doc = http_json(status_url(run) + "/status")[1]
        assert doc["health"]["recycled"]["requests"] >= 4
        assert run.stop() == 0


def fast_client(port: int, requests: int) -> tuple[list[tuple[int, str]], list[str]]:
    """``requests`` GET /pid one after the other on a keep-alive connection, reconnecting when the
    server says ``Connection: close``; no retries. (pid, Connection header) of each, and failures."""
    answers: list[tuple[int, str]] = []
    failures: list[str] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(requests):
        try:
            conn.request("GET", "/pid")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                failures.append(f"HTTP {resp.status}")
                continue
            answers.append((int(json.loads(body)["pid"]), (resp.getheader("connection") or "").lower()))
            if resp.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            conn.close()
    conn.close()
    return answers, failures


@pytest.mark.timeout(120)
def test_max_requests_is_exact_for_a_fast_client_the_last_answer_closing_the_connection(tmp_path: Path) -> None:
    """One worker, so each quota runs out before the replacement serves: the connection opened
    after the last answer waits in the backlog for the replacement, and is not refused."""
    with supervisor(UP, project(tmp_path, 1, "max_requests = 20")) as run:
        url = run.wait_url()
        answers, failures = fast_client(int(url.rsplit(":", 1)[1]), 120)
        assert failures == [], f"{failures[:5]}\n{run.output}"
        served = collections.Counter(pid for pid, _ in answers)
        workers = list(served)
        assert len(workers) >= 4, f"{served}\n{run.output}"
        assert all(served[pid] == 20 for pid in workers[:-1]) and served[workers[-1]] <= 20, served
        closing = [i for i, (_, connection) in enumerate(answers) if connection == "close"]
        assert closing[:len(workers) - 1] == [19 + 20 * n for n in range(len(workers) - 1)], (closing, served)
        wait_until(lambda: len(recycles(run, "requests")) >= len(workers) - 1, 10, "every quota logged",
                   lambda: run.output)
        assert all(count == limit == 20 for count, limit in recycles(run, "requests")), recycles(run, "requests")
        replaced = re.findall(r"replacing worker pid (\d+) \(requests\)", run.output)
        assert len(replaced) == len(set(replaced)), f"a worker recycled twice for one quota:\n{run.output}"
        assert run.stop() == 0


@pytest.mark.timeout(120)
def test_a_quota_under_concurrent_load_recycles_each_worker_once_with_zero_failed_requests(tmp_path: Path) -> None:
    with supervisor(UP, project(tmp_path, 2, "max_requests = 20")) as run:
        url = run.wait_url()
        wait_until(lambda: len(serving(run)) == 2, 30, "both workers serving", lambda: run.output)
        load = Load("127.0.0.1", int(url.rsplit(":", 1)[1]), path="/pid", clients=6).start()
        wait_until(lambda: len(re.findall(r"stopped: drained and exited on SIGTERM \(requests\)", run.output)) >= 6,
                   60, "six workers recycled for their requests", lambda: run.output)
        result = load.stop()
        assert result.failures == [], f"{len(result.failures)} failed: {result.failures[:5]}\n{run.output}"
        replaced = re.findall(r"replacing worker pid (\d+) \(requests\)", run.output)
        assert len(replaced) == len(set(replaced)), f"a worker recycled twice for one quota:\n{run.output}"
        # Each served its quota, and past it only what its other 5 keep-alive connections had sent.
        assert all(20 <= served <= 20 + 5 for served, _ in recycles(run, "requests")), recycles(run, "requests")
        at_most_one_replacement_at_a_time(run.output)
        assert run.stop() == 0


@pytest.mark.timeout(120)
def test_a_worker_stopped_at_its_quota_takes_connections_again_when_its_successor_fails(tmp_path: Path) -> None:
    failing = tmp_path / "successors-fail"
    root = project(tmp_path / "p", 1, "max_requests = 5", dotenv=f"HANGAPP_FAIL_IF_EXISTS={failing}\n")
    with supervisor(UP, root) as run:
        url = run.wait_url()
        first = serving(run)[0]
        failing.write_text("")
        answers, failures = fast_client(int(url.rsplit(":", 1)[1]), 5)
        assert failures == [] and answers[-1] == (first, "close"), (answers, failures)
        # A new connection waits in the backlog while the successor fails, then the old worker takes it.
        status, _, body = http_get(url + "/pid", timeout=60)
        assert (status, json.loads(body)["pid"]) == (200, first), run.output
        run.wait_for_output(rf"worker pid {first} stopped at its request quota; its successor failed, so it takes "
                            r"connections again", 10)
        assert run.stop() == 0


@pytest.mark.timeout(120)
def test_jitter_gives_each_worker_its_own_request_limit(tmp_path: Path) -> None:
    with supervisor(UP, project(tmp_path, 2, "max_requests = 30\nmax_requests_jitter = 300")) as run:
        url = run.wait_url()
        wait_until(lambda: len(serving(run)) == 2, 30, "both workers serving", lambda: run.output)
        load = Load("127.0.0.1", int(url.rsplit(":", 1)[1]), path="/pid", clients=4).start()
        wait_until(lambda: len(recycles(run, "requests")) >= 4, 90, "four recycled workers", lambda: run.output)
        result = load.stop()
        limits = [limit for _, limit in recycles(run, "requests")]
        assert all(30 <= limit <= 330 for limit in limits), limits
        assert len(set(limits)) > 1, f"every worker drew the same limit: {limits}"
        assert result.failures == [], result.failures[:5]
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_a_worker_past_max_rss_is_recycled_for_rss(tmp_path: Path) -> None:
    with supervisor(UP, project(tmp_path, 1, "max_rss = 150")) as run:
        url = run.wait_url()
        api = status_url(run)
        before = serving(run)[0]
        memory = wait_until(lambda: http_json(api + "/status")[1]["workers"][0]["memory_rss"], 10, "memory")
        assert memory < 150 * 1024 * 1024, f"the idle worker already uses {memory} bytes"
        assert http_json(url + "/grow?mb=200")[0] == 200
        run.wait_for_output(rf"worker pid {before} resident memory \d+\.\d MiB is over max_rss = 150 MiB; "
                            r"recycling it \(rss\)", 20)
        wait_until(lambda: serving(run)[0] != before, 30, "the replacement serving", lambda: run.output)
        run.wait_for_output(rf"worker pid {before} stopped: drained and exited on SIGTERM \(rss\)", 20)
        doc = http_json(api + "/status")[1]
        assert doc["workers"][0]["last_exit"]["reason"] == "rss"
        assert doc["health"]["recycled"] == {"rss": 1}
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_a_worker_past_max_age_is_recycled_for_age(tmp_path: Path) -> None:
    with supervisor(UP, project(tmp_path, 1, "max_age = 2\nmax_age_jitter = 1")) as run:
        url = run.wait_url()
        first = serving(run)[0]
        run.wait_for_output(rf"worker pid {first} running for \d+\.\ds \(its limit: [23]\.\ds.*"
                            r"recycling it \(age\)", 20)
        wait_until(lambda: serving(run)[0] != first, 30, "the replacement serving", lambda: run.output)
        assert http_json(url + "/pid")[1]["pid"] == serving(run)[0]
        assert run.stop() == 0
