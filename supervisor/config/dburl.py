"""``DATABASE_URL`` as SQLAlchemy's async engine needs it.

People paste URLs from many places: ``postgres://`` from Heroku, ``postgresql://`` from libpq docs,
``?sslmode=require&channel_binding=require`` from Neon. asyncpg takes none of the libpq query
parameters as keyword arguments, so a URL that works with ``psql`` would fail at the first
connection. :func:`normalize_database_url` turns such a URL into the asyncpg (or aiosqlite) form
plus the keyword arguments asyncpg does take, and says what it changed in one line.

Pure: no I/O and no SQLAlchemy import, so ``check`` stays fast. Every message shows the URL with
its password masked; :func:`connect_args` is the thin shell that builds an ``ssl.SSLContext``.

>>> db = normalize_database_url("postgres://app:pw@db.example/app?sslmode=require")
>>> db.url, dict(db.connect_args)
('postgresql+asyncpg://app:pw@db.example/app', {'ssl': 'require'})
"""

from __future__ import annotations

import shlex
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from supervisor.config.envschema import FALSE_WORDS, TRUE_WORDS, parse_number
from supervisor.secrets import MASK, QUERY_SECRETS, mask_url_value, split_userinfo

POSTGRESQL = "postgresql"
SQLITE = "sqlite"
ASYNCPG_SCHEME = "postgresql+asyncpg"
AIOSQLITE_SCHEME = "sqlite+aiosqlite"
EMBEDDED_FILE = "webapp.sqlite3"

_PG_SCHEMES = {"postgres", "postgresql", ASYNCPG_SCHEME}
_SQLITE_SCHEMES = {"sqlite", AIOSQLITE_SCHEME}
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# libpq parameters asyncpg cannot honour and that are safe to leave out (a note says so).
_DROPPED = {
    "channel_binding": "asyncpg does not support channel binding; TLS still applies",
    "gssencmode": "asyncpg does not use GSSAPI encryption",
    "fallback_application_name": "ignored",
    "keepalives": "ignored", "keepalives_idle": "ignored", "keepalives_interval": "ignored",
    "keepalives_count": "ignored",
}
_INTEGERS = {"port", "statement_cache_size", "prepared_statement_cache_size",
             "max_cacheable_statement_size"}
_FLOATS = {"timeout", "command_timeout"}
_STRINGS = {"host", "target_session_attrs"}
_TLS_FILES = {"sslrootcert", "sslcert", "sslkey"}
_ENCODE_HINT = ("percent-encode special characters in the password ('#' as %23, '/' as %2F, '?' as %3F, "
                "'@' as %40, ':' as %3A) and an '@' in a query value as %40")
_UNDERSTOOD = sorted({"sslmode", "ssl", "connect_timeout", "application_name", "options",
                      *_TLS_FILES, *_DROPPED, *_INTEGERS, *_FLOATS, *_STRINGS})


class DatabaseURLError(ValueError):
    """The URL cannot be used; the message names the problem and never contains the password."""


@dataclass(frozen=True)
class TLS:
    """TLS as libpq describes it; asyncpg takes it as a mode name or an ``ssl.SSLContext``."""

    mode: str
    rootcert: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class DatabaseURL:
    """A normalised database URL and what asyncpg needs besides it."""

    url: str  # what SQLAlchemy's create_async_engine gets; may hold the password
    backend: str  # POSTGRESQL or SQLITE
    masked: str  # the URL for messages: password replaced by ***
    connect_args: Mapping[str, Any] = field(default_factory=dict)
    tls: TLS | None = None
    changes: tuple[str, ...] = ()  # what was rewritten, in words, for one log line

    @property
    def target(self) -> str:
        """Where it connects, for messages: ``host:port/db`` or the SQLite file."""
        parts = urlsplit(self.url)
        if self.backend == SQLITE:
            return parts.path[1:] or ":memory:"
        host = parts.hostname or "local socket"
        port = f":{parts.port}" if parts.port else ""
        return f"{host}{port}{parts.path}"

    @property
    def sqlite_path(self) -> Path | None:
        if self.backend != SQLITE:
            return None
        path = urlsplit(self.url).path[1:]
        return Path(path) if path and path != ":memory:" else None

    def describe_changes(self) -> str | None:
        """One line saying what was rewritten, or None when the URL was used as given."""
        if not self.changes:
            return None
        return f"using {self.masked} ({'; '.join(self.changes)})"


def embedded_default_url(directory: Path) -> str:
    """The development default: a SQLite file in ``directory`` (the runtime dir, ignored by git)."""
    return f"{AIOSQLITE_SCHEME}:///{(directory / EMBEDDED_FILE).as_posix()}"


