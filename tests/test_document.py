"""The ``/status`` document (supervisor/status/document.py) built straight from a scripted read
model, a fixed clock reading and a scripted process sampler: readiness and its reason, each
worker's fields, the database, reload and health sections, and the environment, where secret
values never appear and URL passwords are masked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from supervisor import __version__
from supervisor.config.settings import resolve_settings
from supervisor.health.judge import PRODUCTION_HANG_TIMEOUT
from supervisor.secrets import Redactor
from supervisor.state import (
    DatabaseState,
    ExitInfo,
    ExitReason,
    HangIncident,
    SlotState,
    SlotStatus,
    SupervisorState,
    WorkerVitals,
)
from supervisor.status.document import ProcStats, readiness, status_document
from tests.scripted import ScriptedSupervisor
from tests.support import Clock, make_project

NOW = 1_700_000_000.0
SECRET = "doc-secret-3b9f1c27"
TOKEN = "doc-token-8d2e4a61"
DB_PASSWORD = "doc-dbpw-5e7c0b93"
CACHE_PASSWORD = "doc-cachepw-1f4a"
QUERY_PASSWORD = "doc-querypw-6c2d"
SECRETS = (SECRET, TOKEN, DB_PASSWORD, CACHE_PASSWORD, QUERY_PASSWORD)

TOML = """
    [app]
    workers = 2
    {app}
    [env.GREETING]
    type = "string"
    [env.API_SECRET]
    type = "secret"
    [env.SESSION_TOKEN]
    type = "string"
    [env.DATABASE_URL]
    type = "url"
    required = false
    [env.CACHE_URL]
    type = "url"
    [env.LOG_FORMAT]
    type = "string"
    default = "plain"
