"""deploy/compose/: the demo stack validates against the compose-spec schema (check-jsonschema's
vendored copy), every file it mounts exists, and each container's configuration, laid out as the
container sees it, passes the real tools: ``promtool check config`` (rules included) and
``amtool check-config``; Grafana's provisioning points at the mounted dashboards; the exporter's
command is one ``serve`` accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from alerts.tools import run_tool

from mig_exporter.cli import build_parser
from mig_exporter.exporter.command import serve_config
from mig_exporter.sim import builtin_names

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    program = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    assert program, "check-jsonschema is missing: scripts/setup test installs it"
    return subprocess.run([program, "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True)


def test_compose_file_matches_the_compose_spec() -> None:
    result = check_jsonschema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    volumes:\n", "    volume:\n", 1))
    result = check_jsonschema(broken)
    assert result.returncode != 0
    assert "volume" in result.stdout


def mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(source on this machine, path in the container) of each bind mount (short syntax)."""
    found = []
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        assert source.startswith("."), f"{volume}: the demo mounts only files of the repository"
        found.append(((COMPOSE_DIR / source).resolve(), target))
    return found


def test_every_mounted_file_and_the_build_context_exist() -> None:
    services = compose()["services"]
    assert set(services) == {"exporter", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        for source, target in mounts(service):
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
    context = COMPOSE_DIR / services["exporter"]["build"]["context"]
    assert (context / "Dockerfile").is_file()


def container_view(tmp_path: Path, service: str) -> Path:
    """The service's mounts copied to where its container sees them, under a fresh root."""
    root = tmp_path / service
    for source, target in mounts(compose()["services"][service]):
        destination = root / target.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, destination)
        else:
            shutil.copy(source, destination)
    return root


def flag(command: list[str], name: str) -> str:
    (value,) = [part.split("=", 1)[1] for part in command if part.startswith(f"{name}=")]
    return value


def test_prometheus_config_and_its_rules_pass_promtool(tmp_path: Path) -> None:
    service = compose()["services"]["prometheus"]
    config = container_view(tmp_path, "prometheus") / flag(service["command"], "--config.file").lstrip("/")
    result = run_tool("promtool", "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    rule_files = sorted(path.name for path in (REPO / "alerts").glob("*.rules.yml"))
    assert rule_files
    for name in rule_files:  # the rule_files glob found the mounted rules
        assert f"alerts/{name}" in result.stdout + result.stderr


def test_prometheus_scrapes_the_exporter_in_the_alerts_job() -> None:
    config = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "mig-exporter"
    (targets,) = job["static_configs"]
    assert targets["targets"] == ["exporter:9458"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    service = compose()["services"]["alertmanager"]
    config = container_view(tmp_path, "alertmanager") / flag(service["command"], "--config.file").lstrip("/")
    result = run_tool("amtool", "check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("severity", ["critical", "warning", "info"])
def test_demo_routes_each_severity_as_the_shipped_config_does(severity: str) -> None:
    def receiver(config: Path) -> str:
        result = run_tool("amtool", "config", "routes", "test", f"--config.file={config}",
                          f"severity={severity}", "alertname=MigExporterGpuSharedWithoutMig")
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.strip()
    assert receiver(COMPOSE_DIR / "alertmanager.yml") == receiver(REPO / "alerts" / "alertmanager.yml")


def test_grafana_provisions_the_mounted_dashboards_from_the_demo_prometheus(tmp_path: Path) -> None:
    root = container_view(tmp_path, "grafana")
    providers = root / "etc/grafana/provisioning/dashboards/mig-exporter.yml"
    (provider,) = yaml.safe_load(providers.read_text())["providers"]
    dashboards = root / provider["options"]["path"].lstrip("/")
    assert sorted(p.name for p in dashboards.glob("*.json")) == sorted(
        p.name for p in (REPO / "dashboards").glob("*.json"))
    home = compose()["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (root / home.lstrip("/")).is_file()
    datasources = root / "etc/grafana/provisioning/datasources/mig-exporter-demo.yml"
    (source,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"


def test_the_exporter_serves_the_incident() -> None:
    service = compose()["services"]["exporter"]
    args = build_parser().parse_args(service["command"])
    assert args.command == "serve" and args.fleet == "seed-incident" and args.fleet in builtin_names()
    assert serve_config(args).listen_address.port == 9458
    assert service["ports"] == ["127.0.0.1:9458:9458"]
