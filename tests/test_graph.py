"""Dependencies between programs (supervisor/programs/graph.py): which condition holds for which
instance states, what a program waits for in words, start levels and the order of stopping."""

from __future__ import annotations

import doctest

import pytest

from supervisor.programs import graph
from supervisor.programs.graph import condition_met, levels, stop_order, waiting_reason
from supervisor.state import SlotState, SlotStatus

S = SlotState


def instances(*states: SlotState) -> list[SlotStatus]:
    return [SlotStatus(i, state) for i, state in enumerate(states)]


@pytest.mark.parametrize(("states", "met"), [
    ((S.STARTING,), True),
    ((S.RUNNING,), True),
    ((S.COMPLETED,), True),  # a one-shot job that already ran counts as started
    ((S.BACKOFF, S.STARTING), True),  # one instance under way is enough
    ((S.WAITING,), False),
    ((S.BACKOFF, S.FATAL), False),
    ((S.STOPPING, S.STOPPED), False),
    ((), True),  # a program with no instance (scaled to zero) holds nothing up
])
def test_started_holds_once_any_instance_has_been_started(states: tuple[SlotState, ...], met: bool) -> None:
    assert condition_met("started", instances(*states)) is met


@pytest.mark.parametrize(("states", "met"), [
    ((S.RUNNING, S.RUNNING), True),
    ((S.COMPLETED,), True),  # a one-shot job is ready once it has completed
    ((S.RUNNING, S.STARTING), False),  # every instance, not one
    ((S.RUNNING, S.BACKOFF), False),
    ((S.FATAL,), False),
    ((), True),
])
def test_ready_holds_only_when_every_instance_serves(states: tuple[SlotState, ...], met: bool) -> None:
    assert condition_met("ready", instances(*states)) is met


@pytest.mark.parametrize(("states", "met"), [
    ((S.COMPLETED, S.COMPLETED), True),
    ((S.COMPLETED, S.RUNNING), False),  # still running is not completed
    ((S.STOPPED,), False),  # stopped by the user or ended unsuccessfully: not a success
    ((S.FATAL,), False),
    ((), True),
])
def test_completed_holds_only_when_every_instance_exited_with_success(states: tuple[SlotState, ...],
                                                                     met: bool) -> None:
    assert condition_met("completed", instances(*states)) is met


def test_nothing_is_awaited_when_every_dependency_holds() -> None:
    deps = (("migrate", "completed"), ("cache", "started"))
    assert waiting_reason(deps, {"migrate": instances(S.COMPLETED), "cache": instances(S.STARTING)}) is None
    assert waiting_reason((), {}) is None


def test_the_first_unmet_dependency_in_the_configured_order_is_named_in_words() -> None:
    states = {"migrate": instances(S.RUNNING), "cache": instances(S.WAITING), "web": instances(S.STARTING)}
    assert waiting_reason((("cache", "started"), ("migrate", "completed")), states) == "waiting for cache to start"
    assert waiting_reason((("migrate", "completed"), ("cache", "started")), states) == \
        "waiting for migrate to complete"
    assert waiting_reason((("migrate", "completed"),), states | {"migrate": instances(S.COMPLETED)}) is None
    assert waiting_reason((("web", "ready"),), states) == "waiting for web to be ready"


def test_a_fatal_dependency_says_why_it_will_not_come() -> None:
    failed = SlotStatus(1, S.FATAL, fatal_reason="exit code 2 (restart = never)")
    states = {"migrate": [SlotStatus(0, S.COMPLETED), failed]}
    assert waiting_reason((("migrate", "completed"),), states) == \
        "waiting for migrate to complete (migrate is fatal: exit code 2 (restart = never))"
    # Backing off is not fatal: it may still come, so no reason is given.
    assert waiting_reason((("worker", "ready"),), {"worker": instances(S.BACKOFF)}) == \
        "waiting for worker to be ready"


def test_start_levels_count_the_longest_chain_of_dependencies() -> None:
    deps = {
        "migrate": (),
        "cache": (),
        "web": (("migrate", "completed"), ("cache", "started")),
        "worker": (("migrate", "completed"),),
        "beat": (("worker", "ready"), ("cache", "started")),  # a diamond: the deepest one counts
    }
    assert levels(deps) == {"migrate": 0, "cache": 0, "web": 1, "worker": 1, "beat": 2}


def test_a_dependency_that_is_not_a_program_does_not_raise_the_level() -> None:
    # Unknown names are refused when the configuration is read; here they are simply not counted.
    assert levels({"web": (("ghost", "ready"),), "worker": (("web", "started"),)}) == {"web": 0, "worker": 1}


def test_stop_order_stops_dependents_first_and_groups_programs_of_one_level_by_name() -> None:
    deps = {
        "web": (("migrate", "completed"),),
        "migrate": (),
        "worker": (("migrate", "completed"),),
        "beat": (("worker", "ready"),),
        "cache": (),
    }
    assert stop_order(deps) == [["beat"], ["web", "worker"], ["cache", "migrate"]]
    assert stop_order({"web": ()}) == [["web"]]
    assert stop_order({}) == []


def test_every_program_is_stopped_exactly_once_and_after_all_its_dependents() -> None:
    deps = {"a": (), "b": (("a", "ready"),), "c": (("b", "ready"), ("a", "started")), "d": (("a", "ready"),)}
    order = stop_order(deps)
    position = {name: i for i, group in enumerate(order) for name in group}
    assert sorted(position) == sorted(deps) and sum(len(group) for group in order) == len(deps)
    for name, needs in deps.items():
        for dep, _ in needs:
            assert position[name] < position[dep], (name, dep, order)


def test_the_docstring_examples_hold() -> None:
    result = doctest.testmod(graph)
    assert result.attempted >= 2 and result.failed == 0
