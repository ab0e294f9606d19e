"""The project stage of a template: the project's own modules imported, and the fork that reuses them.

After the third-party preload (:mod:`supervisor.child.forkserver`), a project-stage template
imports the project's modules the workers imported, in their order, under an import
:class:`~supervisor.child.importgraph.Recorder` (the whole build at idle priority, see
:func:`idle_priority`). It reports, for the supervisor to
choose what a fork must drop (:mod:`supervisor.warm.stage`):

* ``imports``: what each project module imports of the project;
* ``files``: each file read at import (a module's source, a data file, a directory listed, the
  directory where an optional import was looked for), its signature when read and the modules
  that read it: a file whose signature differs later makes those modules stale. A file modified
  after the import began counts as changed from the start (it may have changed under the read);
* ``registries``: modules holding a registry, and ``fillers``: the modules whose re-run makes
  each stale (:mod:`supervisor.child.registries`; ``null``: any importer, ``[]``: always stale);
* ``failed``: modules that did not import here (a worker imports them itself).

A fork from it (:func:`enter`) drops the modules it is told to (and takes back the log handlers
they added, :mod:`supervisor.child.handlerlog`), imports the app module, and only then becomes a
worker. If that fresh import raises, the fork writes what it found out (the kept
modules in the traceback: the likely culprits) on its report pipe and exits with
:data:`EXIT_WARM_FAILED`; the supervisor then forks the worker from the third-party template.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.abc
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Collection, Iterator, Mapping, Sequence
from types import FrameType, ModuleType, TracebackType
from typing import Any

from supervisor.child.handlerlog import HandlerLog
from supervisor.child.importgraph import Recorder, drop, signature
from supervisor.child.registries import registries

PR_SET_PDEATHSIG = 1
EXIT_WARM_FAILED = 75  # EX_TEMPFAIL: the same start may succeed from the third-party template
STALE = [-1, -1, -1]  # the signature of a file that changed while it was being read
NO_BYTECODE = os.path.join(os.devnull, "no-bytecode")  # a bytecode cache that can never exist
# Files whose change says nothing about a module's state (its own source is recorded apart).
_NOT_DATA = (".py", ".pyc", ".pyo")


def _within(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def module_file(module: object) -> str | None:
    file = getattr(module, "__file__", None)
    return os.path.abspath(file) if isinstance(file, str) else None


class ReadLog:
    """Files and directories under the project read while the project is imported, each with the
    project modules whose code was running (an audit hook: it cannot be removed, so it is a flag
    check and nothing more once :meth:`active` ends)."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = list(roots)
        self.files: dict[str, set[str]] = {}
        self.on = False

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.on or event not in ("open", "os.listdir", "os.scandir"):
            return
        path = args[0] if args else None
        if not isinstance(path, str):
            return
        if event == "open":
            mode = args[1] if len(args) > 1 else None
            if isinstance(mode, str) and any(flag in mode for flag in "wax+"):
                return
        path = os.path.abspath(path)
        if not _within(path, self.roots) or path.endswith(_NOT_DATA) or "__pycache__" in path:
            return
        frame: FrameType | None = sys._getframe(1)
        if frame is None or frame.f_code.co_filename.startswith("<frozen importlib"):
            return  # the import system listing a directory, not the module's own code
        users = self.files.setdefault(path, set())
        while frame is not None:
            name = frame.f_globals.get("__name__")
            if isinstance(name, str):
                users.add(name)
            frame = frame.f_back

    @contextlib.contextmanager
    def active(self) -> Iterator[ReadLog]:
        sys.addaudithook(self.hook)
        self.on = True
        try:
            yield self
        finally:
            self.on = False


@contextlib.contextmanager
def idle_priority() -> Iterator[None]:
    """Low priority for the block, the previous policy after it: the build must not slow down the
    serving workers, and the workers forked later must not inherit it. ``SCHED_IDLE`` where it
    can be left again (root, or an ``RLIMIT_NICE`` that allows nice 0: the kernel lets a process
    out of SCHED_IDLE only then), else ``SCHED_BATCH``, which anyone may leave."""
    policy = None
    with contextlib.suppress(AttributeError, OSError):
        policy = os.sched_getscheduler(0)
        os.sched_setscheduler(0, os.SCHED_IDLE if _may_leave_idle() else os.SCHED_BATCH, os.sched_param(0))
    try:
        yield
    finally:
        if policy is not None:
            os.sched_setscheduler(0, policy, os.sched_param(0))  # OSError: the build fails, as it must


