"""Exceptions that carry a user-facing message and the exit code the CLI maps them to.

Exit codes of ``python -m supervisor up`` (documented in the README):

* 0: clean stop
* 1: runtime failure (a crash loop in production mode, an unexpected internal error)
* 2: configuration or environment error
* 3: database unreachable
* 4: no usable port
* 130: forced stop by a second interrupt
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_CONFIG = 2
EXIT_DATABASE = 3
EXIT_PORT = 4
EXIT_FORCED = 130


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input: where it is, what it is, and what was expected."""

    where: str  # "supervisor.toml:12 [server] port" or ".env:3" or "environment DATABASE_URL"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Notice:
    """Something the user should know about how their input was read, which is not wrong: the app
    that was found, a file that is ignored. Logged once at start by ``up``, printed by ``check``."""

    message: str
    warning: bool = False


class SupervisorError(Exception):
    """Base class: a failure with a message fit for the user and an exit code."""

    exit_code = EXIT_RUNTIME


class ConfigError(SupervisorError):
    """Configuration or environment is invalid; carries every problem found, not only the first."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class PortError(SupervisorError):
    exit_code = EXIT_PORT


class DatabaseUnavailable(SupervisorError):
    exit_code = EXIT_DATABASE

