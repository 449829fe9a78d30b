"""What an operator takes away from a run: which MIG device each workload gets, and how.

Rendered with jinja2 from ``templates/``: one ``CUDA_VISIBLE_DEVICES=MIG-…`` line per instance, a
docker-compose snippet with one service per instance (the incident's step 7), the Kubernetes
resource names and node label for the GPU Operator, a mig-parted config that reproduces the layout
on other hosts, and a runbook of what was done and how to undo it. Built from the hardware as read
after the run, never from the plan, so the UUIDs are the real ones.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from mig_exporter.model import Snapshot
from mig_exporter.remediate.apply import Executed, PendingMode
from mig_exporter.remediate.kubernetes import resource_name, single_strategy_problem
from mig_exporter.remediate.plan import GpuPlan, Plan
from mig_exporter.remediate.report import gpu_summary
from mig_exporter.remediate.slurm import gres_line
from mig_exporter.remediate.steps import (
    CreateComputeInstance,
    CreateGpuInstance,
    DestroyComputeInstance,
)

NVIDIA_PCI_VENDOR_ID = 0x10DE
# Kubernetes label values: at most 63 characters of [A-Za-z0-9._-], alphanumeric at both ends.
_LABEL_VALUE_MAX = 63

FILES = {
    "mig-devices.txt": "mig-devices.txt.j2",
    "docker-compose.mig.yml": "docker-compose.mig.yml.j2",
    "kubernetes.yaml": "kubernetes.yaml.j2",
    "mig-parted.yaml": "mig-parted.yaml.j2",
    "runbook.md": "runbook.md.j2",
    "slurm.txt": "slurm.txt.j2",
}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("mig_exporter.remediate", "templates"),
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
    autoescape=False,  # YAML, Markdown and shell lines, not HTML
)


@dataclass(frozen=True)
class Assignment:
    """One MIG device a workload can be pinned to."""

    gpu_index: int
    gpu_uuid: str
    mig_uuid: str
    gpu_instance_id: int
    compute_instance_id: int
    profile: str
    placement_start: int | None
    new: bool  # created by this run

    @property
    def service_name(self) -> str:
        return f"gpu{self.gpu_index}-mig{self.gpu_instance_id}" + (
            f"-ci{self.compute_instance_id}" if self.compute_instance_id else "")


@dataclass(frozen=True)
class MigPartedEntry:
    devices: tuple[int, ...]
    device_filter: str | None  # "0x20B210DE": keeps the entry to this GPU model on other hosts
    mig_enabled: bool
    mig_devices: tuple[tuple[str, int], ...]


def assignments(fresh: Snapshot, plan: Plan, created: Collection[tuple[int, int]]) -> tuple[Assignment, ...]:
    """Every MIG device on the planned GPUs, as read after the run. ``created`` holds the
    (GPU, placement start) of each GPU instance this run made."""
    found = []
    for gpu_plan in plan.gpus:
        gpu = fresh.gpu(gpu_plan.gpu.index)
        start_of = {gi.gpu_instance_id: gi.placement_start for gi in gpu.gpu_instances}
        for device in sorted(gpu.mig_instances, key=lambda d: d.mig_index):
            start = start_of.get(device.gpu_instance_id)
            found.append(Assignment(gpu.index, gpu.uuid, device.mig_uuid, device.gpu_instance_id,
                                    device.compute_instance_id, device.profile, start,
                                    (gpu.index, start) in created))
    return tuple(found)


def created_instances(executed: Sequence[Executed]) -> frozenset[tuple[int, int]]:
    """(GPU, placement start) of each GPU instance that ``executed`` created."""
    return frozenset((e.step.gpu_index, e.step.start)
                     for e in executed if isinstance(e.step, CreateGpuInstance))


def config_name(plan: Plan) -> str:
    """A name for the layout as a mig-parted config and node label value: ``custom-2x3g.40gb``."""
    layouts = sorted({_layout_key(gpu_plan) for gpu_plan in plan.gpus})
    name = "custom-" + "-".join(layouts)
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name)[:_LABEL_VALUE_MAX]
    return name.rstrip("-._")


def _layout_key(gpu_plan: GpuPlan) -> str:
    if not gpu_plan.target.mig_enabled:
        return "disabled"
    counts = _profile_counts(gpu_plan)
    return "_".join(f"{n}x{profile}" for profile, n in counts) or "empty"


def _profile_counts(gpu_plan: GpuPlan) -> tuple[tuple[str, int], ...]:
    names = gpu_plan.target.devices
    return tuple((name, names.count(name)) for name in dict.fromkeys(names))


def mig_parted_entries(plan: Plan) -> tuple[MigPartedEntry, ...]:
    """One entry per (model, layout), in GPU order: the layout on these GPUs, for this model only."""
    groups: dict[tuple[str | None, bool, tuple[tuple[str, int], ...]], list[int]] = {}
    for gpu_plan in plan.gpus:
        gpu = gpu_plan.gpu
        device_filter = (None if gpu.pci_device_id is None
                         else f"0x{gpu.pci_device_id:04X}{NVIDIA_PCI_VENDOR_ID:04X}")
        key = (device_filter, gpu_plan.target.mig_enabled, _profile_counts(gpu_plan))
        groups.setdefault(key, []).append(gpu.index)
    return tuple(MigPartedEntry(tuple(devices), device_filter, enabled, counts)
                 for (device_filter, enabled, counts), devices in groups.items())


def undo_commands(executed: Sequence[Executed]) -> tuple[str, ...]:
    """The ``nvidia-smi`` commands that reverse ``executed``, newest first."""
    commands = []
    for e in reversed(executed):
        inverse = e.inverse()
        if isinstance(inverse, CreateComputeInstance):
            assert isinstance(e.step, DestroyComputeInstance)
            # recreated at its old placement, the GPU instance gets its old ID back
            commands.append(" ".join(inverse.command_for(e.step.gpu_instance_id)))
        elif inverse is not None:
            commands.append(" ".join(inverse.command()))
    return tuple(commands)


def done_command(executed: Executed) -> str:
    """The ``nvidia-smi`` command equivalent to what ``executed`` did."""
    if isinstance(executed.step, CreateComputeInstance):
        assert executed.gpu_instance_id is not None
        return " ".join(executed.step.command_for(executed.gpu_instance_id))
    return " ".join(executed.step.command())


@dataclass(frozen=True)
class RunRecord:
    """Everything the artifacts say about one run."""

    host: str
    generated_at: str
    command_line: str
    fleet: str | None  # the fleet file, when the hardware is simulated
    journal: str
    run_id: str
    config_name: str
    plan: Plan
    executed: tuple[Executed, ...]
    pending: tuple[PendingMode, ...]
    assignments: tuple[Assignment, ...]
    mig_strategy: str = "mixed"  # the device plugin's: how pods ask for these devices
    slurm_gres: tuple[tuple[str, int], ...] = ()  # every GPU and MIG device of the host, as Slurm types


def render_all(run: RunRecord) -> dict[str, str]:
    """File name → rendered text for every artifact."""
    resources = Counter(resource_name(a.profile, run.mig_strategy) for a in run.assignments)
    without_mig = [gpu_plan.gpu.index for gpu_plan in run.plan.gpus if not gpu_plan.target.mig_enabled]
    context: dict[str, Any] = {
        "strategy_problem": (single_strategy_problem([a.profile for a in run.assignments], without_mig)
                             if run.mig_strategy == "single" else None),
        "run": run,
        "before": [(gpu_plan.gpu, gpu_summary(gpu_plan.gpu)) for gpu_plan in run.plan.gpus],
        "done": [(e.step.describe(), done_command(e)) for e in run.executed],
        "undo": undo_commands(run.executed),
        "resources": sorted(resources.items()),
        "mig_parted_entries": mig_parted_entries(run.plan),
        "gres": run.slurm_gres,
        "gres_line": gres_line(run.host, run.slurm_gres),
    }
    return {name: _templates.get_template(template).render(**context) for name, template in FILES.items()}


def write_all(directory: Path, rendered: dict[str, str]) -> tuple[Path, ...]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return tuple(written)
