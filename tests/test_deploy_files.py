"""The Dockerfile, docker-compose.yml and Kubernetes manifests agree with the supervisor's configuration and defaults.

Ports, probe paths, the config path, the runtime directory and the stop deadline appear in several
files; each is checked against the one source it must match (``config.py`` defaults, the
container's ``supervisor.toml``, the status API's probe paths).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dotenv import dotenv_values

from supervisor.config.dburl import normalize_database_url
from supervisor.config.settings import resolve_settings
from supervisor.config.toml import Config, ServerSection, StatusSection, load_config, parse_config
from supervisor.status.api import PROBES
from tests.support import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
CONTAINER_TOML = DEPLOY / "container" / "supervisor.toml"
PROJECT_DIR = PurePosixPath("/app")
SHUTDOWN_MARGIN = 5  # seconds beyond preStop + stop_timeout for the supervisor to exit


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                found[doc["kind"]] = doc
    return found


def dockerfile() -> dict[str, list[str]]:
    """Instruction -> arguments of each occurrence, with continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            found.setdefault(instruction.upper(), []).append(rest.strip())
    return found


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), value
    return [str(v) for v in parsed]


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    return manifests()


@pytest.fixture(scope="module")
def container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return containers[0]


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(CONTAINER_TOML)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_configmap_embeds_the_container_config_verbatim(k8s: dict[str, dict[str, Any]]) -> None:
    embedded = k8s["ConfigMap"]["data"]["supervisor.toml"]
    assert embedded == CONTAINER_TOML.read_text()
    parse_config(embedded)  # valid


def test_container_config_uses_the_default_ports_on_every_interface(cfg: Config) -> None:
    # The documented ports (README, Dockerfile, manifests), which are also the built-in defaults.
    assert (cfg.server.port, cfg.status.port) == (8000, 8787)
    assert (ServerSection().port, StatusSection().port) == (8000, 8787)
    assert cfg.server.host == "0.0.0.0" and cfg.status.host == "0.0.0.0" and cfg.status.enabled
    assert cfg.supervisor.mode == "production" and cfg.reload.enabled is False


def test_container_config_declares_the_projects_variables(cfg: Config) -> None:
    project = load_config(REPO / "supervisor.toml")
    assert set(cfg.env) == set(project.env)
    # No development defaults in production: what the app needs is required, the rest optional.
    assert all(spec.default is None for spec in cfg.env.values())
    assert cfg.env["DATABASE_URL"].required and cfg.env["BETTER_AUTH_SECRET"].required


def test_container_ports_match_the_config(container: dict[str, Any], cfg: Config) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": cfg.server.port, "status": cfg.status.port}


def test_probes_use_the_status_api_paths_on_the_status_port(container: dict[str, Any]) -> None:
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "status"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "status"}
    assert container["startupProbe"]["httpGet"]["port"] == "status"
    assert {"/livez", "/readyz"} <= set(PROBES)


def test_startup_probe_outlasts_the_database_wait_and_the_migrations(container: dict[str, Any],
                                                                     cfg: Config) -> None:
    probe = container["startupProbe"]
    assert cfg.database.migrate  # the image's schema is made at start
    assert probe["periodSeconds"] * probe["failureThreshold"] > cfg.database.deadline + cfg.database.migrate_timeout


