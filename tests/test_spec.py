"""``[programs.NAME]`` tables read into :class:`ProgramSpec` (supervisor/programs/spec.py): values
normalised, every problem in a table reported at once naming its key, value and expected form,
and the dependencies between programs checked (unknown names, cycles, waiting for a program to
complete that never does). Through the whole configuration file: tests/test_programs.py."""

from __future__ import annotations

import math
from typing import Any

import pytest

from supervisor.errors import Problem
from supervisor.programs.spec import Probe, ProgramSpec, check_dependencies, find_cycle, parse_program


def where(name: str) -> Any:
    return lambda key: f"supervisor.toml [programs.{name}]" + (f" {key}" if key else "")


def parse(data: Any, name: str = "worker") -> tuple[ProgramSpec | None, list[str]]:
    problems: list[Problem] = []
    spec = parse_program(name, data, where(name), problems)
    return spec, [str(p) for p in problems]


def ok(data: Any) -> ProgramSpec:
    """The spec of a table that must be valid."""
    spec, problems = parse(data)
    assert problems == [] and spec is not None
    return spec


def test_a_command_line_is_split_like_a_shell_would_and_defaults_fill_the_rest() -> None:
    spec, problems = parse({"command": "python -m worker --queue 'high priority'"})
    assert problems == []
    assert spec == ProgramSpec(name="worker", command=("python", "-m", "worker", "--queue", "high priority"))
    assert (spec.restart, spec.instances, spec.stop_signal, spec.port, spec.once) == ("always", 1, "SIGTERM", None,
                                                                                      False)
    assert spec.line == "supervisor.toml [programs.worker]"


def test_with_shell_the_command_stays_one_line_and_a_list_is_quoted_into_one() -> None:
    assert ok({"command": "echo $HOME && sleep 1", "shell": True}).command == ("echo $HOME && sleep 1",)
    assert ok({"command": ["echo", "a b", "$HOME"], "shell": True}).command == ("echo 'a b' '$HOME'",)
    assert ok({"command": ["echo", "a b"]}).command == ("echo", "a b")


@pytest.mark.parametrize(("command", "why"), [
    ("", "is not a command"),
    ("   ", "is not a command"),
    ([], "is not a command"),
    (["", "x"], "is not a command"),
    (["python", 3], "is not a command"),
    ("python\x00 -c 1", "is not a command"),
    ("python -c 'unclosed", "is not a valid command line (No closing quotation)"),
])
def test_a_command_that_cannot_be_run_is_refused_with_the_expected_form(command: Any, why: str) -> None:
    spec, problems = parse({"command": command})
    assert spec is None and len(problems) == 1
    assert problems[0].startswith(f"supervisor.toml [programs.worker] command: {command!r} {why}")
    assert 'expected a command line such as "python -m worker --queue default" or a list of strings' in problems[0]


def test_a_one_shot_job_is_not_restarted_unless_it_says_so() -> None:
    assert ok({"command": "migrate", "once": True}).restart == "never"
    assert ok({"command": "migrate", "once": True, "restart": "on-failure"}).restart == "on-failure"


def test_every_problem_in_a_table_is_reported_at_once_and_the_table_is_unusable() -> None:
    spec, problems = parse({"comand": "x", "instances": True, "stop_timeout": math.inf, "restart": "sometimes",
                            "watch": "src", "shell": "yes"})
    assert spec is None
    assert problems == [  # each once: a bad shell flag was reported twice
        "supervisor.toml [programs.worker] comand: unknown key 'comand'; expected one of command, cwd, depends_on, "
        "env, env_file, instances, live, once, port, ready, reload, restart, shell, stop_signal, stop_timeout, "
        "success_exit_codes, watch; did you mean 'command'?",
        "supervisor.toml [programs.worker] shell: 'yes' is not true or false",
        "supervisor.toml [programs.worker]: has no command; expected command = \"...\" (a command line or a list "
        "of strings)",
        "supervisor.toml [programs.worker] watch: 'src' is not a list of strings",
        "supervisor.toml [programs.worker] instances: True is not an integer",
        "supervisor.toml [programs.worker] stop_timeout: inf is not a finite number",
        "supervisor.toml [programs.worker] restart: 'sometimes' is not allowed; expected 'always' or 'on-failure' "
        "or 'never'",
    ]


