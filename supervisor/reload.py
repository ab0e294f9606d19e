"""The file-watching service: it reports changed files to the runner, which decides what follows
(re-read settings, roll the workers: see :mod:`supervisor.rollout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from supervisor.contract import FilesChanged, SupervisorView
from supervisor.rollout import settings_files
from supervisor.settings import Settings
from supervisor.watch import ChangeFilter, watch_batches

logger = logging.getLogger("supervisor")
# How long the first worker waits for the file watches to be in place (normally milliseconds).
WATCH_SETUP_TIMEOUT = 10.0


def change_filter(settings: Settings) -> ChangeFilter:
    cfg = settings.config.reload
    env_file, config_file = settings_files(settings)
    # The settings files always count, whatever the include patterns say.
    include = (*cfg.include, env_file.name, config_file.name)
    return ChangeFilter(root=settings.project_dir, include=tuple(dict.fromkeys(include)),
                        exclude=tuple(cfg.exclude), runtime_dir=settings.runtime_dir)


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
        paths = [p if p.is_absolute() else settings.project_dir / p for p in map(Path, cfg.paths)]
        env_file, config_file = settings_files(settings)
        paths += [env_file.parent, config_file.parent]
        # Watch each directory once, parents before children: watchfiles is recursive.
        unique = sorted({p.resolve() for p in paths if p.exists()}, key=lambda p: len(p.parts))
        roots = [p for i, p in enumerate(unique) if not any(p.is_relative_to(q) for q in unique[:i])]
        mode = "polling" if settings.reload_poll else "native events"
        logger.info("reload: watching %s (%s)", ", ".join(map(str, roots)), mode)
        stream = watch_batches(roots, change_filter(settings), debounce=cfg.debounce, poll=settings.reload_poll,
                               poll_interval=cfg.poll_interval)
        # watchfiles sets up the OS watches synchronously in the first step of the first
        # iteration; once that step has run, nothing written from now on can be missed.
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        self.watching.set()

        self.sup.post(FilesChanged(frozenset(await first)))
        async for batch in stream:
            self.sup.post(FilesChanged(frozenset(batch)))
