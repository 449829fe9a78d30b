"""The diagnose report as data: one frozen tree that the text and JSON renderers both print.

Built by a pure function from what the command gathered (Snapshot, attributions, advice), so the
two formats cannot disagree and the reasoning can be tested on Snapshots built by hand. The field
names are the JSON keys (``docs/diagnose.schema.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mig_exporter.advice import Advice, advise, process_memory_totals, process_names
from mig_exporter.diagnose.explain import Explanation, NextStep, explain, pod_resource
from mig_exporter.diagnose.fleet_target import FleetTarget
from mig_exporter.findings import Finding, Severity, find, process_gpus
from mig_exporter.hostinfo import Attribution, Container
from mig_exporter.kubelet.podresources import DeviceAllocation
from mig_exporter.model import CollectionError, Gpu, GpuProcess, Snapshot

SCHEMA_VERSION = 1
EXIT_HEALTHY = 0
EXIT_PROBLEMS = 1

# The parts of a GPU (``Gpu.unread``) the findings rest on: with one unread (a GPU, its MIG mode,
# its profiles, instances, MIG devices or processes), "healthy" would be a claim nothing verified.
# Telemetry (power, clocks, ECC) is not among them.
PARTS_FINDINGS_NEED = frozenset({"gpu", "mig_mode", "mig_capability", "gpu_instances", "mig_devices",
                                 "processes"})
# Calls about no GPU the findings rest on: NVML itself and the GPU list.
SYSTEM_CALLS_FINDINGS_NEED = frozenset({"nvmlInit", "nvmlDeviceGetCount"})


@dataclass(frozen=True)
class ProcessRow:
    """One process on one GPU, as the GPU's table lists it."""

    pid: int
    name: str | None
    user: str | None
    used_memory_bytes: int | None
    mig_device: str | None  # "3g.40gb (GI 1, CI 0)" on a MIG GPU; None: the whole GPU
    # share of the GPU's SMs it computed on in NVML's latest sample (MIG off); None: not sampled
    sm_utilization_ratio: float | None = None


@dataclass(frozen=True)
class InstanceRow:
    """One MIG device (a compute instance in a GPU instance)."""

    gpu_instance_id: int
    compute_instance_id: int
    profile: str
    mig_uuid: str
    memory_used_bytes: int | None
    memory_total_bytes: int | None


@dataclass(frozen=True)
class GpuSection:
    index: int
    uuid: str
    name: str | None
    lost: bool
    mig_mode_current: bool | None  # None: MIG not supported
    mig_mode_pending: bool | None
    persistence_mode: bool | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    gpu_instances: int | None  # GPU instances, with or without a MIG device on them; None: not listed
    instances: tuple[InstanceRow, ...]
    processes: tuple[ProcessRow, ...]


@dataclass(frozen=True)
class ProcessSection:
    """One process with what the host (or the fleet file) says about it."""

    pid: int
    name: str | None
    gpu_indices: tuple[int, ...]
    used_memory_bytes: int | None  # total over its GPUs; None when a figure is missing
    source: str  # where the attribution came from: "host", "fleet file" or "none"
    user: str | None
    cmdline: tuple[str, ...] | None
    started_at: float | None
    container: Container | None  # None: not in a container, or unknown (see notes)
    # the kubelet's allocations of the devices it uses: the pod and container that hold them
    pods: tuple[DeviceAllocation, ...]
    environment_read: bool
    cuda_visible_devices: str | None
    nvidia_visible_devices: str | None
    gpu_visibility: str  # the conclusion CUDA_VISIBLE_DEVICES supports
    notes: tuple[str, ...]


@dataclass(frozen=True)
class FindingSection:
    kind: str
    severity: str
    gpu_indices: tuple[int, ...]
    pids: tuple[int, ...]
    summary: str
    meaning: str
    impact: str
    next_steps: tuple[NextStep, ...]  # in order


@dataclass(frozen=True)
class WorkloadPlacement:
    pid: int
    name: str | None
    used_memory_bytes: int | None
    needed_memory_bytes: int | None
    gpu_index: int | None  # None: not placed (see reason)
    whole_gpu: bool  # advised onto a GPU of its own, MIG off there: no instance holds it
    profile: str | None  # its MIG instance; None on a whole GPU or when not placed
    profile_memory_bytes: int | None
    reason: str | None  # why it was not placed
    pod_resource: str | None  # in a pod: the resource its container is to request instead
    sm_utilization_ratio: float | None  # share of a GPU's SMs it computes on; None: not sampled
    needed_compute_ratio: float | None  # that plus the headroom: the compute share its instance needs
    sizing_rule: str  # "memory", or "memory and compute" when it computes


@dataclass(frozen=True)
class LayoutSection:
    gpu_index: int
    model: str
    layout: tuple[str, ...]


@dataclass(frozen=True)
class RemediateCommand:
    gpu_indices: tuple[int, ...]
    layout: tuple[str, ...]
    command: str  # prints the plan; with --apply it applies it


