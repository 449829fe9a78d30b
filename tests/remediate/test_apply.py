"""The applier on the simulator: resets only where needed, journals each step, reports failed undos."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mig_exporter.errors import InputError
from mig_exporter.host import nvml_session
from mig_exporter.nvml.read import read_snapshot
from mig_exporter.nvml.session import NvmlSession
from mig_exporter.nvml.write import HardwareWriter, MigModeChange
from mig_exporter.remediate.apply import Applier, Outcome
from mig_exporter.remediate.journal import Journal
from mig_exporter.remediate.layout import layout_targets
from mig_exporter.remediate.lock import HostLock
from mig_exporter.remediate.plan import make_plan
from mig_exporter.remediate.steps import ResetGpu, SetMigMode, SetPersistence
from mig_exporter.sim import load_fleet, parse_fleet

from .fleets import incident_document, read, remediate, without_mig_uuids, write_fleet

# What a run that undid itself says once NVML reads back as found; without the parenthesis, the
# words a run must not print when the read-back cannot vouch for that.
AS_FOUND = "Every GPU is as it was found"


def idle_fleet(tmp_path: Path, *faults: dict[str, Any], idle: tuple[int, ...] = (0,), **gpu0: Any) -> Path:
    """The incident's fleet file with no processes on the ``idle`` GPUs, GPU 0's entry updated with
    ``gpu0`` (``mig=``, ``instances=``, …) and the simulator's ``faults`` injected."""
    document = incident_document(without_processes_on=idle)
    document["gpus"][0].update(gpu0)
    if faults:
        document["faults"] = list(faults)
    return write_fleet(tmp_path, document)


def unknown_error(call: str, **when: int) -> dict[str, Any]:
    """A fault: ``call`` answers UNKNOWN (``gpu=``, ``skip=``, ``count=`` narrow it down)."""
    return {"call": call, "error": "UNKNOWN", **when}


def apply_on_gpu0(tmp_path: Path, fleet: Path, layout: str) -> int:
    """``mig-exporter remediate --fleet FLEET --gpu 0 --layout LAYOUT --apply``; its exit status."""
    return remediate(tmp_path, fleet, "--gpu", "0", "--layout", layout, "--apply")


def undone_as_found(
    tmp_path: Path, fleet: Path, layout: str, capsys: pytest.CaptureFixture[str], recreated: int = 0
) -> str:
    """``apply_on_gpu0`` of a run that fails (exit 2) and is undone: the output says every GPU is as
    it was found and the simulated hardware is byte for byte as before, but for the new MIG UUIDs of
    the ``recreated`` MIG devices the undo destroyed and made again (a driver gives each new MIG
    device a new UUID: issue 11, item 8). What the run printed."""
    before = fleet.read_bytes()
    assert apply_on_gpu0(tmp_path, fleet, layout) == 2
    out = capsys.readouterr().out
    if not recreated:
        assert f"{AS_FOUND} (read back from NVML)." in out
        assert fleet.read_bytes() == before
        return out
    uuids_before, uuids_after = (
        {ci.uuid for g in state.gpus for gi in g.instances for ci in gi.compute_instances}
        for state in (parse_fleet(before, "before"), load_fleet(str(fleet)))
    )
    assert uuids_before == {None} and len(uuids_after - {None}) == recreated
    assert (f"Every GPU's layout is as it was found (read back from NVML), but the {recreated} MIG "
            f"device(s) the undo made again have new UUIDs") in out
    assert without_mig_uuids(load_fleet(str(fleet))) == parse_fleet(before, "before")
    return out



def undone_but_not_vouched(
    tmp_path: Path, fleet: Path, layout: str, capsys: pytest.CaptureFixture[str]
) -> str:
    """``apply_on_gpu0`` of a run that fails (exit 2) and whose read-back after the undo cannot vouch
    that the GPUs are as found, so it does not say they are. What the run printed."""
    assert apply_on_gpu0(tmp_path, fleet, layout) == 2
    out = capsys.readouterr().out
    assert AS_FOUND not in out
    return out


