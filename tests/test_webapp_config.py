"""The webapp's own settings and what it shows of a database failure: pure tests, no server."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc

from supervisor.database.probe import classify
from webapp.config import WebConfigError, load_web_settings
from webapp.db import is_unavailable, settings_mask

SECRET = "web-auth-secret-0f3b9a7c-at-least-32-characters"
PW = "db-pass-4c7e-never-shown"


def test_the_supervisor_names_the_url_variable_and_the_runtime_dir(tmp_path: Path) -> None:
    url = f"postgresql://app:{PW}@db.internal/app"
    told = load_web_settings({"SUPERVISOR_DATABASE_URL_ENV": "APP_DB_URL", "APP_DB_URL": url,
                              "DATABASE_URL": "sqlite+aiosqlite:///ignored.sqlite3",
                              "BETTER_AUTH_SECRET": SECRET})
    assert told.database.url == f"postgresql+asyncpg://app:{PW}@db.internal/app"
    assert not told.database_defaulted
    dev = load_web_settings({"SUPERVISOR_RUNTIME_DIR": str(tmp_path / "run"),
                             "BETTER_AUTH_SECRET": SECRET}, cwd=tmp_path)
    assert dev.database_defaulted and dev.database.sqlite_path == tmp_path / "run" / "webapp.sqlite3"
    alone = load_web_settings({"BETTER_AUTH_SECRET": SECRET}, cwd=tmp_path)
    assert alone.database.sqlite_path == tmp_path / ".supervisor" / "webapp.sqlite3"
    with pytest.raises(WebConfigError, match="^APP_DB_URL is not set; production mode needs"):
        load_web_settings({"SUPERVISOR_MODE": "production", "SUPERVISOR_DATABASE_URL_ENV": "APP_DB_URL",
                           "BETTER_AUTH_SECRET": SECRET})


def test_bad_pool_numbers_name_the_variable_and_the_expected_form() -> None:
    with pytest.raises(WebConfigError, match=r"^DATABASE_POOL_SIZE='many' is not an integer$"):
        load_web_settings({"BETTER_AUTH_SECRET": SECRET, "DATABASE_POOL_SIZE": "many"})


def test_driver_text_reaches_health_and_logs_without_the_password_or_secret() -> None:
    settings = load_web_settings({"DATABASE_URL": f"postgresql://app:{PW}@db.internal/app",
                                  "BETTER_AUTH_SECRET": SECRET})
    mask = settings_mask(settings)
    error = sa_exc.OperationalError("SELECT 1", {}, OSError(f"bad url postgresql://app:{PW}@h/x "
                                                            f"and {SECRET} and {PW}"))
    assert is_unavailable(error)
    reason = str(classify(error, mask))
    assert PW not in reason and SECRET not in reason and "***" in reason, reason


def test_a_non_finite_pool_number_is_refused() -> None:
    """nan passes `value < lo`: a nan pool timeout would reach SQLAlchemy."""
    with pytest.raises(WebConfigError) as info:
        load_web_settings({"BETTER_AUTH_SECRET": "s" * 40, "DATABASE_POOL_TIMEOUT": "nan"}, Path("/tmp"))
    assert "DATABASE_POOL_TIMEOUT='nan' is not a finite number" in str(info.value)
