"""Pod, namespace and container of every GPU and MIG device, from the kubelet's pod-resources API.

The device plugin names each allocated device by its GPU UUID (``nvidia.com/gpu``) or MIG device
UUID (``nvidia.com/mig-<profile>``), the same UUIDs NVML gives, so a process NVML lists on a
device belongs to the container that device is allocated to. The kubelet is asked on a thread of
its own with a short deadline: a slow or dead socket never delays a collection, it only makes the
pod labels go away once the last answer is older than ``STALE_AFTER_POLLS`` polls.

grpc and the generated stubs are imported only once a socket exists to ask: they are a third of
``serve``'s memory, and most hosts are not Kubernetes nodes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mig_exporter.model import GpuProcess, Snapshot

if TYPE_CHECKING:
    import grpc

    from mig_exporter.kubelet.v1 import api_pb2

log = logging.getLogger(__name__)

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
ERROR_CALL = "pod_resources"  # the call label of mig_exporter_collection_errors_total
DEFAULT_DEADLINE_SECONDS = 1.0
# An answer older than this many polls is dropped: a pod may have gone, and its GPU with it.
STALE_AFTER_POLLS = 3
GPU_RESOURCE_PREFIX = "nvidia.com/"


@dataclass(frozen=True)
class DeviceAllocation:
    """One GPU or MIG device allocated to one container."""

    device_id: str  # a GPU UUID ("GPU-…") or a MIG device UUID ("MIG-…")
    resource: str  # "nvidia.com/gpu", "nvidia.com/mig-3g.40gb"
    namespace: str
    pod: str
    container: str


def allocations_from_response(response: api_pb2.ListPodResourcesResponse) -> dict[str, DeviceAllocation]:
    """Device ID → its allocation, for the NVIDIA resources only (CPUs, memory and other
    vendors' devices are not GPUs)."""
    allocations: dict[str, DeviceAllocation] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if not devices.resource_name.startswith(GPU_RESOURCE_PREFIX):
                    continue
                for device_id in devices.device_ids:
                    allocations[device_id] = DeviceAllocation(
                        device_id, devices.resource_name, pod.namespace, pod.name, container.name)
    return allocations


def process_allocation(
    snapshot: Snapshot, process: GpuProcess, allocations: Mapping[str, DeviceAllocation],
) -> DeviceAllocation | None:
    """The allocation of the device the process holds memory on: its MIG device with MIG on, else
    its GPU."""
    if not allocations:
        return None
    if process.gpu_instance_id is None:
        return allocations.get(process.gpu_uuid)
    for gpu in snapshot.gpus:
        if gpu.index != process.gpu_index:
            continue
        for mig in gpu.mig_instances:
            if (mig.gpu_instance_id, mig.compute_instance_id) == (process.gpu_instance_id,
                                                                  process.compute_instance_id):
                return allocations.get(mig.mig_uuid)
    return None


def allocations_by_pid(
    snapshot: Snapshot, allocations: Mapping[str, DeviceAllocation],
) -> dict[int, tuple[DeviceAllocation, ...]]:
    """Each pid's allocations, in the order NVML lists its devices. Usually one container holds
    all the devices a process uses; a process on a device allocated to another container (one
    that sees every GPU) shows as several."""
    found: dict[int, list[DeviceAllocation]] = {}
    for process in snapshot.processes:
        allocation = process_allocation(snapshot, process, allocations)
        if allocation is not None and allocation not in found.setdefault(process.pid, []):
            found[process.pid].append(allocation)
    return {pid: tuple(held) for pid, held in found.items() if held}


def list_allocations(socket_path: str, deadline_seconds: float) -> dict[str, DeviceAllocation]:
    """One ``List`` call; ``grpc.RpcError`` when the kubelet does not answer within the deadline."""
    import grpc

    from mig_exporter.kubelet.v1 import api_pb2, api_pb2_grpc

    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        stub = api_pb2_grpc.PodResourcesListerStub(channel)
        return allocations_from_response(
            stub.List(api_pb2.ListPodResourcesRequest(), timeout=deadline_seconds))


class PodResourcesPoller:
    """Asks the kubelet every ``interval_seconds`` on a daemon thread and keeps the last answer.

    ``on_error`` is called once per failed poll (the exporter counts it). A socket that does not
    exist is not an error until it has existed: most hosts are not Kubernetes nodes.
    """

    def __init__(
        self, socket_path: str, interval_seconds: float, on_error: Callable[[], None],
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        list_call: Callable[[str, float], Mapping[str, DeviceAllocation]] = list_allocations,
    ) -> None:
        self.socket_path = socket_path
        self.interval_seconds = interval_seconds
        self.deadline_seconds = min(deadline_seconds, interval_seconds)
        self._on_error = on_error
        self._list = list_call
        self._lock = threading.Lock()
        self._answer: Mapping[str, DeviceAllocation] = {}
        self._answered_at: float | None = None  # time.monotonic()
        self._seen_socket = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def allocations(self) -> Mapping[str, DeviceAllocation]:
        """The last answer, or nothing when it is older than ``STALE_AFTER_POLLS`` polls."""
        with self._lock:
            if self._answered_at is None:
                return {}
            if time.monotonic() - self._answered_at > STALE_AFTER_POLLS * self.interval_seconds:
                return {}
            return self._answer

    def poll_once(self) -> None:
        if not Path(self.socket_path).exists():
            if self._seen_socket:
                log.warning("kubelet pod-resources socket %s has gone", self.socket_path)
                self._on_error()
            return
        self._seen_socket = True
        import grpc

        try:
            answer = self._list(self.socket_path, self.deadline_seconds)
        except grpc.RpcError as error:
            log.warning("kubelet pod-resources List on %s failed: %s", self.socket_path,
                        rpc_error_text(error))
            self._on_error()
            return
        with self._lock:
            self._answer, self._answered_at = answer, time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pod-resources", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops polling; a hung call is bounded by the deadline and left to the daemon thread."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval_seconds)


def rpc_error_text(error: grpc.RpcError) -> str:
    import grpc

    code = error.code() if isinstance(error, grpc.Call) else None
    details = error.details() if isinstance(error, grpc.Call) else None
    return f"{code.name if code else 'error'}: {details or error}"
