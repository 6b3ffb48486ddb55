"""docker-compose.yml and the Dockerfile cannot run here (no Docker engine), so
they are checked against the code: every service's command is a real `keyart`
subcommand with real options, every KEYART_ variable is a real setting (or an
option's variable) with a valid value, and the scrape targets are services."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from keyart.cli import app
from keyart.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ROOT_COMMAND = typer.main.get_command(app)


def keyart_services() -> dict[str, list[str]]:
    out = {}
    for name, service in SERVICES.items():
        command = service.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        if command and command[0] == "keyart":
            out[name] = command
    return out


def walk(command: Any, path: str = "keyart") -> dict[str, Any]:
    """Every command of the tree by its full name."""
    out = {path: command}
    for name, child in getattr(command, "commands", {}).items():
        out.update(walk(child, f"{path} {name}"))
    return out


def option_envvars() -> set[str]:
    names = set()
    for command in walk(ROOT_COMMAND).values():
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif envvar:
                names.update(envvar)
    return names


def resolve(argv: list[str]) -> tuple[Any, list[str], str]:
    """The leaf command ``argv`` runs, the arguments left for it, its path."""
    command, path = ROOT_COMMAND, "keyart"
    rest = argv[1:]
    while rest and rest[0] in getattr(command, "commands", {}):
        command = command.commands[rest[0]]
        path += " " + rest[0]
        rest = rest[1:]
    return command, rest, path


def interpolated(value: object) -> str:
    """Compose's ``${VAR:-default}`` with the default taken."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def test_the_file_declares_the_production_shape() -> None:
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    assert SERVICES["redis"]["image"].startswith("redis:")
    assert SERVICES["postgres"]["image"].startswith("postgres:")
    commands = {" ".join(c[:3]) for c in keyart_services().values()}
    for wanted in ("keyart streams", "keyart gateway", "keyart posters worker"):
        assert any(c.startswith(wanted) for c in commands), wanted
    assert any(c.startswith("keyart lag --serve") for c in commands)
    assert any(c.startswith("keyart topics") for c in commands)
    for monitoring in ("prometheus", "grafana"):
        assert SERVICES[monitoring]["profiles"] == ["monitoring"]


@pytest.mark.parametrize("service", sorted(keyart_services()))
def test_command_is_a_real_keyart_subcommand(service: str) -> None:
    argv = keyart_services()[service]
    command, rest, path = resolve(argv)
    assert not hasattr(command, "commands"), f"{service}: {path} needs a subcommand"
    # Parsing checks the options and arguments exist and have valid values.
    command.make_context(path, list(rest))


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_keyart_variables_are_real_settings(service: str) -> None:
    environment = SERVICES[service].get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    fields = {f"KEYART_{name.upper()}": name for name in Settings.model_fields}
    known = set(fields) | option_envvars()
    ours = {k: v for k, v in environment.items() if k.startswith("KEYART_")}
    unknown = sorted(set(ours) - known)
    assert not unknown, f"{service} sets variables keyart does not read: {unknown}"
    values = {fields[k]: interpolated(v) for k, v in ours.items() if k in fields}
    Settings(**values)  # a wrong value fails here, naming the field


def test_depends_on_names_services() -> None:
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on") or []:
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"


def test_prometheus_scrapes_the_keyart_services_on_their_ports() -> None:
    config = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        if job["job_name"].startswith("keyart-")
        for static in job["static_configs"]
        for target in static["targets"]
    }
    for target in targets:
        host, port = target.split(":")
        assert host in keyart_services(), f"scrape target {target} is no service"
        service = SERVICES[host]
        argv = keyart_services()[host]
        served = {service["environment"]["KEYART_METRICS_PORT"]}
        if "--port" in argv:
            served = {argv[argv.index("--port") + 1]}
        assert port in served, f"{target}: {host} serves metrics on {served}"


def test_monitoring_mounts_exist() -> None:
    for name in ("prometheus", "grafana"):
        for volume in SERVICES[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_dockerfile_installs_every_package_with_the_pins() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "pip install -c constraints.txt ." in dockerfile
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in dockerfile, f"{package} not copied"
