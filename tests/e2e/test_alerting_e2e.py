"""End to end with real servers: mig-exporter on simulated fleets, Debian's Prometheus evaluating
the shipped rules, Debian's Alertmanager routing them with the shipped configuration.

The incident (a copy of the built-in ``seed-incident`` fleet) must page through Alertmanager with
the labels and annotations of the rules, then resolve once the fleet file says the GPUs are no
longer shared. A host left half-way through the runbook (``mig-pending``) must raise its warnings,
and a well-run one (``h100-mixed``) nothing but the warning on its injected NVML error; an
exporter whose first NVML read hangs must warn that its collections are stale; a host with health
problems (XID, throttling, row remapping, two processes computing on one GPU) must raise exactly
their alerts. Every dashboard panel query, variables set to All, must return data from the same
Prometheus; ``h100-mixed`` (MIG instances, plus an injected NVML error) and the health host (GPM,
per-process utilization, XID) feed the panels the incident has nothing for. Only the ``for:``
windows (covered by the promtool tests) and the Alertmanager timers are shortened; receivers
become webhooks to a local sink.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from alerts.rule_files import (
    ALERTMANAGER_CONFIG,
    ALERTS_DIR,
    RECEIVER_BY_SEVERITY,
    alerting_rules,
    rule_files,
)
from alerts.tools import required_binary
from dashboards.grafana import PanelQuery, all_values, dashboard_files, load, panel_queries, substitute

from e2e.servers import Server, Servers, free_port, wait_until
from e2e.webhook_sink import WebhookSink

pytestmark = pytest.mark.e2e

SCRAPE_SECONDS = 1
COLLECT_INTERVAL = "1s"
SHORT_FOR = "1s"
DEADLINE_SECONDS = 90
SHARING = "MigExporterGpuSharedWithoutMig"
SPANNING = "MigExporterProcessSpanningGpus"
# seed/README.md: PIDs 78914 and 81007 on all four GPUs. The fix keeps 78914 alone on GPU 0.
INCIDENT_PIDS = ("78914", "81007")
INCIDENT_GPUS = {"0", "1", "2", "3"}
KEPT_PID = 78914
# An NVML call the reader makes for every GPU, failing on one GPU of h100-mixed, so that the
# collection-errors panel has a counter to rate.
INJECTED_FAULT = {"call": "nvmlDeviceGetPowerUsage", "gpu": 0, "error": "UNKNOWN"}
RULES = {rule.name: rule for rule in alerting_rules()}
# A host with health problems on both GPUs (docs/fleet-telemetry.md): an H100 partitioned with MIG,
# busy (GPM), that reported XID 79, throttles and has a row remapping pending; and an A100
# without MIG shared by two processes that both compute, whose row remapping failed.
HEALTH_FLEET = {"gpus": [
    {"model": "H100-SXM5-80GB", "mig": "enabled", "persistence": True,
     "instances": [{"profile": "3g.40gb", "gpm": {"sm_util_percent": 70, "sm_occupancy_percent": 40,
                                                  "tensor_util_percent": 50, "dram_bw_util_percent": 30},
                    "processes": [{"pid": 6001, "name": "trainer", "used_memory_mib": 20000}]},
                   {"profile": "2g.20gb", "gpm": {"sm_util_percent": 20}}],
     "xid_events": [{"xid": 79, "after_seconds": 1}],
     "health": {"clock_event_reasons": ["hw_thermal_slowdown"], "remapped_rows": {"pending": True}}},
    {"model": "A100-SXM4-80GB", "persistence": True,
     "processes": [{"pid": 7001, "name": "server-a", "used_memory_mib": 9000, "sm_util_percent": 87,
                    "mem_util_percent": 41},
                   {"pid": 7002, "name": "server-b", "used_memory_mib": 8000, "sm_util_percent": 40,
                    "mem_util_percent": 12}],
     "health": {"remapped_rows": {"uncorrectable": 1, "failure": True}}},
]}
# A host whose NVML hangs from the start: the first collection never finishes.
HUNG_FLEET = {"gpus": [{"model": "A100-SXM4-80GB"}],
              "faults": [{"call": "nvmlSystemGetDriverVersion", "delay_seconds": 3600}]}


@dataclass(frozen=True)
class Stack:
    servers: Servers
    webhook: WebhookSink
    prometheus: Server
    alertmanager: Server
    seed_fleet: Path
    seed_instance: str  # each exporter's `instance` label
    mixed_instance: str
    pending_instance: str
    hung_instance: str
    health_instance: str
    started_at: float


def fleet(name: str) -> dict[str, Any]:
    """A built-in fleet as `mig-exporter fleet show` prints it, ready to save and edit."""
    shown = subprocess.run([sys.executable, "-m", "mig_exporter", "fleet", "show", name],
                           capture_output=True, text=True, timeout=60, check=True)
    document: dict[str, Any] = yaml.safe_load(shown.stdout)
    return document


def write_atomically(path: Path, document: dict[str, Any]) -> None:
    """The exporter re-reads the fleet file when it changes: it must never see half of one."""
    partial = path.with_suffix(".partial")
    partial.write_text(yaml.safe_dump(document, sort_keys=False))
    os.replace(partial, path)


def rules_with_short_for(directory: Path) -> list[Path]:
    """Copies of the shipped rule files with every `for:` cut to SHORT_FOR."""
    copies = []
    for path in rule_files():
        if path.parent != ALERTS_DIR:  # examples are not loaded by default
            continue
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = SHORT_FOR
        copy = directory / path.name
        copy.write_text(yaml.safe_dump(document, sort_keys=False, width=10_000))
        copies.append(copy)
    return copies


def alertmanager_config(webhook: WebhookSink) -> dict[str, Any]:
    """The shipped configuration, with quick timers and each notifying receiver turned into a
    webhook to the sink under its own name (routes and inhibitions unchanged)."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["route"].update(group_wait="1s", group_interval="1s")
    for receiver in config["receivers"]:
        if len(receiver) > 1:
            name = receiver["name"]
            receiver.clear()
            webhook_config = {"url": f"{webhook.url}/{name}", "send_resolved": True}
            receiver.update(name=name, webhook_configs=[webhook_config])
    return config


