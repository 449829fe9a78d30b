"""The alert rules: valid for promtool, conventional, and each one proven by promtool unit tests.

promtool runs the unit tests; this module checks that the tests exist for every alert (a firing
case, a silent case inside ``for:``, a negative case), so an alert added without them fails here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from alerts.rule_files import (
    ALERTS_DIR,
    REPO,
    RUNBOOK,
    AlertingRule,
    alert_rule_tests,
    alerting_rules,
    rule_files,
    unit_test_files,
)
from alerts.tools import run_tool
from mig_exporter.exporter.collector import ExporterSettings
from mig_exporter.exporter.state import ExporterState
from mig_exporter.host import nvml_session
from mig_exporter.nvml.read import read_snapshot

RULES = alerting_rules()
CASES = alert_rule_tests()
RUNBOOK_URL_BASE = "https://github.com/mig-exporter/mig-exporter/blob/main/docs/runbook.md"
PREFIX = "MigExporter"
# Labels that locate a problem; when an alert carries one, its description must name its value.
LOCATING_LABELS = ("instance", "gpu", "uuid", "pid")
# A series name of the exporter's two namespaces, in an expression or an annotation's query.
# (Recording rules, `mig_exporter:…`, have a colon and do not match.)
SERIES_NAME = re.compile(r"\b(?:nvml|mig_exporter)_[a-z0-9_]+\b")


def by_name(rule: AlertingRule) -> str:
    return rule.name


def served_series_names(fleet: str) -> set[str]:
    """The names of the series ``mig-exporter serve`` writes for a simulated fleet, counters with
    their ``_total``, taken from the exposition's TYPE lines (written for every family, even one
    without samples)."""
    with nvml_session(fleet) as session:
        snapshot = read_snapshot(session)
    state = ExporterState(ExporterSettings(interval_seconds=5))
    state.publish(snapshot)
    return set(re.findall(r"^# TYPE (\S+) ", state.exposition.plain.decode(), re.M))


def test_rules_select_only_series_the_exporter_serves() -> None:
    # A renamed series would leave its alert silent for ever: promtool cannot see it, the
    # unit tests feed the old name. h100-mixed has MIG instances and processes: every family.
    served = served_series_names("h100-mixed")
    assert {"nvml_up", "nvml_gpu_lost", "mig_exporter_last_collection_timestamp_seconds"} <= served
    unknown = {}
    for rule in RULES:
        selected = set(SERIES_NAME.findall(" ".join([rule.expr, *rule.annotations.values()])))
        if selected - served:
            unknown[rule.name] = sorted(selected - served)
    assert unknown == {}


def test_rule_files_pass_promtool_check() -> None:
    result = run_tool("promtool", "check", "rules", *map(str, rule_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(rule_files())


def test_unit_tests_pass_promtool() -> None:
    result = run_tool("promtool", "test", "rules", *map(str, unit_test_files()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(unit_test_files())


def test_the_issue_s_alerts_exist() -> None:
    # One per condition the issue lists (sharing, spanning, pending, no instances, persistence,
    # lost GPU, NVML down, stale, target down, target absent).
    assert {rule.name for rule in RULES} >= {
        "MigExporterGpuSharedWithoutMig",
        "MigExporterProcessSpanningGpus",
        "MigExporterMigModePending",
        "MigExporterMigWithoutInstances",
        "MigExporterPersistenceModeOff",
        "MigExporterGpuLost",
        "MigExporterNvmlDown",
        "MigExporterCollectionsStale",
        "MigExporterDown",
        "MigExporterAbsent",
    }


def test_alert_names_are_unique() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("rule", RULES, ids=by_name)
def test_alert_follows_the_mixin_conventions(rule: AlertingRule) -> None:
    assert re.fullmatch(rf"{PREFIX}(?:[A-Z][a-z0-9]+)+", rule.name)
    assert rule.labels["severity"] in {"critical", "warning", "info"}
    assert rule.for_ > timedelta(0), "every condition alert waits a for: window"
    summary = rule.annotations["summary"]
    assert "{{" not in summary and summary[0].isupper() and summary.endswith(".")
    assert "{{ $labels." in rule.annotations["description"]
    assert rule.annotations["runbook_url"] == f"{RUNBOOK_URL_BASE}#{rule.name.lower()}"


@pytest.mark.parametrize("rule", RULES, ids=by_name)
def test_alert_has_firing_silent_and_negative_unit_tests(rule: AlertingRule) -> None:
    cases = [case for case in CASES if case.alertname == rule.name and rule.path in case.rule_files]
    firing = [case for case in cases if case.exp_alerts and case.eval_time >= rule.for_]
    assert firing, f"{rule.name}: no unit test where it fires"
    # Silent inside for: the same input series, less than `for` before a firing evaluation.
    assert any(
        not case.exp_alerts and case.group == fired.group
        and timedelta(0) < fired.eval_time - case.eval_time < rule.for_
        for case in cases for fired in firing
    ), f"{rule.name}: no unit test where it is still silent inside its for: window"
    # Negative: a group whose series never make it fire, checked after `for` has elapsed.
    silent_groups = {case.group for case in cases} - {case.group for case in cases if case.exp_alerts}
    assert any(
        case.group in silent_groups and case.eval_time >= rule.for_ for case in cases
    ), f"{rule.name}: no unit test where it must not fire"


@pytest.mark.parametrize("rule", RULES, ids=by_name)
def test_firing_cases_expect_exact_labels_and_annotations(rule: AlertingRule) -> None:
    expected = [alert for case in CASES if case.alertname == rule.name for alert in case.exp_alerts]
    assert expected
    for alert in expected:
        assert alert["exp_labels"]["severity"] == rule.labels["severity"]
        annotations = alert["exp_annotations"]
        assert set(annotations) == set(rule.annotations)
        assert annotations["summary"] == rule.annotations["summary"]
        description = annotations["description"]
        for label in LOCATING_LABELS:
            if label in alert["exp_labels"]:
                assert str(alert["exp_labels"][label]) in description, (rule.name, label)
        # The exact next command, quoted for copy and paste.
        assert re.search(r"`[^`]+`", description), rule.name


@pytest.mark.parametrize("rule", RULES, ids=by_name)
def test_each_alert_has_a_runbook_section(rule: AlertingRule) -> None:
    runbook = RUNBOOK.read_text()
    section = re.search(rf"^## {rule.name}\n(.*?)(?=^## |\Z)", runbook, re.S | re.M)
    assert section, f"docs/runbook.md has no '## {rule.name}' section"
    headings = re.findall(r"^### (.+)$", section.group(1), re.M)
    assert headings == ["Meaning", "Impact", "Diagnosis", "Mitigation"]


def test_the_runbook_documents_no_alert_that_does_not_exist() -> None:
    documented = set(re.findall(rf"^## ({PREFIX}\w+)$", RUNBOOK.read_text(), re.M))
    assert documented == {rule.name for rule in RULES}


def test_example_prometheus_config_loads_every_rule_file() -> None:
    config = REPO / "deploy" / "prometheus.yml"
    result = run_tool("promtool", "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    checked = {Path(line.split()[1]).resolve()
               for line in result.stdout.splitlines() if line.startswith("Checking ")}
    assert {path for path in rule_files() if path.parent == ALERTS_DIR} <= checked
