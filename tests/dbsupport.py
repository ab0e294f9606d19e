"""Helpers for the database and webapp tests: a project serving the real webapp, tokens, HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from tests.support import REPO, base_env, free_port, make_project

SECRET = "test-auth-secret-8c1d0e2f-at-least-32-chars"


def webapp_project(root: Path, *, deadline: float = 30.0, initial_delay: float = 0.1,
                   max_delay: float = 1.0, probe_interval: float = 10.0, declare_url: bool = True,
                   migrate: bool = True, extra: str = "") -> Path:
    """A project serving ``webapp.app:app`` from the repository, with fast database retries.

    ``migrate``: run the repository's Alembic migrations before the first worker, as the
    project's own ``supervisor.toml`` does (False: the webapp starts on whatever schema there is).
    """
    command = json.dumps([sys.executable, "-m", "alembic", "upgrade", "head"]) if migrate else "[]"
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
    return httpx.Client(base_url=url, timeout=10.0)


def alembic(*args: str, url: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m alembic ARGS`` in the repository against ``url``; fails the test on an error."""
    env = base_env(DATABASE_URL=url)
    result = subprocess.run([sys.executable, "-m", "alembic", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"alembic {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result
