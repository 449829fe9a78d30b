"""The simulated host as data: a ``Fleet`` of GPUs with their MIG instances and processes.

Every value is a frozen dataclass, so a state is a value: the simulator replaces it on each
mutation, compares it with the state as loaded (to restore a fleet file byte for byte after a
rolled-back run) and hands it to tests without fear of it changing under them. Rules about what
the driver would do (placements, IDs, memory) live in ``placement``; reading and writing YAML in
``fleet``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property

from mig_exporter.sim.latency import CallLatency
from mig_exporter.sim.models import GpuInstanceProfile, GpuModel

# Fixed namespace, so derived GPU and MIG UUIDs are the same in every run and on every machine.
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "simulated-nvml.mig-exporter.invalid")

DEFAULT_DRIVER_VERSION = "575.57.08"
DEFAULT_CUDA_VERSION = "12.9"


class MigMode(str, Enum):
    """The fleet file's ``mig`` values: NVML's (current, pending) pair in words."""

    DISABLED = "disabled"
    ENABLED = "enabled"
    PENDING_ENABLE = "pending-enable"
    PENDING_DISABLE = "pending-disable"

    @classmethod
    def of(cls, current: bool, pending: bool) -> MigMode:
        return {
            (False, False): cls.DISABLED,
            (True, True): cls.ENABLED,
            (False, True): cls.PENDING_ENABLE,
            (True, False): cls.PENDING_DISABLE,
        }[(current, pending)]

    @property
    def current(self) -> bool:
        return self in (MigMode.ENABLED, MigMode.PENDING_DISABLE)

    @property
    def pending(self) -> bool:
        return self in (MigMode.ENABLED, MigMode.PENDING_ENABLE)


@dataclass(frozen=True)
class SimProcess:
    """A compute process holding memory on one GPU or one MIG device. ``name`` None: NVML cannot
    name it (``nvmlSystemGetProcessName`` answers NOT_FOUND, as for a process in another PID
    namespace). ``sm_util_percent``/``mem_util_percent``: its latest utilization sample on a GPU
    without MIG; both None when NVML holds no sample of it."""

    pid: int
    used_memory_mib: int
    name: str | None = None
    sm_util_percent: int | None = None
    mem_util_percent: int | None = None

    @property
    def sampled(self) -> bool:
        return self.sm_util_percent is not None or self.mem_util_percent is not None


@dataclass(frozen=True)
class ProcessAttribution:
    """Who runs a simulated pid, as the fleet file says: the host's /proc knows nothing of it.

    Field names match what ``hostinfo.attribute_simulated_process`` reads; None means not given.
    """

    pid: int
    user: str | None = None
    cmdline: str | tuple[str, ...] | None = None
    container: str | None = None
    env: Mapping[str, str] | None = None


@dataclass(frozen=True)
class SimComputeInstance:
    """A compute instance: ``slices`` compute slices starting at ``start`` inside its GPU instance.
    Its ID is its start (see ``placement``), so a full-size compute instance is ID 0. ``uuid``: its
    MIG device's UUID, as the fleet file gives it or as the simulator made it at creation; None: the
    one derived from its shape (``mig_device_uuid``)."""

    start: int
    slices: int
    processes: tuple[SimProcess, ...] = ()
    uuid: str | None = None

    @property
    def id(self) -> int:
        return self.start


@dataclass(frozen=True)
class Activity:
    """What GPM measures on a GPU or GPU instance (Hopper and later), in percent of its capacity:
    busy SMs, active warps of the maximum, SMs doing tensor work, DRAM bandwidth used."""

    sm_util_percent: float = 0.0
    sm_occupancy_percent: float = 0.0
    tensor_util_percent: float = 0.0
    dram_bw_util_percent: float = 0.0


@dataclass(frozen=True)
class SimGpuInstance:
    """A GPU instance of driver profile ``profile_id`` at memory slice ``start``, with the ID the
    driver gives that placement."""

    id: int
    profile_id: int
    start: int
    compute_instances: tuple[SimComputeInstance, ...] = ()
    activity: Activity = field(default_factory=Activity)

    def compute_instance(self, compute_instance_id: int) -> SimComputeInstance | None:
        return next((c for c in self.compute_instances if c.id == compute_instance_id), None)

    @property
    def processes(self) -> tuple[SimProcess, ...]:
        return tuple(p for c in self.compute_instances for p in c.processes)


@dataclass(frozen=True)
class Telemetry:
    """Values NVML reports that nothing else in the simulator depends on. The defaults are an idle
    GPU; ``power_limit_watts`` None means the model's default limit."""

    utilization_gpu_percent: int = 0
    utilization_memory_percent: int = 0
    temperature_celsius: int = 34
    power_watts: float = 65.0
    power_limit_watts: float | None = None
    clock_sm_mhz: int = 1410
    clock_memory_mhz: int = 1593
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0