def _may_leave_idle() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NICE)[0]
    except (ImportError, AttributeError, OSError, ValueError):
        return False
    return soft == resource.RLIM_INFINITY or soft >= 20 - os.getpriority(os.PRIO_PROCESS, 0)


# The project modules this template imported (name -> file), for a fork to tell kept ones apart.
_PROJECT: dict[str, str | None] = {}
# The log handlers they added, for a fork to take back those of the modules it re-runs.
_HANDLERS = HandlerLog()


def project_modules(roots: Sequence[str], loaded: Mapping[str, ModuleType]) -> dict[str, ModuleType]:
    """The loaded modules that are the project's: a file under ``roots``, or a project package's."""
    found: dict[str, ModuleType] = {}
    for name, module in list(loaded.items()):
        if module is None or name in ("__main__", "__mp_main__"):
            continue
        file = module_file(module)
        parent = name.rpartition(".")[0]
        if (file is not None and _within(file, roots)) or (parent and parent in found):
            found[name] = module
    return found


class Blocker(importlib.abc.MetaPathFinder):
    """Refuses the libraries the template keeps out (a connection or a thread at import): a
    project module importing one fails here and is imported by each worker itself."""

    def __init__(self, blocked: Collection[str]) -> None:
        self.blocked = set(blocked)

    def refuses(self, name: str) -> bool:
        return name in self.blocked or any(name.startswith(bad + ".") for bad in self.blocked)

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if self.refuses(fullname):
            raise ModuleNotFoundError(f"{fullname} is kept out of the template", name=fullname)
        return None


def build(names: Sequence[str], roots: Sequence[str], worker_path: list[str],
          blocked: Collection[str] = ()) -> dict[str, Any]:
    """Import the project modules ``names`` as a worker would, and report what a fork needs."""
    started = time.monotonic()
    started_ns = time.time_ns()
    already = set(sys.modules)
    saved_path, saved_bytecode, saved_prefix = list(sys.path), sys.dont_write_bytecode, sys.pycache_prefix
    sys.path[:] = [os.getcwd(), *worker_path]  # what a worker's import sees (worker.run adds the cwd)
    # The sources themselves, never cached bytecode, and none written: a .pyc checks the
    # source's second and size only, and one written for the previous text of a file saved
    # twice in a second (same size) lives until the reload removes it, after the edit.
    sys.dont_write_bytecode = True
    sys.pycache_prefix = NO_BYTECODE
    blocker = Blocker(blocked)
    sys.meta_path.insert(0, blocker)
    recorder, reads = Recorder(), ReadLog(roots)
    failed: dict[str, str] = {}
    try:
        with recorder.active(), reads.active(), _HANDLERS.active():
            for name in names:
                if name in sys.modules:
                    continue
                try:
                    importlib.import_module(name)
                except BaseException as exc:  # the worker imports it itself, and sees the error there
                    failed[name] = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:200]
    finally:
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
        sys.pycache_prefix = saved_prefix
        sys.meta_path.remove(blocker)
    project = {name: module for name, module in project_modules(roots, sys.modules).items() if name not in already}
    _HANDLERS.keep_only(set(project))
    imports = recorder.graph(set(project))
    files: dict[str, list[Any]] = {}

    def record(path: str, users: set[str]) -> None:
        sig = signature(path)
        stale = sig is not None and sig[0] >= started_ns - 10_000_000  # a clock tick of margin
        entry = files.setdefault(path, [STALE if stale else (list(sig) if sig else None), []])
        entry[1] = sorted(set(entry[1]) | users)

    for name, module in project.items():
        file = module_file(module)
        if file is not None:
            record(file, {name})
            _PROJECT[name] = file
        else:
            _PROJECT[name] = None
    for path, users in reads.files.items():
        mine = users & set(project)
        if mine:
            record(path, mine)
    for importer, missing in recorder.missing.items():
        if importer in project:
            for name in missing:
                for directory in _search_dirs(name, [os.getcwd(), *worker_path], roots):
                    record(directory, {importer})
    found = registries(project, imports)
    cold = {name: registry.reason for name, registry in found.items()}
    fillers = {name: sorted(registry.fillers) if registry.fillers is not None else None
               for name, registry in found.items()}
    for importer, missing in recorder.missing.items():
        refused = sorted(name for name in missing if blocker.refuses(name))
        if importer in project and refused:  # it may have caught the ImportError: its state is not a worker's
            cold.setdefault(importer, f"it imports {refused[0]}, which is kept out of the template")
            fillers[importer] = []  # never kept warm at all
    return {"imports": {name: sorted(imported) for name, imported in imports.items()}, "files": files,
            "registries": cold, "fillers": fillers, "failed": failed,
            "modules": sorted(project), "seconds": round(time.monotonic() - started, 3)}


