"""Running out of descriptors: a higher open-file limit at start.

The usual soft limit of open files is 1,024 while the hard limit is far higher; a supervisor
holding a few hundred connections (status API clients, the fallback responder's) should not be
the first to run out, so ``up`` raises the soft limit to the hard one. Workers inherit it: an
ASGI server on asyncio (epoll) has no use for the low default either.

When descriptors run out all the same, :class:`supervisor.child.accept_errors.AcceptErrorLog`
keeps the log quiet.
"""

from __future__ import annotations

import resource
from pathlib import Path


def _nr_open(path: Path = Path("/proc/sys/fs/nr_open")) -> int:
    """The kernel's ceiling for RLIMIT_NOFILE (an unlimited hard limit cannot be a soft limit)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 1 << 20


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (before, after), or None if
    nothing changed (already there, or the kernel refused)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _nr_open() if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return None
    return soft, target
