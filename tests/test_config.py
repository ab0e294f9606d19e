"""``supervisor.toml`` parsing: pure tests of :func:`supervisor.config.toml.parse_config`."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from supervisor.config.toml import Config, config_file, load_config, parse_config
from supervisor.errors import ConfigError


def problems_of(toml: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(toml), "proj/supervisor.toml")
    return [str(p) for p in info.value.problems]


def test_empty_file_gives_the_documented_defaults() -> None:
    cfg = parse_config("")
    assert cfg.server.port == 8000
    assert cfg.server.host == "127.0.0.1"
    assert cfg.app.app == ""  # none: named on the command line or found in the project (issue 21)
    assert cfg.app.workers == 1
    assert cfg.supervisor.mode == "development"
    assert cfg.restart.initial_delay == 0.5
    assert cfg.env == {}


def test_the_repository_supervisor_toml_is_valid() -> None:
    cfg = load_config(Path(__file__).resolve().parent.parent / "supervisor.toml")
    assert cfg.app.app == "webapp.app:app"
    assert cfg.env["BETTER_AUTH_SECRET"].is_secret


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    cfg = load_config(tmp_path / "supervisor.toml")
    assert cfg.server == Config().server


def test_values_are_typed_and_config_is_frozen() -> None:
    cfg = parse_config("""
[server]
port = 9001
strict_port = true
[restart]
initial_delay = 1      # an integer is accepted where a number is expected
[reload]
paths = ["src", "lib"]
""")
    assert cfg.server.port == 9001 and cfg.server.strict_port is True
    assert isinstance(cfg.restart.initial_delay, float)
    assert cfg.reload.paths == ["src", "lib"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.server.port = 1  # type: ignore[misc]


def test_unknown_key_names_file_line_and_suggests_the_close_match() -> None:
    [problem] = problems_of("""
        [server]
        host = "127.0.0.1"
        prot = 8001
    """)
    assert problem.startswith("proj/supervisor.toml:4 [server] prot:")
    assert "unknown key 'prot'" in problem
    assert "did you mean 'port'?" in problem
    assert "port_range" in problem  # the expected keys are listed


def test_unknown_section_suggests_the_close_match() -> None:
    [problem] = problems_of("""
        [sever]
        port = 1
    """)
    assert problem.startswith("proj/supervisor.toml:2 [sever]")
    assert "did you mean [server]?" in problem


@pytest.mark.parametrize("line, expected", [
    ('port = "8000"', "'8000' is not an integer"),
    ("port = 80.5", "80.5 is not an integer"),
    ('strict_port = "yes"', "'yes' is not true or false"),
    ("host = 127", "127 is not a string"),
])
def test_wrong_types_name_the_value_and_the_expected_type(line: str, expected: str) -> None:
    [problem] = problems_of(f"[server]\n{line}\n")
    assert problem.startswith(f"proj/supervisor.toml:2 [server] {line.split()[0]}:")
    assert expected in problem


def test_a_boolean_is_not_accepted_as_a_number() -> None:
    [problem] = problems_of("[restart]\nmultiplier = true\n")
    assert "[restart] multiplier" in problem and "is not a number" in problem


def test_list_of_strings_is_checked() -> None:
    [problem] = problems_of("[reload]\npaths = [1, 2]\n")
    assert "[reload] paths" in problem and "is not a list of strings" in problem


@pytest.mark.parametrize("section, line, expected", [
    ("server", "port = 70000", "70000 is out of range; expected 0 to 65535"),
    ("app", "workers = 0", "0 is out of range; expected 1 to 64"),
    ("restart", "jitter = 1.5", "1.5 is out of range; expected 0 to 1"),
    ("supervisor", "stop_timeout = 0", "0 is out of range; expected 0.1 to 3600"),
])
def test_out_of_range_values_give_the_allowed_range(section: str, line: str, expected: str) -> None:
    [problem] = problems_of(f"[{section}]\n{line}\n")
    assert f"[{section}] {line.split()[0]}" in problem
    assert expected in problem


def test_choices_are_listed() -> None:
    [problem] = problems_of('[supervisor]\nmode = "prod"\n')
    assert "'prod' is not allowed; expected 'development' or 'production'" in problem


def test_cross_checks_name_both_values() -> None:
    problems = problems_of("""
        [restart]
        initial_delay = 5
        max_delay = 1
        [app]
        app = "webapp.app"
    """)
    assert any("proj/supervisor.toml:4 [restart] max_delay" in p and "initial_delay (5)" in p
               for p in problems)
    assert any("[app] app" in p and "'module:attribute'" in p for p in problems)


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of("""
        [server]
        prot = 1
        port = "x"
        [app]
        workers = 100
        [restart]
        jitter = -1
        [nonsense]
        [env.X]
        type = "float"
    """)
    assert len(problems) == 6, problems
    for fragment in ("prot", "port", "workers", "jitter", "[nonsense]", "[env.X]"):
        assert any(fragment in p for p in problems), (fragment, problems)


def test_invalid_toml_is_one_problem_with_the_position() -> None:
    [problem] = problems_of("[server\nport = 1\n")
    assert problem.startswith("proj/supervisor.toml: not valid TOML")
    assert "line 1" in problem


def test_env_section_accepts_a_type_name_or_a_table() -> None:
    cfg = parse_config("""
