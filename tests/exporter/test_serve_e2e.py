"""``mig-exporter serve`` as a subprocess, scraped over real HTTP on a free loopback port: the
incident's series, promtool, a hung NVML call, a lost GPU, an edited fleet file, TLS with basic
auth, and a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from mig_exporter.sim import builtin_text

from .certificates import self_signed
from .snapshots import INCIDENT_MIB, SPANNING_PIDS

# Outside Kubernetes the workload labels are present and empty.
NO_POD = {"namespace": "", "pod": "", "container": ""}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    def __init__(self, process: subprocess.Popen[bytes], base_url: str, **request_options: object) -> None:
        self.process = process
        self.base_url = base_url
        self.request_options = request_options

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base_url + path, timeout=5, **self.request_options)  # type: ignore[arg-type]

    def samples(self) -> Samples:
        response = self.get("/metrics")
        assert response.status_code == 200
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(response.text) for s in family.samples}

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples().get((name, frozenset(labels.items())))


@contextmanager
def serve(fleet: str, *flags: str, scheme: str = "http", **request_options: object) -> Iterator[Served]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mig_exporter", "serve", "--fleet", fleet,
         "--web.listen-address", f"127.0.0.1:{port}", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    served = Served(process, f"{scheme}://127.0.0.1:{port}", **request_options)
    try:
        wait_for(lambda: _answers(served), what="the exporter to answer /health with 200")
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output.decode()


def _answers(served: Served) -> bool:
    try:
        return served.get("/health").status_code == 200
    except requests.ConnectionError:
        assert served.process.poll() is None, served.process.communicate()[0].decode()
        return False


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_seed_incident_through_a_real_scrape() -> None:
    with serve("seed-incident") as served:
        samples = served.samples()
        exposition = served.get("/metrics").content
    uuids = {dict(labels)["gpu"]: dict(labels)["uuid"] for name, labels in samples if name == "nvml_gpu_info"}
    assert sorted(uuids) == ["0", "1", "2", "3"]
    assert samples[("nvml_processes_spanning_gpus", frozenset())] == 2
    for gpu, uuid in uuids.items():
        assert samples[("nvml_gpu_unpartitioned_sharing", frozenset({("gpu", gpu), ("uuid", uuid)}))] == 1
    assert samples[("nvml_process_gpus",
                    frozenset({"pid": "78914", "process_name": "python", **NO_POD}.items()))] == 4
    for gpu, per_pid in INCIDENT_MIB.items():
        for pid, mib in zip(SPANNING_PIDS, per_pid, strict=True):
            labels = {"gpu": str(gpu), "uuid": uuids[str(gpu)], "gpu_instance_id": "",
                      "compute_instance_id": "", "pid": str(pid), "process_name": "python", **NO_POD}
            assert samples[("nvml_process_memory_bytes", frozenset(labels.items()))] == mib * 1048576
    promtool = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True,
                              check=False)
    assert (promtool.returncode, promtool.stdout + promtool.stderr) == (0, b"")


def test_a_hung_nvml_call_keeps_metrics_served_and_turns_health_503(tmp_path: Path) -> None:
    fleet = tmp_path / "hangs.yaml"
    # the second collection's device count hangs for a minute
    fleet.write_text(builtin_text("seed-incident")
                     + "faults:\n  - {call: nvmlDeviceGetCount_v2, delay_seconds: 60, skip: 1}\n")
    with serve(str(fleet), "--collect.interval", "500ms", "--collect.timeout", "500ms") as served:
        wait_for(lambda: served.get("/health").status_code == 503, what="/health to turn 503")
        assert served.get("/health").text.startswith("no collection has finished for ")
        samples = served.samples()  # answered from the last snapshot
        assert samples[("nvml_up", frozenset())] == 1
        assert samples[("nvml_processes_spanning_gpus", frozenset())] == 2
        assert samples[("mig_exporter_collection_timeouts_total", frozenset())] >= 1


def test_xid_errors_are_counted_once_each_while_serving(tmp_path: Path) -> None:
    fleet = tmp_path / "xid.yaml"
    text = builtin_text("seed-incident").split("  - model:")
    text[1] = text[1].replace("mig: disabled\n", "mig: disabled\n    xid_events:\n"
                              "      - {xid: 79, after_seconds: 0.5}\n      - {xid: 48, after_seconds: 1.0}\n"
                              "      - {xid: 48, after_seconds: 1.5}\n", 1)  # GPU 0
    fleet.write_text("  - model:".join(text))
    with serve(str(fleet), "--collect.interval", "500ms") as served:
        def xids() -> dict[tuple[str, str], float]:
            return {(dict(labels)["gpu"], dict(labels)["xid"]): value
                    for (name, labels), value in served.samples().items()
                    if name == "nvml_gpu_xid_errors_total"}

        wait_for(lambda: xids() == {("0", "79"): 1, ("0", "48"): 2}, what="the XID errors to be counted")
        samples = served.samples()
        exposition = served.get("/metrics").content
    supported = {dict(labels)["gpu"]: value for (name, labels), value in samples.items()
                 if name == "nvml_gpu_xid_events_supported"}
    assert supported == {"0": 1, "1": 1, "2": 1, "3": 1}
    promtool = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True,
                              check=False)
    assert (promtool.returncode, promtool.stdout + promtool.stderr) == (0, b"")


def test_gpm_and_health_through_a_real_scrape(tmp_path: Path) -> None:
    fleet = tmp_path / "gpm.yaml"
    fleet.write_text("""gpus:
  - model: H100-SXM5-80GB
    mig: enabled
    instances:
      - {profile: 3g.40gb, placement: 0, gpm: {sm_util_percent: 75, tensor_util_percent: 40}}
      - {profile: 3g.40gb, placement: 4}
  - model: A100-SXM4-80GB
    health:
      clock_event_reasons: [hw_thermal_slowdown]
      remapped_rows: {uncorrectable: 1, pending: true}
      nvlink_errors: {replay: 2}
