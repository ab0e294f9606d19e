"""Scenario 2, availability during reloads: 8 concurrent clients while the code changes 10 times.

Run twice per tool and app: with keep-alive clients, then with clients opening a fresh connection
per request. Reports failed requests (refused, reset, or not 200), the longest time without any
successful response, and the successful requests in the same time.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench.apps import BenchApp
from bench.clients import MODES, Load, wait_for
from bench.session import ToolFailed, serving
from bench.stats import Section, Table, fmt, percentile, ratio
from bench.tools import RELOADERS, Tool

CLIENTS = 8


def measure(tool: Tool, app: BenchApp, base: Path, reloads: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with serving(tool, app, base) as served:
        time.sleep(1.5)  # as in scenario 1: watches set up after the first answer
        version = 1
        for mode in MODES:
            load = Load(served.port, mode, CLIENTS).start()
            time.sleep(0.5)  # warm-up traffic before the first reload
            missed = 0
            started = time.monotonic()
            for _ in range(reloads):
                version += 1
                app.set_version(served.workdir, version)
                expected = str(version)
                if wait_for(served.port, lambda a, v=expected: str(a.get("version")) == v, 30) is None:  # type: ignore[misc]
                    missed += 1
                time.sleep(0.3)  # the old worker drains before the next edit
            elapsed = time.monotonic() - started
            result = load.stop()
            results[mode] = {"failed": result.failed, "ok": result.ok, "longest_gap": result.longest_gap,
                             "p99": percentile(result.latencies, 0.99), "seconds": elapsed,
                             "errors": result.errors, "missed": missed}
    return results


def collect(apps: list[BenchApp], base: Path, quick: bool = False) -> dict[str, Any]:
    reloads = 3 if quick else 10
    data: dict[str, Any] = {}
    for app in apps:
        data[app.name] = {}
        for tool in RELOADERS:
            try:
                data[app.name][tool.name] = measure(tool, app, base, reloads)
            except ToolFailed as exc:
                data[app.name][tool.name] = {"error": str(exc)}
    return data


def _figure(result: dict[str, Any], mode: str, key: str) -> float:
    figures = result.get(mode, {})
    if key == "rate":  # successful requests per second: the windows differ in length between tools
        seconds = figures.get("seconds") or math.nan
        return float(figures.get("ok", math.nan)) / seconds
    value = figures.get(key)
    return math.nan if value is None else float(value)


def render(data: dict[str, Any], quick: bool = False) -> Section:
    reloads = 3 if quick else 10
    section = Section("availability", "2. Availability during reloads",
                      f"{reloads} reloads with {CLIENTS} concurrent clients, once with keep-alive clients and once "
                      "with a fresh connection per request. A failed request is refused, reset or not a 200; "
                      "clients retry at once (1 ms after a refused connection), so the count of failures grows "
                      "with the length of an outage. The longest gap is the longest time without any successful "
                      "response, across all clients; the rate is successful requests per second over the "
                      "reloads (the tools take different times for them).", data=data)
    for app, results in data.items():
        section.notes += [f"{tool} ({app}): {r['error'].splitlines()[0]}" for tool, r in results.items()
                          if "error" in r]
        table = Table([app, *results, "ratio"])
        for mode in MODES:
            for label, key, lower in (("failed requests", "failed", True), ("longest gap (s)", "longest_gap", True),
                                      ("successful requests/s", "rate", False), ("p99 latency (ms)", "p99", True)):
                values = [_figure(results[t], mode, key) for t in results]
                cells = [fmt(v, "ms") if key == "p99" else fmt(v) for v in values]
                table.add(f"{mode}: {label}", *cells, ratio(values[0], values[1:], lower_is_better=lower))
        section.tables.append(table)
    return section
