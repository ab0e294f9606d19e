"""Which sd_notify datagrams are still owed, and when to try again: pure, no sockets, no clock.

systemd's notify socket is a datagram socket with a short queue (``net.unix.max_dgram_qlen``,
often 10). While systemd is slow to read it, a non-blocking send fails with ``EAGAIN``. Losing a
``STATUS=`` line or a ``WATCHDOG=1`` ping that way is harmless: the next one says the same. Losing
``READY=1``, ``RELOADING=1`` or ``STOPPING=1`` is not: systemd waits for ``TimeoutStartSec`` and
kills the service. So an :class:`Outbox` keeps those *state* datagrams, oldest first, until they
are delivered, and says how long to wait between attempts (doubling up to ``max_delay``), while
the others are tried once and dropped.

A state datagram that a later one makes moot is collapsed rather than sent late: a newer
``READY=1`` replaces a pending ``READY=1`` and a pending ``RELOADING=1`` (the reload it announced
is over), ``STOPPING=1`` replaces everything pending. A newer ``STATUS=`` or ``WATCHDOG=1`` replaces
a pending one of its own kind.

>>> box = Outbox(first_delay=0.01, max_delay=0.04)
>>> box.put("READY=1"); box.put("WATCHDOG=1")
>>> box.next(), box.sent(False), box.sent(False), box.sent(False), box.sent(False)
('READY=1', 0.01, 0.02, 0.04, 0.04)
>>> box.put("READY=1\\nSTATUS=running"); box.pending()
['WATCHDOG=1', 'READY=1\\nSTATUS=running']
"""

from __future__ import annotations

from dataclasses import dataclass

STATE_KEYS = ("STOPPING", "READY", "RELOADING")


def keys(message: str) -> frozenset[str]:
    """The assignment names in a datagram: ``READY=1\\nSTATUS=x`` -> {READY, STATUS}."""
    return frozenset(line.split("=", 1)[0] for line in message.split("\n") if "=" in line)


def kind(message: str) -> str:
    """What a datagram is about, for collapsing: the state it announces (``READY``, ...), else
    ``WATCHDOG`` or ``STATUS`` (any other datagram: sent once, never collapsed)."""
    names = keys(message)
    for key in (*STATE_KEYS, "WATCHDOG", "STATUS"):
        if key in names:
            return key
    return message


@dataclass
class _Owed:
    message: str
    kind: str
    attempts: int = 0

    @property
    def durable(self) -> bool:
        return self.kind in STATE_KEYS


# A pending datagram of these kinds is moot once one of the key's kind is put.
_SUPERSEDES = {
    "STOPPING": frozenset(STATE_KEYS),
    "READY": frozenset({"READY", "RELOADING"}),
    "RELOADING": frozenset({"RELOADING"}),
    "WATCHDOG": frozenset({"WATCHDOG"}),
    "STATUS": frozenset({"STATUS"}),
}


class Outbox:
    """The datagrams owed to systemd, oldest first; the caller sends :meth:`next` and reports the
    outcome to :meth:`sent`, which says when to try again."""

    def __init__(self, first_delay: float = 0.01, max_delay: float = 1.0) -> None:
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._owed: list[_Owed] = []

    def put(self, message: str) -> None:
        what = kind(message)
        moot = _SUPERSEDES.get(what, frozenset())
        if what == "STOPPING":
            self._owed.clear()  # whatever was pending, STOPPING=1 (with the latest STATUS=) says it all
        else:
            self._owed = [owed for owed in self._owed if owed.kind not in moot]
        self._owed.append(_Owed(message, what))

    def next(self) -> str | None:
        """The datagram to send now, or None: nothing is owed."""
        return self._owed[0].message if self._owed else None

    def sent(self, delivered: bool) -> float | None:
        """The outcome of sending :meth:`next`. Returns the seconds to wait before sending again
        (a state datagram that did not go), or None: go on with the next at once."""
        if not self._owed:
            return None
        head = self._owed[0]
        head.attempts += 1
        if delivered or not head.durable:
            self._owed.pop(0)
            return None
        return float(min(self.max_delay, self.first_delay * 2.0 ** min(head.attempts - 1, 32)))

    def attempts(self) -> int:
        """How many times the datagram at the head has been tried and failed so far."""
        return self._owed[0].attempts if self._owed else 0

    def pending(self) -> list[str]:
        return [owed.message for owed in self._owed]