""")
    with serve(str(fleet), "--collect.interval", "500ms") as served:
        def sm(samples: Samples) -> dict[str, float]:
            return {dict(labels)["gpu_instance_id"]: value for (name, labels), value in samples.items()
                    if name == "nvml_mig_instance_sm_utilization_ratio"}

        wait_for(lambda: sm(served.samples()) != {}, what="the first GPM window")
        samples = served.samples()
        exposition = served.get("/metrics").content
    assert sm(samples) == {"1": pytest.approx(0.75), "2": 0.0}
    tensor = {dict(labels)["gpu"]: value for (name, labels), value in samples.items()
              if name == "nvml_gpu_tensor_utilization_ratio"}
    assert tensor == {"0": pytest.approx(0.40 * 3 / 7)}  # the A100 has none
    assert not [name for name, _ in samples if name == "mig_exporter_collection_errors_total"]
    a100 = {dict(labels)["uuid"] for (name, labels) in samples if name == "nvml_gpu_info"
            and dict(labels)["gpu"] == "1"}.pop()
    for name, labels, value in (
            ("nvml_gpu_clock_event_reason", {"reason": "hw_thermal_slowdown"}, 1),
            ("nvml_gpu_remapped_rows_total", {"cause": "uncorrectable"}, 1),
            ("nvml_gpu_row_remap_pending", {}, 1), ("nvml_gpu_nvlink_errors_total", {"type": "replay"}, 2)):
        assert samples[(name, frozenset({"gpu": "1", "uuid": a100, **labels}.items()))] == value
    promtool = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True,
                              check=False)
    assert (promtool.returncode, promtool.stdout + promtool.stderr) == (0, b"")


def test_a_lost_gpu_leaves_the_others_exported(tmp_path: Path) -> None:
    fleet = tmp_path / "lost.yaml"
    text = builtin_text("seed-incident").split("  - model:")
    text[3] = text[3].replace("mig: disabled\n", "mig: disabled\n    lost: true\n", 1)  # GPU 2
    fleet.write_text("  - model:".join(text))
    with serve(str(fleet)) as served:
        samples = served.samples()
    lost = {dict(labels)["gpu"]: value for (name, labels), value in samples.items()
            if name == "nvml_gpu_lost"}
    assert lost == {"0": 0, "1": 0, "2": 1, "3": 0}
    used = {dict(labels)["gpu"] for name, labels in samples if name == "nvml_gpu_memory_used_bytes"}
    assert used == {"0", "1", "3"}
    # Seen on three GPUs, but the lost one was not read: 3 is a lower bound, so absent (issue 11).
    assert not any(name in {"nvml_process_gpus", "nvml_processes_spanning_gpus"} for name, _ in samples)
    assert ("nvml_process_memory_bytes" in {name for name, _ in samples})


def test_a_driver_not_loaded_at_start_is_served_as_nvml_down_then_recovers(tmp_path: Path) -> None:
    """A kernel module not loaded yet at boot is no reason to exit (only a host without any NVIDIA
    library is): serve says ``nvml_up 0``, with no other NVML series, and NVML is initialised
    again at a later collection."""
    fleet = tmp_path / "late-driver.yaml"
    fleet.write_text(builtin_text("seed-incident")
                     + "faults:\n  - {call: nvmlInitWithFlags, error: DRIVER_NOT_LOADED, count: 6}\n")
    with serve(str(fleet), "--collect.interval", "500ms") as served:
        first = served.samples()
        assert first[("nvml_up", frozenset())] == 0
        assert [name for name, _ in first if name.startswith("nvml_")] == ["nvml_up"]
        wait_for(lambda: served.value("nvml_up") == 1, what="NVML to be initialised again")
        assert served.value("nvml_processes_spanning_gpus") == 2


def test_an_edited_fleet_file_shows_in_the_next_collection(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(builtin_text("seed-incident"))
    with serve(str(fleet), "--collect.interval", "500ms") as served:
        assert served.value("nvml_processes_spanning_gpus") == 2
        fleet.write_text("\n".join(line for line in builtin_text("seed-incident").splitlines()
                                   if "pid: 81007" not in line) + "\n")
        wait_for(lambda: served.value("nvml_processes_spanning_gpus") == 1, what="the edit to show")
        assert served.value("nvml_gpu_unpartitioned_sharing", gpu="0", uuid=next(
            dict(labels)["uuid"] for name, labels in served.samples() if name == "nvml_gpu_info")) == 0


def test_tls_and_basic_auth_from_the_web_config_file(tmp_path: Path) -> None:
    certificate = self_signed(tmp_path, "server")
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    (tmp_path / "web.yml").write_text(f"tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
                                      f"basic_auth_users:\n  prometheus: {hashed}\n")
    with serve("seed-incident", "--web.config.file", str(tmp_path / "web.yml"), scheme="https",
               verify=str(certificate.cert_file), auth=("prometheus", "s3cret")) as served:
        assert served.value("nvml_processes_spanning_gpus") == 2
        anonymous = requests.get(served.base_url + "/metrics", verify=str(certificate.cert_file), timeout=5)
        assert anonymous.status_code == 401


def test_the_max_connections_flag_caps_open_connections() -> None:
    """Issue 11 item 3: 20 idle clients at ``--web.max-connections 8`` leave at most 8 connections
    open in the server process (the ones idle the longest closed first), and scrapes still pass."""
    with serve("seed-incident", "--web.max-connections", "8") as served:
        port = int(served.base_url.rsplit(":", 1)[1])
        server = psutil.Process(served.process.pid)

        def established() -> int:
            return sum(1 for c in server.net_connections(kind="tcp")
                       if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)

        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        try:
            wait_for(lambda: established() == 8, what="the server to hold 8 connections")
            for _ in range(3):
                assert served.get("/metrics").status_code == 200
                assert established() <= 8
            closed = [client for client in idle if _closed_by_server(client)]
            assert len(closed) >= 12 and idle[0] in closed
        finally:
            for client in idle:
                client.close()


def _closed_by_server(client: socket.socket) -> bool:
    client.settimeout(0.2)
    try:
        return client.recv(1) == b""
    except ConnectionResetError:  # an evicted connection is aborted
        return True
    except TimeoutError:
        return False