def test_grace_period_outlasts_prestop_and_the_stop_deadline(k8s: dict[str, dict[str, Any]],
                                                             container: dict[str, Any], cfg: Config) -> None:
    grace = k8s["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert grace >= float(pre_stop[1]) + cfg.supervisor.stop_timeout + SHUTDOWN_MARGIN


def test_config_comes_from_the_configmap_and_secrets_from_the_secret(
        k8s: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    config_path = PurePosixPath(option(container["command"], "--config"))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_volume = next(name for name, path in mounts.items() if PurePosixPath(path) == config_path.parent)
    assert volumes[config_volume]["configMap"]["name"] == k8s["ConfigMap"]["metadata"]["name"]
    assert config_path.name in k8s["ConfigMap"]["data"]
    assert [e["secretRef"]["name"] for e in container["envFrom"]] == ["webapp-secrets"]
    assert "webapp-secrets" in (DEPLOY / "README.md").read_text()


def test_runtime_directory_is_writable_on_a_read_only_root(container: dict[str, Any], cfg: Config) -> None:
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    project = PurePosixPath(option(container["command"], "--project-dir"))
    runtime = project / cfg.supervisor.runtime_dir
    # In a volume (an emptyDir): the directory itself or the private one the supervisor makes in it.
    assert any(runtime == PurePosixPath(m["mountPath"]) or PurePosixPath(m["mountPath"]) in runtime.parents
               for m in container["volumeMounts"])


def test_service_targets_the_http_port_of_the_pods(k8s: dict[str, dict[str, Any]]) -> None:
    service, deployment = k8s["Service"], k8s["Deployment"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_dockerfile_runs_the_same_command_as_the_deployment(container: dict[str, Any]) -> None:
    docker = dockerfile()
    command = exec_form(docker["ENTRYPOINT"][-1]) + exec_form(docker["CMD"][-1])
    assert command == container["command"]
    assert PurePosixPath(option(command, "--project-dir")) == PROJECT_DIR == PurePosixPath(docker["WORKDIR"][-1])


def test_dockerfile_exposes_the_ports_and_installs_the_config_at_the_configured_path(cfg: Config) -> None:
    docker = dockerfile()
    assert {int(p) for p in docker["EXPOSE"][-1].split()} == {cfg.server.port, cfg.status.port}
    config_path = option(exec_form(docker["CMD"][-1]), "--config")
    assert f"{CONTAINER_TOML.relative_to(REPO)} {config_path}" in docker["COPY"]
    assert docker["STOPSIGNAL"] == ["SIGTERM"]
    assert docker["USER"][-1] not in ("root", "0")
    runtime = PROJECT_DIR / cfg.supervisor.runtime_dir
    assert str(runtime) in " ".join(docker["RUN"])  # created and owned by the runtime user
    assert shlex.split(docker["HEALTHCHECK"][-1])[0].startswith("--")
    assert f"127.0.0.1:{cfg.status.port}/readyz" in docker["HEALTHCHECK"][-1]


def test_dockerfile_installs_the_example_extra_for_the_webapp_it_serves_from_the_project_dir(cfg: Config) -> None:
    # The wheel holds the supervisor only: webapp/ is imported from /app, copied there whole, and
    # its libraries (alembic for the migrate step, pyjwt, ...) come from the `example` extra.
    assert cfg.app.app.startswith("webapp.") and (REPO / "webapp").is_dir()
    docker = dockerfile()
    assert f". {PROJECT_DIR}" in docker["COPY"]
    installs = [shlex.split(part.strip()) for run in docker["RUN"] for part in run.split("&&")]
    assert any(words[:2] == ["pip", "install"] and any(re.fullmatch(r"\.\[(.*,)?example(,.*)?\]", w) for w in words)
               for words in installs), docker["RUN"]


def test_deployment_runs_as_the_dockerfile_user(container: dict[str, Any],
                                                k8s: dict[str, dict[str, Any]]) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == dockerfile()["USER"][-1]


# ----- docker-compose.yml --------------------------------------------------------------------

COMPOSE = REPO / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = REPO / "compose.env.example"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(parsed, dict)
    return parsed


def example_env() -> dict[str, str]:
    values = dotenv_values(COMPOSE_ENV_EXAMPLE)
    return {k: v for k, v in values.items() if v is not None}


def test_compose_runs_postgres_15_with_a_healthcheck_the_app_waits_for(compose: dict[str, Any]) -> None:
    db, app = compose["services"]["db"], compose["services"]["app"]
    assert db["image"] == "postgres:15"
    check = db["healthcheck"]
    assert check["test"][0] == "CMD-SHELL" and "pg_isready" in check["test"][1]
    assert all(key in check for key in ("interval", "timeout", "retries"))
    assert app["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert app["build"] == "." and (REPO / "Dockerfile").exists()


def test_compose_publishes_the_container_configs_ports(compose: dict[str, Any], cfg: Config) -> None:
    published = {int(spec.rsplit(":", 1)[1]) for spec in compose["services"]["app"]["ports"]}
    assert published == {cfg.server.port, cfg.status.port}
    assert all(spec.startswith("127.0.0.1:") for spec in compose["services"]["app"]["ports"])


def test_compose_stop_grace_outlasts_the_stop_deadline(compose: dict[str, Any], cfg: Config) -> None:
    grace = compose["services"]["app"]["stop_grace_period"]
    assert grace.endswith("s") and float(grace[:-1]) >= cfg.supervisor.stop_timeout + SHUTDOWN_MARGIN


def test_compose_runtime_directory_is_writable_on_a_read_only_root(compose: dict[str, Any], cfg: Config) -> None:
    app = compose["services"]["app"]
    assert app["read_only"] is True
    runtime = PROJECT_DIR / cfg.supervisor.runtime_dir
    # Inside a tmpfs (a private directory up creates in it: the mount itself is world-writable).
    assert any(runtime.is_relative_to(PurePosixPath(mount.split(":")[0])) for mount in app["tmpfs"])


def test_compose_secrets_come_from_an_env_file_that_is_never_committed(compose: dict[str, Any]) -> None:
    files = {compose["services"][name]["env_file"] for name in ("db", "app")}
    assert files == {"compose.env"}
    ignored = subprocess.run(["git", "check-ignore", "-q", "compose.env"], cwd=REPO)
    assert ignored.returncode == 0, "compose.env must be in .gitignore"
    assert "compose.env" in (REPO / ".dockerignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files", "compose.env"], cwd=REPO, capture_output=True, text=True)
    assert tracked.stdout == ""
    assert "compose.env.example" in COMPOSE.read_text()


def test_compose_example_env_is_valid_for_the_container_config(tmp_path: Path) -> None:
    # The example, as the app's environment, passes the same checks `up` makes in the container.
    env = example_env()
    settings = resolve_settings(tmp_path, env, config_path=CONTAINER_TOML)
    assert settings.production and settings.config.database.migrate
    assert set(settings.config.env) <= set(env) | {n for n, s in settings.config.env.items() if not s.required}
    url = normalize_database_url(env["DATABASE_URL"])
    parts = urlsplit(env["DATABASE_URL"])
    assert (parts.hostname, parts.port, parts.username, parts.password, parts.path.lstrip("/")) == (
        "db", 5432, env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"])
    assert url.backend == "postgresql"
