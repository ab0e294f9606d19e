"""The template process: ``python -m supervisor.child.forkserver``, started by the supervisor, never by hand.

It imports the modules the app's workers use from outside the project (uvicorn, Starlette,
SQLAlchemy, ...: the list is learned, see :mod:`supervisor.warm.preload`), then forks a fresh
worker for each request. The fork imports only the project's own code and serves on the held
socket, reporting readiness as a spawned worker does; a reload then costs the project's imports,
not a new interpreter importing every library again.

Why a fork server of our own, over a Unix socket with ``SCM_RIGHTS``, and not :mod:`multiprocessing`'s
forkserver with ``set_forkserver_preload``:

* **Parentage.** A worker must be the supervisor's own child: it is watched through a pidfd, its
  exit code feeds the restart policy, and it is reaped only after its process group was killed.
  multiprocessing's server is the parent of what it forks and reports exits over its own pipes.
  Here each fork is a double fork: the intermediate process exits at once, so the worker is
  re-parented to the nearest child subreaper, which is the supervisor.
* **Per-worker descriptors.** Each worker gets its own stdout, stderr, ready and report pipes and
  the listening socket, passed with the request. A multiprocessing child inherits the server's
  stdio and runs a pickled object inside multiprocessing's bootstrap.
* **Two at once.** A rebuilt template starts while the old one still serves forks; the
  multiprocessing forkserver is one per interpreter, its preload list fixed when it starts.
* **Checked preloading.** Each module is imported on its own and checked (no thread left
  running, no socket or event loop left open, no project module pulled in); multiprocessing
  ignores a failed preload and checks nothing.

The protocol, on one ``SOCK_SEQPACKET`` socket, one JSON object per message: the supervisor sends
the plan (``{"plan": {...}}``); the template answers ``{"built": {...}}`` and writes ``ready`` on its
ready pipe, or ``{"unsafe": {...}}`` and exits with :data:`EXIT_UNSAFE`. Then each
``{"fork": {...}}`` request, a :meth:`~supervisor.child.args.WorkerArgs.to_message` and the worker's
environment carrying the descriptors it names (:data:`FORK_FDS` at least), is answered ``{"pid": N}`` or
``{"error": "..."}``. The supervisor closing the socket ends the template.

The forked worker starts a session of its own and waits, before anything else, until the
supervisor has confirmed it is its child and watches it (``go`` on its go pipe). Then it moves
to its own stdio, environment and ``sys.path``, reseeds ``random``, and runs
:func:`supervisor.child.worker.run`, which sets ``PR_SET_PDEATHSIG`` against the supervisor and
starts a new event loop. The template itself never runs an event loop or a thread, and only
standard-library modules (and our light ``args`` and ``osutil``) are imported here before the plan's.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from supervisor.child import projectstage
from supervisor.child.args import Fd, WorkerArgs
from supervisor.child.osutil import die_with, thread_count

EXIT_UNSAFE = 3
# The descriptors a fork request carries: the worker's (WorkerArgs.to_message), its stdio and go pipes.
FORK_FDS = frozenset({Fd.LISTEN, Fd.READY, Fd.STDOUT, Fd.STDERR, Fd.GO})
# One datagram of a message: well under the socket buffer's default size.
CHUNK = 1 << 16
MORE, LAST = b"+", b"."
GO = b"go"
# Open descriptors a module must not leave behind at import: a connection, an event loop.
_UNSAFE_FD_KINDS = (("socket:", "an open socket (a connection?)"),
                    ("anon_inode:[eventpoll]", "an event loop (epoll)"))


def send(control: socket.socket, message: Mapping[str, Any]) -> None:
    """Send one JSON message, in chunks: a plan or a module list can outgrow one datagram."""
    data = json.dumps(message, separators=(",", ":")).encode()
    while len(data) > CHUNK:
        control.send(MORE + data[:CHUNK])
        data = data[CHUNK:]
    control.send(LAST + data)


def receive(control: socket.socket) -> Any:
    """The next message :func:`send` sent; None when the socket was closed."""
    parts = []
    while True:
        chunk = control.recv(CHUNK + 1)
        if not chunk:
            return None
        parts.append(chunk[1:])
        if chunk[:1] == LAST:
            return json.loads(b"".join(parts))


def listing_digest(directory: str) -> str:
    """What an import directory holds, in short: installing, upgrading or removing a package
    changes it (a ``*.dist-info`` name carries the version), writing bytecode does not."""
    try:
        names = sorted(name for name in os.listdir(directory) if name != "__pycache__")
    except OSError:
        return ""
    return hashlib.blake2b("\0".join(names).encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


# ----- preloading ---------------------------------------------------------------------------------

def _within(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _fds() -> dict[int, str]:
    """Open descriptors and what each refers to (by target, not number: the one listing the
    directory is reused by whatever opens next)."""
    found = {}
    try:
        numbers = os.listdir("/proc/self/fd")
    except OSError:
        return {}
    for number in numbers:
        try:
            found[int(number)] = os.readlink(f"/proc/self/fd/{number}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return found


def unsafe_leftovers(new_modules: Iterable[str], new_fds: Iterable[str], project_names: set[str],
                     roots: Sequence[str]) -> str | None:
    """Why what an import left behind makes it unsafe to fork from, or None."""
    if thread_count() > 1:
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        return f"a thread was still running after importing it ({', '.join(names) or 'a native thread'})"
    for target in new_fds:
        for prefix, what in _UNSAFE_FD_KINDS:
            if target.startswith(prefix):
                return f"it left {what} open"
    for name in new_modules:
        if name in ("__main__", "__mp_main__"):
            continue  # this module itself, under another name (multiprocessing makes __mp_main__)
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if name in project_names or (isinstance(file, str) and _within(os.path.abspath(file), roots)):
            return f"it imports the project's own module {name!r}, which must be imported fresh by each worker"
    return None


@dataclass(frozen=True)
class Preloaded:
    failed: dict[str, str]
    unsafe: dict[str, Any] | None  # {"module", "reason", "pulled"}


def preload(names: Sequence[str], project_names: set[str], roots: Sequence[str]) -> Preloaded:
    """Import ``names`` in order, each checked on its own; stop at the first unsafe one."""
    failed: dict[str, str] = {}
    for name in names:
        if name in sys.modules:
            continue
        modules_before, fds_before = set(sys.modules), _fds()
        try:
            importlib.import_module(name)
        except BaseException as exc:  # the worker imports it itself, and sees the error there
            failed[name] = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:200]
        new = [m for m in sys.modules if m not in modules_before]
        opened = [target for fd, target in _fds().items() if fds_before.get(fd) != target]
        reason = unsafe_leftovers(new, opened, project_names, roots)
        if reason is not None:
            return Preloaded(failed, {"module": name, "reason": reason, "pulled": new})
    return Preloaded(failed, None)


# ----- forking --------------------------------------------------------------------------------------

@dataclass
class WorkerJob:
    """What the forked worker runs, once it is out of the template's loop."""

    args: WorkerArgs
    pipes: dict[Fd, int]  # its stdio and go pipes
    environ: dict[str, str]
    control: socket.socket
    sys_path: list[str]
    drop: list[str] | None = None  # a project-stage fork's stale modules (supervisor.child.projectstage)

    def run(self) -> int:
        os.setsid()  # its own session and process group, as a spawned worker's
        go = os.read(self.pipes[Fd.GO], len(GO))
        if go != GO:  # the supervisor gave up on it (or died): it must not serve
            os._exit(1)
        os.close(self.pipes[Fd.GO])
        self.control.close()
        for fd, role in ((1, Fd.STDOUT), (2, Fd.STDERR)):
            os.dup2(self.pipes[role], fd)
            os.close(self.pipes[role])
        os.environ.clear()
        os.environ.update(self.environ)
        sys.path[:] = self.sys_path
        importlib.invalidate_caches()  # directory listings cached in the template may be stale
        # The random module reseeds itself at fork (os.register_at_fork); say it here too, as
        # the fresh interpreter it replaces would have a seed of its own.
        if "random" in sys.modules:
            sys.modules["random"].seed()
        projectstage.enter(self.drop, self.args.app, self.args.parent_pid, self.args.report_fd)
        from supervisor.child import worker

        sys.argv[:] = [worker.__file__ or "worker", *self.args.to_argv()]
        return worker.run(self.args)


