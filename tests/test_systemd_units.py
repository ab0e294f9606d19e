"""Generated unit files: rendered text, ``systemd-analyze verify`` and ``security``, the CLI.

Security threshold (documented in deploy/README.md): ``systemd-analyze security --offline=true``
rates exposure from 0 (locked down) to 10. Every generated service must stay at or below 2.0
(systemd's "OK" band) even without ``User=``; the example in ``deploy/systemd``, which sets
``User=``, at or below 1.5. A hardening line dropped by mistake raises the score past these.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.config.toml import Config, parse_config
from supervisor.systemd.units import (
    NAME_PATTERN,
    STOP_MARGIN,
    UnitOptions,
    default_name,
    listen_address,
    quote_arg,
    render_service,
    render_socket,
)
from tests.support import REPO, base_env, make_project, run_cli

SECURITY_THRESHOLD = 2.0  # any generated service
EXAMPLE_SECURITY_THRESHOLD = 1.5  # deploy/systemd/webapp.service (runs as User=webapp)
EXAMPLE_ARGS = ["systemd-unit", "--project-dir", "/srv/webapp", "--python", "/srv/webapp/.venv/bin/python",
                "--user", "webapp", "--group", "webapp", "--env-file", "/etc/webapp/webapp.env", "--socket"]
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing (.ci/run installs the systemd package)")


def options(cfg: Config | None = None, **kwargs: object) -> UnitOptions:
    defaults: dict[str, object] = {"name": "webapp"}
    defaults.update(kwargs)
    return UnitOptions.from_config(cfg or Config(), Path("/srv/app"), "/usr/bin/python3", **defaults)


def keys(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


# ----- the rendered text ------------------------------------------------------------------


def test_service_is_type_notify_with_the_interpreter_itself_as_main_process() -> None:
    unit = keys(render_service(options()))
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["ExecStart"] == ["/usr/bin/python3 -m supervisor up --project-dir /srv/app"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["WorkingDirectory"] == ["/srv/app"]
    assert unit["KillMode"] == ["mixed"] and unit["Restart"] == ["on-failure"]
    assert unit["RestartPreventExitStatus"] == ["2"]
    assert "notify-reload" not in render_service(options())


def test_deadlines_follow_the_configuration() -> None:
    cfg = parse_config("[supervisor]\nstop_timeout = 42.5\n[app]\nready_timeout = 20\n"
                       "[database]\nwait = true\ndeadline = 100\n")
    unit = keys(render_service(options(cfg, watchdog_sec=12)))
    assert int(unit["TimeoutStopSec"][0]) == 43 + STOP_MARGIN > 42.5
    assert int(unit["TimeoutStartSec"][0]) > 100 + 20
    assert unit["WatchdogSec"] == ["12"]
    assert "WatchdogSec" not in keys(render_service(options(cfg, watchdog_sec=0)))


def test_runtime_directory_is_the_writable_path_and_home_is_read_only_when_needed() -> None:
    unit = keys(render_service(options()))
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["ReadWritePaths"] == ["-/srv/app/.supervisor"]
    assert unit["ProtectHome"] == ["yes"]
    at_home = UnitOptions.from_config(Config(), Path("/home/ann/app"), "/usr/bin/python3", name="w")
    assert keys(render_service(at_home))["ProtectHome"] == ["read-only"]


def test_optional_user_group_and_environment_file() -> None:
    assert not {"User", "Group", "EnvironmentFile"} & set(keys(render_service(options())))
    unit = keys(render_service(options(user="web", group="www", env_file="/etc/web.env")))
    assert (unit["User"], unit["Group"], unit["EnvironmentFile"]) == (["web"], ["www"], ["/etc/web.env"])


def test_privileged_port_gets_one_capability_unless_systemd_binds_it() -> None:
    cfg = parse_config("[server]\nport = 80\n")
    assert keys(render_service(options(cfg)))["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert keys(render_service(options(cfg, socket=True)))["CapabilityBoundingSet"] == [""]


def test_socket_unit_listens_where_the_configuration_says() -> None:
    cfg = parse_config("[server]\nhost = \"0.0.0.0\"\nport = 8123\nbacklog = 512\n")
    sock = keys(render_socket(options(cfg, socket=True)))
    assert sock["ListenStream"] == ["0.0.0.0:8123"] and sock["Backlog"] == ["512"]
    assert sock["FileDescriptorName"] == ["http"]
    service = keys(render_service(options(cfg, socket=True)))
    assert service["Requires"] == ["webapp.socket"]
    assert listen_address("::1", 80) == "[::1]:80"


def test_paths_with_spaces_and_specifier_characters_are_escaped() -> None:
    assert quote_arg('/srv/a "b"') == '"/srv/a \\"b\\""'
    assert quote_arg("/srv/100%") == "/srv/100%%"
    assert quote_arg("$HOME") == "$$HOME"
    unit = keys(render_service(UnitOptions.from_config(Config(), Path("/srv/my app"), "/usr/bin/python3",
                                                       name="w")))
    assert unit["ExecStart"] == ['/usr/bin/python3 -m supervisor up --project-dir "/srv/my app"']


# ----- systemd's own checks ---------------------------------------------------------------


def generate(tmp_path: Path, *args: str) -> dict[str, Path]:
    project = make_project(tmp_path / "project", toml="[server]\nport = 8765\n")
    out = tmp_path / "units"
    result = run_cli(["systemd-unit", "--project-dir", str(project), "--output-dir", str(out), *args],
                     cwd=REPO, env=base_env())
    assert result.returncode == 0, result.stderr
    return {path.suffix: path for path in out.iterdir()}


def analyze(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *map(str, args)], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def exposure(unit: Path) -> float:
    result = analyze("security", "--offline=true", unit)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_analyze
@pytest.mark.timeout(60)
@pytest.mark.parametrize("extra", [[], ["--socket", "--user", "webapp", "--env-file", "/etc/webapp.env"]])
def test_generated_units_pass_systemd_analyze_verify_without_a_warning(tmp_path: Path, extra: list[str]) -> None:
    units = generate(tmp_path, *extra)
    result = analyze("verify", "--man=no", *units.values())
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@needs_analyze
@pytest.mark.timeout(60)
def test_verify_catches_a_misspelled_key(tmp_path: Path) -> None:
    service = generate(tmp_path)[".service"]
    service.write_text(service.read_text().replace("KillMode=", "KilMode="))
    result = analyze("verify", "--man=no", service)
    assert result.returncode == 0 and "Unknown key" in result.stderr  # why stderr must be checked


@needs_analyze
@pytest.mark.timeout(60)
def test_generated_service_exposure_stays_under_the_threshold(tmp_path: Path) -> None:
    service = generate(tmp_path)[".service"]
    assert exposure(service) <= SECURITY_THRESHOLD
    threshold = analyze("security", "--offline=true", f"--threshold={int(SECURITY_THRESHOLD * 10)}", service)
    assert threshold.returncode == 0, threshold.stdout


@needs_analyze
@pytest.mark.timeout(60)
def test_deploy_example_is_what_the_command_generates_and_passes_the_checks(tmp_path: Path) -> None:
    out = tmp_path / "units"
    result = run_cli([*EXAMPLE_ARGS, "--output-dir", str(out)], cwd=REPO, env=base_env())
    assert result.returncode == 0, result.stderr
    example = REPO / "deploy" / "systemd"
    for name in ("webapp.service", "webapp.socket"):
        assert (example / name).read_text() == (out / name).read_text(), f"regenerate deploy/systemd/{name}"
    # verify needs ExecStart's program to exist: check a copy that runs this interpreter.
    service = out / "webapp.service"
    service.write_text(service.read_text().replace("/srv/webapp/.venv/bin/python", sys.executable))
    checked = analyze("verify", "--man=no", service, out / "webapp.socket")
    assert (checked.returncode, checked.stderr) == (0, "")
    assert exposure(service) <= EXAMPLE_SECURITY_THRESHOLD


# ----- the command ------------------------------------------------------------------------


def test_command_prints_the_service_and_with_socket_both_units(tmp_path: Path) -> None:
    project = make_project(tmp_path, toml="[server]\nport = 8765\n")
    one = run_cli(["systemd-unit", "--project-dir", str(project)], cwd=REPO, env=base_env())
    assert one.returncode == 0 and one.stdout.startswith(f"# {default_name(project.resolve())}.service")
    assert f"--project-dir {project.resolve()}" in one.stdout and "[Socket]" not in one.stdout
    both = run_cli(["systemd-unit", "--project-dir", str(project), "--socket", "--name", "shop"],
                   cwd=REPO, env=base_env())
    assert both.returncode == 0
    assert "# shop.service" in both.stdout and "# shop.socket" in both.stdout
    assert "ListenStream=127.0.0.1:8765" in both.stdout


def test_command_reports_an_output_dir_it_cannot_write_without_a_traceback(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", toml="[server]\nport = 8765\n")
    (tmp_path / "a-file").write_text("")
    # Under a regular file nothing can be created, whoever runs the test (root ignores modes).
    for out in (tmp_path / "a-file" / "units", tmp_path / "a-file"):
        result = run_cli(["systemd-unit", "--project-dir", str(project), "--output-dir", str(out)],
                         cwd=REPO, env=base_env())
        assert result.returncode == 2, result.stderr
        assert f"--output-dir: cannot write {out / 'project.service'} (" in result.stderr
        assert "expected a writable directory" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(("directory", "name"), [("shop", "shop"), ("My App", "My-App"), ("web@1", "web-1"),
                                                ("..", "app"), ("api.v2", "api.v2")])
def test_the_default_unit_name_is_the_project_directorys_made_valid(directory: str, name: str) -> None:
    assert default_name(Path("/srv") / directory) == name
    assert NAME_PATTERN.match(name) and "@" not in name


def test_command_rejects_a_bad_name_a_relative_path_and_an_unfixed_port(tmp_path: Path) -> None:
    project = make_project(tmp_path, toml="[server]\nport = 0\n")
    for args, said in ((["--name", "my app"], "is not a unit name"),
                       (["--env-file", "relative.env"], "is not an absolute path"),
                       (["--socket"], "cannot be socket-activated")):
        result = run_cli(["systemd-unit", "--project-dir", str(project), *args], cwd=REPO, env=base_env())
        assert result.returncode == 2 and said in result.stderr, result.stderr
