"""Scenario 4, serving overhead: requests per second and p99 latency through our worker against
plain uvicorn, with one worker and with two, measured by wrk (Debian's ``wrk`` package).

wrk keeps its connections alive; with ``Connection: close`` it opens one per request, which is
the fresh-connection figure. Without wrk, a Python client does the same (and says so): its
threads share the two cores with the server, so its figures are lower.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import instructions
from bench.apps import BenchApp
from bench.clients import FRESH, KEEPALIVE, MODES, Load
from bench.session import ToolFailed, serving
from bench.stats import Section, Table, percentile, ratio
from bench.tools import (
    SUPERVISOR_2,
    SUPERVISOR_FAST,
    SUPERVISOR_NO_RELOAD,
    UVICORN,
    UVICORN_2,
    UVICORN_FAST,
    Tool,
)

# (ratio column, uvicorn, ours): asyncio and h11 with one worker and with two, then uvicorn[standard]'s
# uvloop and httptools with one.
PAIRS = [("ratio 1", UVICORN, SUPERVISOR_NO_RELOAD), ("ratio 2", UVICORN_2, SUPERVISOR_2),
         ("ratio fast", UVICORN_FAST, SUPERVISOR_FAST)]
CONNECTIONS = (16, 64)
# The stacks whose instructions per request are counted (bench/instructions.py), with their labels.
STACKS = {"asyncio+h11": ("asyncio", "h11"), "uvloop+httptools": ("uvloop", "httptools")}
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(match.group(1)) * UNITS[match.group(2)] if match else math.nan


def wrk(port: int, connections: int, mode: str, seconds: float, path: str) -> dict[str, float]:
    argv = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:g}s", "--latency", "--timeout", "5s"]
    if mode == FRESH:
        argv += ["-H", "Connection: close"]
    out = subprocess.run([*argv, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = sum(int(n) for n in errors.groups()) if errors else 0
    return {"rps": float(rate.group(1)) if rate else math.nan, "p99": _seconds(p99.group(1)) if p99 else math.nan,
            "failed": float(failed + (int(non2xx.group(1)) if non2xx else 0))}


def python_client(port: int, connections: int, mode: str, seconds: float, path: str) -> dict[str, float]:
    load = Load(port, mode, min(connections, 16), path, max_seconds=seconds + 30).start()
    started = time.monotonic()
    time.sleep(seconds)  # the measurement window
    result = load.stop()
    return {"rps": result.ok / (time.monotonic() - started), "p99": percentile(result.latencies, 0.99),
            "failed": float(result.failed)}


def measure_pair(pair: list[Tool], app: BenchApp, base: Path, seconds: float, rounds: int,
                 path: str) -> dict[str, dict[str, Any]]:
    """Both tools of ``pair`` serving at once, measured in turn, ``rounds`` times each: background
    load that comes and goes on a shared machine then falls on both alike. Medians per figure."""
    client = wrk if shutil.which("wrk") else python_client
    samples: dict[str, dict[str, list[dict[str, float]]]] = {t.name: {} for t in pair}
    with contextlib.ExitStack() as stack:
        served = [stack.enter_context(serving(tool, app, base)) for tool in pair]
        for one in served:
            client(one.port, 16, KEEPALIVE, 1.0, path)  # warm-up: imports, first connections
        for connections in CONNECTIONS:
            for mode in MODES:
                key = f"{connections} {mode}"
                for _ in range(rounds):
                    for one in served:
                        figures = client(one.port, connections, mode, seconds, path)
                        samples[one.tool.name].setdefault(key, []).append(figures)
    return {name: {key: {stat: statistics.median(f[stat] for f in runs) for stat in runs[0]}
                   for key, runs in by_key.items()} for name, by_key in samples.items()}


def collect(apps: list[BenchApp], base: Path, quick: bool = False) -> dict[str, Any]:
    seconds, rounds = (2.0, 1) if quick else (3.0, 3)
    data: dict[str, Any] = {}
    for app in apps:
        data[app.name] = {}
        for _, *pair in PAIRS:
            missing = [why for tool in pair if (why := tool.missing())]
            if missing:
                data[app.name].update({tool.name: {"error": missing[0]} for tool in pair})
                continue
            try:
                data[app.name].update(measure_pair(pair, app, base, seconds, rounds, "/"))
            except ToolFailed as exc:
                data[app.name].update({tool.name: {"error": str(exc)} for tool in pair})
        data[app.name]["instructions"] = count_instructions(app, base)
    data["client"] = "wrk" if shutil.which("wrk") else "python"
    return data


def count_instructions(app: BenchApp, base: Path) -> dict[str, Any]:
    """Instructions per request of plain uvicorn and of our worker, per stack (or why not)."""
    why = instructions.missing()
    if why:
        return {"error": why}
    counted: dict[str, Any] = {}
    for label, stack in STACKS.items():
        if stack[0] == "uvloop" and (why := UVICORN_FAST.missing()):
            counted[label] = {"error": why}
            continue
        for mode in MODES:
            key = f"{label}, {mode}"
            try:
                counted[key] = {tool: instructions.count(tool, app, stack, base, fresh=mode == FRESH)
                                for tool in ("uvicorn", "ours")}
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                counted[key] = {"error": str(exc)}
    return counted


def render(data: dict[str, Any], quick: bool = False) -> Section:
    seconds, rounds = (2.0, 1) if quick else (3.0, 3)
    client = ("wrk (2 threads)" if data.get("client", "wrk") == "wrk"
              else "a Python keep-alive client (wrk is not installed)")
    section = Section("serving", "4. Serving overhead",
                      f"`GET /` with {client}, at 16 and 64 connections, kept alive "
                      "or one per request (`Connection: close`). Our worker against plain uvicorn, on asyncio "
                      "and h11 with one worker and with two (`uvicorn --workers 2`, `[app] workers = 2`), and "
                      "with one on uvloop and httptools (`uvicorn --loop uvloop --http httptools`, `[app] loop = "
                      "\"uvloop\"`, `http = \"httptools\"`: what `auto` picks with `uvicorn[standard]` "
                      "installed). Each ratio is ours over uvicorn with the same workers and stack: above 1 is "
                      "more requests per second, below 1 a lower p99. "
                      f"Both tools of a pair serve at once and are measured in turn, {seconds:g} s each, "
                      f"{rounds} rounds; each figure is the median of its rounds. wrk and the server share "
                      "the machine's cores, so on a 2-core machine one tool's own figures move by up to a "
                      "fifth from round to round (12 paired rounds of the uvloop+httptools pair, back to back, "
                      "ranged 0.77-1.23x): a ratio within about 0.1 of 1 is parity here, and the "
                      "instruction counts below are what resolves a few percent.", data=data)
    names = [t.name for _, *pair in PAIRS for t in pair]
    for app, results in data.items():
        if app == "client":
            continue
        section.notes += [f"{tool} ({app}): {r['error'].splitlines()[0]}" for tool, r in results.items()
                          if "error" in r]
        table = Table([f"{app}: connections", *names, *(label for label, *_ in PAIRS)])
        for connections in CONNECTIONS:
            for mode in MODES:
                key = f"{connections} {mode}"
                for label, stat, lower in (("requests/s", "rps", False), ("p99 (ms)", "p99", True)):
                    values = [results.get(n, {}).get(key, {}).get(stat, math.nan) for n in names]
                    values = [math.nan if v is None else v for v in values]
                    cells = [f"{v * 1000:.1f}" if stat == "p99" and not math.isnan(v) else v for v in values]
                    table.add(f"{key}: {label}", *cells,
                              *(ratio(values[i + 1], [values[i]], lower) for i in range(0, len(values), 2)))
        section.tables.append(table)
        section.tables += instructions_table(app, results.get("instructions"), section.notes)
        failed = {n: sum((f.get("failed") or 0) for f in results.get(n, {}).values() if isinstance(f, dict))
                  for n in names}
        if any(failed.values()):
            section.notes.append(f"{app}: failed requests (socket errors, non-2xx): "
                                 + ", ".join(f"{t} {n:.0f}" for t, n in failed.items()))
    return section


def instructions_table(app: str, counted: dict[str, Any] | None, notes: list[str]) -> list[Table]:
    if not counted:
        return []
    if "error" in counted:
        notes.append(f"{app}: instructions per request not counted: {counted['error'].splitlines()[0]}")
        return []
    table = Table([f"{app}: instructions per request (callgrind)", "uvicorn", "our worker", "ratio"],
                  note=f"{instructions.REQUESTS} requests, on one keep-alive connection or each on a fresh "
                       f"one, after {instructions.WARMUP} to warm up, counted by `valgrind --tool=callgrind` "
                       "(bench/instructions.py): the same figure whatever else the machine does. The ratio "
                       "is uvicorn's count over ours: above 1, our worker executes less per request.")
    for label, figures in counted.items():
        if "error" in figures:
            notes.append(f"{app} {label}: instructions not counted: {figures['error'].splitlines()[0]}")
            continue
        uvicorn, ours = figures["uvicorn"], figures["ours"]
        table.add(label, f"{uvicorn:,.0f}", f"{ours:,.0f}", f"{uvicorn / ours:.3f}x")
    return [table]
