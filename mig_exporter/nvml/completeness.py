"""Which parts of a GPU a collection could not read, from the calls that failed on it.

The reader records them in ``Gpu.unread`` so that what a plan or a verification rests on is a
property of the Snapshot: nothing outside ``nvml/`` has to know which pynvml function reads what.
"""

from __future__ import annotations

from collections.abc import Iterable

from mig_exporter.model import CollectionError

# pynvml function (or prefix of one) → the part of the GPU it reads; the first match wins.
_PART_BY_CALL = (
    ("nvmlDeviceGetHandleByIndex", "gpu"),
    ("nvmlDeviceGetUUID", "identity"), ("nvmlDeviceGetName", "identity"),
    ("nvmlDeviceGetPciInfo", "identity"),
    ("nvmlDeviceGetMigMode", "mig_mode"),
    ("nvmlDeviceGetPersistenceMode", "persistence"),
    ("nvmlDeviceGetGpuInstanceProfileInfo", "mig_capability"),
    ("nvmlDeviceGetGpuInstancePossiblePlacements", "mig_capability"),
    ("nvmlGpuInstanceGetComputeInstanceProfileInfo", "mig_capability"),
    ("nvmlDeviceGetGpuInstanceRemainingCapacity", "gpu_instances"),
    ("nvmlDeviceGetGpuInstance", "gpu_instances"),  # GetGpuInstances, GetGpuInstanceById
    ("nvmlGpuInstanceGetInfo", "gpu_instances"),
    ("nvmlDeviceGetMaxMigDeviceCount", "mig_devices"), ("nvmlDeviceGetMigDeviceHandleByIndex", "mig_devices"),
    ("nvmlDeviceGetComputeInstanceId", "mig_devices"), ("nvmlDeviceGetAttributes", "mig_devices"),
    ("nvmlDeviceGetComputeRunningProcesses", "processes"),
)


def unread_parts(errors: Iterable[CollectionError]) -> frozenset[str]:
    """The parts the failed calls among ``errors`` leave unread (telemetry calls leave none)."""
    return frozenset(part for error in errors if (part := _part(error.call)) is not None)


def _part(call: str) -> str | None:
    return next((part for prefix, part in _PART_BY_CALL if call.startswith(prefix)), None)
