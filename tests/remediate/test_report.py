"""What the plan says to a person: the state, the target, the steps, and what to stop and how."""

from __future__ import annotations

from mig_exporter.hostinfo import Attribution, Container
from mig_exporter.model import Gpu
from mig_exporter.remediate.layout import layout_targets
from mig_exporter.remediate.plan import make_plan
from mig_exporter.remediate.report import gpu_summary, plan_json, plan_text, stop_command

from .builders import gpu, incident, instance, process, snapshot

DOCKER_ID = "4f2a9c1e7b3d" + "0" * 52


def test_stop_command_stops_containers_with_their_runtime_and_kills_the_rest() -> None:
    snap = incident()
    plan = make_plan(snap, layout_targets("0", "3g,3g", snap), privileged=True, persistence=True)
    (blocker,) = plan.blockers
    assert stop_command(blocker, {}) == "kill 78914 81007"
    in_docker = {78914: Attribution(78914, "host", container=Container("docker", DOCKER_ID))}
    assert stop_command(blocker, in_docker) == "docker stop 4f2a9c1e7b3d; kill 81007"


def test_plan_text_shows_now_want_steps_and_blockers() -> None:
    snap = snapshot(*incident().gpus[:1], gpu(1))
    targets = layout_targets("0,1", "3g,3g", snap)
    plan = make_plan(snap, targets, privileged=True, persistence=True)
    attributions = {78914: Attribution(78914, "fleet file", user="alice", cmdline=("python", "serve.py"))}
    text = plan_text(snap.gpus, targets, plan, attributions)
    now = "  now:  MIG disabled; persistence off; processes: 78914 python 3752 MiB, 81007 python 3780 MiB"
    assert now in text
    assert "  want: MIG enabled: 3g.40gb,3g.40gb" in text  # blocked GPU: the layout asked for
    assert "  want: MIG enabled: 3g.40gb@0 (new), 3g.40gb@4 (new)" in text  # planned GPU: placements
    assert "  1. GPU 1: enable MIG mode" in text
    assert "      78914 python 3752 MiB (user alice, python serve.py)" in text
    assert "    stop them first: kill 78914 81007" in text
    document = plan_json(snap.gpus, targets, plan, attributions)
    assert [b["stop_command"] for b in document["blockers"]] == ["kill 78914 81007"]
    assert document["gpus"][1]["expected"] == [
        {"profile_id": 9, "profile": "3g.40gb", "start": 0, "size": 4},
        {"profile_id": 9, "profile": "3g.40gb", "start": 4, "size": 4},
    ]


def test_gpu_summary_of_a_mig_gpu_names_instances_and_their_processes() -> None:
    busy = instance(0, "3g", 0)
    busy_gpu = gpu(0, mig=True, persistence=True, instances=[busy], processes=[process(0, 5, 99, busy)])
    summary = gpu_summary(busy_gpu)
    assert summary == ("MIG enabled: 3g.40gb@0 (GPU instance 1); persistence on; "
                       "processes: 5 python 99 MiB in GPU instance 1")


def test_a_gpu_without_mig_is_said_to_be_one() -> None:
    no_mig = Gpu(index=0, uuid="GPU-0", name="NVIDIA L4", persistence_mode=True, mig_mode_current=None)
    snap = snapshot(no_mig)
    targets = layout_targets("0", "3g", snap)
    text = plan_text(snap.gpus, targets, make_plan(snap, targets, privileged=True, persistence=True), {})
    assert text.splitlines()[1:] == [
        "  now:  MIG not supported; persistence on; processes: none",
        "  want: MIG, which this GPU does not support",
        "Blockers:",
        "  - GPU 0 (NVIDIA L4) does not support MIG",
    ]