@dataclass(frozen=True)
class XidEvent:
    """An XID error the GPU reports ``after_seconds`` after XID events were first registered on it
    (``sim/event_calls.py``), with GPU instance ``gpu_instance`` (None: not attributable)."""

    xid: int
    after_seconds: float
    gpu_instance: int | None = None


@dataclass(frozen=True)
class RowRemapping:
    """Rows of HBM the GPU remapped (A100 and later replace page retirement with this)."""

    correctable: int = 0
    uncorrectable: int = 0
    pending: bool = False  # a remapping waits for a GPU reset
    failure: bool = False  # a remapping failed: the GPU needs service


@dataclass(frozen=True)
class RetiredPages:
    """Pages retired by ECC errors, on a GPU that retires pages (before A100)."""

    single_bit_ecc: int = 0
    double_bit_ecc: int = 0
    pending: bool = False


@dataclass(frozen=True)
class NvlinkErrors:
    """NVLink error counters summed over all links."""

    crc_flit: int = 0
    crc_data: int = 0
    replay: int = 0
    recovery: int = 0


@dataclass(frozen=True)
class Health:
    """Health telemetry of a GPU (``sim/health_calls.py``). ``energy_joules`` is the total at the
    simulator's start, growing at ``power_watts``; ``retired_pages`` and ``nvlink_errors`` None:
    NOT_SUPPORTED (a GPU that remaps rows instead, a GPU without NVLink)."""

    energy_joules: float = 0.0
    pcie_replays: int = 0
    clock_event_reasons: tuple[str, ...] = ()
    remapped_rows: RowRemapping = field(default_factory=RowRemapping)
    retired_pages: RetiredPages | None = None
    nvlink_errors: NvlinkErrors | None = None


@dataclass(frozen=True)
class SimGpu:
    """One physical GPU. The index is its position in ``Fleet.gpus``."""

    model: GpuModel  # a built-in model, or one the fleet file defines
    uuid: str
    persistence: bool = False
    mig: MigMode = MigMode.DISABLED
    processes: tuple[SimProcess, ...] = ()  # on the whole GPU, MIG off
    instances: tuple[SimGpuInstance, ...] = ()
    telemetry: Telemetry = field(default_factory=Telemetry)
    # Overrides the computed used memory of the whole GPU, until its processes or MIG mode change.
    memory_used_mib: int | None = None
    serial: str | None = None  # None: NVML answers NOT_SUPPORTED
    pci_bus_id: str | None = None  # "00000000:07:00.0"; None: NOT_SUPPORTED
    lost: bool = False  # fell off the bus: every call on it answers GPU_IS_LOST
    held_by: tuple[str, ...] = ()  # clients holding the device open that are not listed processes
    xid_events: tuple[XidEvent, ...] = ()
    activity: Activity = field(default_factory=Activity)  # MIG off; with MIG on, its instances'
    health: Health = field(default_factory=Health)
    # Compute instances created on it so far: the driver's UUID generator, not the host's state, so
    # it takes no part in comparing states (a rolled-back run restores the file byte for byte).
    mig_devices_created: int = field(default=0, compare=False)

    @property
    def model_key(self) -> str:
        return self.model.key

    def profile(self, profile_id: int) -> GpuInstanceProfile | None:
        return self.model.profile_by_id(profile_id)

    def gpu_instance(self, gpu_instance_id: int) -> SimGpuInstance | None:
        return next((g for g in self.instances if g.id == gpu_instance_id), None)

    @property
    def all_processes(self) -> tuple[SimProcess, ...]:
        """Every process on the GPU, whole-GPU or in any instance."""
        return self.processes + tuple(p for g in self.instances for p in g.processes)

    def with_instances(self, instances: tuple[SimGpuInstance, ...]) -> SimGpu:
        return replace(self, instances=tuple(sorted(instances, key=lambda g: g.id)))


@dataclass(frozen=True)
class Fault:
    """One injected failure: calls of C function ``call`` (on GPU ``gpu``, or on any GPU and none
    when it is None) first let ``skip`` matching calls through, then hang ``delay_seconds`` and/or
    fail with NVML code ``error``, ``count`` times (None: forever)."""

    call: str
    gpu: int | None = None
    error: int | None = None
    delay_seconds: float = 0.0
    skip: int = 0
    count: int | None = None


