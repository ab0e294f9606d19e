"""Socket activation: the supervisor serves on the socket systemd passes instead of binding one."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import psutil
import pytest

from supervisor.errors import PortError
from supervisor.systemd.activation import Passed, activated_listener, adopt_listener, passed_fds
from tests.support import base_env, free_port, http_json, wait_until
from tests.systemd_support import Command, sd_project


def test_passed_fds_only_when_listen_pid_is_ours() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "http"}
    assert passed_fds(env, 42) == Passed(fds=[3, 4], names=["http", "unknown"])
    assert passed_fds(env, 43) is None
    assert passed_fds({"LISTEN_PID": "42", "LISTEN_FDS": "0"}, 42) is None
    assert passed_fds({"LISTEN_PID": "42", "LISTEN_FDS": "many"}, 42) is None
    assert activated_listener({}, 42) is None


def test_a_passed_socket_that_is_not_listening_is_refused_and_left_open() -> None:
    with socket.socket() as sock:
        fd = os.dup(sock.fileno())
        try:
            with pytest.raises(PortError, match="not listening"):
                adopt_listener(fd, "http")
            os.fstat(fd)  # still open: it was systemd's, not ours to close
        finally:
            os.close(fd)


def test_a_passed_listening_socket_is_adopted_with_its_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        bound = adopt_listener(os.dup(sock.fileno()), "http")
        try:
            assert bound.port == sock.getsockname()[1]
            assert not bound.sock.get_inheritable()  # workers get it through pass_fds only
        finally:
            bound.sock.close()


def listening_inodes(pid: int) -> set[str]:
    return {os.readlink(f"/proc/{pid}/fd/{c.fd}") for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN}


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate missing (.ci/run installs the systemd package)")
def test_webapp_answers_on_the_socket_passed_by_systemd_socket_activate(tmp_path: Path) -> None:
    port = free_port()
    # The project's own port differs: answering on `port` proves the passed socket is used.
    project = sd_project(tmp_path, port=free_port())
    env = base_env()
    passthrough = [arg for name in env for arg in ("-E", name)]  # it passes no variable by default
    command = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=http", *passthrough,
               sys.executable, "-m", "supervisor", "up", "--no-reload"]
    run = Command(command, project, env)
    try:
        run.wait_for_output(rf"Listening on 127\.0\.0\.1:{port}")
        # systemd-socket-activate starts the command on the first connection, which then waits
        # in the backlog until a worker accepts it.
        status, body = http_json(f"http://127.0.0.1:{port}/pid", timeout=30)
        assert status == 200
        run.wait_for_output(rf"using the socket passed by systemd \(fd 3, 'http'\), port {port}")
        supervisor_pid = run.pid  # systemd-socket-activate execs the command in place
        assert psutil.Process(body["pid"]).ppid() == supervisor_pid
        passed = os.readlink(f"/proc/{supervisor_pid}/fd/3")
        assert listening_inodes(body["pid"]) == {passed}
        assert listening_inodes(supervisor_pid) == {passed}
        status, body = http_json(f"http://127.0.0.1:{port}/env")
        assert body["names"] == []
        os.kill(supervisor_pid, signal.SIGTERM)
        assert run.wait_exit() == 0
        wait_until(lambda: "stopped" in run.output, 5, "the stop log line", lambda: run.output)
    finally:
        run.cleanup()
