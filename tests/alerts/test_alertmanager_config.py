"""The example Alertmanager configuration: valid for amtool, and routing every shipped alert by severity.

Inhibitions cannot be checked by amtool; ``tests/e2e`` checks them on a running Alertmanager.
"""

from __future__ import annotations

import pytest

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
