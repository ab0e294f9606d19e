"""Scenario 6, start-up: from launching the command to the first successful response.

Our ``up`` (development mode: reload on, the status API, and for the webapp a database probe
before the first worker) against plain ``uvicorn``, ``uvicorn --reload``, the watchfiles CLI and
hupper, each started afresh in a new directory, several times.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.apps import BenchApp
from bench.session import ToolFailed, serving
from bench.stats import Section, Table, ratio, summary
from bench.tools import HUPPER, SUPERVISOR, UVICORN, UVICORN_RELOAD, WATCHFILES

TOOLS = [SUPERVISOR, UVICORN, UVICORN_RELOAD, WATCHFILES, HUPPER]


def collect(apps: list[BenchApp], base: Path, quick: bool = False) -> dict[str, Any]:
    runs = 2 if quick else 5
    data: dict[str, Any] = {}
    for app in apps:
        times: dict[str, list[float]] = {tool.name: [] for tool in TOOLS}
        errors: dict[str, str] = {}
        for _ in range(runs):
            for tool in TOOLS:  # interleaved: background load falls on every tool alike
                try:
                    with serving(tool, app, base) as served:
                        times[tool.name].append(served.answered_at - served.launched_at)
                except ToolFailed as exc:
                    errors[tool.name] = str(exc)
        data[app.name] = {name: {**summary(values), **({"error": errors[name]} if name in errors else {})}
                          for name, values in times.items()}
    return data


def render(data: dict[str, Any], quick: bool = False) -> Section:
    runs = 2 if quick else 5
    section = Section("startup", "6. Start-up",
                      f"From launching the command to the first 200 on `GET /` (polled every 2 ms on fresh "
                      f"connections), {runs} starts per tool and app, interleaved. Seconds.", data=data)
    for app, stats in data.items():
        section.notes += [f"{tool} ({app}): {r['error'].splitlines()[0]}" for tool, r in stats.items()
                          if "error" in r]
        table = Table([f"{app}: start-up (s)", *stats, "ratio"])
        for stat in ("median", "p90", "max"):
            values = [stats[name].get(stat, math.nan) for name in stats]
            values = [math.nan if v is None else v for v in values]
            table.add(stat, *values, ratio(values[0], values[1:]))
        section.tables.append(table)
    return section
