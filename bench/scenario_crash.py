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


def run(apps: list[BenchApp], base: Path, quick: bool = False) -> Section:
    kills = 3 if quick else 10
    section = Section("crash_recovery", "3. Crash recovery",
                      f"The process answering `GET /` SIGKILLed under load, {kills} times, {SPACING:g} s apart "
                      f"(a kill every {SPACING:g} s, as an OOM killer would). Recovery: from the kill to the first "
                      f"answer from a new process; a tool that has not restarted its app after {GIVE_UP:g} s ends "
                      "its run (nothing is left to kill). `uvicorn --reload`, watchfiles and hupper restart on a "
                      "file change only; circus and supervisord are process managers without reload. Clients that wait "
                      "on a held port without an answer fail only at their 10 s timeout, so few failed requests "
                      "can also mean a long gap: read the failures with the gap and the successful requests.")
    for app in apps:
        results: dict[str, Any] = {}
        for tool in TOOLS:
            try:
                results[tool.name] = measure(tool, app, base, kills)
            except ToolFailed as exc:
                results[tool.name] = {}
                section.notes.append(f"{tool.name} ({app.name}): {str(exc).splitlines()[0]}")
        section.data[app.name] = results
        table = Table([app.name, *results, "ratio"])
        table.add("recovered", *[f"{r.get('recovered', '-')}/{kills}" if r else "not run" for r in results.values()],
                  "")
        for stat in ("median", "p90", "max"):
            values = [r.get("recovery", {}).get(stat, math.nan) if r else math.nan for r in results.values()]
            table.add(f"recovery {stat} (s)", *values, ratio(values[0], values[1:]))
        for mode in MODES:
            values = [float(r.get(mode, {}).get("failed", math.nan)) if r else math.nan for r in results.values()]
            table.add(f"{mode}: failed requests", *[fmt(v) for v in values], ratio(values[0], values[1:]))
            values = [float(r.get(mode, {}).get("longest_gap", math.nan)) if r else math.nan for r in results.values()]
            table.add(f"{mode}: longest gap (s)", *values, ratio(values[0], values[1:]))
            values = [float(r.get(mode, {}).get("ok", math.nan)) if r else math.nan for r in results.values()]
            table.add(f"{mode}: successful requests", *[fmt(v) for v in values],
                      ratio(values[0], values[1:], lower_is_better=False))
        section.tables.append(table)
    return section
