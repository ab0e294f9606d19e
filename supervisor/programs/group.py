"""All programs together: the app's slots (``web``) and each ``[programs.NAME]``'s instances.

Starts each program once its dependencies hold (:func:`~supervisor.programs.graph.waiting_reason`),
tells the ones that wait what they wait for, and stops them in reverse dependency order. Each
program is a :class:`~supervisor.slots.executor.Slots` of lifecycle machines, like the web workers.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from supervisor.config.settings import Settings
from supervisor.output import colour_wanted, output_prefix
from supervisor.programs.graph import stop_order, waiting_reason
from supervisor.programs.process import free_port, spawn_program
from supervisor.programs.spec import WEB, ProgramSpec
from supervisor.slots import lifecycle as L
from supervisor.slots.executor import Slots, Timing
from supervisor.spawn.process import LineSink, WorkerProcess
from supervisor.state import SlotStatus

logger = logging.getLogger("supervisor")
# A program without a ready probe is ready once started; with one, the probe's timeout bounds it.
NO_PROBE_TIMEOUT = 60.0


class Programs:
    """The nodes of the dependency graph, by name; ``web`` is always one of them."""

    def __init__(self, web: Slots, settings: Settings, make: Callable[..., Slots]) -> None:
        """``make(name, count, timing, start=..., mode=..., prefix=...)`` builds a program's Slots
        with the runner's callbacks."""
        specs = settings.config.programs
        self.specs = specs
        self.nodes: dict[str, Slots] = {WEB: web}
        self.deps = {WEB: settings.config.app.depends_on, **{n: s.depends_on for n, s in specs.items()}}
        for name, spec in specs.items():
            self.nodes[name] = make(
                name, spec.instances, program_timing(settings, spec),
                start=self._starter(spec, settings.project_dir, lambda: settings.environ),
                mode=L.ExitPolicy(spec.restart, spec.once, spec.success_exit_codes, noun="process"),
                prefix=prefix_for(settings, name))
        self._begun: set[str] = set()
        self._gating = False
        self._open = False  # programs start as their dependencies allow: after the startup steps, until the stop
        self._changed = asyncio.Event()  # a slot handled an event: a stop waiting for a group looks again

    @staticmethod
    def _starter(spec: ProgramSpec, project_dir: Path,
                 environ: Callable[[], Mapping[str, str]]) -> Callable[[int, LineSink], WorkerProcess]:
        def start(index: int, sink: LineSink) -> WorkerProcess:
            port = free_port() if spec.port == 0 else spec.port
            return spawn_program(spec, environ(), project_dir, port, sink)

        return start

    @property
    def statuses(self) -> dict[str, Sequence[SlotStatus]]:
        return {name: node.statuses for name, node in self.nodes.items()}

    @property
    def programs(self) -> dict[str, Sequence[SlotStatus]]:
        """The ``[programs]`` only, for the status document."""
        return {name: node.statuses for name, node in self.nodes.items() if name != WEB}

    @property
    def idle(self) -> bool:
        return all(node.idle for node in self.nodes.values())

    def procs(self) -> Iterable[int]:
        for node in self.nodes.values():
            yield from node.procs

    def kill_all(self) -> None:
        for node in self.nodes.values():
            node.kill_all()

    def cancel_timers(self) -> None:
        for node in self.nodes.values():
            node.cancel_timers()

    def control(self, action: str, name: str) -> None:
        """``stop``, ``start`` or ``restart`` (stop, then start) every instance of program ``name``."""
        node = self.nodes[name]
        logger.info("%s: %s requested", name, action)
        if action == "start" and name not in self._begun:
            self._begun.add(name)  # started by hand, dependencies or not
            node.broadcast(L.Begin())
        elif action == "start":
            node.broadcast(L.Resume())
        else:
            node.broadcast(L.Halt(resume=action == "restart"))

    def scale(self, name: str, instances: int) -> None:
        """Run ``instances`` of program ``name``: new ones start (once its dependencies allowed it
        to), removed ones stop, the last first."""
        node = self.nodes[name]
        logger.info("%s: %d -> %d instance(s)", name, len(node.machines), instances)
        while len(node.machines) < instances:
            node.add()
        while len(node.machines) > instances:
            node.remove()

    def restart_for(self, files: set[str], project_dir: Path) -> list[str]:
        """Restart (stop, then start) the programs a change concerns: with ``watch``, a file under
        one of its paths; without, any change, except for one-shot jobs (a migration need not run
        again for every edit). ``reload = false`` leaves a program alone."""
        restarted = []
        for name, spec in self.specs.items():
            if not spec.reload or name not in self._begun or not (spec.watch or not spec.once):
                continue
            roots = [(project_dir / w).resolve() for w in spec.watch]
            if not roots or any(Path(f).resolve().is_relative_to(root) for f in files for root in roots):
                restarted.append(name)
                self.control("restart" if not spec.once else "start", name)
        return restarted

    def begin(self) -> None:
        """The startup steps are done: start what may start, and from now on what becomes possible."""
        self._open = True
        self.gate()

    def slot_changed(self) -> None:
        """After every event a slot handled: start what became possible; wake :meth:`shutdown`."""
        if self._open:
            self.gate()
        self._changed.set()

    def gate(self) -> None:
        """Start every program whose dependencies hold; tell the others what they wait for.

        Starting one changes states, which calls this again from :meth:`slot_changed`: the guard
        makes that a no-op, and the loop here picks up whatever became possible meanwhile.
        """
        if self._gating:
            return
        self._gating = True
        try:
            progress = True
            while progress:
                progress = False
                states = self.statuses
                for name, node in self.nodes.items():
                    if name in self._begun:
                        continue
                    reason = waiting_reason(self.deps[name], states)
                    if reason is None:
                        self._begun.add(name)
                        node.broadcast(L.Begin())
                        progress = True
                    elif any(s.waiting_for != reason for s in node.statuses):
                        logger.info("%s: %s", name, reason)
                        node.broadcast(L.DependencyLost(reason))
        finally:
            self._gating = False

    def stop_starting(self) -> None:
        """The supervisor stops: no program starts for its dependencies any more."""
        self._open = False

    async def shutdown(self) -> None:
        """Stop dependents before what they depend on, each group once the one before is gone;
        return when every process is."""
        self.stop_starting()
        for group in stop_order(self.deps):
            for name in group:
                self.nodes[name].broadcast(L.Shutdown())
            while not all(self.nodes[name].idle for name in group):
                self._changed.clear()
                await self._changed.wait()


def prefix_for(settings: Settings, name: str) -> Callable[[int], str]:
    """Output prefixes of ``name``'s instances: aligned with every program's, coloured per
    program on a terminal unless ``NO_COLOR`` is set."""
    names = [WEB, *settings.config.programs]
    width = max(len(n) for n in names) + 3
    colour = names.index(name) if colour_wanted(sys.stderr, dict(settings.environ)) else None
    return lambda index: output_prefix(name, index, width=width, colour=colour)


def program_timing(settings: Settings, spec: ProgramSpec) -> Timing:
    ready = spec.ready.timeout if spec.ready is not None else NO_PROBE_TIMEOUT
    return Timing(settings.config.restart, ready, spec.stop_timeout)
