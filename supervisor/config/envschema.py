"""The ``[env]`` schema: which variables the app needs and what form their values take.

Pure functions only: a spec is parsed from TOML, and an environment mapping is checked against
the specs, collecting every problem. Messages never contain a secret's value.

Example ``supervisor.toml``::

    [env.DATABASE_URL]
    type = "url"
    schemes = ["postgresql", "postgres", "postgresql+asyncpg", "sqlite+aiosqlite"]
    required = false

    [env.BETTER_AUTH_SECRET]
    type = "secret"
    min_length = 32
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from supervisor.errors import Problem
from supervisor.secrets import is_secret_name, mask_url_value

TYPES = ("string", "integer", "boolean", "port", "url", "secret")
# The spellings of a boolean everywhere the supervisor reads one (env values, URL query parameters).
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_SPEC_KEYS = {"type", "required", "default", "schemes", "min_length", "min", "max", "secret",
              "description"}


@dataclass(frozen=True)
class VarSpec:
    name: str
    type: str = "string"
    required: bool = True
    default: str | None = None
    schemes: tuple[str, ...] = ()
    min_length: int = 0
    min: int | None = None
    max: int | None = None
    secret: bool = False
    description: str = ""

    @property
    def is_secret(self) -> bool:
        return self.secret or self.type == "secret" or is_secret_name(self.name)


def parse_var_spec(name: str, raw: Any, where: str, problems: list[Problem]) -> VarSpec | None:
    """Build a :class:`VarSpec` from ``[env.NAME]`` (a table) or ``NAME = "type"`` (a string)."""
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        shown = "a value that is not shown" if is_secret_name(name) else repr(raw)
        problems.append(Problem(where, f"expected a type name or a table, got {shown}"))
        return None
    before = len(problems)
    for key in raw:
        if key not in _SPEC_KEYS:
            problems.append(Problem(where, f"unknown key {key!r}; expected one of "
                                           f"{', '.join(sorted(_SPEC_KEYS))}"))
    kind = raw.get("type", "string")
    if kind not in TYPES:
        problems.append(Problem(where, f"type {kind!r} is not known; expected one of {', '.join(TYPES)}"))
    checks: dict[str, tuple[type | tuple[type, ...], str]] = {
        "required": (bool, "true or false"), "secret": (bool, "true or false"),
        "default": (str, "a string"), "description": (str, "a string"),
        "min_length": (int, "an integer"), "min": (int, "an integer"), "max": (int, "an integer"),
    }
    secret = raw.get("secret") is True or kind == "secret" or is_secret_name(name)
    for key, (tp, expected) in checks.items():
        if key in raw and (not isinstance(raw[key], tp) or
                           (tp is int and isinstance(raw[key], bool))):
            # A secret's default is a secret too, even when it has the wrong type.
            shown = "the value" if key == "default" and secret else repr(raw[key])
            problems.append(Problem(where, f"{key} = {shown} is not {expected}"))
    if isinstance(raw.get("default"), str) and "\x00" in raw["default"]:
        problems.append(Problem(where, "default holds a NUL byte (\\u0000); no environment can hold one"))
    schemes = raw.get("schemes", [])
    if not (isinstance(schemes, list) and all(isinstance(s, str) for s in schemes)):
        problems.append(Problem(where, f"schemes = {schemes!r} is not a list of strings"))
        schemes = []
    if len(problems) > before:
        return None
    return VarSpec(
        name=name, type=kind, required=raw.get("required", "default" not in raw),
        default=raw.get("default"), schemes=tuple(schemes), min_length=raw.get("min_length", 0),
        min=raw.get("min"), max=raw.get("max"), secret=raw.get("secret", False),
        description=raw.get("description", ""),
    )


def _check_value(spec: VarSpec, value: str) -> tuple[str | None, Any]:
    """Return (problem or None, typed value). Problems describe, never quote, secret values."""
    shown = "the value" if spec.is_secret else repr(mask_url_value(value))
    if spec.type == "integer" or spec.type == "port":
        try:
            number = int(value.strip())
        except ValueError:
            return f"{shown} is not an integer; expected {_expected(spec)}", None
        lo, hi = _port_range(spec) if spec.type == "port" else (spec.min, spec.max)
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            bounds = f"{lo if lo is not None else '-inf'} to {hi if hi is not None else 'inf'}"
            return f"{shown} is out of range; expected {bounds}", None
        return None, number
    if spec.type == "boolean":
        low = value.strip().lower()
        if low in TRUE_WORDS:
            return None, True
        if low in FALSE_WORDS:
            return None, False
        return f"{shown} is not a boolean; expected one of true/false, 1/0, yes/no, on/off", None
    if spec.type == "url":
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a non-numeric port
        except ValueError:  # its message quotes the netloc, password and all
            return ("is not a valid URL (its host or port cannot be read); expected scheme://host/..., "
                    "with special characters in a password percent-encoded"), None
        if not parts.scheme or not (parts.netloc or parts.path):
            return "is not a URL; expected scheme://host/...", None
        if spec.schemes and parts.scheme not in spec.schemes:
            return (f"has scheme {parts.scheme!r}; expected one of "
                    f"{', '.join(repr(s) for s in spec.schemes)}"), None
        return None, value
    if len(value) < spec.min_length:
        return (f"is {len(value)} characters long; expected at least {spec.min_length}"), None
    if spec.type == "secret" and not value:
        return "is empty; expected a secret value", None
    return None, value


def validate_environ(specs: Mapping[str, VarSpec], environ: Mapping[str, str],
                     where: Mapping[str, str] | None = None,
                     default_place: str = "supervisor.toml [env] default") -> tuple[dict[str, Any], list[Problem]]:
    """Check ``environ`` against ``specs``; return typed values and every problem found.

    ``where`` maps a variable name to the place its value came from (``.env:4``), so messages
    point at the line to fix; ``default_place`` names where a declared default comes from.
    """
    where = where or {}
    values: dict[str, Any] = {}
    problems: list[Problem] = []
    for name, spec in specs.items():
        place = where.get(name, "environment")
        value = environ.get(name)
        if value is None:
            if spec.default is not None:
                value = spec.default
                place = default_place
            elif spec.required:
                hint = f" ({spec.description})" if spec.description else ""
                problems.append(Problem(f"{place} {name}",
                                        f"is required but not set; expected {_expected(spec)}{hint}"))
                continue
            else:
                continue
        problem, typed = _check_value(spec, value)
        if problem:
            problems.append(Problem(f"{place} {name}", problem))
        else:
            values[name] = typed
    return values, problems


def parse_number(kind: type[int] | type[float], text: str) -> int | float:
    """``int`` or ``float`` of ``text``; the ValueError says what was expected ("is not an integer").

    ``nan`` and ``inf`` are refused: nan passes every range check, and no timeout is infinite.
    """
    try:
        number = kind(text.strip())
    except ValueError:
        raise ValueError(f"is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(number):
        raise ValueError("is not a finite number")
    return number


def _port_range(spec: VarSpec) -> tuple[int, int]:
    """1-65535 unless the spec narrows or widens it (the built-in PORT allows 0: any free port)."""
    return (1 if spec.min is None else spec.min, 65535 if spec.max is None else spec.max)


def _expected(spec: VarSpec) -> str:
    if spec.type == "url" and spec.schemes:
        return f"a URL with scheme {' or '.join(spec.schemes)}"
    if spec.type == "secret":
        return f"a secret of at least {max(spec.min_length, 1)} characters"
    return {"string": "a string", "integer": "an integer", "boolean": "true or false",
            "port": "a port number ({}-{})".format(*_port_range(spec)), "url": "a URL"}[spec.type]
