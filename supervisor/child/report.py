"""The module report a worker writes on its report pipe, and its reader, side by side.

The worker (:mod:`supervisor.child.worker`) writes its ``sys.modules`` (name and file) once it
serves and again when it starts to drain; the supervisor's spawner reads it to learn what a
template should preload (:mod:`supervisor.warm.preload`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping


def module_file(module: object) -> str | None:
    """The file a module was loaded from (a namespace package: its first directory), absolute."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        paths = getattr(module, "__path__", None)
        file = next(iter(paths), None) if paths is not None and not isinstance(paths, str) else None
        if not isinstance(file, str):
            return None
    return os.path.abspath(file)


def encode_report(modules: Mapping[str, object] | None = None) -> bytes:
    """This process's modules as one report line. It starts with a newline too: a report cut
    short (the pipe was full) then spoils only its own line, never the next report."""
    found = dict(sys.modules if modules is None else modules)
    table = {name: module_file(module) for name, module in found.items() if module is not None}
    return b"\n" + json.dumps({"modules": table}, separators=(",", ":")).encode() + b"\n"


def decode_report(line: bytes) -> dict[str, str | None] | None:
    """The module table of one report line; None for a blank, cut or foreign line."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    table = data.get("modules") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        return None
    return {str(name): file if isinstance(file, str) else None for name, file in table.items()}
