"""Orphan reaping: grandchildren a worker leaves behind are reaped, worker exit codes are not stolen."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from supervisor.systemd.reaper import GRACE, Child, ZombieAges, orphans_to_reap, reap, reap_orphans, sweep
from tests.support import base_env, http_json, supervisor, wait_until
from tests.systemd_support import Command, sd_project


def test_only_exited_unmanaged_children_outside_our_session_are_reaped() -> None:
    children = [
        Child(10, zombie=True, sid=10),  # an exited worker: the worker's own code reaps it
        Child(11, zombie=True, sid=10),  # a worker's orphaned grandchild
        Child(12, zombie=False, sid=10),  # an orphan still running
        Child(13, zombie=True, sid=1),  # our own subprocess, waited for by whoever started it
        Child(14, zombie=True, sid=99),  # re-parented from elsewhere (we are PID 1)
    ]
    assert orphans_to_reap(children, managed={10}, own_sid=1) == [11, 14]


def test_reap_waits_only_for_the_given_pids() -> None:
    ours = subprocess.Popen(["sh", "-c", "exit 3"])
    wait_until(lambda: psutil.Process(ours.pid).status() == psutil.STATUS_ZOMBIE, 10, "a zombie")
    assert reap([]) == []
    assert reap([ours.pid]) == [(ours.pid, 3)]
    assert reap([ours.pid]) == []  # already reaped: no error
    ours.returncode = 3  # tell Popen, so it does not wait again


def test_sweep_leaves_our_own_subprocesses_to_their_waiter() -> None:
    ours = subprocess.Popen(["sh", "-c", "exit 5"])  # same session as this test process
    wait_until(lambda: psutil.Process(ours.pid).status() == psutil.STATUS_ZOMBIE, 10, "a zombie")
    # Every other child of the test process counts as managed: only `ours` is in question.
    others = {c.pid for c in psutil.Process().children() if c.pid != ours.pid}
    assert sweep(managed=others) == []
    assert ours.wait(5) == 5


@pytest.mark.timeout(60)
def test_orphaned_grandchild_is_reaped_and_worker_exit_code_is_reported(tmp_path: Path) -> None:
    with supervisor(["up", "--no-reload"], sd_project(tmp_path)) as run:
        url = run.wait_url()
        status, body = http_json(url + "/orphan?seconds=1")
        orphan = body["pid"]
        assert status == 200
        # Its parent shell exited at once: the kernel hands it to the subreaper, our supervisor.
        wait_until(lambda: psutil.Process(orphan).ppid() == run.pid, 5, "the orphan re-parented",
                   lambda: run.output)

        def reaped() -> bool:
            return not os.path.exists(f"/proc/{orphan}")  # a zombie would still be listed

        wait_until(reaped, 10, f"orphan {orphan} reaped", lambda: run.output)
        run.wait_for_output(rf"reaped orphaned process pid {orphan} \(exit code 0\)")

        worker = http_json(url + "/pid")[1]["pid"]
        http_json(url + "/exit?code=7")
        run.wait_for_output(rf"worker pid {worker} exit code 7 \(crash\)")
        assert f"reaped orphaned process pid {worker}" not in run.output
        wait_until(lambda: run.output.count("is serving") == 2, 20, "the restarted worker serving",
                   lambda: run.output)
        assert run.stop() == 0


def can_unshare_pid_namespace() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--fork", "--pid", "--mount-proc", "true"], capture_output=True,
                           timeout=10, stdin=subprocess.DEVNULL)
    return probe.returncode == 0


@pytest.mark.timeout(60)
def test_as_pid_1_it_reaps_orphans_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    if not can_unshare_pid_namespace():
        pytest.skip("no permission to create a PID namespace (needs root or user namespaces)")
    # A new PID namespace makes the supervisor PID 1, as in a container.
    command = ["unshare", "--fork", "--pid", "--mount-proc", sys.executable, "-m", "supervisor", "up",
               "--no-reload"]
    run = Command(command, sd_project(tmp_path), base_env())
    try:
        url = run.wait_url()
        supervisor_pid = wait_until(lambda: psutil.Process(run.pid).children(), 10, "the supervisor",
                                    lambda: run.output)[0].pid
        assert http_json(url + "/pid")[1]["pid"] != 1  # pids as seen inside the namespace
        orphan = http_json(url + "/orphan?seconds=0.2")[1]["pid"]
        run.wait_for_output(rf"reaped orphaned process pid {orphan} \(exit code 0\)")
        os.kill(supervisor_pid, signal.SIGTERM)
        assert run.wait_exit() == 0, run.output
    finally:
        run.cleanup()


def test_zombie_ages_make_a_candidate_due_only_after_the_grace() -> None:
    now = [0.0]
    ages = ZombieAges(grace=1.0, clock=lambda: now[0])
    assert ages.due([11, 14]) == [] and ages.next_due_in() == 1.0
    now[0] = 0.6
    assert ages.due([11, 14, 15]) == []  # 15 first seen now
    now[0] = 1.0
    assert ages.due([11, 15]) == [11]  # 14 is gone (reaped by its waiter): forgotten
    assert ages.next_due_in() == pytest.approx(0.6)
    now[0] = 1.6
    assert ages.due([15]) == [15]


@pytest.mark.timeout(60)
def test_a_subprocess_in_its_own_session_is_left_to_its_waiter_for_the_grace() -> None:
    """The migration's case: started with start_new_session, waited for by whoever started it. A
    sweep run by the same SIGCHLD used to reap it first and steal its exit code ("Unknown child
    process pid N, will report returncode 255")."""
    async def scenario() -> int | None:
        reaper = asyncio.ensure_future(reap_orphans(lambda: set(), grace=GRACE))
        await asyncio.sleep(0)  # the reaper's SIGCHLD handler in place
        try:
            ours = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(4)"], start_new_session=True)
            while psutil.Process(ours.pid).status() != psutil.STATUS_ZOMBIE:
                await asyncio.sleep(0.01)  # poll interval: the child exits at once
            os.kill(os.getpid(), signal.SIGCHLD)  # another child's exit: a sweep now
            await asyncio.sleep(GRACE / 2)  # the sweep ran, well within the grace
            return ours.poll()
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper

    assert asyncio.run(scenario()) == 4, "the sweep reaped a fresh zombie: its waiter lost the exit code"
