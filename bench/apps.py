"""The two apps every scenario serves: the small Starlette app and the example webapp.

Each run gets a fresh copy in its own directory (the tools watch and import that copy), and an
edit that changes what ``GET /`` says, so "the new code answers" is exact: ``version`` in the JSON.
The webapp talks to a real PostgreSQL through asyncpg (the benchmark starts its own, as the test
suite does), its schema migrated once before any tool starts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import REPO, bench_env

SMALL_APP = Path(__file__).resolve().parent / "smallapp.py"
SECRET = "bench-secret-0123456789-0123456789-0123456789"


@dataclass
class BenchApp:
    """``name`` in the report; ``target`` the ASGI import string; ``edit`` the file a reload edits."""

    name: str
    target: str
    edit: str
    env: dict[str, str] = field(default_factory=dict)

    def prepare(self, workdir: Path) -> None:
        """Copy the app into ``workdir`` (the directory every tool runs in and watches)."""
        workdir.mkdir(parents=True, exist_ok=True)
        if self.name == "starlette":
            shutil.copy(SMALL_APP, workdir / "smallapp.py")
        else:
            shutil.copytree(REPO / "webapp", workdir / "webapp",
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)

    def set_version(self, workdir: Path, version: int) -> None:
        """Change the code: ``GET /`` answers ``version`` from now on (once a tool has reloaded)."""
        path = workdir / self.edit
        text = path.read_text()
        if self.name == "starlette":
            text = re.sub(r"^VERSION = .*$", f"VERSION = {version}", text, count=1, flags=re.M)
        else:
            text = re.sub(r'^__version__ = .*$', f'__version__ = "{version}"', text, count=1, flags=re.M)
        path.write_text(text)

    @staticmethod
    def version_of(answer: dict[str, object]) -> str:
        return str(answer.get("version"))


STARLETTE = BenchApp("starlette", "smallapp:app", "smallapp.py")


@contextmanager
def webapp() -> Iterator[BenchApp]:
    """The example webapp against a PostgreSQL started for the benchmark (stopped at the end)."""
    sys.path.insert(0, str(REPO))
    from tests.pgserver import PgServer, pg_bin  # the test suite's server helper, reused

    bin_dir = pg_bin()
    if bin_dir is None:
        raise RuntimeError("the webapp benchmarks need PostgreSQL's server binaries (apt-get install postgresql)")
    server = PgServer(Path(tempfile.mkdtemp(prefix="pgbench-")), bin_dir)
    try:
        server.init()
        server.start()
        server.create_app_user()
        database = server.create_database("bench")
        url = server.url(database=database)
        migrated = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO,
                                  env=bench_env({"DATABASE_URL": url}), capture_output=True, text=True, timeout=120)
        if migrated.returncode != 0:
            raise RuntimeError(f"alembic upgrade failed:\n{migrated.stdout}{migrated.stderr}")
        yield BenchApp("webapp", "webapp.app:app", "webapp/__init__.py",
                       env={"DATABASE_URL": url, "BETTER_AUTH_SECRET": SECRET})
    finally:
        server.destroy()
