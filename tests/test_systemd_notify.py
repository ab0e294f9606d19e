"""sd_notify and the watchdog: the pure plan, then the real supervisor talking to a fake systemd."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.config.settings import resolve_settings
from supervisor.state import DatabaseState, SupervisorState
from supervisor.systemd.environ import scrub_systemd_env
from supervisor.systemd.notify import (
    Facts,
    NotifyPlan,
    SdNotifier,
    install_sd_notify,
    notify_address,
    send_datagram,
    summary,
    watchdog_interval,
    watchdog_pings,
)
from supervisor.systemd.outbox import Outbox
from tests.scripted import ScriptedSupervisor
from tests.support import base_env, free_port, http_get, http_json, make_project, supervisor
from tests.systemd_support import Notification, NotifyListener, sd_project

UP = ["up", "--no-reload"]


def facts(state: SupervisorState, ready: int = 1, database: DatabaseState = DatabaseState.DISABLED,
          restarts: int = 0) -> Facts:
    return Facts(state=state, port=8000, ready_workers=ready, workers=2, restarts=restarts,
                 database=database)


def sent_keys(plan: NotifyPlan, *script: Facts) -> list[list[str]]:
    """The assignment keys of each datagram the plan sends for a scripted history."""
    out = []
    for f in script:
        out.append([line.split("=", 1)[0] for m in plan.update(f) for line in m.split("\n")])
    return out


# ----- the pure plan ----------------------------------------------------------------------


def test_plan_sends_ready_only_once_a_worker_serves_and_the_database_is_ok() -> None:
    plan = NotifyPlan(clock_usec=lambda: 5)
    assert sent_keys(plan,
                     facts(SupervisorState.STARTING, ready=0),
                     facts(SupervisorState.WAITING_FOR_DATABASE, ready=0, database=DatabaseState.WAITING),
                     facts(SupervisorState.RUNNING, ready=1, database=DatabaseState.WAITING),
                     facts(SupervisorState.RUNNING, ready=1, database=DatabaseState.OK),
                     facts(SupervisorState.RUNNING, ready=2, database=DatabaseState.OK)) == [
        ["STATUS"], ["STATUS"], ["STATUS"], ["READY", "STATUS"], ["STATUS"]]


def test_plan_reports_a_reload_with_its_timestamp_then_ready_again() -> None:
    plan = NotifyPlan(clock_usec=lambda: 123456)
    plan.update(facts(SupervisorState.RUNNING))
    reloading = plan.update(facts(SupervisorState.RELOADING))
    assert reloading == ["RELOADING=1\nMONOTONIC_USEC=123456\nSTATUS=" + summary(facts(SupervisorState.RELOADING))]
    assert sent_keys(plan, facts(SupervisorState.RELOADING, restarts=1),
                     facts(SupervisorState.RUNNING, restarts=1)) == [["STATUS"], ["READY", "STATUS"]]


def test_plan_sends_no_reloading_before_the_first_ready() -> None:
    plan = NotifyPlan()
    assert sent_keys(plan, facts(SupervisorState.STARTING, ready=0), facts(SupervisorState.RELOADING, ready=0),
                     facts(SupervisorState.RUNNING)) == [["STATUS"], ["STATUS"], ["READY", "STATUS"]]


def test_plan_sends_stopping_once_and_never_ready_after_it() -> None:
    plan = NotifyPlan()
    assert sent_keys(plan, facts(SupervisorState.RUNNING), facts(SupervisorState.STOPPING),
                     facts(SupervisorState.STOPPING, ready=0),
                     facts(SupervisorState.RUNNING)) == [["READY", "STATUS"], ["STOPPING", "STATUS"], ["STATUS"],
                                           ["STATUS"]]


def test_plan_repeats_nothing_when_nothing_changed() -> None:
    plan = NotifyPlan()
    plan.update(facts(SupervisorState.RUNNING))
    assert plan.update(facts(SupervisorState.RUNNING)) == []


# ----- the retry plan -----------------------------------------------------------------------


def test_outbox_retries_a_state_datagram_with_a_bounded_backoff_until_it_is_delivered() -> None:
    box = Outbox(first_delay=0.01, max_delay=0.05)
    box.put("READY=1\nSTATUS=running")
    delays = []
    for _ in range(6):
        assert box.next() == "READY=1\nSTATUS=running"
        delays.append(box.sent(False))
    assert delays == [0.01, 0.02, 0.04, 0.05, 0.05, 0.05]
    assert box.attempts() == 6
    assert box.sent(True) is None and box.next() is None


@pytest.mark.parametrize("message", ["RELOADING=1\nMONOTONIC_USEC=5", "STOPPING=1"])
def test_outbox_keeps_every_state_datagram_until_delivered(message: str) -> None:
    box = Outbox()
    box.put(message)
    assert all(box.sent(False) is not None for _ in range(50))
    assert box.pending() == [message]


def test_outbox_tries_status_and_watchdog_once_and_drops_them() -> None:
    box = Outbox()
    box.put("STATUS=starting")
    box.put("WATCHDOG=1")
    assert box.sent(False) is None and box.next() == "WATCHDOG=1"
    assert box.sent(False) is None and box.next() is None


def test_outbox_collapses_what_a_later_datagram_makes_moot() -> None:
    box = Outbox()
    box.put("READY=1\nSTATUS=a")
    box.put("WATCHDOG=1")
    box.put("STATUS=b")
    box.put("RELOADING=1\nMONOTONIC_USEC=1")
    box.put("WATCHDOG=1")
    box.put("STATUS=c")
    # Order kept; one WATCHDOG and one STATUS: the newest of each.
    assert box.pending() == ["READY=1\nSTATUS=a", "RELOADING=1\nMONOTONIC_USEC=1", "WATCHDOG=1", "STATUS=c"]
    box.put("READY=1\nSTATUS=d")  # the reload is over: neither the old READY nor RELOADING is owed
    assert box.pending() == ["WATCHDOG=1", "STATUS=c", "READY=1\nSTATUS=d"]
    box.put("STOPPING=1\nSTATUS=e")
    assert box.pending() == ["STOPPING=1\nSTATUS=e"]


class FullQueue:
    """A notify socket whose queue takes nothing for the first ``refusals`` sends."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.delivered: list[str] = []

    def __call__(self, address: str, message: str) -> bool:
        if self.refusals > 0:
            self.refusals -= 1
            return False
        self.delivered.append(message)
        return True