def fork_request(request: Mapping[str, Any], fds: Sequence[int]) -> tuple[WorkerArgs, dict[Fd, int]]:
    """The worker's arguments and its other pipes from one fork request; ValueError if it lacks one."""
    args, pipes = WorkerArgs.from_message(request, fds)
    lacking = FORK_FDS - set(args.descriptors()) - set(pipes)
    if lacking:
        raise ValueError(f"a fork request without its {', '.join(sorted(role.value for role in lacking))} descriptor")
    return args, pipes


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 64):
        chunks.append(chunk)
    return b"".join(chunks)


def fork_worker(request: Mapping[str, Any], fds: Sequence[int], control: socket.socket,
                sys_path: list[str]) -> int | WorkerJob:
    """Double-fork a worker; return its pid here, or the job to run in the worker itself.

    The intermediate process exits at once, so the worker is re-parented to the supervisor (a
    child subreaper) before the supervisor even learns its pid.
    """
    args, pipes = fork_request(request, fds)
    pid_r, pid_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(pid_r)
            pid = os.fork()
            if pid == 0:
                os.close(pid_w)
                return WorkerJob(args, pipes, dict(request["environ"]), control, sys_path, request.get("drop"))
            os.write(pid_w, str(pid).encode())
        except BaseException:  # never return into the template's loop from here
            os._exit(1)
        os._exit(0)
    os.close(pid_w)
    try:
        data = _read_all(pid_r)
    finally:
        os.close(pid_r)
    os.waitpid(middle, 0)
    if not data:
        raise OSError("the intermediate process could not fork the worker")
    return int(data)


