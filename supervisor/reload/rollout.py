"""Re-reading settings and rolling the workers: what a file change, SIGHUP or a restart request does.

A broken edit never takes a serving app down: new settings are validated before they are
applied, and in each slot a fresh worker must report ready before the old one drains (the slot's
lifecycle machine does that part). The web slots are replaced one at a time, in turn with recycles
and scaling (:class:`~supervisor.slots.capacity.Capacity`); a change to stylesheets alone starts no
worker, and the programs a change concerns are restarted (stop, then start) beside the rollout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

from supervisor.config.settings import Settings, needs_restart
from supervisor.errors import ConfigError
from supervisor.reload.browser import browser_follows, only_stylesheets
from supervisor.reload.filters import touches_settings
from supervisor.reload.plan import settings_files
from supervisor.state import ExitReason, ReloadStatus

logger = logging.getLogger("supervisor")


class RolloutHost(Protocol):
    """What a rollout needs from the runner: the settings, to swap them; the state it shows."""

    @property
    def settings(self) -> Settings: ...

    def apply_settings(self, new: Settings) -> None: ...
    def set_rolling(self, rolling: bool) -> None: ...
    def stopping(self) -> bool: ...
    def restart_programs(self, files: set[str]) -> list[str]: ...
    def changed(self) -> None: ...
    def wall(self) -> float: ...


class Replacer(Protocol):
    """The web slots, replaced one at a time (:class:`~supervisor.slots.capacity.Capacity`)."""

    def count(self) -> int: ...
    def replace(self, index: int, reason: ExitReason) -> Awaitable[bool]: ...


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
        raise failure  # the source itself failed: let the caller report it


def shown(files: set[str], root: Path) -> list[str]:
    """Paths relative to the project, for the log and the status document."""
    out = []
    for name in sorted(files):
        try:
            out.append(str(Path(name).relative_to(root)))
        except ValueError:
            out.append(name)
    return out


class Rollout:
    """Serialises rolling restarts and merges file changes that arrive during one."""

    def __init__(self, host: RolloutHost, slots: Replacer, resolve: Callable[[], Settings] | None,
                 status: ReloadStatus) -> None:
        self.host = host
        self.slots = slots
        self.resolve = resolve  # re-reads supervisor.toml, .env and the environment; None: cannot
        self.status = status
        self._lock = asyncio.Lock()
        self._changes: asyncio.Queue[set[str]] = asyncio.Queue()

    def files_changed(self, files: set[str]) -> None:
        self._changes.put_nowait(files)

    async def watch_changes(self) -> None:
        """Reload for each batch of changed files, one reload at a time, until cancelled."""

        async def batches() -> AsyncIterator[set[str]]:
            while True:
                yield await self._changes.get()

        async def apply(files: set[str]) -> None:
            if browser_follows(self.host.settings) and only_stylesheets(files):
                self.swap_stylesheets(files)
                return
            try:
                await self.reload(files, trigger="file change")
            except Exception as exc:  # one failed reload must not end the watching
                logger.exception("reload failed: internal error; still serving the previous version")
                self.status.last_error = f"internal error: {exc}"

        await coalesce(batches(), apply)

    def swap_stylesheets(self, files: set[str]) -> None:
        """Only stylesheets changed: no new workers, the pages swap them in place (live reload)."""
        names = shown(files, self.host.settings.project_dir)
        logger.info("reload: stylesheets changed, swapped in the browser: %s", ", ".join(names))
        self.status.stylesheets += 1
        self.status.last_stylesheets = names
        self.host.changed()

    async def reload(self, files: set[str], trigger: str, reread: bool = False) -> bool:
        """Re-read settings if they (may have) changed, then replace the workers one by one.

        Returns False, leaving the running workers untouched, when the new settings are invalid
        or a new worker fails to start.
        """
        started = time.monotonic()
        settings = self.host.settings
        names = shown(files, settings.project_dir)
        logger.info("reload: %s%s", trigger, ": " + ", ".join(names) if names else "")
        self.status.last_files = names
        self.status.last_at = self.host.wall()
        self.status.last_output = []
        if (reread or touches_settings(files, *settings_files(settings))) and self.resolve is not None:
            try:
                new = self.resolve()
            except ConfigError as exc:
                problems = "\n".join(f"  - {p}" for p in exc.problems)
                logger.error("reload failed: invalid configuration, still serving the previous version:\n%s",
                             problems)
                self.status.last_error = "invalid configuration: " + "; ".join(str(p) for p in exc.problems)
                self.status.failures += 1
                self.host.changed()
                return False
            kept = needs_restart(settings, new)
            if kept:
                logger.warning("reload: changed %s take effect only when the supervisor restarts",
                               ", ".join(kept))
            self.host.apply_settings(new)
        if files:
            restarted = self.host.restart_programs(files)
            if restarted:
                logger.info("reload: restarting %s (stop, then start)", ", ".join(restarted))
        ok = await self.rolling_restart(ExitReason.RELOAD)
        if not ok and self.host.settings is not settings:
            # The previous version keeps serving, so the next crash restart must start it again,
            # not the settings that just failed.
            self.host.apply_settings(settings)
        if ok:
            self.status.count += 1
            self.status.last_error = None
            self.status.last_duration = time.monotonic() - started
            logger.info("reload: done in %.2fs", self.status.last_duration)
        else:
            self.status.last_error = "a new worker failed to start; still serving the previous version"
            self.status.failures += 1
            logger.error("reload failed: %s", self.status.last_error)
        self.host.changed()
        return ok

    async def rolling_restart(self, reason: ExitReason) -> bool:
        """Replace every worker, one slot at a time, each only after its successor is serving.

        Returns False, keeping the old workers, when a new worker fails to start. The old workers
        drain in the background: a long-lived response delays only their exit (bounded by the
        stop deadline), never the next reload.
        """
        async with self._lock:
            self.host.set_rolling(True)
            try:
                for index in range(self.slots.count()):
                    if self.host.stopping() or not await self.slots.replace(index, reason):
                        return False
                return True
            finally:
                self.host.set_rolling(False)
