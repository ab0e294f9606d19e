"""Recognising secret values and keeping them out of every line we print.

A variable is secret when the schema says so or its name looks like one (``*SECRET*``,
``*PASSWORD*``, ``*TOKEN*``, ``*KEY*``); the password inside any URL-valued variable is secret
too. :class:`Redactor` masks all of them in any text before it leaves the process.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
MASK = "***"
# Shorter values would mask ordinary words and digits all over the log.
_MIN_MASKED_LENGTH = 4


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def url_password(value: str) -> str | None:
    """The password embedded in a URL such as ``postgresql://user:pw@host/db``, if any."""
    if "://" not in value:
        return None
    try:
        return urlsplit(value).password or None
    except ValueError:
        return None


def mask_url(value: str) -> str:
    """``postgresql://app:pw@db/x`` -> ``postgresql://app:***@db/x``; other text is unchanged."""
    password = url_password(value)
    return value.replace(f":{password}@", f":{MASK}@") if password else value


def secret_values(environ: Mapping[str, str], secret_names: Iterable[str] = ()) -> set[str]:
    """Every value in ``environ`` that must never be printed."""
    names = set(secret_names)
    found: set[str] = set()
    for name, value in environ.items():
        if name in names or is_secret_name(name):
            found.add(value)
        password = url_password(value)
        if password:
            found.add(password)
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