def serve(control: socket.socket, sys_path: list[str]) -> WorkerJob | None:
    """Answer fork requests until the supervisor closes the socket (None), or, in a forked
    worker, return its job."""
    while True:
        # A fork request is one datagram: the descriptors ride on it.
        message, fds, _, _ = socket.recv_fds(control, CHUNK + 1, len(Fd), socket.MSG_CMSG_CLOEXEC)
        if not message:
            return None
        try:
            request = json.loads(message[1:])["fork"]
            result = fork_worker(request, fds, control, sys_path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            send(control, {"error": f"{type(exc).__name__}: {exc}"})
            result = -1
        if isinstance(result, WorkerJob):
            return result
        for fd in fds:  # the worker has its copies; ours would keep its pipes from ever closing
            os.close(fd)
        if result > 0:
            send(control, {"pid": result})


# ----- the template's life --------------------------------------------------------------------------

def build(control: socket.socket, plan: dict[str, Any]) -> list[str] | None:
    """Preload the plan; report it. Return the ``sys.path`` a worker starts with, None if unsafe."""
    started = time.monotonic()
    own = sorted(sys.modules)  # the interpreter's and this module's: not the plan's doing
    roots = [os.path.normpath(root) for root in plan["roots"]]
    # What a spawned worker would have; the template itself must not find the project's modules
    # (a preloaded library importing one would otherwise serve it stale).
    worker_path = list(sys.path)
    sys.path[:] = [entry for entry in sys.path
                   if entry and not _within(os.path.abspath(entry), roots) and entry != os.getcwd()]
    dirs = {entry: listing_digest(entry) for entry in worker_path
            if entry and os.path.isdir(entry) and not _within(os.path.abspath(entry), roots)}
    # A project-stage template is built in the background while workers serve: at idle priority,
    # all of it (restored before it forks anyone: a fork inherits its scheduling policy).
    idle = projectstage.idle_priority() if plan.get("project") else contextlib.nullcontext()
    try:
        with idle:
            result = preload(plan["preload"], set(plan["project_names"]), roots)
            project = _project_stage(plan, roots, worker_path) if result.unsafe is None else None
    except OSError as exc:  # the priority could not be restored: its forks would inherit idle priority
        send(control, {"unsafe": {"module": "the project's modules", "reason": str(exc), "pulled": []}})
        return None
    if result.unsafe is not None:
        send(control, {"unsafe": result.unsafe})
        return None
    if project is not None and "unsafe" in project:
        send(control, project)
        return None
    gc.collect()
    gc.freeze()  # objects the workers inherit stay out of their collections: fewer copied pages
    send(control, {"built": {"loaded": sorted(sys.modules), "own": own, "failed": result.failed,
                             "path_listings": dirs, "seconds": round(time.monotonic() - started, 3),
                             **({"project": project} if project is not None else {})}})
    return worker_path


def build_and_serve(control: socket.socket, ready_fd: int) -> WorkerJob | int:
    """The template's life: receive the plan, preload it, say so, answer fork requests. Returns
    the exit code of the template, or (in a forked worker) the job it runs."""
    message = receive(control)
    if message is None:
        return 0
    sys_path = build(control, message["plan"])
    if sys_path is None:
        return EXIT_UNSAFE
    os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    job = serve(control, sys_path)
    return 0 if job is None else job


def _project_stage(plan: dict[str, Any], roots: list[str], worker_path: list[str]) -> dict[str, Any] | None:
    """A project-stage template also imports the project's modules (see
    :mod:`supervisor.child.projectstage`), checked as a whole as each preloaded module is."""
    if not plan.get("project"):
        return None
    # uvicorn's logging set up first, as the worker does before it imports the app: what the
    # project's modules do to uvicorn's loggers at import survives (the worker, finding its app
    # imported, leaves logging as it is).
    from supervisor.child.worker import configure_logging

    logging_plan = plan.get("logging") or {}
    configure_logging(logging_plan.get("log_level", "info"), logging_plan.get("log_config", ""))
    fds_before = _fds()
    project = projectstage.build(plan["project"], roots, worker_path, plan.get("blocked", ()))
    opened = [target for fd, target in _fds().items() if fds_before.get(fd) != target]
    reason = unsafe_leftovers([], opened, set(), roots)
    if reason is not None:
        return {"unsafe": {"module": "the project's modules", "reason": reason, "pulled": []}}
    return project


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supervisor.child.forkserver")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    if not die_with(args.parent_pid):  # the template holds nothing worth a graceful end
        return 1
    control = socket.socket(fileno=args.control_fd)
    control.set_inheritable(False)
    os.set_inheritable(args.ready_fd, False)
    try:
        job = build_and_serve(control, args.ready_fd)
    except (BrokenPipeError, ConnectionResetError):
        # The supervisor closed the control socket (or the ready pipe) while we built or served:
        # it stopped, or gave up on this template. A normal end, not a crash to print.
        return 0
    if isinstance(job, int):
        return job
    # In the forked worker from here on: leave the template's frames behind, so the worker ends
    # like any interpreter (atexit handlers, non-daemon threads joined, buffers flushed).
    return job.run()


if __name__ == "__main__":
    sys.exit(main())
