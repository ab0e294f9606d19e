"""The status API in-process, against a scripted read model (``tests.scripted``).

No processes: slot, database and reload records are set by hand to every state the runner can
produce, and the app is called through Starlette's TestClient.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from supervisor import __version__
from supervisor.config.settings import resolve_settings
from supervisor.contract import Scale
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
from supervisor.status.api import StatusAPI
from tests.scripted import ScriptedSupervisor
from tests.support import Clock, make_project

SECRET = "status-test-secret-5c1e9b7a-unique"
DB_PASSWORD = "pw-7d2f0c91-unique"
TOKEN = "test-token-0123456789abcdef"
LOOPBACK = "http://127.0.0.1:8787"
NOW = 1_700_000_000.0


@pytest.fixture
def sup(tmp_path: Path) -> Iterator[ScriptedSupervisor]:
    project = make_project(tmp_path, toml="""
        [app]
        workers = 2
        [env.GREETING]
        type = "string"
        [env.API_SECRET]
        type = "secret"
        [env.DATABASE_URL]
        type = "url"
        required = false
        [env.LOG_FORMAT]
        type = "string"
        default = "plain"
    """, dotenv=f"""
        GREETING=hello
        API_SECRET={SECRET}
        DATABASE_URL=postgresql://app:{DB_PASSWORD}@127.0.0.1:5432/app
        UNDECLARED=from-dotenv
    """)
    settings = resolve_settings(project, {"GREETING": "hi-from-env", "PATH": "/usr/bin"})
    yield ScriptedSupervisor(settings, port=8123, clock=Clock(NOW), redactor=Redactor(settings.secrets))


@contextlib.contextmanager
def bare_supervisor(project: Path, port: int = 8123) -> Iterator[ScriptedSupervisor]:
    """Another never-run supervisor for ``project``, with the redactor ``up`` would give it."""
    settings = resolve_settings(project, {})
    yield ScriptedSupervisor(settings, port=port, redactor=Redactor(settings.secrets))


def make_api(sup: ScriptedSupervisor, host: str = "127.0.0.1") -> StatusAPI:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    api = StatusAPI(sup, sock, TOKEN, host)
    sock.close()  # TestClient calls the app directly; the socket is only for the port number
    return api


@pytest.fixture
def client(sup: ScriptedSupervisor) -> TestClient:
    return TestClient(make_api(sup).app, base_url=LOOPBACK)


def serving(sup: ScriptedSupervisor) -> None:
    """Script a healthy state: supervisor running, both slots serving."""
    sup.state = SupervisorState.RUNNING
    for slot in sup.slots:
        slot.state, slot.pid, slot.started_at, slot.ready_at = SlotState.RUNNING, 4000 + slot.index, NOW - 65, NOW - 64


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def metric(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels is None or sample.labels == labels):
                return float(sample.value)
    return None


# ----- supervisor states ---------------------------------------------------------------------

@pytest.mark.timeout(10)
@pytest.mark.parametrize("state,ready", [
    (SupervisorState.STARTING, False), (SupervisorState.WAITING_FOR_DATABASE, False), (SupervisorState.RUNNING, True),
    (SupervisorState.RELOADING, True), (SupervisorState.STOPPING, False), (SupervisorState.FATAL, False)])
def test_every_supervisor_state_is_reported_with_its_readiness(sup: ScriptedSupervisor, client: TestClient,
                                                               state: SupervisorState, ready: bool) -> None:
    serving(sup)
    sup.state = state
    doc = client.get("/status").json()
    assert doc["supervisor"]["state"] == state
    assert doc["supervisor"]["ready"] is ready
    assert client.get("/readyz").status_code == (200 if ready else 503)
    assert client.get("/livez").json() == {"alive": True, "state": state}
    assert metric(client.get("/metrics").text, "supervisor_state", {"state": state}) == 1.0
    assert metric(client.get("/metrics").text, "supervisor_ready") == (1.0 if ready else 0.0)


@pytest.mark.timeout(10)
def test_status_names_the_supervisor_and_the_webapp(sup: ScriptedSupervisor, client: TestClient) -> None:
    serving(sup)
    sup.started_at = NOW - 125
    doc = client.get("/status").json()
    assert doc["supervisor"]["mode"] == "development"
    assert doc["supervisor"]["uptime"] == 125
    assert doc["supervisor"]["version"]
    assert doc["port"] == 8123
    assert doc["url"] == "http://127.0.0.1:8123"


# ----- worker states -------------------------------------------------------------------------

@pytest.mark.timeout(10)
def test_every_worker_state_is_reported_with_its_details(sup: ScriptedSupervisor, client: TestClient) -> None:
    sup.state = SupervisorState.RUNNING
    sup.slots = [SlotStatus(i) for i in range(6)]
    starting, running, backoff, stopping, stopped, fatal = sup.slots
    starting.state, starting.pid, starting.started_at = SlotState.STARTING, 5001, NOW - 1
    running.state, running.pid, running.started_at, running.restarts = SlotState.RUNNING, 5002, NOW - 30, 2
    running.last_exit = ExitInfo(code=None, signal=9, reason=ExitReason.CRASH, at=NOW - 31)
    backoff.state, backoff.next_retry_at, backoff.restarts = SlotState.BACKOFF, NOW + 1.5, 1
    backoff.last_exit = ExitInfo(code=3, signal=None, reason=ExitReason.CRASH, at=NOW)
    backoff.stderr_tail.extend(["Traceback", "RuntimeError: boom"])
    stopping.state, stopping.pid = SlotState.STOPPING, 5004
    stopped.state = SlotState.STOPPED
    stopped.last_exit = ExitInfo(code=0, signal=None, reason=ExitReason.SHUTDOWN, at=NOW)
    fatal.state, fatal.fatal_reason = SlotState.FATAL, "5 crashes within 60s"
    fatal.last_exit = ExitInfo(code=1, signal=None, reason=ExitReason.CRASH, at=NOW)

    workers = client.get("/status").json()["workers"]
    assert [w["state"] for w in workers] == ["starting", "running", "backoff", "stopping", "stopped", "fatal"]
    assert [w["pid"] for w in workers] == [5001, 5002, None, 5004, None, None]
    assert workers[1]["restarts"] == 2 and workers[1]["uptime"] == 30
    assert workers[1]["last_exit"]["signal"] == 9 and workers[1]["last_exit"]["reason"] == "crash"
    assert workers[1]["last_exit"]["description"] == "killed by SIGKILL (crash)"
    assert workers[2]["next_retry_at"] == NOW + 1.5 and workers[2]["retry_in"] == 1.5
    assert workers[2]["stderr_tail"] == ["Traceback", "RuntimeError: boom"]
    assert workers[4]["last_exit"] == {"code": 0, "signal": None, "reason": "shutdown", "at": pytest.approx(
        stopped.last_exit.at), "description": "exit code 0 (shutdown)"}
    assert workers[5]["fatal_reason"] == "5 crashes within 60s"
    assert all(w["next_retry_at"] is None for i, w in enumerate(workers) if i != 2)

    text = client.get("/metrics").text
    assert [metric(text, "supervisor_worker_up", {"slot": str(i)}) for i in range(6)] == [0, 1, 0, 0, 0, 0]
    assert metric(text, "supervisor_worker_restarts_total", {"slot": "1"}) == 2
    assert metric(text, "supervisor_worker_backoff_seconds", {"slot": "2"}) == 1.5
    assert metric(text, "supervisor_worker_backoff_seconds", {"slot": "0"}) == 0


@pytest.mark.timeout(10)
@pytest.mark.parametrize("reason", list(ExitReason))
def test_every_exit_reason_is_reported(sup: ScriptedSupervisor, client: TestClient, reason: ExitReason) -> None:
    sup.slots[0].last_exit = ExitInfo(code=None, signal=15, reason=reason, at=NOW)
    assert client.get("/status").json()["workers"][0]["last_exit"]["reason"] == reason


@pytest.mark.timeout(10)
def test_no_worker_serving_is_not_ready(sup: ScriptedSupervisor, client: TestClient) -> None:
    serving(sup)
    for slot in sup.slots:
        slot.state = SlotState.BACKOFF
    body = client.get("/readyz")
    assert body.status_code == 503 and body.json() == {"ready": False, "reason": "no worker is serving"}


@pytest.mark.timeout(10)
def test_live_worker_gets_memory_and_cpu_from_psutil(sup: ScriptedSupervisor, client: TestClient) -> None:
    import os

    serving(sup)
    sup.slots[0].pid = os.getpid()  # any live process will do; this one certainly exists
    worker = client.get("/status").json()["workers"][0]
    assert worker["memory_rss"] > 1_000_000 and worker["cpu_seconds"] > 0
    assert worker["cpu_percent"] is not None


# ----- database and reload -------------------------------------------------------------------

@pytest.mark.timeout(10)
@pytest.mark.parametrize("db_state,ready,up", [
    (DatabaseState.OK, True, 1.0), (DatabaseState.WAITING, False, 0.0), (DatabaseState.UNAVAILABLE, False, 0.0),
    (DatabaseState.DISABLED, True, None)])
def test_every_database_state_is_reported(sup: ScriptedSupervisor, client: TestClient, db_state: DatabaseState,
                                          ready: bool, up: float | None) -> None:
    serving(sup)
    sup.database.state, sup.database.latency_ms, sup.database.attempts = db_state, 12.5, 3
    sup.database.last_check, sup.database.last_error = NOW - 2, "connection refused"
    doc = client.get("/status").json()
    assert doc["database"] == {"state": db_state, "last_check": NOW - 2, "latency_ms": 12.5, "attempts": 3,
                               "last_error": "connection refused"}
    assert client.get("/readyz").status_code == (200 if ready else 503)
    text = client.get("/metrics").text
    assert metric(text, "supervisor_database_up") == up
    assert metric(text, "supervisor_database_probe_latency_seconds") == (None if up is None else 0.0125)


@pytest.mark.timeout(10)
def test_reloads_are_counted_and_each_duration_observed_once(sup: ScriptedSupervisor) -> None:
    api = make_api(sup)
    client = TestClient(api.app, base_url=LOOPBACK)
    status = sup.reload_status
    # What supervisor.reload.watcher records: a success counts and clears the error; a failure only
    # sets the error and the trigger, keeping the count and the previous duration.
    status.count, status.last_duration, status.last_files, status.last_error = 1, 0.8, ["app.py"], None
    sup.changed()
    sup.changed()  # other changes must not observe the same reload again
    status.count, status.last_duration, status.last_files = 2, 3.0, ["views.py"]
    sup.changed()
    status.last_files = ["broken.py"]
    status.last_error = "a new worker failed to start; still serving the previous version"
    sup.changed()  # a failed reload is neither counted nor observed
    doc = client.get("/status").json()
    assert doc["reload"]["count"] == 2 and doc["reload"]["last_files"] == ["broken.py"]
    assert doc["reload"]["last_error"].startswith("a new worker failed")
    text = client.get("/metrics").text
    assert metric(text, "supervisor_reloads_total") == 2
    assert metric(text, "supervisor_reload_duration_seconds_count") == 2
    assert metric(text, "supervisor_reload_duration_seconds_sum") == pytest.approx(3.8)
    assert metric(text, "supervisor_reload_duration_seconds_bucket", {"le": "1.0"}) == 1


@pytest.mark.timeout(10)
def test_two_supervisors_in_one_process_have_separate_registries(sup: ScriptedSupervisor, tmp_path: Path) -> None:
    with bare_supervisor(make_project(tmp_path / "second", toml="")) as other:
        serving(sup)
        sup.reload_status.count = 3
        # Both register the same metric names; the global registry would refuse the second.
        first, second = make_api(sup), make_api(other)
        assert first.metrics.registry is not second.metrics.registry
        first_text = TestClient(first.app, base_url=LOOPBACK).get("/metrics").text
        second_text = TestClient(second.app, base_url=LOOPBACK).get("/metrics").text
    assert metric(first_text, "supervisor_reloads_total") == 3
    assert metric(second_text, "supervisor_reloads_total") == 0
    assert metric(first_text, "supervisor_worker_up", {"slot": "1"}) == 1.0
    assert metric(second_text, "supervisor_worker_up", {"slot": "1"}) is None  # one worker by default


# ----- environment and secrets ---------------------------------------------------------------

@pytest.mark.timeout(10)
def test_env_shows_sources_and_only_non_secret_declared_values(client: TestClient) -> None:
    env = client.get("/status").json()["env"]
    assert env["GREETING"] == {"source": "environment", "where": "environment", "declared": True,
                               "value": "hi-from-env"}
    assert env["API_SECRET"] == {"source": ".env", "where": ".env:3", "declared": True}
    assert env["UNDECLARED"] == {"source": ".env", "where": ".env:5", "declared": False}
    assert env["DATABASE_URL"]["value"] == "postgresql://app:***@127.0.0.1:5432/app"
    assert env["LOG_FORMAT"] == {"source": "default", "where": "supervisor.toml [env] default",
                                 "declared": True, "value": "plain"}
    assert "PATH" not in env  # neither from .env nor declared


@pytest.mark.timeout(10)
def test_secrets_appear_in_no_response(sup: ScriptedSupervisor, client: TestClient) -> None:
    serving(sup)
    # Even where a secret reaches the state (a worker printed it to stderr), it is masked.
    sup.slots[0].state = SlotState.FATAL
    sup.slots[0].stderr_tail.append(f"KeyError: {SECRET}")
    sup.database.last_error = f"password authentication failed ({DB_PASSWORD})"
    bodies = [client.get(path).text for path in ("/", "/status", "/metrics", "/readyz", "/livez")]
    for body in bodies:
        assert SECRET not in body and DB_PASSWORD not in body and TOKEN not in body
    assert "KeyError: ***" in bodies[1]


# ----- access ----------------------------------------------------------------------------------

@pytest.mark.timeout(10)
@pytest.mark.parametrize("path", ["/restart", "/stop", "/scale"])
@pytest.mark.parametrize("headers", [{}, bearer("wrong-token"), bearer(""), {"Authorization": TOKEN},
                                     {"Authorization": "Basic " + base64.b64encode(f"x:{TOKEN}".encode()).decode()}])
def test_mutating_endpoints_refuse_a_missing_or_wrong_token(sup: ScriptedSupervisor, client: TestClient, path: str,
                                                            headers: dict[str, str]) -> None:
    serving(sup)
    before = client.get("/status").json()
    response = client.post(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert sup.posted == []
    after = client.get("/status").json()
    before["supervisor"].pop("uptime"), after["supervisor"].pop("uptime")
    assert after == before


@pytest.mark.timeout(10)
@pytest.mark.parametrize("action", ["restart", "stop"])
def test_mutating_endpoints_with_the_token_ask_the_loop(sup: ScriptedSupervisor, client: TestClient,
                                                       action: str) -> None:
    serving(sup)
    response = client.post("/" + action, headers=bearer())
    assert response.status_code == 202 and response.json() == {"accepted": action}
    assert sup.posted == [action]


@pytest.mark.timeout(10)
def test_mutating_while_stopping_is_a_conflict(sup: ScriptedSupervisor, client: TestClient) -> None:
    sup.state = SupervisorState.STOPPING
    assert client.post("/restart", headers=bearer()).status_code == 409
    assert client.post("/scale", headers=bearer(), json={"workers": 2}).status_code == 409
    assert sup.posted == []


@pytest.mark.timeout(10)
def test_scale_with_the_token_asks_the_loop_for_that_many_workers(sup: ScriptedSupervisor,
                                                                 client: TestClient) -> None:
    serving(sup)
    response = client.post("/scale", headers=bearer(), json={"workers": 5})
    assert response.status_code == 202 and response.json() == {"accepted": "scale", "workers": 5}
    assert sup.posted == [Scale(5)]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("body,problem", [
    (b"", "the body is not a JSON object"),
    (b"3", "the body is not a JSON object"),
    (b"{workers: 3}", "the body is not JSON"),
    (b'{"workers": "3"}', "workers: '3' is not an integer"),
    (b'{"workers": true}', "workers: True is not an integer"),
    (b'{"workers": 0}', "workers: 0 is out of range"),
    (b'{"workers": 65}', "workers: 65 is out of range"),
    (b'{}', "workers is missing"),
    (b'{"workers": 2, "program": "web"}', "unknown key 'program'"),
])
def test_a_bad_scale_request_says_what_is_wrong_and_what_is_expected(sup: ScriptedSupervisor, client: TestClient,
                                                                     body: bytes, problem: str) -> None:
    response = client.post("/scale", headers=bearer(), content=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error.startswith(problem) and error.endswith('expected a JSON object such as {"workers": 3}, '
                                                        "with 1 to 64 workers"), error
    assert sup.posted == []
    assert client.post("/scale", headers=bearer(), content=b" " * 5000).status_code == 413


@pytest.mark.timeout(10)
def test_beyond_loopback_everything_but_probes_needs_the_token(sup: ScriptedSupervisor) -> None:
    serving(sup)
    client = TestClient(make_api(sup, host="0.0.0.0").app, base_url="http://192.0.2.10:8787")
    for path in ("/", "/status", "/metrics"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=bearer("nope")).status_code == 401, path
        assert client.get(path, headers=bearer()).status_code == 200, path
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    # A browser opening the dashboard sends the token as the Basic password; reads only.
    basic = {"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()}
    assert client.get("/", headers=basic).status_code == 200
    assert client.post("/stop", headers=basic).status_code == 401
    assert sup.posted == []


@pytest.mark.timeout(10)
def test_loopback_reads_refuse_a_foreign_host_header(client: TestClient) -> None:
    """A page on evil.example rebinding its name to 127.0.0.1 must not read the status."""
    assert client.get("/status", headers={"Host": "evil.example:8787"}).status_code == 403
    assert client.get("/status", headers={"Host": "localhost:8787"}).status_code == 200
    assert client.get("/status", headers={"Host": "[::1]:8787"}).status_code == 200
    assert client.get("/status", headers={"Host": "evil.example", **bearer()}).status_code == 200
    assert client.get("/livez", headers={"Host": "evil.example"}).status_code == 200


# ----- dashboard -------------------------------------------------------------------------------

@pytest.mark.timeout(10)
def test_dashboard_shows_workers_refreshes_itself_and_loads_nothing_external(sup: ScriptedSupervisor,
                                                                             client: TestClient) -> None:
    serving(sup)
    sup.slots[1].state, sup.slots[1].pid = SlotState.FATAL, None
    sup.slots[1].fatal_reason = "<script>alert(1)</script>"
    response = client.get("/")
    html = response.text
    assert response.headers["content-type"].startswith("text/html")
    assert '<meta http-equiv="refresh"' in html
    assert 'id="worker-0" data-pid="4000" data-state="running"' in html
    assert 'id="worker-1" data-pid="-" data-state="fatal"' in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "src=" not in html and "<link" not in html and "http://cdn" not in html
    # Links, not loads: the app, its own /metrics (the webapp's pool figures) and the supervisor's.
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == [f"{sup.url}/", f"{sup.url}/metrics", "/metrics"]
    assert "hi-from-env" in html and "(hidden)" in html


@pytest.mark.timeout(10)
def test_status_document_is_valid_json_even_with_a_short_numeric_secret(tmp_path: Path) -> None:
    """Masking the serialised text would turn pid 12345 into '***5'; only strings are masked."""
    with bare_supervisor(make_project(tmp_path, toml="", dotenv="API_KEY=1234\n"), port=12345) as sup:
        doc = json.loads(TestClient(make_api(sup).app, base_url=LOOPBACK).get("/status").text)
    assert doc["port"] == 12345 and doc["supervisor"]["pid"] > 0


@pytest.mark.timeout(10)
def test_metrics_keep_numbers_intact_with_a_short_numeric_secret(tmp_path: Path) -> None:
    """Masking the rendered text would turn a restart count of 11234 into '1***' and break the
    exposition format; only label values are masked, so numbers pass and string labels still hide."""
    with bare_supervisor(make_project(tmp_path, toml="", dotenv="API_KEY=1234\n")) as sup:
        assert sup.redactor is not None
        sup.redactor.add(["development"])  # a secret that equals a label value: the mode
        serving(sup)
        sup.slots[0].restarts = 11234
        sup.reload_status.count = 1234
        sup.database.state, sup.database.latency_ms = DatabaseState.OK, 1234.0
        text = TestClient(make_api(sup).app, base_url=LOOPBACK).get("/metrics").text
    assert metric(text, "supervisor_worker_restarts_total", {"slot": "0"}) == 11234
    assert metric(text, "supervisor_reloads_total") == 1234
    assert metric(text, "supervisor_database_probe_latency_seconds") == pytest.approx(1.234)
    assert metric(text, "supervisor_info", {"version": __version__, "mode": "***"}) == 1
    assert "development" not in text and "1234" in text


@pytest.mark.timeout(10)
def test_programs_appear_in_the_document_the_dashboard_and_the_metrics(sup: ScriptedSupervisor,
                                                                        client: TestClient) -> None:
    serving(sup)
    migrate = SlotStatus(0, SlotState.COMPLETED)
    migrate.last_exit = ExitInfo(code=0, signal=None, reason=ExitReason.EXITED, at=NOW - 5)
    worker = SlotStatus(0, SlotState.WAITING, waiting_for="waiting for migrate to complete")
    sup.programs = {"migrate": [migrate], "worker": [worker]}
    doc = client.get("/status").json()
    assert doc["programs"]["migrate"][0]["state"] == "completed"
    assert doc["programs"]["worker"][0]["waiting_for"] == "waiting for migrate to complete"
    page = client.get("/").text
    assert 'id="program-migrate-0"' in page and "waiting for migrate to complete" in page
    text = client.get("/metrics").text
    assert metric(text, "supervisor_program_up", {"program": "migrate", "instance": "0", "state": "completed"}) == 1.0
    assert metric(text, "supervisor_program_up", {"program": "worker", "instance": "0", "state": "waiting"}) == 0.0


# ----- worker health -------------------------------------------------------------------------

@pytest.mark.timeout(10)
def test_loop_lag_requests_recycling_and_the_last_hang_are_reported_redacted(
        sup: ScriptedSupervisor, client: TestClient) -> None:
    serving(sup)
    sup.vitals = {4000: WorkerVitals(spawned_at=0.0, ready_at=1.0, last_beat_at=5.0, requests=1234)}
    sup.health.loop_lag = {4000: 0.004, 4001: 7.5}
    sup.health.recycled = {ExitReason.HUNG: 1, ExitReason.REQUESTS: 3}
    stacks = f'Current thread (most recent call first):\n  File "app.py", line 9 in stuck  # {SECRET}'
    sup.health.last_hang = HangIncident(1, 3999, NOW - 30, 31.5, stacks, "/x/.supervisor/last-hang.txt")

    doc = client.get("/status").json()
    assert [(w["loop_lag"], w["requests"]) for w in doc["workers"]] == [(0.004, 1234), (7.5, None)]
    health = doc["health"]
    assert health["recycled"] == {"hung": 1, "requests": 3}
    assert health["hang_timeout"] is None  # development mode, unset
    assert health["last_hang"]["pid"] == 3999 and "line 9 in stuck" in health["last_hang"]["stacks"]
    assert SECRET not in client.get("/status").text

    text = client.get("/metrics").text
    assert metric(text, "supervisor_worker_loop_lag_seconds", {"slot": "1"}) == 7.5
    assert metric(text, "supervisor_worker_recycled_total", {"reason": "requests"}) == 3
    assert metric(text, "supervisor_worker_recycled_total", {"reason": "rss"}) == 0

    page = client.get("/").text
    assert '<a href="#last-hang">where it was stuck</a>' in page
    assert '<h2 id="last-hang">Last hang: web.1 pid 3999</h2>' in page and "line 9 in stuck" in page
    assert SECRET not in page
    assert '<td data-field="loop_lag">7.5s</td>' in page


@pytest.mark.timeout(10)
def test_before_any_heartbeat_or_incident_the_health_fields_are_empty(sup: ScriptedSupervisor,
                                                                     client: TestClient) -> None:
    serving(sup)
    doc = client.get("/status").json()
    assert [w["loop_lag"] for w in doc["workers"]] == [None, None]
    assert doc["health"] == {"hang_timeout": None, "last_hang": None, "recycled": {}}
    assert metric(client.get("/metrics").text, "supervisor_worker_loop_lag_seconds") is None
    assert 'id="last-hang"' not in client.get("/").text
