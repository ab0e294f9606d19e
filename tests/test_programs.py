"""Several programs in one supervisor.toml, with real processes: order, readiness, restarts, stop."""

from __future__ import annotations

import json
import re
import signal
import sys
from pathlib import Path

import pytest

from supervisor.config.toml import parse_config
from supervisor.errors import ConfigError
from tests.loadgen import Load
from tests.support import APPS, Running, app_project, gone, http_json, run_cli, supervisor, wait_until

UP = ["up", "--no-reload"]
PROG = f"{sys.executable} {APPS / 'prog.py'}"


def project(root: Path, programs: str, app_deps: str = "", stop_timeout: float = 5.0,
            status_port: int | None = None) -> Path:
    """An app project (tests/apps/rawapp.py as ``web``) with ``programs`` appended."""
    root = app_project(root, stop_timeout=stop_timeout, status_port=status_port)
    toml = (root / "supervisor.toml").read_text()
    if app_deps:
        toml = toml.replace("[app]\n", f"[app]\ndepends_on = {app_deps}\n", 1)
    (root / "supervisor.toml").write_text(toml + programs)
    return root


def line_index(run: Running, pattern: str) -> int:
    for number, line in enumerate(run.lines):
        if re.search(pattern, line):
            return number
    raise AssertionError(f"no line matches {pattern!r}\n--- output ---\n{run.output}")


@pytest.mark.timeout(90)
def test_migrate_then_web_then_worker_start_in_dependency_order_and_stop_in_reverse(tmp_path: Path) -> None:
    root = project(tmp_path, f"""
[programs.migrate]
command = "{PROG} once migrate"
once = true
[programs.worker]
command = "{PROG} serve worker"
depends_on = {{ web = "ready" }}
""", app_deps='{ migrate = "completed" }', status_port=0)
    with supervisor(UP, root) as run:
        run.wait_url()
        status_url = run.wait_for_output(r"status: API and dashboard on (http://\S+)").group(1)
        run.wait_for_output(r"worker: started pid")
        assert line_index(run, r"migrate: done") < line_index(run, r"web\.0: started worker pid") \
            < line_index(run, r"Serving on") < line_index(run, r"worker: started pid")
        programs = wait_until(lambda: (doc := http_json(status_url + "/status")[1]["programs"])["worker"][0]
                              ["state"] == "running" and doc, 10, "the worker running in /status", lambda: run.output)
        assert programs["migrate"][0]["state"] == "completed"
        assert programs["migrate"][0]["last_exit"]["description"] == "exit code 0 (exited)"
        table = run_cli(["status", "--project-dir", str(root)], root)
        assert re.search(r"^migrate\.0\s+-\s+completed", table.stdout, re.M), table.stdout
        assert re.search(r"^worker\.0\s+\d+\s+running", table.stdout, re.M), table.stdout
        assert run.stop() == 0
    # Reverse order: the worker, which depends on web, stops before web does.
    assert line_index(run, r"worker\.0: process pid \d+ stopped") < line_index(run, r"web\.0: worker pid \d+ stopped")


@pytest.mark.timeout(90)
def test_a_failing_migration_keeps_web_waiting_and_production_exits_1_with_its_stderr(tmp_path: Path) -> None:
    programs = f"""
[programs.migrate]
command = "{PROG} once migrate 3"
once = true
"""
    root = project(tmp_path / "dev", programs, app_deps='{ migrate = "completed" }')
    with supervisor(UP, root) as run:
        run.wait_for_output(r"web: waiting for migrate to complete \(migrate is fatal: exit code 3")
        assert "Serving on" not in run.output
        assert run.stop() == 0
    root = project(tmp_path / "prod", programs, app_deps='{ migrate = "completed" }')
    with supervisor([*UP, "--mode", "production"], root) as run:
        assert run.wait_exit(60) == 1
    assert "migrate: failing on purpose with 3" in run.output[run.output.index("FATAL"):]
    assert re.search(r"program migrate gave up; stopping", run.output)


