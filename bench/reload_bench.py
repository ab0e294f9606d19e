"""Reload, start-up and idle benchmark: this supervisor beside uvicorn, same apps, same run.

    python bench/reload_bench.py [--reloads 20] [--load-reloads 10] [--clients 8] [--starts 10]
                                 [--idle 60] [--only reload,webapp,noisy,start,idle,memory] [--repo PATH]

Sections, each a ratio against uvicorn measured in the same run:

* ``reload``: the tiny raw app (tests/apps/versioned.py). Reload latency, from the file write to the
  first response showing the new code (median, p90), then ``--load-reloads`` reloads under
  ``--clients`` keep-alive clients: failed requests and the longest gap without an answer.
  This supervisor (workers forked from its template) against ``uvicorn --reload``.
* ``webapp``: the same with the example Starlette app (SQLAlchemy, asyncpg, Alembic...), editing
  ``webapp/__init__.py``; the heavier the imports, the more a template saves.
* ``noisy``: the tiny app's reload latency (median, p90 over ``--reloads``) in a quiet tree and in a
  noisy one, where a process writes ``logs/app.log`` inside the project 100 times a second (as an
  app's log, a SQLite database or coverage data would): the noisy median against the quiet one, for
  both tools. The target: within 0.05 s of the quiet tree.
* ``start``: cold start, from the command to the first answer, ``--starts`` times each, the tools
  taking turns: ``uvicorn app:app``, ``uvicorn --reload`` and ``python -m supervisor up``.
* ``idle``: the supervisor process's own CPU over ``--idle`` seconds at rest, beside ``uvicorn
  --reload``'s reloader process, both running at once, in a 10-file and a 20,010-file tree.
* ``memory``: the example webapp's first (spawned) worker against a forked one: RSS, PSS, USS; and
  requests per second of a spawned and a forked worker of the tiny app.
* ``large``: a generated FastAPI app of 300 modules (bench/apps.py ``LargeApp``): reload latency of
  a leaf router edit, a model edit and a shared utility edit (``--large-edits`` each), and the
  memory of the worker and of the templates (the project stage holds the project's modules).

``--repo`` runs the tools from another checkout (PYTHONPATH), to compare before and after a change.
Loopback only; every process started is stopped by process group at the end. Bytecode writing is
off for every tool alike (PYTHONDONTWRITEBYTECODE), as two same-size edits within one second
would otherwise be served stale by a tool that does not remove the changed file's .pyc.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.apps import LARGE_DOMAINS, LargeApp  # noqa: E402
from bench.common import APP, get, running  # noqa: E402
from bench.procs import compile_tool  # noqa: E402
from tests.loadgen import Load  # noqa: E402
from tests.support import free_port  # noqa: E402

SECRET = "bench-only-secret-0123456789abcdef0123"
SECTIONS = ("reload", "webapp", "noisy", "start", "idle", "memory")


def uvicorn(app: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning", *extra]


def up(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "supervisor", "up", "--port", str(port), *extra]


def wait_for(port: int, accept: Callable[[str], bool], timeout: float = 30.0) -> float:
    """Poll until an answer satisfies ``accept``; return the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = get(port)
        if body is not None and accept(body):
            return time.monotonic()
        time.sleep(0.002)  # poll interval
    raise RuntimeError("the expected answer never came")


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(round(0.9 * len(ordered))) - 1)]


# ----- the projects -------------------------------------------------------------------------------

class Tiny:
    """The raw app; version N answers "N <pid> -"."""

    app = "app:app"

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "app.py").write_text(APP)
        (root / "supervisor.toml").write_text('[app]\napp = "app:app"\n[database]\nwait = false\n[status]\nport = 0\n')

    def edit(self, version: int) -> None:
        path = self.root / "app.py"
        path.write_text(re.sub(r"VERSION = \d+", f"VERSION = {version}", path.read_text()))

    @staticmethod
    def shows(version: int) -> Callable[[str], bool]:
        return lambda body: body.startswith(f"{version} ")


