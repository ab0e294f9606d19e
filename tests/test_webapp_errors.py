"""Database errors classified honestly, over real HTTP on PostgreSQL and SQLite: only a database
that cannot be reached is "unavailable" (503 with Retry-After, tested in test_webapp_outage.py);
a missing table, a constraint violation and a locked SQLite file are 500 or 409 at once, with the
traceback in the log, and the worker keeps serving."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.dbsupport import Served, alembic, auth, metric, notes_locked, serve_webapp
from tests.pgserver import APP_PASSWORD, PgServer
from webapp.dberrors import CONSTRAINT, LOCKED, OTHER, POOL_EXHAUSTED, SCHEMA, UNAVAILABLE, classify_db_error

BACKENDS = ["postgresql", "sqlite"]


def errors_of(http: httpx.Client, kind: str) -> float:
    return metric(http.get("/metrics").text, "webapp_db_errors_total", kind=kind)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_table_is_500_not_503_and_migrating_fixes_it_without_a_restart(
        request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    with serve_webapp(request, tmp_path, backend, migrate=False, database="webapp_no_schema") as served, \
            served.client() as http:
        # The app starts without its tables and says so on /health.
        health = http.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "degraded" and body["database"]["status"] == "ok"
        assert body["database"]["schema"] == {"status": "missing", "revision": None, "expected": "0002"}

        user = auth("schema-user")
        for method, path in (("POST", "/notes"), ("GET", "/notes"), ("GET", "/notes/1")):
            response = http.request(method, path, headers=user, json={"title": "t"})
            assert response.status_code == 500, (method, path, response.text)
            assert response.json() == {"error": "internal server error"}
            assert "retry-after" not in response.headers
        assert errors_of(http, SCHEMA) == 3 and errors_of(http, UNAVAILABLE) == 0
        served.run.wait_for_output(r"database error \(schema\) in POST /notes")
        served.run.wait_for_output(r"Traceback[\s\S]*(no such table|relation \"notes\" does not exist)")
        assert "database unavailable" not in served.run.output

        # Migrated from outside while it runs: the same worker serves notes at once.
        pids = served.run.worker_pids()
        alembic("upgrade", "head", url=served.database_url)
        assert http.get("/health").json()["database"]["schema"]["status"] == "current"
        assert http.post("/notes", json={"title": "now"}, headers=user).status_code == 201
        assert served.run.worker_pids() == pids
        assert APP_PASSWORD not in served.run.output


def forbid_title(served: Served, pg: PgServer | None, title: str) -> None:
    """A constraint the app does not know about, added behind its back."""
    if served.backend == "postgresql":
        assert pg is not None
        database = served.database_url.rsplit("/", 1)[1]
        pg.sql(f"ALTER TABLE notes ADD CONSTRAINT no_{title} CHECK (title <> '{title}')", database=database)
    else:
        with sqlite3.connect(served.database_url.split("///", 1)[1]) as db:
            db.execute(f"CREATE TRIGGER no_{title} BEFORE INSERT ON notes WHEN NEW.title = '{title}' "
                       "BEGIN SELECT RAISE(ABORT, 'forbidden title'); END")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_constraint_violation_is_409_with_the_traceback_logged(request: pytest.FixtureRequest,
                                                                tmp_path: Path, backend: str) -> None:
    pg = request.getfixturevalue("pg") if backend == "postgresql" else None
    with serve_webapp(request, tmp_path, backend, database="webapp_conflict") as served, served.client() as http:
        forbid_title(served, pg, "forbidden")
        user = auth("conflict-user")
        response = http.post("/notes", json={"title": "forbidden"}, headers=user)
        assert response.status_code == 409, response.text
        assert response.json() == {"error": "conflict", "reason": "the change breaks a database constraint"}
        assert "forbidden title" not in response.text and "no_forbidden" not in response.text
        served.run.wait_for_output(r"database error \(constraint\) in POST /notes")
        served.run.wait_for_output(r"Traceback[\s\S]*IntegrityError")
        assert errors_of(http, CONSTRAINT) == 1
        assert http.post("/notes", json={"title": "allowed"}, headers=user).status_code == 201


@pytest.mark.timeout(120)
def test_a_locked_sqlite_file_past_its_timeout_is_500_not_503(request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    with serve_webapp(request, tmp_path, "sqlite", DATABASE_CONNECT_TIMEOUT="0.5") as served, \
            served.client() as http:
        user = auth("locked-user")
        with notes_locked(served, None):
            response = http.post("/notes", json={"title": "waits for the lock"}, headers=user)
            assert response.status_code == 500, response.text
            assert "retry-after" not in response.headers
        served.run.wait_for_output(r"database error \(locked\) in POST /notes")
        served.run.wait_for_output(r"Traceback[\s\S]*database is locked")
        assert errors_of(http, LOCKED) == 1 and errors_of(http, UNAVAILABLE) == 0
        assert http.get("/health").status_code == 200  # not an outage
        assert http.post("/notes", json={"title": "after the lock"}, headers=user).status_code == 201


# ----- the classification itself, on real driver exceptions ----------------------------------

def test_classification_of_sqlite_errors() -> None:
    from sqlalchemy import exc as sa_exc

    def wrapped(error: Exception) -> BaseException:
        return sa_exc.DBAPIError.instance("SELECT 1", {}, error, sqlite3.Error)

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x INTEGER NOT NULL)")
    for statement, kind in (("SELECT * FROM missing", SCHEMA), ("SELECT nope FROM t", SCHEMA),
                            ("INSERT INTO t VALUES (NULL)", CONSTRAINT), ("SELEC 1", OTHER)):
        with pytest.raises(sqlite3.Error) as info:
            db.execute(statement)
        assert classify_db_error(wrapped(info.value)) == kind, statement
    assert classify_db_error(wrapped(sqlite3.OperationalError("database is locked"))) == LOCKED
    assert classify_db_error(wrapped(sqlite3.OperationalError("unable to open database file"))) == UNAVAILABLE
    assert classify_db_error(sa_exc.TimeoutError("QueuePool limit of size 1 overflow 0 reached")) == POOL_EXHAUSTED
    assert classify_db_error(ConnectionRefusedError(111, "refused")) == UNAVAILABLE

