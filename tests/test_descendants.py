"""Daemons a worker starts (double fork, setsid) end with the worker: real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from supervisor.spawn.descendants import _own_cgroup_dir, _systemd_owns
from tests.support import REPO, Running, app_project, base_env, gone, http_json, supervisor, wait_until

UP = ["up", "--no-reload"]


def start_daemon(url: str, run: Running, query: str = "") -> int:
    worker = http_json(url + "/pid")[1]["pid"]
    pid: int = http_json(f"{url}/daemon?seconds=60{query}")[1]["pid"]
    # It left the worker's tree, group and session: only the subreaper (the supervisor) holds it.
    wait_until(lambda: psutil.Process(pid).ppid() == run.pid, 10, "the daemon re-parented", lambda: run.output)
    assert os.getsid(pid) != os.getsid(worker) and os.getpgid(pid) != os.getpgid(worker)
    return pid


def kill_if_alive(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.timeout(60)
def test_a_daemon_started_by_a_worker_dies_when_the_worker_crashes(tmp_path: Path) -> None:
    with supervisor(UP, app_project(tmp_path)) as run:
        url = run.wait_url()
        worker = http_json(url + "/pid")[1]["pid"]
        daemon = start_daemon(url, run)
        try:
            os.kill(worker, signal.SIGKILL)
            wait_until(lambda: gone(daemon), 10, f"daemon {daemon} killed with its worker", lambda: run.output)
            run.wait_for_output(rf"killed 1 process\(es\) worker pid {worker} left behind: {daemon}")
            wait_until(lambda: http_json(url + "/pid")[1]["pid"] != worker, 30, "a new worker", lambda: run.output)
            assert run.stop() == 0
        finally:
            kill_if_alive(daemon)


@pytest.mark.timeout(60)
def test_a_daemon_does_not_outlive_a_stopped_supervisor(tmp_path: Path) -> None:
    with supervisor(UP, app_project(tmp_path)) as run:
        url = run.wait_url()
        daemon = start_daemon(url, run)
        try:
            assert run.stop() == 0
            assert gone(daemon), run.output
        finally:
            kill_if_alive(daemon)


@pytest.mark.timeout(60)
def test_in_a_cgroup_even_a_daemon_with_an_empty_environment_is_found(tmp_path: Path) -> None:
    with supervisor(UP, app_project(tmp_path)) as run:
        url = run.wait_url()
        worker = http_json(url + "/pid")[1]["pid"]
        cgroup = Path(f"/proc/{worker}/cgroup").read_text()
        if f"/supervisor-{run.pid}/worker-{worker}" not in cgroup:
            pytest.skip("cgroup v2 is not writable here: workers are tracked by their environment")
        daemon = start_daemon(url, run, "&clean=1")
        try:
            assert psutil.Process(daemon).environ() == {}
            os.kill(worker, signal.SIGKILL)
            wait_until(lambda: gone(daemon), 10, f"daemon {daemon} killed", lambda: run.output)
            assert run.stop() == 0
        finally:
            kill_if_alive(daemon)
    assert not Path(f"/sys/fs/cgroup/unified/supervisor-{run.pid}").exists()


# A stand-in supervisor for the environment-mark tracking (cgroups or not): a subreaper that starts
# a "worker" with a mark, lets it start a daemon and exit, and then kills the worker's leftovers.
SUPERVISOR = """
import ctypes, json, os, subprocess, sys
from supervisor.spawn.descendants import MARK_VAR, MarkedDescendants, new_mark
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
mark = new_mark()
worker = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env={**os.environ, MARK_VAR: mark},
                          stdout=subprocess.PIPE)
daemon = int(worker.stdout.readline())
bystander = subprocess.Popen(["sleep", "60"])  # ours, without the mark: left alone
worker.wait()
killed = MarkedDescendants(worker.pid, mark).kill_leftovers()
print(json.dumps({"daemon": daemon, "killed": killed, "bystander_alive": bystander.poll() is None}), flush=True)
bystander.kill()
bystander.wait()
os.waitpid(daemon, 0)  # re-parented to us: reap it
"""
WORKER = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        print(os.getpid(), flush=True)
        os.close(1)
        time.sleep(60)
    os._exit(0)
"""


@pytest.mark.timeout(30)
def test_without_cgroups_the_environment_mark_finds_a_detached_daemon() -> None:
    result = subprocess.run([sys.executable, "-c", SUPERVISOR, WORKER], capture_output=True, text=True,
                            timeout=20, env=base_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["killed"] == [report["daemon"]] and report["bystander_alive"], report
    assert gone(report["daemon"])


def test_the_own_cgroup_is_found_through_proc(tmp_path: Path) -> None:
    (tmp_path / "cgroup").write_text("12:memory:/x\n0::/user.slice/app.scope\n")
    (tmp_path / "mountinfo").write_text(
        "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"
        "31 1 0:27 / /proc rw - proc proc rw\n")
    assert _own_cgroup_dir(tmp_path) == Path("/sys/fs/cgroup/user.slice/app.scope")
    (tmp_path / "cgroup").write_text("3:cpu:/\n")  # cgroup v1 only
    assert _own_cgroup_dir(tmp_path) is None


def test_a_systemd_unit_cgroup_is_left_alone_unless_delegated(tmp_path: Path) -> None:
    unit = tmp_path / "webapp.service"
    unit.mkdir()
    assert _systemd_owns(unit)
    assert not _systemd_owns(tmp_path)  # not a unit's cgroup
    try:
        os.setxattr(unit, "user.delegate", b"1")
    except OSError:
        pytest.skip("no user xattrs on this file system")
    assert not _systemd_owns(unit)
