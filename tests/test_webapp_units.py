"""The webapp's pure pieces: token rules, durations, cursors, the schema comparison, the body cap's
header reading. No server; the real-HTTP tests are in the other test_webapp_* modules."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import jwt
import pytest

from webapp.limits import declared_length
from webapp.models import Note
from webapp.notes import decode_cursor, encode_cursor
from webapp.schema import AHEAD, BEHIND, CURRENT, MISSING, Revisions, load_revisions, schema_status
from webapp.tokens import TokenPolicy, TokenRejected, issue_token, parse_ttl, verify_token

SECRET = "unit-secret-0123456789-0123456789-abcdef"


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800),
                                           ("3600", 3600), (" 2H ", 7200)])
def test_ttl_takes_a_number_and_a_unit(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "1y", "-5m", "1.5h", "0s", "31d"])
def test_bad_ttls_say_what_was_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_ttl(text)


def test_issued_tokens_carry_every_claim_the_verifier_checks() -> None:
    policy = TokenPolicy(SECRET, audience="api", issuer="https://issuer", leeway=0)
    now = time.time()
    token = issue_token("alice", policy, ttl=60, now=now)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="api")
    assert claims == {"sub": "alice", "iat": int(now), "nbf": int(now), "exp": int(now) + 60,
                      "aud": "api", "iss": "https://issuer"}
    assert verify_token(token, policy) == "alice"


def test_the_leeway_decides_a_just_expired_token() -> None:
    token = issue_token("bob", TokenPolicy(SECRET), ttl=10, now=time.time() - 20)  # expired 10 s ago
    assert verify_token(token, TokenPolicy(SECRET, leeway=30)) == "bob"
    with pytest.raises(TokenRejected, match="^token expired$"):
        verify_token(token, TokenPolicy(SECRET, leeway=0))


def test_an_audience_is_only_checked_when_configured() -> None:
    token = issue_token("carol", TokenPolicy(SECRET, audience="other"))
    assert verify_token(token, TokenPolicy(SECRET)) == "carol"
    with pytest.raises(TokenRejected, match="audience"):
        verify_token(token, TokenPolicy(SECRET, audience="api"))


@pytest.mark.parametrize("sub", ["", "x" * 256, 42])
def test_sub_must_be_a_short_string(sub: object) -> None:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(TokenRejected):
        verify_token(token, TokenPolicy(SECRET))


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    note = Note(id=7, owner="o", title="t", body="", created_at=datetime(2025, 1, 2, 3, 4, 5, 678901))
    when, note_id = decode_cursor(encode_cursor(note))
    assert (when, note_id) == (datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), 7)
    for bad in ["", "%%%", "bm90IGpzb24", encode_cursor(note) + "x" * 200,
                "WyIyMDI1LTAxLTAyVDAzOjA0OjA1IiwgN10"]:  # the last: a timestamp without a zone
        with pytest.raises(ValueError):
            decode_cursor(bad)


def test_schema_status_compares_with_the_head() -> None:
    revisions = Revisions(head="0002", known=frozenset({"0001", "0002"}))
    assert schema_status("0002", revisions) == CURRENT
    assert schema_status("0001", revisions) == BEHIND
    assert schema_status(None, revisions) == MISSING
    assert schema_status("0003", revisions) == AHEAD
    assert load_revisions() == Revisions(head="0002", known=frozenset({"0001", "0002"}))


def test_declared_length_reads_content_length_or_none() -> None:
    assert declared_length({"headers": [(b"content-length", b"12")]}) == 12
    assert declared_length({"headers": [(b"content-type", b"x")]}) is None
    assert declared_length({"headers": [(b"content-length", b"lots")]}) is None
