"""The spawner that forks workers from a warm template, falling back to fresh interpreters.

:class:`TemplateSpawner` is a drop-in ``spawn(spec, on_line) -> WorkerProcess`` for the worker
slots: first starts, crash restarts, rolling restarts and every instance of ``[app] workers`` all
come through it. It forks from the current template when the template fits (same interpreter,
directory and environment, dependencies unchanged), and otherwise spawns a fresh interpreter as
:func:`~supervisor.spawn.process.spawn_worker` always did, so a missing, stale, dead or broken
template costs speed, never a start.

It learns what to preload from the workers' module reports (:mod:`supervisor.warm.preload`),
and rebuilds the template in the background, without a gap (the old one forks until the new one
is built), when a worker imported a library the template lacks, the workers' settings changed,
``pyproject.toml``, a lock file or ``requirements*.txt`` changed, or a package was installed or
removed. Those last two are checked when a worker is about to start (a few ``stat`` calls), so
nothing watches anything at rest. A module found unsafe to fork from is left out, with a log line.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from supervisor.child.projectstage import decode_failure
from supervisor.child.report import decode_report
from supervisor.config.settings import Settings
from supervisor.contract import Plugin
from supervisor.reload.plan import watched_roots
from supervisor.spawn.process import LineSink, WorkerProcess, WorkerSpec, spawn_worker
from supervisor.systemd.reaper import become_subreaper
from supervisor.warm.early import EarlyWorker, changed_since
from supervisor.warm.preload import Learned, learn, missing, preload_list
from supervisor.warm.project import ProjectStage
from supervisor.warm.stage import Choice
from supervisor.warm.template import (
    Built,
    Failed,
    NotOurChild,
    Plan,
    TemplateBroken,
    TemplateProcess,
    Unsafe,
    roomy_pipe,
    template_key,
)

logger = logging.getLogger("supervisor")

BUILD_TIMEOUT = 120.0  # seconds a template may take to import everything (a cold disk, a big app)
MAX_FAILURES = 3  # templates that failed or died in a row before forking is given up
MAX_UNSAFE_ROUNDS = 10  # modules left out, one rebuild each, before one build is given up
# What every forked worker runs; a spawned one runs it as __main__, so its report never names it.
WORKER_MODULE = "supervisor.child.worker"


class PlainSpawner(Protocol):
    def __call__(self, spec: WorkerSpec, on_line: LineSink, report_fd: int = -1) -> WorkerProcess: ...


class TemplateStarter(Protocol):
    def __call__(self, spec: WorkerSpec, plan: Plan, on_line: LineSink, dirs: Sequence[Path]) -> TemplateProcess: ...


def project_roots(settings: Settings) -> list[Path]:
    """Where the project's own modules live: the watched paths, the project and the app directory."""
    app_dir = (settings.project_dir / settings.config.app.app_dir).resolve()
    roots = watched_roots(settings) if settings.reload else []
    return list(dict.fromkeys([*roots, settings.project_dir, app_dir]))


