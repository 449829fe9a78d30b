"""The report's reasoning on Snapshots built by hand: exit status, findings with their meaning and
next steps, attribution per process, and the advice with its remediate command."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from simulated_gpus import capability

from mig_exporter.advice import DEFAULT_HEADROOM_RATIO
from mig_exporter.diagnose.explain import describe_gpus
from mig_exporter.diagnose.render_text import render_text
from mig_exporter.diagnose.report import Report, build_report, reading_failure
from mig_exporter.host import nvml_session
from mig_exporter.hostinfo import Attribution
from mig_exporter.model import MIB, CollectionError, Gpu
from mig_exporter.nvml.read import read_snapshot

from .reports import commands, finding_of, report_of, too_big_for_any_instance
from .snapshots import (
    SEED_MIB,
    empty_mig,
    healthy,
    incident,
    lost,
    partitioned_gpu,
    pending_enable,
    shared_gpu,
    snapshot,
)


@pytest.fixture
def incident_report() -> Report:
    """seed/README.md's incident, diagnosed from a fleet file as ``diagnose --fleet incident.yaml``."""
    return report_of(incident(), fleet="incident.yaml")


def test_incident_is_a_problem_with_sharing_first_then_spanning(incident_report):
    """The incident exits 1 with a sharing finding per GPU first, then one spanning finding per
    process."""
    report = incident_report
    assert report.exit_status == 1
    assert [(f.kind, f.gpu_indices, f.pids) for f in report.findings] == [
        ("unpartitioned_sharing", (0,), (78914, 81007)),
        ("unpartitioned_sharing", (1,), (78914, 81007)),
        ("unpartitioned_sharing", (2,), (78914, 81007)),
        ("unpartitioned_sharing", (3,), (78914, 81007)),
        ("spanning_process", (0, 1, 2, 3), (78914,)),
        ("spanning_process", (0, 1, 2, 3), (81007,)),
    ]
    assert report.findings[4].summary == "PID 78914 (python) holds memory on GPUs 0-3"
    assert report.findings[0].summary == "GPU 0 is shared by 2 processes without MIG: PIDs 78914, 81007"


def test_incident_findings_say_why_it_matters_and_what_to_run(incident_report):
    """The sharing finding says why a memory cap is not enough, what it costs and the remediate
    command; the spanning finding shares its runbook."""
    sharing, spanning = incident_report.findings[0], incident_report.findings[4]
    assert "set_per_process_memory_fraction" in sharing.meaning  # why a memory cap is not enough
    for word in ("latency", "time out", "contend"):
        assert word in sharing.impact
    expected = "mig-exporter remediate --fleet incident.yaml --gpu 0 --layout 3g.40gb,3g.40gb"
    assert commands(sharing) == [expected]
    assert sharing.next_steps[0].action.startswith("stop PIDs 78914, 81007")
    assert "no CUDA_VISIBLE_DEVICES: this process sees every GPU" in spanning.meaning
    # the spanning processes are the same workloads: the same runbook
    assert spanning.next_steps == sharing.next_steps


def test_incident_advice_in_the_report(incident_report):
    """The advice puts each process in a 3g.40gb on GPU 0, frees GPUs 1-3, and names the command."""
    advice = incident_report.advice
    assert advice is not None
    assert [(w.pid, w.gpu_index, w.profile, w.profile_memory_bytes) for w in advice.workloads] == [
        (78914, 0, "3g.40gb", 40192 * MIB),
        (81007, 0, "3g.40gb", 40192 * MIB),
    ]
    assert [w.used_memory_bytes for w in advice.workloads] == [sum(m) * MIB for m in SEED_MIB.values()]
    assert [(lay.gpu_index, lay.model, lay.layout) for lay in advice.layouts] == [
        (0, "NVIDIA A100-SXM4-80GB", ("3g.40gb", "3g.40gb")),
    ]
    assert advice.freed_gpus == (1, 2, 3)
    assert [r.command for r in advice.remediate] == [
        "mig-exporter remediate --fleet incident.yaml --gpu 0 --layout 3g.40gb,3g.40gb"
    ]


