"""Port selection with real sockets on 127.0.0.1: preferred port, fallback, strict mode, holder."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.errors import PortError
from supervisor.listen.ports import bind_listener, bind_port, port_holder
from tests.support import app_project, base_env, free_port

HOST = "127.0.0.1"


@pytest.fixture
def occupied() -> Iterator[int]:
    """A port some other socket is listening on."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def connects(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=2):
        return True


def test_free_preferred_port_is_bound_and_listening() -> None:
    port = free_port()
    bound = bind_port(HOST, port, search=20, strict=False)
    with bound.sock:
        assert (bound.port, bound.note) == (port, "")
        assert bound.sock.getsockname() == (HOST, port)
        assert connects(port)


def test_listener_reuses_addresses_but_never_shares_the_port() -> None:
    with bind_listener(HOST, 0) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        # Never SO_REUSEPORT: another process must not be able to share the port.
        assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)


def test_port_zero_picks_an_ephemeral_port() -> None:
    bound = bind_port(HOST, 0, search=20, strict=False)
    with bound.sock:
        assert bound.port > 0 and bound.note == ""


def test_taken_port_moves_to_the_next_free_one_and_says_why(occupied: int) -> None:
    bound = bind_port(HOST, occupied, search=20, strict=False, holder=lambda p: f"nginx (pid {p})")
    with bound.sock:
        assert occupied < bound.port <= occupied + 20
        assert bound.note == f"port {occupied} is held by nginx (pid {occupied}); using {bound.port} instead"


def test_unknown_holder_still_says_the_port_is_in_use(occupied: int) -> None:
    bound = bind_port(HOST, occupied, search=20, strict=False, holder=lambda p: None)
    with bound.sock:
        assert bound.note == f"port {occupied} is in use; using {bound.port} instead"


def test_strict_port_fails_with_a_clear_message(occupied: int) -> None:
    with pytest.raises(PortError) as info:
        bind_port(HOST, occupied, search=20, strict=True, holder=lambda p: "python (pid 42)")
    message = str(info.value)
    assert f"port {occupied} on {HOST} is held by python (pid 42)" in message
    assert "strict_port is set" in message and "PORT or [server] port" in message
    assert info.value.exit_code == 4


def test_exhausted_range_fails_naming_the_range(occupied: int) -> None:
    with pytest.raises(PortError) as info:
        bind_port(HOST, occupied, search=0, strict=False, holder=lambda p: None)
    assert str(info.value) == (f"no free port on {HOST} from {occupied} to {occupied}: port {occupied} "
                               "is in use; free a port or raise [server] port_range")


def test_unusable_host_is_a_port_error() -> None:
    with pytest.raises(PortError) as info:
        bind_port("192.0.2.1", free_port(), search=3, strict=False)  # TEST-NET: not our address
    assert "cannot listen on 192.0.2.1" in str(info.value)


def test_port_holder_names_the_listening_process(occupied: int) -> None:
    holder = port_holder(occupied)
    assert holder is not None and holder.endswith(f"(pid {os.getpid()})")


def test_port_holder_of_a_free_port_is_none() -> None:
    assert port_holder(free_port()) is None


def _without_bind_privilege() -> None:
    """In the child, before exec: drop CAP_NET_BIND_SERVICE from the bounding set, so even root
    gets EACCES for ports below 1024, as an ordinary user does."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_NET_BIND_SERVICE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


PR_CAPBSET_DROP = 24
CAP_NET_BIND_SERVICE = 10


def privileged_free_port() -> int:
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024 to try")


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0, reason="drops a capability root has; as a user, bind is refused anyway")
@pytest.mark.parametrize("where", ["server", "status"])
def test_a_privileged_port_says_permission_denied_not_in_use(tmp_path: Path, where: str) -> None:
    """Port 80 without the privilege was reported as "in use", after trying 21 ports."""
    port = privileged_free_port()
    server_port, status_port = (port, None) if where == "server" else (free_port(), port)
    root = app_project(tmp_path, port=server_port, status_port=status_port)
    result = subprocess.run([sys.executable, "-m", "supervisor", "up", "--no-reload", "--project-dir", str(root)],
                            env=base_env(SUPERVISOR_MODE="production"), capture_output=True, text=True, timeout=50,
                            preexec_fn=_without_bind_privilege)
    out = result.stdout + result.stderr
    assert result.returncode == 4, out
    assert f"cannot listen on 127.0.0.1:{port}: permission denied (ports below 1024 need root or " \
           "CAP_NET_BIND_SERVICE" in out, out
    assert "in use" not in out and "held by" not in out and "Traceback" not in out
