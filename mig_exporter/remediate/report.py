"""What ``remediate`` prints: the plan (what is there, what will be, the steps, the blockers) and
the outcome of an apply, as text for people or JSON for machines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from mig_exporter.hostinfo import Attribution
from mig_exporter.model import Gpu, GpuProcess
from mig_exporter.printable import printable
from mig_exporter.remediate.apply import Outcome
from mig_exporter.remediate.layout import GpuTarget
from mig_exporter.remediate.plan import Blocker, GpuPlan, Plan
from mig_exporter.remediate.steps import CreateComputeInstance, to_json
from mig_exporter.units import format_mib


def gpu_summary(gpu: Gpu) -> str:
    """``MIG disabled; persistence off; processes: 78914 python 3752 MiB, 81007 python 3780 MiB``."""
    if gpu.lost:
        return "lost"
    if not gpu.mig_supported:
        mode = "MIG not supported"
    elif gpu.mig_pending_change:
        mode = f"MIG pending {'enable' if gpu.mig_mode_pending else 'disable'}"
    else:
        mode = f"MIG {'enabled' if gpu.mig_enabled else 'disabled'}"
    if gpu.mig_enabled:
        instances = ", ".join(f"{gi.profile}@{gi.placement_start} (GPU instance {gi.gpu_instance_id})"
                              for gi in gpu.gpu_instances) or "no GPU instances"
        mode = f"{mode}: {instances}"
    persistence = {True: "on", False: "off", None: "unknown"}[gpu.persistence_mode]
    processes = ", ".join(_process(p) for p in gpu.processes) or "none"
    return f"{mode}; persistence {persistence}; processes: {processes}"


def _process(process: GpuProcess) -> str:
    memory = "" if process.used_memory_bytes is None else f" {format_mib(process.used_memory_bytes)}"
    where = "" if process.gpu_instance_id is None else f" in GPU instance {process.gpu_instance_id}"
    return f"{process.pid} {process.name or '(unnamed)'}{memory}{where}"


def target_summary(gpu_plan: GpuPlan) -> str:
    """``MIG enabled: 3g.40gb@4 (new), 3g.40gb@0 (new)``: the GPU once the plan has run."""
    if not gpu_plan.target.mig_enabled:
        return "MIG disabled"
    kept = {gi.placement_start for gi in gpu_plan.kept}
    listing = ", ".join(f"{slot}{'' if slot.start in kept else ' (new)'}" for slot in gpu_plan.expected)
    return f"MIG enabled: {listing or 'no GPU instances'}"


def stop_command(blocker: Blocker, attributions: Mapping[int, Attribution]) -> str | None:
    """How to stop the blocking processes: ``docker stop`` for a Docker or Podman container (a
    killed process would be restarted by its restart policy), else ``kill``."""
    commands, pids = [], []
    for process in blocker.processes:
        container = attributions[process.pid].container if process.pid in attributions else None
        if container is not None and container.runtime in ("docker", "podman") and container.id:
            commands.append(f"{container.runtime} stop {container.id[:12]}")
        else:
            pids.append(process.pid)
    if pids:
        commands.append(f"kill {' '.join(map(str, pids))}")
    return "; ".join(dict.fromkeys(commands)) or None


def plan_text(gpus: Sequence[Gpu], targets: Sequence[GpuTarget], plan: Plan,
              attributions: Mapping[int, Attribution]) -> str:
    planned = {gpu_plan.gpu.index: gpu_plan for gpu_plan in plan.gpus}
    lines = []
    for gpu, target in zip(gpus, targets, strict=True):
        lines.append(f"GPU {gpu.index}  {gpu.name or 'unknown model'}  {gpu.uuid}")
        lines.append(f"  now:  {gpu_summary(gpu)}")
        gpu_plan = planned.get(gpu.index)
        lines.append(f"  want: {target_summary(gpu_plan) if gpu_plan else _wanted(target)}")
    steps = [f"  {n}. {step.describe()}" for n, step in enumerate(plan.steps, 1)]
    if not plan.blockers:
        lines += ["Steps:", *steps] if steps else []
    else:
        lines.append("Blockers:")
        for blocker in plan.blockers:
            lines.append(f"  - {blocker.reason}")
            for process in blocker.processes:
                lines.append(f"      {_process(process)}{_attributed(attributions.get(process.pid))}")
            command = stop_command(blocker, attributions)
            if command:
                lines.append(f"    stop them first: {command}")
        if steps:
            lines.append("After the blockers are cleared (until then --apply changes nothing), the steps:")
            lines += steps
        lines += [f"GPU {gpu.index}: no steps are possible (see its blocker)"
                  for gpu in gpus if _impossible(gpu.index, plan, planned)]
    if plan.nothing_to_do:
        lines.append("Nothing to do: the GPUs already have this layout.")
    return "\n".join(printable(line) for line in lines)  # a name, a user: one line each


def _impossible(gpu_index: int, plan: Plan, planned: Mapping[int, GpuPlan]) -> bool:
    """The GPU has blockers and no plan: what is asked cannot be made there, whatever stops."""
    return gpu_index not in planned and any(b.gpu_index == gpu_index for b in plan.blockers)


def _wanted(target: GpuTarget) -> str:
    if target.capability is None and target.mig_enabled:
        return "MIG, which this GPU does not support"
    return f"MIG enabled: {target.layout or 'no GPU instances'}" if target.mig_enabled else "MIG disabled"


def _attributed(attribution: Attribution | None) -> str:
    if attribution is None:
        return ""
    known = [f"user {attribution.user}" if attribution.user else "",
             " ".join(attribution.cmdline) if attribution.cmdline else "",
             attribution.container.describe() if attribution.container else ""]
    said = ", ".join(part for part in known if part)
    return f" ({said})" if said else ""


def plan_json(gpus: Sequence[Gpu], targets: Sequence[GpuTarget], plan: Plan,
              attributions: Mapping[int, Attribution]) -> dict[str, Any]:
    planned = {gpu_plan.gpu.index: gpu_plan for gpu_plan in plan.gpus}
    return {
        "gpus": [{
            "index": gpu.index, "uuid": gpu.uuid, "name": gpu.name, "now": gpu_summary(gpu),
            "target": {"mig_enabled": target.mig_enabled, "layout": [p.name for p in target.profiles]},
            "expected": ([asdict(slot) for slot in planned[gpu.index].expected]
                         if gpu.index in planned else None),
            "steps_possible": not _impossible(gpu.index, plan, planned),
        } for gpu, target in zip(gpus, targets, strict=True)],
        "steps": [to_json(step) for step in plan.steps],
        "steps_wait_for_blockers": bool(plan.blockers and plan.steps),
        "blockers": [{
            "kind": blocker.kind.value, "gpu": blocker.gpu_index, "reason": blocker.reason,
            "processes": [{"pid": p.pid, "name": p.name, "used_memory_bytes": p.used_memory_bytes,
                           "gpu_instance_id": p.gpu_instance_id} for p in blocker.processes],
            "stop_command": stop_command(blocker, attributions),
        } for blocker in plan.blockers],
        "nothing_to_do": plan.nothing_to_do,
    }


def outcome_text(outcome: Outcome, journal: str) -> str:
    lines = []
    if outcome.failure is not None:
        lines.append(f"FAILED: {outcome.failure.what}: {outcome.failure.error}")
        lines.append(f"Undid {len(outcome.undone)} step(s) of this run, newest first:")
        lines += [f"  - {executed.step.describe()}" for executed in outcome.undone]
        if outcome.not_undone:
            lines.append("NOT undone (the GPUs are not as found; see the journal):")
            lines += [f"  - {failure.what}: {failure.error}" for failure in outcome.not_undone]
        else:
            lines.append(_as_found(outcome))
    else:
        lines.append(f"Applied {sum(e.in_effect for e in outcome.executed)} step(s).")
        lines += [f"Asked for, not in effect yet: {e.step.describe()}"
                  for e in outcome.executed if not e.in_effect]
    for pending in outcome.pending:
        if pending.failed is not None:
            lines.append(f"Failed: {pending.failed.what}: {pending.failed.error}")
        lines.append(f"GPU {pending.gpu_index}: the MIG mode is pending ({pending.reason}).")
    lines.append(f"Journal: {journal}")
    return "\n".join(printable(line) for line in lines)  # a name, a user: one line each


def _as_found(outcome: Outcome) -> str:
    """A MIG device the undo made again is the same slice of the GPU under a new UUID (the driver
    gives each new one its own): the layout is as found, but a workload pinned to the old UUID
    would not find it."""
    remade = sum(isinstance(undone.step, CreateComputeInstance) for undone in outcome.undone)
    if not remade:
        return "Every GPU is as it was found (read back from NVML)."
    return (f"Every GPU's layout is as it was found (read back from NVML), but the {remade} MIG "
            f"device(s) the undo made again have new UUIDs: give a workload pinned to an old one "
            f"the new one (nvidia-smi -L).")


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "executed": [{**to_json(e.step), "created_id": e.created_id, "in_effect": e.in_effect}
                     for e in outcome.executed],
        "pending": [asdict(p) for p in outcome.pending],
        "failure": None if outcome.failure is None else asdict(outcome.failure),
        "undone": [to_json(e.step) for e in outcome.undone],
        "not_undone": [asdict(f) for f in outcome.not_undone],
    }