def test_the_notifier_retries_ready_on_a_timer_and_sends_what_came_meanwhile_after_it() -> None:
    queue = FullQueue(refusals=4)
    scheduled: list[tuple[float, Any]] = []
    notifier = SdNotifier("/x", send=queue, later=lambda delay, callback: scheduled.append((delay, callback)),
                          outbox=Outbox(first_delay=0.01, max_delay=0.02))
    notifier.notify("READY=1")
    notifier.notify("WATCHDOG=1")  # behind READY, in order
    assert len(scheduled) == 1  # one retry scheduled, none sent behind it
    while scheduled:
        _, callback = scheduled.pop(0)
        callback()
    assert queue.delivered == ["READY=1", "WATCHDOG=1"]


def test_the_notifier_backs_off_between_attempts() -> None:
    queue = FullQueue(refusals=4)
    delays: list[float] = []
    pending: list[Any] = []

    def later(delay: float, callback: Any) -> None:
        delays.append(delay)
        pending.append(callback)

    notifier = SdNotifier("/x", send=queue, later=later, outbox=Outbox(first_delay=0.01, max_delay=0.02))
    notifier.notify("STOPPING=1")
    while pending:
        pending.pop()()
    assert delays == [0.01, 0.02, 0.02, 0.02] and queue.delivered == ["STOPPING=1"]


def test_the_final_flush_blocks_only_within_its_timeout(tmp_path: Path) -> None:
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        notifier = SdNotifier(path, send=lambda a, m: False, later=lambda d, c: None)
        notifier.notify("STOPPING=1")
        notifier.flush(timeout=1.0)
        assert server.recv(4096) == b"STOPPING=1"
    notifier = SdNotifier(str(tmp_path / "gone.sock"), send=lambda a, m: False, later=lambda d, c: None)
    notifier.notify("STOPPING=1")
    started = time.monotonic()
    notifier.flush(timeout=0.2)
    assert time.monotonic() - started < 5 and notifier.outbox.pending() == ["STOPPING=1"]


def test_notify_address_accepts_paths_and_abstract_names_only() -> None:
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abstract/name") == "\0abstract/name"
    assert notify_address("relative") is None
    assert notify_address("") is None and notify_address(None) is None


def test_watchdog_interval_is_half_the_timeout_and_only_for_our_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}, 10) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "10"}, 10) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "11"}, 10) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 10) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 10) is None
    assert watchdog_interval({}, 10) is None


class Stop(Exception):
    pass


@pytest.mark.asyncio
async def test_watchdog_pings_once_per_interval_from_the_loop() -> None:
    sent: list[str] = []
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise Stop

    with pytest.raises(Stop):
        await watchdog_pings(sent.append, 7.5, sleep=fake_sleep)
    assert sent == ["WATCHDOG=1"] * 3 and sleeps == [7.5] * 3


def test_send_datagram_never_raises_when_nobody_listens(tmp_path: Path) -> None:
    assert send_datagram(str(tmp_path / "missing.sock"), "READY=1") is False


def test_send_datagram_is_one_utf8_datagram(tmp_path: Path) -> None:
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        assert send_datagram(path, "STATUS=läuft\nREADY=1") is True
        assert server.recv(4096) == "STATUS=läuft\nREADY=1".encode()


def test_nothing_is_installed_without_notify_socket(tmp_path: Path) -> None:
    sup = ScriptedSupervisor(resolve_settings(make_project(tmp_path), {}))
    assert install_sd_notify(sup, {"WATCHDOG_USEC": "1000000"}, pid=1) is None
    assert sup.observers == []


