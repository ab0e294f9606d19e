"""When a batch of changed files closes, decided as events arrive: the pure core of both watchers.

Only paths that count (the change filter says so) open or extend a batch; everything else is set
aside at once, so a log file, a SQLite database or a coverage file written inside the tree while
the app serves never holds a reload back. A batch closes ``quiet`` seconds after the last change
that counts, or ``cap`` seconds after it opened under a steady stream of them.

:class:`Batcher` takes the time of each arrival and says when its batch is due: it never reads a
clock or sleeps, so tests script both. :class:`IgnoredLog` decides which ignored paths are worth
a debug line, so that the supervisor's own log, written into the tree, cannot feed itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

# A batch under a constant stream of changes that count still closes this long after it opened
# (at least; four quiet periods when the debounce is longer): watchfiles' own default.
MIN_CAP = 1.6


def cap_for(quiet: float) -> float:
    return max(MIN_CAP, quiet * 4)


@dataclass(frozen=True)
class Closed:
    """A batch handed over: the paths that count, and why it closed then (``"quiet"``: nothing
    that counts arrived for the quiet period; ``"cap"``: changes were still arriving)."""

    paths: frozenset[str]
    reason: str
    opened: float
    closed: float


class Batcher:
    """The open batch, if any: ``add`` each arrival of changed paths, ``take`` it once :meth:`due`.

    >>> b = Batcher(lambda path: path.endswith(".py"), quiet=0.05, cap=1.6)
    >>> sorted(b.add(["app.py", "logs/app.log"], now=0.0))
    ['logs/app.log']
    >>> b.add(["logs/app.log"], now=0.04)  # ignored: the batch still closes at 0.05
    {'logs/app.log'}
    >>> b.due()
    0.05
    >>> b.take(0.05).paths
    frozenset({'app.py'})
    """

    def __init__(self, counts: Callable[[str], bool], *, quiet: float, cap: float) -> None:
        self.counts = counts
        self.quiet = quiet
        self.cap = cap
        self._paths: set[str] = set()
        self._opened: float | None = None
        self._last = 0.0

    def add(self, paths: Iterable[str], now: float) -> set[str]:
        """Take one arrival of changed paths at time ``now``; return those that do not count."""
        ignored = set()
        counted = False
        for path in paths:
            if self.counts(path):
                self._paths.add(path)
                counted = True
            else:
                ignored.add(path)
        if counted:
            if self._opened is None:
                self._opened = now
            self._last = now
        return ignored

    def due(self) -> float | None:
        """When the open batch closes (None: no batch is open)."""
        if self._opened is None:
            return None
        return min(self._last + self.quiet, self._opened + self.cap)

    def take(self, now: float) -> Closed | None:
        """The batch, closed, once it is due at ``now``; None before that, or with none open."""
        due = self.due()
        if due is None or self._opened is None or now < due:
            return None
        reason = "quiet" if self._last + self.quiet <= self._opened + self.cap else "cap"
        closed = Closed(frozenset(self._paths), reason, self._opened, now)
        self._paths.clear()
        self._opened = None
        return closed


class IgnoredLog:
    """Which ignored paths to log now: those not seen changing in the last ``rest`` seconds.

    Every sighting counts, logged or not. A file rewritten all the time is logged once, when it
    starts; and the supervisor's own log written inside the tree (``up 2>> logs/dev.log``) is told
    once: the change that the line itself makes comes at once, and is not logged, so no loop.
    """

    def __init__(self, rest: float = 5.0, limit: int = 1024) -> None:
        self.rest = rest
        self.limit = limit
        self._seen: dict[str, float] = {}

    def fresh(self, paths: Iterable[str], now: float) -> list[str]:
        """The paths to log, sorted; every one of ``paths`` counts as seen at ``now``."""
        if len(self._seen) > self.limit:  # forget what has rested, so unique names cannot pile up
            self._seen = {p: t for p, t in self._seen.items() if now - t < self.rest}
        out = []
        for path in paths:
            last = self._seen.get(path)
            if last is None or now - last >= self.rest:
                out.append(path)
            self._seen[path] = now
        return sorted(out)
