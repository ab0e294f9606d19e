"""Recognising secret values and keeping them out of every line we print.

A variable is secret when the schema says so or its name looks like one (``*SECRET*``,
``*PASSWORD*``, ``*PASSWD*``, ``*TOKEN*``, ``*KEY*``, ``*CREDENTIAL*``); the password inside any
URL-valued variable is secret too, whether written ``user:pw@host`` or ``?password=pw``.
:class:`Redactor` masks all of them in any text before it leaves the process, in the forms a
program may print them in: as written, line by line (a PEM key), JSON- or repr-escaped, and
split across two lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, unquote, urlsplit

_SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)
MASK = "***"
# Shorter values would mask ordinary words and digits all over the log.
_MIN_MASKED_LENGTH = 4
# libpq accepts these in the query string too: postgresql://app@db/app?password=pw
QUERY_SECRETS = frozenset({"password", "sslpassword"})
# Where a URL starts inside a longer text (a driver's message).
_URL_START = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://")
# Where a URL ends inside a longer text: whitespace, or a quote or bracket around it.
_URL_END = re.compile(r"[\s'\"<>`]")
# The keys of QUERY_SECRETS, and everything after them in the URL: an unencoded '&' or '#' may be
# part of the password, so the rest of the query is hidden with it.
_QUERY_PASSWORD = re.compile(r"([?&](?:password|sslpassword)=)[^\s'\"]*", re.IGNORECASE)
# What may come right before the second half of a secret split across two lines.
_BOUNDARY = frozenset(" \t|=:'\"([{<,;")
# A whole word of a secret, made of letters only and at most this long, is not masked on its own by
# the split-line rule: "development" (the first word of a development-only default secret) is
# also the mode, printed on its own in the status document and on line ends everywhere.
_MAX_ORDINARY_WORD = 15


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def split_userinfo(url: str) -> tuple[int, int] | None:
    """Where the password of ``url`` is: ``(start, end)`` offsets, or None when it has none.

    Deliberately not :func:`urllib.parse.urlsplit`: a password with an unencoded ``#``, ``/`` or
    ``?`` ends urlsplit's authority early and would be shown as host, port, path or fragment. The
    password is everything between ``scheme://user:`` and the *last* ``@``, which can only mask
    too much, never too little.

    >>> url = "postgresql://app:Pw#x/y@db/app"
    >>> start, end = split_userinfo(url)
    >>> url[start:end]
    'Pw#x/y'
    """
    scheme_end = url.find("://")
    if scheme_end < 0:
        return None
    start = scheme_end + 3
    at = url.rfind("@", start)
    if at < 0:
        return None
    colon = url.find(":", start, at)
    if colon < 0:
        return None  # user@host: no password
    return colon + 1, at


def url_passwords(value: str) -> list[str]:
    """Every password in a URL: ``user:pw@`` and ``?password=`` / ``?sslpassword=``, as written
    and decoded (a message may show either form). Over-collects rather than misses: the lenient
    reading of :func:`split_userinfo` and urlsplit's reading both count."""
    if "://" not in value:
        return []
    found: list[str] = []
    span = split_userinfo(value)
    if span is not None:
        found.append(value[span[0]:span[1]])
    try:
        parts = urlsplit(value)
        found.append(parts.password or "")
        query = parts.query
    except ValueError:
        query = value.partition("?")[2]
    found += [v for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() in QUERY_SECRETS]
    # As written, an unencoded '#' included: urlsplit would have cut it off as a fragment.
    raw_query = value.partition("?")[2]
    found += [v for k, _, v in (p.partition("=") for p in raw_query.split("&")) if k.lower() in QUERY_SECRETS]
    found += [unquote(p) for p in found]
    return list(dict.fromkeys(p for p in found if p))


def url_password(value: str) -> str | None:
    """The (first) password in a URL such as ``postgresql://user:pw@host/db``, if any."""
    passwords = url_passwords(value)
    return passwords[0] if passwords else None


def mask_url_value(url: str) -> str:
    """``url`` (one whole value, a URL) with its password masked, by :func:`split_userinfo`'s rule.

    >>> mask_url_value("postgresql://app:Pw#x@db/app?password=pw")
    'postgresql://app:***@db/app?password=***'
    """
    # The query first: a query password may hold an '@', which would move "the last '@'".
    url = _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", url)
    span = split_userinfo(url)
    if span is not None:
        url = url[:span[0]] + MASK + url[span[1]:]
    return url


def mask_url(text: str) -> str:
    """Every URL password in ``text`` (a driver's message, a log line) masked.

    A URL in a text ends at whitespace or a quote: ``postgresql://app:***@db/x?password=***``.
    Other text is unchanged.
    """
    if "://" not in text:
        return text
    pieces: list[str] = []
    cursor = 0
    for match in _URL_START.finditer(text):
        if match.start() < cursor:
            continue
        end_match = _URL_END.search(text, match.end())
        end = end_match.start() if end_match else len(text)
        pieces += [text[cursor:match.start()], mask_url_value(text[match.start():end])]
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


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


