"""The worker's heartbeat, request count and stack dump: pure pieces, then one real worker."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest

from supervisor.child.heartbeat import (
    BEAT,
    COUNTING,
    END_MARK,
    NEARING,
    REACHED,
    STACKS_SIGNAL,
    Beat,
    BeatReader,
    Heartbeat,
    RequestQuota,
)
from supervisor.listen.ports import bind_listener
from supervisor.spawn.process import WorkerProcess, WorkerSpec, spawn_worker
from tests.support import APPS, base_env, http_get


def test_beats_are_read_whole_however_the_bytes_arrive() -> None:
    data = BEAT.pack(*Beat(0.25, 7)) + BEAT.pack(*Beat(0.0, 9))
    reader = BeatReader()
    assert reader.feed(data[:5]) == []
    assert reader.feed(data[5:BEAT.size + 3]) == [Beat(0.25, 7)]
    assert reader.feed(data[BEAT.size + 3:]) == [Beat(0.0, 9)]


@pytest.mark.asyncio
@pytest.mark.timeout(10)
async def test_the_heartbeat_runs_on_the_loop_and_measures_how_late_a_blocked_loop_let_it_run() -> None:
    r, w = os.pipe()
    loop = asyncio.get_running_loop()
    beats: list[Beat] = []
    reader = BeatReader()
    arrived = asyncio.Event()

    def on_readable() -> None:
        beats.extend(reader.feed(os.read(r, 4096)))
        arrived.set()

    loop.add_reader(r, on_readable)
    try:
        Heartbeat(w, 0.05, lambda: 42).start(loop)
        await asyncio.wait_for(arrived.wait(), 5)
        assert beats[0][1] == 42 and beats[0][0] < 0.05
        time.sleep(0.3)  # blocks this loop: the next beat runs late by about that much
        count = len(beats)
        while len(beats) == count:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 5)
        assert beats[count][0] >= 0.2, beats
    finally:
        loop.remove_reader(r)
        os.close(r)
        os.close(w)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_real_worker_beats_counts_requests_and_dumps_its_stacks_while_its_loop_is_blocked(
        tmp_path: Path) -> None:
    stacks = tmp_path / "stacks"
    stacks.mkdir(mode=0o700)
    sock = bind_listener("127.0.0.1", 0)
    port = sock.getsockname()[1]
    lines: deque[str] = deque(maxlen=200)
    spec = WorkerSpec(app="hangapp:app", factory=False, listen_fd=sock.fileno(), cwd=APPS,
                      environ=base_env(), heartbeat_interval=0.1, stacks_dir=str(stacks))
    proc: WorkerProcess = spawn_worker(spec, lambda pid, line: lines.append(line))
    try:
        assert await asyncio.wait_for(proc.ready(), 30), "\n".join(lines)
        assert proc.vitals.ready_at is not None
        for _ in range(3):
            status, _, _ = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/pid")
            assert status == 200
        await _until(lambda: proc.vitals.requests == 3, "the 3 requests to be counted")
        blocked = asyncio.ensure_future(asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/block?seconds=3", 10))
        await _until(lambda: "hangapp: blocking" in lines, "the blocking request")
        beats = proc.vitals.beats
        os.kill(proc.pid, STACKS_SIGNAL)
        dump = stacks / f"{proc.pid}.txt"
        await _until(lambda: END_MARK in dump.read_text(), "the stack dump")
        text = dump.read_text()
        assert "in blocking_sleep" in text and "hangapp.py" in text, text
        assert "Asyncio tasks" in text, text
        assert proc.vitals.beats <= beats + 1, "no heartbeat may pass while the loop is blocked"
        assert (await blocked)[0] == 200
        await _until(lambda: proc.vitals.beats > beats + 1, "the heartbeat to resume")
    finally:
        proc.send(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
        sock.close()


async def _until(check: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)  # poll interval


def test_the_request_quota_nears_at_nine_tenths_and_is_reached_at_its_last_request() -> None:
    quota = RequestQuota(20)
    assert [quota.stage(n) for n in (1, 17, 18, 19, 20, 21)] == [COUNTING, COUNTING, NEARING, NEARING, REACHED,
                                                                 REACHED]
    assert [RequestQuota(1).stage(n) for n in (0, 1)] == [COUNTING, REACHED]
    assert RequestQuota(0).stage(10**9) == COUNTING  # no quota
    assert RequestQuota.draw(0, 50).limit == 0
    draws = iter((0.0, 0.5, 0.9999))
    assert [RequestQuota.draw(100, 10, lambda: next(draws)).limit for _ in range(3)] == [100, 105, 110]
