"""Wiring for ``up``: bind the port, build the runner and the plugins that see it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from supervisor.config.settings import Settings
from supervisor.contract import FilesChanged, Plugin
from supervisor.database.migrate import migrate_plugin
from supervisor.database.watch import DatabaseWatch
from supervisor.health.watch import HealthWatch
from supervisor.reload.browser_events import install_livereload, livereload_url
from supervisor.reload.watcher import Reloader, forget_bytecode
from supervisor.runner import Runner
from supervisor.secrets import Redactor
from supervisor.slots.executor import Spawner
from supervisor.spawn.process import spawn_worker
from supervisor.status.api import StatusListener, bind_status_api, build_status_api
from supervisor.systemd.notify import install_sd_notify
from supervisor.systemd.reaper import reaper_plugin
from supervisor.warm.early import Early, listen
from supervisor.warm.spawner import TemplateSpawner, project_roots
from supervisor.warm.stage import Choice
from supervisor.warm.template import template_choice

logger = logging.getLogger("supervisor")


@dataclass(frozen=True)
class Launch:
    runner: Runner
    plugins: list[Plugin]

    async def run(self) -> int:
        return await self.runner.run(self.plugins)


def build(settings: Settings, resolve: Callable[[], Settings] | None, redactor: Redactor,
          early: Early | None = None) -> Launch:
    """Everything ``up`` runs, assembled from resolved settings. Raises PortError (exit 4).

    ``early``: the ports bound, and maybe the first worker forked, before this module was imported
    (:func:`supervisor.warm.early.start_early`); without it they are bound here.
    """
    # Under a systemd .socket unit the port is already bound and passed in as fd 3.
    bound = early.bound if early is not None else listen(settings)
    if bound.note:
        logger.warning("supervisor: %s", bound.note)
    logger.info("supervisor: %s mode, listening on %s:%d, %d worker(s), app %s",
                settings.mode, settings.host, bound.port, settings.workers, settings.config.app.app)
    if early is not None and early.status_sock is not None:
        status: StatusListener | None = StatusListener(early.status_sock, settings.config.status.host)
    else:
        status = bind_status_api(settings)  # PortError (exit 4) if unusable; None when disabled
    browser_url = livereload_url(settings, status.url if status is not None else None)
    use_template, why = template_choice(settings)
    logger.info("supervisor: %s", why)
    first = early.worker if early is not None else None
    def reload_stale(files: set[str]) -> None:  # edits the file watcher was not there to see
        forget_bytecode(files)
        runner.post(FilesChanged(frozenset(files)))

    def chose(choice: Choice) -> None:  # which template the latest worker started from, for the status
        runner.reload_status.template, runner.reload_status.template_why = choice.stage, choice.why

    project_stage = settings.reload and settings.config.reload.project_stage
    template = TemplateSpawner(lambda: project_roots(runner.settings), early=first, on_stale=reload_stale,
                               on_choice=chose, project_stage=project_stage) if use_template else None
    if template is None and first is not None:
        first.close()
    spawn: Spawner = template if template is not None else spawn_worker
    runner = Runner(settings, bound, resolve=resolve, redactor=redactor, livereload_url=browser_url, spawn=spawn,
                    retry=template.retry if template is not None else lambda pid: None)
    reloader = Reloader(runner)
    api = build_status_api(runner, status, redactor) if status is not None else None
    if api is not None and browser_url:
        install_livereload(runner, api, browser_url)
    # Startup steps run in this order: the watches first (an edit made the moment the app
    # answers must not be missed), then the database wait.
    plugins = [
        Plugin("reload", service=reloader.serve, startup=reloader.wait_watching),
        api.plugin() if api is not None else None,
        reaper_plugin(runner),
        HealthWatch(runner).plugin(),
        DatabaseWatch(runner).plugin(),
        migrate_plugin(runner),  # after the database answers, before the first worker
        install_sd_notify(runner, settings.environ),
        template.plugin() if template is not None else None,
    ]
    return Launch(runner, [plugin for plugin in plugins if plugin is not None])