[env]
NAME = "string"
[env.COUNT]
type = "integer"
min = 1
max = 9
required = false
""")
    assert cfg.env["NAME"].type == "string" and cfg.env["NAME"].required
    assert (cfg.env["COUNT"].min, cfg.env["COUNT"].max, cfg.env["COUNT"].required) == (1, 9, False)


def test_env_spec_problems_name_the_variable() -> None:
    problems = problems_of("""
        [env.A]
        type = "float"
        [env.B]
        type = "integer"
        min = "1"
        colour = "red"
        [env]
        C = 3
    """)
    assert any(p.startswith("proj/supervisor.toml:2 [env.A]") and "'float' is not known" in p
               for p in problems)
    assert any("[env.B]" in p and "min = '1' is not an integer" in p for p in problems)
    assert any("[env.B]" in p and "unknown key 'colour'" in p for p in problems)
    assert any("[env] C" in p for p in problems)


def test_a_secret_of_the_wrong_type_is_not_quoted() -> None:
    [problem] = problems_of("[status]\ntoken = 918273645\n")
    assert problem == "proj/supervisor.toml:2 [status] token: the value is not a string"
    problems = problems_of("""
        [env.SIGNING]
        type = "secret"
        default = 918273645
        [env.API_TOKEN]
        default = 564738291
        [env]
        SESSION_KEY = 192837465
    """)
    assert len(problems) == 3 and not any(n in p for p in problems
                                          for n in ("918273645", "564738291", "192837465")), problems
    assert any("[env.SIGNING]" in p and "default = the value is not a string" in p for p in problems)


@pytest.mark.parametrize("value", ["nan", "+nan", "-nan", "inf", "-inf"])
@pytest.mark.parametrize("section, key", [("database", "deadline"), ("restart", "initial_delay"),
                                          ("supervisor", "stop_timeout"), ("reload", "debounce"),
                                          ("status", "header_timeout")])
def test_non_finite_numbers_are_refused_everywhere(section: str, key: str, value: str) -> None:
    """nan compares false with every bound, so a range check alone let it through."""
    [problem] = problems_of(f"[{section}]\n{key} = {value}\n")
    assert problem.startswith(f"proj/supervisor.toml:2 [{section}] {key}: ")
    assert "is not a finite number" in problem or "out of range" in problem


def test_nan_deadline_names_the_range() -> None:
    [problem] = problems_of("[database]\ndeadline = nan\n")
    assert problem == ("proj/supervisor.toml:2 [database] deadline: nan is not a finite number; "
                       "expected a number from 0 to 86400")


@pytest.mark.parametrize("line", ['app = "webapp.app:a\\u0000pp"', 'app_dir = "src\\u0000"'])
def test_a_nul_byte_in_a_string_is_refused(line: str) -> None:
    """No path, argument or environment variable can hold one: it used to crash `up`."""
    [problem] = problems_of(f"[app]\n{line}\n")
    assert "holds a NUL byte" in problem and problem.startswith("proj/supervisor.toml:2 [app]")


def test_a_nul_byte_in_a_list_or_an_env_default_is_refused() -> None:
    problems = problems_of('[reload]\nexclude = ["a", "b\\u0000"]\n[env.GREETING]\ndefault = "hi\\u0000"\n')
    assert len(problems) == 2 and all("NUL byte" in p for p in problems), problems


@pytest.mark.parametrize("token", ["short", "has a space in it 0123456789", "line\\nbreak-0123456789abc",
                                   "é-not-ascii-0123456789"])
def test_a_configured_token_must_fit_a_header_and_one_line(token: str) -> None:
    [problem] = problems_of(f'[status]\ntoken = "{token}"\n')
    assert "[status] token: the value is not usable as a token" in problem
    assert token not in problem


def test_a_section_given_as_a_value_is_not_quoted() -> None:
    """`status = "tok..."` at the top level: the value may be the token."""
    [problem] = problems_of('status = "tok-0123456789abcdef-secret"\n')
    assert "tok-0123456789abcdef-secret" not in problem and "expected a table, got a string" in problem


def test_a_config_file_named_explicitly_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", required=True)
    [problem] = info.value.problems
    assert problem.where == "--config" and "does not exist" in problem.message


def test_health_keys_default_to_off_and_take_their_values() -> None:
    assert (Config().app.hang_timeout, Config().app.max_requests, Config().app.max_rss) == (None, 0, 0.0)
    cfg = parse_config("""
