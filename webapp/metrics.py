"""``GET /metrics``: this worker's connection pool and database errors, in Prometheus text.

Each worker has its own registry (requests reach one worker, so a scrape shows that worker's
pool; the ``pid`` label says which). The pool figures are read from SQLAlchemy's pool at scrape
time; the time a request waits for a connection and the waits that time out are measured by
:class:`TimedPool`, the engine's pool class.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import AsyncAdaptedQueuePool, Pool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webapp.dberrors import KINDS

_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PoolMetrics:
    """One worker's registry: the pool gauges, the wait histogram and the error counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pool: Pool | None = None
        self.waiting = 0  # requests waiting for a connection now
        self._lock = threading.Lock()  # the pool runs in greenlets of one thread; cheap insurance
        self.wait_seconds = Histogram("webapp_db_pool_wait_seconds",
                                      "Time a request waited for a pooled database connection",
                                      buckets=_WAIT_BUCKETS, registry=self.registry)
        self.timeouts = Counter("webapp_db_pool_timeouts", "Waits for a pooled connection that timed out",
                                registry=self.registry)
        self.errors = Counter("webapp_db_errors", "Failed database operations by kind",
                              ["kind"], registry=self.registry)
        for kind in KINDS:  # present at 0 from the start, so rate() works from the first scrape
            self.errors.labels(kind)
        self.registry.register(_PoolCollector(self))

    def waiting_started(self) -> None:
        with self._lock:
            self.waiting += 1

    def waiting_ended(self, seconds: float, timed_out: bool) -> None:
        with self._lock:
            self.waiting -= 1
        self.wait_seconds.observe(seconds)
        if timed_out:
            self.timeouts.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    def __init__(self, metrics: PoolMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self.metrics.pool
        pid = str(os.getpid())
        figures: dict[str, tuple[str, float]] = {"waiting": (
            "Requests waiting for a pooled database connection now", self.metrics.waiting)}
        if isinstance(pool, AsyncAdaptedQueuePool):
            figures.update({
                "size": ("Connections the pool keeps open (DATABASE_POOL_SIZE)", pool.size()),
                "checked_out": ("Connections in use by requests now", pool.checkedout()),
                "checked_in": ("Idle connections in the pool now", pool.checkedin()),
                # Negative while the pool has not opened all of its pool_size connections yet.
                "overflow": ("Connections open beyond the pool size now", max(0, pool.overflow())),
                "max_overflow": ("Connections allowed beyond the pool size (DATABASE_MAX_OVERFLOW)",
                                 pool._max_overflow),
            })
        for name, (doc, value) in figures.items():
            family = GaugeMetricFamily(f"webapp_db_pool_{name}", doc, labels=["pid"])
            family.add_metric([pid], value)
            yield family


class TimedPool(AsyncAdaptedQueuePool):
    """The default async queue pool, timing each wait for a connection for :class:`PoolMetrics`."""

    metrics: PoolMetrics | None = None

    def _do_get(self) -> Any:
        metrics = self.metrics
        if metrics is None:
            return super()._do_get()
        started = time.perf_counter()
        metrics.waiting_started()
        timed_out = False
        try:
            return super()._do_get()
        except sa_exc.TimeoutError:
            timed_out = True
            raise
        finally:
            metrics.waiting_ended(time.perf_counter() - started, timed_out)

    def recreate(self) -> TimedPool:
        # engine.dispose() replaces the pool; the new one reports to the same registry.
        new = super().recreate()
        assert isinstance(new, TimedPool)
        new.metrics = self.metrics
        if self.metrics is not None:
            self.metrics.pool = new
        return new


async def metrics_endpoint(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics_endpoint, methods=["GET"])]
