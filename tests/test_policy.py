"""The restart policy, driven by a scripted clock and an injected random source."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from supervisor.config.toml import RestartSection
from supervisor.slots.policy import GiveUp, Restart, RestartTracker

NO_LOOP = 1000  # crash_loop_failures high enough never to trigger


def tracker(rand: float = 0.5, **cfg: Any) -> RestartTracker:
    """A tracker whose random source always returns ``rand`` (0.5 means no jitter at all)."""
    section = RestartSection(**{"initial_delay": 0.5, "max_delay": 4.0, "multiplier": 2.0,
                                "jitter": 0.2, "min_uptime": 10.0, "crash_loop_failures": NO_LOOP,
                                "crash_loop_window": 60.0, **cfg})
    return RestartTracker(section, rand=lambda: rand)


def crashes(t: RestartTracker, times: list[float], served_for: float | None = None) -> Iterator[object]:
    """Exits at ``times``; by default of workers that never became ready (failed starts)."""
    for now in times:
        yield t.on_exit(now=now, served_for=served_for)


def test_backoff_doubles_from_initial_delay_and_is_capped() -> None:
    decisions = list(crashes(tracker(), [0, 1, 2, 3, 4, 5]))
    assert decisions == [Restart(0.5, 1), Restart(1.0, 2), Restart(2.0, 3), Restart(4.0, 4),
                         Restart(4.0, 5), Restart(4.0, 6)]


def test_multiplier_is_configurable() -> None:
    decisions = list(crashes(tracker(multiplier=3.0, max_delay=100.0), [0, 1, 2]))
    assert [d.delay for d in decisions] == pytest.approx([0.5, 1.5, 4.5])  # type: ignore[attr-defined]


@pytest.mark.parametrize("rand, expected", [(0.0, 0.8), (1.0, 1.2), (0.75, 1.1)])
def test_jitter_spreads_the_delay_by_the_configured_fraction(rand: float, expected: float) -> None:
    t = tracker(rand=rand, initial_delay=1.0, max_delay=10.0)
    decision = t.on_exit(now=0, served_for=None)
    assert isinstance(decision, Restart)
    assert decision.delay == pytest.approx(expected)


def test_jitter_never_exceeds_max_delay() -> None:
    t = tracker(rand=1.0, initial_delay=4.0, max_delay=4.0)
    decision = t.on_exit(now=0, served_for=None)
    assert isinstance(decision, Restart) and decision.delay == 4.0


def test_a_worker_that_served_for_min_uptime_is_restarted_at_once_and_the_backoff_starts_over() -> None:
    t = tracker()
    assert [d.delay for d in crashes(t, [0, 1, 2])] == [0.5, 1.0, 2.0]  # type: ignore[attr-defined]
    # Served for exactly min_uptime after becoming ready: healthy, whatever killed it.
    assert t.on_exit(now=20, served_for=10.0) == Restart(0.0, 0)
    assert t.on_exit(now=21, served_for=None) == Restart(0.5, 1)
    # Dying just short of min_uptime after readiness is a failed start.
    assert t.on_exit(now=40, served_for=9.99) == Restart(1.0, 2)


def test_crash_loop_gives_up_on_the_nth_failure_within_the_window() -> None:
    t = tracker(crash_loop_failures=3, crash_loop_window=10.0)
    first, second, third = crashes(t, [100.0, 101.0, 102.0])
    assert isinstance(first, Restart) and isinstance(second, Restart)
    assert isinstance(third, GiveUp)
    assert third.reason == "crashed 3 times within 10s (crash_loop_failures = 3)"


def test_failures_older_than_the_window_are_forgotten() -> None:
    t = tracker(crash_loop_failures=3, crash_loop_window=10.0)
    # Two crashes, then one 11s later: only one failure is inside the window each time.
    decisions = list(crashes(t, [0.0, 5.0, 16.0, 27.0, 38.0]))
    assert all(isinstance(d, Restart) for d in decisions)
    # Three within 10s again: a crash loop.
    assert isinstance(t.on_exit(now=40.0, served_for=0.1), Restart)
    assert isinstance(t.on_exit(now=41.0, served_for=None), GiveUp)


def test_healthy_exits_never_make_a_crash_loop_but_failures_around_them_still_do() -> None:
    # An OOM killer or an operator killing a serving worker every few seconds is not a crash loop:
    # each of those workers served, so each is restarted at once.
    t = tracker(min_uptime=1.0, crash_loop_failures=3, crash_loop_window=60.0)
    assert list(crashes(t, [10.0 + 3 * i for i in range(10)], served_for=2.0)) == [Restart(0.0, 0)] * 10
    first, second, third = crashes(t, [50.0, 51.0, 52.0])
    assert isinstance(first, Restart) and isinstance(second, Restart) and isinstance(third, GiveUp)


def test_reset_forgets_backoff_and_crash_history() -> None:
    t = tracker(crash_loop_failures=3, crash_loop_window=60.0)
    list(crashes(t, [0.0, 1.0]))
    t.reset()
    assert list(crashes(t, [2.0, 3.0])) == [Restart(0.5, 1), Restart(1.0, 2)]


def test_zero_initial_delay_restarts_at_once() -> None:
    assert list(crashes(tracker(initial_delay=0.0, jitter=0.0), [0, 1, 2])) == [
        Restart(0.0, 1), Restart(0.0, 2), Restart(0.0, 3)]