def test_on_the_host_the_command_names_no_fleet():
    """Without --fleet the advised remediate command has no --fleet either."""
    report = report_of(incident(), fleet=None)
    assert report.advice is not None
    assert report.advice.remediate[0].command == "mig-exporter remediate --gpu 0 --layout 3g.40gb,3g.40gb"


def test_a_fleet_file_or_the_host_needs_no_copy(incident_report):
    """remediate --apply writes a fleet file and the host's GPUs: the commands name them as they are."""
    assert incident_report.advice is not None and incident_report.advice.copy_fleet_command is None
    on_host = report_of(incident(), fleet=None)
    assert on_host.advice is not None and on_host.advice.copy_fleet_command is None
    assert not any("fleet show" in c for f in incident_report.findings for c in commands(f))


def test_on_a_built_in_fleet_the_commands_act_on_a_copy():
    """A built-in fleet is read-only (remediate --apply refuses it): the advice copies it to
    fleet.yaml first, and its remediate commands name the copy."""
    report = report_of(incident(), fleet="seed-incident", built_in=True)
    copy = "mig-exporter fleet show seed-incident > fleet.yaml"
    remediate = "mig-exporter remediate --fleet fleet.yaml --gpu 0 --layout 3g.40gb,3g.40gb"
    assert report.advice is not None
    assert report.advice.copy_fleet_command == copy
    assert [r.command for r in report.advice.remediate] == [remediate]
    sharing = report.findings[0]
    assert commands(sharing) == [copy, remediate]
    assert sharing.next_steps[0].action.startswith("stop PIDs 78914, 81007")
    assert "read-only" in sharing.next_steps[1].action


def test_an_empty_mig_gpu_on_a_built_in_fleet_is_partitioned_on_a_copy():
    """The create-instances step of an empty MIG GPU also acts on the copy of a built-in fleet."""
    (empty,) = report_of(snapshot(empty_mig(0)), fleet="mig-pending", built_in=True).findings
    assert commands(empty) == [
        "mig-exporter fleet show mig-pending > fleet.yaml",
        "mig-exporter remediate --fleet fleet.yaml --gpu 0 --layout 3g.40gb,3g.40gb",
    ]


def test_processes_carry_their_attribution_and_totals():
    """Each process row has its GPUs, total memory, user, command line and GPU visibility."""
    report = report_of(incident())
    first = report.processes[0]
    assert (first.pid, first.gpu_indices, first.used_memory_bytes) == (78914, (0, 1, 2, 3), 18060 * MIB)
    assert (first.source, first.user, first.cmdline) == ("fleet file", "ml", ("python", "serve.py"))
    assert first.gpu_visibility == "no CUDA_VISIBLE_DEVICES: this process sees every GPU"
    assert [p.user for p in report.gpus[0].processes] == ["ml", "ml"]
    assert [p.mig_device for p in report.gpus[0].processes] == [None, None]


def test_healthy_partitioned_fleet_has_no_findings_and_exit_0():
    """A fleet partitioned as the runbook leaves it: no findings, no advice, exit 0, and each
    process shown in its MIG device."""
    report = report_of(healthy())
    assert report.exit_status == 0
    assert report.findings == ()
    assert report.advice is None
    rows = report.gpus[0].processes
    assert [(r.pid, r.mig_device) for r in rows] == [
        (5002, "3g.40gb (GI 1, CI 0)"),
        (5001, "3g.40gb (GI 2, CI 0)"),
    ]
    assert [i.mig_uuid for i in report.gpus[0].instances] == ["MIG-0-2", "MIG-0-1"]


def test_an_info_finding_alone_is_not_a_problem():
    """Persistence mode off is an info finding with its command, and leaves the exit status 0."""
    report = report_of(snapshot(partitioned_gpu(0, persistence=False)))
    assert [(f.kind, f.severity) for f in report.findings] == [("persistence_off", "info")]
    assert report.exit_status == 0
    assert commands(report.findings[0]) == ["sudo nvidia-smi -i 0 -pm 1"]


