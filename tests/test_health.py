"""The health judge with scripted readings and a fake clock: hung, recycling limits, jitter. No processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from supervisor.config.toml import AppSection
from supervisor.health.judge import MIB, Judge, Limits, Sample
from supervisor.state import ExitReason, WorkerVitals


def limits(**app: Any) -> Limits:
    return Limits.of(AppSection(**{"heartbeat_interval": 1.0, "ready_timeout": 10.0, **app}), production=False)


def rands(*values: float) -> Iterator[float]:
    yield from values


def judge(*draws: float, **app: Any) -> Judge:
    values = rands(*draws)
    return Judge(limits(**app), lambda: next(values))


def serving(pid: int = 10, slot: int = 0, *, spawned: float = 0.0, ready: float = 1.0, beat: float | None = 1.0,
            requests: int = 0, rss: int | None = 50 * MIB, lag: float = 0.0) -> Sample:
    vitals = WorkerVitals(spawned_at=spawned, ready_at=ready, last_beat_at=beat, beats=1 if beat else 0,
                          loop_lag=lag, requests=requests)
    return Sample(slot, pid, vitals, rss)


def test_hang_timeout_is_30s_in_production_off_in_development_unless_set() -> None:
    assert Limits.of(AppSection(), production=True).hang_timeout == 30.0
    assert Limits.of(AppSection(), production=False).hang_timeout is None
    assert Limits.of(AppSection(hang_timeout=5), production=False).hang_timeout == 5.0
    assert Limits.of(AppSection(hang_timeout=0), production=True).hang_timeout is None
    assert Limits.of(AppSection(max_rss=1.5), production=True).max_rss == int(1.5 * MIB)


def test_a_worker_whose_loop_stops_beating_for_hang_timeout_is_hung() -> None:
    j = judge(hang_timeout=5)
    assert j.judge([serving(beat=20.0)], now=24.9) == []
    [verdict] = j.judge([serving(beat=20.0)], now=25.0)
    assert (verdict.pid, verdict.reason, verdict.hung, verdict.silent_for) == (10, ExitReason.HUNG, True, 5.0)
    assert verdict.detail == "no heartbeat from its event loop for 5.0s (hang_timeout = 5s)"


def test_the_hang_clock_starts_at_ready_so_a_slow_start_is_never_hung() -> None:
    j = judge(hang_timeout=2)
    starting = Sample(0, 10, WorkerVitals(spawned_at=0.0), None)
    assert j.judge([starting], now=50.0) == []  # 50 s without a beat while starting: ready_timeout's business
    late = serving(spawned=0.0, ready=50.0, beat=None)
    assert j.judge([late], now=51.9) == []
    [verdict] = j.judge([late], now=52.0)
    assert verdict.detail == "no heartbeat since it reported ready for 2.0s (hang_timeout = 2s)"


def test_without_hang_timeout_nothing_is_ever_hung() -> None:
    assert judge().judge([serving(beat=1.0)], now=10_000.0) == []


def test_a_verdict_is_given_once_then_again_only_after_retry_after_while_the_worker_remains() -> None:
    j = judge(hang_timeout=5)
    assert len(j.judge([serving(beat=0.0)], now=10.0)) == 1
    assert j.judge([serving(beat=0.0)], now=11.0) == []  # its replacement is under way
    assert len(j.judge([serving(beat=0.0)], now=10.0 + 15.0)) == 1  # ready_timeout + 5 later: still there
    j.judge([], now=26.0)  # gone: forgotten
    assert len(j.judge([serving(beat=0.0)], now=27.0)) == 1


def test_loop_lag_is_the_last_beats_lateness_and_grows_once_a_beat_is_overdue() -> None:
    j = judge()
    vitals = serving(beat=10.0, lag=0.25).vitals
    assert j.lag(vitals, now=10.5) == 0.25
    assert j.lag(vitals, now=14.0) == 3.0  # due at 11.0
    assert j.lag(WorkerVitals(spawned_at=0.0), now=5.0) is None


def test_past_max_rss_the_worker_is_recycled_for_rss() -> None:
    j = judge(max_rss=100)
    assert j.judge([serving(rss=100 * MIB)], now=5.0) == []
    assert j.judge([serving(rss=None)], now=5.0) == []  # unreadable: no verdict
    [verdict] = j.judge([serving(rss=150 * MIB)], now=5.0)
    assert (verdict.reason, verdict.hung) == (ExitReason.RSS, False)
    assert verdict.detail == "resident memory 150.0 MiB is over max_rss = 100 MiB"


def test_each_worker_draws_its_own_request_limit_within_the_jitter() -> None:
    j = judge(0.0, 0.999, max_requests=50, max_requests_jitter=10)
    a, b = serving(10, 0, requests=55), serving(11, 1, requests=55)
    [verdict] = j.judge([a, b], now=5.0)  # 10 drew 50, 11 drew 60
    assert (verdict.pid, verdict.reason) == (10, ExitReason.REQUESTS)
    assert verdict.detail == "served 55 requests (its limit: 50, max_requests = 50 + jitter up to 10)"
    assert (j.quota(10).requests, j.quota(11).requests) == (50, 60)
    [verdict] = j.judge([serving(11, 1, requests=60)], now=6.0)
    assert verdict.pid == 11


def test_each_worker_draws_its_own_age_limit_within_the_jitter() -> None:
    j = judge(0.0, 0.5, max_age=100, max_age_jitter=20)
    a, b = serving(10, 0, spawned=0.0), serving(11, 1, spawned=0.0)
    assert j.judge([a, b], now=99.0) == []
    assert [v.pid for v in j.judge([a, b], now=100.0)] == [10]
    [verdict] = j.judge([a, b], now=110.0)
    assert verdict.detail == "running for 110.0s (its limit: 110.0s, max_age = 100s + jitter up to 20s)"


def test_hung_comes_first_then_rss_then_requests_then_age_one_verdict_per_worker() -> None:
    j = judge(0.0, 0.0, hang_timeout=5, max_rss=10, max_requests=1, max_age=1)
    worst = serving(rss=20 * MIB, requests=5, beat=0.0)
    assert [v.reason for v in j.judge([worst], now=10.0)] == [ExitReason.HUNG]
    j2 = judge(0.0, 0.0, max_rss=10, max_requests=1, max_age=1)
    assert [v.reason for v in j2.judge([worst], now=10.0)] == [ExitReason.RSS]
    j3 = judge(0.0, 0.0, max_requests=1, max_age=1)
    assert [v.reason for v in j3.judge([worst], now=10.0)] == [ExitReason.REQUESTS]


def test_new_limits_are_drawn_again_after_a_reload() -> None:
    j = judge(0.0, 0.0, max_requests=50)
    assert j.quota(10).requests == 50
    j.reconfigure(limits(max_requests=80))
    assert j.quota(10).requests == 80


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999999])
def test_the_request_jitter_stays_within_its_bound(draw: float) -> None:
    j = judge(draw, max_requests=10, max_requests_jitter=3)
    assert 10 <= (j.quota(1).requests or 0) <= 13


# ----- a quota the worker keeps itself -----------------------------------------------------------

def own_quota(pid: int = 10, *, requests: int, quota: int = 20, nearing: bool = False,
              reached: bool = False) -> Sample:
    sample = serving(pid, requests=requests)
    sample.vitals.quota, sample.vitals.nearing_quota, sample.vitals.quota_reached = quota, nearing, reached
    return sample


def test_a_worker_keeping_its_own_quota_is_judged_when_it_says_it_nears_it_not_by_the_count() -> None:
    j = judge(0.0, max_requests=20)
    # Its count is past the judge's own limit, but the worker keeps its quota (it drew 20 + jitter).
    assert j.judge([own_quota(requests=25, quota=30)], now=5.0) == []
    [verdict] = j.nearing_quota([own_quota(requests=27, quota=30, nearing=True)], now=5.0)
    assert (verdict.pid, verdict.reason) == (10, ExitReason.REQUESTS)
    assert verdict.detail == "began 27 of its 30 requests (max_requests = 20 + jitter up to 0)"


def test_one_quota_gets_one_verdict_however_often_it_is_told_and_judged() -> None:
    j = judge(0.0, max_requests=20)
    assert len(j.nearing_quota([own_quota(requests=18, nearing=True)], now=5.0)) == 1
    # Under load: more beats say it nears, then that it reached it; the rounds judge it too.
    for now in (5.1, 5.2, 6.0, 7.0):
        reached = own_quota(requests=40, nearing=True, reached=True)
        assert j.nearing_quota([reached], now) == [] and j.judge([reached], now) == []
    # Only a worker still there long after (its replacement refused or failed) is judged again.
    assert len(j.judge([own_quota(requests=40, nearing=True, reached=True)], now=5.0 + 15.0)) == 1


def test_the_quota_rounds_catch_a_nearing_worker_the_change_missed() -> None:
    j = judge(0.0, max_requests=20)
    [verdict] = j.judge([own_quota(requests=20, nearing=True, reached=True)], now=5.0)
    assert verdict.reason == ExitReason.REQUESTS
    assert j.quota_reached(own_quota(requests=20, nearing=True, reached=True)) == \
        "served 20 requests (its limit: 20, max_requests = 20 + jitter up to 0)"
