"""``GET /metrics`` of the webapp over real HTTP, on PostgreSQL and SQLite: the pool figures move
while requests hold connections, and waits that time out are counted (and answered 503)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.dbsupport import Served, auth, metric, notes_locked, serve_webapp
from tests.pgserver import PgServer
from tests.support import wait_until


def pool(http: httpx.Client) -> dict[str, float]:
    text = http.get("/metrics").text
    figures = {name: metric(text, f"webapp_db_pool_{name}")
               for name in ("size", "checked_out", "checked_in", "overflow", "max_overflow", "waiting")}
    figures["waits"] = metric(text, "webapp_db_pool_wait_seconds_count")
    figures["timeouts"] = metric(text, "webapp_db_pool_timeouts_total")
    figures["pool_errors"] = metric(text, "webapp_db_errors_total", kind="pool_exhausted")
    return figures


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_pool_metrics_move_while_requests_are_in_flight(request: pytest.FixtureRequest, tmp_path: Path,
                                                        backend: str) -> None:
    pg = request.getfixturevalue("pg") if backend == "postgresql" else None
    # One connection and no overflow: a second request waits for the first. SQLite waits up to
    # 30 s for the locked file (DATABASE_CONNECT_TIMEOUT), PostgreSQL for the table lock.
    with serve_webapp(request, tmp_path, backend, database="webapp_metrics", DATABASE_POOL_SIZE="1",
                      DATABASE_MAX_OVERFLOW="0", DATABASE_POOL_TIMEOUT="2", DATABASE_CONNECT_TIMEOUT="30") as served, \
            served.client() as http:
        run_with_a_lock(served, pg, http)


def run_with_a_lock(served: Served, pg: PgServer | None, http: httpx.Client) -> None:
    user = auth("metrics-user")
    assert http.post("/notes", json={"title": "warm"}, headers=user).status_code == 201
    idle = pool(http)
    assert (idle["size"], idle["max_overflow"], idle["checked_out"], idle["waiting"]) == (1, 0, 0, 0)
    assert idle["checked_in"] == 1 and idle["waits"] >= 1
    content = http.get("/metrics")
    assert content.headers["content-type"].startswith("text/plain")

    with ThreadPoolExecutor(2) as pool_of_clients, notes_locked(served, pg):
        # The first holds the one connection, blocked on the lock; the second waits for it.
        first = pool_of_clients.submit(served_post, served.url, user, "blocked")
        wait_until(lambda: pool(http)["checked_out"] == 1, 20, "a connection checked out", lambda: served.run.output)
        second = pool_of_clients.submit(served_post, served.url, user, "waits for the pool")
        busy = wait_until(lambda: (p := pool(http))["waiting"] == 1 and p, 20, "a request waiting for the pool",
                          lambda: served.run.output)
        assert busy["checked_out"] == 1 and busy["checked_in"] == 0
        # DATABASE_POOL_TIMEOUT = 2 s: the waiting request gives up with a 503 and is counted.
        waited = second.result(timeout=30)
        assert waited.status_code == 503 and waited.headers["retry-after"] == "5", waited.text
        assert waited.json() == {"error": "database busy",
                                 "reason": "every pooled connection stayed in use past DATABASE_POOL_TIMEOUT"}
        after_timeout = pool(http)
        assert after_timeout["timeouts"] == 1 and after_timeout["pool_errors"] == 1
        assert after_timeout["waiting"] == 0 and after_timeout["checked_out"] == 1
    assert first.result(timeout=30).status_code == 201  # the lock is gone: it went through
    done = wait_until(lambda: (p := pool(http))["checked_out"] == 0 and p, 20, "the connection back",
                      lambda: served.run.output)
    assert done["checked_in"] == 1 and done["waits"] >= idle["waits"] + 2
    assert metric(http.get("/metrics").text, "webapp_db_pool_wait_seconds_sum") >= 2.0  # the 2 s wait


def served_post(url: str, user: dict[str, str], title: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=60) as c:
        return c.post("/notes", json={"title": title}, headers=user)