@dataclass(frozen=True)
class Fleet:
    """A simulated host: what ``nvmlDeviceGetCount`` and everything after it report."""

    gpus: tuple[SimGpu, ...] = ()
    driver_version: str = DEFAULT_DRIVER_VERSION
    cuda_version: str = DEFAULT_CUDA_VERSION
    description: str | None = None
    faults: tuple[Fault, ...] = ()
    attributions: tuple[ProcessAttribution, ...] = ()
    call_latency: CallLatency = field(default_factory=CallLatency)
    models: tuple[GpuModel, ...] = ()  # the models the fleet file defines under ``models:``

    def with_gpu(self, index: int, gpu: SimGpu) -> Fleet:
        return replace(self, gpus=(*self.gpus[:index], gpu, *self.gpus[index + 1 :]))

    def attribution(self, pid: int) -> ProcessAttribution | None:
        return next((a for a in self.attributions if a.pid == pid), None)

    def process_name(self, pid: int) -> str | None:
        return self._process_names.get(pid)

    @cached_property
    def _process_names(self) -> dict[int, str]:
        """pid → name, built once per state: the reader asks for every pid of every collection."""
        return {p.pid: p.name for g in self.gpus for p in g.all_processes if p.name is not None}

    def without_process(self, pid: int) -> Fleet:
        """The fleet after process ``pid`` exited everywhere (what a test does before remediating).
        A GPU it was on drops its ``memory_used_mib`` figure, which counted the process."""
        gpus = []
        for gpu in self.gpus:
            instances = tuple(
                replace(
                    gi,
                    compute_instances=tuple(
                        replace(ci, processes=tuple(p for p in ci.processes if p.pid != pid))
                        for ci in gi.compute_instances
                    ),
                )
                for gi in gpu.instances
            )
            held = any(p.pid == pid for p in gpu.all_processes)
            gpus.append(
                replace(
                    gpu,
                    processes=tuple(p for p in gpu.processes if p.pid != pid),
                    instances=instances,
                    memory_used_mib=None if held else gpu.memory_used_mib,
                )
            )
        return replace(
            self, gpus=tuple(gpus), attributions=tuple(a for a in self.attributions if a.pid != pid)
        )


def default_gpu_uuid(index: int) -> str:
    """A GPU UUID derived from the index alone, stable across runs."""
    return f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'gpu/{index}')}"


def mig_device_uuid(gpu_uuid: str, gpu_instance: SimGpuInstance, compute_instance: SimComputeInstance) -> str:
    """``MIG-xxxxxxxx-xxxx-5xxx-…``: the R470+ format. The compute instance's own ``uuid`` when it
    has one (made at its creation, or given by the fleet file); else derived from the parent, the
    instance IDs, the profile and the placement, so an instance a fleet file lists keeps its UUID
    after a reload or in another process."""
    if compute_instance.uuid is not None:
        return compute_instance.uuid
    return _mig_uuid(gpu_uuid, gpu_instance, compute_instance, "")


def new_mig_device_uuid(
    gpu: SimGpu, gpu_instance: SimGpuInstance, compute_instance: SimComputeInstance
) -> tuple[str, int]:
    """The UUID of a compute instance being created on ``gpu`` and the GPU's new creation count.

    A real driver gives every new MIG device a new UUID, even one of the same shape at the same IDs
    after a destroy (a workload pinned to the old UUID must not land on a new instance unnoticed).
    Derived from the creation count, so a fleet and a sequence of operations give the same UUIDs
    in every run; never one of the GPU's current MIG devices."""
    taken = {mig_device_uuid(gpu.uuid, gi, ci) for gi in gpu.instances for ci in gi.compute_instances}
    created = gpu.mig_devices_created
    while True:
        created += 1
        made = _mig_uuid(gpu.uuid, gpu_instance, compute_instance, f"#{created}")
        if made not in taken:
            return made, created


def _mig_uuid(
    gpu_uuid: str, gpu_instance: SimGpuInstance, compute_instance: SimComputeInstance, creation: str
) -> str:
    shape = (f"{gpu_instance.id}/{gpu_instance.profile_id}@{gpu_instance.start}/"
             f"{compute_instance.id}:{compute_instance.slices}")
    return f"MIG-{uuid.uuid5(_UUID_NAMESPACE, f'{gpu_uuid}/{shape}{creation}')}"


def default_serial(index: int) -> str:
    return f"{1320000000000 + index}"


def default_pci_bus_id(index: int) -> str:
    """``00000000:07:00.0``, ``…:0F:00.0`` …: 32 GPUs a PCI domain (buses 0x07 to 0xFF, eight apart),
    then the next domain, so every index has its own."""
    domain, slot = divmod(index, 32)
    return f"{domain:08X}:{0x07 + 0x08 * slot:02X}:00.0"
