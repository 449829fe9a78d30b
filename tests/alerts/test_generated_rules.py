"""The rule files are generated from alerts/templates/ (scripts/generate-rules): no drift, and the
scrape job's selector, the one thing left open, reaches every series selector of every rule."""

from __future__ import annotations

import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from alerts.rule_files import ALERTS_DIR, REPO
from alerts.test_alert_rules import SERIES_NAME, served_series_names
from alerts.tools import run_tool

GENERATOR = REPO / "scripts" / "generate-rules"
# The exemptions example is the operator's own list of names, not a rule over the exporter's series.
NOT_GENERATED = {ALERTS_DIR / "examples" / "spanning-exemptions.rules.yml"}
CUSTOM = 'job="gpu-nodes",cluster="eu-1"'


def generate(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GENERATOR), *arguments], capture_output=True, text=True,
                          timeout=60)


def vector_selectors(node: Any) -> Iterator[Any]:
    """Every series selector of a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
        return
    for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from vector_selectors(child)
    for argument in getattr(node, "args", None) or ():
        yield from vector_selectors(argument)


def rule_expressions(directory: Path) -> list[tuple[str, str]]:
    return [(rule.get("alert") or rule["record"], rule["expr"])
            for path in sorted(directory.glob("*.rules.yml"))
            for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def test_checked_in_rule_files_are_the_templates_rendered() -> None:
    rendered = runpy.run_path(str(GENERATOR))["rendered"]()
    assert set(rendered) == {p.name for p in ALERTS_DIR.glob("*.rules.yml")}
    drifted = [name for name, text in rendered.items() if (ALERTS_DIR / name).read_text() != text]
    assert drifted == [], "run scripts/generate-rules: these differ from alerts/templates/"


def test_every_series_selector_carries_the_configured_job_selector(tmp_path: Path) -> None:
    result = generate("--selector", CUSTOM, str(tmp_path))
    assert result.returncode == 0, result.stderr
    expressions = rule_expressions(tmp_path)
    assert len(expressions) >= 17
    missing = []
    for name, expr in expressions:
        for selector in vector_selectors(promql_parser.parse(expr)):
            if selector.name == "mig_exporter:spanning_exempt_process_names":  # the operator's own list
                continue
            matchers = {(m.name, m.value) for m in selector.matchers.matchers}
            if not {("job", "gpu-nodes"), ("cluster", "eu-1")} <= matchers:
                missing.append(f"{name}: {selector.prettify()}")
    assert missing == []
    checked = run_tool("promtool", "check", "rules", *map(str, sorted(tmp_path.glob("*.rules.yml"))))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # and no "mig-exporter" job is left anywhere in the expressions
    assert not [name for name, expr in expressions if "mig-exporter" in expr]


@pytest.mark.parametrize("selector", ['job=mig-exporter', 'job="a"}', '', 'job="a",'])
def test_a_selector_that_is_not_label_matchers_is_refused(tmp_path: Path, selector: str) -> None:
    result = generate("--selector", selector, str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"generate-rules: error: --selector {selector}: not PromQL label matchers")
    assert not (tmp_path / "out").exists()


def test_every_rule_file_but_the_examples_is_generated() -> None:
    templates = {p.name.removesuffix(".j2") for p in (ALERTS_DIR / "templates").glob("*.rules.yml.j2")}
    shipped = {p for p in ALERTS_DIR.rglob("*.rules.yml") if p.parent != ALERTS_DIR / "tests"}
    assert {p for p in shipped if p.name not in templates} == NOT_GENERATED


def recording_rules() -> dict[str, str]:
    return {rule["record"]: rule["expr"] for path in sorted(ALERTS_DIR.glob("*.rules.yml"))
            for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "record" in rule}


def test_every_fleet_recording_rule_has_a_promtool_case() -> None:
    tested = {case["expr"].strip()
              for path in sorted((ALERTS_DIR / "tests").glob("*.test.yml"))
              for group in yaml.safe_load(path.read_text())["tests"]
              for case in group.get("promql_expr_test", [])}
    assert len(recording_rules()) >= 7
    assert set(recording_rules()) - tested == set()


def test_recording_rules_select_only_series_the_exporter_serves() -> None:
    served = served_series_names("h100-mixed")
    selected = {name for expr in recording_rules().values() for name in SERIES_NAME.findall(expr)}
    assert selected and selected - served == set()
