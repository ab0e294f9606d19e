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

One job per part: this module chooses how each worker starts and reads the workers' reports;
:class:`~supervisor.warm.preload.Learner` keeps what they taught; :class:`~supervisor.warm.builder.TemplateBuilder`
builds, replaces and gives up templates; :class:`~supervisor.warm.project.ProjectStage` does the same
for the project-stage template (the project's own modules imported too), forked from first.
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
from supervisor.warm.builder import BUILD_TIMEOUT, MAX_FAILURES, TemplateBuilder, TemplateStarter
from supervisor.warm.early import EarlyWorker, changed_since
from supervisor.warm.preload import Learned, Learner
from supervisor.warm.project import ProjectStage
from supervisor.warm.stage import Choice
from supervisor.warm.template import NotOurChild, Plan, TemplateBroken, TemplateProcess, roomy_pipe

__all__ = ["MAX_FAILURES", "WORKER_MODULE", "TemplateSpawner", "project_roots"]

logger = logging.getLogger("supervisor")

# What every forked worker runs; a spawned one runs it as __main__, so its report never names it.
WORKER_MODULE = "supervisor.child.worker"


class PlainSpawner(Protocol):
    def __call__(self, spec: WorkerSpec, on_line: LineSink, report_fd: int = -1) -> WorkerProcess: ...


def project_roots(settings: Settings) -> list[Path]:
    """Where the project's own modules live: the watched paths, the project and the app directory."""
    app_dir = settings.app_dir()
    roots = watched_roots(settings) if settings.reload else []
    return list(dict.fromkeys([*roots, settings.project_dir, app_dir]))


def worker_module_entry() -> dict[str, str | None]:
    spec = importlib.util.find_spec(WORKER_MODULE)
    return {WORKER_MODULE: spec.origin if spec is not None else None}


class TemplateSpawner:
    """See the module's docstring: it chooses how each worker starts, and reads the workers'
    module reports; the :class:`~supervisor.warm.preload.Learner` keeps what they taught, the
    :class:`~supervisor.warm.builder.TemplateBuilder` builds templates. ``roots()`` says where the
    project's own modules live."""

    def __init__(self, roots: Callable[[], Sequence[Path]], *, plain: PlainSpawner = spawn_worker,
                 start: TemplateStarter = TemplateProcess.start, build_timeout: float = BUILD_TIMEOUT,
                 subreaper: Callable[[], bool] = become_subreaper, early: EarlyWorker | None = None,
                 on_stale: Callable[[set[str]], None] = lambda files: None,
                 on_choice: Callable[[Choice], None] = lambda choice: None, project_stage: bool = False) -> None:
        self._roots = roots
        self._early = early  # the first worker, forked at start (supervisor.warm.early)
        self._on_stale = on_stale  # files it may have loaded before they changed: reload them
        self._plain = plain
        self.learner = Learner(worker_module_entry)
        self.builder = TemplateBuilder(roots, self.learner, start=start, build_timeout=build_timeout,
                                       subreaper=subreaper)
        self._readers: set[asyncio.Future[None]] = set()
        self._build_timeout = build_timeout
        self._on_choice = on_choice  # which template started the latest worker, and why (the status)
        self._project_order: list[str] = []  # the project's modules, as the workers imported them
        self.project = ProjectStage()
        if not project_stage:
            self.project.disabled = "[reload] project_stage = false"

    @property
    def template(self) -> TemplateProcess | None:
        """The template workers fork from now, if any."""
        return self.builder.template

    @property
    def disabled(self) -> str | None:
        """Why forking was given up, for good; None while it is not."""
        return self.builder.disabled

    @property
    def unsafe(self) -> dict[str, str]:
        """Module -> why it stays out of the template."""
        return self.learner.unsafe

    def plugin(self) -> Plugin:
        return Plugin("template", service=self.serve)

    # ----- the Spawner ---------------------------------------------------------------------------

    def __call__(self, spec: WorkerSpec, on_line: LineSink) -> WorkerProcess:
        builder = self.builder
        builder.spec = spec
        early, self._early = self._early, None
        claimed = early.claim(spec, on_line) if early is not None else None
        if claimed is not None and early is not None:
            # What it has from the supervisor is not what the app imports; the worker's own
            # modules come with the worker module, which every template preloads.
            self._read_reports(claimed[1], omit=early.inherited, since=early.since)
            self._on_choice(Choice("fresh", "the first worker, forked as the supervisor started"))
            return claimed[0]
        forked = self.project.fork(spec, on_line, self._roots()) if builder.disabled is None else None
        if isinstance(forked, tuple):
            self._read_reports(forked[1], pid=forked[0].pid)
            self._on_choice(forked[2])
            return forked[0]
        why_not = forked.why if forked is not None else self.project.fallback_reason() or \
            (f"project stage off: {self.project.disabled}" if self.project.disabled
             else "the project stage is not built yet")
        template = builder.usable(spec)
        if template is not None:
            try:
                proc, report = template.fork(spec, on_line)
            except TemplateBroken as exc:
                builder.lost(template, f"a fork request failed ({exc})")
            except NotOurChild as exc:
                builder.disable(f"{exc} (the supervisor could not become a child subreaper)")
                self.project.disable(str(builder.disabled))
            else:
                builder.forked()
                self.project.started(proc.pid)
                self._read_reports(report, pid=proc.pid)
                self._on_choice(Choice("third-party", why_not))
                return proc
        if not builder.fell_back and builder.disabled is None and self.learner.order:
            builder.fell_back = True
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
        self._on_choice(Choice("fresh", builder.disabled or "no template is ready yet"))
        return proc

    def retry(self, pid: int) -> str | None:
        """Worker ``pid`` exited before it served: why the slot should start another at once
        (a project-stage fork that failed: see supervisor.warm.project), or None."""
        return self.project.retry(pid)

    async def serve(self) -> None:
        """The plugin's service: the builder's, until the end; then end what is left."""
        try:
            await asyncio.gather(self.builder.run(), self.project.run(self._project_job, self._build_timeout))
        finally:
            if self._early is not None:
                self._early.close()  # never claimed: the supervisor stopped before any worker started
            for reader in list(self._readers):
                reader.cancel()
            await asyncio.gather(self.builder.end(), self.project.end())

    def _project_job(self) -> tuple[Callable[[Plan], TemplateProcess], Plan] | None:
        """How to start the next project-stage template, once the third-party one is built (what
        the workers import from outside the project is known then)."""
        builder, spec = self.builder, self.builder.spec
        if builder.disabled is not None:
            self.project.disable(builder.disabled)
            return None
        if builder.template is None or builder.template.built_info is None or spec is None:
            return None
        roots = self._roots()
        plan = Plan(tuple(self.learner.preload()), frozenset(self.learner.project),
                    tuple(str(root) for root in roots), project=tuple(self._project_order),
                    blocked=tuple(sorted(self.learner.unsafe)))
        return (lambda p: builder.start(spec, p, self._relay_project, roots)), plan

    def _relay_project(self, pid: int, line: str) -> None:
        logger.info("template %d | %s", pid, line)

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
        known = set(self.learner.project)
        learned, fresh = self.learner.take(modules, self._roots())
        self._project_order += [name for name in modules if name in learned.project and name not in known]
        if self._project_order and self.project.template is None and not self.project.building:
            self.project.want()  # a worker has served: the project's modules are known
        builder = self.builder
        template = builder.template
        if builder.disabled is not None:
            return learned
        # A template being built has every module seen before it started: only news need another.
        building_enough = builder.candidate is not None and not fresh
        if template is None or template.built_info is None:
            if not building_enough:
                builder.want()
            return learned
        info = template.built_info
        wrong = sorted(learned.project & (info.loaded - info.own))
        if wrong:
            builder.replace(template, f"it had loaded {wrong[0]!r}, which the workers import from the project")
            return learned
        lacking = self.learner.missing(learned, info.loaded, info.failed)
        if lacking and not building_enough:
            shown = ", ".join(lacking[:3]) + (f" and {len(lacking) - 3} more" if len(lacking) > 3 else "")
            logger.info("template: a worker imported %d module(s) the template lacks (%s); rebuilding it "
                        "in the background", len(lacking), shown)
            builder.want()
        return learned