def prometheus_config(rules: list[Path], alertmanager_port: int, targets: list[str]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "rule_files": [str(path) for path in rules],
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]},
        ]},
        "scrape_configs": [{"job_name": "mig-exporter", "static_configs": [{"targets": targets}]}],
    }


def start_exporter(servers: Servers, name: str, fleet_spec: Path | str) -> str:
    port = free_port()
    servers.start(name, [sys.executable, "-m", "mig_exporter", "serve", "--fleet", str(fleet_spec),
                         "--web.listen-address", f"127.0.0.1:{port}", "--collect.interval", COLLECT_INTERVAL],
                  port, "/metrics")
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("e2e")
    prometheus_binary = required_binary("prometheus")
    alertmanager_binary = required_binary("prometheus-alertmanager")
    servers = Servers(directory)
    webhook = WebhookSink()
    webhook.start()
    try:
        seed_fleet = directory / "seed-incident.yaml"
        write_atomically(seed_fleet, fleet("seed-incident"))
        mixed_fleet = directory / "h100-mixed.yaml"
        write_atomically(mixed_fleet, {**fleet("h100-mixed"), "faults": [INJECTED_FAULT]})
        started_at = time.time()
        seed_instance = start_exporter(servers, "exporter-seed-incident", seed_fleet)
        mixed_instance = start_exporter(servers, "exporter-h100-mixed", mixed_fleet)
        pending_instance = start_exporter(servers, "exporter-mig-pending", "mig-pending")
        hung_fleet = directory / "hung.yaml"
        write_atomically(hung_fleet, HUNG_FLEET)
        hung_instance = start_exporter(servers, "exporter-hung", hung_fleet)
        health_fleet = directory / "health.yaml"
        write_atomically(health_fleet, HEALTH_FLEET)
        health_instance = start_exporter(servers, "exporter-health", health_fleet)

        alertmanager_port = free_port()
        alertmanager_file = directory / "alertmanager.yml"
        alertmanager_file.write_text(yaml.safe_dump(alertmanager_config(webhook)))
        alertmanager = servers.start("alertmanager", [
            alertmanager_binary, f"--config.file={alertmanager_file}",
            f"--storage.path={directory / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{alertmanager_port}", "--cluster.listen-address=",
        ], alertmanager_port, "/-/ready")

        rules = rules_with_short_for(directory)
        prometheus_port = free_port()
        prometheus_file = directory / "prometheus.yml"
        targets = [seed_instance, mixed_instance, pending_instance, hung_instance, health_instance]
        prometheus_file.write_text(yaml.safe_dump(prometheus_config(rules, alertmanager_port, targets)))
        prometheus = servers.start("prometheus", [
            prometheus_binary, f"--config.file={prometheus_file}",
            f"--storage.tsdb.path={directory / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}", "--rules.alert.resend-delay=1s",
        ], prometheus_port, "/-/ready")
        yield Stack(servers, webhook, prometheus, alertmanager, seed_fleet,
                    seed_instance, mixed_instance, pending_instance, hung_instance, health_instance,
                    started_at)
    finally:
        servers.stop_all()
        webhook.stop()


