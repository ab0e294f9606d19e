"""Reloading: file changes and SIGHUP become validated, rolling worker replacements.

A broken edit does not take a serving app down: new settings are validated before they are
applied, and a new worker must report ready before the old one is drained (see
``Supervisor.rolling_restart``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor import state as S
from supervisor import watchplan
from supervisor.errors import ConfigError
from supervisor.livereload import browser_follows, only_stylesheets
from supervisor.watch import ChangeFilter, classify, watch_batches

if TYPE_CHECKING:
    from supervisor.runner import Supervisor

logger = logging.getLogger("supervisor")
# How long the first worker waits for the file watches to be in place (normally milliseconds).
WATCH_SETUP_TIMEOUT = 10.0


async def coalesce(batches: AsyncIterator[set[str]],
                   apply: Callable[[set[str]], Awaitable[None]]) -> None:
    """Call ``apply`` for each batch, merging batches that arrive while ``apply`` runs.

    Ten saves during one slow reload give one more reload afterwards, not ten.
    """
    pending: set[str] = set()
    arrived = asyncio.Event()
    finished = False

    async def collect() -> None:
        nonlocal finished
        try:
            async for batch in batches:
                pending.update(batch)
                arrived.set()
        finally:
            finished = True
            arrived.set()

    collector = asyncio.ensure_future(collect())
    try:
        while True:
            while pending:
                batch = set(pending)
                pending.clear()
                await apply(batch)
            if finished:
                break
            arrived.clear()
            await arrived.wait()
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
    failure = None if collector.cancelled() else collector.exception()
    if failure is not None:
        raise failure  # the watcher itself failed: let the service report it


def settings_files(sup: Supervisor) -> tuple[Path, Path]:
    return watchplan.settings_files(sup.settings)


def change_filter(sup: Supervisor) -> ChangeFilter:
    return watchplan.change_filter_for(sup.settings)


class Reloader:
    """The file-watching service, plus a startup step that waits until the watches are in place,
    so that an edit made the moment the app first answers is not missed."""

    def __init__(self) -> None:
        self.watching = asyncio.Event()

    async def wait_watching(self, sup: Supervisor) -> None:
        # Bounded: a watcher that cannot start (it logs why) must not keep the app from starting.
        if sup.settings.reload:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.watching.wait(), WATCH_SETUP_TIMEOUT)

    async def serve(self, sup: Supervisor) -> None:
        """Watch the project and reload on changes; a no-op when reload is off."""
        settings = sup.settings
        if not settings.reload:
            return
        cfg = settings.config.reload
        roots = watchplan.watched_roots(settings)
        poll, why = watchplan.choose_polling(settings, roots)
        if why:
            logger.info("reload: %s", why)
        logger.info("reload: watching %s (%s)", ", ".join(map(str, roots)), "polling" if poll else "native events")
        stream = watch_batches(roots, change_filter(sup), debounce=cfg.debounce, poll=poll,
                               poll_interval=cfg.poll_interval)
        # watchfiles sets up the OS watches synchronously in the first step of the first
        # iteration; once that step has run, nothing written from now on can be missed.
        first = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        self.watching.set()

        async def batches() -> AsyncIterator[set[str]]:
            yield await first
            async for batch in stream:
                yield batch

        async def apply(files: set[str]) -> None:
            if browser_follows(sup.settings) and only_stylesheets(files):
                swap_stylesheets(sup, files)
                return
            try:
                await reload(sup, files, trigger="file change")
            except Exception as exc:  # one failed reload must not end the watching
                logger.exception("reload failed: internal error; still serving the previous version")
                sup.reload_status.last_error = f"internal error: {exc}"

        await coalesce(batches(), apply)


def _shown(files: set[str], root: Path) -> list[str]:
    shown = []
    for name in sorted(files):
        try:
            shown.append(str(Path(name).relative_to(root)))
        except ValueError:
            shown.append(name)
    return shown


def swap_stylesheets(sup: Supervisor, files: set[str]) -> None:
    """Only stylesheets changed: no new workers, the pages swap them in place (live reload)."""
    shown = _shown(files, sup.settings.project_dir)
    logger.info("reload: stylesheets changed, swapped in the browser: %s", ", ".join(shown))
    sup.reload_status.stylesheets += 1
    sup.reload_status.last_stylesheets = shown
    sup.changed()


async def reload(sup: Supervisor, files: set[str], trigger: str, reread: bool = False) -> bool:
    """Re-read settings if they (may have) changed, then replace the workers one by one.

    Returns False, leaving the running workers untouched, when the new settings are invalid or a
    new worker fails to start.
    """
    started = time.monotonic()
    status = sup.reload_status
    env_file, config_file = settings_files(sup)
    shown = _shown(files, sup.settings.project_dir)
    kind = classify(files, env_file, config_file)
    if shown:
        logger.info("reload: %s: %s", trigger, ", ".join(shown))
    else:
        logger.info("reload: %s", trigger)
    status.last_files = shown
    status.last_at = sup.wall()
    status.last_output = []
    if (reread or kind.settings) and sup.resolve is not None:
        try:
            new = sup.resolve()
        except ConfigError as exc:
            problems = "\n".join(f"  - {p}" for p in exc.problems)
            logger.error("reload failed: invalid configuration, still serving the previous version:\n%s",
                         problems)
            status.last_error = "invalid configuration: " + "; ".join(str(p) for p in exc.problems)
            status.failures += 1
            sup.changed()
            return False
        sup.apply_settings(new)
    ok = await sup.rolling_restart(S.EXIT_RELOAD)
    if ok:
        status.count += 1
        status.last_error = None
        status.last_duration = time.monotonic() - started
        logger.info("reload: done in %.2fs", status.last_duration)
    else:
        status.last_error = "a new worker failed to start; still serving the previous version"
        status.failures += 1
        logger.error("reload failed: %s", status.last_error)
    sup.changed()
    return ok
