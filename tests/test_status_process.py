"""The status API, state file and control CLI against a real running supervisor.

Real processes, sockets and HTTP; every wait polls an observable effect with a deadline and
failures show the supervisor's output.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from supervisor.status.statefile import STATE_NAME, TOKEN_NAME, StateRecord, claim, read_state
from tests.support import Running, app_project, http_get, http_json, run_cli, supervisor, wait_until
from tests.test_status_units import held_port

UP = ["up", "--no-reload"]
SECRET = "sEcReT-4b8e1f0d-status-unique"


def project(root: Path, app: str = "rawapp:app", dotenv: str | None = None, extra: str = "",
            status_port: int = 0) -> Path:
    """A project serving ``app`` from tests/apps with the status API on ``status_port`` (0: any free)."""
    return app_project(root, app, port=0, dotenv=dotenv, extra=extra, status_port=status_port)


def status_url(root: Path, run: Running) -> str:
    """The API's URL from the state file, once the supervisor has written it."""
    found = wait_until(lambda: read_state(root / ".supervisor"), 20, "the state file", lambda: run.output)
    assert found.pid == run.pid
    return found.status_url


def status(url: str) -> dict[str, Any]:
    code, doc = http_json(url + "/status")
    assert code == 200, doc
    return doc  # type: ignore[no-any-return]


def worker(url: str) -> dict[str, Any]:
    return status(url)["workers"][0]  # type: ignore[no-any-return]


