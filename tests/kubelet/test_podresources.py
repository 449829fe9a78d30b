"""The exporter against a real gRPC server speaking the kubelet's pod-resources API on a unix
socket: pods holding MIG devices and a whole GPU of the simulated h100-mixed fleet."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from kubelet.kubelet_server import FakeKubelet, KubeletServer, pod
from mig_exporter.exporter.flags import ListenAddress
from mig_exporter.exporter.service import Exporter, ServeConfig
from mig_exporter.host import nvml_session
from mig_exporter.kubelet.podresources import DeviceAllocation, list_allocations
from mig_exporter.nvml.read import read_snapshot

FLEET = "h100-mixed"
INTERVAL = 0.2
WORKLOAD = ("namespace", "pod", "container")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def devices() -> dict[str, str]:
    """The UUIDs NVML gives for the simulated fleet: GPU 0's two MIG devices, GPU 5 (MIG off)."""
    with nvml_session(FLEET) as session:
        snapshot = read_snapshot(session)
    gpu0, gpu5 = snapshot.gpus[0], snapshot.gpus[5]
    by_gi = {m.gpu_instance_id: m.mig_uuid for m in gpu0.mig_instances}
    assert not gpu5.mig_mode_current
    return {"gpu0": gpu0.uuid, "mig_gi1": by_gi[1], "mig_gi2": by_gi[2], "gpu5": gpu5.uuid}


@pytest.fixture
def kubelet(devices) -> Iterator[KubeletServer]:
    server = KubeletServer(FakeKubelet(pods=[
        pod("ml", "qwen-ocr-7d9f8", {"server": [("nvidia.com/mig-3g.40gb", [devices["mig_gi1"]])],
                                     "sidecar": []}),
        pod("batch", "train-0", {"trainer": [("nvidia.com/gpu", [devices["gpu5"]]),
                                             ("example.com/fpga", ["fpga-7"])]}),
    ]))
    yield server
    server.stop()


def test_list_reads_gpu_and_mig_devices_and_ignores_other_resources(kubelet, devices):
    assert list_allocations(kubelet.socket, 2.0) == {
        devices["mig_gi1"]: DeviceAllocation(devices["mig_gi1"], "nvidia.com/mig-3g.40gb", "ml",
                                             "qwen-ocr-7d9f8", "server"),
        devices["gpu5"]: DeviceAllocation(devices["gpu5"], "nvidia.com/gpu", "batch", "train-0", "trainer"),
    }


@pytest.fixture
def scrape(kubelet) -> Iterator[Callable[[], Samples]]:
    with nvml_session(FLEET) as session:
        exporter = Exporter(session, ServeConfig(ListenAddress("127.0.0.1", 0), interval_seconds=INTERVAL,
                                                 timeout_seconds=5, pod_resources_socket=kubelet.socket))
        exporter.start()

        def scrape() -> Samples:
            text = requests.get(f"http://127.0.0.1:{exporter.server.port}/metrics", timeout=5).text
            return {(s.name, frozenset(s.labels.items())): s.value
                    for family in text_string_to_metric_families(text) for s in family.samples}
        try:
            yield scrape
        finally:
            exporter.stop()


def wait_for(scrape: Callable[[], Samples], condition: Callable[[Samples], bool]) -> Samples:
    deadline = time.monotonic() + 10
    while not condition(samples := scrape()):
        assert time.monotonic() < deadline, "the exporter never got there"
        time.sleep(0.05)
    return samples


def allocated(samples: Samples) -> bool:
    return any(name == "nvml_gpu_allocation_info" for name, _ in samples)


def process_memory(samples: Samples, pid: int) -> dict[str, str]:
    [labels] = [dict(labels) for name, labels in samples
                if name == "nvml_process_memory_bytes" and dict(labels)["pid"] == str(pid)]
    return labels


def workload(labels: dict[str, str]) -> tuple[str, ...]:
    return tuple(labels[k] for k in WORKLOAD)


def test_allocation_series_and_pod_labels(scrape, devices):
    samples = wait_for(scrape, allocated)
    allocations = {dict(labels)["resource"]: dict(labels) for name, labels in samples
                   if name == "nvml_gpu_allocation_info"}
    assert allocations == {
        "nvidia.com/mig-3g.40gb": {"gpu": "0", "uuid": devices["gpu0"], "mig_uuid": devices["mig_gi1"],
                                   "resource": "nvidia.com/mig-3g.40gb", "namespace": "ml",
                                   "pod": "qwen-ocr-7d9f8", "container": "server"},
        "nvidia.com/gpu": {"gpu": "5", "uuid": devices["gpu5"], "mig_uuid": "",
                           "resource": "nvidia.com/gpu", "namespace": "batch", "pod": "train-0",
                           "container": "trainer"},
    }
    # h100-mixed: pid 20101 runs on GPU 0's GPU instance 1, 20102 on instance 2, 25001 on GPU 5
    assert workload(process_memory(samples, 20101)) == ("ml", "qwen-ocr-7d9f8", "server")
    assert workload(process_memory(samples, 20102)) == ("", "", "")  # its device is no pod's
    assert workload(process_memory(samples, 25001)) == ("batch", "train-0", "trainer")
    gpus_of_25001 = [dict(labels) for name, labels in samples
                     if name == "nvml_process_gpus" and dict(labels)["pid"] == "25001"]
    assert [workload(labels) for labels in gpus_of_25001] == [("batch", "train-0", "trainer")]
    assert samples.get(("mig_exporter_collection_errors_total",
                        frozenset({"call": "pod_resources"}.items()))) is None


# Series that change over time on their own: GPM values are measured over windows (and appear
# after the first one), XID support once the event thread registered the GPU, energy as drawn.
OVER_TIME = re.compile(r"nvml_(gpu|mig_instance)_(sm_|tensor_|dram_).*_ratio|nvml_gpu_xid_.*"
                       r"|nvml_gpu_energy_joules_total")


def without_workload(samples: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every NVML series with the workload labels taken off, the allocation series and those
    that change over time on their own left out."""
    return {(name, frozenset((k, v) for k, v in labels if k not in WORKLOAD)): value
            for (name, labels), value in samples.items()
            if name.startswith("nvml_") and name != "nvml_gpu_allocation_info"
            and not OVER_TIME.fullmatch(name)}


def pod_errors(samples: Samples) -> float:
    return samples.get(("mig_exporter_collection_errors_total",
                        frozenset({"call": "pod_resources"}.items())), 0)


def last_collection(samples: Samples) -> float:
    return samples[("mig_exporter_last_collection_timestamp_seconds", frozenset())]


@pytest.mark.parametrize("failure", ["hangs", "disappears"])
def test_a_hanging_or_vanished_kubelet_only_takes_the_pod_labels_away(scrape, kubelet, failure):
    before = wait_for(scrape, allocated)
    if failure == "hangs":
        kubelet.kubelet.hang.set()
    else:
        kubelet.stop()
    after = wait_for(scrape, lambda s: not allocated(s) and pod_errors(s) >= 1)
    assert workload(process_memory(after, 20101)) == ("", "", "")
    assert without_workload(after) == without_workload(before)
    # collections go on while the kubelet does not answer, and every failed poll is counted
    # (both awaited together: which of the two shows first is up to the scheduler)
    wait_for(scrape, lambda s: last_collection(s) > last_collection(after) + INTERVAL
             and pod_errors(s) > pod_errors(after))
