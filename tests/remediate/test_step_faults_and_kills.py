"""Issue 11 item 9: ``remediate --apply`` with a fault at each mutating step, and SIGKILLed between
each two steps, then run again.

For each case (a fleet and a layout), a clean run's journal lists the steps. Then, for each step,
one run whose fleet file makes that step's NVML call fail (``faults:``); for each point between
two steps (before the first, after the last), one run in a process of its own whose next NVML
call hangs (``delay_seconds``), SIGKILLed once its journal shows it got there: no sleeping and
hoping; and runs killed while undoing (a step fails, the undo of the step before it hangs).
After each, the same command again, without the fault. What must hold: DESIGN.md's exit codes; a
failed run undone to the bytes of the fleet file (but for the new UUIDs of MIG devices the undo
made again); no instance with processes ever destroyed; success said only with the read-back
("Verified by reading NVML again"); the killed run named by the re-run's journal; the re-run
reaching the layout, verified.

CI runs the first ``scaled(1)`` case, killed while undoing two of its failures; the long run
(``MIG_EXPORTER_LONG_SCALE=10``) the first ten cases, each undo killed;
``MIG_EXPORTER_LONG_SCALE=20`` all of them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from long import scaled

from mig_exporter.host import nvml_session
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.sim import load_fleet

from .fleets import (
    busy_instances,
    call_of,
    events,
    fault_at,
    incident_document,
    reaches,
    remediate,
    undone_to,
    without_faults,
    write_fleet,
)

VERIFIED = "Verified by reading NVML again"
ALREADY = "Nothing to do: the GPUs already have this layout."  # also from a read of NVML
AS_FOUND = "as it was found (read back from NVML)"  # the layout; MIG devices made again: new UUIDs
HANG = 3600.0  # a call that hangs until the process is killed

# What undoes each step (steps.undo): a created instance is destroyed, a destroyed one created
# again at its old place, a mode or persistence change asked for the other way.
UNDO_OF = {"CreateGpuInstance": {"action": "DestroyGpuInstance"},
           "CreateComputeInstance": {"action": "DestroyComputeInstance"},
           "DestroyGpuInstance": {"action": "CreateGpuInstance"},
           "DestroyComputeInstance": {"action": "CreateComputeInstance", "start": 0}}


def undo_call(step: dict[str, Any]) -> str:
    return call_of(UNDO_OF.get(step["action"], step))


def idle(gpus: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """The incident with no processes on ``gpus``: MIG off, persistence off."""
    return incident_document(without_processes_on=gpus)


def idle_two() -> dict[str, Any]:
    return idle((0, 1))


def repartition() -> dict[str, Any]:
    """The incident with GPU 0 in MIG mode: a busy 3g.40gb at 0 (to keep), two idle 1g.10gb (to
    destroy)."""
    document = incident_document()
    busy = [{"pid": 5001, "name": "python", "used_memory_mib": 12000}]
    document["gpus"][0] = {"model": "A100-SXM4-80GB", "mig": "enabled", "instances": [
        {"profile": "3g.40gb", "placement": 0, "processes": busy},
        {"profile": "1g.10gb", "placement": 4}, {"profile": "1g.10gb", "placement": 5}]}
    return document


def h100() -> dict[str, Any]:
    document = idle()
    document["gpus"][0]["model"] = "H100-SXM5-80GB"
    return document


@dataclass(frozen=True)
class Case:
    fleet: Callable[[], dict[str, Any]]
    gpus: str
    layout: tuple[str, ...]

    @property
    def arguments(self) -> list[str]:
        return ["--gpu", self.gpus, "--layout", ",".join(self.layout), "--apply", "--yes"]

    @property
    def targets(self) -> list[int]:
        return [int(gpu) for gpu in self.gpus.split(",")]

    def __str__(self) -> str:
        return f"{self.fleet.__name__}-{self.gpus}-{'+'.join(self.layout)}"


def a100(*layout: str) -> tuple[str, ...]:
    sizes = {"1g": "1g.10gb", "2g": "2g.20gb", "3g": "3g.40gb", "4g": "4g.40gb", "7g": "7g.80gb"}
    return tuple(sizes.get(profile, profile) for profile in layout)


CASES = [
    Case(repartition, "0", a100("3g", "3g")),
    Case(idle, "0", a100("3g", "3g")),
    Case(idle, "0", a100("7g")),
    Case(idle, "0", a100("4g", "3g")),
    Case(idle, "0", a100("4g", "2g", "1g")),
    Case(idle_two, "0,1", a100("3g", "3g")),
    Case(idle, "0", a100("2g", "2g", "2g", "1g")),
    Case(idle, "0", a100("1g", "1g", "1g", "1g", "1g", "1g", "1g")),
    Case(idle, "0", a100("3g", "2g", "1g", "1g")),
    Case(idle, "0", a100("2g", "1g", "1g", "1g", "1g", "1g")),
    Case(idle, "0", a100("1g.20gb", "1g.20gb", "1g.20gb", "1g.20gb")),
    Case(idle, "0", a100("3g", "1g", "1g", "1g", "1g")),
    Case(idle, "0", a100("2g", "2g", "3g")),
    Case(idle, "0", a100("4g", "1g", "1g", "1g")),
    Case(idle, "0", a100("1g.10gb+me", "3g")),
    Case(h100, "0", ("3g.40gb", "3g.40gb")),
    Case(h100, "0", ("1g.10gb",) * 7),
    Case(h100, "0", ("4g.40gb", "2g.20gb", "1g.10gb")),
    Case(h100, "0", ("7g.80gb",)),
    Case(h100, "0", ("1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb")),
]


def steps_of(journal: Path, run: str | None = None) -> list[dict[str, Any]]:
    return [e["step"] for e in events(journal) if e["event"] == "begin" and run in (None, e["run"])]


def with_fault(document: dict[str, Any], fault: dict[str, Any]) -> dict[str, Any]:
    return {**document, "faults": [fault]}


def verification_hang(fleet: Path) -> dict[str, Any]:
    """A hang of the first read after the last step: the verification's. ``remediate`` reads the
    GPUs once before applying; this many device counts are skipped."""
    with nvml_session(str(fleet)) as session:
        read_snapshot(session)
        assert session.simulator is not None
        before = session.simulator.call_counts["nvmlDeviceGetCount_v2"]
    return {"call": "nvmlDeviceGetCount_v2", "skip": before, "count": 1, "delay_seconds": HANG}


class Runs:
    """Every run of one case, each in a directory of its own, counted."""

    def __init__(self, tmp_path: Path, case: Case, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp_path = tmp_path
        self.case = case
        self.capsys = capsys
        self.document = case.fleet()
        self.found = load_fleet(str(write_fleet(tmp_path, self.document, "found.yaml")))
        self.count = Counter[str]()

    def fleet(self, name: str, document: dict[str, Any] | None = None) -> Path:
        directory = self.tmp_path / name
        directory.mkdir()
        return write_fleet(directory, self.document if document is None else document)

    def in_process(self, fleet: Path, kind: str) -> tuple[int, str]:
        self.capsys.readouterr()
        status = remediate(fleet.parent, fleet, *self.case.arguments)
        self.count[kind] += 1
        return status, self.capsys.readouterr().out

    def killed_when(self, fleet: Path, arrived: Callable[[list[dict[str, Any]]], bool], what: str) -> str:
        """Run in a process of its own, SIGKILLed once its journal is ``arrived`` (its next call
        hangs there, so it can go no further); the run's ID."""
        journal = fleet.parent / "journal.jsonl"
        process = subprocess.Popen(
            [sys.executable, "-m", "mig_exporter", "remediate", "--fleet", str(fleet),
             "--journal", str(journal), "--lock", str(fleet.parent / "remediate.lock"), *self.case.arguments],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not (events(journal) and arrived(events(journal))):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"{self.case}: the run never got {what}: {process.communicate()[0].decode()}")
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        output = process.communicate(timeout=30)[0].decode()
        self.count["killed"] += 1
        assert process.returncode == -signal.SIGKILL
        assert VERIFIED not in output
        lines = events(journal)
        assert arrived(lines)  # and nothing after: no run-end, the hung call made no change
        return str(lines[0]["run"])

    def rerun_after_kill(self, fleet: Path, killed: str, already: bool = False) -> None:
        """The command again, without the hang: it names the killed run once, first, and
        reaches the layout; the lock left by the kill is no obstacle and is gone after."""
        without_faults(fleet)
        self.check_busy_kept(fleet)
        journal = fleet.parent / "journal.jsonl"
        killed_lines = len(events(journal))
        status, out = self.in_process(fleet, "rerun after kill")
        self.check_reached(fleet, status, out, already)
        rerun = events(journal)[killed_lines:]
        assert rerun[0] == {**rerun[0], "event": "unfinished-run-found", "unfinished_run": killed}
        assert sum(e["event"] == "unfinished-run-found" for e in rerun) == 1
        assert not (fleet.parent / "remediate.lock").exists()

    def check_busy_kept(self, fleet: Path) -> None:
        """No instance with processes was destroyed, and the GPUs not targeted are as found."""
        after = load_fleet(str(fleet))
        for old, new in zip(self.found.gpus, after.gpus, strict=True):
            assert busy_instances(old) <= busy_instances(new)
        untouched = [i for i in range(len(after.gpus)) if i not in self.case.targets]
        assert all(after.gpus[i] == self.found.gpus[i] for i in untouched)

    def check_reached(self, fleet: Path, status: int, out: str, already: bool = False) -> None:
        """Exit 0, said only with the read-back (``already``: a read before any step found the
        layout there), and the read-back is the layout."""
        assert status == 0, out
        verified = f"{VERIFIED}: GPU {', '.join(map(str, self.case.targets))} as planned."
        assert (ALREADY in out, verified in out) == (already, not already), out
        after = load_fleet(str(fleet))
        for index in self.case.targets:
            assert reaches(after.gpus[index], list(self.case.layout)), f"{self.case}: GPU {index}"
        self.check_busy_kept(fleet)