def post(url: str, path: str, headers: dict[str, str] | None = None) -> int:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("POST", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def cli(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    return run_cli([*args, "--project-dir", str(root)], cwd=root)


def serving_worker(url: str, run: Running, not_pid: int | None = None) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        w = worker(url)
        return w if w["state"] == "running" and w["pid"] not in (None, not_pid) else None
    return wait_until(check, 30, f"a serving worker other than {not_pid}", lambda: run.output)


@pytest.mark.timeout(60)
def test_status_json_shows_restarts_and_the_new_pid_after_a_worker_is_killed(tmp_path: Path) -> None:
    root = project(tmp_path)
    with supervisor(UP, root) as run:
        webapp = run.wait_url()
        url = status_url(root, run)
        first = cli(["status", "--json"], root)
        assert first.returncode == 0, first.stderr + run.output
        old = json.loads(first.stdout)["workers"][0]
        assert old["restarts"] == 0 and old["pid"] in run.worker_pids()
        os.kill(old["pid"], signal.SIGKILL)
        serving_worker(url, run, not_pid=old["pid"])
        result = cli(["status", "--json"], root)
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        new = doc["workers"][0]
        assert new["pid"] != old["pid"] and new["pid"] in run.worker_pids()
        assert new["restarts"] == 1
        assert new["last_exit"]["signal"] == signal.SIGKILL and new["last_exit"]["reason"] == "crash"
        assert doc["supervisor"]["pid"] == run.pid and doc["url"] == webapp
        assert http_json(webapp + "/pid")[1]["pid"] == new["pid"]
        text = cli(["status"], root)
        assert text.returncode == 0
        assert f"web.0  {new['pid']}" in text.stdout and "killed by SIGKILL (crash)" in text.stdout


@pytest.mark.timeout(60)
def test_restart_command_rolls_the_worker(tmp_path: Path) -> None:
    root = project(tmp_path)
    with supervisor(UP, root) as run:
        webapp = run.wait_url()
        url = status_url(root, run)
        old = worker(url)["pid"]
        result = cli(["restart"], root)
        assert result.returncode == 0, result.stderr + run.output
        new = worker(url)
        assert result.stdout.strip() == f"restarted: web.0 pid {old} -> {new['pid']}"
        assert new["state"] == "running" and new["restarts"] == 1
        # The old worker shares the listening socket until it has drained and exited.
        wait_until(lambda: old not in run.worker_pids(), 20, f"old worker {old} to exit", lambda: run.output)
        assert http_json(webapp + "/pid")[1]["pid"] == new["pid"]
        wait_until(lambda: (worker(url)["last_exit"] or {}).get("reason") == "manual", 20,
                   "the old worker's exit to be recorded as manual", lambda: run.output)


@pytest.mark.timeout(60)
def test_stop_command_exits_the_supervisor_with_code_0_and_removes_its_files(tmp_path: Path) -> None:
    root = project(tmp_path)
    with supervisor(UP, root) as run:
        run.wait_url()
        status_url(root, run)
        assert (root / ".supervisor" / TOKEN_NAME).exists()
        result = cli(["stop"], root)
        assert result.returncode == 0, result.stderr + run.output
        assert result.stdout.strip() == f"stopped: supervisor pid {run.pid} has exited"
        assert run.wait_exit() == 0
        assert not (root / ".supervisor" / STATE_NAME).exists()
        assert not (root / ".supervisor" / TOKEN_NAME).exists()
        assert cli(["status"], root).returncode == 3


@pytest.mark.timeout(60)
def test_mutating_endpoints_refuse_a_missing_or_wrong_token_and_change_nothing(tmp_path: Path) -> None:
    root = project(tmp_path)
    with supervisor(UP, root) as run:
        run.wait_url()
        url = status_url(root, run)
        before = worker(url)
        for path in ("/restart", "/stop"):
            assert post(url, path) == 401
            assert post(url, path, {"Authorization": "Bearer wrong"}) == 401
        # The refusals are answered before anything is queued, so the state can be checked now.
        after = worker(url)
        assert (after["pid"], after["state"], after["restarts"]) == (before["pid"], "running", 0)
        assert status(url)["supervisor"]["state"] == "running" and run.proc.poll() is None
        assert "requested through the API" not in run.output
        token = (root / ".supervisor" / TOKEN_NAME).read_text().strip()
        assert post(url, "/stop", {"Authorization": f"Bearer {token}"}) == 202
        assert run.wait_exit() == 0


@pytest.mark.timeout(60)
def test_a_secret_from_env_appears_in_no_response_log_or_cli_output(tmp_path: Path) -> None:
    root = project(tmp_path, dotenv=f"""
        PAYMENT_API_KEY={SECRET}
        RAWAPP_PRINT_VAR=PAYMENT_API_KEY
        GREETING=hello
    """, extra='[env.PAYMENT_API_KEY]\ntype = "secret"\n[env.GREETING]\ntype = "string"')
    with supervisor(UP, root) as run:
        run.wait_url()
        url = status_url(root, run)
        run.wait_for_output(r"rawapp: PAYMENT_API_KEY is \*\*\*")  # the worker did print it
        token = (root / ".supervisor" / TOKEN_NAME).read_text().strip()
        seen = {path: http_get(url + path)[2].decode() for path in ("/", "/status", "/metrics")}
        seen["status"] = cli(["status"], root).stdout
        seen["status --json"] = cli(["status", "--json"], root).stdout
        restart = cli(["restart"], root)
        seen["restart"] = restart.stdout + restart.stderr
        env = json.loads(seen["/status"])["env"]
        assert env["GREETING"]["value"] == "hello" and "value" not in env["PAYMENT_API_KEY"]
        stop = cli(["stop"], root)
        seen["stop"] = stop.stdout + stop.stderr
        assert run.wait_exit() == 0
        seen["log"] = run.output
        for where, text in seen.items():
            assert SECRET not in text, where
            assert token not in text, where


@pytest.mark.timeout(60)
def test_status_exits_1_while_running_but_not_ready(tmp_path: Path) -> None:
    root = project(tmp_path, app="crashapp:app")
    with supervisor(UP, root) as run:
        url = status_url(root, run)
        wait_until(lambda: worker(url)["state"] == "fatal", 30, "the crash loop to be fatal", lambda: run.output)
        result = cli(["status"], root)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "not ready" in result.stdout and "fatal: " in result.stdout
        doc = json.loads(cli(["status", "--json"], root).stdout)
        assert any("CRASH-MARKER-7f3a" in line for line in doc["workers"][0]["stderr_tail"])
        assert http_get(url + "/readyz")[0] == 503 and http_get(url + "/livez")[0] == 200


@pytest.mark.timeout(60)
def test_up_replaces_a_stale_state_file(tmp_path: Path) -> None:
    root = project(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    rd = root / ".supervisor"
    claim(rd, StateRecord(dead.pid, 0.0, "http://127.0.0.1:1", "http://127.0.0.1:2", str(rd / TOKEN_NAME),
                          "0.0.1", str(root)), "old-token")
    assert cli(["status"], root).returncode == 3
    with supervisor(UP, root) as run:
        run.wait_url()
        status_url(root, run)  # asserts the file now names this supervisor
        run.wait_for_output(f"replacing stale state file of pid {dead.pid}")
        assert (rd / TOKEN_NAME).read_text().strip() != "old-token"
        assert cli(["status"], root).returncode == 0


@pytest.mark.timeout(60)
def test_taken_status_port_in_production_exits_4_naming_the_port(tmp_path: Path) -> None:
    with held_port() as taken:
        root = project(tmp_path, status_port=taken)
        with supervisor([*UP, "--mode", "production"], root) as run:
            assert run.wait_exit() == 4
            assert f"status API: port {taken} on 127.0.0.1 is held by" in run.output
            assert "Serving on" not in run.output


@pytest.mark.timeout(60)
def test_the_date_header_of_the_api_stays_current(tmp_path: Path) -> None:
    from email.utils import parsedate_to_datetime

    root = project(tmp_path)
    with supervisor(UP, root) as run:
        run.wait_url()
        url = status_url(root, run)

        def date() -> float:
            code, headers, _ = http_get(url + "/livez")
            assert code == 200
            return parsedate_to_datetime(headers["date"]).timestamp()

        first = date()
        later = wait_until(lambda: (d := date()) > first and d, 10, "a later Date header", lambda: run.output)
        assert later - first < 5
