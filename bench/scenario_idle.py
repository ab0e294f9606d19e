"""Scenario 5, idle cost: CPU seconds per minute and memory of a tool doing nothing, with 10 files
and with 20,000 files in the watched tree.

The tool's own process (our supervisor; the reloader process of the peers) is measured apart from
its whole process tree (with the app's workers). Memory: RSS, USS (what only this process holds)
and PSS (shared pages divided among their users, so a tree's PSS adds up).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import psutil

from bench.apps import BenchApp
from bench.session import ToolFailed, serving
from bench.stats import Section, Table, ratio
from bench.tools import RELOADERS, Tool

TREES = (10, 20_000)
SETTLE = 3.0
MiB = 2**20


def filler(count: int) -> Any:
    """``prepare`` for :func:`serving`: ``count`` small Python files under ``lib/`` (the app is one more)."""
    def prepare(workdir: Path) -> None:
        for i in range(count):
            folder = workdir / "lib" / f"d{i // 500:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"m{i:05d}.py").write_text(f"VALUE = {i}\n")
    return prepare


def cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
        return float(times.user + times.system)
    except psutil.NoSuchProcess:
        return 0.0


def memory(process: psutil.Process) -> dict[str, float]:
    try:
        info = process.memory_full_info()
        return {"rss": info.rss / MiB, "uss": info.uss / MiB, "pss": info.pss / MiB}
    except psutil.NoSuchProcess:
        return {"rss": 0.0, "uss": 0.0, "pss": 0.0}


def measure(tool: Tool, app: BenchApp, base: Path, files: int, window: float) -> dict[str, Any]:
    with serving(tool, app, base, prepare=filler(max(0, files - 1))) as served:
        time.sleep(SETTLE)  # start-up work (imports, watches) is not idle cost
        family = served.run.family()
        top = family[0]
        before = {p.pid: cpu(p) for p in family}
        time.sleep(window)  # the idle window being measured
        family = served.run.family()
        per_minute = 60.0 / window
        own = (cpu(top) - before.get(top.pid, 0.0)) * per_minute
        tree = sum(cpu(p) - before.get(p.pid, 0.0) for p in family) * per_minute
        mem = memory(top)
        tree_pss = sum(memory(p)["pss"] for p in family)
        return {"cpu_own": own, "cpu_tree": tree, **{f"{k}_own": v for k, v in mem.items()},
                "pss_tree": tree_pss, "processes": len(family)}


def collect(apps: list[BenchApp], base: Path, quick: bool = False) -> dict[str, Any]:
    window = 5.0 if quick else 20.0
    data: dict[str, Any] = {}
    for app in apps:
        data[app.name] = {}
        for files in TREES:
            for tool in RELOADERS:
                try:
                    data[app.name][f"{tool.name} / {files}"] = measure(tool, app, base, files, window)
                except ToolFailed as exc:
                    data[app.name][f"{tool.name} / {files}"] = {"error": str(exc)}
    return data


def render(data: dict[str, Any], quick: bool = False) -> Section:
    window = 5.0 if quick else 20.0
    section = Section("idle", "5. Idle cost",
                      f"Each tool serving and idle, measured over {window:g} s after {SETTLE:g} s of settling, "
                      "scaled to CPU seconds per minute. \"own\" is the tool's top process (our supervisor; "
                      "the peers' reloader), \"tree\" adds everything under it (the app's worker). Memory in "
                      "MiB. The watched tree holds the app and small Python files under `lib/`.", data=data)
    names = [t.name for t in RELOADERS]
    for app, results in data.items():
        section.notes += [f"{key} files ({app}): {r['error'].splitlines()[0]}" for key, r in results.items()
                          if "error" in r]
        for files in TREES:
            table = Table([f"{app}, {files:,} files", *names, "ratio"])
            for label, stat in (("CPU s/min, own", "cpu_own"), ("CPU s/min, tree", "cpu_tree"),
                                ("RSS own (MiB)", "rss_own"), ("USS own (MiB)", "uss_own"),
                                ("PSS own (MiB)", "pss_own"), ("PSS tree (MiB)", "pss_tree")):
                values = [results.get(f"{n} / {files}", {}).get(stat, math.nan) for n in names]
                table.add(label, *values, ratio(values[0], values[1:]))
            section.tables.append(table)
    section.notes.append("CPU times come in ticks of 0.01 s, so a figure of 0 means less than 0.03 s per minute. "
                         "hupper watches only the modules its app imported, so the size of the tree does not "
                         "reach it; the others watch the whole tree.")
    return section
