"""The ``remediate`` subcommand: the incident's runbook as one safe command.

Without ``--apply`` it reads the GPUs, prints the plan and changes nothing (exit 0). With
``--apply``: 0 done or nothing to do, 3 refused as unsafe with nothing changed, 4 a MIG mode waits
for a reset or reboot, 2 an error (bad input, a layout that cannot be made, a failure after which
this run's steps were undone).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mig_exporter.errors import InputError, print_error
from mig_exporter.host import nvml_session
from mig_exporter.hostinfo import Attribution, attribute_processes
from mig_exporter.model import Snapshot
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.nvml.session import NvmlSession
from mig_exporter.nvml.write import HardwareWriter
from mig_exporter.pending_mig import pending_mig_change
from mig_exporter.printable import printable
from mig_exporter.remediate import operator_command, report
from mig_exporter.remediate.apply import Applier, Failure, Outcome
from mig_exporter.remediate.artifacts import (
    Assignment,
    RunRecord,
    assignments,
    config_name,
    created_instances,
    render_all,
    write_all,
)
from mig_exporter.remediate.journal import Journal, unfinished_runs
from mig_exporter.remediate.kubernetes import DEFAULT_MIG_STRATEGY, MIG_STRATEGIES, resource_name
from mig_exporter.remediate.layout import GpuTarget, layout_targets, mig_parted_targets
from mig_exporter.remediate.lock import HostLock
from mig_exporter.remediate.plan import BlockerKind, Plan, make_plan
from mig_exporter.remediate.slurm import gres
from mig_exporter.remediate.verify import differences, unrestored

EXIT_DONE = 0
EXIT_DECLINED = 1
EXIT_ERROR = 2
EXIT_UNSAFE = 3
EXIT_RESET_NEEDED = 4

ROOT_JOURNAL = "/var/lib/mig-exporter/remediate.jsonl"
ROOT_LOCK = "/run/lock/mig-exporter-remediate.lock"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "remediate", help="partition GPUs with MIG: plan, then apply safely",
        description="Partition GPUs with MIG. Without --apply, print the plan and change nothing.",
        epilog="Exit status with --apply: 0 done or nothing to do, 1 declined at the prompt, 2 error "
               "(this run's changes undone), 3 refused as unsafe (nothing changed), 4 a reset or reboot "
               "is needed to finish.")
    add = parser.add_argument
    add("--fleet", metavar="F",
        help="a built-in fleet's name, else a fleet file's path, to simulate instead of the GPUs")
    add("--gpu", metavar="SPEC", help="GPUs to partition: indices (0,1), UUIDs, or all")
    add("--layout", metavar="PROFILES", help="GPU instances per GPU: 3g.40gb,3g.40gb or 3g,3g")
    add("--mig-parted-config", metavar="FILE", help="a mig-parted v1 config, instead of --gpu and --layout")
    add("--config", metavar="NAME", help="the config of --mig-parted-config to apply")
    add("--apply", action="store_true", help="make the changes (default: only print the plan)")
    add("--yes", action="store_true", help="do not ask for confirmation")
    add("--reset", action="store_true", help="reset the GPUs whose MIG mode stays pending, and only those")
    add("--no-persistence", action="store_true", help="leave persistence mode as it is")
    add("--output-dir", metavar="DIR",
        help="with --apply, write MIG assignments, docker-compose, Kubernetes, mig-parted and runbook "
             "files there (on a GPU Operator node, its ConfigMap and kubectl commands)")
    add("--kubernetes.mig-strategy", dest="mig_strategy", choices=MIG_STRATEGIES,
        help="the device plugin's MIG strategy, for the resource names in the artifacts "
             f"(default {DEFAULT_MIG_STRATEGY})")
    add("--gpu-operator", choices=("auto", "on", "off"), default="auto",
        help="whether the NVIDIA GPU Operator manages MIG here (auto: from the node labels or a running "
             "nvidia-mig-manager); if so, write its config and labels and change no MIG setting")
    add("--kubernetes.node", dest="kubernetes_node", metavar="NAME",
        help="this host's Kubernetes node name (default: the host name)")
    add("--kubernetes.node-labels", dest="node_labels", metavar="FILE",
        help="the node as `kubectl get node NAME -o json` prints it (or its labels as YAML), for detection")
    add("--gpu-operator.config", dest="gpu_operator_config", metavar="FILE",
        help="the GPU Operator's mig-parted ConfigMap (kubectl get configmap -n gpu-operator "
             "default-mig-parted-config -o yaml): the configs written are merged with it")
    add("--from-diagnose", nargs="+", metavar="[NODE=]FILE",
        help="several nodes' `diagnose --format json`: one merged GPU Operator config and the label "
             "commands for all of them (the node is NODE, or the file name)")
    add("--format", choices=("text", "json"), default="text")
    add("--journal", metavar="PATH",
        help=f"JSON-lines journal of each change (default: beside a --fleet file; as root: "
             f"{ROOT_JOURNAL}; else under $XDG_STATE_HOME or ~/.local/state)")
    add("--lock", metavar="PATH",
        help=f"lock for one remediate per host (default: beside a --fleet file; as root: {ROOT_LOCK}; "
             "else under $XDG_RUNTIME_DIR or the temporary directory)")
    parser.set_defaults(run=run)


class Output:
    """Text is printed as the run goes; JSON is one document, printed once when the run ends."""

    def __init__(self, output_format: str) -> None:
        self.json = output_format == "json"
        self.document: dict[str, Any] = {}

    def add(self, key: str, data: Any, text: str) -> None:
        self.document[key] = data
        if not self.json and text:
            print(text)

    def finish(self) -> None:
        if self.json and self.document:  # nothing to say when the run stopped before planning
            print(json.dumps(self.document, indent=2))


@dataclass(frozen=True)
class Execution:
    outcome: Outcome
    fresh: Snapshot  # the hardware as read after the run (as found, when nothing ran)
    journal: Path
    run_id: str


# What each flag does only with --apply, on a host where remediate changes MIG itself: without
# --apply the run only prints the plan, and a flag ignored there would let the operator believe
# files were written, a GPU reset or the change confirmed.
_APPLY_ONLY = (
    ("--output-dir", "output_dir", "writes the artifacts of an applied layout (its MIG UUIDs exist only "
                                   "after the apply)"),
    ("--yes", "yes", "confirms the changes of --apply"),
    ("--reset", "reset", "resets GPUs as a step of --apply"),
    ("--journal", "journal", "records the changes of --apply"),
    ("--lock", "lock", "is the lock --apply takes"),
    ("--kubernetes.mig-strategy", "mig_strategy", "names the resources in the artifacts of --apply"),
)


def _check_plan_only_flags(args: argparse.Namespace) -> None:
    for flag, dest, does in _APPLY_ONLY:
        if getattr(args, dest) not in (None, False):
            raise InputError(f"{flag} {does}; it needs --apply (without it remediate only prints the plan)")


def run(args: argparse.Namespace) -> int:
    _check_flags(args)
    detection = None if args.from_diagnose else operator_command.detection(args)
    if detection is not None and not detection.managed and not args.apply:
        _check_plan_only_flags(args)
    # resolved only now: a strategy given without --apply is refused above, the default is not
    args.mig_strategy = args.mig_strategy or DEFAULT_MIG_STRATEGY
    output = Output(args.format)
    try:
        if detection is None:
            return operator_command.run_fleet(args, output)
        if detection.managed:
            with nvml_session(args.fleet) as session:
                found = _read(session)
                targets, plan = _plan(args, session, found, privileged=True)
            return operator_command.run_node(args, output, detection, found, targets, plan)
        if not args.apply:
            with nvml_session(args.fleet) as session:
                found = _read(session)
                targets, plan = _plan(args, session, found)
                _show_plan(output, session, found, targets, plan)
            return EXIT_DONE
        with HostLock(args.lock or default_lock(args.fleet), create_parent=args.lock is None), \
                nvml_session(args.fleet) as session:
            simulator = session.simulator
            if simulator is not None and simulator.read_only:
                raise InputError(f"--fleet {args.fleet} is a built-in fleet and read-only; to apply, copy "
                                 f"it: mig-exporter fleet show {args.fleet} > fleet.yaml, "
                                 "then use --fleet fleet.yaml")
            found = _read(session)
            targets, plan = _plan(args, session, found)
            _show_plan(output, session, found, targets, plan)
            return _apply(args, output, session, found, plan)
    finally:
        output.finish()


def _check_flags(args: argparse.Namespace) -> None:
    for flag, dest in (("--output-dir", "output_dir"), ("--journal", "journal"), ("--lock", "lock")):
        text = getattr(args, dest)
        if text is not None:
            if not text.strip():  # an unset shell variable, not the current directory
                raise InputError(f"{flag}: empty; give a path (. is the current directory)")
            setattr(args, dest, Path(text))
    if args.from_diagnose:
        operator_command.check_flags(args)
        return
    if args.mig_parted_config is not None:
        if args.layout is not None or args.gpu is not None:
            raise InputError("--mig-parted-config: give either it (its devices select the GPUs) "
                             "or --gpu and --layout")
        if args.config is None:
            raise InputError(f"--mig-parted-config {args.mig_parted_config}: --config NAME is required")
    elif args.layout is None or args.gpu is None:
        raise InputError("give --gpu (0,1, UUIDs or all) and --layout (e.g. 3g.40gb,3g.40gb), "
                         "or --mig-parted-config FILE --config NAME")
    elif args.config is not None:
        raise InputError("--config: only with --mig-parted-config")


def _read(session: NvmlSession) -> Snapshot:
    """The hardware to plan from. No GPU at all is an error, not "nothing to do": NVML failed to
    count them, or this host has none to partition."""
    snapshot = read_snapshot(session)
    reasons = "; ".join(f"{e.call}: {e.error}" for e in snapshot.errors) or "unknown error"
    if not snapshot.nvml_up:
        raise InputError(f"NVML could not be read ({reasons})")
    if not snapshot.gpus:
        why = f" ({reasons})" if snapshot.errors else ""
        raise InputError(f"NVML lists no GPU on this host{why}; nothing can be partitioned")
    return snapshot


def _plan(
    args: argparse.Namespace, session: NvmlSession, found: Snapshot, privileged: bool = False,
) -> tuple[tuple[GpuTarget, ...], Plan]:
    """``privileged``: plan as if root (where remediate changes nothing itself)."""
    if args.mig_parted_config is not None:
        targets = mig_parted_targets(args.mig_parted_config, args.config, found)
    else:
        targets = layout_targets(args.gpu, args.layout, found)
    privileged = privileged or session.simulator is not None or os.geteuid() == 0
    return targets, make_plan(found, targets, privileged=privileged, persistence=not args.no_persistence)


def _show_plan(output: Output, session: NvmlSession, found: Snapshot, targets: tuple[GpuTarget, ...],
               plan: Plan, key: str = "plan") -> None:
    attributions = _attributions(session, plan)
    gpus = [found.gpu(t.gpu_index) for t in targets]
    output.add(key, report.plan_json(gpus, targets, plan, attributions),
               report.plan_text(gpus, targets, plan, attributions))


def _attributions(session: NvmlSession, plan: Plan) -> dict[int, Attribution]:
    """Who runs each blocking process, so the plan can say what to stop and how."""
    pids = sorted({p.pid for blocker in plan.blockers for p in blocker.processes})
    simulator = session.simulator
    return attribute_processes(pids, simulator.attribution if simulator is not None else None)


def _apply(
    args: argparse.Namespace, output: Output, session: NvmlSession, found: Snapshot, plan: Plan,
) -> int:
    if plan.impossible:
        raise InputError("; ".join(b.reason for b in plan.blockers if b.kind is BlockerKind.IMPOSSIBLE))
    if plan.unsafe:
        output.add("refused", True, "Refused: nothing was changed.")
        return EXIT_UNSAFE
    _check_output_dir(args.output_dir)
    if plan.nothing_to_do:
        execution = _nothing_to_execute(args, found)
    else:
        if _asks(args):
            if not _ask(plan):
                output.add("declined", True, "Declined: nothing was changed.")
                return EXIT_DECLINED
            confirmed = _still_as_confirmed(args, output, session, plan)
            if confirmed is None:
                return EXIT_UNSAFE
            found, plan = confirmed
        execution = _execute(args, session, found, plan)
    outcome = execution.outcome
    if outcome.failure is not None:
        output.add("outcome", report.outcome_json(outcome),
                   report.outcome_text(outcome, str(execution.journal)))
        failure = outcome.failure
        print_error("remediate", f"{failure.what}: {failure.error}")
        return EXIT_ERROR
    made = assignments(execution.fresh, plan, created_instances(outcome.executed))
    unwritten: str | None = None
    try:
        files = _write_artifacts(args, plan, execution, made)
    except OSError as error:  # the hardware is done and verified: say so, then the error
        files, unwritten = (), f"--output-dir {args.output_dir}: {error.strerror}: {error.filename}"
    output.add("outcome", report.outcome_json(outcome), _result_text(args, plan, execution, made, files))
    output.document["assignments"] = [_assignment_json(a, args.mig_strategy) for a in made]
    output.document["files"] = [str(f) for f in files]
    if unwritten is not None:
        print_error("remediate", unwritten)
        return EXIT_ERROR
    return EXIT_RESET_NEEDED if outcome.pending else EXIT_DONE


def _check_output_dir(directory: Path | None) -> None:
    """Create ``--output-dir`` before the first change: a typo found after the GPUs were
    partitioned would leave the operator without the MIG assignments."""
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--output-dir {directory}: {error.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"--output-dir {directory}: not writable")


def _asks(args: argparse.Namespace) -> bool:
    """Ask on a terminal unless --yes; a script (stdin not a terminal) is not asked."""
    return not args.yes and sys.stdin.isatty()


def _ask(plan: Plan) -> bool:
    """The confirmation prompt: True when the operator answers yes."""
    gpus = ", ".join(str(gpu_plan.gpu.index) for gpu_plan in plan.gpus if gpu_plan.steps)
    print(f"Apply these {len(plan.steps)} steps to GPU {gpus}? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _still_as_confirmed(
    args: argparse.Namespace, output: Output, session: NvmlSession, confirmed: Plan,
) -> tuple[Snapshot, Plan] | None:
    """The hardware read again after the prompt, and its plan, when that plan is the one the
    operator confirmed. A person can take minutes to answer, and a workload started meanwhile on
    an instance the plan destroys, or on a GPU whose MIG mode it changes, would lose its GPU; so
    when the steps differ or a blocker appeared, the new plan is shown, nothing is changed, and
    None is returned."""
    found = _read(session)
    targets, plan = _plan(args, session, found)
    if plan.steps == confirmed.steps and not plan.blockers:
        return found, plan
    _show_plan(output, session, found, targets, plan, key="plan_after_confirmation")
    output.add("changed_while_waiting", True,
               "Refused: the GPUs changed while waiting for confirmation (new plan above); nothing was "
               "changed. Run the command again.")
    return None


def _nothing_to_execute(args: argparse.Namespace, found: Snapshot) -> Execution:
    """A run with nothing to do journals nothing, unless the journal has a run killed after its
    last step: then that run is named (``unfinished-run-found``) by this one, which found its
    layout complete, so the journal does not leave it open for ever."""
    journal_path = args.journal or default_journal(args.fleet)
    if not unfinished_runs(journal_path):
        return Execution(Outcome(()), found, journal_path, "none")
    with Journal(journal_path, create_parent=args.journal is None) as journal:
        journal.record("run-start", command=command_line(args), steps=0)
        journal.record("run-end", failed=False, pending=[], not_undone=[])
    return Execution(Outcome(()), found, journal_path, journal.run_id)


def _execute(args: argparse.Namespace, session: NvmlSession, found: Snapshot, plan: Plan) -> Execution:
    """Run the plan under the journal, then read the hardware again and verify it."""
    journal_path = args.journal or default_journal(args.fleet)
    with Journal(journal_path, create_parent=args.journal is None) as journal:
        journal.record("run-start", command=command_line(args), steps=len(plan.steps))
        applier = Applier(HardwareWriter(session), journal, found, allow_reset=args.reset)
        outcome = applier.apply(plan)
        fresh = read_snapshot(session)
        if outcome.failure is None:
            problems = differences(fresh, plan, {p.gpu_index for p in outcome.pending})
            if problems:
                outcome = applier.roll_back(Failure("verification", "; ".join(problems)))
                fresh = read_snapshot(session)
        if outcome.failure is not None:  # "as found" is only said once the hardware reads so
            changed = unrestored(found, fresh, [gpu_plan.gpu.index for gpu_plan in plan.gpus])
            not_undone = tuple(Failure("read back after the undo", line) for line in changed)
            outcome = replace(outcome, not_undone=outcome.not_undone + not_undone)
        journal.record("run-end", failed=outcome.failure is not None,
                       pending=[p.gpu_index for p in outcome.pending],
                       not_undone=[f"{f.what}: {f.error}" for f in outcome.not_undone])
    return Execution(outcome, fresh, journal_path, journal.run_id)


def _write_artifacts(args: argparse.Namespace, plan: Plan, execution: Execution,
                     made: tuple[Assignment, ...]) -> tuple[Path, ...]:
    if args.output_dir is None:
        return ()
    record = RunRecord(
        host=socket.gethostname(), generated_at=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        command_line=command_line(args), fleet=args.fleet, journal=str(execution.journal),
        run_id=execution.run_id, config_name=args.config or config_name(plan), plan=plan,
        executed=execution.outcome.executed, pending=execution.outcome.pending, assignments=made,
        mig_strategy=args.mig_strategy, slurm_gres=gres(execution.fresh))
    return write_all(args.output_dir, render_all(record))


def _result_text(args: argparse.Namespace, plan: Plan, execution: Execution, made: tuple[Assignment, ...],
                 files: tuple[Path, ...]) -> str:
    outcome = execution.outcome
    pending = {p.gpu_index for p in outcome.pending}
    lines = []
    if not plan.nothing_to_do:  # else the plan has said so
        lines += report.outcome_text(outcome, str(execution.journal)).split("\n")  # escaped already
        verified = [str(gpu_plan.gpu.index) for gpu_plan in plan.gpus if gpu_plan.gpu.index not in pending]
        if verified:
            lines.append(f"Verified by reading NVML again: GPU {', '.join(verified)} as planned.")
    for index in sorted(pending):
        gpu = next((g for g in execution.fresh.gpus if g.index == index), None)
        change = pending_mig_change(gpu) if gpu is not None else None
        holders = ("stop what holds it (processes, nvidia-persistenced, NVML clients such as mig-exporter "
                   "serve or dcgm-exporter)")
        if change is not None and not change.reset:
            lines.append(f"To finish GPU {index} ({change.what_applies_it()}): {holders}, then run the "
                         f"same command again: {command_line(args)}")
        else:
            applies = f" ({change.what_applies_it()})" if change is not None else ""
            lines.append(f"To finish GPU {index}{applies}: {holders}, then run: "
                         f"{command_line(args, reset=True)}; or reboot and run the same command.")
    if made:
        lines.append("MIG devices (pin each workload to one):")
        lines += [f"  GPU {a.gpu_index} {a.profile} GPU instance {a.gpu_instance_id}"
                  f"{' (new)' if a.new else ''}: CUDA_VISIBLE_DEVICES={a.mig_uuid}" for a in made]
    if files:
        lines.append("Wrote: " + ", ".join(str(f) for f in files))
    return "\n".join(printable(line) for line in lines)  # a path, a node name: one line each


def _assignment_json(assignment: Assignment, strategy: str) -> dict[str, Any]:
    return {**asdict(assignment), "resource": resource_name(assignment.profile, strategy),
            "cuda_visible_devices": f"CUDA_VISIBLE_DEVICES={assignment.mig_uuid}"}


def command_line(args: argparse.Namespace, reset: bool | None = None) -> str:
    """The command as a person would type it again (for the journal, the runbook and exit 4's advice)."""
    parts = ["mig-exporter", "remediate"]
    for flag, value in (("--fleet", args.fleet), ("--gpu", args.gpu), ("--layout", args.layout),
                        ("--mig-parted-config", args.mig_parted_config), ("--config", args.config)):
        if value is not None:
            parts += [flag, str(value)]
    with_reset = args.reset if reset is None else reset
    for flag, on in (("--apply", args.apply), ("--yes", args.yes), ("--reset", with_reset),
                     ("--no-persistence", args.no_persistence)):
        if on:
            parts.append(flag)
    return shlex.join(parts)


def _fleet_file(fleet: str | None) -> Path | None:
    """The fleet file a simulated run changes; None for real GPUs and built-in fleets."""
    # resolved: a symlink to the fleet file must share its lock and journal
    return Path(fleet).resolve() if fleet is not None and Path(fleet).is_file() else None


def default_journal(fleet: str | None) -> Path:
    """A fleet file's runs are journaled beside it: a drill on a simulated fleet must not mix
    its entries into the journal of the host's real GPUs."""
    fleet_file = _fleet_file(fleet)
    if fleet_file is not None:
        return fleet_file.with_name(fleet_file.name + ".journal.jsonl")
    if os.geteuid() == 0:
        return Path(ROOT_JOURNAL)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mig-exporter" / "remediate.jsonl"


def default_lock(fleet: str | None) -> Path:
    """One remediate at a time per host, or per fleet file (its simulated host)."""
    fleet_file = _fleet_file(fleet)
    if fleet_file is not None:
        return fleet_file.with_name(fleet_file.name + ".lock")
    if os.geteuid() == 0:
        return Path(ROOT_LOCK)
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(runtime) / f"mig-exporter-remediate-{os.getuid()}.lock"
