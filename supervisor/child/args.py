"""What a worker is told to run, and its two wire formats, light to import.

The supervisor builds a :class:`WorkerArgs` once per start (``supervisor.spawn.process.worker_args``)
and hands it over in one of two ways, each encoder beside its decoder here:

* a spawned ``python -m supervisor.child.worker`` gets it as its command line (:meth:`WorkerArgs.to_argv`,
  :meth:`WorkerArgs.from_argv`);
* a process that is forked instead (the zygote, the template's fork server) gets a JSON-able dict and
  the descriptors apart, over ``SCM_RIGHTS`` (:meth:`WorkerArgs.to_message`, :meth:`WorkerArgs.from_message`).

Both are derived from the dataclass fields, so adding an option is one field here plus its use. A
descriptor field names its role (:class:`Fd`); every path passes descriptors in the order of :class:`Fd`.

The supervisor builds these before anything imports uvicorn (a first worker is handed its arguments
while the supervisor is still starting, see :mod:`supervisor.warm.zygote`): standard library only.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, get_type_hints

READY_MESSAGE = b"ready\n"


class Fd(enum.Enum):
    """The descriptors a worker can be started with, in the one order every path passes them. The
    first four are :class:`WorkerArgs` fields; a forked worker also gets its stdio pipes, and one
    forked from the template a go pipe (it waits on it until the supervisor watches it)."""

    LISTEN = "listen"
    READY = "ready"
    HEARTBEAT = "heartbeat"
    REPORT = "report"
    STDOUT = "stdout"
    STDERR = "stderr"
    GO = "go"


def _fd(role: Fd, default: int | None = None) -> Any:
    """A descriptor field: passed apart from the dict, -1 meaning none."""
    if default is None:
        return field(metadata={"fd": role})
    return field(default=default, metadata={"fd": role})


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """What every worker of one spec runs with (``supervisor.spawn.process.WorkerSpec`` extends it)."""

    app: str
    factory: bool = False
    log_level: str = "info"
    graceful_timeout: float = 10.0
    # The supervisor's live-reload event stream; "" when the browser is not to follow reloads.
    livereload_url: str = ""
    # The heartbeat's interval; the directory for stack dumps ("": none).
    heartbeat_interval: float = 1.0
    stacks_dir: str = ""
    # [app] max_requests and its jitter: the worker draws its quota and enforces it (0: no limit).
    max_requests: int = 0
    max_requests_jitter: int = 0
    # [app] loop and http (uvicorn's; auto: uvloop and httptools when installed), interface (auto,
    # asgi3, asgi2, wsgi) and log_config (a logging config file, absolute; "": uvicorn's own).
    loop: str = "auto"
    http: str = "auto"
    interface: str = "auto"
    log_config: str = ""


@dataclass(frozen=True, kw_only=True)
class WorkerArgs(WorkerOptions):
    """One worker's arguments: its spec's options, and what is its own (the supervisor, the descriptors)."""

    parent_pid: int
    listen_fd: int = _fd(Fd.LISTEN)
    ready_fd: int = _fd(Fd.READY)
    # The heartbeat pipe; where to report the modules it imported (see supervisor.warm.preload).
    heartbeat_fd: int = _fd(Fd.HEARTBEAT, -1)
    report_fd: int = _fd(Fd.REPORT, -1)

    @classmethod
    def of(cls, options: WorkerOptions, **own: Any) -> WorkerArgs:
        """``options`` (or anything extending them) with this worker's own fields ``own``."""
        return cls(**{f.name: getattr(options, f.name) for f in fields(WorkerOptions)}, **own)

    def descriptors(self) -> dict[Fd, int]:
        """The descriptors it names (not the -1 ones), in the order of :class:`Fd`."""
        held = {f.metadata["fd"]: getattr(self, f.name) for f in _fd_fields()}
        return {role: held[role] for role in Fd if role in held and held[role] >= 0}

    # ----- the command line of a spawned worker -----------------------------------------------

    def to_argv(self) -> list[str]:
        """``--name value`` for each field (``--name`` alone for a true flag, nothing for a false
        one); ``--name=value`` for a value argparse would take for an option (``-1``)."""
        argv = []
        for f in fields(self):
            value = getattr(self, f.name)
            if _types()[f.name] is bool:
                argv += [_option(f)] if value else []
                continue
            text = repr(value) if isinstance(value, float) else str(value)
            argv += [f"{_option(f)}={text}"] if text.startswith("-") else [_option(f), text]
        return argv

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> WorkerArgs:
        """What :meth:`to_argv` gave; exits 2 with argparse's message on a malformed command line."""
        import argparse  # here: the zygote imports this module before it forks, and never parses

        parser = argparse.ArgumentParser(prog="python -m supervisor.child.worker")
        for f in fields(cls):
            kind = _types()[f.name]
            if kind is bool:
                parser.add_argument(_option(f), dest=f.name, action="store_true")
            elif kind in (str, int, float):
                required = f.default is MISSING
                parser.add_argument(_option(f), dest=f.name, type=kind, required=required,
                                    default=None if required else f.default)
            else:  # a type argv cannot carry as it is: say so to whoever added the field
                raise TypeError(f"WorkerArgs.{f.name}: {kind!r} on a command line; expected str, int, float or bool")
        return cls(**vars(parser.parse_args(list(argv))))

    # ----- a dict and descriptors, for a forked worker ------------------------------------------

    def to_message(self, extra: Mapping[Fd, int] | None = None) -> tuple[dict[str, Any], list[int]]:
        """A JSON-able dict and the descriptors to send with it (``extra``: the stdio and go pipes),
        in the order of :class:`Fd`; the dict names the roles sent."""
        held = {**self.descriptors(), **(extra or {})}
        roles = [role for role in Fd if role in held]
        values = {f.name: getattr(self, f.name) for f in fields(self) if "fd" not in f.metadata}
        return {"args": values, "fds": [role.value for role in roles]}, [held[role] for role in roles]

    @classmethod
    def from_message(cls, message: Mapping[str, Any], fds: Sequence[int]) -> tuple[WorkerArgs, dict[Fd, int]]:
        """What :meth:`to_message` gave, with the receiver's numbers for the descriptors; and the
        extra descriptors by role. Raises ValueError when the descriptors do not match the roles."""
        roles = [Fd(name) for name in message["fds"]]
        if len(roles) != len(fds):
            raise ValueError(f"expected {len(roles)} descriptors ({', '.join(r.value for r in roles)}), got {len(fds)}")
        received = dict(zip(roles, fds, strict=True))
        own: dict[str, Any] = {f.name: received.pop(f.metadata["fd"]) for f in _fd_fields()
                               if f.metadata["fd"] in received}
        return cls(**message["args"], **own), received


def _fd_fields() -> list[Field[Any]]:
    return [f for f in fields(WorkerArgs) if "fd" in f.metadata]


@functools.cache
def _types() -> dict[str, Any]:
    return get_type_hints(WorkerArgs)


def _option(f: Field[Any]) -> str:
    return "--" + f.name.replace("_", "-")