def alertmanager_alerts(stack: Stack, instance: str) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds for one host (active or inhibited; not resolved)."""
    response = requests.get(f"{stack.alertmanager.url}/api/v2/alerts",
                            params={"filter": f'instance="{instance}"'}, timeout=5)
    response.raise_for_status()
    alerts: list[dict[str, Any]] = response.json()
    return alerts


def incident_alertnames(stack: Stack) -> set[str]:
    return {alert["labels"]["alertname"] for alert in alertmanager_alerts(stack, stack.seed_instance)}


def instant(stack: Stack, query: str) -> list[dict[str, Any]]:
    response = requests.get(f"{stack.prometheus.url}/api/v1/query", params={"query": query}, timeout=10)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


def incident_alerts(stack: Stack) -> list[dict[str, Any]] | None:
    """The incident's alerts once all of them are in Alertmanager: one sharing alert per GPU and
    one spanning alert per PID."""
    alerts = alertmanager_alerts(stack, stack.seed_instance)
    sharing_gpus = {a["labels"].get("gpu") for a in alerts if a["labels"]["alertname"] == SHARING}
    spanning_pids = {a["labels"].get("pid") for a in alerts if a["labels"]["alertname"] == SPANNING}
    complete = sharing_gpus == INCIDENT_GPUS and spanning_pids == set(INCIDENT_PIDS)
    return alerts if complete else None


def notified_gpus(stack: Stack, status: str) -> set[str]:
    """The incident host's GPUs whose sharing alert the pager was sent with this status."""
    return {
        alert["labels"]["gpu"]
        for notification in stack.webhook.notifications()
        if notification["receiver"] == "pager"
        for alert in notification["alerts"]
        if alert["status"] == status and alert["labels"]["alertname"] == SHARING
        and alert["labels"]["instance"] == stack.seed_instance
    }


