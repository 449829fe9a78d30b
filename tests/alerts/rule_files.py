"""The shipped alert rules, their promtool unit tests and the example Alertmanager configuration.

The alert tests check conventions and unit-test coverage over these; the end-to-end test loads
the same files into a real Prometheus and Alertmanager.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import promql_parser
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS_DIR = REPO / "alerts"
UNIT_TESTS_DIR = ALERTS_DIR / "tests"
RUNBOOK = REPO / "docs" / "runbook.md"
ALERTMANAGER_CONFIG = ALERTS_DIR / "alertmanager.yml"
# How alerts/alertmanager.yml routes each severity: critical pages, warning files a ticket, info
# notifies nobody.
RECEIVER_BY_SEVERITY = {"critical": "pager", "warning": "tickets", "info": "none"}


@dataclass(frozen=True)
class AlertingRule:
    name: str
    expr: str
    for_: timedelta
    labels: dict[str, str]
    annotations: dict[str, str]
    path: Path


@dataclass(frozen=True)
class AlertRuleTest:
    """One ``alert_rule_test`` entry of a promtool unit-test group."""

    group: str  # the test group's name: cases in one group share their input series
    eval_time: timedelta
    alertname: str
    exp_alerts: tuple[dict[str, Any], ...]
    rule_files: tuple[Path, ...]  # what the test file loads


def rule_files() -> list[Path]:
    """Every YAML file under alerts/ that is a Prometheus rule file (has top-level ``groups``),
    so that a rule file added under any name is covered."""
    return sorted(
        path
        for path in ALERTS_DIR.rglob("*.yml")
        if path.parent != UNIT_TESTS_DIR and "groups" in (yaml.safe_load(path.read_text()) or {})
    )


def alerting_rules() -> list[AlertingRule]:
    found = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    found.append(AlertingRule(
                        name=rule["alert"],
                        expr=rule["expr"],
                        for_=promql_parser.parse_duration(rule["for"]) if "for" in rule else timedelta(0),
                        labels=rule.get("labels", {}),
                        annotations=rule.get("annotations", {}),
                        path=path,
                    ))
    return found


def unit_test_files() -> list[Path]:
    return sorted(UNIT_TESTS_DIR.glob("*.test.yml"))


def alert_rule_tests() -> list[AlertRuleTest]:
    found = []
    for path in unit_test_files():
        document = yaml.safe_load(path.read_text())
        loaded = tuple((path.parent / name).resolve() for name in document["rule_files"])
        for group in document["tests"]:
            for case in group.get("alert_rule_test", []):
                found.append(AlertRuleTest(
                    group=f"{path.name}: {group.get('name', '')}",
                    eval_time=promql_parser.parse_duration(case["eval_time"]),
                    alertname=case["alertname"],
                    exp_alerts=tuple(case.get("exp_alerts") or ()),
                    rule_files=loaded,
                ))
    return found