@pytest.mark.parametrize(("data", "problem"), [
    ("python -m worker", "supervisor.toml [programs.worker]: expected a table with at least command = ..."),
    ({"command": "x", "instances": 65}, "instances: 65 is out of range; expected 0 to 64"),
    ({"command": "x", "instances": 1.5}, "instances: 1.5 is not an integer"),
    ({"command": "x", "stop_timeout": 0.01}, "stop_timeout: 0.01 is out of range; expected 0.1 to 3600"),
    ({"command": "x", "stop_signal": "SIGFOO"}, "stop_signal: 'SIGFOO' is not a signal name"),
    ({"command": "x", "stop_signal": 15}, "stop_signal: 15 is not a signal name"),
    ({"command": "x", "success_exit_codes": [0, 256]}, "success_exit_codes: [0, 256] is not a list of exit codes"),
    ({"command": "x", "success_exit_codes": [True]}, "success_exit_codes: [True] is not a list of exit codes"),
    ({"command": "x", "env": {"A": ["list"]}}, "env: expected a table of NAME = \"value\""),
    ({"command": "x", "depends_on": {"migrate": "done"}}, "depends_on: {'migrate': 'done'} is not a table of "
                                                          "program = condition; expected conditions 'started', "
                                                          "'ready', 'completed'"),
    ({"command": "x", "port": 0}, "port: 0 is out of range; expected 1 to 65535"),
    ({"command": "x", "port": "8000"}, "port: '8000' is not an integer"),
    ({"command": "x", "cwd": "a\x00b"}, "cwd: 'a\\x00b' is not a string (without NUL bytes)"),
])
def test_a_bad_value_names_its_key_the_value_and_what_was_expected(data: Any, problem: str) -> None:
    # One problem is enough for the whole file to be refused, whether or not a spec came back.
    _, problems = parse(data)
    assert len(problems) == 1 and problem in problems[0], problems


def test_the_app_s_name_is_not_a_program_name() -> None:
    spec, problems = parse({"command": "uvicorn app:app"}, name="web")
    assert spec is None and problems == ["supervisor.toml [programs.web]: 'web' is the app of [app]; name this "
                                         "program otherwise, or configure the app in [app]"]


def test_values_are_normalised_signal_names_env_text_and_an_automatic_port() -> None:
    spec = ok({"command": "x", "stop_signal": "int", "env": {"DEBUG": True, "N": 3, "RATIO": 0.5, "NAME": "w"},
               "port": "auto", "success_exit_codes": [0, 3], "instances": 0,
               "depends_on": {"migrate": "completed", "cache": "started"}})
    assert spec.stop_signal == "SIGINT" and ok({"command": "x", "stop_signal": "sigquit"}).stop_signal == "SIGQUIT"
    assert spec.env == (("DEBUG", "true"), ("N", "3"), ("RATIO", "0.5"), ("NAME", "w"))  # TOML's spelling of true
    assert spec.port == 0 and spec.success_exit_codes == (0, 3) and spec.instances == 0
    assert spec.depends_on == (("migrate", "completed"), ("cache", "started"))


def test_probes_of_each_kind_with_their_defaults() -> None:
    spec = ok({"command": "x", "ready": {"http": "/health"},
               "live": {"exec": "pg_isready -q", "interval": 5, "timeout": 2, "failures": 2}})
    assert spec.ready == Probe("http", "/health", interval=0.5, timeout=30.0, failures=3)
    assert spec.live == Probe("exec", ("pg_isready", "-q"), interval=5, timeout=2, failures=2)
    assert ok({"command": "x", "ready": {"tcp": 6379}}).ready == Probe("tcp", 6379)
    assert ok({"command": "x", "ready": {"log": r"listening on \d+"}}).ready == Probe("log", r"listening on \d+")


