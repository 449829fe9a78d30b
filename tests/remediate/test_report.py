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
    # a GPU blocked by processes is still planned: what it will be, and its steps, once they stop
    assert text.count("  want: MIG enabled: 3g.40gb@0 (new), 3g.40gb@4 (new)") == 2
    assert "      78914 python 3752 MiB (user alice, python serve.py)" in text
    assert "    stop them first: kill 78914 81007" in text
    lines = text.splitlines()
    after = lines.index("After the blockers are cleared (until then --apply changes nothing), the steps:")
    assert after > lines.index("Blockers:") and "Steps:" not in lines
    assert lines[after + 1] == "  1. GPU 0: enable MIG mode"
    assert lines[after + 7] == "  7. GPU 1: enable MIG mode"
    document = plan_json(snap.gpus, targets, plan, attributions)
    assert [b["stop_command"] for b in document["blockers"]] == ["kill 78914 81007"]
    expected = [
        {"profile_id": 9, "profile": "3g.40gb", "start": 0, "size": 4},
        {"profile_id": 9, "profile": "3g.40gb", "start": 4, "size": 4},
    ]
    assert [g["expected"] for g in document["gpus"]] == [expected, expected]
    assert [g["steps_possible"] for g in document["gpus"]] == [True, True]
    assert len(document["steps"]) == 12 and document["steps_wait_for_blockers"] is True


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
        "GPU 0: no steps are possible (see its blocker)",
    ]
    assert plan_json(snap.gpus, targets, make_plan(snap, targets, privileged=True, persistence=True), {})[
        "gpus"][0]["steps_possible"] is False