def _python_escape(text: str, quote_char: str, ascii_only: bool) -> str:
    """``text`` as it appears inside a Python string literal quoted with ``quote_char``."""
    out = []
    for ch in text:
        if ch == "\\" or ch == quote_char:
            out.append("\\" + ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ch.isprintable() and (ch.isascii() or not ascii_only):
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def printed_forms(secret: str) -> set[str]:
    """The ways a program may print ``secret``: as is, each of its lines, and escaped by
    ``json.dumps``, ``repr()``/``ascii()`` (either quote), ``repr(bytes)`` and percent-encoding."""
    forms = {secret, *secret.splitlines()}
    for ascii_only in (True, False):
        forms.add(json.dumps(secret, ensure_ascii=ascii_only)[1:-1])
        for quote_char in ("'", '"'):
            forms.add(_python_escape(secret, quote_char, ascii_only))
    try:
        forms.add(repr(secret.encode("utf-8"))[2:-1])
    except UnicodeEncodeError:  # a lone surrogate: no bytes form
        pass
    forms.add(quote(secret, safe=""))
    return {f for f in forms if len(f.strip()) >= _MIN_MASKED_LENGTH}


class Redactor:
    """Replaces known secret values in text with ``***``; longest first so overlaps mask fully.

    Besides every form of :func:`printed_forms`, a secret split across two lines is caught:
    a line that *ends* with the first part of a secret (at least 4 characters), and a line whose
    text starts with the rest of one (after a space, ``|``, ``=``, a quote...), are masked there.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._forms: list[str] = []
        self._parts: list[str] = []  # single lines of secrets, for the split-line rule
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        new = {s for s in secrets if len(s) >= _MIN_MASKED_LENGTH} - self._secrets
        if not new:
            return
        self._secrets |= new
        forms = set(self._forms)
        for secret in new:
            forms |= printed_forms(secret)
        self._forms = sorted(forms, key=len, reverse=True)
        self._parts = sorted({line for s in self._secrets for line in s.splitlines()
                              if len(line) > _MIN_MASKED_LENGTH}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in self._forms))

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        masked = self._pattern.sub(MASK, text)
        if not any(part[:_MIN_MASKED_LENGTH] in masked or part[-_MIN_MASKED_LENGTH:] in masked
                   for part in self._parts):
            return masked
        return "".join(self._mask_split(line) for line in masked.splitlines(keepends=True))

    def _mask_split(self, line: str) -> str:
        for part in self._parts:
            line = _mask_tail_prefix(line, part)
            line = _mask_head_suffix(line, part)
        return line


def _mask_tail_prefix(line: str, part: str) -> str:
    """Mask the end of ``line`` if it is the first half of ``part`` (split over two lines)."""
    body = line.rstrip("\r\n")
    stripped = body.rstrip()
    if part[:_MIN_MASKED_LENGTH] not in stripped[-len(part):]:
        return line
    for k in range(min(len(part) - 1, len(stripped)), _MIN_MASKED_LENGTH - 1, -1):
        if stripped.endswith(part[:k]) and not ordinary_word(part, 0, k):
            return stripped[:-k] + MASK + line[len(stripped):]
    return line


def _mask_head_suffix(line: str, part: str) -> str:
    """Mask the start of a line's text if it is the second half of ``part``."""
    if part[-_MIN_MASKED_LENGTH:] not in line:
        return line
    for k in range(1, len(part) - _MIN_MASKED_LENGTH + 1):
        rest = part[k:]
        if ordinary_word(part, k, len(part)):
            continue
        index = line.find(rest)
        while index >= 0:
            if index == 0 or line[index - 1] in _BOUNDARY:
                return line[:index] + MASK + line[index + len(rest):]
            index = line.find(rest, index + 1)
    return line


def ordinary_word(part: str, start: int, end: int) -> bool:
    """Whether ``part[start:end]``, a piece of a secret the split-line rule would mask, is one of its
    short words made of letters only, cut where the secret itself has a separator.

    A program that wraps a long secret cuts it anywhere, and each piece carries part of the
    secret; but a piece that is a whole word (``development`` of ``development-only-secret-...``)
    is ordinary text that appears on its own everywhere (the mode), and masking it hides the
    mode, not a secret. Pieces cut inside a word, or holding digits or separators, are still masked.

    >>> ordinary_word("development-only-secret-0123456789", 0, 11)
    True
    >>> ordinary_word("development-only-secret-0123456789", 0, 7)
    False
    """
    piece = part[start:end]
    if not piece.isalpha() or not piece.isascii() or len(piece) > _MAX_ORDINARY_WORD:
        return False
    before_ok = start == 0 or not part[start - 1].isalnum()
    after_ok = end == len(part) or not part[end].isalnum()
    return before_ok and after_ok
