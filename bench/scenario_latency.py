"""Scenario 1, reload latency: from the file write to the first response showing the new code.

Two clients poll at once during each edit: one on a kept-alive connection (reused across every
edit, as a browser tab would) and one opening a fresh connection per request. An edit a tool
misses (no new code within the deadline) counts as missed, not as a time.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

from bench.apps import BenchApp
from bench.clients import FRESH, KEEPALIVE, MODES, Client
from bench.session import ToolFailed, serving
from bench.stats import Section, Table, ratio, summary
from bench.tools import RELOADERS, Tool

SETTLE = 1.5  # uvicorn --reload and hupper set up their watches after the app answers
DEADLINE = 30.0


def first_with(client: Client, version: str, deadline: float) -> float | None:
    """The monotonic time ``client`` first got ``version`` from ``GET /``, or None at the deadline."""
    import json

    while time.monotonic() < deadline:
        got = client.get("/")
        if got is not None and got[0] == 200:
            try:
                if str(json.loads(got[1]).get("version")) == version:
                    return time.monotonic()
            except ValueError:
                pass
        time.sleep(0.002)  # poll interval
    return None


def watch_both(clients: dict[str, Client], version: str, deadline: float) -> dict[str, float | None]:
    """Each client polling for ``version`` at the same time, in threads of their own."""
    seen: dict[str, float | None] = {}

    def poll(mode: str) -> None:
        seen[mode] = first_with(clients[mode], version, deadline)
    threads = [threading.Thread(target=poll, args=(mode,)) for mode in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def measure(tool: Tool, app: BenchApp, base: Path, edits: int) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    missed = 0
    with serving(tool, app, base) as served:
        time.sleep(SETTLE)  # see SETTLE
        clients = {mode: Client(served.port, mode) for mode in MODES}
        for n in range(2, edits + 2):
            written = time.monotonic()
            app.set_version(served.workdir, n)
            seen = watch_both(clients, str(n), written + DEADLINE)
            if any(seen[mode] is None for mode in MODES):
                missed += 1
            for mode in MODES:
                if (at := seen[mode]) is not None:
                    latencies[mode].append(at - written)
            time.sleep(0.5)  # the previous worker drains; edits are not coalesced
        for client in clients.values():
            client.close()
    return {"latency": {mode: summary(values) for mode, values in latencies.items()}, "missed": missed,
            "edits": edits}


def collect(apps: list[BenchApp], base: Path, quick: bool = False) -> dict[str, Any]:
    edits = 5 if quick else 20
    data: dict[str, Any] = {}
    for app in apps:
        data[app.name] = {}
        for tool in RELOADERS:
            try:
                data[app.name][tool.name] = measure(tool, app, base, edits)
            except ToolFailed as exc:
                data[app.name][tool.name] = {"error": str(exc)}
    return data


def render(data: dict[str, Any], quick: bool = False) -> Section:
    edits = 5 if quick else 20
    section = Section("reload_latency", "1. Reload latency",
                      f"{edits} edits per tool and app: from the file write to the first `GET /` answered by "
                      "the new code, polled every 2 ms on a kept-alive connection and on fresh connections at "
                      "once. Seconds; the ratio is ours over the best peer (below 1: faster).", data=data)
    for app, results in data.items():
        section.notes += [f"{tool} ({app}): {r['error'].splitlines()[0]}" for tool, r in results.items()
                          if "error" in r]
        table = Table([f"{app}: latency (s)", *results, "ratio"])
        for mode in (KEEPALIVE, FRESH):
            for stat in ("median", "p90", "max"):
                values = [results[t].get("latency", {}).get(mode, {}).get(stat, math.nan) for t in results]
                values = [math.nan if v is None else v for v in values]
                table.add(f"{mode} {stat}", *values, ratio(values[0], values[1:]))
        table.add("edits missed", *[str(results[t].get("missed", "-")) for t in results], "")
        section.tables.append(table)
    section.notes.append("hupper reloads at most once per `--reload-interval` (1 s by default), which sets its "
                         "latency; uvicorn --reload and watchfiles restart the whole process, we start a new worker "
                         "beside the old one and switch once it serves.")
    return section
