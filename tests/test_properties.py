"""Property-based tests of the parsers that take user input: ``.env``, ``supervisor.toml`` and
database URLs.

For any input, ``check`` exits 0 or 2, never with a traceback, and never prints a value generated
as a secret; what it accepts, a process can be started with. 500 examples per parser run
in-process (``cli.main``, the same code path as the command); a few more go through the real
``python -m supervisor check``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import string
import subprocess
import sys
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from supervisor.cli import main
from supervisor.config import toml as config_module
from supervisor.config.dburl import DatabaseURLError, normalize_database_url
from supervisor.config.settings import resolve_settings
from tests.support import REPO, base_env

# derandomize: the same 500 examples in every run, so that CI's verdict does not depend on luck;
# set derandomize=False locally to explore other examples.
EXAMPLES = settings(max_examples=500, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(max_examples=4, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMA = """
[status]
enabled = false
[database]
wait = false
[env.WORKER_COUNT]
type = "integer"
required = false
[env.DEBUG]
type = "boolean"
required = false
[env.GREETING]
required = false
[env.DATABASE_URL]
type = "url"
schemes = ["postgresql", "postgres", "postgresql+asyncpg", "sqlite+aiosqlite"]
required = false
[env.API_SECRET]
type = "secret"
required = false
"""
SECRET_NAMES = ("API_SECRET", "DB_PASSWORD", "SESSION_TOKEN", "SIGNING_KEY")
PLAIN_NAMES = ("WORKER_COUNT", "DEBUG", "GREETING", "PORT", "SUPERVISOR_MODE", "X")

# Any character a file can hold (no lone surrogates: those cannot even be written as UTF-8).
ANY_CHAR = st.characters(codec="utf-8")
PRINTABLE = st.sampled_from(string.printable)
# Text the output may contain whatever the input: messages (in the source) and temporary paths.
# Hypothesis draws strings from the code under test, so a "secret" can be a piece of a message.
STATIC_TEXT = "\n".join([*(p.read_text() for p in (REPO / "supervisor").rglob("*.py")), tempfile.gettempdir(),
                         "/prop-", "supervisor.toml", ".env"])


def not_static(secret: str) -> bool:
    """A secret found in the output leaked only if it is not text the output has anyway."""
    return len(secret.strip()) >= 8 and secret not in STATIC_TEXT


# A secret: long enough that finding it in the output means it leaked, not that it is a common word.
SECRETS = st.text(st.one_of(st.characters(min_codepoint=0x21, max_codepoint=0x7e), ANY_CHAR),
                  min_size=8, max_size=40).filter(not_static)


@contextlib.contextmanager
def project_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="prop-") as name:
        # An app for `check` to find (parsed, never imported), so that a valid project passes.
        (Path(name) / "main.py").write_text("app = object()\n")
        yield Path(name)


def check(root: Path, environ: dict[str, str]) -> tuple[int, str]:
    """``python -m supervisor check`` in-process: exit code and everything it printed. An
    exception escaping ``main`` would be the traceback the command prints: it fails the test."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, environ, clear=True), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check", "--project-dir", str(root)])
    return code, out.getvalue() + err.getvalue()


def assert_startable(root: Path, environ: dict[str, str]) -> None:
    """What ``check`` accepted, ``up`` can hand to a worker: no NUL, no '=' in a name, encodable."""
    settings_ = resolve_settings(root, environ)
    for name, value in settings_.environ.items():
        assert name and "=" not in name and "\x00" not in name + value, (name, value)
        os.fsencode(name), os.fsencode(value)
        assert len(value) <= 65536


def assert_clean(code: int, output: str, secrets: list[str]) -> None:
    assert code in (0, 2), output
    assert "Traceback" not in output, output
    leaked = [s for s in secrets if s in output]
    assert not leaked, (leaked, output)


# ----- .env ----------------------------------------------------------------------------------------

def quoted(value: str, style: str) -> str:
    return {"plain": value, "single": f"'{value}'", "double": f'"{value}"',
            "escaped": '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'}[style]


