"""The file-watching service: it reports changed files to the runner, which decides what follows
(re-read settings, roll the workers: see :mod:`supervisor.reload.rollout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterable

from supervisor.contract import FilesChanged, SupervisorView
from supervisor.reload import plan as watchplan
from supervisor.reload.stream import watch_batches

logger = logging.getLogger("supervisor")
# How long the first worker waits for the file watches to be in place (normally milliseconds).
WATCH_SETUP_TIMEOUT = 10.0


class Reloader:
    """The file-watching service, plus a startup step that waits until the watches are in place,
    so that an edit made the moment the app first answers is not missed."""

    def __init__(self, sup: SupervisorView) -> None:
        self.sup = sup
        self.watching = asyncio.Event()

    async def wait_watching(self) -> None:
        # Bounded: a watcher that cannot start (it logs why) must not keep the app from starting.
        if self.sup.settings.reload:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.watching.wait(), WATCH_SETUP_TIMEOUT)

    async def serve(self) -> None:
        """Watch the project and report changes; a no-op when reload is off."""
        settings = self.sup.settings
        if not settings.reload:
            return
        cfg = settings.config.reload
        roots = watchplan.watched_roots(settings)
        poll, why = watchplan.choose_polling(settings, roots)
        if why:
            logger.info("reload: %s", why)
        logger.info("reload: watching %s (%s)", ", ".join(map(str, roots)), "polling" if poll else "native events")
        stream = watch_batches(roots, watchplan.change_filter_for(settings), debounce=cfg.debounce, poll=poll,
                               poll_interval=cfg.poll_interval, ready=self.watching.set)
        async for batch in stream:
            self._report(batch)

    def _report(self, batch: set[str]) -> None:
        forget_bytecode(batch)
        self.sup.post(FilesChanged(frozenset(batch)))


def forget_bytecode(paths: Iterable[str]) -> None:
    """Remove the cached bytecode of changed source files before a worker imports them.

    A ``.pyc`` records its source's size and modification time in whole seconds: a second edit
    within the same second that keeps the size (``VERSION = 11`` to ``12``) would otherwise be
    served from the bytecode of the first, which a fast reload makes likely.
    """
    for path in paths:
        if path.endswith(".py"):
            with contextlib.suppress(OSError, ValueError, NotImplementedError):
                os.unlink(importlib.util.cache_from_source(path))
