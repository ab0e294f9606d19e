"""``check`` and ``up`` on bad input: exit 2, every problem named, no traceback, no secret.

Also the command-line entry points: ``python -m supervisor --help`` and the console script.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.support import REPO, base_env, free_port, make_project, run_cli

SECRET = "tok-a91c-this-secret-must-never-appear"
# Every case's .env also holds this secret, so each output is checked for it.
SECRET_LINE = f"SESSION_TOKEN={SECRET}\n"
SCHEMA = """
[database]
wait = false
[status]
enabled = false
[env.DATABASE_URL]
type = "url"
schemes = ["postgresql"]
[env.WORKER_COUNT]
type = "integer"
required = false
[env.BETTER_AUTH_SECRET]
type = "secret"
min_length = 32
default = "development-only-secret-0123456789abcdef"
"""
GOOD_ENV = "DATABASE_URL=postgresql://app@127.0.0.1/app\n"
# The app `check` finds in a valid project (it parses the file, never imports it).
APP_FILE = {"main.py": "app = object()\n"}

# (id, supervisor.toml, .env, process environment, fragments the output must contain)
CASES = [
    ("unknown-key", "[server]\nprot = 8000\n" + SCHEMA, GOOD_ENV, {},
     ["supervisor.toml:2 [server] prot: unknown key 'prot'", "did you mean 'port'?"]),
    ("wrong-type", "[server]\nport = \"eighty\"\n" + SCHEMA, GOOD_ENV, {},
     ["supervisor.toml:2 [server] port: 'eighty' is not an integer"]),
    ("out-of-range", "[app]\nworkers = 0\n" + SCHEMA, GOOD_ENV, {},
     ["supervisor.toml:2 [app] workers: 0 is out of range; expected 1 to 64"]),
    ("bad-choice", "[supervisor]\nlog_level = \"loud\"\n" + SCHEMA, GOOD_ENV, {},
     ["supervisor.toml:2 [supervisor] log_level: 'loud' is not allowed; expected 'debug' or"]),
    ("unknown-section", "[sever]\nport = 1\n" + SCHEMA, GOOD_ENV, {},
     ["supervisor.toml:1 [sever]: unknown section [sever]", "did you mean [server]?"]),
    ("invalid-toml", "[server\n" + SCHEMA, GOOD_ENV, {},
     ["supervisor.toml: not valid TOML", "line 1"]),
    ("bad-env-spec", SCHEMA + "[env.RATE]\ntype = \"float\"\n", GOOD_ENV, {},
     ["[env.RATE]: type 'float' is not known; expected one of string, integer"]),
    ("dotenv-malformed-line", SCHEMA, GOOD_ENV + "this is not an assignment\n", {},
     [".env:3: cannot be parsed; expected NAME=value"]),
    ("dotenv-name-without-value", SCHEMA, GOOD_ENV + "WORKER_COUNT\n", {},
     [".env:3: has no '='; expected NAME=value"]),
    ("required-missing", SCHEMA, "", {},
     ["environment DATABASE_URL: is required but not set; expected a URL with scheme postgresql"]),
    ("dotenv-bad-integer", SCHEMA, GOOD_ENV + "WORKER_COUNT=many\n", {},
     [".env:3 WORKER_COUNT: 'many' is not an integer; expected an integer"]),
    ("dotenv-short-secret", SCHEMA, GOOD_ENV + "BETTER_AUTH_SECRET=tok-a91c-this\n", {},
     [".env:3 BETTER_AUTH_SECRET: is 13 characters long; expected at least 32"]),
    ("dotenv-url-scheme-with-password", SCHEMA, f"DATABASE_URL=mysql://app:{SECRET}@db/app\n", {},
     [".env:2 DATABASE_URL: has scheme 'mysql'; expected one of 'postgresql'"]),
    ("environment-port", SCHEMA, GOOD_ENV, {"PORT": "http"},
     ["environment PORT: 'http' is not an integer; expected a port number (0-65535)"]),
    ("environment-mode", SCHEMA, GOOD_ENV, {"SUPERVISOR_MODE": "staging"},
     ["SUPERVISOR_MODE: 'staging' is not a mode; expected 'development' or 'production'"]),
    # Hardening (issue 14): each of these passed `check`, or crashed `up`, or printed a secret.
    ("dotenv-nul-byte", SCHEMA, GOOD_ENV + "WORKER_COUNT=1\x002\n", {},
     [".env:3: holds a NUL byte"]),
    ("dotenv-bare-secret-line", SCHEMA, GOOD_ENV + SECRET + "\n", {},
     [".env:3: has no '='"]),
    ("dotenv-exponential-interpolation", SCHEMA,
     GOOD_ENV + "".join(f"X{i}=${{X{i - 1}}}${{X{i - 1}}}\n" if i else "X0=0123456789\n" for i in range(64)),
     {}, [".env:16: expands to more than 65536 characters"]),
    ("nan-is-out-of-every-range", "[restart]\nmax_delay = nan\n" + SCHEMA, GOOD_ENV, {},
     ["supervisor.toml:2 [restart] max_delay: nan is not a finite number"]),
    ("hash-in-password-fails-urlsplit", SCHEMA, f"DATABASE_URL=postgresql://app:{SECRET}#x@127.0.0.1/app\n",
     {}, [".env:2 DATABASE_URL: is not a valid URL"]),
    ("hash-in-password-passes-urlsplit", SCHEMA,
     f"DATABASE_URL=postgresql://app:1234#{SECRET}@127.0.0.1/app\n", {},
     [".env:2 DATABASE_URL: postgresql://app:***@127.0.0.1/app cannot be read unambiguously",
      "percent-encode special characters in the password ('#' as %23"]),
]


def cli(args: list[str], root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli([*args, "--project-dir", str(root)], REPO, base_env(**env))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("toml, dotenv, environ, fragments", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_the_problem_without_traceback_or_secret(
        tmp_path: Path, toml: str, dotenv: str, environ: dict[str, str], fragments: list[str]) -> None:
    root = make_project(tmp_path, toml=toml, dotenv=SECRET_LINE + dotenv)
    for command in (["check"], ["up", "--no-reload"]):
        result = cli(command, root, **environ)
        output = result.stdout + result.stderr
        assert result.returncode == 2, (command, output)
        assert "error: 1 problem in configuration and environment:" in output, (command, output)
        for fragment in fragments:
            assert fragment in output, (command, fragment, output)
        assert "Traceback" not in output, output
        assert SECRET not in output and "tok-a91c" not in output, output


QUERY_PASSWORD = "hunter2secret"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["environment", "dotenv"])
def test_a_password_in_the_url_query_string_is_never_printed(tmp_path: Path, source: str) -> None:
    url = f"postgresql://app@127.0.0.1/app?password={QUERY_PASSWORD}"
    root = make_project(tmp_path, toml=SCHEMA,
                        dotenv=f"DATABASE_URL={url}\n" if source == "dotenv" else "")
    environ = {"DATABASE_URL": url} if source == "environment" else {}
    for command in (["check"], ["up", "--no-reload"]):
        result = cli(command, root, **environ)
        output = result.stdout + result.stderr
        assert result.returncode == 2, (command, output)
        assert "query parameter password (value not shown) is not understood" in output, output
        assert QUERY_PASSWORD not in output and "Traceback" not in output, output


@pytest.mark.timeout(30)
def test_problems_are_redacted_with_the_dotenv_and_environment_secrets(tmp_path: Path) -> None:
    # WORKER_COUNT is not secret, so its bad value is quoted; it happens to equal a secret.
    root = make_project(tmp_path, toml=SCHEMA, dotenv=SECRET_LINE + GOOD_ENV + f"WORKER_COUNT={SECRET}\n")
    result = cli(["check"], root)
    assert result.returncode == 2, result.stderr
    assert ".env:3 WORKER_COUNT: '***' is not an integer" in result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.timeout(60)
def test_a_missing_project_or_app_dir_exits_2_without_traceback(tmp_path: Path) -> None:
    missing = run_cli(["up", "--no-reload", "--project-dir", str(tmp_path / "nowhere")], REPO, base_env())
    assert missing.returncode == 2, missing.stderr
    assert "--project-dir: " in missing.stderr and "is not a directory" in missing.stderr
    root = make_project(tmp_path / "p", toml='[app]\napp_dir = "src"\n' + SCHEMA, dotenv=GOOD_ENV)
    for command in (["check"], ["up", "--no-reload"]):
        result = cli(command, root)
        assert result.returncode == 2, result.stderr
        assert "[app] app_dir: 'src' is not a directory" in result.stderr
        assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.timeout(30)
def test_port_0_from_the_environment_is_accepted(tmp_path: Path) -> None:
    root = make_project(tmp_path, toml=SCHEMA, dotenv=GOOD_ENV, files=APP_FILE)
    result = cli(["check"], root, PORT="0")
    assert result.returncode == 0, result.stderr
    assert "port 0" in result.stdout


@pytest.mark.timeout(30)
@pytest.mark.parametrize("option, expected", [
    (["--port", "70000"], "--port: 70000 is out of range; expected 0 to 65535"),
    (["--port", "-1"], "--port: -1 is out of range; expected 0 to 65535"),
    (["--workers", "0"], "--workers: 0 is out of range; expected 1 to 64"),
    (["--workers", "-2"], "--workers: -2 is out of range; expected 1 to 64"),
])
def test_out_of_range_command_line_option_exits_2(tmp_path: Path, option: list[str],
                                                  expected: str) -> None:
    root = make_project(tmp_path, toml=SCHEMA, dotenv=GOOD_ENV)
    result = cli(["up", "--no-reload", *option], root)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(30)
def test_every_problem_is_printed_in_one_run(tmp_path: Path) -> None:
    root = make_project(tmp_path, toml="[server]\nprot = 1\nport = 70000\n[app]\nworkers = 0\n",
                        dotenv="broken line\n")
    result = cli(["check"], root, PORT="http")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert result.stderr.startswith(f"error: {len(lines)} problems in configuration and environment:")
    assert len(lines) == 5, result.stderr
    for fragment in ("[server] prot", "[server] port", "[app] workers", ".env:1", "PORT"):
        assert any(fragment in line for line in lines), (fragment, result.stderr)


@pytest.mark.timeout(30)
def test_check_exits_0_when_valid_and_starts_nothing(tmp_path: Path) -> None:
    port = free_port()
    root = make_project(tmp_path, toml=f"[server]\nport = {port}\n" + SCHEMA,
                        dotenv=SECRET_LINE + GOOD_ENV, files=APP_FILE)
    result = cli(["check"], root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")
    assert f"port {port}" in result.stdout and "3 declared variable(s)" in result.stdout
    assert SECRET not in result.stdout + result.stderr
    assert not (root / ".supervisor").exists()


@pytest.mark.timeout(30)
def test_check_of_the_repository_itself_passes() -> None:
    env = base_env()
    env.pop("PYTHONPATH", None)  # run from the repository root, as the README says
    result = run_cli(["check", "--project-dir", str(REPO)], REPO, env)
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(30)
def test_python_m_supervisor_help_lists_the_commands() -> None:
    result = run_cli(["--help"], REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m supervisor")
    listed = set(re.findall(r"^ {4}([a-z-]+)\s", result.stdout, re.M))  # the subcommand lines
    assert {"up", "check", "status", "restart", "stop", "systemd-unit"} <= listed, result.stdout
    up_help = run_cli(["up", "--help"], REPO)
    assert up_help.returncode == 0 and "--port" in up_help.stdout


@pytest.mark.timeout(30)
def test_unknown_command_is_a_usage_error_without_traceback() -> None:
    result = run_cli(["upp"], REPO)
    assert result.returncode == 2
    assert "invalid choice: 'upp'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.timeout(30)
def test_console_script_entry_point_is_declared_and_runs() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    target = scripts["webapp-supervisor"]
    module, func = target.split(":")
    # Exactly what the generated wrapper script does.
    code = f"import sys; from {module} import {func}; sys.exit({func}())"
    result = subprocess.run([sys.executable, "-c", code, "--version"], cwd=REPO, env=base_env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "0." in result.stdout


@pytest.mark.timeout(30)
def test_installed_console_script_works() -> None:
    script = shutil.which("webapp-supervisor") or shutil.which(
        "webapp-supervisor", path=sysconfig.get_path("scripts"))
    if script is None:
        pytest.skip("webapp-supervisor is not installed here; `pip install -e .` installs it")
    result = subprocess.run([script, "--help"], cwd=REPO, env=base_env(), capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "check" in result.stdout and os.path.basename(script) == "webapp-supervisor"