@st.composite
def dotenv_documents(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A ``.env`` text and the secrets in it: assignments (secret or not, quoted any way,
    interpolating), comments, blank lines, garbage, bare secrets, NUL bytes, huge values."""
    lines: list[str] = []
    secrets: list[str] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["secret", "plain", "reference", "comment", "garbage", "bare", "blank"]))
        export = draw(st.sampled_from(["", "export "]))
        style = draw(st.sampled_from(["plain", "single", "double", "escaped"]))
        if kind == "secret":
            secret = draw(SECRETS)
            secrets.append(secret)
            lines.append(f"{export}{draw(st.sampled_from(SECRET_NAMES))}={quoted(secret, style)}")
        elif kind == "plain":
            name = draw(st.sampled_from(PLAIN_NAMES) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,8}", fullmatch=True))
            lines.append(f"{export}{name}={quoted(draw(st.text(ANY_CHAR, max_size=30)), style)}")
        elif kind == "reference":
            refs = draw(st.lists(st.sampled_from([*SECRET_NAMES, *PLAIN_NAMES, "HOME"]), min_size=1, max_size=4))
            default = draw(st.sampled_from(["", ":-", ":-fallback"]))
            body = "".join(f"${{{r}{default}}}" for r in refs)
            lines.append(f"{draw(st.sampled_from(PLAIN_NAMES + SECRET_NAMES))}={quoted(body, style)}")
        elif kind == "comment":
            lines.append("# " + draw(st.text(ANY_CHAR, max_size=30)).replace("\n", " "))
        elif kind == "garbage":
            lines.append(draw(st.text(ANY_CHAR, max_size=40)))
        elif kind == "bare":  # a secret pasted on a line of its own
            secret = draw(SECRETS.filter(lambda s: "=" not in s and "\n" not in s and "#" not in s))
            secrets.append(secret)
            lines.append(secret)
        else:
            lines.append("")
    if draw(st.booleans()):  # exponential interpolation
        lines += ["A0=" + "x" * 10] + [f"A{i}=${{A{i - 1}}}${{A{i - 1}}}" for i in range(1, 20)]
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"])), secrets


@pytest.mark.timeout(120)
@EXAMPLES
@given(dotenv_documents())
def test_check_of_any_dotenv_exits_0_or_2_without_a_traceback_or_a_secret(document: tuple[str, list[str]]) -> None:
    text, secrets = document
    with project_dir() as root:
        (root / "supervisor.toml").write_text(SCHEMA)
        (root / ".env").write_text(text, encoding="utf-8")
        code, output = check(root, {"HOME": "/home/prop"})
        assert_clean(code, output, secrets)
        if code == 0:
            assert_startable(root, {"HOME": "/home/prop"})


# ----- supervisor.toml -----------------------------------------------------------------------------

SECTIONS: dict[str, type] = config_module._SECTIONS
PATH_KEYS = {"env_file", "runtime_dir", "app_dir"}
SCALARS = st.one_of(
    st.booleans(), st.integers(min_value=-(2 ** 70), max_value=2 ** 70), st.integers(-5, 100),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 10.0]),
    st.text(ANY_CHAR, max_size=20), st.sampled_from(["development", "production", "info", "webapp.app:app", "."]),
)
ANY_VALUE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.from_regex(r"[a-z_]{1,6}", fullmatch=True), inner, max_size=2), max_leaves=6)
# Paths that cannot reach outside the temporary project (or a special file), NULs included.
PATHS = st.sampled_from(["a\x00b", ".", "", "run", ".env", "supervisor.toml"]) | st.from_regex(
    r"[a-z.]{1,8}(/[a-z]{1,5})?(\x00)?", fullmatch=True)


def plausible(section: str, key: str) -> st.SearchStrategy[Any]:
    """Mostly a value of the key's type within its bounds (so that whole documents are valid often
    enough to reach what reads them), with edge values: bounds, nan, NUL bytes."""
    if key in PATH_KEYS:
        return PATHS
    field = {f.name: f for f in dataclasses.fields(SECTIONS[section])}[key]
    kind = typing.get_type_hints(SECTIONS[section])[key]
    lo: float = field.metadata["lo"] if field.metadata.get("lo") is not None else 0
    hi: float = field.metadata["hi"] if field.metadata.get("hi") is not None else 0
    if field.metadata.get("choices"):
        return st.sampled_from(field.metadata["choices"])
    if kind is bool or kind == bool | None:
        return st.booleans()
    if kind is int:
        return st.integers(int(lo), int(hi)) | st.sampled_from([int(lo), int(hi)])
    if kind is float or kind == float | None:
        return st.floats(lo, hi) | st.sampled_from([lo, hi, math.nan])
    if kind is str:
        return st.text(ANY_CHAR, max_size=12) | st.sampled_from(["127.0.0.1", "webapp.app:app", "x\x00y"])
    return st.lists(st.text(ANY_CHAR, max_size=8), max_size=3)


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's (DEL makes it invalid)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + "}"


@st.composite
def toml_documents(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A ``supervisor.toml`` (mostly valid TOML, sometimes not) and the secrets in it."""
    lines: list[str] = []
    secrets: list[str] = []
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "sever", "env"]), unique=True, min_size=1, max_size=6)):
        lines.append(f"[{section}]")
        known = [f.name for f in dataclasses.fields(SECTIONS[section])] if section in SECTIONS else ["port"]
        for key in draw(st.lists(st.sampled_from(known) | st.just("zzz"), unique=True, min_size=1, max_size=5)):
            wild = key not in known or section not in SECTIONS or draw(st.integers(0, 4)) == 0
            value = draw(ANY_VALUE) if wild else draw(plausible(section, key))
            lines.append(f"{key} = {toml(value)}")
        if section == "status" and draw(st.booleans()):
            secret = draw(SECRETS)
            secrets.append(secret)
            lines.append(f"token = {toml(secret)}")
    for _ in range(draw(st.integers(0, 3))):  # [env.NAME] declarations, secret defaults among them
        name = draw(st.sampled_from([*SECRET_NAMES, *PLAIN_NAMES, "bad name", "HOST\x00"]))
        lines.append(f"[env.{json.dumps(name)}]")
        kind = draw(st.sampled_from(["secret", "string", "integer", "url", "float", 5]))
        lines.append(f"type = {toml(kind)}")
        if draw(st.booleans()):
            default = draw(SECRETS) if kind == "secret" or name in SECRET_NAMES else draw(ANY_VALUE)
            if kind == "secret" or name in SECRET_NAMES:
                secrets.append(str(default))
            lines.append(f"default = {toml(default)}")
        for key in draw(st.lists(st.sampled_from(["required", "min_length", "min", "max", "schemes", "colour"]),
                                 unique=True, max_size=2)):
            lines.append(f"{key} = {toml(draw(ANY_VALUE))}")
    if draw(st.integers(0, 19)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(ANY_CHAR, max_size=30)))  # broken TOML
    return "\n".join(lines) + "\n", secrets


