"""The report for a person at a terminal: 80 columns, ASCII, colour only when asked or on a TTY.

Sections follow the order in which the incident was investigated: what the GPUs hold, what is
wrong and what to run, who the processes are, and the right-sized layout.
"""

from __future__ import annotations

import shlex
import textwrap
import time
from collections.abc import Iterable, Mapping

from mig_exporter.diagnose.explain import describe_gpus, describe_pids, describe_pod
from mig_exporter.diagnose.report import (
    AdviceSection,
    FindingSection,
    GpuSection,
    ProcessSection,
    Report,
    describe_error,
)
from mig_exporter.printable import printable_tree
from mig_exporter.units import format_mib, mib_figure

WIDTH = 80

_BOLD = "1"
_SEVERITY_STYLE = {"critical": "1;31", "warning": "1;33", "info": "1;36"}
_COMMAND_STYLE = "32"


class _Painter:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, style: str) -> str:
        return f"\x1b[{style}m{text}\x1b[0m" if self.color else text


def render_text(report: Report, color: bool = False) -> str:
    report = printable_tree(report)  # names, users, command lines: one line each, no escapes
    paint = _Painter(color)
    lines = [*_header(report, paint)]
    lines += _section(paint, "GPUs")
    for gpu in report.gpus:
        lines += _gpu(gpu)
    lines += _section(paint, "Findings, most severe first" if report.findings else "Findings: none")
    previous: FindingSection | None = None
    for finding in report.findings:
        lines += _finding(finding, paint, previous)
        previous = finding
    if report.processes:
        lines += _section(paint, "Processes")
        for process in report.processes:
            lines += _process(process)
    if report.advice is not None:
        lines += _advice(report.advice, {p.pid: p for p in report.processes}, paint)
    if report.collection_errors:
        lines += _section(paint, "Could not read")
        lines += [f"  {describe_error(e)}" for e in report.collection_errors]
    return "\n".join(lines) + "\n"


def _header(report: Report, paint: _Painter) -> list[str]:
    source = f"fleet {report.fleet} (simulated)" if report.fleet else "this host's GPUs"
    facts = [f"driver {report.driver_version or '?'}", f"CUDA {report.cuda_driver_version or '?'}",
             "read at " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report.taken_at))]
    counts: dict[str, int] = {}
    for finding in report.findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    if report.findings:
        verdict = f"{len(report.findings)} finding(s): " + ", ".join(f"{n} {s}" for s, n in counts.items())
    else:
        verdict = "healthy: no findings" if report.verified else "no findings"
    if not report.verified:
        verdict += "; not verified: NVML calls the findings need failed (see Could not read)"
    title = "mig-exporter diagnose"
    return [
        *_wrap(f"{source}", first=paint(title, _BOLD) + ": ", rest="  ", width_of_first=len(title) + 2),
        ", ".join(facts),
        *_wrap(f"{len(report.gpus)} GPU(s), {verdict}", first="", rest="  "),
    ]


def _section(paint: _Painter, title: str) -> list[str]:
    return ["", paint(title, _BOLD)]


def _on_off(value: bool | None) -> str:
    return "unknown" if value is None else "on" if value else "off"


