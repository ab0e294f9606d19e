"""The template spawner's decisions, with scripted templates and a scripted plain spawner.

No processes: a fake template answers ``built`` and ``fork`` as each test scripts it, and the
"plain" spawner writes a module report on the pipe it is given, as a real worker does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio

from supervisor.child.report import encode_report
from supervisor.spawn.process import LineSink, WorkerProcess, WorkerSpec
from supervisor.warm.spawner import MAX_FAILURES, WORKER_MODULE, TemplateSpawner
from supervisor.warm.template import (
    Built,
    Failed,
    Outcome,
    Plan,
    TemplateBroken,
    TemplateProcess,
    Unsafe,
    roomy_pipe,
    template_key,
)

ROOT = Path("/srv/project")
SITE = "/usr/lib/python3/site-packages"
APP_REPORT = {"os": None, "starlette": f"{SITE}/starlette/__init__.py", "app": f"{ROOT}/app.py"}


class Module:
    def __init__(self, file: str | None) -> None:
        self.__file__ = file


def report_line(modules: dict[str, str | None]) -> bytes:
    return encode_report({name: Module(file) for name, file in modules.items()})


def spec(**environ: str) -> WorkerSpec:
    return WorkerSpec(app="app:app", factory=False, listen_fd=0, cwd=ROOT, environ=environ)


@dataclass
class FakeProc:
    pid: int
    returncode: int | None = None
    callbacks: list[Callable[[Any], None]] = field(default_factory=list)

    @property
    def popen(self) -> FakeProc:
        return self

    def add_exit_callback(self, callback: Callable[[Any], None]) -> None:
        self.callbacks.append(callback)

    def die(self, code: int) -> None:
        self.returncode = code
        for callback in self.callbacks:
            callback(self)


class FakeTemplate:
    """Scripted: ``outcome`` for built(); ``fork_error`` for fork(); ``changed`` for dependencies."""

    def __init__(self, pid: int, spec: WorkerSpec, plan: Plan, outcome: Outcome) -> None:
        self.pid = pid
        self.key = template_key(spec)
        self.plan = plan
        self.outcome = outcome
        self.proc = FakeProc(pid)
        self.built_info: Built | None = None
        self.closed = False
        self.fork_error: Exception | None = None
        self.changed: str | None = None
        self.forked: list[int] = []
        self.report: dict[str, str | None] = {}
        self.release = asyncio.Event()  # built() answers once this is set
        self.release.set()

    async def built(self, timeout: float) -> Outcome:
        await self.release.wait()
        if isinstance(self.outcome, Built):
            self.built_info = self.outcome
        return self.outcome

    def dependencies_changed(self, dirs: Sequence[Path]) -> str | None:
        return self.changed

    def fork(self, spec: WorkerSpec, on_line: LineSink) -> tuple[WorkerProcess, int]:
        if self.fork_error is not None:
            raise self.fork_error
        read_end, write_end = roomy_pipe()
        os.write(write_end, report_line(self.report))
        os.close(write_end)
        pid = 50_000 + len(self.forked)
        self.forked.append(pid)
        return cast(WorkerProcess, FakeProc(pid)), read_end

    async def close(self, timeout: float = 3.0) -> None:
        self.closed = True


def built(*loaded: str, failed: dict[str, str] | None = None) -> Built:
    return Built(frozenset(loaded), frozenset({"os"}), failed or {}, {}, 0.1)


class Harness:
    """A spawner with scripted outcomes for the templates it starts, and its service running."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self.templates: list[FakeTemplate] = []
        self.plain_pids: list[int] = []
        self.plain_report: dict[str, str | None] = dict(APP_REPORT)
        self.spawner = TemplateSpawner(lambda: [ROOT], plain=self.plain, start=self.start, subreaper=lambda: True)

    def plain(self, spec: WorkerSpec, on_line: LineSink, report_fd: int = -1) -> WorkerProcess:
        os.write(report_fd, report_line(self.plain_report))
        self.plain_pids.append(40_000 + len(self.plain_pids))
        return cast(WorkerProcess, FakeProc(self.plain_pids[-1]))

    def start(self, spec: WorkerSpec, plan: Plan, on_line: LineSink, dirs: Sequence[Path]) -> TemplateProcess:
        outcome = self.outcomes.pop(0) if self.outcomes else built(*plan.preload, "os")
        template = FakeTemplate(1000 + len(self.templates), spec, plan, outcome)
        self.templates.append(template)
        return cast(TemplateProcess, template)

    def spawn(self, worker: WorkerSpec | None = None) -> int:
        return self.spawner(worker or spec(), lambda pid, line: None).pid

    async def until(self, check: Callable[[], object], what: str) -> None:
        async with asyncio.timeout(5):
            while not check():
                await asyncio.sleep(0.005)

    async def ready_template(self, count: int = 1) -> FakeTemplate:
        await self.until(lambda: len(self.templates) >= count and self.spawner.template is self.templates[-1],
                         "a template in use")
        return self.templates[-1]


@pytest_asyncio.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    service = asyncio.ensure_future(h.spawner.serve())
    try:
        yield h
    finally:
        service.cancel()
        await asyncio.gather(service, return_exceptions=True)


@pytest.mark.asyncio
async def test_the_first_worker_starts_fresh_and_teaches_the_template_what_to_preload(harness: Harness) -> None:
    first = harness.spawn()
    assert first in harness.plain_pids
    template = await harness.ready_template()
    assert template.plan.preload == (WORKER_MODULE, "os", "starlette")  # never the project's "app"
    assert template.plan.project_names == {"app"}
    assert template.plan.roots == (str(ROOT),)
    second = harness.spawn()
    assert template.forked == [second]