def test_the_incident_pages_through_alertmanager_then_resolves(stack: Stack) -> None:
    alerts = wait_until(lambda: incident_alerts(stack), DEADLINE_SECONDS,
                        "the sharing and spanning alerts of the incident in Alertmanager", stack.servers)
    # The incident raises exactly these two alerts: nothing else is wrong with its host.
    assert {a["labels"]["alertname"] for a in alerts} == {SHARING, SPANNING}

    on_seed = f'{{instance="{stack.seed_instance}"}}'
    uuids = {s["metric"]["gpu"]: s["metric"]["uuid"] for s in instant(stack, f"nvml_gpu_info{on_seed}")}
    layouts = {s["metric"]["gpu"]: s["metric"]["layout"]
               for s in instant(stack, f"mig_exporter_advised_layout_info{on_seed}")}
    sharing = [a for a in alerts if a["labels"]["alertname"] == SHARING]
    for alert in sharing:
        gpu = alert["labels"]["gpu"]
        assert alert["labels"] == {"alertname": SHARING, "severity": "critical", "job": "mig-exporter",
                                   "instance": stack.seed_instance, "gpu": gpu, "uuid": uuids[gpu]}
        annotations = alert["annotations"]
        assert annotations["summary"] == RULES[SHARING].annotations["summary"]
        assert annotations["runbook_url"] == RULES[SHARING].annotations["runbook_url"]
        description = annotations["description"]
        assert description.startswith(f"GPU {gpu} ({uuids[gpu]}) on {stack.seed_instance} is shared by 2 "
                                      "processes with MIG disabled: PID 78914 (python), PID 81007 (python).")
        # One advice, diagnose's: both processes into MIG instances of GPU 0, GPUs 1-3 freed.
        if gpu == "0":
            assert len(layouts[gpu].split(",")) == len(INCIDENT_PIDS)
            assert f"`mig-exporter remediate --gpu {gpu} --layout {layouts[gpu]}`" in description
        else:
            assert gpu not in layouts
            assert f"MIG instances on GPU 0 ({layouts['0']}), which frees this GPU" in description
        assert alert["status"]["state"] == "active"
        assert [r["name"] for r in alert["receivers"]] == [RECEIVER_BY_SEVERITY["critical"]]

    sharing_fingerprints = {a["fingerprint"] for a in sharing}
    for alert in (a for a in alerts if a["labels"]["alertname"] == SPANNING):
        pid = alert["labels"]["pid"]
        assert alert["labels"] == {"alertname": SPANNING, "severity": "warning", "job": "mig-exporter",
                                   "instance": stack.seed_instance, "pid": pid, "process_name": "python"}
        assert alert["annotations"]["summary"] == RULES[SPANNING].annotations["summary"]
        assert alert["annotations"]["runbook_url"] == RULES[SPANNING].annotations["runbook_url"]
        description = alert["annotations"]["description"]
        assert description.startswith(
            f"PID {pid} (python) on {stack.seed_instance} holds memory on 4 GPUs: 0, 1, 2, 3. "
            "Next, on that host: `mig-exporter diagnose`")
        # The page for the shared GPUs mutes the spanning warning of the same host.
        assert alert["status"]["state"] == "suppressed"
        assert set(alert["status"]["inhibitedBy"]) <= sharing_fingerprints and alert["status"]["inhibitedBy"]

    wait_until(lambda: notified_gpus(stack, "firing") >= INCIDENT_GPUS, DEADLINE_SECONDS,
               "the pager webhook to be notified of every shared GPU", stack.servers)

    # The fix: 81007 gone, 78914 alone on GPU 0. The exporter re-reads the changed fleet file.
    fixed = yaml.safe_load(stack.seed_fleet.read_text())
    for index, gpu_entry in enumerate(fixed["gpus"]):
        kept = [p for p in gpu_entry.get("processes", []) if p["pid"] == KEPT_PID]
        gpu_entry["processes"] = kept if index == 0 else []
    write_atomically(stack.seed_fleet, fixed)

    wait_until(lambda: not incident_alertnames(stack) & {SHARING, SPANNING}, DEADLINE_SECONDS,
               "the incident's alerts to resolve in Alertmanager", stack.servers)
    wait_until(lambda: notified_gpus(stack, "resolved") >= INCIDENT_GPUS, DEADLINE_SECONDS,
               "the pager webhook to be notified that every GPU is resolved", stack.servers)
    assert instant(stack, f"nvml_gpu_unpartitioned_sharing{on_seed} == 1") == []


