"""The example Alertmanager configuration: valid for amtool, and routing every shipped alert by severity.

Inhibitions cannot be checked by amtool; ``tests/e2e`` checks them on a running Alertmanager.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alerts.rule_files import ALERTMANAGER_CONFIG, RECEIVER_BY_SEVERITY, AlertingRule, alerting_rules
from alerts.tools import run_tool


def route_test(receiver: str, labels: dict[str, str]) -> int:
    result = run_tool(
        "amtool", "config", "routes", "test",
        f"--config.file={ALERTMANAGER_CONFIG}", f"--verify.receivers={receiver}",
        *(f"{name}={value}" for name, value in labels.items()),
    )
    return result.returncode


def test_config_passes_amtool_check_config() -> None:
    result = run_tool("amtool", "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule.name)
def test_each_alert_reaches_the_receiver_of_its_severity(rule: AlertingRule) -> None:
    labels = {"alertname": rule.name, "instance": "gpu-node-1:9458", "gpu": "0", **rule.labels}
    assert route_test(RECEIVER_BY_SEVERITY[rule.labels["severity"]], labels) == 0


@pytest.mark.parametrize(("severity", "wrong_receiver"), [("critical", "tickets"), ("warning", "pager")])
def test_verify_receivers_rejects_a_wrong_route(severity: str, wrong_receiver: str) -> None:
    # Proves the routing checks above can fail: amtool exits 1 when the receiver differs.
    assert route_test(wrong_receiver, {"alertname": "MigExporterGpuLost", "severity": severity}) == 1


def test_an_alert_without_severity_files_a_ticket() -> None:
    assert route_test("tickets", {"alertname": "SomethingElse", "instance": "gpu-node-1:9458"}) == 0


def test_the_pager_templates_render(tmp_path: Path) -> None:
    # amtool check-config does not parse notification templates; amtool template render does.
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    (pager,) = [r for r in config["receivers"] if r["name"] == RECEIVER_BY_SEVERITY["critical"]]
    pagerduty = pager["pagerduty_configs"][0]
    templates = [pagerduty["description"], *pagerduty["details"].values()]
    empty = tmp_path / "none.tmpl"
    empty.write_text("")
    for text in templates:
        result = run_tool("amtool", "template", "render", f"--template.glob={empty}",
                          f"--template.text={text}")
        assert result.returncode == 0, result.stderr
    broken = run_tool("amtool", "template", "render", f"--template.glob={empty}",
                      "--template.text={{ .Nope }")
    assert broken.returncode != 0  # proves the check above can fail


def test_alerts_are_grouped_per_host_not_per_gpu() -> None:
    # tests/e2e/test_fleet_routing.py proves it on a running Alertmanager with 500 hosts.
    route = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())["route"]
    assert route["group_by"] == ["cluster", "instance"]
    assert all("group_by" not in child for child in route["routes"])
