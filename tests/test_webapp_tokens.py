"""Bearer tokens over real HTTP, on PostgreSQL and SQLite, with an audience and an issuer set:
what is refused (401, saying why, never echoing the token), what the leeway allows, and the
``python -m webapp token`` helper's tokens accepted by the API."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.dbsupport import SECRET, Served, serve_webapp, token
from tests.support import base_env

AUD = "webapp-tests"
ISS = "https://issuer.example.test"


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_webapp(request, tmp_path_factory.mktemp(request.param), request.param, database="webapp_tokens",
                      AUTH_AUDIENCE=AUD, AUTH_ISSUER=ISS, AUTH_LEEWAY_SECONDS="30") as served:
        yield served


def good(sub: str = "tokens-user", **claims: Any) -> str:
    merged: dict[str, Any] = {"aud": AUD, "iss": ISS, **claims}
    return token(sub, **merged)


def unsigned(header: dict[str, object], claims: dict[str, object], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    return ".".join([part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)])


def hs512() -> str:
    with warnings.catch_warnings():  # PyJWT: the secret is short for HS512, which is the point
        warnings.simplefilter("ignore")
        return good(algorithm="HS512")


def call(http: httpx.Client, bearer: str) -> httpx.Response:
    return http.get("/notes", headers={"Authorization": f"Bearer {bearer}"})


def now() -> int:
    return int(time.time())


REFUSED = {
    "no exp": (lambda: good(exp=None), "token has no 'exp' claim"),
    "expired": (lambda: good(exp=now() - 120), "token expired"),
    "alg none": (lambda: unsigned({"alg": "none", "typ": "JWT"},
                                  {"sub": "mallory", "exp": now() + 600, "aud": AUD, "iss": ISS}),
                 "token algorithm not accepted; expected HS256"),
    # Signed with the server's own secret: valid but for the algorithm.
    "HS512": (lambda: hs512(), "token algorithm not accepted; expected HS256"),
    "RS256": (lambda: unsigned({"alg": "RS256", "typ": "JWT"},
                               {"sub": "mallory", "exp": now() + 600, "aud": AUD, "iss": ISS}, b"sig"),
              "token algorithm not accepted; expected HS256"),
    "wrong audience": (lambda: good(aud="another-api"), "token audience not accepted"),
    "no audience": (lambda: good(aud=None), "token has no 'aud' claim"),
    "wrong issuer": (lambda: good(iss="https://evil.example.test"), "token issuer not accepted"),
    "not yet valid": (lambda: good(nbf=now() + 300), "token not valid yet (nbf or iat in the future)"),
    "issued in the future": (lambda: good(iat=now() + 300), "token not valid yet (nbf or iat in the future)"),
    "bad signature": (lambda: token("x", secret="another-secret-that-is-long-enough-1234", aud=AUD, iss=ISS),
                      "token signature does not match"),
    "malformed": (lambda: "not.a.jwt", "malformed token; expected a JWT (header.payload.signature)"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_tokens_are_401_saying_why_without_echoing_the_token(http: httpx.Client, case: str) -> None:
    make, reason = REFUSED[case]
    bearer = make()
    response = call(http, bearer)
    assert response.status_code == 401, response.text
    assert response.json() == {"error": reason}
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"') and reason in challenge
    for part in bearer.split("."):
        if len(part) >= 8:  # no piece of the token in the body or any header
            assert part not in response.text and part not in str(response.headers), case


@pytest.mark.timeout(60)
def test_clock_skew_within_the_leeway_is_accepted(http: httpx.Client) -> None:
    # Expired 5 s ago, valid from 5 s ahead: within the 30 s leeway.
    assert call(http, good(exp=now() - 5)).status_code == 200
    assert call(http, good(nbf=now() + 5, iat=now() + 5)).status_code == 200


@pytest.mark.timeout(60)
def test_a_good_token_reaches_the_notes(http: httpx.Client) -> None:
    created = http.post("/notes", json={"title": "mine"}, headers={"Authorization": f"Bearer {good('owner-1')}"})
    assert created.status_code == 201 and created.json()["owner"] == "owner-1"


def helper(served: Served, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The project's environment, as `up` got it: the audience and issuer, the secret's default.
    environ = base_env(**{"AUTH_AUDIENCE": AUD, "AUTH_ISSUER": ISS, "BETTER_AUTH_SECRET": SECRET, **env})
    return subprocess.run([sys.executable, "-m", "webapp", "token", *args, "--project-dir", str(served.root)],
                          env=environ, capture_output=True, text=True, timeout=30)


@pytest.mark.timeout(60)
def test_the_token_helper_prints_a_token_the_api_accepts(http: httpx.Client, served: Served) -> None:
    result = helper(served, "helper-user", "--ttl", "90s")
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    assert "\n" not in printed and printed.count(".") == 2  # the token alone on stdout
    assert "valid until" in result.stderr and SECRET not in result.stdout + result.stderr
    claims = jwt.decode(printed, SECRET, algorithms=["HS256"], audience=AUD, issuer=ISS)
    assert claims["sub"] == "helper-user" and claims["exp"] - claims["iat"] == 90
    bearer = {"Authorization": f"Bearer {printed}"}
    note = http.post("/notes", json={"title": "from the helper"}, headers=bearer)
    assert note.status_code == 201 and note.json()["owner"] == "helper-user"
    assert http.delete(f"/notes/{note.json()['id']}", headers=bearer).status_code == 204


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, message", [
    (["someone", "--ttl", "forever"], "--ttl 'forever' is not a duration; expected a number with s, m, h or d"),
    (["someone", "--ttl", "90d"], "--ttl '90d' is out of range; expected 1s to 30d"),
    (["x" * 256], "SUBJECT must be 1 to 255 characters"),
])
def test_the_token_helper_refuses_bad_arguments_with_exit_2(served: Served, args: list[str], message: str) -> None:
    result = helper(served, *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""


@pytest.mark.timeout(60)
def test_the_token_helper_refuses_a_short_secret_without_printing_it(served: Served) -> None:
    result = helper(served, "someone", BETTER_AUTH_SECRET="short-secret-value")
    assert result.returncode == 2 and result.stdout == ""
    assert "BETTER_AUTH_SECRET" in result.stderr and "short-secret-value" not in result.stderr