@pytest.mark.asyncio
async def test_a_broken_template_costs_a_fresh_start_not_a_failed_one(harness: Harness,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    harness.spawn()
    template = await harness.ready_template()
    template.fork_error = TemplateBroken("it closed the connection")
    pid = harness.spawn()
    assert pid in harness.plain_pids
    assert "a fork request failed (it closed the connection)" in caplog.text
    await harness.until(lambda: template.closed, "the broken template closed")
    replacement = await harness.ready_template(2)
    assert replacement is not template


@pytest.mark.asyncio
async def test_an_unsafe_module_is_left_out_by_name_and_the_next_template_is_built_without_it(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "supervisor")
    harness.plain_report = {**APP_REPORT, "threadmod": f"{SITE}/threadmod/__init__.py",
                            "threadmod.sub": f"{SITE}/threadmod/sub.py"}
    harness.outcomes = [Unsafe("threadmod", "a thread was still running after importing it")]
    harness.spawn()
    template = await harness.ready_template(2)
    assert "kept threadmod out of the template: a thread was still running after importing it" in caplog.text
    assert "threadmod" not in template.plan.preload and "threadmod.sub" not in template.plan.preload
    assert harness.templates[0].closed  # closed before the next one was started
    assert harness.spawner.unsafe == {"threadmod": "a thread was still running after importing it"}


@pytest.mark.asyncio
async def test_a_worker_importing_a_library_the_template_lacks_gets_a_rebuild_while_the_old_one_forks(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "supervisor")
    harness.spawn()
    old = await harness.ready_template()
    old.report = {**APP_REPORT, "extlib": f"{SITE}/extlib.py"}
    forked = harness.spawn()
    assert old.forked == [forked]
    new = await harness.ready_template(2)
    assert "extlib" in new.plan.preload
    assert re_search(r"a worker imported 1 module\(s\) the template lacks \(extlib\)", caplog.text)
    await harness.until(lambda: old.closed, "the old template closed")
    assert harness.spawn() in new.forked


@pytest.mark.asyncio
async def test_changed_worker_settings_or_dependencies_start_fresh_and_rebuild(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "supervisor")
    harness.spawn()
    first = await harness.ready_template()
    assert harness.spawn(spec(GREETING="changed")) in harness.plain_pids
    assert "the workers' settings changed" in caplog.text
    await harness.until(lambda: first.closed, "the stale template closed")
    second = await harness.ready_template(2)
    assert second.key == template_key(spec(GREETING="changed"))
    second.changed = "requirements.txt changed"
    assert harness.spawn(spec(GREETING="changed")) in harness.plain_pids
    assert "template: requirements.txt changed; rebuilding it in the background" in caplog.text
    await harness.ready_template(3)


@pytest.mark.asyncio
async def test_a_template_that_dies_is_rebuilt_and_repeated_failures_give_forking_up(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.spawn()
    template = await harness.ready_template()
    template.proc.die(-9)
    assert harness.spawner.template is None
    assert "template: pid 1000 exited (killed by signal 9); rebuilding it in the background" in caplog.text
    harness.outcomes = [Failed("it exited with code 1 while importing")] * MAX_FAILURES
    await harness.until(lambda: harness.spawner.disabled is not None, "forking given up")
    assert "workers start as fresh interpreters from now on" in caplog.text
    count = len(harness.templates)
    assert harness.spawn() in harness.plain_pids
    await asyncio.sleep(0.05)
    assert len(harness.templates) == count  # no more attempts


@pytest.mark.asyncio
async def test_a_template_that_loaded_what_turns_out_to_be_a_project_module_is_replaced(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "supervisor")
    harness.plain_report = {**APP_REPORT, "config": f"{SITE}/config.py"}
    harness.spawn()
    template = await harness.ready_template()
    template.report = {**APP_REPORT, "config": f"{ROOT}/config.py"}  # the project's own, after all
    harness.spawn()
    await harness.until(lambda: template.closed, "the template replaced")
    assert "it had loaded 'config', which the workers import from the project" in caplog.text
    replacement = await harness.ready_template(2)
    assert "config" in replacement.plan.project_names


def re_search(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


@pytest.mark.asyncio
async def test_a_stop_in_the_middle_of_a_build_ends_the_template_being_built() -> None:
    h = Harness()
    service = asyncio.ensure_future(h.spawner.serve())
    h.outcomes = [built("os")]
    real_start = h.start

    def held(spec: WorkerSpec, plan: Plan, on_line: LineSink, dirs: Sequence[Path]) -> TemplateProcess:
        template = real_start(spec, plan, on_line, dirs)
        cast(FakeTemplate, template).release.clear()  # still importing when the stop comes
        return template

    h.spawner.builder.start = held
    h.spawn()
    await h.until(lambda: h.templates, "a build started")
    service.cancel()
    await asyncio.gather(service, return_exceptions=True)
    assert h.templates[0].closed


@pytest.mark.asyncio
async def test_the_ready_line_names_the_modules_the_template_could_not_import(
        harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """It said "1 not importable there" without naming the module: which one, to look at?"""
    caplog.set_level(logging.INFO, logger="supervisor")
    harness.outcomes.append(built(WORKER_MODULE, "os", "starlette",
                                  failed={"brokenlib": "RuntimeError: cannot be imported here"}))
    harness.spawn()
    await harness.ready_template()
    [line] = [r.getMessage() for r in caplog.records if "template: pid" in r.getMessage()]
    assert re.search(r"1 not importable there \(brokenlib\)", line), line


def test_many_modules_not_importable_are_named_up_to_a_few() -> None:
    from supervisor.warm.builder import not_importable

    failed = {f"mod{i}": "ImportError" for i in range(8)}
    assert not_importable(failed) == ", 8 not importable there (mod0, mod1, mod2, mod3, mod4 and 3 more)"
    assert not_importable({}) == ""