def apply_plan(
    tmp_path: Path,
    fleet: Path,
    writer: type[HardwareWriter],
    gpus: str,
    layout: str,
    *,
    allow_reset: bool,
    persistence: bool = True,
) -> Outcome:
    """Plan ``--gpu GPUS --layout LAYOUT`` on the fleet and apply it through ``writer``, journalled
    in ``tmp_path``, as ``remediate --apply`` does."""
    with nvml_session(str(fleet)) as session, Journal(tmp_path / "journal.jsonl") as journal:
        found = read_snapshot(session)
        plan = make_plan(found, layout_targets(gpus, layout, found), privileged=True, persistence=persistence)
        return Applier(writer(session), journal, found, allow_reset=allow_reset).apply(plan)


def gpu0_state(fleet: Path) -> tuple[bool, tuple[object, ...], bool | None]:
    """GPU 0 read back: (MIG enabled, GPU instances, persistence mode)."""
    gpu = read(fleet).gpu(0)
    return (gpu.mig_enabled, gpu.gpu_instances, gpu.persistence_mode)


class HolderLeavesAfterModeChange(HardwareWriter):
    """The client holding a GPU exits just after the mode change was asked for, as a monitoring
    agent stopped by the operator would: the mode is pending, and a reset can now apply it."""

    def __init__(self, session: NvmlSession) -> None:
        super().__init__(session)
        self.session = session

    def set_mig_mode(self, gpu_index: int, enabled: bool) -> MigModeChange:
        change = super().set_mig_mode(gpu_index, enabled)
        simulator = self.session.simulator
        assert simulator is not None
        simulator.fleet = simulator.fleet.with_gpu(
            gpu_index, replace(simulator.fleet.gpus[gpu_index], held_by=())
        )
        return change


def held_fleet(tmp_path: Path) -> Path:
    """GPUs 0 and 1 idle, GPU 0 held open by nvidia-persistenced with persistence mode on."""
    return idle_fleet(tmp_path, idle=(0, 1), held_by=["nvidia-persistenced"], persistence=True)


def test_reset_only_the_pending_gpu_with_persistence_off_around_it(tmp_path: Path) -> None:
    """With resets allowed, only the GPU whose mode stays pending is reset, with persistence mode
    turned off around the reset and back on after it."""
    fleet = held_fleet(tmp_path)
    outcome = apply_plan(tmp_path, fleet, HolderLeavesAfterModeChange, "0,1", "3g,3g", allow_reset=True)
    steps = [executed.step for executed in outcome.executed]
    assert outcome.failure is None and outcome.pending == ()
    assert steps[:4] == [
        SetMigMode(0, True, restore=False),
        SetPersistence(0, False),
        ResetGpu(0),
        SetPersistence(0, True),
    ]
    assert [s for s in steps if isinstance(s, ResetGpu)] == [ResetGpu(0)]  # GPU 1 needed none
    after = read(fleet)
    assert all(g.mig_enabled and len(g.gpu_instances) == 2 for g in after.gpus[:2])
    assert after.gpu(0).persistence_mode is True


def test_without_reset_a_pending_gpu_waits_and_the_others_go_on(tmp_path: Path) -> None:
    """Without resets, a GPU whose mode stays pending is reported pending and the other GPUs are
    still partitioned."""
    fleet = held_fleet(tmp_path)
    outcome = apply_plan(tmp_path, fleet, HardwareWriter, "0,1", "3g,3g", allow_reset=False)
    assert [(p.gpu_index, p.reason) for p in outcome.pending] == [(0, "In use by another client (IN_USE)")]
    assert [e.step.gpu_index for e in outcome.executed] == [0, 1, 1, 1, 1, 1, 1]
    after = read(fleet)
    assert (after.gpu(0).mig_mode_current, after.gpu(0).mig_mode_pending) == (False, True)
    assert len(after.gpu(1).gpu_instances) == 2


def test_the_journal_has_each_step_before_and_after(tmp_path: Path) -> None:
    """One run writes run-start, a begin and a done line around each step, and run-end."""
    assert apply_on_gpu0(tmp_path, idle_fleet(tmp_path), "7g") == 0
    events = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["run-start"] + ["begin", "done"] * 4 + ["run-end"]
    assert len({e["run"] for e in events}) == 1
    assert [e["step"]["action"] for e in events if e["event"] == "begin"] == [
        "SetMigMode",
        "SetPersistence",
        "CreateGpuInstance",
        "CreateComputeInstance",
    ]