def _gpu(gpu: GpuSection) -> list[str]:
    lines = [f"GPU {gpu.index}  {gpu.name or 'unknown model'}  {gpu.uuid}"]
    if gpu.lost:
        return [*lines, "  lost: NVML answers GPU_IS_LOST, nothing else can be read"]
    if gpu.mig_mode_current is None:
        mig = "MIG not supported"
    else:
        mig = "MIG " + ("enabled" if gpu.mig_mode_current else "disabled")
        if gpu.mig_mode_pending is not None and gpu.mig_mode_pending != gpu.mig_mode_current:
            mig += " (" + ("enable" if gpu.mig_mode_pending else "disable") + " pending)"
    used, total = mib_figure(gpu.memory_used_bytes), mib_figure(gpu.memory_total_bytes)
    count = "unknown" if gpu.gpu_instances is None else gpu.gpu_instances
    instances = f", {count} GPU instance(s)" if gpu.mig_mode_current else ""
    state = f"{mig}, persistence {_on_off(gpu.persistence_mode)}, memory {used}/{total} MiB{instances}"
    lines += _wrap(state, first="  ", rest="  ")
    if gpu.instances:
        lines.append(f"  {'MIG DEVICE':<12}{'GI':>3}{'CI':>3}  {'MEMORY MiB':<15} UUID")
        for i in gpu.instances:
            used, total = mib_figure(i.memory_used_bytes), mib_figure(i.memory_total_bytes)
            lines.append(f"  {i.profile:<12}{i.gpu_instance_id:>3}{i.compute_instance_id:>3}  "
                         f"{f'{used}/{total}':<15} {i.mig_uuid}")
    if gpu.processes:
        sampled = any(p.sm_utilization_ratio is not None for p in gpu.processes)
        sm_heading = f"{'SM':>6}" if sampled else ""
        lines.append(f"  {'PID':<9}{'PROCESS':<17}{'USER':<13}{'MEMORY':>10}{sm_heading}  ON")
        for p in gpu.processes:
            sm = "" if not sampled else f"{_percent(p.sm_utilization_ratio):>6}"
            lines.append(f"  {p.pid:<9}{_cut(p.name or '?', 16):<17}{_cut(p.user or '?', 12):<13}"
                         f"{format_mib(p.used_memory_bytes):>10}{sm}  {p.mig_device or 'whole GPU'}")
    else:
        lines.append("  no compute processes")
    return lines


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.0f}%"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _finding(finding: FindingSection, paint: _Painter, previous: FindingSection | None) -> list[str]:
    """A finding that only repeats the one above for another GPU or pid prints its summary alone."""
    label = paint(f"{finding.severity.upper():<8}", _SEVERITY_STYLE[finding.severity])
    lines = ["", *_wrap(finding.summary, first=f"{label} ", rest=" " * 9, width_of_first=9)]
    if previous is not None and (finding.meaning, finding.impact, finding.next_steps) == (
        previous.meaning, previous.impact, previous.next_steps
    ):
        return [*lines, "  Means, matters and next steps: as above."]
    lines += _wrap(finding.meaning, first="  Means: ", rest=" " * 4)
    lines += _wrap(finding.impact, first="  Matters: ", rest=" " * 4)
    lines.append("  Next:")
    for number, step in enumerate(finding.next_steps, start=1):
        lines += _wrap(step.action, first=f"    {number}. ", rest=" " * 7)
        if step.command:
            lines += [paint(line, _COMMAND_STYLE) for line in _command(step.command, indent=7)]
    return lines


def _process(process: ProcessSection) -> list[str]:
    used = process.used_memory_bytes
    memory = "" if used is None else f", {format_mib(used)} in total"
    lines = ["", f"PID {process.pid}  {process.name or '?'}  on {describe_gpus(process.gpu_indices)}{memory}"]
    facts = [f"user {process.user or 'unknown'}"]
    if process.started_at is not None:
        facts.append("started " + time.strftime("%Y-%m-%d %H:%M", time.localtime(process.started_at)))
    if process.container is not None:
        facts.append(process.container.describe())
    elif process.source == "host":
        facts.append("no container")
    lines += _wrap(", ".join(facts), first="  ", rest="  ")
    for pod in process.pods:
        lines += _wrap(f"{describe_pod(pod)} ({pod.resource} {pod.device_id})", first="  ", rest="    ")
    if process.cmdline is not None:
        lines += _wrap(shlex.join(process.cmdline), first="  command: ", rest=" " * 4)
    lines += _wrap(process.gpu_visibility, first="  ", rest="  ")
    for note in process.notes:
        lines += _wrap(note, first="  note: ", rest=" " * 4)
    return lines


