"""Helpers for tests that run the real supervisor: processes, sockets, HTTP, deadlines.

No sleeps as synchronisation: :func:`wait_until` polls an observable effect with a deadline, and
failures include the supervisor's whole output.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import psutil

from supervisor.listen.ports import bind_listener

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def timeout_scale(environ: Mapping[str, str] | None = None) -> float:
    """The ``TIMEOUT_SCALE`` factor (default 1) every deadline in the tests is multiplied by.

    One knob for a loaded or slow machine: ``TIMEOUT_SCALE=3 python -m pytest`` gives every wait,
    process deadline and per-test timeout three times as long. It only lengthens deadlines; nothing
    waits longer than its effect takes to show.
    """
    raw = (os.environ if environ is None else environ).get("TIMEOUT_SCALE", "").strip()
    if not raw:
        return 1.0
    try:
        scale = float(raw)
    except ValueError:
        scale = float("nan")
    if not 0 < scale < float("inf"):  # also refuses nan
        raise ValueError(f"TIMEOUT_SCALE={raw!r}: expected a positive number such as 2 or 1.5")
    return scale


def scaled(seconds: float) -> float:
    """``seconds`` as a deadline on this machine: multiplied by :func:`timeout_scale`."""
    return seconds * timeout_scale()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs: a zombie counts as gone (it holds nothing, and one left
    to an init that does not reap would otherwise never go)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def port_is_free(port: int) -> bool:
    """True when ``port`` on 127.0.0.1 can be bound and listened on, the way the supervisor binds
    it; raises ``OSError`` while something holds it, so :func:`wait_until` goes on polling."""
    with bind_listener("127.0.0.1", port):
        return True


class Clock:
    """A fake clock for unit tests: reading it gives ``now``, which moves only when the test moves
    it (:meth:`advance`, or setting ``now``) or when the code under test awaits :meth:`sleep`,
    which returns at once and records the delay in ``sleeps``.

    :meth:`wall` is the matching wall-clock time, ``wall_offset`` ahead of ``now``, for code that
    takes a monotonic and a wall clock (``clock=clock, wall=clock.wall``).
    """

    def __init__(self, now: float = 1000.0, wall_offset: float = 0.0) -> None:
        self.now = now
        self.wall_offset = wall_offset
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_offset + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def wait_until(check: Callable[[], T | None | Literal[False]], timeout: float, what: str,
               context: Callable[[], str] = lambda: "", interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` and ``context()``.

    ``timeout`` is scaled by ``TIMEOUT_SCALE`` (see :func:`timeout_scale`).
    """
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return cast(T, result)
        except Exception as exc:  # polled effects may fail until ready
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}\n"
                                 f"--- output ---\n{context()}")
        time.sleep(interval)  # poll interval, not synchronisation


