"""Everything a worker starts ends with it: finding and killing what a worker leaves behind.

Killing the worker's process group is not enough: a child that starts a session of its own (a
daemon: ``setsid``, a double fork, ``start_new_session=True``) leaves the group and used to
outlive the worker and the supervisor. Two ways of knowing a worker's descendants, the best
available chosen per worker:

* **cgroup v2**, where the supervisor's own cgroup can be written (root outside systemd, a
  delegated systemd unit, a privileged container): each worker is moved into a cgroup of its own
  right after it starts, before it runs any of the app's code. Nothing it starts can leave that
  cgroup without write access to the cgroup file system, so on its exit ``cgroup.kill`` ends
  every last one of them, however it detached. Never used in a systemd unit that was not given
  ``Delegate=yes``: its cgroup is systemd's.
* **a mark in the environment**, everywhere else: each worker gets ``SUPERVISOR_WORKER_MARK``, a
  value of its own that its children inherit. The supervisor is a child subreaper, so a
  descendant that detaches is re-parented to it, not to init; on the worker's exit, every
  descendant of the supervisor whose environment carries that worker's mark is killed. A
  descendant that clears its environment *and* detaches, or that makes itself a subreaper's
  orphan elsewhere, escapes this way.

Either way, leftovers get SIGKILL when the worker has exited (as its process group does) and are
signalled through a pidfd, so a recycled pid is never hit. Nothing can clean up after a
supervisor that is itself SIGKILLed: its workers die with it (``PR_SET_PDEATHSIG``), but their
detached descendants remain (under systemd, the unit's stop kills the whole cgroup).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import psutil

logger = logging.getLogger("supervisor")

MARK_VAR = "SUPERVISOR_WORKER_MARK"
_CGROUP_PREFIX = "supervisor-"
# How long to keep trying to remove a worker's cgroup while its killed members finish dying.
_RMDIR_ATTEMPTS = 50
_RMDIR_INTERVAL = 0.1


class Descendants(Protocol):
    """What one worker started, as far as this supervisor can tell."""

    def kill_leftovers(self) -> list[int]:
        """SIGKILL every remaining descendant of the exited worker; return their pids."""

    def release(self, call_later: Callable[[float, Callable[[], None]], object]) -> None:
        """Free what tracking used (a cgroup directory), now or a little later."""


def new_mark() -> str:
    return f"{os.getpid()}.{secrets.token_hex(8)}"


def _kill(pids: Iterable[int], accept: Callable[[int], bool] = lambda pid: True) -> list[int]:
    """SIGKILL each pid through a pidfd, after ``accept`` confirms it is the process meant."""
    killed = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # gone already
        try:
            if accept(pid):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
                killed.append(pid)
        except OSError:
            pass
        finally:
            os.close(fd)
    return killed


# ----- the environment mark ------------------------------------------------------------------------

def carries_mark(pid: int, mark: str) -> bool:
    try:
        return psutil.Process(pid).environ().get(MARK_VAR) == mark
    except psutil.Error:
        return False


class MarkedDescendants:
    """Descendants found by the environment mark among the supervisor's descendants."""

    def __init__(self, worker_pid: int, mark: str, root_pid: int | None = None) -> None:
        self.worker_pid = worker_pid
        self.mark = mark
        # The subreaper every detached descendant is re-parented to: the supervisor.
        self.root_pid = os.getpid() if root_pid is None else root_pid

    def kill_leftovers(self) -> list[int]:
        try:
            found = psutil.Process(self.root_pid).children(recursive=True)
        except psutil.Error:
            return []
        candidates = [p.pid for p in found if p.pid != self.worker_pid]
        return _kill(candidates, lambda pid: carries_mark(pid, self.mark))

    def release(self, call_later: Callable[[float, Callable[[], None]], object]) -> None:
        pass


# ----- cgroup v2 ------------------------------------------------------------------------------------

