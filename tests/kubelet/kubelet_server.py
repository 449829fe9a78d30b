"""A real gRPC server speaking the kubelet's pod-resources v1 service on a unix socket."""

from __future__ import annotations

import tempfile
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from mig_exporter.kubelet.v1 import api_pb2, api_pb2_grpc


@dataclass
class FakeKubelet(api_pb2_grpc.PodResourcesListerServicer):
    """Answers ``List`` with ``pods``; while ``hang`` is set it answers nothing until released."""

    pods: list[api_pb2.PodResources]
    hang: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    calls: int = 0

    def List(self, request, context):
        self.calls += 1
        if self.hang.is_set():
            self.released.wait(30)
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)


def pod(
    namespace: str, name: str, containers: dict[str, list[tuple[str, list[str]]]],
) -> api_pb2.PodResources:
    return api_pb2.PodResources(namespace=namespace, name=name, containers=[
        api_pb2.ContainerResources(name=container, cpu_ids=[2, 3], devices=[
            api_pb2.ContainerDevices(resource_name=resource, device_ids=ids) for resource, ids in devices])
        for container, devices in containers.items()])


class KubeletServer:
    """Started on a socket in a fresh short temp dir (unix socket paths are limited to 107 bytes)."""

    def __init__(self, kubelet: FakeKubelet) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="kubelet-", dir="/tmp"))
        self.socket = str(self.directory / "kubelet.sock")
        self.kubelet = kubelet
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(kubelet, self.server)
        self.server.add_insecure_port(f"unix://{self.socket}")
        self.server.start()

    def stop(self) -> None:
        self.kubelet.released.set()
        self.server.stop(grace=None)
        Path(self.socket).unlink(missing_ok=True)
