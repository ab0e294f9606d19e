"""The health watch against a scripted read model, a fake clock and fake signals. No processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from supervisor.child.heartbeat import END_MARK, STACKS_SIGNAL
from supervisor.config.settings import resolve_settings
from supervisor.contract import RecycleWorker
from supervisor.health.judge import MIB
from supervisor.health.watch import HealthWatch
from supervisor.secrets import Redactor
from supervisor.state import ExitReason, SlotState, SlotStatus, WorkerVitals
from tests.scripted import ScriptedSupervisor
from tests.support import Clock, make_project

SECRET = "healthwatch-secret-8e1f2a6b"


def scripted(tmp_path: Path, app: str) -> ScriptedSupervisor:
    root = make_project(tmp_path, toml=f"[app]\nworkers = 2\nheartbeat_interval = 1\n{app}",
                        dotenv=f"API_SECRET={SECRET}\n")
    (root / ".supervisor").mkdir(mode=0o700)
    settings = resolve_settings(root, {})
    sup = ScriptedSupervisor(settings, redactor=Redactor(settings.secrets))
    sup.slots = [SlotStatus(0, SlotState.RUNNING, pid=100), SlotStatus(1, SlotState.RUNNING, pid=101)]
    return sup


def beating(clock: Clock, *, last_beat: float, requests: int = 0) -> WorkerVitals:
    return WorkerVitals(spawned_at=clock.now - 100, ready_at=clock.now - 99, last_beat_at=last_beat, beats=5,
                        requests=requests)


@pytest.mark.asyncio
async def test_a_hung_worker_is_dumped_redacted_kept_and_replaced_with_a_kill(tmp_path: Path) -> None:
    clock = Clock()
    sup = scripted(tmp_path, "hang_timeout = 5\n")
    sup.vitals = {100: beating(clock, last_beat=clock.now - 6), 101: beating(clock, last_beat=clock.now - 0.5)}
    signals: list[tuple[int, int]] = []
    watch = HealthWatch(sup, clock=clock, sleep=clock.sleep, send=lambda pid, sig: signals.append((pid, sig)),
                        stopped=lambda pid: False)
    await watch.prepare()
    dump = watch.directory / "100.txt"
    dump.write_text(f'Current thread (most recent call first):\n  File "app.py", line 3 in stuck  # {SECRET}\n'
                    f"\nAsyncio tasks (1):\n...\n{END_MARK}\n")
    watch.check()
    assert sup.health.loop_lag == {100: 5.0, 101: 0.0}
    await asyncio.gather(*sup.tasks)
    assert signals == [(100, STACKS_SIGNAL)]
    assert sup.posted == [RecycleWorker(100, ExitReason.HUNG, kill=True)]
    incident = sup.health.last_hang
    assert incident is not None and (incident.slot, incident.pid, incident.silent_for) == (0, 100, 6.0)
    assert "line 3 in stuck" in incident.stacks and SECRET not in incident.stacks and END_MARK not in incident.stacks
    kept = Path(incident.file or "")
    assert kept == sup.settings.runtime_dir / "last-hang.txt" and "in stuck" in kept.read_text()
    assert SECRET not in kept.read_text() and oct(kept.stat().st_mode & 0o777) == "0o600"
    watch.check()  # the replacement is under way: no second verdict
    assert len(sup.posted) == 1


@pytest.mark.asyncio
async def test_a_stopped_worker_is_reported_without_stacks_and_not_waited_for(tmp_path: Path) -> None:
    clock = Clock()
    sup = scripted(tmp_path, "hang_timeout = 5\n")
    sup.vitals = {100: beating(clock, last_beat=clock.now - 30), 101: beating(clock, last_beat=clock.now)}
    watch = HealthWatch(sup, clock=clock, sleep=clock.sleep, send=lambda pid, sig: None, stopped=lambda pid: True)
    watch.check()
    await asyncio.gather(*sup.tasks)
    assert sup.health.last_hang is not None and "the process is stopped" in sup.health.last_hang.stacks
    assert sup.posted == [RecycleWorker(100, ExitReason.HUNG, kill=True)]


@pytest.mark.asyncio
async def test_a_worker_that_writes_no_tasks_is_reported_with_its_threads_after_the_deadline(tmp_path: Path) -> None:
    clock = Clock()
    sup = scripted(tmp_path, "hang_timeout = 5\n")
    def dump_threads_only(pid: int, sig: int) -> None:
        (watch.directory / f"{pid}.txt").write_text("Thread 0x1:\n  File x\n")

    watch = HealthWatch(sup, clock=clock, sleep=clock.sleep, stopped=lambda pid: False, send=dump_threads_only)
    await watch.prepare()
    sup.vitals = {100: beating(clock, last_beat=clock.now - 30)}
    text = await watch.capture(100)
    assert text.startswith("Thread 0x1:") and "no asyncio tasks" in text


@pytest.mark.asyncio
async def test_a_worker_that_was_reaped_is_never_signalled(tmp_path: Path) -> None:
    """Its pid may already belong to another process."""
    clock = Clock()
    sup = scripted(tmp_path, "hang_timeout = 5\n")
    sent: list[int] = []
    watch = HealthWatch(sup, clock=clock, sleep=clock.sleep, stopped=lambda pid: False,
                        send=lambda pid, sig: sent.append(pid))
    sup.vitals = {100: beating(clock, last_beat=clock.now - 30)}
    sup.vitals[100].exited = True
    assert await watch.capture(100) == "(no stacks: the process has exited)"
    assert await watch.capture(555) == "(no stacks: the process has exited)"
    assert sent == []


@pytest.mark.asyncio
async def test_past_max_rss_a_worker_is_recycled_and_hang_detection_stays_off_in_development(tmp_path: Path) -> None:
    clock = Clock()
    sup = scripted(tmp_path, "max_rss = 100\n")
    sup.vitals = {100: beating(clock, last_beat=clock.now - 300), 101: beating(clock, last_beat=clock.now)}
    memory = {100: 50 * MIB, 101: 150 * MIB}
    watch = HealthWatch(sup, clock=clock, sleep=clock.sleep, rss=memory.get)
    watch.check()
    assert sup.posted == [RecycleWorker(101, ExitReason.RSS)]
    assert sup.tasks == []  # 100 is silent, but hang detection is off in development unless set


@pytest.mark.asyncio
async def test_dump_files_of_workers_that_are_gone_are_removed(tmp_path: Path) -> None:
    sup = scripted(tmp_path, "")
    watch = HealthWatch(sup)
    await watch.prepare()
    for pid in (100, 555):
        (watch.directory / f"{pid}.txt").write_text("")
    watch.check()
    assert sorted(p.name for p in watch.directory.iterdir()) == ["100.txt"]


@pytest.mark.asyncio
async def test_a_worker_nearing_its_quota_is_recycled_on_the_change_once(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    sup = scripted(tmp_path, "max_requests = 20\n")
    sup.vitals = {100: beating(clock, last_beat=clock.now, requests=18), 101: beating(clock, last_beat=clock.now)}
    for vitals in sup.vitals.values():
        vitals.quota = 20
    watch = HealthWatch(sup, clock=clock, sleep=clock.sleep)
    await watch.prepare()
    sup.changed()
    assert sup.posted == []
    sup.vitals[100].nearing_quota = True
    sup.changed()  # what the runner does when a worker's beat says it nears its quota
    assert sup.posted == [RecycleWorker(100, ExitReason.REQUESTS)]
    sup.vitals[100].requests, sup.vitals[100].quota_reached = 20, True
    with caplog.at_level("WARNING", logger="supervisor"):
        sup.changed()
        sup.changed()
        watch.check()
    assert sup.posted == [RecycleWorker(100, ExitReason.REQUESTS)]  # one recycle for one quota
    told = [r.getMessage() for r in caplog.records if "takes no more" in r.getMessage()]
    assert told == ["web.0: worker pid 100 served 20 requests (its limit: 20, max_requests = 20 + jitter up to 0); "
                    "it takes no more requests, recycling it (requests)"]
