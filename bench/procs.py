"""Running a tool under benchmark: its own session, its output to a log, and nothing left behind.

Supervisors start children in process groups of their own (supervisord, circus), so stopping a
tool's process group is not enough: :class:`Started` remembers every descendant it has seen and,
after a graceful stop with a deadline, SIGKILLs by pid whatever of them is still there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def bench_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment with the repository importable (``python -m supervisor``), and no variable
    that would change a tool's behaviour (a status token, a port, a database)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SUPERVISOR_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"))
           and k not in ("PORT", "DATABASE_URL", "BETTER_AUTH_SECRET")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def compile_tool(repo: Path = REPO) -> None:
    """Write our package's bytecode, as an installed tool has it (pip compiles the peers' at
    install). Where bytecode writing is off (PYTHONDONTWRITEBYTECODE), ours would otherwise be
    compiled again at every start, and every start timed would pay for it."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(repo / "supervisor")], check=True,
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})


class Started:
    """A running tool: ``proc`` is its top process; ``family()`` it and every descendant seen."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self._seen: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def family(self) -> list[psutil.Process]:
        """The top process and its live descendants (remembered for the final cleanup)."""
        try:
            top = psutil.Process(self.proc.pid)
            members = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        self._seen.update(p.pid for p in members)
        return members

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        self.family()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # children of a supervisor stop after it, by its own order
            left = [pid for pid in self._seen if _alive(pid)]
            if not left:
                return
            time.sleep(0.05)  # poll interval
        for pid in self._seen:
            if _alive(pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    psutil.Process(pid).kill()  # one we started, and saw, by pid


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def started(argv: list[str], cwd: Path, log: Path, env: Mapping[str, str] | None = None,
            pass_fds: tuple[int, ...] = ()) -> Iterator[Started]:
    """Run ``argv`` in a session of its own for the block; always stopped, with its descendants."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=dict(env if env is not None else bench_env()),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, pass_fds=pass_fds)
    run = Started(proc, log)
    try:
        yield run
    finally:
        run.stop()
