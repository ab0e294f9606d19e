"""The Alembic migrations on SQLite and PostgreSQL (from empty, from the previous revision, over a
database the old create-tables code made, two migrators at once), and ``[database] migrate``:
run by ``up`` before the first worker, and what ``up`` does when it fails, hangs or is stopped."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from supervisor.config.dburl import normalize_database_url
from supervisor.config.toml import parse_config
from supervisor.database.migrate import failure_message, resolve_argv
from supervisor.errors import ConfigError
from tests.dbsupport import SECRET, alembic, client, webapp_project
from tests.pgserver import APP_PASSWORD, PgServer
from tests.support import REPO, base_env, gone, supervisor
from webapp.models import Base
from webapp.schema import load_revisions

HEAD = "0002"
UP = ["up", "--no-reload"]


@pytest.fixture(params=["postgresql", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database's URL, as a user would write it."""
    if request.param == "postgresql":
        pg: PgServer = request.getfixturevalue("pg")
        yield pg.url(database=pg.create_database("webapp_migrations"))
    else:
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.sqlite3'}"


def inspect_db(url: str, look: Any) -> Any:
    """``look(sync_connection)`` on the database, through the webapp's own async driver."""
    async def go() -> Any:
        engine = create_async_engine(normalize_database_url(url).url, poolclass=NullPool)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(look)
        finally:
            await engine.dispose()
    return asyncio.run(go())


def revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def differences(conn: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def indexes(conn: Connection) -> set[str]:
    return {str(ix["name"]) for ix in inspect(conn).get_indexes("notes")}


def columns(conn: Connection) -> list[str]:
    return [c["name"] for c in inspect(conn).get_columns("notes")]


@pytest.mark.timeout(90)
def test_upgrade_from_empty_reaches_the_head_the_models_describe(database: str) -> None:
    assert load_revisions().head == HEAD
    alembic("upgrade", "head", url=database)
    assert inspect_db(database, revision) == HEAD
    assert inspect_db(database, differences) == []  # the models are the head revision, exactly
    assert "ix_notes_owner_created_at_id" in inspect_db(database, indexes)


@pytest.mark.timeout(90)
def test_upgrade_from_the_previous_revision_keeps_the_rows(database: str) -> None:
    alembic("upgrade", "0001", url=database)
    assert "pinned" not in inspect_db(database, columns)
    inspect_db(database, lambda c: c.execute(text(
        "INSERT INTO notes (owner, title, body, created_at) VALUES ('old', 'kept', '', CURRENT_TIMESTAMP)")))
    result = alembic("upgrade", "head", url=database)
    assert re.search(r"Running upgrade 0001 -> 0002", result.stderr), result.stderr
    rows = inspect_db(database, lambda c: c.execute(text("SELECT owner, title, pinned FROM notes")).all())
    assert [tuple(r) for r in rows] == [("old", "kept", False)]
    assert inspect_db(database, indexes) == {"ix_notes_owner_created_at_id"}
    # And back: the downgrade restores the previous shape without losing the row.
    alembic("downgrade", "0001", url=database)
    assert inspect_db(database, indexes) == {"ix_notes_owner", "ix_notes_created_at"}
    assert "pinned" not in inspect_db(database, columns)
    assert inspect_db(database, lambda c: c.execute(text("SELECT count(*) FROM notes")).scalar()) == 1


def old_create_all(conn: Connection) -> None:
    """The tables as the webapp made them before migrations (create_all of its old model)."""
    old = MetaData()
    Table("notes", old, Column("id", Integer, primary_key=True, autoincrement=True),
          Column("owner", String(255), nullable=False, index=True), Column("title", String(200), nullable=False),
          Column("body", Text, nullable=False), Column("created_at", DateTime(timezone=True), nullable=False,
                                                        index=True))
    old.create_all(conn)
    conn.execute(text("INSERT INTO notes (owner, title, body, created_at) VALUES ('o', 't', '', CURRENT_TIMESTAMP)"))


@pytest.mark.timeout(90)
def test_a_database_made_before_migrations_is_adopted(database: str) -> None:
    inspect_db(database, old_create_all)
    alembic("upgrade", "head", url=database)
    assert inspect_db(database, revision) == HEAD and inspect_db(database, differences) == []
    assert inspect_db(database, lambda c: c.execute(text("SELECT count(*) FROM notes")).scalar()) == 1


@pytest.mark.timeout(90)
def test_two_migrators_at_once_on_postgresql_both_succeed(pg: PgServer) -> None:
    url = pg.url(database=pg.create_database("webapp_race"))
    procs = [subprocess.Popen([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO,
                              env=base_env(DATABASE_URL=url), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    # One ran the upgrades; the other waited on the advisory lock and found nothing to do.
    assert sum("Running upgrade  -> 0001" in out for out in outputs) == 1, outputs
    assert inspect_db(url, revision) == HEAD


# ----- [database] migrate in `up` -------------------------------------------------------------

@pytest.mark.timeout(90)
def test_up_migrates_once_before_the_first_worker(tmp_path: Path) -> None:
    root = webapp_project(tmp_path)
    with supervisor(UP, root, base_env(BETTER_AUTH_SECRET=SECRET)) as run, client(run.wait_url(60)) as http:
        health = http.get("/health").json()
        assert health["database"]["schema"] == {"status": "current", "revision": HEAD, "expected": HEAD}
        out = run.output
    done = out.index("migrate: done in")
    assert out.index("database: ") < out.index("migrate: running") < done < out.index("started worker")
    assert out.count("migrate: running") == 1
    assert "Running upgrade 0001 -> 0002" in out  # alembic's own lines, relayed


@pytest.mark.timeout(90)
def test_a_failing_migration_ends_up_with_exit_3_and_its_last_stderr_lines_redacted(
        tmp_path: Path, pg: PgServer) -> None:
    url = pg.url(database=pg.create_database("webapp_failing"))
    script = ("import os, sys\n"
              "for i in range(40): print(f'line {i}', file=sys.stderr)\n"
              "print('cannot migrate', os.environ['DATABASE_URL'], os.environ['BETTER_AUTH_SECRET'], file=sys.stderr)\n"
              "sys.exit(4)\n")
    root = webapp_project(tmp_path, migrate=[sys.executable, "-c", script])
    with supervisor(UP, root, base_env(BETTER_AUTH_SECRET=SECRET, DATABASE_URL=url)) as run:
        code = run.wait_exit(60)
        out = run.output
    assert code == 3, out
    assert "[database] migrate failed:" in out and "exited with code 4" in out
    tail = out[out.index("last lines on stderr:"):]
    assert "line 39" in tail and "line 10" not in tail  # the last lines, not all of them
    assert "cannot migrate postgresql://app:***@127.0.0.1" in tail and "***" in tail
    assert APP_PASSWORD not in out and SECRET not in out
    assert "started worker" not in out


@pytest.mark.timeout(60)
def test_a_missing_migrate_program_is_a_configuration_error(tmp_path: Path) -> None:
    root = webapp_project(tmp_path, migrate=["no-such-migrate-tool-4b1d", "up"])
    with supervisor(UP, root, base_env(BETTER_AUTH_SECRET=SECRET)) as run:
        code = run.wait_exit(60)
        out = run.output
    assert code == 2, out
    assert "supervisor.toml [database] migrate: program 'no-such-migrate-tool-4b1d' not found" in out
    assert "Traceback" not in out


def child_pid(out: str) -> int:
    match = re.search(r"migrate: child (\d+)", out)
    assert match, out
    return int(match.group(1))


HANGS = [sys.executable, "-c", "import os, time; print('child', os.getpid(), flush=True); time.sleep(120)"]


@pytest.mark.timeout(60)
def test_a_migration_past_its_timeout_is_stopped_and_up_exits_3(tmp_path: Path) -> None:
    root = webapp_project(tmp_path, migrate=HANGS, migrate_timeout=1.5)
    started = time.monotonic()
    with supervisor(UP, root, base_env(BETTER_AUTH_SECRET=SECRET)) as run:
        code = run.wait_exit(30)
        out = run.output
    assert code == 3, out
    assert "did not finish within 1.5s ([database] migrate_timeout); stopped it" in out
    assert time.monotonic() - started < 20
    assert gone(child_pid(out)), out


@pytest.mark.timeout(60)
def test_sigterm_during_a_migration_stops_it_and_up_exits_0(tmp_path: Path) -> None:
    root = webapp_project(tmp_path, migrate=HANGS)
    with supervisor(UP, root, base_env(BETTER_AUTH_SECRET=SECRET)) as run:
        run.wait_for_output(r"migrate: child \d+", timeout=30)
        pid = child_pid(run.output)
        code = run.stop(signal.SIGTERM, timeout=20)
        out = run.output
    assert code == 0, out
    assert gone(pid), out
    assert "started worker" not in out


# ----- the configuration key and the pure helpers -------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ('"python -m alembic upgrade head"', ["python", "-m", "alembic", "upgrade", "head"]),
    ("""'alembic -x "tag=a b" upgrade head'""", ["alembic", "-x", "tag=a b", "upgrade", "head"]),
    ('["alembic", "upgrade", "head"]', ["alembic", "upgrade", "head"]),
    ('""', []),
])
def test_migrate_takes_a_command_line_or_an_argv_list(value: str, expected: list[str]) -> None:
    assert parse_config(f"[database]\nmigrate = {value}\n").database.migrate == expected


def test_migrate_is_empty_by_default() -> None:
    assert parse_config("").database.migrate == [] and parse_config("").database.migrate_timeout == 300


@pytest.mark.parametrize("value, message", [
    ('"alembic \'upgrade"', "is not a valid command line (No closing quotation); expected a command line"),
    ("5", "5 is not a command; expected a command line such as"),
    ('["alembic", 3]', "is not a command; expected"),
    ('["", "upgrade"]', "starts with an empty program name"),
])
def test_bad_migrate_values_name_the_line_and_the_expected_form(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"[database]\nwait = true\nmigrate = {value}\n", "supervisor.toml")
    assert str(info.value).startswith("supervisor.toml:3 [database] migrate: ")
    assert message in str(info.value)


def test_python_means_the_supervisors_interpreter() -> None:
    assert resolve_argv(["python", "-m", "alembic"], python="/venv/bin/python") == ["/venv/bin/python", "-m", "alembic"]
    assert resolve_argv(["python3", "x.py"], python="/p") == ["/p", "x.py"]
    assert resolve_argv(["alembic", "upgrade", "head"], python="/p") == ["alembic", "upgrade", "head"]


def test_the_failure_message_shows_the_tail_or_says_there_was_none() -> None:
    assert failure_message("m up", "exited with code 1", ["a", "b"]) == (
        "[database] migrate failed: m up exited with code 1\nlast lines on stderr:\n  a\n  b")
    assert failure_message("m", "exited with code 1", []).endswith("(nothing on stderr)")