def test_an_undo_that_fails_is_reported_not_hidden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The second creation fails and so does the undo's destroy: the step not undone is printed."""
    fleet = idle_fleet(
        tmp_path,
        unknown_error("nvmlDeviceCreateGpuInstanceWithPlacement", skip=1, count=1),
        unknown_error("nvmlGpuInstanceDestroy", count=1),
    )
    assert apply_on_gpu0(tmp_path, fleet, "3g,3g") == 2
    out = capsys.readouterr().out
    assert "NOT undone (the GPUs are not as found; see the journal):" in out
    assert (
        "GPU 0: destroy GPU instance 2 (3g.40gb at memory slice 4): nvmlGpuInstanceDestroy: Unknown Error"
        in out
    )


def test_one_remediate_per_host(tmp_path: Path) -> None:
    """The host lock refuses a second holder, naming the first one's PID, and is released on exit."""
    held = pytest.raises(InputError, match=rf"another mig-exporter remediate \(pid {os.getpid()}\)")
    with HostLock(tmp_path / "lock"), held, HostLock(tmp_path / "lock"):
        pass
    with HostLock(tmp_path / "lock"):  # released on exit
        pass


def test_success_is_only_claimed_after_reading_back_and_a_mismatch_is_undone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A verification that reads back other instances than planned fails the run, which is undone."""
    # The third GetInfo on GPU 0 is the verification's read (the first two are the creations').
    fleet = idle_fleet(tmp_path, unknown_error("nvmlGpuInstanceGetInfo", gpu=0, skip=2, count=1))
    assert apply_on_gpu0(tmp_path, fleet, "3g,3g") == 2
    captured = capsys.readouterr()
    assert "verification: GPU 0: GPU instances are 3g.40gb@4; expected 3g.40gb@0, 3g.40gb@4" in captured.err
    assert "GPU 0 was read with errors (nvmlGpuInstanceGetInfo: Unknown Error)" in captured.err
    assert f"{AS_FOUND} (read back from NVML)." in captured.out
    assert gpu0_state(fleet) == (False, (), False)


class InterruptedDuringCreation(HardwareWriter):
    """An operator presses Ctrl-C while the driver is creating the first GPU instance."""

    signum = signal.SIGINT

    def create_gpu_instance(self, gpu_index: int, profile_enum: int, start: int, size: int) -> int:
        created = super().create_gpu_instance(gpu_index, profile_enum, start, size)
        os.kill(os.getpid(), self.signum)
        return created


class TerminatedDuringCreation(InterruptedDuringCreation):
    """A supervisor sends SIGTERM while the driver is creating the first GPU instance."""

    signum = signal.SIGTERM


@contextmanager
def sigint_handled_by(handler: Any) -> Iterator[None]:
    """SIGINT's disposition for one test, set here rather than assumed: under ``nohup`` or a
    script's ``&`` the test runner itself starts with SIGINT ignored (issue 11 item 8)."""
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


UNDONE_AFTER_THE_FIRST_CREATION = [
    "GPU 0: destroy GPU instance 2 (3g.40gb at memory slice 4)",
    "GPU 0: turn persistence mode off",
    "GPU 0: disable MIG mode",
]


def test_an_interrupt_waits_for_the_step_under_way_then_everything_is_undone(tmp_path: Path) -> None:
    """SIGINT during a step lets the step finish, then undoes every step in reverse and gives the
    signal handler back."""
    fleet = idle_fleet(tmp_path)
    with sigint_handled_by(signal.default_int_handler):
        outcome = apply_plan(tmp_path, fleet, InterruptedDuringCreation, "0", "3g,3g", allow_reset=False)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    assert outcome.failure is not None and outcome.failure.what == "interrupted"
    assert (
        outcome.failure.error == "SIGINT received after: GPU 0: create GPU instance 3g.40gb at memory slice 4"
    )
    assert [e.step.describe() for e in outcome.undone] == UNDONE_AFTER_THE_FIRST_CREATION
    assert not outcome.not_undone
    assert gpu0_state(fleet) == (False, (), False)


def test_a_sigint_the_parent_ignores_stays_ignored(tmp_path: Path) -> None:
    """Issue 11 item 8: started with SIGINT ignored (a shell's background job, the classic idiom
    keeps it so), the run neither stops nor undoes on SIGINT, and leaves it ignored."""
    fleet = idle_fleet(tmp_path)
    with sigint_handled_by(signal.SIG_IGN):
        outcome = apply_plan(tmp_path, fleet, InterruptedDuringCreation, "0", "3g,3g", allow_reset=False)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert outcome.failure is None and not outcome.undone
    assert gpu0_state(fleet)[0] and len(gpu0_state(fleet)[1]) == 2


