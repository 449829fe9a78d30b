"""``remediate`` where the GPU Operator owns MIG: one node (read here) or many (their diagnose JSON).

Nothing touches MIG: the output is the merged ConfigMap, the ``kubectl`` commands to select each
node's config and watch ``nvidia.com/mig.config.state`` reach success, and the resources pods then
request. Processes on a GPU whose MIG changes are named, since mig-manager only stops the
Operator's own GPU clients. Exit 0; 2 on bad input.
"""

from __future__ import annotations

import argparse
import socket
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mig_exporter.errors import InputError, read_yaml_file
from mig_exporter.model import Snapshot
from mig_exporter.printable import printable
from mig_exporter.remediate import configmap, diagnose_input, migparted, operator
from mig_exporter.remediate.kubernetes import resource_name
from mig_exporter.remediate.layout import GpuTarget
from mig_exporter.remediate.plan import BlockerKind, Plan

CONFIG_MAP_FILE = "mig-parted-configmap.yaml"
COMMANDS_FILE = "gpu-operator.sh"
SCRIPT_HEADER = """#!/bin/sh
# The GPU Operator's mig-manager applies the MIG change; mig-exporter made none. The last command
# watches until every node's nvidia.com/mig.config.state is success
# (failed: kubectl logs -n gpu-operator -l app=nvidia-mig-manager).
set -e
"""


def check_flags(args: argparse.Namespace) -> None:
    """``--from-diagnose`` takes its nodes and layouts from the files: host flags do not apply."""
    for flag, value in (("--gpu", args.gpu), ("--layout", args.layout), ("--fleet", args.fleet),
                        ("--mig-parted-config", args.mig_parted_config),
                        ("--kubernetes.node", args.kubernetes_node)):
        if value is not None:
            raise InputError(f"--from-diagnose: {flag} does not apply (each diagnose JSON is one node, "
                             "its advice the layout)")
    if args.gpu_operator == "off":
        raise InputError("--from-diagnose writes the GPU Operator's config: "
                         "--gpu-operator off contradicts it")


def detection(args: argparse.Namespace) -> operator.Detection:
    """A simulated fleet's host is not this one: only its flags and labels count, not this host's
    processes."""
    labels = _node_labels(args.node_labels) if args.node_labels else None
    pids = operator.mig_manager_pids() if args.gpu_operator == "auto" and args.fleet is None else ()
    return operator.detect(args.gpu_operator, labels, pids)


def _node_labels(path: str) -> dict[str, str]:
    document = read_yaml_file(path, unreadable=f"--kubernetes.node-labels {path}")
    if isinstance(document, dict) and document.get("kind") == "Node":
        document = (document.get("metadata") or {}).get("labels") or {}
    if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
        raise InputError(f"{path}: expected a Node (kubectl get node NAME -o json) or a mapping of labels")
    return {str(key): value for key, value in document.items()}


def run_node(args: argparse.Namespace, output: Any, detection: operator.Detection, found: Snapshot,
                   targets: tuple[GpuTarget, ...], plan: Plan) -> int:
    """This node's layout for the GPU Operator: the plan only checks that it fits and names who is in
    the way; no step runs."""
    if plan.impossible:
        raise InputError("; ".join(b.reason for b in plan.blockers if b.kind is BlockerKind.IMPOSSIBLE))
    node = args.kubernetes_node or socket.gethostname()
    busy = [operator.Busy(node, b.gpu_index, tuple(sorted({p.pid for p in b.processes})))
            for b in plan.blockers if b.gpu_index is not None and b.processes]
    return run(output, detection, [operator.node_layout(node, found, targets)], busy,
                                args.gpu_operator_config, args.output_dir, args.mig_strategy, args.apply)


def run_fleet(args: argparse.Namespace, output: Any) -> int:
    read = [diagnose_input.read(spec) for spec in args.from_diagnose]
    nodes = [layout.node for layout, _ in read]
    if len(set(nodes)) != len(nodes):
        twice = sorted(n for n in set(nodes) if nodes.count(n) > 1)[0]
        raise InputError(f"--from-diagnose: node {twice} is given twice (name them NODE=FILE)")
    detection = operator.Detection(True, f"--from-diagnose, {len(read)} nodes")
    return run(output, detection, [layout for layout, _ in read],
                                [b for _, busy in read for b in busy], args.gpu_operator_config,
                                args.output_dir, args.mig_strategy, args.apply)


