"""Scenario 3, crash recovery: the process serving the app SIGKILLed under load, 10 times, 3 s apart.

The process to kill is the one that answers (``GET /`` returns its pid), whatever the tool. The
recovery time runs from the kill to the first answer from a new process. A tool that does not
restart its app within 10 s has nothing left to kill: the run ends there and the kills left count
as not recovered. Clients: 4 on kept-alive connections and 4 on fresh ones, counted apart.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

from bench.apps import BenchApp
from bench.clients import MODES, Load, answer, wait_for
from bench.session import ToolFailed, serving
from bench.stats import Section, Table, fmt, ratio, summary
from bench.tools import CIRCUS, HUPPER, SUPERVISOR, SUPERVISORD, UVICORN_RELOAD, WATCHFILES, Tool

TOOLS = [SUPERVISOR, UVICORN_RELOAD, WATCHFILES, HUPPER, CIRCUS, SUPERVISORD]
SPACING = 3.0
GIVE_UP = 10.0


def measure(tool: Tool, app: BenchApp, base: Path, kills: int) -> dict[str, Any]:
    times: list[float] = []
    with serving(tool, app, base) as served:
        loads = {mode: Load(served.port, mode, 4).start() for mode in MODES}
        time.sleep(SPACING)  # serving for a while before the first kill, as every later one does
        for _ in range(kills):
            first = answer(served.port)
            if first is None:
                break
            old = int(first["pid"])
            killed_at = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.kill(old, signal.SIGKILL)
            back = wait_for(served.port, lambda a, o=old: int(a.get("pid", o)) != o, GIVE_UP)  # type: ignore[misc]
            if back is None:
                break
            times.append(back - killed_at)
            time.sleep(max(0.0, killed_at + SPACING - time.monotonic()))  # pacing the kills
        results = {mode: load.stop() for mode, load in loads.items()}
    return {"recovered": len(times), "kills": kills, "recovery": summary(times),
            **{mode: {"failed": r.failed, "ok": r.ok, "longest_gap": r.longest_gap} for mode, r in results.items()}}


def collect(apps: list[BenchApp], base: Path, quick: bool = False) -> dict[str, Any]:
    kills = 3 if quick else 10
    data: dict[str, Any] = {}
    for app in apps:
        data[app.name] = {}
        for tool in TOOLS:
            try:
                data[app.name][tool.name] = measure(tool, app, base, kills)
            except ToolFailed as exc:
                data[app.name][tool.name] = {"error": str(exc)}
    return data


def _get(result: dict[str, Any], *keys: str) -> float:
    value: Any = result
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return float(value) if isinstance(value, int | float) else math.nan


def render(data: dict[str, Any], quick: bool = False) -> Section:
    kills = 3 if quick else 10
    section = Section("crash_recovery", "3. Crash recovery",
                      f"The process answering `GET /` SIGKILLed under load, {kills} times, {SPACING:g} s apart "
                      f"(a kill every {SPACING:g} s, as an OOM killer would). Recovery: from the kill to the first "
                      f"answer from a new process; a tool that has not restarted its app after {GIVE_UP:g} s ends "
                      "its run (nothing is left to kill). `uvicorn --reload`, watchfiles and hupper restart on a "
                      "file change only; circus and supervisord are process managers without reload. Clients that "
                      "wait on a held port without an answer fail only at their 10 s timeout, so few failed "
                      "requests can also mean a long gap: the ratios of failures and gaps are against the peers "
                      "that recovered from every kill.", data=data)
    for app, results in data.items():
        section.notes += [f"{tool} ({app}): {r['error'].splitlines()[0]}" for tool, r in results.items()
                          if "error" in r]
        table = Table([app, *results, "ratio"])
        table.add("recovered", *[f"{r.get('recovered', '-')}/{kills}" if "recovered" in r else "not run"
                                 for r in results.values()], "")
        for stat in ("median", "p90", "max"):
            values = [_get(r, "recovery", stat) for r in results.values()]
            table.add(f"recovery {stat} (s)", *values, ratio(values[0], values[1:]))
        # Failures and gaps: against the peers that recovered from every kill (one that never
        # answers again has few failures: its clients hang on the held port).
        recovering = [r.get("recovered") == r.get("kills") for r in results.values()]
        for mode in MODES:
            for label, key in (("failed requests", "failed"), ("longest gap (s)", "longest_gap")):
                values = [_get(r, mode, key) for r in results.values()]
                peers = [v for v, ok in zip(values[1:], recovering[1:], strict=True) if ok]
                table.add(f"{mode}: {label}", *[fmt(v) for v in values], ratio(values[0], peers))
        section.tables.append(table)
    return section