@pytest.mark.timeout(90)
def test_a_crashing_program_restarts_alone_with_backoff_while_web_keeps_serving(tmp_path: Path) -> None:
    root = project(tmp_path, f"""
[programs.flaky]
command = "{PROG} crash flaky 0.2"
""")
    with supervisor(UP, root) as run:
        url = run.wait_url()
        web = http_json(url + "/pid")[1]["pid"]
        load = Load("127.0.0.1", int(url.rsplit(":", 1)[1]), path="/pid", clients=2).start()
        try:
            run.wait_for_output(r"flaky\.0: process pid \d+ exit code 1 \(crash\) .*restarting in", 30)
            wait_until(lambda: len(re.findall(r"flaky: started pid", run.output)) >= 3 or None, 30,
                       "three starts of the flaky program", lambda: run.output)
        finally:
            result = load.stop()
        assert result.failures == [] and result.ok > 0, result.failures[:5]
        assert {json.loads(body)["pid"] for body in result.bodies} == {web}  # web was never restarted
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_readiness_by_log_line_tcp_http_and_exec_gates_the_dependents(tmp_path: Path) -> None:
    root = project(tmp_path, f"""
[programs.logs]
command = "{PROG} late-log logs 0.5"
ready = {{ log = "ready now", interval = 0.05 }}
[programs.api]
command = "{PROG} http api 0.5"
port = "auto"
ready = {{ http = "/health", interval = 0.05 }}
[programs.check]
command = "{PROG} serve check"
ready = {{ exec = ["{sys.executable}", "-c", "pass"], interval = 0.05 }}
[programs.after]
command = "{PROG} serve after"
depends_on = {{ logs = "ready", api = "ready", check = "ready" }}
""")
    with supervisor(UP, root) as run:
        run.wait_url()
        run.wait_for_output(r"after: started pid", 30)
        assert line_index(run, r"logs: ready now") < line_index(run, r"after: started pid")
        assert line_index(run, r"api: listening on \d+") < line_index(run, r"after: started pid")
        assert line_index(run, r"after: waiting for") < line_index(run, r"after: started pid")
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_readiness_by_tcp_port(tmp_path: Path) -> None:
    port = app_project(tmp_path / "unused").joinpath("supervisor.toml").read_text()
    taken = int(re.search(r"port = (\d+)", port).group(1))  # type: ignore[union-attr]
    root = project(tmp_path / "p", f"""
[programs.api]
command = "{PROG} http api 0.3"
port = {taken}
ready = {{ tcp = {taken}, interval = 0.05 }}
[programs.after]
command = "{PROG} serve after"
depends_on = {{ api = "ready" }}
""")
    with supervisor(UP, root) as run:
        run.wait_for_output(r"after: started pid", 30)
        assert line_index(run, r"api: listening on") < line_index(run, r"after: started pid")
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_a_failing_liveness_probe_restarts_the_program(tmp_path: Path) -> None:
    root = project(tmp_path, f"""
[programs.sick]
command = "{PROG} serve sick"
live = {{ exec = ["{sys.executable}", "-c", "raise SystemExit(1)"], interval = 0.1, failures = 2 }}
""")
    with supervisor(UP, root) as run:
        run.wait_for_output(r"failed its liveness check 2 times in a row; killing it", 30)
        wait_until(lambda: len(re.findall(r"sick: started pid", run.output)) >= 2 or None, 30,
                   "a second start of the sick program", lambda: run.output)
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_a_program_that_ignores_sigterm_is_killed_at_its_stop_timeout(tmp_path: Path) -> None:
    root = project(tmp_path, f"""
[programs.stubborn]
command = "{PROG} stubborn stubborn"
stop_timeout = 0.5
""")
    with supervisor(UP, root) as run:
        pid = int(run.wait_for_output(r"stubborn: started pid (\d+)").group(1))
        assert run.stop() == 0
    assert re.search(rf"stubborn\.0: process pid {pid} stopped: killed by SIGKILL \(shutdown\)", run.output)
    assert gone(pid)


@pytest.mark.timeout(60)
def test_sigkill_of_the_supervisor_leaves_no_program_behind(tmp_path: Path) -> None:
    root = project(tmp_path, f"""
[programs.a]
command = "{PROG} serve a"
instances = 2
[programs.b]
command = "{PROG} stubborn b"
""")
    with supervisor(UP, root) as run:
        run.wait_url()
        wait_until(lambda: len(re.findall(r"(a|b): started pid", run.output)) == 3 or None, 30,
                   "three program instances", lambda: run.output)
        pids = [int(p) for p in re.findall(r"(?:a|b): started pid (\d+)", run.output)]
        run.proc.send_signal(signal.SIGKILL)
        run.wait_exit()
        wait_until(lambda: all(gone(p) for p in pids), 10, "every program gone", lambda: run.output)


