"""``python -m supervisor init``: the guesses as pure units, the file as text, and the real command
on a project with ``.env.example`` and a ``Procfile`` (whose result ``check`` then accepts)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from supervisor.config.discover import AppTarget
from supervisor.config.dotenv import parse_dotenv
from supervisor.config.scaffold import fit_environment, guess_env, guess_type, render
from supervisor.programs.spec import ProgramSpec
from tests.support import base_env, free_port, http_get, run_cli, supervisor

MAIN = """\
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request):
    return PlainTextResponse("hello from init")


app = Starlette(routes=[Route("/", hello)])
"""
SECRET = "s3cr3t-value-from-the-example-9f1e"
EXAMPLE = f"""\
# Copy to .env and fill in.
DATABASE_URL=postgresql://app:pw-in-example@localhost:5432/app
REDIS_URL=redis://localhost:6379/0
SECRET_KEY={SECRET}
DEBUG=1
WORKER_CONCURRENCY=4
API_PORT=8001
GREETING=hello there
"""


@pytest.mark.parametrize("name, value, expected", [
    ("DATABASE_URL", "postgresql+asyncpg://u@h/db", ("url", ("postgresql+asyncpg",))),
    ("SESSION_TOKEN", "8000", ("secret", ())),  # by name, as the secret rule goes, whatever the value
    ("DEBUG", "0", ("boolean", ())),
    ("FEATURE", "yes", ("boolean", ())),
    ("RETRIES", "0", ("integer", ())),
    ("ADMIN_PORT", "8080", ("port", ())),
    ("ADMIN_PORT", "70000", ("integer", ())),
    ("TITLE", "My app", ("string", ())),
    ("WEIRD", "http://[::1", ("string", ())),
])
def test_types_are_guessed_from_name_and_value(name: str, value: str, expected: tuple[str, tuple[str, ...]]) -> None:
    assert guess_type(name, value) == expected


def test_guesses_require_what_dotenv_sets_and_fall_back_to_string_when_values_disagree() -> None:
    example = parse_dotenv("COUNT=4\nURL=redis://h/0\nPORT=8000\nNAME=x\n", ".env.example")
    actual = parse_dotenv("COUNT=many\nURL=rediss://h/0\nEXTRA=1\n", ".env")
    guesses = {g.name: g for g in guess_env(example, actual)}
    assert "PORT" not in guesses  # the supervisor's own, checked anyway
    assert guesses["COUNT"].type == "string" and guesses["COUNT"].required
    assert (guesses["URL"].type, guesses["URL"].schemes) == ("url", ("redis", "rediss"))
    assert guesses["NAME"].required is False and guesses["NAME"].seen == ".env.example:4"
    assert guesses["EXTRA"].seen == ".env:3" and guesses["EXTRA"].required
    # A value the environment holds that does not fit the guess makes it a string.
    fitted = {g.name: g for g in fit_environment(list(guesses.values()), {"EXTRA": "lots", "URL": "redis://h/0"})}
    assert fitted["EXTRA"].type == "string" and fitted["URL"].type == "url"


def test_the_rendered_file_is_valid_commented_toml_without_values() -> None:
    example = parse_dotenv(EXAMPLE, ".env.example")
    text = render(AppTarget("shop.main:create_app", True, "src", "src/shop/main.py"), "found in src/shop/main.py",
                  guess_env(example, parse_dotenv("", ".env")),
                  [ProgramSpec("worker", ("celery -A shop worker",), shell=True, port=0, line="Procfile:2")], [])
    data = tomllib.loads(text)
    assert data["app"] == {"app": "shop.main:create_app", "factory": True, "app_dir": "src"}
    assert data["env"]["SECRET_KEY"] == {"type": "secret", "required": False}
    assert data["env"]["DATABASE_URL"]["schemes"] == ["postgresql"]
    assert data["programs"]["worker"] == {"command": "celery -A shop worker", "shell": True, "port": "auto"}
    assert "# .env.example:4" in text and "# Procfile:2" in text
    for value in (SECRET, "pw-in-example", "localhost", "hello there", "8001"):
        assert value not in text


@pytest.mark.timeout(120)
def test_init_on_a_project_with_env_example_and_procfile_writes_a_file_check_accepts(tmp_path: Path) -> None:
    root = tmp_path
    (root / "main.py").write_text(MAIN)
    (root / ".env.example").write_text(EXAMPLE)
    (root / ".env").write_text(f"SECRET_KEY={SECRET}\nDEBUG=0\nWORKER_CONCURRENCY=lots\n")
    (root / "Procfile").write_text("web: uvicorn main:app --port $PORT\n"
                                   "clock: echo \"clock: ticking on $PORT\"; exec sleep 600\n")
    env = base_env()
    made = run_cli(["init", "--project-dir", str(root)], tmp_path, env)
    assert made.returncode == 0, made.stderr
    assert re.search(r"wrote .*supervisor\.toml: app main:app", made.stdout), made.stdout
    text = (root / "supervisor.toml").read_text()
    assert SECRET not in text and "pw-in-example" not in text and "hello there" not in text
    data = tomllib.loads(text)
    assert data["app"]["app"] == "main:app" and set(data["programs"]) == {"clock"}
    assert data["env"]["SECRET_KEY"]["type"] == "secret" and data["env"]["DEBUG"]["type"] == "boolean"
    assert data["env"]["WORKER_CONCURRENCY"]["type"] == "string"  # .env's value is not an integer
    checked = run_cli(["check", "--project-dir", str(root)], tmp_path, env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert SECRET not in checked.stdout + checked.stderr
    # And up runs what it describes: the app and the Procfile's other line, now a [programs] table.
    with supervisor(["up", "--no-reload", "--port", str(free_port())], root, env) as run:
        url = run.wait_url()
        assert http_get(url + "/")[2] == b"hello from init"
        run.wait_for_output(r"clock\.0\s+\d+ \| clock: ticking on \d+")
        assert SECRET not in run.output
        assert run.stop() == 0
    # Never over an existing file.
    again = run_cli(["init", "--project-dir", str(root)], tmp_path, env)
    assert again.returncode == 2 and "supervisor.toml exists" in again.stderr, again.stderr
    assert (root / "supervisor.toml").read_text() == text


@pytest.mark.timeout(60)
def test_init_with_nothing_to_serve_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    result = run_cli(["init", "--project-dir", str(tmp_path)], tmp_path)
    assert result.returncode == 2 and "none found; tried main.py" in result.stderr, result.stderr
    assert not (tmp_path / "supervisor.toml").exists()
