"""Debian's real Prometheus scraping ``serve`` over TLS with exporter-toolkit's ``http2: true``.

Prometheus (2.35 and later, ``enable_http2`` true by default) offers ``h2`` in its TLS ALPN and
would scrape over HTTP/2 from a server that picked it; this exporter offers only ``http/1.1``,
so the scrape must settle on HTTP/1.1 and succeed, and the start-up log must say once that
HTTP/2 is not served (issue 11 item 5: exporter-toolkit parity, told truthfully).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from alerts.tools import required_binary
from exporter.certificates import self_signed

from e2e.servers import Server, Servers, free_port, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def start_tls_exporter(servers: Servers, directory: Path) -> tuple[Server, Path]:
    certificate = self_signed(directory, "server")
    web_config = directory / "web.yml"
    web_config.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                          "http_server_config:\n  http2: true\n")
    port = free_port()
    log = directory / "exporter.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mig_exporter", "serve", "--fleet", "seed-incident",
             "--web.listen-address", f"127.0.0.1:{port}", "--web.config.file", str(web_config),
             "--collect.interval", "1s"],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
    exporter = Server("exporter", process, log, f"https://127.0.0.1:{port}")
    servers.started.append(exporter)

    def healthy() -> bool:
        assert process.poll() is None, exporter.log_tail()
        try:
            return requests.get(exporter.url + "/health", verify=str(certificate.cert_file),
                                timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(healthy, 60, "the TLS exporter to answer /health", servers)
    return exporter, certificate.cert_file


def test_prometheus_scrapes_the_tls_exporter_over_http_1_1_and_http2_true_is_warned(tmp_path: Path,
                                                                                   servers: Servers) -> None:
    exporter, ca_file = start_tls_exporter(servers, tmp_path)
    prometheus_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "mig-exporter-tls", "scheme": "https", "tls_config": {"ca_file": str(ca_file)},
            "static_configs": [{"targets": [exporter.url.removeprefix("https://")]}],
        }],
    }))
    prometheus = servers.start("prometheus", [
        required_binary("prometheus"), f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
    ], prometheus_port, "/-/ready")

    def scraped() -> list[dict[str, object]]:
        query = ('nvml_processes_spanning_gpus{job="mig-exporter-tls"} == 2'
                 ' and on() up{job="mig-exporter-tls"} == 1')
        answer = requests.get(f"{prometheus.url}/api/v1/query", params={"query": query}, timeout=5).json()
        results: list[dict[str, object]] = answer["data"]["result"]
        return results

    wait_until(scraped, 60, "Prometheus to scrape the incident over TLS", servers)
    targets = requests.get(f"{prometheus.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]
    warnings = [line for line in exporter.log.read_text().splitlines() if "HTTP/2 is not served" in line]
    assert len(warnings) == 1 and "level=warn" in warnings[0], exporter.log_tail()
