"""Telling systemd what the supervisor is doing: ``sd_notify`` and watchdog pings, no dependency.

The protocol is one ``AF_UNIX`` datagram per notification to the socket named by
``NOTIFY_SOCKET`` (a path, or an abstract name written with a leading ``@``), holding
newline-separated ``KEY=value`` assignments in UTF-8. With ``Type=notify`` systemd considers the
service started only at ``READY=1``, so ``systemctl start`` returns, and units ordered after ours
start, once the webapp really answers, not when the process was forked.

:class:`NotifyPlan` is the pure core: it turns successive :class:`Facts` into the notifications
to send. :class:`SdNotifier` is the thin shell that reads the facts off the supervisor after every
state change and sends the datagrams, retrying ``READY=1``, ``RELOADING=1`` and ``STOPPING=1``
until systemd has them (see :mod:`supervisor.systemd.outbox`). Without ``NOTIFY_SOCKET`` nothing
here is installed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from supervisor.contract import Plugin, SupervisorView
from supervisor.state import DB_FINE, DatabaseState, SlotState, SlotStatus, SupervisorState
from supervisor.systemd.outbox import Outbox

logger = logging.getLogger("supervisor")

Address = str  # a filesystem path, or "\0name" for the abstract namespace
Sender = Callable[[Address, str], bool]
Later = Callable[[float, Callable[[], None]], object]  # (delay, callback): asyncio's call_later
# Seconds the last datagrams still owed at the end may block the exit (systemd reads its socket
# far faster than that; a socket nobody reads must not hold the shutdown up).
FINAL_FLUSH = 1.0

# Phases of the service as systemd sees it (not the supervisor's own states).
_STARTING, _READY, _RELOADING, _STOPPING = "starting", "ready", "reloading", "stopping"


def notify_address(value: str | None) -> Address | None:
    """The socket address ``NOTIFY_SOCKET`` names, or None when it is unset or unusable.

    >>> notify_address("@sd/notify"), notify_address("/run/systemd/notify"), notify_address("x")
    ('\\x00sd/notify', '/run/systemd/notify', None)
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    return value if value.startswith("/") else None


