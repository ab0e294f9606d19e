"""A Procfile as programs (supervisor/programs/procfile.py), parsed as text: each line a shell
program with a PORT of its own, a uvicorn ``web`` line taken as the app, and a problem naming the
file and line for everything else. End to end: tests/test_programs.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.errors import Problem
from supervisor.programs.procfile import Procfile, parse_procfile, read_procfile, uvicorn_app
from supervisor.programs.spec import ProgramSpec


def test_each_line_is_a_shell_program_with_a_port_of_its_own_named_by_its_line() -> None:
    procfile, problems = parse_procfile("# as for honcho\n\nworker: python -m worker --queue $QUEUE  \n"
                                        "clock:python clock.py\r\n", "/proj/Procfile")
    assert problems == []
    assert procfile.app is None
    assert list(procfile.programs) == ["worker", "clock"]
    worker = procfile.programs["worker"]
    assert worker == ProgramSpec(name="worker", command=("python -m worker --queue $QUEUE",), shell=True, port=0)
    assert worker.line == "/proj/Procfile:3"  # the file's own line numbers, comments and blanks counted
    assert procfile.programs["clock"].command == ("python clock.py",) and procfile.programs["clock"].line.endswith(":4")


@pytest.mark.parametrize(("command", "app"), [
    ("uvicorn app:app --port $PORT", "app:app"),
    ("/venv/bin/uvicorn pkg.main:application --host 0.0.0.0 --port $PORT", "pkg.main:application"),
    ("python -m uvicorn --factory pkg.main:create_app", "pkg.main:create_app"),
    ("DEBUG=1 uvicorn app:app", "app:app"),  # an assignment first is still uvicorn
    ("gunicorn -k uvicorn.workers.UvicornWorker app:app", None),  # gunicorn serves it, not uvicorn
    ("python manage.py runserver", None),
    ("uvicorn --reload", None),  # no module:attribute to serve
    ("uvicorn 'app:app", None),  # unbalanced quote: not a command shlex can read
    ("npm run dev -- uvicorn app:app", None),  # uvicorn only as an argument, past the first words
])
def test_the_app_of_a_uvicorn_command_is_its_module_and_attribute(command: str, app: str | None) -> None:
    assert uvicorn_app(command) == app


def test_a_uvicorn_web_line_is_the_app_and_not_a_program() -> None:
    procfile, problems = parse_procfile("web: uvicorn pkg.main:app --port $PORT\nworker: python w.py\n")
    assert problems == [] and procfile.app == "pkg.main:app" and list(procfile.programs) == ["worker"]


def test_a_web_line_that_does_not_run_uvicorn_is_refused_with_a_hint() -> None:
    procfile, problems = parse_procfile("web: gunicorn app:app\n")
    assert procfile == Procfile({}, None)
    assert [p.where for p in problems] == ["Procfile:1"]
    assert "web does not run uvicorn" in problems[0].message and '[app] app = "module:attribute"' in problems[0].message


@pytest.mark.parametrize("line", ["bad line", "worker python w.py", "my.worker: python w.py", "web:", "worker:   "])
def test_a_line_that_is_not_name_colon_command_is_a_problem_naming_its_line(line: str) -> None:
    procfile, problems = parse_procfile(f"ok: true\n{line}\n", "Procfile")
    assert list(procfile.programs) == ["ok"]
    assert problems == [Problem("Procfile:2", "is not a process line; expected 'name: command', e.g. "
                                              "'worker: python -m worker'")]


def test_a_name_given_twice_is_a_problem_and_the_first_definition_stands() -> None:
    procfile, problems = parse_procfile("worker: one\nweb: uvicorn a:app\nworker: two\nweb: uvicorn b:app\n")
    assert procfile.programs["worker"].command == ("one",) and procfile.app == "a:app"
    assert problems == [Problem("Procfile:3", "defines 'worker' again; expected each name once"),
                        Problem("Procfile:4", "defines 'web' again; expected each name once")]


def test_every_bad_line_is_reported_at_once() -> None:
    _, problems = parse_procfile("web: flask run\nnonsense\nworker: ok\nworker: again\n")
    assert [p.where for p in problems] == ["Procfile:1", "Procfile:2", "Procfile:4"]


def test_a_project_without_a_procfile_has_none(tmp_path: Path) -> None:
    assert read_procfile(tmp_path) is None
    (tmp_path / "file").write_text("")
    assert read_procfile(tmp_path / "file") is None  # the project path is not even a directory


def test_a_procfile_is_read_from_the_project_and_its_problems_name_its_path(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("worker: python w.py\nwhat\n", encoding="utf-8")
    found = read_procfile(tmp_path)
    assert found is not None
    procfile, problems = found
    assert list(procfile.programs) == ["worker"] and procfile.programs["worker"].line == f"{tmp_path}/Procfile:1"
    assert [p.where for p in problems] == [f"{tmp_path}/Procfile:2"]


@pytest.mark.parametrize("make", [
    lambda path: path.write_bytes(b"worker: caf\xe9\n"),  # Latin-1, not UTF-8
    lambda path: path.mkdir(),
])
def test_a_procfile_that_cannot_be_read_is_one_problem_that_says_why(tmp_path: Path,
                                                                     make: Callable[[Path], object]) -> None:
    path = tmp_path / "Procfile"
    make(path)
    found = read_procfile(tmp_path)
    assert found is not None
    procfile, problems = found
    assert procfile == Procfile({}, None)
    assert len(problems) == 1 and problems[0].where == str(path) and problems[0].message.startswith("cannot be read: ")