def normalize_database_url(raw: str) -> DatabaseURL:
    """Return the async-driver form of ``raw``; raise :class:`DatabaseURLError` if it cannot work."""
    raw = raw.strip()
    masked = _mask(raw)
    if raw.partition(":")[0].lower() in _PG_SCHEMES:
        _check_userinfo(raw, masked)
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    except ValueError as exc:
        # Never urlsplit's message: it quotes the netloc, and with it any password it misread.
        what = "its port is not a number from 0 to 65535" if "port" in str(exc).lower() else \
            "its host cannot be read"
        raise DatabaseURLError(f"{masked} is not a valid URL ({what}); expected "
                               f"postgresql://user:password@host:5432/dbname; {_ENCODE_HINT}") from None
    scheme = parts.scheme.lower()
    if scheme in _PG_SCHEMES:
        return _postgresql(parts, scheme, masked)
    if scheme in _SQLITE_SCHEMES:
        return _sqlite(parts, scheme, masked)
    if scheme.startswith(("postgres+", "postgresql+")):
        raise DatabaseURLError(
            f"{masked} uses the synchronous driver {scheme.split('+', 1)[1]!r}, but the app runs on "
            f"asyncio; use postgresql:// (or {ASYNCPG_SCHEME}://) and the asyncpg driver is chosen")
    if scheme.startswith("sqlite+"):
        raise DatabaseURLError(f"{masked} uses a synchronous SQLite driver; use {AIOSQLITE_SCHEME}:///"
                               "path/to/file.sqlite3")
    expected = "postgresql://, postgres://, postgresql+asyncpg:// or sqlite+aiosqlite:///"
    raise DatabaseURLError(f"{masked} has scheme {scheme or '(none)'!r}; expected {expected}")


def _check_userinfo(raw: str, masked: str) -> None:
    """Refuse a password that urlsplit and SQLAlchemy would read differently from libpq.

    ``postgresql://app:Pw#x@db/app`` ends the authority at ``#``: the host would be ``app`` and
    the password part of a fragment that is shown as a target. Everything between ``user:`` and
    the last ``@`` is taken as the password, and it must not hold ``@ / ? #`` unencoded.
    """
    span = split_userinfo(raw)
    if span is not None and any(c in raw[span[0]:span[1]] for c in "@/?#"):
        raise DatabaseURLError(f"{masked} cannot be read unambiguously: the text between 'user:' and the "
                               f"last '@' holds '@', '/', '?' or '#'; {_ENCODE_HINT}")


def _mask(raw: str) -> str:
    """The URL for messages: no password, and no value of a query parameter we do not know
    (``?api_key=...`` may be a secret too)."""
    masked = mask_url_value(raw)
    base, sep, query = masked.partition("?")
    if not sep:
        return masked
    query, hash_sep, fragment = query.partition("#")
    pairs = [(k, sep_, v if k in _UNDERSTOOD or not v else MASK)
             for k, sep_, v in (pair.partition("=") for pair in query.split("&"))]
    return f"{base}?{'&'.join(k + s + v for k, s, v in pairs)}{hash_sep}{fragment}"


def _postgresql(parts: Any, scheme: str, masked: str) -> DatabaseURL:
    if not parts.netloc and not parts.path:
        raise DatabaseURLError(f"{masked} names no host or database; expected "
                               "postgresql://user:password@host:5432/dbname")
    changes = [] if scheme == ASYNCPG_SCHEME else [f"{scheme}:// -> {ASYNCPG_SCHEME}://"]
    args, tls = _translate_query(parse_qsl(parts.query, keep_blank_values=True), masked, changes)
    url = f"{ASYNCPG_SCHEME}://{parts.netloc}{parts.path}"
    return DatabaseURL(url=url, backend=POSTGRESQL, masked=mask_url_value(url), connect_args=args, tls=tls,
                       changes=tuple(changes))


def _sqlite(parts: Any, scheme: str, masked: str) -> DatabaseURL:
    if parts.query:
        raise DatabaseURLError(f"{masked}: query parameters are not supported for SQLite")
    changes = [] if scheme == AIOSQLITE_SCHEME else [f"{scheme}:// -> {AIOSQLITE_SCHEME}://"]
    url = f"{AIOSQLITE_SCHEME}://{parts.netloc}{parts.path}"
    return DatabaseURL(url=url, backend=SQLITE, masked=mask_url_value(url), changes=tuple(changes))


