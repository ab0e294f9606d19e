"""The webapp's settings, read once from an environment mapping (``os.environ`` in production).

Like Starlette's ``Config(environ=...)``, any mapping works, so tests pass dicts. Every variable
read here is documented in ``.env.example``. Errors name the variable, the value (never a secret's)
and what was expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from supervisor.dburl import DatabaseURL, DatabaseURLError, embedded_default_url, normalize_database_url
from supervisor.envschema import parse_number

# supervisor.toml declares the same (min_length = 32 under [env.BETTER_AUTH_SECRET]); checked here
# too so that the webapp run without the supervisor (plain uvicorn) refuses a short key.
MIN_SECRET_LENGTH = 32


class WebConfigError(ValueError):
    """The environment cannot run the webapp; the message says which variable and why."""


@dataclass(frozen=True)
class WebSettings:
    mode: str
    database: DatabaseURL
    database_defaulted: bool  # True: no database URL was set, the development SQLite file is used
    auth_secret: str
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 10.0
    pool_recycle: float = 1800.0
    connect_timeout: float = 5.0
    statement_timeout_ms: int = 15000
    health_timeout: float = 2.0

    @property
    def production(self) -> bool:
        return self.mode == "production"


def _number(environ: Mapping[str, str], name: str, kind: type, default: float, lo: float) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse_number(kind, raw)
    except ValueError as exc:
        raise WebConfigError(f"{name}={raw!r} {exc}") from None
    if value < lo:
        raise WebConfigError(f"{name}={raw!r} is out of range; expected at least {lo:g}")
    return value


def load_web_settings(environ: Mapping[str, str], cwd: Path | None = None) -> WebSettings:
    """Read and check the webapp's variables; raise :class:`WebConfigError` on the first bad one.

    Under the supervisor, ``SUPERVISOR_MODE``, ``SUPERVISOR_DATABASE_URL_ENV`` (its ``[database]
    url_env``) and ``SUPERVISOR_RUNTIME_DIR`` say where to look; run alone, the defaults apply.
    """
    mode = environ.get("SUPERVISOR_MODE", "development")
    url_env = environ.get("SUPERVISOR_DATABASE_URL_ENV") or "DATABASE_URL"
    raw_url = environ.get(url_env, "").strip()
    defaulted = not raw_url
    if not raw_url:
        if mode == "production":
            raise WebConfigError(f"{url_env} is not set; production mode needs "
                                 "postgresql://user:password@host:5432/dbname")
        # Run without the supervisor (plain uvicorn): the same file the supervisor would choose.
        runtime_dir = Path(environ.get("SUPERVISOR_RUNTIME_DIR") or (cwd or Path.cwd()) / ".supervisor")
        raw_url = embedded_default_url(runtime_dir)
    try:
        database = normalize_database_url(raw_url)
    except DatabaseURLError as exc:
        raise WebConfigError(f"{url_env}: {exc}") from None
    secret = environ.get("BETTER_AUTH_SECRET", "")
    if len(secret) < MIN_SECRET_LENGTH:
        raise WebConfigError(f"BETTER_AUTH_SECRET is {'not set' if not secret else 'too short'}; "
                             f"expected a secret of at least {MIN_SECRET_LENGTH} characters")
    return WebSettings(
        mode=mode,
        database=database,
        database_defaulted=defaulted,
        auth_secret=secret,
        pool_size=int(_number(environ, "DATABASE_POOL_SIZE", int, 5, 1)),
        max_overflow=int(_number(environ, "DATABASE_MAX_OVERFLOW", int, 10, 0)),
        pool_timeout=_number(environ, "DATABASE_POOL_TIMEOUT", float, 10.0, 0.1),
        pool_recycle=_number(environ, "DATABASE_POOL_RECYCLE", float, 1800.0, 1),
        connect_timeout=_number(environ, "DATABASE_CONNECT_TIMEOUT", float, 5.0, 0.1),
        statement_timeout_ms=int(_number(environ, "DATABASE_STATEMENT_TIMEOUT_MS", int, 15000, 0)),
        health_timeout=_number(environ, "DATABASE_HEALTH_TIMEOUT", float, 2.0, 0.1),
    )