@dataclass(frozen=True)
class AdviceSection:
    headroom_ratio: float
    workloads: tuple[WorkloadPlacement, ...]
    layouts: tuple[LayoutSection, ...]
    freed_gpus: tuple[int, ...]
    # Run before the remediate commands: copies a built-in fleet (read-only) to the file they name.
    # None on a fleet file or the host's GPUs.
    copy_fleet_command: str | None
    remediate: tuple[RemediateCommand, ...]


@dataclass(frozen=True)
class Report:
    schema_version: int
    exit_status: int  # 0 healthy, 1 problems found or health not verified
    verified: bool  # False: a call the findings need failed (see collection_errors)
    fleet: str | None  # the --fleet it ran on; None: the host's NVML
    taken_at: float
    driver_version: str | None
    cuda_driver_version: str | None
    gpus: tuple[GpuSection, ...]
    findings: tuple[FindingSection, ...]
    processes: tuple[ProcessSection, ...]
    advice: AdviceSection | None
    collection_errors: tuple[CollectionError, ...]


def build_report(
    snapshot: Snapshot,
    attributions: Mapping[int, Attribution],
    headroom_ratio: float,
    fleet: str | None = None,
    fleet_built_in: bool = False,
    pods: Mapping[int, tuple[DeviceAllocation, ...]] | None = None,
) -> Report:
    """Everything diagnose says, from one Snapshot. ``attributions`` has an entry per pid;
    ``fleet_built_in``: ``fleet`` is a read-only built-in fleet, so the commands name a copy;
    ``pods``: the kubelet's allocations of each pid's devices (none off Kubernetes)."""
    pods = pods or {}
    sole = sole_pods(pods, attributions)
    target = FleetTarget(fleet, fleet_built_in)
    findings = find(snapshot)
    advice = advise(snapshot, headroom_ratio)
    explanations = [explain(f, snapshot, advice, attributions, target, sole) for f in findings]
    problems = any(f.severity is not Severity.INFO for f in findings)
    verified = (not any(e.gpu_index is None and e.call in SYSTEM_CALLS_FINDINGS_NEED for e in snapshot.errors)
                and not any(g.lost or g.unread & PARTS_FINDINGS_NEED for g in snapshot.gpus)
                # NOT_SUPPORTED is no error, yet processes or instances not listed are not "none"
                and snapshot.processes_complete
                and all(g.gpu_instances_complete for g in snapshot.gpus if g.mig_enabled))
    return Report(
        schema_version=SCHEMA_VERSION,
        exit_status=EXIT_PROBLEMS if problems or not verified else EXIT_HEALTHY,
        verified=verified,
        fleet=fleet,
        taken_at=snapshot.taken_at,
        driver_version=snapshot.driver_version,
        cuda_driver_version=snapshot.cuda_driver_version,
        gpus=tuple(_gpu_section(g, attributions) for g in snapshot.gpus),
        findings=tuple(_finding_section(f, e) for f, e in zip(findings, explanations, strict=True)),
        processes=_process_sections(snapshot, attributions, pods),
        advice=None if advice is None else _advice_section(advice, target, sole),
        collection_errors=snapshot.errors,
    )


def sole_pods(
    pods: Mapping[int, tuple[DeviceAllocation, ...]], attributions: Mapping[int, Attribution],
) -> dict[int, DeviceAllocation]:
    """The pod each pid can be moved through: all its devices are allocated to one container, and
    no process of another pod (by its cgroup's pod UID) or of no pod uses them too. The device
    plugin gives a device to one container, so a second one on it got there around the plugin
    (an image with NVIDIA_VISIBLE_DEVICES=all), and which process is the allocated pod's cannot
    be told from the device: neither is then told to change its pod."""
    users: dict[DeviceAllocation, set[str | None]] = {}
    for pid, allocations in pods.items():
        who = attributions.get(pid)
        pod_uid = who.container.pod_uid if who is not None and who.container is not None else None
        for allocation in allocations:
            users.setdefault(allocation, set()).add(pod_uid)
    return {pid: allocations[0] for pid, allocations in pods.items()
            if len(allocations) == 1 and len(users[allocations[0]]) == 1}


def reading_failure(snapshot: Snapshot) -> str | None:
    """Why the reading failed as a whole, as one line naming the call and NVML's error; None when
    there is a reading to report.

    NVML gone, the GPU count unread, or not one GPU opened leaves nothing to diagnose: a report
    would say "0 GPU(s), no findings" about GPUs it never saw, so it is an error (exit 2), not a
    problem found. A partial reading (some GPUs read) is reported, as not verified (exit 1)."""
    if not snapshot.nvml_up:
        last = describe_error(snapshot.errors[-1]) if snapshot.errors else "no error was recorded"
        return f"NVML stopped answering while the GPUs were read ({last})"
    for error in snapshot.errors:
        if error.call == "nvmlDeviceGetCount":
            return f"NVML could not count the GPUs ({describe_error(error)})"
    unopened = [e for e in snapshot.errors if e.call == "nvmlDeviceGetHandleByIndex"]
    unopened_indices = {e.gpu_index for e in unopened}
    if snapshot.gpus and all(g.index in unopened_indices and not g.lost for g in snapshot.gpus):
        return f"NVML could not open any of the {len(snapshot.gpus)} GPU(s) ({describe_error(unopened[0])})"
    return None


