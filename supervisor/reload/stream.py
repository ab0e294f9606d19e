"""The change stream: batches of changed paths that count, from inotify or from watchfiles.

Both sources hand over what they see as it arrives; one :class:`~supervisor.reload.batching.Batcher`
applies the change filter on arrival and decides when a batch closes, so an ignored file that is
written all the time (a log, a SQLite database, coverage data) opens or holds no batch, whichever
source reads the events. The stream is an async iterator of path sets, so the reload loop can be
fed scripted batches in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from pathlib import Path

import watchfiles

from supervisor.reload.batching import Batcher, Closed, IgnoredLog, cap_for
from supervisor.reload.filters import ChangeFilter, describe_ignored
from supervisor.reload.inotify import inotify_changes

logger = logging.getLogger("supervisor")


def native_events_here(poll: bool | None) -> bool:
    """Our own inotify reader serves: Linux, and polling neither asked for nor left to
    watchfiles' own judgement (``WATCHFILES_FORCE_POLLING``)."""
    return poll is not True and sys.platform.startswith("linux") and not os.environ.get("WATCHFILES_FORCE_POLLING")


def watchfiles_step_ms(debounce: float) -> int:
    """How often watchfiles hands over what it saw: every two of these steps while changes keep
    coming, so one debounce apart."""
    return max(1, int(debounce * 500))


class Intake:
    """What the sources deliver, batched: the event-loop side of a :class:`Batcher`.

    ``deliver`` runs on the event loop for each arrival; :meth:`batches` yields each batch once it
    is due, and raises what a source reported through ``fail``.
    """

    def __init__(self, batcher: Batcher, change_filter: ChangeFilter, clock: Callable[[], float],
                 ignored_log: IgnoredLog | None = None) -> None:
        self.batcher = batcher
        self.change_filter = change_filter
        self.clock = clock
        self.ignored_log = ignored_log or IgnoredLog()
        self._wake = asyncio.Event()
        self._error: BaseException | None = None

    def deliver(self, paths: Iterable[str]) -> None:
        now = self.clock()
        was_open = self.batcher.due() is not None
        ignored = self.batcher.add(paths, now)
        if ignored and logger.isEnabledFor(logging.DEBUG):
            fresh = self.ignored_log.fresh(ignored, now)
            if fresh:
                logger.debug("reload: ignored a change to %s (each logged again only after %g s without changes)",
                             describe_ignored(fresh, self.change_filter), self.ignored_log.rest)
        if not was_open and self.batcher.due() is not None:
            self._wake.set()  # a batch opened: time its end (a later arrival only extends it)

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._wake.set()

    async def batches(self) -> AsyncGenerator[Closed, None]:
        while True:
            self._wake.clear()
            if self._error is not None:
                raise self._error
            due = self.batcher.due()
            if due is None:
                await self._wake.wait()
                continue
            delay = due - self.clock()
            if delay > 0:
                # Woken early only by a failure; an extended batch is timed again on waking.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            closed = self.batcher.take(self.clock())
            if closed is not None:
                yield closed


@contextlib.asynccontextmanager
async def watchfiles_changes(roots: list[str], intake: Intake, *, step_ms: int, poll: bool | None,
                             poll_interval: float) -> AsyncIterator[None]:
    """watchfiles feeding ``intake`` while the block runs; its watches are in place once the
    block's first await has returned (watchfiles sets them up in the first step of its task)."""

    async def pump() -> None:
        try:
            # No watch_filter, and watchfiles' own debounce as short as its step: it would
            # otherwise hold a batch open for every new ignored path; the Batcher decides instead.
            async for changes in watchfiles.awatch(
                *roots, watch_filter=None, step=step_ms, debounce=step_ms, force_polling=poll,
                poll_delay_ms=int(poll_interval * 1000), recursive=True, ignore_permission_denied=True,
            ):
                intake.deliver({path for _, path in changes})
        except Exception as exc:  # reported to the consumer of the stream
            intake.fail(exc)

    task = asyncio.ensure_future(pump())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def watch_batches(paths: Iterable[Path], change_filter: ChangeFilter, *, debounce: float,
                        poll: bool | None, poll_interval: float,
                        ready: Callable[[], None] = lambda: None) -> AsyncGenerator[set[str], None]:
    """Yield sets of changed paths that count; a batch closes ``debounce`` seconds after its last
    such change, or at the cap (:func:`~supervisor.reload.batching.cap_for`) under a steady
    stream of them. ``ready`` is called once the watches are in place: nothing written after
    that is missed.

    ``poll``: True polls, False uses native events, None lets watchfiles decide (it honours
    ``WATCHFILES_FORCE_POLLING`` and detects WSL by itself). Ignored paths are logged at debug
    level with the rule that ignored each (see :class:`~supervisor.reload.batching.IgnoredLog`).
    """
    existing = [str(p) for p in paths if p.exists()]
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        intake: Intake | None = None
        if native_events_here(poll):
            intake = Intake(Batcher(change_filter.matches, quiet=debounce, cap=cap_for(debounce)),
                            change_filter, loop.time)
            try:
                stack.enter_context(inotify_changes(existing, skip=change_filter.ignores_directory,
                                                    deliver=intake.deliver))
            except OSError as exc:
                logger.warning("reload: inotify is unusable here (%s); watching through watchfiles", exc.strerror)
                intake = None
        if intake is None:
            step_ms = watchfiles_step_ms(debounce)
            # watchfiles hands over changes one debounce apart while they keep coming: the quiet
            # period must outlast that gap, or one save could be cut in two.
            quiet = debounce + step_ms / 1000
            intake = Intake(Batcher(change_filter.matches, quiet=quiet, cap=cap_for(quiet)), change_filter,
                            loop.time)
            await stack.enter_async_context(watchfiles_changes(existing, intake, step_ms=step_ms, poll=poll,
                                                               poll_interval=poll_interval))
            await asyncio.sleep(0)  # the pump's first step: watchfiles' watches are set up there
        ready()
        async for closed in intake.batches():
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("reload: a batch of %d changed file(s) closed %.0f ms after it opened (%s)",
                             len(closed.paths), (closed.closed - closed.opened) * 1000,
                             f"quiet for {intake.batcher.quiet:g} s" if closed.reason == "quiet"
                             else "at the cap: changes that count were still arriving")
            yield set(closed.paths)