def test_with_sigint_ignored_a_sigterm_still_waits_for_the_step_then_undoes(tmp_path: Path) -> None:
    fleet = idle_fleet(tmp_path)
    sigterm_before = signal.getsignal(signal.SIGTERM)
    with sigint_handled_by(signal.SIG_IGN):
        outcome = apply_plan(tmp_path, fleet, TerminatedDuringCreation, "0", "3g,3g", allow_reset=False)
    assert outcome.failure is not None
    assert outcome.failure.error == ("SIGTERM received after: GPU 0: create GPU instance 3g.40gb at "
                                     "memory slice 4")
    assert [e.step.describe() for e in outcome.undone] == UNDONE_AFTER_THE_FIRST_CREATION
    assert gpu0_state(fleet) == (False, (), False)
    assert signal.getsignal(signal.SIGTERM) is sigterm_before


def test_an_undo_puts_a_small_compute_instance_back_at_its_own_compute_slice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """mig-facts.md: a 3g GPU instance takes 1-slice compute instances at slices 0, 1 or 2; created
    without a placement the driver takes the lowest free slice, so an undo must name slice 2."""
    fleet = idle_fleet(
        tmp_path,
        unknown_error("nvmlDeviceCreateGpuInstanceWithPlacement", skip=1, count=1),
        mig="enabled",
        instances=[
            {
                "profile": "3g.40gb",
                "placement": 0,
                "compute_instances": [{"profile": "1c.3g.40gb", "placement": 2}],
            }
        ],
    )
    out = undone_as_found(tmp_path, fleet, "2g,2g,2g", capsys, recreated=1)
    assert "create a 1-slice compute instance at compute slice 2 in the GPU instance at memory slice 0" in out


def test_an_undo_that_cannot_restore_says_how_the_gpu_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An undo that cannot re-create what it destroyed prints how GPU 0 reads back against how it
    was found, and does not claim the GPUs are as found."""
    # The fault keeps firing, so the undo cannot re-create the destroyed GPU instance either: its
    # compute instances have nowhere to go, and the read-back shows what is missing.
    fleet = idle_fleet(
        tmp_path,
        unknown_error("nvmlDeviceCreateGpuInstanceWithPlacement", skip=1),
        mig="enabled",
        instances=[{"profile": "3g.40gb", "placement": 0}],
    )
    out = undone_but_not_vouched(tmp_path, fleet, "2g,2g,2g", capsys)
    assert (
        "create a 3-slice compute instance at compute slice 0 in the GPU instance at memory slice 0: "
        "nvmlGpuInstanceCreateComputeInstance: not called: no GPU instance at memory slice 0"
    ) in out
    assert (
        "read back after the undo: GPU 0 reads back as MIG enabled (pending enabled), persistence off, "
        "GPU instances: none, MIG devices: none; it was MIG enabled (pending enabled), persistence off, "
        "GPU instances: 3g.40gb@0 (GPU instance 1, compute instances 0), MIG devices: 3g.40gb"
    ) in out


class CancellingRefused(HardwareWriter):
    """A driver that answers IN_USE even to cancelling a pending MIG disable (a held GPU)."""

    def set_mig_mode(self, gpu_index: int, enabled: bool) -> MigModeChange:
        return MigModeChange(activated=False, reason="In use by another client (IN_USE)")


def test_a_gpu_with_kept_instances_is_never_reset(tmp_path: Path) -> None:
    """A GPU whose plan keeps an instance stays pending rather than being reset, even when resets
    are allowed."""
    # A reset clears every GPU instance (and here would apply the pending disable): the idle 3g.40gb
    # the plan keeps would be lost, and the simulator, unlike a busy GPU, would not refuse the reset.
    fleet = idle_fleet(tmp_path, mig="pending-disable", instances=[{"profile": "3g.40gb", "placement": 0}])
    outcome = apply_plan(
        tmp_path, fleet, CancellingRefused, "0", "3g,3g", allow_reset=True, persistence=False
    )
    assert [p.reason for p in outcome.pending] == [
        "In use by another client (IN_USE); not reset, which would destroy the GPU instances 3g.40gb@0"
    ]
    assert not any(isinstance(e.step, ResetGpu) for e in outcome.executed)
    instances = read(fleet).gpu(0).gpu_instances
    assert [(gi.placement_start, gi.compute_instance_ids) for gi in instances] == [(0, (0,))]


def test_an_instance_whose_id_cannot_be_read_is_destroyed_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Created, but nvmlGpuInstanceGetInfo fails: without its ID the undo could not find it, so the
    creation destroys it again at once."""
    fault = unknown_error("nvmlGpuInstanceGetInfo", count=1)
    fleet = idle_fleet(tmp_path, fault, mig="enabled", instances=[])
    out = undone_as_found(tmp_path, fleet, "1g", capsys)
    assert "GetInfo: Unknown Error (UNKNOWN); the instance it created was destroyed again" in out