"""


class Sampler:
    """Scripted psutil readings by pid; records which pids were asked for."""

    def __init__(self, stats: dict[int, ProcStats]) -> None:
        self.stats = stats
        self.asked: list[int] = []

    def __call__(self, pid: int) -> ProcStats | None:
        self.asked.append(pid)
        return self.stats.get(pid)


def scripted(tmp_path: Path, app: str = "", environ: dict[str, str] | None = None) -> ScriptedSupervisor:
    project = make_project(tmp_path, toml=TOML.format(app=app), dotenv=f"""
        GREETING=hello
        API_SECRET={SECRET}
        DATABASE_URL=postgresql://app:{DB_PASSWORD}@127.0.0.1:5432/app
        SESSION_TOKEN={TOKEN}
        UNDECLARED=from-dotenv
    """)
    environ = {"GREETING": "hi-from-env", "PATH": "/usr/bin",
               "CACHE_URL": f"https://cache:{CACHE_PASSWORD}@cache.internal/0?password={QUERY_PASSWORD}",
               **(environ or {})}
    settings = resolve_settings(project, environ)
    return ScriptedSupervisor(settings, port=8123, clock=Clock(NOW), redactor=Redactor(settings.secrets),
                              started_at=NOW - 125)


def serving(sup: ScriptedSupervisor) -> None:
    sup.state = SupervisorState.RUNNING
    sup.database.state = DatabaseState.OK
    for i, slot in enumerate(sup.slots):
        slot.state, slot.pid, slot.started_at, slot.ready_at = SlotState.RUNNING, 7000 + i, NOW - 60, NOW - 59


def document(sup: ScriptedSupervisor, sampler: Sampler | None = None) -> dict[str, Any]:
    return status_document(sup, NOW, sampler or Sampler({}), pid=4242, status_url="http://127.0.0.1:9000")


@pytest.mark.parametrize(("state", "ready_workers", "db", "expected"), [
    (SupervisorState.RUNNING, 2, DatabaseState.OK, (True, "ok")),
    (SupervisorState.RELOADING, 1, DatabaseState.OK, (True, "ok")),  # old workers serve during a reload
    (SupervisorState.RUNNING, 1, DatabaseState.DISABLED, (True, "ok")),  # no database configured is fine
    (SupervisorState.STARTING, 2, DatabaseState.OK, (False, "supervisor is starting")),
    (SupervisorState.STOPPING, 2, DatabaseState.OK, (False, "supervisor is stopping")),
    (SupervisorState.RUNNING, 0, DatabaseState.OK, (False, "no worker is serving")),
    (SupervisorState.RUNNING, 2, DatabaseState.UNAVAILABLE, (False, "database is unavailable")),
    # The first reason that applies: the supervisor's state, then the workers, then the database.
    (SupervisorState.FATAL, 0, DatabaseState.UNAVAILABLE, (False, "supervisor is fatal")),
    (SupervisorState.RUNNING, 0, DatabaseState.WAITING, (False, "no worker is serving")),
])
def test_readiness_gives_the_first_reason_that_applies(tmp_path: Path, state: SupervisorState, ready_workers: int,
                                                       db: DatabaseState, expected: tuple[bool, str]) -> None:
    sup = scripted(tmp_path)
    serving(sup)
    for slot in sup.slots[ready_workers:]:
        slot.state = SlotState.STARTING
    sup.state, sup.database.state = state, db
    assert readiness(sup) == expected
    doc = document(sup)
    assert (doc["supervisor"]["ready"], doc["supervisor"]["ready_reason"]) == expected


def test_the_supervisor_section_names_this_process_and_the_webapp(tmp_path: Path) -> None:
    sup = scripted(tmp_path)
    serving(sup)
    doc = document(sup)
    assert doc["supervisor"] == {
        "pid": 4242, "version": __version__, "mode": "development", "state": SupervisorState.RUNNING,
        "started_at": NOW - 125, "uptime": 125.0, "ready": True, "ready_reason": "ok",
        "status_url": "http://127.0.0.1:9000",
    }
    assert (doc["port"], doc["url"]) == (8123, "http://127.0.0.1:8123")


def test_a_serving_worker_carries_its_process_readings_heartbeat_and_loop_lag(tmp_path: Path) -> None:
    sup = scripted(tmp_path)
    serving(sup)
    sup.slots[0].restarts = 3
    sup.slots[0].last_exit = ExitInfo(code=None, signal=9, reason=ExitReason.HUNG, at=NOW - 61)
    sup.vitals = {7000: WorkerVitals(spawned_at=10.0, ready_at=11.0, requests=41)}
    sup.health.loop_lag = {7000: 0.12345, 7001: 0.0}
    sampler = Sampler({7000: ProcStats(memory_rss=50_000_000, cpu_percent=12.5, cpu_seconds=3.25)})
    first, second = document(sup, sampler)["workers"]
    assert first == {
        "slot": 0, "pid": 7000, "state": SlotState.RUNNING, "restarts": 3, "started_at": NOW - 60,
        "ready_at": NOW - 59, "uptime": 60.0,
        "last_exit": {"code": None, "signal": 9, "reason": ExitReason.HUNG, "at": NOW - 61,
                      "description": "killed by SIGKILL (hung)"},
        "next_retry_at": None, "retry_in": None, "fatal_reason": None, "waiting_for": None, "stderr_tail": [],
        "memory_rss": 50_000_000, "cpu_percent": 12.5, "cpu_seconds": 3.25, "loop_lag": 0.123, "requests": 41,
    }
    # A process that vanished between the read model and the sampler: no readings, not an error.
    assert (second["memory_rss"], second["cpu_percent"], second["cpu_seconds"]) == (None, None, None)
    assert second["loop_lag"] == 0.0 and second["requests"] is None
    assert sorted(sampler.asked) == [7000, 7001]


def test_a_slot_without_a_process_is_not_sampled_and_has_no_uptime(tmp_path: Path) -> None:
    sup = scripted(tmp_path)
    sup.slots[0].state = SlotState.WAITING
    sup.slots[0].waiting_for = "waiting for migrate to complete"
    sup.slots[1].state, sup.slots[1].started_at = SlotState.STOPPED, NOW - 10  # its process has gone
    sampler = Sampler({})
    waiting, stopped = document(sup, sampler)["workers"]
    assert sampler.asked == []
    assert waiting["waiting_for"] == "waiting for migrate to complete"
    assert waiting["uptime"] is None and stopped["uptime"] is None and stopped["loop_lag"] is None


def test_retry_times_show_only_in_backoff_and_a_past_retry_is_due_now(tmp_path: Path) -> None:
    sup = scripted(tmp_path)
    backoff, running = sup.slots
    backoff.state, backoff.next_retry_at = SlotState.BACKOFF, NOW + 2.5
    backoff.stderr_tail.extend(["Traceback (most recent call last):", "RuntimeError: boom"])
    running.state, running.pid, running.next_retry_at = SlotState.RUNNING, 7001, NOW + 9  # stale: not shown
    running.stderr_tail.append("a line a serving worker wrote")
    first, second = document(sup)["workers"]
    assert (first["next_retry_at"], first["retry_in"]) == (NOW + 2.5, 2.5)
    assert first["stderr_tail"] == ["Traceback (most recent call last):", "RuntimeError: boom"]
    assert (second["next_retry_at"], second["retry_in"], second["stderr_tail"]) == (None, None, [])
    backoff.next_retry_at = NOW - 1  # the timer is late: due now, never negative
    assert document(sup)["workers"][0]["retry_in"] == 0.0


def test_a_fatal_slot_says_why_and_keeps_its_last_stderr_lines(tmp_path: Path) -> None:
    sup = scripted(tmp_path)
    fatal = sup.slots[0]
    fatal.state, fatal.fatal_reason = SlotState.FATAL, "5 crashes within 60s"
    fatal.stderr_tail.extend(["ImportError: no module named app"])
    worker = document(sup)["workers"][0]
    assert worker["fatal_reason"] == "5 crashes within 60s"
    assert worker["stderr_tail"] == ["ImportError: no module named app"]


def test_programs_are_listed_by_name_with_the_same_fields_as_workers(tmp_path: Path) -> None:
    sup = scripted(tmp_path)
    sup.programs = {"migrate": [SlotStatus(0, SlotState.COMPLETED)],
                    "worker": [SlotStatus(0, SlotState.RUNNING, pid=8000), SlotStatus(1, SlotState.STARTING, pid=8001)]}
    doc = document(sup, Sampler({8000: ProcStats(1, 0.0, 0.0)}))
    programs = doc["programs"]
    assert list(programs) == ["migrate", "worker"]
    assert [(w["slot"], w["pid"], w["state"]) for w in programs["worker"]] == [
        (0, 8000, "running"), (1, 8001, "starting")]
    assert set(programs["migrate"][0]) == set(doc["workers"][0])


def test_database_reload_and_health_sections_are_copied_from_the_read_model(tmp_path: Path) -> None:
    sup = scripted(tmp_path)
    sup.database.state, sup.database.last_check, sup.database.latency_ms = DatabaseState.UNAVAILABLE, NOW - 1, None
    sup.database.attempts, sup.database.last_error = 4, "connection refused"
    sup.reload_status.count, sup.reload_status.last_files = 2, ["app.py", ".env"]
    sup.reload_status.last_at, sup.reload_status.last_duration = NOW - 30, 0.8
    sup.health.last_hang = HangIncident(slot=1, pid=7001, at=NOW - 5, silent_for=6.04321, stacks="in stuck",
                                        file="/run/last-hang.txt")
    sup.health.recycled = {"hung": 1, "max_requests": 2}
    doc = document(sup)
    assert doc["database"] == {"state": "unavailable", "last_check": NOW - 1, "latency_ms": None, "attempts": 4,
                               "last_error": "connection refused"}
    assert doc["reload"] == {"count": 2, "last_files": ["app.py", ".env"], "last_error": None,
                             "last_at": NOW - 30, "last_duration": 0.8,
                             "template": {"stage": None, "why": None}}  # no worker forked yet
    assert doc["health"] == {"hang_timeout": None,  # development: off unless [app] hang_timeout is set
                             "last_hang": {"slot": 1, "pid": 7001, "at": NOW - 5, "silent_for": 6.043,
                                           "stacks": "in stuck", "file": "/run/last-hang.txt"},
                             "recycled": {"hung": 1, "max_requests": 2}}
    # Copies, not the live objects: a later change in the read model does not edit a document sent.
    sup.reload_status.last_files.append("later.py")
    sup.health.recycled["hung"] = 5
    assert doc["reload"]["last_files"] == ["app.py", ".env"]
    assert doc["health"]["recycled"]["hung"] == 1


def test_the_hang_timeout_shown_is_the_one_in_force(tmp_path: Path) -> None:
    assert document(scripted(tmp_path / "set", app="hang_timeout = 7"))["health"]["hang_timeout"] == 7
    production = scripted(tmp_path / "prod", environ={"SUPERVISOR_MODE": "production"})
    assert production.settings.production
    assert document(production)["health"]["hang_timeout"] == PRODUCTION_HANG_TIMEOUT


def test_env_shows_where_each_variable_came_from_and_only_non_secret_values(tmp_path: Path) -> None:
    env = document(scripted(tmp_path))["env"]
    assert env == {
        "API_SECRET": {"source": ".env", "where": ".env:3", "declared": True},  # type = "secret"
        "CACHE_URL": {"source": "environment", "where": "environment", "declared": True,
                      "value": "https://cache:***@cache.internal/0?password=***"},
        "DATABASE_URL": {"source": ".env", "where": ".env:4", "declared": True,
                         "value": "postgresql://app:***@127.0.0.1:5432/app"},
        "GREETING": {"source": "environment", "where": "environment", "declared": True, "value": "hi-from-env"},
        "LOG_FORMAT": {"source": "default", "where": "supervisor.toml [env] default", "declared": True,
                       "value": "plain"},
        "SESSION_TOKEN": {"source": ".env", "where": ".env:5", "declared": True},  # secret by its name
        "UNDECLARED": {"source": ".env", "where": ".env:6", "declared": False},  # not declared: no value
    }  # PATH, from the environment but neither declared nor in .env, is not listed at all


def test_no_secret_appears_anywhere_in_the_document(tmp_path: Path) -> None:
    sup = scripted(tmp_path)
    serving(sup)
    sup.database.last_error = "password authentication failed"
    text = json.dumps(document(sup))
    for secret in SECRETS:
        assert secret not in text
    assert "hi-from-env" in text and "***" in text
