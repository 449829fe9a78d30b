"""remediate on nodes whose MIG the NVIDIA GPU Operator manages: configs and labels, never MIG itself.

On such a node mig-manager owns MIG: it applies the mig-parted config that the node label
``nvidia.com/mig.config`` names, from the ConfigMap the ClusterPolicy points at, and reports
``nvidia.com/mig.config.state`` (pending, rebooting, success, failed). Changing MIG behind its back
is undone at its next reconcile, so here remediate only writes: the Operator's ConfigMap with one
named config added per distinct node layout (every config already there kept, ``all-disabled``
included, the same layout on many nodes one config), and the ``kubectl label`` that selects it on
each node. The node is recognised by its labels (``--kubernetes.node-labels``) or a running
``nvidia-mig-manager``; ``--gpu-operator on|off`` decides instead.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

from mig_exporter.errors import InputError
from mig_exporter.model import Snapshot
from mig_exporter.remediate import migparted
from mig_exporter.remediate.layout import GpuTarget

CONFIG_LABEL = "nvidia.com/mig.config"
STATE_LABEL = "nvidia.com/mig.config.state"
# Labels only a node of the GPU Operator's MIG manager carries.
OPERATOR_LABELS = (CONFIG_LABEL, STATE_LABEL, "nvidia.com/gpu.deploy.mig-manager")
MIG_MANAGER_PROCESS = "nvidia-mig-manager"
DEFAULT_CONFIG = "all-disabled"  # the ClusterPolicy's migManager.config.default
_ALL_DISABLED = (migparted.Entry("all", False),)
_LABEL_VALUE_MAX = 63  # Kubernetes label values: at most 63 characters


@dataclass(frozen=True)
class Detection:
    managed: bool
    reason: str  # why: the label or process seen, or the flag


def detect(mode: str, labels: Mapping[str, str] | None, manager_pids: Sequence[int]) -> Detection:
    """Whether the GPU Operator manages this node's MIG: ``mode`` on/off decides, auto looks."""
    if mode != "auto":
        return Detection(mode == "on", f"--gpu-operator {mode}")
    seen = [f"{key}={labels[key]}" for key in OPERATOR_LABELS if labels and key in labels]
    if seen:
        return Detection(True, f"node label {seen[0]}")
    if manager_pids:
        return Detection(True, f"{MIG_MANAGER_PROCESS} runs on this host (pid {manager_pids[0]})")
    return Detection(False, "no GPU Operator MIG manager found (no node label, no nvidia-mig-manager)")


def mig_manager_pids() -> tuple[int, ...]:
    """PIDs of the GPU Operator's MIG manager on this host (its container's processes are the host's)."""
    pids = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == MIG_MANAGER_PROCESS:
            pids.append(process.pid)
    return tuple(sorted(pids))


@dataclass(frozen=True)
class GpuLayout:
    """What one GPU of a node should be: MIG off, or these MIG devices (mig-parted names)."""

    index: int
    mig_enabled: bool
    devices: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeLayout:
    node: str
    gpus: tuple[GpuLayout, ...]


@dataclass(frozen=True)
class Busy:
    """Processes on a GPU whose MIG state the new config changes: mig-manager does not stop them."""

    node: str
    gpu_index: int
    pids: tuple[int, ...]


def node_layout(node: str, snapshot: Snapshot, targets: Sequence[GpuTarget]) -> NodeLayout:
    """Every GPU of the node: the targeted ones as targeted, the others as they are now, so the
    config the node label selects keeps what remediate was not asked to change."""
    by_index = {target.gpu_index: target for target in targets}
    gpus = []
    for gpu in snapshot.gpus:
        target = by_index.get(gpu.index)
        if target is not None:
            devices = target.devices if target.mig_enabled else ()
            gpus.append(GpuLayout(gpu.index, target.mig_enabled, devices))
        elif gpu.mig_supported:
            devices = tuple(sorted(m.profile for m in gpu.mig_instances)) if gpu.mig_enabled else ()
            gpus.append(GpuLayout(gpu.index, bool(gpu.mig_enabled), devices))
    return NodeLayout(node, tuple(gpus))


def entries(layout: NodeLayout) -> tuple[migparted.Entry, ...]:
    """The node's layout as mig-parted entries: one per distinct GPU layout, listing its GPUs."""
    groups: dict[tuple[bool, tuple[tuple[str, int], ...]], list[int]] = {}
    for gpu in layout.gpus:
        counts = tuple((name, gpu.devices.count(name)) for name in sorted(set(gpu.devices)))
        groups.setdefault((gpu.mig_enabled, counts), []).append(gpu.index)
    return tuple(migparted.Entry(tuple(devices), enabled, counts)
                 for (enabled, counts), devices in sorted(groups.items(), key=lambda item: item[1][0]))


def config_name(node_entries: Sequence[migparted.Entry]) -> str:
    """A config name from the layout alone, so the same layout on many nodes is one config and two
    layouts never share a name: ``mig-exporter-2x3g.40gb-off-1a2b3c`` (readable, then a digest)."""
    parts = []
    for entry in node_entries:
        parts.append("_".join(f"{count}x{name}" for name, count in entry.mig_devices if count) or
                     ("empty" if entry.mig_enabled else "off"))
    digest = hashlib.sha256(json.dumps([e.to_document() for e in node_entries], sort_keys=True).encode())
    readable = "mig-exporter-" + "-".join(dict.fromkeys(parts)).replace("+", ".")
    return f"{readable[:_LABEL_VALUE_MAX - 7].rstrip('-._')}-{digest.hexdigest()[:6]}"


def merge(existing: migparted.Configs, layouts: Sequence[NodeLayout],
          where: str) -> tuple[migparted.Configs, dict[str, str]]:
    """The existing configs, ``all-disabled`` if they lacked it, and one config per distinct
    layout of ``layouts``; and the config name of each node."""
    merged = dict(existing)
    merged.setdefault(DEFAULT_CONFIG, _ALL_DISABLED)
    chosen = {}
    for layout in layouts:
        node_entries = entries(layout)
        name = config_name(node_entries)
        if name in merged and merged[name] != node_entries:
            raise InputError(f"{where}: config {name} already exists with other content; "
                             "rename it there or remove it")
        merged[name] = node_entries
        chosen[layout.node] = name
    return merged, chosen


def label_commands(chosen: Mapping[str, str]) -> list[str]:
    """The ``kubectl label`` of each node, nodes of one config in one command."""
    by_config: dict[str, list[str]] = {}
    for node, name in sorted(chosen.items()):
        by_config.setdefault(name, []).append(node)
    return [shlex.join(["kubectl", "label", "node", *nodes, f"{CONFIG_LABEL}={name}", "--overwrite"])
            for name, nodes in by_config.items()]


def watch_command(nodes: Sequence[str]) -> str:
    """Shows each node's config and its state until every node says success."""
    return shlex.join(["kubectl", "get", "node", *sorted(nodes), "-L", CONFIG_LABEL, "-L", STATE_LABEL,
                       "--watch"])