def run(output: Any, detection: operator.Detection, layouts: Sequence[operator.NodeLayout],
        busy: Sequence[operator.Busy], config_file: str | None, output_dir: Path | None, strategy: str,
        applying: bool) -> int:
    """Say what the Operator will do and write what it needs; changes nothing on any GPU."""
    if output_dir is not None and config_file is None:
        raise InputError("--output-dir: on a GPU Operator node the mig-parted ConfigMap is merged with the "
                         "cluster's: give --gpu-operator.config FILE from `kubectl get configmap -n "
                         f"gpu-operator {configmap.DEFAULT_NAME} -o yaml` (the one migManager.config.name "
                         "names)")
    source = configmap.read(config_file) if config_file is not None else None
    existing = source.configs if source is not None else {}
    merged, chosen = operator.merge(existing, layouts, config_file or "the new configs")
    commands = _commands(source, output_dir, chosen)
    files = _write(output_dir, source, merged, commands) if output_dir is not None and source else ()
    resources = Counter(resource_name(device, strategy)
                        for layout in layouts for gpu in layout.gpus for device in gpu.devices)
    document = {
        "managed_by_gpu_operator": True, "detected_by": detection.reason, "changed": False,
        "nodes": [{"node": layout.node, "config": chosen[layout.node],
                   "gpus": [{"index": g.index, "mig_enabled": g.mig_enabled, "devices": list(g.devices)}
                            for g in layout.gpus]} for layout in layouts],
        "configs_kept": sorted(existing), "configs_added": sorted(set(merged) - set(existing)),
        "busy": [{"node": b.node, "gpu_index": b.gpu_index, "pids": list(b.pids)} for b in busy],
        "commands": commands, "resources": dict(sorted(resources.items())), "files": [str(f) for f in files],
    }
    output.add("gpu_operator", document, _text(detection, layouts, chosen, busy, commands, resources, files,
                                               source, merged, applying))
    return 0


def _commands(source: configmap.ConfigMap | None, output_dir: Path | None,
              chosen: dict[str, str]) -> list[str]:
    where = output_dir / CONFIG_MAP_FILE if output_dir is not None else CONFIG_MAP_FILE
    commands = [f"kubectl apply -f {where}"]
    patch = source.patch_command() if source is not None else None
    if patch:  # after the apply: the ClusterPolicy must never name a ConfigMap that does not exist
        commands.append(patch)
    commands += operator.label_commands(chosen)
    commands.append(operator.watch_command(list(chosen)))
    return commands


def _write(output_dir: Path, source: configmap.ConfigMap, merged: migparted.Configs,
           commands: list[str]) -> tuple[Path, ...]:
    output_dir.mkdir(parents=True, exist_ok=True)
    config_map = output_dir / CONFIG_MAP_FILE
    config_map.write_text(configmap.render(source, merged))
    script = output_dir / COMMANDS_FILE
    script.write_text(SCRIPT_HEADER + "\n".join(commands) + "\n")
    return config_map, script


def _text(detection: operator.Detection, layouts: Sequence[operator.NodeLayout], chosen: dict[str, str],
          busy: Sequence[operator.Busy], commands: list[str], resources: Counter[str],
          files: Sequence[Path], source: configmap.ConfigMap | None, merged: migparted.Configs,
          applying: bool) -> str:
    where = "these nodes" if len(layouts) > 1 else "this node"
    lines = [f"MIG on {where} is managed by the NVIDIA GPU Operator ({detection.reason}): "
             "mig-exporter changes no MIG setting itself"
             f"{' (--apply changes nothing here)' if applying else ''}; mig-manager applies the config "
             f"that the node label {operator.CONFIG_LABEL} names."]
    for layout in layouts:
        lines.append(f"Node {layout.node}: config {chosen[layout.node]}")
        lines += [f"  GPU {g.index}: {', '.join(g.devices) or 'no MIG device'}" if g.mig_enabled
                  else f"  GPU {g.index}: MIG disabled" for g in layout.gpus]
    if source is None:
        names = ", ".join(sorted(set(chosen.values())))
        lines.append(f"Configs to add: {names}; give --gpu-operator.config (the cluster's mig-parted "
                     "ConfigMap) and --output-dir to write them merged with its own.")
    else:
        added = sorted(set(merged) - set(source.configs))
        lines.append(f"ConfigMap {source.namespace}/{source.target_name}: the {len(source.configs)} "
                     f"configs of {source.name} kept, {len(added)} added ({', '.join(added) or 'none'}).")
    for b in busy:
        lines.append(f"Warning: node {b.node} GPU {b.gpu_index} runs PID {' '.join(map(str, b.pids))}, which "
                     "mig-manager does not stop: stop them first, or its apply fails (state failed).")
    lines.append("Then, in order:")
    lines += [f"  {number}. {command}" for number, command in enumerate(commands, 1)]
    lines.append(f"  and wait for {operator.STATE_LABEL}=success on each node (pending, then rebooting on "
                 "some GPUs, then success; failed: kubectl logs -n gpu-operator -l app=nvidia-mig-manager).")
    if resources:
        lines.append("Pods then request, in their limits: "
                     + ", ".join(f"{name} (x{count})" for name, count in sorted(resources.items())))
    if files:
        lines.append("Wrote: " + ", ".join(map(str, files)))
    return "\n".join(printable(line) for line in lines)  # a path, a node name: one line each
