"""What each finding means, why it matters, and what to run next.

``mig_exporter.findings`` decides what is wrong; this module says it to a person, with the
numbers of this host and commands that can be pasted as they are. It is where the reasoning of the
incident write-up (``shared/seed/README.md``) lives: why a memory cap is not isolation, why a
reset is owed, why an empty MIG GPU runs nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mig_exporter.advice import Advice, RemediateStep, process_names
from mig_exporter.capability import capability_of, match_profile
from mig_exporter.diagnose.fleet_target import FleetTarget
from mig_exporter.findings import Finding, Kind
from mig_exporter.hostinfo import Attribution
from mig_exporter.kubelet.podresources import DeviceAllocation
from mig_exporter.model import Snapshot
from mig_exporter.pending_mig import pending_mig_change
from mig_exporter.remediate.kubernetes import GPU_RESOURCE, resource_name


@dataclass(frozen=True)
class NextStep:
    """One thing to do. ``command``, when given, is a shell line to paste as it is."""

    action: str
    command: str | None = None


@dataclass(frozen=True)
class Explanation:
    summary: str  # one line
    meaning: str
    impact: str
    next_steps: tuple[NextStep, ...]


@dataclass(frozen=True)
class _Context:
    snapshot: Snapshot
    advice: Advice | None
    attributions: Mapping[int, Attribution]
    target: FleetTarget
    pods: Mapping[int, DeviceAllocation]


def explain(
    finding: Finding,
    snapshot: Snapshot,
    advice: Advice | None,
    attributions: Mapping[int, Attribution],
    target: FleetTarget,
    pods: Mapping[int, DeviceAllocation] | None = None,
) -> Explanation:
    """``pods``: the pod each pid can be moved through (``report.sole_pods``); such a process is
    moved by changing the resource its container requests, not by restarting it by hand."""
    return _EXPLAINERS[finding.kind](finding, _Context(snapshot, advice, attributions, target, pods or {}))


def pod_resource(profile: str | None, whole_gpu: bool) -> str:
    """The resource NVIDIA's device plugin (mixed MIG strategy) serves a workload advised onto a
    MIG instance of ``profile``, or onto a whole GPU."""
    return GPU_RESOURCE if whole_gpu or profile is None else resource_name(profile, "mixed")


def describe_pod(allocation: DeviceAllocation) -> str:
    return f"pod {allocation.namespace}/{allocation.pod}, container {allocation.container}"


def _pod_step(pids: Sequence[int], pod: DeviceAllocation, resource: str, why: str) -> NextStep:
    """Processes of one container move together: the container requests one device for each."""
    each = f" (one for each of {describe_pids(pids)}, pinned inside by CUDA_VISIBLE_DEVICES)" \
        if len(pids) > 1 else f" ({describe_pids(pids)})"
    return NextStep(f"set the pod's resource to {resource} ({why}): in {describe_pod(pod)}, request "
                    f"{resource}: {len(pids)}{each} instead of {pod.resource}, and recreate the pod; the "
                    f"device plugin then gives it devices of its own")


def copy_fleet_step(target: FleetTarget) -> tuple[NextStep, ...]:
    """The step that comes before an advised ``remediate`` on a built-in fleet; none otherwise."""
    if target.copy_command is None:
        return ()
    return (NextStep("copy the built-in fleet to a file: it is read-only, and remediate --apply "
                     "refuses it", target.copy_command),)


def describe_gpus(indices: Sequence[int]) -> str:
    """``GPU 2``, ``GPUs 0, 2``, ``GPUs 0-3`` (runs of three or more as a range; ASCII, because the
    text report must print on any terminal encoding)."""
    if len(indices) == 1:
        return f"GPU {indices[0]}"
    runs: list[list[int]] = []
    for index in sorted(indices):
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    parts = [f"{r[0]}-{r[-1]}" if len(r) >= 3 else ", ".join(map(str, r)) for r in runs]
    return "GPUs " + ", ".join(parts)


PIDS_NAMED = 6  # a longer list is cut: the JSON's ``pids`` has them all


def describe_pids(pids: Sequence[int]) -> str:
    """``PID 7``, ``PIDs 7, 8``, ``PIDs 1, 2, 3, 4, 5, 6 and 119 more``."""
    named = ", ".join(map(str, pids[:PIDS_NAMED]))
    more = f" and {len(pids) - PIDS_NAMED} more" if len(pids) > PIDS_NAMED else ""
    return ("PID " if len(pids) == 1 else "PIDs ") + named + more


def _sharing(finding: Finding, ctx: _Context) -> Explanation:
    (gpu_index,) = finding.gpu_indices
    return Explanation(
        summary=f"GPU {gpu_index} is shared by {len(finding.pids)} processes without MIG: "
                f"{describe_pids(finding.pids)}",
        meaning="MIG is disabled, so the processes share every SM, the memory bandwidth and the L2 "
                "cache with nothing between them. A memory cap such as "
                "set_per_process_memory_fraction limits memory only; it does not separate compute.",
        impact="They contend for the same SMs: each one's latency rises and swings whenever the other "
               "computes, batches fail and requests time out, and one process running out of memory "
               "or faulting can take the other down with it.",
        next_steps=_partition_steps(finding.pids, ctx),
    )


def _spanning(finding: Finding, ctx: _Context) -> Explanation:
    (pid,) = finding.pids
    who = ctx.attributions[pid]
    name = process_names(ctx.snapshot).get(pid)
    called = f"PID {pid}" + (f" ({name})" if name else "")
    return Explanation(
        summary=f"{called} holds memory on {describe_gpus(finding.gpu_indices)}",
        meaning=f"One process has a CUDA context and allocations on {len(finding.gpu_indices)} GPUs; "
                f"{who.gpu_visibility}.",
        impact="It competes with every other process on each of those GPUs, pays a CUDA context on "
               "each, and none of them can be partitioned or reset while it runs.",
        next_steps=_partition_steps((pid,), ctx),
    )


def _pending(finding: Finding, ctx: _Context) -> Explanation:
    (gpu_index,) = finding.gpu_indices
    gpu = ctx.snapshot.gpu(gpu_index)
    change = pending_mig_change(gpu)
    assert change is not None  # the finding is of a pending change
    target = "enabled" if change.enable else "disabled"
    now = "enabled" if gpu.mig_mode_current else "disabled"
    holders = sorted(gpu.pids)
    steps = []
    if holders:
        steps.append(NextStep(f"stop {describe_pids(holders)}: the mode stays pending while a process holds "
                              "the GPU"))
    if change.reset and gpu.persistence_mode:
        steps.append(NextStep("turn persistence mode off for the reset: it holds the GPU open",
                              f"sudo nvidia-smi -i {gpu_index} -pm 0"))
    steps.append(NextStep("stop nvidia-persistenced, and any other agent that keeps the GPU open",
                          "sudo systemctl stop nvidia-persistenced"))
    if change.reset:
        or_reboot = ", or reboot" if change.reboot else ""
        steps.append(NextStep(f"reset GPU {gpu_index} so the new mode takes effect{or_reboot}",
                              f"sudo nvidia-smi -r -i {gpu_index}"))
        blocked = ("The reset fails with \"In use by another client\" while a process, persistence mode or "
                   "nvidia-persistenced holds the GPU.")
    else:
        steps.append(NextStep(f"enable MIG on GPU {gpu_index} again, now that it is idle (no reset)",
                              f"sudo nvidia-smi -i {gpu_index} -mig 1"))
        blocked = ("Enabling it again stays pending (\"In use by another client\") while a process or "
                   "nvidia-persistenced holds the GPU.")
    return Explanation(
        summary=f"GPU {gpu_index}: MIG mode {target} is pending{' a reset' if change.reset else ''}",
        meaning=f"MIG mode was set to {target}, but it stays {now} for now: {change.what_applies_it()}.",
        impact="Until then the GPU runs in the old mode: the partition planned for it is not in "
               f"effect. {blocked}",
        next_steps=tuple(steps),
    )


def _without_instances(finding: Finding, ctx: _Context) -> Explanation:
    (gpu_index,) = finding.gpu_indices
    layout, why = _layout_for_empty_gpu(gpu_index, ctx.snapshot)
    if layout is None:
        steps: tuple[NextStep, ...] = (NextStep(
            "list the profiles this GPU offers, then create instances for the workloads",
            f"sudo nvidia-smi mig -i {gpu_index} -lgip"),)
    else:
        create = RemediateStep((gpu_index,), layout).command(ctx.target.remediate_fleet)
        steps = (*copy_fleet_step(ctx.target), NextStep(f"create instances ({why})", create))
    return Explanation(
        summary=f"GPU {gpu_index}: MIG is enabled but it has no instances",
        meaning="With MIG on, work runs only inside MIG instances, and this GPU has none. Instances do "
                "not survive a reboot: a MIG GPU comes back empty.",
        impact="The GPU is unusable: CUDA shows no device on it and every workload meant for it fails "
               "to start.",
        next_steps=steps,
    )


def _persistence_off(finding: Finding, ctx: _Context) -> Explanation:
    (gpu_index,) = finding.gpu_indices
    return Explanation(
        summary=f"GPU {gpu_index}: persistence mode is off on a MIG GPU",
        meaning="Without persistence mode the driver tears the GPU's state down when its last client "
                "exits and builds it again at the next start.",
        impact="Every start pays that initialisation, and on Hopper the MIG mode itself does not "
               "survive a driver unload. (Persistence holds the GPU open: turn it off before a reset.)",
        next_steps=(NextStep("turn persistence mode on", f"sudo nvidia-smi -i {gpu_index} -pm 1"),),
    )


def _lost(finding: Finding, ctx: _Context) -> Explanation:
    (gpu_index,) = finding.gpu_indices
    return Explanation(
        summary=f"GPU {gpu_index} is lost",
        meaning="NVML answers GPU_IS_LOST: the GPU fell off the bus or stopped responding, so none of "
                "its values can be read.",
        impact="Nothing runs on it: processes that used it have failed or hang, and its memory and MIG "
               "instances are unknown.",
        next_steps=(
            NextStep("find the Xid error the driver logged", "sudo dmesg | grep -i xid"),
            NextStep("reset the GPU, or reboot if the reset fails", f"sudo nvidia-smi -r -i {gpu_index}"),
        ),
    )


def _no_gpus(finding: Finding, ctx: _Context) -> Explanation:
    return Explanation(
        summary="NVML reports no GPUs",
        meaning="The NVIDIA driver answers, but lists no GPU this process can use: in a container, "
                "none was passed in (NVIDIA_VISIBLE_DEVICES, the device plugin, --gpus); on the host, "
                "the GPUs are not bound to the nvidia driver or have fallen off the bus.",
        impact="Nothing on this host can be watched, diagnosed or partitioned, and workloads meant "
               "for its GPUs find none.",
        next_steps=(
            NextStep("list the GPUs the driver sees", "nvidia-smi -L"),
            NextStep("list the NVIDIA devices on the PCI bus and their driver", "lspci -nnk -d 10de:"),
        ),
    )


_EXPLAINERS: dict[Kind, Callable[[Finding, _Context], Explanation]] = {
    Kind.UNPARTITIONED_SHARING: _sharing,
    Kind.SPANNING_PROCESS: _spanning,
    Kind.MIG_PENDING: _pending,
    Kind.MIG_WITHOUT_INSTANCES: _without_instances,
    Kind.PERSISTENCE_OFF: _persistence_off,
    Kind.GPU_LOST: _lost,
    Kind.NO_GPUS: _no_gpus,
}


def _partition_steps(pids: Sequence[int], ctx: _Context) -> tuple[NextStep, ...]:
    """The advice for these processes as a runbook: stop, partition, restart pinned.

    The steps cover every workload of the GPUs the advice partitions for them, so findings about
    the same workloads get the same steps."""
    advice = ctx.advice
    if advice is None or not any(w.pid in pids for w in advice.workloads):
        return tuple(_pin_to_its_main_gpu(pid, ctx) for pid in pids)
    layouts = [lay for lay in advice.layouts if any(i.pid in pids for i in lay.instances)]
    steps = []
    if layouts:
        targets = {layout.gpu_index for layout in layouts}
        moving = sorted({i.pid for layout in layouts for i in layout.instances})
        to_stop = sorted({*pids, *moving, *(pid for i in targets for pid in ctx.snapshot.gpu(i).pids)})
        steps.append(NextStep(f"stop {describe_pids(to_stop)}: remediate refuses a GPU that processes hold"))
        steps += copy_fleet_step(ctx.target)
        steps += [NextStep(f"partition {describe_gpus(step.gpu_indices)} as advised (prints the plan; "
                           f"--apply applies it)", step.command(ctx.target.remediate_fleet))
                  for step in advice.steps if set(step.gpu_indices) & targets]
        by_hand = [pid for pid in moving if pid not in ctx.pods]
        if by_hand:
            steps.append(NextStep(f"restart {describe_pids(by_hand)}, each with CUDA_VISIBLE_DEVICES set to "
                                  f"the MIG UUID remediate prints for its instance (see Advice)"))
        profiles = {i.pid: i.profile for layout in layouts for i in layout.instances}
        in_pods: dict[tuple[DeviceAllocation, str], list[int]] = {}
        for pid in moving:
            if pid in ctx.pods:
                in_pods.setdefault((ctx.pods[pid], pod_resource(profiles[pid], False)), []).append(pid)
        steps += [_pod_step(group, pod, resource, "the advised instances")
                  for (pod, resource), group in in_pods.items()]
    steps += [_pinned_restart(w.pid, w.gpu_index, w.gpu_uuid, "a whole GPU: no MIG instance holds it", ctx)
              for w in advice.whole_gpus if w.pid in pids]
    left_out: dict[str, list[int]] = {}
    for unplaced in advice.unplaced:
        if unplaced.pid in pids:
            left_out.setdefault(unplaced.reason, []).append(unplaced.pid)
    steps += [NextStep(f"not placed, {describe_pids(group)}: {reason}") for reason, group in left_out.items()]
    return tuple(steps)


def _pin_to_its_main_gpu(pid: int, ctx: _Context) -> NextStep:
    """A process spread over GPUs it does not share: pin it to the one where it holds the most."""
    mine = [p for p in ctx.snapshot.processes if p.pid == pid]
    home = max(mine, key=lambda p: p.used_memory_bytes or 0)
    return _pinned_restart(pid, home.gpu_index, home.gpu_uuid, "where it holds the most memory", ctx)


def _pinned_restart(pid: int, gpu_index: int, gpu_uuid: str, why: str, ctx: _Context) -> NextStep:
    """The restart as a command when its command line is known; only then is there one to paste.
    A process in a pod is pinned by its container's resource request instead."""
    if pid in ctx.pods:
        return _pod_step([pid], ctx.pods[pid], GPU_RESOURCE, "a whole GPU of its own")
    pin = f"CUDA_VISIBLE_DEVICES={gpu_uuid}"
    cmdline = ctx.attributions[pid].cmdline
    if cmdline:
        return NextStep(f"restart PID {pid} pinned to GPU {gpu_index} ({why})",
                        f"{pin} {shlex.join(cmdline)}")
    return NextStep(f"restart PID {pid} with {pin}, pinned to GPU {gpu_index} ({why}); its command line "
                    f"could not be read")


def _layout_for_empty_gpu(gpu_index: int, snapshot: Snapshot) -> tuple[tuple[str, ...] | None, str]:
    """The layout of a partitioned GPU of the same model, else two halves of the GPU."""
    gpu = snapshot.gpu(gpu_index)
    for other in snapshot.gpus:
        if other.name == gpu.name and other.gpu_instances and not other.lost:
            return tuple(gi.profile for gi in other.gpu_instances), f"as GPU {other.index} has"
    capability = capability_of(gpu)
    half = match_profile(capability, f"{capability.compute_slices // 2}g") if capability else None
    if half is None:
        return None, ""
    return (half.name, half.name), "two halves; change the layout to fit the workloads"
