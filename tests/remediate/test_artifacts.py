"""The artifacts rendered after a run: parseable, complete, and faithful to the hardware read back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from mig_exporter.remediate.apply import Executed, PendingMode
from mig_exporter.remediate.artifacts import (
    RunRecord,
    assignments,
    config_name,
    created_instances,
    render_all,
    undo_commands,
    write_all,
)
from mig_exporter.remediate.layout import layout_targets, mig_parted_targets
from mig_exporter.remediate.plan import Plan, make_plan
from mig_exporter.remediate.steps import CreateComputeInstance, CreateGpuInstance

from .builders import gpu, instance, snapshot

BEFORE = snapshot(gpu(0), gpu(1), gpu(2, model="H100-SXM5-80GB"))


def run_record(plan: Plan) -> RunRecord:
    """The run as if every step succeeded, IDs following placement as on the driver."""
    executed = []
    for step in plan.steps:
        if isinstance(step, CreateGpuInstance):
            executed.append(Executed(step, created_id=2 if step.start == 4 else 1))
        elif isinstance(step, CreateComputeInstance):
            executed.append(
                Executed(step, created_id=0, gpu_instance_id=2 if step.gpu_instance_start == 4 else 1)
            )
        else:
            executed.append(Executed(step))
    after = snapshot(
        *(
            gpu(
                g.index,
                model="H100-SXM5-80GB" if g.index == 2 else "A100-SXM4-80GB",
                mig=True,
                persistence=True,
                instances=[instance(g.index, "3g", 4), instance(g.index, "3g", 0)],
            )
            for g in BEFORE.gpus
        )
    )
    made = assignments(after, plan, created_instances(executed))
    return RunRecord(
        "host1",
        "2026-01-01 00:00:00 UTC",
        "mig-exporter remediate --gpu all --layout 3g,3g --apply",
        None,
        "/var/lib/mig-exporter/remediate.jsonl",
        "abc",
        config_name(plan),
        plan,
        tuple(executed),
        (PendingMode(2, "In use by another client (IN_USE)"),),
        made,
    )


PLAN = make_plan(BEFORE, layout_targets("all", "3g,3g", BEFORE), privileged=True, persistence=True)


def test_the_mig_parted_config_reproduces_the_layout_per_model(tmp_path: Path) -> None:
    files = write_all(tmp_path, render_all(run_record(PLAN)))
    config = tmp_path / "mig-parted.yaml"
    assert config in files
    targets = mig_parted_targets(str(config), "custom-2x3g.40gb", BEFORE)
    assert [(t.gpu_index, [p.name for p in t.profiles]) for t in targets] == [
        (0, ["3g.40gb", "3g.40gb"]),
        (1, ["3g.40gb", "3g.40gb"]),
        (2, ["3g.40gb", "3g.40gb"]),
    ]
    entries = yaml.safe_load(config.read_text())["mig-configs"]["custom-2x3g.40gb"]
    assert [(e["devices"], e["device-filter"]) for e in entries] == [
        ([0, 1], ["0x20B210DE"]),
        ([2], ["0x233010DE"]),
    ]


def test_kubernetes_resources_and_no_config_map_that_would_replace_the_operators() -> None:
    # A ConfigMap holding only this host's config, without all-disabled, replaced the cluster's:
    # Operator nodes get a merged one from remediate --gpu-operator (test_gpu_operator.py).
    rendered = render_all(run_record(PLAN))
    (pod,) = yaml.safe_load_all(rendered["kubernetes.yaml"])
    assert pod["kind"] == "Pod"
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": 1}
    assert "#   nvidia.com/mig-3g.40gb: 6" in rendered["kubernetes.yaml"]
    assert "--gpu-operator on" in rendered["kubernetes.yaml"]


def test_kubernetes_names_a_media_engine_device_as_the_device_plugin_does() -> None:
    record = run_record(PLAN)
    me = replace(record, assignments=(replace(record.assignments[0], profile="1g.10gb+me"),))
    (pod,) = yaml.safe_load_all(render_all(me)["kubernetes.yaml"])
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-1g.10gb.me": 1}


def test_kubernetes_single_strategy_asks_for_gpus_and_warns_where_it_cannot_work() -> None:
    single = replace(run_record(PLAN), mig_strategy="single")
    rendered = render_all(single)["kubernetes.yaml"]
    (pod,) = yaml.safe_load_all(rendered)
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert "#   nvidia.com/gpu: 6" in rendered and "WARNING" not in rendered
    mixed_plan = make_plan(BEFORE, layout_targets("all", "3g,2g", BEFORE), privileged=True, persistence=True)
    record = replace(run_record(mixed_plan), mig_strategy="single")
    two_types = replace(record, assignments=(record.assignments[0],
                                             replace(record.assignments[1], profile="2g.20gb")))
    assert "WARNING: with the single strategy the device plugin would advertise no GPU here: the node has " \
           "MIG devices of 2 types" in render_all(two_types)["kubernetes.yaml"]


def test_env_lines_compose_services_and_runbook_name_every_instance() -> None:
    record = run_record(PLAN)
    rendered = render_all(record)
    uuids = [a.mig_uuid for a in record.assignments]
    assert len(uuids) == 6 and all(a.new for a in record.assignments)
    env_lines = [line for line in rendered["mig-devices.txt"].splitlines() if not line.startswith("#")]
    assert env_lines == [f"CUDA_VISIBLE_DEVICES={u}" for u in uuids]
    services = yaml.safe_load(rendered["docker-compose.mig.yml"])["services"]
    assert sorted(s["environment"]["CUDA_VISIBLE_DEVICES"] for s in services.values()) == sorted(uuids)
    runbook = rendered["runbook.md"]
    assert "GPU 2: the MIG mode is pending (In use by another client (IN_USE))" in runbook
    assert all(f"`{u}`" in runbook for u in uuids)
    undo = undo_commands(record.executed)
    assert undo[:2] == ("nvidia-smi mig -i 2 -gi 1 -ci 0 -dci", "nvidia-smi mig -i 2 -gi 1 -dgi")
    assert undo[-1] == "nvidia-smi -i 0 -mig 0"
    assert "\n".join(undo) in runbook


def test_config_names_are_valid_label_values() -> None:
    busy = snapshot(gpu(0), gpu(1))
    plan = make_plan(
        busy, layout_targets("0", "1g,1g,1g,1g,1g,1g,1g", busy), privileged=True, persistence=True
    )
    name = config_name(plan)
    assert name == "custom-7x1g.10gb" and len(name) <= 63
