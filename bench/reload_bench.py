"""Reload benchmark: this supervisor beside ``uvicorn --reload``, same app, same run.

    python bench/reload_bench.py [--reloads 20] [--load-reloads 10] [--clients 8]

Measures, for each tool:
* reload latency: from the file write to the first response showing the new code (median, p90);
* availability during reloads under concurrent clients: failed requests and the longest gap
  without any successful response.
Loopback only; every process it starts is stopped by pid at the end.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import APP, running, wait_version  # noqa: E402
from tests.loadgen import Load  # noqa: E402
from tests.support import free_port  # noqa: E402


@dataclass
class Tool:
    name: str
    argv: list[str]


def tools(port: int) -> list[Tool]:
    return [
        Tool("supervisor", [sys.executable, "-m", "supervisor", "up", "--port", str(port)]),
        Tool("uvicorn --reload", [sys.executable, "-m", "uvicorn", "app:app", "--reload", "--port", str(port),
                                  "--log-level", "warning"]),
    ]


def write_version(app: Path, version: int) -> None:
    app.write_text(re.sub(r"VERSION = \d+", f"VERSION = {version}", app.read_text()))


def run_tool(tool: Tool, workdir: Path, port: int, reloads: int, load_reloads: int, clients: int) -> dict[str, float]:
    app = workdir / "app.py"
    app.write_text(APP)
    (workdir / "supervisor.toml").write_text('[app]\napp = "app:app"\n')
    with running(tool.argv, workdir, workdir.parent / f"bench-{tool.argv[2]}.log"):
        wait_version(port, 1)
        # uvicorn --reload sets up its watches after the worker answers and misses edits made
        # before that (this supervisor waits for its watches first); give both a moment.
        time.sleep(1.0)
        version = 1
        latencies = []
        for _ in range(reloads):
            version += 1
            start = time.monotonic()
            write_version(app, version)
            latencies.append(wait_version(port, version) - start)
            time.sleep(0.3)  # let the previous worker finish draining between measurements
        load = Load("127.0.0.1", port, clients=clients).start()
        time.sleep(0.5)  # warm-up traffic before the first reload
        for _ in range(load_reloads):
            version += 1
            write_version(app, version)
            wait_version(port, version)
            time.sleep(0.3)
        result = load.stop()
        latencies.sort()
        return {
            "median": statistics.median(latencies),
            "p90": latencies[max(0, int(round(0.9 * len(latencies))) - 1)],
            "failed": float(len(result.failures)),
            "ok": float(result.ok),
            "gap": result.longest_gap,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reloads", type=int, default=20)
    parser.add_argument("--load-reloads", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for tool in tools(free_port()):
        port = int(tool.argv[tool.argv.index("--port") + 1])
        with tempfile.TemporaryDirectory() as tmp:
            results[tool.name] = run_tool(tool, Path(tmp), port, args.reloads, args.load_reloads, args.clients)
    ours, peer = results["supervisor"], results["uvicorn --reload"]
    print(f"reload latency over {args.reloads} reloads; availability over {args.load_reloads} reloads "
          f"with {args.clients} clients\n")
    print(f"{'':28}{'supervisor':>14}{'uvicorn --reload':>18}{'ratio':>10}")
    rows = [("median reload latency (s)", "median"), ("p90 reload latency (s)", "p90"),
            ("failed requests", "failed"), ("successful requests", "ok"), ("longest gap (s)", "gap")]
    for label, key in rows:
        ratio = f"{ours[key] / peer[key]:.2f}x" if peer[key] else "-"
        print(f"{label:28}{ours[key]:>14.3f}{peer[key]:>18.3f}{ratio:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