def test_pending_mode_says_a_reset_is_owed():
    """A pending MIG enable on an A100 is a problem whose next steps stop the holder and reset the
    GPU (mig-facts.md: on Ampere a reset or a reboot applies it)."""
    report = report_of(pending_enable())
    pending = finding_of(report, "mig_pending")
    assert report.exit_status == 1
    assert pending.summary == "GPU 0: MIG mode enabled is pending a reset"
    assert pending.meaning == ("MIG mode was set to enabled, but it stays disabled for now: a GPU reset or a "
                               "reboot applies it.")
    assert "In use by another client" in pending.impact
    assert pending.next_steps[0].action.startswith("stop PID 4242")
    assert commands(pending) == ["sudo systemctl stop nvidia-persistenced", "sudo nvidia-smi -r -i 0"]
    assert pending.next_steps[-1].action == "reset GPU 0 so the new mode takes effect, or reboot"


def test_pending_enable_on_hopper_needs_no_reset_and_rules_out_a_reboot():
    """Issue 11 item 8 (diagnose and remediate disagreed): mig-facts.md, on Hopper and later enabling
    MIG needs no reset, and the mode does not survive a driver unload. So the advice is to enable it
    again on the idle GPU (what remediate's plan does), no reset and no persistence change, and
    never a reboot, which would end with MIG off."""
    gpu = replace(empty_mig(0), name="NVIDIA H100 80GB HBM3", mig_capability=capability("H100-SXM5-80GB"),
                  mig_mode_current=False)
    pending = finding_of(report_of(snapshot(gpu)), "mig_pending")
    assert pending.summary == "GPU 0: MIG mode enabled is pending"
    assert pending.meaning == (
        "MIG mode was set to enabled, but it stays disabled for now: on Hopper and later, enabling MIG "
        "again once the GPU is idle applies it with no reset; a reboot would end with MIG off.")
    assert commands(pending) == ["sudo systemctl stop nvidia-persistenced", "sudo nvidia-smi -i 0 -mig 1"]
    assert "reset" not in pending.next_steps[-1].action.replace("no reset", "")


def test_pending_disable_on_hopper_is_applied_by_a_reset_or_a_reboot():
    """A pending disable is what a reboot ends with on any GPU; the reset needs persistence off."""
    gpu = replace(empty_mig(0), name="NVIDIA H100 80GB HBM3", mig_capability=capability("H100-SXM5-80GB"),
                  mig_mode_pending=False)
    pending = finding_of(report_of(snapshot(gpu)), "mig_pending")
    assert pending.summary == "GPU 0: MIG mode disabled is pending a reset"
    assert commands(pending) == ["sudo nvidia-smi -i 0 -pm 0", "sudo systemctl stop nvidia-persistenced",
                                 "sudo nvidia-smi -r -i 0"]
    assert pending.next_steps[-1].action == "reset GPU 0 so the new mode takes effect, or reboot"


def test_empty_mig_gpu_is_unusable_and_gets_the_layout_of_its_sibling():
    """A GPU with MIG on and no instances is a warning, and is advised the layout of its sibling."""
    report = report_of(snapshot(empty_mig(0), partitioned_gpu(1)))
    (empty,) = report.findings
    assert (empty.kind, empty.severity, empty.gpu_indices) == ("mig_without_instances", "warning", (0,))
    assert "unusable" in empty.impact
    assert "as GPU 1 has" in empty.next_steps[0].action
    assert commands(empty) == ["mig-exporter remediate --fleet test-fleet --gpu 0 --layout 3g.40gb,3g.40gb"]


def test_empty_mig_gpu_alone_gets_two_halves():
    """A GPU with MIG on, no instances and no sibling to copy is advised two halves."""
    (empty,) = report_of(snapshot(empty_mig(0))).findings
    assert "two halves" in empty.next_steps[0].action
    assert commands(empty) == ["mig-exporter remediate --fleet test-fleet --gpu 0 --layout 3g.40gb,3g.40gb"]


