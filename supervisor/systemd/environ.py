"""The variables systemd hands the service's main process, and keeping them from the workers.

``NOTIFY_SOCKET``, ``WATCHDOG_*`` and ``LISTEN_*`` describe *this* process: a worker that
inherited ``NOTIFY_SOCKET`` could send ``READY=1`` or ``STOPPING=1`` on the supervisor's behalf
(systemd drops it with ``NotifyAccess=main``, or takes it as the service's with
``NotifyAccess=all``), and one that inherited ``LISTEN_PID``/``LISTEN_FDS`` might try to adopt
fd 3. So the worker environment never carries them.
"""

from __future__ import annotations

from collections.abc import Mapping

SYSTEMD_NAMES = ("NOTIFY_SOCKET",)
SYSTEMD_PREFIXES = ("WATCHDOG_", "LISTEN_")


def is_systemd_variable(name: str) -> bool:
    return name in SYSTEMD_NAMES or name.startswith(SYSTEMD_PREFIXES)


def scrub_systemd_env(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` without the variables that only the supervisor may act on.

    >>> scrub_systemd_env({"PATH": "/bin", "NOTIFY_SOCKET": "@x", "LISTEN_FDS": "1"})
    {'PATH': '/bin'}
    """
    return {name: value for name, value in environ.items() if not is_systemd_variable(name)}
