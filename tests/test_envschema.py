"""The ``[env]`` schema (every type) and secret recognition and redaction: pure tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config.envschema import VarSpec, validate_environ
from supervisor.config.settings import Overrides, resolve_settings
from supervisor.errors import ConfigError
from supervisor.secrets import (
    MASK,
    Redactor,
    is_secret_name,
    mask_url,
    secret_values,
    url_password,
    url_passwords,
)
from tests.support import make_project

SECRET = "s3cr3t-value-that-must-never-be-printed"


def check(spec: VarSpec, value: str | None, where: str = ".env:3") -> tuple[object, list[str]]:
    environ = {} if value is None else {spec.name: value}
    values, problems = validate_environ({spec.name: spec}, environ, {spec.name: where})
    return values.get(spec.name), [str(p) for p in problems]


@pytest.mark.parametrize("spec, raw, typed", [
    (VarSpec("NAME"), "hello", "hello"),
    (VarSpec("COUNT", type="integer"), " 42 ", 42),
    (VarSpec("COUNT", type="integer", min=1, max=10), "10", 10),
    (VarSpec("FLAG", type="boolean"), "Yes", True),
    (VarSpec("FLAG", type="boolean"), "off", False),
    (VarSpec("FLAG", type="boolean"), "0", False),
    (VarSpec("PORT", type="port"), "8080", 8080),
    (VarSpec("URL", type="url"), "https://example.org/x", "https://example.org/x"),
    (VarSpec("URL", type="url", schemes=("sqlite+aiosqlite",)), "sqlite+aiosqlite:///app.db",
     "sqlite+aiosqlite:///app.db"),
    (VarSpec("SIGNING", type="secret", min_length=8), "12345678", "12345678"),
])
def test_valid_values_of_every_type_are_converted(spec: VarSpec, raw: str, typed: object) -> None:
    value, problems = check(spec, raw)
    assert problems == []
    assert value == typed


@pytest.mark.parametrize("spec, raw, expected", [
    (VarSpec("COUNT", type="integer"), "ten", "'ten' is not an integer; expected an integer"),
    (VarSpec("COUNT", type="integer", min=1, max=10), "11", "'11' is out of range; expected 1 to 10"),
    (VarSpec("COUNT", type="integer", min=5), "4", "expected 5 to inf"),
    (VarSpec("FLAG", type="boolean"), "maybe", "'maybe' is not a boolean; expected one of true/false"),
    (VarSpec("PORT", type="port"), "http", "expected a port number (1-65535)"),
    (VarSpec("PORT", type="port"), "70000", "'70000' is out of range; expected 1 to 65535"),
    (VarSpec("PORT", type="port"), "0", "out of range"),
    (VarSpec("URL", type="url"), "not a url", "is not a URL; expected scheme://host/..."),
    (VarSpec("URL", type="url", schemes=("postgresql", "postgres")), "mysql://h/db",
     "has scheme 'mysql'; expected one of 'postgresql', 'postgres'"),
    (VarSpec("NAME", min_length=5), "abc", "is 3 characters long; expected at least 5"),
])
def test_invalid_values_name_variable_place_value_and_expected_form(spec: VarSpec, raw: str,
                                                                    expected: str) -> None:
    value, [problem] = check(spec, raw)
    assert value is None
    assert problem.startswith(f".env:3 {spec.name}: ")
    assert expected in problem


def test_required_variable_that_is_missing_is_reported_with_its_description() -> None:
    spec = VarSpec("DATABASE_URL", type="url", schemes=("postgresql",), description="the database")
    _, [problem] = check(spec, None, where="environment")
    assert problem == ("environment DATABASE_URL: is required but not set; expected a URL with "
                       "scheme postgresql (the database)")


def test_optional_missing_variable_is_no_problem_and_default_is_used() -> None:
    assert check(VarSpec("OPT", required=False), None) == (None, [])
    assert check(VarSpec("LEVEL", type="integer", default="3"), None) == (3, [])


def test_invalid_default_points_at_the_schema() -> None:
    _, [problem] = check(VarSpec("LEVEL", type="integer", default="three"), None)
    assert problem.startswith("supervisor.toml [env] default LEVEL:")


@pytest.mark.parametrize("spec, raw", [
    (VarSpec("BETTER_AUTH_SECRET", type="secret", min_length=32), SECRET[:10]),
    (VarSpec("API_TOKEN", type="integer"), SECRET),  # secret by its name
    (VarSpec("OPAQUE", type="port", secret=True), SECRET),  # secret by the schema
    (VarSpec("DATABASE_URL", type="url", schemes=("postgresql",)), f"mysql://app:{SECRET}@db/x"),
    (VarSpec("DATABASE_URL", type="url"), f"::{SECRET}"),
])
def test_problems_never_quote_a_secret_value(spec: VarSpec, raw: str) -> None:
    _, [problem] = check(spec, raw)
    assert raw not in problem
    assert SECRET[:10] not in problem


@pytest.mark.parametrize("name, secret", [
    ("BETTER_AUTH_SECRET", True), ("DB_PASSWORD", True), ("GITHUB_TOKEN", True),
    ("STRIPE_API_KEY", True), ("aws_credentials", True), ("PORT", False), ("DATABASE_URL", False),
    ("HOME", False),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_url_password_and_mask_url() -> None:
    url = "postgresql://app:pa55word@db.internal:5432/app"
    assert url_password(url) == "pa55word"
    assert mask_url(url) == "postgresql://app:***@db.internal:5432/app"
    assert url_password("postgresql://app@db/app") is None
    assert url_password("not a url") is None


def test_secret_values_collects_named_schema_and_url_passwords() -> None:
    environ = {"API_TOKEN": "tok-1234", "PLAIN": "visible", "CUSTOM": "custom-secret",
               "DATABASE_URL": "postgres://u:dbpass99@h/d", "SHORT_KEY": "abc"}
    assert secret_values(environ, {"CUSTOM"}) == {"tok-1234", "custom-secret", "dbpass99"}


def test_query_string_passwords_are_found_and_masked() -> None:
    url = "postgresql://app@127.0.0.1/app?sslmode=require&password=hunter2secret&sslpassword=key%40pw"
    assert url_passwords(url) == ["hunter2secret", "key@pw", "key%40pw"]
    assert url_password(url) == "hunter2secret"
    # The rest of the query goes with the password: an unencoded '&' or '#' may be part of it.
    assert mask_url(url) == "postgresql://app@127.0.0.1/app?sslmode=require&password=***"
    assert secret_values({"DATABASE_URL": url}) == {"hunter2secret", "key@pw", "key%40pw"}
    # Inside a driver's message too, not only as a whole value.
    assert mask_url("cannot parse 'postgresql://app:pw-1234@h/db' here") == \
        "cannot parse 'postgresql://app:***@h/db' here"


def test_names_that_look_secret_count_only_among_declared_and_dotenv_variables() -> None:
    environ = {"API_KEY_MODE": "production", "LOCAL_TOKEN": "tok-from-dotenv",
               "INHERITED_URL": "postgres://u:dbpass99@h/d"}
    assert secret_values(environ, named={"LOCAL_TOKEN"}) == {"tok-from-dotenv", "dbpass99"}
    assert "production" in secret_values(environ)  # named=None: every name counts


def test_redactor_masks_every_secret_longest_first() -> None:
    redact = Redactor(["abcd", "abcdefgh", "zz"])  # "zz" is too short to mask
    assert redact("x abcdefgh y abcd zz") == f"x {MASK} y {MASK} zz"
    redact.add(["later-secret"])
    assert redact("a later-secret b") == f"a {MASK} b"
    assert Redactor()("nothing to hide") == "nothing to hide"


def test_settings_collect_secrets_from_dotenv_and_environment(tmp_path: Path) -> None:
    project = make_project(tmp_path, toml="""
        [env.SIGNING]
        type = "string"
        secret = true
    """, dotenv=f"SIGNING={SECRET}\nDATABASE_URL=postgresql://u:pw-in-url@h/db\nMY_TOKEN=tok-in-dotenv\n")
    settings = resolve_settings(project, {"API_KEY_MODE": "production",
                                          "OTHER_URL": "postgresql://u:pw-inherited@h/db"})
    assert {SECRET, "pw-in-url", "tok-in-dotenv", "pw-inherited"} <= settings.secrets
    # An inherited variable is not secret for its name alone: "production" stays readable.
    assert "production" not in settings.secrets
    assert SECRET not in repr(settings)


def test_process_environment_wins_over_dotenv(tmp_path: Path) -> None:
    project = make_project(tmp_path, toml="[env]\nGREETING = \"string\"\n",
                           dotenv="GREETING=from-file\nOTHER=kept\n")
    settings = resolve_settings(project, {"GREETING": "from-env"})
    assert settings.environ["GREETING"] == "from-env"
    assert settings.environ["OTHER"] == "kept"
    assert settings.env_sources["GREETING"] == "environment"
    assert settings.env_sources["OTHER"].endswith(".env:2")


def test_port_0_means_any_free_port_from_every_source(tmp_path: Path) -> None:
    project = make_project(tmp_path, toml="[server]\nport = 0\n")
    assert resolve_settings(project, {}).port == 0
    assert resolve_settings(project, {"PORT": "0"}).port == 0
    assert resolve_settings(project, {}, Overrides(port=0)).port == 0
    with pytest.raises(ConfigError) as info:
        resolve_settings(project, {"PORT": "-1"})
    assert "environment PORT: '-1' is out of range; expected 0 to 65535" in str(info.value)


def test_the_workers_are_told_mode_runtime_dir_and_database_variable(tmp_path: Path) -> None:
    project = make_project(tmp_path, toml="""
        [supervisor]
        runtime_dir = "run"
        [database]
        url_env = "APP_DB_URL"
    """)
    settings = resolve_settings(project, {}, Overrides(mode="production"))
    assert settings.environ["SUPERVISOR_MODE"] == "production"
    assert settings.environ["SUPERVISOR_RUNTIME_DIR"] == str(tmp_path.resolve() / "run")
    assert settings.environ["SUPERVISOR_DATABASE_URL_ENV"] == "APP_DB_URL"


def test_a_missing_project_or_app_dir_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings(tmp_path / "nowhere", {})
    assert "--project-dir: " in str(info.value) and "is not a directory" in str(info.value)
    project = make_project(tmp_path / "p", toml="[app]\napp_dir = \"src\"\n")
    with pytest.raises(ConfigError) as info:
        resolve_settings(project, {})
    assert "[app] app_dir: 'src' is not a directory" in str(info.value)


def test_port_precedence_cli_over_environment_over_toml(tmp_path: Path) -> None:
    project = make_project(tmp_path, toml="[server]\nport = 7000\n", dotenv="PORT=7100\n")
    assert resolve_settings(project, {}).port == 7100
    assert resolve_settings(project, {"PORT": "7200"}).port == 7200
    assert resolve_settings(project, {"PORT": "7200"}, Overrides(port=7300)).port == 7300


def test_settings_report_config_dotenv_and_environment_problems_together(tmp_path: Path) -> None:
    project = make_project(tmp_path, toml="""
        [env.COUNT]
        type = "integer"
    """, dotenv="COUNT=many\nthis line is broken\n")
    with pytest.raises(ConfigError) as info:
        resolve_settings(project, {"SUPERVISOR_MODE": "staging"})
    text = str(info.value)
    assert ".env:1 COUNT: 'many' is not an integer" in text
    assert ".env:2: cannot be parsed" in text
    assert "SUPERVISOR_MODE: 'staging' is not a mode" in text
    # A broken supervisor.toml does not hide the .env problems (its [env] schema is unknown then).
    (project / "supervisor.toml").write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError) as info:
        resolve_settings(project, {})
    text = str(info.value)
    assert "[server] prot" in text and ".env:2: cannot be parsed" in text


def test_settings_from_pyproject_name_it_in_environment_problems_and_sources(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.webapp-supervisor.env.LEVEL]\ntype = "integer"\ndefault = "three"\n'
        '[tool.webapp-supervisor.env.GREETING]\ndefault = "hi"\n')
    with pytest.raises(ConfigError) as info:
        resolve_settings(tmp_path, {})
    assert str(info.value).startswith("pyproject.toml [tool.webapp-supervisor.env] default LEVEL: 'three' is not")
    settings = resolve_settings(tmp_path, {"LEVEL": "3"})
    assert settings.config.path == str(tmp_path / "pyproject.toml")
    assert settings.env_sources["GREETING"] == "pyproject.toml [tool.webapp-supervisor.env] default"
