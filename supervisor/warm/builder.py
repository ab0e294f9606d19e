"""Building templates in the background, one at a time, and giving them up when they fail.

:class:`TemplateBuilder` owns the template in use and the one being built. It builds when asked
(:meth:`TemplateBuilder.want`), for the latest spec and what the :class:`~supervisor.warm.preload.Learner`
has learned, leaving out a module the template found unsafe and building again without it; it
replaces a template that no longer fits without a gap (the old one forks until the new one is
built), and gives forking up for good after :data:`MAX_FAILURES` failures in a row. Which worker
forks from it, and when a rebuild is worth it, is the spawner's (:mod:`supervisor.warm.spawner`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from supervisor.spawn.process import LineSink, WorkerSpec
from supervisor.warm.preload import Learner
from supervisor.warm.template import Built, Failed, Plan, Started, TemplateProcess, Unsafe, template_key

logger = logging.getLogger("supervisor")

BUILD_TIMEOUT = 120.0  # seconds a template may take to import everything (a cold disk, a big app)
MAX_FAILURES = 3  # templates that failed or died in a row before forking is given up
MAX_UNSAFE_ROUNDS = 10  # modules left out, one rebuild each, before one build is given up


def not_importable(failed: Mapping[str, str], shown: int = 5) -> str:
    """The tail of the template's "ready" line: which modules it could not import, by name.

    >>> not_importable({"b": "ImportError: ...", "a": "RuntimeError: ..."})
    ', 2 not importable there (a, b)'
    """
    if not failed:
        return ""
    names = sorted(failed)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f", {len(names)} not importable there ({', '.join(names[:shown])}{more})"


class TemplateStarter(Protocol):
    def __call__(self, spec: WorkerSpec, plan: Plan, on_line: LineSink, dirs: Sequence[Path]) -> TemplateProcess: ...


class TemplateBuilder:
    """See the module's docstring. ``roots()`` says where the project's own modules live."""

    def __init__(self, roots: Callable[[], Sequence[Path]], learner: Learner, *,
                 start: TemplateStarter = TemplateProcess.start, build_timeout: float = BUILD_TIMEOUT,
                 subreaper: Callable[[], bool]) -> None:
        self._roots = roots
        self._learner = learner
        self.start = start
        self._build_timeout = build_timeout
        self._subreaper = subreaper
        self.template: TemplateProcess | None = None
        self.candidate: TemplateProcess | None = None
        self.spec: WorkerSpec | None = None  # the latest spec: the next template is built for it
        self.disabled: str | None = None  # why forking was given up, for good
        self.fell_back = False  # said already that workers start fresh until the next template
        self._failures = 0
        self._wanted = False
        self._wake: asyncio.Event | None = None
        self._started = Started()

    def want(self) -> None:
        """Build a template (again) as soon as the current build, if any, is over."""
        self._wanted = True
        if self._wake is not None:
            self._wake.set()

    def forked(self) -> None:
        """A worker forked from the template: it works, its failures in a row start again."""
        self._failures = 0

    async def run(self) -> None:
        """Build templates when wanted, one at a time, until cancelled; then :meth:`end` them."""
        self._wake = asyncio.Event()
        if not self._subreaper():
            self.disable("the supervisor cannot become a child subreaper, so forked workers would not be its children")
        while True:
            if not self._wanted:
                await self._wake.wait()
            self._wake.clear()
            self._wanted = False
            if self.disabled is None and self.spec is not None and self._learner.order:
                await self._build(self.spec)

    async def end(self) -> None:
        """End every template started, the one in use and one being built included."""
        await self._started.end()

    def usable(self, spec: WorkerSpec) -> TemplateProcess | None:
        """The template to fork a worker of ``spec`` from; None (and a rebuild) when it does not fit."""
        template = self.template
        if self.disabled is not None or template is None:
            return None
        if template.key != template_key(spec):
            self.replace(template, "the workers' settings changed (environment, directory, interpreter or logging)")
            return None
        changed = template.dependencies_changed(self._roots())
        if changed is not None:
            self.replace(template, changed)
            return None
        return template

    # ----- building ------------------------------------------------------------------------------

    async def _build(self, spec: WorkerSpec) -> None:
        for _ in range(MAX_UNSAFE_ROUNDS):
            roots = self._roots()
            plan = Plan(tuple(self._learner.preload()), frozenset(self._learner.project),
                        tuple(str(root) for root in roots))
            try:
                candidate = self.start(spec, plan, self._relay, roots)
            except OSError as exc:
                self._failed(f"it could not be started: {exc.strerror or exc}")
                return
            self._started.track(candidate)
            self.candidate = candidate
            outcome = await candidate.built(self._build_timeout)
            self.candidate = None
            match outcome:
                case Built():
                    self._install(candidate, outcome)
                    return
                case Unsafe(module, reason):
                    logger.warning("template: kept %s out of the template: %s; workers import it themselves",
                                   module, reason)
                    self._learner.unsafe[module] = reason
                    await candidate.close()
                case Failed(reason):
                    await candidate.close()
                    self._failed(reason)
                    return
        self._failed(f"more than {MAX_UNSAFE_ROUNDS} modules were unsafe to preload")

    def _install(self, candidate: TemplateProcess, built: Built) -> None:
        failed = not_importable(built.failed)
        logger.info("template: pid %d ready in %.2fs, %d modules preloaded%s", candidate.pid, built.seconds,
                    len(built.loaded), failed)
        if self.spec is not None and template_key(self.spec) != candidate.key:
            self.want()  # the settings changed while it was built: the next one fits them
        old, self.template = self.template, candidate
        self.fell_back = False
        candidate.proc.add_exit_callback(lambda _: self._exited(candidate))
        if old is not None:
            self._started.close_later(old)

    def _relay(self, pid: int, line: str) -> None:
        logger.info("template %d | %s", pid, line)

    # ----- losing a template ---------------------------------------------------------------------

    def replace(self, template: TemplateProcess, why: str) -> None:
        """The template no longer fits: workers start fresh until a new one is built."""
        logger.info("template: %s; rebuilding it in the background (workers start as fresh interpreters "
                    "meanwhile)", why)
        self.template = None
        self.fell_back = True
        self._started.close_later(template)
        self.want()

    def lost(self, template: TemplateProcess, why: str) -> None:
        """The template failed a fork: it counts as a failure, and a new one is built."""
        self.template = None
        self._started.close_later(template)
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
            self.disable(f"the template failed {self._failures} times in a row, last: {reason}")
            return
        self.fell_back = True
        logger.warning("template: %s; rebuilding it in the background (workers start as fresh interpreters "
                       "meanwhile)", reason)
        self.want()

    def disable(self, reason: str) -> None:
        """Give forking up for good: workers start as fresh interpreters from now on."""
        if self.disabled is None:
            self.disabled = reason
            logger.warning("template: %s; workers start as fresh interpreters from now on", reason)
        if self.template is not None:
            self._started.close_later(self.template)
            self.template = None
