"""All programs together (supervisor/programs/group.py) over scripted nodes: each program begun
once its dependencies hold and told what it waits for otherwise, ``start``/``stop``/``restart``
and scaling by name, the programs a file change restarts, and shutdown in reverse dependency
order, each group once the one before it has gone. Real programs: tests/test_programs.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from supervisor.config.settings import Settings, resolve_settings
from supervisor.programs.group import NO_PROBE_TIMEOUT, Programs, prefix_for, program_timing
from supervisor.slots import lifecycle as L
from supervisor.slots.executor import Slots, Timing
from supervisor.state import SlotState, SlotStatus
from tests.support import make_project, scaled

TOML = """
    [app]
    depends_on = { migrate = "completed" }
    [programs.migrate]
    command = "python -m alembic upgrade head"
    once = true
    watch = ["migrations"]
    [programs.worker]
    command = "python -m worker"
    depends_on = { web = "ready" }
    instances = 2
    watch = ["worker"]
    [programs.scheduler]
    command = "python -m scheduler"
    depends_on = { worker = "started" }
    ready = { log = "scheduling", timeout = 12 }
    stop_timeout = 4
    [programs.assets]
    command = "npm run watch"
    reload = false
    [programs.cache]
    command = "redis-server"
"""


class Node:
    """A program's slots as :class:`Programs` uses them: events recorded, states set by the test
    (``begin`` sets STARTING, as a slot's machine does), ``on_event`` run after each broadcast as
    the runner's ``changed`` would be."""

    def __init__(self, name: str, count: int, timing: Timing | None = None, **kwargs: Any) -> None:
        self.name, self.timing, self.kwargs = name, timing, kwargs
        self.machines = [SlotStatus(i) for i in range(count)]
        self.events: list[L.Event] = []
        self.idle = False
        self.procs: dict[int, object] = {}
        self.killed = self.timers_cancelled = False
        self.on_event: Callable[[], None] = lambda: None

    @property
    def statuses(self) -> list[SlotStatus]:
        return self.machines

    def broadcast(self, event: L.Event) -> None:
        self.events.append(event)
        for status in self.machines:
            if isinstance(event, L.Begin):
                status.state, status.waiting_for = SlotState.STARTING, None
            elif isinstance(event, L.DependencyLost) and status.state == SlotState.WAITING:
                status.waiting_for = event.reason
        self.on_event()

    def set(self, state: SlotState) -> None:
        for status in self.machines:
            status.state = state

    def add(self) -> int:
        self.machines.append(SlotStatus(len(self.machines)))
        return len(self.machines) - 1

    def remove(self) -> int:
        return self.machines.pop().index

    def kill_all(self) -> None:
        self.killed = True

    def cancel_timers(self) -> None:
        self.timers_cancelled = True


def settings_of(tmp_path: Path, toml: str = TOML, environ: dict[str, str] | None = None) -> Settings:
    return resolve_settings(make_project(tmp_path, toml=toml), environ or {"NO_COLOR": "1"})


def programs_of(settings: Settings) -> tuple[Programs, dict[str, Node]]:
    nodes = {"web": Node("web", 2)}

    def make(name: str, count: int, timing: Timing, **kwargs: Any) -> Slots:
        nodes[name] = Node(name, count, timing, **kwargs)
        return cast(Slots, nodes[name])

    return Programs(cast(Slots, nodes["web"]), settings, make), nodes


def begun(nodes: dict[str, Node]) -> list[str]:
    return [name for name, node in nodes.items() if any(isinstance(e, L.Begin) for e in node.events)]


def test_each_program_is_built_with_its_instances_exit_policy_and_timing(tmp_path: Path) -> None:
    settings = settings_of(tmp_path)
    programs, nodes = programs_of(settings)
    assert list(programs.nodes) == ["web", "migrate", "worker", "scheduler", "assets", "cache"]
    assert len(nodes["worker"].machines) == 2
    assert nodes["migrate"].kwargs["mode"] == L.ExitPolicy("never", True, (0,), noun="process")
    assert nodes["worker"].kwargs["mode"] == L.ExitPolicy("always", False, (0,), noun="process")
    assert nodes["scheduler"].timing == Timing(settings.config.restart, 12, 4)  # its probe's timeout
    assert nodes["cache"].timing == Timing(settings.config.restart, NO_PROBE_TIMEOUT, 10.0)
    assert programs.deps["web"] == (("migrate", "completed"),)
    assert set(programs.programs) == set(programs.statuses) - {"web"}


def test_gate_begins_what_can_start_and_tells_the_others_what_they_wait_for(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    programs, nodes = programs_of(settings_of(tmp_path))
    with caplog.at_level(logging.INFO, logger="supervisor"):
        programs.gate()
    assert begun(nodes) == ["migrate", "assets", "cache"]
    assert [s.waiting_for for s in nodes["web"].statuses] == ["waiting for migrate to complete"] * 2
    assert nodes["worker"].statuses[0].waiting_for == "waiting for web to be ready"
    assert nodes["scheduler"].statuses[0].waiting_for == "waiting for worker to start"
    assert caplog.messages == ["web: waiting for migrate to complete", "worker: waiting for web to be ready",
                               "scheduler: waiting for worker to start"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="supervisor"):
        programs.gate()  # nothing changed: nothing new to say, nothing begun twice
    assert caplog.messages == [] and begun(nodes) == ["migrate", "assets", "cache"]
    assert [type(e) for e in nodes["migrate"].events] == [L.Begin]


def test_each_program_begins_as_its_dependencies_come_true_and_only_once(tmp_path: Path) -> None:
    programs, nodes = programs_of(settings_of(tmp_path))
    programs.gate()
    nodes["migrate"].set(SlotState.COMPLETED)
    programs.gate()
    assert "web" in begun(nodes) and "worker" not in begun(nodes)
    nodes["web"].statuses[0].state = SlotState.RUNNING
    programs.gate()
    assert "worker" not in begun(nodes)  # every web worker must serve
    nodes["web"].set(SlotState.RUNNING)
    programs.gate()  # worker begins (STARTING), which is "started" for the scheduler: in the same pass
    assert begun(nodes) == ["web", "migrate", "worker", "scheduler", "assets", "cache"]
    assert all(sum(isinstance(e, L.Begin) for e in node.events) == 1 for node in nodes.values())


def test_a_gate_called_back_while_gating_does_nothing_and_the_pass_picks_up_the_progress(tmp_path: Path) -> None:
    programs, nodes = programs_of(settings_of(tmp_path))
    depth = 0
    depths: list[int] = []  # how deep in gate() calls each event was sent

    def gate() -> None:
        nonlocal depth
        depth += 1
        try:
            programs.gate()
        finally:
            depth -= 1

    def changed(node: Node) -> Callable[[], None]:
        def after_event() -> None:
            depths.append(depth)
            if node.name == "migrate":
                node.set(SlotState.COMPLETED)  # a job that completes at once
            gate()  # the runner's changed() gates again after every event
        return after_event

    for node in nodes.values():
        node.on_event = changed(node)
    gate()
    assert begun(nodes) == ["web", "migrate", "assets", "cache"]  # web followed migrate's completion in the pass
    assert depths and set(depths) == {1}  # every event sent by the outer gate(); the nested calls did nothing
    assert all(sum(isinstance(e, L.Begin) for e in node.events) <= 1 for node in nodes.values())


def test_a_dependency_that_is_fatal_is_named_with_its_reason(tmp_path: Path) -> None:
    programs, nodes = programs_of(settings_of(tmp_path))
    programs.gate()
    nodes["migrate"].statuses[0].state = SlotState.FATAL
    nodes["migrate"].statuses[0].fatal_reason = "exit code 1 (restart = never)"
    programs.gate()
    assert nodes["web"].events[-1] == L.DependencyLost(
        "waiting for migrate to complete (migrate is fatal: exit code 1 (restart = never))")


def test_control_starts_stops_and_restarts_a_program_by_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    programs, nodes = programs_of(settings_of(tmp_path))
    programs.gate()
    with caplog.at_level(logging.INFO, logger="supervisor"):
        programs.control("start", "scheduler")  # started by hand before its dependencies hold
    assert nodes["scheduler"].events[-1] == L.Begin() and caplog.messages == ["scheduler: start requested"]
    programs.gate()
    assert sum(isinstance(e, L.Begin) for e in nodes["scheduler"].events) == 1  # the gate leaves it be
    programs.control("stop", "scheduler")
    programs.control("start", "scheduler")
    programs.control("restart", "cache")
    assert nodes["scheduler"].events[-2:] == [L.Halt(resume=False), L.Resume()]
    assert nodes["cache"].events[-1] == L.Halt(resume=True)
    with pytest.raises(KeyError):
        programs.control("stop", "nope")  # names are checked by the caller (the control API)


def test_scaling_adds_or_removes_instances_the_last_first(tmp_path: Path) -> None:
    programs, nodes = programs_of(settings_of(tmp_path))
    programs.scale("worker", 4)
    assert [s.index for s in nodes["worker"].machines] == [0, 1, 2, 3]
    programs.scale("worker", 1)
    assert [s.index for s in nodes["worker"].machines] == [0]
    programs.scale("worker", 0)
    assert nodes["worker"].machines == []


def test_a_file_change_restarts_the_programs_it_concerns(tmp_path: Path) -> None:
    settings = settings_of(tmp_path)
    programs, nodes = programs_of(settings)
    root = settings.project_dir
    assert programs.restart_for({str(root / "app.py")}, root) == []  # nothing has begun yet
    for name in ("migrate", "worker", "scheduler", "assets", "cache"):
        programs.control("start", name)
    for node in nodes.values():
        node.events.clear()
    # Without watch paths, any change restarts a program; with them, only a change under one.
    assert programs.restart_for({str(root / "app.py")}, root) == ["scheduler", "cache"]
    assert programs.restart_for({str(root / "worker" / "tasks.py")}, root) == ["worker", "scheduler", "cache"]
    # A one-shot job runs again (start, not stop-then-start) only for a change under its watch paths.
    assert programs.restart_for({str(root / "migrations" / "0003.py")}, root) == ["migrate", "scheduler", "cache"]
    assert nodes["migrate"].events == [L.Resume()] and nodes["worker"].events == [L.Halt(resume=True)]
    assert nodes["assets"].events == []  # reload = false


@pytest.mark.asyncio
async def test_shutdown_stops_dependents_first_each_group_once_the_one_before_is_idle(tmp_path: Path) -> None:
    programs, nodes = programs_of(settings_of(tmp_path))
    stopping = asyncio.ensure_future(programs.shutdown())

    def stopped() -> list[str]:
        return [name for name, node in nodes.items() if L.Shutdown() in node.events]

    async def until(names: list[str]) -> None:
        for _ in range(1000):
            if sorted(stopped()) == sorted(names):
                return
            await asyncio.sleep(0)
        raise AssertionError(f"expected {names} stopped, got {stopped()}")

    await until(["scheduler"])  # nothing depends on it, and it depends deepest
    nodes["scheduler"].idle = True
    programs.slot_changed()  # as the executor reports each slot event
    await until(["scheduler", "worker"])
    nodes["worker"].idle = True
    programs.slot_changed()  # as the executor reports each slot event
    await until(["scheduler", "worker", "web"])
    nodes["web"].idle = True
    programs.slot_changed()  # as the executor reports each slot event
    await until(list(nodes))  # the level of what nothing else waits on: assets, cache, migrate
    for node in nodes.values():
        node.idle = True
    programs.slot_changed()  # as the executor reports each slot event
    await asyncio.wait_for(stopping, scaled(5))


def test_kill_all_and_cancel_timers_reach_every_program_and_procs_lists_every_pid(tmp_path: Path) -> None:
    programs, nodes = programs_of(settings_of(tmp_path))
    nodes["web"].procs, nodes["cache"].procs = {101: object(), 102: object()}, {201: object()}
    programs.kill_all()
    programs.cancel_timers()
    assert all(node.killed and node.timers_cancelled for node in nodes.values())
    assert sorted(programs.procs()) == [101, 102, 201]
    nodes["web"].idle = True
    assert not programs.idle
    for node in nodes.values():
        node.idle = True
    assert programs.idle


def test_output_prefixes_align_on_the_longest_name_and_colour_only_on_request(tmp_path: Path) -> None:
    settings = settings_of(tmp_path)
    assert prefix_for(settings, "web")(0) == "web.0".ljust(len("scheduler") + 3)
    assert prefix_for(settings, "scheduler")(1) == "scheduler.1 "
    # stderr is not a terminal under pytest: no colour, whatever NO_COLOR says
    assert "\033[" not in prefix_for(settings_of(tmp_path / "colour", environ={}), "worker")(0)


def test_a_program_without_a_ready_probe_gets_the_default_ready_timeout(tmp_path: Path) -> None:
    settings = settings_of(tmp_path)
    assert program_timing(settings, settings.config.programs["scheduler"]).ready_timeout == 12
    assert program_timing(settings, settings.config.programs["cache"]).ready_timeout == NO_PROBE_TIMEOUT
