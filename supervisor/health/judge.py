"""Judging workers' health: hung, or past a recycling limit. Pure: readings in, verdicts out.

Every ``heartbeat_interval`` a worker's own event loop stamps a pipe (see
:mod:`supervisor.child.heartbeat`); a worker that stops stamping for ``hang_timeout`` seconds
after it reported ready is *hung*, whatever its other threads are doing: a blocking call on the
loop, a deadlock, a SIGSTOP. Start-up is not judged here (``ready_timeout`` governs it), so an
app that takes long to start is never taken for hung.

Recycling limits (``max_requests``, ``max_rss``, ``max_age``) replace a worker before it grows too
big or too old; each worker draws its own request and age limits once, within the jitter, so
workers started together are not all replaced together. A worker handed ``max_requests`` keeps
its own quota and says when it nears it (see :mod:`supervisor.child.heartbeat`): its verdict is
given then, once, so that the replacement starts before the quota runs out; the count the
heartbeat carries is judged only for a worker that keeps no quota itself. The service that feeds
this judge and acts on its verdicts is :mod:`supervisor.health.watch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from supervisor.config.toml import AppSection
from supervisor.state import ExitReason, WorkerVitals

PRODUCTION_HANG_TIMEOUT = 30.0
MIB = 1024 * 1024
# A verdict about a worker still there this long after (its replacement refused or failed) is given again.
RETRY_MARGIN = 5.0


@dataclass(frozen=True)
class Limits:
    hang_timeout: float | None  # None: hang detection off
    heartbeat_interval: float
    max_requests: int | None
    max_requests_jitter: int
    max_rss: int | None  # bytes
    max_age: float | None
    max_age_jitter: float
    retry_after: float

    @classmethod
    def of(cls, app: AppSection, production: bool) -> Limits:
        """The limits ``[app]`` sets; an unset ``hang_timeout`` is 30 s in production, off in development
        (where a breakpoint or a long debugging pause must not get the worker killed)."""
        hang = app.hang_timeout if app.hang_timeout is not None else (PRODUCTION_HANG_TIMEOUT if production else 0)
        return cls(hang_timeout=hang or None, heartbeat_interval=app.heartbeat_interval,
                   max_requests=app.max_requests or None, max_requests_jitter=app.max_requests_jitter,
                   max_rss=int(app.max_rss * MIB) or None, max_age=app.max_age or None,
                   max_age_jitter=app.max_age_jitter, retry_after=app.ready_timeout + RETRY_MARGIN)


@dataclass(frozen=True)
class Sample:
    """One serving worker, as read at one moment."""

    slot: int
    pid: int
    vitals: WorkerVitals
    rss: int | None  # bytes; None when it could not be read


@dataclass(frozen=True)
class Verdict:
    slot: int
    pid: int
    reason: ExitReason  # HUNG, or the limit it is past: RSS, REQUESTS, AGE
    detail: str  # for the log: what was measured against which limit
    silent_for: float | None = None  # hung: seconds without a heartbeat

    @property
    def hung(self) -> bool:
        return self.reason == ExitReason.HUNG


@dataclass(frozen=True)
class _Quota:
    requests: int | None
    age: float | None


class Judge:
    """Gives verdicts on serving workers; ``rand`` (uniform in [0, 1)) draws the jitter."""

    def __init__(self, limits: Limits, rand: Callable[[], float]) -> None:
        self.limits = limits
        self._rand = rand
        self._quotas: dict[int, _Quota] = {}
        self._judged: dict[int, float] = {}  # pid -> when its last verdict was given

    def reconfigure(self, limits: Limits) -> None:
        if limits != self.limits:
            self.limits = limits
            self._quotas.clear()  # drawn again, within the new limits

    def quota(self, pid: int) -> _Quota:
        """The request and age limits of worker ``pid``, drawn once per worker."""
        quota = self._quotas.get(pid)
        if quota is None:
            lim = self.limits
            requests = None if lim.max_requests is None else \
                lim.max_requests + min(lim.max_requests_jitter, int(self._rand() * (lim.max_requests_jitter + 1)))
            age = None if lim.max_age is None else lim.max_age + self._rand() * lim.max_age_jitter
            quota = self._quotas[pid] = _Quota(requests, age)
        return quota

    def lag(self, vitals: WorkerVitals, now: float) -> float | None:
        """How far behind the worker's event loop is: how late its last heartbeat ran, or, once the
        next one is overdue, by how much (so the figure grows while the loop is blocked)."""
        if vitals.last_beat_at is None:
            return None
        overdue = now - vitals.last_beat_at - self.limits.heartbeat_interval
        return max(vitals.loop_lag, overdue, 0.0)

    def judge(self, samples: Sequence[Sample], now: float) -> list[Verdict]:
        """Verdicts on the serving workers in ``samples`` at monotonic time ``now``: at most one per
        worker, and none again for a worker judged less than ``retry_after`` seconds ago."""
        present = {s.pid for s in samples}
        for pid in set(self._quotas) - present:
            del self._quotas[pid]
        for pid in set(self._judged) - present:
            del self._judged[pid]
        return self._verdicts(samples, now, lambda s: self._hung(s, now) or self._past_limit(s, now))

    def nearing_quota(self, samples: Sequence[Sample], now: float) -> list[Verdict]:
        """Verdicts on the workers in ``samples`` that say they near their own request quota, as
        soon as they say it rather than at the next round; one per worker, as with :meth:`judge`
        (whose rounds give no second one for the same quota)."""
        return self._verdicts([s for s in samples if s.vitals.nearing_quota], now, self._own_quota)

    def _verdicts(self, samples: Sequence[Sample], now: float,
                  rule: Callable[[Sample], Verdict | None]) -> list[Verdict]:
        verdicts = []
        for sample in samples:
            if sample.vitals.ready_at is None:
                continue  # starting: ready_timeout's business
            judged = self._judged.get(sample.pid)
            if judged is not None and now - judged < self.limits.retry_after:
                continue
            verdict = rule(sample)
            if verdict is not None:
                self._judged[sample.pid] = now
                verdicts.append(verdict)
        return verdicts

    def _hung(self, s: Sample, now: float) -> Verdict | None:
        timeout = self.limits.hang_timeout
        ready_at = s.vitals.ready_at
        if timeout is None or ready_at is None:
            return None
        since = max(ready_at, s.vitals.last_beat_at or ready_at)
        silent = now - since
        if silent < timeout:
            return None
        what = "since it reported ready" if s.vitals.last_beat_at is None or s.vitals.last_beat_at < ready_at \
            else "from its event loop"
        return Verdict(s.slot, s.pid, ExitReason.HUNG,
                       f"no heartbeat {what} for {silent:.1f}s (hang_timeout = {timeout:g}s)", silent_for=silent)

    def _past_limit(self, s: Sample, now: float) -> Verdict | None:
        lim = self.limits
        quota = self.quota(s.pid)
        if lim.max_rss is not None and s.rss is not None and s.rss > lim.max_rss:
            return Verdict(s.slot, s.pid, ExitReason.RSS, f"resident memory {s.rss / MIB:.1f} MiB is over "
                                                          f"max_rss = {lim.max_rss / MIB:g} MiB")
        if s.vitals.quota:
            verdict = self._own_quota(s)
            if verdict is not None:
                return verdict
        elif quota.requests is not None and s.vitals.requests >= quota.requests:
            return Verdict(s.slot, s.pid, ExitReason.REQUESTS,
                           f"served {s.vitals.requests} requests (its limit: {quota.requests}, max_requests = "
                           f"{lim.max_requests} + jitter up to {lim.max_requests_jitter})")
        age = now - s.vitals.spawned_at
        if quota.age is not None and age >= quota.age:
            return Verdict(s.slot, s.pid, ExitReason.AGE,
                           f"running for {age:.1f}s (its limit: {quota.age:.1f}s, max_age = {lim.max_age:g}s + "
                           f"jitter up to {lim.max_age_jitter:g}s)")
        return None

    def _own_quota(self, s: Sample) -> Verdict | None:
        if not (s.vitals.quota and s.vitals.nearing_quota):
            return None
        lim = self.limits
        return Verdict(s.slot, s.pid, ExitReason.REQUESTS,
                       f"began {s.vitals.requests} of its {s.vitals.quota} requests (max_requests = "
                       f"{lim.max_requests} + jitter up to {lim.max_requests_jitter})")

    def quota_reached(self, s: Sample) -> str:
        """What to log when worker ``s`` has begun its whole request quota and takes no more."""
        lim = self.limits
        return (f"served {s.vitals.requests} requests (its limit: {s.vitals.quota}, max_requests = "
                f"{lim.max_requests} + jitter up to {lim.max_requests_jitter})")
