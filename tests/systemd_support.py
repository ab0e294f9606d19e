"""Helpers for the systemd tests: a stand-in for systemd's notify socket, and the test project.

:class:`NotifyListener` binds an ``AF_UNIX`` datagram socket (a path, or an abstract name) with
``SO_PASSCRED``, so every message arrives with the kernel-verified pid of its sender, exactly as
systemd sees it.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support import REPO, Running, free_port, make_project, wait_until

APPS = REPO / "tests" / "apps"
UCRED = struct.Struct("iII")  # pid, uid, gid


@dataclass(frozen=True)
class Notification:
    at: float  # time.monotonic() on receipt
    pid: int  # the sender, as the kernel reports it
    fields: dict[str, str]

    @classmethod
    def parse(cls, data: bytes, pid: int) -> Notification:
        text = data.decode("utf-8")
        fields = dict(line.split("=", 1) for line in text.split("\n") if "=" in line)
        return cls(time.monotonic(), pid, fields)


class NotifyListener:
    """Receives sd_notify datagrams on a thread; ``address`` is what goes into ``NOTIFY_SOCKET``.

    With ``paused``, nothing is read until :meth:`resume`: a systemd too busy to read its socket,
    whose queue (``net.unix.max_dgram_qlen`` datagrams) fills up meanwhile."""

    def __init__(self, address: str, on_message: Callable[[Notification], None] = lambda n: None,
                 paused: bool = False) -> None:
        self.address = address
        self.on_message = on_message
        self.messages: list[Notification] = []
        self._lock = threading.Lock()
        self._closed = False
        self._reading = threading.Event()
        if not paused:
            self._reading.set()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def resume(self) -> None:
        self._reading.set()

    def _receive(self) -> None:
        while not self._closed:
            if not self._reading.wait(0.1):
                continue
            try:
                data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(UCRED.size))
            except TimeoutError:
                continue
            except OSError:
                return
            pid = -1
            for level, kind, payload in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = UCRED.unpack(payload[:UCRED.size])[0]
            note = Notification.parse(data, pid)
            self.on_message(note)
            with self._lock:
                self.messages.append(note)

    def snapshot(self) -> list[Notification]:
        with self._lock:
            return list(self.messages)

    def find(self, key: str, value: str | None = None, start: int = 0) -> int | None:
        """Index of the first message at or after ``start`` that sets ``key`` (to ``value``)."""
        for index, note in enumerate(self.snapshot()[start:], start):
            if key in note.fields and (value is None or note.fields[key] == value):
                return index
        return None

    def wait_for(self, key: str, value: str | None = None, start: int = 0, timeout: float = 30.0,
                 context: Callable[[], str] = lambda: "") -> int:
        found = wait_until(lambda: self.find(key, value, start) is not None, timeout,
                           f"sd_notify {key}={value or '*'} after message {start}",
                           lambda: f"{context()}\n--- notifications ---\n{self.describe()}")
        assert found
        index = self.find(key, value, start)
        assert index is not None
        return index

    def describe(self) -> str:
        return "\n".join(f"{n.pid}: {n.fields}" for n in self.snapshot())

    def close(self) -> None:
        self._closed = True
        self._reading.set()
        self._thread.join(5)
        self.sock.close()


def sd_project(root: Path, port: int | None = None, stop_timeout: float = 5.0) -> Path:
    """A project serving ``tests/apps/sdapp.py`` with the optional services switched off."""
    return make_project(root, toml=f"""
        [supervisor]
        stop_timeout = {stop_timeout}
        [server]
        port = {port if port is not None else free_port()}
        [app]
        app = "sdapp:app"
        app_dir = "{APPS}"
        ready_timeout = 30
        [restart]
        initial_delay = 0.05
        max_delay = 0.2
        [database]
        wait = false
        [status]
        enabled = false
    """)


class Command(Running):
    """Like :class:`tests.support.Running`, for any command (a wrapper such as
    ``systemd-socket-activate`` around ``python -m supervisor``)."""

    def __init__(self, command: list[str], cwd: Path, env: Mapping[str, str]) -> None:
        self.args = command
        self.lines = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(command, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
