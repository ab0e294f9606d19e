"""``python -m supervisor systemd-unit``: a systemd service (and socket) unit for this project.

Rendering is pure: :func:`render_service` and :func:`render_socket` turn :class:`UnitOptions`
into the text of the unit files, so tests compare text and run ``systemd-analyze`` on it. The
command reads ``supervisor.toml`` (not the environment: in production that comes from the
``EnvironmentFile=``) for the deadlines, port and runtime directory the unit must agree with.

Choices worth knowing (the README in ``deploy/`` explains them to users):

* ``Type=notify`` with ``NotifyAccess=main``: systemd waits for ``READY=1`` (the first worker is
  serving and the database answers); only the supervisor may send it, never a worker. Not
  ``Type=notify-reload``: Debian 12's systemd 252 does not know it. ``ExecReload=`` sends SIGHUP
  and the supervisor reports ``RELOADING=1`` and ``READY=1`` itself.
* ``ExecStart=`` is the absolute interpreter with ``-m supervisor up``: no shell, nothing forks,
  so the main PID is the supervisor.
* ``KillMode=mixed``: SIGTERM goes to the supervisor only, which drains its workers within
  ``[supervisor] stop_timeout``; ``TimeoutStopSec=`` leaves :data:`STOP_MARGIN` seconds beyond
  that before systemd SIGKILLs whatever is left in the cgroup.
* ``Restart=on-failure`` with a start limit: a crash loop that restarts cannot fix stops after
  :data:`START_LIMIT_BURST` starts in :data:`START_LIMIT_INTERVAL` seconds; exit 2 (invalid
  configuration) is never retried.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.config.toml import Config, config_file, load_config
from supervisor.errors import EXIT_CONFIG, EXIT_OK, ConfigError, Problem
from supervisor.options import add_project_options

STOP_MARGIN = 15  # seconds beyond the supervisor's stop deadline before systemd kills everything
START_MARGIN = 30  # seconds beyond database wait + worker readiness before systemd gives up a start
START_LIMIT_INTERVAL = 300
START_LIMIT_BURST = 5
RESTART_SEC = 2
DEFAULT_WATCHDOG_SEC = 30
SOCKET_FD_NAME = "http"
# Paths ProtectHome= hides; a project, interpreter or env file below them needs "read-only".
HOME_ROOTS = ("/home", "/root", "/run/user")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@:-]+$")
# What a directory name may not keep in a unit name ("@" too: it would make the unit a template).
NOT_IN_DEFAULT_NAME = re.compile(r"[^A-Za-z0-9_.:-]+")


@dataclass(frozen=True)
class UnitOptions:
    """Everything a unit depends on; absolute paths only."""

    name: str
    project_dir: Path
    python: str
    runtime_dir: Path
    stop_timeout: float
    start_timeout: float
    host: str
    port: int
    backlog: int = 2048
    config: Path | None = None
    mode: str = "production"
    user: str | None = None
    group: str | None = None
    env_file: str | None = None
    read_write: tuple[str, ...] = ()
    watchdog_sec: int = DEFAULT_WATCHDOG_SEC
    socket: bool = False

    @classmethod
    def from_config(cls, cfg: Config, project_dir: Path, python: str, **kwargs: object) -> UnitOptions:
        """Options that agree with ``supervisor.toml``: deadlines, port, runtime directory."""
        runtime = Path(cfg.supervisor.runtime_dir)
        db = cfg.database
        start = (db.deadline if db.wait else 0) + cfg.app.ready_timeout
        return cls(project_dir=project_dir, python=python,
                   runtime_dir=runtime if runtime.is_absolute() else project_dir / runtime,
                   stop_timeout=cfg.supervisor.stop_timeout, start_timeout=start,
                   host=cfg.server.host, port=cfg.server.port, backlog=cfg.server.backlog,
                   **kwargs)  # type: ignore[arg-type]


@dataclass
class _Unit:
    sections: list[tuple[str, list[str]]] = field(default_factory=list)

    def section(self, name: str, *lines: str) -> None:
        self.sections.append((name, [line for line in lines if line]))

    def text(self, header: str) -> str:
        parts = [header]
        for name, lines in self.sections:
            parts.append(f"\n[{name}]\n" + "\n".join(lines) + "\n")
        return "".join(parts)


def escape_specifiers(value: str) -> str:
    """``%`` starts a unit specifier (``%h``, ``%n``): a literal one is written ``%%``."""
    return value.replace("%", "%%")


def quote_arg(arg: str) -> str:
    """One ``ExecStart=`` word: specifiers and ``$`` escaped, quoted when it has spaces or quotes.

    >>> quote_arg("/srv/my app"), quote_arg("50%")
    ('"/srv/my app"', '50%%')
    """
    value = escape_specifiers(arg).replace("$", "$$")
    if re.search(r"[\s\"'\\;]", value) or not value:
        value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _path_list(paths: Sequence[str]) -> str:
    return " ".join(quote_arg(p) for p in paths)


def _seconds(value: float) -> str:
    return str(math.ceil(value))


def listen_address(host: str, port: int) -> str:
    """``ListenStream=`` for ``[server] host``/``port``: ``0.0.0.0:8000``, ``[::1]:8000``."""
    if port == 0:
        raise ValueError("socket activation needs a fixed port; set [server] port")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _protect_home(opts: UnitOptions) -> str:
    paths = [str(opts.project_dir), opts.python, str(opts.runtime_dir), opts.env_file or "",
             *opts.read_write]
    under_home = any(p == root or p.startswith(root + "/") for p in paths for root in HOME_ROOTS)
    return "read-only" if under_home else "yes"


def _exec_start(opts: UnitOptions) -> str:
    argv = [opts.python, "-m", "supervisor", "up", "--project-dir", str(opts.project_dir)]
    if opts.config is not None:
        argv += ["--config", str(opts.config)]
    return " ".join(quote_arg(a) for a in argv)


def _privileges(opts: UnitOptions) -> list[str]:
    # Binding a port below 1024 needs one capability, unless systemd binds it (socket unit).
    if opts.port and opts.port < 1024 and not opts.socket:
        return ["CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE"]
    return ["CapabilityBoundingSet=", "AmbientCapabilities="]


def render_service(opts: UnitOptions) -> str:
    """The ``NAME.service`` unit, as text."""
    name = opts.name
    unit = _Unit()
    unit.section(
        "Unit",
        f"Description={escape_specifiers(f'{name}: python -m supervisor up in {opts.project_dir}')}",
        "Wants=network-online.target",
        "After=network-online.target" + (f" {name}.socket" if opts.socket else ""),
        f"Requires={name}.socket" if opts.socket else "",
        f"StartLimitIntervalSec={START_LIMIT_INTERVAL}",
        f"StartLimitBurst={START_LIMIT_BURST}",
    )
    unit.section(
        "Service",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={_exec_start(opts)}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        # Both take the rest of the line as one path: no quoting, only specifiers escaped.
        f"WorkingDirectory={escape_specifiers(str(opts.project_dir))}",
        f"Environment=SUPERVISOR_MODE={opts.mode} PYTHONUNBUFFERED=1",
        f"EnvironmentFile={escape_specifiers(opts.env_file)}" if opts.env_file else "",
        f"User={opts.user}" if opts.user else "",
        f"Group={opts.group}" if opts.group else "",
        f"SyslogIdentifier={name}",
        "Restart=on-failure",
        f"RestartSec={RESTART_SEC}",
        f"RestartPreventExitStatus={EXIT_CONFIG}",
        f"TimeoutStartSec={_seconds(opts.start_timeout + START_MARGIN)}",
        f"TimeoutStopSec={_seconds(opts.stop_timeout + STOP_MARGIN)}",
        f"WatchdogSec={opts.watchdog_sec}" if opts.watchdog_sec > 0 else "",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        # Hardening: `systemd-analyze security NAME.service` rates it (see deploy/README.md).
        "NoNewPrivileges=yes",
        *_privileges(opts),
        "ProtectSystem=strict",
        f"ReadWritePaths={_path_list(['-' + str(opts.runtime_dir), *opts.read_write])}",
        f"ProtectHome={_protect_home(opts)}",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "PrivateIPC=yes",
        "PrivateMounts=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RemoveIPC=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        "SystemCallErrorNumber=EPERM",
        "UMask=0027",
    )
    unit.section("Install", "WantedBy=multi-user.target")
    return unit.text(_header(opts, "service"))


def render_socket(opts: UnitOptions) -> str:
    """The ``NAME.socket`` unit: systemd binds the port and passes it to the service as fd 3."""
    unit = _Unit()
    unit.section("Unit", f"Description={escape_specifiers(f'{opts.name}: listening socket')}")
    unit.section(
        "Socket",
        f"ListenStream={listen_address(opts.host, opts.port)}",
        f"FileDescriptorName={SOCKET_FD_NAME}",
        f"Backlog={opts.backlog}",
        "NoDelay=yes",
    )
    unit.section("Install", "WantedBy=sockets.target")
    return unit.text(_header(opts, "socket"))


def _header(opts: UnitOptions, kind: str) -> str:
    return (f"# {opts.name}.{kind}: generated by `python -m supervisor systemd-unit` "
            f"for {opts.project_dir}.\n"
            f"# Install: copy to /etc/systemd/system/, then `systemctl daemon-reload`.\n")


def default_name(project_dir: Path) -> str:
    """The unit name when ``--name`` is not given: the project directory's, made a valid unit name
    (``/srv/shop`` gives ``shop``, ``~/My App`` gives ``My-App``)."""
    return NOT_IN_DEFAULT_NAME.sub("-", project_dir.name).strip("-.") or "app"


def render_units(opts: UnitOptions) -> dict[str, str]:
    """File name -> text, for every unit the options ask for."""
    units = {f"{opts.name}.service": render_service(opts)}
    if opts.socket:
        units[f"{opts.name}.socket"] = render_socket(opts)
    return units


# ----- the command (the I/O shell around the rendering above) ------------------------------


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``systemd-unit`` to the CLI (called by :func:`supervisor.cli.build_parser`)."""
    p = sub.add_parser("systemd-unit", help="print a systemd service unit (and socket unit) for this project")
    add_project_options(p)
    p.add_argument("--name", help="unit name without suffix (default: the project directory's name)")
    p.add_argument("--user", help="User= to run as (recommended: a dedicated system user)")
    p.add_argument("--group", help="Group= to run as")
    p.add_argument("--env-file", help="absolute path for EnvironmentFile= (secrets, DATABASE_URL)")
    p.add_argument("--python", default=sys.executable, help="interpreter for ExecStart= (default: this one)")
    p.add_argument("--mode", choices=("development", "production"), default="production")
    p.add_argument("--watchdog", type=int, default=DEFAULT_WATCHDOG_SEC, metavar="SECONDS",
                   help=f"WatchdogSec= (default {DEFAULT_WATCHDOG_SEC}; 0 turns the watchdog off)")
    p.add_argument("--read-write", action="append", default=[], metavar="PATH",
                   help="another writable path besides the runtime directory (repeatable)")
    p.add_argument("--socket", action="store_true", help="also a .socket unit: systemd binds the port")
    p.add_argument("--output-dir", help="write NAME.service (and NAME.socket) here instead of printing")
    p.set_defaults(func=cmd_systemd_unit)