def test_a_half_done_runbook_raises_its_warnings_and_a_well_run_host_nothing(stack: Stack) -> None:
    # mig-pending: GPU 0 waits for a reset to enable MIG; GPU 1 has MIG on, no instance and
    # persistence off; GPU 2 is partitioned and healthy.
    expected = {("MigExporterMigModePending", "0"), ("MigExporterMigWithoutInstances", "1"),
                ("MigExporterPersistenceModeOff", "1")}

    def raised() -> list[dict[str, Any]] | None:
        alerts = alertmanager_alerts(stack, stack.pending_instance)
        found = {(a["labels"]["alertname"], a["labels"].get("gpu")) for a in alerts}
        return alerts if found >= expected else None

    alerts = wait_until(raised, DEADLINE_SECONDS, "the mig-pending host's warnings in Alertmanager",
                        stack.servers)
    assert {(a["labels"]["alertname"], a["labels"].get("gpu")) for a in alerts} == expected
    for alert in alerts:
        labels, description = alert["labels"], alert["annotations"]["description"]
        severity = RULES[labels["alertname"]].labels["severity"]
        assert labels["severity"] == severity
        assert [r["name"] for r in alert["receivers"]] == [RECEIVER_BY_SEVERITY[severity]]
        assert description.startswith(f"GPU {labels['gpu']} ({labels['uuid']}) on {stack.pending_instance} ")
    # h100-mixed is well run; its only alert is the NVML call the test makes fail in every
    # collection (issue 11: a persistent collection error warns, since its values are absent).
    def mixed_alerts() -> set[tuple[str, str | None]] | None:
        found = {(a["labels"]["alertname"], a["labels"].get("call"))
                 for a in alertmanager_alerts(stack, stack.mixed_instance)}
        return found or None

    found = wait_until(mixed_alerts, DEADLINE_SECONDS, "the h100-mixed host's collection-error warning",
                       stack.servers)
    assert found == {("MigExporterCollectionErrors", INJECTED_FAULT["call"])}


def test_an_exporter_whose_first_collection_hangs_warns_that_its_collections_are_stale(stack: Stack) -> None:
    name = "MigExporterCollectionsStale"
    alerts = wait_until(lambda: alertmanager_alerts(stack, stack.hung_instance), DEADLINE_SECONDS,
                        "the hung exporter's alert in Alertmanager", stack.servers)
    (alert,) = alerts
    assert alert["labels"] == {"alertname": name, "severity": "warning", "job": "mig-exporter",
                               "instance": stack.hung_instance}
    assert alert["annotations"]["description"].startswith(
        f"No collection of mig-exporter on {stack.hung_instance} has finished since it started: ")
    assert alert["annotations"]["runbook_url"] == RULES[name].annotations["runbook_url"]
    assert [r["name"] for r in alert["receivers"]] == [RECEIVER_BY_SEVERITY["warning"]]


def test_a_host_with_health_problems_raises_exactly_their_alerts(stack: Stack) -> None:
    expected = {("MigExporterGpuXidNeedsReset", "0"), ("MigExporterRowRemapPending", "0"),
                ("MigExporterGpuClocksThrottled", "0"), ("MigExporterRowRemapFailure", "1"),
                ("MigExporterGpuSharedWithoutMig", "1"), ("MigExporterGpuContention", "1")}

    def raised() -> list[dict[str, Any]] | None:
        alerts = alertmanager_alerts(stack, stack.health_instance)
        found = {(a["labels"]["alertname"], a["labels"].get("gpu")) for a in alerts}
        return alerts if found >= expected else None

    alerts = wait_until(raised, DEADLINE_SECONDS, "the health host's alerts in Alertmanager", stack.servers)
    by_name = {a["labels"]["alertname"]: a for a in alerts}
    assert {(a["labels"]["alertname"], a["labels"].get("gpu")) for a in alerts} == expected
    assert (by_name["MigExporterGpuXidNeedsReset"]["labels"]["xid"],
            by_name["MigExporterGpuClocksThrottled"]["labels"]["reason"]) == ("79", "hw_thermal_slowdown")
    contention = by_name["MigExporterGpuContention"]["annotations"]["description"]
    assert ("has 2 processes computing at once with MIG disabled: PID 7001 (server-a) 87% of the SMs, "
            "PID 7002 (server-b) 40% of the SMs.") in contention
    for alert in alerts:
        severity = RULES[alert["labels"]["alertname"]].labels["severity"]
        assert alert["labels"]["severity"] == severity
        assert alert["annotations"]["description"].startswith(f"GPU {alert['labels']['gpu']} (")
    # the warnings of each GPU are muted by its critical (the XID page, the failed remapping)
    assert {a["labels"]["alertname"] for a in alerts if a["status"]["state"] == "suppressed"} == {
        "MigExporterRowRemapPending", "MigExporterGpuClocksThrottled", "MigExporterGpuContention"}


