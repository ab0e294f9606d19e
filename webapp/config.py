"""The webapp's settings, read once from an environment mapping (``os.environ`` in production).

Like Starlette's ``Config(environ=...)``, any mapping works, so tests pass dicts. Every variable
read here is documented in ``.env.example``. Errors name the variable, the value (never a secret's)
and what was expected. :func:`load_database_url` is the database part alone: the Alembic
migrations need the URL and nothing else (no auth secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from supervisor.config.dburl import DatabaseURL, DatabaseURLError, embedded_default_url, normalize_database_url
from supervisor.config.envschema import FALSE_WORDS, TRUE_WORDS, parse_number
from webapp.cors import check_credentials, parse_origins

# supervisor.toml declares the same (min_length = 32 under [env.BETTER_AUTH_SECRET]); checked here
# too so that the webapp run without the supervisor (plain uvicorn) refuses a short key.
MIN_SECRET_LENGTH = 32
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


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
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    cors_origins: tuple[str, ...] = ()
    cors_allow_credentials: bool = False
    auth_audience: str | None = None
    auth_issuer: str | None = None
    auth_leeway: float = 30.0

    @property
    def production(self) -> bool:
        return self.mode == "production"


def _number(environ: Mapping[str, str], name: str, kind: type, default: float, lo: float,
            hi: float | None = None) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse_number(kind, raw)
    except ValueError as exc:
        raise WebConfigError(f"{name}={raw!r} {exc}") from None
    if value < lo:
        raise WebConfigError(f"{name}={raw!r} is out of range; expected at least {lo:g}")
    if hi is not None and value > hi:
        raise WebConfigError(f"{name}={raw!r} is out of range; expected {lo:g} to {hi:g}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS or not raw:
        return False
    raise WebConfigError(f"{name}={raw!r} is not a boolean; expected true or false")


def _cors(environ: Mapping[str, str]) -> tuple[tuple[str, ...], bool]:
    try:
        origins = parse_origins(environ.get("CORS_ORIGINS", ""))
    except ValueError as exc:
        raise WebConfigError(f"CORS_ORIGINS {exc}") from None
    credentials = _flag(environ, "CORS_ALLOW_CREDENTIALS")
    try:
        check_credentials(origins, credentials)
    except ValueError as exc:
        raise WebConfigError(str(exc)) from None
    return origins, credentials


def load_database_url(environ: Mapping[str, str], cwd: Path | None = None) -> tuple[DatabaseURL, bool]:
    """(the database, whether it is the development default), or :class:`WebConfigError`.

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
        return normalize_database_url(raw_url), defaulted
    except DatabaseURLError as exc:
        raise WebConfigError(f"{url_env}: {exc}") from None


def _optional(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def load_web_settings(environ: Mapping[str, str], cwd: Path | None = None) -> WebSettings:
    """Read and check the webapp's variables; raise :class:`WebConfigError` on the first bad one."""
    mode = environ.get("SUPERVISOR_MODE", "development")
    database, defaulted = load_database_url(environ, cwd)
    secret = environ.get("BETTER_AUTH_SECRET", "")
    if len(secret) < MIN_SECRET_LENGTH:
        raise WebConfigError(f"BETTER_AUTH_SECRET is {'not set' if not secret else 'too short'}; "
                             f"expected a secret of at least {MIN_SECRET_LENGTH} characters")
    cors_origins, cors_credentials = _cors(environ)
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
        max_body_bytes=int(_number(environ, "MAX_BODY_BYTES", int, DEFAULT_MAX_BODY_BYTES, 1)),
        cors_origins=cors_origins,
        cors_allow_credentials=cors_credentials,
        auth_audience=_optional(environ, "AUTH_AUDIENCE"),
        auth_issuer=_optional(environ, "AUTH_ISSUER"),
        # A leeway of minutes would quietly extend every token's life; 5 minutes is the most.
        auth_leeway=_number(environ, "AUTH_LEEWAY_SECONDS", float, 30.0, 0, 300),
    )