def test_a_dependency_cycle_is_a_configuration_error_that_names_it(tmp_path: Path) -> None:
    root = project(tmp_path, f"""
[programs.a]
command = "{PROG} serve a"
depends_on = {{ b = "started" }}
[programs.b]
command = "{PROG} serve b"
depends_on = {{ a = "ready" }}
""")
    result = run_cli(["check", "--project-dir", str(root)], root)
    assert result.returncode == 2, result.stderr
    assert re.search(r"supervisor\.toml:\d+ \[programs\.a\] depends_on: depends_on makes a cycle: a -> b -> a",
                     result.stderr), result.stderr


def test_an_unknown_dependency_and_key_say_did_you_mean() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("""
[programs.migrate]
command = "alembic upgrade head"
once = true
[programs.worker]
comand = "python -m worker"
[programs.mailer]
command = "python -m mailer"
depends_on = { migrat = "completed" }
""")
    text = "\n".join(map(str, info.value.problems))
    assert "[programs.worker] comand: unknown key 'comand'" in text and "did you mean 'command'?" in text
    assert "[programs.mailer] depends_on: depends on 'migrat', which is not a program" in text
    assert "did you mean 'migrate'?" in text
    assert "[programs.worker]: has no command" in text


def test_waiting_for_completion_of_a_program_that_is_not_a_job_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"waits for 'worker' to complete, but 'worker' is not a one-shot job"):
        parse_config('[programs.worker]\ncommand = "w"\n[programs.x]\ncommand = "x"\n'
                     'depends_on = { worker = "completed" }\n')


@pytest.mark.timeout(90)
def test_restart_stop_and_start_one_program_through_the_cli_leave_web_untouched(tmp_path: Path) -> None:
    root = project(tmp_path, f"""
[programs.worker]
command = "{PROG} serve worker"
""", status_port=0)
    with supervisor(UP, root) as run:
        url = run.wait_url()
        web = http_json(url + "/pid")[1]["pid"]
        first = int(run.wait_for_output(r"worker: started pid (\d+)").group(1))
        restarted = run_cli(["restart", "worker", "--project-dir", str(root)], root)
        assert restarted.returncode == 0, restarted.stderr
        second = int(re.search(r"worker\.0 running pid (\d+)", restarted.stdout).group(1))  # type: ignore[union-attr]
        assert second != first and gone(first)
        stopped = run_cli(["stop", "worker", "--project-dir", str(root)], root)
        assert stopped.returncode == 0 and "worker.0 stopped" in stopped.stdout, stopped.stderr
        assert gone(second)
        started = run_cli(["start", "worker", "--project-dir", str(root)], root)
        assert started.returncode == 0 and "worker.0 running" in started.stdout, started.stderr
        unknown = run_cli(["restart", "wrker", "--project-dir", str(root)], root)
        assert unknown.returncode != 0 and "no program 'wrker'" in unknown.stderr
        assert http_json(url + "/pid") == (200, {"pid": web})
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_a_procfile_project_runs_its_entries_without_any_programs_table(tmp_path: Path) -> None:
    root = app_project(tmp_path)
    toml = (root / "supervisor.toml").read_text().replace('app = "rawapp:app"\n', "")
    (root / "supervisor.toml").write_text(toml)
    (root / "Procfile").write_text("# the app and a worker, as for honcho\n"
                                   "web: uvicorn rawapp:app --port $PORT\n"
                                   f"worker: {PROG} serve worker $PORT\n")
    checked = run_cli(["check", "--project-dir", str(root)], root)
    assert checked.returncode == 0, checked.stderr
    assert re.search(r"programs from the Procfile: worker .*web is the app rawapp:app", checked.stdout)
    with supervisor(UP, root) as run:
        url = run.wait_url()
        run.wait_for_output(r"worker\.0\s+\d+ \| worker: started pid")
        assert http_json(url + "/pid")[0] == 200  # the web line's app, on the held socket
        assert run.stop() == 0


