"""Where a key of the settings file is, so that every message can name the file and line.

tomllib keeps no positions, so lines are found again in the text; the same locator serves
``supervisor.toml`` and the ``[tool.webapp-supervisor]`` table of ``pyproject.toml``.
"""

from __future__ import annotations

import re


class Locator:
    """Finds the line a key sits on, so errors can say ``supervisor.toml:12``.

    tomllib keeps no positions; a key's line is found by scanning the text for its table header
    and then the ``key =`` assignment. Good enough for the flat tables this file uses. ``prefix``:
    the table the settings sit under in the file (``tool.webapp-supervisor`` in ``pyproject.toml``),
    so that ``[server]`` is looked for, and named, as ``[tool.webapp-supervisor.server]``.
    """

    def __init__(self, text: str, path: str = "supervisor.toml", prefix: str = "") -> None:
        self.lines = text.splitlines()
        self.path = path
        self.prefix = prefix

    def name(self, table: str) -> str:
        """``table`` as written in the file: ``server`` or ``tool.webapp-supervisor.server``."""
        return f"{self.prefix}.{table}" if self.prefix and table else self.prefix or table

    def line_of(self, table: str, key: str | None = None) -> int | None:
        # A quoted part ("webapp-supervisor") is the same table to TOML.
        parts = self.name(table).split(".")
        dotted = r"\s*\.\s*".join(r"(?:" + re.escape(p) + r'|"' + re.escape(p) + r'")' for p in parts)
        header = re.compile(r"^\s*\[\s*" + dotted + r"\s*\]\s*(#.*)?$")
        any_header = re.compile(r"^\s*\[")
        assign = re.compile(r"^\s*\"?" + re.escape(key or "") + r"\"?\s*=") if key else None
        inside = False
        for number, line in enumerate(self.lines, start=1):
            if header.match(line):
                if assign is None:
                    return number
                inside = True
                continue
            if inside and any_header.match(line):
                inside = False
            if inside and assign is not None and assign.match(line):
                return number
        return None

    def where(self, table: str, key: str | None = None, path: str | None = None) -> str:
        """``supervisor.toml:12 [server] port``: the file (``path``, default the one read), the line
        when found, the table and key."""
        line = self.line_of(table, key)
        place = f"{path or self.path}:{line}" if line else path or self.path
        return f"{place} [{self.name(table)}]" + (f" {key}" if key else "")
