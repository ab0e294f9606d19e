"""Recognising secret values and keeping them out of every line we print.

A variable is secret when the schema says so or its name looks like one (``*SECRET*``,
``*PASSWORD*``, ``*PASSWD*``, ``*TOKEN*``, ``*KEY*``, ``*CREDENTIAL*``); the password inside any
URL-valued variable is secret too, whether written ``user:pw@host`` or ``?password=pw``.
:class:`Redactor` masks all of them in any text before it leaves the process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
MASK = "***"
# Shorter values would mask ordinary words and digits all over the log.
_MIN_MASKED_LENGTH = 4
# libpq accepts these in the query string too: postgresql://app@db/app?password=pw
QUERY_SECRETS = frozenset({"password", "sslpassword"})
# ``scheme://user:PASSWORD@`` anywhere in a text; greedy up to the netloc's last "@", as urlsplit does.
_USERINFO = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*:)[^\s/?#]*(@)")
_QUERY_PASSWORD = re.compile(  # the keys of QUERY_SECRETS
    r"([?&](?:password|sslpassword)=)[^&#\s'\"]*", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def url_passwords(value: str) -> list[str]:
    """Every password in a URL: ``user:pw@`` and ``?password=`` / ``?sslpassword=``, as written
    and decoded (a message may show either form)."""
    if "://" not in value:
        return []
    try:
        parts = urlsplit(value)
        found = [parts.password or ""]
    except ValueError:
        return []
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() in QUERY_SECRETS]
    found += [v for k, _, v in (p.partition("=") for p in parts.query.split("&")) if k.lower() in QUERY_SECRETS]
    if parts.password:
        found.append(unquote(parts.password))
    return list(dict.fromkeys(p for p in found if p))


def url_password(value: str) -> str | None:
    """The (first) password in a URL such as ``postgresql://user:pw@host/db``, if any."""
    passwords = url_passwords(value)
    return passwords[0] if passwords else None


def mask_url(value: str) -> str:
    """``postgresql://app:pw@db/x?password=pw`` -> ``postgresql://app:***@db/x?password=***``.

    Works on URLs inside longer text (a driver's message) too; other text is unchanged.
    """
    if "://" not in value:
        return value
    return _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", _USERINFO.sub(rf"\g<1>{MASK}\g<2>", value))


def secret_values(environ: Mapping[str, str], secret_names: Iterable[str] = (),
                  named: Iterable[str] | None = None) -> set[str]:
    """Every value in ``environ`` that must never be printed.

    ``secret_names`` are secret whatever they are called. A name that merely looks secret
    (``API_KEY``) counts only among ``named`` (the variables ``[env]`` declares and ``.env``
    sets; None: all of them): an inherited ``API_KEY_MODE=production`` would otherwise mask the
    word "production" in every log line. URL passwords count in every variable.
    """
    names = set(secret_names)
    looked_at = None if named is None else set(named)
    found: set[str] = set()
    for name, value in environ.items():
        if name in names or (is_secret_name(name) and (looked_at is None or name in looked_at)):
            found.add(value)
        found.update(url_passwords(value))
    return {v for v in found if len(v) >= _MIN_MASKED_LENGTH}


class Redactor:
    """Replaces known secret values in text with ``***``; longest first so overlaps mask fully."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        merged = set(self._secrets) | {s for s in secrets if len(s) >= _MIN_MASKED_LENGTH}
        self._secrets = sorted(merged, key=len, reverse=True)
        self._pattern = (re.compile("|".join(re.escape(s) for s in self._secrets))
                         if self._secrets else None)

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)
