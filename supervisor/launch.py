"""Wiring for ``up``: bind the port, build the supervisor and plug in its services."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from supervisor.activation import activated_listener
from supervisor.dbwatch import install_database_watch
from supervisor.ports import bind_port
from supervisor.reaper import reaper_service
from supervisor.reload import Reloader
from supervisor.runner import Supervisor
from supervisor.sdnotify import install_sd_notify
from supervisor.secrets import Redactor
from supervisor.settings import Settings
from supervisor.status_api import install_status_api

logger = logging.getLogger("supervisor")


def build_supervisor(settings: Settings, resolve: Callable[[], Settings] | None = None,
                     redactor: Redactor | None = None) -> Supervisor:
    """Everything ``up`` runs, assembled from resolved settings. Raises PortError (exit 4)."""
    server = settings.config.server
    # Under a systemd .socket unit the port is already bound and passed in as fd 3.
    bound = activated_listener(settings.environ, os.getpid()) or \
        bind_port(settings.host, settings.port, server.port_range, server.strict_port, server.backlog)
    if bound.note:
        logger.warning("supervisor: %s", bound.note)
    logger.info("supervisor: %s mode, listening on %s:%d, %d worker(s), app %s",
                settings.mode, settings.host, bound.port, settings.workers, settings.config.app.app)
    supervisor = Supervisor(settings, bound)
    supervisor.resolve = resolve
    supervisor.redactor = redactor
    install_status_api(supervisor)  # binds [status] port; PortError (exit 4) if unusable
    reloader = Reloader()
    supervisor.services.append(reloader.serve)
    supervisor.startup_steps.insert(0, reloader.wait_watching)
    supervisor.services.append(reaper_service)
    install_database_watch(supervisor)  # waits before the first worker, then monitors
    install_sd_notify(supervisor, settings.environ)
    return supervisor
