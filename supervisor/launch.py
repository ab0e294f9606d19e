"""Wiring for ``up``: bind the port, build the supervisor and plug in its services."""

from __future__ import annotations

import logging
from collections.abc import Callable

from supervisor.ports import bind_port
from supervisor.reload import reload_service
from supervisor.runner import Supervisor
from supervisor.secrets import Redactor
from supervisor.settings import Settings

logger = logging.getLogger("supervisor")


def build_supervisor(settings: Settings, resolve: Callable[[], Settings] | None = None,
                     redactor: Redactor | None = None) -> Supervisor:
    """Everything ``up`` runs, assembled from resolved settings. Raises PortError (exit 4)."""
    server = settings.config.server
    bound = bind_port(settings.host, settings.port, server.port_range, server.strict_port, server.backlog)
    if bound.note:
        logger.warning("supervisor: %s", bound.note)
    logger.info("supervisor: %s mode, listening on %s:%d, %d worker(s), app %s",
                settings.mode, settings.host, bound.port, settings.workers, settings.config.app.app)
    supervisor = Supervisor(settings, bound)
    supervisor.resolve = resolve
    supervisor.redactor = redactor
    supervisor.services.append(reload_service)
    return supervisor