@pytest.mark.long
@pytest.mark.parametrize("case", CASES[:scaled(1)], ids=str)
def test_a_fault_at_each_step_and_a_kill_between_steps_then_a_rerun(
    tmp_path: Path, case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = Runs(tmp_path, case, capsys)
    clean = runs.fleet("clean")
    status, out = runs.in_process(clean, "clean")
    runs.check_reached(clean, status, out)
    steps = steps_of(clean.parent / "journal.jsonl")
    assert len(steps) >= 4  # MIG mode or a destroy, persistence, an instance of each kind
    status, out = runs.in_process(clean, "again")  # idempotent
    runs.check_reached(clean, status, out, already=True)
    assert steps_of(clean.parent / "journal.jsonl") == steps

    for index, step in enumerate(steps):
        fault = fault_at(steps, index, error="UNKNOWN")
        fleet = runs.fleet(f"fault-{index}", with_fault(runs.document, fault))
        before = fleet.read_bytes()
        status, out = runs.in_process(fleet, "faulted")
        assert status == 2, out
        assert AS_FOUND in out and VERIFIED not in out
        assert undone_to(fleet, before)  # the file as found (but for MIG devices made again)
        journal = fleet.parent / "journal.jsonl"
        assert steps_of(journal)[: index + 1] == steps[: index + 1]
        assert next(e for e in events(journal) if e["event"] == "failed")["call"] == call_of(step)
        assert events(journal)[-1] == {**events(journal)[-1], "event": "run-end", "failed": True}
        without_faults(fleet)
        status, out = runs.in_process(fleet, "rerun")
        runs.check_reached(fleet, status, out)
        assert "unfinished-run-found" not in journal.read_text()  # the failed run did end

    for done in range(len(steps) + 1):
        last = done == len(steps)
        fleet = runs.fleet(f"kill-{done}")
        hang = verification_hang(fleet) if last else fault_at(steps, done, delay_seconds=HANG)
        write_fleet(fleet.parent, with_fault(runs.document, hang))

        def between(lines: list[dict[str, Any]], done: int = done, last: bool = last) -> bool:
            begun = lines[-1] == {**lines[-1], "event": "begin", "seq": done + 1}
            return sum(e["event"] == "done" for e in lines) == done and (last or begun)

        runs.rerun_after_kill(fleet, runs.killed_when(fleet, between, f"to step {done + 1}"), already=last)

    # Killed while undoing: step ``failing`` fails, the undo of the step before it hangs.
    undo_kills = range(len(steps) - 1, 0, -max(1, len(steps) // scaled(2)))
    for failing in undo_kills:
        fleet = runs.fleet(f"undo-kill-{failing}")
        undo = undo_call(steps[failing - 1])
        hang = {"call": undo, "skip": sum(call_of(s) == undo for s in steps[: failing + 1]), "count": 1,
                "delay_seconds": HANG}
        fails = fault_at(steps, failing, error="UNKNOWN")
        write_fleet(fleet.parent, {**runs.document, "faults": [fails, hang]})

        def undoing(lines: list[dict[str, Any]]) -> bool:  # the first undo begun, and hung
            undos = [e for e in lines if e["event"] == "undo-begin"]
            return lines[-1]["event"] == "undo-begin" and len(undos) == 1

        runs.rerun_after_kill(fleet, runs.killed_when(fleet, undoing, "to its undo"))

    print(f"{case}: {len(steps)} steps; runs {dict(runs.count)}")
    assert runs.count["faulted"] == len(steps)
    assert runs.count["killed"] == len(steps) + 1 + len(undo_kills)