def _own_cgroup_dir(proc: Path = Path("/proc/self")) -> Path | None:
    """The directory of this process's cgroup v2, or None where there is none to be found."""
    try:
        lines = (proc / "cgroup").read_text().splitlines()
        mounts = (proc / "mountinfo").read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in lines if line.startswith("0::")), None)
    if relative is None or relative.endswith(" (deleted)"):
        return None
    for mount in mounts:
        fields = mount.split()
        separator = fields.index("-") if "-" in fields else -1
        if separator > 0 and fields[separator + 1] == "cgroup2":
            root, point = fields[3], fields[4]
            if relative == root or relative.startswith(root.rstrip("/") + "/"):
                return Path(point) / relative[len(root.rstrip("/")):].lstrip("/")
    return None


def _systemd_owns(path: Path) -> bool:
    """True for a systemd unit's cgroup that was not delegated: writing under it breaks systemd's rules."""
    if not path.name.endswith((".service", ".scope")):
        return False
    for attribute in ("user.delegate", "trusted.delegate"):
        with contextlib.suppress(OSError):
            if os.getxattr(path, attribute) == b"1":
                return False
    return True


@functools.cache
def cgroup_base() -> Path | None:
    """This supervisor's directory for worker cgroups, created on first use; None where cgroup v2
    cannot be used (absent, read-only, not ours to write)."""
    own = _own_cgroup_dir()
    if own is None or _systemd_owns(own) or not (own / "cgroup.procs").exists():
        return None
    _remove_stale(own)
    base = own / f"{_CGROUP_PREFIX}{os.getpid()}"
    try:
        base.mkdir(exist_ok=True)
    except OSError:
        return None
    return base


def _remove_stale(own: Path) -> None:
    """Remove the empty cgroups of supervisors that died without cleaning up (SIGKILL)."""
    with contextlib.suppress(OSError):
        for entry in own.iterdir():
            pid = entry.name.removeprefix(_CGROUP_PREFIX)
            if entry.name.startswith(_CGROUP_PREFIX) and pid.isdigit() and not psutil.pid_exists(int(pid)):
                for child in entry.iterdir():
                    if child.is_dir():
                        with contextlib.suppress(OSError):
                            child.rmdir()
                with contextlib.suppress(OSError):
                    entry.rmdir()


class CgroupDescendants:
    """The worker and all it starts, kept in a cgroup of their own."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def enter(cls, base: Path, worker_pid: int) -> CgroupDescendants | None:
        """Move ``worker_pid`` into a new cgroup under ``base``; None if the kernel refuses."""
        path = base / f"worker-{worker_pid}"
        try:
            path.mkdir()
            (path / "cgroup.procs").write_text(f"{worker_pid}\n")
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.rmdir()
            logger.debug("supervisor: cannot use cgroup %s (%s); tracking by environment", path, exc.strerror)
            return None
        return cls(path)

    def members(self) -> list[int]:
        try:
            return [int(pid) for pid in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill_leftovers(self) -> list[int]:
        members = self.members()
        if members and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1\n")  # atomic: forks racing it die too
                return members
        return _kill(members, lambda pid: pid in self.members())

    def release(self, call_later: Callable[[float, Callable[[], None]], object]) -> None:
        attempts = [_RMDIR_ATTEMPTS]

        def remove() -> None:
            try:
                self.path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:  # killed members are still on their way out
                attempts[0] -= 1
                if attempts[0] > 0:
                    call_later(_RMDIR_INTERVAL, remove)
                else:
                    logger.warning("supervisor: cgroup %s still has processes %s", self.path, self.members())
        remove()


def track(worker_pid: int, mark: str, base: Callable[[], Path | None] = cgroup_base) -> Descendants:
    """The best available tracking of what ``worker_pid`` starts (see the module's docstring)."""
    where = base()
    in_cgroup = CgroupDescendants.enter(where, worker_pid) if where is not None else None
    return in_cgroup or MarkedDescendants(worker_pid, mark)


def release_base() -> None:
    """Remove this supervisor's cgroup directories at exit (empty once every worker is gone)."""
    if not cgroup_base.cache_info().currsize:
        return  # never used
    base = cgroup_base()
    if base is None:
        return
    with contextlib.suppress(OSError):
        for child in base.iterdir():
            if child.is_dir():
                with contextlib.suppress(OSError):
                    child.rmdir()
        base.rmdir()
