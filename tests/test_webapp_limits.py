"""Request limits over real HTTP, on PostgreSQL and SQLite: the body cap (413) with and without
Content-Length, and that the worker goes on serving after refusing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.dbsupport import Served, auth, serve_webapp

MIB = 1024 * 1024


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_webapp(request, tmp_path_factory.mktemp(request.param), request.param,
                      database="webapp_limits") as served:
        yield served


def two_mib_note() -> bytes:
    return json.dumps({"title": "big", "body": "x" * (2 * MIB)}).encode()


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.json() == {"error": "request body too large", "max_bytes": MIB}
    assert response.headers["connection"] == "close"


def my_notes(http: httpx.Client, user: dict[str, str]) -> list[object]:
    listing = http.get("/notes", headers=user)
    assert listing.status_code == 200, listing.text
    items: list[object] = listing.json()["items"]
    return items


@pytest.mark.timeout(60)
def test_a_2_mib_body_with_content_length_is_413_and_nothing_is_stored(http: httpx.Client) -> None:
    user = auth("big-sender")
    body = two_mib_note()
    response = http.post("/notes", content=body, headers={**user, "Content-Type": "application/json"})
    assert_too_large(response)
    assert response.request.headers["content-length"] == str(len(body))
    assert my_notes(http, user) == []


@pytest.mark.timeout(60)
def test_a_2_mib_chunked_body_without_content_length_is_413(http: httpx.Client) -> None:
    user = auth("chunked-sender")
    body = two_mib_note()

    def chunks() -> Iterator[bytes]:  # a generator: httpx sends it chunked, with no length
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]

    response = http.post("/notes", content=chunks(), headers={**user, "Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_too_large(response)
    assert my_notes(http, user) == []


@pytest.mark.timeout(60)
def test_the_cap_is_checked_before_authentication(http: httpx.Client) -> None:
    # An anonymous client cannot make the worker read 2 MiB by omitting the token.
    assert_too_large(http.post("/notes", content=two_mib_note()))


@pytest.mark.timeout(60)
def test_a_body_under_the_cap_reaches_validation(http: httpx.Client) -> None:
    # Just under 1 MiB: read and parsed, then refused by the field limits (422), not the cap.
    body = json.dumps({"title": "t", "body": "y" * (MIB - 100)}).encode()
    assert len(body) < MIB
    response = http.post("/notes", content=body, headers=auth("near-cap"))
    assert response.status_code == 422
    assert response.json()["fields"] == {"body": f"too long: {MIB - 100} characters; expected at most 10000"}


@pytest.mark.timeout(60)
def test_an_oversized_title_is_422_naming_the_field_and_the_limit(http: httpx.Client) -> None:
    response = http.post("/notes", json={"title": "t" * 201}, headers=auth("long-title"))
    assert response.status_code == 422
    assert response.json()["fields"] == {"title": "too long: 201 characters; expected at most 200"}


@pytest.mark.timeout(60)
def test_the_worker_keeps_serving_after_refusing_big_bodies(http: httpx.Client, served: Served) -> None:
    pids = served.run.worker_pids()
    for _ in range(3):
        assert_too_large(http.post("/notes", content=two_mib_note(), headers=auth("again")))
    user = auth("after-big")
    assert http.post("/notes", json={"title": "small"}, headers=user).status_code == 201
    assert served.run.worker_pids() == pids
