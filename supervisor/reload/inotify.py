"""Native file events on Linux, read straight from inotify on the event loop: nothing runs at rest.

watchfiles' native watcher hands its events to Python from a loop that sleeps ``step``
milliseconds at a time (half the debounce here) and takes
the GIL on every turn, watching or not: about 0.08 CPU-seconds a minute on a small machine, for
nothing. Here the inotify descriptor is one more reader of the supervisor's event loop, so an
idle project costs no wake-up at all, and a change costs one read.

One watch per directory, added for each tree at start and for every directory created or moved
in later (its files, written before the watch existed, count as changed). Directories whose
changes never count (``.git``, ``node_modules``, the runtime directory: see
:meth:`~supervisor.reload.filters.ChangeFilter.ignores_directory`) are not watched at all. When
the kernel's queue overflows, every file under the roots counts as changed. Polling, other
systems, and a watch limit too low for the tree are left to watchfiles
(:func:`supervisor.reload.stream.watch_batches` decides).

Events are handed over as they are read; which of them count, and when a batch closes, is
:mod:`supervisor.reload.batching`'s to say. :func:`parse` and :func:`interpret` are pure;
:class:`Inotify` is the thin shell over the system calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

logger = logging.getLogger("supervisor")

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
# What a watch asks for: content and metadata changes (``touch`` is one), names coming and going.
MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
        | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK)
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
READ_SIZE = 64 * 1024
ENOSPC = 28


@dataclass(frozen=True)
class Event:
    wd: int
    mask: int
    name: str


def parse(data: bytes) -> list[Event]:
    """The events in one read of the inotify descriptor."""
    events, offset = [], 0
    while offset + _HEADER.size <= len(data):
        wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        raw = data[offset:offset + length].split(b"\0", 1)[0]
        offset += length
        events.append(Event(wd, mask, os.fsdecode(raw)))
    return events


@dataclass(frozen=True)
class Outcome:
    """What a batch of events means: paths changed, directories to watch from now on (their
    files count as changed too), watches gone, and whether the queue overflowed."""

    changed: frozenset[str] = frozenset()
    new_dirs: tuple[str, ...] = ()
    gone: frozenset[int] = frozenset()
    overflow: bool = False


def interpret(events: Iterable[Event], dirs: dict[int, str]) -> Outcome:
    """Events, read against the watched directories (``wd -> path``), as an :class:`Outcome`."""
    changed: set[str] = set()
    new_dirs: list[str] = []
    gone: set[int] = set()
    overflow = False
    for event in events:
        if event.mask & IN_Q_OVERFLOW:
            overflow = True
            continue
        if event.mask & IN_IGNORED:
            gone.add(event.wd)
            continue
        directory = dirs.get(event.wd)
        if directory is None:
            continue  # a watch removed meanwhile
        path = os.path.join(directory, event.name) if event.name else directory
        changed.add(path)
        if event.mask & IN_ISDIR and event.mask & (IN_CREATE | IN_MOVED_TO):
            new_dirs.append(path)
    return Outcome(frozenset(changed), tuple(new_dirs), frozenset(gone), overflow)


class Inotify:
    """One inotify instance and its watches: a directory tree at a time, pruned by ``skip``."""

    def __init__(self, skip: Callable[[str], bool]) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        self.fd: int = fd
        self.skip = skip
        self.dirs: dict[int, str] = {}  # wd -> the directory's path as watched
        self.watched: dict[str, int] = {}  # its real path -> wd
        self._reals: dict[int, str] = {}  # wd -> its real path: the reverse, so both stay O(1)

    def add_tree(self, root: str) -> list[str]:
        """Watch ``root`` and every directory below it that is not watched yet (links followed,
        each directory once); return the files found, which count as changed when the directory
        is new. Raises OSError when a watch cannot be added for want of room (ENOSPC)."""
        files: list[str] = []
        walked: set[str] = set()
        for directory, subdirs, names in os.walk(root, followlinks=True):
            real = os.path.realpath(directory)
            if real in walked or (directory != root and self.skip(directory)):
                subdirs[:] = []  # a link back up the tree, or a directory whose changes never count
                continue
            walked.add(real)
            if real not in self.watched:
                wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), MASK)
                if wd < 0:
                    errno = ctypes.get_errno()
                    if errno == ENOSPC:
                        raise OSError(errno, "the limit of inotify watches is reached "
                                             "(sysctl fs.inotify.max_user_watches)")
                    subdirs[:] = []  # gone or unreadable meanwhile: nothing to watch there
                    continue
                self._remember(wd, directory, real)
            files.extend(os.path.join(directory, name) for name in names)
        return files

    def _remember(self, wd: int, directory: str, real: str) -> None:
        # The same directory watched again under a new name (moved) keeps its watch: the kernel
        # watches inodes, and gives the same wd back.
        self.forget(wd)
        self.dirs[wd] = directory
        self.watched[real] = wd
        self._reals[wd] = real

    def forget(self, wd: int) -> None:
        """A watch the kernel removed (its directory is gone), or one about to be renamed."""
        self.dirs.pop(wd, None)
        real = self._reals.pop(wd, None)
        if real is not None and self.watched.get(real) == wd:
            del self.watched[real]

    def read(self) -> list[Event]:
        try:
            return parse(os.read(self.fd, READ_SIZE))
        except BlockingIOError:
            return []

    def close(self) -> None:
        os.close(self.fd)


def apply(watcher: Inotify, roots: list[str], outcome: Outcome) -> set[str]:
    """Bring the watches up to date with ``outcome``; return every path that counts as changed."""
    for wd in outcome.gone:
        watcher.forget(wd)
    changed = set(outcome.changed)
    # Events were lost when the queue overflowed: whatever is there may have changed.
    for directory in roots if outcome.overflow else outcome.new_dirs:
        try:
            changed.update(watcher.add_tree(directory))
        except OSError as exc:
            logger.warning("reload: changes under %s will not be seen: %s", directory, exc.strerror)
    return changed


@contextlib.contextmanager
def inotify_changes(roots: list[str], *, skip: Callable[[str], bool],
                    deliver: Callable[[set[str]], None]) -> Iterator[None]:
    """Watch ``roots`` while the block runs: ``deliver`` gets the paths changed in each read of
    the descriptor, on the running event loop, as they arrive (batching is the caller's:
    :class:`~supervisor.reload.batching.Batcher`).

    The watches are in place on entering, which raises OSError when inotify is unusable (no
    instance or watch left).
    """
    watcher = Inotify(skip)
    try:
        for root in roots:
            watcher.add_tree(root)
    except BaseException:
        watcher.close()
        raise
    loop = asyncio.get_running_loop()

    def on_readable() -> None:
        # Read at once: the descriptor stays readable (and this is called again) until read.
        changed = apply(watcher, roots, interpret(watcher.read(), watcher.dirs))
        if changed:
            deliver(changed)

    loop.add_reader(watcher.fd, on_readable)
    try:
        yield
    finally:
        loop.remove_reader(watcher.fd)
        watcher.close()