class TemplateSpawner:
    """See the module's docstring. ``roots()`` says where the project's own modules live."""

    def __init__(self, roots: Callable[[], Sequence[Path]], *, plain: PlainSpawner = spawn_worker,
                 start: TemplateStarter = TemplateProcess.start, build_timeout: float = BUILD_TIMEOUT,
                 subreaper: Callable[[], bool] = become_subreaper, early: EarlyWorker | None = None,
                 on_stale: Callable[[set[str]], None] = lambda files: None,
                 on_choice: Callable[[Choice], None] = lambda choice: None, project_stage: bool = False) -> None:
        self._roots = roots
        self._early = early  # the first worker, forked at start (supervisor.warm.early)
        self._on_stale = on_stale  # files it may have loaded before they changed: reload them
        self._plain = plain
        self._start = start
        self._build_timeout = build_timeout
        self._subreaper = subreaper
        self.template: TemplateProcess | None = None
        self._candidate: TemplateProcess | None = None
        self._spec: WorkerSpec | None = None  # the latest spec: the next template is built for it
        self._entry: dict[str, str | None] | None = None
        self._order: list[str] = []  # modules from outside the project, as the workers imported them
        self._seen: set[str] = set()
        self._project: set[str] = set()
        self.unsafe: dict[str, str] = {}  # module -> why it stays out of the template
        self.disabled: str | None = None  # why forking was given up, for good
        self.forks = 0
        self._failures = 0
        self._fell_back = False  # said already that workers start fresh until the next template
        self._wanted = False
        self._wanted_template = False  # the third-party template, as against only the project stage
        self._wake: asyncio.Event | None = None
        self._readers: set[asyncio.Future[None]] = set()
        self._closing: set[asyncio.Future[None]] = set()
        self._alive: set[TemplateProcess] = set()  # every template started and not yet closed
        self._on_choice = on_choice  # which template started the latest worker, and why (the status)
        self._project_order: list[str] = []  # the project's modules, as the workers imported them
        self.project = ProjectStage(self._want_project, self._close_later, self._track)
        if not project_stage:
            self.project.disabled = "[reload] project_stage = false"

    def plugin(self) -> Plugin:
        return Plugin("template", service=self.serve)

    # ----- the Spawner ---------------------------------------------------------------------------

    def __call__(self, spec: WorkerSpec, on_line: LineSink) -> WorkerProcess:
        self._spec = spec
        early, self._early = self._early, None
        claimed = early.claim(spec, on_line) if early is not None else None
        if claimed is not None and early is not None:
            # What it has from the supervisor is not what the app imports; the worker's own
            # modules come with the worker module, which every template preloads.
            self._read_reports(claimed[1], omit=early.inherited, since=early.since)
            self._on_choice(Choice("fresh", "the first worker, forked as the supervisor started"))
            return claimed[0]
        forked = self.project.fork(spec, on_line, self._roots())
        if isinstance(forked, tuple):
            self.forks += 1
            self._read_reports(forked[1], pid=forked[0].pid)
            self._on_choice(forked[2])
            return forked[0]
        why_not = forked.why if forked is not None else self.project.fallback_reason() or \
            (f"project stage off: {self.project.disabled}" if self.project.disabled
             else "the project stage is not built yet")
        template = self._usable(spec)
        if template is not None:
            try:
                proc, report = template.fork(spec, on_line)
            except TemplateBroken as exc:
                self._lost(template, f"a fork request failed ({exc})")
            except NotOurChild as exc:
                self._disable(f"{exc} (the supervisor could not become a child subreaper)")
            else:
                self.forks += 1
                self._failures = 0
                self.project.started(proc.pid)
                self._read_reports(report, pid=proc.pid)
                self._on_choice(Choice("third-party", why_not))
                return proc
        if not self._fell_back and self.disabled is None and self._order:
            self._fell_back = True
            logger.info("template: not ready; workers start as fresh interpreters until it is")
        read_end, write_end = roomy_pipe()
        try:
            proc = self._plain(spec, on_line, report_fd=write_end)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self.project.started(proc.pid)
        self._read_reports(read_end, pid=proc.pid)
        self._on_choice(Choice("fresh", self.disabled or "no template is ready yet"))
        return proc

    def retry(self, pid: int) -> str | None:
        """Worker ``pid`` exited before it served: why the slot should start another at once
        (a project-stage fork that failed: see supervisor.warm.project), or None."""
        return self.project.retry(pid)

    def _usable(self, spec: WorkerSpec) -> TemplateProcess | None:
        template = self.template
        if self.disabled is not None or template is None:
            return None
        if template.key != template_key(spec):
            self._replace(template, "the workers' settings changed (environment, directory or interpreter)")
            return None
        changed = template.dependencies_changed(self._roots())
        if changed is not None:
            self._replace(template, changed)
            return None
        return template

    # ----- learning what to preload ------------------------------------------------------------

    def _read_reports(self, fd: int, omit: frozenset[str] = frozenset(), since: float | None = None,
                      pid: int = -1) -> None:
        reader = asyncio.ensure_future(self._reports(fd, omit, since, pid))
        self._readers.add(reader)
        reader.add_done_callback(self._readers.discard)

    async def _reports(self, fd: int, omit: frozenset[str], since: float | None, pid: int) -> None:
        """Learn from each report; ``since``: check the first for project files changed since then
        (a worker that loaded the project before the file watches were in place)."""
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader(limit=1 << 24)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream),
                                                    os.fdopen(fd, "rb", buffering=0))
        served = False
        try:
            while line := await stream.readline():
                modules = decode_report(line.strip())
                if not modules:
                    failure = decode_failure(line.strip())
                    if failure is not None:
                        self.project.report(pid, failure)
                    continue
                if not served:
                    served = True
                    self.project.served(pid)
                modules = {name: file for name, file in modules.items() if name not in omit}
                learned = self.learn(modules)
                if since is not None:
                    files = [file for name in learned.project if (file := modules.get(name)) is not None]
                    changed = changed_since(files, since)
                    if changed:
                        logger.info("reload: %s changed while the first worker was starting; reloading it",
                                    ", ".join(sorted(changed)))
                        self._on_stale(set(changed))
                    since = None
        finally:
            transport.close()
            self.project.ended(pid, served)

    def learn(self, modules: dict[str, str | None]) -> Learned:
        """Take in one worker's module report; ask for a new template if it is worth one."""
        if self._entry is None:
            spec = importlib.util.find_spec(WORKER_MODULE)
            self._entry = {WORKER_MODULE: spec.origin if spec is not None else None}
        learned = learn({**self._entry, **modules}, self._roots())
        self._project_order += [name for name in modules if name in learned.project and name not in self._project]
        self._project |= learned.project
        fresh = [name for name in learned.outside if name not in self._seen]
        self._seen.update(fresh)
        self._order.extend(fresh)
        template = self.template
        if self.disabled is not None:
            return learned
        # A template being built has every module seen before it started: only news need another.
        building_enough = self._candidate is not None and not fresh
        if template is None or template.built_info is None:
            if not building_enough:
                self._want()
            return learned
        info = template.built_info
        wrong = sorted(learned.project & (info.loaded - info.own))
        if wrong:
            self._replace(template, f"it had loaded {wrong[0]!r}, which the workers import from the project")
            return learned
        lacking = missing(learned, info.loaded, info.failed, self.unsafe)
        if lacking and not building_enough:
            shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
            logger.info("template: a worker imported %d module(s) the template lacks (%s); rebuilding it "
                        "in the background", len(lacking), shown)
            self._want()
        return learned

    # ----- building ------------------------------------------------------------------------------

    def _want(self) -> None:
        self._wanted = True
        self._wanted_template = True
        if self._wake is not None:
            self._wake.set()

    async def serve(self) -> None:
        """The plugin's service: build templates when wanted, one at a time; end them at the end."""
        self._wake = asyncio.Event()
        if not self._subreaper():
            self._disable("the supervisor cannot become a child subreaper, so forked workers would not be its children")
        try:
            while True:
                if not self._wanted:
                    await self._wake.wait()
                self._wake.clear()
                self._wanted = False
                if self.disabled is None and self._spec is not None and self._order:
                    if self.template is None or self._wanted_template:
                        self._wanted_template = False
                        await self._build(self._spec)
                    if self.project.wanted and self.template is not None:
                        await self._build_project(self._spec)
        finally:
            if self._early is not None:
                self._early.close()  # never claimed: the supervisor stopped before any worker started
            for reader in list(self._readers):
                reader.cancel()
            ending = [template.close() for template in self._alive]
            await asyncio.gather(*ending, *self._closing, return_exceptions=True)

    async def _build(self, spec: WorkerSpec) -> None:
        for _ in range(MAX_UNSAFE_ROUNDS):
            roots = self._roots()
            plan = Plan(tuple(preload_list(self._order, self.unsafe)), frozenset(self._project),
                        tuple(str(root) for root in roots))
            try:
                candidate = self._start(spec, plan, self._relay, roots)
            except OSError as exc:
                self._failed(f"it could not be started: {exc.strerror or exc}")
                return
            self._track(candidate)
            self._candidate = candidate
            outcome = await candidate.built(self._build_timeout)
            self._candidate = None
            match outcome:
                case Built():
                    self._install(candidate, outcome)
                    return
                case Unsafe(module, reason, _):
                    logger.warning("template: kept %s out of the template: %s; workers import it themselves",
                                   module, reason)
                    self.unsafe[module] = reason
                    await candidate.close()
                case Failed(reason):
                    await candidate.close()
                    self._failed(reason)
                    return
        self._failed(f"more than {MAX_UNSAFE_ROUNDS} modules were unsafe to preload")

    async def _build_project(self, spec: WorkerSpec) -> None:
        roots = self._roots()
        plan = Plan(tuple(preload_list(self._order, self.unsafe)), frozenset(self._project),
                    tuple(str(root) for root in roots), project=tuple(self._project_order),
                    blocked=tuple(sorted(self.unsafe)))
        await self.project.build(lambda p: self._start(spec, p, self._relay, roots), plan, self._build_timeout)

    def _want_project(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _track(self, template: TemplateProcess) -> None:
        """Whatever happens next (a stop in the middle of a build), serve() ends it."""
        self._alive.add(template)

        def exited(_: WorkerProcess) -> None:
            self._alive.discard(template)

        template.proc.add_exit_callback(exited)

    def _install(self, candidate: TemplateProcess, built: Built) -> None:
        failed = f", {len(built.failed)} not importable there" if built.failed else ""
        logger.info("template: pid %d ready in %.2fs, %d modules preloaded%s", candidate.pid, built.seconds,
                    len(built.loaded), failed)
        if self._spec is not None and template_key(self._spec) != candidate.key:
            self._want()  # the settings changed while it was built: the next one fits them
        old, self.template = self.template, candidate
        self._fell_back = False
        if self._project_order and self.project.template is None:
            self.project.want()  # a worker has served: the project's modules are known
        candidate.proc.add_exit_callback(lambda _: self._exited(candidate))
        if old is not None:
            self._close_later(old)

    def _relay(self, pid: int, line: str) -> None:
        logger.info("template %d | %s", pid, line)

    # ----- losing a template ---------------------------------------------------------------------

    def _replace(self, template: TemplateProcess, why: str) -> None:
        """The template no longer fits: workers start fresh until a new one is built."""
        logger.info("template: %s; rebuilding it in the background (workers start as fresh interpreters "
                    "meanwhile)", why)
        self.template = None
        self._fell_back = True
        self._close_later(template)
        self._want()

    def _lost(self, template: TemplateProcess, why: str) -> None:
        self.template = None
        self._close_later(template)
        self._failed(f"pid {template.pid}: {why}")

    def _exited(self, template: TemplateProcess) -> None:
        if template is self.template and not template.closed:
            self.template = None
            code = template.proc.popen.returncode
            how = f"killed by signal {-code}" if isinstance(code, int) and code < 0 else f"exit code {code}"
            self._failed(f"pid {template.pid} exited ({how})")

    def _failed(self, reason: str) -> None:
        self._failures += 1
        if self._failures >= MAX_FAILURES:
            self._disable(f"the template failed {self._failures} times in a row, last: {reason}")
            return
        self._fell_back = True
        logger.warning("template: %s; rebuilding it in the background (workers start as fresh interpreters "
                       "meanwhile)", reason)
        self._want()

    def _disable(self, reason: str) -> None:
        self.project.disable(reason)
        if self.disabled is None:
            self.disabled = reason
            logger.warning("template: %s; workers start as fresh interpreters from now on", reason)
        if self.template is not None:
            self._close_later(self.template)
            self.template = None

    def _close_later(self, template: TemplateProcess) -> None:
        closing = asyncio.ensure_future(template.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

