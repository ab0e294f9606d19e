"""The command line: ``python -m supervisor <command>``. The only place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from supervisor import __version__
from supervisor.child.accept_errors import AcceptErrorLog
from supervisor.config.runtimedir import ensure_runtime_dir
from supervisor.config.settings import Overrides, Settings, problem_redactor, resolve_settings, runtime_dir_where
from supervisor.errors import EXIT_CONFIG, EXIT_OK, ConfigError, SupervisorError
from supervisor.listen.limits import raise_open_file_limit
from supervisor.options import add_project_options
from supervisor.output import logger, setup_logging
from supervisor.secrets import Redactor
from supervisor.spawn.descendants import release_base
from supervisor.warm.zygote import Zygote


def _settings(args: argparse.Namespace) -> Settings:
    overrides = Overrides(port=getattr(args, "port", None), mode=getattr(args, "mode", None),
                          workers=getattr(args, "workers", None), reload=getattr(args, "reload", None),
                          app=getattr(args, "app", None), factory=getattr(args, "factory", None),
                          log_config=getattr(args, "log_config", None))
    config = Path(args.config) if args.config else None
    return resolve_settings(Path(args.project_dir), os.environ, overrides, config)


def _app_settings(args: argparse.Namespace) -> Settings:
    """The settings of a command that runs (or checks) the app: there must be one."""
    settings = _settings(args)
    if settings.app_problem is not None:
        raise ConfigError([settings.app_problem])
    return settings


def _add_app_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", nargs="?", metavar="APP",
                        help="the ASGI app: module:attribute (main:app), a file (main.py, src/app/main.py) or "
                             "a module (default: [app] app, else main.py, app.py, api.py, app/main.py or "
                             "src/*/main.py with an app, application or create_app)")
    parser.add_argument("--factory", action="store_true", default=None,
                        help="APP is a function returning the app (default: told from the source)")


def _print_problems(exc: ConfigError, args: argparse.Namespace | None = None) -> None:
    # The settings failed, so their redactor does not exist: build one from what can be read.
    project_dir = Path(getattr(args, "project_dir", None) or ".")
    config = getattr(args, "config", None)
    redact = problem_redactor(project_dir, os.environ, Path(config) if config else None)
    count = len(exc.problems)
    print(f"error: {count} problem{'s' if count != 1 else ''} in configuration and environment:",
          file=sys.stderr)
    for problem in exc.problems:
        print(redact(f"  - {problem}"), file=sys.stderr)


def cmd_check(args: argparse.Namespace) -> int:
    settings = _app_settings(args)
    dotenv = settings.dotenv.path if settings.dotenv.exists else f"the environment (no {settings.dotenv.path})"
    config = settings.config.path if Path(settings.config.path).exists() else \
        f"the defaults (no {settings.config.path})"
    app = settings.config.app
    print(f"ok: {config} and {dotenv} are valid "
          f"(mode {settings.mode}, port {settings.port}, {settings.workers} worker(s), "
          f"{len(settings.config.env)} declared variable(s), app {app.app}"
          f"{' (a factory)' if app.factory else ''}{'' if app.app_dir == '.' else ' from ' + app.app_dir})")
    for notice in settings.notices:
        print(f"{'warning' if notice.warning else 'note'}: {notice.message}")
    programs = settings.config.programs
    if programs:
        source = "from the Procfile" if settings.config.procfile else "from [programs]"
        print(f"programs {source}: {', '.join(programs)} (started in depends_on order; web is the app "
              f"{settings.config.app.app})")
    return EXIT_OK


def cmd_up(args: argparse.Namespace, zygote: Zygote | None = None) -> int:
    """``up``; ``zygote``: the first worker-to-be, forked before this module was imported."""
    # First: nothing the supervisor opens may count against the low default (see supervisor.listen.limits).
    raised = raise_open_file_limit()
    settings = _app_settings(args)
    ensure_runtime_dir(settings.runtime_dir, runtime_dir_where(settings.config),
                       settings.config.supervisor.allow_runtime_dir_symlink)
    redact = Redactor(settings.secrets)
    setup_logging(redact, args.log_level or settings.config.supervisor.log_level)
    if raised:
        logger.debug("supervisor: raised the open-file limit from %d to %d", *raised)
    for notice in settings.notices:
        logger.log(logging.WARNING if notice.warning else logging.INFO, "supervisor: %s", notice.message)
    # The ports, and the first worker serving, before the rest of the supervisor is imported and
    # set up: a cold start then costs the longer of the two, not both (supervisor.warm.early).
    from supervisor.warm.early import start_early
    from supervisor.warm.template import template_choice

    early = start_early(settings, template_choice(settings)[0], zygote)
    try:
        from supervisor.launch import build  # heavy imports only for `up`

        launch = build(settings, resolve=lambda: _app_settings(args), redactor=redact, early=early)
    except BaseException:
        if early.worker is not None:
            early.worker.close()
        if early.status_sock is not None:
            early.status_sock.close()
        raise
    try:
        return asyncio.run(_serve(launch.run()))
    finally:
        release_base()  # the workers' cgroups, if any were used


async def _serve(run: Coroutine[Any, Any, int]) -> int:
    """Run the supervisor with accept errors (descriptors exhausted) logged once per interval."""
    asyncio.get_running_loop().set_exception_handler(AcceptErrorLog())
    return await run


def build_parser(only_up: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m supervisor",
                                     description="Process supervisor and dev launcher for Python web apps.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="validate, bind the port and run the app under supervision")
    _add_app_options(up)
    add_project_options(up)
    up.add_argument("--port", type=int, help="preferred port (default: PORT, then [server] port)")
    up.add_argument("--mode", choices=("development", "production"))
    up.add_argument("--workers", type=int)
    up.add_argument("--reload", action=argparse.BooleanOptionalAction, default=None,
                    help="reload on file changes (default: on in development mode)")
    up.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                    help="the supervisor's own log level (default: [supervisor] log_level); debug "
                         "also logs the changes the watcher ignored, and why")
    up.add_argument("--log-config", metavar="FILE",
                    help="the workers' logging config (.json, .yaml or .ini, as uvicorn --log-config "
                         "reads; default: [app] log_config, else uvicorn's)")
    up.set_defaults(func=cmd_up)

    check = sub.add_parser("check", help="validate configuration and environment, start nothing")
    _add_app_options(check)
    add_project_options(check)
    check.add_argument("--mode", choices=("development", "production"))
    check.set_defaults(func=cmd_check)

    if only_up:
        return parser
    # Subcommands that live in their own modules: imported only when one of them may be asked for,
    # as `up` is timed from its command line to its first answer.
    from supervisor.config import scaffold
    from supervisor.reload import why
    from supervisor.status import control
    from supervisor.systemd import units

    control.register(sub)  # status, restart, stop
    units.register(sub)  # systemd-unit
    why.register(sub, _settings)  # why PATH...
    scaffold.register(sub)  # init
    return parser


def main(argv: Sequence[str] | None = None, zygote: Zygote | None = None) -> int:
    """``zygote``: forked by ``python -m supervisor up`` before anything else; ended here unless
    ``up`` made it the first worker."""
    try:
        return _run(sys.argv[1:] if argv is None else list(argv), zygote)
    finally:
        if zygote is not None:
            zygote.discard()  # nothing, once it is the first worker


def _run(argv: list[str], zygote: Zygote | None) -> int:
    args = build_parser(only_up=argv[:1] == ["up"]).parse_args(argv)
    try:
        return int(cmd_up(args, zygote) if args.func is cmd_up else args.func(args))
    except ConfigError as exc:
        _print_problems(exc, args)
        return EXIT_CONFIG
    except SupervisorError as exc:
        if logger.handlers:  # `up` set up redacting logging: say it there
            logger.error("error: %s", exc)
        else:
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