def _advice(
    advice: AdviceSection, processes: Mapping[int, ProcessSection], paint: _Painter
) -> list[str]:
    percent = f"{advice.headroom_ratio * 100:g}%"
    lines = _section(paint, f"Advice: one MIG instance per workload, sized with {percent} headroom")
    not_placed: dict[str, list[int]] = {}
    for w in advice.workloads:
        if w.gpu_index is None:
            not_placed.setdefault(w.reason or "", []).append(w.pid)
            continue
        if w.whole_gpu:
            where = f"GPU {w.gpu_index}, whole"
        else:
            where = f"{w.profile} ({format_mib(w.profile_memory_bytes)}) on GPU {w.gpu_index}"
        needs = f"PID {w.pid} {w.name or '?'}: {format_mib(w.used_memory_bytes)} + {percent} = " \
                f"{format_mib(w.needed_memory_bytes)}"
        if w.needed_compute_ratio is not None:
            needs += f", computes on {_percent(w.sm_utilization_ratio)} of a GPU's SMs + {percent} = " \
                     f"{_percent(w.needed_compute_ratio)} of its compute slices"
        needs += f" -> {where} (sized by {w.sizing_rule})"
        lines += _wrap(needs, first="  ", rest=" " * 4)
        process = processes.get(w.pid)
        if w.pod_resource is not None and process is not None and process.pods:
            lines += _wrap(f"then: set the pod's resource to {w.pod_resource} "
                           f"({describe_pod(process.pods[0])})", first="    ", rest=" " * 6)
            continue
        command = process.cmdline if process is not None else None
        device = "<its GPU UUID>" if w.whole_gpu else "<its MIG UUID>"
        restart = shlex.join(command) if command else "<its command>"
        lines += _wrap(f"then: CUDA_VISIBLE_DEVICES={device} {restart}", first="    ", rest=" " * 6)
    for reason, pids in not_placed.items():
        lines += _wrap(f"{describe_pids(pids)} not placed: {reason}", first="  ", rest=" " * 4)
    for layout in advice.layouts:
        lines += _wrap(f"Partition GPU {layout.gpu_index} ({layout.model}) as {','.join(layout.layout)}.",
                       first="  ", rest="    ")
    if advice.freed_gpus:
        lines.append(f"  This frees {describe_gpus(advice.freed_gpus)} for other work.")
    if advice.remediate:
        copy = ", copy the built-in fleet (it is read-only: remediate --apply refuses it)" \
            if advice.copy_fleet_command else ""
        lines += _wrap(f"Stop the workloads{copy}, then run (it prints the plan; add --apply to apply it "
                       "and get the MIG UUIDs to pin each workload to):", first="  ", rest="  ")
        commands_to_run = [advice.copy_fleet_command] if advice.copy_fleet_command else []
        commands_to_run += [step.command for step in advice.remediate]
        for command_line in commands_to_run:
            lines += [paint(line, _COMMAND_STYLE) for line in _command(command_line, indent=4)]
    return lines


def _wrap(text: str, first: str, rest: str, width_of_first: int | None = None) -> list[str]:
    """Wrap to WIDTH; ``width_of_first`` is the printed width of ``first`` when it holds colour codes."""
    shown = width_of_first if width_of_first is not None else len(first)
    wrapped = textwrap.wrap(text, width=WIDTH, initial_indent="x" * shown, subsequent_indent=rest,
                            break_on_hyphens=False, break_long_words=False)
    if not wrapped:
        return [first.rstrip()]
    return [first + wrapped[0][shown:], *wrapped[1:]]


def _command(command: str, indent: int) -> Iterable[str]:
    """A command wider than the terminal is broken between arguments with `` \\``, so it can
    still be pasted as it is."""
    if indent + len(command) <= WIDTH:
        yield " " * indent + command
        return
    words = [shlex.quote(word) for word in shlex.split(command)]
    line = " " * indent + words[0]
    for word in words[1:]:
        if len(line) + 1 + len(word) > WIDTH - 2:
            yield line + " \\"
            line = " " * (indent + 2) + word
        else:
            line += " " + word
    yield line