def test_a_lost_gpu_is_critical():
    """A lost GPU is a critical finding, exit 1, with the commands to look for Xid errors and reset."""
    report = report_of(snapshot(partitioned_gpu(0), lost(1)))
    (found,) = report.findings
    assert (found.kind, found.severity, found.summary) == ("gpu_lost", "critical", "GPU 1 is lost")
    assert report.exit_status == 1
    assert commands(found) == ["sudo dmesg | grep -i xid", "sudo nvidia-smi -r -i 1"]


def test_nvml_counting_no_gpus_is_a_problem_not_health():
    """Issue 11, item 8: `gpus: []` was reported healthy. A fleet file must now list a GPU, but a
    host's NVML can count 0 (GPUs not passed into the container): a critical finding, exit 1."""
    report = report_of(snapshot())
    (found,) = report.findings
    assert (found.kind, found.severity, found.summary) == ("no_gpus", "critical", "NVML reports no GPUs")
    assert report.exit_status == 1 and report.verified
    assert commands(found) == ["nvidia-smi -L", "lspci -nnk -d 10de:"]
    uncounted = replace(snapshot(), errors=(CollectionError("nvmlDeviceGetCount", "Unknown Error"),))
    assert [f.kind for f in report_of(uncounted).findings] == []  # not counted is not "no GPUs"
    assert reading_failure(uncounted) == "NVML could not count the GPUs (nvmlDeviceGetCount: Unknown Error)"


def test_no_gpus_through_nvml(capsys):
    """The same from the real pynvml over a simulated host whose NVML counts 0 GPUs (the state set
    in memory, as a fleet file cannot say it): the text report says so and diagnose exits 1."""
    with nvml_session("seed-incident") as session:
        simulator: Any = session.simulator
        simulator.fleet = replace(simulator.fleet, gpus=())
        snap = read_snapshot(session)
    assert (snap.nvml_up, snap.gpus, snap.errors) == (True, (), ())
    report = report_of(snap)
    assert [f.kind for f in report.findings] == ["no_gpus"] and report.exit_status == 1
    text = render_text(report)
    assert "0 GPU(s), 1 finding(s): 1 critical" in text and "CRITICAL NVML reports no GPUs" in text


def test_a_workload_no_instance_holds_gets_a_whole_gpu_and_the_others_an_instance():
    """The workload too big for any instance is pinned to a whole GPU; the others share the other
    GPU's instances."""
    report = report_of(too_big_for_any_instance())
    assert report.advice is not None
    assert [(w.pid, w.gpu_index, w.whole_gpu, w.profile) for w in report.advice.workloads] == [
        (1, 0, True, None), (2, 1, False, "1g.10gb"), (3, 1, False, "1g.10gb"),
    ]
    assert report.findings[0].next_steps[0].action.startswith("stop PIDs 1, 2, 3:")
    assert commands(report.findings[0]) == [
        "mig-exporter remediate --fleet test-fleet --gpu 1 --layout 1g.10gb,1g.10gb",
        "CUDA_VISIBLE_DEVICES=GPU-test-0 python serve.py",
    ]


def test_without_a_command_line_the_restart_is_described_not_invented():
    """Processes with no attribution (gone from /proc) get a restart described in words, not a
    made-up command line."""
    snap = too_big_for_any_instance()
    unknown = {pid: Attribution(pid, "none", notes=("gone",)) for pid in (1, 2, 3)}
    report = build_report(snap, unknown, DEFAULT_HEADROOM_RATIO)
    assert commands(report.findings[0]) == ["mig-exporter remediate --gpu 1 --layout 1g.10gb,1g.10gb"]
    assert "restart PID 1 with CUDA_VISIBLE_DEVICES=GPU-test-0" in report.findings[0].next_steps[-1].action
    assert report.processes[0].gpu_visibility == (
        "CUDA_VISIBLE_DEVICES unknown: its environment could not be read"
    )


def test_a_process_spread_over_gpus_it_does_not_share_is_pinned_to_its_main_one():
    """A process alone on two GPUs is advised to restart on the one where it holds most memory."""
    snap = snapshot(shared_gpu(0, {7: 100}), shared_gpu(1, {7: 900}))
    report = report_of(snap)
    (spanning,) = report.findings
    assert report.advice is None
    assert commands(spanning) == ["CUDA_VISIBLE_DEVICES=GPU-test-1 python serve.py"]


