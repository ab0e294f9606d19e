"""The small OS helpers: thread count, parent pid, kill-and-reap, the parent-death signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from supervisor.child.osutil import kill_and_reap, parent_of, thread_count
from tests.support import REPO


def test_threads_are_counted_from_the_task_directory(tmp_path: Path) -> None:
    for tid in ("101", "102", "103"):
        (tmp_path / tid).mkdir()
    assert thread_count(str(tmp_path)) == 3


def test_without_proc_the_python_threads_are_counted_never_fewer(tmp_path: Path) -> None:
    stop = threading.Event()
    extra = threading.Thread(target=stop.wait)
    extra.start()
    try:
        assert thread_count(str(tmp_path / "missing")) == threading.active_count() >= 2
    finally:
        stop.set()
        extra.join()


def test_this_process_is_counted_from_proc() -> None:
    assert thread_count() == len(os.listdir("/proc/self/task"))


def test_the_parent_is_read_from_proc_and_a_gone_pid_has_none() -> None:
    assert parent_of(os.getpid()) == os.getppid()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert parent_of(child.pid) is None


@pytest.mark.timeout(30)
def test_a_child_is_killed_and_reaped() -> None:
    child = subprocess.Popen(["sleep", "60"])
    kill_and_reap(child.pid)
    assert parent_of(child.pid) is None  # not even a zombie: reaped
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)
    kill_and_reap(child.pid)  # gone: nothing to do, no error


PDEATHSIG_SCRIPT = """
import ctypes, os
from supervisor.child.osutil import die_with
told = die_with(os.getppid()), die_with(os.getppid() + 1000000)
sig = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
print(*told, sig.value)
"""


@pytest.mark.timeout(30)
def test_the_parent_death_signal_is_sigkill_and_a_wrong_parent_is_told() -> None:
    done = subprocess.run([sys.executable, "-c", PDEATHSIG_SCRIPT], cwd=REPO, capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False", str(int(signal.SIGKILL))]
