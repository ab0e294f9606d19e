"""Scenario 7, several programs: a three-program project (the web app and two programs with a
health port each) under this supervisor, honcho and supervisord.

The same Procfile serves us and honcho (``web`` runs uvicorn; ``alpha`` and ``beta`` run
bench/progapp.py); supervisord gets the same three commands as ``[program:x]`` sections. Each run
measures: start-up until all three answer; a SIGKILL of ``alpha``'s process (is it restarted, how
fast, and are ``web`` and ``beta`` left alone); and a SIGTERM of the tool until every process of the
project is gone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

from bench.apps import STARLETTE, BenchApp
from bench.clients import answer, wait_for
from bench.session import ToolFailed, free_port, serving
from bench.stats import Section, Table, ratio, summary
from bench.tools import PY, Tool, script, supervisord_path

PROGAPP = Path(__file__).resolve().parent / "progapp.py"
NAMES = ("web", "alpha", "beta")
GIVE_UP = 10.0


def _ports(workdir: Path, web: int) -> dict[str, int]:
    """The three programs' ports, chosen once per run and kept beside the project."""
    path = workdir / "ports.json"
    if not path.exists():
        path.write_text(json.dumps({"web": web, "alpha": free_port(), "beta": free_port()}))
    ports: dict[str, int] = json.loads(path.read_text())
    return ports


def _commands(workdir: Path, web: int) -> dict[str, str]:
    shutil.copy(PROGAPP, workdir / "progapp.py")
    ports = _ports(workdir, web)
    return {"web": f"{PY} -m uvicorn smallapp:app --host 127.0.0.1 --port {web} --log-level warning",
            "alpha": f"{PY} progapp.py alpha {ports['alpha']}", "beta": f"{PY} progapp.py beta {ports['beta']}"}


def _procfile(workdir: Path, web: int) -> None:
    (workdir / "Procfile").write_text("".join(f"{n}: {c}\n" for n, c in _commands(workdir, web).items()))


def _ours(app: BenchApp, port: int, workdir: Path) -> list[str]:
    _procfile(workdir, port)
    (workdir / "supervisor.toml").write_text(textwrap.dedent(f"""\
        [supervisor]
        log_level = "warning"
        [server]
        port = {port}
        strict_port = true
        [status]
        port = 0
        [database]
        wait = false
        """))
    return [PY, "-m", "supervisor", "up"]


def _honcho(app: BenchApp, port: int, workdir: Path) -> list[str]:
    _procfile(workdir, port)
    return [script("honcho") or "honcho", "start", "-f", str(workdir / "Procfile")]


def _supervisord(app: BenchApp, port: int, workdir: Path) -> list[str]:
    sections = "".join(textwrap.dedent(f"""\

        [program:{name}]
        command = {command}
        directory = {workdir}
        autorestart = true
        startsecs = 0
        stopasgroup = true
        killasgroup = true
        """) for name, command in _commands(workdir, port).items())
    (workdir / "supervisord.conf").write_text(textwrap.dedent(f"""\
        [supervisord]
        nodaemon = true
        logfile = {workdir}/supervisord.log
        pidfile = {workdir}/supervisord.pid
        childlogdir = {workdir}
        """) + sections)
    return [supervisord_path() or "supervisord", "-n", "-c", str(workdir / "supervisord.conf")]


TOOLS = [
    Tool("supervisor", _ours),
    Tool("honcho", _honcho,
         lambda: None if script("honcho") else "honcho is not installed (pip install -e '.[bench]')"),
    Tool("supervisord", _supervisord, lambda: None if supervisord_path() else "supervisord is not installed "
         "(see bench/tools.py)", repo_on_path=False),
]


def _pid(port: int) -> int | None:
    got = answer(port)
    return int(got["pid"]) if got is not None and "pid" in got else None


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
    return True


def _all_ready(served: Any, ports: dict[str, int], tool: Tool) -> float:
    """Seconds from launch until all three programs answer."""
    ready = [wait_for(ports[name], lambda a: True, 30) for name in NAMES]
    if any(at is None for at in ready):
        raise ToolFailed(f"{tool.name}: not every program answered:\n{served.run.output()[-1500:]}")
    return max(at for at in ready if at is not None) - float(served.launched_at)