@pytest.mark.timeout(120)
@EXAMPLES
@given(toml_documents())
def test_check_of_any_supervisor_toml_exits_0_or_2_without_a_traceback_or_a_secret(
        document: tuple[str, list[str]]) -> None:
    text, secrets = document
    with project_dir() as root:
        (root / "supervisor.toml").write_text(text, encoding="utf-8")
        code, output = check(root, {})
        assert_clean(code, output, secrets)
        if code == 0:
            assert_startable(root, {})


# ----- database URLs -------------------------------------------------------------------------------

PASSWORDS = st.text(PRINTABLE, min_size=8, max_size=30).filter(not_static)
SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg2", "mysql", "sqlite+aiosqlite")
HOSTS = ("db.internal", "127.0.0.1", "[::1]", "", "db:5432", "db:xx")
QUERIES = ("sslmode=require", "connect_timeout=nan", "api_key=abc", "application_name=a@b", "password=")


@st.composite
def database_urls(draw: st.DrawFn) -> tuple[str, str]:
    """A database URL with a password of any printable characters, percent-encoded or not."""
    password = draw(PASSWORDS)
    written = quote(password, safe="") if draw(st.booleans()) else password
    scheme = draw(st.sampled_from(SCHEMES))
    host = draw(st.sampled_from(HOSTS))
    query = draw(st.sampled_from(["", *(f"?{q}" for q in QUERIES[:-1]), "?password=" + written]))
    # A password that is part of the fixed text ("sqlite+a") would be "found" without leaking.
    assume(not any(password in fixed for fixed in (*SCHEMES, *HOSTS, *QUERIES, "app")))
    return f"{scheme}://app:{written}@{host}/app{query}", password


def leaks(password: str, output: str) -> list[str]:
    return [form for form in {password, quote(password, safe="")} if form in output]


@pytest.mark.timeout(120)
@EXAMPLES
@given(database_urls(), st.sampled_from(["environment", "dotenv"]))
def test_check_of_any_database_url_exits_0_or_2_and_never_shows_the_password(
        url_and_password: tuple[str, str], source: str) -> None:
    url, password = url_and_password
    if source == "dotenv":
        assume("\n" not in url and "\r" not in url and "'" not in url)
    with project_dir() as root:
        (root / "supervisor.toml").write_text(SCHEMA)
        environ = {"DATABASE_URL": url} if source == "environment" else {}
        (root / ".env").write_text(f"DATABASE_URL='{url}'\n" if source == "dotenv" else "")
        code, output = check(root, environ)
        assert code in (0, 2) and "Traceback" not in output, output
        assert not leaks(password, output), output


@EXAMPLES
@given(database_urls())
def test_normalizing_a_database_url_never_shows_the_password(url_and_password: tuple[str, str]) -> None:
    url, password = url_and_password
    try:
        db = normalize_database_url(url)
    except DatabaseURLError as exc:
        assert not leaks(password, str(exc)), str(exc)
        return
    shown = " ".join([db.masked, db.target, db.describe_changes() or ""])
    assert not leaks(password, shown), shown


# ----- a few through the real command --------------------------------------------------------------

def real_check(root: Path, environ: dict[str, str] | None = None) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "supervisor", "check", "--project-dir", str(root)],
                            cwd=REPO, env=base_env(**(environ or {})), capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.timeout(120)
@FEW
@given(dotenv_documents(), toml_documents(), database_urls())
def test_the_real_command_agrees(dotenv: tuple[str, list[str]], document: tuple[str, list[str]],
                                 url_and_password: tuple[str, str]) -> None:
    with project_dir() as root:
        (root / "supervisor.toml").write_text(SCHEMA)
        (root / ".env").write_text(dotenv[0], encoding="utf-8")
        assert_clean(*real_check(root), dotenv[1])
        (root / ".env").unlink()
        (root / "supervisor.toml").write_text(document[0], encoding="utf-8")
        assert_clean(*real_check(root), document[1])
        (root / "supervisor.toml").write_text(SCHEMA)
        code, output = real_check(root, {"DATABASE_URL": url_and_password[0]})
        assert code in (0, 2) and "Traceback" not in output and not leaks(url_and_password[1], output), output
