"""A worker's arguments, on both wires: the command line of a spawned worker, and the dict plus
descriptors of a forked one. Pure: no process is started."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from supervisor.child.args import Fd, WorkerArgs, WorkerOptions
from supervisor.spawn.descendants import MARK_VAR
from supervisor.spawn.process import WorkerSpec, child_environ, worker_args
from tests.support import REPO


def away_from_default(f: dataclasses.Field[Any], index: int) -> Any:
    """A value of ``f``'s type unlike its default: a text that looks like an option, a float whose
    repr is long, a descriptor number of its own. Derived, so a new field is covered unedited."""
    kind = get_type_hints(WorkerArgs)[f.name]
    if kind is bool:
        return not (f.default if f.default is not dataclasses.MISSING else False)
    if kind is int:
        return 100 + index
    if kind is float:
        return index + 2.0 / 3
    return f"--{f.name} = {index} é/x?y=z"


# Every field away from its default.
FULL = WorkerArgs(**{f.name: away_from_default(f, i) for i, f in enumerate(dataclasses.fields(WorkerArgs))})
DEFAULTS = WorkerArgs(app="app:app", parent_pid=1, listen_fd=3, ready_fd=4)


def test_every_field_is_set_away_from_its_default_in_the_full_example() -> None:
    for f in dataclasses.fields(WorkerArgs):
        if f.default is not dataclasses.MISSING:
            assert getattr(FULL, f.name) != f.default, f.name


@pytest.mark.parametrize("args", [FULL, DEFAULTS], ids=["full", "defaults"])
def test_the_command_line_round_trips(args: WorkerArgs) -> None:
    assert WorkerArgs.from_argv(args.to_argv()) == args


@pytest.mark.parametrize("args", [FULL, DEFAULTS], ids=["full", "defaults"])
def test_the_dict_and_descriptors_round_trip_with_the_receivers_numbers(args: WorkerArgs) -> None:
    message, fds = args.to_message({Fd.STDOUT: 20, Fd.STDERR: 21})
    message = json_round_trip(message)
    received = [fd + 100 for fd in fds]  # SCM_RIGHTS gives the receiver numbers of its own
    decoded, pipes = WorkerArgs.from_message(message, received)
    moved: dict[str, Any] = {f"{role.value}_fd": fd + 100 for role, fd in args.descriptors().items()}
    assert decoded == dataclasses.replace(args, **moved)
    assert pipes == {Fd.STDOUT: 120, Fd.STDERR: 121}


def json_round_trip(message: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(message))  # type: ignore[no-any-return]


def test_every_field_is_carried_by_both_encodings() -> None:
    argv = FULL.to_argv()
    message, fds = FULL.to_message()
    for f in dataclasses.fields(WorkerArgs):
        option = "--" + f.name.replace("_", "-")
        assert any(arg == option or arg.startswith(option + "=") for arg in argv), f.name
        if "fd" in f.metadata:
            assert f.metadata["fd"].value in message["fds"] and getattr(FULL, f.name) in fds, f.name
        else:
            assert message["args"][f.name] == getattr(FULL, f.name), f.name


def test_descriptors_go_in_the_one_order_and_absent_ones_are_left_out() -> None:
    message, fds = DEFAULTS.to_message({Fd.GO: 30, Fd.STDERR: 31, Fd.STDOUT: 32})
    assert message["fds"] == ["listen", "ready", "stdout", "stderr", "go"]
    assert fds == [3, 4, 32, 31, 30]
    assert list(FULL.descriptors()) == [Fd.LISTEN, Fd.READY, Fd.HEARTBEAT, Fd.REPORT]


def test_descriptors_that_do_not_match_their_roles_are_refused() -> None:
    message, fds = FULL.to_message()
    with pytest.raises(ValueError, match=r"expected 4 descriptors .*got 3"):
        WorkerArgs.from_message(message, fds[:3])


def test_a_command_line_without_a_required_field_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    argv = DEFAULTS.to_argv()
    at = argv.index("--listen-fd")
    with pytest.raises(SystemExit):
        WorkerArgs.from_argv(argv[:at] + argv[at + 2:])
    assert re.search(r"required.*--listen-fd", capsys.readouterr().err)


def test_the_builder_takes_every_option_from_the_spec_and_the_pipes_given() -> None:
    options = {f.name: getattr(FULL, f.name) for f in dataclasses.fields(WorkerOptions)}
    spec = WorkerSpec(**options, listen_fd=5, cwd=Path("/srv"), environ={})
    args = worker_args(spec, ready_fd=6, heartbeat_fd=7, report_fd=8)
    assert {name: getattr(args, name) for name in options} == options
    assert (args.parent_pid, args.listen_fd, args.ready_fd, args.heartbeat_fd, args.report_fd) == \
        (os.getpid(), 5, 6, 7, 8)


def test_a_childs_environment_is_unbuffered_marked_and_without_systemds_variables() -> None:
    env = child_environ({"PATH": "/bin", "NOTIFY_SOCKET": "@x", "LISTEN_FDS": "1", "PYTHONUNBUFFERED": "0"}, "m1")
    assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1", MARK_VAR: "m1"}
    assert MARK_VAR not in child_environ({})


def test_the_zygotes_side_imports_nothing_it_does_not_need_before_the_fork() -> None:
    # The zygote forks before the supervisor imports its modules: every module loaded by then
    # delays the fork (argparse and ctypes are loaded when first needed, after it).
    script = ("import sys\nimport supervisor.warm.zygote, supervisor.child.args\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('uvicorn', 'starlette', 'dotenv',"
              " 'argparse', 'ctypes') or (m.startswith('supervisor.')"
              " and not m.startswith(('supervisor.child', 'supervisor.warm')))))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_socket_pairs_carry_the_descriptors_in_the_order_named() -> None:
    """The real wire: send the message and descriptors over SCM_RIGHTS and decode them."""
    import json

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pipes = [os.pipe() for _ in range(3)]
    try:
        args = dataclasses.replace(DEFAULTS, listen_fd=pipes[0][1], ready_fd=pipes[1][1])
        message, fds = args.to_message({Fd.STDOUT: pipes[2][1]})
        socket.send_fds(ours, [json.dumps(message).encode()], fds)
        data, received, _, _ = socket.recv_fds(theirs, 1 << 16, len(Fd))
        decoded, extra = WorkerArgs.from_message(json.loads(data), received)
        for fd, (read_end, _) in zip((decoded.listen_fd, decoded.ready_fd, extra[Fd.STDOUT]), pipes, strict=True):
            os.write(fd, b"%d" % read_end)
            assert os.read(read_end, 16) == b"%d" % read_end
            os.close(fd)
    finally:
        ours.close()
        theirs.close()
        for read_end, write_end in pipes:
            os.close(read_end)
            os.close(write_end)


def test_a_fork_request_without_its_go_pipe_is_refused_by_name() -> None:
    from supervisor.child.forkserver import fork_request

    message, fds = DEFAULTS.to_message({Fd.STDOUT: 20, Fd.STDERR: 21})
    with pytest.raises(ValueError, match="without its go descriptor"):
        fork_request(message, fds)
    message, fds = DEFAULTS.to_message({Fd.STDOUT: 20, Fd.STDERR: 21, Fd.GO: 22})
    assert fork_request(message, fds) == (DEFAULTS, {Fd.STDOUT: 20, Fd.STDERR: 21, Fd.GO: 22})
