"""The Dockerfile and Kubernetes manifests agree with the supervisor's configuration and defaults.

Ports, probe paths, the config path, the runtime directory and the stop deadline appear in several
files; each is checked against the one source it must match (``config.py`` defaults, the
container's ``supervisor.toml``, the status API's probe paths).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml

from supervisor.config import Config, ServerSection, StatusSection, load_config, parse_config
from supervisor.status_api import PROBES
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
    return k8s["Deployment"]["spec"]["template"]["spec"]["containers"][0]


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
    assert cfg.server.port == ServerSection().port
    assert cfg.status.port == StatusSection().port
    assert cfg.server.host == "0.0.0.0" and cfg.status.host == "0.0.0.0" and cfg.status.enabled
    assert cfg.supervisor.mode == "production" and cfg.reload.enabled is False


def test_container_config_declares_the_projects_variables(cfg: Config) -> None:
    project = load_config(REPO / "supervisor.toml")
    assert set(cfg.env) == set(project.env)
    assert all(spec.required for spec in cfg.env.values())  # no development defaults in production


def test_container_ports_match_the_config(container: dict[str, Any], cfg: Config) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": cfg.server.port, "status": cfg.status.port}


def test_probes_use_the_status_api_paths_on_the_status_port(container: dict[str, Any]) -> None:
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "status"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "status"}
    assert container["startupProbe"]["httpGet"]["port"] == "status"
    assert {"/livez", "/readyz"} <= set(PROBES)


def test_startup_probe_outlasts_the_database_wait(container: dict[str, Any], cfg: Config) -> None:
    probe = container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] > cfg.database.deadline


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


def test_deployment_runs_as_the_dockerfile_user(container: dict[str, Any],
                                                k8s: dict[str, dict[str, Any]]) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == dockerfile()["USER"][-1]
