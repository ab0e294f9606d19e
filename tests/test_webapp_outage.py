"""The database goes away under a running webapp and comes back: 503s, then recovery, same worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dbsupport import SECRET, auth, client, webapp_project
from tests.pgserver import APP_PASSWORD, PgServer
from tests.support import base_env, supervisor, wait_until


@pytest.mark.timeout(120)
def test_outage_turns_health_and_notes_503_and_both_recover_with_the_same_worker(
        tmp_path: Path, pg: PgServer) -> None:
    database = pg.create_database("webapp_outage")
    root = webapp_project(tmp_path, probe_interval=0.3)
    env = base_env(BETTER_AUTH_SECRET=SECRET, DATABASE_URL=pg.url(database=database))
    user = auth("outage-user")
    with supervisor(["up", "--no-reload"], root, env) as run, client(run.wait_url()) as http:
        note = http.post("/notes", json={"title": "before"}, headers=user).json()
        pid = http.get("/health").json()["pid"]

        pg.stop()
        health = wait_until(lambda: (r := http.get("/health")).status_code == 503 and r, 20,
                            "/health to turn 503", lambda: run.output)
        body = health.json()
        assert body["status"] == "degraded" and body["database"]["status"] == "unavailable"
        assert body["database"]["error"].startswith("connection refused")
        for method, path in (("GET", "/notes"), ("GET", f"/notes/{note['id']}"), ("POST", "/notes")):
            response = http.request(method, path, headers=user, json={"title": "during"})
            assert response.status_code == 503, (method, path, response.text)
            assert response.json()["error"] == "database unavailable"
            assert response.headers["retry-after"] == "5"
        # What needs no database keeps working: the index, and refusing a missing token.
        assert http.get("/").status_code == 200
        assert http.get("/notes").status_code == 401
        # Caught mid-shutdown, the server itself answers 57P03 ("shutting down"); after, refused.
        # Refused once it is down; reset or told "shutting down" if caught on the way.
        run.wait_for_output(r"database: unavailable: (connection refused|connection lost|shutting down|"
                            r"starting up)\b.* at 127\.0\.0\.1")

        pg.start()
        wait_until(lambda: http.get("/health").status_code == 200, 20, "/health to recover",
                   lambda: run.output)
        assert http.get(f"/notes/{note['id']}", headers=user).json()["title"] == "before"
        assert http.post("/notes", json={"title": "after"}, headers=user).status_code == 201
        assert http.get("/health").json()["pid"] == pid
        assert run.worker_pids() == [pid]
        run.wait_for_output(r"database: 127\.0\.0\.1:\d+/webapp_outage answers again")
        out = run.output
    assert "Traceback" not in out, out
    assert APP_PASSWORD not in out
