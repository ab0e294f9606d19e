"""The webapp's notes API over real HTTP, served by the supervisor, on PostgreSQL and on SQLite."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from tests.dbsupport import SECRET, Served, auth, serve_webapp, token


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The webapp under the supervisor, once per backend for this module."""
    with serve_webapp(request, tmp_path_factory.mktemp(request.param), request.param,
                      database="webapp_notes") as served:
        if served.backend == "sqlite":
            served.run.wait_for_output(r"DATABASE_URL is not set; development mode uses the SQLite file "
                                       + str(served.root / ".supervisor" / "webapp.sqlite3"))
        yield served


@pytest.mark.timeout(60)
def test_health_reports_the_database_ok(http: httpx.Client, served: Served) -> None:
    response = http.get("/health")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok" and body["database"]["status"] == "ok"
    assert body["database"]["latency_ms"] >= 0 and body["database"]["error"] is None
    backend, root = served.backend, served.root
    assert body["database"]["backend"] == backend
    # The development default is a file in the runtime directory (ignored by git).
    assert (root / ".supervisor" / "webapp.sqlite3").exists() == (backend == "sqlite")
    # Migrated by `up` before the worker started; the auth state without the secret.
    assert body["database"]["schema"] == {"status": "current", "revision": "0002", "expected": "0002"}
    assert body["auth"] == {"status": "ok", "algorithm": "HS256", "audience_checked": False, "issuer_checked": False,
                            "secret": {"present": True, "min_length": 32, "long_enough": True}}
    assert SECRET not in response.text and body["version"] == "0.1.0"


@pytest.mark.timeout(60)
def test_notes_round_trip_create_fetch_list_delete(http: httpx.Client) -> None:
    user = auth("round-trip-user")
    created = http.post("/notes", json={"title": "  Buy milk ", "body": "2 litres"}, headers=user)
    assert created.status_code == 201, created.text
    note = created.json()
    assert (note["title"], note["body"], note["owner"], note["pinned"]) == ("Buy milk", "2 litres",
                                                                           "round-trip-user", False)
    assert note["created_at"].endswith("Z") and created.headers["location"] == f"/notes/{note['id']}"
    assert http.get(f"/notes/{note['id']}", headers=user).json() == note
    assert http.get("/notes", headers=user).json()["items"] == [note]
    assert http.delete(f"/notes/{note['id']}", headers=user).status_code == 204
    assert http.get(f"/notes/{note['id']}", headers=user).status_code == 404
    assert http.get("/notes", headers=user).json()["items"] == []


@pytest.mark.timeout(60)
def test_users_never_see_or_delete_each_others_notes(http: httpx.Client) -> None:
    alice, bob = auth("alice"), auth("bob")
    note = http.post("/notes", json={"title": "alice's"}, headers=alice).json()
    assert http.get(f"/notes/{note['id']}", headers=bob).status_code == 404
    assert http.delete(f"/notes/{note['id']}", headers=bob).status_code == 404
    assert all(n["owner"] == "bob" for n in http.get("/notes", headers=bob).json()["items"])
    assert http.get(f"/notes/{note['id']}", headers=alice).status_code == 200


@pytest.mark.timeout(60)
def test_list_is_paged_newest_first_by_cursor(http: httpx.Client) -> None:
    user = auth("pager")
    ids = [http.post("/notes", json={"title": f"n{i}"}, headers=user).json()["id"] for i in range(5)]
    first = http.get("/notes", params={"limit": 2}, headers=user).json()
    assert [n["id"] for n in first["items"]] == ids[::-1][:2] and first["next_cursor"]
    # A note created between pages is not seen again and shifts nothing (an offset would repeat n2).
    http.post("/notes", json={"title": "newer"}, headers=user)
    second = http.get("/notes", params={"limit": 2, "cursor": first["next_cursor"]}, headers=user).json()
    assert [n["id"] for n in second["items"]] == ids[::-1][2:4]
    last = http.get("/notes", params={"limit": 2, "cursor": second["next_cursor"]}, headers=user).json()
    assert [n["id"] for n in last["items"]] == [ids[0]] and last["next_cursor"] is None


