"""CORS from ``CORS_ORIGINS`` over real HTTP, on PostgreSQL and SQLite: preflights from an allowed
and a refused origin; and the pure checks on the variable (no wildcard with credentials)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.dbsupport import SECRET, Served, auth, serve_webapp
from webapp.config import WebConfigError, WebSettings, load_web_settings

ALLOWED = "https://app.example.test"
ALSO_ALLOWED = "http://localhost:5173"
REFUSED = "https://evil.example.test"


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_webapp(request, tmp_path_factory.mktemp(request.param), request.param, database="webapp_cors",
                      CORS_ORIGINS=f"{ALLOWED}, {ALSO_ALLOWED}") as served:
        yield served


def preflight(http: httpx.Client, origin: str, method: str = "POST") -> httpx.Response:
    return http.options("/notes", headers={"Origin": origin, "Access-Control-Request-Method": method,
                                           "Access-Control-Request-Headers": "authorization, content-type"})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("origin", [ALLOWED, ALSO_ALLOWED])
def test_a_preflight_from_an_allowed_origin_is_granted(http: httpx.Client, origin: str) -> None:
    response = preflight(http, origin)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == origin
    assert {"GET", "POST", "DELETE"} <= {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers
    assert "access-control-allow-credentials" not in response.headers  # not asked for: bearer tokens need none


@pytest.mark.timeout(60)
def test_a_preflight_from_another_origin_is_refused(http: httpx.Client) -> None:
    response = preflight(http, REFUSED)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.timeout(60)
def test_a_preflight_for_a_method_the_api_lacks_is_refused(http: httpx.Client) -> None:
    response = preflight(http, ALLOWED, method="PUT")
    assert response.status_code == 400


@pytest.mark.timeout(60)
def test_actual_requests_carry_the_header_only_for_allowed_origins(http: httpx.Client) -> None:
    user = auth("cors-user")
    created = http.post("/notes", json={"title": "from the browser"}, headers={**user, "Origin": ALLOWED})
    assert created.status_code == 201
    assert created.headers["access-control-allow-origin"] == ALLOWED
    assert "location" in created.headers["access-control-expose-headers"].lower()
    other = http.get("/notes", headers={**user, "Origin": REFUSED})
    assert other.status_code == 200  # CORS is the browser's check; the server just withholds the grant
    assert "access-control-allow-origin" not in other.headers


def settings(**env: str) -> WebSettings:
    return load_web_settings({"BETTER_AUTH_SECRET": SECRET, **env})


@pytest.mark.parametrize("value, message", [
    ("https://app.example.test/", "'https://app.example.test/' is not an origin; expected scheme://host[:port]"),
    ("app.example.test", "'app.example.test' is not an origin"),
    ("https://app.example.test/path", "is not an origin"),
    ("ftp://files.example.test", "is not an origin"),
    ("*, https://app.example.test", "mixes '*' with listed origins"),
])
def test_bad_origins_name_the_variable_and_the_expected_form(value: str, message: str) -> None:
    with pytest.raises(WebConfigError, match="^CORS_ORIGINS ") as info:
        settings(CORS_ORIGINS=value)
    assert message in str(info.value)


def test_a_wildcard_is_refused_with_credentials_and_allowed_without() -> None:
    with pytest.raises(WebConfigError, match=r"CORS_ALLOW_CREDENTIALS=true cannot be combined with CORS_ORIGINS=\*"):
        settings(CORS_ORIGINS="*", CORS_ALLOW_CREDENTIALS="true")
    assert settings(CORS_ORIGINS="*").cors_origins == ("*",)
    listed = settings(CORS_ORIGINS=ALLOWED, CORS_ALLOW_CREDENTIALS="yes")
    assert listed.cors_allow_credentials and listed.cors_origins == (ALLOWED,)
    assert settings().cors_origins == ()