def _absolute(path: str, what: str) -> str:
    if not Path(path).is_absolute():
        raise ConfigError([Problem(what, f"{path!r} is not an absolute path; systemd needs one")])
    return path


def options_from_args(args: argparse.Namespace) -> UnitOptions:
    project_dir = Path(args.project_dir).resolve()
    config_path = Path(args.config).resolve() if args.config else None
    config = load_config(config_file(project_dir, config_path), required=config_path is not None)
    name = default_name(project_dir) if args.name is None else args.name
    if not NAME_PATTERN.match(name):
        raise ConfigError([Problem("--name", f"{name!r} is not a unit name; expected letters, "
                                             "digits and _.@:-")])
    if args.socket and config.server.port == 0:
        raise ConfigError([Problem(config.where("server", "port"),
                                   "0 (any free port) cannot be socket-activated; expected a fixed port")])
    return UnitOptions.from_config(
        config, project_dir, _absolute(args.python, "--python"), name=name, config=config_path,
        mode=args.mode, user=args.user, group=args.group,
        env_file=_absolute(args.env_file, "--env-file") if args.env_file else None,
        read_write=tuple(_absolute(p, "--read-write") for p in args.read_write),
        watchdog_sec=max(0, args.watchdog), socket=args.socket)


def cmd_systemd_unit(args: argparse.Namespace) -> int:
    units = render_units(options_from_args(args))
    if args.output_dir:
        out = Path(args.output_dir)
        for file_name, text in units.items():
            _write(out / file_name, text)
            print(f"wrote {out / file_name}")
    else:
        print("\n".join(units.values()), end="")
    return EXIT_OK


def _write(path: Path, text: str) -> None:
    """Write one unit file, creating its directory; a path we cannot write is the user's to fix."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        failed = str(exc.filename or path)  # mkdir names the directory it could not make
        why = exc.strerror if failed == str(path) else f"{exc.strerror}: {failed}"
        message = (f"cannot write {path} ({why}); expected a writable directory, "
                   "or no --output-dir to print the units")
        raise ConfigError([Problem("--output-dir", message)]) from None