@pytest.mark.timeout(60)
def test_notes_created_in_the_same_instant_are_paged_by_id(http: httpx.Client,
                                                           served: Served) -> None:
    # Equal created_at values are ordered by id, so a page boundary between them loses nothing.
    user = auth("same-instant")
    for i in range(3):
        http.post("/notes", json={"title": f"s{i}"}, headers=user)
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = http.get("/notes", params=params, headers=user).json()
        seen += [n["id"] for n in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == 3


@pytest.mark.timeout(60)
def test_a_pinned_note_keeps_its_flag(http: httpx.Client) -> None:
    user = auth("pinner")
    note = http.post("/notes", json={"title": "keep", "pinned": True}, headers=user).json()
    assert note["pinned"] is True and http.get(f"/notes/{note['id']}", headers=user).json()["pinned"] is True


@pytest.mark.timeout(60)
@pytest.mark.parametrize("payload, fields", [
    ({}, {"title": "required: a non-empty string"}),
    ({"title": "x" * 201, "body": 5}, {"title": "too long: 201 characters; expected at most 200",
                                       "body": "expected a string"}),
    ({"title": "ok", "colour": "red"}, {"colour": "unknown field; expected title, body, pinned"}),
    ({"title": "ok", "body": "b" * 10_001, "pinned": "yes"},
     {"body": "too long: 10001 characters; expected at most 10000", "pinned": "expected true or false"}),
    ([1, 2], {"$": "expected a JSON object"}),
])
def test_invalid_note_input_is_422_with_every_field_error(http: httpx.Client, payload: object,
                                                         fields: dict[str, str]) -> None:
    response = http.post("/notes", json=payload, headers=auth("validator"))
    assert response.status_code == 422
    assert response.json() == {"error": "invalid input", "fields": fields}


@pytest.mark.timeout(60)
def test_invalid_json_and_bad_page_parameters_are_422(http: httpx.Client) -> None:
    user = auth("validator")
    bad_json = http.post("/notes", content=b"{not json", headers=user)
    assert bad_json.status_code == 422 and bad_json.json()["fields"] == {"$": "the request body is not valid JSON"}
    page = http.get("/notes", params={"limit": 0, "cursor": "bm90IGEgY3Vyc29y"}, headers=user)
    assert page.status_code == 422
    assert page.json()["fields"] == {
        "limit": "0 is out of range; expected 1 to 100",
        "cursor": "not a cursor from this API; expected the next_cursor of a previous page"}
    assert http.get("/notes", params={"limit": 101}, headers=user).json()["fields"] == {
        "limit": "101 is out of range; expected 1 to 100"}
    assert http.get("/notes", params={"offset": 40}, headers=user).json()["fields"] == {
        "offset": "not supported; pages follow next_cursor (pass it as cursor)"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("header", [
    None,
    "Basic YWxpY2U6cHc=",
    f"Bearer {token('mallory', secret='another-secret-that-is-long-enough-1234')}",
    f"Bearer {token('late', exp=int(time.time()) - 60)}",
    "Bearer not.a.jwt",
])
def test_missing_or_bad_tokens_are_401(http: httpx.Client, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in (("GET", "/notes"), ("POST", "/notes"), ("GET", "/notes/1"), ("DELETE", "/notes/1")):
        response = http.request(method, path, headers=headers, json={"title": "t"})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "error" in response.json()


@pytest.mark.timeout(60)
def test_a_token_without_sub_is_401(http: httpx.Client) -> None:
    no_sub = jwt.encode({"name": "x"}, SECRET, algorithm="HS256")
    assert http.get("/notes", headers={"Authorization": f"Bearer {no_sub}"}).status_code == 401