def test_a_critical_mutes_the_warnings_of_its_gpu_and_no_other(stack: Stack) -> None:
    # A lost GPU whose MIG mode was left pending: the page says it all, the ticket would be noise.
    # The same warning on another GPU of that host still files its ticket. Posted straight to
    # Alertmanager (as Prometheus would) under a host no exporter serves.
    host = "gpu-node-inhibit:9458"

    def alert(name: str, gpu: str) -> dict[str, Any]:
        severity = RULES[name].labels["severity"]
        return {"labels": {"alertname": name, "severity": severity, "job": "mig-exporter",
                           "instance": host, "gpu": gpu}}

    posted = [alert("MigExporterGpuLost", "2"), alert("MigExporterMigModePending", "2"),
              alert("MigExporterMigModePending", "3")]
    requests.post(f"{stack.alertmanager.url}/api/v2/alerts", json=posted, timeout=5).raise_for_status()

    def settled() -> dict[tuple[str, str], dict[str, Any]] | None:
        alerts = {(a["labels"]["alertname"], a["labels"]["gpu"]): a["status"]
                  for a in alertmanager_alerts(stack, host)}
        return alerts if len(alerts) == len(posted) and all(
            status["state"] != "unprocessed" for status in alerts.values()) else None

    states = wait_until(settled, DEADLINE_SECONDS, "the posted alerts to be processed", stack.servers)
    assert states[("MigExporterGpuLost", "2")]["state"] == "active"
    assert states[("MigExporterMigModePending", "2")]["state"] == "suppressed"
    assert states[("MigExporterMigModePending", "2")]["inhibitedBy"]
    assert states[("MigExporterMigModePending", "3")]["state"] == "active"


DASHBOARDS = {dashboard["uid"]: dashboard for dashboard in map(load, dashboard_files())}


@pytest.mark.parametrize("query", panel_queries(), ids=lambda q: f"{q.dashboard}/{q.panel}/{q.ref_id}")
def test_every_dashboard_panel_query_returns_data(stack: Stack, query: PanelQuery) -> None:
    # Grafana's $__rate_interval: four scrape intervals at least.
    variables = {**all_values(DASHBOARDS[query.dashboard]), "__rate_interval": f"{4 * SCRAPE_SECONDS}s"}
    expr = substitute(query.expr, variables)

    def series() -> list[dict[str, Any]] | None:
        # Over the whole run, as Grafana would over its time range: the incident's spanning
        # processes are gone once the other test has fixed the fleet.
        window = {"query": expr, "start": str(stack.started_at), "end": str(time.time()),
                  "step": f"{SCRAPE_SECONDS}s"}
        response = requests.get(f"{stack.prometheus.url}/api/v1/query_range", params=window, timeout=10)
        assert response.status_code == 200, f"{expr}: {response.text}"
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result or None

    wait_until(series, DEADLINE_SECONDS, f"data for {query.dashboard} / {query.panel}: {expr}", stack.servers)