def http_get(url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    """One GET over a fresh connection to a loopback URL: (status, headers, body).

    ``timeout`` (scaled by ``TIMEOUT_SCALE``) bounds each socket operation.
    """
    match = re.match(r"http://([^/:]+|\[[^\]]+\]):(\d+)(/.*)?$", url)
    assert match, url
    host, port, path = match.group(1).strip("[]"), int(match.group(2)), match.group(3) or "/"
    conn = http.client.HTTPConnection(host, port, timeout=scaled(timeout))
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    status, _, body = http_get(url, timeout)
    return status, json.loads(body)


def make_project(root: Path, toml: str = "", dotenv: str | None = None,
                 files: Mapping[str, str] | None = None) -> Path:
    """Write a project directory: ``supervisor.toml``, optional ``.env`` and extra files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "supervisor.toml").write_text(textwrap.dedent(toml))
    if dotenv is not None:
        (root / ".env").write_text(textwrap.dedent(dotenv))
    for name, text in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


APPS = REPO / "tests" / "apps"


def app_project(root: Path, app: str = "rawapp:app", *, port: int | None = None, workers: int = 1,
                server_extra: str = "", extra: str = "", dotenv: str | None = None,
                stop_timeout: float = 10.0, status_port: int | None = None) -> Path:
    """A project serving ``app`` from tests/apps, with restarts fast enough for tests.

    ``port`` None picks a free port; ``server_extra`` is added to ``[server]`` and ``extra`` at the
    end; ``status_port`` None disables the status API (0: any free port).
    """
    status = "enabled = false" if status_port is None else f"port = {status_port}"
    return make_project(root, dotenv=dotenv, toml=f"""
        [supervisor]
        stop_timeout = {stop_timeout}
        [server]
        port = {port if port is not None else free_port()}
        {server_extra}
        [app]
        app = "{app}"
        app_dir = "{APPS}"
        workers = {workers}
        ready_timeout = 30
        [restart]
        initial_delay = 0.05
        max_delay = 0.2
        crash_loop_failures = 3
        crash_loop_window = 60
        [database]
        wait = false
        [status]
        {status}
        {extra}
    """)


def base_env(**extra: str) -> dict[str, str]:
    """The test process environment, minus variables that would change the supervisor's behaviour."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SUPERVISOR_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"))
           and k not in ("PORT", "DATABASE_URL", "BETTER_AUTH_SECRET")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Running:
    """A ``python -m supervisor`` process with its combined output collected by a thread.

    ``python`` is the interpreter (another virtual environment's, say); by default the tests' own.
    """

    def __init__(self, args: list[str], cwd: Path, env: Mapping[str, str],
                 preexec_fn: Callable[[], None] | None = None, python: str | Path = sys.executable) -> None:
        self.args = args
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [str(python), "-m", "supervisor", *args], cwd=cwd, env=dict(env),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=preexec_fn,
        )
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._lock:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for_output(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern)
        return wait_until(lambda: regex.search(self.output), timeout, f"output matching {pattern!r}",
                          lambda: self.output)

    def wait_url(self, timeout: float = 30.0) -> str:
        """The webapp URL from the ``Serving on`` banner, once the first worker is ready."""
        return self.wait_for_output(r"Serving on (http://\S+)", timeout).group(1)

    def worker_pids(self) -> list[int]:
        """The supervisor's live children that lead a session: its workers (spawned or forked),
        not the template process workers are forked from, which stays in the supervisor's session."""
        found = []
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        for child in children:
            with contextlib.suppress(psutil.Error, OSError):
                if child.status() != psutil.STATUS_ZOMBIE and os.getsid(child.pid) == child.pid:
                    found.append(child.pid)
        return sorted(found)

    def wait_exit(self, timeout: float = 30.0) -> int:
        timeout = scaled(timeout)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor did not exit within {timeout:g}s\n--- output ---\n"
                                 f"{self.output}") from None
        self._reader.join(scaled(5))
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def cleanup(self) -> None:
        """Stop the supervisor and anything left in its session; only processes we started."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(scaled(20))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(scaled(5))
        self._reader.join(scaled(5))


@contextlib.contextmanager
def supervisor(args: list[str], cwd: Path, env: Mapping[str, str] | None = None,
               preexec_fn: Callable[[], None] | None = None, python: str | Path = sys.executable
               ) -> Iterator[Running]:
    """Run ``python -m supervisor ARGS`` for the duration of the block; always cleaned up.

    ``preexec_fn`` runs in the child before exec (a lower resource limit, say); ``python`` is the
    interpreter that runs it.
    """
    run = Running(args, cwd, env if env is not None else base_env(), preexec_fn, python)
    try:
        yield run
    finally:
        run.cleanup()


def run_cli(args: list[str], cwd: Path, env: Mapping[str, str] | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a short ``python -m supervisor`` command to completion."""
    return subprocess.run([sys.executable, "-m", "supervisor", *args], cwd=cwd,
                          env=dict(env if env is not None else base_env()), capture_output=True,
                          text=True, timeout=scaled(timeout), stdin=subprocess.DEVNULL)
