"""``[database] migrate``: a one-shot command (schema migrations) before the first worker starts.

Run once at start, after the database answers (see :mod:`supervisor.database.watch`), in ``[app]
app_dir`` with the workers' environment, so it finds the same code and the same database the
workers will. Its output is relayed to the log line by line, redacted. A non-zero exit, or no
exit within ``migrate_timeout``, stops ``up`` with exit code 3 and the last lines the command
wrote to stderr; a program that does not exist is a configuration error (exit 2).

``python`` or ``python3`` as the program means the interpreter running the supervisor, so
``python -m alembic upgrade head`` works without a virtual environment's scripts on ``PATH``.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from supervisor.child.osutil import die_with_parent
from supervisor.config.settings import Settings
from supervisor.contract import Plugin, SupervisorView
from supervisor.errors import EXIT_DATABASE, ConfigError, Problem, SupervisorError
from supervisor.secrets import Redactor, mask_url
from supervisor.spawn.process import kill_group
from supervisor.systemd.environ import scrub_systemd_env

logger = logging.getLogger("supervisor")

TAIL_LINES = 15
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when the command must be stopped
_PYTHON_NAMES = ("python", "python3")


class MigrationFailed(SupervisorError):
    exit_code = EXIT_DATABASE


def resolve_argv(argv: list[str], python: str = sys.executable) -> list[str]:
    """Pure: ``python``/``python3`` as the program becomes ``python`` (the supervisor's interpreter)."""
    if argv and argv[0] in _PYTHON_NAMES:
        return [python, *argv[1:]]
    return list(argv)


def failure_message(shown: str, outcome: str, tail: list[str]) -> str:
    """Pure: the error ``up`` ends with; ``tail`` is already redacted."""
    lines = [f"[database] migrate failed: {shown} {outcome}"]
    if tail:
        lines.append("last lines on stderr:")
        lines.extend(f"  {line}" for line in tail)
    else:
        lines.append("(nothing on stderr)")
    return "\n".join(lines)


def migration_cwd(settings: Settings) -> Path:
    """Where the command runs: ``[app] app_dir``, as the workers do."""
    return settings.app_dir()


async def _relay(stream: asyncio.StreamReader | None, clean: Callable[[str], str],
                 tail: deque[str] | None) -> None:
    if stream is None:
        return
    while True:
        raw = await stream.readline()
        if not raw:
            return
        line = clean(raw.decode("utf-8", "replace").rstrip())
        if line:
            logger.info("migrate: %s", line)
            if tail is not None:
                tail.append(line)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's process group, SIGKILL it after a grace period, and reap."""
    kill_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_GRACE)
    except TimeoutError:
        kill_group(proc.pid, signal.SIGKILL)
        await proc.wait()


async def run_migrations(settings: Settings, environ: Mapping[str, str]) -> None:
    """Run ``[database] migrate`` once, if set; raise :class:`MigrationFailed` (exit 3) if it fails."""
    cfg = settings.config.database
    if not cfg.migrate:
        return
    shown = shlex.join(cfg.migrate)
    redact = Redactor(settings.secrets)

    def clean(text: str) -> str:
        return redact(mask_url(text))

    cwd = migration_cwd(settings)
    logger.info("migrate: running %s in %s", clean(shown), cwd)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *resolve_argv(cfg.migrate), cwd=cwd, env=scrub_systemd_env(dict(environ)),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent,
            limit=1024 * 1024)
    except FileNotFoundError:
        raise ConfigError([Problem(f"{settings.config.path} [database] migrate",
                                   f"program {cfg.migrate[0]!r} not found (PATH or {cwd}); expected an "
                                   "installed command, e.g. \"python -m alembic upgrade head\"")]) from None
    except OSError as exc:
        raise MigrationFailed(failure_message(clean(shown), f"could not start: {exc}", [])) from None
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        async with asyncio.timeout(cfg.migrate_timeout):
            await asyncio.gather(_relay(proc.stdout, clean, None), _relay(proc.stderr, clean, tail))
            code = await proc.wait()
    except TimeoutError:
        await _stop(proc)
        raise MigrationFailed(failure_message(
            clean(shown), f"did not finish within {cfg.migrate_timeout:g}s ([database] migrate_timeout); "
            "stopped it", list(tail))) from None
    except BaseException:  # cancelled: `up` is stopping; the command must not outlive it
        await asyncio.shield(_stop(proc))
        raise
    if code != 0:
        outcome = f"exited with code {code}" if code > 0 else f"was killed by signal {-code}"
        raise MigrationFailed(failure_message(clean(shown), outcome, list(tail)))
    logger.info("migrate: done in %.1fs", time.monotonic() - started)


def migrate_plugin(sup: SupervisorView) -> Plugin:
    """The startup step that runs ``[database] migrate`` (after the database wait, before any worker)."""

    async def step() -> None:
        await run_migrations(sup.settings, sup.settings.environ)

    return Plugin("migrate", startup=step)
