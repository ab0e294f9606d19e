"""Pure units: what a reload cannot apply, and the development 503's text."""

from __future__ import annotations

from pathlib import Path

from supervisor.config.settings import Overrides, Settings, needs_restart, resolve_settings
from supervisor.listen.fallback import explain_fatal, render
from supervisor.state import SlotState, SlotStatus
from tests.support import make_project


def settings(root: Path, toml: str) -> Settings:
    make_project(root, toml)
    return resolve_settings(root, {}, Overrides())


def test_app_and_restart_settings_apply_on_reload(tmp_path: Path) -> None:
    old = settings(tmp_path, "[app]\nready_timeout = 30\n")
    new = settings(tmp_path, "[app]\nready_timeout = 5\n[restart]\nmax_delay = 3.0\n")
    assert needs_restart(old, new) == []


def test_socket_workers_status_and_reload_changes_need_a_restart(tmp_path: Path) -> None:
    old = settings(tmp_path, "")
    new = settings(tmp_path, "[server]\nport = 9001\n[app]\nworkers = 2\n[status]\nport = 0\n"
                             "[reload]\ndebounce = 0.5\n")
    assert needs_restart(old, new) == ["[server]", "workers", "[status]", "[reload]"]


def test_the_503_names_each_fatal_slot_with_its_last_stderr_lines() -> None:
    fatal = SlotStatus(0, state=SlotState.FATAL, fatal_reason="crashed 5 times within 60s")
    fatal.stderr_tail.extend(["Traceback (most recent call last):", "SyntaxError: invalid syntax"])
    waiting = SlotStatus(1, state=SlotState.BACKOFF)
    text = explain_fatal([fatal, waiting])
    assert "web.0: crashed 5 times within 60s" in text
    assert "    SyntaxError: invalid syntax" in text
    assert "web.1" not in text
    response = render(text)
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