[app]
hang_timeout = 5
heartbeat_interval = 0.5
max_requests = 1000
max_requests_jitter = 50
max_rss = 512
max_age = 3600
max_age_jitter = 600
""")
    app = cfg.app
    assert (app.hang_timeout, app.heartbeat_interval, app.max_requests, app.max_requests_jitter) == (5.0, 0.5, 1000, 50)
    assert (app.max_rss, app.max_age, app.max_age_jitter) == (512.0, 3600.0, 600.0)


def test_bad_health_keys_name_the_key_the_value_and_the_expected_form() -> None:
    problems = problems_of("""
        [app]
        hang_timeout = -1
        heartbeat_interval = 0
        max_requests = 1.5
        max_rss = "1G"
        max_age = 1e12
    """)
    assert "proj/supervisor.toml:3 [app] hang_timeout: -1.0 is out of range; expected 0 to 86400" in problems
    assert "proj/supervisor.toml:4 [app] heartbeat_interval: 0.0 is out of range; expected 0.05 to 10" in problems
    assert "proj/supervisor.toml:5 [app] max_requests: 1.5 is not an integer" in problems
    assert "proj/supervisor.toml:6 [app] max_rss: '1G' is not a number" in problems
    assert "proj/supervisor.toml:7 [app] max_age: 1000000000000.0 is out of range; expected 0 to 31536000" in problems


def test_a_hang_timeout_shorter_than_two_heartbeats_is_refused_but_0_turns_it_off() -> None:
    [problem] = problems_of("""
        [app]
        heartbeat_interval = 2
        hang_timeout = 3
    """)
    assert problem.startswith("proj/supervisor.toml:4 [app] hang_timeout: 3 is shorter than two heartbeats")
    assert "expected at least 4, or 0 to turn hang detection off" in problem
    assert parse_config("[app]\nheartbeat_interval = 2\nhang_timeout = 0\n").app.hang_timeout == 0


PYPROJECT = """\
[project]
name = "myapp"

[tool.ruff]
line-length = 100

[tool.webapp-supervisor.server]
port = 9100

[tool.webapp-supervisor.app]
workers = 2

