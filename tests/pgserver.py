"""A real PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` in a temporary directory.

One server per test session (initdb takes a second or two); tests that need an outage call
:meth:`PgServer.stop` and :meth:`PgServer.start`, and the :func:`pg` fixture starts it again for
the next test whatever happened. As root, PostgreSQL refuses to run, so every server command runs
as the ``postgres`` user through ``runuser``, in a directory that user owns.

``tests/conftest.py`` registers this module as a plugin, so every test can ask for ``pg`` or
``pg_server``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, scaled

PG_BIN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER_PASSWORD = "pg-super-5e1f-secret"
APP_USER = "app"
APP_PASSWORD = "app-pw-93c1-not-for-logs"


def pg_bin() -> Path | None:
    """The newest installed server's bin directory (15 on Debian bookworm), or None."""
    found = sorted(PG_BIN_ROOT.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


class PgServer:
    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root = root
        self.bin = bin_dir
        self.data = root / "data"
        self.sockets = root / "sock"
        self.logfile = root / "server.log"
        self.port = free_port()
        self.running = False

    # ----- commands, as the postgres user when we are root ---------------------------------

    def _run(self, args: list[str], stdin: str | None = None, timeout: float = 60) -> str:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *args], input=stdin, capture_output=True, text=True,
                                timeout=scaled(timeout), cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}"
                               f"{result.stderr}\n--- server log ---\n{self.log()}")
        return result.stdout

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def init(self) -> None:
        self.sockets.mkdir()
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        # Local socket: trust (for setup); TCP: passwords, as a real deployment has them.
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--no-sync",
                   "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                   "-E", "UTF8", "--locale=C"])

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w",
                   "-t", str(round(scaled(60))), "-o", options, "start"])
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects clients at once, as a restarted server would; ``immediate`` is a
        crash (no shutdown checkpoint: the next start recovers from the WAL)."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])
        self.running = False

    def ensure_started(self) -> None:
        if not self.running:
            self.start()

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self._run([str(self.bin / "psql"), "-h", str(self.sockets), "-p", str(self.port),
                          "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt",
                          "-c", statement])

    def session(self, database: str) -> subprocess.Popen[str]:
        """An interactive psql as the superuser: write statements to its stdin, read its stdout;
        closing stdin ends it (and commits nothing left open). For holding a lock during a test."""
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.Popen([*prefix, str(self.bin / "psql"), "-h", str(self.sockets), "-p", str(self.port),
                                 "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-qAt"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, cwd=self.root)

    def create_app_user(self) -> None:
        self.sql(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")

    def create_database(self, name: str) -> str:
        """A fresh database owned by the app user; returns its name."""
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{name}" OWNER {APP_USER}')
        return name

    def url(self, database: str = "app", user: str = APP_USER, password: str = APP_PASSWORD,
            scheme: str = "postgresql", port: int | None = None) -> str:
        return f"{scheme}://{user}:{password}@127.0.0.1:{port or self.port}/{database}"

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop()
            except (RuntimeError, subprocess.TimeoutExpired):
                self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL for the session, with the ``app`` role and an ``app`` database."""
    bin_dir = pg_bin()
    if bin_dir is None:
        # .ci/run installs the postgresql package, so in CI this never happens.
        pytest.skip(f"no PostgreSQL server binaries under {PG_BIN_ROOT} (apt-get install postgresql)")
    # Not under pytest's tmp dir: its parents are 0700 root, which the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="pgtest-"))
    server = PgServer(root, bin_dir)
    try:
        server.init()
        server.start()
        server.create_app_user()
        server.create_database("app")
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg(pg_server: PgServer) -> Iterator[PgServer]:
    """The session's server, running at the start of the test and again after it."""
    pg_server.ensure_started()
    try:
        yield pg_server
    finally:
        pg_server.ensure_started()
