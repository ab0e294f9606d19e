"""Rules on the environment that depend on the mode: development defaults, production refusals.

Pure: applied by :func:`supervisor.config.settings.resolve_settings` to the merged environment after the
``[env]`` schema has checked each value on its own.

* Defaults declared in ``[env]`` reach the workers, so the app sees what ``check`` validated.
* The database URL (``[database] url_env``, ``DATABASE_URL`` by default) is normalised here, so a
  sync-driver or malformed URL is a configuration error (exit 2) with a hint, not a crash later.
* A project uses a database when it declares that variable in ``[env]`` or sets it. Then, in
  development mode without it, the webapp gets a SQLite file in the runtime directory; in
  production mode it is required.
* In production mode a secret may not keep the development default ``supervisor.toml`` declares.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor.config.dburl import DatabaseURLError, embedded_default_url, normalize_database_url
from supervisor.config.toml import Config
from supervisor.errors import Problem

SCHEMA_DEFAULT = "supervisor.toml [env] default"


def schema_default(config: Config) -> str:
    """Where a declared default comes from: ``supervisor.toml [env] default``, or in
    ``pyproject.toml``, ``pyproject.toml [tool.webapp-supervisor.env] default``."""
    return f"{Path(config.path).name} [{config.locator.name('env')}] default"
SQLITE_DEFAULT = "development default (SQLite)"


def apply_environment_rules(config: Config, mode: str, environ: dict[str, str], sources: dict[str, str],
                            checked: Mapping[str, Any], runtime_dir: Path) -> list[Problem]:
    """Add defaults to ``environ`` (and where they came from to ``sources``); return problems.

    ``checked`` holds the variables the schema accepted: one already reported is not reported
    again.
    """
    for name, spec in config.env.items():
        if name not in environ and spec.default is not None:
            environ[name] = spec.default
            sources[name] = schema_default(config)
    problems = _database_problems(config, mode, environ, sources, checked, runtime_dir)
    if mode == "production":
        problems += _development_secrets(config, environ, sources)
    return problems


def _database_problems(config: Config, mode: str, environ: dict[str, str], sources: dict[str, str],
                       checked: Mapping[str, Any], runtime_dir: Path) -> list[Problem]:
    name = config.database.url_env
    spec = config.env.get(name)
    where = f"{sources.get(name, 'environment')} {name}"
    if name in environ:
        if spec is not None and name not in checked:
            return []  # the schema has already said what is wrong with it
        try:
            normalize_database_url(environ[name])
        except DatabaseURLError as exc:
            return [Problem(where, str(exc))]
        return []
    if spec is None:
        return []  # this project does not use a database
    if mode == "production":
        if spec.required:
            return []  # reported by the schema
        return [Problem(where, "is required in production mode; expected "
                               "postgresql://user:password@host:5432/dbname (the SQLite file is "
                               "a development default only)")]
    environ[name] = embedded_default_url(runtime_dir)
    sources[name] = SQLITE_DEFAULT
    return []


def _development_secrets(config: Config, environ: Mapping[str, str],
                         sources: Mapping[str, str]) -> list[Problem]:
    problems = []
    for name, spec in config.env.items():
        if spec.is_secret and spec.default is not None and environ.get(name) == spec.default:
            problems.append(Problem(
                f"{sources.get(name, 'environment')} {name}",
                "is the development default from supervisor.toml; production mode needs a secret of "
                "its own, e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(48))'"))
    return problems