def send_datagram(address: Address, message: str, timeout: float | None = None) -> bool:
    """Send ``message`` as one datagram on a fresh socket; False (never an exception) on failure.

    Connecting per message follows the socket if systemd re-creates it (daemon-reexec). The send
    does not block unless given a ``timeout``: a full queue must not stall the event loop (the
    caller retries what must arrive, see :class:`SdNotifier`).
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout if timeout is not None else 0.0)
            sock.connect(address)
            sock.send(message.encode("utf-8"))
        return True
    except OSError as exc:
        logger.debug("sd_notify: cannot send %r: %s", message.split("\n", 1)[0], exc)
        return False


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares ``MONOTONIC_USEC=`` with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


@dataclass(frozen=True)
class Facts:
    """What a notification depends on, read off the supervisor after a state change."""

    state: SupervisorState
    port: int
    ready_workers: int
    workers: int
    restarts: int
    database: DatabaseState
    programs: tuple[tuple[str, str], ...] = ()  # (name, "2/2 running" or a state), for the summary

    @classmethod
    def of(cls, sup: SupervisorView) -> Facts:
        return cls(state=sup.state, port=sup.port, ready_workers=sup.ready_workers,
                   workers=len(sup.slots), restarts=sum(s.restarts for s in sup.slots),
                   database=sup.database.state,
                   programs=tuple((name, program_summary(instances)) for name, instances in sup.programs.items()))

    @property
    def serving(self) -> bool:
        return self.state == SupervisorState.RUNNING and self.ready_workers > 0 and self.database in DB_FINE


def summary(facts: Facts) -> str:
    """The one-line ``STATUS=`` that ``systemctl status`` shows.

    >>> summary(Facts(SupervisorState.RUNNING, 8000, 2, 2, 1, DatabaseState.OK))
    'running on port 8000: 2/2 workers ready, 1 restart, database ok'
    """
    restarts = f"{facts.restarts} restart{'' if facts.restarts == 1 else 's'}"
    programs = "".join(f", {name} {state}" for name, state in facts.programs)
    return (f"{facts.state.replace('_', ' ')} on port {facts.port}: "
            f"{facts.ready_workers}/{facts.workers} workers ready, {restarts}, database {facts.database}{programs}")


def program_summary(instances: Sequence[SlotStatus]) -> str:
    """``2/2 running``, or the one state they share (``completed``, ``waiting``)."""
    states = {s.state for s in instances}
    if len(states) == 1 and SlotState.RUNNING not in states:
        return str(states.pop())
    running = sum(1 for s in instances if s.state == SlotState.RUNNING)
    return f"{running}/{len(instances)} running"


class NotifyPlan:
    """Decides the notifications: pure, so the sequence is tested without sockets or processes.

    * ``READY=1`` once the supervisor is running with a serving worker and the database is ok
      (or not configured); again after a reload.
    * ``RELOADING=1`` with ``MONOTONIC_USEC=`` when a rolling restart begins (only after the
      first ``READY=1``: before that systemd is still waiting for the start to finish).
    * ``STOPPING=1`` once, when shutdown begins; nothing but ``STATUS=`` after it.
    * ``STATUS=`` whenever the summary line changes, in the same datagram as any of the above.
    """

    def __init__(self, clock_usec: Callable[[], int] = monotonic_usec) -> None:
        self.clock_usec = clock_usec
        self.phase = _STARTING
        self.last_status: str | None = None

    def update(self, facts: Facts) -> list[str]:
        """The datagrams to send for ``facts``, each a newline-joined list of assignments."""
        lines: list[str] = []
        if facts.state == SupervisorState.STOPPING:
            if self.phase != _STOPPING:
                self.phase = _STOPPING
                lines.append("STOPPING=1")
        elif self.phase == _READY and facts.state == SupervisorState.RELOADING:
            self.phase = _RELOADING
            # systemd requires the timestamp in the same message, to order it against its own.
            lines += ["RELOADING=1", f"MONOTONIC_USEC={self.clock_usec()}"]
        elif self.phase in (_STARTING, _RELOADING) and facts.serving:
            self.phase = _READY
            lines.append("READY=1")
        status = summary(facts)
        if status != self.last_status:
            self.last_status = status
            lines.append(f"STATUS={status}")
        return ["\n".join(lines)] if lines else []


class SdNotifier:
    """The change observer: sends what :class:`NotifyPlan` decides to ``address``.

    Sends never block the event loop: a datagram the socket's queue cannot take now stays in the
    :class:`~supervisor.systemd.outbox.Outbox` if it announces a state, and is tried again after a
    backoff scheduled with ``later`` (the running loop's ``call_later``), as ``sd_notify()``
    itself would block until it goes. :meth:`flush` gives what is still owed at the end a last,
    bounded, blocking chance.
    """

    def __init__(self, address: Address, send: Sender = send_datagram,
                 plan: NotifyPlan | None = None, later: Later | None = None,
                 outbox: Outbox | None = None) -> None:
        self.address = address
        self.send = send
        self.plan = plan or NotifyPlan()
        self.outbox = outbox or Outbox()
        self._later = later
        self._retrying = False
        self.send_blocking: Callable[[Address, str, float], bool] = send_datagram

    def __call__(self, sup: SupervisorView) -> None:
        for message in self.plan.update(Facts.of(sup)):
            self.notify(message)

    def notify(self, message: str) -> None:
        self.outbox.put(message)
        if not self._retrying:  # else the retry already scheduled sends it, in order
            self._drain()

    def _drain(self) -> None:
        self._retrying = False
        while (message := self.outbox.next()) is not None:
            tries = self.outbox.attempts()
            delivered = self.send(self.address, message)
            delay = self.outbox.sent(delivered)
            first = message.split("\n", 1)[0]
            if delay is not None:
                if tries == 0:
                    logger.info("sd_notify: %s not delivered (the notify socket's queue is full, or nobody "
                                "listens); retrying", first)
                self._schedule(delay)
                return
            if delivered and tries:
                logger.info("sd_notify: %s delivered at attempt %d", first, tries + 1)

    def _schedule(self, delay: float) -> None:
        later = self._later or asyncio.get_running_loop().call_later
        self._retrying = True
        later(delay, self._drain)

    def flush(self, timeout: float = FINAL_FLUSH, clock: Callable[[], float] = time.monotonic,
              sleep: Callable[[float], None] = time.sleep) -> None:
        """Send what is still owed, blocking for at most ``timeout`` seconds in all: at the end,
        when no loop is left to retry on."""
        deadline = clock() + timeout
        while (message := self.outbox.next()) is not None:
            left = deadline - clock()
            if left <= 0:
                logger.warning("sd_notify: %s could not be delivered", message.split("\n", 1)[0])
                return
            delay = self.outbox.sent(self.send_blocking(self.address, message, left))
            if delay is not None:  # not a full queue (the send would have waited): nobody listens yet
                sleep(min(delay, max(0.0, deadline - clock())))


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None: no watchdog.

    ``WATCHDOG_PID``, when set, must name this process: the variable may have been inherited by
    something systemd did not start.

    >>> watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42)
    15.0
    >>> watchdog_interval({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "7"}, 42) is None
    True
    """
    owner = environ.get("WATCHDOG_PID")
    if owner and owner.strip() != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


async def watchdog_pings(notify: Callable[[str], object], interval: float,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Ping forever. Runs on the supervisor's event loop, so a wedged loop stops the pings and
    systemd's watchdog restarts the service: exactly the failure it exists to catch."""
    while True:
        notify("WATCHDOG=1")
        await sleep(interval)


def install_sd_notify(sup: SupervisorView, environ: Mapping[str, str], pid: int | None = None) -> Plugin | None:
    """Subscribe sd_notify to ``sup``'s changes when systemd asked for it; the returned plugin
    pings the watchdog, and at the end gives what is still owed (``STOPPING=1`` behind a full
    queue) a last, bounded chance (None: ``NOTIFY_SOCKET`` is not set)."""
    address = notify_address(environ.get("NOTIFY_SOCKET"))
    if address is None:
        return None
    notifier = SdNotifier(address)
    sup.subscribe(lambda: notifier(sup))
    interval = watchdog_interval(environ, os.getpid() if pid is None else pid)
    if interval is not None:
        logger.info("sd_notify: watchdog ping every %gs", interval)

    async def service() -> None:
        try:
            if interval is None:
                await asyncio.get_running_loop().create_future()  # until cancelled at the end
            else:
                await watchdog_pings(notifier.notify, interval)
        finally:
            notifier.flush()

    return Plugin("sd_notify", service=service)
