"""``GET /metrics``: the supervisor's state in the Prometheus text format.

The runner keeps plain state objects, not metric objects, so most series are computed from those
objects at scrape time by a custom collector; only the reload-duration histogram needs history,
and it is fed by an ``change`` observer. Everything lives in this supervisor's own
:class:`~prometheus_client.CollectorRegistry`, never the process-global one, so two supervisors
in one test process do not collide and nothing is registered at import time.

Secrets are masked in label values, the only strings that come from the supervisor's state, as
the collector yields them; never in the rendered text, where a short numeric secret such as
``1234`` would also match inside a sample value and corrupt it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from supervisor import __version__
from supervisor.contract import SupervisorView
from supervisor.state import RECYCLE_REASONS, DatabaseState, SlotState, SupervisorState
from supervisor.status.document import readiness

RELOAD_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)


class SupervisorCollector(Collector):
    """Reads ``sup`` on every scrape (times by ``sup.wall``); holds no counters of its own.

    ``redact`` masks secrets in every label value; sample values are numbers and pass untouched.
    """

    def __init__(self, sup: SupervisorView, redact: Callable[[str], str] | None = None) -> None:
        self.sup = sup
        self.redact = redact

    def collect(self) -> Iterator[Metric]:
        redact = self.redact
        for metric in self._families():
            if redact is not None:
                metric.samples = [sample._replace(labels={k: redact(v) for k, v in sample.labels.items()})
                                  for sample in metric.samples]
            yield metric

    def _families(self) -> Iterator[Metric]:
        sup = self.sup
        now = sup.wall()
        yield InfoMetricFamily("supervisor", "Supervisor version and mode.",
                               value={"version": __version__, "mode": sup.settings.mode})
        state = GaugeMetricFamily("supervisor_state", "1 for the supervisor's current state.", labels=["state"])
        for each in SupervisorState:
            state.add_metric([each], 1.0 if sup.state == each else 0.0)
        yield state
        yield GaugeMetricFamily("supervisor_ready", "1 when a worker is ready and the database is fine.",
                                value=1.0 if readiness(sup)[0] else 0.0)

        up = GaugeMetricFamily("supervisor_worker_up", "1 when the slot's worker is serving.", labels=["slot"])
        restarts = CounterMetricFamily("supervisor_worker_restarts",
                                       "Workers started in the slot after the first.", labels=["slot"])
        backoff = GaugeMetricFamily("supervisor_worker_backoff_seconds",
                                    "Seconds until the slot's next restart attempt; 0 unless in backoff.",
                                    labels=["slot"])
        lag = GaugeMetricFamily("supervisor_worker_loop_lag_seconds",
                                "How far behind the slot's worker's event loop is, from its heartbeat; "
                                "grows while the worker hangs.", labels=["slot"])
        for slot in sup.slots:
            label = [str(slot.index)]
            up.add_metric(label, 1.0 if slot.state == SlotState.RUNNING else 0.0)
            restarts.add_metric(label, float(slot.restarts))
            retry_at = slot.next_retry_at if slot.state == SlotState.BACKOFF else None
            backoff.add_metric(label, max(0.0, retry_at - now) if retry_at is not None else 0.0)
            seconds = sup.health.loop_lag.get(slot.pid) if slot.pid is not None else None
            if seconds is not None:  # absent until the worker's first heartbeat
                lag.add_metric(label, seconds)
        yield from (up, restarts, backoff, lag)
        recycled = CounterMetricFamily("supervisor_worker_recycled",
                                       "Workers replaced while alive: hung, or past max_rss, max_requests or max_age.",
                                       labels=["reason"])
        for reason in RECYCLE_REASONS:
            recycled.add_metric([reason], float(sup.health.recycled.get(reason, 0)))
        yield recycled

        program_up = GaugeMetricFamily("supervisor_program_up",
                                       "1 when the program's instance runs (or its one-shot job completed).",
                                       labels=["program", "instance", "state"])
        program_restarts = CounterMetricFamily("supervisor_program_restarts",
                                               "Processes started for the instance after the first.",
                                               labels=["program", "instance"])
        for name, instances in sup.programs.items():
            for slot in instances:
                ok = slot.state in (SlotState.RUNNING, SlotState.COMPLETED)
                program_up.add_metric([name, str(slot.index), str(slot.state)], 1.0 if ok else 0.0)
                program_restarts.add_metric([name, str(slot.index)], float(slot.restarts))
        yield from (program_up, program_restarts)

        yield CounterMetricFamily("supervisor_reloads", "Completed reloads (file change, SIGHUP).",
                                  value=float(sup.reload_status.count))
        db = sup.database
        if db.state != DatabaseState.DISABLED:
            # Absent, not 0, when no database is configured: "down" would page someone for nothing.
            yield GaugeMetricFamily("supervisor_database_up", "1 when the last database probe succeeded.",
                                    value=1.0 if db.state == DatabaseState.OK else 0.0)
            if db.latency_ms is not None:
                yield GaugeMetricFamily("supervisor_database_probe_latency_seconds",
                                        "Duration of the last database probe.", value=db.latency_ms / 1000)


class SupervisorMetrics:
    """This supervisor's registry: the collector plus the reload-duration histogram (whose only
    label, ``le``, holds the bucket bounds, so it needs no redaction)."""

    def __init__(self, sup: SupervisorView, redact: Callable[[str], str] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SupervisorCollector(sup, redact))
        self.reload_duration = Histogram("supervisor_reload_duration_seconds",
                                         "Seconds from a reload trigger to the new workers serving.",
                                         buckets=RELOAD_BUCKETS, registry=self.registry)
        self.sup = sup
        self._reloads_seen = sup.reload_status.count
        sup.subscribe(self.observe)

    def observe(self) -> None:
        """Record each completed reload's duration once (changes are reported for many reasons)."""
        status = self.sup.reload_status
        if status.count > self._reloads_seen:
            self._reloads_seen = status.count
            if status.last_duration is not None:
                self.reload_duration.observe(status.last_duration)

    def render(self) -> bytes:
        return generate_latest(self.registry)