def test_a_rollback_read_back_with_errors_does_not_claim_the_gpus_are_as_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-back after the undo that had errors is printed with them, and does not vouch."""
    # GetInfo calls: the plan's reading of 1g@0 (passes), the creation's (fails, so the run is
    # undone), then the read-back's (fails): a read-back that cannot see the instances cannot vouch.
    fault = unknown_error("nvmlGpuInstanceGetInfo", skip=1, count=2)
    fleet = idle_fleet(tmp_path, fault, mig="enabled", instances=[{"profile": "1g.10gb", "placement": 0}])
    out = undone_but_not_vouched(tmp_path, fleet, "1g,1g", capsys)
    assert (
        "read back after the undo: GPU 0 reads back as MIG enabled (pending enabled), persistence off, "
        "GPU instances: none, MIG devices: none; it was MIG enabled (pending enabled), persistence off, "
        "GPU instances: 1g.10gb@0 (GPU instance 7, compute instances 0), MIG devices: 1g.10gb "
        "(read with errors: nvmlGpuInstanceGetInfo: Unknown Error)"
    ) in out


def test_a_rollback_read_back_that_misses_a_call_does_not_vouch_either(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state reads back as found, but the processes could not be listed the second time: the
    read-back says it is incomplete and does not vouch."""
    fleet = idle_fleet(
        tmp_path,
        unknown_error("nvmlDeviceCreateGpuInstanceWithPlacement", count=1),
        unknown_error("nvmlDeviceGetComputeRunningProcesses_v3", gpu=0, skip=1, count=1),
    )
    out = undone_but_not_vouched(tmp_path, fleet, "7g", capsys)
    assert (
        "read back after the undo: GPU 0 could not be read back completely "
        "(nvmlDeviceGetComputeRunningProcesses: Unknown Error), so it is not known to be as found"
    ) in out


def test_a_verification_that_misses_a_call_is_not_success(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A verification that missed a call is not success: the run is undone, not claimed."""
    # Everything reads back as planned, except that the MIG device's processes could not be listed:
    # an instance or process it did not see could be there, so the run is undone, not claimed.
    fleet = idle_fleet(
        tmp_path, unknown_error("nvmlDeviceGetComputeRunningProcesses_v3", gpu=0, skip=1, count=1)
    )
    before = fleet.read_bytes()
    assert apply_on_gpu0(tmp_path, fleet, "7g") == 2
    captured = capsys.readouterr()
    assert (
        "verification: GPU 0 could not be read back completely "
        "(nvmlDeviceGetComputeRunningProcesses: Unknown Error)"
    ) in captured.err
    assert "Verified" not in captured.out
    assert fleet.read_bytes() == before


def test_a_plan_with_blockers_is_never_applied_although_it_has_steps(tmp_path: Path) -> None:
    """The plan of a GPU with processes lists the steps for after they stop; the applier refuses it
    for its blockers, before any change."""
    fleet = write_fleet(tmp_path, incident_document())
    before = fleet.read_bytes()
    with nvml_session(str(fleet)) as session, Journal(tmp_path / "journal.jsonl") as journal:
        found = read_snapshot(session)
        plan = make_plan(found, layout_targets("0", "3g,3g", found), privileged=True, persistence=True)
        assert plan.unsafe and plan.steps
        with pytest.raises(ValueError, match="a plan with blockers is never applied: GPU 0 runs processes"):
            Applier(HardwareWriter(session), journal, found, allow_reset=False).apply(plan)
    assert fleet.read_bytes() == before