def _search_dirs(name: str, path: Sequence[str], roots: Sequence[str]) -> list[str]:
    """Where the import system looked for ``name`` under the project: a new file there may make
    an import that failed in the template succeed in a fresh process."""
    parent = name.rpartition(".")[0]
    if parent:
        package = sys.modules.get(parent)
        dirs = list(getattr(package, "__path__", None) or [])
    else:
        dirs = [entry for entry in path if entry]
    return [os.path.abspath(d) for d in dirs if _within(os.path.abspath(d), roots) and os.path.isdir(d)]


# ----- in the fork ---------------------------------------------------------------------------------

def _frames(exc: BaseException) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """File, code name and locals of every frame of ``exc``'s traceback and the exceptions it chains."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        tb: TracebackType | None = current.__traceback__
        while tb is not None:
            yield tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_name, tb.tb_frame.f_locals
            tb = tb.tb_next
        pending += [other for other in (current.__cause__, current.__context__) if other is not None]


def culprits(exc: BaseException, kept: Mapping[str, ModuleType]) -> list[str]:
    """The kept project modules the failure went through: their code in the traceback, or one of
    their objects (a global, or an attribute of a class of theirs) in a failing function's locals
    (a library's frame holding a kept ``MetaData``, say). A module body's locals are its globals,
    which hold whatever it imported: those say nothing."""
    by_file = {os.path.abspath(file): name for name, module in kept.items() if (file := module_file(module))}
    owners: dict[int, str] = {}
    for name, module in kept.items():
        for key, value in list(vars(module).items()):
            if key.startswith("__") or isinstance(value, (str, bytes, int, float, bool, type(None))) or \
                    getattr(value, "__module__", name) != name:
                continue  # shared by all (a small int, an interned name) or imported from elsewhere
            owners.setdefault(id(value), name)
            for attr in list(getattr(value, "__dict__", {}).values())[:100] if isinstance(value, type) else ():
                owners.setdefault(id(attr), name)
    found: dict[str, None] = {}
    for file, code, local in _frames(exc):
        if os.path.abspath(file) in by_file:
            found[by_file[os.path.abspath(file)]] = None
        if code == "<module>" or file.startswith("<frozen"):
            continue
        for value in list(local.values()):
            if id(value) in owners and not isinstance(value, ModuleType):
                found[owners[id(value)]] = None
    return list(found)


def enter(names: Sequence[str] | None, app: str, parent_pid: int, report_fd: int) -> None:
    """In a fork of a project-stage template, before it becomes a worker: drop the stale modules
    ``names`` and import the module of ``app`` fresh. On failure, report and exit (see the
    module's docstring). ``names`` None: not a project-stage fork, nothing to do."""
    if names is None:
        return
    # The app's code runs from here: die with the supervisor already (worker.run says it again).
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)
    _HANDLERS.take_back(set(drop(names)))  # the modules re-run add theirs again, as in a fresh process
    kept = {name: module for name in _PROJECT if (module := sys.modules.get(name)) is not None}
    module_name = app.partition(":")[0]
    cwd = os.getcwd()
    sys.path.insert(0, cwd)  # as worker.run does; taken out again, since it does
    try:
        importlib.import_module(module_name)
    except BaseException as exc:  # a SystemExit at import too: the fallback decides
        report = {"warm_failed": {"culprits": culprits(exc, kept),
                                  "error": (traceback.format_exception_only(type(exc), exc) or [""])[-1].strip()[:300]}}
        sys.stderr.write("warm start failed on the project-stage template "
                         f"({report['warm_failed']['error']}); starting again from the third-party template\n")
        sys.stderr.flush()
        if report_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(report_fd, b"\n" + json.dumps(report, separators=(",", ":")).encode() + b"\n")
        os._exit(EXIT_WARM_FAILED)
    finally:
        if sys.path and sys.path[0] == cwd:
            del sys.path[0]


def decode_failure(line: bytes) -> dict[str, Any] | None:
    """The ``warm_failed`` report of one report line; None for any other line."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    info = data.get("warm_failed") if isinstance(data, dict) else None
    return info if isinstance(info, dict) else None