def test_scrub_removes_every_systemd_variable() -> None:
    env = {"PATH": "/bin", "NOTIFY_SOCKET": "@n", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2",
           "LISTEN_FDS": "1", "LISTEN_PID": "2", "LISTEN_FDNAMES": "http", "LISTENER": "x"}
    assert scrub_systemd_env(env) == {"PATH": "/bin", "LISTENER": "x"}


# ----- the real supervisor ----------------------------------------------------------------


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_notify_sequence_ready_reloading_stopping_all_from_the_supervisor(tmp_path: Path, kind: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    answered_at_ready: list[int | BaseException] = []

    def on_message(note: Notification) -> None:
        # At the moment READY=1 arrives the webapp must already answer. The app's startup takes
        # 3 s and the supervisor holds the port, so a READY sent before the app is up would time
        # out here; 2 s is ample for a ready worker to answer, even on a loaded machine.
        if note.fields.get("READY") == "1" and not answered_at_ready:
            try:
                answered_at_ready.append(http_get(url + "/pid", timeout=2.0)[0])
            except OSError as exc:
                answered_at_ready.append(exc)

    address = str(tmp_path / "notify.sock") if kind == "path" else f"@sdtest/{os.getpid()}/{port}"
    listener = NotifyListener(address, on_message)
    env = base_env(NOTIFY_SOCKET=address, SDAPP_STARTUP_DELAY="3")
    try:
        with supervisor(UP, sd_project(tmp_path / "p", port=port), env) as run:
            ready = listener.wait_for("READY", "1", context=lambda: run.output)
            assert answered_at_ready == [200]
            assert listener.find("STATUS", f"running on port {port}: 1/1 workers ready, 0 restarts, "
                                           "database disabled") is not None, listener.describe()

            before = monotonic_usec()
            os.kill(run.pid, signal.SIGHUP)
            reloading = listener.wait_for("RELOADING", "1", start=ready + 1, context=lambda: run.output)
            stamp = int(listener.snapshot()[reloading].fields["MONOTONIC_USEC"])
            assert before <= stamp <= monotonic_usec()
            listener.wait_for("READY", "1", start=reloading + 1, context=lambda: run.output)

            assert run.stop(signal.SIGTERM) == 0
            stopping = listener.wait_for("STOPPING", "1", context=lambda: run.output)
            assert listener.find("READY", start=stopping) is None
            senders = {note.pid for note in listener.snapshot()}
            assert senders == {run.pid}, listener.describe()
    finally:
        listener.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    listening = NotifyListener(str(tmp_path / "notify.sock"))
    yield listening
    listening.close()


@pytest.mark.timeout(60)
def test_watchdog_pings_every_half_interval_from_the_supervisor(tmp_path: Path,
                                                                listener: NotifyListener) -> None:
    # 0.4s timeout: a ping every 0.2s.
    env = base_env(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="400000")
    with supervisor(UP, sd_project(tmp_path / "p"), env) as run:
        listener.wait_for("READY", "1", context=lambda: run.output)
        first = listener.wait_for("WATCHDOG", "1")
        index = first
        for _ in range(10):
            index = listener.wait_for("WATCHDOG", "1", start=index + 1, timeout=5)
        pings = [n for n in listener.snapshot()[first:index + 1] if "WATCHDOG" in n.fields]
        mean = (pings[-1].at - pings[0].at) / (len(pings) - 1)
        # The pinger sleeps 0.2 s between pings and a sleep never ends early, so a ping per full
        # interval (the bug to catch) could not average under 0.4 s. The window is wide for a
        # loaded 2-core machine: event-loop lag only lengthens intervals (up to 0.2 s spare), and
        # a late first receipt in this process shortens the mean (0.8 s of slack over 10 pings).
        assert 0.12 <= mean < 0.40, f"mean interval {mean:.3f}s over {len(pings)} pings"
        assert {n.pid for n in pings} == {run.pid}
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_workers_do_not_inherit_notify_socket_or_watchdog(tmp_path: Path, listener: NotifyListener) -> None:
    env = base_env(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="10000000", LISTEN_PID="1",
                   LISTEN_FDS="1")
    with supervisor(UP, sd_project(tmp_path / "p"), env) as run:
        status, body = http_json(run.wait_url() + "/env")
        assert status == 200 and body["names"] == []
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_ready_reaches_a_systemd_that_stalls_while_watchdog_pings_fill_its_queue(tmp_path: Path) -> None:
    listener = NotifyListener(str(tmp_path / "notify.sock"), paused=True)
    # A ping every 50 ms fills the 10-datagram queue long before the worker (1 s start-up) serves.
    env = base_env(NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="100000", SDAPP_STARTUP_DELAY="1")
    try:
        with supervisor(UP, sd_project(tmp_path / "p"), env) as run:
            run.wait_for_output(r"sd_notify: READY=1 not delivered .*retrying", 30)
            time.sleep(2.0)  # the stall under test: systemd reads nothing for 2 s more
            listener.resume()
            listener.wait_for("READY", "1", context=lambda: run.output)
            run.wait_for_output(r"sd_notify: READY=1 delivered at attempt \d+", 10)
            assert run.stop() == 0
            listener.wait_for("STOPPING", "1", context=lambda: run.output)
    finally:
        listener.close()
