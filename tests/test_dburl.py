"""URL normalisation: every accepted form, every rewrite, every refusal, and never the password."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from supervisor.config.dburl import (
    POSTGRESQL,
    SQLITE,
    DatabaseURLError,
    connect_args,
    embedded_default_url,
    normalize_database_url,
)

PW = "s3cr3t-pass-word"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "POSTGRESQL"])
def test_libpq_schemes_become_asyncpg_and_say_so(scheme: str) -> None:
    db = normalize_database_url(f"{scheme}://app:{PW}@db.internal:5433/app")
    assert db.url == f"postgresql+asyncpg://app:{PW}@db.internal:5433/app"
    assert db.backend == POSTGRESQL
    line = db.describe_changes()
    assert line is not None and f"{scheme.lower()}:// -> postgresql+asyncpg://" in line
    assert PW not in line and "app:***@db.internal" in line


def test_asyncpg_url_is_used_as_given_without_a_note() -> None:
    db = normalize_database_url(f"postgresql+asyncpg://app:{PW}@127.0.0.1/app")
    assert db.url == f"postgresql+asyncpg://app:{PW}@127.0.0.1/app"
    assert db.describe_changes() is None and dict(db.connect_args) == {}


@pytest.mark.parametrize("driver", ["psycopg2", "psycopg", "pg8000"])
def test_sync_driver_is_an_error_with_a_hint_and_no_password(driver: str) -> None:
    with pytest.raises(DatabaseURLError) as info:
        normalize_database_url(f"postgresql+{driver}://app:{PW}@db/app")
    message = str(info.value)
    assert f"synchronous driver '{driver}'" in message and "use postgresql://" in message
    assert PW not in message and "app:***@db" in message


def test_neon_style_sslmode_and_channel_binding_are_translated() -> None:
    db = normalize_database_url(f"postgresql://app:{PW}@ep-x.neon.tech/neondb?sslmode=require"
                                "&channel_binding=require")
    assert db.url == f"postgresql+asyncpg://app:{PW}@ep-x.neon.tech/neondb"
    assert dict(db.connect_args) == {"ssl": "require"}
    line = db.describe_changes() or ""
    assert "sslmode=require -> ssl='require'" in line and "dropped channel_binding=require" in line


def test_connect_timeout_application_name_and_options_become_asyncpg_arguments() -> None:
    db = normalize_database_url("postgresql://app@h/app?connect_timeout=7&application_name=web"
                                "&options=-c%20statement_timeout%3D5000%20-c%20search_path%3Dapp"
                                "&target_session_attrs=read-write&port=6543")
    assert dict(db.connect_args) == {
        "timeout": 7.0, "target_session_attrs": "read-write", "port": 6543,
        "server_settings": {"application_name": "web", "statement_timeout": "5000",
                            "search_path": "app"}}


@pytest.mark.parametrize("query, fragment", [
    ("sslmode=sometimes", "is not an sslmode; expected one of disable"),
    ("connect_timeout=soon", "is not a number"),
    ("frobnicate=1", "query parameter frobnicate is not understood by asyncpg; expected one of"),
    ("options=statement_timeout", "expected -c name=value settings"),
])
def test_bad_query_parameters_are_named_without_the_password(query: str, fragment: str) -> None:
    with pytest.raises(DatabaseURLError) as info:
        normalize_database_url(f"postgresql://app:{PW}@h/app?{query}")
    assert fragment in str(info.value) and PW not in str(info.value)


@pytest.mark.parametrize("url, fragment", [
    (f"postgresql://app:{PW}@h:port/app", "is not a valid URL"),
    (f"mysql://app:{PW}@h/app", "has scheme 'mysql'; expected postgresql://"),
    ("postgresql://", "names no host or database"),
    ("sqlite+pysqlite:///x.db", "synchronous SQLite driver"),
])
def test_malformed_or_foreign_urls_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(DatabaseURLError) as info:
        normalize_database_url(url)
    assert fragment in str(info.value) and PW not in str(info.value)


def test_sqlite_urls_use_aiosqlite_and_know_their_file(tmp_path: Path) -> None:
    plain = normalize_database_url("sqlite:///relative/notes.db")
    assert plain.url == "sqlite+aiosqlite:///relative/notes.db" and plain.backend == SQLITE
    assert plain.sqlite_path == Path("relative/notes.db") and plain.describe_changes()
    default = normalize_database_url(embedded_default_url(tmp_path / ".supervisor"))
    assert default.url == f"sqlite+aiosqlite:///{tmp_path}/.supervisor/webapp.sqlite3"
    assert default.sqlite_path == tmp_path / ".supervisor" / "webapp.sqlite3"
    assert default.describe_changes() is None and connect_args(default) == {}


def test_connect_args_merge_timeouts_and_server_settings_url_first() -> None:
    db = normalize_database_url("postgresql://h/app?options=-c%20statement_timeout%3D100&sslmode=disable")
    args = connect_args(db, 3.0, {"statement_timeout": "15000", "lock_timeout": "1000"})
    assert args == {"ssl": "disable", "timeout": 3.0,
                    "server_settings": {"statement_timeout": "100", "lock_timeout": "1000"}}
    assert db.target == "h/app"


@pytest.mark.parametrize("key", ["password", "sslpassword", "PASSWORD"])
def test_a_password_in_the_query_string_is_refused_without_showing_it(key: str) -> None:
    with pytest.raises(DatabaseURLError) as info:
        normalize_database_url(f"postgresql://app@127.0.0.1/app?sslmode=require&{key}={PW}")
    message = str(info.value)
    assert PW not in message and f"{key}=***" in message, message
    assert f"query parameter {key} (value not shown)" in message
    assert "postgresql://user:password@host:5432/dbname" in message


def test_values_of_unknown_query_parameters_are_never_echoed() -> None:
    with pytest.raises(DatabaseURLError) as info:
        normalize_database_url(f"postgresql://app@h/app?api_secret_thing={PW}")
    assert PW not in str(info.value) and "query parameter api_secret_thing is not understood" in str(info.value)


SPECIAL = "Qz7#xK/yV?zW@wJ"


@pytest.mark.parametrize("password", ["Qz7#xK", "1234#rsTq", "aQ9/bZ", "aQ9?bZ", "pQ@sZ9", SPECIAL])
def test_special_characters_in_a_password_are_refused_and_never_shown(password: str) -> None:
    """urlsplit ends the authority at the first '#', '/' or '?': the password became a host,
    a port, a path or a fragment, and was printed (or passed, and shown on /status)."""
    with pytest.raises(DatabaseURLError) as info:
        normalize_database_url(f"postgresql://app:{password}@db.internal:5432/app")
    message = str(info.value)
    assert "postgresql://app:***@db.internal:5432/app" in message
    assert "percent-encode special characters in the password" in message
    assert password not in message
    assert all(piece not in message for piece in re.split(r"[#/?@]", password)), message


def test_a_percent_encoded_password_is_accepted_and_masked() -> None:
    from urllib.parse import quote
    db = normalize_database_url(f"postgresql://app:{quote(SPECIAL, safe='')}@db/app")
    assert db.masked == "postgresql+asyncpg://app:***@db/app"
    assert db.target == "db/app"


def test_an_at_sign_in_a_query_value_without_a_password_is_fine() -> None:
    db = normalize_database_url("postgresql://app@db/app?application_name=a@b")
    assert db.target == "db/app"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_timeouts_in_the_query_are_refused(value: str) -> None:
    with pytest.raises(DatabaseURLError) as info:
        normalize_database_url(f"postgresql://app@db/app?connect_timeout={value}")
    assert "is not a finite number" in str(info.value)
