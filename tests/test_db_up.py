"""``up`` and the database, as real processes: wait, give up, fail fast, and the mode rules."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from supervisor.config.envrules import SCHEMA_DEFAULT, SQLITE_DEFAULT
from supervisor.config.settings import resolve_settings
from tests.dbsupport import webapp_project
from tests.pgserver import APP_PASSWORD, PgServer
from tests.support import base_env, free_port, http_json, run_cli, supervisor

UP = ["up", "--no-reload"]
DEV_SECRET = "development-only-secret-change-me-0123456789"


@pytest.mark.timeout(90)
def test_worker_starts_only_after_the_database_answers_with_growing_delays(
        tmp_path: Path, pg: PgServer) -> None:
    pg.stop()
    root = webapp_project(tmp_path, initial_delay=0.1, max_delay=2.0)
    with supervisor(UP, root, base_env(DATABASE_URL=pg.url(scheme="postgres"))) as run:
        run.wait_for_output(r"database: attempt 4: connection refused", timeout=30)
        assert run.worker_pids() == []
        pg.start()
        url = run.wait_url(timeout=30)
        out = run.output
    delays = [float(d) for d in re.findall(r"next try in ([\d.]+)s", out)]
    assert len(delays) >= 4 and delays[:4] == sorted(delays[:4]) and delays[3] > delays[0] * 3, out
    assert out.index("supervisor: starting -> waiting_for_database") < out.index("answers (")
    assert out.index("answers (") < out.index("web.0: started worker pid"), out
    assert "using postgresql+asyncpg://app:***@127.0.0.1" in out  # the one normalisation line
    assert APP_PASSWORD not in out
    assert url.startswith("http://127.0.0.1:")


@pytest.mark.timeout(60)
def test_database_that_never_comes_up_exits_3_within_the_deadline(tmp_path: Path) -> None:
    root = webapp_project(tmp_path, deadline=2.0, initial_delay=0.1, max_delay=0.5)
    started = time.monotonic()
    with supervisor(UP, root, base_env(DATABASE_URL=f"postgresql://app:{APP_PASSWORD}@127.0.0.1:"
                                                    f"{free_port()}/app")) as run:
        code = run.wait_exit(timeout=30)
        elapsed = time.monotonic() - started
        out = run.output
    assert code == 3, out
    # The deadline, plus interpreter start-up and the last connect attempt.
    assert elapsed < 2.0 + 4.0, (elapsed, out)
    gave_up = [line for line in out.splitlines() if "database unreachable at" in line]
    assert len(gave_up) == 1 and "connection refused after" in gave_up[0], out
    assert "web.0: started" not in out and APP_PASSWORD not in out


@pytest.mark.timeout(60)
def test_wrong_password_fails_fast_with_an_authentication_message(tmp_path: Path, pg: PgServer) -> None:
    root = webapp_project(tmp_path, deadline=60.0)
    wrong = "wrong-pw-4f9a-never-print"
    started = time.monotonic()
    with supervisor(UP, root, base_env(DATABASE_URL=pg.url(password=wrong))) as run:
        code = run.wait_exit(timeout=30)
        out = run.output
    assert code == 3, out
    assert time.monotonic() - started < 15, out  # not the 60 s deadline
    assert "database authentication failed at postgresql+asyncpg://app:***@" in out
    assert "not retried" in out and "attempt 2" not in out
    assert wrong not in out and APP_PASSWORD not in out


@pytest.mark.timeout(90)
def test_a_production_worker_is_told_the_mode(tmp_path: Path, pg: PgServer) -> None:
    # SUPERVISOR_MODE is set nowhere but on the command line; the webapp reports what it sees.
    root = webapp_project(tmp_path)
    env = base_env(DATABASE_URL=pg.url(), BETTER_AUTH_SECRET="p" * 40)
    with supervisor([*UP, "--mode", "production"], root, env) as run:
        url = run.wait_url(timeout=60)
        status, body = http_json(f"{url}/health")
        assert status == 200 and body["environment"] == "production", (body, run.output)


@pytest.mark.timeout(60)
def test_production_without_database_url_exits_2(tmp_path: Path) -> None:
    root = webapp_project(tmp_path)
    result = run_cli([*UP, "--mode", "production", "--project-dir", str(root)], tmp_path,
                     base_env(BETTER_AUTH_SECRET="p" * 40))
    assert result.returncode == 2, result.stderr
    assert "DATABASE_URL: is required in production mode" in result.stderr


@pytest.mark.timeout(60)
def test_production_refuses_the_development_default_secret(tmp_path: Path) -> None:
    root = webapp_project(tmp_path)
    result = run_cli([*UP, "--mode", "production", "--project-dir", str(root)], tmp_path,
                     base_env(DATABASE_URL="postgresql://app@127.0.0.1/app"))
    assert result.returncode == 2, result.stderr
    assert "BETTER_AUTH_SECRET: is the development default from supervisor.toml" in result.stderr
    assert DEV_SECRET not in result.stdout + result.stderr


@pytest.mark.timeout(60)
def test_sync_driver_url_is_a_config_error_with_a_hint(tmp_path: Path) -> None:
    root = webapp_project(tmp_path, declare_url=False)
    result = run_cli(["check", "--project-dir", str(root)], tmp_path,
                     base_env(DATABASE_URL=f"postgresql+psycopg2://app:{APP_PASSWORD}@db/app"))
    assert result.returncode == 2, result.stderr
    assert "synchronous driver 'psycopg2'" in result.stderr and "use postgresql://" in result.stderr
    assert APP_PASSWORD not in result.stdout + result.stderr


def test_development_without_database_url_gets_a_sqlite_file_in_the_runtime_dir(tmp_path: Path) -> None:
    settings = resolve_settings(webapp_project(tmp_path), {})
    assert settings.environ["DATABASE_URL"] == \
        f"sqlite+aiosqlite:///{tmp_path}/.supervisor/webapp.sqlite3"
    assert settings.env_sources["DATABASE_URL"] == SQLITE_DEFAULT
    # Schema defaults reach the workers too, so the webapp sees what `check` validated.
    assert settings.environ["BETTER_AUTH_SECRET"] == DEV_SECRET
    assert settings.env_sources["BETTER_AUTH_SECRET"] == SCHEMA_DEFAULT
    assert DEV_SECRET in settings.secrets


def test_a_project_that_declares_no_database_gets_none_in_either_mode(tmp_path: Path) -> None:
    root = webapp_project(tmp_path, declare_url=False)
    for mode in ("development", "production"):
        settings = resolve_settings(root, {"SUPERVISOR_MODE": mode, "BETTER_AUTH_SECRET": "p" * 40})
        assert "DATABASE_URL" not in settings.environ
