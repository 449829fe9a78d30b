"""The shipped Alertmanager configuration at fleet size, on Debian's real Alertmanager: 500 hosts
whose 4 GPUs are each shared without MIG (2,000 critical alerts, with 1,000 spanning warnings
beside them) must page once per host, each page listing that host's four GPUs, and file no ticket
for the spanning warnings of the same incident.

The alerts are posted to Alertmanager's API as Prometheus posts them, one GPU of every host per
batch, with the labels the rules give them. Only group_wait (long enough for every batch to land)
and group_interval (long enough that nothing is sent twice during the test) are changed, and the
receivers become webhooks to a local sink.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml
from alerts.rule_files import ALERTMANAGER_CONFIG
from alerts.tools import required_binary

from e2e.servers import Server, Servers, free_port, wait_until
from e2e.webhook_sink import WebhookSink

pytestmark = pytest.mark.e2e

HOSTS = 500
GPUS = 4
PIDS = ("78914", "81007")  # the incident's two processes, on every GPU of every host (seed/README.md)
GROUP_WAIT = "15s"
DEADLINE_SECONDS = 120


def host(number: int) -> str:
    return f"gpu-node-{number:03d}:9458"


def sharing_alert(number: int, gpu: int, ends: str) -> dict[str, Any]:
    labels = {"alertname": "MigExporterGpuSharedWithoutMig", "severity": "critical", "job": "mig-exporter",
              "instance": host(number), "gpu": str(gpu), "uuid": f"GPU-{number:03d}-{gpu}"}
    return {"labels": labels, "endsAt": ends,
            "annotations": {"summary": "A GPU is shared by several processes with MIG disabled.",
                            "description": f"GPU {gpu} on {host(number)} is shared by 2 processes: "
                                           f"PID {PIDS[0]} (python), PID {PIDS[1]} (python)."}}


def spanning_alert(number: int, pid: str, ends: str) -> dict[str, Any]:
    labels = {"alertname": "MigExporterProcessSpanningGpus", "severity": "warning", "job": "mig-exporter",
              "instance": host(number), "pid": pid, "process_name": "python"}
    return {"labels": labels, "endsAt": ends, "annotations": {"summary": "A process holds memory on more "
                                                                         "than one GPU."}}


def fleet_config(webhook: WebhookSink) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for route in (config["route"], *config["route"]["routes"]):
        if "group_wait" in route or route is config["route"]:
            route.update(group_wait=GROUP_WAIT, group_interval="1h")
    for receiver in config["receivers"]:
        if len(receiver) > 1:
            name = receiver["name"]
            receiver.clear()
            receiver.update(name=name, webhook_configs=[{"url": f"{webhook.url}/{name}"}])
    return config


@pytest.fixture(scope="module")
def fleet_alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, WebhookSink]]:
    directory = tmp_path_factory.mktemp("fleet-routing")
    binary = required_binary("prometheus-alertmanager")
    servers = Servers(directory)
    webhook = WebhookSink()
    webhook.start()
    try:
        port = free_port()
        config = directory / "alertmanager.yml"
        config.write_text(yaml.safe_dump(fleet_config(webhook)))
        alertmanager = servers.start("alertmanager", [
            binary, f"--config.file={config}", f"--storage.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
        ], port, "/-/ready")
        ends = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
        batches = [[sharing_alert(n, gpu, ends) for n in range(HOSTS)] for gpu in range(GPUS)]
        batches += [[spanning_alert(n, pid, ends) for n in range(HOSTS)] for pid in PIDS]
        for batch in batches:
            requests.post(f"{alertmanager.url}/api/v2/alerts", json=batch, timeout=30).raise_for_status()
        wait_until(lambda: len(pages(webhook)) >= HOSTS, DEADLINE_SECONDS, f"{HOSTS} pages", servers)
        yield alertmanager, webhook
    finally:
        servers.stop_all()
        webhook.stop()


def pages(webhook: WebhookSink) -> list[dict[str, Any]]:
    return [n for n in webhook.notifications() if n["receiver"] == "pager"]


def test_two_thousand_sharing_alerts_are_one_page_per_host(
    fleet_alertmanager: tuple[Server, WebhookSink],
) -> None:
    alertmanager, webhook = fleet_alertmanager
    sent = pages(webhook)
    assert len(sent) == HOSTS  # not 2,000
    assert len({page["groupKey"] for page in sent}) == HOSTS
    assert sorted(page["groupLabels"]["instance"] for page in sent) == [host(n) for n in range(HOSTS)]
    for page in sent:  # every GPU of the host is inside its one page
        gpus = sorted(alert["labels"]["gpu"] for alert in page["alerts"])
        assert gpus == [str(gpu) for gpu in range(GPUS)], page["groupLabels"]
        assert {alert["labels"]["instance"] for alert in page["alerts"]} == {page["groupLabels"]["instance"]}
        assert all("PID 78914 (python), PID 81007 (python)" in alert["annotations"]["description"]
                   for alert in page["alerts"])
    groups = requests.get(f"{alertmanager.url}/api/v2/alerts/groups", timeout=30).json()
    per_receiver = Counter(group["receiver"]["name"] for group in groups if group["alerts"])
    assert per_receiver["pager"] == HOSTS
    assert max(len(group["alerts"]) for group in groups if group["receiver"]["name"] == "pager") == GPUS


def test_the_spanning_warnings_of_the_same_hosts_file_no_ticket(
    fleet_alertmanager: tuple[Server, WebhookSink],
) -> None:
    alertmanager, webhook = fleet_alertmanager
    assert [n for n in webhook.notifications() if n["receiver"] == "tickets"] == []
    alerts = requests.get(f"{alertmanager.url}/api/v2/alerts", timeout=30,
                          params={"filter": 'alertname="MigExporterProcessSpanningGpus"'}).json()
    assert len(alerts) == HOSTS * len(PIDS)
    assert {alert["status"]["state"] for alert in alerts} == {"suppressed"}
    assert all(alert["status"]["inhibitedBy"] for alert in alerts)
