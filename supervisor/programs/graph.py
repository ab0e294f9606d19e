"""Dependencies between programs: when one may start, what it waits for, the order of stopping.

Pure functions of the programs' ``depends_on`` and their instances' states; ``web`` is the app.

* ``started``: an instance has been started (or the job already completed);
* ``ready``: every instance serves (a one-shot job: has completed);
* ``completed``: every instance of the one-shot job exited with success.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from supervisor.state import SlotState, SlotStatus

Deps = Mapping[str, tuple[tuple[str, str], ...]]

_STARTED = (SlotState.STARTING, SlotState.RUNNING, SlotState.COMPLETED)


def condition_met(condition: str, instances: Sequence[SlotStatus]) -> bool:
    if condition == "started":
        return any(s.state in _STARTED for s in instances) or not instances
    if condition == "ready":
        return all(s.state in (SlotState.RUNNING, SlotState.COMPLETED) for s in instances)
    return all(s.state == SlotState.COMPLETED for s in instances)


_WORDS = {"started": "to start", "ready": "to be ready", "completed": "to complete"}


def waiting_reason(deps: tuple[tuple[str, str], ...], states: Mapping[str, Sequence[SlotStatus]]) -> str | None:
    """None when every dependency's condition holds, else what is awaited, in words.

    >>> waiting_reason((("migrate", "completed"),), {"migrate": [SlotStatus(0, SlotState.FATAL,
    ...                 fatal_reason="exit code 1 (restart = never)")]})
    'waiting for migrate to complete (migrate is fatal: exit code 1 (restart = never))'
    """
    for name, condition in deps:
        instances = states.get(name, ())
        if condition_met(condition, instances):
            continue
        failed = next((s for s in instances if s.state == SlotState.FATAL), None)
        why = f" ({name} is fatal: {failed.fatal_reason})" if failed is not None else ""
        return f"waiting for {name} {_WORDS[condition]}{why}"
    return None


def levels(deps: Deps) -> dict[str, int]:
    """Each program's start level: 0 without dependencies, else one more than its deepest one.
    The configuration has no cycles (checked when it is read)."""
    found: dict[str, int] = {}

    def level(name: str) -> int:
        if name not in found:
            found[name] = 0  # a guard; cycles are refused before this runs
            found[name] = 1 + max((level(dep) for dep, _ in deps.get(name, ()) if dep in deps), default=-1)
        return found[name]

    for name in deps:
        level(name)
    return found


def stop_order(deps: Deps) -> list[list[str]]:
    """Groups to stop one after the other: dependents before what they depend on.

    >>> stop_order({"web": (("migrate", "completed"),), "migrate": (), "worker": (("web", "ready"),)})
    [['worker'], ['web'], ['migrate']]
    """
    by_level = levels(deps)
    return [sorted(n for n, lv in by_level.items() if lv == level)
            for level in sorted(set(by_level.values()), reverse=True)]
