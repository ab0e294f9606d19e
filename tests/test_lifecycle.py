"""The slot lifecycle machine, driven by scripted event histories and a fake clock. No processes."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import pytest

from supervisor.config.toml import RestartSection
from supervisor.slots.lifecycle import (
    Action,
    AwaitReady,
    Begin,
    DependencyLost,
    Exited,
    ExitPolicy,
    GaveUp,
    Halt,
    Kill,
    Log,
    Ready,
    ReadyTimedOut,
    Recycle,
    Replace,
    Replaced,
    Resume,
    Shutdown,
    Sleep,
    SlotMachine,
    Spawn,
    Spawned,
    SpawnFailed,
    Stop,
    TimerFired,
)
from supervisor.state import ExitReason, SlotState
from tests.support import Clock

SIGKILL = -9
WALL = 1_700_000_000.0


def fresh_clock() -> Clock:
    """The monotonic clock at 100 s, its wall clock at WALL + 100 s."""
    return Clock(100.0, wall_offset=WALL)


def machine(clock: Clock, **restart: Any) -> SlotMachine:
    cfg = RestartSection(**{"initial_delay": 0.5, "max_delay": 4.0, "multiplier": 2.0, "jitter": 0.2,
                            "min_uptime": 1.0, "crash_loop_failures": 4, "crash_loop_window": 60.0, **restart})
    return SlotMachine(0, cfg, ready_timeout=5.0, clock=clock, wall=clock.wall, rand=lambda: 0.5)


def without_logs(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Log)]


def spawn(m: SlotMachine, pid: int) -> list[Action]:
    return m.handle(Spawned(pid, deque()))


def serving(clock: Clock, pid: int = 10, **restart: Any) -> SlotMachine:
    """A machine whose first worker ``pid`` serves."""
    m = machine(clock, **restart)
    assert m.handle(Begin()) == [Spawn()]
    assert without_logs(spawn(m, pid)) == [AwaitReady(pid, 5.0)]
    assert without_logs(m.handle(Ready(pid))) == []
    return m


def test_a_slot_starts_its_worker_and_serves() -> None:
    clock = fresh_clock()
    m = machine(clock)
    assert m.status.state == SlotState.WAITING
    assert m.handle(Begin()) == [Spawn()]
    assert m.status.state == SlotState.STARTING and m.status.pid is None
    spawn(m, 10)
    assert (m.status.state, m.status.pid, m.status.restarts) == (SlotState.STARTING, 10, 0)
    clock.now += 0.3
    assert m.handle(Ready(10)) == [Log(logging.INFO, "worker pid 10 is serving")]
    assert (m.status.state, m.status.ready_at) == (SlotState.RUNNING, WALL + 100.3)


def test_failed_starts_back_off_exponentially_then_the_crash_loop_gives_up_with_its_reason() -> None:
    clock = fresh_clock()
    m = machine(clock)
    m.handle(Begin())
    delays = []
    for pid in (10, 11, 12):
        spawn(m, pid)
        clock.now += 0.2
        sleep = [a for a in m.handle(Exited(pid, 1)) if isinstance(a, Sleep)][0]
        delays.append(sleep.delay)
        assert m.status.state == SlotState.BACKOFF and m.status.pid is None
        assert m.status.next_retry_at == pytest.approx(clock.wall() + sleep.delay)
        assert m.status.last_exit is not None and m.status.last_exit.code == 1
        clock.now += sleep.delay
        assert m.handle(TimerFired(sleep.timer)) == [Spawn()]
    assert delays == [0.5, 1.0, 2.0]
    spawn(m, 13)
    actions = m.handle(Exited(13, 1))
    assert actions[-1] == GaveUp("crashed 4 times within 60s (crash_loop_failures = 4)")
    assert (m.status.state, m.status.fatal_reason) == (SlotState.FATAL, actions[-1].reason)
    assert m.status.restarts == 3


def test_a_worker_that_had_served_is_restarted_at_once_every_time() -> None:
    clock = fresh_clock()
    m = serving(clock, crash_loop_failures=2)
    for pid in range(11, 21):  # killed every 3 s, ten times: never a crash loop, never a delay
        clock.now += 3.0
        actions = m.handle(Exited(pid - 1, SIGKILL))
        assert without_logs(actions) == [Spawn()], actions
        assert "restarting now" in str(actions[0])
        spawn(m, pid)
        m.handle(Ready(pid))
    assert (m.status.state, m.status.restarts) == (SlotState.RUNNING, 10)


def test_dying_within_min_uptime_of_readiness_is_a_failed_start() -> None:
    clock = fresh_clock()
    m = serving(clock)
    clock.now += 0.5
    assert [type(a) for a in without_logs(m.handle(Exited(10, 1)))] == [Sleep]


def test_a_late_timer_and_reports_about_other_pids_are_ignored() -> None:
    clock = fresh_clock()
    m = serving(clock)
    clock.now += 0.1
    sleep = [a for a in m.handle(Exited(10, 1)) if isinstance(a, Sleep)][0]
    assert m.handle(Replace(ExitReason.RELOAD)) == [Spawn()]  # a change starts it early
    assert m.handle(TimerFired(sleep.timer)) == []  # the old timer no longer counts
    spawn(m, 11)
    assert m.handle(Ready(99)) == [] and m.handle(Exited(98, 0)) == [] and m.handle(ReadyTimedOut(97)) == []
    assert without_logs(m.handle(Ready(11))) == [Replaced(True)]


def test_a_change_wakes_a_slot_that_gave_up_and_forgets_its_crash_history() -> None:
    clock = fresh_clock()
    m = machine(clock, crash_loop_failures=1)
    m.handle(Begin())
    spawn(m, 10)
    assert isinstance(m.handle(Exited(10, 1))[-1], GaveUp)
    assert m.handle(TimerFired(m.timer)) == []  # parked: only a change wakes it
    assert m.handle(Replace(ExitReason.RELOAD)) == [Spawn()]
    spawn(m, 11)
    assert (m.status.state, m.status.fatal_reason) == (SlotState.STARTING, None)
    assert without_logs(m.handle(Ready(11))) == [Replaced(True)]


def test_a_rolling_replacement_starts_the_successor_before_stopping_the_old_worker() -> None:
    clock = fresh_clock()
    m = serving(clock)
    assert m.handle(Replace(ExitReason.RELOAD)) == [Spawn()]
    assert without_logs(spawn(m, 11)) == [AwaitReady(11, 5.0)]
    assert (m.status.state, m.status.pid) == (SlotState.RUNNING, 10)  # the old one still serves
    assert without_logs(m.handle(Ready(11))) == [Stop(10, ExitReason.RELOAD), Replaced(True)]
    assert (m.status.state, m.status.pid, m.status.restarts) == (SlotState.RUNNING, 11, 1)
    assert not m.idle
    assert m.handle(Exited(10, -15)) == [Log(logging.INFO, "worker pid 10 stopped: drained and exited on "
                                                         "SIGTERM (reload)")]
    assert m.status.pid == 11 and not m.idle


def test_a_successor_that_fails_to_start_keeps_the_old_worker() -> None:
    clock = fresh_clock()
    m = serving(clock)
    m.handle(Replace(ExitReason.RELOAD))
    spawn(m, 11)
    actions = m.handle(Exited(11, 1))
    assert without_logs(actions) == [Replaced(False)]
    assert "still serving the previous version with pid 10" in str(actions[0])
    assert (m.status.state, m.status.pid, m.status.restarts) == (SlotState.RUNNING, 10, 0)


def test_a_successor_that_never_reports_ready_is_killed_and_the_old_worker_kept() -> None:
    clock = fresh_clock()
    m = serving(clock)
    m.handle(Replace(ExitReason.MANUAL))
    spawn(m, 11)
    assert without_logs(m.handle(ReadyTimedOut(11))) == [Kill(11)]
    actions = m.handle(Exited(11, SIGKILL))
    assert without_logs(actions) == [Replaced(False)]
    assert "(start timeout)" in str(actions[0])
    assert m.status.pid == 10


def test_a_successor_that_cannot_be_spawned_keeps_the_old_worker() -> None:
    m = serving(fresh_clock())
    m.handle(Replace(ExitReason.RELOAD))
    assert without_logs(m.handle(SpawnFailed("Too many open files"))) == [Replaced(False)]
    assert (m.status.state, m.status.pid) == (SlotState.RUNNING, 10)


def test_a_current_worker_that_cannot_be_spawned_backs_off() -> None:
    m = machine(fresh_clock())
    m.handle(Begin())
    actions = m.handle(SpawnFailed("Resource temporarily unavailable"))
    assert [type(a) for a in without_logs(actions)] == [Sleep]
    assert "could not be started: Resource temporarily unavailable" in str(actions[0])
    assert m.status.state == SlotState.BACKOFF


def test_when_the_old_worker_crashes_during_a_replacement_the_successor_takes_over() -> None:
    clock = fresh_clock()
    m = serving(clock)
    m.handle(Replace(ExitReason.RELOAD))
    spawn(m, 11)
    clock.now += 5
    assert without_logs(m.handle(Exited(10, SIGKILL))) == []
    assert (m.status.state, m.status.pid) == (SlotState.STARTING, 11)
    assert without_logs(m.handle(Ready(11))) == [Replaced(True)]
    assert m.status.state == SlotState.RUNNING


def test_shutdown_during_backoff_stops_nothing_and_cancels_the_restart() -> None:
    clock = fresh_clock()
    m = serving(clock)
    clock.now += 0.1
    sleep = [a for a in m.handle(Exited(10, 1)) if isinstance(a, Sleep)][0]
    assert m.handle(Shutdown()) == []
    assert m.status.state == SlotState.STOPPED and m.idle
    assert m.handle(TimerFired(sleep.timer)) == []
    assert m.handle(Shutdown()) == []  # a second stop request changes nothing here


def test_shutdown_during_a_replacement_stops_both_and_reports_the_replacement_failed() -> None:
    clock = fresh_clock()
    m = serving(clock)
    m.handle(Replace(ExitReason.RELOAD))
    spawn(m, 11)
    actions = m.handle(Shutdown())
    assert actions == [Replaced(False), Stop(10, ExitReason.SHUTDOWN), Stop(11, ExitReason.SHUTDOWN)]
    assert m.status.state == SlotState.STOPPING
    assert m.handle(Ready(11)) == []  # too late to promote
    m.handle(Exited(11, -15))
    assert not m.idle
    m.handle(Exited(10, -15))
    assert m.status.state == SlotState.STOPPED and m.idle
    assert m.status.last_exit is not None and m.status.last_exit.reason == ExitReason.SHUTDOWN


def test_shutdown_waits_for_draining_workers_too() -> None:
    clock = fresh_clock()
    m = serving(clock)
    m.handle(Replace(ExitReason.RELOAD))
    spawn(m, 11)
    m.handle(Ready(11))  # 10 drains
    assert m.handle(Shutdown()) == [Stop(11, ExitReason.SHUTDOWN)]
    m.handle(Exited(11, -15))
    assert m.status.state == SlotState.STOPPED and not m.idle
    m.handle(Exited(10, -15))
    assert m.idle


def test_a_replacement_is_refused_before_start_and_during_another() -> None:
    m = machine(fresh_clock())
    assert m.handle(Replace(ExitReason.RELOAD)) == [Replaced(False)]
    m = serving(fresh_clock())
    m.handle(Replace(ExitReason.RELOAD))
    assert m.handle(Replace(ExitReason.RELOAD)) == [Replaced(False)]


def test_a_lost_dependency_before_start_is_shown_and_the_slot_waits() -> None:
    m = machine(fresh_clock())
    assert m.handle(DependencyLost("waiting for the database")) == []
    assert (m.status.state, m.status.waiting_for) == (SlotState.WAITING, "waiting for the database")
    assert m.handle(Begin()) == [Spawn()]
    assert m.status.waiting_for is None


def policy_machine(clock: Clock, policy: ExitPolicy) -> SlotMachine:
    cfg = RestartSection(initial_delay=0.5, max_delay=4.0, crash_loop_failures=4)
    m = SlotMachine(0, cfg, ready_timeout=5.0, clock=clock, wall=clock.wall, rand=lambda: 0.5, mode=policy)
    m.handle(Begin())
    spawn(m, 10)
    m.handle(Ready(10))
    return m


def test_a_one_shot_job_that_succeeds_completes_and_is_not_restarted() -> None:
    m = policy_machine(fresh_clock(), ExitPolicy(restart="never", once=True))
    actions = m.handle(Exited(10, 0))
    assert without_logs(actions) == [] and "completed" in str(actions[0])
    assert (m.status.state, m.status.pid) == (SlotState.COMPLETED, None)
    assert m.idle


def test_a_one_shot_job_that_fails_gives_up_with_its_exit_as_the_reason() -> None:
    m = policy_machine(fresh_clock(), ExitPolicy(restart="never", once=True))
    actions = m.handle(Exited(10, 3))
    assert actions[-1] == GaveUp("exit code 3 (crash) (restart = never)")
    assert (m.status.state, m.status.fatal_reason) == (SlotState.FATAL, "exit code 3 (crash) (restart = never)")


def test_a_one_shot_job_with_restart_on_failure_is_retried_with_backoff_until_it_succeeds() -> None:
    clock = fresh_clock()
    m = policy_machine(clock, ExitPolicy(restart="on-failure", once=True))
    assert [type(a) for a in without_logs(m.handle(Exited(10, 1)))] == [Sleep]
    m.handle(TimerFired(m.timer))
    spawn(m, 11)
    m.handle(Ready(11))
    m.handle(Exited(11, 0))
    assert m.status.state == SlotState.COMPLETED


@pytest.mark.parametrize("code, state", [(0, SlotState.STOPPED), (4, SlotState.STOPPED), (1, SlotState.BACKOFF)])
def test_restart_on_failure_ends_a_service_on_a_success_code(code: int, state: SlotState) -> None:
    m = policy_machine(fresh_clock(), ExitPolicy(restart="on-failure", success_codes=(0, 4)))
    m.handle(Exited(10, code))
    assert m.status.state == state


def test_restart_never_leaves_a_service_that_exited_stopped() -> None:
    m = policy_machine(fresh_clock(), ExitPolicy(restart="never"))
    assert without_logs(m.handle(Exited(10, 0))) == []
    assert m.status.state == SlotState.STOPPED and m.idle


def test_a_halted_instance_stops_without_a_restart_and_starts_again_on_resume() -> None:
    clock = fresh_clock()
    m = serving(clock)
    assert without_logs(m.handle(Halt())) == [Stop(10, ExitReason.MANUAL)]
    assert m.status.state == SlotState.STOPPING
    m.handle(Exited(10, -15))
    assert (m.status.state, m.status.pid) == (SlotState.STOPPED, None)
    assert m.status.last_exit is not None and m.status.last_exit.reason == ExitReason.MANUAL
    assert m.handle(Resume()) == [Spawn()]
    spawn(m, 11)
    assert m.status.restarts == 1


def test_restart_of_a_program_is_stop_then_start() -> None:
    m = serving(fresh_clock())
    assert without_logs(m.handle(Halt(resume=True))) == [Stop(10, ExitReason.MANUAL)]
    assert without_logs(m.handle(Exited(10, -15))) == [Spawn()]


def test_halting_during_backoff_cancels_the_restart() -> None:
    clock = fresh_clock()
    m = serving(clock)
    clock.now += 0.1
    sleep = [a for a in m.handle(Exited(10, 1)) if isinstance(a, Sleep)][0]
    assert m.handle(Halt()) == []
    assert m.status.state == SlotState.STOPPED
    assert m.handle(TimerFired(sleep.timer)) == []


# ----- recycling: a live worker replaced for its health ------------------------------------------


def test_a_recycled_worker_is_drained_only_once_its_successor_serves() -> None:
    clock = fresh_clock()
    m = serving(clock)
    actions = m.handle(Recycle(10, ExitReason.REQUESTS))
    assert without_logs(actions) == [Spawn()]
    assert "replacing worker pid 10 (requests)" in str(actions[0])
    spawn(m, 11)
    assert (m.status.state, m.status.pid) == (SlotState.RUNNING, 10)  # the old one still serves
    assert without_logs(m.handle(Ready(11))) == [Stop(10, ExitReason.REQUESTS), Replaced(True)]
    assert (m.status.pid, m.status.restarts) == (11, 1)
    assert m.handle(Exited(10, -15)) == [Log(logging.INFO, "worker pid 10 stopped: drained and exited on "
                                                         "SIGTERM (requests)")]
    assert m.status.last_exit is not None and m.status.last_exit.reason == ExitReason.REQUESTS


def test_a_hung_worker_is_killed_not_drained_once_its_successor_serves() -> None:
    clock = fresh_clock()
    m = serving(clock)
    assert without_logs(m.handle(Recycle(10, ExitReason.HUNG, kill_old=True))) == [Spawn()]
    spawn(m, 11)
    assert without_logs(m.handle(Ready(11))) == [Kill(10), Replaced(True)]
    assert m.handle(Exited(10, SIGKILL)) == [Log(logging.INFO, "worker pid 10 stopped: killed by SIGKILL (hung)")]
    assert (m.status.state, m.status.pid) == (SlotState.RUNNING, 11)
    # The next replacement drains again: the kill was for that worker only.
    m.handle(Replace(ExitReason.RELOAD))
    spawn(m, 12)
    assert without_logs(m.handle(Ready(12))) == [Stop(11, ExitReason.RELOAD), Replaced(True)]


@pytest.mark.parametrize("failure", ["exit", "spawn", "timeout"])
def test_a_hung_worker_whose_successor_fails_is_killed_anyway_and_restarted_by_the_policy(failure: str) -> None:
    clock = fresh_clock()
    m = serving(clock)
    m.handle(Recycle(10, ExitReason.HUNG, kill_old=True))
    clock.now += 40
    if failure == "spawn":
        actions = m.handle(SpawnFailed("Too many open files"))
    else:
        spawn(m, 11)
        if failure == "timeout":
            assert without_logs(m.handle(ReadyTimedOut(11))) == [Kill(11)]
        actions = m.handle(Exited(11, 1))
    assert without_logs(actions) == [Replaced(False), Kill(10)]
    assert "killing worker pid 10 anyway: it is hung and serves no one" in str(actions)
    actions = m.handle(Exited(10, SIGKILL))
    assert without_logs(actions) == [Spawn()]  # it had served: restarted at once, through the policy
    assert "worker pid 10 killed by SIGKILL (hung) after 40.0s; restarting now" in str(actions[0])
    assert m.status.last_exit is not None and m.status.last_exit.reason == ExitReason.HUNG


def test_a_recycled_worker_that_fails_to_be_replaced_is_kept_when_it_was_not_hung() -> None:
    m = serving(fresh_clock())
    m.handle(Recycle(10, ExitReason.RSS))
    spawn(m, 11)
    assert without_logs(m.handle(Exited(11, 1))) == [Replaced(False)]
    assert (m.status.state, m.status.pid) == (SlotState.RUNNING, 10)


def test_when_the_hung_worker_dies_first_its_successor_takes_over_without_a_kill() -> None:
    clock = fresh_clock()
    m = serving(clock)
    m.handle(Recycle(10, ExitReason.HUNG, kill_old=True))
    spawn(m, 11)
    clock.now += 5
    assert without_logs(m.handle(Exited(10, SIGKILL))) == []
    assert without_logs(m.handle(Ready(11))) == [Replaced(True)]
    assert (m.status.state, m.status.pid) == (SlotState.RUNNING, 11)


def test_a_stale_recycle_is_refused() -> None:
    clock = fresh_clock()
    m = serving(clock)
    assert m.handle(Recycle(99, ExitReason.HUNG, kill_old=True)) == [Replaced(False)]  # not this slot's worker
    m.handle(Replace(ExitReason.RELOAD))
    assert m.handle(Recycle(10, ExitReason.RSS)) == [Replaced(False)]  # another replacement is under way
    spawn(m, 11)
    assert m.handle(Recycle(11, ExitReason.RSS)) == [Replaced(False)]  # the successor does not serve yet
    m.handle(Ready(11))
    m.handle(Shutdown())
    assert m.handle(Recycle(11, ExitReason.AGE)) == [Replaced(False)]  # stopping
    starting = machine(clock)
    starting.handle(Begin())
    spawn(starting, 20)
    # Start-up is governed by ready_timeout, not by the heartbeat.
    assert starting.handle(Recycle(20, ExitReason.HUNG, kill_old=True)) == [Replaced(False)]


def test_shutdown_during_a_hung_recycle_stops_both_and_kills_nothing_early() -> None:
    m = serving(fresh_clock())
    m.handle(Recycle(10, ExitReason.HUNG, kill_old=True))
    spawn(m, 11)
    assert m.handle(Shutdown()) == [Replaced(False), Stop(10, ExitReason.SHUTDOWN), Stop(11, ExitReason.SHUTDOWN)]
    assert m.handle(Ready(11)) == []
    m.handle(Exited(11, 1))
    m.handle(Exited(10, SIGKILL))
    assert m.idle and m.status.state == SlotState.STOPPED


def test_a_halt_during_a_hung_recycle_stops_both_and_forgets_the_kill() -> None:
    m = serving(fresh_clock())
    m.handle(Recycle(10, ExitReason.HUNG, kill_old=True))
    spawn(m, 11)
    assert without_logs(m.handle(Halt(resume=True))) == [Replaced(False), Stop(11, ExitReason.MANUAL),
                                                          Stop(10, ExitReason.MANUAL)]
    m.handle(Exited(11, -15))
    assert without_logs(m.handle(Exited(10, -15))) == [Spawn()]  # restart NAME: started again
    spawn(m, 12)
    m.handle(Ready(12))
    m.handle(Replace(ExitReason.RELOAD))
    spawn(m, 13)
    assert without_logs(m.handle(Ready(13))) == [Stop(12, ExitReason.RELOAD), Replaced(True)]


def test_a_removed_slot_drains_its_worker_for_the_scale_down() -> None:
    m = serving(fresh_clock())
    assert m.handle(Shutdown(ExitReason.SCALE_DOWN)) == [Stop(10, ExitReason.SCALE_DOWN)]
    assert m.handle(Exited(10, -15)) == [Log(logging.INFO, "worker pid 10 stopped: drained and exited on SIGTERM "
                                                         "(scale down)")]
    assert m.idle and m.status.state == SlotState.STOPPED


# ----- transitions the histories above do not reach ------------------------------------------------


def test_begin_counts_once_and_not_after_a_shutdown() -> None:
    m = serving(Clock())
    assert m.handle(Begin()) == []
    assert m.handle(DependencyLost("waiting for the database")) == []
    assert m.status.waiting_for is None  # shown only before the start
    never_begun = machine(Clock())
    assert never_begun.handle(Shutdown()) == []
    assert never_begun.status.state == SlotState.STOPPED and never_begun.idle
    assert never_begun.handle(Begin()) == [] and never_begun.handle(Resume()) == []


def test_a_current_worker_that_never_reports_ready_is_killed_and_backs_off() -> None:
    clock = Clock()
    m = machine(clock)
    m.handle(Begin())
    spawn(m, 10)
    actions = m.handle(ReadyTimedOut(10))
    assert without_logs(actions) == [Kill(10)] and "did not report ready within 5s" in str(actions[0])
    assert [type(a) for a in without_logs(m.handle(Exited(10, SIGKILL)))] == [Sleep]
    assert m.status.state == SlotState.BACKOFF
    assert m.status.last_exit is not None and m.status.last_exit.reason == ExitReason.START_TIMEOUT


def test_a_successor_that_took_over_and_then_fails_ends_the_replacement_and_goes_through_the_policy() -> None:
    clock = Clock()
    m = serving(clock)
    m.handle(Replace(ExitReason.RELOAD))
    spawn(m, 11)
    m.handle(Exited(10, SIGKILL))  # 11 takes over the slot
    actions = without_logs(m.handle(Exited(11, 1)))
    assert actions[0] == Replaced(False) and [type(a) for a in actions[1:]] == [Sleep]
    assert m.status.state == SlotState.BACKOFF and m.status.pid is None
    assert m.handle(Replace(ExitReason.RELOAD)) == [Spawn()]  # the next replacement is taken again


def test_a_spawn_reported_after_a_shutdown_is_stopped_at_once() -> None:
    # Cannot happen with a synchronous spawner; the machine must still leave no process behind.
    m = machine(Clock())
    m.handle(Begin())
    m.handle(Shutdown())
    assert without_logs(spawn(m, 10)) == [Stop(10, ExitReason.SHUTDOWN)]
    assert not m.idle
    m.handle(Exited(10, -15))
    assert m.idle


def test_user_commands_that_do_not_apply_are_ignored() -> None:
    assert machine(Clock()).handle(Halt()) == []  # not started yet
    m = serving(Clock())
    assert m.handle(Resume()) == []  # already running
    m.handle(Halt())
    assert m.handle(Halt(resume=True)) == [] and m.handle(Resume()) == []  # a stop is under way
    m.handle(Exited(10, -15))
    assert m.status.state == SlotState.STOPPED  # the stop asked first is the one that counts


def test_a_restart_during_backoff_starts_at_once() -> None:
    clock = Clock()
    m = serving(clock)
    clock.now += 0.1
    sleep = [a for a in m.handle(Exited(10, 1)) if isinstance(a, Sleep)][0]
    assert m.handle(Halt(resume=True)) == [Spawn()]
    assert m.handle(TimerFired(sleep.timer)) == []
    spawn(m, 11)
    assert m.status.state == SlotState.STARTING and m.status.pid == 11


def test_no_replacement_starts_while_a_user_stop_is_under_way() -> None:
    m = serving(Clock())
    m.handle(Halt(resume=True))
    assert m.handle(Replace(ExitReason.RELOAD)) == [Replaced(False)]
    assert m.handle(Recycle(10, ExitReason.RSS)) == [Replaced(False)]
    assert without_logs(m.handle(Exited(10, -15))) == [Spawn()]  # the restart goes on alone


def test_a_shutdown_during_a_user_restart_stops_for_good() -> None:
    m = serving(Clock())
    m.handle(Halt(resume=True))
    assert m.handle(Shutdown()) == [Stop(10, ExitReason.SHUTDOWN)]
    assert without_logs(m.handle(Exited(10, -15))) == []  # not started again
    assert m.idle and m.status.state == SlotState.STOPPED
    assert m.status.last_exit is not None and m.status.last_exit.reason == ExitReason.SHUTDOWN
