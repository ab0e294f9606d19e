"""Masking: URL passwords with special characters, and every form a secret is printed in."""

from __future__ import annotations

import json
import time

import pytest

from supervisor.secrets import MASK, Redactor, mask_url, mask_url_value, url_passwords
from supervisor.status.api import redact_tree
from supervisor.status.display import summary_line

PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "q2Zl9Kx0VbN4m3yT8hJw5sD1pRfL6cE2aU7iO0\n-----END PRIVATE KEY-----\n")
QUOTED = "tok\"quo'te-\u00fc-5f2e9c\\x-never"


@pytest.mark.parametrize("password", ["Pw#x", "1234#rest", "a/b", "a?b", "p@ss", "Pw#x/y?z@w", "sp ace"])
def test_url_password_is_found_and_masked_whatever_characters_it_holds(password: str) -> None:
    """Masking must not depend on urlsplit finding the authority: it ends at the first '#'."""
    url = f"postgresql://app:{password}@db.internal:5432/app"
    assert password in url_passwords(url)
    assert mask_url_value(url) == "postgresql://app:***@db.internal:5432/app"


def test_urls_inside_a_message_are_masked_up_to_their_end() -> None:
    text = "could not connect to postgresql://app:Pw#x/y@db/app (user@example.org): 'x://u:v@w'"
    assert mask_url(text) == "could not connect to postgresql://app:***@db/app (user@example.org): 'x://u:***@w'"


def test_query_passwords_are_masked_too() -> None:
    assert mask_url_value("postgresql://app@db/app?sslmode=require&password=pw1") == \
        "postgresql://app@db/app?sslmode=require&password=***"


@pytest.mark.parametrize("printed", [
    QUOTED, repr(QUOTED), ascii(QUOTED), json.dumps(QUOTED), json.dumps(QUOTED, ensure_ascii=False),
    repr({"k": QUOTED}), json.dumps({"k": QUOTED}), repr(QUOTED.encode()), f"x={QUOTED!r}",
])
def test_repr_json_and_bytes_forms_are_masked(printed: str) -> None:
    redact = Redactor([QUOTED])
    out = redact(printed)
    assert MASK in out and "5f2e9c" not in out and "never" not in out, out


def test_each_line_of_a_multi_line_secret_is_masked() -> None:
    redact = Redactor([PEM])
    for line in PEM.splitlines():
        out = redact(f"web.0 12 | {line}")
        assert line not in out
    assert redact(json.dumps(PEM)) == f'"{MASK}"'


@pytest.mark.parametrize("cut", [4, 9, 16, 27])
def test_a_secret_split_across_two_lines_is_masked_on_both(cut: int) -> None:
    secret = "abcdefghijklmnopqrstuvwxyz0123456789"
    redact = Redactor([secret])
    out = redact(f"12:00:00 web.0 12 | value={secret[:cut]}\n12:00:00 web.0 12 | {secret[cut:]} and more\n")
    assert secret[:cut] not in out and secret[cut:] not in out, out
    assert out.endswith(" and more\n")


def test_split_rule_leaves_ordinary_text_alone() -> None:
    redact = Redactor(["abcdefghijklmnopqrstuvwxyz0123456789", PEM])
    text = "GET /health 200 OK in 3 ms\nworker pid 1234 is serving\n"
    assert redact(text) == text


def test_redaction_stays_fast_with_a_pem_key_among_the_secrets() -> None:
    redact = Redactor([PEM, QUOTED, "postgres-password-123"])
    line = "12:00:00 web.0 1234 | INFO:     127.0.0.1:50000 - \"GET /notes HTTP/1.1\" 200 OK"
    started = time.perf_counter()
    for _ in range(20000):
        redact(line)
    assert time.perf_counter() - started < 5.0


DEV_SECRET = "development-only-secret-change-me-0123456789"  # the repository's default, as declared


def test_a_word_of_a_secret_on_its_own_is_not_masked_but_the_secret_and_its_pieces_are() -> None:
    """Regression: `status` showed ``"mode": "***"`` and ``running (***)``, because the split-line
    rule took the mode ``development`` for the first half of the default secret."""
    redact = Redactor([DEV_SECRET])
    doc = {"supervisor": {"pid": 1, "state": "running", "mode": "development", "uptime": 3.0,
                          "ready": True, "ready_reason": ""}, "url": "http://127.0.0.1:8000"}
    shown = redact_tree(doc, redact)
    assert shown["supervisor"]["mode"] == "development"
    assert "running (development)" in summary_line(shown)
    assert redact("mode: development\n") == "mode: development\n"
    # The secret itself, and pieces of it cut anywhere but between its words, are still masked.
    assert redact(f"key={DEV_SECRET}") == f"key={MASK}"
    for cut in (7, 12, 24, 30):
        out = redact(f"key={DEV_SECRET[:cut]}\n{DEV_SECRET[cut:]} and more\n")
        assert DEV_SECRET[:cut] not in out and DEV_SECRET[cut:] not in out, (cut, out)
