"""Scaling at runtime against real processes: SIGTTIN/SIGTTOU and ``python -m supervisor scale N``."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.loadgen import Load
from tests.support import (
    APPS,
    Running,
    base_env,
    free_port,
    gone,
    http_json,
    make_project,
    run_cli,
    supervisor,
    wait_until,
)


def project(tmp_path: Path) -> Path:
    return make_project(tmp_path, toml=f"""
        [supervisor]
        stop_timeout = 10
        [server]
        port = {free_port()}
        [app]
        app = "hangapp:app"
        app_dir = "{APPS}"
        workers = 1
        [database]
        wait = false
        [status]
        port = 0
    """)


def workers(api: str) -> list[dict[str, Any]]:
    return list(http_json(api + "/status")[1]["workers"])


def serving_exactly(run: Running, api: str, count: int) -> list[int]:
    """Wait until exactly ``count`` slots serve and no removed one is left; return their pids."""
    def check() -> list[int] | None:
        slots = workers(api)
        running = len(slots) == count and all(w["state"] == "running" for w in slots)
        return [w["pid"] for w in slots] if running else None
    return wait_until(check, 30, f"exactly {count} serving worker(s)", lambda: run.output)


@pytest.mark.timeout(150)
def test_ttin_ttou_and_scale_follow_the_count_and_removal_drops_no_request(tmp_path: Path) -> None:
    root = project(tmp_path)
    with supervisor(["up", "--no-reload"], root) as run:
        url = run.wait_url()
        api = run.wait_for_output(r"status: API and dashboard on (http://\S+)").group(1)
        # A new connection per request, so that every worker, the removed ones too, gets its share.
        load = Load("127.0.0.1", int(url.rsplit(":", 1)[1]), path="/pid", clients=4, fresh_connections=True).start()
        run.proc.send_signal(signal.SIGTTIN)
        serving_exactly(run, api, 2)  # one at a time: a signal sent while the same one is pending merges with it
        run.proc.send_signal(signal.SIGTTIN)
        three = serving_exactly(run, api, 3)
        assert len(set(three)) == 3 and sorted(three) == run.worker_pids()
        wait_until(lambda: {f'{{"pid": {pid}}}' for pid in three} <= load.latest_bodies(), 20,
                   "every worker answering", lambda: run.output)

        run.proc.send_signal(signal.SIGTTOU)
        two = serving_exactly(run, api, 2)
        assert two == three[:2]  # the last slot was removed
        run.wait_for_output(rf"web\.2: worker pid {three[2]} stopped: drained and exited on SIGTERM \(scale down\)")

        cli = run_cli(["scale", "4", "--project-dir", str(root)], root)
        assert cli.returncode == 0, cli.stderr
        assert re.match(r"scaled to 4 worker\(s\): web\.0 pid \d+, web\.1 pid \d+, web\.2 pid \d+, web\.3 pid \d+",
                        cli.stdout), cli.stdout
        cli = run_cli(["scale", "1", "--project-dir", str(root)], root)
        assert cli.returncode == 0, cli.stderr
        assert serving_exactly(run, api, 1) == [three[0]]
        wait_until(lambda: run.worker_pids() == [three[0]], 20, "the removed workers gone", lambda: run.output)

        run.proc.send_signal(signal.SIGTTOU)  # never below one worker
        run.wait_for_output(r"SIGTTOU: cannot run 0 workers \(1 to 64\); still 1")
        result = load.stop()
        assert result.failures == [], f"{len(result.failures)} failed: {result.failures[:5]}\n{run.output}"
        assert result.ok > 100
        assert run.stop() == 0
        assert all(gone(pid) for pid in three)


@pytest.mark.timeout(30)
def test_scale_refuses_a_count_out_of_range_before_asking(tmp_path: Path) -> None:
    for count in ("0", "65", "two"):
        cli = run_cli(["scale", count, "--project-dir", str(tmp_path)], tmp_path, base_env())
        assert cli.returncode == 2, cli
        assert "expected 1 to 64 workers" in cli.stderr or "is not a whole number of workers" in cli.stderr
