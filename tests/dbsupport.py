"""Helpers for the database and webapp tests: a project serving the real webapp, tokens, HTTP."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.pgserver import PgServer
from tests.support import REPO, Running, base_env, free_port, make_project, scaled, supervisor

SECRET = "test-auth-secret-8c1d0e2f-at-least-32-chars"


def webapp_project(root: Path, *, deadline: float = 30.0, initial_delay: float = 0.1,
                   max_delay: float = 1.0, probe_interval: float = 10.0, declare_url: bool = True,
                   migrate: bool | list[str] = True, migrate_timeout: float = 300.0, extra: str = "") -> Path:
    """A project serving ``webapp.app:app`` from the repository, with fast database retries.

    ``migrate``: run the repository's Alembic migrations before the first worker, as the
    project's own ``supervisor.toml`` does (False: the webapp starts on whatever schema there is;
    a list: that command instead).
    """
    if migrate is True:
        migrate = [sys.executable, "-m", "alembic", "upgrade", "head"]
    command = json.dumps(migrate or [])
    declared = """
        [env.DATABASE_URL]
        type = "url"
        schemes = ["postgresql", "postgres", "postgresql+asyncpg", "sqlite+aiosqlite"]
        required = false
    """ if declare_url else ""
    return make_project(root, toml=f"""
        [server]
        port = {free_port()}
        [app]
        app = "webapp.app:app"
        app_dir = "{REPO}"
        ready_timeout = 30
        [database]
        initial_delay = {initial_delay}
        max_delay = {max_delay}
        deadline = {deadline}
        connect_timeout = 2
        probe_interval = {probe_interval}
        migrate = {command}
        migrate_timeout = {migrate_timeout}
        [status]
        enabled = false
        {extra}
        {declared}
        [env.BETTER_AUTH_SECRET]
        type = "secret"
        min_length = 32
        default = "development-only-secret-change-me-0123456789"
    """)


def token(sub: str, secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    """A token for ``sub``, valid for 10 minutes; a claim given as None is left out (``exp=None``)."""
    now = int(time.time())
    payload = {k: v for k, v in {"sub": sub, "iat": now, "exp": now + 600, **claims}.items() if v is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


def auth(sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub)}"}


def client(url: str) -> httpx.Client:
    """Real HTTP to the served webapp; a fresh connection per request is not needed here."""
    return httpx.Client(base_url=url, timeout=scaled(10.0))


def alembic(*args: str, url: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m alembic ARGS`` in the repository against ``url``; fails the test on an error."""
    env = base_env(DATABASE_URL=url)
    result = subprocess.run([sys.executable, "-m", "alembic", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=scaled(timeout))
    assert result.returncode == 0, f"alembic {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result


@dataclass
class Served:
    """The webapp under a running supervisor: its URL, the backend, the project and the process."""

    url: str
    backend: str  # "postgresql" or "sqlite"
    root: Path
    run: Running
    database_url: str  # what the webapp uses (the SQLite file's URL in development)

    def client(self) -> httpx.Client:
        return client(self.url)


@contextlib.contextmanager
def serve_webapp(request: pytest.FixtureRequest, root: Path, backend: str, *, migrate: bool = True,
                 database: str = "webapp_tests", **env: str) -> Iterator[Served]:
    """Run the webapp on ``backend`` with ``env`` added; PostgreSQL gets a fresh ``database``."""
    project = webapp_project(root, migrate=migrate)
    environ = base_env(BETTER_AUTH_SECRET=SECRET, **env)
    if backend == "postgresql":
        server: PgServer = request.getfixturevalue("pg_server")
        server.ensure_started()
        environ["DATABASE_URL"] = server.url(database=server.create_database(database))
        url = environ["DATABASE_URL"]
    else:
        url = f"sqlite+aiosqlite:///{root / '.supervisor' / 'webapp.sqlite3'}"
    with supervisor(["up", "--no-reload"], project, environ) as run:
        yield Served(run.wait_url(timeout=60), backend, project, run, url)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text; fails if the sample is absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels or ''} in:\n{text}")


@contextlib.contextmanager
def notes_locked(served: Served, pg: PgServer | None) -> Iterator[None]:
    """Hold a lock that makes every write to ``notes`` wait, from outside the app: an open
    transaction with ``LOCK TABLE`` in psql, or SQLite's ``BEGIN EXCLUSIVE`` on the file."""
    if served.backend == "postgresql":
        assert pg is not None
        database = served.database_url.rsplit("/", 1)[1]
        psql = pg.session(database)
        assert psql.stdin is not None and psql.stdout is not None
        try:
            psql.stdin.write("BEGIN; LOCK TABLE notes IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n")
            line = psql.stdout.readline()
            assert line.strip() == "locked", line
            yield
        finally:
            psql.stdin.write("ROLLBACK;\n")
            psql.stdin.close()
            psql.wait(scaled(30))
            psql.stdout.close()
    else:
        holder = sqlite3.connect(served.database_url.split("///", 1)[1], isolation_level=None, timeout=10)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
