"""Live reload, the pure part: supervisor state changes in, browser events out.

The browser must reload only once the supervisor has *seen* the new workers ready, never on the
file change itself: a page fetched earlier would show the old version or an error. So the events
are derived from the reload record the supervisor keeps (:class:`~supervisor.state.ReloadStatus`),
not from the watcher:

* ``reload``: a reload finished with every new worker serving (its ``count`` went up);
* ``failed``: a reload kept the previous version (``failures`` went up), with the error and the
  redacted last lines the failed worker wrote (its traceback);
* ``css``: only stylesheets changed (``stylesheets`` went up); the page swaps them in place;
* ``hello``: the first event of each stream, telling a page whether the worker that served it
  has been replaced meanwhile (``stale``), and the failure still current, if any.

:class:`EventTracker` turns a sequence of :class:`Snapshot` into events and is unit-tested with
scripted snapshots; :mod:`supervisor.reload.browser_events` feeds it and serves the stream.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from supervisor.config.settings import Settings
from supervisor.listen.ports import is_loopback
from supervisor.state import SlotState, SupervisorState

if TYPE_CHECKING:
    from supervisor.contract import SupervisorView

STYLESHEETS = ("*.css",)


def browser_follows(settings: Settings) -> bool:
    """Whether pages get the live-reload script: development mode with reloading on (without a
    watcher there is nothing to follow, and every response would pay for the script's middleware),
    ``[reload] browser`` on, and a status API on loopback to serve the stream (beyond loopback it
    would need the token)."""
    status = settings.config.status
    return (not settings.production and settings.reload and settings.config.reload.browser and status.enabled
            and is_loopback(status.host))


def only_stylesheets(files: Iterable[str]) -> bool:
    names = [PurePosixPath(f).name for f in files]
    return bool(names) and all(any(fnmatch.fnmatch(n, pat) for pat in STYLESHEETS) for n in names)


def app_origins(app_url: str) -> frozenset[str]:
    """The origins a page of the app can have: its URL's, and the loopback names for its port."""
    parts = urlsplit(app_url)
    port = parts.port
    hosts = {parts.hostname or "127.0.0.1", "127.0.0.1", "localhost", "[::1]"}
    return frozenset(f"{parts.scheme}://{h if ':' not in h or h.startswith('[') else f'[{h}]'}:{port}"
                     for h in hosts)


@dataclass(frozen=True)
class Snapshot:
    """What the events depend on, read from the supervisor after each change."""

    state: str = SupervisorState.STARTING
    serving: frozenset[int] = frozenset()  # pids of the workers in RUNNING slots
    reloads: int = 0
    failures: int = 0
    stylesheets: int = 0
    error: str | None = None
    output: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    stylesheet_files: tuple[str, ...] = ()


def snapshot(sup: SupervisorView, redact: Callable[[str], str]) -> Snapshot:
    """Read a :class:`Snapshot` from the supervisor's read model (``state``, ``slots``,
    ``reload_status``); error and output pass through ``redact``."""
    status = sup.reload_status
    return Snapshot(
        state=sup.state,
        serving=frozenset(s.pid for s in sup.slots if s.state == SlotState.RUNNING and s.pid is not None),
        reloads=status.count, failures=status.failures, stylesheets=status.stylesheets,
        error=redact(status.last_error) if status.last_error else None,
        output=tuple(redact(line) for line in status.last_output),
        files=tuple(status.last_files), stylesheet_files=tuple(status.last_stylesheets))


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The event framed for ``text/event-stream``; JSON data keeps it on one ``data:`` line."""
        return f"event: {self.name}\ndata: {json.dumps(self.data)}\n\n".encode()


def _failure(snap: Snapshot) -> dict[str, Any]:
    return {"error": snap.error or "", "output": list(snap.output), "files": list(snap.files)}


class EventTracker:
    """Turns successive snapshots into the browser events they call for."""

    def __init__(self, first: Snapshot = Snapshot()) -> None:
        self.last = first

    def observe(self, snap: Snapshot) -> list[Event]:
        before, self.last = self.last, snap
        events = []
        if snap.reloads > before.reloads:
            events.append(Event("reload", {"files": list(snap.files)}))
        elif snap.failures > before.failures:
            events.append(Event("failed", _failure(snap)))
        if snap.stylesheets > before.stylesheets:
            events.append(Event("css", {"files": list(snap.stylesheet_files)}))
        return events

    def hello(self, page_pid: int | None) -> Event:
        """The first event for a page served by ``page_pid`` (None: unknown)."""
        snap = self.last
        stale = (snap.state == SupervisorState.RUNNING and page_pid is not None and bool(snap.serving)
                 and page_pid not in snap.serving)
        failure = _failure(snap) if snap.error and snap.failures else None
        return Event("hello", {"stale": stale, "failure": failure})