class Webapp:
    """The example webapp (SQLite in development); version N answers {"version": "0.1.N", ...}."""

    app = "webapp.app:app"

    def __init__(self, root: Path, repo: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-r", str(repo / "webapp"), str(root / "webapp")], check=True)
        (root / "supervisor.toml").write_text('[app]\napp = "webapp.app:app"\n[status]\nport = 0\n')

    def edit(self, version: int) -> None:
        (self.root / "webapp" / "__init__.py").write_text(f'__version__ = "0.1.{version}"\n')

    @staticmethod
    def shows(version: int) -> Callable[[str], bool]:
        return lambda body: json.loads(body).get("version") == f"0.1.{version}"


# ----- reload latency and availability --------------------------------------------------------

def reload_run(project: Tiny | Webapp, argv: list[str], port: int, env: dict[str, str], reloads: int,
               load_reloads: int, clients: int) -> dict[str, float]:
    with running(argv, project.root, project.root.parent / "tool.log", env=env):
        wait_for(port, project.shows(1) if isinstance(project, Tiny) else lambda body: True, 60)
        # uvicorn --reload sets up its watches after the worker answers and misses edits made
        # before that (this supervisor waits for its watches first); give both a moment, and the
        # supervisor the time to build its template.
        time.sleep(2.0)
        version, latencies = 1, []
        for _ in range(reloads):
            version += 1
            start = time.monotonic()
            project.edit(version)
            latencies.append(wait_for(port, project.shows(version)) - start)
            time.sleep(0.3)  # let the previous worker finish draining between measurements
        load = Load("127.0.0.1", port, clients=clients).start()
        time.sleep(0.5)  # warm-up traffic before the first reload
        for _ in range(load_reloads):
            version += 1
            project.edit(version)
            wait_for(port, project.shows(version))
            time.sleep(0.3)
        result = load.stop()
    return {"median": statistics.median(latencies), "p90": p90(latencies), "failed": float(len(result.failures)),
            "ok": float(result.ok), "gap": result.longest_gap}


def reload_section(name: str, app: str, make: Callable[[Path], Tiny | Webapp], env: dict[str, str],
                   args: argparse.Namespace) -> None:
    port = free_port()
    results: dict[str, dict[str, float]] = {}
    for tool, argv in (("supervisor", up(port)), ("uvicorn --reload", uvicorn(app, port, "--reload"))):
        with tempfile.TemporaryDirectory() as tmp:
            project = make(Path(tmp) / "project")
            results[tool] = reload_run(project, argv, port, env, args.reloads, args.load_reloads, args.clients)
    print(f"\n{name}: reload latency over {args.reloads} reloads; availability over {args.load_reloads} "
          f"reloads with {args.clients} clients\n")
    table([("median reload latency (s)", "median"), ("p90 reload latency (s)", "p90"),
           ("failed requests", "failed"), ("successful requests", "ok"), ("longest gap (s)", "gap")],
          results["supervisor"], results["uvicorn --reload"], "uvicorn --reload")


def table(rows: list[tuple[str, str]], ours: dict[str, float], peer: dict[str, float], peer_name: str) -> None:
    print(f"{'':30}{'supervisor':>14}{peer_name:>20}{'ratio':>10}")
    for label, key in rows:
        ratio = f"{ours[key] / peer[key]:.2f}x" if peer[key] else "-"
        print(f"{label:30}{ours[key]:>14.3f}{peer[key]:>20.3f}{ratio:>10}")


# ----- reload latency in a noisy tree ------------------------------------------------------------

# A file inside the project rewritten every 10 ms for as long as the tool runs: an app's log.
NOISE = """
import sys, time
count = 0
while True:
    count += 1
    with open(sys.argv[1], "a") as out:
        out.write(f"request {count}\\n")
    time.sleep(0.01)
"""


def latencies(project: Tiny, argv: list[str], port: int, env: dict[str, str], reloads: int,
              noisy: bool) -> list[float]:
    """Reload latencies of ``reloads`` edits, with the log being written meanwhile when ``noisy``."""
    (project.root / "logs").mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(running(argv, project.root, project.root.parent / "tool.log", env=env))
        if noisy:
            stack.enter_context(running([sys.executable, "-c", NOISE, str(project.root / "logs" / "app.log")],
                                        project.root, env=env))
        wait_for(port, project.shows(1), 60)
        time.sleep(2.0)  # uvicorn sets up its watches after answering; the supervisor builds its template
        found = []
        for version in range(2, reloads + 2):
            start = time.monotonic()
            project.edit(version)
            found.append(wait_for(port, project.shows(version)) - start)
            time.sleep(0.3)  # let the previous worker finish draining between measurements
    return found


def noisy_section(env: dict[str, str], args: argparse.Namespace) -> None:
    port = free_port()
    figures: dict[str, dict[str, float]] = {}
    for tool, argv in (("supervisor", up(port)), ("uvicorn --reload", uvicorn(Tiny.app, port, "--reload"))):
        for noisy in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                found = latencies(Tiny(Path(tmp) / "project"), argv, port, env, args.reloads, noisy)
            key = "noisy" if noisy else "quiet"
            figures.setdefault(tool, {}).update({key: statistics.median(found), f"{key}_p90": p90(found)})
    for values in figures.values():
        values["delta"] = values["noisy"] - values["quiet"]
    print(f"\ntiny app, reload latency in a quiet tree and in one where logs/app.log is written 100 times a "
          f"second, {args.reloads} reloads each (target: the noisy median within 0.05 s of the quiet one)\n")
    table([("median, quiet tree (s)", "quiet"), ("p90, quiet tree (s)", "quiet_p90"),
           ("median, noisy tree (s)", "noisy"), ("p90, noisy tree (s)", "noisy_p90")],
          figures["supervisor"], figures["uvicorn --reload"], "uvicorn --reload")
    ours, peer = figures["supervisor"]["delta"], figures["uvicorn --reload"]["delta"]
    print(f"noisy minus quiet median: supervisor {ours:+.3f} s ({'within' if ours <= 0.05 else 'beyond'} the "
          f"0.05 s target), uvicorn --reload {peer:+.3f} s")


# ----- the large generated app: a project-stage template against uvicorn --reload -------------------

def log_count(log: Path, pattern: str) -> int:
    try:
        return len(re.findall(pattern, log.read_text(errors="replace")))
    except OSError:
        return 0


def large_run(tool: str, argv: list[str], port: int, env: dict[str, str], edits: int) -> dict[str, Any]:
    """Reload latency of each kind of edit (``edits`` each), and the memory of the processes: just
    after the first reload (a leaf router edit: the worker shares the project stage's pages) and at
    the end (the project stage rebuilt since: the worker's pages are its own)."""
    ready = r"template: project stage pid \d+ ready"
    with tempfile.TemporaryDirectory() as tmp:
        app = LargeApp(Path(tmp) / "project")
        log = Path(tmp) / "tool.log"
        with running(argv, app.root, log, env=env) as proc:
            wait_for(port, lambda body: True, 180)
            time.sleep(2.0)  # uvicorn --reload sets its watches after the worker answers
            if tool == "supervisor":
                deadline = time.monotonic() + 180
                while log_count(log, ready) == 0 and time.monotonic() < deadline:
                    time.sleep(0.1)  # poll: the project stage is built in the background
            found: dict[str, Any] = {}
            for which in LargeApp.EDITS:
                latencies, stages = [], []
                for _ in range(edits):
                    built = log_count(log, ready)
                    start = time.monotonic()
                    version = app.edit(which)
                    latencies.append(wait_for(port, shows_version(version), 120) - start)
                    stages.append(status_stage(log) if tool == "supervisor" else "")
                    if "memory" not in found:  # the first reloaded worker, while its template lives
                        time.sleep(0.5)  # its first requests are served (they build FastAPI's route state)
                        found["memory"] = large_memory(tool, proc.pid)
                    # Between edits, not measured: the supervisor rebuilds its project stage for the new
                    # tree (a developer's next save comes seconds later); uvicorn is given a second.
                    deadline = time.monotonic() + (120 if tool == "supervisor" else 1.0)
                    while tool == "supervisor" and log_count(log, ready) <= built and time.monotonic() < deadline:
                        time.sleep(0.1)  # poll
                    time.sleep(1.0)  # the old worker drains
                found[which] = {"median": statistics.median(latencies), "all": latencies, "stages": stages}
            found["memory after"] = large_memory(tool, proc.pid)
    return found


def shows_version(version: str) -> Callable[[str], bool]:
    return lambda body: body.startswith("{") and json.loads(body).get("version") == version


def status_stage(log: Path) -> str:
    match = re.search(r"status: API and dashboard on (http://\S+)", log.read_text(errors="replace"))
    if match is None:
        return "?"
    try:
        with urllib.request.urlopen(match.group(1) + "/status", timeout=5) as answer:
            template = json.load(answer)["reload"]["template"]
    except (OSError, ValueError, KeyError):
        return "?"
    return f"{template['stage']}: {template['why']}"


def large_memory(tool: str, pid: int) -> dict[str, float]:
    """The serving worker's RSS and PSS, and for the supervisor its templates' (MiB): the project
    stage is the bigger of the two."""
    found: dict[str, float] = {}
    templates = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
            info = memory(child.pid)
            leader = os.getsid(child.pid) == child.pid
        except (psutil.Error, OSError):
            continue
        if tool == "supervisor" and "forkserver" in cmdline and not leader:
            templates.append(info)
        elif (tool == "supervisor" and leader) or (tool != "supervisor" and "multiprocessing" in cmdline):
            found["worker rss"], found["worker pss"], found["worker uss"] = info["rss"], info["pss"], info["uss"]
    for name, info in zip(("project template", "third-party template"),
                          sorted(templates, key=lambda t: -t["rss"]), strict=False):
        found[f"{name} rss"], found[f"{name} pss"] = info["rss"], info["pss"]
    return found


def large_section(env: dict[str, str], edits: int) -> None:
    results = {}
    for tool in ("supervisor", "uvicorn --reload"):
        port = free_port()
        argv = up(port) if tool == "supervisor" else uvicorn(LargeApp.app, port, "--reload")
        results[tool] = large_run(tool, argv, port, env, edits)
    ours, peer = results["supervisor"], results["uvicorn --reload"]
    print(f"\nlarge generated app ({LARGE_DOMAINS * 4 + 12} modules, FastAPI, SQLAlchemy, pydantic; 0.3 s lifespan):"
          f" reload latency, median of {edits} edits each (s)\n")
    print(f"{'edit':20}{'supervisor':>12}{'uvicorn --reload':>18}{'ratio':>8}")
    for which in LargeApp.EDITS:
        print(f"{which:20}{ours[which]['median']:>12.3f}{peer[which]['median']:>18.3f}"
              f"{ours[which]['median'] / peer[which]['median']:>7.2f}x")
        for stage in ours[which]["stages"]:
            print(f"    {stage}")
    for moment in ("memory", "memory after"):
        print(f"\n{moment} (MiB): " + ", ".join(f"supervisor {key} {value:.1f}" for key, value in ours[moment].items())
              + "; " + ", ".join(f"uvicorn {key} {value:.1f}" for key, value in peer[moment].items()))


# ----- cold start -------------------------------------------------------------------------------------

def first_answer(argv: list[str], cwd: Path, port: int, env: dict[str, str]) -> float:
    started = time.monotonic()
    with running(argv, cwd, env=env):
        return wait_for(port, lambda body: True, 60) - started


def start_section(env: dict[str, str], starts: int) -> None:
    times: dict[str, list[float]] = {"uvicorn app:app": [], "uvicorn --reload": [], "supervisor up": []}
    with tempfile.TemporaryDirectory() as tmp:
        Tiny(Path(tmp))
        for _ in range(starts):  # the tools take turns, so a busy moment of the machine hits all alike
            for name in times:
                port = free_port()
                argv = {"uvicorn app:app": uvicorn("app:app", port),
                        "uvicorn --reload": uvicorn("app:app", port, "--reload"), "supervisor up": up(port)}[name]
                times[name].append(first_answer(argv, Path(tmp), port, env))
    base = statistics.median(times["uvicorn app:app"])
    print(f"\ncold start, command to first answer, median of {starts} (tiny app)\n")
    print(f"{'':20}{'median (s)':>12}{'p90 (s)':>10}{'vs uvicorn':>12}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:20}{median:>12.3f}{p90(values):>10.3f}{median / base:>11.2f}x")


# ----- idle CPU -----------------------------------------------------------------------------------------

def tree(root: Path, files: int) -> None:
    Tiny(root)
    for index in range(files - 1):
        directory = root / f"pkg{index // 200}"
        directory.mkdir(exist_ok=True)
        (directory / f"mod{index}.py").write_text("X = 1\n")


def cpu_seconds(pid: int) -> float:
    """CPU time of the process's threads so far, in nanosecond resolution (schedstat), where
    cpu_times counts 10 ms clock ticks: too coarse for a process that is meant to do nothing."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def idle_section(env: dict[str, str], seconds: float) -> None:
    print(f"\nidle CPU of the supervising process over {seconds:g} s at rest (CPU-seconds per minute)\n")
    print(f"{'tree':>12}{'supervisor':>14}{'uvicorn --reload':>20}{'ratio':>10}")
    for files in (10, 20_010):
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            tree(Path(a), files)
            tree(Path(b), files)
            ours_port, peer_port = free_port(), free_port()
            with running(up(ours_port), Path(a), env=env) as ours, \
                    running(uvicorn("app:app", peer_port, "--reload"), Path(b), env=env) as peer:
                wait_for(ours_port, lambda body: True, 120)
                wait_for(peer_port, lambda body: True, 120)
                time.sleep(5)  # let start-up (the template build, the first scans) settle
                before = cpu_seconds(ours.pid), cpu_seconds(peer.pid)
                time.sleep(seconds)  # the measurement window
                after = cpu_seconds(ours.pid), cpu_seconds(peer.pid)
        ours_rate, peer_rate = ((x - y) * 60 / seconds for x, y in zip(after, before, strict=True))
        print(f"{files:>12,}{ours_rate:>14.3f}{peer_rate:>20.3f}{ours_rate / peer_rate if peer_rate else 0:>9.2f}x")


# ----- memory and throughput of forked workers -------------------------------------------------------

def serving_pid(port: int) -> int:
    body = get(port) or ""
    return int(json.loads(body)["pid"]) if body.startswith("{") else int(body.split()[1])


def memory(pid: int) -> dict[str, float]:
    info = psutil.Process(pid).memory_full_info()
    return {"rss": info.rss / 2**20, "pss": info.pss / 2**20, "uss": info.uss / 2**20}


def requests_per_second(port: int, seconds: float = 5.0) -> float:
    load = Load("127.0.0.1", port, clients=16, max_seconds=seconds + 30).start()
    started = time.monotonic()
    time.sleep(seconds)  # the measurement window
    result = load.stop()
    if result.failures:
        raise RuntimeError(f"{len(result.failures)} failed requests: {result.failures[:3]}")
    return result.ok / (time.monotonic() - started)


def spawned_then_forked(project: Tiny | Webapp, env: dict[str, str], measure: Callable[[int, int], dict[str, float]],
                        ) -> tuple[dict[str, float], dict[str, float]]:
    port = free_port()
    with running(up(port, "--log-level", "warning"), project.root, env=env) as sup:
        wait_for(port, lambda body: True, 60)
        time.sleep(3)  # the template is built in the background meanwhile
        spawned = measure(port, serving_pid(port))
        project.edit(2)
        wait_for(port, project.shows(2))
        time.sleep(1)  # the spawned worker drains and exits
        pid = serving_pid(port)
        if "forkserver" not in " ".join(psutil.Process(pid).cmdline()):
            raise RuntimeError("the worker after the reload was not forked from a template")
        forked = measure(port, pid)
        template = [c.pid for c in psutil.Process(sup.pid).children() if "forkserver" in " ".join(c.cmdline())
                    and c.pid != pid]
        if template:
            forked["template_rss"] = memory(template[0])["rss"]
    return spawned, forked


def memory_section(env: dict[str, str], repo: Path) -> None:
    def sample(port: int, pid: int) -> dict[str, float]:
        for _ in range(20):
            get(port)
        return memory(pid)

    with tempfile.TemporaryDirectory() as tmp:
        spawned, forked = spawned_then_forked(Webapp(Path(tmp), repo), env, sample)
    print("\nexample webapp worker memory (MiB): spawned (fresh interpreter) against forked from the template\n")
    print(f"{'':10}{'spawned':>10}{'forked':>10}{'ratio':>10}")
    for key in ("rss", "pss", "uss"):
        print(f"{key.upper():10}{spawned[key]:>10.1f}{forked[key]:>10.1f}{forked[key] / spawned[key]:>9.2f}x")
    if "template_rss" in forked:
        print(f"(the template itself: RSS {forked['template_rss']:.1f} MiB, shared with every forked worker)")
    with tempfile.TemporaryDirectory() as tmp:
        slow, fast = spawned_then_forked(Tiny(Path(tmp)), env, lambda port, pid: {"rps": requests_per_second(port)})
    print(f"\ntiny app, 16 keep-alive clients, 5 s: spawned worker {slow['rps']:.0f} requests/s, forked worker "
          f"{fast['rps']:.0f} requests/s ({fast['rps'] / slow['rps']:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--load-reloads", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--large-edits", type=int, default=3, help="edits of each kind in the large section")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose supervisor is measured")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    env = bench_env(repo)
    compile_tool(repo)  # bytecode writing is off for the runs (see above)
    for section in args.only.split(","):
        if section == "reload":
            reload_section("tiny app", Tiny.app, Tiny, env, args)
        elif section == "webapp":
            reload_section("example webapp", Webapp.app, lambda root: Webapp(root, repo), env, args)
        elif section == "noisy":
            noisy_section(env, args)
        elif section == "start":
            start_section(env, args.starts)
        elif section == "idle":
            idle_section(env, args.idle)
        elif section == "memory":
            memory_section(env, repo)
        elif section == "large":
            large_section(env, args.large_edits)
        else:
            parser.error(f"unknown section {section!r}; expected some of {', '.join(SECTIONS)}")
    return 0


def bench_env(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "DATABASE_URL"))}
    env.update(PYTHONPATH=str(repo), PYTHONDONTWRITEBYTECODE="1", BETTER_AUTH_SECRET=SECRET)
    return env


if __name__ == "__main__":
    sys.exit(main())