def crash_once(tool: Tool, base: Path) -> dict[str, Any]:
    """Start-up, then ``alpha`` SIGKILLed once it has served a while: recovery, and the others."""
    with serving(tool, STARLETTE, base) as served:
        ports = _ports(served.workdir, served.port)
        startup = _all_ready(served, ports, tool)
        time.sleep(3.0)  # serving past any minimum uptime: a crash, not a failed start
        before = {name: _pid(ports[name]) for name in NAMES}
        killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(before["alpha"], signal.SIGKILL)  # type: ignore[arg-type]
        back = wait_for(ports["alpha"], lambda a: a.get("pid") != before["alpha"], GIVE_UP)
        after = {name: _pid(ports[name]) for name in ("web", "beta")}
    return {"startup": startup, "recovery": back - killed_at if back is not None else math.nan,
            "untouched": all(after[name] == before[name] for name in after)}


def stop_once(tool: Tool, base: Path) -> dict[str, Any]:
    """Start-up, then SIGTERM to the tool: until every process of the project is gone."""
    with serving(tool, STARLETTE, base) as served:
        ports = _ports(served.workdir, served.port)
        startup = _all_ready(served, ports, tool)
        family = [p.pid for p in served.run.family()]
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(served.run.pid, signal.SIGTERM)
        deadline = began + 30
        while not _gone(family) and time.monotonic() < deadline:
            time.sleep(0.005)  # poll interval
        stopped = time.monotonic() - began if _gone(family) else math.nan
    return {"startup": startup, "stop": stopped}


def collect(apps: list[BenchApp], base: Path, quick: bool = False) -> dict[str, Any]:
    runs = 1 if quick else 3
    data: dict[str, Any] = {tool.name: {"runs": []} for tool in TOOLS}
    for _ in range(runs):
        for tool in TOOLS:  # interleaved, as in start-up
            try:
                data[tool.name]["runs"].append({**crash_once(tool, base),
                                                **{f"{k}_2": v for k, v in stop_once(tool, base).items()}})
            except ToolFailed as exc:
                data[tool.name]["error"] = str(exc)
    return data


def render(data: dict[str, Any], quick: bool = False) -> Section:
    runs = 1 if quick else 3
    section = Section("programs", "7. Several programs",
                      f"A project of three programs: `web` (the Starlette app under uvicorn) and `alpha` and `beta` "
                      f"(bench/progapp.py, each answering on a port of its own), from one Procfile for us and "
                      f"honcho and as three `[program:x]` sections for supervisord; {runs} runs each, interleaved. "
                      f"Start-up: from launching the tool until all three answer. Crash: `alpha`'s process "
                      f"SIGKILLed; recovery until a new one answers (none within {GIVE_UP:g} s: `-`), and whether "
                      "`web` and `beta` kept their processes. Stop (in a second launch, all three serving): from "
                      "SIGTERM to the tool until every process of the project is gone. Seconds.", data=data)
    names = list(data)
    table = Table(["three programs", *names, "ratio"])
    for label, key in (("start-up, all answering", "startup"), ("recovery of alpha", "recovery"),
                       ("stop, all gone", "stop")):
        for stat in ("median", "max"):
            values = []
            for name in names:
                runs_ = data[name].get("runs", [])
                figures = [r[k] for r in runs_ for k in (key, f"{key}_2") if r.get(k) is not None]
                got = summary([v for v in figures if not math.isnan(v)])
                # A run that did not recover (or stop) makes the whole figure undefined.
                values.append(got[stat] if len([v for v in figures if not math.isnan(v)]) == len(figures)
                              and figures else math.nan)
            table.add(f"{label} {stat}", *values, ratio(values[0], values[1:]))
    table.add("alpha restarted", *[f"{sum(1 for r in data[n].get('runs', []) if not _nan(r.get('recovery')))}"
                                   f"/{len(data[n].get('runs', []))}" for n in names], "")
    table.add("web and beta left alone", *[f"{sum(1 for r in data[n].get('runs', []) if r.get('untouched'))}"
                                           f"/{len(data[n].get('runs', []))}" for n in names], "")
    section.tables.append(table)
    section.notes += [f"{name}: {data[name]['error'].splitlines()[0]}" for name in names if "error" in data[name]]
    section.notes.append("honcho ends every program, and itself, when one exits: that is its design (foreman's).")
    return section


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
