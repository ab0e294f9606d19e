"""Where native file events do not arrive: WSL drives, network and FUSE file systems, host bind mounts.

inotify reports changes made through this kernel only. A file edited on Windows under WSL's
``/mnt/c``, on another machine over NFS or SMB, through a FUSE daemon, or on the host of a
VM-backed container runtime (Docker Desktop) changes without an event, and a watcher waits
forever. :func:`polling_reason` reads the mount a path lives on from ``/proc/self/mountinfo``
(see proc(5)) and says why polling is needed there, or returns None; it is pure, so it is tested
with recorded lines. :func:`detect_polling` is the thin shell that reads the real file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "ceph", "glusterfs", "lustre", "gpfs",
    "davfs", "9p", "v9fs", "virtiofs", "vboxsf", "vmhgfs", "prl_fs",
})
WSL_TYPES = frozenset({"9p", "drvfs", "v9fs"})
# Not files from anywhere else: a container's own layers and the kernel's pseudo file systems.
LOCAL_ONLY = frozenset({"overlay", "tmpfs", "proc", "sysfs", "devtmpfs", "devpts", "mqueue", "cgroup",
                        "cgroup2", "shm", "squashfs", "aufs", "ramfs"})
_WSL_DRIVE = re.compile(r"^/mnt/[a-zA-Z]$")


@dataclass(frozen=True)
class Mount:
    point: str  # where it is mounted, e.g. /mnt/c
    root: str  # the directory of the source file system mounted there ("/" unless a bind mount)
    fstype: str  # e.g. ext4, 9p, fuse.sshfs
    source: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal: "\040".
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(lines: Iterable[str]) -> list[Mount]:
    """The mounts in ``/proc/self/mountinfo`` order (a later mount on the same point hides an
    earlier one); malformed lines are skipped."""
    mounts = []
    for line in lines:
        before, sep, after = line.rstrip("\n").partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        mounts.append(Mount(point=_unescape(fields[4]), root=_unescape(fields[3]), fstype=tail[0],
                            source=_unescape(tail[1])))
    return mounts


def mount_of(path: PurePosixPath, mounts: list[Mount]) -> Mount | None:
    """The mount ``path`` (absolute, resolved) lives on: the longest mount point containing it."""
    best: Mount | None = None
    for mount in mounts:
        point = PurePosixPath(mount.point)
        if path == point or point in path.parents:
            if best is None or len(point.parts) >= len(PurePosixPath(best.point).parts):
                best = mount
    return best


def polling_reason(path: PurePosixPath, mounts: list[Mount], in_container: bool) -> str | None:
    """Why file events may not arrive for ``path``, in words for the log; None if they should."""
    mount = mount_of(path, mounts)
    if mount is None:
        return None
    where = f"{mount.fstype} at {mount.point}"
    if mount.fstype in WSL_TYPES and _WSL_DRIVE.match(mount.point):
        return f"{path} is on a Windows drive mounted into WSL ({where}), where edits from Windows send no file events"
    if mount.fstype in NETWORK_TYPES:
        return f"{path} is on a network or shared file system ({where}), where edits made elsewhere send no file events"
    if mount.fstype == "fuse" or mount.fstype.startswith("fuse."):
        return f"{path} is on a FUSE file system ({where}), which may send no file events"
    if in_container and mount.point != "/" and mount.fstype not in LOCAL_ONLY:
        return (f"{path} is in a container, on a bind mount from the host ({where}); edits on the host "
                "send no file events into a VM-backed runtime such as Docker Desktop")
    return None


def in_container(root: Path = Path("/")) -> bool:
    return (root / ".dockerenv").exists() or (root / "run" / ".containerenv").exists()


def detect_polling(paths: Iterable[Path], mountinfo: Path = MOUNTINFO) -> str | None:
    """The first reason to poll among ``paths``; None when native events should work (or when
    the mount table cannot be read: not Linux)."""
    try:
        mounts = parse_mountinfo(mountinfo.read_text().splitlines())
    except OSError:
        return None
    container = in_container()
    for path in paths:
        reason = polling_reason(PurePosixPath(os.path.realpath(path)), mounts, container)
        if reason:
            return reason
    return None
