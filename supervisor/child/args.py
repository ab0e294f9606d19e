"""What a worker is told to run: its arguments, light to import.

The supervisor builds these before anything imports uvicorn (a first worker is handed its
arguments while the supervisor is still starting, see :mod:`supervisor.warm.zygote`); the
worker module, which imports uvicorn, reads them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

READY_MESSAGE = b"ready\n"


@dataclass(frozen=True)
class WorkerArgs:
    app: str
    factory: bool
    listen_fd: int
    ready_fd: int
    parent_pid: int
    log_level: str
    graceful_timeout: float
    # The supervisor's live-reload event stream; "" when the browser is not to follow reloads.
    livereload_url: str = ""
    # The heartbeat pipe (-1: none) and its interval; the directory for stack dumps ("": none).
    heartbeat_fd: int = -1
    heartbeat_interval: float = 1.0
    stacks_dir: str = ""
    # Where to report the modules this worker imported (see supervisor.warm.preload); -1: nowhere.
    report_fd: int = -1
    # [app] loop, http, interface and log_config ("": uvicorn's default logging).
    loop: str = "auto"
    http: str = "auto"
    interface: str = "auto"
    log_config: str = ""
    # [app] max_requests and its jitter: the worker draws its quota and enforces it (0: no limit).
    max_requests: int = 0
    max_requests_jitter: int = 0

    def to_argv(self) -> list[str]:
        argv = ["--app", self.app, "--listen-fd", str(self.listen_fd), "--ready-fd", str(self.ready_fd),
                "--parent-pid", str(self.parent_pid), "--log-level", self.log_level,
                "--graceful-timeout", repr(self.graceful_timeout), "--heartbeat-fd", str(self.heartbeat_fd),
                "--heartbeat-interval", repr(self.heartbeat_interval)]
        if self.livereload_url:
            argv += ["--livereload-url", self.livereload_url]
        if self.stacks_dir:
            argv += ["--stacks-dir", self.stacks_dir]
        if self.report_fd >= 0:
            argv += ["--report-fd", str(self.report_fd)]
        argv += ["--loop", self.loop, "--http", self.http, "--interface", self.interface]
        if self.log_config:
            argv += ["--log-config", self.log_config]
        if self.max_requests > 0:
            argv += ["--max-requests", str(self.max_requests), "--max-requests-jitter", str(self.max_requests_jitter)]
        return argv + (["--factory"] if self.factory else [])

    def to_dict(self) -> dict[str, Any]:
        """Every field, for a message to a process that receives the descriptors apart."""
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any], *, listen_fd: int, ready_fd: int, report_fd: int,
                  heartbeat_fd: int) -> WorkerArgs:
        """The arguments :meth:`to_dict` gave, with the receiver's numbers for the descriptors."""
        return replace(cls(**fields), listen_fd=listen_fd, ready_fd=ready_fd, report_fd=report_fd,
                       heartbeat_fd=heartbeat_fd)