def test_headroom_changes_the_advice():
    """10 % lets PID 78914 (18060 MiB → 19866 MiB) into a 19968 MiB 1g.20gb."""
    report = report_of(incident(), headroom=0.10)
    assert report.advice is not None
    assert report.advice.headroom_ratio == 0.10
    assert report.advice.layouts[0].layout == ("3g.40gb", "1g.20gb")


@pytest.mark.parametrize(
    ("snap", "cause"),
    [
        (replace(snapshot(), nvml_up=False, errors=(CollectionError("nvmlInit", "Driver Not Loaded"),)),
         "NVML stopped answering while the GPUs were read (nvmlInit: Driver Not Loaded)"),
        (replace(snapshot(), errors=(CollectionError("nvmlDeviceGetCount", "Unknown Error"),)),
         "NVML could not count the GPUs (nvmlDeviceGetCount: Unknown Error)"),
        (replace(snapshot(Gpu(index=0, uuid=""), Gpu(index=1, uuid="")), errors=(
            CollectionError("nvmlDeviceGetHandleByIndex", "Unknown Error", 0),
            CollectionError("nvmlDeviceGetHandleByIndex", "Unknown Error", 1))),
         "NVML could not open any of the 2 GPU(s) (nvmlDeviceGetHandleByIndex on GPU 0: Unknown Error)"),
    ],
)
def test_a_reading_that_failed_as_a_whole_is_an_error(snap, cause):
    """NVML down, the GPU count unread, or not one GPU opened: nothing to report on (exit 2)."""
    assert reading_failure(snap) == cause


@pytest.mark.parametrize(
    "snap",
    [
        healthy(),
        snapshot(),  # a host without GPUs: NVML answered, and there are none
        replace(snapshot(partitioned_gpu(0), Gpu(index=1, uuid="")),
                errors=(CollectionError("nvmlDeviceGetHandleByIndex", "Unknown Error", 1),)),
        replace(snapshot(lost(0), lost(1)), errors=(
            CollectionError("nvmlDeviceGetHandleByIndex", "GPU is lost", 0),
            CollectionError("nvmlDeviceGetHandleByIndex", "GPU is lost", 1))),
    ],
    ids=["healthy", "no GPUs", "one of two GPUs opened", "every GPU lost"],
)
def test_a_partial_reading_is_reported(snap):
    """Some GPUs read, or GPUs NVML reports as lost: a report (findings, or not verified)."""
    assert reading_failure(snap) is None


def test_collection_errors_are_kept():
    """The snapshot's collection errors reach the report unchanged."""
    error = CollectionError("nvmlDeviceGetPowerUsage", "Unknown Error", 0)
    report = report_of(replace(healthy(), errors=(error,)))
    assert report.collection_errors == (error,)


@pytest.mark.parametrize(
    ("indices", "text"),
    [((2,), "GPU 2"), ((0, 2), "GPUs 0, 2"), ((0, 1), "GPUs 0, 1"), ((0, 1, 2, 3), "GPUs 0-3"),
     ((0, 1, 2, 5, 6), "GPUs 0-2, 5, 6")],
)
def test_describe_gpus(indices, text):
    """GPU index lists read as "GPU 2", "GPUs 0, 2" or ranges "GPUs 0-3"."""
    assert describe_gpus(indices) == text


def test_health_is_verified_from_what_the_reading_could_not_see():
    """issue 8: the report decides on ``Gpu.unread`` (the reader's record), not on call names: a
    GPU whose processes went unread is not verified healthy, a telemetry error leaves it verified."""
    unread = snapshot(replace(partitioned_gpu(0), unread=frozenset({"processes"})))
    report = report_of(unread)
    assert (report.verified, report.exit_status) == (False, 1)
    telemetry = replace(healthy(), errors=(CollectionError("nvmlDeviceGetPowerUsage", "Unknown Error", 0),))
    assert report_of(telemetry).verified and report_of(telemetry).exit_status == 0