def test_a_procfile_web_line_that_does_not_run_uvicorn_is_refused_with_a_hint(tmp_path: Path) -> None:
    root = app_project(tmp_path)
    (root / "Procfile").write_text("web: gunicorn app:app\nbad line\n")
    result = run_cli(["check", "--project-dir", str(root)], root)
    assert result.returncode == 2
    assert re.search(r"Procfile:1: web does not run uvicorn", result.stderr), result.stderr
    assert re.search(r"Procfile:2: is not a process line; expected 'name: command'", result.stderr)


@pytest.mark.timeout(90)
def test_a_change_restarts_the_programs_it_concerns_and_leaves_the_others(tmp_path: Path) -> None:
    root = project(tmp_path, f"""
[programs.job]
command = "{PROG} once job"
once = true
watch = ["jobs"]
[programs.service]
command = "{PROG} serve service"
[programs.steady]
command = "{PROG} serve steady"
reload = false
[programs.frontend]
command = "{PROG} serve frontend"
watch = ["frontend"]
""")
    (root / "jobs").mkdir()
    (root / "frontend").mkdir()
    with supervisor(["up"], root) as run:
        run.wait_url()
        for name in ("job", "service", "steady", "frontend"):
            run.wait_for_output(rf"{name}: started pid")
        run.wait_for_output(r"reload: watching")
        (root / "app_module.py").write_text("VERSION = 2\n")  # a code change outside every watch path
        run.wait_for_output(r"reload: restarting service \(stop, then start\)", 30)
        wait_until(lambda: run.output.count("service: started pid") == 2 or None, 30, "service started again",
                   lambda: run.output)
        (root / "jobs" / "0003_more.py").write_text("# a new migration\n")
        wait_until(lambda: run.output.count("job: done") == 2 or None, 30, "the job run again", lambda: run.output)
        assert run.output.count("steady: started pid") == 1
        assert run.output.count("frontend: started pid") == 1
        assert run.stop() == 0


@pytest.mark.timeout(90)
def test_scale_a_program_up_and_down_through_the_cli(tmp_path: Path) -> None:
    root = project(tmp_path, f"""
[programs.worker]
command = "{PROG} serve worker"
""", status_port=0)
    with supervisor(UP, root) as run:
        run.wait_url()
        run.wait_for_output(r"worker: started pid")
        up = run_cli(["scale", "worker", "3", "--project-dir", str(root)], root)
        assert up.returncode == 0 and "scaled worker to 3 instance(s)" in up.stdout, up.stderr
        pids = [int(p) for p in re.findall(r"worker\.\d pid (\d+)", up.stdout)]
        assert len(set(pids)) == 3
        down = run_cli(["scale", "worker", "1", "--project-dir", str(root)], root)
        assert down.returncode == 0 and "scaled worker to 1 instance(s)" in down.stdout, down.stderr
        wait_until(lambda: all(gone(p) for p in pids[1:]) or None, 20, "the removed instances gone",
                   lambda: run.output)
        assert not gone(pids[0])
        bad = run_cli(["scale", "worker", "many", "--project-dir", str(root)], root)
        assert bad.returncode == 2 and "not a whole number" in bad.stderr
        assert run.stop() == 0


@pytest.mark.timeout(60)
def test_a_procfile_beside_a_programs_table_is_ignored_with_one_warning(tmp_path: Path) -> None:
    """Regression: the Procfile was ignored without a word when [programs] was defined."""
    root = project(tmp_path, f"""
[programs.worker]
command = "{PROG} serve worker"
""")
    (root / "Procfile").write_text(f"clock: {PROG} serve clock\n")
    checked = run_cli(["check", "--project-dir", str(root)], root)
    assert checked.returncode == 0, checked.stderr
    assert re.search(r"warning: .*Procfile is ignored because \[programs\] is defined", checked.stdout)
    with supervisor(UP, root) as run:
        run.wait_for_output(r"worker\.0\s+\d+ \| worker: started pid")
        warnings = [line for line in run.lines if re.search(r"Procfile.* ignored because \[programs\]", line)]
        assert len(warnings) == 1, run.output
        assert "clock" not in run.output
        assert run.stop() == 0