def _translate_query(pairs: list[tuple[str, str]], masked: str,
                     changes: list[str]) -> tuple[dict[str, Any], TLS | None]:
    """libpq query parameters -> asyncpg keyword arguments, recording each rewrite in ``changes``."""
    args: dict[str, Any] = {}
    settings: dict[str, str] = {}
    tls_mode: str | None = None
    files: dict[str, str] = {}
    # Before any other parameter is named: an unencoded '&' in the password makes its tail a "key".
    secret = next((key for key, _ in pairs if key.lower() in QUERY_SECRETS), None)
    if secret is not None:
        raise DatabaseURLError(f"{masked}: query parameter {secret} (value not shown) is not understood by "
                               "asyncpg; expected the password in the URL itself: "
                               "postgresql://user:password@host:5432/dbname")
    for key, value in pairs:
        where = f"{masked}: query parameter {key}={value!r}"
        if key not in _UNDERSTOOD:
            # Never echo a value we do not know the meaning of: it may be a password.
            where = f"{masked}: query parameter {key}"
        if key == "sslmode":
            if value not in _SSL_MODES:
                raise DatabaseURLError(f"{where} is not an sslmode; expected one of {', '.join(_SSL_MODES)}")
            tls_mode = value
            changes.append(f"sslmode={value} -> ssl={value!r}")
        elif key == "ssl":
            low = value.lower()
            tls_mode = "require" if low in TRUE_WORDS else "disable" if low in FALSE_WORDS else low
            if tls_mode not in _SSL_MODES:
                raise DatabaseURLError(f"{where} is not understood; expected true, false or an sslmode")
        elif key in _TLS_FILES:
            files[key] = value
        elif key == "connect_timeout":
            args["timeout"] = _number(float, value, where)
            changes.append(f"connect_timeout={value} -> timeout={args['timeout']:g}")
        elif key == "application_name":
            settings["application_name"] = value
            changes.append("application_name -> server_settings")
        elif key == "options":
            settings.update(_options(value, where))
            changes.append("options -> server_settings")
        elif key in _DROPPED:
            changes.append(f"dropped {key}={value} ({_DROPPED[key]})")
        elif key in _INTEGERS:
            args[key] = _number(int, value, where)
        elif key in _FLOATS:
            args[key] = _number(float, value, where)
        elif key in _STRINGS:
            args[key] = value
        else:
            raise DatabaseURLError(f"{where} is not understood by asyncpg; expected one of "
                                   f"{', '.join(_UNDERSTOOD)}")
    if settings:
        args["server_settings"] = settings
    if files and tls_mode is None:
        tls_mode = "verify-full" if "sslrootcert" in files else "require"
    tls = None
    if tls_mode is not None:
        tls = TLS(tls_mode, files.get("sslrootcert"), files.get("sslcert"), files.get("sslkey"))
        args["ssl"] = tls_mode
    return args, tls


def _number(kind: type[int] | type[float], value: str, where: str) -> Any:
    try:
        return parse_number(kind, value)
    except ValueError as exc:
        raise DatabaseURLError(f"{where} {exc}") from None


def _options(value: str, where: str) -> dict[str, str]:
    """``-c statement_timeout=5000 --search_path=app`` -> server settings."""
    found: dict[str, str] = {}
    words = iter(shlex.split(value))
    for word in words:
        if word == "-c":
            word = next(words, "")
        elif word.startswith("-c"):
            word = word[2:]
        elif word.startswith("--"):
            word = word[2:]
        else:
            raise DatabaseURLError(f"{where}: expected -c name=value settings")
        name, sep, setting = word.partition("=")
        if not sep or not name:
            raise DatabaseURLError(f"{where}: expected -c name=value settings")
        found[name.replace("-", "_")] = setting
    return found


def connect_args(db: DatabaseURL, connect_timeout: float | None = None,
                 server_settings: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for the driver's ``connect``; reads certificate files when the URL names them.

    ``server_settings`` (``statement_timeout`` ...) are merged under the URL's own ``options``.
    """
    if db.backend != POSTGRESQL:
        return {}
    args = dict(db.connect_args)
    if connect_timeout is not None:
        args.setdefault("timeout", connect_timeout)
    if server_settings:
        args["server_settings"] = {**server_settings, **args.get("server_settings", {})}
    if db.tls is not None and (db.tls.rootcert or db.tls.cert):
        args["ssl"] = _ssl_context(db.tls)
    return args


def _ssl_context(tls: TLS) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.rootcert)
    if tls.mode != "verify-full":
        context.check_hostname = False
    if tls.mode not in ("verify-ca", "verify-full"):
        context.verify_mode = ssl.CERT_NONE
    if tls.cert:
        context.load_cert_chain(tls.cert, tls.key)
    return context
