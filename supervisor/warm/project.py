"""The project-stage template, as the spawner sees it: built after the first worker serves, forked
from when it fits, rebuilt after each reload, and given up for one start when a fork of it fails.

:class:`ProjectStage` is the spawner's (:mod:`supervisor.warm.spawner`) companion. Its template is
started like the third-party one (:meth:`TemplateProcess.start`) with the project's modules in the
plan, in the background; meanwhile workers fork from the third-party template as before. Each
fork from it drops what :func:`~supervisor.warm.stage.plan_fork` finds stale.

Safe by construction: a project-stage fork that exits before it serves (its fresh import raised,
or the app's startup failed) is *withdrawn*: the slot starts another worker at once
(:meth:`retry`), which forks from the third-party template. If that one serves, the project stage
was to blame: :func:`~supervisor.warm.stage.blame` says which modules to keep cold from now on. If
it fails too, the edit itself is broken, and nothing is learned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.child.importgraph import Signature, signature
from supervisor.spawn.process import LineSink, WorkerProcess, WorkerSpec
from supervisor.warm.stage import Choice, Lessons, ProjectGraph, blame, learn_blame, plan_fork
from supervisor.warm.template import (
    Built,
    Failed,
    NotOurChild,
    Plan,
    Started,
    TemplateBroken,
    TemplateProcess,
    Unsafe,
    template_key,
)

logger = logging.getLogger("supervisor")
REBUILD_DELAY = 1.0  # seconds after a reloaded worker serves before the project stage is rebuilt
MAX_FAILURES = 3  # project-stage templates that failed to build in a row before the stage is given up


@dataclass
class _Fork:
    choice: Choice
    graph: ProjectGraph


@dataclass
class _Fallback:
    """A withdrawn project-stage fork, and the third-party worker started in its place."""

    failed: _Fork
    failed_pid: int
    retry_pid: int | None = None


class ProjectStage:
    """See the module's docstring. :meth:`run` is its part of the spawner's service."""

    def __init__(self, stat: Callable[[str], Signature] = signature) -> None:
        self._stat = stat  # a file's signature now (supervisor.child.importgraph.signature)
        self.template: TemplateProcess | None = None
        self.lessons = Lessons()
        self.disabled: str | None = None
        self.wanted = False
        self.building = False
        self._failures = 0
        self._forks: dict[int, _Fork] = {}  # project-stage forks not serving yet
        self._reports: dict[int, dict[str, Any]] = {}  # pid -> its warm_failed report
        self._fallback: _Fallback | None = None
        self._wake: asyncio.Event | None = None
        self._started = Started()

    # ----- building ------------------------------------------------------------------------------

    def want(self) -> None:
        """Build a project-stage template (again) once the current build, if any, is over."""
        if self.disabled is None:
            self.wanted = True
            if self._wake is not None:
                self._wake.set()

    async def run(self, job: Callable[[], tuple[Callable[[Plan], TemplateProcess], Plan] | None],
                  timeout: float) -> None:
        """Build when wanted, one at a time, until cancelled. ``job()``: how to start one and its
        plan, or None while there is nothing to build on (no third-party template yet)."""
        self._wake = asyncio.Event()
        while True:
            if not self.wanted:
                await self._wake.wait()
            self._wake.clear()
            while self.wanted and self.disabled is None:
                ready = job()
                if ready is None:
                    await asyncio.sleep(0.2)  # while wanted only: the third-party template is being built
                    continue
                self.wanted = False
                self.building = True
                try:
                    await self.build(*ready, timeout)
                finally:
                    self.building = False

    async def end(self) -> None:
        await self._started.end()

    async def build(self, start: Callable[[Plan], TemplateProcess], plan: Plan, timeout: float) -> None:
        """Build a project-stage template for ``plan``; install it in place of the old one."""
        self.wanted = False
        if self.disabled is not None or not plan.project:
            return
        try:
            candidate = start(plan)
        except OSError as exc:
            self._failed(f"it could not be started: {exc.strerror or exc}")
            return
        self._started.track(candidate)
        outcome = await candidate.built(timeout)
        graph = outcome.project if isinstance(outcome, Built) else None
        if graph is not None:
            self._failures = 0
            cold = f", {len(graph.registries)} holding registries" if graph.registries else ""
            logger.info("template: project stage pid %d ready in %.2fs, %d project modules imported%s",
                        candidate.pid, graph.seconds, len(graph.modules), cold)
            for name, why in sorted(graph.registries.items()):
                logger.debug("template: %s re-runs whenever a module that fills it does: %s", name, why)
            old, self.template = self.template, candidate
            candidate.proc.add_exit_callback(lambda _: self._exited(candidate))
            if old is not None:
                self._started.close_later(old)
            return
        self._started.close_later(candidate)
        if isinstance(outcome, Unsafe):
            self.disable(f"the project's modules are unsafe to fork from: {outcome.reason}")
        else:
            self._failed(outcome.reason if isinstance(outcome, Failed) else "it reported no project modules")

    def _exited(self, template: TemplateProcess) -> None:
        if template is self.template and not template.closed:
            self.template = None
            self._failed(f"pid {template.pid} exited (code {template.proc.popen.returncode})")

    def _failed(self, reason: str) -> None:
        self._failures += 1
        if self._failures >= MAX_FAILURES:
            self.disable(f"its template failed {self._failures} times in a row, last: {reason}")
            return
        logger.warning("template: the project stage failed: %s; rebuilding it in the background", reason)
        self.want()

    def disable(self, reason: str) -> None:
        if self.disabled is None:
            self.disabled = reason
            logger.warning("template: project stage off: %s; workers import the whole project", reason)
        if self.template is not None:
            self._started.close_later(self.template)
            self.template = None

    def close(self) -> None:
        if self.template is not None:
            self._started.close_later(self.template)
            self.template = None

    # ----- forking -------------------------------------------------------------------------------

    def fallback_reason(self) -> str | None:
        """Why the next start must not use the project stage (a fork of it was just withdrawn)."""
        fallback = self._fallback
        if fallback is None or fallback.retry_pid is not None:
            return None
        error = self._reports.get(fallback.failed_pid, {}).get("error")
        return (f"the project-stage fork pid {fallback.failed_pid} failed to start"
                + (f" ({error})" if error else "") + "; started again without the project's modules")

    def fork(self, spec: WorkerSpec, on_line: LineSink, dirs: Sequence[Path]
             ) -> tuple[WorkerProcess, int, Choice] | Choice | None:
        """A worker forked from the project-stage template, with its report pipe and the choice;
        or the choice against it (why not); None when there is no project stage to speak of."""
        template = self.template
        if self.disabled is not None or template is None or template.built_info is None:
            return None
        graph = template.built_info.project
        if graph is None:
            return None
        if template.key != template_key(spec):
            self.close()
            self.want()
            return Choice("third-party", "the workers' settings changed; the project stage is being rebuilt")
        changed = template.dependencies_changed(dirs)
        if changed is not None:
            self.close()
            self.want()
            return Choice("third-party", f"{changed}; the project stage is being rebuilt")
        if self.fallback_reason() is not None:
            return None  # the spawner says why
        choice = plan_fork(graph, self.lessons, self._stat)
        if choice.stage != "project":
            return choice
        try:
            proc, report = template.fork(spec, on_line, drop=choice.drop)
        except (TemplateBroken, NotOurChild) as exc:
            self.close()
            self._failed(f"a fork request failed ({exc})")
            return Choice("third-party", f"the project-stage template failed a fork ({exc})")
        self._forks[proc.pid] = _Fork(choice, graph)
        return proc, report, choice

    def started(self, pid: int) -> None:
        """A worker that is not a project-stage fork started: the retry of a withdrawn one?"""
        if self._fallback is not None and self._fallback.retry_pid is None:
            self._fallback.retry_pid = pid

    def retry(self, pid: int) -> str | None:
        """``pid`` exited before it served: if it was a project-stage fork, why another worker
        should start at once in its place (from the third-party template); else None."""
        fork = self._forks.pop(pid, None)
        if fork is None:
            return None
        self._fallback = _Fallback(fork, pid)
        return "failed on the project-stage template; starting it again from the third-party template"

    def report(self, pid: int, info: dict[str, Any]) -> None:
        """A fork's ``warm_failed`` report (see supervisor.child.projectstage)."""
        self._reports[pid] = info

    def served(self, pid: int) -> None:
        """``pid`` serves (its first module report came)."""
        fork = self._forks.pop(pid, None)
        if fork is not None and fork.choice.stale:
            # The tree changed since this template was built: the next one fits it. A moment
            # later: the other slots of the rollout start meanwhile, and a rebuild serves them all.
            asyncio.get_running_loop().call_later(REBUILD_DELAY, self.want)
        fallback = self._fallback
        if fallback is not None and fallback.retry_pid == pid:
            self._fallback = None
            info = self._reports.pop(fallback.failed_pid, {})
            found = blame(fallback.failed.choice, fallback.failed.graph, list(info.get("culprits", ())),
                          str(info.get("error", "")))
            added = learn_blame(self.lessons, found)
            if added:
                logger.warning("template: never keeping %s warm again: %s", ", ".join(added),
                               next(iter({**found.cold, **found.no_warm_rerun}.values())))
            self.want()

    def ended(self, pid: int, served: bool) -> None:
        """``pid``'s reports ended; a third-party retry that never served teaches nothing."""
        fallback = self._fallback
        if not served and fallback is not None and fallback.retry_pid == pid:
            self._fallback = None  # the retry failed too: the edit is broken, not the project stage
            self._reports.pop(fallback.failed_pid, None)
            logger.debug("template: the third-party retry failed as well: the edit itself fails")