[tool.webapp-supervisor.env.API_KEY]
type = "secret"
"""


def test_pyproject_tool_table_has_the_same_schema_under_it(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    path = config_file(tmp_path)
    assert path == tmp_path / "pyproject.toml"
    cfg = load_config(path)
    assert cfg.server.port == 9100 and cfg.app.workers == 2 and cfg.env["API_KEY"].is_secret
    assert cfg.path == str(tmp_path / "pyproject.toml")
    # supervisor.toml wins when both exist; a pyproject.toml without our table is not read.
    (tmp_path / "supervisor.toml").write_text("[server]\nport = 9200\n")
    assert config_file(tmp_path) == tmp_path / "supervisor.toml"
    (tmp_path / "supervisor.toml").unlink()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.other]\nwebapp-supervisor = 1\n')
    assert config_file(tmp_path) == tmp_path / "supervisor.toml"


def test_pyproject_problems_name_the_file_its_line_and_the_table_as_written() -> None:
    text = PYPROJECT.replace("workers = 2", "workers = 0\nwrokers = 1") + "[tool.webapp-supervisor.sever]\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "proj/pyproject.toml", "tool.webapp-supervisor")
    problems = [str(p) for p in info.value.problems]
    assert "proj/pyproject.toml:11 [tool.webapp-supervisor.app] workers: 0 is out of range; expected 1 to 64" \
        in problems, problems
    assert any(p.startswith("proj/pyproject.toml:12 [tool.webapp-supervisor.app] wrokers: unknown key")
               and "did you mean 'workers'?" in p for p in problems), problems
    assert any(p.startswith("proj/pyproject.toml:16 [tool.webapp-supervisor.sever]: unknown section")
               and "did you mean [tool.webapp-supervisor.server]?" in p for p in problems), problems
    # The quoted spelling of the same table is found too.
    quoted = PYPROJECT.replace("[tool.webapp-supervisor.server]", '[tool."webapp-supervisor".server]')
    with pytest.raises(ConfigError) as info:
        parse_config(quoted.replace("port = 9100", "port = -1"), "pyproject.toml", "tool.webapp-supervisor")
    assert str(info.value.problems[0]).startswith("pyproject.toml:8 [tool.webapp-supervisor.server] port:")


def test_a_pyproject_named_with_config_must_have_the_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "pyproject.toml", required=True)
    assert "has no [tool.webapp-supervisor] table" in str(info.value)


def test_the_app_server_keys_default_to_uvicorns_auto() -> None:
    app = parse_config("").app
    assert (app.loop, app.http, app.interface, app.log_config) == ("auto", "auto", "auto", "")
    app = parse_config('[app]\nloop = "asyncio"\nhttp = "h11"\ninterface = "wsgi"\nlog_config = "log.yaml"\n').app
    assert (app.loop, app.http, app.interface, app.log_config) == ("asyncio", "h11", "wsgi", "log.yaml")


def test_bad_app_server_keys_name_the_file_line_value_and_the_choices() -> None:
    found = problems_of('''
        [app]
        loop = "trio"
        http = "h2"
        interface = "rsgi"
        log_config = "logging.txt"
        ''')
    assert len(found) == 4, found
    loop, http, interface, log_config = found
    assert loop.startswith("proj/supervisor.toml:3 [app] loop") and "'trio' is not allowed" in loop
    assert "expected 'auto' or 'asyncio' or 'uvloop'" in loop
    assert http.startswith("proj/supervisor.toml:4 [app] http") and "'h11' or 'httptools'" in http
    assert interface.startswith("proj/supervisor.toml:5 [app] interface") and "'asgi2' or 'wsgi'" in interface
    assert log_config.startswith("proj/supervisor.toml:6 [app] log_config") and ".json" in log_config


def test_the_log_config_file_is_resolved_and_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisor.config.settings import Overrides, resolve_settings

    project = tmp_path / "proj"
    (project / "conf").mkdir(parents=True)
    (project / "supervisor.toml").write_text('[app]\nlog_config = "conf/log.json"\n[database]\nwait = false\n')
    (project / "conf" / "log.json").write_text("{}")
    assert resolve_settings(project, {}).log_config == str(project / "conf" / "log.json")

    # up --log-config: relative to where the command runs, and it wins over the file's key.
    (tmp_path / "mine.ini").write_text("")
    monkeypatch.chdir(tmp_path)
    assert resolve_settings(project, {}, Overrides(log_config="mine.ini")).log_config == str(tmp_path / "mine.ini")

    with pytest.raises(ConfigError) as info:
        resolve_settings(project, {}, Overrides(log_config="missing.yaml"))
    [problem] = info.value.problems
    assert problem.where == "--log-config" and "'missing.yaml' is not a file" in problem.message
    (project / "conf" / "log.json").unlink()
    with pytest.raises(ConfigError) as info:
        resolve_settings(project, {})
    [problem] = info.value.problems
    assert problem.where.endswith("[app] log_config") and "'conf/log.json' is not a file" in problem.message
