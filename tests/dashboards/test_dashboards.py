"""The dashboards follow grafana/dashboard-linter's rules (shared/reference/conventions.md).

No Grafana server can run here, so the rules are checked on the JSON, each PromQL query through a
real PromQL parser; ``tests/e2e`` then runs every query against a Prometheus that scraped the
exporter.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import promql_parser
import pytest
import yaml

from dashboards.grafana import (
    DASHBOARDS_DIR,
    PanelQuery,
    all_values,
    dashboard_files,
    load,
    panel_queries,
    panels,
    substitute,
)

DASHBOARDS = [load(path) for path in dashboard_files()]
QUERIES = panel_queries()
# A range no panel would choose, standing for $__rate_interval so the parser can check where it is.
RATE_INTERVAL_STANDIN = timedelta(seconds=4321)
RATE_FUNCTIONS = {"rate", "irate", "increase"}
TEMPLATED_DATASOURCES = (
    {"type": "prometheus", "uid": "${datasource}"}, {"type": "prometheus", "uid": "$datasource"},
)
# Grafana unit ids the dashboards may use (Grafana's valueFormats).
UNITS = {"none", "short", "percent", "percentunit", "bytes", "decbytes", "s", "ms", "celsius", "watt",
         "hertz", "ops", "reqps", "dateTimeAsIso"}
# Deprecated panel types the linter rejects.
LEGACY_PANELS = {"graph", "singlestat", "table-old"}
# Per MIG device series whose value belongs to the GPU instance: summing them over compute instances
# would count a GPU instance once per compute instance.
# GPM values too: the compute instances of one GPU instance carry their GPU instance's
PER_GPU_INSTANCE_SERIES = ("nvml_mig_instance_memory_total_bytes", "nvml_mig_instance_memory_used_bytes",
                           *(f"nvml_mig_instance_{name}_ratio" for name in (
                               "sm_utilization", "sm_occupancy", "tensor_utilization",
                               "dram_bandwidth_utilization")))


def by_uid(dashboard: dict[str, Any]) -> str:
    return str(dashboard["uid"])


def by_panel(query: PanelQuery) -> str:
    return f"{query.dashboard}/{query.panel}/{query.ref_id}"


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def parsed(query: PanelQuery) -> promql_parser.Expr:
    dashboard = next(d for d in DASHBOARDS if d["uid"] == query.dashboard)
    values = {**all_values(dashboard), "__rate_interval": f"{RATE_INTERVAL_STANDIN.seconds}s"}
    return promql_parser.parse(substitute(query.expr, values))


def children(node: promql_parser.Expr) -> list[promql_parser.Expr]:
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        return [node.expr]
    return []


def walk(node: promql_parser.Expr, ancestors: tuple[promql_parser.Expr, ...] = ()) -> Iterator[
        tuple[promql_parser.Expr, tuple[promql_parser.Expr, ...]]]:
    """Every node with its ancestors, nearest last."""
    yield node, ancestors
    for child in children(node):
        yield from walk(child, (*ancestors, node))


def selectors(expr: promql_parser.Expr) -> Iterator[tuple[promql_parser.VectorSelector, tuple[Any, ...]]]:
    for node, ancestors in walk(expr):
        if isinstance(node, promql_parser.VectorSelector):
            yield node, ancestors


def test_there_are_the_dashboards_the_issues_ask_for() -> None:
    assert {d["uid"] for d in DASHBOARDS} == {
        "mig-exporter-fleet", "mig-exporter-gpu", "mig-exporter-processes", "mig-exporter-utilization",
    }


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=by_uid)
def test_dashboard_is_classic_json_with_stable_uid_tags_and_title(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 39
    assert isinstance(dashboard["panels"], list) and "spec" not in dashboard
    assert dashboard["uid"].startswith("mig-exporter-") and len(dashboard["uid"]) <= 40
    assert dashboard["title"].startswith("mig-exporter / ")
    assert "mig-exporter" in dashboard["tags"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    titles = [panel["title"] for panel in panels(dashboard)]
    assert len(titles) == len(set(titles))


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=by_uid)
def test_one_datasource_variable_and_job_instance_variables(dashboard: dict[str, Any]) -> None:
    datasource_variables = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert len(datasource_variables) == 1
    assert datasource_variables[0]["name"] == "datasource"
    assert datasource_variables[0]["query"] == "prometheus"
    named = variables(dashboard)
    for name in ("job", "instance"):
        variable = named[name]
        assert variable["type"] == "query"
        assert variable["datasource"] in TEMPLATED_DATASOURCES
        assert variable["multi"] is True and variable["includeAll"] is True
        assert variable["allValue"] == ".+"
        assert variable["refresh"] == 2, "refresh on time range change"
    assert 'job=~"$job"' in named["instance"]["definition"]


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=by_uid)
def test_every_panel_has_title_description_unit_templated_datasource_and_targets(
    dashboard: dict[str, Any],
) -> None:
    for panel in panels(dashboard):
        assert panel["type"] not in LEGACY_PANELS, panel["title"]
        assert panel["title"] and panel["description"], panel.get("title")
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, panel["title"]
        assert panel["datasource"] in TEMPLATED_DATASOURCES, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] in TEMPLATED_DATASOURCES, panel["title"]
            assert target["expr"].strip(), panel["title"]


@pytest.mark.parametrize("query", QUERIES, ids=by_panel)
def test_every_selector_filters_job_and_instance(query: PanelQuery) -> None:
    for selector, _ in selectors(parsed(query)):
        matchers = {(m.name, str(m.op), m.value) for m in selector.matchers.matchers}
        assert ("job", "MatchOp.Re", ".+") in matchers, (selector.name, "needs job=~\"$job\"")
        assert ("instance", "MatchOp.Re", ".+") in matchers, (selector.name, "needs instance=~\"$instance\"")
    # The same, on the query as written: the variables, not a hard-coded regex.
    assert query.expr.count('job=~"$job"') == query.expr.count('instance=~"$instance"')
    assert query.expr.count('job=~"$job"') == sum(1 for _ in selectors(parsed(query)))


@pytest.mark.parametrize("query", QUERIES, ids=by_panel)
def test_rates_use_rate_interval_and_counters_appear_only_in_rates(query: PanelQuery) -> None:
    for node, ancestors in walk(parsed(query)):
        if isinstance(node, promql_parser.Call) and node.func.name in RATE_FUNCTIONS:
            (matrix,) = [arg for arg in node.args if isinstance(arg, promql_parser.MatrixSelector)]
            assert matrix.range == RATE_INTERVAL_STANDIN, f"{node.func.name}() over $__rate_interval"
        if isinstance(node, promql_parser.VectorSelector) and (node.name or "").endswith("_total"):
            functions = {a.func.name for a in ancestors if isinstance(a, promql_parser.Call)}
            assert functions & RATE_FUNCTIONS, f"{node.name} outside rate()/increase()"


@pytest.mark.parametrize("query", QUERIES, ids=by_panel)
def test_joins_are_parenthesised(query: PanelQuery) -> None:
    # `a + b * on(x) group_left(y) c` joins b alone: each operand of a join and the join itself,
    # inside a larger expression, must be in parentheses.
    for node, ancestors in walk(parsed(query)):
        if not isinstance(node, promql_parser.BinaryExpr):
            continue
        if node.modifier is not None and node.modifier.group_labels:
            for side in (node.lhs, node.rhs):
                assert isinstance(side, (promql_parser.ParenExpr, promql_parser.VectorSelector)), (
                    f"operand of a group_left/group_right join not parenthesised: {side}")
            assert not (ancestors and isinstance(ancestors[-1], promql_parser.BinaryExpr)), (
                f"join not parenthesised inside a larger expression: {ancestors[-1]}")


@pytest.mark.parametrize("query", QUERIES, ids=by_panel)
def test_mig_memory_is_aggregated_per_gpu_instance(query: PanelQuery) -> None:
    for selector, ancestors in selectors(parsed(query)):
        if selector.name in PER_GPU_INSTANCE_SERIES:
            aggregations = [a for a in ancestors if isinstance(a, promql_parser.AggregateExpr)]
            assert aggregations, f"{selector.name} must be aggregated per GPU instance"
            grouping = aggregations[-1].modifier
            assert grouping is not None, f"{selector.name} must be aggregated by gpu_instance_id"
            assert grouping.type == promql_parser.AggModifierType.By
            assert "gpu_instance_id" in grouping.labels
            assert not {"compute_instance_id", "mig_uuid"} & set(grouping.labels)


def test_provisioning_file_provides_the_dashboards_directory() -> None:
    provisioning = yaml.safe_load((DASHBOARDS_DIR / "provisioning.yml").read_text())
    assert provisioning["apiVersion"] == 1
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]


def test_substitute_expands_every_variable_syntax_and_refuses_unknown_ones() -> None:
    values = {"job": ".+", "instance": "a|b", "__rate_interval": "1m"}
    assert substitute('rate(x{job=~"$job",instance=~"${instance}"}[$__rate_interval])', values) == (
        'rate(x{job=~".+",instance=~"a|b"}[1m])')
    assert substitute('x{instance=~"${instance:regex}"}', values) == 'x{instance=~"a|b"}'
    with pytest.raises(KeyError):
        substitute('x{gpu=~"$gpu"}', values)
