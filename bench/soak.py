"""Soak: the supervisor under load for a long time, with periodic reloads and crashes, watching its
own memory and descriptors. Not in CI.

    python bench/soak.py --minutes 30 [--app starlette|webapp] [--reload-every 20] [--crash-every 45]

Keep-alive and fresh-connection clients load the app the whole time; every ``--reload-every``
seconds the app's code changes (a rolling reload), and every ``--crash-every`` seconds the worker
answering is SIGKILLed. Every ``--sample-every`` seconds the supervisor process's RSS, USS and
open descriptors are sampled. Prints a table and writes ``soak.png`` (matplotlib, from the
``bench`` extra) and ``soak.json`` to ``--out`` (default ``.bench/soak``). Targets: under 5 MiB of
growth after the warm-up, and no descriptor growth. Exit code 0 when both are met, 1 otherwise.
Loopback only; the supervisor and everything it started are stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.apps import STARLETTE, BenchApp, webapp  # noqa: E402
from bench.clients import FRESH, KEEPALIVE, Load, answer, wait_for  # noqa: E402
from bench.session import serving  # noqa: E402
from bench.tools import SUPERVISOR  # noqa: E402

MiB = 2**20
TARGET_GROWTH_MIB = 5.0


@dataclass
class Sample:
    t: float  # seconds since the start of the soak
    rss: float  # MiB
    uss: float  # MiB
    fds: int
    threads: int
    ok: int  # successful requests so far, all clients
    failed: int


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of seconds or minutes")
    return value


def sample(process: psutil.Process, began: float, loads: list[Load]) -> Sample:
    mem = process.memory_full_info()
    return Sample(round(time.monotonic() - began, 1), mem.rss / MiB, mem.uss / MiB, process.num_fds(),
                  process.num_threads(), sum(load.result.ok for load in loads),
                  sum(load.result.failed for load in loads))


def soak(app: BenchApp, base: Path, seconds: float, reload_every: float, crash_every: float,
         sample_every: float) -> tuple[list[Sample], list[float], list[float], list[str]]:
    """(samples, reload times, crash times, problems): the run itself."""
    samples: list[Sample] = []
    reloads: list[float] = []
    crashes: list[float] = []
    problems: list[str] = []
    with serving(SUPERVISOR, app, base) as served:
        me = psutil.Process(served.run.pid)
        loads = [Load(served.port, KEEPALIVE, 3, max_seconds=seconds + 60).start(),
                 Load(served.port, FRESH, 1, max_seconds=seconds + 60).start()]
        began = time.monotonic()
        next_sample, next_reload, next_crash = began, began + reload_every, began + crash_every
        version = 1
        try:
            while (now := time.monotonic()) < began + seconds:
                if served.run.proc.poll() is not None:
                    problems.append(f"the supervisor exited with {served.run.proc.returncode}")
                    break
                if now >= next_sample:
                    samples.append(sample(me, began, loads))
                    next_sample += sample_every
                if now >= next_reload:
                    version += 1
                    app.set_version(served.workdir, version)
                    reloads.append(now - began)
                    if wait_for(served.port, lambda a, v=str(version): str(a.get("version")) == v, 60) is None:  # type: ignore[misc]
                        problems.append(f"reload to version {version} not served within 60 s")
                    next_reload += reload_every
                if now >= next_crash:
                    got = answer(served.port)
                    if got is not None:
                        old = int(got["pid"])
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(old, signal.SIGKILL)
                        crashes.append(now - began)
                        if wait_for(served.port, lambda a, o=old: int(a.get("pid", o)) != o, 60) is None:  # type: ignore[misc]
                            problems.append(f"no new worker within 60 s of killing {old}")
                    next_crash += crash_every
                time.sleep(0.1)  # the scheduler's tick
            samples.append(sample(me, began, loads))
        finally:
            for load in loads:
                load.stop()
    return samples, reloads, crashes, problems


def table(samples: list[Sample], rows: int = 12) -> str:
    step = max(1, len(samples) // rows)
    chosen = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    lines = [f"{'t (s)':>8}{'RSS MiB':>10}{'USS MiB':>10}{'fds':>6}{'threads':>9}{'ok':>10}{'failed':>8}"]
    lines += [f"{s.t:>8.0f}{s.rss:>10.1f}{s.uss:>10.1f}{s.fds:>6}{s.threads:>9}{s.ok:>10}{s.failed:>8}"
              for s in chosen]
    return "\n".join(lines)


def plot(samples: list[Sample], reloads: list[float], crashes: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    t = [s.t / 60 for s in samples]
    figure, (memory, fds) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5))
    memory.plot(t, [s.rss for s in samples], label="RSS")
    memory.plot(t, [s.uss for s in samples], label="USS")
    memory.set_ylabel("supervisor memory (MiB)")
    fds.plot(t, [s.fds for s in samples], color="tab:green", label="open descriptors")
    fds.set_ylabel("descriptors")
    fds.set_xlabel("minutes")
    for axis in (memory, fds):
        for at in reloads:
            axis.axvline(at / 60, color="tab:blue", alpha=0.15, linewidth=1)
        for at in crashes:
            axis.axvline(at / 60, color="tab:red", alpha=0.3, linewidth=1)
        axis.grid(alpha=0.3)
    memory.legend(loc="lower right")
    memory.set_title("supervisor under load: reloads (blue), worker SIGKILLs (red)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=positive, default=30.0)
    parser.add_argument("--app", choices=("starlette", "webapp"), default="starlette")
    parser.add_argument("--reload-every", type=positive, default=20.0, help="seconds between code changes")
    parser.add_argument("--crash-every", type=positive, default=45.0, help="seconds between worker kills")
    parser.add_argument("--sample-every", type=positive, default=5.0)
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "soak")
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, contextlib.ExitStack() as stack:
        app = STARLETTE if args.app == "starlette" else stack.enter_context(webapp())
        samples, reloads, crashes, problems = soak(app, Path(tmp), seconds, args.reload_every, args.crash_every,
                                                   args.sample_every)
    # The warm-up: the first reload and crash allocate what later ones reuse.
    warm = next((s for s in samples if s.t >= min(seconds / 4, 60.0)), samples[0])
    last = samples[-1]
    growth, fd_growth = last.uss - warm.uss, last.fds - warm.fds
    args.out.mkdir(parents=True, exist_ok=True)
    plot(samples, reloads, crashes, args.out / "soak.png")
    (args.out / "soak.json").write_text(json.dumps({"minutes": args.minutes, "reloads": reloads, "crashes": crashes,
                                                    "problems": problems,
                                                    "samples": [asdict(s) for s in samples]}, indent=1) + "\n")
    print(table(samples))
    print(f"\n{args.minutes:g} min, {len(reloads)} reloads, {len(crashes)} worker kills; "
          f"{last.ok} requests answered, {last.failed} failed")
    print(f"after the warm-up (t={warm.t:.0f} s): USS {growth:+.2f} MiB (target < {TARGET_GROWTH_MIB:g}), "
          f"RSS {last.rss - warm.rss:+.2f} MiB, descriptors {fd_growth:+d} (target 0)")
    for problem in problems:
        print(f"problem: {problem}")
    print(f"wrote {args.out / 'soak.png'} and {args.out / 'soak.json'}")
    met = growth < TARGET_GROWTH_MIB and fd_growth <= 0 and not problems
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