def describe_error(error: CollectionError) -> str:
    """``nvmlDeviceGetHandleByIndex on GPU 0: Unknown Error``."""
    where = f" on GPU {error.gpu_index}" if error.gpu_index is not None else ""
    return f"{error.call}{where}: {error.error}"


def _gpu_section(gpu: Gpu, attributions: Mapping[int, Attribution]) -> GpuSection:
    return GpuSection(
        index=gpu.index,
        uuid=gpu.uuid,
        name=gpu.name,
        lost=gpu.lost,
        mig_mode_current=gpu.mig_mode_current,
        mig_mode_pending=gpu.mig_mode_pending,
        persistence_mode=gpu.persistence_mode,
        memory_used_bytes=gpu.memory_used_bytes,
        memory_total_bytes=gpu.memory_total_bytes,
        gpu_instances=len(gpu.gpu_instances) if gpu.gpu_instances_complete else None,
        instances=tuple(
            InstanceRow(m.gpu_instance_id, m.compute_instance_id, m.profile, m.mig_uuid,
                        m.memory_used_bytes, m.memory_total_bytes)
            for m in gpu.mig_instances
        ),
        processes=tuple(
            ProcessRow(p.pid, p.name, attributions[p.pid].user, p.used_memory_bytes, _mig_device(gpu, p),
                       p.sm_utilization_ratio)
            for p in sorted(gpu.processes, key=lambda p: (p.gpu_instance_id or 0, p.pid))
        ),
    )


def _mig_device(gpu: Gpu, process: GpuProcess) -> str | None:
    if process.gpu_instance_id is None:
        return None
    where = f"GI {process.gpu_instance_id}, CI {process.compute_instance_id}"
    device = next((m for m in gpu.mig_instances if m.gpu_instance_id == process.gpu_instance_id
                   and m.compute_instance_id == process.compute_instance_id), None)
    return where if device is None or not device.profile else f"{device.profile} ({where})"


def _process_sections(
    snapshot: Snapshot, attributions: Mapping[int, Attribution],
    pods: Mapping[int, tuple[DeviceAllocation, ...]],
) -> tuple[ProcessSection, ...]:
    sections = []
    totals = process_memory_totals(snapshot)
    names = process_names(snapshot)
    for pid, gpu_indices in process_gpus(snapshot).items():
        who = attributions[pid]
        sections.append(ProcessSection(
            pid=pid,
            name=names.get(pid),
            gpu_indices=gpu_indices,
            used_memory_bytes=totals[pid],
            source=who.source,
            user=who.user,
            cmdline=who.cmdline,
            started_at=who.started_at,
            container=who.container,
            pods=pods.get(pid, ()),
            environment_read=who.environment_read,
            cuda_visible_devices=who.cuda_visible_devices,
            nvidia_visible_devices=who.nvidia_visible_devices,
            gpu_visibility=who.gpu_visibility,
            notes=who.notes,
        ))
    return tuple(sections)


def _finding_section(finding: Finding, explanation: Explanation) -> FindingSection:
    return FindingSection(
        kind=finding.kind.value,
        severity=finding.severity.value,
        gpu_indices=finding.gpu_indices,
        pids=finding.pids,
        summary=explanation.summary,
        meaning=explanation.meaning,
        impact=explanation.impact,
        next_steps=explanation.next_steps,
    )


def _advice_section(
    advice: Advice, target: FleetTarget, pods: Mapping[int, DeviceAllocation],
) -> AdviceSection:
    placed = {i.pid: (layout, i) for layout in advice.layouts for i in layout.instances}
    reasons = {u.pid: u.reason for u in advice.unplaced}
    whole = {w.pid: w.gpu_index for w in advice.whole_gpus}
    workloads = []
    for w in advice.workloads:
        layout, instance = placed.get(w.pid, (None, None))
        workloads.append(WorkloadPlacement(
            pid=w.pid,
            name=w.name,
            used_memory_bytes=w.used_bytes,
            needed_memory_bytes=w.needed_bytes,
            gpu_index=layout.gpu_index if layout else whole.get(w.pid),
            whole_gpu=w.pid in whole,
            profile=instance.profile if instance else None,
            profile_memory_bytes=instance.memory_bytes if instance else None,
            reason=reasons.get(w.pid),
            pod_resource=pod_resource(instance.profile if instance else None, w.pid in whole)
            if w.pid in pods and (instance or w.pid in whole) else None,
            sm_utilization_ratio=w.sm_utilization_ratio,
            needed_compute_ratio=w.needed_compute_ratio,
            sizing_rule=w.sizing_rule,
        ))
    return AdviceSection(
        headroom_ratio=advice.headroom_ratio,
        workloads=tuple(workloads),
        layouts=tuple(LayoutSection(lay.gpu_index, lay.model, lay.profiles) for lay in advice.layouts),
        freed_gpus=advice.freed_gpus,
        copy_fleet_command=target.copy_command if advice.steps else None,
        remediate=tuple(RemediateCommand(s.gpu_indices, s.layout, s.command(target.remediate_fleet))
                        for s in advice.steps),
    )