@pytest.mark.parametrize(("probe", "problem"), [
    ("/health", "ready: '/health' is not a table; expected a table with one of http"),
    ({}, "ready: needs exactly one kind of check"),
    ({"http": "/a", "tcp": 80}, "ready: needs exactly one kind of check"),
    ({"http": "/a", "retries": 3}, "ready: unknown key 'retries'"),
    ({"http": "health"}, "ready: 'health' is not a path; expected one starting with '/', e.g. \"/health\""),
    ({"tcp": 0}, "ready: 0 is out of range; expected 1 to 65535"),
    ({"log": "(unclosed"}, "ready: '(unclosed' is not a regular expression"),
    ({"exec": ""}, "command: '' is not a command"),
    ({"http": "/a", "interval": 0}, "ready: 0 is out of range; expected 0.01 to 3600"),
    ({"http": "/a", "failures": 0}, "ready: 0 is out of range; expected 1 to 1000"),
])
def test_a_probe_that_cannot_run_is_refused_with_the_expected_form(probe: Any, problem: str) -> None:
    spec, problems = parse({"command": "x", "ready": probe})
    assert spec is None and len(problems) == 1 and problem in problems[0], problems


def specs(**depends_on: dict[str, str] | tuple[dict[str, str], bool]) -> dict[str, ProgramSpec]:
    """Programs by name from ``name={dep: condition}`` or ``name=({dep: condition}, once)``."""
    out = {}
    for name, given in depends_on.items():
        deps, once = given if isinstance(given, tuple) else (given, False)
        out[name] = ProgramSpec(name=name, command=("x",), once=once, depends_on=tuple(deps.items()))
    return out


def dependency_problems(programs: dict[str, ProgramSpec], app_deps: dict[str, str] | None = None) -> list[str]:
    problems: list[Problem] = []
    check_dependencies(programs, tuple((app_deps or {}).items()),
                       lambda name: "[app] depends_on" if name == "web" else f"[programs.{name}] depends_on",
                       problems)
    return [str(p) for p in problems]


def test_dependencies_on_programs_and_on_the_app_are_accepted() -> None:
    programs = specs(migrate=({}, True), worker={"migrate": "completed", "web": "ready"}, beat={"worker": "started"})
    assert dependency_problems(programs, {"migrate": "completed"}) == []


def test_an_unknown_dependency_is_named_with_the_known_programs_and_a_hint() -> None:
    assert dependency_problems(specs(migrate=({}, True), worker={"migrat": "completed"}), {"wrker": "ready"}) == [
        "[programs.worker] depends_on: depends on 'migrat', which is not a program; expected one of migrate, web, "
        "worker; did you mean 'migrate'?",
        "[app] depends_on: depends on 'wrker', which is not a program; expected one of migrate, web, worker; "
        "did you mean 'worker'?",
    ]


def test_a_dependency_cycle_is_refused_and_shown_as_a_path() -> None:
    problems = dependency_problems(specs(a={"b": "started"}, b={"web": "ready"}), {"a": "started"})
    assert problems == ["[programs.a] depends_on: depends_on makes a cycle: a -> b -> web -> a; expected each "
                        "program to start after the ones it depends on"]


def test_waiting_for_a_long_running_program_to_complete_is_refused() -> None:
    assert dependency_problems(specs(worker={}, mailer={"worker": "completed"})) == [
        "[programs.mailer] depends_on: waits for 'worker' to complete, but 'worker' is not a one-shot job; "
        "expected once = true there, or \"ready\""]


def test_the_app_waiting_for_a_long_running_program_to_complete_is_refused() -> None:
    # It would never serve: the program does not exit, so it never completes.
    programs = specs(worker={}, migrate=({}, True))
    assert dependency_problems(programs, {"worker": "completed", "migrate": "completed"}) == [
        "[app] depends_on: waits for 'worker' to complete, but 'worker' is not a one-shot job; "
        "expected once = true there, or \"ready\""]


def test_waiting_for_the_app_to_complete_is_refused() -> None:
    assert dependency_problems(specs(notify={"web": "completed"}, warm={"web": "ready"})) == [
        "[programs.notify] depends_on: waits for 'web' to complete, but web is the app, which serves until the "
        "supervisor stops; expected \"started\" or \"ready\""]


def test_the_app_waiting_for_itself_is_one_problem_the_cycle() -> None:
    assert dependency_problems({}, {"web": "completed"}) == [
        "[app] depends_on: depends_on makes a cycle: web -> web; expected each program to start after the ones it "
        "depends on"]


def test_find_cycle_returns_only_the_cycle_wherever_it_is_reached_from() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({}) is None
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c", "b"]
    assert find_cycle({"x": ["y"], "y": [], "a": ["x", "b"], "b": ["a"]}) == ["a", "b", "a"]
