"""Small operating-system helpers shared by the supervisor and the processes it starts.

Standard library only: a worker, the template and the zygote import this as well as the supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes  # at import, not in die_with_parent: it runs between fork and exec
import os
import signal
import threading

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent (the supervisor) dies.

    SIGKILL rather than SIGTERM: a supervisor that was SIGKILLed cannot drain anyone, and the
    point is that nothing keeps holding the port. Also safe between fork and exec (``preexec_fn``).
    Off Linux it does nothing: the supervisor's own stop path still applies.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def die_with(parent_pid: int) -> bool:
    """:func:`die_with_parent`, then False if that parent, ``parent_pid``, is gone already: the
    check after prctl closes the window where it died before the request was made."""
    die_with_parent()
    return os.getppid() == parent_pid


def kill_and_reap(pid: int) -> None:
    """SIGKILL ``pid`` and reap it if it is our child (else init will).

    Never a recycled pid: the signal goes through a pidfd, or, where none can be had (out of
    descriptors), only to a child of ours not reaped yet, which holds on to its pid.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except OSError:
        if parent_of(pid) != os.getpid():
            return
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    else:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(fd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (from ``/proc``); None when it is gone or cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def thread_count(task_dir: str = "/proc/self/task") -> int:
    """Threads of this process, C threads included (a library's native pool counts too).

    Where ``/proc`` cannot tell, the Python threads (``threading.active_count()``): never fewer
    than there are, and callers ask because forking with more than one thread is unsafe.
    """
    try:
        return len(os.listdir(task_dir))
    except OSError:
        return threading.active_count()
